//! Proves the sandbox by running real sandboxed processes.
//!
//! This binary is its own probe: started with `SANDBOX_PROBE=<case>` it is the
//! sandboxed process (single-threaded, no libtest), otherwise it is the test driver
//! that starts one probe per case, talks to it over a socket pair (the probe's stdin,
//! as for a real driver domain) and checks how it ends. It must run as root and fails,
//! never skips, otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sandbox::fdpass;
use sandbox::{Ids, Policy, ProcessKind, Sandbox};

const PROBE_ENV: &str = "SANDBOX_PROBE";

/// The driver configuration of the vhost-user test (both sides need the region size).
const VHOST_CFG: driver_host::DriverConfig = driver_host::DriverConfig {
    queue_size: 64,
    buf_size: 2048,
    rx_notify: false,
};

fn main() {
    if let Ok(case) = std::env::var(PROBE_ENV) {
        probe::run(&case);
    }
    driver::run();
}

/// The sandboxed side. Every case ends the process.
mod probe {
    use super::*;
    use rustix::thread::CapabilitySet;

    fn control() -> UnixStream {
        fdpass::control_from_stdin().expect("control socket on stdin")
    }

    fn say(control: &UnixStream, text: &str) {
        fdpass::send(control, text.as_bytes(), &[]).expect("send to the test");
    }

    fn enter(control: &UnixStream) {
        enter_as(control, ProcessKind::DriverDomain);
    }

    fn enter_as(control: &UnixStream, kind: ProcessKind) {
        let mut policy = Policy::driver_domain();
        policy.kind = kind;
        if let Err(e) = sandbox::enter(&policy) {
            say(control, &format!("error: {e}"));
            std::process::exit(2);
        }
        say(control, "entered");
    }

    /// `sendto` on the control socket of `len` bytes from a one-byte buffer.
    fn sendto(control: &UnixStream, len: usize) -> isize {
        use std::os::fd::AsRawFd;
        let byte = [0u8; 1];
        // With the filter in place the call does not even reach the kernel when
        // `len` is not 0.
        let buf = byte.as_ptr().cast();
        // SAFETY: the kernel only reads from `buf` (EFAULT past what is mapped)
        // and writes nothing of ours.
        unsafe {
            libc::sendto(
                control.as_raw_fd(),
                buf,
                len,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        }
    }

    /// What the process sees of itself after isolation, before the filter.
    fn view(control: &UnixStream, policy: &Policy) -> ! {
        let sandbox = match Sandbox::isolate(policy) {
            Ok(s) => s,
            Err(e) => {
                say(control, &format!("error: {e}"));
                std::process::exit(2);
            }
        };
        let mut r = String::new();
        let root: Vec<String> = match std::fs::read_dir("/") {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) => vec![format!("<error {e}>")],
        };
        r += &format!("root_entries={}\n", root.join(","));
        r += &format!(
            "proc_status={}\n",
            std::fs::read("/proc/self/status").is_ok()
        );
        r += &format!(
            "etc_passwd={}\n",
            std::path::Path::new("/etc/passwd").exists()
        );
        r += &format!("create_file={}\n", File::create("/probe-was-here").is_ok());
        r += &format!("pid={}\n", rustix::process::getpid().as_raw_nonzero());
        let caps = rustix::thread::capabilities(None).expect("capget");
        r += &format!(
            "caps={:x},{:x},{:x}\n",
            caps.effective.bits(),
            caps.permitted.bits(),
            caps.inheritable.bits()
        );
        let mut bounding = 0u64;
        let mut ambient = 0u64;
        for bit in 0..64 {
            let c = CapabilitySet::from_bits_retain(1 << bit);
            if rustix::thread::capability_is_in_bounding_set(c).unwrap_or(false) {
                bounding |= 1 << bit;
            }
            if rustix::thread::capability_is_in_ambient_set(c).unwrap_or(false) {
                ambient |= 1 << bit;
            }
        }
        r += &format!("bounding={bounding:x}\nambient={ambient:x}\n");
        r += &format!(
            "no_new_privs={}\n",
            rustix::thread::no_new_privs().expect("PR_GET_NO_NEW_PRIVS")
        );
        r += &format!("uid={}\n", rustix::process::getuid().as_raw());
        say(control, &r);
        sandbox.lock().expect("seccomp");
        say(control, "locked");
        std::process::exit(0);
    }

    /// The allowed path: epoll on the control socket, receive a memfd and an
    /// eventfd, map and write the memfd (as driver-host's `Region::map` does), signal
    /// the eventfd, create an eventfd and send it back.
    fn fds(control: &UnixStream) -> ! {
        use rustix::event::epoll;
        use vm_memory::{
            Bytes, FileOffset, GuestAddress, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
        };
        control.set_nonblocking(true).expect("FIONBIO");
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create1");
        epoll::add(
            &ep,
            control,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )
        .expect("epoll_ctl");
        let mut events = Vec::with_capacity(4);
        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None).expect("epoll_wait");
        assert_eq!(events.len(), 1);
        control.set_nonblocking(false).expect("FIONBIO");

        let msg = fdpass::recv(control, 64, 2).expect("recv under the filter");
        assert_eq!(msg.data, b"region+event");
        let mut fds = msg.fds.into_iter();
        let (Some(mem), Some(event)) = (fds.next(), fds.next()) else {
            std::process::exit(4);
        };
        let seals = rustix::fs::fcntl_get_seals(&mem).expect("F_GET_SEALS");
        let file = File::from(mem);
        let len = file.metadata().expect("statx").len() as usize;
        let map_file = file.try_clone().expect("F_DUPFD_CLOEXEC");
        let mapping = MmapRegion::<()>::from_file(FileOffset::new(map_file, 0), len).expect("mmap");
        let region = GuestRegionMmap::new(mapping, GuestAddress(0)).expect("region");
        region
            .write_obj(0xfeed_face_cafe_beef_u64, MemoryRegionAddress(8))
            .expect("write");
        rustix::io::write(&event, &1u64.to_ne_bytes()).expect("signal the eventfd");

        let mine =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd2");
        let reply = format!("done len={len} seals={:x}", seals.bits());
        fdpass::send(control, reply.as_bytes(), &[mine.as_fd()]).expect("send with fds");
        // Wait for the test to write into the eventfd we made, then exit.
        let mut buf = [0u8; 8];
        rustix::io::read(&mine, &mut buf).expect("read own eventfd");
        std::process::exit(if u64::from_ne_bytes(buf) == 5 { 0 } else { 6 });
    }

    /// The real driver under the filter: `driver-host`'s vhost-user frontend over a
    /// socket connected by the test, in a region memfd made by the test; one frame
    /// out to the soft NIC (reflect mode) and back with its MACs swapped.
    fn vhost(control: &UnixStream) -> ! {
        use driver_host::link::NicLink;
        use driver_host::HostedDriver;
        let msg = fdpass::recv(control, 64, 2).expect("recv NIC socket and region");
        let mut fds = msg.fds.into_iter();
        let (Some(nic), Some(region)) = (fds.next(), fds.next()) else {
            std::process::exit(4);
        };
        let name = std::path::Path::new("nic");
        let link = NicLink::over(UnixStream::from(nic), name).expect("vhost-user handshake");
        let mut driver = HostedDriver::attach(
            link,
            Some(File::from(region)),
            None,
            &super::VHOST_CFG,
            name,
        )
        .expect("driver attach");
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        let slot = driver.tx_reserve().expect("tx slot");
        assert_eq!(slot.frame().write_prefix(&frame), 60);
        assert!(slot.commit(60));
        driver.tx_flush();
        let mut back = Vec::new();
        for _ in 0..100 {
            driver.wait_rx(Duration::from_millis(50));
            driver.rx_burst(8, |seg| {
                let mut buf = [0u8; 60];
                let n = seg.read_prefix(&mut buf);
                back.push(buf[..n].to_vec());
            });
            if !back.is_empty() {
                break;
            }
        }
        let ok = back
            .first()
            .is_some_and(|f| f.len() == 60 && f[..6] == frame[6..12] && f[6..12] == frame[..6]);
        say(control, &format!("reflected={ok} frames={}", back.len()));
        std::process::exit(if ok { 0 } else { 5 });
    }

    pub fn run(case: &str) -> ! {
        let control = control();
        match case {
            "open" => {
                enter(&control);
                let r = File::open("/etc/passwd");
                say(&control, &format!("open returned {r:?}"));
                std::process::exit(3);
            }
            "socket" => {
                enter(&control);
                let r = std::net::UdpSocket::bind("127.0.0.1:0");
                say(&control, &format!("socket returned {r:?}"));
                std::process::exit(3);
            }
            "fcntl_lock" => {
                enter(&control);
                let r = rustix::fs::fcntl_lock(&control, rustix::fs::FlockOperation::LockShared);
                say(&control, &format!("fcntl(F_SETLK) returned {r:?}"));
                std::process::exit(3);
            }
            "mmap_exec" => {
                enter(&control);
                // SAFETY: a fresh anonymous mapping at an address of the kernel's
                // choice aliases nothing; it is never touched.
                let r = unsafe {
                    rustix::mm::mmap_anonymous(
                        std::ptr::null_mut(),
                        4096,
                        rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::EXEC,
                        rustix::mm::MapFlags::PRIVATE,
                    )
                };
                say(&control, &format!("mmap(PROT_EXEC) returned {r:?}"));
                std::process::exit(3);
            }
            "sendto_nothing_packet" => {
                enter_as(&control, ProcessKind::RingDomain);
                let r = sendto(&control, 0);
                say(&control, &format!("sendto returned {r}"));
                std::process::exit(if r == 0 { 0 } else { 3 });
            }
            "sendto_byte_packet" | "sendto_4g_packet" => {
                enter_as(&control, ProcessKind::RingDomain);
                let len = if case == "sendto_byte_packet" {
                    1
                } else {
                    1 << 32
                };
                let r = sendto(&control, len);
                say(&control, &format!("sendto returned {r}"));
                std::process::exit(3);
            }
            "sendto_nothing_vhost" => {
                enter(&control);
                let r = sendto(&control, 0);
                say(&control, &format!("sendto returned {r}"));
                std::process::exit(3);
            }
            "view" => view(&control, &Policy::driver_domain()),
            "view_nobody" => {
                let mut p = Policy::driver_domain();
                p.outside_ids = Some(Ids {
                    uid: 65534,
                    gid: 65534,
                });
                view(&control, &p)
            }
            "status" => {
                enter(&control);
                let go = fdpass::recv(&control, 16, 0).expect("recv go");
                assert_eq!(go.data, b"go");
                std::process::exit(7);
            }
            "fds" => {
                enter(&control);
                fds(&control);
            }
            "vhost" => {
                enter(&control);
                vhost(&control);
            }
            "panic" => {
                enter(&control);
                panic!("a panic under the filter");
            }
            "threads" => {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let t = std::thread::spawn(move || rx.recv());
                let r = sandbox::enter(&Policy::driver_domain());
                say(&control, &format!("{r:?}"));
                drop(tx);
                let _ = t.join();
                std::process::exit(if r.is_err() { 0 } else { 3 });
            }
            other => {
                eprintln!("unknown probe case {other}");
                std::process::exit(100);
            }
        }
    }
}

/// The test driver (root, unsandboxed).
mod driver {
    use super::*;

    struct Probe {
        child: Child,
        control: UnixStream,
    }

    impl Probe {
        fn start(case: &str) -> Probe {
            let (mine, theirs) = UnixStream::pair().expect("socketpair");
            mine.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("SO_RCVTIMEO");
            let child = Command::new(std::env::current_exe().expect("current_exe"))
                .env(PROBE_ENV, case)
                // Symbolizing a backtrace opens the executable: not in a sandbox.
                .env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE")
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn probe");
            Probe {
                child,
                control: mine,
            }
        }

        fn recv(&self) -> fdpass::Message {
            fdpass::recv(&self.control, 64 * 1024, 4).expect("message from the probe")
        }

        fn recv_text(&self) -> String {
            String::from_utf8(self.recv().data).expect("utf-8")
        }

        fn expect(&self, text: &str) {
            let got = self.recv_text();
            assert_eq!(got, text, "probe said {got:?}");
        }

        fn wait(mut self) -> ExitStatus {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(s) = self.child.try_wait().expect("wait") {
                    return s;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("probe did not end within 20 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn killed_by_sigsys(case: &str) {
        let p = Probe::start(case);
        p.expect("entered");
        // Nothing more: the forbidden call never returned to the probe.
        let after = fdpass::recv(&p.control, 1024, 0);
        assert!(
            matches!(after, Err(fdpass::FdPassError::Closed)),
            "{case}: the probe went on: {after:?}"
        );
        let status = p.wait();
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{case}: expected death by SIGSYS, got {status:?}"
        );
    }

    /// (a) Opening a file kills the process.
    fn open_file_is_killed() {
        killed_by_sigsys("open");
    }

    /// (b) Creating a socket kills the process.
    fn socket_is_killed() {
        killed_by_sigsys("socket");
    }

    /// Argument filters: fcntl with a command outside the list kills the process.
    fn fcntl_other_command_is_killed() {
        killed_by_sigsys("fcntl_lock");
    }

    /// Argument filters: mmap with PROT_EXEC kills the process.
    fn mmap_exec_is_killed() {
        killed_by_sigsys("mmap_exec");
    }

    /// The AF_PACKET kind's one extra call: a `sendto` of no bytes passes...
    fn sendto_nothing_passes_for_packet_domains() {
        let p = Probe::start("sendto_nothing_packet");
        p.expect("entered");
        p.expect("sendto returned 0");
        assert!(p.wait().success());
    }

    /// ...one with data is killed, a length of 2^32 included (checked as 64
    /// bits), and the other kinds do not get even the empty one.
    fn sendto_with_data_or_elsewhere_is_killed() {
        killed_by_sigsys("sendto_byte_packet");
        killed_by_sigsys("sendto_4g_packet");
        killed_by_sigsys("sendto_nothing_vhost");
    }

    fn parse(report: &str) -> HashMap<String, String> {
        report
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn check_view(case: &str) -> HashMap<String, String> {
        let p = Probe::start(case);
        let report = p.recv_text();
        let v = parse(&report);
        let field = |k: &str| v.get(k).map(String::as_str).unwrap_or("<missing>");
        assert_eq!(
            field("root_entries"),
            "",
            "{case}: / is not empty: {report}"
        );
        assert_eq!(field("proc_status"), "false", "{case}: {report}");
        assert_eq!(field("etc_passwd"), "false", "{case}: {report}");
        assert_eq!(field("create_file"), "false", "{case}: {report}");
        assert_eq!(field("pid"), "1", "{case}: not PID 1: {report}");
        assert_eq!(field("caps"), "0,0,0", "{case}: {report}");
        assert_eq!(field("bounding"), "0", "{case}: {report}");
        assert_eq!(field("ambient"), "0", "{case}: {report}");
        assert_eq!(field("no_new_privs"), "true", "{case}: {report}");
        assert_eq!(field("uid"), "0", "{case}: {report}");
        p.expect("locked");
        let status = p.wait();
        assert_eq!(status.code(), Some(0), "{case}: {status:?}");
        v
    }

    /// (c) and (d) from inside: after isolation the root is empty and read-only, no
    /// /proc, the process is PID 1 with no capabilities in any set and no_new_privs.
    fn isolated_view() {
        check_view("view");
    }

    /// The same with unprivileged ids outside (65534).
    fn isolated_view_as_nobody() {
        check_view("view_nobody");
    }

    fn status_of(pid: i32) -> HashMap<String, String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    fn worker_of(reaper: i32) -> i32 {
        for entry in std::fs::read_dir("/proc").expect("/proc") {
            let Ok(entry) = entry else { continue };
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            if text.lines().any(|l| l == format!("PPid:\t{reaper}")) {
                return pid;
            }
        }
        panic!("no child of the reaper {reaper}");
    }

    /// (d) from outside, on the running, filtered worker and its reaper:
    /// /proc/<pid>/status shows every capability set empty, NoNewPrivs 1, Seccomp 2
    /// (filter mode); the worker is PID 1 in its own pid namespace; every namespace
    /// differs from the test's; the worker's mount table has one entry. The worker's
    /// exit code (7) reaches the test through the reaper.
    fn status_from_outside() {
        let p = Probe::start("status");
        p.expect("entered");
        let reaper = p.child.id() as i32;
        let worker = worker_of(reaper);
        for (who, pid) in [("reaper", reaper), ("worker", worker)] {
            let s = status_of(pid);
            for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                assert_eq!(s[k], "0000000000000000", "{who} {k}");
            }
            assert_eq!(s["NoNewPrivs"], "1", "{who}");
            assert_eq!(s["Seccomp"], "2", "{who}");
        }
        let s = status_of(worker);
        let nspid: Vec<&str> = s["NSpid"].split_whitespace().collect();
        assert_eq!(nspid.last(), Some(&"1"), "worker NSpid {:?}", s["NSpid"]);
        for ns in ["user", "mnt", "net", "pid", "ipc", "uts", "cgroup"] {
            let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("own ns");
            let theirs = std::fs::read_link(format!("/proc/{worker}/ns/{ns}")).expect("worker ns");
            assert_ne!(mine, theirs, "worker shares the {ns} namespace");
        }
        let mounts =
            std::fs::read_to_string(format!("/proc/{worker}/mountinfo")).expect("mountinfo");
        assert_eq!(mounts.lines().count(), 1, "worker mounts:\n{mounts}");
        assert!(
            mounts.contains(" tmpfs ") && mounts.contains(" / / ro,"),
            "{mounts}"
        );
        fdpass::send(&p.control, b"go", &[]).expect("send go");
        let status = p.wait();
        assert_eq!(status.code(), Some(7), "{status:?}");
    }

    /// (e) The allowed path under the filter: epoll, fd passing both ways, mapping a
    /// received (sealed) memfd, signalling a received eventfd, creating an eventfd.
    fn fds_under_the_filter() {
        use rustix::fs::{MemfdFlags, SealFlags};
        let p = Probe::start("fds");
        p.expect("entered");
        let mem =
            rustix::fs::memfd_create("probe", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .expect("memfd");
        rustix::fs::ftruncate(&mem, 8192).expect("ftruncate");
        rustix::fs::fcntl_add_seals(&mem, SealFlags::SHRINK | SealFlags::GROW).expect("seal");
        let event =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        fdpass::send(&p.control, b"region+event", &[mem.as_fd(), event.as_fd()]).expect("send fds");

        let reply = p.recv();
        let text = String::from_utf8_lossy(&reply.data).into_owned();
        let expected_seals = (SealFlags::SHRINK | SealFlags::GROW).bits();
        assert_eq!(text, format!("done len=8192 seals={expected_seals:x}"));
        assert_eq!(reply.fds.len(), 1, "the probe's eventfd");

        let mut counter = [0u8; 8];
        rustix::io::read(&event, &mut counter).expect("read eventfd");
        assert_eq!(u64::from_ne_bytes(counter), 1, "eventfd signalled once");
        let mut word = [0u8; 8];
        rustix::io::pread(&mem, &mut word, 8).expect("pread memfd");
        assert_eq!(u64::from_ne_bytes(word), 0xfeed_face_cafe_beef);

        let mut theirs = File::from(reply.fds.into_iter().next().expect("fd"));
        theirs
            .write_all(&5u64.to_ne_bytes())
            .expect("write the probe's eventfd");
        let status = p.wait();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }

    /// The allow-list suffices for the real driver: `driver-host`'s vhost-user
    /// frontend (SET_OWNER .. SET_VRING_KICK, the memory table with the region fd,
    /// eventfds it creates), the virtio-net driver and its epoll wait, against the
    /// soft NIC in reflect mode, all in the sandboxed worker.
    fn vhost_frontend_under_the_filter() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("sandbox-vhost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("nic.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let mut cfg = soft_nic::NicConfig::new(&sock, soft_nic::Mode::Reflect);
        cfg.busy_poll = false;
        let nic = {
            let stop = stop.clone();
            std::thread::spawn(move || soft_nic::run(&cfg, &stop))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match UnixStream::connect(&sock) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("NIC socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let len = driver_host::HostedDriver::region_len_for(&VHOST_CFG).expect("region len");
        let region =
            rustix::fs::memfd_create("dd-region", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&region, len).expect("ftruncate");

        let p = Probe::start("vhost");
        p.expect("entered");
        fdpass::send(&p.control, b"nic", &[conn.as_fd(), region.as_fd()]).expect("send");
        drop(conn);
        let report = p.recv_text();
        let status = p.wait();
        stop.store(true, Ordering::Relaxed);
        let _ = nic.join();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(report, "reflected=true frames=1", "{report}");
        assert_eq!(status.code(), Some(0), "{status:?}");
    }

    /// A Rust panic under the filter (message on stderr, unwinding) ends with
    /// status 101, not SIGSYS.
    fn panic_exits_101() {
        let p = Probe::start("panic");
        p.expect("entered");
        let status = p.wait();
        assert_eq!(status.code(), Some(101), "{status:?}");
    }

    /// Entering with a second thread is refused.
    fn threads_refused() {
        let p = Probe::start("threads");
        let text = p.recv_text();
        assert!(text.contains("MultiThreaded(2)"), "{text}");
        let status = p.wait();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }

    pub fn run() -> ! {
        let tests: &[(&str, fn())] = &[
            ("open_file_is_killed", open_file_is_killed),
            ("socket_is_killed", socket_is_killed),
            (
                "fcntl_other_command_is_killed",
                fcntl_other_command_is_killed,
            ),
            ("mmap_exec_is_killed", mmap_exec_is_killed),
            (
                "sendto_nothing_passes_for_packet_domains",
                sendto_nothing_passes_for_packet_domains,
            ),
            (
                "sendto_with_data_or_elsewhere_is_killed",
                sendto_with_data_or_elsewhere_is_killed,
            ),
            ("isolated_view", isolated_view),
            ("isolated_view_as_nobody", isolated_view_as_nobody),
            ("status_from_outside", status_from_outside),
            ("fds_under_the_filter", fds_under_the_filter),
            (
                "vhost_frontend_under_the_filter",
                vhost_frontend_under_the_filter,
            ),
            ("panic_exits_101", panic_exits_101),
            ("threads_refused", threads_refused),
        ];
        // libtest's command line (filters, --exact, --skip, --list, ...), so a
        // filter or option means what it means for every other test binary.
        let mut args = libtest_mimic::Arguments::from_args();
        // Namespaces and probes: one test at a time, on this thread.
        args.test_threads = Some(1);
        let root = rustix::process::geteuid().is_root();
        let trials = tests
            .iter()
            .map(|(name, test)| {
                let test = *test;
                libtest_mimic::Trial::test(*name, move || {
                    if !root {
                        return Err("these tests must run as root (they create namespaces)".into());
                    }
                    std::panic::catch_unwind(test).map_err(|_| "panicked".into())
                })
            })
            .collect();
        libtest_mimic::run(&args, trials).exit()
    }
}
