//! Driver tests against a fake kernel sharing a [`VecEnv`]: the test plays the
//! kernel's side of the four rings.

use super::*;
use crate::layout::{XdpConfig, LINUX_OFFSETS};
use driver_env::test_env::{MapEnv, VecEnv};
use driver_env::{DriverMem, FaultKind, UpcallRoute};

const FRAMES: u32 = 64;
const ENTRIES: u32 = FRAMES / 2;

fn layout() -> XdpLayout {
    XdpLayout::new(XdpConfig {
        frames: FRAMES,
        fill: LINUX_OFFSETS,
        completion: LINUX_OFFSETS,
        rx: LINUX_OFFSETS,
        tx: LINUX_OFFSETS,
    })
    .unwrap()
}

/// The kernel's side of the rings.
struct Kernel {
    l: XdpLayout,
}

impl Kernel {
    /// Takes a chunk from the fill ring and receives a `len`-byte frame at
    /// `addr` (a UMEM address, as the kernel writes it).
    fn rx(&self, env: &VecEnv, addr: u64, len: u32) {
        let l = &self.l;
        let taken = env.read_u32(l.fill.consumer).unwrap();
        env.write_u32(l.fill.consumer, taken.wrapping_add(1))
            .unwrap();
        self.rx_unpublished(env, addr, len);
    }

    /// Receives a frame without publishing that it took a chunk from the fill
    /// ring (the kernel publishes the receive ring's producer first).
    fn rx_unpublished(&self, env: &VecEnv, addr: u64, len: u32) {
        let l = &self.l;
        let prod = env.read_u32(l.rx.producer).unwrap();
        let at = l.rx.desc + u64::from(prod % ENTRIES) * 16;
        env.write_u64(at, addr).unwrap();
        env.write_u32(at + 8, len).unwrap();
        env.write_u32(l.rx.producer, prod.wrapping_add(1)).unwrap();
    }

    /// The fill ring's entry `i`.
    fn fill_entry(&self, env: &VecEnv, i: u32) -> u64 {
        env.read_u64(self.l.fill.desc + u64::from(i % FRAMES) * 8)
            .unwrap()
    }

    /// Transmits everything on the transmit ring; completes each chunk unless
    /// `complete` is false. Returns (UMEM address, length) per frame.
    fn tx(&self, env: &VecEnv, complete: bool) -> Vec<(u64, u32)> {
        let l = &self.l;
        let prod = env.read_u32(l.tx.producer).unwrap();
        let mut cons = env.read_u32(l.tx.consumer).unwrap();
        let mut out = Vec::new();
        while cons != prod {
            let at = l.tx.desc + u64::from(cons % ENTRIES) * 16;
            let d = (env.read_u64(at).unwrap(), env.read_u32(at + 8).unwrap());
            out.push(d);
            if complete {
                self.complete(env, d.0);
            }
            cons = cons.wrapping_add(1);
        }
        env.write_u32(l.tx.consumer, cons).unwrap();
        out
    }

    /// Puts `addr` on the completion ring.
    fn complete(&self, env: &VecEnv, addr: u64) {
        let l = &self.l;
        let p = env.read_u32(l.completion.producer).unwrap();
        env.write_u64(l.completion.desc + u64::from(p % ENTRIES) * 8, addr)
            .unwrap();
        env.write_u32(l.completion.producer, p.wrapping_add(1))
            .unwrap();
    }
}

fn setup() -> (VecEnv, Kernel, AfXdp) {
    let l = layout();
    let env = VecEnv::new(l.len as usize);
    let d = AfXdp::init(&env, l).unwrap();
    (env, Kernel { l }, d)
}

fn recv<E: DriverEnv>(d: &mut AfXdp, env: &E, mem: &VecEnv) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    d.rx_burst(env, 64, |f| {
        let mut b = vec![0; f.len as usize];
        mem.read_bytes(f.addr, &mut b).unwrap();
        got.push(b);
    })
    .unwrap();
    got
}

fn send<E: DriverEnv>(d: &mut AfXdp, env: &E, frame: &[u8]) -> bool {
    let Some(c) = d.tx_reserve(env).unwrap() else {
        return false;
    };
    env.write_bytes(c.addr, frame).unwrap();
    d.tx_commit(env, c, frame.len() as u32).unwrap()
}

#[test]
fn init_gives_the_kernel_the_receive_half() {
    let (env, k, d) = setup();
    assert_eq!(env.read_u32(k.l.fill.producer).unwrap(), ENTRIES);
    let addrs: Vec<u64> = (0..ENTRIES).map(|i| k.fill_entry(&env, i)).collect();
    let want: Vec<u64> = (0..ENTRIES).map(|c| u64::from(c * FRAME_SIZE)).collect();
    assert_eq!(addrs, want);
    assert_eq!(d.stats(&env).unwrap(), XdpStats::default());
}

#[test]
fn a_received_frame_is_handed_on_and_its_chunk_refilled() {
    let (env, k, mut d) = setup();
    let frame: Vec<u8> = (0..60u8).collect();
    // At an offset inside chunk 3, as the kernel puts frames after headroom.
    let addr = u64::from(3 * FRAME_SIZE + 256);
    env.write_bytes(k.l.umem + addr, &frame).unwrap();
    k.rx(&env, addr, 60);
    assert!(d.rx_pending(&env).unwrap());
    assert_eq!(recv(&mut d, &env, &env), vec![frame]);
    assert!(!d.rx_pending(&env).unwrap());
    assert_eq!(env.read_u32(k.l.rx.consumer).unwrap(), 1);
    assert_eq!(env.read_u32(k.l.fill.producer).unwrap(), ENTRIES + 1);
    assert_eq!(k.fill_entry(&env, ENTRIES), u64::from(3 * FRAME_SIZE));
    let s = d.stats(&env).unwrap();
    assert_eq!((s.rx_packets, s.rx_bytes, s.kernel_errors), (1, 60, 0));
}

#[test]
fn a_fill_consumer_the_kernel_has_not_published_yet_is_no_error() {
    let (env, k, mut d) = setup();
    // Every receive chunk received, the fill ring's consumer not yet moved.
    for c in 0..ENTRIES {
        let addr = u64::from(c * FRAME_SIZE);
        env.write_bytes(k.l.umem + addr, &[c as u8; 60]).unwrap();
        k.rx_unpublished(&env, addr, 60);
    }
    assert_eq!(recv(&mut d, &env, &env).len(), ENTRIES as usize);
    let s = d.stats(&env).unwrap();
    assert_eq!((s.rx_packets, s.kernel_errors), (u64::from(ENTRIES), 0));
    // Every chunk is back on the fill ring.
    assert_eq!(env.read_u32(k.l.fill.producer).unwrap(), 2 * ENTRIES);
}

#[test]
fn lies_in_receive_descriptors_are_counted_and_nothing_of_them_used() {
    let (env, k, mut d) = setup();
    let tx_chunk = u64::from(ENTRIES * FRAME_SIZE);
    for (addr, len) in [
        // Outside the UMEM.
        (u64::from(FRAMES * FRAME_SIZE), 60),
        (u64::MAX - 10, 60),
        // A transmit chunk, never given to the kernel for receiving.
        (tx_chunk, 60),
        // Leaves its chunk.
        (u64::from(FRAME_SIZE) - 30, 60),
        (0, u32::MAX),
    ] {
        k.rx(&env, addr, len);
    }
    // Shorter than an Ethernet header: dropped, counted as such.
    k.rx(&env, u64::from(FRAME_SIZE), 10);
    assert!(recv(&mut d, &env, &env).is_empty());
    let s = d.stats(&env).unwrap();
    assert_eq!((s.kernel_errors, s.rx_too_short, s.rx_packets), (5, 1, 0));
    // Only the three in receive chunks went back to the kernel.
    assert_eq!(env.read_u32(k.l.fill.producer).unwrap(), ENTRIES + 3);
    // An index that runs more than a ring ahead: nothing is read.
    let cons = env.read_u32(k.l.rx.consumer).unwrap();
    env.write_u32(k.l.rx.producer, cons.wrapping_add(ENTRIES + 1))
        .unwrap();
    assert!(recv(&mut d, &env, &env).is_empty());
    assert_eq!(d.stats(&env).unwrap().kernel_errors, 6);
    assert_eq!(
        env.read_u32(k.l.rx.consumer).unwrap(),
        cons,
        "nothing consumed"
    );
    // The domain heard of each batch's errors.
    assert_eq!(d.domain_errors(&env).unwrap().kernel_errors, 6);
    assert!(!d.reset_requested(&env).unwrap());
}

#[test]
fn frames_go_out_the_kernel_is_woken_when_it_asks_and_chunks_come_back() {
    let (env, k, mut d) = setup();
    let frame = [7u8; 60];
    for _ in 0..ENTRIES {
        assert!(send(&mut d, &env, &frame));
    }
    assert!(!send(&mut d, &env, &frame), "every chunk is in flight");
    // Nothing is the kernel's before the flush.
    assert_eq!(env.read_u32(k.l.tx.producer).unwrap(), 0);
    env.write_u32(k.l.tx.flags, 1).unwrap();
    d.tx_flush(&env).unwrap();
    assert_eq!(env.read_u32(k.l.tx.producer).unwrap(), ENTRIES);
    // The kernel took nothing: woken as often as the bound allows.
    assert_eq!(env.kicks(TX_QUEUE), u64::from(ENTRIES / 32 + 2));
    assert!(d.tx_waiting(&env).unwrap());
    let sent = k.tx(&env, true);
    assert_eq!(sent.len(), ENTRIES as usize);
    // The lowest transmit chunk first, each frame at its chunk's start.
    assert_eq!(sent[0], (u64::from(ENTRIES * FRAME_SIZE), 60));
    assert!(!d.tx_waiting(&env).unwrap());
    env.write_u32(k.l.tx.flags, 0).unwrap();
    d.tx_flush(&env).unwrap();
    assert_eq!(
        env.kicks(TX_QUEUE),
        u64::from(ENTRIES / 32 + 2),
        "not asked"
    );
    let s = d.stats(&env).unwrap();
    assert_eq!(
        (s.tx_packets, s.tx_bytes, s.tx_completed, s.tx_no_chunk),
        (
            u64::from(ENTRIES),
            u64::from(ENTRIES) * 60,
            u64::from(ENTRIES),
            1
        )
    );
    assert!(
        send(&mut d, &env, &frame),
        "a completed chunk is free again"
    );
    // Too long for a chunk: refused, the chunk goes back.
    let c = d.tx_reserve(&env).unwrap().unwrap();
    assert!(!d.tx_commit(&env, c, FRAME_SIZE + 1).unwrap());
    assert_eq!(d.stats(&env).unwrap().tx_too_long, 1);
    assert_eq!(d.tx_reserve(&env).unwrap(), Some(c));
}

#[test]
fn only_chunks_in_flight_complete() {
    let (env, k, mut d) = setup();
    let frame = [7u8; 60];
    assert!(send(&mut d, &env, &frame));
    d.tx_flush(&env).unwrap();
    let sent = k.tx(&env, false);
    // A receive chunk, a chunk outside the UMEM, a free transmit chunk, then
    // the one in flight twice.
    for addr in [
        0,
        u64::from(FRAMES * FRAME_SIZE),
        sent[0].0 + u64::from(FRAME_SIZE),
    ] {
        k.complete(&env, addr);
    }
    k.complete(&env, sent[0].0);
    k.complete(&env, sent[0].0);
    assert_eq!(d.tx_reap(&env).unwrap(), 1);
    d.sync(&env).unwrap();
    let s = d.stats(&env).unwrap();
    assert_eq!((s.tx_completed, s.kernel_errors), (1, 4));
    // Every transmit chunk is free once: ENTRIES sends fit, one more does not.
    for _ in 0..ENTRIES {
        assert!(send(&mut d, &env, &frame));
    }
    assert!(!send(&mut d, &env, &frame));
}

#[test]
fn another_instance_continues_at_a_batch_boundary() {
    let (env, k, mut dom) = setup();
    let frame = [1u8; 60];
    assert!(send(&mut dom, &env, &frame));
    dom.tx_flush(&env).unwrap();
    env.write_bytes(k.l.umem, &[9u8; 64]).unwrap();
    k.rx(&env, 0, 64);
    assert_eq!(recv(&mut dom, &env, &env).len(), 1);
    // The twin takes over from what the region says.
    let mut twin = AfXdp::attach(&env, k.l).unwrap();
    assert!(send(&mut twin, &env, &frame));
    twin.tx_flush(&env).unwrap();
    let sent = k.tx(&env, true);
    // Two frames in two different chunks, in order.
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0].0, sent[1].0);
    k.rx(&env, u64::from(FRAME_SIZE), 64);
    assert_eq!(recv(&mut twin, &env, &env).len(), 1);
    // And back.
    let mut dom = AfXdp::attach(&env, k.l).unwrap();
    dom.tx_reap(&env).unwrap();
    let s = dom.stats(&env).unwrap();
    assert_eq!((s.tx_packets, s.rx_packets, s.tx_completed), (2, 2, 2));
    assert_eq!(s.kernel_errors + s.bad_state, 0);
}

#[test]
fn attach_refuses_another_layout_and_an_impossible_stack() {
    let (env, k, _d) = setup();
    let other = XdpLayout::new(XdpConfig {
        frames: FRAMES * 2,
        ..k.l.cfg
    })
    .unwrap();
    let big = VecEnv::new(other.len as usize);
    assert_eq!(
        AfXdp::attach(&big, other),
        Err(XdpDriverError::NotInitialised)
    );
    env.write_u32(S_FREE_TOP, ENTRIES + 1).unwrap();
    assert_eq!(
        AfXdp::attach(&env, k.l),
        Err(XdpDriverError::BadFreeTop(ENTRIES + 1))
    );
    let small = VecEnv::new(4096);
    assert!(matches!(
        AfXdp::init(&small, k.l),
        Err(XdpDriverError::RegionTooSmall { .. })
    ));
}

#[test]
fn a_corrupt_chunk_table_costs_frames_never_a_chunk_twice() {
    let (env, k, mut d) = setup();
    d.sync(&env).unwrap();
    let l = k.l;
    // What a compromised domain leaves behind: the top of the stack names a
    // receive chunk, then the same transmit chunk twice, then one outside.
    let top = ENTRIES;
    let dup = FRAMES - 1;
    for (i, c) in [
        (top - 1, 0),
        (top - 2, dup),
        (top - 3, dup),
        (top - 4, FRAMES + 5),
    ] {
        env.write_u32(l.free_stack + u64::from(i) * 4, c).unwrap();
    }
    env.set_upcall_route(UpcallRoute::Posted);
    let mut twin = AfXdp::attach(&env, l).unwrap();
    let a = twin.tx_reserve(&env).unwrap().unwrap();
    assert_eq!(a.chunk, dup);
    let b = twin.tx_reserve(&env).unwrap().unwrap();
    assert_ne!(b.chunk, dup, "the duplicate is refused");
    twin.sync(&env).unwrap();
    assert_eq!(twin.stats(&env).unwrap().bad_state, 3);
    let posted = env.take_posted();
    assert_eq!(
        posted
            .iter()
            .map(|m| AfXdpUpcall::decode(m).unwrap())
            .collect::<Vec<_>>(),
        vec![AfXdpUpcall::StateCorrupt { count: 3 }]
    );
    // The domain runs the routine: a restart is requested.
    env.set_upcall_route(UpcallRoute::Local);
    let mut dom = AfXdp::attach(&env, l).unwrap();
    dom.dispatch_upcall(&env, &posted[0]).unwrap();
    assert!(dom.reset_requested(&env).unwrap());
    // Committing a chunk never reserved is refused.
    let forged = TxChunk {
        chunk: FRAMES - 2,
        addr: l.chunk_addr(FRAMES - 2),
        capacity: FRAME_SIZE,
    };
    assert_eq!(
        twin.tx_commit(&env, forged, 60),
        Err(XdpDriverError::NotReserved(FRAMES - 2))
    );
}

#[test]
fn the_twins_fast_path_stays_inside_its_access_map() {
    let (env, k, _dom) = setup();
    let l = k.l;
    let tenv = MapEnv::new(&env, &l.twin_access_map());
    // The map is enforced.
    assert_eq!(
        tenv.read_u64(l.private).unwrap_err().kind,
        FaultKind::Permission
    );
    assert_eq!(
        tenv.write_u32(P_MAGIC, 0).unwrap_err().kind,
        FaultKind::Permission
    );
    assert_eq!(
        tenv.write_u32(l.rx.producer, 0).unwrap_err().kind,
        FaultKind::Permission
    );
    assert_eq!(
        tenv.write_bytes(l.umem, &[1]).unwrap_err().kind,
        FaultKind::Permission
    );
    let mut twin = AfXdpTwin::new(AfXdp::attach(&tenv, l).unwrap());
    tenv.clear_touched();
    for round in 0..3u8 {
        for _ in 0..8 {
            let c = twin.tx_reserve(&tenv).unwrap().unwrap();
            tenv.write_bytes(c.addr, &[round; 64]).unwrap();
            assert!(twin.tx_commit(&tenv, c, 64).unwrap());
        }
        env.write_u32(l.tx.flags, 1).unwrap();
        twin.tx_flush(&tenv).unwrap();
        assert_eq!(k.tx(&env, true).len(), 8);
        for i in 0..8u32 {
            let addr = u64::from(i * FRAME_SIZE);
            env.write_bytes(l.umem + addr, &[round; 64]).unwrap();
            k.rx(&env, addr, 64);
        }
        // One lie per round: a transmit chunk on the receive ring.
        k.rx(&env, u64::from((FRAMES - 1) * FRAME_SIZE), 64);
        let mut seen = 0;
        twin.rx_burst(&tenv, 64, |f| {
            let mut b = [0u8; 64];
            tenv.read_bytes(f.addr, &mut b).unwrap();
            assert_eq!(b, [round; 64]);
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 8);
        twin.tx_reap(&tenv).unwrap();
    }
    assert_eq!(tenv.touched("private"), (0, 0));
    assert_eq!(tenv.touched("state-config").1, 0);
    assert_eq!(tenv.touched("rx-chunks").1, 0);
    for busy in [
        "counters",
        "holders",
        "free-stack",
        "fill-producer",
        "fill-desc",
        "rx-producer",
        "rx-consumer",
        "rx-desc",
        "tx-producer",
        "tx-consumer",
        "tx-flags",
        "tx-desc",
        "comp-producer",
        "comp-consumer",
        "comp-desc",
        "rx-chunks",
        "tx-chunks",
    ] {
        assert_ne!(tenv.touched(busy), (0, 0), "{busy}");
    }
    let posted: Vec<AfXdpUpcall> = tenv
        .take_posted()
        .iter()
        .map(|m| AfXdpUpcall::decode(m).unwrap())
        .collect();
    assert_eq!(posted, vec![AfXdpUpcall::KernelError { count: 1 }; 3]);
    let s = twin.stats(&tenv).unwrap();
    assert_eq!((s.tx_packets, s.rx_packets, s.tx_completed), (24, 24, 24));
}

#[cfg(feature = "fault-injection")]
#[test]
fn injected_faults_are_what_a_twin_host_contains() {
    use driver_env::InjectedFault;
    let (env, k, _dom) = setup();
    let tenv = MapEnv::new(&env, &k.l.twin_access_map());
    let mut twin = AfXdp::attach(&tenv, k.l).unwrap();
    tenv.inject(InjectedFault::ForbiddenRead);
    assert!(matches!(
        twin.rx_burst(&tenv, 8, |_| {}),
        Err(XdpDriverError::Access(MemFault {
            kind: FaultKind::Permission,
            ..
        }))
    ));
    tenv.inject(InjectedFault::WildWrite);
    assert!(matches!(
        twin.tx_flush(&tenv),
        Err(XdpDriverError::Access(MemFault {
            kind: FaultKind::OutOfBounds,
            ..
        }))
    ));
    tenv.set_budget(Some(1000));
    tenv.inject(InjectedFault::Stuck);
    assert!(matches!(
        twin.rx_burst(&tenv, 8, |_| {}),
        Err(XdpDriverError::Access(MemFault {
            kind: FaultKind::Watchdog,
            ..
        }))
    ));
    tenv.set_budget(None);
    tenv.inject(InjectedFault::Panic);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = twin.tx_flush(&tenv);
    }));
    assert!(r.is_err());
}
