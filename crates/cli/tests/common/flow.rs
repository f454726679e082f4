//! Traffic through uplink u0's driver domain, for the tests that kill, fault or
//! restart domains while a generator on client port c1 sends through u0 to a
//! reflecting NIC (`e2e_domain`, `e2e_domain_faults`, `e2e_supervision`).

use std::time::Duration;

use serde_json::Value;

use super::{driver_pid, n, switch_drops_but_ring_full, wait_status};

/// Frames that must cross a domain each way before it counts as carrying traffic:
/// 50 ms of the generator's 10 000 frames per second.
pub const FLOW: u64 = 500;

/// Waits until frames flow through driver domain `pid` (the one connected in
/// `base`): since `base`, with `pid` still the uplink's domain and no outage (no
/// disconnect, no new connection), `FLOW` more frames went to the NIC and came
/// back from it to c1. Fails at once on an outage, after 20 s without the flow.
pub fn wait_flow(ctl: &str, base: &Value, pid: u64, what: &str) -> Value {
    let (d0, c0) = (
        n(base, "/uplinks/u0/disconnects"),
        n(base, "/uplinks/u0/connects"),
    );
    let (tx, rx, back) = (
        n(base, "/uplinks/u0/tx_packets"),
        n(base, "/uplinks/u0/rx_packets"),
        n(base, "/clients/c1/tx_packets"),
    );
    wait_status(ctl, Duration::from_secs(20), what, |s| {
        assert_eq!(
            (
                n(s, "/uplinks/u0/disconnects"),
                n(s, "/uplinks/u0/connects")
            ),
            (d0, c0),
            "{what}: an outage: {s}"
        );
        driver_pid(s) == Some(pid)
            && n(s, "/uplinks/u0/tx_packets") >= tx + FLOW
            && n(s, "/uplinks/u0/rx_packets") >= rx + FLOW
            && n(s, "/clients/c1/tx_packets") >= back + FLOW
    })
}

/// c1's frames the switch dropped for reasons of its own. While the uplink is
/// down, c1's frames to it are counted here (as the ingress port: `no_destination`
/// or `uplink_down`), and nothing else is dropped: an outage's `frames_dropped` is
/// the change of this sum.
pub fn c1_drops(st: &Value) -> u64 {
    switch_drops_but_ring_full()
        .iter()
        .map(|r| n(st, &format!("/clients/c1/drops/{r}")))
        .sum()
}

/// Between two statuses, c1's frames: each one the switch took went to the
/// uplink, was refused there (full ring, failed link, too big) or was dropped by
/// the switch.
pub fn assert_c1_accounted(before: &Value, after: &Value, tag: &str) {
    let d = |p: &str| n(after, p) - n(before, p);
    assert_eq!(
        d("/clients/c1/rx_packets"),
        d("/uplinks/u0/tx_packets")
            + d("/uplinks/u0/drops/uplink_ring_full")
            + d("/uplinks/u0/drops/uplink_down")
            + d("/uplinks/u0/drops/too_big_for_uplink")
            + c1_drops(after)
            - c1_drops(before),
        "{tag}: c1's frames:\n{before}\n{after}"
    );
}

/// Sends SIGKILL to `pid`: a driver domain (its reaper) the switch started, whose
/// pid the switch's status reported. Never any other process.
pub fn kill9(pid: u64) {
    if let Some(p) = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}
