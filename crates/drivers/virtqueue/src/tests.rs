//! Unit tests against an in-process fake device, well-behaved and hostile.

use super::*;
use driver_env::test_env::VecEnv;

const REGION: usize = 64 * 1024;

/// A fake device: reads the avail ring, writes the used ring, through the same env.
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
    /// Takes all newly available descriptors: (id, addr, len, flags).
    fn take(&mut self, env: &VecEnv) -> Vec<(u16, u64, u32, u16)> {
        let idx = env.load_acquire_u16(self.l.avail + 2).unwrap();
        let mut out = Vec::new();
        while self.last_avail != idx {
            let slot = self.last_avail & (self.l.size - 1);
            let id = env.read_u16(self.l.avail_ring(slot)).unwrap();
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
        let e = self.l.used_ring(self.used_idx & (self.l.size - 1));
        env.write_u32(e, id).unwrap();
        env.write_u32(e + 4, len).unwrap();
        self.used_idx = self.used_idx.wrapping_add(1);
        env.store_release_u16(self.l.used + 2, self.used_idx)
            .unwrap();
    }
    fn set_avail_event(&self, env: &VecEnv, v: u16) {
        env.write_u16(self.l.avail_event(), v).unwrap();
    }
    fn used_event(&self, env: &VecEnv) -> u16 {
        env.read_u16(self.l.used_event()).unwrap()
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
