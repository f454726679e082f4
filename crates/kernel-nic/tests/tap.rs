//! A TAP device against the real kernel, in a network namespace the test creates:
//! the switch's side opens it, a queue exchanges frames with the kernel's IPv4
//! stack in the namespace (ARP and ICMP echo), every frame is checked, and the
//! kernel's own interface counters agree exactly with what the queue counted. Then
//! the link goes down (writes are dropped as `kernel_link_down`), comes back, and the
//! device is deleted under the queue (`Gone`).
//!
//! Needs root (CAP_NET_ADMIN) and `ip` (iproute2; scripts/setup-host.sh installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use kernel_nic::{link_state, IfName, KernelDrop, Recv, Send, Tap, TapIoError, TapQueue};

const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x77, 0x02];
const OUR_IP: [u8; 4] = [10, 77, 0, 2];
const THEIR_IP: [u8; 4] = [10, 77, 0, 1];

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that this test created; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("twk-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    /// A counter of `dev` in the namespace (/sys/class/net/DEV/statistics/NAME).
    fn stat(&self, dev: &str, name: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "cat"])
            .arg(format!("/sys/class/net/{dev}/statistics/{name}"))
            .output()
            .expect("read a counter");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no counter {name} of {dev} in {}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ip_out(&["-n", &ns.0, "-o", "link", "show", dev]);
    let hex = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("a MAC address");
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(hex.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("hex");
    }
    mac
}

fn arp_request() -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&OUR_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&THEIR_IP);
    f
}

fn ip_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request from us to them, with `seq` and a 32-byte payload.
fn echo_request(their_mac: [u8; 6], seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..32u8).map(|i| i ^ seq as u8));
    let c = ip_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
    iph[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    iph.extend_from_slice(&OUR_IP);
    iph.extend_from_slice(&THEIR_IP);
    let c = ip_checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&their_mac);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&icmp);
    f
}

/// Reads frames for up to 3 s until `want` accepts one; returns it and how many
/// frames were read in all (the kernel also sends frames of its own, e.g. IPv6
/// router solicitations, which `want` skips).
fn read_until(q: &mut TapQueue, want: impl Fn(&[u8]) -> bool) -> (Vec<u8>, u64) {
    let mut buf = vec![0u8; 2048];
    let mut read = 0;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        match q.recv(&mut buf).expect("recv") {
            Recv::Frame(n) => {
                read += 1;
                if want(&buf[..n]) {
                    return (buf[..n].to_vec(), read);
                }
            }
            Recv::Empty => std::thread::sleep(Duration::from_millis(5)),
            Recv::Dropped(d) => panic!("the kernel handed over a frame dropped as {d:?}"),
        }
    }
    panic!("no expected frame within 3 s ({read} others read)");
}

/// Reads whatever is still queued; returns how many frames.
fn drain(q: &mut TapQueue) -> u64 {
    let mut buf = vec![0u8; 2048];
    let mut n = 0;
    while let Recv::Frame(_) = q.recv(&mut buf).expect("recv") {
        n += 1;
    }
    n
}

#[test]
fn a_tap_carries_arp_and_ping_to_the_kernel_and_its_counters_agree() {
    let ns = Netns::new("tap");
    let name: IfName = format!("twk{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open the TAP device (root needed)");
    assert_eq!(tap.name(), &name);
    let dev = name.as_str().to_string();
    // In the switch's namespace while it is not moved: it exists, down.
    let s = link_state(&name).unwrap().expect("the device exists");
    assert!(!s.up, "{s:?}");
    // The device moves to the test's namespace; the descriptor stays attached.
    ip(&["link", "set", &dev, "netns", &ns.0]);
    assert_eq!(link_state(&name).unwrap(), None, "moved away");
    ip(&["-n", &ns.0, "addr", "add", "10.77.0.1/24", "dev", &dev]);
    ip(&["-n", &ns.0, "link", "set", &dev, "up"]);
    let their_mac = mac_of(&ns, &dev);
    let mut q = TapQueue::from_fd(tap.into_fd());
    // Frames the kernel sent when the link came up (IPv6 router solicitations).
    let mut read = drain(&mut q);
    let mut sent = 0u64;

    // ARP: our request, the kernel's reply to us with its address.
    assert_eq!(q.send(&arp_request()).unwrap(), Send::Sent);
    sent += 1;
    let (reply, r) = read_until(&mut q, |f| f.len() >= 42 && f[12..14] == [0x08, 0x06]);
    read += r;
    assert_eq!(&reply[0..6], &OUR_MAC, "to us");
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..28], &their_mac, "with the device's MAC");
    assert_eq!(&reply[28..32], &THEIR_IP);

    // Ten echo requests, ten replies with the same sequence number and payload.
    for seq in 1..=10u16 {
        assert_eq!(q.send(&echo_request(their_mac, seq)).unwrap(), Send::Sent);
        sent += 1;
        let (rep, r) = read_until(&mut q, |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 0
        });
        read += r;
        assert_eq!(&rep[0..6], &OUR_MAC);
        assert_eq!(u16::from_be_bytes([rep[40], rep[41]]), seq, "in order");
        let payload: Vec<u8> = (0..32u8).map(|i| i ^ seq as u8).collect();
        assert_eq!(&rep[42..74], payload.as_slice(), "the payload came back");
    }
    std::thread::sleep(Duration::from_millis(100));
    read += drain(&mut q);
    // The kernel's counters of the device: what we wrote is its rx, what we read
    // its tx, exactly.
    assert_eq!(ns.stat(&dev, "rx_packets"), sent, "kernel rx = our sends");
    assert_eq!(ns.stat(&dev, "tx_packets"), read, "kernel tx = our reads");
    assert_eq!(ns.stat(&dev, "rx_dropped"), 0);

    // Link down: the kernel refuses what we write, counted as link down.
    ip(&["-n", &ns.0, "link", "set", &dev, "down"]);
    assert_eq!(
        q.send(&arp_request()).unwrap(),
        Send::Dropped(KernelDrop::LinkDown)
    );
    // Back up: frames pass again.
    ip(&["-n", &ns.0, "link", "set", &dev, "up"]);
    assert_eq!(q.send(&arp_request()).unwrap(), Send::Sent);
    let _ = read_until(&mut q, |f| f.len() >= 42 && f[12..14] == [0x08, 0x06]);

    // A frame shorter than an Ethernet header is refused before the kernel sees it.
    assert_eq!(
        q.send(&[0u8; 13]).unwrap(),
        Send::Dropped(KernelDrop::TooShort)
    );

    // Deleted under the queue: the queue says so.
    ip(&["-n", &ns.0, "link", "del", &dev]);
    let mut buf = [0u8; 2048];
    assert!(matches!(q.recv(&mut buf), Err(TapIoError::Gone)));
    assert!(matches!(q.send(&arp_request()), Err(TapIoError::Gone)));
}

#[test]
fn a_name_of_another_kind_of_interface_is_refused() {
    let lo: IfName = "lo".parse().unwrap();
    let e = Tap::open(&lo).expect_err("lo is not a TAP device");
    assert!(matches!(e, kernel_nic::TapError::Attach { .. }), "{e:?}");
}

#[test]
fn a_frame_longer_than_the_buffer_is_dropped_not_cut() {
    let ns = Netns::new("long");
    let name: IfName = format!("twl{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open the TAP device");
    let dev = name.as_str().to_string();
    ip(&["link", "set", &dev, "netns", &ns.0]);
    ip(&["-n", &ns.0, "addr", "add", "10.77.0.1/24", "dev", &dev]);
    ip(&["-n", &ns.0, "link", "set", &dev, "up"]);
    let their_mac = mac_of(&ns, &dev);
    let mut q = TapQueue::from_fd(tap.into_fd());
    drain(&mut q);
    assert_eq!(q.send(&arp_request()).unwrap(), Send::Sent);
    let _ = read_until(&mut q, |f| f.len() >= 42 && f[12..14] == [0x08, 0x06]);
    // The echo reply is 74 bytes; a 60-byte buffer cannot hold it.
    assert_eq!(q.send(&echo_request(their_mac, 1)).unwrap(), Send::Sent);
    let mut small = [0u8; 60];
    let end = Instant::now() + Duration::from_secs(3);
    let got = loop {
        assert!(Instant::now() < end, "no reply within 3 s");
        match q.recv(&mut small).unwrap() {
            Recv::Empty => std::thread::sleep(Duration::from_millis(5)),
            other => break other,
        }
    };
    assert_eq!(got, Recv::Dropped(KernelDrop::TooLong));
}
