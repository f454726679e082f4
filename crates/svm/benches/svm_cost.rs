//! What SVM's checks cost compared with direct vm-memory access to the same mapping.
//!
//! Hand-rolled (no criterion): each measurement runs a loop of N operations and is
//! repeated REPS times, alternating with its direct counterpart so that changes in the
//! machine's load hit both alike; the median (and the minimum) ns/operation are
//! reported. Addresses are passed through `black_box` so the compiler cannot hoist
//! the checks out of the loops. "direct" is what `driver_host::env::DirectEnv` does:
//! vm-memory's `get_atomic_ref` / `get_slice` on the region's mapping.
//!
//! Run: `cargo bench -p svm --bench svm_cost`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use driver_env::access::{Access, AccessRange};
use driver_host::region::Region;
use svm::{Op, Svm};
use vm_memory::{AtomicInteger, MmapRegion, VolatileMemory, VolatileSlice};

const REPS: usize = 9;

// The layout of a virtio-like driver region (one queue), as a twin would see it.
const STATE: u64 = 0x0000; // RW, driver state page
const PRIVATE: u64 = 0x0100; // None, driver-domain private metadata
const DESC: u64 = 0x1000; // RW, descriptor table (256 x 16 bytes)
const AVAIL: u64 = 0x2000; // RW, avail ring (adjacent to DESC: merged)
const USED: u64 = 0x3000; // RO, used ring (the device writes it)
const QSTATE: u64 = 0x4000; // RW, queue state block
const PRIVATE2: u64 = 0x5000; // None
const BUFFERS: u64 = 0x10000; // RW, DMA buffers (2 KiB each)
const REGION_LEN: u64 = 0x10000 + 256 * 2048;

fn layout() -> Vec<AccessRange> {
    let r = |start, len, access, name| AccessRange {
        start,
        len,
        access,
        name,
    };
    vec![
        r(STATE, 0x100, Access::ReadWrite, "state"),
        r(PRIVATE, 0xf00, Access::None, "private"),
        r(DESC, 0x1000, Access::ReadWrite, "desc"),
        r(AVAIL, 0x1000, Access::ReadWrite, "avail"),
        r(USED, 0x1000, Access::ReadOnly, "used"),
        r(QSTATE, 0x1000, Access::ReadWrite, "qstate"),
        r(PRIVATE2, 0x1000, Access::None, "private2"),
        r(BUFFERS, 256 * 2048, Access::ReadWrite, "buffers"),
    ]
}

/// A u16 in the 64-byte granule of `layout_with_hole` that holds its hole.
const MIXED_USED: u64 = QSTATE - 0x40;

fn layout_with_hole() -> Vec<AccessRange> {
    layout()
        .into_iter()
        .map(|r| {
            if r.name == "used" {
                AccessRange {
                    len: r.len - 1,
                    ..r
                }
            } else {
                r
            }
        })
        .collect()
}

/// The operations both sides provide, so one generic body measures both.
trait Mem {
    fn ld16(&self, addr: u64, o: Ordering) -> Option<u16>;
    fn ld32(&self, addr: u64, o: Ordering) -> Option<u32>;
    fn ld64(&self, addr: u64, o: Ordering) -> Option<u64>;
    fn st16(&self, addr: u64, v: u16, o: Ordering) -> Option<()>;
    fn st32(&self, addr: u64, v: u32, o: Ordering) -> Option<()>;
    fn st64(&self, addr: u64, v: u64, o: Ordering) -> Option<()>;
    fn sl(&self, addr: u64, len: usize, op: Op) -> Option<VolatileSlice<'_>>;
}

/// Direct access: what `driver_host::env::DirectEnv` does (one bounds-and-alignment
/// check by vm-memory on the raw mapping, no permissions).
struct Direct<'a>(&'a MmapRegion);

impl Direct<'_> {
    #[inline(always)]
    fn atomic<T: AtomicInteger>(&self, addr: u64) -> Option<&T> {
        self.0.get_atomic_ref::<T>(usize::try_from(addr).ok()?).ok()
    }
}

impl Mem for Direct<'_> {
    #[inline(always)]
    fn ld16(&self, addr: u64, o: Ordering) -> Option<u16> {
        Some(u16::from_le(self.atomic::<AtomicU16>(addr)?.load(o)))
    }
    #[inline(always)]
    fn ld32(&self, addr: u64, o: Ordering) -> Option<u32> {
        Some(u32::from_le(self.atomic::<AtomicU32>(addr)?.load(o)))
    }
    #[inline(always)]
    fn ld64(&self, addr: u64, o: Ordering) -> Option<u64> {
        Some(u64::from_le(self.atomic::<AtomicU64>(addr)?.load(o)))
    }
    #[inline(always)]
    fn st16(&self, addr: u64, v: u16, o: Ordering) -> Option<()> {
        self.atomic::<AtomicU16>(addr)?.store(v.to_le(), o);
        Some(())
    }
    #[inline(always)]
    fn st32(&self, addr: u64, v: u32, o: Ordering) -> Option<()> {
        self.atomic::<AtomicU32>(addr)?.store(v.to_le(), o);
        Some(())
    }
    #[inline(always)]
    fn st64(&self, addr: u64, v: u64, o: Ordering) -> Option<()> {
        self.atomic::<AtomicU64>(addr)?.store(v.to_le(), o);
        Some(())
    }
    #[inline(always)]
    fn sl(&self, addr: u64, len: usize, _op: Op) -> Option<VolatileSlice<'_>> {
        self.0.get_slice(usize::try_from(addr).ok()?, len).ok()
    }
}

impl Mem for Svm {
    #[inline(always)]
    fn ld16(&self, addr: u64, o: Ordering) -> Option<u16> {
        self.load_u16(addr, o).ok()
    }
    #[inline(always)]
    fn ld32(&self, addr: u64, o: Ordering) -> Option<u32> {
        self.load_u32(addr, o).ok()
    }
    #[inline(always)]
    fn ld64(&self, addr: u64, o: Ordering) -> Option<u64> {
        self.load_u64(addr, o).ok()
    }
    #[inline(always)]
    fn st16(&self, addr: u64, v: u16, o: Ordering) -> Option<()> {
        self.store_u16(addr, v, o).ok()
    }
    #[inline(always)]
    fn st32(&self, addr: u64, v: u32, o: Ordering) -> Option<()> {
        self.store_u32(addr, v, o).ok()
    }
    #[inline(always)]
    fn st64(&self, addr: u64, v: u64, o: Ordering) -> Option<()> {
        self.store_u64(addr, v, o).ok()
    }
    #[inline(always)]
    fn sl(&self, addr: u64, len: usize, op: Op) -> Option<VolatileSlice<'_>> {
        self.slice(addr, len, op).ok()
    }
}

/// Median and minimum ns per operation of `direct(n)` and `svm(n)`, each of which
/// performs `n` operations. The two are run alternately (direct, svm, direct, ...) so
/// that a change in the machine's load affects both alike.
fn measure(n: u64, mut direct: impl FnMut(u64), mut svm: impl FnMut(u64)) -> Row {
    // Warm up (page faults, caches, branch predictors).
    direct(n / 4);
    svm(n / 4);
    let mut d = Vec::with_capacity(REPS);
    let mut s = Vec::with_capacity(REPS);
    let time = |f: &mut dyn FnMut(u64)| {
        let t = Instant::now();
        f(n);
        t.elapsed().as_nanos() as f64 / n as f64
    };
    for _ in 0..REPS {
        d.push(time(&mut direct));
        s.push(time(&mut svm));
    }
    d.sort_by(f64::total_cmp);
    s.sort_by(f64::total_cmp);
    Row {
        name: "",
        direct: d[REPS / 2],
        svm: s[REPS / 2],
        direct_min: d[0],
        svm_min: s[0],
    }
}

// ---- the measured bodies (generic: the same code for direct and SVM) ----

/// Relaxed u16 loads at 8 addresses of `base`'s range, or alternating between `base`
/// and `alt` (two ranges the SVM cannot merge: a miss on every access).
fn loads_u16<M: Mem>(m: &M, n: u64, base: u64, alt: Option<u64>) {
    for i in 0..n {
        let b = match alt {
            Some(a) if i & 1 == 1 => a,
            _ => base,
        };
        let addr = black_box(b + ((i & 7) << 1));
        black_box(m.ld16(addr, Ordering::Relaxed));
    }
}

fn acquire_loads<M: Mem>(m: &M, n: u64) {
    for i in 0..n {
        let addr = black_box(USED + ((i & 7) << 1));
        black_box(m.ld16(addr, Ordering::Acquire));
    }
}

fn release_stores<M: Mem>(m: &M, n: u64) {
    for i in 0..n {
        let addr = black_box(AVAIL + ((i & 7) << 1));
        black_box(m.st16(addr, i as u16, Ordering::Release));
    }
}

fn frame_read<M: Mem>(m: &M, n: u64, len: usize) {
    let mut v = vec![0u8; len];
    let buf = &mut v[..];
    for i in 0..n {
        let addr = black_box(BUFFERS + (i & 63) * 2048);
        if let Some(s) = m.sl(addr, buf.len(), Op::Read) {
            s.copy_to(&mut *buf);
        }
        black_box(&mut *buf);
    }
}

fn frame_write<M: Mem>(m: &M, n: u64, len: usize) {
    let v = vec![0x5au8; len];
    let buf = &v[..];
    for i in 0..n {
        let addr = black_box(BUFFERS + (i & 63) * 2048);
        if let Some(s) = m.sl(addr, buf.len(), Op::Write) {
            s.copy_from(black_box(buf));
        }
    }
}

/// One packet's worth of a virtio driver's fast path: reap a used entry, read its
/// descriptor, copy out 64 bytes of the frame, re-post the descriptor, publish the
/// avail index, bump a counter. 14 typed accesses over 5 ranges + one slice copy.
#[inline(always)]
fn packet<M: Mem>(m: &M, i: u64, buf: &mut [u8; 64]) -> Option<()> {
    let slot = i & 255;
    let used_idx = m.ld16(black_box(USED + 2), Ordering::Acquire)?;
    let elem = USED + 4 + slot * 8;
    let id = u64::from(m.ld32(elem, Ordering::Relaxed)? & 255);
    let len = m.ld32(elem + 4, Ordering::Relaxed)?;
    let d = DESC + id * 16;
    let addr = m.ld64(d, Ordering::Relaxed)?;
    let dlen = m.ld32(d + 8, Ordering::Relaxed)?;
    let buf_addr = BUFFERS + (id << 11);
    let s = m.sl(black_box(buf_addr), 64, Op::Read)?;
    s.copy_to(&mut buf[..]);
    m.st64(d, addr.wrapping_add(u64::from(len & 1)), Ordering::Relaxed)?;
    m.st32(d + 8, dlen | 2048, Ordering::Relaxed)?;
    m.st16(d + 12, 2, Ordering::Relaxed)?;
    m.st16(AVAIL + 4 + slot * 2, id as u16, Ordering::Relaxed)?;
    m.st16(AVAIL + 2, used_idx.wrapping_add(1), Ordering::Release)?;
    let c = m.ld64(QSTATE + 8, Ordering::Relaxed)?;
    m.st64(QSTATE + 8, c.wrapping_add(1), Ordering::Relaxed)?;
    let flags = m.ld16(black_box(STATE + 4), Ordering::Relaxed)?;
    black_box(flags);
    Some(())
}

fn packets<M: Mem>(m: &M, n: u64) {
    let mut buf = [0u8; 64];
    let mut ok = 0u64;
    for i in 0..n {
        ok += u64::from(packet(m, i, &mut buf).is_some());
    }
    assert_eq!(ok, n, "every access of the packet pattern must be allowed");
    black_box(buf);
}

struct Row {
    name: &'static str,
    /// Medians.
    direct: f64,
    svm: f64,
    /// Minima.
    direct_min: f64,
    svm_min: f64,
}

impl Row {
    fn named(self, name: &'static str) -> Row {
        Row { name, ..self }
    }
}

fn main() {
    let region = Arc::new(Region::create("svm-bench", REGION_LEN).expect("memfd region"));
    let svm = Svm::new(region.clone(), &layout()).expect("valid map");
    let direct = Direct(region.mapping());
    // The same layout with a one-byte hole at the end of "used": the read spans'
    // boundaries are no longer 256-byte aligned, the granule table is capped at 64-byte
    // granules, and the granule holding the hole straddles a span boundary, so an
    // access there takes the binary-search path.
    let svm2 = Svm::new(region.clone(), &layout_with_hole()).expect("valid map");
    let (s, s2, d) = (&svm, &svm2, &direct);

    const N: u64 = 20_000_000;
    const NF: u64 = 2_000_000;
    const NP: u64 = 2_000_000;

    let rows = [
        measure(
            N,
            |n| loads_u16(d, n, QSTATE, None),
            |n| loads_u16(s, n, QSTATE, None),
        )
        .named("(a) load_u16, one range (cache hit)"),
        measure(
            N,
            |n| loads_u16(d, n, QSTATE, Some(BUFFERS)),
            |n| loads_u16(s, n, QSTATE, Some(BUFFERS)),
        )
        .named("(a) load_u16, alternating ranges (granule hit)"),
        measure(
            N,
            |n| loads_u16(d, n, MIXED_USED, Some(BUFFERS)),
            |n| loads_u16(s2, n, MIXED_USED, Some(BUFFERS)),
        )
        .named("(a) load_u16, alternating, 1 side binary search"),
        measure(N, |n| acquire_loads(d, n), |n| acquire_loads(s, n))
            .named("(b) load_u16 acquire (used.idx)"),
        measure(N, |n| release_stores(d, n), |n| release_stores(s, n))
            .named("(b) store_u16 release (avail.idx)"),
        measure(NF, |n| frame_read(d, n, 64), |n| frame_read(s, n, 64))
            .named("(c) 64 B frame: slice + copy out"),
        measure(NF, |n| frame_write(d, n, 64), |n| frame_write(s, n, 64))
            .named("(c) 64 B frame: slice + copy in"),
        measure(NF, |n| frame_read(d, n, 1500), |n| frame_read(s, n, 1500))
            .named("(c) 1500 B frame: slice + copy out"),
        measure(NF, |n| frame_write(d, n, 1500), |n| frame_write(s, n, 1500))
            .named("(c) 1500 B frame: slice + copy in"),
        measure(NP, |n| packets(d, n), |n| packets(s, n))
            .named("(d) per-packet pattern (14 typed + 64 B copy)"),
    ];
    // QSTATE and BUFFERS lie in different read spans (PRIVATE2 separates them), so in
    // the alternating rows every access misses the one-entry cache.
    assert_eq!(
        svm.faults() + svm2.faults(),
        0,
        "the benchmark must not fault"
    );

    println!();
    println!(
        "svm_cost: ns per operation, median (and minimum) of {REPS} alternating runs; region {} KiB, {} map ranges",
        REGION_LEN / 1024,
        svm.map().len()
    );
    println!(
        "{:<48} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
        "operation", "direct", "svm", "ratio", "min dir", "min svm", "ratio"
    );
    println!("{}", "-".repeat(103));
    for r in &rows {
        println!(
            "{:<48} {:>8.2} {:>8.2} {:>7.2} | {:>8.2} {:>8.2} {:>7.2}",
            r.name,
            r.direct,
            r.svm,
            r.svm / r.direct,
            r.direct_min,
            r.svm_min,
            r.svm_min / r.direct_min
        );
    }
    println!();
}
