//! Network namespaces a test creates (and deletes), and `ip` run in them.

use std::process::Command;

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

    pub fn mac(&self, dev: &str) -> String {
        let out = self
            .command("cat")
            .arg(format!("/sys/class/net/{dev}/address"))
            .output()
            .expect("read a MAC address");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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
