//! The crate's only `unsafe` code: the few calls with no safe wrapper.
//!
//! * [`unshare`]: rustix marks `unshare` unsafe because of `CLONE_FILES`; the flags
//!   passed here never include it.
//! * [`fork`]: only sound in a single-threaded process; the caller checks that.
//! * [`die_by_signal`]: restores a signal's default action and raises it.
//! * [`exit_now`]: `_exit`, skipping atexit handlers (the reaper must not run
//!   anything the seccomp filter forbids on its way out).
//! * [`eventfd_from_owned`]: `vmm_sys_util::eventfd::EventFd` can only be built from
//!   a raw descriptor.
//! * [`exec_with_stdio_only`]: `Command::pre_exec` is unsafe (the hook runs between
//!   fork and exec); the hook makes one system call.

use rustix::io::Errno;
use rustix::thread::UnshareFlags;

/// Result of [`fork`].
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the parent, with the child's pid.
    Parent(rustix::process::Pid),
    /// In the child.
    Child,
}

/// `unshare(flags)`. `flags` must not contain `CLONE_FILES` (checked).
pub(crate) fn unshare(flags: UnshareFlags) -> Result<(), Errno> {
    if flags.contains(UnshareFlags::FILES) {
        return Err(Errno::INVAL);
    }
    // SAFETY: the only unsafety of `unshare` is `CLONE_FILES` (other threads could
    // observe fds from a table they do not share); it is excluded above.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// `fork()`.
///
/// # Safety
///
/// The calling process must be single-threaded: the child gets a copy of this
/// thread only, and any lock another thread held would stay locked forever.
pub(crate) unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: single-threaded per this function's contract, so the child may go on
    // running arbitrary code (allocating, locking) after the fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        )),
        0 => Ok(Forked::Child),
        p => match rustix::process::Pid::from_raw(p) {
            Some(pid) => Ok(Forked::Parent(pid)),
            None => Err(Errno::INVAL),
        },
    }
}

/// Ends this process by `signal` if it can, else exits with `128 + signal`.
pub(crate) fn die_by_signal(signal: i32) -> ! {
    // `signal` with SIG_DFL installs no handler code; `sigemptyset`, `sigaddset` and
    // `sigprocmask` only touch the local set; `raise` sends a signal to this thread.
    // SAFETY: none of these calls has memory-safety preconditions.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    exit_now(128 + signal)
}

/// `_exit(code)`: ends the process at once, running no atexit handler.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` never returns and needs nothing of the caller; skipping atexit
    // handlers and stdio flushing is the intent.
    unsafe { libc::_exit(code) }
}

/// Adopts an owned descriptor (received over SCM_RIGHTS, meant to be an eventfd) as
/// an `EventFd`. If it is not an eventfd, reads and writes through it fail; nothing
/// worse.
pub(crate) fn eventfd_from_owned(fd: std::os::fd::OwnedFd) -> vmm_sys_util::eventfd::EventFd {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` hands over sole ownership of an open descriptor, which the
    // `EventFd` then owns and closes exactly once.
    unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(fd.into_raw_fd()) }
}

/// Makes every descriptor but standard input, output and error close-on-exec in the
/// child of `cmd`, between fork and exec, whatever flags they had in the parent.
///
/// This is what keeps a descriptor received without `FD_CLOEXEC` (for example a
/// client's guest-memory memfd in the instant between `recvmsg` and `fcntl` on
/// another thread), or one inherited from whoever started the parent, out of the
/// child. Std's own exec-error pipe is close-on-exec anyway, so it keeps working.
pub(crate) fn exec_with_stdio_only(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let hook = || {
        let first: libc::c_uint = 3;
        // SAFETY: `close_range` takes plain integers and touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // The hook runs in the forked child, where only async-signal-safe work is
    // allowed: it makes one raw system call (`close_range` with CLOSE_RANGE_CLOEXEC,
    // Linux 5.11), allocates nothing and takes no lock; `last_os_error` reads errno.
    // SAFETY: the hook is async-signal-safe, as `pre_exec` requires (above).
    unsafe { cmd.pre_exec(hook) };
}
