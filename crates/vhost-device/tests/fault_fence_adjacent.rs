//! Two fenced mappings that touch: a fault at the first byte of the upper one is
//! that mapping's, not the lower one's (whose end is the same address). The test
//! runs in a process of its own so that it knows which registry slot each mapping
//! takes: the handler scans the slots in order, and only a lower mapping in an
//! earlier slot can be mistaken for the faulting one.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use vhost_device::fault_fence::{contained_faults, fences_in_use, map_client_file, FaultFlag};
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

fn memfd(len: u64) -> File {
    let fd = rustix::fs::memfd_create("fault-fence-adjacent", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    File::from(fd)
}

#[test]
fn a_fault_at_a_mappings_first_byte_is_not_blamed_on_the_mapping_below() {
    // A wrongly blamed neighbour is replaced again and again while the real one
    // keeps faulting: the process would hang, so a watchdog ends it instead.
    assert_eq!(fences_in_use(), 0, "a fresh process has no fence");
    // The kernel places a mapping at the top of the highest gap it fits in, and
    // mappings far bigger than every gap between the libraries go one below the
    // other. A placeholder takes slot 0, the upper mapping slot 1 right below it;
    // freeing the placeholder leaves a hole too small for the lower mapping, which
    // takes slot 0 and lands right below the upper one. (Sparse memfds mapped
    // with MAP_NORESERVE: no memory is used.)
    const MIB: u64 = 1 << 20;
    let placeholder_file = memfd(256 * MIB);
    let flag_placeholder = Arc::new(FaultFlag::default());
    let placeholder = map_client_file(
        &placeholder_file,
        0,
        256 * MIB,
        GuestAddress(0),
        &flag_placeholder,
    )
    .expect("map the placeholder");
    let upper_file = memfd(256 * MIB);
    let upper_flag = Arc::new(FaultFlag::default());
    let upper =
        map_client_file(&upper_file, 0, 256 * MIB, GuestAddress(0), &upper_flag).expect("map");
    drop(placeholder);
    let upper_start = upper.as_ptr() as usize;
    let mut lower = None;
    let mut tried = Vec::new();
    for size in [512 * MIB, 1024 * MIB, 4096 * MIB] {
        let file = memfd(size);
        let flag = Arc::new(FaultFlag::default());
        let r = map_client_file(&file, 0, size, GuestAddress(0), &flag).expect("map");
        let end = r.as_ptr() as usize + r.size();
        tried.push(format!("{:#x}..{end:#x}", r.as_ptr() as usize));
        if end == upper_start {
            lower = Some((r, flag, file));
            break;
        }
    }
    let (lower, lower_flag, _lower_file) = lower.unwrap_or_else(|| {
        panic!(
            "no mapping landed right below {upper_start:#x}: tried {tried:?}\n{}",
            std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
        )
    });
    // The lower mapping took slot 0 (freed by the placeholder), the upper slot 1.
    assert!(fences_in_use() >= 2);

    // A neighbour wrongly blamed is replaced again and again while the real
    // mapping keeps faulting: the process would hang, so a watchdog ends it.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(20));
        eprintln!("the fault was never contained (blamed on the wrong mapping?)");
        std::process::exit(1);
    });
    upper
        .write_obj(0x77u64, MemoryRegionAddress(0))
        .expect("write");
    rustix::fs::ftruncate(&upper_file, 0).expect("truncate");
    // Faults at the upper mapping's first byte, the lower one's end.
    assert_eq!(
        upper.read_obj::<u64>(MemoryRegionAddress(0)).expect("read"),
        0
    );
    assert!(upper_flag.is_set(), "the faulting mapping is fenced off");
    assert!(!lower_flag.is_set(), "its neighbour below is left alone");
    assert_eq!(contained_faults(), 1);
    lower
        .write_obj(0x55u64, MemoryRegionAddress(8))
        .expect("the neighbour still works");
    assert_eq!(
        lower.read_obj::<u64>(MemoryRegionAddress(8)).expect("read"),
        0x55
    );
}
