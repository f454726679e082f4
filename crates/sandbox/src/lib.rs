//! Sandboxing of driver-domain processes.
//!
//! A driver domain (DD) is the `twin` binary started by the switch with an internal
//! subcommand to run one uplink NIC's driver. It is given everything it needs as fds
//! and then locked down:
//!
//! 1. [`fdpass`]: the switch sends it, over the DD's control socket (its stdin), the
//!    memfd of its driver region, the memfd of the exchange region, eventfds, and a
//!    unix stream socket already connected to the NIC's vhost-user socket (the DD
//!    can open nothing itself).
//! 2. [`enter`] (module [`jail`]): own user, mount, net, pid, ipc, uts and cgroup
//!    namespaces, an empty read-only root, no capabilities, `no_new_privs`, and last
//!    a seccomp allow-list that kills the process on any other system call.
//! 3. [`policy`]: the allow-lists, one documented constant per process kind
//!    ([`policy::DRIVER_DOMAIN`], [`policy::REAPER`]), each entry with its reason.
//!
//! The DD is single-threaded: the allow-list has no `clone`. With a pid namespace,
//! [`enter`] forks once; the original process stays as a sandboxed reaper that
//! forwards the worker's exit status (see [`jail`]).
//!
//! What is isolated and what is not is listed in [`jail`]; the system calls and why
//! each is needed in [`policy`]. The only `unsafe` code is in the private `sys`
//! module (`fork`, `unshare`, re-raising a signal, `_exit`, the exec hook of
//! [`spawn_with_stdio_only`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let control = sandbox::fdpass::control_from_stdin()?;
//! let msg = sandbox::fdpass::recv(&control, 4096, 8)?; // regions, eventfds, NIC socket
//! sandbox::enter(&sandbox::Policy::driver_domain())?;
//! // ... map the regions, run the driver ...
//! # drop(msg);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod fdpass;
pub mod jail;
pub mod policy;
mod sys;

/// Makes the child that `cmd` starts inherit standard input, output and error and no
/// other descriptor: every other one is made close-on-exec between fork and exec
/// (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`). A driver domain must start with
/// exactly the descriptors the switch hands it, never one that merely happened to be
/// open in the switch (a client's memory, the launching shell's files).
pub fn spawn_with_stdio_only(cmd: &mut std::process::Command) -> &mut std::process::Command {
    sys::exec_with_stdio_only(cmd);
    cmd
}

pub use jail::{enter, Ids, Namespaces, Policy, Sandbox, SandboxError};
pub use policy::{Allowed, Args, PolicyError, ProcessKind};
