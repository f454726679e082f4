//! A SIGBUS that is not a fault in a fenced client mapping is not the fence's: it
//! goes on to the previous action (here the default, which ends the process). Each
//! case runs in a child process (this test binary again, told by an environment
//! variable which case to play), and the parent checks how the child ended.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CASE: &str = "TWIN_FENCE_CASE";

/// Runs `test` (a test of this binary) as a child playing `case`; returns the
/// signal that ended it, or `None` if it exited, or panics if it hangs.
fn child(test: &str, case: &str) -> Option<i32> {
    child_of(
        Command::new(std::env::current_exe().expect("the test binary")),
        test,
        case,
    )
}

/// As [`child`], with SIGBUS ignored from the start: a shell's `trap '' BUS` is
/// inherited through `exec`, and Rust's runtime installs its own SIGBUS handler
/// only over the default action, so the fence finds `SIG_IGN` as the previous one.
fn child_ignoring_sigbus(test: &str, case: &str) -> Option<i32> {
    let mut sh = Command::new("sh");
    sh.args(["-c", "trap '' BUS; exec \"$@\"", "sh"])
        .arg(std::env::current_exe().expect("the test binary"));
    child_of(sh, test, case)
}

fn child_of(mut command: Command, test: &str, case: &str) -> Option<i32> {
    let mut c = command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return s.signal();
        }
        if Instant::now() > end {
            let _ = c.kill();
            let _ = c.wait();
            panic!("case {case}: the child hung (a fault handled again and again?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sigbus_sent_to_the_process_ends_it() {
    if std::env::var(CASE).as_deref() == Ok("sent") {
        vhost_device::fault_fence::install().expect("install");
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::BUS);
        std::thread::sleep(Duration::from_secs(1));
        // Reached only when the fence swallowed a signal that was not its own.
        std::process::exit(0);
    }
    assert_eq!(
        child("a_sigbus_sent_to_the_process_ends_it", "sent"),
        Some(libc::SIGBUS)
    );
}

/// Faults in a mapping the fence does not know, then exits 0 (reached only when
/// the fault was swallowed).
fn fault_outside_every_fence() -> ! {
    use vm_memory::{Bytes, MmapRegion, VolatileMemory};
    vhost_device::fault_fence::install().expect("install");
    // A mapping of a file that the fence does not know, then cut short.
    let fd = rustix::fs::memfd_create("unfenced", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&fd, 4096).expect("size");
    let file = std::fs::File::from(fd);
    let copy = file.try_clone().expect("copy");
    let map = MmapRegion::<()>::build(
        Some(vm_memory::FileOffset::new(copy, 0)),
        4096,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )
    .expect("map");
    rustix::fs::ftruncate(&file, 0).expect("truncate");
    let s = map.get_slice(0, 8).expect("slice");
    let v: u64 = s.read_obj(0).expect("read");
    // Reached only when the fault was swallowed.
    eprintln!("read {v}");
    std::process::exit(0);
}

#[test]
fn a_fault_outside_every_fence_ends_the_process() {
    if std::env::var(CASE).as_deref() == Ok("unfenced") {
        fault_outside_every_fence();
    }
    assert_eq!(
        child("a_fault_outside_every_fence_ends_the_process", "unfenced"),
        Some(libc::SIGBUS)
    );
}

/// With SIGBUS ignored before the fence was installed, a fault that is not the
/// fence's still ends the process by SIGBUS (the kernel does not let a fault be
/// ignored); the fence must not call `SIG_IGN` as if it were a handler.
#[test]
fn a_fault_outside_every_fence_ends_a_process_that_ignored_sigbus() {
    let test = "a_fault_outside_every_fence_ends_a_process_that_ignored_sigbus";
    if std::env::var(CASE).as_deref() == Ok("ignored") {
        fault_outside_every_fence();
    }
    assert_eq!(child_ignoring_sigbus(test, "ignored"), Some(libc::SIGBUS));
}
