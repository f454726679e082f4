//! The seccomp allow-lists: one per kind of sandboxed process, each a documented
//! constant table, compiled to a BPF program with `seccompiler`.
//!
//! Any system call not in the table, or in it with arguments its check refuses, kills
//! the whole process (`SECCOMP_RET_KILL_PROCESS`: the parent sees it die of
//! `SIGSYS`). So do system calls of another ABI (a 32-bit or x32 call from a 64-bit
//! process): `seccompiler` checks the architecture first, and x32 numbers match no
//! entry.
//!
//! # The driver-domain list ([`DRIVER_DOMAIN`])
//!
//! A single-threaded process that maps the memfds it was given, runs a virtio-net
//! driver against them, talks vhost-user over an already-connected socket (sending fds
//! with `SCM_RIGHTS`, among them eventfds it creates) and the switch's exchange
//! protocol over another, and sleeps in epoll. It opens no file, creates no socket,
//! starts no thread or process and executes no new code. Per system call:
//!
//! | syscall | arguments allowed | why |
//! |---|---|---|
//! | `read`, `write` | any | eventfds (8-byte counters), sockets, logging to stderr |
//! | `readv`, `writev` | any | vectored socket I/O |
//! | `recvmsg`, `sendmsg` | any | vhost-user and control messages, with `SCM_RIGHTS` fds |
//! | `close` | any | dropping fds |
//! | `epoll_create1`, `epoll_ctl`, `epoll_wait`¹, `epoll_pwait` | any | the event loop |
//! | `poll`¹, `ppoll` | any | one-fd waits |
//! | `eventfd2` | any | kick/call eventfds the vhost-user frontend creates and sends |
//! | `mmap`, `mprotect` | `prot` without `PROT_EXEC` | mapping received memfds; the allocator. No new executable memory |
//! | `munmap`, `madvise`, `mremap`, `brk` | any | the allocator (glibc `realloc` of large blocks uses `mremap`) |
//! | `fcntl` | `cmd` ∈ `F_GETFD F_SETFD F_GETFL F_SETFL F_DUPFD_CLOEXEC F_GET_SEALS` | nonblocking and cloexec flags; `File::try_clone`; checking a memfd's seals |
//! | `ioctl` | `request` ∈ `FIONBIO FIOCLEX` | Rust's `set_nonblocking` uses `FIONBIO` on Linux |
//! | `fstat`, `newfstatat`, `statx` | `newfstatat`/`statx` only with `AT_EMPTY_PATH` | `File::metadata` of a received memfd (its size); the root is empty anyway |
//! | `futex` | any | std's locks and once-cells |
//! | `clock_gettime`, `clock_nanosleep`, `nanosleep` | any | time and sleep (normally the vDSO; the call is the fallback) |
//! | `sched_yield` | any | spin-wait back-off |
//! | `getrandom` | any | std's `HashMap` seeds |
//! | `rt_sigreturn`, `rt_sigprocmask`, `sigaltstack` | any | returning from std's stack-overflow handler; masks |
//! | `restart_syscall` | any | a sleep interrupted by `SIGSTOP`/`SIGCONT` from the supervisor resumes through it |
//! | `getpid`, `gettid` | any | logging |
//! | `exit`, `exit_group` | any | ending |
//!
//! ¹ x86_64 only (aarch64 has only the `p` variants).
//!
//! A domain that drives a kernel socket with shared rings, AF_PACKET or AF_XDP
//! ([`RING_DOMAIN_EXTRA`], process kind [`ProcessKind::RingDomain`]), gets one
//! call more: `sendto` with a length of 0 (checked as a 64-bit value), the
//! wake-up that hands the transmit ring's frames to the kernel. A `sendto` with data, which could send bytes on any socket the
//! domain holds, stays forbidden; the other kinds do not get even that.
//!
//! Not allowed, among others: `open`/`openat` (no files), `socket`/`connect`/`bind`
//! (no new endpoints), `clone`/`clone3`/`fork`/`execve` (single-threaded, no new
//! programs), `memfd_create` (every region comes from the switch), `kill`/`tgkill`/
//! `rt_sigaction` (an `abort()` therefore ends as `SIGSYS` instead of `SIGABRT`; a
//! Rust panic still exits with status 101), `ptrace`, `prctl`, `seccomp`, `mount`,
//! `setns`/`unshare`, `bpf`, `io_uring_*`, `userfaultfd`, `perf_event_open`.
//!
//! # The reaper list ([`REAPER`])
//!
//! With a pid namespace the sandboxed process forks once: the worker becomes PID 1 of
//! the new namespace and the original process only waits for it and forwards its exit
//! status (re-raising a fatal signal on itself). That reaper is sandboxed too (same
//! namespaces, empty root, no capabilities) with this smaller list: `wait4` and
//! `waitid`; `rt_sigaction`, `rt_sigprocmask`, `kill`, `tgkill`, `getpid`, `gettid` to
//! re-raise the worker's signal; `rt_sigreturn`, `restart_syscall`, `write` (to fd 2
//! only), `exit`, `exit_group`. The reaper still holds copies of the fds the process
//! had before the fork, but can do nothing with them: no `read`, `mmap`, `sendmsg`,
//! and `write` only to stderr.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors of building a filter.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The target architecture has no seccomp support in `seccompiler`.
    #[error("seccomp filters are not supported on this architecture")]
    UnsupportedArch,
    /// `seccompiler` refused the rules.
    #[error("building the seccomp filter for {kind:?} failed: {source}")]
    Build {
        /// The policy.
        kind: ProcessKind,
        /// The error.
        #[source]
        source: seccompiler::BackendError,
    },
}

/// How the arguments of an allowed system call are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// Any arguments.
    Any,
    /// Argument `index`, as a 32-bit value, is one of `values`.
    OneOf {
        /// Argument position (0-based).
        index: u8,
        /// The allowed values.
        values: &'static [u64],
    },
    /// Argument `index`, as a 32-bit value, has none of the bits of `mask`.
    BitsClear {
        /// Argument position (0-based).
        index: u8,
        /// The forbidden bits.
        mask: u64,
    },
    /// Argument `index`, as a 32-bit value, has all the bits of `mask`.
    BitsSet {
        /// Argument position (0-based).
        index: u8,
        /// The required bits.
        mask: u64,
    },
    /// Argument `index`, as a 64-bit value, is 0 (a length: a 32-bit check
    /// would let 2^32 through).
    Zero {
        /// Argument position (0-based).
        index: u8,
    },
}

/// One allowed system call.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// Its name (for documentation and reports).
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// The argument check.
    pub args: Args,
    /// Why the process needs it.
    pub why: &'static str,
}

const fn any(name: &'static str, nr: i64, why: &'static str) -> Allowed {
    Allowed {
        name,
        nr,
        args: Args::Any,
        why,
    }
}

const fn with(name: &'static str, nr: i64, args: Args, why: &'static str) -> Allowed {
    Allowed {
        name,
        nr,
        args,
        why,
    }
}

const NO_EXEC: Args = Args::BitsClear {
    index: 2,
    mask: libc::PROT_EXEC as u64,
};

/// The driver domain's allow-list (see the module docs for the table).
pub const DRIVER_DOMAIN: &[Allowed] = &[
    any("read", libc::SYS_read, "eventfds, sockets"),
    any(
        "write",
        libc::SYS_write,
        "eventfds, sockets, stderr logging",
    ),
    any("readv", libc::SYS_readv, "vectored socket reads"),
    any("writev", libc::SYS_writev, "vectored socket writes"),
    any(
        "recvmsg",
        libc::SYS_recvmsg,
        "vhost-user and control messages with fds",
    ),
    any(
        "sendmsg",
        libc::SYS_sendmsg,
        "vhost-user and control messages with fds",
    ),
    any("close", libc::SYS_close, "dropping fds"),
    any("epoll_create1", libc::SYS_epoll_create1, "the event loop"),
    any("epoll_ctl", libc::SYS_epoll_ctl, "the event loop"),
    #[cfg(target_arch = "x86_64")]
    any("epoll_wait", libc::SYS_epoll_wait, "the event loop"),
    any("epoll_pwait", libc::SYS_epoll_pwait, "the event loop"),
    #[cfg(target_arch = "x86_64")]
    any("poll", libc::SYS_poll, "one-fd waits"),
    any("ppoll", libc::SYS_ppoll, "one-fd waits"),
    any(
        "eventfd2",
        libc::SYS_eventfd2,
        "kick/call eventfds of the vhost-user frontend",
    ),
    with(
        "mmap",
        libc::SYS_mmap,
        NO_EXEC,
        "mapping received memfds; the allocator",
    ),
    with(
        "mprotect",
        libc::SYS_mprotect,
        NO_EXEC,
        "the allocator; guard pages",
    ),
    any(
        "munmap",
        libc::SYS_munmap,
        "the allocator; unmapping regions",
    ),
    any("madvise", libc::SYS_madvise, "the allocator"),
    any(
        "mremap",
        libc::SYS_mremap,
        "the allocator (realloc of large blocks)",
    ),
    any("brk", libc::SYS_brk, "the allocator"),
    with(
        "fcntl",
        libc::SYS_fcntl,
        Args::OneOf {
            index: 1,
            values: &[
                libc::F_GETFD as u64,
                libc::F_SETFD as u64,
                libc::F_GETFL as u64,
                libc::F_SETFL as u64,
                libc::F_DUPFD_CLOEXEC as u64,
                libc::F_GET_SEALS as u64,
            ],
        },
        "fd flags; File::try_clone; memfd seals",
    ),
    with(
        "ioctl",
        libc::SYS_ioctl,
        Args::OneOf {
            index: 1,
            values: &[libc::FIONBIO, libc::FIOCLEX],
        },
        "std's set_nonblocking (FIONBIO)",
    ),
    any("fstat", libc::SYS_fstat, "size of a received memfd"),
    with(
        "newfstatat",
        libc::SYS_newfstatat,
        Args::BitsSet {
            index: 3,
            mask: libc::AT_EMPTY_PATH as u64,
        },
        "glibc's fstat",
    ),
    with(
        "statx",
        libc::SYS_statx,
        Args::BitsSet {
            index: 2,
            mask: libc::AT_EMPTY_PATH as u64,
        },
        "std's File::metadata",
    ),
    any("futex", libc::SYS_futex, "std's locks"),
    any(
        "clock_gettime",
        libc::SYS_clock_gettime,
        "time (vDSO fallback)",
    ),
    any("clock_nanosleep", libc::SYS_clock_nanosleep, "sleeping"),
    any("nanosleep", libc::SYS_nanosleep, "sleeping"),
    any("sched_yield", libc::SYS_sched_yield, "spin back-off"),
    any("getrandom", libc::SYS_getrandom, "HashMap seeds"),
    any(
        "rt_sigreturn",
        libc::SYS_rt_sigreturn,
        "returning from a signal handler",
    ),
    any("rt_sigprocmask", libc::SYS_rt_sigprocmask, "signal masks"),
    any(
        "sigaltstack",
        libc::SYS_sigaltstack,
        "std's stack-overflow handler",
    ),
    any(
        "restart_syscall",
        libc::SYS_restart_syscall,
        "resuming after SIGSTOP/SIGCONT",
    ),
    any("getpid", libc::SYS_getpid, "logging"),
    any("gettid", libc::SYS_gettid, "logging"),
    any("exit", libc::SYS_exit, "ending"),
    any("exit_group", libc::SYS_exit_group, "ending"),
];

/// What a domain driving an AF_PACKET or AF_XDP socket gets on top of
/// [`DRIVER_DOMAIN`].
pub const RING_DOMAIN_EXTRA: &[Allowed] = &[with(
    "sendto",
    libc::SYS_sendto,
    Args::Zero { index: 2 },
    "the transmit ring's wake-up: a send of no bytes",
)];

/// The reaper's allow-list (the process that waits for a worker in a pid namespace).
pub const REAPER: &[Allowed] = &[
    any("wait4", libc::SYS_wait4, "waiting for the worker"),
    any("waitid", libc::SYS_waitid, "waiting for the worker"),
    any(
        "rt_sigaction",
        libc::SYS_rt_sigaction,
        "restoring the default action to re-raise",
    ),
    any(
        "rt_sigprocmask",
        libc::SYS_rt_sigprocmask,
        "unblocking the re-raised signal",
    ),
    any(
        "rt_sigreturn",
        libc::SYS_rt_sigreturn,
        "returning from a signal handler",
    ),
    any("kill", libc::SYS_kill, "re-raising the worker's signal"),
    any("tgkill", libc::SYS_tgkill, "re-raising the worker's signal"),
    any("getpid", libc::SYS_getpid, "re-raising the worker's signal"),
    any("gettid", libc::SYS_gettid, "re-raising the worker's signal"),
    any(
        "restart_syscall",
        libc::SYS_restart_syscall,
        "resuming after SIGSTOP/SIGCONT",
    ),
    with(
        "write",
        libc::SYS_write,
        Args::OneOf {
            index: 0,
            values: &[2],
        },
        "diagnostics on stderr (fd 2 only)",
    ),
    any("exit", libc::SYS_exit, "ending"),
    any("exit_group", libc::SYS_exit_group, "ending"),
];

/// The kinds of sandboxed process, one allow-list each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A driver domain ([`DRIVER_DOMAIN`]).
    DriverDomain,
    /// A driver domain over an AF_PACKET or AF_XDP socket ([`DRIVER_DOMAIN`] and
    /// [`RING_DOMAIN_EXTRA`]).
    RingDomain,
    /// The pid-namespace reaper ([`REAPER`]).
    Reaper,
}

impl ProcessKind {
    /// The allow-list of this kind.
    pub fn allowed(self) -> Vec<Allowed> {
        match self {
            ProcessKind::DriverDomain => DRIVER_DOMAIN.to_vec(),
            ProcessKind::RingDomain => [DRIVER_DOMAIN, RING_DOMAIN_EXTRA].concat(),
            ProcessKind::Reaper => REAPER.to_vec(),
        }
    }

    /// Compiles the allow-list to a BPF program that kills the process on any other
    /// system call.
    pub fn compile(self) -> Result<BpfProgram, PolicyError> {
        compile(self, &self.allowed())
    }
}

fn target_arch() -> Result<TargetArch, PolicyError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(PolicyError::UnsupportedArch)
    }
}

fn compile(kind: ProcessKind, list: &[Allowed]) -> Result<BpfProgram, PolicyError> {
    let err = |source| PolicyError::Build { kind, source };
    let cond = |index: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(err)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in list {
        let chain = match a.args {
            // An empty chain matches unconditionally.
            Args::Any => Vec::new(),
            Args::OneOf { index, values } => values
                .iter()
                .map(|&v| SeccompRule::new(vec![cond(index, SeccompCmpOp::Eq, v)?]).map_err(err))
                .collect::<Result<_, _>>()?,
            Args::BitsClear { index, mask } => {
                vec![
                    SeccompRule::new(vec![cond(index, SeccompCmpOp::MaskedEq(mask), 0)?])
                        .map_err(err)?,
                ]
            }
            Args::BitsSet { index, mask } => {
                vec![
                    SeccompRule::new(vec![cond(index, SeccompCmpOp::MaskedEq(mask), mask)?])
                        .map_err(err)?,
                ]
            }
            Args::Zero { index } => {
                let zero =
                    SeccompCondition::new(index, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)
                        .map_err(err)?;
                vec![SeccompRule::new(vec![zero]).map_err(err)?]
            }
        };
        rules.insert(a.nr, chain);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn lists_compile() {
        for kind in [
            ProcessKind::DriverDomain,
            ProcessKind::RingDomain,
            ProcessKind::Reaper,
        ] {
            let prog = kind.compile().unwrap();
            assert!(
                !prog.is_empty() && prog.len() < 4096,
                "{kind:?}: {}",
                prog.len()
            );
        }
    }

    #[test]
    fn no_duplicates() {
        for kind in [
            ProcessKind::DriverDomain,
            ProcessKind::RingDomain,
            ProcessKind::Reaper,
        ] {
            let mut seen = HashSet::new();
            for a in kind.allowed() {
                assert!(seen.insert(a.nr), "{} twice in {kind:?}", a.name);
            }
        }
    }

    #[test]
    fn dangerous_calls_are_absent() {
        let forbidden = [
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_memfd_create,
            libc::SYS_ptrace,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_kill,
            libc::SYS_tgkill,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_userfaultfd,
            libc::SYS_perf_event_open,
        ];
        for kind in [ProcessKind::DriverDomain, ProcessKind::RingDomain] {
            for nr in forbidden {
                assert!(
                    kind.allowed().iter().all(|a| a.nr != nr),
                    "syscall {nr} allowed in {kind:?}"
                );
            }
        }
        assert!(
            DRIVER_DOMAIN.iter().all(|a| a.nr != libc::SYS_sendto),
            "sendto is the AF_PACKET kind's alone"
        );
        #[cfg(target_arch = "x86_64")]
        for nr in [libc::SYS_open, libc::SYS_fork, libc::SYS_vfork] {
            assert!(DRIVER_DOMAIN.iter().all(|a| a.nr != nr));
        }
    }
}
