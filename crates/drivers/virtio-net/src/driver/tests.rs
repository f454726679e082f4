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
