//! Attack: one client asks the switch to map more memory than it can spare.
//!
//! A memory table of six sparse regions totalling 128 TiB (one sparse memfd,
//! ftruncated to 128 TiB) used to be mapped, leaving no address space for the next
//! client. The real `twin switch` must refuse it (the request fails, the attacker
//! is dropped), its address space (VmSize) must not grow, and honest clients must
//! still attach and forward. A second test checks the per-switch budget: a client
//! that would exceed what is left is refused until another client releases its
//! share by disconnecting.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use driver_host::raw_frontend::{RawFrontend, VhostUserMemoryRegionInfo};
use serde_json::Value;

const C1_S: &str = "02:00:00:00:00:01";
const C2_S: &str = "02:00:00:00:00:02";
const OUTSIDE_S: &str = "02:00:00:00:00:fe";
const QSZ: u16 = 64;
const DEADLINE: Duration = Duration::from_secs(15);
const TIB: u64 = 1 << 40;
const MIB: u64 = 1 << 20;

struct Setup {
    _s: Scratch,
    nic: Proc,
    sw: Proc,
    c1: String,
    c2: String,
    ctl: String,
}

fn setup(tag: &str, extra: &[&str]) -> Setup {
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
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    let sw = Proc::twin("switch", &args);
    wait_for_path(&c1, Duration::from_secs(10));
    wait_for_path(&c2, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    let mut t = Setup {
        _s: s,
        nic,
        sw,
        c1,
        c2,
        ctl,
    };
    t.wait("the uplink up", |s| n(s, "/uplinks/u0/connects") >= 1);
    t
}

impl Setup {
    fn assert_alive(&mut self, when: &str) {
        if !self.sw.running() {
            let (status, out) = self.sw.wait_exit(Duration::from_secs(5));
            panic!("the switch died {when}: {status}; it printed:\n{out}");
        }
    }

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

    /// Connects a client with `mem` bytes of memory to `sock`, retrying while the
    /// socket is not yet served; returns the connect error if the switch refuses.
    fn try_connect(&mut self, sock: &str, mem: u64) -> Result<RawFrontend, String> {
        let start = Instant::now();
        loop {
            match RawFrontend::connect(Path::new(sock), QSZ, mem) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    let why = format!("{e}: {:?}", std::error::Error::source(&e));
                    // Refused memory table: the answer we may be waiting for.
                    if why.contains("SET_MEM_TABLE") {
                        return Err(why);
                    }
                    self.assert_alive("while a client connects");
                    assert!(start.elapsed() < DEADLINE, "cannot connect: {why}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Sends `n` good 60-byte frames from `src` and waits until all are consumed.
    fn send(&mut self, f: &mut RawFrontend, src: [u8; 6], n: u16) {
        let mut fr = vec![0u8; 12 + 60];
        fr[12..18].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
        fr[18..24].copy_from_slice(&src);
        fr[24] = 0x88;
        fr[25] = 0xb5;
        for i in 0..n {
            let a = f.buffers() + 2048 * u64::from(i);
            f.write(a, &fr).expect("write frame");
            f.set_desc(1, i, a, fr.len() as u32, 0, 0).expect("desc");
            f.push_avail(1, i).expect("avail");
        }
        f.publish(1).expect("publish");
        let want = f.avail_idx(1);
        let start = Instant::now();
        while f.used_idx(1).expect("used idx") != want {
            self.assert_alive("while it consumed good frames");
            assert!(start.elapsed() < DEADLINE, "frames not consumed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn vm_size_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmSize in /proc/PID/status")
}

#[test]
fn a_memory_table_of_128_tib_is_refused_and_others_still_attach() {
    let _m = serial();
    let mut t = setup("attack-size", &[]);
    let c1 = t.c1.clone();
    let mut atk = t.try_connect(&c1, MIB).expect("the attacker's first table");
    t.wait("c1 connected", |s| n(s, "/clients/c1/connects") == 1);
    let base_kib = vm_size_kib(t.sw.pid());

    // One sparse memfd of 128 TiB, offered as six regions that add up to it.
    let fd = rustix::fs::memfd_create("twin-attack-sparse", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd");
    rustix::fs::ftruncate(&fd, 128 * TIB).expect("a sparse 128 TiB memfd");
    let part = (128 * TIB / 6) & !(2 * MIB - 1);
    let regions: Vec<_> = (0..6u64)
        .map(|i| VhostUserMemoryRegionInfo {
            guest_phys_addr: i * 32 * TIB,
            memory_size: if i == 5 { 128 * TIB - 5 * part } else { part },
            userspace_addr: 0x1000_0000_0000 + i * 32 * TIB,
            mmap_offset: i * part,
            mmap_handle: fd.as_raw_fd(),
        })
        .collect();
    assert_eq!(
        regions.iter().map(|r| r.memory_size).sum::<u64>(),
        128 * TIB
    );
    let refused = atk.set_mem_table(&regions);
    assert!(
        refused.is_err(),
        "the switch accepted a 128 TiB memory table"
    );

    // The switch drops the attacker, stays up, and maps nothing more.
    let start = Instant::now();
    while atk.is_connected() {
        t.assert_alive("after the oversized table");
        assert!(start.elapsed() < DEADLINE, "the attacker was not dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = t.wait("the attacker's memory released", |s| {
        n(s, "/clients/c1/disconnects") == 1 && n(s, "/client_memory") == 0
    });
    assert_eq!(n(&s, "/client_memory_limit"), 256 << 30, "{s}");
    let now_kib = vm_size_kib(t.sw.pid());
    assert!(
        now_kib < base_kib + (1 << 20),
        "the switch's address space grew from {base_kib} KiB to {now_kib} KiB"
    );
    drop(atk);

    // An honest generator on c2 attaches and forwards exactly.
    let mut g = gen_exact(&t.c2, C2_S, OUTSIDE_S, "2", "500", "2000", "5", false);
    let gr = g.report(Duration::from_secs(30));
    assert_eq!(n(&gr, "/tx_packets"), 500, "gen: {gr}");
    // And a client on the attacker's socket attaches too.
    let mut c = t.try_connect(&c1, MIB).expect("an honest client on c1");
    t.wait("c1 connected again", |s| n(s, "/clients/c1/connects") == 2);
    t.send(&mut c, [0x02, 0, 0, 0, 0, 0x01], 7);
    drop(c);

    t.assert_alive("at the end");
    let sw_r = t.sw.stop_report();
    let nic_r = t.nic.stop_report();
    eprintln!("switch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/clients/c2/rx_packets"), 500);
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 7);
    assert_eq!(n(&nic_r, "/rx_packets"), 507);
}

#[test]
fn the_switch_budget_is_shared_and_released_on_disconnect() {
    let _m = serial();
    let mut t = setup(
        "attack-budget",
        &[
            "--max-client-memory",
            "2M",
            "--max-total-client-memory",
            "3M",
        ],
    );
    let (c1, c2) = (t.c1.clone(), t.c2.clone());
    // Per client: 3 MiB is over the 2 MiB cap.
    let e = t
        .try_connect(&c1, 3 * MIB)
        .expect_err("a 3 MiB table accepted");
    assert!(e.contains("SET_MEM_TABLE"), "{e}");
    // 2 MiB fits, and takes 2 of the switch's 3 MiB.
    let mut a = t.try_connect(&c1, 2 * MIB).expect("a 2 MiB client on c1");
    t.wait("c1's 2 MiB reserved", |s| n(s, "/client_memory") == 2 * MIB);
    // Another 2 MiB on c2 does not fit what is left.
    let e = t
        .try_connect(&c2, 2 * MIB)
        .expect_err("the budget was exceeded");
    assert!(e.contains("SET_MEM_TABLE"), "{e}");
    t.send(&mut a, [0x02, 0, 0, 0, 0, 0x01], 4);
    // When c1's client leaves, its share is released and c2's client fits.
    drop(a);
    t.wait("c1's share released", |s| n(s, "/client_memory") == 0);
    let mut b = t.try_connect(&c2, 2 * MIB).expect("c2 after c1 left");
    t.wait("c2 connected", |s| {
        n(s, "/clients/c2/connects") == 1 && n(s, "/client_memory") == 2 * MIB
    });
    t.send(&mut b, [0x02, 0, 0, 0, 0, 0x02], 6);
    drop(b);
    t.wait("c2's share released", |s| n(s, "/client_memory") == 0);
    let sw_r = t.sw.stop_report();
    let nic_r = t.nic.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 4);
    assert_eq!(n(&sw_r, "/clients/c2/rx_packets"), 6);
    assert_eq!(n(&nic_r, "/rx_packets"), 10);
}
