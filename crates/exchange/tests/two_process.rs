//! Two processes, one exchange region: the test process plays the switch, a child
//! process (this test binary again, running `dd_child`) plays the driver domain. The
//! switch sends 1 M frames through `to_nic`; the DD checks their sequence numbers
//! and echoes each into `from_nic`; the switch checks them again in order. Both
//! sides are event-driven (arm, re-check, sleep on a socket), so the notification
//! suppression protocol is exercised for real, across address spaces.
//!
//! The memfd reaches the child as an inherited descriptor (a `dup`, which has no
//! `CLOEXEC`) reopened through `/proc/self/fd/N`; the wake-up socket is its stdin.
//! Both are safe-Rust ways to receive descriptors.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Geometry, Producer, RingId};
use twin_wire::Segments;

const TOTAL: u64 = 1_000_000;
const ENV_FD: &str = "EXCHANGE_TEST_MEMFD";
const DEADLINE: Duration = Duration::from_secs(300);

/// The frame with sequence number `seq`: 60..=123 bytes, seq at offset 14, last
/// byte the low byte of seq.
fn frame_len(seq: u64) -> usize {
    60 + (seq % 64) as usize
}

fn write_frame(dst: &Segments<'_>, seq: u64) -> usize {
    let len = frame_len(seq);
    let mut buf = [0u8; 128];
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    buf[len - 1] = seq as u8;
    assert_eq!(dst.write_prefix(&buf[..len]), len);
    len
}

fn check_frame(f: &Segments<'_>, want: u64, who: &str) {
    let mut buf = [0u8; 128];
    let n = f.read_prefix(&mut buf);
    let seq = u64::from_le_bytes(buf[14..22].try_into().unwrap());
    assert_eq!(seq, want, "{who}: frame out of order");
    assert_eq!(n, frame_len(seq), "{who}: length of frame {seq}");
    assert_eq!(buf[n - 1], seq as u8, "{who}: last byte of frame {seq}");
}

/// Wake-ups: one byte on a nonblocking socket; a full socket already means "wake".
fn notify(sock: &mut UnixStream) {
    let _ = sock.write(&[1]);
}

fn sleep_on(sock: &mut UnixStream) {
    let mut pfd = [rustix::event::PollFd::new(
        sock,
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let _ = rustix::event::poll(&mut pfd, Some(&t));
    let mut buf = [0u8; 64];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

#[derive(Debug, Default)]
struct Stats {
    sleeps: u64,
    notifies: u64,
    batches: u64,
}

/// Runs as the parent (the switch) or, when spawned with the memfd in `ENV_FD`, as
/// the child (the driver domain). A custom harness, so the child is not a test of
/// its own that could be skipped or run alone.
fn main() {
    if std::env::var_os(ENV_FD).is_some() {
        dd_child();
        return;
    }
    one_million_frames_through_both_rings_across_processes();
    println!("two_process: 1 passed, 0 failed");
}

fn one_million_frames_through_both_rings_across_processes() {
    let region = Arc::new(ExchangeRegion::create("xchg-2proc", Geometry::default()).unwrap());
    // A dup has no CLOEXEC: the child inherits it.
    let inherit = rustix::io::dup(region.fd()).unwrap();
    let (mut sock, child_sock) = UnixStream::pair().unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ENV_FD, inherit.as_raw_fd().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(child_sock)))
        .spawn()
        .unwrap();
    drop(inherit);

    let mut tx = Producer::new(region.clone(), RingId::ToNic);
    let mut rx = Consumer::new(region.clone(), RingId::FromNic);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut st = Stats::default();
    let start = Instant::now();
    let mut idle = 0u32;
    while got < TOTAL {
        let mut progress = false;
        let mut n = 0;
        while sent < TOTAL && n < 128 {
            let Some(slot) = tx.reserve().unwrap() else {
                break;
            };
            let len = write_frame(&slot.frame(), sent);
            slot.commit(len).unwrap();
            sent += 1;
            n += 1;
        }
        if n > 0 {
            progress = true;
            st.batches += 1;
            tx.publish();
            if tx.needs_notify() {
                st.notifies += 1;
                notify(&mut sock);
            }
        }
        let m = rx
            .poll(256, |f| {
                check_frame(f, got, "switch");
                got += 1;
            })
            .unwrap();
        if m > 0 {
            progress = true;
            if rx.needs_notify() {
                st.notifies += 1;
                notify(&mut sock);
            }
        }
        if progress {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
            continue;
        }
        // Arm both directions that can wake us, re-check, sleep.
        let raced = rx.arm_notify() | (sent < TOTAL && tx.arm_notify());
        if !raced {
            st.sleeps += 1;
            sleep_on(&mut sock);
            if let Some(status) = child.try_wait().unwrap() {
                // It exits once it has echoed everything; what it echoed last may
                // still be in the ring. Early means: nothing left to take.
                let m = rx
                    .poll(usize::MAX, |f| {
                        check_frame(f, got, "switch");
                        got += 1;
                    })
                    .unwrap();
                assert!(
                    m > 0 || got == TOTAL,
                    "DD exited early with {status}; sent {sent}, got {got}"
                );
                continue;
            }
            assert!(start.elapsed() < DEADLINE, "stuck: sent {sent}, got {got}");
        }
        idle = 0;
    }
    let elapsed = start.elapsed();
    let status = child.wait().unwrap();
    assert!(status.success(), "DD failed: {status}");
    assert_eq!(got, TOTAL);
    assert!(region.heartbeat() > 0);
    assert_eq!(region.status().unwrap().state, DdState::Running);
    eprintln!(
        "switch: {TOTAL} frames round trip in {elapsed:?} ({:.0} frames/s), {:?}",
        TOTAL as f64 / elapsed.as_secs_f64(),
        st
    );
}

/// The DD half; runs only when spawned by the parent above.
fn dd_child() {
    let Ok(fd) = std::env::var(ENV_FD) else {
        return;
    };
    let file = File::options()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap();
    let region = Arc::new(ExchangeRegion::attach(file).unwrap());
    let mut sock = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
    sock.set_nonblocking(true).unwrap();
    region.set_status(DdStatus {
        state: DdState::Running,
        code: 0,
    });
    let mut rx = Consumer::new(region.clone(), RingId::ToNic);
    let mut tx = Producer::new(region.clone(), RingId::FromNic);
    let mut echoed = 0u64;
    let mut st = Stats::default();
    let mut idle = 0u32;
    while echoed < TOTAL {
        region.beat();
        let room = tx.available().unwrap();
        let mut n = 0;
        if room > 0 {
            n = rx
                .poll(room.min(256), |f| {
                    check_frame(f, echoed, "dd");
                    let slot = tx.reserve().unwrap().unwrap();
                    assert_eq!(f.copy_to(&slot.frame()), f.len());
                    slot.commit(f.len()).unwrap();
                    echoed += 1;
                })
                .unwrap();
        }
        if n > 0 {
            st.batches += 1;
            tx.publish();
            if tx.needs_notify() {
                st.notifies += 1;
                notify(&mut sock);
            }
            if rx.needs_notify() {
                st.notifies += 1;
                notify(&mut sock);
            }
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
            continue;
        }
        let raced = if room == 0 {
            tx.arm_notify()
        } else {
            rx.arm_notify()
        };
        if !raced {
            st.sleeps += 1;
            sleep_on(&mut sock);
        }
        idle = 0;
    }
    eprintln!("dd: echoed {echoed} frames, {st:?}");
}
