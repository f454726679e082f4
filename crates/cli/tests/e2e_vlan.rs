//! VLANs (802.1Q) with real processes.
//!
//! 1. Isolation between access ports: c1 and c2 are access ports of VLAN 10,
//!    c3 of VLAN 20, c4 untagged (native VLAN). Broadcast and unknown unicast
//!    from c1 reach c2, every frame, and never c3 or c4; c3's broadcasts reach
//!    no one (counted as `no_destination` on c3). Exact counts, from the
//!    generators and the switch.
//! 2. Tags through a real kernel: the uplink is `packet:vl0,mode=domain` on a
//!    veth pair in a namespace the test creates. c1 (VLAN 10) and c3 (VLAN 20)
//!    send: `tcpdump` on the kernel's end `vl1` sees every frame of c1 tagged
//!    10 and every frame of c3 tagged 20, 68 bytes (the client's 64 and the
//!    tag; `vl1`'s byte counter agrees), and nothing else. Then `trafgen` on
//!    `vl1` sends frames tagged 10 to c1, tagged 20 to c3, untagged to c1 and
//!    tagged 30 to everyone: c1 and c3 get their VLAN's frames untagged (60
//!    bytes), the untagged ones (native) reach no one (`vlan_not_member` on
//!    the uplink: c1's address is pinned and c1 is not in the native VLAN),
//!    VLAN 30 has no member (`no_destination`). The kernel moves the tag of a
//!    received frame out of it (AF_PACKET reports it beside the frame): the
//!    AF_PACKET driver puts it back, else every tagged frame from the wire
//!    would be native.
//!
//!    The test machines' kernel has no 802.1Q devices (`CONFIG_VLAN_8021Q` is
//!    off), so the kernel's side is `tcpdump` and `trafgen` on the veth, not a
//!    `vl1.10` device.
//!
//! 3. A trunk client, and clients that tag to hop VLANs (`twin gen --vlan`):
//!    t1, added at run time as a trunk of VLANs 10 and 30 (`twin ctl add client
//!    ...,trunk=10;30`); c1 (access 10) sending frames tagged 20 and c4
//!    (untagged) sending frames tagged 10 reach no one, every frame counted as
//!    `vlan_tagged`; c1's untagged frames reach t1 tagged 10 (68 bytes); t1's
//!    frames tagged 10 reach c1 untagged (60 bytes), tagged 30 no one
//!    (`no_destination`), tagged 20 and untagged are refused
//!    (`vlan_not_member`); c2 (access 20) gets nothing throughout.
//!
//! Needs root, `ip` (iproute2), `tcpdump`, `trafgen` (netsniff-ng) and `sh`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";
const C3: &str = "02:00:00:00:00:03";
const C4: &str = "02:00:00:00:00:04";
/// An address nobody has: unknown unicast.
const NOBODY: &str = "02:00:00:00:00:99";

/// A generator on `sock` that only receives (rate 0), as generator `id`, for
/// at most `secs`.
fn receiver(sock: &str, mac: &str, id: &str, secs: &str) -> Proc {
    gen_event_with(sock, mac, NOBODY, secs, "0", &["--id", id])
}

/// A generator on `sock` that sends exactly `count` frames from `src` to `dst`
/// at 2000 a second, as generator `id`; its report.
fn send_exactly(sock: &str, src: &str, dst: &str, id: &str, count: u64) -> Value {
    let c = count.to_string();
    let r = gen_event_with(sock, src, dst, "20", "2000", &["--id", id, "--count", &c])
        .report(Duration::from_secs(40));
    assert_eq!(n(&r, "/tx_packets"), count, "{r}");
    r
}

fn wait_connected(ctl: &str, port: &str, times: u64) {
    let p = format!("/clients/{port}/connects");
    wait_status(
        ctl,
        Duration::from_secs(10),
        &format!("{port} connected"),
        |st| n(st, &p) >= times,
    );
}

#[test]
fn access_ports_of_one_vlan_see_each_other_and_no_other_vlan() {
    let _m = serial();
    let s = Scratch::new("vlan-access");
    let sock = |c: &str| s.path(&format!("{c}.sock"));
    let ctl = s.path("ctl.sock");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={},mac={C1},vlan=10", sock("c1")),
            "--client",
            &format!("c2={},mac={C2},vlan=10", sock("c2")),
            "--client",
            &format!("c3={},mac={C3},vlan=20", sock("c3")),
            "--client",
            &format!("c4={},mac={C4}", sock("c4")),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    let st = ctl_status(&ctl);
    assert_eq!(str_at(&st, "/clients/c1/vlan"), "access 10");
    assert_eq!(str_at(&st, "/clients/c2/vlan"), "access 10");
    assert_eq!(str_at(&st, "/clients/c3/vlan"), "access 20");
    assert_eq!(str_at(&st, "/clients/c4/vlan"), "untagged");

    let mut r2 = receiver(&sock("c2"), C2, "2", "30");
    let mut r4 = receiver(&sock("c4"), C4, "4", "30");
    wait_connected(&ctl, "c2", 1);
    wait_connected(&ctl, "c4", 1);
    // c3 sends broadcasts slowly over the whole test, receiving meanwhile.
    let mut g3 = gen_event_with(
        &sock("c3"),
        C3,
        "ff:ff:ff:ff:ff:ff",
        "5",
        "200",
        &["--id", "3"],
    );
    wait_connected(&ctl, "c3", 1);
    // c1: broadcasts, then unknown unicast.
    let bcast = send_exactly(&sock("c1"), C1, "ff:ff:ff:ff:ff:ff", "1", 3000);
    let unknown = send_exactly(&sock("c1"), C1, NOBODY, "1", 1000);
    let g3 = g3.report(Duration::from_secs(30));
    let sent1 = n(&bcast, "/tx_packets") + n(&unknown, "/tx_packets");
    let sent3 = n(&g3, "/tx_packets");
    assert!(sent3 > 500, "c3 sent {sent3}");
    // Everything in flight has arrived before the receivers stop.
    wait_status(&ctl, Duration::from_secs(10), "c2 got c1's frames", |st| {
        n(st, "/clients/c2/tx_packets") + drops(st, "/clients/c2/drops") >= sent1
    });
    std::thread::sleep(Duration::from_millis(200));
    let r2 = r2.stop_report();
    let r4 = r4.stop_report();
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\nc2 {r2}\nc3 {g3}\nc4 {r4}");

    // c2 got every frame of c1, and nothing else (not c3's).
    assert_eq!(n(&r2, "/rx_packets"), sent1, "c2 received");
    assert_eq!(n(&r2, "/rx_foreign"), sent1);
    assert_eq!(n(&sw_r, "/clients/c2/tx_packets"), sent1);
    // c3 (VLAN 20) and c4 (native) got nothing: not c1's, not each other's.
    assert_eq!(n(&g3, "/rx_packets"), 0, "c3 received");
    assert_eq!(n(&r4, "/rx_packets"), 0, "c4 received");
    assert_eq!(n(&sw_r, "/clients/c3/tx_packets"), 0);
    assert_eq!(n(&sw_r, "/clients/c4/tx_packets"), 0);
    // The switch took every frame; c1's dropped none; c3's had no member of
    // VLAN 20 to go to.
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent1);
    assert_eq!(drops(&sw_r, "/clients/c1/drops"), 0);
    assert_eq!(n(&sw_r, "/clients/c3/rx_packets"), sent3);
    assert_eq!(n(&sw_r, "/clients/c3/drops/no_destination"), sent3);
    assert_eq!(drops(&sw_r, "/clients/c3/drops"), sent3);
    for reason in ["vlan_tagged", "vlan_not_member", "vlan_unsupported"] {
        assert_eq!(n(&sw_r, &format!("/drops/{reason}")), 0, "{reason}");
    }
}

/// `tcpdump` on `dev` in `ns`, printing each frame's link-level header, with
/// its stderr in its output; returns once it listens.
fn tcpdump(ns: &Netns, dev: &str) -> Proc {
    let mut cmd = ns.command("sh");
    cmd.args([
        "-c",
        // A 32 MiB capture buffer holds every frame a test sends even while
        // tcpdump is off its core (the default 2 MiB once lost 37 of 1600
        // under the full test run's load).
        &format!("exec tcpdump -i {dev} -nn -e -l --immediate-mode -B 32768 2>&1"),
    ]);
    let p = Proc::command("tcpdump", cmd);
    p.wait_for_output("listening on", Duration::from_secs(10));
    p
}

/// A `trafgen` packet: `bytes` as its configuration's hex list.
fn trafgen_packet(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("{{ {} }}\n", hex.join(", "))
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// A 64-byte frame from the kernel's side to `dst`, tagged with `vid` when
/// given (60 bytes without the tag).
fn kernel_frame(dst: &str, vid: Option<u16>) -> Vec<u8> {
    let mut f = mac_bytes(dst);
    f.extend(mac_bytes("02:00:00:00:00:77"));
    if let Some(v) = vid {
        f.extend([0x81, 0x00]);
        f.extend(v.to_be_bytes());
    }
    f.extend([0x88, 0xb6]);
    f.resize(if vid.is_some() { 64 } else { 60 }, 0x5a);
    f
}

#[test]
fn frames_leave_tagged_toward_the_kernel_and_its_tagged_frames_come_back_untagged() {
    let _m = serial();
    let s = Scratch::new("vlan-kernel");
    let ns = Netns::new("vlan");
    quiet(&ns);
    ip(&[
        "-n", &ns.0, "link", "add", "vl0", "type", "veth", "peer", "name", "vl1",
    ]);
    ip(&["-n", &ns.0, "link", "set", "vl0", "up"]);
    ip(&["-n", &ns.0, "link", "set", "vl1", "up"]);
    let peer_mac = ns.mac("vl1");

    let (c1_s, c3_s, ctl) = (s.path("c1.sock"), s.path("c3.sock"), s.path("ctl.sock"));
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_twin"));
    cmd.args([
        "switch",
        "--client",
        &format!("c1={c1_s},mac={C1},vlan=10"),
        "--client",
        &format!("c3={c3_s},mac={C3},vlan=20"),
        "--uplink",
        "u0=packet:vl0,mode=domain",
        "--poll",
        "event",
        "--control",
        &ctl,
    ])
    .env("TWIN_LOG", "info");
    let mut sw = Proc::command("switch", cmd);
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_domain(&ctl, 0);
    let st = ctl_status(&ctl);
    assert_eq!(str_at(&st, "/uplinks/u0/vlan"), "all");

    // Out: c1's frames arrive on vl1 tagged 10, c3's tagged 20, nothing else,
    // each 4 bytes longer than its client sent it.
    let dump = tcpdump(&ns, "vl1");
    let (rx0, rx_bytes0) = (ns.stat("vl1", "rx_packets"), ns.stat("vl1", "rx_bytes"));
    let g1 = send_exactly(&c1_s, C1, &peer_mac, "1", 1000);
    let g3 = send_exactly(&c3_s, C3, &peer_mac, "3", 600);
    assert_eq!(n(&g1, "/tx_bytes"), 1000 * 64);
    assert_eq!(n(&g3, "/tx_bytes"), 600 * 64);
    ns.wait_stat_above("vl1", "rx_packets", rx0 + 1599, "1600 frames on vl1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ns.stat("vl1", "rx_packets") - rx0, 1600, "vl1 received");
    assert_eq!(ns.stat("vl1", "rx_bytes") - rx_bytes0, 1600 * 68);
    // tcpdump prints what it saw (and nothing it missed: it counts drops).
    let start = std::time::Instant::now();
    while dump.output().matches(" > ").count() < 1600 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut dump = dump;
    let (_, seen) = dump.stop();
    assert!(seen.contains("\n0 packets dropped by kernel"), "{seen}");
    let frames: Vec<&str> = seen.lines().filter(|l| l.contains(" > ")).collect();
    let count = |needle: &str| frames.iter().filter(|l| l.contains(needle)).count();
    let tagged = |src: &str, vid: u16| {
        count(&format!(
            "{src} > {peer_mac}, ethertype 802.1Q (0x8100), length 68: vlan {vid}, p 0, ethertype Unknown (0x88b5)"
        ))
    };
    assert_eq!(tagged(C1, 10), 1000, "c1's frames tagged 10:\n{seen}");
    assert_eq!(tagged(C3, 20), 600, "c3's frames tagged 20");
    assert_eq!(frames.len(), 1600, "nothing else on vl1");

    // In: the kernel's side sends 10 frames each tagged 10 to c1, tagged 20 to
    // c3, untagged to c1, and tagged 30 to everyone.
    let mut r1 = receiver(&c1_s, C1, "1", "30");
    let mut r3 = receiver(&c3_s, C3, "3", "30");
    wait_connected(&ctl, "c1", 2);
    wait_connected(&ctl, "c3", 2);
    let conf = s.path("trafgen.cfg");
    let packets = [
        kernel_frame(C1, Some(10)),
        kernel_frame(C3, Some(20)),
        kernel_frame(C1, None),
        kernel_frame("ff:ff:ff:ff:ff:ff", Some(30)),
    ];
    std::fs::write(&conf, packets.map(|p| trafgen_packet(&p)).concat()).unwrap();
    let tx0 = ns.stat("vl1", "tx_packets");
    let out = ns
        .command("trafgen")
        .args([
            "--dev", "vl1", "--conf", &conf, "--num", "40", "--cpus", "1",
        ])
        .args(["--gap", "2ms", "--no-sock-mem"])
        .output()
        .expect("run trafgen");
    assert!(out.status.success(), "trafgen: {out:?}");
    assert_eq!(ns.stat("vl1", "tx_packets") - tx0, 40, "vl1 sent");
    wait_status(&ctl, Duration::from_secs(10), "the frames crossed", |st| {
        n(st, "/uplinks/u0/rx_packets") >= 40
    });
    std::thread::sleep(Duration::from_millis(200));
    let r1 = r1.stop_report();
    let r3 = r3.stop_report();
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\nc1 {r1}\nc3 {r3}");
    // Each client got its VLAN's 10 frames, untagged: 60 bytes, not 64.
    assert_eq!(n(&r1, "/rx_packets"), 10, "c1 received");
    assert_eq!(n(&r1, "/rx_bytes"), 10 * 60, "c1's frames are untagged");
    assert_eq!(n(&r3, "/rx_packets"), 10, "c3 received");
    assert_eq!(n(&r3, "/rx_bytes"), 10 * 60, "c3's frames are untagged");
    assert_eq!(n(&sw_r, "/uplinks/u0/rx_packets"), 40);
    assert_eq!(n(&sw_r, "/uplinks/u0/rx_bytes"), 30 * 64 + 10 * 60);
    // The untagged ones are native: c1's address is not in that VLAN. VLAN 30
    // has no member.
    assert_eq!(n(&sw_r, "/uplinks/u0/drops/vlan_not_member"), 10);
    assert_eq!(n(&sw_r, "/uplinks/u0/drops/no_destination"), 10);
    assert_eq!(drops(&sw_r, "/uplinks/u0/drops"), 20);
    // Out, as the switch counted it: tagged, 68 bytes each.
    assert_eq!(n(&sw_r, "/uplinks/u0/tx_packets"), 1600);
    assert_eq!(n(&sw_r, "/uplinks/u0/tx_bytes"), 1600 * 68);
}

/// [`send_exactly`] with frames tagged `vid`.
fn send_tagged(sock: &str, src: &str, dst: &str, id: &str, count: u64, vid: &str) -> Value {
    let c = count.to_string();
    let r = gen_event_with(
        sock,
        src,
        dst,
        "20",
        "2000",
        &["--id", id, "--count", &c, "--vlan", vid],
    )
    .report(Duration::from_secs(40));
    assert_eq!(n(&r, "/tx_packets"), count, "{r}");
    assert_eq!(n(&r, "/tx_bytes"), count * 64, "{r}");
    r
}

#[test]
fn a_trunk_client_gets_its_vlans_tagged_and_no_client_hops_vlans_by_tagging() {
    let _m = serial();
    let s = Scratch::new("vlan-trunk");
    let sock = |c: &str| s.path(&format!("{c}.sock"));
    let ctl = s.path("ctl.sock");
    const T1: &str = "02:00:00:00:00:71";
    const BCAST: &str = "ff:ff:ff:ff:ff:ff";
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={},mac={C1},vlan=10", sock("c1")),
            "--client",
            &format!("c2={},mac={C2},vlan=20", sock("c2")),
            "--client",
            &format!("c4={},mac={C4}", sock("c4")),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    // A trunk added at run time: the spec syntax is the same as --client's.
    ctl_ok(
        &ctl,
        &[
            "add",
            "client",
            &format!("t1={},mac={T1},trunk=10;30", sock("t1")),
        ],
    );
    let (kind, msg) = ctl_err(
        &ctl,
        &["add", "client", &format!("t2={},trunk=10;4095", sock("t2"))],
    );
    assert!(msg.contains("trunk"), "{kind}: {msg}");
    wait_for_path(&sock("t1"), Duration::from_secs(5));
    assert_eq!(str_at(&ctl_status(&ctl), "/clients/t1/vlan"), "trunk 10;30");

    let mut r2 = receiver(&sock("c2"), C2, "2", "60");
    let mut rt = receiver(&sock("t1"), T1, "7", "60");
    wait_connected(&ctl, "c2", 1);
    wait_connected(&ctl, "t1", 1);
    // Hops: c1 (VLAN 10) tags 20, c4 (native) tags 10.
    send_tagged(&sock("c1"), C1, BCAST, "1", 500, "20");
    send_tagged(&sock("c4"), C4, BCAST, "4", 300, "10");
    // c1's own frames, untagged: to t1, tagged 10.
    send_exactly(&sock("c1"), C1, BCAST, "1", 400);
    wait_status(&ctl, Duration::from_secs(10), "t1 got c1's frames", |st| {
        n(st, "/clients/t1/tx_packets") >= 400
    });
    std::thread::sleep(Duration::from_millis(200));
    let rt = rt.stop_report();
    assert_eq!(n(&rt, "/rx_packets"), 400, "t1 received: {rt}");
    assert_eq!(n(&rt, "/rx_bytes"), 400 * 68, "t1's frames are tagged");
    assert_eq!(n(&rt, "/rx_foreign"), 400, "and read as generator frames");

    // t1 sends: tagged 10 (to c1), 30 (no member), 20 and untagged (refused).
    let mut r1 = receiver(&sock("c1"), C1, "1", "60");
    wait_connected(&ctl, "c1", 3);
    send_tagged(&sock("t1"), T1, BCAST, "7", 200, "10");
    send_tagged(&sock("t1"), T1, BCAST, "7", 100, "30");
    send_tagged(&sock("t1"), T1, BCAST, "7", 150, "20");
    send_exactly(&sock("t1"), T1, BCAST, "7", 50);
    wait_status(&ctl, Duration::from_secs(10), "c1 got t1's frames", |st| {
        n(st, "/clients/c1/tx_packets") >= 200
    });
    std::thread::sleep(Duration::from_millis(200));
    let r1 = r1.stop_report();
    let r2 = r2.stop_report();
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\nc1 {r1}\nc2 {r2}\nt1 {rt}");
    assert_eq!(n(&r1, "/rx_packets"), 200, "c1 received");
    assert_eq!(n(&r1, "/rx_bytes"), 200 * 60, "c1's frames are untagged");
    assert_eq!(n(&r2, "/rx_packets"), 0, "c2 (VLAN 20) received");
    assert_eq!(n(&sw_r, "/clients/c2/tx_packets"), 0);
    assert_eq!(n(&sw_r, "/clients/c4/tx_packets"), 0);
    // Every refused frame counted once, under its reason, on its ingress.
    assert_eq!(n(&sw_r, "/clients/c1/drops/vlan_tagged"), 500);
    assert_eq!(drops(&sw_r, "/clients/c1/drops"), 500);
    assert_eq!(n(&sw_r, "/clients/c4/drops/vlan_tagged"), 300);
    assert_eq!(drops(&sw_r, "/clients/c4/drops"), 300);
    assert_eq!(n(&sw_r, "/clients/t1/drops/vlan_not_member"), 200);
    assert_eq!(n(&sw_r, "/clients/t1/drops/no_destination"), 100);
    assert_eq!(drops(&sw_r, "/clients/t1/drops"), 300);
    assert_eq!(n(&sw_r, "/clients/t1/rx_packets"), 500);
    assert_eq!(n(&sw_r, "/clients/t1/tx_bytes"), 400 * 68);
    assert_eq!(n(&sw_r, "/drops/vlan_unsupported"), 0);
}
