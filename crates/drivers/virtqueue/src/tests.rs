//! Unit tests against an in-process fake device, well-behaved and hostile.

use super::*;
use driver_env::test_env::VecEnv;

const REGION: usize = 64 * 1024;

/// A fake device: reads the avail ring, writes the used ring, through the same env.
/// It finds the ring fields at the offsets virtio 1.2 (2.7) gives, computed here
/// from the layout's three ring addresses, not with the driver's own helpers, so
/// that a driver that puts a field elsewhere fails against it.
struct FakeDevice {
    l: QueueLayout,
    last_avail: u16,
    used_idx: u16,
}

impl FakeDevice {
    fn new(l: QueueLayout) -> Self {
        Self {
            l,
            last_avail: 0,
            used_idx: 0,
        }
    }
    /// `avail.ring[slot]`.
    fn avail_ring(&self, slot: u16) -> u64 {
        self.l.avail + 4 + 2 * u64::from(slot)
    }
    /// `used.ring[slot]`.
    fn used_ring(&self, slot: u16) -> u64 {
        self.l.used + 4 + 8 * u64::from(slot)
    }
    /// `used_event`, after the avail ring.
    fn used_event_addr(&self) -> u64 {
        self.l.avail + 4 + 2 * u64::from(self.l.size)
    }
    /// `avail_event`, after the used ring.
    fn avail_event_addr(&self) -> u64 {
        self.l.used + 4 + 8 * u64::from(self.l.size)
    }
    /// Takes all newly available descriptors: (id, addr, len, flags).
    fn take(&mut self, env: &VecEnv) -> Vec<(u16, u64, u32, u16)> {
        let idx = env.load_acquire_u16(self.l.avail + 2).unwrap();
        let mut out = Vec::new();
        while self.last_avail != idx {
            let slot = self.last_avail % self.l.size;
            let id = env.read_u16(self.avail_ring(slot)).unwrap();
            let d = self.l.desc + 16 * u64::from(id);
            out.push((
                id,
                env.read_u64(d).unwrap(),
                env.read_u32(d + 8).unwrap(),
                env.read_u16(d + 12).unwrap(),
            ));
            self.last_avail = self.last_avail.wrapping_add(1);
        }
        out
    }
    /// Writes a used element (any id and len, hostile or not) and publishes it.
    fn complete(&mut self, env: &VecEnv, id: u32, len: u32) {
        self.complete_unpublished(env, id, len);
        env.store_release_u16(self.l.used + 2, self.used_idx)
            .unwrap();
    }
    /// Writes a used element without moving `used.idx` (publish them in a batch).
    fn complete_unpublished(&mut self, env: &VecEnv, id: u32, len: u32) {
        let e = self.used_ring(self.used_idx % self.l.size);
        env.write_u32(e, id).unwrap();
        env.write_u32(e + 4, len).unwrap();
        self.used_idx = self.used_idx.wrapping_add(1);
    }
    fn set_avail_event(&self, env: &VecEnv, v: u16) {
        env.write_u16(self.avail_event_addr(), v).unwrap();
    }
    fn used_event(&self, env: &VecEnv) -> u16 {
        env.read_u16(self.used_event_addr()).unwrap()
    }
}

fn setup(size: u16, event_idx: bool) -> (VecEnv, Virtqueue, FakeDevice) {
    let env = VecEnv::new(REGION);
    let l = QueueLayout::new(0, size).unwrap();
    let q = Virtqueue::init(&env, l, 1, event_idx).unwrap();
    (env, q, FakeDevice::new(l))
}

#[test]
fn layout_rules() {
    assert!(matches!(
        QueueLayout::new(0, 0),
        Err(QueueError::InvalidSize(0))
    ));
    assert!(matches!(
        QueueLayout::new(0, 3),
        Err(QueueError::InvalidSize(3))
    ));
    let l = QueueLayout::new(100, 256).unwrap();
    assert_eq!(l.desc, 4096);
    assert_eq!(l.avail % 2, 0);
    assert_eq!(l.used % 4, 0);
    assert!(l.end() > l.state);
    let env = VecEnv::new(4096);
    assert!(matches!(
        Virtqueue::init(&env, l, 0, false),
        Err(QueueError::LayoutOutsideRegion { .. })
    ));
}

#[test]
fn round_trip_and_free_list() {
    let (env, mut q, mut dev) = setup(8, false);
    for i in 0..8u64 {
        assert!(q
            .add(&env, 0x4000 + i * 0x100, 0x100, true)
            .unwrap()
            .is_some());
    }
    assert_eq!(q.add(&env, 0, 1, true).unwrap(), None);
    assert!(q.flush(&env).unwrap());
    assert_eq!(env.kicks(1), 1);
    let got = dev.take(&env);
    assert_eq!(got.len(), 8);
    assert_eq!(got[3], (3, 0x4300, 0x100, DESC_F_WRITE));
    dev.complete(&env, 3, 60);
    dev.complete(&env, 0, 0x100);
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 3, len: 60 }));
    assert_eq!(
        q.pop_used(&env).unwrap(),
        Some(UsedBuf { id: 0, len: 0x100 })
    );
    assert_eq!(q.pop_used(&env).unwrap(), None);
    assert_eq!(q.num_free(), 2);
    // Nothing new committed: flush neither publishes nor kicks.
    assert!(!q.flush(&env).unwrap());
}

#[test]
fn wraps_many_times() {
    let (env, mut q, mut dev) = setup(4, true);
    let mut seen = 0u32;
    for round in 0..70_000u32 {
        q.add(&env, 0x8000, 64, false).unwrap().unwrap();
        q.flush(&env).unwrap();
        for (id, _, len, _) in dev.take(&env) {
            dev.complete(&env, u32::from(id), round % 2 * len);
        }
        while let Some(u) = q.pop_used(&env).unwrap() {
            assert!(u.len <= 64);
            seen += 1;
        }
    }
    assert_eq!(seen, 70_000);
    assert_eq!(q.num_free(), 4);
}

#[test]
fn hostile_used_entries_are_counted_not_fatal() {
    let (env, mut q, mut dev) = setup(8, false);
    for _ in 0..4 {
        q.add(&env, 0x4000, 128, true).unwrap().unwrap();
    }
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 99, 10); // out of range
    dev.complete(&env, 0x1_0000, 10); // out of range, truncates to a valid u16
    dev.complete(&env, 6, 10); // in range but never posted
    dev.complete(&env, 1, 10); // fine
    dev.complete(&env, 1, 10); // double completion
    dev.complete(&env, 2, u32::MAX); // huge length
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    loop {
        match q.pop_used(&env) {
            Ok(Some(u)) => ok.push(u),
            Ok(None) => break,
            Err(QueueError::Device(e)) => errs.push(e),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, vec![UsedBuf { id: 1, len: 10 }]);
    assert_eq!(
        errs,
        vec![
            DeviceError::BadUsedId(99),
            DeviceError::BadUsedId(0x1_0000),
            DeviceError::NotInFlight(6),
            DeviceError::NotInFlight(1),
            DeviceError::LenTooLarge {
                id: 2,
                len: u32::MAX,
                cap: 128
            },
        ]
    );
    let c = q.counters(&env).unwrap();
    assert_eq!((c.bad_used_id, c.not_in_flight, c.len_too_large), (2, 2, 1));
    // 1 and 2 came back; 0 and 3 are still in flight.
    assert_eq!(c.num_free, 6);
    assert!(!c.broken);
    // The queue still works.
    assert!(q.add(&env, 0x4000, 128, true).unwrap().is_some());
}

#[test]
fn used_idx_jump_breaks_the_queue() {
    let (env, mut q, dev) = setup(8, false);
    env.store_release_u16(dev.l.used + 2, 9).unwrap();
    let e = q.pop_used(&env).unwrap_err();
    assert!(!e.is_recoverable());
    assert!(matches!(q.pop_used(&env), Err(QueueError::Broken(1))));
    assert!(q.counters(&env).unwrap().broken);
}

#[test]
fn corrupted_state_is_an_error_not_a_panic() {
    // A state block corrupted between batches is refused by attach.
    let (env, q, _dev) = setup(8, false);
    env.write_u16(q.layout().state + S_NUM_FREE, 1000).unwrap();
    assert!(matches!(
        Virtqueue::attach(&env, *q.layout(), 1),
        Err(QueueError::Corrupted(_))
    ));
    let (env, q, _dev) = setup(8, false);
    env.write_u16(q.layout().state + S_FLAGS, 0x100).unwrap();
    assert!(matches!(
        Virtqueue::attach(&env, *q.layout(), 1),
        Err(QueueError::Corrupted(_))
    ));
    // A free-stack entry corrupted under a running handle breaks the queue.
    let (env, mut q, _dev) = setup(8, false);
    env.write_u16(q.layout().free_stack(7), 4000).unwrap();
    assert!(matches!(q.reserve(&env), Err(QueueError::Broken(1))));
    assert!(matches!(q.reserve(&env), Err(QueueError::Broken(1))));
    assert!(q.counters(&env).unwrap().broken);
}

#[test]
fn state_is_in_the_region_at_batch_boundaries() {
    let (env, mut q, mut dev) = setup(8, true);
    for _ in 0..5 {
        q.add(&env, 0x4000, 64, true).unwrap().unwrap();
    }
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 1, 10);
    dev.complete(&env, 9, 10);
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 1, len: 10 }));
    assert!(q.pop_used(&env).is_err());
    q.sync(&env).unwrap();
    // Another handle continues exactly where this one stopped.
    let mut q2 = Virtqueue::attach(&env, *q.layout(), 1).unwrap();
    assert_eq!(q2.num_free(), 4);
    assert_eq!(q2.avail_base(), 2);
    assert_eq!(q2.counters(&env).unwrap(), q.counters(&env).unwrap());
    assert_eq!(q2.counters(&env).unwrap().bad_used_id, 1);
    assert_eq!(q2.pop_used(&env).unwrap(), None);
    dev.complete(&env, 0, 3);
    assert_eq!(q2.pop_used(&env).unwrap(), Some(UsedBuf { id: 0, len: 3 }));
    assert_eq!(q2.add(&env, 0x4000, 64, true).unwrap(), Some(0));
    q2.flush(&env).unwrap();
    assert_eq!(dev.take(&env).len(), 1);
}

#[test]
fn no_notify_flag_suppresses_kicks() {
    let (env, mut q, dev) = setup(8, false);
    env.write_u16(dev.l.used, USED_F_NO_NOTIFY).unwrap();
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(!q.flush(&env).unwrap());
    assert_eq!(env.kicks(1), 0);
    env.write_u16(dev.l.used, 0).unwrap();
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(q.flush(&env).unwrap());
    assert_eq!(q.counters(&env).unwrap().kicks_suppressed, 1);
}

#[test]
fn avail_event_decides_kicks_once_per_batch() {
    let (env, mut q, dev) = setup(16, true);
    // Device wants a kick when avail idx passes 5.
    dev.set_avail_event(&env, 5);
    for _ in 0..3 {
        q.add(&env, 0x4000, 64, false).unwrap();
    }
    assert!(!q.flush(&env).unwrap()); // 0 -> 3 does not pass 5
    for _ in 0..4 {
        q.add(&env, 0x4000, 64, false).unwrap();
    }
    assert!(q.flush(&env).unwrap()); // 3 -> 7 passes 5: one kick for the batch
    assert_eq!(env.kicks(1), 1);
}

#[test]
fn interrupt_suppression() {
    let (env, mut q, mut dev) = setup(8, true);
    assert!(!q.set_notify(&env, false).unwrap());
    assert_eq!(env.read_u16(dev.l.avail).unwrap(), AVAIL_F_NO_INTERRUPT);
    assert_eq!(dev.used_event(&env), 0x8000);
    q.add(&env, 0x4000, 64, true).unwrap();
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 0, 1);
    // Re-enabling sees the raced-in completion.
    assert!(q.set_notify(&env, true).unwrap());
    assert_eq!(dev.used_event(&env), 0);
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 0, len: 1 }));
    assert!(!q.set_notify(&env, true).unwrap());
    assert_eq!(dev.used_event(&env), 1);
    assert_eq!(env.read_u16(dev.l.avail).unwrap(), 0);
}

#[test]
fn reserve_cancel_commit_rules() {
    let (env, mut q, _dev) = setup(4, false);
    let id = q.reserve(&env).unwrap().unwrap();
    assert!(matches!(
        q.commit(&env, id + 1, 0, 1, false),
        Err(QueueError::NotReserved(_))
    ));
    q.cancel(&env, id).unwrap();
    assert!(matches!(
        q.cancel(&env, id),
        Err(QueueError::NotReserved(_))
    ));
    assert_eq!(q.num_free(), 4);
}

#[test]
fn another_handle_continues_the_queue() {
    let (env, mut q, mut dev) = setup(8, true);
    q.add(&env, 0x4000, 64, true).unwrap();
    q.add(&env, 0x4100, 64, true).unwrap();
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 1, 5);
    let mut q2 = Virtqueue::attach(&env, *q.layout(), 1).unwrap();
    assert_eq!(q2.pop_used(&env).unwrap(), Some(UsedBuf { id: 1, len: 5 }));
    assert_eq!(q2.num_free(), 7);
    // A device attaching now starts after the one used entry: the second buffer,
    // published but not returned, is offered to it again.
    assert_eq!(q2.avail_base(), 1);
    let bad = QueueLayout::new(0x8000, 8).unwrap();
    assert!(matches!(
        Virtqueue::attach(&env, bad, 1),
        Err(QueueError::NotInitialised(_))
    ));
}

#[test]
fn faults_from_env_are_errors() {
    let (env, mut q, _dev) = setup(8, false);
    env.protect(q.layout().desc..q.layout().desc + 16);
    assert!(matches!(
        q.add(&env, 0, 1, false),
        Err(QueueError::Access(_))
    ));
}

#[test]
fn need_event_matches_virtio() {
    assert!(need_event(0, 1, 0));
    assert!(!need_event(1, 1, 0));
    assert!(need_event(5, 10, 0));
    assert!(need_event(9, 10, 0));
    assert!(!need_event(10, 10, 0));
    assert!(!need_event(10, 20, 11));
    assert!(need_event(u16::MAX, 3, u16::MAX - 1));
    assert!(!need_event(u16::MAX, 32, 0));
}

/// Every field of a queue is where the layout rules put it: the rings page-aligned
/// from a rounded-up base, the state block (free stack, then 8-aligned meta words)
/// between avail and used, the used ring last.
#[test]
fn layout_places_every_field_exactly() {
    let l = QueueLayout::new(1, 2).unwrap();
    assert_eq!((l.size, l.desc, l.avail), (2, 4096, 4096 + 32));
    // avail ends at 4128 + 6 + 4 = 4138: the state block starts 8-aligned.
    assert_eq!(l.state, 4144);
    assert_eq!(l.free_stack(0), 4144 + 64);
    assert_eq!(l.free_stack(1), 4144 + 66);
    // The free stack ends at 4212: the meta words start 8-aligned.
    assert_eq!(l.meta_base(), 4216);
    assert_eq!(l.meta(1), 4224);
    assert_eq!(l.state_end(), 4232);
    assert_eq!(l.used, 4232);
    assert_eq!(l.end(), 4232 + 6 + 16);
    assert_eq!(l.avail_ring(1), 4134);
    assert_eq!(l.used_event(), 4136);
    assert_eq!(l.used_ring(1), 4244);
    assert_eq!(l.avail_event(), 4252);
    // An aligned base is kept, one byte more moves to the next page.
    assert_eq!(QueueLayout::new(4096, 2).unwrap().desc, 4096);
    assert_eq!(QueueLayout::new(4097, 2).unwrap().desc, 8192);
    let big = QueueLayout::new(100, 256).unwrap();
    assert_eq!(
        (big.desc, big.avail, big.state, big.used),
        (4096, 8192, 8712, 11336)
    );
    assert_eq!((big.state_end(), big.end()), (11336, 13390));
    assert!(matches!(
        QueueLayout::new(0, 65535),
        Err(QueueError::InvalidSize(65535))
    ));
    assert_eq!(QueueLayout::new(0, MAX_QUEUE_SIZE).unwrap().size, 32768);
}

/// A queue that ends exactly at the region's end fits; one byte less does not.
#[test]
fn a_layout_may_end_exactly_at_the_region_end() {
    let l = QueueLayout::new(0, 8).unwrap();
    let exact = VecEnv::new(l.end() as usize);
    Virtqueue::init(&exact, l, 0, true).unwrap();
    let short = VecEnv::new(l.end() as usize - 1);
    assert_eq!(
        Virtqueue::init(&short, l, 0, true).unwrap_err(),
        QueueError::LayoutOutsideRegion {
            end: l.end(),
            region_len: l.end() - 1
        }
    );
}

/// `init` over memory full of garbage (a re-initialised queue) leaves rings and
/// state as for a fresh queue, and touches nothing past the queue.
#[test]
fn init_over_garbage_starts_a_clean_queue() {
    let env = VecEnv::new(REGION);
    env.write_bytes(0, &vec![0xff; REGION]).unwrap();
    let l = QueueLayout::new(0, 8).unwrap();
    let mut q = Virtqueue::init(&env, l, 1, true).unwrap();
    let mut bytes = vec![0u8; (l.end() - l.desc) as usize];
    env.read_bytes(l.desc, &mut bytes).unwrap();
    // Zero everywhere except the state block's magic, size, flags, free count and
    // free stack (and the unused padding between the avail ring and the state
    // block).
    for (i, b) in bytes.iter().enumerate() {
        let a = l.desc + i as u64;
        let stated = (l.state..l.state + S_SHADOW_AVAIL).contains(&a)
            || (l.free_stack(0)..l.free_stack(8)).contains(&a)
            || (l.used_event() + 2..l.state).contains(&a);
        assert!(stated || *b == 0, "byte at {a:#x} is {b:#x}");
    }
    assert_eq!(env.read_u32(l.state + S_MAGIC).unwrap(), STATE_MAGIC);
    assert_eq!(env.read_u16(l.state + S_SIZE).unwrap(), 8);
    assert_eq!(
        env.read_u16(l.state + S_FLAGS).unwrap(),
        F_EVENT_IDX | F_NOTIFY
    );
    assert_eq!(env.read_u16(l.state + S_NUM_FREE).unwrap(), 8);
    let mut tail = [0u8; 64];
    env.read_bytes(l.end(), &mut tail).unwrap();
    assert_eq!(tail, [0xff; 64]);
    assert_eq!(
        q.counters(&env).unwrap(),
        QueueCounters {
            num_free: 8,
            ..QueueCounters::default()
        }
    );
    // The free stack hands out 0, 1, 2, ... and the device sees nothing yet.
    for want in 0..8 {
        assert_eq!(q.reserve(&env).unwrap(), Some(want));
    }
    let mut dev = FakeDevice::new(l);
    assert!(dev.take(&env).is_empty());
    assert!(!q.has_used(&env).unwrap());
}

#[test]
fn the_queue_reports_its_index_size_and_event_idx() {
    let (_env, q, _dev) = setup(8, true);
    assert_eq!((q.index(), q.size(), q.event_idx()), (1, 8, true));
    let env = VecEnv::new(REGION);
    let q = Virtqueue::init(&env, QueueLayout::new(0, 16).unwrap(), 5, false).unwrap();
    assert_eq!((q.index(), q.size(), q.event_idx()), (5, 16, false));
}

#[test]
fn device_errors_are_recoverable_and_a_used_index_jump_is_not() {
    for e in [
        DeviceError::BadUsedId(9),
        DeviceError::NotInFlight(1),
        DeviceError::LenTooLarge {
            id: 1,
            len: 2,
            cap: 1,
        },
    ] {
        assert!(QueueError::Device(e).is_recoverable(), "{e}");
    }
    assert!(!QueueError::Device(DeviceError::UsedIdxJump { last: 0, now: 9 }).is_recoverable());
    assert!(!QueueError::Broken(1).is_recoverable());
    assert!(!QueueError::NotReserved(1).is_recoverable());
}

/// The used index may run ahead by exactly the queue size (every buffer used at
/// once), not one more; the jump is counted.
#[test]
fn used_index_may_be_exactly_one_ring_ahead() {
    let (env, mut q, mut dev) = setup(8, false);
    for _ in 0..8 {
        q.add(&env, 0x4000, 64, true).unwrap().unwrap();
    }
    q.flush(&env).unwrap();
    for (id, ..) in dev.take(&env) {
        dev.complete_unpublished(&env, u32::from(id), 64);
    }
    env.store_release_u16(dev.l.used + 2, 8).unwrap();
    let mut ids = Vec::new();
    while let Some(u) = q.pop_used(&env).unwrap() {
        ids.push(u.id);
    }
    assert_eq!(ids, (0..8).collect::<Vec<u16>>());
    // Now one more than a ring ahead of the 8 consumed.
    env.store_release_u16(dev.l.used + 2, 8 + 9).unwrap();
    assert_eq!(
        q.pop_used(&env).unwrap_err(),
        QueueError::Device(DeviceError::UsedIdxJump { last: 8, now: 17 })
    );
    let c = q.counters(&env).unwrap();
    assert_eq!((c.used_idx_jump, c.broken), (1, true));
}

/// An id equal to the queue size is the first out of range; a length equal to the
/// posted one is the largest allowed.
#[test]
fn used_id_and_length_bounds_are_exact() {
    let (env, mut q, mut dev) = setup(8, false);
    q.add(&env, 0x4000, 100, true).unwrap().unwrap();
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 8, 1);
    dev.complete(&env, 0, 100);
    assert_eq!(
        q.pop_used(&env).unwrap_err(),
        QueueError::Device(DeviceError::BadUsedId(8))
    );
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 0, len: 100 }));
}

/// `has_used` sees both a new used index and entries already read but not yet
/// reclaimed, and nothing when all is reclaimed.
#[test]
fn has_used_reports_unreclaimed_entries() {
    let (env, mut q, mut dev) = setup(8, false);
    assert!(!q.has_used(&env).unwrap());
    q.add(&env, 0x4000, 64, true).unwrap().unwrap();
    q.add(&env, 0x4100, 64, true).unwrap().unwrap();
    q.flush(&env).unwrap();
    dev.take(&env);
    assert!(!q.has_used(&env).unwrap());
    dev.complete(&env, 0, 1);
    dev.complete(&env, 1, 1);
    assert!(q.has_used(&env).unwrap());
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 0, len: 1 }));
    // The device rewinds its index: the entry the driver already saw is still there.
    env.store_release_u16(dev.l.used + 2, 1).unwrap();
    assert!(q.has_used(&env).unwrap());
    assert_eq!(q.pop_used(&env).unwrap(), Some(UsedBuf { id: 1, len: 1 }));
    env.store_release_u16(dev.l.used + 2, 2).unwrap();
    assert!(!q.has_used(&env).unwrap());
}

#[test]
fn kicks_sent_and_suppressed_are_counted() {
    let (env, mut q, dev) = setup(8, true);
    dev.set_avail_event(&env, 0);
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(q.flush(&env).unwrap());
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(!q.flush(&env).unwrap());
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(!q.flush(&env).unwrap());
    // publish: decides, neither kicks nor counts a kick.
    dev.set_avail_event(&env, 3);
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(q.publish(&env).unwrap());
    q.add(&env, 0x4000, 64, false).unwrap();
    assert!(!q.publish(&env).unwrap());
    // One kick sent, one wanted by publish, three suppressed.
    let c = q.counters(&env).unwrap();
    assert_eq!((c.kicks, c.kicks_suppressed), (1, 3));
    assert_eq!(env.kicks(1), 1);
}

/// With interrupts off under EVENT_IDX, an empty poll keeps `used_event` half a
/// ring ahead of what was consumed, writing it only when that moved; with
/// interrupts on an empty poll writes nothing, and without EVENT_IDX nothing
/// ever writes `used_event`.
#[test]
fn empty_polls_keep_used_event_away_only_with_interrupts_off() {
    let (env, mut q, mut dev) = setup(8, true);
    assert_eq!(q.pop_used(&env).unwrap(), None);
    assert_eq!(dev.used_event(&env), 0);
    q.set_notify(&env, false).unwrap();
    assert_eq!(dev.used_event(&env), 0x8000);
    q.add(&env, 0x4000, 64, true).unwrap();
    q.add(&env, 0x4000, 64, true).unwrap();
    q.flush(&env).unwrap();
    dev.take(&env);
    dev.complete(&env, 0, 1);
    dev.complete(&env, 1, 1);
    while q.pop_used(&env).unwrap().is_some() {}
    assert_eq!(dev.used_event(&env), 0x8002);
    // Already there: the next empty poll does not write it again.
    let at = dev.used_event_addr();
    env.protect(at..at + 2);
    assert_eq!(q.pop_used(&env).unwrap(), None);

    for event_idx in [true, false] {
        let (env, mut q, dev) = setup(8, event_idx);
        let at = dev.used_event_addr();
        env.protect(at..at + 2);
        assert_eq!(q.pop_used(&env).unwrap(), None);
        if !event_idx {
            // Without EVENT_IDX, switching interrupts never touches used_event.
            q.set_notify(&env, false).unwrap();
            assert_eq!(q.pop_used(&env).unwrap(), None);
            q.set_notify(&env, true).unwrap();
        }
        assert_eq!(dev.used_event(&env), 0);
    }
}

/// `attach` takes over the exact scalars and counters the previous handle synced.
#[test]
fn attach_takes_over_every_scalar_and_counter() {
    let (env, mut q, mut dev) = setup(8, true);
    dev.set_avail_event(&env, 0);
    for _ in 0..4 {
        q.add(&env, 0x4000, 64, true).unwrap();
    }
    assert!(q.flush(&env).unwrap()); // a kick
    q.add(&env, 0x4000, 64, true).unwrap();
    assert!(!q.flush(&env).unwrap()); // a suppressed one
    q.add(&env, 0x4000, 64, true).unwrap(); // committed, not published
    dev.take(&env);
    dev.complete(&env, 0, 10);
    dev.complete(&env, 99, 10); // bad id
    dev.complete(&env, 0, 10); // not in flight
    dev.complete(&env, 1, 65); // too long
    while !matches!(q.pop_used(&env), Ok(None)) {}
    q.set_notify(&env, false).unwrap();
    let q2 = Virtqueue::attach(&env, *q.layout(), 1).unwrap();
    assert_eq!(q2.scalars(), q.scalars());
    // flags: EVENT_IDX, interrupts off; ids 0..=5 taken and 0 and 1 back: 4 free;
    // 6 committed, 5 published, 4 used.
    assert_eq!(q2.scalars(), [F_EVENT_IDX, 4, 6, 4, 5]);
    assert_eq!(
        q2.counters(&env).unwrap(),
        QueueCounters {
            bad_used_id: 1,
            not_in_flight: 1,
            len_too_large: 1,
            used_idx_jump: 0,
            kicks: 1,
            kicks_suppressed: 1,
            num_free: 4,
            broken: false,
        }
    );
}

/// `attach` accepts every state a running queue can be in at a batch boundary,
/// up to the limits, and refuses one step beyond each.
#[test]
fn attach_accepts_the_limits_of_a_valid_state_and_nothing_beyond() {
    // Fresh: every descriptor free.
    let (env, q, _dev) = setup(8, false);
    assert_eq!(
        Virtqueue::attach(&env, *q.layout(), 1).unwrap().num_free(),
        8
    );
    // Eight committed, none published (synced between batches).
    let (env, mut q, _dev) = setup(8, false);
    for _ in 0..8 {
        q.add(&env, 0x4000, 64, true).unwrap();
    }
    q.sync(&env).unwrap();
    let q2 = Virtqueue::attach(&env, *q.layout(), 1).unwrap();
    assert_eq!(q2.scalars(), [F_NOTIFY, 0, 8, 0, 0]);
    // Eight published, none used.
    let (env, mut q, _dev) = setup(8, false);
    for _ in 0..8 {
        q.add(&env, 0x4000, 64, true).unwrap();
    }
    q.flush(&env).unwrap();
    let q2 = Virtqueue::attach(&env, *q.layout(), 1).unwrap();
    assert_eq!(q2.scalars(), [F_NOTIFY, 0, 8, 0, 8]);
    // One step beyond each limit.
    let s = q.layout().state;
    for (off, v) in [
        (S_NUM_FREE, 9),
        (S_SHADOW_AVAIL, 8 + 9),
        (S_LAST_USED, 0u16.wrapping_sub(9)),
    ] {
        let (env, q, _dev) = setup(8, false);
        env.write_u16(s + off, v).unwrap();
        assert_eq!(
            Virtqueue::attach(&env, *q.layout(), 1).unwrap_err(),
            QueueError::Corrupted(s),
            "field {off} = {v}"
        );
    }
    // Every valid flag is accepted, any other bit is not.
    let (env, q, _dev) = setup(8, false);
    env.write_u16(s + S_FLAGS, F_ALL).unwrap();
    assert!(Virtqueue::attach(&env, *q.layout(), 1).is_ok());
    env.write_u16(s + S_FLAGS, 8).unwrap();
    assert!(Virtqueue::attach(&env, *q.layout(), 1).is_err());
    // A wrong magic, or a wrong size, alone is enough to refuse.
    let (env, q, _dev) = setup(8, false);
    env.write_u32(s + S_MAGIC, STATE_MAGIC ^ 1).unwrap();
    assert_eq!(
        Virtqueue::attach(&env, *q.layout(), 1).unwrap_err(),
        QueueError::NotInitialised(s)
    );
    let (env, q, _dev) = setup(8, false);
    env.write_u16(s + S_SIZE, 4).unwrap();
    assert_eq!(
        Virtqueue::attach(&env, *q.layout(), 1).unwrap_err(),
        QueueError::NotInitialised(s)
    );
}
