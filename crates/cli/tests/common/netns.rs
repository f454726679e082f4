//! Network namespaces a test creates (and deletes), and `ip` run in them.

use std::process::Command;
use std::time::Duration;

use super::{wait_for_path, Proc, Scratch};

/// Runs `ip ARGS`; panics with its error output if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace this test created; deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("twt-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    /// Runs `cmd` in the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// A counter of `dev` (/sys/class/net/DEV/statistics/NAME).
    pub fn stat(&self, dev: &str, name: &str) -> u64 {
        let out = self
            .command("cat")
            .arg(format!("/sys/class/net/{dev}/statistics/{name}"))
            .output()
            .expect("read a counter");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no counter {name} of {dev} in {}", self.0))
    }

    /// Polls counter `name` of `dev` until it passes `above`; returns it, or
    /// fails after `timeout` naming `what`.
    pub fn wait_stat_above(&self, dev: &str, name: &str, above: u64, what: &str) -> u64 {
        let timeout = Duration::from_secs(5);
        let start = std::time::Instant::now();
        loop {
            let v = self.stat(dev, name);
            if v > above {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "not {what} within {timeout:?}: {name} of {dev} is {v}, not above {above}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mac(&self, dev: &str) -> String {
        let out = self
            .command("cat")
            .arg(format!("/sys/class/net/{dev}/address"))
            .output()
            .expect("read a MAC address");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Netns {
    /// `ping` in the namespace: `count` echo requests to `ip`, 10 ms apart. Nobody
    /// need answer (a generated client does not): the frames it sent are counted
    /// by the kernel either way.
    pub fn ping(&self, ip: &str, count: u32) {
        let _ = self
            .command("ping")
            .args(["-q", "-c", &count.to_string(), "-i", "0.01", "-W", "1", ip])
            .output()
            .expect("run ping");
    }

    /// `twin switch` in the namespace with client c1 (MAC `mac`) and uplink u0 =
    /// `uplink` (`tap:DEV`, `packet:DEV`, ...), event-driven, faults allowed;
    /// returns it with c1's socket and the control socket, both there.
    pub fn switch(&self, s: &Scratch, uplink: &str, mac: &str) -> (Proc, String, String) {
        let (c1_s, ctl) = (s.path("c1.sock"), s.path("ctl.sock"));
        let mut cmd = self.command(env!("CARGO_BIN_EXE_twin"));
        cmd.args([
            "switch",
            "--client",
            &format!("c1={c1_s},mac={mac}"),
            "--uplink",
            &format!("u0={uplink}"),
            "--poll",
            "event",
            "--control",
            &ctl,
            "--fault-injection",
        ])
        .env("TWIN_LOG", "info");
        let sw = Proc::command("switch", cmd);
        wait_for_path(&c1_s, Duration::from_secs(10));
        wait_for_path(&ctl, Duration::from_secs(10));
        (sw, c1_s, ctl)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Turns IPv6 off in `ns` (before its interfaces exist): the kernel then sends
/// nothing of its own on them, and every frame a client gets is the other
/// client's.
pub fn quiet(ns: &Netns) {
    let out = ns
        .command("sh")
        .args([
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
             echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ])
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{out:?}");
}
