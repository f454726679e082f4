use std::sync::atomic::Ordering;
use std::sync::Arc;

use driver_env::access::{Access, AccessRange};
use driver_env::{DriverMem, FaultKind, MemFault};
use driver_host::region::Region;

use super::*;

const PAGE: u64 = 4096;

fn r(start: u64, len: u64, access: Access, name: &'static str) -> AccessRange {
    AccessRange {
        start,
        len,
        access,
        name,
    }
}

fn region(len: u64) -> Arc<Region> {
    Arc::new(Region::create("svm-test", len).unwrap())
}

/// A two-page region:
///
/// ```text
/// 0x000..0x100  "state"    RW
/// 0x100..0x200  "used"     RO
/// 0x200..0x300  "private"  None
/// 0x300..0x400  gap (no range)
/// 0x400..0x500  "avail"    RW
/// 0x500..0x600  "desc"     RW   (adjacent to avail: merged for both ops)
/// 0x600..0x2000 "buffers"  RW
/// ```
fn layout() -> Vec<AccessRange> {
    vec![
        // Deliberately unsorted.
        r(0x500, 0x100, Access::ReadWrite, "desc"),
        r(0x000, 0x100, Access::ReadWrite, "state"),
        r(0x200, 0x100, Access::None, "private"),
        r(0x100, 0x100, Access::ReadOnly, "used"),
        r(0x600, 0x1a00, Access::ReadWrite, "buffers"),
        r(0x400, 0x100, Access::ReadWrite, "avail"),
    ]
}

fn svm() -> Svm {
    Svm::new(region(2 * PAGE), &layout()).unwrap()
}

fn kind(res: Result<impl std::fmt::Debug, SvmFault>) -> SvmFaultKind {
    res.unwrap_err().kind
}

#[test]
fn typed_round_trip_with_each_ordering() {
    let s = svm();
    let stores = [Ordering::Relaxed, Ordering::Release, Ordering::SeqCst];
    let loads = [Ordering::Relaxed, Ordering::Acquire, Ordering::SeqCst];
    for (i, (&so, &lo)) in stores.iter().zip(loads.iter()).enumerate() {
        let k = i as u64;
        let v16 = 0xa1b2u16.wrapping_add(k as u16);
        let v32 = 0xa1b2_c3d4u32.wrapping_add(k as u32);
        let v64 = 0x0102_0304_0506_0708u64.wrapping_add(k);
        s.store_u16(0x10, v16, so).unwrap();
        s.store_u32(0x20, v32, so).unwrap();
        s.store_u64(0x40, v64, so).unwrap();
        assert_eq!(s.load_u16(0x10, lo).unwrap(), v16);
        assert_eq!(s.load_u32(0x20, lo).unwrap(), v32);
        assert_eq!(s.load_u64(0x40, lo).unwrap(), v64);
    }
    // Little-endian in memory.
    s.store_u32(0x20, 0x1122_3344, Ordering::Relaxed).unwrap();
    let mut b = [0u8; 4];
    s.read_bytes(0x20, &mut b).unwrap();
    assert_eq!(b, [0x44, 0x33, 0x22, 0x11]);
    // Orderings std would panic on are strengthened, not a panic.
    s.store_u16(0x10, 7, Ordering::Acquire).unwrap();
    s.store_u16(0x12, 8, Ordering::AcqRel).unwrap();
    assert_eq!(s.load_u16(0x10, Ordering::Release).unwrap(), 7);
    assert_eq!(s.load_u16(0x12, Ordering::AcqRel).unwrap(), 8);
    // Loads from a read-only range work.
    assert_eq!(s.load_u64(0x100, Ordering::Acquire).unwrap(), 0);
    assert_eq!(s.faults(), 0);
}

#[test]
fn the_peer_sees_writes_and_we_see_the_peers() {
    let reg = region(2 * PAGE);
    let s = Svm::new(reg.clone(), &layout()).unwrap();
    // A second mapping of the same memfd: the driver domain's view.
    let peer = Region::map(reg.file().try_clone().unwrap(), reg.len()).unwrap();
    let used_idx = peer.mapping().get_atomic_ref::<AtomicU16>(0x102).unwrap();
    used_idx.store(41u16.to_le(), Ordering::Release);
    assert_eq!(s.load_u16(0x102, Ordering::Acquire).unwrap(), 41);
    s.store_u16(0x402, 9, Ordering::Release).unwrap();
    let avail_idx = peer.mapping().get_atomic_ref::<AtomicU16>(0x402).unwrap();
    assert_eq!(u16::from_le(avail_idx.load(Ordering::Acquire)), 9);
}

#[test]
fn misaligned_typed_accesses_fault() {
    let s = svm();
    assert_eq!(
        kind(s.load_u16(1, Ordering::Relaxed)),
        SvmFaultKind::Misaligned
    );
    assert_eq!(
        kind(s.load_u32(2, Ordering::Relaxed)),
        SvmFaultKind::Misaligned
    );
    assert_eq!(
        kind(s.load_u64(4, Ordering::Acquire)),
        SvmFaultKind::Misaligned
    );
    assert_eq!(
        kind(s.store_u16(3, 1, Ordering::Relaxed)),
        SvmFaultKind::Misaligned
    );
    assert_eq!(
        kind(s.store_u32(6, 1, Ordering::Relaxed)),
        SvmFaultKind::Misaligned
    );
    let f = s.store_u64(12, 1, Ordering::Release).unwrap_err();
    assert_eq!(f.kind, SvmFaultKind::Misaligned);
    assert_eq!((f.addr, f.size, f.op), (12, 8, Op::Write));
    assert_eq!(MemFault::from(f).kind, FaultKind::Misaligned);
    // Nothing was written.
    assert_eq!(s.load_u64(8, Ordering::Relaxed).unwrap(), 0);
    assert_eq!(s.load_u64(16, Ordering::Relaxed).unwrap(), 0);
    // Byte and POD accesses have no alignment rule.
    s.write_obj(0x13, &0xdead_beef_u32).unwrap();
    assert_eq!(s.read_obj::<u32>(0x13).unwrap(), 0xdead_beef);
    assert_eq!(s.faults(), 6);
}

#[test]
fn accesses_outside_the_region_are_unmapped() {
    let s = svm();
    let len = s.len();
    assert_eq!(len, 2 * PAGE);
    assert!(!s.is_empty());
    assert_eq!(
        kind(s.load_u32(len, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(
        kind(s.store_u64(len + 8, 0, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    // Starts in "buffers", runs past the end.
    let mut buf = [0u8; 8];
    assert_eq!(
        kind(s.read_bytes(len - 4, &mut buf)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(
        kind(s.slice(len - 100, 101, Op::Write)),
        SvmFaultKind::Unmapped
    );
    // The last bytes themselves are fine.
    s.write_bytes(len - 8, &[1; 8]).unwrap();
    assert_eq!(
        s.load_u64(len - 8, Ordering::Relaxed).unwrap(),
        0x0101_0101_0101_0101
    );
    let f = MemFault::from(s.last_fault().unwrap());
    assert_eq!(f, MemFault::new(len - 100, 101, FaultKind::OutOfBounds));
}

#[test]
fn huge_addresses_and_sizes_do_not_overflow() {
    let s = svm();
    assert_eq!(kind(s.check(u64::MAX, 1, Op::Read)), SvmFaultKind::Unmapped);
    assert_eq!(kind(s.check(u64::MAX, 0, Op::Read)), SvmFaultKind::Unmapped);
    assert_eq!(
        kind(s.check(u64::MAX, u64::MAX, Op::Write)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(kind(s.check(8, u64::MAX, Op::Read)), SvmFaultKind::Unmapped);
    assert_eq!(
        kind(s.check(0x600, u64::MAX - 0x5ff, Op::Write)),
        SvmFaultKind::Unmapped
    );
    // Aligned, so the bounds check (not the alignment check) must refuse these.
    assert_eq!(
        kind(s.load_u16(u64::MAX - 1, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(
        kind(s.load_u64(u64::MAX - 7, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(
        kind(s.store_u32(u64::MAX - 3, 0, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(kind(s.fill(0x600, u64::MAX, 0xff)), SvmFaultKind::Unmapped);
    assert_eq!(kind(s.fill(u64::MAX, 2, 0xff)), SvmFaultKind::Unmapped);
    let mut buf = [0u8; 16];
    assert_eq!(
        kind(s.read_bytes(u64::MAX - 8, &mut buf)),
        SvmFaultKind::Unmapped
    );
    assert_eq!(s.faults(), 11);
    let f = s.last_fault().unwrap();
    assert_eq!((f.addr, f.size, f.range), (u64::MAX - 8, 16, None));
}

#[test]
fn reading_a_none_range_is_a_permission_fault() {
    let s = svm();
    let f = s.load_u32(0x210, Ordering::Relaxed).unwrap_err();
    assert_eq!(f.kind, SvmFaultKind::Permission { op: Op::Read });
    assert_eq!(f.range, Some("private"));
    assert_eq!(MemFault::from(f).kind, FaultKind::Permission);
    let mut b = [0u8; 1];
    assert_eq!(
        kind(s.read_bytes(0x2ff, &mut b)),
        SvmFaultKind::Permission { op: Op::Read }
    );
    assert_eq!(
        kind(s.write_bytes(0x200, &[0])),
        SvmFaultKind::Permission { op: Op::Write }
    );
    // A gap no range covers is unmapped, not a permission fault.
    let g = s.load_u32(0x310, Ordering::Relaxed).unwrap_err();
    assert_eq!((g.kind, g.range), (SvmFaultKind::Unmapped, None));
    assert_eq!(MemFault::from(g).kind, FaultKind::OutOfBounds);
}

#[test]
fn writing_a_read_only_range_is_a_permission_fault() {
    let s = svm();
    let f = s.store_u16(0x102, 5, Ordering::Release).unwrap_err();
    assert_eq!(f.kind, SvmFaultKind::Permission { op: Op::Write });
    assert_eq!(f.range, Some("used"));
    assert_eq!(
        kind(s.write_obj(0x1f0, &[1u8; 16])),
        SvmFaultKind::Permission { op: Op::Write }
    );
    assert_eq!(
        kind(s.fill(0x100, 4, 1)),
        SvmFaultKind::Permission { op: Op::Write }
    );
    // Nothing changed, and reading is allowed.
    assert_eq!(s.load_u16(0x102, Ordering::Acquire).unwrap(), 0);
    assert_eq!(s.read_obj::<[u8; 16]>(0x1f0).unwrap(), [0; 16]);
}

#[test]
fn an_access_straddling_into_forbidden_memory_faults() {
    let s = svm();
    // "used" (RO) into "private" (None): a read straddles at 0x200.
    let mut buf = [0u8; 8];
    let f = s.read_bytes(0x1fc, &mut buf).unwrap_err();
    assert_eq!(
        f.kind,
        SvmFaultKind::Straddle {
            op: Op::Read,
            at: 0x200
        }
    );
    assert_eq!(f.range, Some("private"));
    assert_eq!(MemFault::from(f).kind, FaultKind::Permission);
    // "state" (RW) into "used" (RO): fine to read, a straddle for a write.
    s.read_bytes(0xfc, &mut buf).unwrap();
    let f = s.write_bytes(0xfc, &[1; 8]).unwrap_err();
    assert_eq!(
        f.kind,
        SvmFaultKind::Straddle {
            op: Op::Write,
            at: 0x100
        }
    );
    assert_eq!(f.range, Some("used"));
    // Nothing of the refused write landed, not even its allowed half.
    assert_eq!(s.load_u32(0xfc, Ordering::Relaxed).unwrap(), 0);
    // "buffers" (RW) ends at the region's end: past it is unmapped, not a straddle.
    // A RW range into a gap: straddle, no range.
    let s2 = Svm::new(
        region(PAGE),
        &[
            r(0, 0x100, Access::ReadWrite, "a"),
            r(0x200, 0x100, Access::ReadWrite, "b"),
        ],
    )
    .unwrap();
    let f = s2.slice(0xf0, 0x20, Op::Write).unwrap_err();
    assert_eq!(
        f.kind,
        SvmFaultKind::Straddle {
            op: Op::Write,
            at: 0x100
        }
    );
    assert_eq!(f.range, None);
    // A None range into a RW one: the first byte decides (permission).
    let mut b2 = [0u8; 4];
    assert_eq!(
        kind(s.read_bytes(0x2fe, &mut b2)),
        SvmFaultKind::Permission { op: Op::Read }
    );
    // A gap into a RW one: unmapped.
    assert_eq!(kind(s.read_bytes(0x3fe, &mut b2)), SvmFaultKind::Unmapped);
}

#[test]
fn adjacent_permitted_ranges_allow_a_spanning_access() {
    let s = svm();
    // "avail" and "desc" are adjacent RW ranges: a u64 across their boundary...
    // (0x4fc is not 8-aligned, so use bytes; a typed one on the boundary below.)
    s.write_bytes(0x4fc, &[7; 8]).unwrap();
    let mut b = [0u8; 8];
    s.read_bytes(0x4fc, &mut b).unwrap();
    assert_eq!(b, [7; 8]);
    // One slice over all three adjacent RW ranges (avail, desc, buffers).
    let sl = s.slice(0x400, 0x1c00, Op::Write).unwrap();
    assert_eq!(sl.len(), 0x1c00);
    // RW + RO adjacent: a spanning read is fine.
    s.slice(0x80, 0x100, Op::Read).unwrap();
    // Typed access across the boundary of two ranges split in the middle of a word.
    let s2 = Svm::new(
        region(PAGE),
        &[
            r(0, 4, Access::ReadWrite, "lo"),
            r(4, 12, Access::ReadWrite, "hi"),
        ],
    )
    .unwrap();
    s2.store_u64(0, 0x1122_3344_5566_7788, Ordering::Release)
        .unwrap();
    assert_eq!(
        s2.load_u64(0, Ordering::Acquire).unwrap(),
        0x1122_3344_5566_7788
    );
    // The map is reported as given (sorted), and names stay distinct.
    assert_eq!(s2.map().len(), 2);
    assert_eq!(s2.range_name(3), Some("lo"));
    assert_eq!(s2.range_name(4), Some("hi"));
    assert_eq!(s2.range_name(16), None);
    assert_eq!(s.faults() + s2.faults(), 0);
}

#[test]
fn the_translation_cache_never_skips_a_permission_check() {
    let s = svm();
    for round in 0..100u64 {
        // Hit "state" (RW) for reads and writes.
        s.store_u64(0x8, round, Ordering::Relaxed).unwrap();
        assert_eq!(s.load_u64(0x8, Ordering::Relaxed).unwrap(), round);
        // "used" is RO: the write cache still points at "state"; the write must fault.
        assert_eq!(
            kind(s.store_u16(0x100, 1, Ordering::Relaxed)),
            SvmFaultKind::Permission { op: Op::Write }
        );
        // Reads there are fine and move the read cache to the state+used span.
        assert_eq!(s.load_u16(0x100, Ordering::Relaxed).unwrap(), 0);
        // "private" is None: right after a read hit next to it, a read must fault.
        assert_eq!(
            kind(s.load_u16(0x200, Ordering::Relaxed)),
            SvmFaultKind::Permission { op: Op::Read }
        );
        // Just below it, the last byte of "used", still fine.
        let mut b = [0u8; 1];
        s.read_bytes(0x1ff, &mut b).unwrap();
        // And a write to "buffers" after all that.
        s.store_u32(0x1000, 1, Ordering::Relaxed).unwrap();
        // The last word of "state", right below "used": fine.
        s.store_u16(0xfe, 2, Ordering::Relaxed).unwrap();
    }
    assert_eq!(s.faults(), 200);
    assert_eq!(s.load_u16(0x100, Ordering::Relaxed).unwrap(), 0);
}

/// Checks every access of `sizes` at `addrs`, for both operations, in one sequence
/// (so the cache state varies), against a byte-by-byte model of `map`. Returns how
/// many were refused.
fn model_check(s: &Svm, map: &[AccessRange], addrs: &[u64], sizes: std::ops::Range<u64>) -> u64 {
    let allowed = |a: u64, op: Op| {
        map.iter()
            .find(|r| r.start <= a && a < r.start + r.len)
            .is_some_and(|r| map::permits(r.access, op))
    };
    let mut refused = 0;
    for &addr in addrs {
        for size in sizes.clone() {
            for op in [Op::Write, Op::Read] {
                let ok = (addr..addr + size).all(|a| allowed(a, op));
                let got = s.check(addr, size, op);
                assert_eq!(got.is_ok(), ok, "{op} of {size} at {addr:#x}");
                match got {
                    Ok(off) => assert_eq!(off as u64, addr),
                    Err(f) => {
                        refused += 1;
                        let first_ok = allowed(addr, op);
                        let bad = (addr..addr + size).find(|&a| !allowed(a, op)).unwrap();
                        let want = if addr + size > s.len() {
                            SvmFaultKind::Unmapped
                        } else if first_ok {
                            SvmFaultKind::Straddle { op, at: bad }
                        } else if s.range_name(addr).is_some() {
                            SvmFaultKind::Permission { op }
                        } else {
                            SvmFaultKind::Unmapped
                        };
                        assert_eq!(f.kind, want, "{op} of {size} at {addr:#x}");
                        // The range named is that of the refused byte: the first byte,
                        // except for a straddle.
                        let named = match want {
                            SvmFaultKind::Straddle { .. } => bad,
                            _ => addr,
                        };
                        assert_eq!(f.range, s.range_name(named), "{op} of {size} at {addr:#x}");
                    }
                }
            }
        }
    }
    refused
}

/// Every access of every size up to 20 at every address of a small map.
#[test]
fn check_agrees_with_a_byte_model() {
    let map = [
        r(0, 8, Access::ReadWrite, "a"),
        r(8, 8, Access::ReadOnly, "b"),
        r(16, 8, Access::ReadWrite, "c"),
        r(24, 8, Access::None, "d"),
        r(40, 8, Access::ReadOnly, "e"),
        r(48, 8, Access::ReadOnly, "f"),
        r(56, 8, Access::ReadWrite, "g"),
    ];
    let s = Svm::new(region(PAGE), &map).unwrap();
    let addrs: Vec<u64> = (0..72).collect();
    let refused = model_check(&s, &map, &addrs, 1..20);
    assert!(refused > 0);
    assert_eq!(s.faults(), refused);
}

/// Odd range boundaries in a region too large for a byte-granular table: granules
/// straddle boundaries (the binary-search path), and accesses run up to the end.
#[test]
fn check_agrees_with_a_byte_model_with_coarse_granules() {
    let len = 1 << 20;
    let map = [
        r(3, 0x1000, Access::ReadWrite, "a"),
        r(0x1003, 0x7d, Access::ReadOnly, "b"),
        r(0x1080, 0x1_0000, Access::ReadWrite, "c"),
        r(0x11081, 0x2f, Access::None, "d"),
        r(0x20000, len - 0x20000, Access::ReadWrite, "e"),
    ];
    let s = Svm::new(region(len), &map).unwrap();
    let mut addrs = Vec::new();
    for b in [
        0,
        3,
        0x1003,
        0x1080,
        0x11080,
        0x11081,
        0x110b0,
        0x20000,
        len - 8,
    ] {
        addrs.extend(b.saturating_sub(9)..b + 9);
    }
    // And some far from any boundary, to exercise pure granules.
    addrs.extend([0x500, 0x8000, 0x8001, 0x30000, 0x8_0007]);
    let refused = model_check(&s, &map, &addrs, 1..18);
    assert!(refused > 0);
    assert_eq!(s.faults(), refused);
}

#[test]
fn zero_length_accesses() {
    let s = svm();
    s.check(0x100, 0, Op::Write).unwrap(); // end of "state"
    s.write_bytes(0x80, &[]).unwrap();
    s.check(0x200, 0, Op::Read).unwrap(); // end of "used", start of "private"
    assert_eq!(
        kind(s.check(0x200, 1, Op::Read)),
        SvmFaultKind::Permission { op: Op::Read }
    );
    assert_eq!(
        kind(s.check(0x210, 0, Op::Read)),
        SvmFaultKind::Permission { op: Op::Read }
    );
    assert_eq!(kind(s.check(0x310, 0, Op::Read)), SvmFaultKind::Unmapped);
    s.check(s.len(), 0, Op::Read).unwrap(); // end of "buffers", the region's end
    assert_eq!(
        kind(s.check(s.len() + 1, 0, Op::Read)),
        SvmFaultKind::Unmapped
    );
}

#[test]
fn slice_checks_bounds_and_permission_once() {
    let s = svm();
    // A frame in "buffers".
    let frame: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    let w = s.slice(0x800, frame.len(), Op::Write).unwrap();
    w.copy_from(&frame[..]);
    let rd = s.slice(0x800, frame.len(), Op::Read).unwrap();
    let mut back = vec![0u8; frame.len()];
    assert_eq!(rd.copy_to(&mut back[..]), frame.len());
    assert_eq!(back, frame);
    // Read-only for reads only.
    s.slice(0x100, 0x100, Op::Read).unwrap();
    assert_eq!(
        kind(s.slice(0x100, 0x100, Op::Write)),
        SvmFaultKind::Permission { op: Op::Write }
    );
    assert_eq!(
        kind(s.slice(0x200, 1, Op::Read)),
        SvmFaultKind::Permission { op: Op::Read }
    );
    assert_eq!(
        kind(s.slice(0x1f0, 0x20, Op::Read)),
        SvmFaultKind::Straddle {
            op: Op::Read,
            at: 0x200
        }
    );
    assert_eq!(kind(s.slice(0x300, 16, Op::Read)), SvmFaultKind::Unmapped);
    assert_eq!(s.faults(), 4);
}

#[test]
fn bytes_objects_and_fill() {
    // A descriptor-like POD: addr (u64), len (u32), flags (u16), next (u16), as words.
    let s = svm();
    let d: [u16; 8] = [0x1234, 0, 0, 0, 1500, 0, 1, 3];
    s.write_obj(0x510, &d).unwrap();
    assert_eq!(s.read_obj::<[u16; 8]>(0x510).unwrap(), d);
    assert_eq!(s.load_u64(0x510, Ordering::Relaxed).unwrap(), 0x1234);
    assert_eq!(s.load_u32(0x518, Ordering::Relaxed).unwrap(), 1500);
    s.fill(0x700, 1000, 0xab).unwrap();
    let mut b = vec![0u8; 1002];
    s.read_bytes(0x6ff, &mut b).unwrap();
    assert_eq!(b[0], 0);
    assert!(b[1..1001].iter().all(|&x| x == 0xab));
    assert_eq!(b[1001], 0);
    // Through the DriverMem trait, as a driver sees it.
    let m: &dyn DriverMem = &s;
    m.zero_bytes(0x700, 1000).unwrap();
    assert_eq!(s.read_obj::<[u8; 4]>(0x700).unwrap(), [0; 4]);
    m.store_release_u16(0x402, 3).unwrap();
    assert_eq!(m.load_acquire_u16(0x402).unwrap(), 3);
    assert_eq!(m.region_len(), 2 * PAGE);
    assert_eq!(
        m.write_u32(0x104, 1).unwrap_err(),
        MemFault::new(0x104, 4, FaultKind::Permission)
    );
}

#[test]
fn map_validation() {
    let reg = region(PAGE);
    let e = Svm::new(
        reg.clone(),
        &[
            r(0, 16, Access::ReadWrite, "a"),
            r(8, 16, Access::ReadOnly, "b"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        e,
        SvmError::Overlap {
            first: "a",
            second: "b",
            at: 8
        }
    );
    // Overlap found regardless of input order; also a range inside another.
    assert!(matches!(
        Svm::new(
            reg.clone(),
            &[
                r(100, 10, Access::None, "inner"),
                r(0, 1000, Access::ReadWrite, "outer")
            ]
        ),
        Err(SvmError::Overlap {
            first: "outer",
            second: "inner",
            ..
        })
    ));
    assert!(matches!(
        Svm::new(reg.clone(), &[r(PAGE - 8, 16, Access::ReadWrite, "tail")]),
        Err(SvmError::OutsideRegion { name: "tail", .. })
    ));
    assert!(matches!(
        Svm::new(reg.clone(), &[r(PAGE, 1, Access::ReadOnly, "past")]),
        Err(SvmError::OutsideRegion { .. })
    ));
    assert!(matches!(
        Svm::new(reg.clone(), &[r(u64::MAX, 2, Access::ReadOnly, "wrap")]),
        Err(SvmError::OutsideRegion { .. })
    ));
    assert_eq!(
        Svm::new(reg.clone(), &[r(64, 0, Access::ReadWrite, "empty")]).unwrap_err(),
        SvmError::EmptyRange {
            name: "empty",
            start: 64
        }
    );
    // Touching ranges are fine; the map comes back sorted; an empty map is valid.
    let s = Svm::new(
        reg.clone(),
        &[
            r(16, 16, Access::ReadOnly, "b"),
            r(0, 16, Access::ReadWrite, "a"),
        ],
    )
    .unwrap();
    let names: Vec<_> = s.map().iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b"]);
    let empty = Svm::new(reg.clone(), &[]).unwrap();
    assert_eq!(
        kind(empty.load_u16(0, Ordering::Relaxed)),
        SvmFaultKind::Unmapped
    );
    let whole = Svm::new(reg, &[r(0, PAGE, Access::ReadWrite, "all")]).unwrap();
    whole.store_u64(PAGE - 8, 1, Ordering::Relaxed).unwrap();
    assert!(e.to_string().contains("overlap"));
}

#[test]
fn faults_are_counted_and_recorded() {
    let s = svm();
    assert_eq!(
        (s.faults(), s.last_fault(), s.first_fault()),
        (0, None, None)
    );
    let first = s.store_u64(0x208, 1, Ordering::Relaxed).unwrap_err();
    assert_eq!(
        first,
        SvmFault {
            addr: 0x208,
            size: 8,
            op: Op::Write,
            kind: SvmFaultKind::Permission { op: Op::Write },
            range: Some("private"),
        }
    );
    assert_eq!(
        first.to_string(),
        "svm fault: write of 8 bytes at driver address 0x208: no write access (range \"private\")"
    );
    // A driver that swallows the error: the host still sees it.
    let _ = s.load_u32(0x2, Ordering::Relaxed);
    let _ = s.read_bytes(0x1ff0, &mut [0u8; 32]);
    assert_eq!(s.faults(), 3);
    assert_eq!(s.first_fault(), Some(first));
    let last = s.last_fault().unwrap();
    assert_eq!(
        (last.addr, last.size, last.kind),
        (0x1ff0, 32, SvmFaultKind::Unmapped)
    );
    assert_eq!(last.range, Some("buffers"));
    assert!(last.to_string().contains("unmapped"));
    // Successful accesses change nothing.
    s.load_u32(0x4, Ordering::Relaxed).unwrap();
    assert_eq!(s.faults(), 3);
    assert_eq!(s.last_fault(), Some(last));
}

#[test]
fn svm_is_send() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let s = svm();
    let s = std::thread::spawn(move || {
        let s = send(s);
        s.store_u16(0, 5, Ordering::Release).unwrap();
        s
    })
    .join()
    .unwrap();
    assert_eq!(s.load_u16(0, Ordering::Acquire).unwrap(), 5);
}

#[test]
fn every_access_is_counted_as_a_check_granted_or_refused() {
    let s = svm();
    assert_eq!(s.checks(), 0);
    s.store_u32(0x10, 7, Ordering::Relaxed).unwrap();
    assert_eq!(s.load_u32(0x10, Ordering::Relaxed).unwrap(), 7);
    assert_eq!(s.checks(), 2);
    assert!(s.load_u32(0x200, Ordering::Relaxed).is_err());
    assert_eq!((s.checks(), s.faults()), (3, 1));
}

/// A driver sees the SVM only through `DriverMem`: every method of it must reach the
/// same bytes as the SVM's own accessors, and refuse what the map refuses.
#[test]
fn the_driver_mem_impl_reads_and_writes_through_the_checks() {
    let s = svm();
    let m: &dyn DriverMem = &s;
    m.write_u16(0x10, 0xa1b2).unwrap();
    m.write_u32(0x20, 0xa1b2_c3d4).unwrap();
    m.write_u64(0x40, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(s.load_u16(0x10, Ordering::Relaxed).unwrap(), 0xa1b2);
    assert_eq!(s.load_u32(0x20, Ordering::Relaxed).unwrap(), 0xa1b2_c3d4);
    assert_eq!(
        s.load_u64(0x40, Ordering::Relaxed).unwrap(),
        0x0102_0304_0506_0708
    );
    s.store_u16(0x12, 0x3344, Ordering::Relaxed).unwrap();
    s.store_u32(0x24, 0x5566_7788, Ordering::Relaxed).unwrap();
    s.store_u64(0x48, 0x99aa_bbcc_ddee_ff00, Ordering::Relaxed)
        .unwrap();
    assert_eq!(m.read_u16(0x12).unwrap(), 0x3344);
    assert_eq!(m.read_u32(0x24).unwrap(), 0x5566_7788);
    assert_eq!(m.read_u64(0x48).unwrap(), 0x99aa_bbcc_ddee_ff00);
    m.write_bytes(0x800, &[1, 2, 3, 4, 5]).unwrap();
    let mut b = [0u8; 5];
    s.read_bytes(0x800, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4, 5]);
    s.write_bytes(0x900, &[9, 8, 7]).unwrap();
    let mut c = [0u8; 3];
    m.read_bytes(0x900, &mut c).unwrap();
    assert_eq!(c, [9, 8, 7]);
    m.fence();
    // Refusals come back as the MemFault of the SVM's fault.
    let ro = MemFault::new(0x100, 2, FaultKind::Permission);
    assert_eq!(m.write_u16(0x100, 1).unwrap_err(), ro);
    assert_eq!(
        m.write_u64(0x108, 1).unwrap_err(),
        MemFault::new(0x108, 8, FaultKind::Permission)
    );
    assert_eq!(
        m.read_u16(0x200).unwrap_err(),
        MemFault::new(0x200, 2, FaultKind::Permission)
    );
    assert_eq!(
        m.read_u32(0x310).unwrap_err(),
        MemFault::new(0x310, 4, FaultKind::OutOfBounds)
    );
    assert_eq!(
        m.read_u64(0x204).unwrap_err(),
        MemFault::new(0x204, 8, FaultKind::Misaligned)
    );
    assert_eq!(
        m.write_bytes(0x1fe, &[0; 4]).unwrap_err(),
        MemFault::new(0x1fe, 4, FaultKind::Permission)
    );
    assert_eq!(
        m.read_bytes(0x2fe, &mut [0; 4]).unwrap_err(),
        MemFault::new(0x2fe, 4, FaultKind::Permission)
    );
    assert_eq!(
        m.zero_bytes(0x300, 1).unwrap_err(),
        MemFault::new(0x300, 1, FaultKind::OutOfBounds)
    );
    assert_eq!(s.faults(), 8);
    // The refused writes changed nothing.
    assert_eq!(s.load_u64(0x100, Ordering::Relaxed).unwrap(), 0);
    assert_eq!(s.load_u64(0x108, Ordering::Relaxed).unwrap(), 0);
}
