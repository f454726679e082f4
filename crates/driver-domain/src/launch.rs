//! The switch's side of a driver domain: start it, hand it its descriptors, then use
//! it as the uplink's driver through the exchange rings, and tell when it is unwell.
//!
//! Everything read from the exchange region is validated by the `exchange` crate; a
//! violation marks the link failed, and the caller (the switch's uplink supervisor)
//! kills the process and starts a new one. Health is: the process is alive, its
//! heartbeat advanced within the watchdog interval, and it has not reported Failed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_host::link::QueueFds;
use driver_host::region::Region;
use driver_host::{DriverConfig, HostedDriver};
use exchange::{Consumer, DdState, ExchangeRegion, Geometry, Producer, RingId, Slot};
use twin_wire::Segments;

use crate::bootstrap::{self, BootstrapError};
use crate::handover::{self, Owner, Request, SharedUpcalls, UpcallChannel};

/// Why a running driver domain's link is unusable ([`DomainLink::check_health`]).
/// Render it with its causes ("to_nic ring: ...") for reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainFailure {
    /// The domain broke the `to_nic` ring (the switch's producer side).
    #[error("to_nic ring")]
    ToNicRing(#[source] exchange::ExchangeError),
    /// A `to_nic` slot could not be committed.
    #[error("to_nic commit")]
    ToNicCommit(#[source] exchange::ExchangeError),
    /// The domain broke the `from_nic` ring.
    #[error("from_nic ring")]
    FromNicRing(#[source] exchange::ExchangeError),
    /// The domain reported a failure in its status word.
    #[error("driver domain reported failure {code}: {name}")]
    Reported {
        /// Its failure code.
        code: u32,
        /// The code's name.
        name: &'static str,
    },
    /// The domain reported a failure, then exited.
    #[error("driver domain reported failure {code}: {name} ({status})")]
    ReportedAndExited {
        /// Its failure code.
        code: u32,
        /// The code's name.
        name: &'static str,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// Its status word could not be read.
    #[error("driver domain status")]
    Status(#[source] Arc<exchange::RegionError>),
    /// The process exited (or was killed) without reporting why.
    #[error("driver domain exited: {0}")]
    Exited(std::process::ExitStatus),
    /// No heartbeat within the watchdog.
    #[error("driver domain hung: no heartbeat for {0:?}")]
    Hung(Duration),
}

/// Errors while launching a driver domain.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The NIC's socket could not be reached.
    #[error("cannot connect to the NIC socket {path}")]
    ConnectNic {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A region could not be created.
    #[error("cannot create the driver region")]
    Region(#[source] driver_host::region::RegionError),
    /// The driver's configuration is invalid.
    #[error("invalid driver configuration")]
    Driver(#[source] driver_host::Error),
    /// The exchange region could not be created.
    #[error("cannot create the exchange region")]
    Exchange(#[source] exchange::RegionError),
    /// An eventfd or socket pair could not be created.
    #[error("cannot create {what}")]
    Create {
        /// What.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start the driver-domain process {exe}")]
    Spawn {
        /// Executable.
        exe: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TAP device could not be re-attached or copied.
    #[error("TAP device")]
    Tap(#[source] kernel_nic::TapError),
    /// The AF_PACKET socket could not be opened.
    #[error("AF_PACKET socket")]
    Packet(#[source] kernel_nic::packet::PacketError),
    /// The XDP program could not be attached or the AF_XDP socket opened.
    #[error("AF_XDP socket")]
    Xdp(#[source] kernel_nic::xdp::XdpError),
    /// The descriptors could not be handed over.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The process did not report Running in time, or failed while starting.
    #[error("the driver domain did not start: {0}")]
    NotRunning(String),
}

/// The device a driver domain drives, as the switch holds it.
#[derive(Debug, Clone)]
pub enum DomainDevice {
    /// A vhost-user NIC at this socket (the switch connects on the DD's behalf;
    /// each domain gets a fresh connection).
    Vhost(PathBuf),
    /// A TAP device the switch opened. The switch keeps it for the uplink's
    /// lifetime, so the device (and how the host configured it) outlives any one
    /// domain; each domain gets a copy, re-attached first if the device was
    /// deleted ([`kernel_nic::TapHandle::domain_fd`]).
    Tap(Arc<kernel_nic::TapHandle>),
    /// An interface reached through an AF_PACKET socket set up with these
    /// options. Each domain gets a socket of its own, opened (and bound) by the
    /// switch at its launch: nothing a previous domain did to its rings carries
    /// over, and an interface deleted and created again is found by name.
    Packet {
        /// The interface.
        name: kernel_nic::IfName,
        /// How its sockets are set up.
        options: kernel_nic::packet::PacketOptions,
        /// The group the socket joins, when the uplink has several queues.
        fanout: Option<Arc<kernel_nic::packet::Fanout>>,
    },
    /// One queue of an interface reached through an AF_XDP socket. Each domain
    /// gets a socket and UMEM of its own and holds the uplink's redirect
    /// program (its [`DomainLink`] does), which stays attached while a domain of
    /// one of the uplink's queues lives.
    Xdp {
        /// The uplink's program (and the interface it is for).
        attachment: Arc<kernel_nic::xdp::XdpAttachment>,
        /// The queue.
        queue: u32,
        /// The UMEM's shape.
        geometry: kernel_nic::xdp::XdpGeometry,
    },
}

/// How to start a driver domain.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The device the domain drives.
    pub device: DomainDevice,
    /// The `twin` executable to run as `twin driver-domain`.
    pub exe: PathBuf,
    /// How the DD's loop waits for work.
    pub poll: twin_poll::PollMode,
    /// Exchange ring geometry.
    pub geometry: Geometry,
    /// The driver's configuration (sizes the driver region).
    pub driver: DriverConfig,
    /// A name for logs and memfd names.
    pub name: String,
    /// How long a DD may go without a heartbeat before it counts as hung.
    pub watchdog: Duration,
    /// How long the DD may take to report Running.
    pub start_timeout: Duration,
    /// The user and group id the DD switches to before entering its namespaces
    /// (`None`: it keeps the switch's, which must then be unprivileged).
    pub outside_id: Option<u32>,
    /// The DD's address-space limit (`RLIMIT_AS`), bytes.
    pub memory_limit: u64,
}

/// The address space a driver domain may use: its two regions (a few MiB), its
/// code and a small heap fit many times over.
pub const DOMAIN_MEMORY_LIMIT: u64 = 1 << 30;

/// The names of a driver domain's own drop counters ([`DomainLink::dd_drops`]):
/// its rings', then a kernel interface's (`kernel_nic::KernelDrop`, zero for a
/// vhost-user NIC's domain).
pub const DD_DROP_NAMES: [&str; 8] = [
    "domain_from_nic_ring_full",
    "domain_nic_tx_ring_full",
    "domain_from_nic_too_big",
    kernel_nic::KernelDrop::ALL[0].as_str(),
    kernel_nic::KernelDrop::ALL[1].as_str(),
    kernel_nic::KernelDrop::ALL[2].as_str(),
    kernel_nic::KernelDrop::ALL[3].as_str(),
    kernel_nic::KernelDrop::ALL[4].as_str(),
];

/// The names of the upcall counters ([`DomainLink::upcall_counts`]).
pub const UPCALL_COUNT_NAMES: [&str; 4] = [
    "posted",
    "dropped_ring_full",
    "run_by_domain",
    "refused_by_domain",
];

/// Outcome of [`DomainLink::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// The frame is in the `to_nic` ring.
    Queued,
    /// The ring is full.
    RingFull,
    /// The frame is larger than a slot.
    TooBig,
    /// The link has failed.
    Failed,
}

/// A running driver domain, used as an uplink's driver.
#[derive(Debug)]
pub struct DomainLink {
    child: Child,
    /// What a switch-side instance needs of a vhost-user NIC's domain; `None` for
    /// a TAP device's (its fast path is system calls: it has no twin).
    vhost: Option<VhostParts>,
    upcalls: Arc<Mutex<UpcallChannel>>,
    /// Sequence number of the last ownership request written.
    owner_seq: u64,
    xr: Arc<ExchangeRegion>,
    to_nic: Producer,
    from_nic: Consumer,
    /// The switch rings it: work or space for the DD.
    doorbell_in: OwnedFd,
    /// The DD rings it: work or space for the switch.
    doorbell_out: OwnedFd,
    last_beat: u64,
    last_beat_at: Instant,
    watchdog: Duration,
    failure: Option<DomainFailure>,
    /// An AF_XDP domain's socket, program and the switch's mapping of its space.
    xdp: Option<XdpLink>,
    /// An AF_PACKET domain's socket and the switch's mapping of its space.
    packet: Option<PacketLink>,
}

/// What the switch keeps of a domain whose driver runs over a kernel socket's
/// shared rings (AF_XDP, AF_PACKET): its copy of the socket, its own mapping
/// of the driver's space, over which a switch-side instance runs after a
/// handover, the driver's layout, and (AF_XDP) the redirect program, attached
/// while the domain lives.
#[derive(Debug)]
pub struct RingLink<L> {
    _program: Option<Arc<kernel_nic::xdp::XdpProgram>>,
    socket: Arc<OwnedFd>,
    space: Arc<Region>,
    layout: L,
}

/// What the switch keeps of an AF_XDP domain.
pub type XdpLink = RingLink<kernel_nic::xdp::XdpLayout>;
/// What the switch keeps of an AF_PACKET domain.
pub type PacketLink = RingLink<kernel_nic::packet::PacketLayout>;

impl XdpLink {
    /// Maps the driver's space of `handover` (the same pieces at the same
    /// offsets as the domain maps them).
    fn xdp(
        program: Arc<kernel_nic::xdp::XdpProgram>,
        handover: kernel_nic::xdp::XdpHandover,
    ) -> Result<XdpLink, LaunchError> {
        let h = handover;
        let space = kernel_nic::xdp::map_space(
            &h.layout,
            h.state.as_fd(),
            h.socket.as_fd(),
            h.umem.as_fd(),
        )
        .map_err(LaunchError::Xdp)?;
        RingLink::new(Some(program), h.socket, h.state, space, h.layout)
    }
}

impl PacketLink {
    /// Maps the driver's space of `handover`.
    fn packet(h: kernel_nic::packet::PacketHandover) -> Result<PacketLink, LaunchError> {
        let space = kernel_nic::packet::map_space(&h.layout, h.state.as_fd(), h.socket.as_fd())
            .map_err(LaunchError::Packet)?;
        RingLink::new(None, h.socket, h.state, space, h.layout)
    }
}

impl<L> RingLink<L> {
    fn new(
        program: Option<Arc<kernel_nic::xdp::XdpProgram>>,
        socket: OwnedFd,
        state: OwnedFd,
        space: vm_memory::MmapRegion<()>,
        layout: L,
    ) -> Result<Self, LaunchError> {
        let space =
            Region::from_mapping(std::fs::File::from(state), space).map_err(LaunchError::Region)?;
        Ok(RingLink {
            _program: program,
            socket: Arc::new(socket),
            space: Arc::new(space),
            layout,
        })
    }

    /// The socket (the transmit doorbell; readable when frames arrive).
    pub fn socket(&self) -> &Arc<OwnedFd> {
        &self.socket
    }

    /// The switch's mapping of the driver's space.
    pub fn space(&self) -> &Arc<Region> {
        &self.space
    }

    /// The driver's layout, from the switch's own configuration (and for
    /// AF_XDP the kernel's ring offsets as the switch read them), never from
    /// the space.
    pub fn layout(&self) -> &L {
        &self.layout
    }
}

/// The parts of a vhost-user NIC's domain that a switch-side instance (inline,
/// twin) runs the fast path on after a handover.
#[derive(Debug)]
struct VhostParts {
    /// The driver's region, mapped here too.
    region: Arc<Region>,
    driver: DriverConfig,
    /// The switch's copies of the RX and TX (kick, call) eventfds.
    queues: [(OwnedFd, OwnedFd); 2],
}

fn eventfd() -> Result<OwnedFd, LaunchError> {
    rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| LaunchError::Create {
        what: "an eventfd",
        source: e.into(),
    })
}

/// Longest piece of a domain's stderr relayed as one line.
const RELAY_LINE_MAX: usize = 512;
/// Lines of one domain's stderr relayed per second; the rest are counted.
const RELAY_LINES_PER_SEC: u32 = 10;

/// Relays a driver domain's stderr into the switch's log, on a thread of its own
/// that ends when the domain (every holder of the pipe) is gone. Each line is cut
/// at [`RELAY_LINE_MAX`] bytes, escaped (no control characters reach the log), and
/// rate-limited to [`RELAY_LINES_PER_SEC`], with the count of suppressed lines.
fn relay_stderr(uplink: &str, pid: u32, err: std::process::ChildStderr) {
    let uplink = uplink.to_string();
    let relay = move || {
        use std::io::Read;
        let mut err = err;
        let mut buf = [0u8; RELAY_LINE_MAX];
        let mut fill = 0;
        let mut window = Instant::now();
        let (mut lines, mut suppressed) = (0u32, 0u64);
        loop {
            let n = match err.read(&mut buf[fill..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            fill += n;
            // Whole lines, or a full buffer as one piece.
            while fill > 0 {
                let cut = match buf[..fill].iter().position(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if fill == buf.len() => fill,
                    None => break,
                };
                if window.elapsed() >= Duration::from_secs(1) {
                    window = Instant::now();
                    lines = 0;
                }
                if lines < RELAY_LINES_PER_SEC {
                    lines += 1;
                    let text = String::from_utf8_lossy(&buf[..cut]);
                    let text = text.trim_end_matches('\n').escape_debug().to_string();
                    twin_log::info_limited!(%uplink, pid, suppressed, output = %text, "driver domain wrote to stderr");
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                buf.copy_within(cut..fill, 0);
                fill -= cut;
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("dd-stderr".into())
        .spawn(relay)
    {
        twin_log::warn_limited!(error = %e, "cannot relay a driver domain's stderr");
    }
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Sends a domain its descriptors: the device's, then the exchange region and the
/// doorbells.
fn bootstrap_send(
    boot: &UnixStream,
    device: bootstrap::OutgoingDevice<'_>,
    xr: &ExchangeRegion,
    doorbell_in: &OwnedFd,
    doorbell_out: &OwnedFd,
    poll: twin_poll::PollMode,
) -> Result<(), LaunchError> {
    bootstrap::send(
        boot,
        &bootstrap::Outgoing {
            device,
            exchange: xr.fd(),
            doorbell_in: doorbell_in.as_fd(),
            doorbell_out: doorbell_out.as_fd(),
            poll,
        },
    )?;
    Ok(())
}

impl DomainLink {
    /// Connects to the NIC, creates the regions and doorbells, starts the DD and waits
    /// until it reports Running.
    pub fn launch(cfg: &LaunchConfig) -> Result<Self, LaunchError> {
        // The device's descriptors: a fresh NIC connection, the driver's region and
        // the queues' eventfds; or a copy of the TAP descriptor.
        enum Dev {
            Vhost(UnixStream, VhostParts),
            Tap(OwnedFd),
            Packet(kernel_nic::packet::PacketHandover),
            Xdp(
                Arc<kernel_nic::xdp::XdpProgram>,
                Box<kernel_nic::xdp::XdpHandover>,
            ),
        }
        let dev = match &cfg.device {
            DomainDevice::Vhost(socket) => {
                let nic =
                    UnixStream::connect(socket).map_err(|source| LaunchError::ConnectNic {
                        path: socket.clone(),
                        source,
                    })?;
                let len = HostedDriver::region_len_for(&cfg.driver).map_err(LaunchError::Driver)?;
                let region = Arc::new(
                    Region::create(&format!("twin-dd-{}", cfg.name), len)
                        .map_err(LaunchError::Region)?,
                );
                let queues = [(eventfd()?, eventfd()?), (eventfd()?, eventfd()?)];
                let parts = VhostParts {
                    region,
                    driver: cfg.driver,
                    queues,
                };
                Dev::Vhost(nic, parts)
            }
            DomainDevice::Tap(tap) => {
                let (fd, reattached) = tap.domain_fd().map_err(LaunchError::Tap)?;
                if reattached {
                    twin_log::warn_limited!(device = %tap.name(), "the TAP device was deleted: created it again (unconfigured)");
                }
                Dev::Tap(fd)
            }
            DomainDevice::Packet {
                name,
                options,
                fanout,
            } => Dev::Packet(
                kernel_nic::packet::PacketSocket::open(name, *options, fanout.as_deref())
                    .map_err(LaunchError::Packet)?,
            ),
            DomainDevice::Xdp {
                attachment,
                queue,
                geometry,
            } => {
                let program = attachment.program().map_err(LaunchError::Xdp)?;
                let handover = program
                    .open_socket(*queue, *geometry)
                    .map_err(LaunchError::Xdp)?;
                Dev::Xdp(program, Box::new(handover))
            }
        };
        let xr = Arc::new(
            ExchangeRegion::create(&format!("twin-xchg-{}", cfg.name), cfg.geometry)
                .map_err(LaunchError::Exchange)?,
        );
        let (doorbell_in, doorbell_out) = (eventfd()?, eventfd()?);
        let (boot, boot_dd) = UnixStream::pair().map_err(|source| LaunchError::Create {
            what: "the bootstrap socket pair",
            source,
        })?;
        let mut cmd = Command::new(&cfg.exe);
        // Exactly the descriptors handed over below, whatever else the switch holds.
        sandbox::spawn_with_stdio_only(&mut cmd);
        cmd.arg("driver-domain")
            .arg("--memory-limit")
            .arg(cfg.memory_limit.to_string());
        if let Some(id) = cfg.outside_id {
            cmd.arg("--outside-id").arg(id.to_string());
        }
        let mut child = cmd
            // Printing a backtrace opens the executable, which the sandbox forbids:
            // a panic must end as exit status 101, not as a seccomp kill.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::from(OwnedFd::from(boot_dd)))
            .stdout(Stdio::null())
            // Its own pipe: what it writes is relayed as a field of the switch's
            // log lines, never as lines of their own it could forge.
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                exe: cfg.exe.clone(),
                source,
            })?;
        if let Some(err) = child.stderr.take() {
            relay_stderr(&cfg.name, child.id(), err);
        }
        let upcall_bell = doorbell_in
            .try_clone()
            .map_err(|source| LaunchError::Create {
                what: "a doorbell copy",
                source,
            })?;
        let (mut xdp, mut packet) = (None, None);
        let (device, vhost) = match dev {
            Dev::Vhost(nic, parts) => (Some(nic), Some(parts)),
            Dev::Tap(fd) => {
                let out = bootstrap::OutgoingDevice::Tap(fd.as_fd());
                bootstrap_send(&boot, out, &xr, &doorbell_in, &doorbell_out, cfg.poll)?;
                // The DD holds its copy now; the switch keeps the uplink's.
                drop(fd);
                (None, None)
            }
            Dev::Packet(handover) => {
                let out = bootstrap::OutgoingDevice::Packet {
                    socket: handover.socket.as_fd(),
                    state: handover.state.as_fd(),
                    layout: &handover.layout,
                };
                bootstrap_send(&boot, out, &xr, &doorbell_in, &doorbell_out, cfg.poll)?;
                // The switch maps the same space for the driver's twin.
                packet = Some(PacketLink::packet(handover)?);
                (None, None)
            }
            Dev::Xdp(program, handover) => {
                let out = bootstrap::OutgoingDevice::Xdp {
                    socket: handover.socket.as_fd(),
                    umem: handover.umem.as_fd(),
                    state: handover.state.as_fd(),
                    layout: &handover.layout,
                };
                bootstrap_send(&boot, out, &xr, &doorbell_in, &doorbell_out, cfg.poll)?;
                // The switch keeps the program attached for as long as the domain
                // lives, and maps the same space for the driver's twin.
                xdp = Some(XdpLink::xdp(program, *handover)?);
                (None, None)
            }
        };
        let mut link = DomainLink {
            child,
            vhost,
            upcalls: Arc::new(Mutex::new(UpcallChannel::new(xr.clone(), upcall_bell))),
            owner_seq: 0,
            to_nic: Producer::new(xr.clone(), RingId::ToNic),
            from_nic: Consumer::new(xr.clone(), RingId::FromNic),
            xr,
            doorbell_in,
            doorbell_out,
            last_beat: 0,
            last_beat_at: Instant::now(),
            watchdog: cfg.watchdog,
            failure: None,
            xdp,
            packet,
        };
        if let (Some(nic), Some(parts)) = (&device, &link.vhost) {
            let [(rx_kick, rx_call), (tx_kick, tx_call)] = &parts.queues;
            let out = bootstrap::OutgoingDevice::Vhost {
                nic,
                region: parts.region.fd(),
                queues: [
                    (rx_kick.as_fd(), rx_call.as_fd()),
                    (tx_kick.as_fd(), tx_call.as_fd()),
                ],
            };
            bootstrap_send(
                &boot,
                out,
                &link.xr,
                &link.doorbell_in,
                &link.doorbell_out,
                cfg.poll,
            )?;
        }
        // The DD holds the NIC connection now; when it dies, the NIC sees a hang-up.
        drop(device);
        link.wait_running(cfg.start_timeout)?;
        Ok(link)
    }

    fn wait_running(&mut self, timeout: Duration) -> Result<(), LaunchError> {
        let start = Instant::now();
        loop {
            match self.xr.status() {
                Ok(s) if s.state == DdState::Running => {
                    self.last_beat = self.xr.heartbeat();
                    self.last_beat_at = Instant::now();
                    return Ok(());
                }
                Ok(s) if s.state == DdState::Failed => {
                    return Err(LaunchError::NotRunning(format!(
                        "reported failure {}",
                        s.code
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(LaunchError::NotRunning(e.to_string())),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LaunchError::NotRunning(format!("exited: {status}")));
            }
            if start.elapsed() > timeout {
                return Err(LaunchError::NotRunning(format!(
                    "no Running within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The DD's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Copies `frame` into the `to_nic` ring (visible to the DD after
    /// [`DomainLink::flush`]).
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Send {
        if self.failure.is_some() {
            return Send::Failed;
        }
        let slot: Slot<'_> = match self.to_nic.reserve() {
            Ok(Some(s)) => s,
            Ok(None) => return Send::RingFull,
            Err(e) => {
                self.failure = Some(DomainFailure::ToNicRing(e));
                return Send::Failed;
            }
        };
        if (slot.capacity() as usize) < frame.len() {
            return Send::TooBig;
        }
        let n = frame.copy_to(&slot.frame());
        match slot.commit(n) {
            Ok(()) => Send::Queued,
            Err(e) => {
                self.failure = Some(DomainFailure::ToNicCommit(e));
                Send::Failed
            }
        }
    }

    /// Publishes what [`DomainLink::send`] queued and rings the DD if it sleeps.
    pub fn flush(&mut self) {
        self.to_nic.publish();
        if self.to_nic.needs_notify() {
            ring(&self.doorbell_in);
        }
    }

    /// Frames the DD received from the NIC, up to `max`.
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        if self.failure.is_some() {
            return 0;
        }
        let n = match self.from_nic.poll(max, f) {
            Ok(n) => n,
            Err(e) => {
                let n = e.consumed();
                self.failure = Some(DomainFailure::FromNicRing(e));
                n
            }
        };
        if n > 0 && self.from_nic.needs_notify() {
            ring(&self.doorbell_in);
        }
        n
    }

    /// The fd the DD rings when the switch has work (for epoll).
    pub fn rx_call_fd(&self) -> RawFd {
        self.doorbell_out.as_raw_fd()
    }

    /// Event mode: asks the DD to ring when frames arrive. Returns true when frames
    /// are already waiting (do not sleep).
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        on && self.from_nic.arm_notify()
    }

    /// Why the link is unusable, if it is: the process exited, its heartbeat stalled
    /// for longer than the watchdog, it reported Failed, or it broke the exchange
    /// protocol.
    pub fn check_health(&mut self, now: Instant) -> Option<DomainFailure> {
        if let Some(f) = &self.failure {
            return Some(f.clone());
        }
        // The status first: a DD that reported why it failed and then exited is
        // reported with its reason.
        match self.xr.status() {
            Ok(s) if s.state == DdState::Failed => {
                self.failure = Some(DomainFailure::Reported {
                    code: s.code,
                    name: crate::worker::code::name(s.code),
                });
                return self.failure.clone();
            }
            Ok(_) => {}
            Err(e) => {
                self.failure = Some(DomainFailure::Status(Arc::new(e)));
                return self.failure.clone();
            }
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            // A DD that reported why it failed, then exited, is reported with its
            // reason (the status may have been written since it was read above).
            self.failure = Some(match self.xr.status() {
                Ok(s) if s.state == DdState::Failed => DomainFailure::ReportedAndExited {
                    code: s.code,
                    name: crate::worker::code::name(s.code),
                    status,
                },
                _ => DomainFailure::Exited(status),
            });
            return self.failure.clone();
        }
        let beat = self.xr.heartbeat();
        if beat != self.last_beat {
            self.last_beat = beat;
            self.last_beat_at = now;
        } else if now.duration_since(self.last_beat_at) > self.watchdog {
            self.failure = Some(DomainFailure::Hung(self.watchdog));
        }
        self.failure.clone()
    }

    /// The DD's own drop counters, by reason (as it reports them), named as in
    /// [`DD_DROP_NAMES`].
    pub fn dd_drops(&self) -> [(&'static str, u64); 8] {
        use crate::worker::control;
        let get = |i| self.xr.control(i).unwrap_or(0);
        [
            (DD_DROP_NAMES[0], get(control::FROM_NIC_RING_FULL)),
            (DD_DROP_NAMES[1], get(control::NIC_TX_RING_FULL)),
            (DD_DROP_NAMES[2], get(control::FROM_NIC_TOO_BIG)),
            (DD_DROP_NAMES[3], get(control::KERNEL_DROPS)),
            (DD_DROP_NAMES[4], get(control::KERNEL_DROPS + 1)),
            (DD_DROP_NAMES[5], get(control::KERNEL_DROPS + 2)),
            (DD_DROP_NAMES[6], get(control::KERNEL_DROPS + 3)),
            (DD_DROP_NAMES[7], get(control::KERNEL_DROPS + 4)),
        ]
    }

    /// The checks of the NIC's used rings that fired in the driver, and the DD's
    /// TX timeouts, by name (as the DD reports them: its own claims).
    pub fn dd_device_errors(&self) -> [(&'static str, u64); 9] {
        use crate::worker::control;
        let get = |i| self.xr.control(control::DEVICE_ERRORS + i).unwrap_or(0);
        std::array::from_fn(|i| (control::DEVICE_ERROR_NAMES[i], get(i)))
    }

    /// Frames queued toward the NIC that the DD has not taken: lost if it is dead.
    pub fn in_flight(&mut self) -> u64 {
        let slots = u64::from(self.xr.geometry().slots);
        match self.to_nic.available() {
            Ok(free) => slots.saturating_sub(free as u64),
            // The DD broke the ring; everything it had may be gone.
            Err(_) => slots,
        }
    }

    /// Asks the domain to commit `fault` (see [`crate::fault`]).
    pub fn inject(&self, fault: crate::Fault) -> Result<(), exchange::RegionError> {
        crate::fault::request(&self.xr, fault)
    }

    /// An AF_XDP domain's socket, the switch's mapping of the driver's space and
    /// the driver's layout, for a switch-side instance; `None` for other kinds.
    pub fn xdp(&self) -> Option<&XdpLink> {
        self.xdp.as_ref()
    }

    /// The same for an AF_PACKET domain; `None` for other kinds.
    pub fn packet(&self) -> Option<&PacketLink> {
        self.packet.as_ref()
    }

    /// The driver's region (the DD's memory), for a switch-side instance; `None`
    /// for a TAP device's domain.
    pub fn region(&self) -> Option<&Arc<Region>> {
        self.vhost.as_ref().map(|v| &v.region)
    }

    /// The driver configuration the region was sized for (the switch computes the
    /// driver's layout from this, never from the region); `None` for a TAP
    /// device's domain.
    pub fn driver_config(&self) -> Option<&DriverConfig> {
        self.vhost.as_ref().map(|v| &v.driver)
    }

    /// The switch's own copies of the queues' eventfds, as a switch-side instance
    /// needs them: (kick, call) for RX, then TX; `None` for a TAP device's domain.
    pub fn queue_fds(&self) -> Option<std::io::Result<[QueueFds; 2]>> {
        let pair = |(k, c): &(OwnedFd, OwnedFd)| -> std::io::Result<QueueFds> {
            Ok(QueueFds {
                kick: sandbox::fdpass::into_eventfd(k.try_clone()?),
                call: sandbox::fdpass::into_eventfd(c.try_clone()?),
            })
        };
        let v = self.vhost.as_ref()?;
        Some((|| Ok([pair(&v.queues[0])?, pair(&v.queues[1])?]))())
    }

    /// What a switch-side instance waits on for received frames: the NIC's RX
    /// call eventfd (readable when frames arrive and the fast path's owner asked
    /// for notifications), or a ring kind's socket; `None` for a TAP device.
    pub fn nic_rx_call_fd(&self) -> Option<RawFd> {
        match (&self.vhost, &self.xdp, &self.packet) {
            (Some(v), _, _) => Some(v.queues[0].1.as_raw_fd()),
            (None, Some(x), _) => Some(x.socket.as_raw_fd()),
            (None, None, Some(p)) => Some(p.socket.as_raw_fd()),
            (None, None, None) => None,
        }
    }

    /// Where a switch-side instance posts upcalls to this DD.
    pub fn upcall_sink(&self) -> SharedUpcalls {
        SharedUpcalls(self.upcalls.clone())
    }

    /// Upcalls (posted by the switch, dropped because the ring was full, run by
    /// the DD, refused by the DD), named as in [`UPCALL_COUNT_NAMES`]. The DD's
    /// numbers are its own claims.
    pub fn upcall_counts(&self) -> [(&'static str, u64); 4] {
        let (posted, dropped) = self.upcalls.lock().map_or((0, 0), |c| c.counts());
        let get = |i| self.xr.control(i).unwrap_or(0);
        [
            (UPCALL_COUNT_NAMES[0], posted),
            (UPCALL_COUNT_NAMES[1], dropped),
            (UPCALL_COUNT_NAMES[2], get(handover::CONTROL_UPCALLS_RUN)),
            (
                UPCALL_COUNT_NAMES[3],
                get(handover::CONTROL_UPCALLS_REFUSED),
            ),
        ]
    }

    /// Asks the DD to hand the fast path to `owner` (see [`crate::handover`]);
    /// returns the request's sequence number. The switch must already have stopped
    /// its own instance when asking for [`Owner::Domain`].
    pub fn request_owner(&mut self, owner: Owner) -> u64 {
        self.owner_seq += 1;
        let req = Request {
            seq: self.owner_seq,
            owner,
        };
        let _ = self
            .xr
            .set_control(handover::CONTROL_OWNER_REQUEST, req.to_word());
        ring(&self.doorbell_in);
        self.owner_seq
    }

    /// Whether the DD has carried out request `seq` for `owner` (a wrong
    /// acknowledgement is simply not this one; a DD that never answers is caught by
    /// the caller's timeout or the watchdog).
    ///
    /// A lying DD (one that acknowledges and keeps running the fast path) can only
    /// corrupt its own region, which the switch's instance validates (and a twin
    /// reaches only through the SVM): the harm stays with this uplink.
    pub fn owner_acked(&self, seq: u64, owner: Owner) -> bool {
        let word = self.xr.control(handover::CONTROL_OWNER_ACK).unwrap_or(0);
        Request::from_word(word) == Some(Request { seq, owner })
    }

    /// After the DD acknowledged a handover to the switch: hands every frame still
    /// in `to_nic` (queued after the DD's last batch) to `f`, in order, so that the
    /// switch's instance sends them before anything new. Returns how many.
    ///
    /// At most what the switch itself published and the DD had not taken, never
    /// more than the ring holds: the DD can write the ring's indices, and a hostile
    /// one that keeps moving them would otherwise keep this loop going forever.
    pub fn take_queued_to_nic(
        &mut self,
        f: impl FnMut(&Segments<'_>),
    ) -> Result<usize, exchange::ExchangeError> {
        let mut c = Consumer::resume(self.xr.clone(), RingId::ToNic)?;
        let queued = self.to_nic.outstanding_from(c.position());
        c.poll(queued, f)
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DomainLink {
    fn drop(&mut self) {
        self.kill();
    }
}
