//! AF_XDP against the real kernel, through a TAP device this test creates: the
//! redirect program attached in generic mode sends every frame the device
//! receives on queue 0 into a socket, whose space (state, rings, UMEM) is mapped
//! and driven as a driver domain does it: the AF_XDP driver over the direct
//! environment. Receive: frames written into the TAP arrive, in order and
//! intact. Transmit: frames put on the transmit ring and flushed leave the
//! device, in order and intact, as the TAP's reader sees; a second socket on the
//! same queue (a restarted domain's) takes over. Needs root and `ip`.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use af_xdp_driver::AfXdp;
use driver_host::env::{Bell, DirectEnv};
use driver_host::region::Region;
use kernel_nic::xdp::{map_space, XdpGeometry, XdpMode, XdpProgram};
use kernel_nic::{IfName, Recv, Send, Tap, TapQueue};

fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x98, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x98, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    f
}

/// A TAP device (`PREFIX` and the pid), up, with the redirect program attached.
fn tap_with_program(prefix: &str) -> (XdpProgram, TapQueue) {
    let name: IfName = format!("{prefix}{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open a TAP device (root needed)");
    let ok = Command::new("ip")
        .args(["link", "set", name.as_str(), "up"])
        .status()
        .expect("run ip");
    assert!(ok.success());
    let prog = XdpProgram::attach(&name, 1, XdpMode::Generic).expect("attach the program");
    (prog, TapQueue::from_fd(tap.into_fd()))
}

/// A socket's driver, as a domain runs it.
struct Driver {
    env: DirectEnv,
    d: AfXdp,
}

impl Driver {
    fn open(prog: &XdpProgram) -> Driver {
        let h = prog
            .open_socket(0, XdpGeometry { frames: 256 })
            .expect("open the socket");
        let space = map_space(&h.layout, h.state.as_fd(), h.socket.as_fd(), h.umem.as_fd())
            .expect("map its space");
        let region = Region::from_mapping(File::from(h.state), space).unwrap();
        let socket = Arc::new(h.socket);
        let bells = vec![Bell::XdpSocket(socket.clone()), Bell::XdpSocket(socket)];
        let env = DirectEnv::with_bells(Arc::new(region), bells);
        let d = AfXdp::init(&env, h.layout).expect("initialise the driver");
        Driver { env, d }
    }

    /// Puts `frame` on the transmit ring; false when no chunk is free.
    fn send(&mut self, frame: &[u8]) -> bool {
        let Some(c) = self.d.tx_reserve(&self.env).unwrap() else {
            return false;
        };
        self.env
            .slice(c.addr, frame.len())
            .unwrap()
            .copy_from(frame);
        self.d.tx_commit(&self.env, c, frame.len() as u32).unwrap()
    }

    fn kernel_errors(&self) -> u64 {
        self.d.stats(&self.env).unwrap().kernel_errors
    }
}

fn receive_all(r: &mut Driver, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while got.len() < n && Instant::now() < end {
        let env = &r.env;
        let seen =
            r.d.rx_burst(env, 7, |f| {
                let mut b = vec![0u8; f.len as usize];
                env.slice(f.addr, b.len()).unwrap().copy_to(&mut b[..]);
                got.push(b);
            })
            .unwrap();
        if seen == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn frames_received_on_the_queue_reach_the_socket_in_order() {
    let (prog, mut q) = tap_with_program("twx");
    let mut r = Driver::open(&prog);
    // More than the receive half of the UMEM: chunks must come back to the kernel.
    let n = 400u32;
    let mut got = Vec::new();
    for seq in 0..n {
        assert_eq!(q.send(&frame(seq)).unwrap(), Send::Sent);
        if seq % 50 == 49 {
            got.extend(receive_all(&mut r, 50));
        }
    }
    got.extend(receive_all(&mut r, n as usize - got.len()));
    assert_eq!(got.len() as u32, n, "frames received");
    for (seq, f) in got.iter().enumerate() {
        assert!(*f == frame(seq as u32), "frame {seq}");
    }
    assert_eq!(r.kernel_errors(), 0);
}

#[test]
fn frames_put_on_the_transmit_ring_leave_the_device_in_order() {
    let (prog, mut q) = tap_with_program("twy");
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 2048];
    // A first socket, then a second on the same queue (a restarted domain's).
    for round in 0..2u32 {
        let mut r = Driver::open(&prog);
        let n = 300u32;
        let mut seq = 0;
        let mut mine = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        while (mine.len() as u32) < n && Instant::now() < end {
            while seq < n && r.send(&frame(round * 1000 + seq)) {
                seq += 1;
            }
            r.d.tx_flush(&r.env).expect("flush");
            loop {
                match q.recv(&mut buf).expect("recv") {
                    Recv::Frame(len) if buf[12..14] == [0x88, 0xb5] => {
                        mine.push(buf[..len].to_vec())
                    }
                    Recv::Frame(_) => {}
                    Recv::Empty => break,
                    Recv::Dropped(d) => panic!("dropped {d:?}"),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            mine.len() as u32,
            n,
            "socket {round}: frames sent (queued {seq})"
        );
        for (i, f) in mine.iter().enumerate() {
            assert!(
                *f == frame(round * 1000 + i as u32),
                "socket {round}: frame {i}"
            );
        }
        assert_eq!(r.kernel_errors(), 0);
        // Longer than a chunk: refused.
        let c = r.d.tx_reserve(&r.env).unwrap().expect("a free chunk");
        assert!(!r.d.tx_commit(&r.env, c, 4096).unwrap());
        got.extend(mine);
    }
    assert_eq!(got.len(), 600);
}
