//! The vhost-user control plane against hostile requests, end to end.
//!
//! A real `twin switch` with three client ports: `bad`, where the test process
//! plays a raw vhost-user frontend (`driver_host::raw_frontend::RawWire`, every
//! message written by hand), and `g1` -> `g2`, two `twin gen` forwarding a known
//! number of frames meanwhile. On `bad`, each connection opens like a normal
//! frontend (every step acknowledged with status 0 under REPLY_ACK), then sends one
//! bad request: a memory table with overlapping regions, a zero-sized region, an
//! offset beyond its file, more regions than allowed; a ring address outside the
//! memory; a ring size of 0, not a power of two, above the maximum; a feature the
//! port did not offer.
//!
//! Each must be refused (a non-zero REPLY_ACK status; `vhost` itself closes at
//! once on 33 descriptors) and the connection closed
//! (as the control thread does on any refused request), counted once in the port's
//! `detail/refused_requests`, the switch must stay up, the port must serve a
//! well-behaved client afterwards, and `g1` -> `g2` must forward every frame:
//! exact counts, nothing dropped anywhere.

mod common;

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use common::*;
use driver_host::raw_frontend::{
    mem_table_body, u64_body, vring_addr_body, vring_state, RawWire, Reply, F_PROTOCOL_FEATURES,
    SET_FEATURES, SET_MEM_TABLE, SET_VRING_ADDR, SET_VRING_NUM,
};

const G1: &str = "02:00:00:00:00:01";
const G2: &str = "02:00:00:00:00:02";
const VERSION_1: u64 = 1 << 32;
/// Size of the memfd the bad client offers.
const MEM: u64 = 1 << 20;
/// The client's (made-up) virtual address of its memory: the switch only uses it
/// to translate ring addresses.
const UADDR: u64 = 0x7f00_0000_0000;
/// Frames g1 sends to g2.
const FRAMES: u64 = 6000;

fn memfd(len: u64) -> std::fs::File {
    let fd = rustix::fs::memfd_create("twin-test-bad-client", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    std::fs::File::from(fd)
}

/// Sends a request that must be accepted (REPLY_ACK status 0).
fn accepted(w: &mut RawWire, what: &str, req: u32, body: &[u8], fds: &[BorrowedFd<'_>]) {
    let r = w.request(req, body, fds, true).expect(what);
    assert_eq!(r.u64(), Some(0), "{what}: not accepted ({r:?})");
}

/// One bad request on a fresh connection, after `setup` (whose steps must all be
/// accepted): it must be refused and the connection closed.
struct Case {
    name: &'static str,
    /// Set up a memory table and a ring size first.
    with_ring: bool,
    req: u32,
    body: Vec<u8>,
    /// How many descriptors (copies of the memfd) go with the bad request.
    fds: usize,
    /// Answered with a non-zero status before the close. Only `vhost` itself
    /// refuses 33 descriptors, closing without an answer.
    nack: bool,
}

fn run_case(sock: &str, mem: &std::fs::File, c: &Case) {
    let mut w = connect_wire(sock);
    let offered = w.open().expect("vhost-user opening");
    assert!(
        offered & VERSION_1 != 0,
        "{}: VERSION_1 not offered",
        c.name
    );
    if c.req != SET_FEATURES {
        accepted(
            &mut w,
            "SET_FEATURES",
            SET_FEATURES,
            &u64_body(VERSION_1 | F_PROTOCOL_FEATURES),
            &[],
        );
    }
    if c.with_ring {
        accepted(
            &mut w,
            "SET_MEM_TABLE (good)",
            SET_MEM_TABLE,
            &mem_table_body(&[(0, MEM, UADDR, 0)]),
            &[mem.as_fd()],
        );
        accepted(
            &mut w,
            "SET_VRING_NUM (good)",
            SET_VRING_NUM,
            &vring_state(0, 64),
            &[],
        );
        // The same ring inside the memory is accepted.
        accepted(
            &mut w,
            "SET_VRING_ADDR (good)",
            SET_VRING_ADDR,
            &vring_addr_body(0, UADDR, UADDR + 0x2000, UADDR + 0x1000),
            &[],
        );
    }
    let fds: Vec<BorrowedFd<'_>> = (0..c.fds).map(|_| mem.as_fd()).collect();
    let r = w.request(c.req, &c.body, &fds, true).expect(c.name);
    eprintln!("{}: {r:?}", c.name);
    if c.nack {
        assert!(
            r.u64().is_some_and(|v| v != 0),
            "{}: not refused with a non-zero status: {r:?}",
            c.name
        );
    } else {
        assert_eq!(r, Reply::Closed, "{}: answered", c.name);
    }
    assert!(
        w.closed_within(Duration::from_secs(10)).expect("read"),
        "{}: refused, but the connection stays open",
        c.name
    );
}

fn refused(st: &serde_json::Value) -> u64 {
    n(st, "/clients/bad/detail/refused_requests")
}

#[test]
fn bad_vhost_user_requests_are_refused_counted_and_the_switch_keeps_forwarding() {
    let _m = serial();
    let s = Scratch::new("vhost-control");
    let (bad_s, g1_s, g2_s, ctl) = (
        s.path("bad.sock"),
        s.path("g1.sock"),
        s.path("g2.sock"),
        s.path("ctl.sock"),
    );
    let (bad_c, g1_c, g2_c) = (
        format!("bad={bad_s}"),
        format!("g1={g1_s},mac={G1}"),
        format!("g2={g2_s},mac={G2}"),
    );
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &bad_c,
            "--client",
            &g1_c,
            "--client",
            &g2_c,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    for p in [&bad_s, &g1_s, &g2_s, &ctl] {
        wait_for_path(p, Duration::from_secs(10));
    }

    // g2 only receives; g1 starts once g2 is up, so no frame of g1 meets a port
    // that is down.
    let mut g2 = Proc::twin(
        "gen-g2",
        &[
            "gen",
            "--socket",
            &g2_s,
            "--size",
            "64",
            "--rate",
            "0",
            "--duration",
            "30",
            "--src-mac",
            G2,
            "--poll",
            "event",
            "--id",
            "2",
        ],
    );
    wait_status(&ctl, Duration::from_secs(10), "g2 connected", |st| {
        n(st, "/clients/g2/connects") == 1
    });
    let count = FRAMES.to_string();
    let mut g1 = gen_exact(&g1_s, G1, G2, "1", &count, "2000", "20", false);
    wait_status(&ctl, Duration::from_secs(10), "g1 forwarding", |st| {
        n(st, "/clients/g2/tx_packets") > 0
    });

    let mem = memfd(MEM);
    let offered = {
        let mut w = connect_wire(&bad_s);
        let f = w.open().expect("opening");
        drop(w);
        f
    };
    let unoffered = (0..64)
        .map(|b| 1u64 << b)
        .find(|bit| offered & bit == 0)
        .expect("a feature bit the port does not offer");
    // 33 regions of 4 KiB, side by side in the memfd: one more than MAX_MEM_SLOTS.
    let many: Vec<_> = (0..33u64)
        .map(|i| (i * 4096, 4096, UADDR + i * 4096, i * 4096))
        .collect();
    let cases = [
        Case {
            name: "overlapping regions",
            with_ring: false,
            req: SET_MEM_TABLE,
            body: mem_table_body(&[(0, MEM, UADDR, 0), (MEM / 2, MEM / 2, UADDR + MEM, 0)]),
            fds: 2,
            nack: true,
        },
        Case {
            name: "zero-sized region",
            with_ring: false,
            req: SET_MEM_TABLE,
            body: mem_table_body(&[(0, 0, UADDR, 0)]),
            fds: 1,
            nack: true,
        },
        Case {
            name: "offset beyond the file",
            with_ring: false,
            req: SET_MEM_TABLE,
            body: mem_table_body(&[(0, 4096, UADDR, MEM)]),
            fds: 1,
            nack: true,
        },
        Case {
            name: "33 regions",
            with_ring: false,
            req: SET_MEM_TABLE,
            body: mem_table_body(&many),
            fds: 33,
            nack: false,
        },
        Case {
            name: "ring outside the memory",
            with_ring: true,
            req: SET_VRING_ADDR,
            body: vring_addr_body(0, UADDR + MEM, UADDR + 0x2000, UADDR + 0x1000),
            fds: 0,
            nack: true,
        },
        Case {
            name: "ring size 0",
            with_ring: false,
            req: SET_VRING_NUM,
            body: vring_state(0, 0),
            fds: 0,
            nack: true,
        },
        Case {
            name: "ring size not a power of two",
            with_ring: false,
            req: SET_VRING_NUM,
            body: vring_state(0, 100),
            fds: 0,
            nack: true,
        },
        Case {
            name: "ring size above the maximum (32768)",
            with_ring: false,
            req: SET_VRING_NUM,
            body: vring_state(0, 65536),
            fds: 0,
            nack: true,
        },
        Case {
            name: "a feature not offered",
            with_ring: false,
            req: SET_FEATURES,
            body: u64_body(VERSION_1 | F_PROTOCOL_FEATURES | unoffered),
            fds: 0,
            nack: true,
        },
    ];
    assert_eq!(
        refused(&ctl_status(&ctl)),
        0,
        "refusals before the first case"
    );
    for (i, c) in cases.iter().enumerate() {
        run_case(&bad_s, &mem, c);
        let want = i as u64 + 1;
        wait_status(&ctl, Duration::from_secs(10), c.name, |st| {
            refused(st) >= want
        });
        let st = ctl_status(&ctl);
        assert_eq!(refused(&st), want, "{}: counted more than once", c.name);
        assert!(sw.running(), "the switch died after: {}", c.name);
    }
    let during = n(&ctl_status(&ctl), "/clients/g2/tx_packets");
    eprintln!("g2 had received {during} of {FRAMES} frames when the last case ended");

    // The port still serves a well-behaved client.
    let good = connect_raw(&bad_s, 64, 1 << 20);
    wait_status(
        &ctl,
        Duration::from_secs(10),
        "the good client ready",
        |st| n(st, "/clients/bad/connects") == 1,
    );
    assert!(good.is_connected());

    let g1_r = g1.report(Duration::from_secs(30));
    // Every frame g1 sent has reached g2 (or been counted somewhere).
    wait_status(
        &ctl,
        Duration::from_secs(10),
        "g1's frames forwarded",
        |st| {
            n(st, "/clients/g1/rx_packets") == n(&g1_r, "/tx_packets")
                && n(st, "/clients/g2/tx_packets") + drops(st, "/drops") == n(&g1_r, "/tx_packets")
        },
    );
    drop(good);
    let g2_r = g2.stop_report();
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\ng1 {g1_r}\ng2 {g2_r}");

    assert_eq!(n(&g1_r, "/tx_packets"), FRAMES, "g1 sent them all");
    assert_eq!(n(&sw_r, "/clients/g1/rx_packets"), FRAMES);
    assert_eq!(n(&sw_r, "/clients/g2/tx_packets"), FRAMES);
    assert_eq!(n(&g2_r, "/rx_packets"), FRAMES, "g2 received them all");
    assert_eq!(n(&g2_r, "/rx_foreign"), FRAMES, "all of them g1's");
    assert_eq!(drops(&sw_r, "/drops"), 0, "a frame was dropped");
    assert_eq!(n(&sw_r, "/clients/bad/detail/refused_requests"), 9);
    assert_eq!(n(&sw_r, "/clients/g1/detail/refused_requests"), 0);
    assert_eq!(n(&sw_r, "/clients/g2/detail/refused_requests"), 0);
    assert_eq!(n(&sw_r, "/clients/bad/rx_packets"), 0);
    assert_eq!(n(&sw_r, "/clients/bad/tx_packets"), 0);
}
