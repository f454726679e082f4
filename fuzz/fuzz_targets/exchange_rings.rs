//! A hostile driver domain's writes into the exchange region, against the switch's
//! side of its rings.
//!
//! The approach of `crates/exchange/src/ring/tests.rs` (`Fixture`, `poke32`): the
//! switch creates the region, a second mapping of the same memfd stands in for the
//! driver domain. The domain writes anything anywhere (words into the ring
//! control lines and slot headers, raw bytes, the header page), also plays its
//! part of the protocol (consumes `to_nic`, produces `from_nic`, commits
//! unchecked lengths), interleaved with the switch's operations: reserve, commit
//! and publish on `to_nic` and `upcalls`, poll on `from_nic`, notification
//! decisions, a takeover of `to_nic`'s consuming role (`Consumer::resume`), and
//! the status, heartbeat and control words. A garbage file is also attached as a
//! region (the domain's view).
//!
//! Checked: no panic, no hang; the switch's invariants: a poll yields at most what
//! was asked and at most the ring's size (also counting the frames before an
//! error), every frame is `MIN_FRAME..=capacity` bytes and lies in the switch's
//! mapping, a producer never reports more free slots than the ring has nor more
//! outstanding frames than it published, a reserved slot has the geometry's
//! capacity.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use arbitrary::Arbitrary;
use exchange::layout::{MIN_FRAME, PAGE};
use exchange::{Consumer, ExchangeRegion, Geometry, Producer, RingId};
use libfuzzer_sys::fuzz_target;
use twin_wire::Segments;

#[derive(Arbitrary, Debug)]
struct Input {
    /// log2 of the slots per ring (1..=6).
    slots_log2: u8,
    /// Slot size in 64-byte units (1..=40).
    slot_units: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ring {
    ToNic,
    FromNic,
    Upcalls,
}

impl Ring {
    fn id(self) -> RingId {
        match self {
            Ring::ToNic => RingId::ToNic,
            Ring::FromNic => RingId::FromNic,
            Ring::Upcalls => RingId::Upcalls,
        }
    }
}

/// Where the domain writes a word.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Spot {
    /// A ring's producer index, producer event, consumer index, consumer event.
    Ctrl(Ring, u8),
    /// The length word of slot `i`.
    SlotLen(Ring, u16),
    /// Any 4-byte-aligned word of the header page.
    Header(u16),
    /// Any 4-byte-aligned word of the region.
    Any(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Word {
    Small(i8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The domain stores a word (relative to what is there for `Small`).
    Poke(Spot, Word),
    /// The domain writes raw bytes.
    Bytes {
        at: u32,
        bytes: Vec<u8>,
    },
    /// The switch sends frames into `to_nic` (or upcalls) and publishes.
    Send {
        upcall: bool,
        n: u8,
        len: u16,
    },
    /// The switch commits a length it should not (its own bug: refused).
    BadCommit {
        len: u32,
    },
    Publish {
        upcall: bool,
    },
    NeedsNotify {
        upcall: bool,
    },
    ArmProducer {
        upcall: bool,
    },
    Available {
        upcall: bool,
    },
    /// The switch polls `from_nic`.
    Poll {
        max: u8,
    },
    ArmConsumer,
    ConsumerNeedsNotify,
    /// The switch takes over `to_nic`'s consuming role and drains it.
    Takeover {
        max: u8,
    },
    /// The domain plays its part: consumes `to_nic` / produces into `from_nic`.
    DdConsume {
        max: u8,
    },
    DdProduce {
        n: u8,
        len: u16,
        unchecked: Option<u32>,
    },
    /// Status, heartbeat, control and header words, as the supervisor reads them.
    Supervise {
        control: u8,
    },
    /// A file of garbage attached as a region.
    AttachGarbage {
        pages: u8,
        words: Vec<(u16, u64)>,
    },
}

struct Switch {
    sw: Arc<ExchangeRegion>,
    dd: Arc<ExchangeRegion>,
    base: usize,
    len: usize,
    slots: usize,
    capacity: u32,
}

impl Switch {
    fn check_frame(&self, f: &Segments<'_>) {
        let len = f.len() as u32;
        assert!(
            (MIN_FRAME..=self.capacity).contains(&len),
            "frame of {len} bytes (capacity {})",
            self.capacity
        );
        for s in f.as_slice() {
            let p = s.ptr_guard().as_ptr() as usize;
            assert!(
                p >= self.base && p + s.len() <= self.base + self.len,
                "frame outside the region"
            );
        }
        let mut b = [0u8; 32];
        f.read_prefix(&mut b);
    }

    /// A switch-side poll: checks the frames and the counts, errors or not.
    fn poll(&self, c: &mut Consumer, max: usize) {
        let mut seen = 0usize;
        let r = c.poll(max, |f| {
            self.check_frame(f);
            seen += 1;
        });
        let n = match r {
            Ok(n) => n,
            Err(e) => e.consumed(),
        };
        assert_eq!(n, seen, "poll reported {n} frames, delivered {seen}");
        assert!(seen <= max, "poll yielded {seen} > max {max}");
        assert!(
            seen <= self.slots,
            "poll yielded {seen} > {} slots",
            self.slots
        );
    }

    fn word_at(&self, spot: Spot) -> u64 {
        let l = self.sw.layout();
        let g = self.sw.geometry();
        match spot {
            Spot::Ctrl(r, which) => {
                l.ring(r.id()) + [0x00, 0x04, 0x80, 0x84][usize::from(which % 4)]
            }
            Spot::SlotLen(r, i) => l.slot(r.id(), u32::from(i) % g.slots),
            Spot::Header(w) => u64::from(w) * 4 % PAGE,
            Spot::Any(w) => u64::from(w) * 4 % l.total_len(),
        }
    }

    fn poke(&self, spot: Spot, w: Word) {
        let off = self.word_at(spot);
        let Some(s) = self.dd.region().slice(off, 4) else {
            return;
        };
        let mut cur = [0u8; 4];
        s.copy_to(&mut cur[..]);
        let v = match w {
            Word::Small(d) => u32::from_le_bytes(cur).wrapping_add(d as i32 as u32),
            Word::Raw(v) => v,
        };
        s.copy_from(&v.to_le_bytes());
    }
}

fn send(p: &mut Producer, n: u8, len: u16, capacity: u32) {
    for _ in 0..n % 9 {
        match p.reserve() {
            Ok(Some(slot)) => {
                assert_eq!(slot.capacity(), capacity);
                let len = (usize::from(len) % capacity as usize).max(MIN_FRAME as usize);
                let frame = [0xabu8; 2560];
                let copied = slot.frame().write_prefix(&frame[..len.min(frame.len())]);
                let _ = slot.commit(copied);
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fn attach_garbage(pages: u8, words: &[(u16, u64)]) {
    let flags = rustix::fs::MemfdFlags::CLOEXEC;
    let f = File::from(rustix::fs::memfd_create("fuzz-xchg", flags).expect("memfd"));
    let len = u64::from(pages % 16) * PAGE;
    f.set_len(len).expect("size");
    // Most of the time a valid header to start from, so that attach gets past it.
    if let Ok(sw) = ExchangeRegion::create("fuzz-xchg-src", Geometry::default()) {
        let mut head = vec![0u8; 0x40];
        if let Some(s) = sw.region().slice(0, head.len()) {
            s.copy_to(&mut head[..]);
        }
        let _ = f.write_at(&head, 0);
    }
    for &(at, v) in words.iter().take(32) {
        let _ = f.write_at(&v.to_le_bytes(), u64::from(at) * 8 % len.max(8));
    }
    if let Ok(r) = ExchangeRegion::attach(f) {
        // Attached: every ring operation stays within the mapping.
        let r = Arc::new(r);
        let _ = r.check_header();
        let _ = r.status();
        let mut c = Consumer::new(r.clone(), RingId::FromNic);
        let _ = c.poll(64, |f| assert!(f.len() as u64 <= r.len()));
        let mut p = Producer::new(r, RingId::ToNic);
        let _ = p.available();
    }
}

fn run(input: Input) {
    let g = Geometry {
        slots: 1 << (1 + input.slots_log2 % 6),
        slot_size: 64 * (1 + u32::from(input.slot_units % 40)),
    };
    let sw = Arc::new(ExchangeRegion::create("fuzz-xchg", g).expect("create"));
    let dd = Arc::new(ExchangeRegion::attach(sw.file().try_clone().expect("dup")).expect("attach"));
    let m = sw.region().mapping();
    let s = Switch {
        base: m.as_ptr() as usize,
        len: m.size(),
        slots: g.slots as usize,
        capacity: g.frame_capacity(),
        sw: sw.clone(),
        dd: dd.clone(),
    };
    let mut to_nic = Producer::new(sw.clone(), RingId::ToNic);
    let mut upcalls = Producer::new(sw.clone(), RingId::Upcalls);
    let mut from_nic = Consumer::new(sw.clone(), RingId::FromNic);
    let mut taken: Option<Consumer> = None;
    let mut dd_rx = Consumer::new(dd.clone(), RingId::ToNic);
    let mut dd_tx = Producer::new(dd.clone(), RingId::FromNic);
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Poke(spot, w) => s.poke(spot, w),
            Op::Bytes { at, bytes } => {
                let off = u64::from(at) % sw.len();
                let n = bytes.len().min((sw.len() - off) as usize);
                if let Some(sl) = dd.region().slice(off, n) {
                    sl.copy_from(&bytes[..n]);
                }
            }
            Op::Send { upcall, n, len } => {
                let p = if upcall { &mut upcalls } else { &mut to_nic };
                send(p, n, len, s.capacity);
                p.publish();
            }
            Op::BadCommit { len } => {
                if let Ok(Some(slot)) = to_nic.reserve() {
                    let bad = (len as usize) < MIN_FRAME as usize || len > s.capacity;
                    let r = slot.commit(len as usize);
                    assert_eq!(r.is_err(), bad, "commit of {len} bytes");
                }
            }
            Op::Publish { upcall } => if upcall { &mut upcalls } else { &mut to_nic }.publish(),
            Op::NeedsNotify { upcall } => {
                let _ = if upcall { &mut upcalls } else { &mut to_nic }.needs_notify();
            }
            Op::ArmProducer { upcall } => {
                let _ = if upcall { &mut upcalls } else { &mut to_nic }.arm_notify();
            }
            Op::Available { upcall } => {
                let p = if upcall { &mut upcalls } else { &mut to_nic };
                if let Ok(n) = p.available() {
                    assert!(n <= s.slots, "{n} free slots of {}", s.slots);
                }
                let cons = dd_rx.position();
                assert!(p.outstanding_from(cons) <= s.slots);
            }
            Op::Poll { max } => s.poll(&mut from_nic, usize::from(max)),
            Op::ArmConsumer => {
                let _ = from_nic.arm_notify();
            }
            Op::ConsumerNeedsNotify => {
                let _ = from_nic.needs_notify();
            }
            Op::Takeover { max } => {
                if taken.is_none() {
                    taken = Consumer::resume(sw.clone(), RingId::ToNic).ok();
                }
                if let Some(c) = taken.as_mut() {
                    // The switch's own bound: what it published and the DD left.
                    let bound = to_nic.outstanding_from(c.position());
                    let max = usize::from(max).min(bound);
                    s.poll(c, max);
                }
            }
            Op::DdConsume { max } => {
                let _ = dd_rx.poll(usize::from(max), |_| {});
            }
            Op::DdProduce { n, len, unchecked } => {
                match unchecked {
                    Some(field) => {
                        if let Ok(Some(slot)) = dd_tx.reserve() {
                            let _ = slot.commit_unchecked(field);
                        }
                    }
                    None => send(&mut dd_tx, n, len, s.capacity),
                }
                dd_tx.publish();
            }
            Op::Supervise { control } => {
                let _ = sw.check_header();
                let _ = sw.status();
                let _ = sw.heartbeat();
                let _ = sw.control(usize::from(control));
            }
            Op::AttachGarbage { pages, words } => attach_garbage(pages, &words),
        }
    }
}

fuzz_target!(|input: Input| run(input));
