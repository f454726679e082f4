//! Driver tests against a fake loopback device sharing a [`VecEnv`].

use super::*;
use driver_env::test_env::VecEnv;
use driver_virtqueue::QueueLayout;

struct Ring {
    l: QueueLayout,
    last_avail: u16,
    used: u16,
}

impl Ring {
    fn take(&mut self, env: &VecEnv) -> Option<(u16, u64, u32)> {
        if env.read_u16(self.l.avail + 2).unwrap() == self.last_avail {
            return None;
        }
        let slot = self.last_avail & (self.l.size - 1);
        let id = env
            .read_u16(self.l.avail + 4 + 2 * u64::from(slot))
            .unwrap();
        let d = self.l.desc + 16 * u64::from(id);
        self.last_avail = self.last_avail.wrapping_add(1);
        Some((id, env.read_u64(d).unwrap(), env.read_u32(d + 8).unwrap()))
    }
    fn complete(&mut self, env: &VecEnv, id: u32, len: u32) {
        let e = self.l.used + 4 + 8 * u64::from(self.used & (self.l.size - 1));
        env.write_u32(e, id).unwrap();
        env.write_u32(e + 4, len).unwrap();
        self.used = self.used.wrapping_add(1);
        env.write_u16(self.l.used + 2, self.used).unwrap();
    }
}

/// Moves every TX frame to an RX buffer (num_buffers = 1).
fn loopback(env: &VecEnv, rx: &mut Ring, tx: &mut Ring) -> usize {
    let mut n = 0;
    while let Some((tid, taddr, tlen)) = tx.take(env) {
        let Some((rid, raddr, rcap)) = rx.take(env) else {
            break;
        };
        assert!(tlen <= rcap);
        let mut buf = vec![0u8; tlen as usize];
        env.read_bytes(taddr, &mut buf).unwrap();
        buf[10] = 1;
        env.write_bytes(raddr, &buf).unwrap();
        rx.complete(env, u32::from(rid), tlen);
        tx.complete(env, u32::from(tid), 0);
        n += 1;
    }
    n
}

fn setup(features: u64) -> (VecEnv, VirtioNet, Ring, Ring) {
    let cfg = NetConfig {
        queue_size: 16,
        buf_size: 2048,
    };
    let l = NetLayout::new(cfg).unwrap();
    let env = VecEnv::new(l.region_len as usize);
    let d = VirtioNet::init(&env, cfg, features).unwrap();
    let rx = Ring {
        l: l.rx,
        last_avail: 0,
        used: 0,
    };
    let tx = Ring {
        l: l.tx,
        last_avail: 0,
        used: 0,
    };
    (env, d, rx, tx)
}

#[test]
fn negotiation() {
    assert!(negotiate(RING_F_EVENT_IDX).is_err());
    let all = u64::MAX;
    assert_eq!(negotiate(all).unwrap(), features::DRIVER_WANT);
    assert_eq!(negotiate(F_VERSION_1 | (1 << 5)).unwrap(), F_VERSION_1);
}

#[test]
fn loopback_round_trip() {
    let (env, mut d, mut rx, mut tx) = setup(F_VERSION_1 | RING_F_EVENT_IDX | NET_F_MRG_RXBUF);
    for round in 0..100u32 {
        for i in 0..5u8 {
            let b = d.tx_reserve(&env).unwrap().unwrap();
            assert_eq!(b.capacity, 2036);
            let frame = [i.wrapping_add(round as u8); 60];
            env.write_bytes(b.frame_addr, &frame).unwrap();
            d.tx_commit(&env, b, 60).unwrap();
        }
        d.tx_flush(&env).unwrap();
        assert_eq!(loopback(&env, &mut rx, &mut tx), 5);
        let mut got = Vec::new();
        let n = d
            .rx_burst(&env, 64, |f| {
                let mut b = [0u8; 1];
                env.read_bytes(f.addr, &mut b).unwrap();
                got.push((b[0], f.len));
            })
            .unwrap();
        assert_eq!(n, 5);
        let want: Vec<_> = (0..5u8)
            .map(|i| (i.wrapping_add(round as u8), 60))
            .collect();
        assert_eq!(got, want);
    }
    d.tx_reap(&env).unwrap();
    let s = d.stats(&env).unwrap();
    assert_eq!(
        (s.tx_packets, s.rx_packets, s.rx_bytes, s.tx_completed),
        (500, 500, 30000, 500)
    );
    assert_eq!(s.rx_queue.num_free, 0);
    assert_eq!(s.tx_queue.num_free, 16);
    // At a batch boundary, another handle continues from the region.
    d.sync(&env).unwrap();
    let d2 = VirtioNet::attach(&env).unwrap();
    assert_eq!(d2.stats(&env).unwrap(), s);
    assert_eq!(d2.layout(), d.layout());
    assert_eq!(d2.rx_queue().avail_base(), d.rx_queue().avail_base());
}

#[test]
fn ring_full_and_too_long() {
    let (env, mut d, _rx, _tx) = setup(F_VERSION_1);
    let b = d.tx_reserve(&env).unwrap().unwrap();
    assert!(matches!(
        d.tx_commit(&env, b, 3000),
        Err(NetError::FrameTooLong { .. })
    ));
    for _ in 0..16 {
        let b = d.tx_reserve(&env).unwrap().unwrap();
        d.tx_commit(&env, b, 60).unwrap();
    }
    assert_eq!(d.tx_reserve(&env).unwrap(), None);
    let s = d.stats(&env).unwrap();
    assert_eq!((s.tx_ring_full, s.tx_too_long), (1, 1));
}

#[test]
fn hostile_rx_entries_are_dropped_and_counted() {
    let (env, mut d, mut rx, _tx) = setup(F_VERSION_1 | NET_F_MRG_RXBUF);
    let (a, b, c, e) = (
        rx.take(&env).unwrap(),
        rx.take(&env).unwrap(),
        rx.take(&env).unwrap(),
        rx.take(&env).unwrap(),
    );
    rx.complete(&env, u32::from(a.0), 4); // shorter than the header
    env.write_u16(b.1 + 10, 3).unwrap();
    rx.complete(&env, u32::from(b.0), 100); // claims a merged frame
    rx.complete(&env, u32::from(c.0), 1 << 20); // longer than the buffer
    rx.complete(&env, 5000, 60); // bad id
    env.write_u16(e.1 + 10, 1).unwrap();
    rx.complete(&env, u32::from(e.0), 72); // good
    let mut lens = Vec::new();
    assert_eq!(d.rx_burst(&env, 64, |f| lens.push(f.len)).unwrap(), 1);
    assert_eq!(lens, vec![60]);
    let s = d.stats(&env).unwrap();
    assert_eq!((s.rx_short, s.rx_merged, s.rx_device_errors), (1, 1, 2));
    // Every reclaimed buffer went back to the device.
    assert_eq!(s.rx_queue.num_free, 0);
}

// ---------------------------------------------------------------------------
// Twin: upcalls, stubs, dispatcher, the access map.

use driver_env::test_env::MapEnv;
use driver_env::{FaultInjection, FaultKind, InjectedFault, UpcallError, UpcallMsg, UpcallRoute};

/// What a twin of `layout` sees of `env`.
fn twin_env<'a>(env: &'a VecEnv, layout: &NetLayout) -> MapEnv<'a> {
    MapEnv::new(env, &layout.twin_access_map())
}

fn decode_posted(tenv: &MapEnv<'_>) -> Vec<VirtioNetUpcall> {
    tenv.take_posted()
        .iter()
        .map(|m| VirtioNetUpcall::decode(m).unwrap())
        .collect()
}

const ALL: u64 = F_VERSION_1 | RING_F_EVENT_IDX | NET_F_MRG_RXBUF;

#[test]
fn twin_fast_path_stays_inside_the_access_map() {
    for features in [ALL, F_VERSION_1, F_VERSION_1 | RING_F_EVENT_IDX] {
        let (env, dom, mut rx, mut tx) = setup(features);
        let layout = *dom.layout();
        let tenv = twin_env(&env, &layout);
        // The map is enforced.
        assert_eq!(
            tenv.read_u64(layout.private).unwrap_err().kind,
            FaultKind::Permission
        );
        assert_eq!(
            tenv.write_u32(P_MAGIC, 0).unwrap_err().kind,
            FaultKind::Permission
        );
        assert_eq!(
            tenv.write_u32(layout.rx.used + 4, 0).unwrap_err().kind,
            FaultKind::Permission
        );
        assert_eq!(
            tenv.write_u16(layout.rx_buf(0), 0).unwrap_err().kind,
            FaultKind::Permission
        );
        tenv.clear_touched();

        let mut twin = VirtioNetTwin::new(VirtioNet::attach(&tenv).unwrap());
        for round in 0..40u8 {
            twin.set_rx_notify(&tenv, round % 2 == 0).unwrap();
            for i in 0..5u8 {
                let b = twin.tx_reserve(&tenv).unwrap().unwrap();
                tenv.write_bytes(b.frame_addr, &[round ^ i; 64]).unwrap();
                twin.tx_commit(&tenv, b, 64).unwrap();
            }
            let spare = twin.tx_reserve(&tenv).unwrap().unwrap();
            twin.tx_cancel(&tenv, spare).unwrap();
            twin.tx_flush(&tenv).unwrap();
            assert_eq!(loopback(&env, &mut rx, &mut tx), 5);
            if round == 7 {
                // A hostile device entry: counted, reported once.
                let (id, _, _) = rx.take(&env).unwrap();
                let _ = id;
                rx.complete(&env, 9999, 60);
            }
            assert!(twin.rx_pending(&tenv).unwrap());
            let mut frames = 0;
            twin.rx_burst(&tenv, 64, |f| {
                let mut b = [0u8; 64];
                tenv.read_bytes(f.addr, &mut b[..f.len]).unwrap();
                assert_eq!(b[0], round ^ frames);
                frames += 1;
            })
            .unwrap();
            assert_eq!(frames, 5);
            twin.tx_reap(&tenv).unwrap();
            twin.sync(&tenv).unwrap();
        }
        twin.rx_refill(&tenv).unwrap();
        let s = twin.stats(&tenv).unwrap();
        assert_eq!(
            (s.tx_packets, s.rx_packets, s.rx_device_errors),
            (200, 200, 1)
        );
        assert_eq!(twin.layout(), &layout);
        assert_eq!(twin.rx_queue().size(), 16);
        assert_eq!(twin.tx_queue().size(), 16);

        // Never the private page, never a write where the twin may only read.
        assert_eq!(tenv.touched("private"), (0, 0));
        for r in &layout.twin_access_map() {
            let (reads, writes) = tenv.touched(r.name);
            assert!(r.access.can_write() || writes == 0, "{} written", r.name);
            assert!(r.access.can_read() || reads == 0, "{} read", r.name);
        }
        for busy in [
            "counters",
            "rx-used",
            "tx-used",
            "rx-avail",
            "tx-desc",
            "tx-buffers",
        ] {
            assert_ne!(tenv.touched(busy), (0, 0), "{busy}");
        }
        assert_eq!(tenv.touched("state-config").1, 0);
        assert_eq!(
            decode_posted(&tenv),
            vec![VirtioNetUpcall::DeviceError {
                queue: RX_QUEUE,
                count: 1
            }]
        );

        // Back in the domain: the twin's batch boundary is a valid state.
        let again = VirtioNet::attach(&env).unwrap();
        assert_eq!(again.stats(&env).unwrap(), s);
    }
}

#[test]
fn upcall_messages_round_trip_and_bad_ones_are_refused() {
    assert_eq!(
        VirtioNetUpcall::ROUTINES,
        &[(1, "device_error"), (2, "queue_broken")]
    );
    assert_eq!(
        VirtioNet::SLOW_PATH_ROUTINES,
        &["device_error", "queue_broken"]
    );
    for entry in [
        "tx_reserve",
        "tx_flush",
        "rx_burst",
        "sync",
        "stats",
        "layout",
    ] {
        assert!(VirtioNet::TWIN_ENTRY_POINTS.contains(&entry), "{entry}");
    }
    for domain_only in ["init", "attach", "reset_requested", "domain_errors"] {
        assert!(!VirtioNet::TWIN_ENTRY_POINTS.contains(&domain_only));
    }
    for u in [
        VirtioNetUpcall::DeviceError {
            queue: TX_QUEUE,
            count: u32::MAX,
        },
        VirtioNetUpcall::QueueBroken { queue: RX_QUEUE },
    ] {
        assert_eq!(VirtioNetUpcall::decode(&u.encode()), Ok(u));
    }
    let m = |op, args| UpcallMsg { op, args };
    assert_eq!(
        VirtioNetUpcall::decode(&m(0, [0; 3])),
        Err(UpcallError::UnknownOp(0))
    );
    assert_eq!(
        VirtioNetUpcall::decode(&m(3, [0; 3])),
        Err(UpcallError::UnknownOp(3))
    );
    assert_eq!(
        VirtioNetUpcall::decode(&m(1, [1 << 16, 1, 0])),
        Err(UpcallError::BadArg {
            op: 1,
            index: 0,
            value: 1 << 16
        })
    );
    assert_eq!(
        VirtioNetUpcall::decode(&m(1, [0, 1 << 32, 0])),
        Err(UpcallError::BadArg {
            op: 1,
            index: 1,
            value: 1 << 32
        })
    );
    assert_eq!(
        VirtioNetUpcall::decode(&m(2, [0, 7, 0])),
        Err(UpcallError::BadArg {
            op: 2,
            index: 1,
            value: 7
        })
    );
}

#[test]
fn stubs_post_in_a_twin_and_run_in_place_in_the_domain() {
    let (env, d, _rx, _tx) = setup(ALL);
    env.set_upcall_route(UpcallRoute::Posted);
    d.device_error(&env, TX_QUEUE, 3).unwrap();
    d.queue_broken(&env, RX_QUEUE).unwrap();
    assert_eq!(
        env.take_posted(),
        vec![
            VirtioNetUpcall::DeviceError {
                queue: TX_QUEUE,
                count: 3
            }
            .encode(),
            VirtioNetUpcall::QueueBroken { queue: RX_QUEUE }.encode(),
        ]
    );
    assert_eq!(d.domain_errors(&env).unwrap(), DomainErrors::default());
    assert!(!d.reset_requested(&env).unwrap());

    env.set_upcall_route(UpcallRoute::Dropped);
    d.queue_broken(&env, RX_QUEUE).unwrap();
    assert!(!d.reset_requested(&env).unwrap());

    env.set_upcall_route(UpcallRoute::Local);
    d.device_error(&env, TX_QUEUE, 3).unwrap();
    d.device_error(&env, TX_QUEUE, 2).unwrap();
    d.device_error(&env, RX_QUEUE, 1).unwrap();
    assert!(!d.reset_requested(&env).unwrap());
    d.queue_broken(&env, TX_QUEUE).unwrap();
    assert!(env.take_posted().is_empty());
    assert_eq!(
        d.domain_errors(&env).unwrap(),
        DomainErrors {
            rx_device_errors: 1,
            tx_device_errors: 5,
            last_error: Some((RX_QUEUE, 1)),
            rx_broken: false,
            tx_broken: true,
            reset_requested: true,
        }
    );
    assert!(d.reset_requested(&env).unwrap());
    assert_eq!(d.device_error(&env, 7, 1), Err(NetError::UnknownQueue(7)));
}

#[test]
fn the_dispatcher_runs_routines_in_the_domain() {
    let (env, mut d, _rx, _tx) = setup(ALL);
    // Even if the domain's environment would post: the dispatcher runs in place.
    env.set_upcall_route(UpcallRoute::Posted);
    let msg = VirtioNetUpcall::DeviceError {
        queue: RX_QUEUE,
        count: 4,
    }
    .encode();
    assert_eq!(
        d.dispatch_upcall(&env, &msg),
        Ok(VirtioNetUpcall::DeviceError {
            queue: RX_QUEUE,
            count: 4
        })
    );
    let call = d
        .dispatch_upcall(
            &env,
            &VirtioNetUpcall::QueueBroken { queue: RX_QUEUE }.encode(),
        )
        .unwrap();
    assert_eq!(call.name(), "queue_broken");
    assert!(env.take_posted().is_empty());
    let e = d.domain_errors(&env).unwrap();
    assert_eq!(
        (
            e.rx_device_errors,
            e.last_error,
            e.rx_broken,
            e.reset_requested
        ),
        (4, Some((RX_QUEUE, 4)), true, true)
    );
    assert_eq!(
        d.dispatch_upcall(&env, &VirtioNetUpcall::QueueBroken { queue: 9 }.encode()),
        Err(UpcallDispatchError::Routine {
            routine: "queue_broken",
            error: NetError::UnknownQueue(9)
        })
    );
    assert_eq!(
        d.dispatch_upcall(
            &env,
            &UpcallMsg {
                op: 42,
                args: [0; 3]
            }
        ),
        Err(UpcallDispatchError::Decode(UpcallError::UnknownOp(42)))
    );
}

#[test]
fn bad_used_ids_post_one_device_error_per_batch() {
    let (env, mut d, mut rx, mut tx) = setup(ALL);
    env.set_upcall_route(UpcallRoute::Posted);
    // Nothing happened: no upcall.
    d.rx_burst(&env, 64, |_| {}).unwrap();
    d.tx_flush(&env).unwrap();
    assert!(env.take_posted().is_empty());

    for _ in 0..3 {
        rx.take(&env).unwrap();
    }
    rx.complete(&env, 5000, 60);
    rx.complete(&env, 6000, 60);
    rx.complete(&env, 70000, 60);
    assert_eq!(d.rx_burst(&env, 64, |_| {}).unwrap(), 0);
    assert_eq!(
        env.take_posted(),
        vec![VirtioNetUpcall::DeviceError {
            queue: RX_QUEUE,
            count: 3
        }
        .encode()]
    );
    d.rx_burst(&env, 64, |_| {}).unwrap();
    assert!(env.take_posted().is_empty());

    // TX: a completion naming a descriptor that is not in flight.
    for _ in 0..2 {
        let b = d.tx_reserve(&env).unwrap().unwrap();
        d.tx_commit(&env, b, 60).unwrap();
    }
    d.tx_flush(&env).unwrap();
    let (id, _, _) = tx.take(&env).unwrap();
    tx.complete(&env, u32::from(id), 0);
    tx.complete(&env, u32::from(id), 0);
    d.tx_flush(&env).unwrap();
    assert_eq!(
        env.take_posted(),
        vec![VirtioNetUpcall::DeviceError {
            queue: TX_QUEUE,
            count: 1
        }
        .encode()]
    );
    let s = d.stats(&env).unwrap();
    assert_eq!((s.rx_device_errors, s.tx_device_errors), (3, 1));

    // The domain replays them.
    let mut dom = VirtioNet::attach(&env).unwrap();
    for m in [
        VirtioNetUpcall::DeviceError {
            queue: RX_QUEUE,
            count: 3,
        },
        VirtioNetUpcall::DeviceError {
            queue: TX_QUEUE,
            count: 1,
        },
    ] {
        dom.dispatch_upcall(&env, &m.encode()).unwrap();
    }
    let e = dom.domain_errors(&env).unwrap();
    assert_eq!(
        (e.rx_device_errors, e.tx_device_errors, e.last_error),
        (3, 1, Some((TX_QUEUE, 1)))
    );
}

#[test]
fn a_broken_queue_posts_queue_broken_once() {
    let (env, mut d, rx, _tx) = setup(ALL);
    env.set_upcall_route(UpcallRoute::Posted);
    // The device publishes a used index far beyond the ring.
    env.write_u16(rx.l.used + 2, 100).unwrap();
    assert!(matches!(
        d.rx_burst(&env, 64, |_| {}),
        Err(NetError::Queue(QueueError::Device(_)))
    ));
    assert_eq!(
        env.take_posted(),
        vec![VirtioNetUpcall::QueueBroken { queue: RX_QUEUE }.encode()]
    );
    assert_eq!(
        d.rx_burst(&env, 64, |_| {}),
        Err(NetError::Queue(QueueError::Broken(RX_QUEUE)))
    );
    assert!(d.set_rx_notify(&env, true).is_err());
    assert!(env.take_posted().is_empty());
    // TX is still fine.
    let b = d.tx_reserve(&env).unwrap().unwrap();
    d.tx_commit(&env, b, 60).unwrap();
    d.tx_flush(&env).unwrap();
    assert!(env.take_posted().is_empty());

    // In the domain the same runs in place and asks for a reset.
    let (env, mut d, rx, _tx) = setup(ALL);
    env.write_u16(rx.l.used + 2, 100).unwrap();
    assert!(!d.reset_requested(&env).unwrap());
    assert!(d.rx_burst(&env, 64, |_| {}).is_err());
    assert!(d.reset_requested(&env).unwrap());
    assert!(d.domain_errors(&env).unwrap().rx_broken);
}

/// Without the feature, an injected fault is never even taken.
#[cfg(not(feature = "fault-injection"))]
#[test]
fn injected_faults_need_the_feature() {
    let (env, mut d, _rx, _tx) = setup(ALL);
    env.inject(InjectedFault::Panic);
    assert_eq!(d.rx_burst(&env, 64, |_| {}), Ok(0));
    assert_eq!(d.tx_flush(&env), Ok(false));
    assert_eq!(env.take_injected_fault(), Some(InjectedFault::Panic));
}

#[cfg(feature = "fault-injection")]
mod fault_injection {
    use super::*;

    #[test]
    fn forbidden_read_faults_a_twin_but_not_the_domain() {
        let (env, mut dom, mut rx, mut tx) = setup(ALL);
        let layout = *dom.layout();
        {
            let tenv = twin_env(&env, &layout);
            let mut twin = VirtioNetTwin::new(VirtioNet::attach(&tenv).unwrap());
            tenv.inject(InjectedFault::ForbiddenRead);
            assert_eq!(
                twin.rx_burst(&tenv, 64, |_| {}),
                Err(NetError::Access(MemFault::new(
                    layout.private,
                    8,
                    FaultKind::Permission
                )))
            );
            assert_eq!(tenv.touched("private"), (0, 0));
            // Each request is committed once.
            assert_eq!(twin.rx_burst(&tenv, 64, |_| {}), Ok(0));
        }
        // In the driver domain the read is legal: the batch goes on.
        let b = dom.tx_reserve(&env).unwrap().unwrap();
        dom.tx_commit(&env, b, 60).unwrap();
        env.inject(InjectedFault::ForbiddenRead);
        dom.tx_flush(&env).unwrap();
        assert_eq!(env.take_injected_fault(), None);
        assert_eq!(loopback(&env, &mut rx, &mut tx), 1);
        env.inject(InjectedFault::ForbiddenRead);
        assert_eq!(dom.rx_burst(&env, 64, |_| {}), Ok(1));
    }

    #[test]
    fn wild_write_is_refused_everywhere() {
        let (env, mut dom, _rx, _tx) = setup(ALL);
        let layout = *dom.layout();
        let past = MemFault::new(layout.region_len, 8, FaultKind::OutOfBounds);
        env.inject(InjectedFault::WildWrite);
        assert_eq!(dom.tx_flush(&env), Err(NetError::Access(past)));
        let tenv = twin_env(&env, &layout);
        let mut twin = VirtioNetTwin::new(VirtioNet::attach(&tenv).unwrap());
        tenv.inject(InjectedFault::WildWrite);
        assert_eq!(
            twin.rx_burst(&tenv, 64, |_| {}),
            Err(NetError::Access(past))
        );
        assert_eq!(twin.rx_burst(&tenv, 64, |_| {}), Ok(0));
    }

    #[test]
    fn panic_panics_with_a_clear_message() {
        let (env, mut dom, _rx, _tx) = setup(ALL);
        env.inject(InjectedFault::Panic);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dom.tx_flush(&env)))
            .unwrap_err();
        let msg = caught.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("injected fault"), "{msg:?}");
    }

    #[test]
    fn stuck_spins_until_the_watchdog_fires() {
        let (env, dom, _rx, _tx) = setup(ALL);
        let layout = *dom.layout();
        let tenv = twin_env(&env, &layout);
        let mut twin = VirtioNetTwin::new(VirtioNet::attach(&tenv).unwrap());
        tenv.set_budget(Some(10_000));
        tenv.inject(InjectedFault::Stuck);
        assert_eq!(
            twin.tx_flush(&tenv),
            Err(NetError::Access(MemFault::new(
                layout.rx.used,
                4,
                FaultKind::Watchdog
            )))
        );
        assert_eq!(tenv.touched("rx-used").0, 10_000);
        // The host resets the watchdog; the next batch runs normally.
        tenv.set_budget(None);
        assert_eq!(twin.tx_flush(&tenv), Ok(false));
    }
}
