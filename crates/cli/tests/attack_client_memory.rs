//! Attack: a client truncates the file of its memory under the switch.
//!
//! The real `twin switch` serves two client ports and an inline uplink to `twin
//! nic` (sink). The test process is the attacker: a raw vhost-user frontend
//! (`driver_host::raw_frontend`) on port c1 whose memory is an *unsealed* memfd.
//! It sends a few good frames, then shrinks the memfd to zero bytes and kicks.
//! Without containment, the switch's next access to that memory is a SIGBUS and
//! the whole switch dies (exit 135). With it, the switch must keep running, fence
//! c1 off (`/clients/c1/detail/memory_faults`) and disconnect the attacker, while
//! an honest `twin gen` on c2 keeps forwarding (exact counts), and a fresh client
//! on c1's socket gets a working port.
//!
//! A client whose memfd is sealed against shrinking (as QEMU seals by default)
//! cannot truncate it at all and is served as usual.

mod common;

use std::time::{Duration, Instant};

use common::*;
use driver_host::raw_frontend::RawFrontend;
use serde_json::Value;

const C1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const C1_S: &str = "02:00:00:00:00:01";
const C2_S: &str = "02:00:00:00:00:02";
const OUTSIDE: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const OUTSIDE_S: &str = "02:00:00:00:00:fe";
const QSZ: u16 = 64;
const HDR: usize = 12;
const TX: u16 = 1;
const DEADLINE: Duration = Duration::from_secs(15);

/// A 12-byte zero virtio-net header + a 60-byte Ethernet frame from C1 to OUTSIDE.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; HDR + 60];
    f[HDR..HDR + 6].copy_from_slice(&OUTSIDE);
    f[HDR + 6..HDR + 12].copy_from_slice(&C1);
    f[HDR + 12] = 0x88;
    f[HDR + 13] = 0xb5;
    f
}

/// The switch, the NIC and the sockets of one test.
struct Setup {
    _s: Scratch,
    nic: Proc,
    sw: Proc,
    c1: String,
    c2: String,
    ctl: String,
}

fn setup(tag: &str) -> Setup {
    let s = Scratch::new(tag);
    let (nic_s, c1, c2, ctl) = (
        s.path("nic.sock"),
        s.path("c1.sock"),
        s.path("c2.sock"),
        s.path("ctl.sock"),
    );
    let nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let c1_spec = format!("c1={c1},mac={C1_S}");
    let c2_spec = format!("c2={c2},mac={C2_S}");
    let up = format!("u0={nic_s},mode=inline");
    let sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1_spec,
            "--client",
            &c2_spec,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&c1, Duration::from_secs(10));
    wait_for_path(&c2, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    let mut st = Setup {
        _s: s,
        nic,
        sw,
        c1,
        c2,
        ctl,
    };
    st.wait("the uplink up", |s| n(s, "/uplinks/u0/connects") >= 1);
    st
}

impl Setup {
    /// Fails with the switch's exit status and output if it is not running.
    fn assert_alive(&mut self, when: &str) {
        if !self.sw.running() {
            let (status, out) = self.sw.wait_exit(Duration::from_secs(5));
            panic!("the switch died {when}: {status} (signal 7 = SIGBUS); it printed:\n{out}");
        }
    }

    /// Polls the switch's status until `pred` holds (the switch must stay up).
    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            self.assert_alive(&format!("while waiting for {what}"));
            let s = ctl_answer(&self.ctl, &["status"]);
            if let Some(v) = s.get("result") {
                if pred(v) {
                    return v.clone();
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "not {what} within {DEADLINE:?}; last status: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&mut self, sealed: bool) -> RawFrontend {
        let c1 = self.c1.clone();
        retry(
            "cannot connect to c1",
            DEADLINE,
            || {
                if sealed {
                    RawFrontend::connect(std::path::Path::new(&c1), QSZ, 1 << 20)
                } else {
                    RawFrontend::connect_unsealed(std::path::Path::new(&c1), QSZ, 1 << 20)
                }
            },
            |_| self.assert_alive("while a client connects"),
        )
    }

    /// Posts `n` good frames on `f`'s TX queue and waits until the switch returned
    /// them all.
    fn send(&mut self, f: &mut RawFrontend, n: u16) {
        let fr = frame();
        for i in 0..n {
            let a = f.buffers() + 2048 * u64::from(i);
            f.write(a, &fr).expect("write frame");
            f.set_desc(TX, i, a, fr.len() as u32, 0, 0).expect("desc");
            f.push_avail(TX, i).expect("avail");
        }
        f.publish(TX).expect("publish");
        let want = f.avail_idx(TX);
        let start = Instant::now();
        while f.used_idx(TX).expect("used idx") != want {
            self.assert_alive("while it consumed good frames");
            assert!(
                start.elapsed() < DEADLINE,
                "the switch did not return the frames"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn vm_size_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn truncated_client_memory_is_fenced_and_the_switch_survives() {
    let _m = serial();
    let mut t = setup("attack-truncate");

    // The attacker attaches with an unsealed memfd and sends 3 good frames.
    let mut atk = t.connect(false);
    t.wait("c1 connected", |s| n(s, "/clients/c1/connects") == 1);
    t.send(&mut atk, 3);

    // It shrinks its memory to nothing and kicks. From here on this process must
    // not touch that memory either (it would fault too).
    rustix::fs::ftruncate(atk.memfd(), 0).expect("ftruncate the memfd");
    atk.kick(TX);
    atk.kick(0);

    let s = t.wait("c1 fenced off after the memory fault", |s| {
        n(s, "/clients/c1/detail/memory_faults") >= 1
    });
    assert_eq!(n(&s, "/clients/c1/detail/memory_faults"), 1, "{s}");
    // ... and the attacker is disconnected.
    let start = Instant::now();
    while atk.is_connected() {
        t.assert_alive("while the attacker was disconnected");
        assert!(
            start.elapsed() < DEADLINE,
            "the attacker was not disconnected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.wait("c1's disconnect seen", |s| {
        n(s, "/clients/c1/disconnects") >= 1
    });
    drop(atk);

    // An honest client on c2 keeps working: exactly 1000 frames reach the NIC.
    let mut g = gen_exact(&t.c2, C2_S, OUTSIDE_S, "2", "1000", "2000", "5", false);
    let gr = g.report(Duration::from_secs(30));
    assert_eq!(n(&gr, "/tx_packets"), 1000, "gen: {gr}");
    t.assert_alive("while the honest client ran");

    // A fresh client on the attacker's socket gets a working port.
    let mut again = t.connect(true);
    t.wait("c1 connected again", |s| n(s, "/clients/c1/connects") == 2);
    t.send(&mut again, 5);
    drop(again);

    t.assert_alive("at the end");
    let sw_r = t.sw.stop_report();
    let nic_r = t.nic.stop_report();
    eprintln!("switch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/clients/c1/detail/memory_faults"), 1);
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 3 + 5);
    assert_eq!(n(&sw_r, "/clients/c2/rx_packets"), 1000);
    assert_eq!(n(&sw_r, "/uplinks/u0/tx_packets"), 3 + 1000 + 5);
    assert_eq!(n(&nic_r, "/rx_packets"), 3 + 1000 + 5);
}

#[test]
fn sealed_client_memory_cannot_be_truncated_and_is_served() {
    let _m = serial();
    let mut t = setup("attack-sealed");
    let mut c = t.connect(true);
    t.wait("c1 connected", |s| n(s, "/clients/c1/connects") == 1);
    // F_SEAL_SHRINK: the kernel refuses the truncation, the switch needs no fence.
    let e = rustix::fs::ftruncate(c.memfd(), 0).expect_err("a sealed memfd shrank");
    assert_eq!(e, rustix::io::Errno::PERM);
    t.send(&mut c, 10);
    assert!(c.is_connected());
    // The switch's mappings of a sealed memfd: VmSize is sane either way.
    assert!(vm_size_kib(t.sw.pid()) < 64 << 20);
    drop(c);
    t.wait("c1 disconnected", |s| n(s, "/clients/c1/disconnects") == 1);
    let sw_r = t.sw.stop_report();
    let nic_r = t.nic.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/detail/memory_faults"), 0);
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 10);
    assert_eq!(n(&nic_r, "/rx_packets"), 10);
}
