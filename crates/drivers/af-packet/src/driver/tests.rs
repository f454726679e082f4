//! Driver tests against a fake kernel sharing a [`VecEnv`]: the test plays the
//! kernel's side of the two rings (filling receive blocks as the kernel lays
//! them out, sending what is handed over on the transmit ring).

use super::*;
use crate::block::{
    BLOCK_HEADER_LEN, PACKET_HEADER_LEN, TPACKET_V3_BLOCK_VERSION, TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
};
use crate::layout::{PacketConfig, TX_FRAME_SIZE};
use driver_env::test_env::{MapEnv, VecEnv};
use driver_env::{DriverMem, FaultKind, UpcallRoute};

const BLOCK: u32 = 4096;
const BLOCKS: u32 = 4;

fn layout() -> PacketLayout {
    PacketLayout::new(PacketConfig {
        block_size: BLOCK,
        blocks: BLOCKS,
    })
    .unwrap()
}

/// The kernel's side of the rings.
struct Kernel {
    l: PacketLayout,
}

/// Where the second packet of a block of 60-byte frames starts.
const SECOND: u32 = BLOCK_HEADER_LEN + (PACKET_HEADER_LEN + 2 + 60).next_multiple_of(16);

impl Kernel {
    /// Fills block `b` with `frames` as the kernel lays them out (the frame two
    /// bytes after the packet header, packets 16-aligned) and hands it over.
    fn fill(&self, env: &VecEnv, b: u32, frames: &[&[u8]]) {
        let base = self.l.block_addr(b);
        let put = |off: u32, v: u32| env.write_u32(base + u64::from(off), v).unwrap();
        put(0, TPACKET_V3_BLOCK_VERSION);
        put(12, frames.len() as u32);
        put(16, BLOCK_HEADER_LEN);
        let mut at = BLOCK_HEADER_LEN;
        for (i, f) in frames.iter().enumerate() {
            let mac = PACKET_HEADER_LEN + 2;
            let step = (mac + f.len() as u32).next_multiple_of(16);
            put(at, if i + 1 < frames.len() { step } else { 0 });
            put(at + 12, f.len() as u32);
            put(at + 16, f.len() as u32);
            env.write_u16(base + u64::from(at + 24), mac as u16)
                .unwrap();
            env.write_bytes(base + u64::from(at + mac), f).unwrap();
            at += step;
        }
        put(20, at);
        env.store_release_u32(base + BLOCK_STATUS, TP_STATUS_USER)
            .unwrap();
    }

    fn set(&self, env: &VecEnv, b: u32, off: u32, v: u32) {
        env.write_u32(self.l.block_addr(b) + u64::from(off), v)
            .unwrap();
    }

    fn status(&self, env: &VecEnv, b: u32) -> u32 {
        env.read_u32(self.l.block_addr(b) + BLOCK_STATUS).unwrap()
    }

    /// Sends every slot handed over, in order from `from`, as the kernel does
    /// (stopping at the first one not handed over). Returns the frames.
    fn send(&self, env: &VecEnv, from: &mut u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let at = self.l.slot_addr(*from);
            if env.read_u32(at + TP_STATUS).unwrap() != TP_STATUS_SEND_REQUEST {
                return out;
            }
            let len = env.read_u32(at + TP_LEN).unwrap() as usize;
            let mut f = vec![0; len];
            env.read_bytes(at + TX_DATA_OFFSET, &mut f).unwrap();
            out.push(f);
            env.write_u32(at + TP_STATUS, TP_STATUS_AVAILABLE).unwrap();
            *from = (*from + 1) % self.l.tx_frames;
        }
    }
}

fn setup() -> (VecEnv, Kernel, AfPacket) {
    let l = layout();
    let env = VecEnv::new(l.len as usize);
    let d = AfPacket::init(&env, l).unwrap();
    (env, Kernel { l }, d)
}

fn recv<E: DriverEnv>(d: &mut AfPacket, env: &E, mem: &VecEnv, max: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    d.rx_burst(env, max, |f| {
        let mut b = vec![0; f.len as usize];
        mem.read_bytes(f.addr, &mut b).unwrap();
        got.push(b);
    })
    .unwrap();
    got
}

fn send<E: DriverEnv>(d: &mut AfPacket, env: &E, frame: &[u8]) -> bool {
    let Some(c) = d.tx_reserve(env).unwrap() else {
        return false;
    };
    env.write_bytes(c.addr, frame).unwrap();
    d.tx_commit(env, c, frame.len() as u32).unwrap()
}

fn frames(n: u8, base: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| vec![base + i; 60 + usize::from(i)])
        .collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|f| f.as_slice()).collect()
}

#[test]
fn frames_are_read_in_order_and_each_block_given_back() {
    let (env, k, mut d) = setup();
    assert!(!d.rx_pending(&env).unwrap());
    let (a, b) = (frames(3, 10), frames(2, 50));
    k.fill(&env, 0, &refs(&a));
    k.fill(&env, 1, &refs(&b));
    assert!(d.rx_pending(&env).unwrap());
    let got = recv(&mut d, &env, &env, 64);
    assert_eq!(got, [a, b].concat());
    assert_eq!((k.status(&env, 0), k.status(&env, 1)), (0, 0));
    assert!(!d.rx_pending(&env).unwrap());
    let s = d.stats(&env).unwrap();
    assert_eq!((s.rx_packets, s.rx_bad_blocks), (5, 0));
    // The ring wraps: blocks 2, 3, then 0 again.
    for (i, blk) in [2, 3, 0].into_iter().enumerate() {
        let f = frames(1, 100 + i as u8);
        k.fill(&env, blk, &refs(&f));
        assert_eq!(recv(&mut d, &env, &env, 64), f);
    }
}

#[test]
fn a_block_is_read_in_parts_and_another_instance_continues_it() {
    let (env, k, mut d) = setup();
    let f = frames(5, 1);
    k.fill(&env, 0, &refs(&f));
    assert_eq!(recv(&mut d, &env, &env, 2), f[..2]);
    assert_eq!(k.status(&env, 0), TP_STATUS_USER, "still user space's");
    assert!(d.rx_pending(&env).unwrap());
    // A second instance (the twin after a handover) continues the walk.
    let mut twin = AfPacket::attach(&env, k.l).unwrap();
    assert_eq!(recv(&mut twin, &env, &env, 2), f[2..4]);
    let mut back = AfPacket::attach(&env, k.l).unwrap();
    assert_eq!(recv(&mut back, &env, &env, 64), f[4..]);
    assert_eq!(k.status(&env, 0), 0);
    assert_eq!(back.stats(&env).unwrap().rx_packets, 5);
}

#[test]
fn lies_in_a_block_are_counted_and_keep_what_was_good_before() {
    let good = frames(2, 1);
    let first = BLOCK_HEADER_LEN;
    // (what, offset, value, frames handed on)
    let cases: [(&str, u32, u32, usize); 12] = [
        ("too many packets", 12, 1000, 0),
        ("used length past the block", 20, BLOCK + 1, 0),
        ("used length inside the block header", 20, 8, 0),
        ("first packet inside the block header", 16, 8, 0),
        ("first packet past the used length", 16, BLOCK - 10, 0),
        ("a frame past the used length", SECOND + 12, 4000, 1),
        ("a next offset of 0 before the last", first, 0, 0),
        ("a next offset back into the frame", first, 16, 0),
        ("a next offset that wraps", first, u32::MAX, 0),
        ("a misaligned first packet", 16, BLOCK_HEADER_LEN + 2, 0),
        (
            "a misaligned next offset",
            first,
            SECOND - BLOCK_HEADER_LEN + 1,
            1,
        ),
        ("not version 3", 0, 1, 0),
    ];
    for (what, off, v, want) in cases {
        let (env, k, mut d) = setup();
        k.fill(&env, 0, &refs(&good));
        k.set(&env, 0, off, v);
        let got = recv(&mut d, &env, &env, 64);
        assert_eq!(got, good[..want], "{what}");
        let s = d.stats(&env).unwrap();
        assert_eq!(s.rx_bad_blocks, 1, "{what}");
        assert_eq!(k.status(&env, 0), 0, "{what}: the block goes back");
        // The domain heard of it.
        assert_eq!(d.domain_errors(&env).unwrap().kernel_errors, 1, "{what}");
        // The next block is read as usual.
        let next = frames(1, 90);
        k.fill(&env, 1, &refs(&next));
        assert_eq!(recv(&mut d, &env, &env, 64), next, "{what}");
    }
    // A MAC offset inside the packet header.
    let (env, k, mut d) = setup();
    k.fill(&env, 0, &refs(&good));
    env.write_u16(k.l.block_addr(0) + u64::from(first + 24), 4)
        .unwrap();
    assert!(recv(&mut d, &env, &env, 64).is_empty());
    assert_eq!(d.stats(&env).unwrap().rx_bad_blocks, 1);
}

#[test]
fn cut_frames_and_runts_are_dropped_and_the_walk_goes_on() {
    let (env, k, mut d) = setup();
    k.fill(&env, 0, &[&[1u8; 100], &[2u8; 60], &[3u8; 8]]);
    // The first was cut by the kernel (wire length larger than captured).
    k.set(&env, 0, BLOCK_HEADER_LEN + 16, 1500);
    assert_eq!(recv(&mut d, &env, &env, 64), vec![vec![2u8; 60]]);
    let s = d.stats(&env).unwrap();
    assert_eq!(
        (
            s.rx_packets,
            s.rx_truncated,
            s.rx_too_short,
            s.rx_bad_blocks
        ),
        (1, 1, 1, 0)
    );
}

#[test]
fn frames_go_out_in_order_with_one_wake_up_per_batch() {
    let (env, k, mut d) = setup();
    let f = frames(5, 1);
    for x in &f {
        assert!(send(&mut d, &env, x));
    }
    assert_eq!(env.kicks(TX_QUEUE), 0, "nothing rung before the flush");
    assert!(d.tx_waiting(&env).unwrap());
    d.tx_flush(&env).unwrap();
    assert_eq!(env.kicks(TX_QUEUE), 1);
    let mut at = 0;
    assert_eq!(k.send(&env, &mut at), f);
    assert!(!d.tx_waiting(&env).unwrap());
    d.tx_flush(&env).unwrap();
    assert_eq!(env.kicks(TX_QUEUE), 1, "no wake-up without frames");
    let s = d.stats(&env).unwrap();
    assert_eq!((s.tx_packets, s.tx_bytes), (5, 5 * 60 + 10));
}

#[test]
fn a_full_ring_a_long_frame_and_a_refused_one_are_counted() {
    let (env, k, mut d) = setup();
    let n = k.l.tx_frames;
    for i in 0..n {
        assert!(send(&mut d, &env, &[i as u8; 60]), "slot {i}");
    }
    // Every slot is the kernel's.
    assert!(!send(&mut d, &env, &[0; 60]));
    assert_eq!(d.stats(&env).unwrap().tx_ring_full, 1);
    // A frame longer than a slot: refused, the slot stays free.
    let mut at = 0;
    k.send(&env, &mut at);
    let c = d.tx_reserve(&env).unwrap().unwrap();
    assert_eq!(c.capacity, TX_FRAME_SIZE - TX_DATA_OFFSET as u32);
    assert!(!d.tx_commit(&env, c, c.capacity + 1).unwrap());
    assert_eq!(d.stats(&env).unwrap().tx_too_long, 1);
    // The kernel refused the frame in the next slot: counted once.
    let next = d.tx_reserve(&env).unwrap().unwrap();
    d.tx_cancel(&env, next).unwrap();
    env.write_u32(
        k.l.slot_addr(next.chunk) + TP_STATUS,
        TP_STATUS_WRONG_FORMAT,
    )
    .unwrap();
    for _ in 0..2 {
        let c = d.tx_reserve(&env).unwrap().unwrap();
        d.tx_cancel(&env, c).unwrap();
    }
    assert_eq!(d.stats(&env).unwrap().tx_refused, 1);
    // Committing a slot never reserved is refused.
    let forged = TxChunk { chunk: 3, ..next };
    assert_eq!(
        d.tx_commit(&env, forged, 60),
        Err(PacketDriverError::NotReserved(3))
    );
}

#[test]
fn what_a_down_interface_kept_is_taken_back_and_nothing_stale_goes_out() {
    let (env, k, mut d) = setup();
    let mut at = 0;
    for x in &frames(3, 1) {
        send(&mut d, &env, x);
    }
    d.tx_flush(&env).unwrap();
    k.send(&env, &mut at);
    // The link is down: the kernel keeps these.
    for x in &frames(4, 20) {
        send(&mut d, &env, x);
    }
    d.tx_flush(&env).unwrap();
    assert_eq!(d.tx_take_back(&env).unwrap(), 4);
    assert_eq!(d.stats(&env).unwrap().tx_link_down, 4);
    assert!(!d.tx_waiting(&env).unwrap());
    // Up again: only what was sent after comes out, where the kernel looks.
    let after = frames(2, 40);
    for x in &after {
        send(&mut d, &env, x);
    }
    d.tx_flush(&env).unwrap();
    assert_eq!(k.send(&env, &mut at), after);
}

#[test]
fn an_impossible_slot_state_is_reported_and_the_domain_asks_for_a_restart() {
    let (env, k, _d) = setup();
    // What a compromised domain leaves behind.
    env.write_u32(k.l.slot_addr(0) + TP_STATUS, 0x5157_4e54)
        .unwrap();
    env.set_upcall_route(UpcallRoute::Posted);
    let mut twin = AfPacket::attach(&env, k.l).unwrap();
    assert_eq!(twin.tx_reserve(&env).unwrap(), None);
    twin.sync(&env).unwrap();
    assert_eq!(twin.stats(&env).unwrap().bad_state, 1);
    let posted = env.take_posted();
    assert_eq!(
        posted
            .iter()
            .map(|m| AfPacketUpcall::decode(m).unwrap())
            .collect::<Vec<_>>(),
        vec![AfPacketUpcall::StateCorrupt { count: 1 }]
    );
    env.set_upcall_route(UpcallRoute::Local);
    let mut dom = AfPacket::attach(&env, k.l).unwrap();
    dom.dispatch_upcall(&env, &posted[0]).unwrap();
    assert!(dom.reset_requested(&env).unwrap());
}

#[test]
fn attach_refuses_impossible_positions() {
    let (env, k, _d) = setup();
    let l = k.l;
    let bad: [(u64, u32); 6] = [
        (S_RX_NEXT, BLOCKS),
        (S_RX_OPEN, 2),
        (S_TX_NEXT, l.tx_frames),
        (S_TX_PENDING, l.tx_frames + 1),
        // An open cursor with more packets than fit.
        (S_RX_CURSOR, 10_000),
        (P_BLOCKS, BLOCKS + 1),
    ];
    for (off, v) in bad {
        let (env2, _, _) = setup();
        if off == S_RX_CURSOR {
            env2.write_u32(S_RX_OPEN, 1).unwrap();
            env2.write_u32(S_RX_CURSOR + 4, BLOCK).unwrap();
        }
        env2.write_u32(off, v).unwrap();
        assert!(AfPacket::attach(&env2, l).is_err(), "{off} = {v}");
    }
    assert!(AfPacket::attach(&env, l).is_ok());
}

#[test]
fn the_twins_fast_path_stays_inside_its_access_map() {
    let (env, k, _dom) = setup();
    let l = k.l;
    let tenv = MapEnv::new(&env, &l.twin_access_map());
    assert_eq!(
        tenv.read_u64(l.private).unwrap_err().kind,
        FaultKind::Permission
    );
    assert_eq!(
        tenv.write_u32(P_MAGIC, 0).unwrap_err().kind,
        FaultKind::Permission
    );
    let mut twin = AfPacketTwin::new(AfPacket::attach(&tenv, l).unwrap());
    tenv.clear_touched();
    let mut at = 0;
    for round in 0..3u8 {
        let f = frames(4, 10 * round);
        for x in &f {
            let c = twin.tx_reserve(&tenv).unwrap().unwrap();
            tenv.write_bytes(c.addr, x).unwrap();
            assert!(twin.tx_commit(&tenv, c, x.len() as u32).unwrap());
        }
        twin.tx_flush(&tenv).unwrap();
        assert_eq!(k.send(&env, &mut at), f);
        // The kernel fills blocks in turn; one lie per round: the second
        // block is not version 3.
        let blk = (2 * u32::from(round)) % BLOCKS;
        k.fill(&env, blk, &refs(&f));
        k.fill(&env, (blk + 1) % BLOCKS, &refs(&f));
        k.set(&env, (blk + 1) % BLOCKS, 0, 1);
        let mut seen = Vec::new();
        twin.rx_burst(&tenv, 64, |fr| {
            let mut b = vec![0; fr.len as usize];
            tenv.read_bytes(fr.addr, &mut b).unwrap();
            seen.push(b);
        })
        .unwrap();
        assert_eq!(seen, f);
    }
    assert_eq!(tenv.touched("private"), (0, 0));
    assert_eq!(tenv.touched("state-config").1, 0);
    assert_eq!(tenv.touched("state-unused"), (0, 0));
    for busy in ["counters", "rx-ring", "tx-ring"] {
        assert_ne!(tenv.touched(busy), (0, 0), "{busy}");
    }
    let posted: Vec<AfPacketUpcall> = tenv
        .take_posted()
        .iter()
        .map(|m| AfPacketUpcall::decode(m).unwrap())
        .collect();
    assert_eq!(posted, vec![AfPacketUpcall::KernelError { count: 1 }; 3]);
    let s = twin.stats(&tenv).unwrap();
    assert_eq!((s.tx_packets, s.rx_packets, s.rx_bad_blocks), (12, 12, 3));
}

#[cfg(feature = "fault-injection")]
#[test]
fn injected_faults_are_what_a_twin_host_contains() {
    use driver_env::InjectedFault;
    let (env, k, _dom) = setup();
    let tenv = MapEnv::new(&env, &k.l.twin_access_map());
    let mut twin = AfPacket::attach(&tenv, k.l).unwrap();
    tenv.inject(InjectedFault::ForbiddenRead);
    assert!(matches!(
        twin.rx_burst(&tenv, 8, |_| {}),
        Err(PacketDriverError::Access(MemFault {
            kind: FaultKind::Permission,
            ..
        }))
    ));
    tenv.inject(InjectedFault::WildWrite);
    assert!(matches!(
        twin.tx_flush(&tenv),
        Err(PacketDriverError::Access(MemFault {
            kind: FaultKind::OutOfBounds,
            ..
        }))
    ));
}

/// Block `b` with one frame the kernel took a tag off, laid out as the kernel
/// does (the frame `mac` bytes after the packet header's start: 82 for a
/// TPACKET_V3 socket), its tag beside it.
fn fill_untagged_by_the_kernel(
    k: &Kernel,
    env: &VecEnv,
    b: u32,
    f: &[u8],
    mac: u32,
    (status, tci, tpid): (u32, u32, u16),
) {
    k.fill(env, b, &[f]);
    let base = k.l.block_addr(b);
    let at = BLOCK_HEADER_LEN;
    env.write_u16(base + u64::from(at + 24), mac as u16)
        .unwrap();
    env.write_u32(base + u64::from(at + 20), status).unwrap();
    env.write_u32(base + u64::from(at + 32), tci).unwrap();
    env.write_u16(base + u64::from(at + 36), tpid).unwrap();
    env.write_bytes(base + u64::from(at + mac), f).unwrap();
    k.set(env, b, 20, at + mac + f.len() as u32);
}

#[test]
fn a_tag_the_kernel_took_off_is_put_back_and_the_packet_header_says_so() {
    let (env, k, mut d) = setup();
    let f: Vec<u8> = (0..60u8).collect();
    let tagged = |tpid: [u8; 2], tci: [u8; 2]| [&f[..12], &tpid[..], &tci[..], &f[12..]].concat();
    fill_untagged_by_the_kernel(
        &k,
        &env,
        0,
        &f,
        82,
        (
            TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
            0x200a,
            0x8100,
        ),
    );
    assert_eq!(
        recv(&mut d, &env, &env, 64),
        [tagged([0x81, 0], [0x20, 0x0a])]
    );
    // The packet's header was rewritten: a second walk (another instance after
    // a handover) reads the same tagged frame.
    let h = k.l.block_addr(0) + u64::from(BLOCK_HEADER_LEN);
    assert_eq!(env.read_u16(h + 24).unwrap(), 78);
    assert_eq!(env.read_u32(h + 12).unwrap(), 64);
    assert_eq!(env.read_u32(h + 20).unwrap() & TP_STATUS_VLAN_VALID, 0);
    let base = k.l.block_addr(0);
    env.store_release_u32(base + BLOCK_STATUS, TP_STATUS_USER)
        .unwrap();
    let mut c = crate::block::open_block(&env, base, BLOCK)
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        c.next(&env, base).unwrap(),
        Ok(crate::block::Packet::Frame {
            offset: BLOCK_HEADER_LEN + 78,
            len: 64
        })
    );
    env.store_release_u32(base + BLOCK_STATUS, 0).unwrap();
    let mut again = d;
    // Without a TPID, 0x8100; with another one (802.1ad), that one.
    fill_untagged_by_the_kernel(&k, &env, 1, &f, 82, (TP_STATUS_VLAN_VALID, 20, 0x88a8));
    assert_eq!(
        recv(&mut again, &env, &env, 64),
        [tagged([0x81, 0], [0, 20])]
    );
    fill_untagged_by_the_kernel(
        &k,
        &env,
        2,
        &f,
        82,
        (TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, 30, 0x88a8),
    );
    assert_eq!(
        recv(&mut again, &env, &env, 64),
        [tagged([0x88, 0xa8], [0, 30])]
    );
    // No room for the tag: never handed on untagged, counted as a bad block.
    fill_untagged_by_the_kernel(
        &k,
        &env,
        3,
        &f,
        PACKET_HEADER_LEN + 2,
        (TP_STATUS_VLAN_VALID, 10, 0),
    );
    assert!(recv(&mut again, &env, &env, 64).is_empty());
    let s = again.stats(&env).unwrap();
    assert_eq!((s.rx_packets, s.rx_bad_blocks), (3, 1));
}
