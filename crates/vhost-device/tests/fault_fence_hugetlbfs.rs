//! A client whose memory is a hugetlbfs file (DPDK's) and who truncates it: the
//! fence must cover, and replace, the whole huge-page mapping. Replacing only a
//! base page of it is refused by the kernel (a huge-page mapping cannot be split
//! there), so a fence sized in base pages would let the SIGBUS end the process.
//! Needs hugetlbfs at /dev/hugepages with a free 2 MiB page (scripts/setup-host.sh
//! mounts it and reserves pages for DPDK).

use std::sync::Arc;

use vhost_device::fault_fence::{map_client_file, FaultFlag};
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

#[test]
fn a_truncated_hugetlbfs_file_is_contained_whole() {
    // Without a free huge page the first write would fault too (and be contained),
    // which would make this test fail for the wrong reason: say so instead.
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let free: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(free >= 1, "no free huge page: run scripts/setup-host.sh");
    let path = format!("/dev/hugepages/twin-fence-test-{}", std::process::id());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| {
            panic!("create {path} (is hugetlbfs mounted? scripts/setup-host.sh): {e}")
        });
    let _ = std::fs::remove_file(&path);
    rustix::fs::ftruncate(&f, 2 << 20).expect("size the file to one huge page");
    let flag = Arc::new(FaultFlag::default());
    // A region smaller than the huge page: the mapping is the whole page anyway.
    let r = map_client_file(&f, 0, 4096, GuestAddress(0), &flag).expect("map");
    r.write_obj(0x77u64, MemoryRegionAddress(16))
        .expect("write (a free huge page is needed)");
    assert_eq!(r.read_obj::<u64>(MemoryRegionAddress(16)).unwrap(), 0x77);
    rustix::fs::ftruncate(&f, 0).expect("truncate");
    // Without a fence over the whole huge page this read ends the process.
    assert_eq!(r.read_obj::<u64>(MemoryRegionAddress(16)).unwrap(), 0);
    assert!(flag.is_set());
}
