//! The switch's control socket: a unix stream socket that takes one request per
//! connection, as one line of JSON, and answers with one line of JSON. The types of
//! the protocol live here and nowhere else: the switch's listener parses
//! [`Command`]s and writes [`Response`]s, `twin ctl` builds the same [`Command`]
//! from its arguments ([`Command::from_words`]) and reads the [`Response`]
//! ([`call`]).
//!
//! Requests (`command` names the variant of [`Command`]):
//! * `{"command":"status"}`: the switch's report (the same JSON object it prints
//!   when it stops);
//! * `{"command":"fault","uplink":"u0","fault":"kill"}`: inject a fault into the
//!   uplink's driver domain or its twin (see [`Fault`] for the names; refused unless
//!   the switch runs with fault injection allowed);
//! * `{"command":"revive","uplink":"u0"}`: start a new driver domain for an uplink
//!   that gave up (its restart budget spent), with a fresh budget;
//! * `{"command":"mode","uplink":"u0","mode":"twin"}`: move the uplink's fast path
//!   to `inline`, `domain` or `twin` at run time (a handover: no reordering, no
//!   duplicates); answered once the change is under way;
//! * `{"command":"capture","port":"c1","direction":"tx","count":100}`: capture
//!   the port's frames (`rx`, `tx` or `both`; `count` optional): the answer line
//!   is followed by the capture as pcap on the same connection, streamed by a
//!   thread of its own (at most [`MAX_CAPTURES`] at once), until the count is
//!   taken or the client stops reading ([`crate::capture`]);
//! * `{"command":"add","kind":"client","spec":"vm3=/run/twin/vm3.sock"}` (or
//!   `"kind":"uplink"` with an `--uplink` specification): add a port while the
//!   switch runs; `{"command":"remove","port":"vm3"}`: remove one, releasing
//!   everything it held (its memory maps, descriptors, learned addresses, its
//!   driver domain). Other ports go on forwarding throughout.
//!
//! Responses: `{"ok":true,"result":R}` or
//! `{"ok":false,"error":{"kind":K,"message":"..."}}`, `K` one of [`ErrorKind`]
//! (snake case, e.g. `no_such_uplink`). `R` is the report for `status`; `fault`,
//! `revive` and `mode` answer with the request they set in motion. `twin ctl`
//! prints the response line as it came, `status` included (scripts read the report
//! at `.result`), and exits 1 on an error response, 2 when it gets no response.
//!
//! The listener thread hands each request to the data-path thread, which carries it
//! out between two batches and answers. Limits: a request line is at most
//! [`MAX_REQUEST`] bytes, newline included, and must arrive within 2 s; one
//! connection at a time; unknown fields are refused, not ignored. Whatever a client
//! sends, it gets a typed error response (or nothing, if it hung up); it never
//! stops the listener.
//!
//! Who may use it ([`Access`]): whoever can reach the socket controls the switch, so
//! * the socket exists with mode 0600 from the moment its name appears: it is bound
//!   inside a fresh private (0700) directory, given its mode there, and renamed into
//!   place;
//! * only a stale socket is replaced: a path that is not a socket, or a socket some
//!   process still answers on, is an error;
//! * every connection's peer is checked with `SO_PEERCRED` against the allowed uids
//!   (by default the switch's own effective uid); others get a `permission_denied`
//!   error response, logged at most once a second;
//! * fault injection (which can make a twin write wildly into a driver domain's
//!   memory) is refused (`fault_injection_disabled`) unless the switch was started
//!   with it allowed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::UplinkMode;

/// The longest request line the switch reads, newline included.
pub const MAX_REQUEST: usize = 4096;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a denied peer's request is waited for (only so it reads the answer
/// rather than a reset).
const DENIED_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the listener waits for the data path's answer.
const DATA_PATH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the listener waits for a client to take its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`call`] waits for the switch's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the control socket: serving it, and calling it.
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
    /// No switch answers at the path.
    #[error("cannot reach the switch at {path}")]
    Unreachable {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The switch took the connection but the exchange failed (or timed out).
    #[error("no answer from the switch at {path}")]
    NoAnswer {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The switch answered something that is not a [`Response`].
    #[error("the switch at {path} answered something that is not a response: {line:?}")]
    BadAnswer {
        /// Socket path.
        path: PathBuf,
        /// What it answered.
        line: String,
        /// Why it is no response.
        #[source]
        source: serde_json::Error,
    },
}

impl CtlError {
    /// Whether this is a caller's failure to get any response from a switch (as
    /// opposed to a failure to serve the socket).
    pub fn is_no_response(&self) -> bool {
        matches!(
            self,
            CtlError::Unreachable { .. } | CtlError::NoAnswer { .. } | CtlError::BadAnswer { .. }
        )
    }
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

/// The name of a value of a unit-only serde enum (what it is on the wire).
fn wire_name(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// A fault to inject, by its name on the wire and on `twin ctl`'s command line (the
/// only place fault names are defined: the parsers, the error messages and the
/// CLI's help all derive them from here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the driver domain.
    Kill,
    /// The domain panics (exits with status 101).
    Panic,
    /// The domain spins without a heartbeat.
    Hang,
    /// The domain scribbles a ring index.
    Garbage,
    /// The domain publishes a slot longer than the slot.
    BogusLength,
    /// The domain opens a file (its sandbox kills it).
    OpenFile,
    /// The domain creates a socket (its sandbox kills it).
    OpenSocket,
    /// The domain keeps the fast path: it never answers an ownership request.
    RefuseHandover,
    /// The domain issues an ioctl on its device (its sandbox kills it).
    Ioctl,
    /// The domain overwrites the driver state it shares with a twin.
    ScribbleState,
    /// The twin reads the domain's private page.
    TwinForbiddenRead,
    /// The twin writes past the end of the domain's region.
    TwinWildWrite,
    /// The twin panics.
    TwinPanic,
    /// The twin loops until its watchdog fires.
    TwinStuck,
}

impl Fault {
    /// Every fault, in the order users read them.
    pub const ALL: [Fault; 14] = [
        Fault::Kill,
        Fault::Panic,
        Fault::Hang,
        Fault::Garbage,
        Fault::BogusLength,
        Fault::OpenFile,
        Fault::OpenSocket,
        Fault::RefuseHandover,
        Fault::Ioctl,
        Fault::ScribbleState,
        Fault::TwinForbiddenRead,
        Fault::TwinWildWrite,
        Fault::TwinPanic,
        Fault::TwinStuck,
    ];

    /// Who commits the fault, and how.
    pub fn kind(self) -> FaultKind {
        use driver_domain::Fault as D;
        use driver_env::InjectedFault as T;
        match self {
            Fault::Kill => FaultKind::Kill,
            Fault::Panic => FaultKind::InDomain(D::Panic),
            Fault::Hang => FaultKind::InDomain(D::Hang),
            Fault::Garbage => FaultKind::InDomain(D::Garbage),
            Fault::BogusLength => FaultKind::InDomain(D::BogusLength),
            Fault::OpenFile => FaultKind::InDomain(D::OpenFile),
            Fault::OpenSocket => FaultKind::InDomain(D::OpenSocket),
            Fault::RefuseHandover => FaultKind::InDomain(D::RefuseHandover),
            Fault::Ioctl => FaultKind::InDomain(D::Ioctl),
            Fault::ScribbleState => FaultKind::InDomain(D::ScribbleState),
            Fault::TwinForbiddenRead => FaultKind::InTwin(T::ForbiddenRead),
            Fault::TwinWildWrite => FaultKind::InTwin(T::WildWrite),
            Fault::TwinPanic => FaultKind::InTwin(T::Panic),
            Fault::TwinStuck => FaultKind::InTwin(T::Stuck),
        }
    }

    /// The fault's name (`bogus-length`).
    pub fn name(self) -> String {
        wire_name(self)
    }

    /// Every fault's name, comma-separated (for messages and help).
    pub fn names() -> String {
        Fault::ALL.map(Fault::name).join(", ")
    }
}

impl FromStr for Fault {
    type Err = Failure;
    fn from_str(s: &str) -> Result<Fault, Failure> {
        Fault::deserialize(Value::from(s)).map_err(|_| {
            Failure::new(
                ErrorKind::UnknownFault,
                format!("unknown fault {s:?} (known: {})", Fault::names()),
            )
        })
    }
}

/// Who commits an injected fault, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL the driver domain.
    Kill,
    /// A fault the domain commits itself.
    InDomain(driver_domain::Fault),
    /// A fault the twin's driver commits (built with its `fault-injection` feature).
    InTwin(driver_env::InjectedFault),
}

/// The names of the commands: the `command` field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandName {
    /// [`Command::Status`].
    Status,
    /// [`Command::Fault`].
    Fault,
    /// [`Command::Revive`].
    Revive,
    /// [`Command::Mode`].
    Mode,
    /// [`Command::Capture`].
    Capture,
    /// [`Command::Add`].
    Add,
    /// [`Command::Remove`].
    Remove,
    /// [`Command::Mac`].
    Mac,
}

impl CommandName {
    /// Every command, in the order users read them.
    pub const ALL: [CommandName; 8] = [
        CommandName::Status,
        CommandName::Fault,
        CommandName::Revive,
        CommandName::Mode,
        CommandName::Capture,
        CommandName::Add,
        CommandName::Remove,
        CommandName::Mac,
    ];

    /// The command's fields after `command`, in their order on `twin ctl`'s command
    /// line.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            CommandName::Status => &[],
            CommandName::Fault => &["uplink", "fault"],
            CommandName::Revive => &["uplink"],
            CommandName::Mode => &["uplink", "mode"],
            CommandName::Capture => &["port", "direction", "count"],
            CommandName::Add => &["kind", "spec"],
            CommandName::Remove => &["port"],
            CommandName::Mac => &["port", "mac"],
        }
    }

    /// The command's name (`status`).
    pub fn name(self) -> String {
        wire_name(self)
    }

    /// `fault UPLINK FAULT`.
    pub fn usage(self) -> String {
        match self {
            CommandName::Capture => {
                return "capture PORT [--direction rx|tx|both] [--count N] --output FILE".into()
            }
            CommandName::Add => return "add client|uplink SPEC".into(),
            CommandName::Mac => return "mac PORT MAC|none".into(),
            _ => {}
        }
        let mut s = self.name();
        for a in self.args() {
            s.push(' ');
            s.push_str(&a.to_uppercase());
        }
        s
    }

    fn usages() -> String {
        CommandName::ALL.map(CommandName::usage).join(" | ")
    }
}

impl FromStr for CommandName {
    type Err = Failure;
    fn from_str(s: &str) -> Result<CommandName, Failure> {
        CommandName::deserialize(Value::from(s)).map_err(|_| {
            Failure::new(
                ErrorKind::UnknownCommand,
                format!("unknown command {s:?} ({})", CommandName::usages()),
            )
        })
    }
}

/// A request: what one connection asks of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// The report.
    Status,
    /// Inject a fault into an uplink's driver domain or twin.
    Fault {
        /// Uplink name.
        uplink: String,
        /// Which fault.
        fault: Fault,
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
        mode: UplinkMode,
    },
    /// Capture a port's frames: the answer line is followed by the capture as
    /// pcap on the same connection, until `count` frames or until the client
    /// hangs up.
    Capture {
        /// Port name (a client or an uplink).
        port: String,
        /// Which frames.
        #[serde(default)]
        direction: crate::capture::Direction,
        /// How many (none: until the client hangs up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Add a port while the switch runs.
    Add {
        /// A client or an uplink.
        kind: AddKind,
        /// Its specification, as `--client` or `--uplink` takes it.
        spec: String,
    },
    /// Remove a port while the switch runs: everything it held is released.
    Remove {
        /// Port name.
        port: String,
    },
    /// Change a client port's MAC: the address it must send from (anti-spoofing),
    /// pinned to it in the learning table, and offered in its config space to the
    /// next driver that reads it; or none of that (`none`).
    Mac {
        /// Client port name.
        port: String,
        /// The new MAC, or none.
        mac: MacPin,
    },
}

/// A client's MAC as [`Command::Mac`] sets it: an address, or `none` (no
/// anti-spoofing, no pin, zeroes in the config space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacPin(pub Option<twin_wire::MacAddr>);

impl TryFrom<String> for MacPin {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "none" {
            return Ok(MacPin(None));
        }
        s.parse()
            .map(|m| MacPin(Some(m)))
            .map_err(|_| format!("{s:?} is neither a MAC address nor none"))
    }
}

impl From<MacPin> for String {
    fn from(p: MacPin) -> String {
        p.0.map_or_else(|| "none".to_string(), |m| m.to_string())
    }
}

/// What [`Command::Add`] adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddKind {
    /// A client port (`--client`).
    Client,
    /// An uplink (`--uplink`).
    Uplink,
}

impl Command {
    /// The command's name.
    pub fn name(&self) -> CommandName {
        match self {
            Command::Status => CommandName::Status,
            Command::Fault { .. } => CommandName::Fault,
            Command::Revive { .. } => CommandName::Revive,
            Command::Mode { .. } => CommandName::Mode,
            Command::Capture { .. } => CommandName::Capture,
            Command::Add { .. } => CommandName::Add,
            Command::Remove { .. } => CommandName::Remove,
            Command::Mac { .. } => CommandName::Mac,
        }
    }

    /// Parses a request line (JSON; surrounding white space allowed).
    pub fn from_json(line: &[u8]) -> Result<Command, Failure> {
        let v: Value = serde_json::from_slice(line).map_err(|e| {
            Failure::new(ErrorKind::MalformedJson, format!("not a JSON value: {e}"))
        })?;
        Command::from_value(v)
    }

    /// Builds the request `twin ctl` sends for its arguments (`fault u0 kill`):
    /// the words become the fields [`CommandName::args`] names, then go through the
    /// switch's own checks.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Command, Failure> {
        let Some((first, rest)) = words.split_first() else {
            return Err(Failure::new(
                ErrorKind::BadRequest,
                format!("no command ({})", CommandName::usages()),
            ));
        };
        let name: CommandName = first.as_ref().parse()?;
        if name == CommandName::Capture {
            return Command::capture_from_words(rest);
        }
        if rest.len() != name.args().len() {
            return Err(Failure::new(
                ErrorKind::BadRequest,
                format!("usage: {}", name.usage()),
            ));
        }
        let mut fields = Map::new();
        fields.insert("command".into(), Value::from(name.name()));
        for (field, word) in name.args().iter().zip(rest) {
            fields.insert((*field).into(), Value::from(word.as_ref()));
        }
        Command::from_value(Value::Object(fields))
    }

    /// `capture PORT [--direction D] [--count N]` (the words after `capture`;
    /// `--output FILE` is `twin ctl`'s, taken off before).
    fn capture_from_words<S: AsRef<str>>(words: &[S]) -> Result<Command, Failure> {
        let usage = || {
            Failure::new(
                ErrorKind::BadRequest,
                format!("usage: {}", CommandName::Capture.usage()),
            )
        };
        let mut words = words.iter().map(AsRef::as_ref);
        let port = words
            .next()
            .filter(|p| !p.starts_with('-'))
            .ok_or_else(usage)?;
        let (mut direction, mut count) = (crate::capture::Direction::default(), None);
        while let Some(flag) = words.next() {
            let value = words.next().ok_or_else(usage)?;
            match flag {
                "--direction" => {
                    direction = value
                        .parse()
                        .map_err(|e: String| Failure::new(ErrorKind::BadRequest, e))?
                }
                "--count" => {
                    count = Some(value.parse().map_err(|_| {
                        Failure::new(
                            ErrorKind::BadRequest,
                            format!("--count {value:?} is not a number"),
                        )
                    })?)
                }
                _ => return Err(usage()),
            }
        }
        Ok(Command::Capture {
            port: port.to_string(),
            direction,
            count,
        })
    }

    /// Checks a JSON value as a request; the error says what is wrong as precisely
    /// as it can (an unknown command, fault or mode before any other mistake).
    fn from_value(v: Value) -> Result<Command, Failure> {
        let bad = |m: String| Failure::new(ErrorKind::BadRequest, m);
        let Some(fields) = v.as_object() else {
            return Err(bad(format!(
                "a request is a JSON object with a \"command\", not {v}"
            )));
        };
        // Serde would let a unit variant's unknown fields pass.
        let name: CommandName = match fields.get("command") {
            Some(Value::String(c)) => c.parse()?,
            _ => return Err(bad("a request needs a \"command\" string".into())),
        };
        if let Some(k) = fields
            .keys()
            .find(|k| *k != "command" && !name.args().contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown field {k:?} (usage: {})",
                name.usage()
            )));
        }
        if let Some(Value::String(f)) = fields.get("fault") {
            f.parse::<Fault>()?;
        }
        if let (CommandName::Add, Some(Value::String(k))) = (name, fields.get("kind")) {
            if k != "client" && k != "uplink" {
                return Err(bad(format!("add a \"client\" or an \"uplink\", not {k:?}")));
            }
        }
        if let Some(Value::String(m)) = fields.get("mode") {
            m.parse::<UplinkMode>()
                .map_err(|e| Failure::new(ErrorKind::UnknownMode, e))?;
        }
        Command::deserialize(v).map_err(|e| bad(format!("invalid request: {e}")))
    }

    /// The request as the line `twin ctl` sends.
    pub fn to_line(&self) -> String {
        // A Command is plain data: serializing it cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// `twin ctl`'s commands and their arguments, for its help.
pub fn usage() -> String {
    let faults = |twin: bool| {
        let of = Fault::ALL.into_iter();
        let of = of.filter(|f| matches!(f.kind(), FaultKind::InTwin(_)) == twin);
        of.map(Fault::name).collect::<Vec<_>>().join(", ")
    };
    format!(
        "Commands: {}\nUPLINK may name one queue of an uplink of several: UPLINK:QUEUE. SPEC is what --client or --uplink takes.\nFAULT (only when the switch runs with --fault-injection): in the driver domain {}; in the twin {}\nMODE: {}\nPrints the switch's JSON response on one line ({{\"ok\":true,\"result\":...}} or {{\"ok\":false,\"error\":{{\"kind\":...,\"message\":...}}}}); status's result is the switch's report. Exit status: 0 ok, 1 an error response, 2 bad arguments or no response.",
        CommandName::usages(),
        faults(false),
        faults(true),
        UplinkMode::ALL.map(|m| m.to_string()).join(", "),
    )
}

/// Why a request failed, as a client can branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request line is not JSON.
    MalformedJson,
    /// JSON, but not a request: not an object, a field missing, unknown or of the
    /// wrong type, an empty line.
    BadRequest,
    /// No such command.
    UnknownCommand,
    /// No such fault.
    UnknownFault,
    /// No such uplink mode.
    UnknownMode,
    /// The request line is longer than [`MAX_REQUEST`].
    RequestTooLarge,
    /// The request line did not arrive in time.
    RequestTimeout,
    /// The peer's uid may not use the socket.
    PermissionDenied,
    /// A fault request to a switch that does not allow fault injection.
    FaultInjectionDisabled,
    /// No uplink of that name.
    NoSuchUplink,
    /// No port of that name.
    NoSuchPort,
    /// The uplink cannot do it now (not up, not given up, no twin to fault...).
    Rejected,
    /// The data path did not answer (the switch is stopping or stuck).
    Unavailable,
    /// The switch failed to encode its answer.
    Internal,
    /// A kind this client does not know (a newer switch).
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The kind's name (`no_such_uplink`).
    pub fn name(self) -> String {
        wire_name(self)
    }
}

/// An error response's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

/// The switch's answer to one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WireResponse")]
pub enum Response {
    /// Done; the result as JSON, verbatim (the report keeps its field order).
    Ok(Box<RawValue>),
    /// Not done, and why.
    Err(Failure),
}

/// A response as it is on the wire, before the checks that make it a [`Response`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireResponse {
    ok: bool,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Failure>,
}

impl TryFrom<WireResponse> for Response {
    type Error = &'static str;
    fn try_from(w: WireResponse) -> Result<Response, &'static str> {
        match (w.ok, w.result, w.error) {
            (true, Some(r), None) => Ok(Response::Ok(r)),
            (false, None, Some(e)) => Ok(Response::Err(e)),
            _ => Err("a response has ok true and a result, or ok false and an error"),
        }
    }
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Response", 2)?;
        match self {
            Response::Ok(r) => {
                m.serialize_field("ok", &true)?;
                m.serialize_field("result", r)?;
            }
            Response::Err(e) => {
                m.serialize_field("ok", &false)?;
                m.serialize_field("error", e)?;
            }
        }
        m.end()
    }
}

impl Response {
    /// Done, with `result`.
    pub fn ok(result: &impl Serialize) -> Response {
        match serde_json::value::to_raw_value(result) {
            Ok(r) => Response::Ok(r),
            Err(e) => Response::error(ErrorKind::Internal, format!("cannot encode: {e}")),
        }
    }

    /// Failed with `kind`.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Err(Failure::new(kind, message))
    }

    /// Whether the request was carried out.
    pub fn is_ok(&self) -> bool {
        matches!(self, Response::Ok(_))
    }

    /// The result, or the failure.
    pub fn into_result(self) -> Result<Box<RawValue>, Failure> {
        match self {
            Response::Ok(r) => Ok(r),
            Response::Err(e) => Err(e),
        }
    }

    /// The response as the line the switch sends.
    pub fn to_line(&self) -> String {
        // Every part is plain data or already-valid JSON: this cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl From<Failure> for Response {
    fn from(f: Failure) -> Response {
        Response::Err(f)
    }
}

/// A request waiting for the data path, with where to send the answer.
#[derive(Debug)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The answer goes here.
    pub reply: SyncSender<Response>,
    /// A capture's data-path end, for [`Command::Capture`].
    pub tap: Option<crate::capture::Tap>,
}

/// Reads one request line from `r` (at most [`MAX_REQUEST`] bytes, newline
/// included; a client may also end it by shutting down its side) and parses it.
fn read_request(r: impl Read) -> Result<Command, Failure> {
    let mut line = Vec::new();
    let got = BufReader::new(r.take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line);
    if line.len() > MAX_REQUEST {
        return Err(Failure::new(
            ErrorKind::RequestTooLarge,
            format!("a request line is at most {MAX_REQUEST} bytes"),
        ));
    }
    match got {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Failure::new(
                ErrorKind::RequestTimeout,
                "no complete request line in time",
            ))
        }
        Err(e) => {
            return Err(Failure::new(
                ErrorKind::BadRequest,
                format!("cannot read the request: {e}"),
            ))
        }
        Ok(_) => {}
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure::new(ErrorKind::BadRequest, "empty request"));
    }
    Command::from_json(&line)
}

/// Removes a stale socket at `path`; refuses anything else.
pub(crate) fn clear_path(path: &Path) -> Result<(), CtlError> {
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
pub(crate) fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
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
            let mut denied_logged = None;
            let captures = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming().flatten() {
                let (response, go_on, sink) =
                    answer(&conn, &access, &tx, &captures, &mut denied_logged);
                let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
                let sent = (&conn).write_all(response.to_line().as_bytes());
                if let (Some(sink), Ok(())) = (sink, sent) {
                    stream_capture(conn, sink, &captures);
                }
                if !go_on {
                    return;
                }
            }
        })
        .map_err(listen_err)?;
    Ok(rx)
}

/// Captures that may stream at once.
pub const MAX_CAPTURES: usize = 4;
/// A capture's reader that takes nothing for this long ends it.
const CAPTURE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams a started capture to `conn` on a thread of its own (the listener
/// goes on serving), counted in `captures`.
fn stream_capture(conn: UnixStream, sink: crate::capture::Sink, captures: &Arc<AtomicUsize>) {
    let done = Arc::clone(captures);
    let _ = conn.set_write_timeout(Some(CAPTURE_WRITE_TIMEOUT));
    let spawned = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            // Ends with the capture's count, or when the reader stops reading.
            let _ = sink.write_to(std::io::BufWriter::new(&conn));
            done.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The sink went with the closure: the tap closes at its next frame.
        captures.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to one connection, whether to serve more (not once the data path
/// is gone), and a started capture's writer end.
fn answer(
    conn: &UnixStream,
    access: &Access,
    tx: &SyncSender<Request>,
    captures: &AtomicUsize,
    denied_logged: &mut Option<Instant>,
) -> (Response, bool, Option<crate::capture::Sink>) {
    let peer = rustix::net::sockopt::socket_peercred(conn).ok();
    if !peer.is_some_and(|p| access.allows(p.uid.as_raw())) {
        if denied_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *denied_logged = Some(Instant::now());
            twin_log::warn_limited!(
                uid = peer.map(|p| p.uid.as_raw()),
                pid = peer.map(|p| p.pid.as_raw_nonzero().get()),
                "control socket: connection from a user that is not allowed"
            );
        }
        // Take the request (briefly, and unread) so the client reads the answer
        // rather than a reset.
        let _ = conn.set_read_timeout(Some(DENIED_TIMEOUT));
        let _ = read_request(conn);
        return (
            Response::error(ErrorKind::PermissionDenied, "permission denied"),
            true,
            None,
        );
    }
    let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
    let command = match read_request(conn) {
        Ok(c) => c,
        Err(f) => return (f.into(), true, None),
    };
    if matches!(command, Command::Fault { .. }) && !access.fault_injection {
        return (
            Response::error(
                ErrorKind::FaultInjectionDisabled,
                "fault injection is disabled (start the switch with --fault-injection)",
            ),
            true,
            None,
        );
    }
    let (tap, mut sink) = match &command {
        Command::Capture {
            direction, count, ..
        } => {
            if captures.fetch_add(1, Ordering::Relaxed) >= MAX_CAPTURES {
                captures.fetch_sub(1, Ordering::Relaxed);
                return (
                    Response::error(
                        ErrorKind::Rejected,
                        format!("{MAX_CAPTURES} captures run already"),
                    ),
                    true,
                    None,
                );
            }
            let (tap, sink) = crate::capture::capture(*direction, *count);
            (Some(tap), Some(sink))
        }
        _ => (None, None),
    };
    // A capture that does not start gives its place back.
    let give_back = |sink: &mut Option<crate::capture::Sink>| {
        if sink.take().is_some() {
            captures.fetch_sub(1, Ordering::Relaxed);
        }
    };
    let (reply, answer) = mpsc::sync_channel(1);
    if tx
        .send(Request {
            command,
            reply,
            tap,
        })
        .is_err()
    {
        give_back(&mut sink);
        return (
            Response::error(ErrorKind::Unavailable, "the switch is stopping"),
            false,
            None,
        );
    }
    match answer.recv_timeout(DATA_PATH_TIMEOUT) {
        Ok(r) => {
            if matches!(r, Response::Err(_)) {
                give_back(&mut sink);
            }
            (r, true, sink)
        }
        Err(_) => {
            give_back(&mut sink);
            (
                Response::error(ErrorKind::Unavailable, "the data path did not answer"),
                true,
                None,
            )
        }
    }
}

/// What the switch answered: the line as it came, and the response it holds.
#[derive(Debug)]
pub struct Answer {
    /// The response line, without its newline.
    pub line: String,
    /// The response.
    pub response: Response,
}

/// Sends `command` to the switch at `path` and returns its answer.
pub fn call(path: &Path, command: &Command) -> Result<Answer, CtlError> {
    let no_answer = |source| CtlError::NoAnswer {
        path: path.to_owned(),
        source,
    };
    let mut conn = UnixStream::connect(path).map_err(|source| CtlError::Unreachable {
        path: path.to_owned(),
        source,
    })?;
    conn.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(no_answer)?;
    conn.write_all(command.to_line().as_bytes())
        .map_err(no_answer)?;
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(no_answer)?;
    if line.is_empty() {
        return Err(no_answer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the switch closed the connection",
        )));
    }
    let line = line.trim_end().to_string();
    match serde_json::from_str(&line) {
        Ok(response) => Ok(Answer { line, response }),
        Err(source) => Err(CtlError::BadAnswer {
            path: path.to_owned(),
            line,
            source,
        }),
    }
}

/// Sends a [`Command::Capture`] to the switch at `path` and, once it is
/// accepted, copies the capture (pcap) it streams into `out` until the switch
/// ends it (its count taken). Returns the answer and the bytes copied; an
/// error answer copies nothing.
pub fn capture(
    path: &Path,
    command: &Command,
    out: &mut impl Write,
) -> Result<(Answer, u64), CtlError> {
    let no_answer = |source| CtlError::NoAnswer {
        path: path.to_owned(),
        source,
    };
    let mut conn = UnixStream::connect(path).map_err(|source| CtlError::Unreachable {
        path: path.to_owned(),
        source,
    })?;
    conn.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(no_answer)?;
    conn.write_all(command.to_line().as_bytes())
        .map_err(no_answer)?;
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(no_answer)?;
    if line.is_empty() {
        return Err(no_answer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the switch closed the connection",
        )));
    }
    let line = line.trim_end().to_string();
    let response: Response = serde_json::from_str(&line).map_err(|source| CtlError::BadAnswer {
        path: path.to_owned(),
        line: line.clone(),
        source,
    })?;
    let answer = Answer { line, response };
    if matches!(answer.response, Response::Err(_)) {
        return Ok((answer, 0));
    }
    // The capture runs as long as it takes.
    conn.set_read_timeout(None).map_err(no_answer)?;
    let copied = std::io::copy(&mut reader, out).map_err(no_answer)?;
    Ok((answer, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request of every command, every fault and every mode.
    fn every_command() -> Vec<Command> {
        let mut all = vec![Command::Status];
        for fault in Fault::ALL {
            all.push(Command::Fault {
                uplink: "u0".into(),
                fault,
            });
        }
        all.push(Command::Revive {
            uplink: "u1".into(),
        });
        for mode in UplinkMode::ALL {
            all.push(Command::Mode {
                uplink: "u0".into(),
                mode,
            });
        }
        all.push(Command::Capture {
            port: "c1".into(),
            direction: crate::capture::Direction::Tx,
            count: Some(10),
        });
        all.push(Command::Add {
            kind: AddKind::Client,
            spec: "c9=/tmp/c9.sock,mac=02:00:00:00:00:09".into(),
        });
        all.push(Command::Add {
            kind: AddKind::Uplink,
            spec: "u9=packet:eth0,mode=twin".into(),
        });
        all.push(Command::Remove { port: "c9".into() });
        all.push(Command::Mac {
            port: "c1".into(),
            mac: MacPin(Some("02:00:00:00:00:07".parse().unwrap())),
        });
        all.push(Command::Mac {
            port: "c1".into(),
            mac: MacPin(None),
        });
        all
    }

    /// The words `twin ctl` takes for `c`.
    fn words(c: &Command) -> Vec<String> {
        let mut w = vec![c.name().name()];
        match c {
            Command::Status => {}
            Command::Fault { uplink, fault } => w.extend([uplink.clone(), fault.name()]),
            Command::Revive { uplink } => w.push(uplink.clone()),
            Command::Mode { uplink, mode } => w.extend([uplink.clone(), mode.to_string()]),
            Command::Capture {
                port,
                direction,
                count,
            } => {
                w.extend([port.clone(), "--direction".into()]);
                w.push(
                    serde_json::to_value(direction)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                );
                if let Some(n) = count {
                    w.extend(["--count".into(), n.to_string()]);
                }
            }
            Command::Add { kind, spec } => w.extend([
                match kind {
                    AddKind::Client => "client".to_string(),
                    AddKind::Uplink => "uplink".to_string(),
                },
                spec.clone(),
            ]),
            Command::Remove { port } => w.push(port.clone()),
            Command::Mac { port, mac } => w.extend([port.clone(), String::from(*mac)]),
        }
        w
    }

    fn parse(line: &str) -> Result<Command, Failure> {
        Command::from_json(line.as_bytes())
    }

    fn kind_of(r: Result<Command, Failure>) -> ErrorKind {
        r.expect_err("should be refused").kind
    }

    #[test]
    fn every_request_round_trips_as_json_and_from_words() {
        let all = every_command();
        assert_eq!(all.len(), 1 + Fault::ALL.len() + 1 + 3 + 1 + 3 + 2);
        for c in &all {
            let line = c.to_line();
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            assert_eq!(parse(&line).as_ref(), Ok(c), "{line}");
            assert_eq!(Command::from_words(&words(c)).as_ref(), Ok(c));
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["command"], Value::from(c.name().name()), "{line}");
            // The command line's argument names are the request's field names.
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| &**k).collect();
            keys.sort_unstable();
            let mut expect = vec!["command"];
            expect.extend(c.name().args());
            expect.sort_unstable();
            assert_eq!(keys, expect, "{line}");
        }
        assert_eq!(
            Command::Fault {
                uplink: "u0".into(),
                fault: Fault::BogusLength
            }
            .to_line(),
            "{\"command\":\"fault\",\"uplink\":\"u0\",\"fault\":\"bogus-length\"}\n"
        );
        assert_eq!(Command::Status.to_line(), "{\"command\":\"status\"}\n");
    }

    /// A report whose fields are not in alphabetical order.
    #[derive(Serialize)]
    struct Report {
        zeta: u32,
        alpha: Vec<u32>,
    }

    #[test]
    fn every_response_round_trips() {
        let mut all = vec![
            Response::ok(&Report {
                zeta: 1,
                alpha: vec![1, 2],
            }),
            Response::ok(&Command::Mode {
                uplink: "u0".into(),
                mode: UplinkMode::Twin,
            }),
        ];
        let kinds = [
            ErrorKind::MalformedJson,
            ErrorKind::BadRequest,
            ErrorKind::UnknownCommand,
            ErrorKind::UnknownFault,
            ErrorKind::UnknownMode,
            ErrorKind::RequestTooLarge,
            ErrorKind::RequestTimeout,
            ErrorKind::PermissionDenied,
            ErrorKind::FaultInjectionDisabled,
            ErrorKind::NoSuchUplink,
            ErrorKind::Rejected,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
            ErrorKind::Other,
        ];
        all.extend(kinds.map(|k| Response::error(k, format!("why {k:?}"))));
        for r in &all {
            let line = r.to_line();
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back.to_line(), line);
            assert_eq!(back.is_ok(), r.is_ok());
        }
        // The result is kept verbatim: the report's field order survives.
        assert_eq!(
            all[0].to_line(),
            "{\"ok\":true,\"result\":{\"zeta\":1,\"alpha\":[1,2]}}\n"
        );
        assert_eq!(
            Response::error(ErrorKind::NoSuchUplink, "no uplink \"x\"").to_line(),
            "{\"ok\":false,\"error\":{\"kind\":\"no_such_uplink\",\"message\":\"no uplink \\\"x\\\"\"}}\n"
        );
        // A kind from a newer switch still reads as an error.
        let newer: Response =
            serde_json::from_str(r#"{"ok":false,"error":{"kind":"melted","message":"m"}}"#)
                .unwrap();
        assert_eq!(newer.into_result().unwrap_err().kind, ErrorKind::Other);
    }

    #[test]
    fn inconsistent_responses_are_refused() {
        for bad in [
            r#"{"ok":true}"#,
            r#"{"ok":false}"#,
            r#"{"ok":true,"result":1,"error":{"kind":"internal","message":""}}"#,
            r#"{"ok":false,"result":1}"#,
            r#"{"ok":true,"result":1,"extra":2}"#,
            r#"ok"#,
        ] {
            assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_names_are_defined_once_and_match_the_domain_and_twin_faults() {
        let names: Vec<String> = Fault::ALL.map(Fault::name).to_vec();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), Fault::ALL.len());
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
            match f.kind() {
                FaultKind::Kill => assert_eq!(f, Fault::Kill),
                // The domain logs its fault by the same name.
                FaultKind::InDomain(d) => assert_eq!(d.as_str(), f.name()),
                FaultKind::InTwin(_) => assert!(f.name().starts_with("twin-")),
            }
        }
        for d in driver_domain::Fault::ALL {
            assert!(
                Fault::ALL
                    .iter()
                    .any(|f| f.kind() == FaultKind::InDomain(d)),
                "{d:?} cannot be injected"
            );
        }
        for t in [
            driver_env::InjectedFault::ForbiddenRead,
            driver_env::InjectedFault::WildWrite,
            driver_env::InjectedFault::Panic,
            driver_env::InjectedFault::Stuck,
        ] {
            assert!(Fault::ALL.iter().any(|f| f.kind() == FaultKind::InTwin(t)));
        }
        assert_eq!(Fault::TwinWildWrite.name(), "twin-wild-write");
        let help = usage();
        for n in &names {
            assert!(help.contains(n.as_str()), "{n} not in the help");
        }
    }

    #[test]
    fn each_mistake_gets_its_typed_error() {
        assert_eq!(kind_of(parse("status")), ErrorKind::MalformedJson);
        assert_eq!(kind_of(parse("{\"command\":")), ErrorKind::MalformedJson);
        assert_eq!(
            kind_of(Command::from_json(b"\xff\xfe{}\n")),
            ErrorKind::MalformedJson
        );
        let unknown = parse(r#"{"command":"reboot"}"#).unwrap_err();
        assert_eq!(unknown.kind, ErrorKind::UnknownCommand);
        assert!(unknown.message.contains("fault UPLINK FAULT"), "{unknown}");
        let melt = parse(r#"{"command":"fault","uplink":"u0","fault":"melt"}"#).unwrap_err();
        assert_eq!(melt.kind, ErrorKind::UnknownFault);
        assert!(
            melt.message.contains("\"melt\"")
                && melt.message.contains("bogus-length")
                && melt.message.contains("twin-stuck"),
            "{melt}"
        );
        assert_eq!(
            kind_of(parse(r#"{"command":"mode","uplink":"u0","mode":"fast"}"#)),
            ErrorKind::UnknownMode
        );
        for bad in [
            r#"{"command":"status","verbose":true}"#,
            r#"{"command":"fault","uplink":"u0","fault":"kill","force":1}"#,
            r#"{"command":"revive"}"#,
            r#"{"command":"revive","uplink":7}"#,
            r#"{"command":"mode","uplink":"u0","mode":3}"#,
            r#"{"command":"mac","port":"c1","mac":"02:00:00:00:00"}"#,
            r#"{"command":"mac","port":"c1","mac":"off"}"#,
            r#"{"command":"mac","port":"c1"}"#,
            r#"{"uplink":"u0"}"#,
            r#"{"command":5}"#,
            r#"["status"]"#,
            r#""status""#,
            "null",
        ] {
            assert_eq!(kind_of(parse(bad)), ErrorKind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn command_words_are_checked_like_requests() {
        let w = |s: &str| Command::from_words(&s.split_whitespace().collect::<Vec<_>>());
        assert_eq!(kind_of(w("")), ErrorKind::BadRequest);
        assert_eq!(kind_of(w("reboot")), ErrorKind::UnknownCommand);
        assert_eq!(kind_of(w("fault u0 melt")), ErrorKind::UnknownFault);
        assert_eq!(kind_of(w("mode u0 fast")), ErrorKind::UnknownMode);
        let usage = w("fault u0").unwrap_err();
        assert_eq!(usage.kind, ErrorKind::BadRequest);
        assert_eq!(usage.message, "usage: fault UPLINK FAULT");
        assert_eq!(kind_of(w("status now")), ErrorKind::BadRequest);
    }

    #[test]
    fn request_lines_are_bounded() {
        let read = |b: &[u8]| read_request(b);
        let status = r#"{"command":"status"}"#;
        // Exactly the limit, newline included, is fine; one byte more is not.
        let fits = format!("{status:<width$}\n", width = MAX_REQUEST - 1);
        assert_eq!(fits.len(), MAX_REQUEST);
        assert_eq!(read(fits.as_bytes()), Ok(Command::Status));
        let over = format!("{status:<width$}\n", width = MAX_REQUEST);
        assert_eq!(kind_of(read(over.as_bytes())), ErrorKind::RequestTooLarge);
        let huge = vec![b'x'; 1 << 20];
        assert_eq!(kind_of(read(&huge)), ErrorKind::RequestTooLarge);
        // A line ended by the client's shutdown, and only the first line counts.
        assert_eq!(read(status.as_bytes()), Ok(Command::Status));
        assert_eq!(
            read(format!("{status}\ngarbage").as_bytes()),
            Ok(Command::Status)
        );
        assert_eq!(kind_of(read(b"")), ErrorKind::BadRequest);
        assert_eq!(kind_of(read(b"  \n")), ErrorKind::BadRequest);
    }

    #[test]
    fn a_stalled_request_times_out() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        b.write_all(b"{\"command\":").unwrap();
        assert_eq!(kind_of(read_request(&a)), ErrorKind::RequestTimeout);
    }

    /// A socket path of its own for one test.
    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("twin-ctl-{}-{name}.sock", std::process::id()))
    }

    /// Answers every request like a data path with one uplink `u0`, until `n` are
    /// answered.
    fn fake_data_path(rx: Receiver<Request>, n: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for r in rx.iter().take(n) {
                let response = match &r.command {
                    Command::Status => Response::ok(&serde_json::json!({"clients": {}})),
                    Command::Capture { .. }
                    | Command::Add { .. }
                    | Command::Remove { .. }
                    | Command::Mac { .. } => Response::ok(&r.command),
                    Command::Fault { uplink, .. }
                    | Command::Revive { uplink }
                    | Command::Mode { uplink, .. } => {
                        if uplink == "u0" {
                            Response::ok(&r.command)
                        } else {
                            Response::error(ErrorKind::NoSuchUplink, format!("no {uplink}"))
                        }
                    }
                };
                r.reply.send(response).unwrap();
            }
        })
    }

    /// Sends raw bytes, shuts down the sending side, and reads the response.
    fn raw(path: &Path, bytes: &[u8]) -> Response {
        let mut c = UnixStream::connect(path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The switch may answer (and close) before it read everything.
        let _ = c.write_all(bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn err_kind(r: Response) -> ErrorKind {
        r.into_result().expect_err("should be an error").kind
    }

    #[test]
    fn the_socket_answers_every_request_typed_and_keeps_serving() {
        let path = socket_path("serve");
        let rx = serve(&path, Access::default()).unwrap();
        let dp = fake_data_path(rx, 3);
        let status = call(&path, &Command::Status).unwrap();
        assert!(status.response.is_ok());
        assert_eq!(status.line, r#"{"ok":true,"result":{"clients":{}}}"#);
        assert_eq!(err_kind(raw(&path, b"hello\n")), ErrorKind::MalformedJson);
        assert_eq!(
            err_kind(raw(&path, &vec![b'{'; 3 * MAX_REQUEST])),
            ErrorKind::RequestTooLarge
        );
        assert_eq!(
            err_kind(raw(&path, br#"{"command":"reboot"}"#)),
            ErrorKind::UnknownCommand
        );
        let fault = Command::Fault {
            uplink: "u0".into(),
            fault: Fault::Kill,
        };
        assert_eq!(
            err_kind(call(&path, &fault).unwrap().response),
            ErrorKind::FaultInjectionDisabled
        );
        let mode = Command::Mode {
            uplink: "u0".into(),
            mode: UplinkMode::Domain,
        };
        let done = call(&path, &mode).unwrap().response.into_result().unwrap();
        assert_eq!(serde_json::from_str::<Command>(done.get()).unwrap(), mode);
        let revive = Command::Revive {
            uplink: "u9".into(),
        };
        assert_eq!(
            err_kind(call(&path, &revive).unwrap().response),
            ErrorKind::NoSuchUplink
        );
        dp.join().unwrap();
        // The data path is gone: the answer says so.
        assert_eq!(
            err_kind(call(&path, &Command::Status).unwrap().response),
            ErrorKind::Unavailable
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn other_users_and_fault_requests_are_refused_as_configured() {
        let path = socket_path("access");
        let me = rustix::process::geteuid().as_raw();
        let access = Access {
            uids: vec![me.wrapping_add(4242)],
            fault_injection: false,
        };
        let _rx = serve(&path, access).unwrap();
        let denied = call(&path, &Command::Status).unwrap().response;
        assert_eq!(err_kind(denied), ErrorKind::PermissionDenied);
        let _ = std::fs::remove_file(&path);

        let path = socket_path("faults");
        let access = Access {
            uids: vec![],
            fault_injection: true,
        };
        let rx = serve(&path, access).unwrap();
        let dp = fake_data_path(rx, 1);
        let fault = Command::Fault {
            uplink: "u0".into(),
            fault: Fault::TwinStuck,
        };
        assert!(call(&path, &fault).unwrap().response.is_ok());
        dp.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn calling_nothing_is_a_no_response_error() {
        let e = call(&socket_path("nobody"), &Command::Status).unwrap_err();
        assert!(matches!(e, CtlError::Unreachable { .. }), "{e}");
        assert!(e.is_no_response());
    }
}
