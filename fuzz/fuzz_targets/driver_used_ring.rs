//! A hostile NIC's used ring, into the driver's split virtqueue.
//!
//! The approach of `crates/drivers/virtqueue/src/tests.rs` (a fake device over a
//! `VecEnv`): the driver posts buffers, the fake device takes them from the avail
//! ring and completes anything it likes: any used id (in range, out of range,
//! never posted, twice), any length, any used index (behind, ahead, wrapped), its
//! notification words; and it may write anywhere else in the region (the NIC's
//! memory table holds the whole driver region). Interleaved: the driver's add,
//! reserve/cancel, flush, pop_used, set_notify, sync, counters, and a second
//! handle attaching to the state left in the region.
//!
//! Checked: no panic, no hang; a reclaimed buffer has an id below the queue size
//! and a length within the buffer the driver posted under that id, and, while
//! the device has written nothing but the used ring and its notification words,
//! every id reclaimed was in flight (a model of the driver's own posts), never
//! twice, and the free count matches the model.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use driver_env::test_env::VecEnv;
use driver_env::DriverMem;
use driver_virtqueue::{DeviceError, QueueError, QueueLayout, UsedBuf, Virtqueue};
use libfuzzer_sys::fuzz_target;

const REGION: usize = 64 * 1024;

#[derive(Arbitrary, Debug)]
struct Input {
    /// log2 of the queue size (0..=8).
    size_log2: u8,
    event_idx: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Id {
    /// One of the ids the device took from the avail ring.
    Taken(u8),
    /// Any id below 2^16.
    Short(u16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Add {
        len: u16,
        device_writes: bool,
    },
    Reserve,
    Cancel(u16),
    Flush,
    PopUsed {
        max: u8,
    },
    SetNotify(bool),
    Sync,
    /// A second handle takes over the state in the region.
    Reattach,
    /// The device takes what was made available.
    Take,
    /// The device writes a used element and publishes it.
    Complete {
        id: Id,
        len: u32,
    },
    /// The device moves its used index anywhere.
    UsedIdx(u16),
    UsedFlags(u16),
    AvailEvent(u16),
    /// The device writes anywhere in the region (its DMA reach).
    Poke {
        at: u16,
        v: u64,
    },
}

struct Device {
    l: QueueLayout,
    last_avail: u16,
    used_idx: u16,
    taken: Vec<u32>,
}

impl Device {
    fn take(&mut self, env: &VecEnv) {
        let Ok(idx) = env.load_acquire_u16(self.l.avail + 2) else {
            return;
        };
        // A device walks at most one ring's worth at a time.
        let mut n = 0;
        while self.last_avail != idx && n < self.l.size {
            let slot = self.last_avail & (self.l.size - 1);
            if let Ok(id) = env.read_u16(self.l.avail + 4 + 2 * u64::from(slot)) {
                if self.taken.len() < 512 {
                    self.taken.push(u32::from(id));
                }
            }
            self.last_avail = self.last_avail.wrapping_add(1);
            n += 1;
        }
    }

    fn complete(&mut self, env: &VecEnv, id: u32, len: u32) {
        let e = self.l.used + 4 + 8 * u64::from(self.used_idx & (self.l.size - 1));
        env.write_u32(e, id).expect("used id");
        env.write_u32(e + 4, len).expect("used len");
        self.used_idx = self.used_idx.wrapping_add(1);
        env.store_release_u16(self.l.used + 2, self.used_idx)
            .expect("used idx");
    }
}

fn run(input: Input) {
    let size = 1u16 << (input.size_log2 % 9);
    let env = VecEnv::new(REGION);
    let l = QueueLayout::new(0, size).expect("layout");
    let mut q = Virtqueue::init(&env, l, 1, input.event_idx).expect("init");
    let mut dev = Device {
        l,
        last_avail: 0,
        used_idx: 0,
        taken: Vec::new(),
    };
    // The driver's posts: id -> buffer length. Exact while `model` holds.
    let mut posted: HashMap<u16, u32> = HashMap::new();
    let mut reserved: Vec<u16> = Vec::new();
    let mut model = true;
    for op in input.ops.into_iter().take(512) {
        match op {
            Op::Add { len, device_writes } => {
                let len = u32::from(len);
                if let Ok(Some(id)) = q.add(&env, 0x8000, len, device_writes) {
                    assert!(id < size);
                    if model {
                        assert!(!posted.contains_key(&id), "descriptor {id} posted twice");
                    }
                    posted.insert(id, len);
                }
            }
            Op::Reserve => {
                if let Ok(Some(id)) = q.reserve(&env) {
                    assert!(id < size);
                    reserved.push(id);
                }
            }
            Op::Cancel(i) => {
                if reserved.is_empty() {
                    let _ = q.cancel(&env, i);
                } else {
                    let id = reserved.swap_remove(usize::from(i) % reserved.len());
                    let r = q.cancel(&env, id);
                    if model {
                        assert!(
                            r.is_ok() || q.counters(&env).is_ok_and(|c| c.broken),
                            "{r:?}"
                        );
                    }
                }
            }
            Op::Flush => {
                let _ = q.flush(&env);
            }
            Op::PopUsed { max } => {
                for _ in 0..max % 32 {
                    match q.pop_used(&env) {
                        Ok(Some(UsedBuf { id, len })) => {
                            assert!(id < size, "used id {id}");
                            let cap = posted.remove(&id);
                            if model {
                                let cap = cap.expect("reclaimed a buffer not in flight");
                                assert!(len <= cap, "length {len} over {cap}");
                            }
                        }
                        Ok(None) => break,
                        Err(QueueError::Device(DeviceError::LenTooLarge { id, .. })) => {
                            // Reclaimed, the length refused.
                            assert!(id < size);
                            posted.remove(&id);
                        }
                        Err(e) if e.is_recoverable() => {}
                        Err(_) => break,
                    }
                }
            }
            Op::SetNotify(on) => {
                let _ = q.set_notify(&env, on);
            }
            Op::Sync => {
                let _ = q.sync(&env);
            }
            Op::Reattach => {
                if q.sync(&env).is_ok() {
                    if let Ok(q2) = Virtqueue::attach(&env, l, 1) {
                        if model {
                            assert_eq!(q2.num_free(), q.num_free());
                        }
                        q = q2;
                    }
                }
            }
            Op::Take => dev.take(&env),
            Op::Complete { id, len } => {
                let id = match id {
                    Id::Taken(i) if !dev.taken.is_empty() => {
                        dev.taken[usize::from(i) % dev.taken.len()]
                    }
                    Id::Taken(i) => u32::from(i),
                    Id::Short(i) => u32::from(i),
                    Id::Raw(i) => i,
                };
                dev.complete(&env, id, len);
            }
            Op::UsedIdx(v) => {
                dev.used_idx = v;
                env.store_release_u16(l.used + 2, v).expect("used idx");
            }
            Op::UsedFlags(v) => env.write_u16(l.used, v).expect("used flags"),
            Op::AvailEvent(v) => env
                .write_u16(l.used + 4 + 8 * u64::from(size), v)
                .expect("avail event"),
            Op::Poke { at, v } => {
                let at = u64::from(at) & !7;
                if at + 8 <= REGION as u64 {
                    env.write_u64(at, v).expect("poke");
                    // Past the used ring: the driver's own state may be garbage now.
                    let used_end = l.used + 6 + 8 * u64::from(size);
                    if at < l.used || at + 8 > used_end {
                        model = false;
                    }
                }
            }
        }
        assert!(q.num_free() <= size, "{} free of {size}", q.num_free());
        if model {
            if let Ok(c) = q.counters(&env) {
                if !c.broken {
                    let held = posted.len() + reserved.len();
                    assert_eq!(
                        usize::from(q.num_free()) + held,
                        usize::from(size),
                        "free count off the model"
                    );
                }
            }
        }
    }
}

fuzz_target!(|input: Input| run(input));
