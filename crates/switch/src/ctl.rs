//! The switch's control socket: a unix stream socket that takes one command per
//! connection, as a line of text, and answers with one line.
//!
//! Commands:
//! * `status`: the switch's report (the same JSON it prints when it stops);
//! * `fault UPLINK KIND`: inject a fault into the uplink's driver domain, `KIND` one
//!   of `kill`, `panic`, `hang`, `garbage`, `bogus-length`, `open-file`, `open-socket`,
//!   `refuse-handover`;
//!   or into its twin: `twin-forbidden-read`, `twin-wild-write`, `twin-panic`,
//!   `twin-stuck`. Answers `ok` or `error: ...`.
//! * `revive UPLINK`: start a new driver domain for an uplink that gave up (its
//!   restart budget spent), with a fresh budget. Answers `ok ...` or `error: ...`.
//! * `mode UPLINK MODE`: move the uplink's fast path to `inline`, `domain` or `twin`
//!   at run time (a handover: no reordering, no duplicates). Answers `ok ...` once
//!   the change is under way.
//!
//! The listener thread hands each command to the data-path thread, which carries it
//! out between two batches and answers. Limits: a command line is at most 256 bytes;
//! one connection at a time.
//!
//! Who may use it ([`Access`]): whoever can reach the socket controls the switch, so
//! * the socket exists with mode 0600 from the moment its name appears: it is bound
//!   inside a fresh private (0700) directory, given its mode there, and renamed into
//!   place;
//! * only a stale socket is replaced: a path that is not a socket, or a socket some
//!   process still answers on, is an error;
//! * every connection's peer is checked with `SO_PEERCRED` against the allowed uids
//!   (by default the switch's own effective uid); others get `error: permission
//!   denied`, logged at most once a second;
//! * fault injection (which can make a twin write wildly into a driver domain's
//!   memory) is refused unless the switch was started with it allowed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The socket could not be created.
    #[error("cannot listen on the control socket {path}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a stale socket is at the path.
    #[error("will not replace {path}: {why}")]
    PathTaken {
        /// Socket path.
        path: PathBuf,
        /// What is there.
        why: &'static str,
    },
}

/// Who may use the control socket, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// User ids allowed to connect (checked with `SO_PEERCRED`); empty means the
    /// switch's own effective uid only.
    pub uids: Vec<u32>,
    /// Whether `fault` commands are carried out (tests and fault campaigns only).
    pub fault_injection: bool,
}

impl Access {
    fn allows(&self, uid: u32) -> bool {
        if self.uids.is_empty() {
            uid == rustix::process::geteuid().as_raw()
        } else {
            self.uids.contains(&uid)
        }
    }
}

/// What a fault injection asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL the driver domain.
    Kill,
    /// A fault the domain commits itself.
    InDomain(driver_domain::Fault),
    /// A fault the twin's driver commits (built with its `fault-injection` feature).
    InTwin(driver_env::InjectedFault),
}

/// Twin faults by name.
const TWIN_FAULTS: [(&str, driver_env::InjectedFault); 4] = [
    (
        "twin-forbidden-read",
        driver_env::InjectedFault::ForbiddenRead,
    ),
    ("twin-wild-write", driver_env::InjectedFault::WildWrite),
    ("twin-panic", driver_env::InjectedFault::Panic),
    ("twin-stuck", driver_env::InjectedFault::Stuck),
];

impl FaultKind {
    /// Parses `kill`, a [`driver_domain::Fault`] name or a twin fault name.
    pub fn parse(s: &str) -> Option<FaultKind> {
        if s == "kill" {
            return Some(FaultKind::Kill);
        }
        if let Some((_, f)) = TWIN_FAULTS.iter().find(|(n, _)| *n == s) {
            return Some(FaultKind::InTwin(*f));
        }
        driver_domain::Fault::from_name(s).map(FaultKind::InDomain)
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The report.
    Status,
    /// Inject a fault into an uplink's driver domain or twin.
    Fault {
        /// Uplink name.
        uplink: String,
        /// Which fault.
        kind: FaultKind,
    },
    /// Start a new driver domain for an uplink that gave up.
    Revive {
        /// Uplink name.
        uplink: String,
    },
    /// Move an uplink's fast path.
    Mode {
        /// Uplink name.
        uplink: String,
        /// Where to.
        mode: crate::config::UplinkMode,
    },
}

impl Command {
    /// Parses one command line.
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status"] => Ok(Command::Status),
            ["fault", uplink, kind] => {
                let kind = FaultKind::parse(kind).ok_or_else(|| {
                    format!("unknown fault {kind:?} (kill, panic, hang, garbage, bogus-length, open-file, open-socket, refuse-handover, twin-forbidden-read, twin-wild-write, twin-panic, twin-stuck)")
                })?;
                Ok(Command::Fault {
                    uplink: uplink.to_string(),
                    kind,
                })
            }
            ["revive", uplink] => Ok(Command::Revive {
                uplink: uplink.to_string(),
            }),
            ["mode", uplink, mode] => Ok(Command::Mode {
                uplink: uplink.to_string(),
                mode: mode.parse()?,
            }),
            _ => Err(format!(
                "unknown command {line:?} (status | fault UPLINK KIND | mode UPLINK MODE | revive UPLINK)"
            )),
        }
    }
}

/// A command waiting for the data path, with where to send the answer.
#[derive(Debug)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The answer goes here.
    pub reply: SyncSender<String>,
}

/// Removes a stale socket at `path`; refuses anything else.
fn clear_path(path: &Path) -> Result<(), CtlError> {
    let taken = |why| CtlError::PathTaken {
        path: path.to_owned(),
        why,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CtlError::Listen {
            path: path.to_owned(),
            source,
        }),
        Ok(md) if !md.file_type().is_socket() => Err(taken("it exists and is not a socket")),
        Ok(_) if UnixStream::connect(path).is_ok() => {
            Err(taken("another process serves this socket"))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|source| CtlError::Listen {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Binds a socket that appears at `path` with mode 0600 already: bound in a private
/// directory next to it, given its mode, then renamed into place.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = parent.join(format!(".{name}.{}.bind", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("s");
    let bound = UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    bound
}

/// Listens on `path` (replacing only a stale socket) and returns the requests'
/// channel; `access` says who may do what.
pub fn serve(path: &Path, access: Access) -> Result<Receiver<Request>, CtlError> {
    clear_path(path)?;
    let listen_err = |source| CtlError::Listen {
        path: path.to_owned(),
        source,
    };
    let listener = bind_private(path).map_err(listen_err)?;
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::Builder::new()
        .name("ctl".into())
        .spawn(move || {
            let mut refused_logged: Option<std::time::Instant> = None;
            for conn in listener.incoming().flatten() {
                let peer = rustix::net::sockopt::socket_peercred(&conn).ok();
                if !peer.is_some_and(|p| access.allows(p.uid.as_raw())) {
                    if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        refused_logged = Some(std::time::Instant::now());
                        tracing::warn!(
                            uid = peer.map(|p| p.uid.as_raw()),
                            pid = peer.map(|p| p.pid.as_raw_nonzero().get()),
                            "control socket: connection from a user that is not allowed"
                        );
                    }
                    // Take the line (briefly) so the client reads the answer
                    // rather than a reset.
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                    let _ = BufReader::new((&conn).take_limit()).read_line(&mut String::new());
                    let mut w = &conn;
                    let _ = writeln!(w, "error: permission denied");
                    continue;
                }
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                let mut reader = BufReader::new((&conn).take_limit());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let answer = match Command::parse(line.trim()) {
                    Err(e) => format!("error: {e}"),
                    Ok(Command::Fault { .. }) if !access.fault_injection => {
                        "error: fault injection is disabled (start the switch with --fault-injection)"
                            .to_string()
                    }
                    Ok(command) => {
                        let (reply, answer) = mpsc::sync_channel(1);
                        if tx.send(Request { command, reply }).is_err() {
                            return;
                        }
                        answer
                            .recv_timeout(Duration::from_secs(5))
                            .unwrap_or_else(|_| "error: the data path did not answer".into())
                    }
                };
                let mut w = &conn;
                let _ = writeln!(w, "{answer}");
            }
        })
        .map_err(listen_err)?;
    Ok(rx)
}

/// A reader limited to one command line's worth of bytes.
trait TakeLimit: std::io::Read + Sized {
    fn take_limit(self) -> std::io::Take<Self> {
        self.take(256)
    }
}

impl<R: std::io::Read> TakeLimit for R {}

/// Sends one command line to the switch at `path` and returns its answer.
pub fn call(path: &Path, line: &str) -> std::io::Result<String> {
    let mut conn = std::os::unix::net::UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(conn, "{line}")?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        assert_eq!(
            Command::parse("fault u0 kill"),
            Ok(Command::Fault {
                uplink: "u0".into(),
                kind: FaultKind::Kill
            })
        );
        assert_eq!(
            Command::parse("fault u0 bogus-length"),
            Ok(Command::Fault {
                uplink: "u0".into(),
                kind: FaultKind::InDomain(driver_domain::Fault::BogusLength)
            })
        );
        assert_eq!(
            Command::parse("fault u0 twin-stuck"),
            Ok(Command::Fault {
                uplink: "u0".into(),
                kind: FaultKind::InTwin(driver_env::InjectedFault::Stuck)
            })
        );
        assert_eq!(
            Command::parse("mode u0 twin"),
            Ok(Command::Mode {
                uplink: "u0".into(),
                mode: crate::config::UplinkMode::Twin
            })
        );
        assert_eq!(
            Command::parse("revive u0"),
            Ok(Command::Revive {
                uplink: "u0".into()
            })
        );
        assert!(Command::parse("mode u0 fast")
            .unwrap_err()
            .contains("unknown mode"));
        assert!(Command::parse("fault u0 melt")
            .unwrap_err()
            .contains("unknown fault"));
        assert!(Command::parse("reboot")
            .unwrap_err()
            .contains("unknown command"));
    }
}
