//! The fault fence in a process of its own, with one client mapping: the registry
//! is empty when the test starts, so its counts are exact and the mapping lands in
//! the first slot (the unit tests run concurrently and share the registry, which
//! hides a mapping the handler does not scan when other slots are in use).

use std::fs::File;
use std::sync::Arc;

use vhost_device::fault_fence::{contained_faults, fences_in_use, map_client_file, FaultFlag};
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

fn memfd(len: u64) -> File {
    let fd = rustix::fs::memfd_create("fault-fence-alone", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    File::from(fd)
}

#[test]
fn the_only_fence_is_counted_and_its_fault_contained() {
    assert_eq!(fences_in_use(), 0, "a fresh process has no fence");
    let flag = Arc::new(FaultFlag::default());
    let f = memfd(2 * 4096);
    let r = map_client_file(&f, 0, 2 * 4096, GuestAddress(0), &flag).expect("map");
    assert_eq!(fences_in_use(), 1);
    r.write_obj(0x55u64, MemoryRegionAddress(8)).expect("write");
    rustix::fs::ftruncate(&f, 0).expect("truncate");
    // Without containment this read kills the test process with SIGBUS.
    assert_eq!(r.read_obj::<u64>(MemoryRegionAddress(8)).expect("read"), 0);
    assert!(flag.is_set());
    assert_eq!(contained_faults(), 1);
    // A second mapping takes a second slot; each is freed when dropped.
    let flag2 = Arc::new(FaultFlag::default());
    let f2 = memfd(4096);
    let r2 = map_client_file(&f2, 0, 4096, GuestAddress(0), &flag2).expect("map");
    assert_eq!(fences_in_use(), 2);
    drop(r);
    assert_eq!(fences_in_use(), 1);
    drop(r2);
    assert_eq!(fences_in_use(), 0);
    assert!(!flag2.is_set());
}
