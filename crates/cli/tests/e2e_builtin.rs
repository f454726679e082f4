//! End to end on the built-in parts: `twin gen` clients, `twin switch` with an inline
//! uplink, `twin nic`. Counters must agree between every pair of peers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";
const OUTSIDE: &str = "02:00:00:00:00:fe";

fn gen(sock: &str, src: &str, dst: &str, secs: &str, rate: &str) -> Proc {
    gen_event(sock, src, dst, secs, rate)
}

/// An event-driven `twin nic` on `sock`.
fn nic(sock: &str, mode: &str) -> Proc {
    Proc::twin(
        "nic",
        &["nic", "--socket", sock, "--mode", mode, "--poll", "event"],
    )
}

/// An event-driven switch with one uplink `u0` to `nic_sock` and a client port per
/// `(name, mac)`, each on `<name>.sock` in `s`, and its control socket `ctl.sock`;
/// returns the switch and the client sockets once they exist.
fn switch(s: &Scratch, nic_sock: &str, clients: &[(&str, Option<&str>)]) -> (Proc, Vec<String>) {
    let mut args: Vec<String> = vec!["switch".into()];
    let mut socks = Vec::new();
    for (name, mac) in clients {
        let sock = s.path(&format!("{name}.sock"));
        let spec = match mac {
            Some(m) => format!("{name}={sock},mac={m}"),
            None => format!("{name}={sock}"),
        };
        args.extend(["--client".into(), spec]);
        socks.push(sock);
    }
    args.extend(["--uplink".into(), format!("u0={nic_sock},mode=inline")]);
    args.extend(["--poll".into(), "event".into()]);
    args.extend(["--control".into(), s.path("ctl.sock")]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let sw = Proc::twin("switch", &argv);
    for sock in &socks {
        wait_for_path(sock, Duration::from_secs(10));
    }
    wait_for_path(&s.path("ctl.sock"), Duration::from_secs(10));
    // The NIC is connected before any client sends: no test frame meets a down
    // uplink unless the test takes the NIC away.
    wait(s, "the uplink connected", |st| {
        n(st, "/uplinks/u0/connects") == 1
    });
    (sw, socks)
}

/// Waits until the switch's status satisfies `pred`.
fn wait(s: &Scratch, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_status(&s.path("ctl.sock"), Duration::from_secs(20), what, pred)
}

/// The frames in flight between the switch and an inline uplink's NIC, at most:
/// its transmit queue, what the NIC holds while it reflects (at most a queue), and
/// its receive queue. A NIC that dies loses these.
fn nic_in_flight_max() -> u64 {
    3 * u64::from(driver_host::DriverConfig::default().queue_size)
}

#[test]
fn frames_go_from_client_to_reflecting_nic_and_back() {
    let _m = serial();
    let s = Scratch::new("reflect");
    let nic_s = s.path("nic.sock");
    let mut nic = nic(&nic_s, "reflect");
    let (mut sw, socks) = switch(&s, &nic_s, &[("c1", Some(C1))]);
    let c1_s = socks[0].clone();
    let g = gen(&c1_s, C1, OUTSIDE, "2", "100000").report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");

    let sent = n(&g, "/tx_packets");
    assert!(sent > 10_000, "generator sent only {sent} frames");
    // Every frame came back, or was counted where it was lost (a client whose
    // receive ring is momentarily empty on a loaded machine: `no_buffers`).
    assert_reflected_round_trip(&g, &sw_r, &nic_r);
    assert!(n(&g, "/rx_packets") > sent * 9 / 10);
}

#[test]
fn two_clients_and_a_nic_are_switched_by_learned_address() {
    let _m = serial();
    let s = Scratch::new("learn");
    let nic_s = s.path("nic.sock");
    let mut nic = nic(&nic_s, "sink");
    let (mut sw, socks) = switch(&s, &nic_s, &[("c1", Some(C1)), ("c2", Some(C2))]);
    let (c1_s, c2_s) = (socks[0].clone(), socks[1].clone());
    // c1 announces itself (a broadcast, flooded to c2 and the NIC), then c2 sends to c1.
    let mut g1 = gen(&c1_s, C1, "ff:ff:ff:ff:ff:ff", "3", "1000");
    // c1 is connected, its broadcasts flowing, before c2 sends to it.
    wait(&s, "c1's broadcasts flowing", |st| {
        n(st, "/clients/c1/rx_packets") >= 100
    });
    let g2 = gen(&c2_s, C2, C1, "1", "50000").report(Duration::from_secs(30));
    let g1 = g1.report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("g1 {g1}\ng2 {g2}\nswitch {sw_r}\nnic {nic_r}");

    let (b, u) = (n(&g1, "/tx_packets"), n(&g2, "/tx_packets"));
    assert!(
        b > 100 && u > 10_000,
        "sent {b} broadcasts and {u} unicasts"
    );
    // c1's broadcasts reach the NIC; c2 was connected for part of the time.
    assert_eq!(
        n(&nic_r, "/rx_packets"),
        b,
        "the NIC must see every broadcast and no unicast"
    );
    // c2's unicast frames to c1 are all delivered to c1 and to nobody else.
    assert_eq!(
        n(&g1, "/rx_packets") + n(&sw_r, "/clients/c1/drops/no_buffers"),
        u
    );
    assert_eq!(n(&sw_r, "/clients/c1/tx_packets"), n(&g1, "/rx_packets"));
    // c2 stops reading when its generator ends while c1 still broadcasts: frames put
    // in its receive ring after that are delivered but never read (at most a ring).
    let (to_c2, read_by_c2) = (n(&sw_r, "/clients/c2/tx_packets"), n(&g2, "/rx_packets"));
    assert!(
        read_by_c2 <= to_c2 && to_c2 - read_by_c2 <= 512,
        "{read_by_c2} of {to_c2}"
    );
    assert!(read_by_c2 <= b);
}

#[test]
fn spoofed_source_addresses_are_dropped_and_counted() {
    let _m = serial();
    let s = Scratch::new("spoof");
    let nic_s = s.path("nic.sock");
    let mut nic = nic(&nic_s, "sink");
    let (mut sw, socks) = switch(&s, &nic_s, &[("c1", Some(C1))]);
    let c1_s = socks[0].clone();
    let g = gen(&c1_s, C2, OUTSIDE, "1", "20000").report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    let sent = n(&g, "/tx_packets");
    assert!(sent > 1000);
    assert_eq!(n(&sw_r, "/clients/c1/drops/spoofed_source"), sent);
    assert_eq!(n(&nic_r, "/rx_packets"), 0);
}

#[test]
fn a_client_that_dies_is_cleaned_up_and_can_come_back() {
    let _m = serial();
    let s = Scratch::new("clientgone");
    let nic_s = s.path("nic.sock");
    let mut nic = nic(&nic_s, "reflect");
    let (mut sw, socks) = switch(&s, &nic_s, &[("c1", None)]);
    let c1_s = socks[0].clone();
    let mut first = gen(&c1_s, C1, OUTSIDE, "30", "100000");
    wait(&s, "frames flowing for the first client", |st| {
        n(st, "/clients/c1/tx_packets") >= 10_000
    });
    first.kill9();
    let before = wait(&s, "the dead client noticed", |st| {
        n(st, "/clients/c1/disconnects") == 1
    });
    assert!(sw.running(), "the switch must survive a client crash");
    let again = gen(&c1_s, C1, OUTSIDE, "1", "50000").report(Duration::from_secs(30));
    wait(&s, "the second client's exit noticed", |st| {
        n(st, "/clients/c1/disconnects") == 2
    });
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("again {again}\nswitch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 2);
    assert_eq!(n(&sw_r, "/clients/c1/disconnects"), 2);
    // The second session on its own (the counters below are deltas from the
    // moment the first client was gone): it gets every frame back or the switch
    // counts it, and nothing else is dropped on its port.
    let sent = n(&again, "/tx_packets");
    assert!(sent > 1000);
    assert_eq!(
        n(&sw_r, "/clients/c1/rx_packets") - n(&before, "/clients/c1/rx_packets"),
        sent
    );
    let delta = |p: &str| n(&sw_r, p) - n(&before, p);
    // Only a peer too slow for a moment costs frames: c1 without receive buffers,
    // or the uplink's ring full.
    let slow = delta("/drops/no_buffers") + delta("/drops/uplink_ring_full");
    assert_eq!(
        drops(&sw_r, "/drops") - drops(&before, "/drops"),
        slow,
        "drops other than full rings in the second session: {}",
        sw_r["drops"]
    );
    // The NIC's own drops (none so far in any run) are whole-run counts: they
    // may belong to either session.
    let nic_drops = drops(&nic_r, "/rx_drops") + drops(&nic_r, "/tx_drops");
    let back = n(&again, "/rx_packets") + slow;
    assert!(
        back <= sent && sent <= back + nic_drops,
        "the reconnected client gets its frames back, or they are counted: \
         {back} of {sent} (NIC drops {nic_drops})"
    );
    assert_eq!(n(&again, "/rx_own_swapped"), n(&again, "/rx_packets"));
    assert_eq!(n(&again, "/rx_out_of_order"), 0);
}

#[test]
fn a_nic_that_dies_is_detected_and_reconnected() {
    let _m = serial();
    let s = Scratch::new("nicgone");
    let nic_s = s.path("nic.sock");
    let mut nic1 = nic(&nic_s, "reflect");
    let (mut sw, socks) = switch(&s, &nic_s, &[("c1", Some(C1))]);
    let c1_s = socks[0].clone();
    let mut g = gen(&c1_s, C1, OUTSIDE, "60", "20000");
    // Before: frames go round through the first NIC.
    wait(&s, "frames back through the first NIC", |st| {
        n(st, "/clients/c1/tx_packets") >= 2_000
    });
    nic1.kill9();
    // While away: detected, and every frame sent meanwhile is counted on c1's
    // port: `uplink_down` while OUTSIDE is still learned on the uplink,
    // `no_destination` once it is forgotten and flooding finds no port.
    let away = wait(&s, "the NIC's death detected", |st| {
        n(st, "/uplinks/u0/disconnects") == 1
    });
    let away_drops = drops(&away, "/clients/c1/drops");
    let st = wait(&s, "frames counted while the NIC is away", |st| {
        drops(st, "/clients/c1/drops") >= away_drops + 1_000
    });
    assert_eq!(
        n(&st, "/uplinks/u0/connects"),
        1,
        "no NIC to reconnect to yet"
    );
    let mut nic2 = nic(&nic_s, "reflect");
    // After: reconnected, and frames go round through the new NIC.
    let back = wait(&s, "the new NIC connected", |st| {
        n(st, "/uplinks/u0/connects") == 2
    });
    let back_tx = n(&back, "/clients/c1/tx_packets");
    wait(&s, "frames back through the new NIC", |st| {
        n(st, "/clients/c1/tx_packets") >= back_tx + 2_000
    });
    let g = g.stop_report();
    let sw_r = sw.stop_report();
    let nic2_r = nic2.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic2 {nic2_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), 2);

    let sent = n(&g, "/tx_packets");
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    // Every frame c1 sent went to the uplink or was counted: on c1's port while
    // the NIC was away, on the uplink when its ring was full.
    let c1_drops = &sw_r["clients"]["c1"]["drops"];
    let away_total = n(c1_drops, "/uplink_down") + n(c1_drops, "/no_destination");
    assert!(away_total >= 1_000, "{away_total} counted while away");
    assert_eq!(
        drops(&sw_r, "/clients/c1/drops") - n(c1_drops, "/no_buffers"),
        away_total,
        "c1's drops other than these and no_buffers"
    );
    assert_eq!(
        n(&sw_r, "/uplinks/u0/tx_packets")
            + away_total
            + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent
    );
    // The second NIC got what the switch handed it after the reconnect, and the
    // client everything the switch delivered.
    assert_eq!(n(&g, "/rx_packets"), n(&sw_r, "/clients/c1/tx_packets"));
    assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"));
    assert_eq!(n(&g, "/rx_out_of_order"), 0);
    // Round trip: back, or counted (switch, second NIC), or in flight with the
    // NIC that died (bounded by the rings between them).
    let counted =
        drops(&sw_r, "/drops") + drops(&nic2_r, "/rx_drops") + drops(&nic2_r, "/tx_drops");
    let got = n(&g, "/rx_packets");
    assert!(got + counted <= sent, "more back than sent");
    let lost_with_nic1 = sent - got - counted;
    assert!(
        lost_with_nic1 <= nic_in_flight_max(),
        "{lost_with_nic1} frames lost with the dead NIC"
    );
}
