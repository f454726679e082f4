use super::*;
use crate::layout::{Geometry, OFF_MAGIC, OFF_SLOT_SIZE};

/// The switch's view and a second, independent mapping standing in for the DD.
struct Fixture {
    sw: Arc<ExchangeRegion>,
    dd: Arc<ExchangeRegion>,
}

impl Fixture {
    fn new(slots: u32) -> Self {
        let g = Geometry {
            slots,
            slot_size: 128,
        };
        let sw = Arc::new(ExchangeRegion::create("xchg-ring-test", g).unwrap());
        let dd = Arc::new(ExchangeRegion::attach(sw.file().try_clone().unwrap()).unwrap());
        Self { sw, dd }
    }

    fn switch_to_dd(&self) -> (Producer, Consumer) {
        (
            Producer::new(self.sw.clone(), RingId::ToNic),
            Consumer::new(self.dd.clone(), RingId::ToNic),
        )
    }

    fn dd_to_switch(&self) -> (Producer, Consumer) {
        (
            Producer::new(self.dd.clone(), RingId::FromNic),
            Consumer::new(self.sw.clone(), RingId::FromNic),
        )
    }

    /// What a malicious DD does: store anything anywhere.
    fn poke32(&self, off: u64, v: u32) {
        self.dd.u32_at(off).unwrap().store(v, Ordering::Relaxed);
    }

    fn peek32(&self, off: u64) -> u32 {
        self.sw.u32_at(off).unwrap().load(Ordering::Relaxed)
    }

    fn ctrl(&self, ring: RingId) -> u64 {
        self.sw.layout().ring(ring)
    }
}

/// A frame of `len` bytes carrying `seq`.
fn frame(seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(8) {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    f
}

fn push(p: &mut Producer, seq: u64, len: usize) -> bool {
    let Some(slot) = p.reserve().unwrap() else {
        return false;
    };
    assert_eq!(slot.frame().write_prefix(&frame(seq, len)), len);
    slot.commit(len).unwrap();
    true
}

/// Polls up to `max` frames and checks they are `next`, `next + 1`, ...
fn pull(c: &mut Consumer, max: usize, next: &mut u64) -> usize {
    let mut buf = [0u8; 256];
    c.poll(max, |f| {
        let n = f.read_prefix(&mut buf);
        assert_eq!(n, f.len());
        assert_eq!(&buf[..n], &frame(*next, n)[..]);
        *next += 1;
    })
    .unwrap()
}

#[test]
fn need_event_matches_virtio() {
    assert!(need_event(0, 1, 0));
    assert!(!need_event(1, 1, 0));
    assert!(need_event(5, 10, 0));
    assert!(!need_event(10, 20, 11));
    assert!(need_event(u32::MAX, 3, u32::MAX - 1));
    assert!(!need_event(u32::MAX, 32, 0));
}

#[test]
fn wrap_around_many_times() {
    let fx = Fixture::new(4);
    for (mut p, mut c) in [fx.switch_to_dd(), fx.dd_to_switch()] {
        let (mut sent, mut got) = (0u64, 0u64);
        let mut x = 0x2545_f491_u32;
        // 100 000 frames through a 4-slot ring: 25 000 times around, and the u32
        // indices are started nowhere special, so also check the wrap of the index
        // itself below.
        while got < 100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let burst = 1 + (x % 5) as usize;
            for _ in 0..burst {
                let len = 14 + ((sent as usize * 7) % 99);
                if !push(&mut p, sent, len) {
                    break;
                }
                sent += 1;
            }
            p.publish();
            let before = got;
            pull(&mut c, 1 + (x as usize >> 8) % 4, &mut got);
            assert!(got >= before);
        }
        assert!(sent - got <= 4);
    }
}

#[test]
fn u32_index_wrap() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.switch_to_dd();
    // Start both ends just below 2^32, as if 4 G frames had passed.
    let start = u32::MAX - 5;
    p.prod = start;
    p.published = start;
    p.checked = start;
    p.cons = start;
    c.cons = start;
    c.seen = start;
    c.checked = start;
    fx.poke32(fx.ctrl(RingId::ToNic) + OFF_PROD_IDX, start);
    fx.poke32(fx.ctrl(RingId::ToNic) + OFF_CONS_IDX, start);
    let (mut sent, mut got) = (0u64, 0u64);
    while got < 100 {
        while push(&mut p, sent, 60) {
            sent += 1;
        }
        p.publish();
        pull(&mut c, 3, &mut got);
    }
}

#[test]
fn batching_publishes_once() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.switch_to_dd();
    let ctrl = fx.ctrl(RingId::ToNic);
    for s in 0..3 {
        assert!(push(&mut p, s, 60));
    }
    assert_eq!(p.pending(), 3);
    // Nothing visible before publish.
    assert_eq!(fx.peek32(ctrl + OFF_PROD_IDX), 0);
    let mut got = 0;
    assert_eq!(pull(&mut c, 8, &mut got), 0);
    p.publish();
    assert_eq!(fx.peek32(ctrl + OFF_PROD_IDX), 3);
    assert_eq!(pull(&mut c, 2, &mut got), 2);
    assert_eq!(fx.peek32(ctrl + OFF_CONS_IDX), 2);
    assert_eq!(pull(&mut c, 8, &mut got), 1);
    assert_eq!(fx.peek32(ctrl + OFF_CONS_IDX), 3);
}

#[test]
fn full_ring_and_available() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.switch_to_dd();
    assert_eq!(p.available().unwrap(), 4);
    for s in 0..4 {
        assert!(push(&mut p, s, 14));
    }
    assert!(p.reserve().unwrap().is_none());
    p.publish();
    assert!(p.reserve().unwrap().is_none());
    let mut got = 0;
    assert_eq!(pull(&mut c, 1, &mut got), 1);
    assert_eq!(p.available().unwrap(), 1);
    assert!(push(&mut p, 4, 14));
    assert!(p.reserve().unwrap().is_none());
}

#[test]
fn dropped_slot_is_not_committed_and_commit_checks_length() {
    let fx = Fixture::new(4);
    let (mut p, _c) = fx.switch_to_dd();
    {
        // Reserved, never committed.
        let _slot = p.reserve().unwrap().unwrap();
    }
    assert_eq!(p.pending(), 0);
    let s = p.reserve().unwrap().unwrap();
    assert_eq!(s.capacity(), 128 - SLOT_HEADER);
    assert_eq!(s.frame().len(), 112);
    assert!(matches!(
        s.commit(13),
        Err(ExchangeError::FrameSize { len: 13, .. })
    ));
    let s = p.reserve().unwrap().unwrap();
    assert!(matches!(
        s.commit(113),
        Err(ExchangeError::FrameSize { .. })
    ));
    assert_eq!(p.pending(), 0);
}

#[test]
fn busy_consumer_is_never_notified() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.switch_to_dd();
    let mut got = 0;
    for s in 0..1000 {
        assert!(push(&mut p, s, 60));
        p.publish();
        assert!(!p.needs_notify());
        pull(&mut c, 8, &mut got);
        assert!(!c.needs_notify());
    }
    assert_eq!(got, 1000);
}

#[test]
fn sleeping_consumer_is_notified_once() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.switch_to_dd();
    let mut got = 0;
    // Nothing there: arming says "sleep".
    assert!(!c.arm_notify());
    assert!(push(&mut p, 0, 60));
    assert!(push(&mut p, 1, 60));
    p.publish();
    assert!(p.needs_notify());
    // Further batches while the consumer has not re-armed: no more notifications.
    assert!(push(&mut p, 2, 60));
    p.publish();
    assert!(!p.needs_notify());
    // needs_notify without a new publish is false.
    assert!(!p.needs_notify());
    assert_eq!(pull(&mut c, 8, &mut got), 3);
    // Re-armed: the next batch notifies again.
    assert!(!c.arm_notify());
    assert!(push(&mut p, 3, 60));
    p.publish();
    assert!(p.needs_notify());
}

#[test]
fn consumer_arm_sees_raced_work() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.switch_to_dd();
    assert!(push(&mut p, 0, 60));
    p.publish();
    // The producer published before the consumer armed: it does not notify...
    assert!(!p.needs_notify());
    // ...so arming must report the work, and the consumer must not sleep.
    assert!(c.arm_notify());
    let mut got = 0;
    assert_eq!(pull(&mut c, 8, &mut got), 1);
    assert!(!c.arm_notify());
}

#[test]
fn producer_waiting_for_space_is_notified() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.dd_to_switch();
    for s in 0..4 {
        assert!(push(&mut p, s, 60));
    }
    p.publish();
    assert!(p.reserve().unwrap().is_none());
    // Full: arming says "sleep".
    assert!(!p.arm_notify());
    let mut got = 0;
    assert_eq!(pull(&mut c, 1, &mut got), 1);
    assert!(c.needs_notify());
    assert_eq!(pull(&mut c, 1, &mut got), 1);
    assert!(!c.needs_notify());
    assert!(push(&mut p, 4, 60));
    assert!(push(&mut p, 5, 60));
    assert!(p.reserve().unwrap().is_none());
}

#[test]
fn producer_arm_sees_raced_space() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.dd_to_switch();
    for s in 0..4 {
        assert!(push(&mut p, s, 60));
    }
    p.publish();
    assert!(p.reserve().unwrap().is_none());
    let mut got = 0;
    assert_eq!(pull(&mut c, 2, &mut got), 2);
    // Released before the producer armed: no notification...
    assert!(!c.needs_notify());
    // ...and arming reports the space.
    assert!(p.arm_notify());
    assert!(push(&mut p, 4, 60));
}

// ---- hostile peer -------------------------------------------------------------

#[test]
fn producer_index_runaway() {
    let fx = Fixture::new(8);
    let (_p, mut c) = fx.dd_to_switch();
    let ctrl = fx.ctrl(RingId::FromNic);
    for bad in [9u32, 1000, u32::MAX, 0x8000_0000] {
        fx.poke32(ctrl + OFF_PROD_IDX, bad);
        let e = c
            .poll(64, |_| panic!("no frame may be delivered"))
            .unwrap_err();
        assert_eq!(
            e,
            ExchangeError::IndexRunaway {
                peer: bad,
                local: 0
            }
        );
        assert_eq!(e.consumed(), 0);
    }
    // Exactly one ring ahead is fine (with valid lengths).
    for i in 0..8 {
        fx.poke32(fx.sw.layout().slot(RingId::FromNic, i), 60);
    }
    fx.poke32(ctrl + OFF_PROD_IDX, 8);
    assert_eq!(c.poll(64, |_| {}).unwrap(), 8);
}

#[test]
fn producer_index_backwards() {
    let fx = Fixture::new(8);
    let (mut p, mut c) = fx.dd_to_switch();
    for s in 0..4 {
        assert!(push(&mut p, s, 60));
    }
    p.publish();
    let mut got = 0;
    assert_eq!(pull(&mut c, 1, &mut got), 1);
    // The producer had published 4; now it claims 2.
    fx.poke32(fx.ctrl(RingId::FromNic) + OFF_PROD_IDX, 2);
    assert_eq!(
        c.poll(64, |_| {}).unwrap_err(),
        ExchangeError::IndexRunaway { peer: 2, local: 1 }
    );
}

#[test]
fn bad_lengths_counted_after_good_frames() {
    let cap = 128 - SLOT_HEADER;
    for bad in [0u32, 13, cap + 1, 0x1_0000, u32::MAX] {
        let fx = Fixture::new(8);
        let (mut p, mut c) = fx.dd_to_switch();
        for s in 0..5 {
            assert!(push(&mut p, s, 60));
        }
        p.publish();
        // The DD rewrites the third frame's length after publishing.
        fx.poke32(fx.sw.layout().slot(RingId::FromNic, 2), bad);
        let mut got = 0u64;
        let mut buf = [0u8; 256];
        let e = c
            .poll(64, |f| {
                let n = f.read_prefix(&mut buf);
                assert_eq!(&buf[..n], &frame(got, n)[..]);
                got += 1;
            })
            .unwrap_err();
        assert_eq!(
            e,
            ExchangeError::BadLength {
                index: 2,
                len: bad,
                consumed: 2
            }
        );
        assert_eq!(e.consumed(), 2);
        assert_eq!(got, 2);
        // The two good frames were released; the bad one was not.
        assert_eq!(fx.peek32(fx.ctrl(RingId::FromNic) + OFF_CONS_IDX), 2);
        assert!(matches!(
            c.poll(64, |_| {}),
            Err(ExchangeError::BadLength { consumed: 0, .. })
        ));
    }
}

#[test]
fn corrupt_header_stops_both_ends() {
    let fx = Fixture::new(4);
    let (mut p, _) = fx.switch_to_dd();
    let (_, mut c) = fx.dd_to_switch();
    fx.dd
        .u64_at(OFF_MAGIC)
        .unwrap()
        .store(0xbad, Ordering::Relaxed);
    assert_eq!(
        c.poll(8, |_| {}).unwrap_err(),
        ExchangeError::Corrupt {
            offset: OFF_MAGIC,
            found: 0xbad
        }
    );
    assert!(matches!(p.available(), Err(ExchangeError::Corrupt { .. })));
    fx.dd
        .u64_at(OFF_MAGIC)
        .unwrap()
        .store(crate::layout::MAGIC, Ordering::Relaxed);
    // Geometry: the DD claims huge slots. Handles never use it; they report it.
    fx.poke32(OFF_SLOT_SIZE, 65536);
    assert!(matches!(
        c.poll(8, |_| {}),
        Err(ExchangeError::Corrupt { offset: 0x10, .. })
    ));
}

#[test]
fn consumer_index_runaway_seen_by_producer() {
    let fx = Fixture::new(4);
    let (mut p, _c) = fx.switch_to_dd();
    let ctrl = fx.ctrl(RingId::ToNic);
    for s in 0..4 {
        assert!(push(&mut p, s, 60));
    }
    p.publish();
    // The DD claims to have consumed more than was published.
    fx.poke32(ctrl + OFF_CONS_IDX, 5);
    assert_eq!(
        p.reserve().unwrap_err(),
        ExchangeError::IndexRunaway { peer: 5, local: 4 }
    );
    fx.poke32(ctrl + OFF_CONS_IDX, u32::MAX);
    assert!(matches!(
        p.available(),
        Err(ExchangeError::IndexRunaway { .. })
    ));
    // Legitimately consumes 3, then moves backwards to 1.
    fx.poke32(ctrl + OFF_CONS_IDX, 3);
    assert_eq!(p.available().unwrap(), 3);
    fx.poke32(ctrl + OFF_CONS_IDX, 1);
    assert!(matches!(
        p.available(),
        Err(ExchangeError::IndexRunaway { .. })
    ));
}

#[test]
fn peer_cannot_move_our_own_index() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.dd_to_switch();
    let ctrl = fx.ctrl(RingId::FromNic);
    for s in 0..2 {
        assert!(push(&mut p, s, 60));
    }
    p.publish();
    // The DD overwrites the switch's consumer index: the switch never reads it.
    fx.poke32(ctrl + OFF_CONS_IDX, 12345);
    let mut got = 0;
    assert_eq!(pull(&mut c, 8, &mut got), 2);
    assert_eq!(fx.peek32(ctrl + OFF_CONS_IDX), 2);
}

#[test]
fn random_garbage_never_panics() {
    let fx = Fixture::new(8);
    let (mut p, mut c_dd) = fx.switch_to_dd();
    let (mut p_dd, mut c) = fx.dd_to_switch();
    let len = fx.sw.len();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut err) = (0u32, 0u32);
    for round in 0..20_000u32 {
        let r = rnd();
        // Mostly the ring control pages and slot headers, sometimes anywhere.
        let off = match r % 4 {
            0 => fx.ctrl(RingId::FromNic) + (r >> 8) % 256,
            1 => fx.ctrl(RingId::ToNic) + (r >> 8) % 256,
            2 => fx.sw.layout().slot(RingId::FromNic, (r >> 8) as u32),
            _ => (r >> 8) % len,
        } & !3;
        let v = match (r >> 40) % 3 {
            0 => (r >> 16) as u32,
            1 => (r >> 16) as u32 % 20,
            _ => (r >> 16) as u32 % 200,
        };
        fx.poke32(off, v);
        if round % 500 == 0 {
            // Let the header heal now and then so that the rings get exercised.
            for (i, w) in fx.sw.layout().header_words().iter().enumerate() {
                fx.dd
                    .u64_at(8 * i as u64)
                    .unwrap()
                    .store(*w, Ordering::Relaxed);
            }
        }
        let mut sum = 0usize;
        for res in [
            c.poll(16, |f| sum += f.len()).map(|_| ()),
            c_dd.poll(16, |f| sum += f.len()).map(|_| ()),
            p.reserve().map(|s| {
                if let Some(s) = s {
                    let _ = s.commit(60);
                }
            }),
            p_dd.reserve().map(|s| {
                if let Some(s) = s {
                    let _ = s.commit(60);
                }
            }),
        ] {
            match res {
                Ok(()) => ok += 1,
                Err(_) => err += 1,
            }
        }
        p.publish();
        p_dd.publish();
        let _ = (
            p.needs_notify(),
            c.arm_notify(),
            p_dd.arm_notify(),
            c.needs_notify(),
        );
        assert!(sum <= 32 * 112);
        let _ = fx.sw.status();
        let _ = fx.sw.heartbeat();
    }
    assert!(ok > 0 && err > 0, "ok {ok} err {err}");
}

#[test]
fn consuming_role_moves_between_processes_in_order() {
    let fx = Fixture::new(8);
    let (mut p, mut dd_side) = fx.switch_to_dd();
    let mut next = 0u64;
    for seq in 0..5 {
        assert!(push(&mut p, seq, 64));
    }
    p.publish();
    // The DD takes two, then stops; the switch resumes consuming at the shared index.
    assert_eq!(pull(&mut dd_side, 2, &mut next), 2);
    let mut sw_side = Consumer::resume(fx.sw.clone(), RingId::ToNic).unwrap();
    assert_eq!(pull(&mut sw_side, 8, &mut next), 3);
    // And back again: the DD continues after what the switch took.
    for seq in 5..9 {
        assert!(push(&mut p, seq, 64));
    }
    p.publish();
    let mut dd_again = Consumer::resume(fx.dd.clone(), RingId::ToNic).unwrap();
    assert_eq!(pull(&mut dd_again, 8, &mut next), 4);
    assert_eq!(next, 9);
}

#[test]
fn resumed_consumer_validates_a_bogus_shared_index() {
    let fx = Fixture::new(8);
    let (mut p, _) = fx.switch_to_dd();
    assert!(push(&mut p, 0, 64));
    p.publish();
    // A hostile DD leaves a consumer index far behind the producer.
    fx.poke32(fx.ctrl(RingId::ToNic) + OFF_CONS_IDX, 1000);
    let mut c = Consumer::resume(fx.sw.clone(), RingId::ToNic).unwrap();
    assert!(matches!(
        c.poll(8, |_| {}),
        Err(ExchangeError::IndexRunaway { .. })
    ));
}

/// A handover drain (`Consumer::resume` on the switch's side of `to_nic`) takes at
/// most what the switch published and the DD left, however the DD moves the
/// indices: a hostile DD that keeps raising the producer index cannot keep the
/// drain going (it once ran for 800 000 frames on a 512-slot ring).
#[test]
fn a_handover_drain_is_bounded_by_the_producers_own_count() {
    let fx = Fixture::new(8);
    let (mut p, mut dd) = fx.switch_to_dd();
    for seq in 0..6 {
        assert!(push(&mut p, seq, 60));
    }
    p.publish();
    let mut next = 0;
    assert_eq!(pull(&mut dd, 2, &mut next), 2);
    // The switch takes the consuming role over: 4 frames are left.
    let sw = Consumer::resume(fx.sw.clone(), RingId::ToNic).unwrap();
    assert_eq!(p.outstanding_from(sw.position()), 4);
    // The DD now writes a consumer index far behind and a producer index that says
    // the ring is full: by the switch's own count it is still 4, then at most 8.
    let ctrl = fx.ctrl(RingId::ToNic);
    fx.poke32(ctrl + OFF_PROD_IDX, 2 + 8);
    assert_eq!(p.outstanding_from(sw.position()), 4);
    assert_eq!(p.outstanding_from(sw.position().wrapping_sub(1000)), 8);
    let mut forged = Consumer::resume(fx.sw.clone(), RingId::ToNic).unwrap();
    let mut taken = 0;
    let bound = p.outstanding_from(forged.position());
    for _ in 0..100 {
        // Whatever the DD writes between polls...
        fx.poke32(ctrl + OFF_PROD_IDX, forged.position().wrapping_add(8));
        taken += forged.poll(bound - taken.min(bound), |_| {}).unwrap_or(0);
    }
    // ...the switch took no more than its bound.
    assert_eq!(taken, 4);
}

/// What fault injection uses to play a broken DD: the length is stored as given and
/// the producer moves on, so the consumer sees the slot and refuses it.
#[test]
fn commit_unchecked_stores_any_length_and_the_consumer_refuses_it() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.dd_to_switch();
    assert!(push(&mut p, 0, 60));
    let slot = p.reserve().unwrap().unwrap();
    slot.commit_unchecked(0xffff_fff0).unwrap();
    assert_eq!(p.pending(), 2);
    p.publish();
    assert_eq!(
        fx.peek32(fx.sw.layout().slot(RingId::FromNic, 1)),
        0xffff_fff0
    );
    let mut got = 0;
    let e = c
        .poll(8, |f| {
            assert_eq!(f.len(), 60);
            got += 1;
        })
        .unwrap_err();
    assert_eq!(
        e,
        ExchangeError::BadLength {
            index: 1,
            len: 0xffff_fff0,
            consumed: 1
        }
    );
    assert_eq!(got, 1);
}

/// A poll that takes nothing stores nothing: the consumer index in shared memory is
/// written only to release frames.
#[test]
fn an_empty_poll_writes_no_consumer_index() {
    let fx = Fixture::new(4);
    let (mut p, mut c) = fx.dd_to_switch();
    let cons_idx = fx.ctrl(RingId::FromNic) + OFF_CONS_IDX;
    assert!(push(&mut p, 0, 60));
    p.publish();
    let mut got = 0;
    assert_eq!(pull(&mut c, 8, &mut got), 1);
    assert_eq!(fx.peek32(cons_idx), 1);
    // A marker where the index lives: an idle poll leaves it alone.
    fx.poke32(cons_idx, 0xabcd);
    assert_eq!(pull(&mut c, 8, &mut got), 0);
    assert_eq!(fx.peek32(cons_idx), 0xabcd);
}
