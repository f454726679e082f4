//! A signal that interrupts the control thread while it waits for a client does
//! not end the device: the wait is taken up again and the next client is served.
//! (Processes embedding the device, the switch among them, install handlers: a
//! `SIGCHLD` for a driver domain, a profiler's timer.)
//!
//! Its own process without libtest's harness, so that the device's control thread
//! is the only one that takes the signal: the main thread blocks it once the
//! device has started (a thread inherits its creator's mask), and a signal sent to
//! the process goes to a thread that does not block it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vhost_device::{listen, DeviceConfig};

static HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

const GET_FEATURES: u32 = 1;
const VERSION_1: u32 = 0x1;
const REPLY: u32 = 0x4;
const SIGNALS: u64 = 20;

fn main() {
    let dir = std::env::temp_dir().join(format!("control-signal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a private directory");
    let path = dir.join("port.sock");
    vmm_sys_util::signal::register_signal_handler(libc::SIGUSR1, count).expect("handler");
    let (dev, _handle) = listen(&path, DeviceConfig::default()).expect("listen");
    vmm_sys_util::signal::block_signal(libc::SIGUSR1).expect("block in the main thread");
    // The control thread waits in epoll for up to 100 ms at a time: signals 30 ms
    // apart land in that wait.
    let me = rustix::process::getpid();
    for _ in 0..SIGNALS {
        rustix::process::kill_process(me, rustix::process::Signal::USR1).expect("kill");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        HANDLED.load(Ordering::Relaxed),
        SIGNALS,
        "every signal was taken by the control thread (fewer: it ended)"
    );

    let mut s = UnixStream::connect(&path).expect("the device still listens");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = Vec::new();
    for w in [GET_FEATURES, VERSION_1, 0] {
        req.extend_from_slice(&w.to_le_bytes());
    }
    s.write_all(&req).expect("send GET_FEATURES");
    let mut reply = [0u8; 20];
    s.read_exact(&mut reply)
        .expect("the control thread answers after the signals");
    let word = |i: usize| u32::from_le_bytes(reply[i..i + 4].try_into().unwrap());
    assert_eq!(word(0), GET_FEATURES);
    assert_eq!(word(4), VERSION_1 | REPLY);
    assert_eq!(word(8), 8, "the features are a u64");
    drop(s);
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
    println!("control_signal: {SIGNALS} signals taken, the device still serves");
}
