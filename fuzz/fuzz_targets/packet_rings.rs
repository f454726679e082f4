//! A hostile kernel (or a compromised domain) writing an AF_PACKET socket's
//! TPACKET_V3 rings, into the AF_PACKET driver.
//!
//! The driver runs over a `VecEnv` holding its whole space; the fuzzer plays the
//! kernel: it hands receive blocks over with any header and packet fields
//! (versions, counts, lengths, offsets, next offsets), writes any word anywhere
//! in the rings (transmit slot statuses included), and may scribble the state
//! page's positions before a second instance attaches. Interleaved: the driver's
//! receive bursts (any limit), reserve/commit/cancel, flush, take-back, sync and
//! counters.
//!
//! Checked: no panic, no hang; every frame handed over lies inside the block it
//! came from and is at least an Ethernet header long; a burst hands over at most
//! its limit; a reserved slot's area lies inside the transmit ring; an attach
//! over scribbled positions either refuses them or continues without a panic.
#![no_main]

use af_packet_driver::{AfPacket, PacketConfig, PacketLayout};
use arbitrary::Arbitrary;
use driver_env::test_env::VecEnv;
use driver_env::DriverMem;
use libfuzzer_sys::fuzz_target;

const BLOCK: u32 = 4096;
const BLOCKS: u32 = 4;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Hands block `block % BLOCKS` over with `packets` laid out from `first`.
    Block {
        block: u8,
        version: u32,
        first: u16,
        blk_len: u16,
        packets: Vec<Pkt>,
    },
    /// Writes `value` at `offset` in the rings.
    Poke { offset: u16, value: u32, tx: bool },
    Receive { max: u8 },
    Send { len: u16, commit: bool },
    Flush,
    TakeBack,
    Sync,
    /// Writes `value` into the state page at `offset` (positions, counters),
    /// then a second instance attaches.
    Reattach { offset: u8, value: u32 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Pkt {
    next: u32,
    snaplen: u32,
    len: u32,
    mac: u16,
}

fuzz_target!(|ops: Vec<Op>| {
    let layout = PacketLayout::new(PacketConfig {
        block_size: BLOCK,
        blocks: BLOCKS,
    })
    .expect("layout");
    let env = VecEnv::new(layout.len as usize);
    let mut d = AfPacket::init(&env, layout).expect("init");
    for op in ops.into_iter().take(256) {
        match op {
            Op::Block {
                block,
                version,
                first,
                blk_len,
                packets,
            } => {
                let base = layout.block_addr(u32::from(block) % BLOCKS);
                let w = |off: u64, v: u32| {
                    let _ = env.write_u32(base + off, v);
                };
                w(0, version);
                w(12, packets.len() as u32);
                w(16, u32::from(first));
                w(20, u32::from(blk_len));
                let mut at = u64::from(first);
                for p in packets.iter().take(64) {
                    if at + 48 > u64::from(BLOCK) {
                        break;
                    }
                    w(at, p.next);
                    w(at + 12, p.snaplen);
                    w(at + 16, p.len);
                    let _ = env.write_u16(base + at + 24, p.mac);
                    at += u64::from(p.next.max(48));
                }
                w(8, 1);
            }
            Op::Poke { offset, value, tx } => {
                let ring = if tx { layout.tx } else { layout.rx };
                let off = u64::from(offset) % (layout.ring_len - 4) & !3;
                let _ = env.write_u32(ring + off, value);
            }
            Op::Receive { max } => {
                let max = usize::from(max);
                let mut seen = 0;
                let n = d
                    .rx_burst(&env, max, |f| {
                        seen += 1;
                        assert!(f.addr >= layout.rx && f.addr < layout.tx, "{f:?}");
                        let block = (f.addr - layout.rx) / u64::from(BLOCK);
                        let block_end = layout.rx + (block + 1) * u64::from(BLOCK);
                        assert!(f.addr + u64::from(f.len) <= block_end, "{f:?}");
                        assert!(f.len >= 14, "{f:?}");
                    })
                    .expect("receive");
                assert_eq!(n, seen);
                assert!(n <= max);
            }
            Op::Send { len, commit } => {
                if let Some(c) = d.tx_reserve(&env).expect("reserve") {
                    assert!(c.addr >= layout.tx && c.addr + u64::from(c.capacity) <= layout.len);
                    if commit {
                        d.tx_commit(&env, c, u32::from(len)).expect("commit");
                    } else {
                        d.tx_cancel(&env, c).expect("cancel");
                    }
                }
            }
            Op::Flush => d.tx_flush(&env).expect("flush"),
            Op::TakeBack => {
                d.tx_take_back(&env).expect("take back");
            }
            Op::Sync => d.sync(&env).expect("sync"),
            Op::Reattach { offset, value } => {
                d.sync(&env).expect("sync");
                let off = u64::from(offset) & !3;
                let _ = env.write_u32(off, value);
                if let Ok(next) = AfPacket::attach(&env, layout) {
                    d = next;
                }
            }
        }
    }
});
