//! Entering the sandbox: namespaces, an empty root, a pid-namespace reaper, no
//! capabilities, `no_new_privs`, and last the seccomp filter.
//!
//! [`enter`] is called by the sandboxed process itself, after it has received every
//! fd it needs and before it touches untrusted data. It runs in two stages, also
//! available separately for tests and diagnostics:
//!
//! 1. [`Sandbox::isolate`]: everything but the filter, in this order
//!    * check the process is single-threaded (namespaces and `fork` need it);
//!    * `RLIMIT_CORE` = 0 (a crashing DD writes no core with shared memory in it),
//!      and `RLIMIT_AS` when the policy has a memory limit;
//!    * optionally switch to unprivileged ids outside ([`Policy::outside_ids`]);
//!    * `unshare` user, mount, net, ipc, uts, cgroup and pid namespaces at once (the
//!      user namespace is created first and owns the others); map uid and gid 0 in
//!      it to the process's own ids outside (one line each, `setgroups` denied);
//!    * mount namespace: every mount private (nothing propagates back), an empty
//!      `noexec,nosuid,nodev` tmpfs mounted (in the new namespace only) on `/tmp`,
//!      `pivot_root` into it, the old root detached, the new root remounted
//!      read-only: no file, no `/proc`, no `/dev` is reachable by path;
//!    * capabilities: securebits locked (`NOROOT`, `NO_SETUID_FIXUP`,
//!      `NO_CAP_AMBIENT_RAISE`, `KEEP_CAPS` off), ambient set cleared, every
//!      capability dropped from the bounding set, then effective, permitted and
//!      inheritable emptied, and checked;
//!    * `no_new_privs`, not dumpable;
//!    * pid namespace: `unshare(CLONE_NEWPID)` only affects children, so the process
//!      forks once. The child (the worker) is PID 1 of the new namespace, sees no
//!      other process, and gets `SIGKILL` if the parent dies (`PR_SET_PDEATHSIG`,
//!      with the race closed by a pipe). The parent becomes the *reaper*: it installs
//!      the [`REAPER`](crate::policy::REAPER) filter, waits for the worker and exits
//!      the same way (same code, or re-raising the same signal), so the supervisor
//!      that started the process sees the worker's fate on the pid it knows.
//!      `isolate` returns only in the worker.
//! 2. [`Sandbox::lock`]: installs the process kind's seccomp filter (kill on
//!    mismatch). After this the allow-list is all the process can do, forever.
//!
//! # What is isolated, and what is not
//!
//! Isolated: the file system (nothing reachable by path; `open` is not even
//! allowed), the network (own empty net namespace; `socket` not allowed), other
//! processes (own pid namespace; no `kill`, `ptrace`), IPC objects and hostname,
//! privileges (no capabilities in any namespace, `no_new_privs`, no `execve`), new
//! executable memory (`mmap`/`mprotect` with `PROT_EXEC` refused), threads and
//! children (no `clone`).
//!
//! Not isolated, by design or necessity:
//! * The fds the process holds when it enters stay usable: whatever the switch sent
//!   (regions, eventfds, the NIC socket) and whatever it inherited. The switch starts
//!   the DD with nothing but stdin, stdout, stderr and `FD_CLOEXEC` everywhere else.
//! * Shared memory: the DD can write garbage into its own region and the exchange
//!   region at any time. The switch validates everything it reads there and the
//!   NIC validates what it reads from the driver region.
//! * Resources: the DD can burn its CPU, allocate memory up to the limits set by
//!   its supervisor (cgroups, rlimits) and flood its sockets. The switch
//!   supervises it (heartbeat in the exchange region) and restarts it.
//! * The kernel's attack surface through the allowed system calls.
//! * `RUST_BACKTRACE` must be unset in a DD: symbolizing a backtrace opens the
//!   executable, which kills the process (`SIGSYS`) instead of printing the panic.
//!   A plain panic prints its message and exits with 101.
//! * Ids outside: unless [`Policy::outside_ids`] is set, the process keeps the uid it
//!   was started with (root), albeit without any capability.

use std::fs;
use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{DumpableBehavior, Resource, Rlimit, Signal, WaitOptions};
use rustix::thread::{CapabilitiesSecureBits, CapabilitySet, CapabilitySets, UnshareFlags};
use seccompiler::BpfProgram;

use crate::policy::{PolicyError, ProcessKind};
use crate::sys;

/// Errors of entering the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The policy asks for something impossible (e.g. an empty root without a mount
    /// namespace).
    #[error("invalid sandbox policy: {0}")]
    InvalidPolicy(&'static str),
    /// The process has more than one thread.
    #[error("the process has {0} threads; entering the sandbox needs exactly one")]
    MultiThreaded(usize),
    /// Building the seccomp filter failed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A step failed.
    #[error("{step} failed: {source}")]
    Step {
        /// The step.
        step: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// After dropping them, some capability is still there.
    #[error("capabilities remain after dropping them: {0:?}")]
    CapabilitiesRemain(CapabilitySets),
    /// Installing the seccomp filter failed.
    #[error("installing the seccomp filter failed: {0}")]
    Seccomp(#[source] seccompiler::Error),
}

fn step(step: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Step {
        step,
        source: e.into(),
    }
}

fn step_io(step: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Step { step, source }
}

/// Which namespaces the process gets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    /// User namespace (owns the others; uid/gid 0 inside mapped to the own ids).
    pub user: bool,
    /// Mount namespace (needed for [`Policy::empty_root`]).
    pub mount: bool,
    /// Network namespace: no interface but a down loopback.
    pub net: bool,
    /// Pid namespace: the process forks once, see the module docs.
    pub pid: bool,
    /// System V IPC and POSIX message queues.
    pub ipc: bool,
    /// Hostname and domain name.
    pub uts: bool,
    /// Cgroup namespace (hides the cgroup paths).
    pub cgroup: bool,
}

impl Namespaces {
    /// All of them.
    pub const ALL: Self = Self {
        user: true,
        mount: true,
        net: true,
        pid: true,
        ipc: true,
        uts: true,
        cgroup: true,
    };
    /// None.
    pub const NONE: Self = Self {
        user: false,
        mount: false,
        net: false,
        pid: false,
        ipc: false,
        uts: false,
        cgroup: false,
    };

    fn flags(self) -> UnshareFlags {
        let mut f = UnshareFlags::empty();
        for (on, flag) in [
            (self.user, UnshareFlags::NEWUSER),
            (self.mount, UnshareFlags::NEWNS),
            (self.net, UnshareFlags::NEWNET),
            (self.pid, UnshareFlags::NEWPID),
            (self.ipc, UnshareFlags::NEWIPC),
            (self.uts, UnshareFlags::NEWUTS),
            (self.cgroup, UnshareFlags::NEWCGROUP),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }
}

/// Ids to run as outside the user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// What a sandboxed process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The seccomp allow-list.
    pub kind: ProcessKind,
    /// Own namespaces.
    pub namespaces: Namespaces,
    /// Pivot into an empty, read-only tmpfs (needs a mount namespace).
    pub empty_root: bool,
    /// Switch to these ids (and no supplementary groups) before creating the user
    /// namespace, so the process is unprivileged outside too. Needs a user namespace
    /// created by an unprivileged user, which some distributions restrict (Debian's
    /// `kernel.unprivileged_userns_clone`, Ubuntu's AppArmor userns restriction).
    /// Use an id of its own per driver domain: every process of that uid outside
    /// would hold all capabilities over the DD's namespaces.
    pub outside_ids: Option<Ids>,
    /// Address-space limit (`RLIMIT_AS`, bytes) for the process and its worker.
    pub memory_limit: Option<u64>,
}

impl Policy {
    /// The driver-domain policy: every namespace, an empty root, the
    /// [`DRIVER_DOMAIN`](crate::policy::DRIVER_DOMAIN) allow-list, ids unchanged.
    pub fn driver_domain() -> Self {
        Self {
            kind: ProcessKind::DriverDomain,
            namespaces: Namespaces::ALL,
            empty_root: true,
            outside_ids: None,
            memory_limit: None,
        }
    }

    fn validate(&self) -> Result<(), SandboxError> {
        if self.empty_root && !self.namespaces.mount {
            return Err(SandboxError::InvalidPolicy(
                "an empty root needs a mount namespace",
            ));
        }
        if self.outside_ids.is_some() && !self.namespaces.user {
            return Err(SandboxError::InvalidPolicy(
                "outside ids need a user namespace",
            ));
        }
        Ok(())
    }
}

/// A process isolated by [`Sandbox::isolate`] whose filter is not installed yet.
#[derive(Debug)]
pub struct Sandbox {
    filter: BpfProgram,
}

/// Enters the sandbox: [`Sandbox::isolate`] then [`Sandbox::lock`]. With a pid
/// namespace, returns only in the worker (see the module docs).
pub fn enter(policy: &Policy) -> Result<(), SandboxError> {
    Sandbox::isolate(policy)?.lock()
}

impl Sandbox {
    /// Everything but the seccomp filter (see the module docs). With a pid
    /// namespace the calling process becomes the reaper and this returns only in the
    /// worker, its child.
    pub fn isolate(policy: &Policy) -> Result<Self, SandboxError> {
        policy.validate()?;
        let threads = fs::read_dir("/proc/self/task")
            .map_err(step_io("counting threads (/proc/self/task)"))?
            .count();
        if threads != 1 {
            return Err(SandboxError::MultiThreaded(threads));
        }
        // Compiled (allocating) before anything is restricted.
        let filter = policy.kind.compile()?;
        let reaper_filter = if policy.namespaces.pid {
            Some(ProcessKind::Reaper.compile()?)
        } else {
            None
        };

        rustix::process::setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .map_err(step("setrlimit(RLIMIT_CORE)"))?;
        if let Some(limit) = policy.memory_limit {
            rustix::process::setrlimit(
                Resource::As,
                Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                },
            )
            .map_err(step("setrlimit(RLIMIT_AS)"))?;
        }

        if let Some(ids) = policy.outside_ids {
            switch_ids(ids)?;
        }
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );

        sys::unshare(policy.namespaces.flags()).map_err(step("unshare"))?;
        if policy.namespaces.user {
            write_id_maps(uid, gid)?;
        }
        rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(step("prctl(PR_SET_DUMPABLE, 0)"))?;

        if policy.namespaces.mount {
            rustix::mount::mount_change(
                "/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .map_err(step("making mounts private"))?;
        }
        if policy.empty_root {
            pivot_to_empty_root()?;
        }
        drop_capabilities()?;
        rustix::thread::set_no_new_privs(true).map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;

        if let Some(reaper_filter) = reaper_filter {
            fork_worker(&reaper_filter)?;
        }
        Ok(Self { filter })
    }

    /// Installs the seccomp filter. From here on any system call outside the
    /// allow-list kills the process.
    pub fn lock(self) -> Result<(), SandboxError> {
        // `apply_filter` sets no_new_privs again (a no-op) and installs the filter.
        seccompiler::apply_filter(&self.filter).map_err(SandboxError::Seccomp)
    }
}

/// Drops to `ids` outside: no supplementary groups, then gid, then uid. Stays
/// dumpable so the process can still write its own `/proc/self/*_map` afterwards.
fn switch_ids(ids: Ids) -> Result<(), SandboxError> {
    use rustix::process::{Gid, Uid};
    // The process is single-threaded, so the per-thread calls are per-process.
    rustix::thread::set_thread_groups(&[]).map_err(step("setgroups([])"))?;
    let gid = Gid::from_raw(ids.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(step("setresgid"))?;
    let uid = Uid::from_raw(ids.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(step("setresuid"))?;
    rustix::process::set_dumpable_behavior(DumpableBehavior::Dumpable)
        .map_err(step("prctl(PR_SET_DUMPABLE, 1)"))?;
    Ok(())
}

/// Maps uid and gid 0 inside to the own ids outside (the one mapping a process may
/// write for itself).
fn write_id_maps(uid: u32, gid: u32) -> Result<(), SandboxError> {
    fs::write("/proc/self/setgroups", "deny").map_err(step_io("writing /proc/self/setgroups"))?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1\n"))
        .map_err(step_io("writing /proc/self/uid_map"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1\n"))
        .map_err(step_io("writing /proc/self/gid_map"))?;
    Ok(())
}

/// Where the empty root is mounted before the pivot: the first of these that is a
/// directory. Any directory would do (the mount is private to the new namespace); a
/// tmpfs stacked on `/` itself cannot be pivoted into (`EINVAL`/`EBUSY`), and `/proc`
/// exists wherever this code runs (it read `/proc/self/task` already).
const MOUNT_POINTS: [&str; 2] = ["/tmp", "/proc"];

/// Mounts an empty tmpfs, pivots into it, detaches the old root and makes the new
/// one read-only.
fn pivot_to_empty_root() -> Result<(), SandboxError> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let target = MOUNT_POINTS
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_dir()))
        .ok_or(SandboxError::InvalidPolicy(
            "no directory to mount the empty root on",
        ))?;
    rustix::mount::mount(
        "none",
        target,
        "tmpfs",
        flags,
        c"size=4k,nr_inodes=2,mode=0555",
    )
    .map_err(step("mounting the empty root"))?;
    rustix::process::chdir(target).map_err(step("chdir to the empty root"))?;
    // pivot_root(".", "."): the tmpfs becomes the root, the old root ends up
    // stacked on top of it, and is detached next.
    rustix::process::pivot_root(".", ".").map_err(step("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(step("detaching the old root"))?;
    rustix::process::chdir("/").map_err(step("chdir /"))?;
    rustix::mount::mount_remount("/", flags | MountFlags::RDONLY | MountFlags::BIND, c"")
        .map_err(step("remounting the empty root read-only"))?;
    Ok(())
}

/// Locks securebits, clears the ambient and bounding sets and empties effective,
/// permitted and inheritable.
fn drop_capabilities() -> Result<(), SandboxError> {
    rustix::thread::set_capabilities_secure_bits(
        CapabilitiesSecureBits::NO_ROOT
            | CapabilitiesSecureBits::NO_ROOT_LOCKED
            | CapabilitiesSecureBits::NO_SETUID_FIXUP
            | CapabilitiesSecureBits::NO_SETUID_FIXUP_LOCKED
            | CapabilitiesSecureBits::KEEP_CAPS_LOCKED
            | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE
            | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED,
    )
    .map_err(step("prctl(PR_SET_SECUREBITS)"))?;
    rustix::thread::clear_ambient_capability_set().map_err(step("clearing ambient caps"))?;
    // Every capability the kernel knows: dropping one past the last gives EINVAL.
    for bit in 0..64 {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << bit,
        )) {
            Ok(()) => {}
            Err(Errno::INVAL) if bit > 0 => break,
            Err(e) => return Err(step("prctl(PR_CAPBSET_DROP)")(e)),
        }
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(step("capset"))?;
    let now = rustix::thread::capabilities(None).map_err(step("capget"))?;
    if !now.effective.is_empty() || !now.permitted.is_empty() || !now.inheritable.is_empty() {
        return Err(SandboxError::CapabilitiesRemain(now));
    }
    Ok(())
}

/// Forks the worker into the new pid namespace. Returns in the worker; the parent
/// becomes the reaper and never returns.
fn fork_worker(reaper_filter: &BpfProgram) -> Result<(), SandboxError> {
    // The worker learns of an early death of the reaper through this pipe: the
    // reaper holds the write end until it exits.
    let (alive_r, alive_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(step("pipe"))?;
    // SAFETY: `isolate` checked the process is single-threaded and nothing since
    // started a thread.
    match unsafe { sys::fork() }.map_err(step("fork"))? {
        sys::Forked::Parent(child) => {
            drop(alive_r);
            reap(child, reaper_filter, alive_w)
        }
        sys::Forked::Child => {
            drop(alive_w);
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(step("prctl(PR_SET_PDEATHSIG)"))?;
            // The reaper may have died before the line above: then its write end
            // is closed and the pipe reports a hang-up.
            let mut fds = [PollFd::new(&alive_r, PollFlags::IN)];
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero)).map_err(step("poll(alive pipe)"))?;
            if fds[0].revents().contains(PollFlags::HUP) {
                sys::exit_now(1);
            }
            Ok(())
        }
    }
}

/// The reaper: installs its own filter, waits for the worker and ends the same way.
fn reap(child: rustix::process::Pid, filter: &BpfProgram, _alive: OwnedFd) -> ! {
    if let Err(e) = seccompiler::apply_filter(filter) {
        eprintln!("sandbox reaper: installing the seccomp filter failed: {e}");
        sys::exit_now(125);
    }
    loop {
        match rustix::process::waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    sys::exit_now(code);
                }
                if let Some(sig) = status.terminating_signal() {
                    sys::die_by_signal(sig);
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(_) => sys::exit_now(125),
        }
    }
}
