//! The switch's control socket: a unix stream socket that takes one command per
//! connection, as a line of text, and answers with one line.
//!
//! Commands:
//! * `status`: the switch's report (the same JSON it prints when it stops);
//! * `fault UPLINK KIND`: inject a fault into the uplink's driver domain, `KIND` one
//!   of `kill`, `panic`, `hang`, `garbage`, `bogus-length`, `open-file`, `open-socket`;
//!   or into its twin: `twin-forbidden-read`, `twin-wild-write`, `twin-panic`,
//!   `twin-stuck`. Answers `ok` or `error: ...`.
//! * `mode UPLINK MODE`: move the uplink's fast path to `inline`, `domain` or `twin`
//!   at run time (a handover: no reordering, no duplicates). Answers `ok ...` once
//!   the change is under way.
//!
//! The listener thread hands each command to the data-path thread, which carries it
//! out between two batches and answers. Limits: a command line is at most 256 bytes;
//! one connection at a time; anyone who can reach the socket controls the switch, so
//! it is created mode 0600.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
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
                    format!("unknown fault {kind:?} (kill, panic, hang, garbage, bogus-length, open-file, open-socket, twin-forbidden-read, twin-wild-write, twin-panic, twin-stuck)")
                })?;
                Ok(Command::Fault {
                    uplink: uplink.to_string(),
                    kind,
                })
            }
            ["mode", uplink, mode] => Ok(Command::Mode {
                uplink: uplink.to_string(),
                mode: mode.parse()?,
            }),
            _ => Err(format!(
                "unknown command {line:?} (status | fault UPLINK KIND | mode UPLINK MODE)"
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

/// Listens on `path` (replacing a stale socket) and returns the requests' channel.
pub fn serve(path: &Path) -> Result<Receiver<Request>, CtlError> {
    let _ = std::fs::remove_file(path);
    let listen_err = |source| CtlError::Listen {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::Builder::new()
        .name("ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                let mut reader = BufReader::new((&conn).take_limit());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let answer = match Command::parse(line.trim()) {
                    Err(e) => format!("error: {e}"),
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
