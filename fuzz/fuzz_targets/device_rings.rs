//! A hostile client's split rings, into the device's data path.
//!
//! The approach of `crates/vhost-device/src/datapath/tests.rs`: an in-process fake
//! client lays its rings out in a `ClientMemory` (two regions with a hole between
//! them) and publishes them to a `DeviceHandle`, then writes descriptors (any
//! address, length, flags and next), avail entries and indices, flags, event
//! indices and raw bytes anywhere, and restarts rings at any base, interleaved with
//! the data path's `pop_tx`, `reflect_tx`, `push_rx` and `flush_rx`.
//!
//! Checked: no panic, no hang, every segment of every frame handed out lies inside
//! one region of client memory, a frame is at most `MAX_FRAME` bytes, a batch
//! consumes at most what was asked and at most the queue's size, and the used
//! entries the device publishes have length 0 on TX and at most a header and a
//! frame on RX (unless a descriptor pointed into a used ring: frames land there).
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use twin_wire::ether::MAX_FRAME;
use twin_wire::features::{F_VERSION_1, NET_F_MRG_RXBUF, RING_F_EVENT_IDX};
use twin_wire::Segments;
use vhost_device::fault_fence::ClientMemory;
use vhost_device::shared::{Published, QueueConf, Shared};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice};

/// Region 0: [0, 64 KiB): the rings and buffers; region 1: [128 KiB, 192 KiB).
const R0: u64 = 0;
const R0_LEN: usize = 0x10000;
const R1: u64 = 0x20000;
const R1_LEN: usize = 0x10000;
/// Descriptor tables, avail rings, used rings of RX (queue 0) and TX (queue 1).
const DESC: [u64; 2] = [0x0000, 0x3000];
const AVAIL: [u64; 2] = [0x1000, 0x4000];
const USED: [u64; 2] = [0x2000, 0x5000];

#[derive(Arbitrary, Debug)]
struct Input {
    /// log2 of the queue size (0..=8).
    qsz_log2: u8,
    event_idx: bool,
    mrg_rxbuf: bool,
    version_1: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// In or around client memory (the hole and the ends included).
    Near(u32),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Near(a) => u64::from(a % 0x3_1000),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Small(u8),
    Frame(u16),
    Raw(u32),
}

impl Len {
    fn get(self) -> u32 {
        match self {
            Len::Small(l) => u32::from(l),
            Len::Frame(l) => u32::from(l % 4096),
            Len::Raw(l) => l,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Writes descriptor `i` (masked to 256, so it may lie past a small table).
    Desc {
        tx: bool,
        i: u8,
        addr: Addr,
        len: Len,
        flags: u8,
        next: u16,
    },
    /// Puts `head` in the next avail slot and bumps the avail index.
    Post {
        tx: bool,
        head: u16,
    },
    /// Sets the avail index to anything.
    AvailIdx {
        tx: bool,
        idx: u16,
    },
    /// Moves the avail index by a small step (ahead or back).
    AvailStep {
        tx: bool,
        by: i8,
    },
    AvailFlags {
        tx: bool,
        flags: u16,
    },
    UsedEvent {
        tx: bool,
        v: u16,
    },
    /// Raw bytes anywhere in region 0 but the used rings (the device only writes
    /// those, so what the client writes there changes nothing but the check).
    Write {
        at: u16,
        bytes: Vec<u8>,
    },
    Pop {
        max: u8,
    },
    Reflect {
        max: u8,
    },
    Push {
        len: u16,
        n: u8,
    },
    Flush,
    TxNotify(bool),
    /// The control thread restarts both rings at `base` (SET_VRING_BASE).
    Restart {
        base: u16,
    },
}

struct Client {
    mem: Arc<ClientMemory>,
    shared: Arc<Shared>,
    size: u16,
    avail_idx: [u16; 2],
    base_seq: u64,
    features: u64,
    /// Host address ranges of the client memory.
    host: Vec<(usize, usize)>,
    /// The used index of each ring as last checked.
    used_seen: [u16; 2],
    /// A descriptor pointed into a used ring: the used-ring check is off.
    clobbered: bool,
}

impl Client {
    fn publish(&mut self, base: u16) {
        self.base_seq += 1;
        let q = |i: usize| QueueConf {
            size: self.size,
            desc: DESC[i],
            avail: AVAIL[i],
            used: USED[i],
            base,
            base_seq: self.base_seq,
            kick: None,
            call: None,
            started: true,
            enabled: true,
        };
        self.shared.publish(Published {
            connection: 1,
            connected: true,
            features: self.features,
            mem: Some(self.mem.clone()),
            fault: Default::default(),
            queues: [q(0), q(1)],
        });
        self.avail_idx = [base; 2];
        self.used_seen = [base; 2];
        for i in 0..2 {
            self.w(base, AVAIL[i] + 2);
            self.w(base, USED[i] + 2);
        }
    }

    fn w<T: vm_memory::ByteValued>(&self, v: T, at: u64) {
        // Everything the harness writes lies in region 0.
        self.mem
            .write_obj(v, GuestAddress(at))
            .expect("client write");
    }

    fn inside(&self, s: &VolatileSlice<'_>) -> bool {
        let p = s.ptr_guard().as_ptr() as usize;
        let Some(end) = p.checked_add(s.len()) else {
            return false;
        };
        self.host.iter().any(|&(a, l)| p >= a && end <= a + l)
    }

    fn check_frame(&self, f: &Segments<'_>) {
        assert!(f.len() <= MAX_FRAME, "frame of {} bytes", f.len());
        for s in f.as_slice() {
            assert!(self.inside(s), "segment outside client memory");
        }
        // Touch the bytes, as the switch does.
        let mut b = [0u8; 64];
        f.read_prefix(&mut b);
    }

    /// The used entries the device published since the last check (those still
    /// in the ring): TX ones with length 0, RX ones no longer than a header and a
    /// frame. (How far the used index moves is not bounded by the ring's size: a
    /// client that posts more between two flushes than it has descriptors only
    /// garbles its own used ring.)
    fn check_used(&mut self) {
        // A client whose RX buffers cover its own used ring gets frames there.
        self.clobbered |= self.buffers_over_used_rings();
        if self.clobbered {
            return;
        }
        for (q, &used) in USED.iter().enumerate() {
            let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).expect("used idx");
            let new = idx.wrapping_sub(self.used_seen[q]).min(self.size);
            for k in 0..new {
                let slot = u64::from(idx.wrapping_sub(1 + k) % self.size);
                let len: u32 = self
                    .mem
                    .read_obj(GuestAddress(used + 8 + 8 * slot))
                    .expect("used len");
                let max = if q == 1 { 0 } else { (12 + MAX_FRAME) as u32 };
                assert!(len <= max, "queue {q}: used length {len}");
            }
            self.used_seen[q] = idx;
        }
    }
}

impl Client {
    fn buffers_over_used_rings(&self) -> bool {
        let mut table = [0u8; 16 * 256];
        let n = 16 * usize::from(self.size);
        DESC.iter().any(|&at| {
            self.mem
                .read_slice(&mut table[..n], GuestAddress(at))
                .expect("descriptor table");
            table[..n].chunks_exact(16).any(|d| {
                let addr = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
                let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes"));
                let end = addr.saturating_add(u64::from(len));
                USED.iter().any(|&u| addr < u + 0x1000 && end > u)
            })
        })
    }
}

fn run(input: Input) {
    let size = 1u16 << (input.qsz_log2 % 9);
    let mem = Arc::new(
        ClientMemory::from_ranges(&[(GuestAddress(R0), R0_LEN), (GuestAddress(R1), R1_LEN)])
            .expect("client memory"),
    );
    let host = mem
        .iter()
        .map(|r| (r.as_ptr() as usize, r.len() as usize))
        .collect();
    let shared = Arc::new(Shared::new().expect("shared"));
    let mut h = vhost_device::fuzzing::device_handle(shared.clone());
    let mut features = 0;
    for (on, bit) in [
        (input.version_1, F_VERSION_1),
        (input.event_idx, RING_F_EVENT_IDX),
        (input.mrg_rxbuf, NET_F_MRG_RXBUF),
    ] {
        if on {
            features |= bit;
        }
    }
    let mut c = Client {
        mem,
        shared,
        size,
        avail_idx: [0; 2],
        base_seq: 0,
        features,
        host,
        used_seen: [0; 2],
        clobbered: false,
    };
    c.publish(0);
    let _ = h.refresh();
    let mut src = [0u8; 2048];
    for (i, b) in src.iter_mut().enumerate() {
        *b = i as u8;
    }
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Desc {
                tx,
                i,
                addr,
                len,
                flags,
                next,
            } => {
                let a = DESC[usize::from(tx)] + 16 * u64::from(i);
                c.w(addr.get(), a);
                c.w(len.get(), a + 8);
                c.w(u16::from(flags & 0x7), a + 12);
                c.w(next, a + 14);
            }
            Op::Post { tx, head } => {
                let q = usize::from(tx);
                let slot = u64::from(c.avail_idx[q] % size);
                c.w(head, AVAIL[q] + 4 + 2 * slot);
                c.avail_idx[q] = c.avail_idx[q].wrapping_add(1);
                c.w(c.avail_idx[q], AVAIL[q] + 2);
            }
            Op::AvailIdx { tx, idx } => {
                c.avail_idx[usize::from(tx)] = idx;
                c.w(idx, AVAIL[usize::from(tx)] + 2);
            }
            Op::AvailStep { tx, by } => {
                let q = usize::from(tx);
                c.avail_idx[q] = c.avail_idx[q].wrapping_add(by as i16 as u16);
                c.w(c.avail_idx[q], AVAIL[q] + 2);
            }
            Op::AvailFlags { tx, flags } => c.w(flags, AVAIL[usize::from(tx)]),
            Op::UsedEvent { tx, v } => c.w(v, AVAIL[usize::from(tx)] + 4 + 2 * u64::from(size)),
            Op::Write { at, bytes } => {
                let at = u64::from(at);
                let n = bytes.len().min(R0_LEN - at as usize);
                for (k, b) in bytes[..n].iter().enumerate() {
                    let a = at + k as u64;
                    if !USED.iter().any(|&u| (u..u + 0x1000).contains(&a)) {
                        c.w(*b, a);
                    }
                }
            }
            Op::Pop { max } => {
                let max = usize::from(max);
                let mut frames = 0;
                let n = h.pop_tx(max, |f| {
                    c.check_frame(f);
                    frames += 1;
                });
                assert!(n <= max && n <= usize::from(size), "{n} chains of {max}");
                assert!(frames <= n);
            }
            Op::Reflect { max } => {
                let max = usize::from(max);
                let n = h.reflect_tx(max, twin_wire::ether::swap_macs);
                assert!(n <= max && n <= usize::from(size));
            }
            Op::Push { len, n } => {
                let len = usize::from(len) % (MAX_FRAME + 8);
                for _ in 0..n % 8 {
                    let seg = Segments::single(VolatileSlice::from(&mut src[..len]));
                    let _ = h.push_rx(&seg);
                }
            }
            Op::Flush => h.flush_rx(),
            Op::TxNotify(on) => {
                let _ = h.set_tx_notify(on);
            }
            Op::Restart { base } => {
                // What the data path completed on the old rings is published
                // first; then both rings restart at `base`, the client's used
                // index with them.
                h.flush_rx();
                c.check_used();
                c.publish(base);
                let _ = h.refresh();
                c.check_used();
            }
        }
        c.check_used();
    }
    h.flush_rx();
    c.check_used();
}

fuzz_target!(|input: Input| run(input));
