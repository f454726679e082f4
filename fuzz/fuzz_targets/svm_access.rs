//! The SVM's checks, and the switch's instances attaching to a garbage region.
//!
//! Two kinds of input:
//!
//! * `Svm`: an arbitrary access map (ranges laid end to end with gaps, or raw
//!   starts and lengths that may overlap, overflow or leave the region) over a
//!   small region, then arbitrary accesses: `check`, typed loads and stores of
//!   each width and ordering, `slice`, byte copies, `fill`, objects. Each result
//!   is compared with a byte-by-byte model of the map: an access of `n > 0` bytes
//!   is allowed exactly when it is inside the region, naturally aligned (typed
//!   accesses) and every byte lies in a range that permits the operation; a
//!   `slice` returned lies inside the mapping.
//! * `Twin`: a driver region initialised by `VirtioNet::init`, then garbage written
//!   over it (patches, or everything but the first words), then the switch's two
//!   instances attach to it as after a handover, the twin (`FastPath` over
//!   `SvmEnv`, the driver's access map) and the inline one (`DirectEnv`), and run
//!   sends, flushes, receive bursts and notification changes while the hostile
//!   domain or NIC keeps writing into the region.
//!
//! Checked: no panic (a panic caught by the twin's guard aborts the run as well:
//! libFuzzer's panic hook), no hang (the twin's watchdog, libFuzzer's timeout), the
//! model above, and frames handed out lie inside the region.
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arbitrary::Arbitrary;
use driver_env::access::{Access, AccessRange};
use driver_env::{UpcallMsg, UpcallRoute};
use driver_host::env::{Bell, DirectEnv, UpcallSink};
use driver_host::region::Region;
use driver_host::FastPath;
use libfuzzer_sys::fuzz_target;
use svm::{Op, Svm};
use twin_runtime::{SvmEnv, SwitchInstance, Twin, TwinFault};
use twin_wire::features::{F_VERSION_1, NET_F_MRG_RXBUF, RING_F_EVENT_IDX};
use twin_wire::Segments;
use virtio_net_driver::{NetConfig, NetLayout, VirtioNet};
use vm_memory::VolatileSlice;
use vmm_sys_util::eventfd::EventFd;

const PAGE: u64 = 4096;

#[derive(Arbitrary, Debug)]
enum Input {
    Svm(SvmCase),
    Twin(TwinCase),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Perm {
    None,
    Ro,
    Rw,
}

impl Perm {
    fn access(self) -> Access {
        match self {
            Perm::None => Access::None,
            Perm::Ro => Access::ReadOnly,
            Perm::Rw => Access::ReadWrite,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Map {
    /// Ranges end to end: each after a gap of `gap` bytes.
    Laid(Vec<(u8, u16, Perm)>),
    /// Anything: overlapping, empty, outside, overflowing.
    Raw(Vec<(u64, u64, Perm)>),
}

#[derive(Arbitrary, Debug)]
struct SvmCase {
    pages: u8,
    map: Map,
    accesses: Vec<Acc>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Near(u16),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Near(a) => u64::from(a),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Check { size: u16, write: bool },
    CheckRaw { size: u64, write: bool },
    Load16,
    Load32,
    Load64,
    Store16,
    Store32,
    Store64,
    Slice { len: u16, write: bool },
    ReadBytes { len: u16 },
    WriteBytes { len: u16 },
    Fill { len: u16 },
    ReadObj,
    WriteObj,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Acc {
    kind: Kind,
    addr: Addr,
    order: u8,
}

fn order(o: u8) -> Ordering {
    [
        Ordering::Relaxed,
        Ordering::Acquire,
        Ordering::Release,
        Ordering::AcqRel,
        Ordering::SeqCst,
    ][usize::from(o % 5)]
}

/// Byte-by-byte model of the validated map.
struct Model {
    len: u64,
    map: Vec<AccessRange>,
}

impl Model {
    fn permits(&self, byte: u64, op: Op) -> bool {
        self.map.iter().any(|r| {
            byte >= r.start
                && byte - r.start < r.len
                && matches!(
                    (r.access, op),
                    (Access::ReadWrite, _) | (Access::ReadOnly, Op::Read)
                )
        })
    }

    /// Whether `size > 0` bytes at `addr` may be accessed for `op`.
    fn allows(&self, addr: u64, size: u64, op: Op) -> bool {
        let Some(end) = addr.checked_add(size) else {
            return false;
        };
        end <= self.len && (addr..end).all(|b| self.permits(b, op))
    }
}

fn svm_case(c: SvmCase) {
    let len = u64::from(c.pages % 4 + 1) * PAGE;
    let region = Arc::new(Region::create("fuzz-svm", len).expect("region"));
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut map = Vec::new();
    match c.map {
        Map::Laid(rs) => {
            let mut at = 0u64;
            for (i, (gap, l, p)) in rs.into_iter().take(16).enumerate() {
                at += u64::from(gap);
                map.push(AccessRange {
                    start: at,
                    len: u64::from(l),
                    access: p.access(),
                    name: names[i % names.len()],
                });
                at += u64::from(l);
            }
        }
        Map::Raw(rs) => {
            for (i, (s, l, p)) in rs.into_iter().take(16).enumerate() {
                map.push(AccessRange {
                    start: s,
                    len: l,
                    access: p.access(),
                    name: names[i % names.len()],
                });
            }
        }
    }
    let Ok(svm) = Svm::new(region.clone(), &map) else {
        return;
    };
    let model = Model {
        len,
        map: svm.map().to_vec(),
    };
    let base = region.mapping().as_ptr() as usize;
    let mut buf = vec![0u8; 65536];
    for a in c.accesses.into_iter().take(128) {
        let addr = a.addr.get();
        let o = order(a.order);
        let typed = |size: u64, op: Op| addr % size == 0 && model.allows(addr, size, op);
        match a.kind {
            Kind::Check { size, write } => {
                let op = if write { Op::Write } else { Op::Read };
                let size = u64::from(size);
                let r = svm.check(addr, size, op);
                if size > 0 {
                    assert_eq!(
                        r.is_ok(),
                        model.allows(addr, size, op),
                        "check {addr:#x}+{size} {op:?}"
                    );
                }
                if let Ok(off) = r {
                    assert_eq!(off as u64, addr);
                    assert!(addr + size <= len);
                }
            }
            Kind::CheckRaw { size, write } => {
                let op = if write { Op::Write } else { Op::Read };
                let r = svm.check(addr, size, op);
                if size > 0 {
                    assert_eq!(
                        r.is_ok(),
                        model.allows(addr, size, op),
                        "check {addr:#x}+{size} {op:?}"
                    );
                }
            }
            Kind::Load16 => assert_eq!(svm.load_u16(addr, o).is_ok(), typed(2, Op::Read)),
            Kind::Load32 => assert_eq!(svm.load_u32(addr, o).is_ok(), typed(4, Op::Read)),
            Kind::Load64 => assert_eq!(svm.load_u64(addr, o).is_ok(), typed(8, Op::Read)),
            Kind::Store16 => {
                assert_eq!(svm.store_u16(addr, 0xa5a5, o).is_ok(), typed(2, Op::Write))
            }
            Kind::Store32 => assert_eq!(svm.store_u32(addr, 7, o).is_ok(), typed(4, Op::Write)),
            Kind::Store64 => assert_eq!(svm.store_u64(addr, 9, o).is_ok(), typed(8, Op::Write)),
            Kind::Slice { len: l, write } => {
                let op = if write { Op::Write } else { Op::Read };
                let r = svm.slice(addr, usize::from(l), op);
                if l > 0 {
                    assert_eq!(r.is_ok(), model.allows(addr, u64::from(l), op));
                }
                if let Ok(s) = r {
                    let p = s.ptr_guard().as_ptr() as usize;
                    assert!(p >= base && p + s.len() <= base + len as usize);
                    assert_eq!(s.len(), usize::from(l));
                }
            }
            Kind::ReadBytes { len: l } => {
                let r = svm.read_bytes(addr, &mut buf[..usize::from(l)]);
                if l > 0 {
                    assert_eq!(r.is_ok(), model.allows(addr, u64::from(l), Op::Read));
                }
            }
            Kind::WriteBytes { len: l } => {
                let r = svm.write_bytes(addr, &buf[..usize::from(l)]);
                if l > 0 {
                    assert_eq!(r.is_ok(), model.allows(addr, u64::from(l), Op::Write));
                }
            }
            Kind::Fill { len: l } => {
                let r = svm.fill(addr, u64::from(l), 0x5a);
                if l > 0 {
                    assert_eq!(r.is_ok(), model.allows(addr, u64::from(l), Op::Write));
                }
            }
            Kind::ReadObj => {
                let r = svm.read_obj::<[u8; 12]>(addr);
                assert_eq!(r.is_ok(), model.allows(addr, 12, Op::Read));
            }
            Kind::WriteObj => {
                let r = svm.write_obj(addr, &[1u8; 12]);
                assert_eq!(r.is_ok(), model.allows(addr, 12, Op::Write));
            }
        }
        if svm.faults() > 0 {
            assert!(svm.first_fault().is_some() && svm.last_fault().is_some());
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Garbage {
    /// Writes at chosen offsets (the state page and queue areas most of the time).
    Patches(Vec<(u16, Vec<u8>)>),
    /// Every byte past the first `keep` words replaced by a repeating pattern.
    Fill { keep: u8, pattern: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum TwinOp {
    Send {
        len: u16,
    },
    Flush,
    RxBurst {
        max: u8,
    },
    RxNotify(bool),
    Sync,
    /// The hostile side writes into the region while the instance runs.
    Write {
        at: u32,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct TwinCase {
    queue_log2: u8,
    event_idx: bool,
    mrg_rxbuf: bool,
    /// Region length relative to the layout's, in pages (short regions too).
    len_delta: i8,
    garbage: Garbage,
    inline: bool,
    ops: Vec<TwinOp>,
}

#[derive(Debug)]
struct NoDomain;

impl UpcallSink for NoDomain {
    fn post(&self, _msg: UpcallMsg) -> UpcallRoute {
        UpcallRoute::Dropped
    }
}

fn kicks() -> Vec<EventFd> {
    let e = || EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).expect("eventfd");
    vec![e(), e()]
}

fn twin_case(c: TwinCase) {
    let cfg = NetConfig {
        queue_size: 1 << (1 + c.queue_log2 % 5),
        buf_size: 2048,
    };
    let layout = NetLayout::new(cfg).expect("layout");
    let pages = (layout.region_len / PAGE) as i64 + i64::from(c.len_delta % 4);
    let len = pages.max(1) as u64 * PAGE;
    let region = Arc::new(Region::create("fuzz-twin", len).expect("region"));
    let mut features = F_VERSION_1;
    if c.event_idx {
        features |= RING_F_EVENT_IDX;
    }
    if c.mrg_rxbuf {
        features |= NET_F_MRG_RXBUF;
    }
    {
        let env = DirectEnv::new(region.clone(), Vec::new());
        // A short region is refused here; the garbage below still goes on.
        let _ = VirtioNet::init(&env, cfg, features);
    }
    let write = |at: u64, bytes: &[u8]| {
        let at = at % len;
        let n = bytes.len().min((len - at) as usize);
        if let Some(s) = region.slice(at, n) {
            s.copy_from(&bytes[..n]);
        }
    };
    match &c.garbage {
        Garbage::Patches(ps) => {
            for (at, bytes) in ps.iter().take(32) {
                // Offsets in units of 2 bytes: the state page, the private page,
                // the queues, the start of the pool.
                write(u64::from(*at) * 2, bytes);
            }
        }
        Garbage::Fill { keep, pattern } => {
            if !pattern.is_empty() {
                let from = u64::from(*keep) * 4;
                let mut chunk = Vec::with_capacity(4096);
                while chunk.len() < 4096 {
                    chunk.extend_from_slice(pattern);
                }
                let mut at = from;
                while at < len {
                    write(at, &chunk);
                    at += chunk.len() as u64;
                }
            }
        }
    }
    let instance = if c.inline {
        let bells = kicks().into_iter().map(Bell::EventFd).collect();
        let env = DirectEnv::with_upcalls(region.clone(), bells, Box::new(NoDomain));
        match FastPath::attach(env) {
            Ok(fp) => SwitchInstance::Inline(Box::new(fp)),
            Err(_) => return,
        }
    } else {
        let Ok(svm) = Svm::new(region.clone(), &layout.twin_access_map()) else {
            return;
        };
        let env = SvmEnv::new(svm, kicks(), Box::new(NoDomain));
        env.enter();
        match FastPath::attach(env) {
            Ok(fp) => SwitchInstance::Twin(Box::new(Twin::new(fp))),
            Err(_) => return,
        }
    };
    let mut inst = instance;
    let base = region.mapping().as_ptr() as usize;
    let mut frame = [0x11u8; 1600];
    for op in c.ops.into_iter().take(64) {
        match op {
            TwinOp::Send { len } => {
                let l = usize::from(len) % frame.len();
                let seg = Segments::single(VolatileSlice::from(&mut frame[..l]));
                let _ = inst.send(&seg);
            }
            TwinOp::Flush => inst.flush(),
            TwinOp::RxBurst { max } => {
                let max = usize::from(max);
                let n = inst.rx_burst(max, |f| {
                    for s in f.as_slice() {
                        let p = s.ptr_guard().as_ptr() as usize;
                        assert!(p >= base && p + s.len() <= base + len as usize);
                    }
                    let mut b = [0u8; 14];
                    f.read_prefix(&mut b);
                });
                assert!(n <= max, "{n} frames of {max}");
            }
            TwinOp::RxNotify(on) => {
                let _ = inst.set_rx_notify(on);
            }
            TwinOp::Sync => inst.sync(),
            TwinOp::Write { at, bytes } => write(u64::from(at), &bytes),
        }
        if let Some(TwinFault::Panic(m)) = inst.fault() {
            panic!("the driver panicked in the twin: {m}");
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Svm(c) => svm_case(c),
    Input::Twin(c) => twin_case(c),
});
