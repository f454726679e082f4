//! The control plane: one thread per device that listens on the vhost-user socket,
//! serves one client at a time, and publishes ring state to the data path.
//!
//! The request handler ([`Handler`]) implements
//! [`VhostUserBackendReqHandlerMut`] directly on `vhost`'s `BackendListener` /
//! `BackendReqHandler` (not `vhost-user-backend`, whose daemon polls kick fds in its
//! own worker threads; our data path must own them). Every message is validated:
//! queue index, ring size (power of two, at most [`DeviceConfig::max_queue_size`]),
//! ring addresses (translated from the client's virtual addresses to
//! guest-physical through the memory table, and inside it), memory regions (no
//! overflow, backed by the file, no overlap), feature bits (a subset of the offer).
//!
//! Client memory is mapped through [`crate::fault_fence`] (a truncated file cannot
//! crash the process) and only within the caps of [`crate::budget`]: a memory
//! table larger than [`DeviceConfig::max_client_memory`] or than what is left of
//! the shared [`DeviceConfig::budget`] is refused before anything is mapped, with
//! a rate-limited warning that says which cap and by how much.
//!
//! Each connection gets a fresh handler. When the client closes the socket (or is
//! kicked out for breaking a ring, or stalls mid-message for longer than
//! [`READ_TIMEOUT`]), the connection is logged, the data path is told, and the
//! device listens again, so a client that comes back gets a working port.
//!
//! Limits: one queue pair (MQ not offered), no dirty logging, no inflight
//! tracking, no backend-initiated requests; at most [`MAX_MEM_SLOTS`] regions.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use twin_wire::features::{DEVICE_OFFER, VHOST_USER_F_PROTOCOL_FEATURES};
use twin_wire::MacAddr;
use vhost::vhost_user::message::{
    FrontendReq, VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags,
    VhostUserInflight, VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures,
    VhostUserShMemConfig, VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags,
    VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, BackendListener, BackendReqHandler, Error as VuError, GpuBackend, Listener,
    Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use vm_memory::{ByteValued, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::budget::{MemoryBudget, Reservation, DEFAULT_MAX_CLIENT_MEMORY};
use crate::datapath::DeviceHandle;
use crate::fault_fence::{self, ClientMemory, ClientRegion, FaultFlag};
use crate::ratelimit::RateLimiter;
use crate::ring_access::MAX_QUEUE_SIZE;
use crate::shared::{Published, QueueConf, Shared, NUM_QUEUES, STOP_TIMEOUT};

/// Most memory regions accepted (SET_MEM_TABLE or ADD_MEM_REG).
pub const MAX_MEM_SLOTS: usize = 32;
/// A client that sends part of a message and then stalls this long (or does not read
/// its replies for this long) is disconnected.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_MS: i32 = 100;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: VuError,
    },
    /// Shared state could not be created.
    #[error(transparent)]
    Shared(#[from] crate::shared::Error),
    /// epoll failed.
    #[error("epoll: {0}")]
    Epoll(#[source] std::io::Error),
    /// The control thread could not be started.
    #[error("cannot start the control thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Configuration of one device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// MAC address reported in the config space (GET_CONFIG); `None` reports
    /// zeroes, so QEMU keeps the MAC of its `-device` line.
    pub mac: Option<MacAddr>,
    /// Largest ring size accepted (power of two, at most 32768).
    pub max_queue_size: u16,
    /// Most bytes of memory one client may have mapped (its whole memory table).
    pub max_client_memory: u64,
    /// A budget shared with other devices (the switch's total), if any.
    pub budget: Option<Arc<MemoryBudget>>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            mac: None,
            max_queue_size: MAX_QUEUE_SIZE,
            max_client_memory: DEFAULT_MAX_CLIENT_MEMORY,
            budget: None,
        }
    }
}

/// What every connection of one device shares: its name and the limiter of the
/// log lines its clients can trigger.
#[derive(Debug)]
struct DeviceCtx {
    name: Arc<str>,
    lim: Mutex<RateLimiter<2>>,
}

impl DeviceCtx {
    /// Whether a line of kind `key` may be logged now (`Some(suppressed)`).
    fn may_log(&self, key: usize) -> Option<u64> {
        self.lim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(key)
    }
}

const LOG_CAP: usize = 0;
const LOG_MAP: usize = 1;

/// The control half of a device: owns the control thread; dropping it stops the
/// thread (within about 100 ms) and disconnects any client.
#[derive(Debug)]
pub struct VhostDevice {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VhostDevice {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VhostDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(path = %self.path.display(), "vhost-user control thread panicked");
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn start(path: &Path, cfg: DeviceConfig) -> Result<(VhostDevice, DeviceHandle), Error> {
    let listener = Listener::new(path, true).map_err(|source| Error::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Listen {
            path: path.to_path_buf(),
            source,
        })?;
    let shared = Arc::new(Shared::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let name: Arc<str> = Arc::from(path.display().to_string());
    let handle = DeviceHandle::new(shared.clone(), name.clone());
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("vhost-ctl".into())
        .spawn(move || {
            if let Err(e) = control_loop(listener, shared, cfg, stop2, &name) {
                tracing::error!(port = &*name, error = %e, "vhost-user control thread failed");
            }
        })
        .map_err(Error::Spawn)?;
    Ok((
        VhostDevice {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        },
        handle,
    ))
}

fn wait_readable(ep: &Epoll) -> Result<bool, Error> {
    let mut ev = [EpollEvent::default(); 2];
    match ep.wait(POLL_MS, &mut ev) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(Error::Epoll(e)),
    }
}

fn control_loop(
    mut listener: Listener,
    shared: Arc<Shared>,
    cfg: DeviceConfig,
    stop: Arc<AtomicBool>,
    name: &str,
) -> Result<(), Error> {
    let ep = Epoll::new().map_err(Error::Epoll)?;
    ep.ctl(
        ControlOperation::Add,
        listener.as_raw_fd(),
        EpollEvent::new(EventSet::IN, 0),
    )
    .map_err(Error::Epoll)?;
    let mut connection = 0u64;
    let mut lim = RateLimiter::<4>::new(5);
    let ctx = Arc::new(DeviceCtx {
        name: Arc::from(name),
        lim: Mutex::new(RateLimiter::new(5)),
    });
    tracing::info!(port = name, "vhost-user device listening");
    while !stop.load(Ordering::Acquire) {
        if !wait_readable(&ep)? {
            continue;
        }
        let handler = Arc::new(Mutex::new(Handler::new(
            shared.clone(),
            cfg.clone(),
            connection + 1,
            ctx.clone(),
        )));
        let accepted = match BackendListener::new(&mut listener, handler.clone()) {
            Ok(mut bl) => bl.accept(),
            Err(e) => Err(e),
        };
        match accepted {
            Ok(Some(req)) => {
                connection += 1;
                serve(req, &handler, &shared, &stop, name, connection, &mut lim)?;
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(suppressed) = lim.check(0) {
                    tracing::warn!(port = name, error = %e, suppressed, "accept failed");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    shared.publish(Published::default());
    Ok(())
}

fn serve(
    mut req: BackendReqHandler<Mutex<Handler>>,
    handler: &Arc<Mutex<Handler>>,
    shared: &Shared,
    stop: &AtomicBool,
    name: &str,
    connection: u64,
    lim: &mut RateLimiter<4>,
) -> Result<(), Error> {
    tracing::info!(port = name, connection, "vhost-user client connected");
    shared.kick_out.store(false, Ordering::Release);
    shared.store_last_avail(0, 0);
    shared.store_last_avail(1, 0);
    lock(handler).publish();
    let sock = match req.try_clone_connection() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(port = name, error = %e, "cannot clone client socket");
            lock(handler).disconnect();
            return Ok(());
        }
    };
    let ep = Epoll::new().map_err(Error::Epoll)?;
    ep.ctl(
        ControlOperation::Add,
        sock.as_raw_fd(),
        EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP, 0),
    )
    .map_err(Error::Epoll)?;
    let watch = StallWatch::new();
    let reason = std::thread::scope(|scope| {
        // `vhost` reads a message to its end, retrying through socket timeouts, so
        // a client that sends part of one would hold this thread (and the switch's
        // shutdown) forever: the watcher shuts the socket down under it instead.
        let watcher = std::thread::Builder::new()
            .name("vhost-ctl-watch".into())
            .spawn_scoped(scope, || watch.run(&sock, stop));
        if let Err(e) = &watcher {
            tracing::warn!(port = name, error = %e, "cannot start the stall watcher");
        }
        let reason = serve_requests(
            &mut req, handler, shared, stop, name, connection, lim, &ep, &sock, &watch,
        );
        watch.finish();
        reason
    })?;
    let _ = sock.shutdown(std::net::Shutdown::Both);
    lock(handler).disconnect();
    tracing::info!(
        port = name,
        connection,
        reason,
        "vhost-user client disconnected"
    );
    Ok(())
}

/// Watches one connection for a request that takes longer than [`READ_TIMEOUT`] and
/// for the device stopping; either shuts the socket down, which ends the request.
#[derive(Debug)]
struct StallWatch {
    start: std::time::Instant,
    /// Milliseconds since `start` at which the current request began, plus one; 0
    /// between requests.
    busy_since: std::sync::atomic::AtomicU64,
    stalled: AtomicBool,
    done: AtomicBool,
}

impl StallWatch {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            busy_since: std::sync::atomic::AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn begin(&self) {
        self.busy_since.store(self.now_ms(), Ordering::Release);
    }

    fn end(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn run(&self, sock: &std::os::unix::net::UnixStream, stop: &AtomicBool) {
        let limit = READ_TIMEOUT.as_millis() as u64;
        while !self.done.load(Ordering::Acquire) {
            let since = self.busy_since.load(Ordering::Acquire);
            let stalled = since != 0 && self.now_ms().saturating_sub(since) > limit;
            if stalled || stop.load(Ordering::Acquire) {
                self.stalled.store(stalled, Ordering::Release);
                let _ = sock.shutdown(std::net::Shutdown::Both);
                return;
            }
            std::thread::sleep(Duration::from_millis(POLL_MS as u64));
        }
    }
}

/// Serves one connection's requests until it ends; returns why it ended.
#[allow(clippy::too_many_arguments)] // the connection's parts, borrowed from `serve`
fn serve_requests(
    req: &mut BackendReqHandler<Mutex<Handler>>,
    handler: &Arc<Mutex<Handler>>,
    shared: &Shared,
    stop: &AtomicBool,
    name: &str,
    connection: u64,
    lim: &mut RateLimiter<4>,
    ep: &Epoll,
    sock: &std::os::unix::net::UnixStream,
    watch: &StallWatch,
) -> Result<&'static str, Error> {
    Ok(loop {
        if stop.load(Ordering::Acquire) {
            break "device stopped";
        }
        if shared.kick_out.swap(false, Ordering::AcqRel) {
            if lock(handler).fault.is_set() {
                break "client memory faulted (file truncated); port fenced off";
            }
            break "client broke a ring; port reset";
        }
        if !wait_readable(ep)? {
            continue;
        }
        let early_enable = if lock(handler).features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            peek_vring_enable(sock)
        } else {
            None
        };
        watch.begin();
        let result = req.handle_request();
        watch.end();
        if watch.stalled.load(Ordering::Acquire) {
            if let Some(suppressed) = lim.check(2) {
                tracing::warn!(port = name, connection, suppressed, timeout = ?READ_TIMEOUT,
                    "vhost-user client stalled in the middle of a message; dropping it");
            }
            break "client stalled mid-message";
        }
        match result {
            Ok(()) => {}
            Err(VuError::Disconnected) | Err(VuError::PartialMessage) => {
                break "client closed the socket";
            }
            // `vhost` raises this only for a SET_VRING_ENABLE that comes before
            // SET_FEATURES has acked PROTOCOL_FEATURES, after reading the whole
            // message and without calling us. QEMU (7.2) enables a virtio-net
            // device's rings exactly so, before SET_FEATURES and not after: carry
            // it out (as DPDK's vhost library does) from the copy peeked above.
            Err(VuError::InactiveFeature(_)) => {
                if let Some((index, enable)) = early_enable {
                    tracing::debug!(
                        port = name,
                        connection,
                        index,
                        enable,
                        "SET_VRING_ENABLE before SET_FEATURES"
                    );
                    if let Err(e) = lock(handler).set_vring_enable(index, enable) {
                        tracing::debug!(port = name, connection, error = %e,
                            "early SET_VRING_ENABLE refused");
                    }
                }
            }
            Err(e) => {
                shared.refused_requests.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = lim.check(1) {
                    tracing::warn!(port = name, connection, error = %e, suppressed,
                        "vhost-user protocol error; dropping the client");
                }
                break "protocol error";
            }
        }
    })
}

/// If the client's next message is a well-formed SET_VRING_ENABLE (a 12-byte header
/// `{request, flags, size}` and an 8-byte [`VhostUserVringState`] body, in native
/// byte order), its queue index and whether it enables the ring; the message stays
/// in the socket. (`vhost` keeps its header type private.)
fn peek_vring_enable(sock: &std::os::unix::net::UnixStream) -> Option<(u32, bool)> {
    let mut m = [0u8; 20];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    let (_, n) = rustix::net::recv(sock, &mut m, flags).ok()?;
    let word = |i: usize| u32::from_ne_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
    if n < m.len() || word(0) != FrontendReq::SET_VRING_ENABLE as u32 || word(8) != 8 {
        return None;
    }
    let body = VhostUserVringState::from_slice(&m[12..])?;
    let (index, num) = (body.index, body.num);
    (num <= 1).then_some((index, num == 1))
}

/// Takes a descriptor received from the client and makes it close-on-exec at once.
///
/// `vhost` receives with `vmm-sys-util`'s `recvmsg`, which does not pass
/// `MSG_CMSG_CLOEXEC`, so every client descriptor arrives inheritable; the handler
/// is called right after the receive. The instant in between is covered by the
/// switch's spawns, which let no descriptor but stdio through exec
/// (`sandbox::spawn_with_stdio_only`).
fn adopt(file: File) -> File {
    if let Err(e) = rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::CLOEXEC) {
        tracing::warn!(error = %e, "cannot make a client descriptor close-on-exec");
    }
    file
}

fn lock(h: &Mutex<Handler>) -> std::sync::MutexGuard<'_, Handler> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct MemRegion {
    gpa: u64,
    size: u64,
    uaddr: u64,
    region: Arc<ClientRegion>,
}

#[derive(Debug, Default)]
struct CtlQueue {
    size: u16,
    /// desc, used, avail as the client's virtual addresses.
    addrs: Option<(u64, u64, u64)>,
    base: u16,
    base_seq: u64,
    kick: Option<Arc<File>>,
    call: Option<Arc<File>>,
    err: Option<File>,
    started: bool,
    enabled: bool,
}

/// The vhost-user request handler of one connection.
#[derive(Debug)]
pub struct Handler {
    shared: Arc<Shared>,
    cfg: DeviceConfig,
    connection: u64,
    features: u64,
    protocol: u64,
    regions: Vec<MemRegion>,
    mem: Option<Arc<ClientMemory>>,
    queues: [CtlQueue; NUM_QUEUES],
    seq: u64,
    /// Raised when a fenced mapping of this connection's memory faults.
    fault: Arc<FaultFlag>,
    /// This connection's share of the switch's memory budget (its table in force).
    reservation: Reservation,
    ctx: Arc<DeviceCtx>,
    /// Longest wait for the data path's ring-stop acknowledgement
    /// ([`STOP_TIMEOUT`]; zero only for the in-process fuzzing harness).
    stop_timeout: Duration,
}

fn offered_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

fn bad(what: &'static str) -> VuError {
    tracing::debug!(what, "rejected vhost-user request");
    VuError::InvalidOperation(what)
}

impl Handler {
    fn new(shared: Arc<Shared>, cfg: DeviceConfig, connection: u64, ctx: Arc<DeviceCtx>) -> Self {
        let reservation = Reservation::new(cfg.budget.clone());
        let mut h = Self {
            shared,
            cfg,
            fault: Arc::default(),
            reservation,
            ctx,
            connection,
            features: 0,
            protocol: 0,
            regions: Vec::new(),
            mem: None,
            queues: Default::default(),
            seq: connection << 32,
            stop_timeout: STOP_TIMEOUT,
        };
        for q in 0..NUM_QUEUES {
            h.seq += 1;
            h.queues[q].base_seq = h.seq;
        }
        h
    }

    fn queue(&mut self, index: u32) -> VuResult<&mut CtlQueue> {
        self.queues
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }

    fn va_to_gpa(&self, va: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = va.checked_sub(r.uaddr)?;
            if off.checked_add(len)? <= r.size {
                r.gpa.checked_add(off)
            } else {
                None
            }
        })
    }

    fn translate(&self, q: &CtlQueue) -> Option<(u64, u64, u64)> {
        let (d, u, a) = q.addrs?;
        let n = u64::from(q.size);
        Some((
            self.va_to_gpa(d, 16 * n)?,
            self.va_to_gpa(a, 6 + 2 * n)?,
            self.va_to_gpa(u, 6 + 8 * n)?,
        ))
    }

    fn publish(&self) -> u64 {
        let proto = self.features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        let mut p = Published {
            connection: self.connection,
            connected: true,
            features: self.features & !VHOST_USER_F_PROTOCOL_FEATURES,
            mem: self.mem.clone(),
            fault: self.fault.clone(),
            queues: Default::default(),
        };
        for (qi, q) in self.queues.iter().enumerate() {
            let mut c = QueueConf {
                size: q.size,
                base: q.base,
                base_seq: q.base_seq,
                kick: q.kick.clone(),
                call: q.call.clone(),
                enabled: if proto { q.enabled } else { true },
                ..Default::default()
            };
            if q.started && q.size != 0 {
                match self.translate(q) {
                    Some((d, a, u)) => {
                        c.desc = d;
                        c.avail = a;
                        c.used = u;
                        c.started = true;
                    }
                    None => {
                        tracing::warn!(queue = qi, "ring addresses not in the memory table")
                    }
                }
            }
            p.queues[qi] = c;
        }
        self.shared.publish(p)
    }

    fn disconnect(&mut self) {
        self.shared.publish(Published {
            connection: self.connection,
            fault: self.fault.clone(),
            ..Default::default()
        });
        // Unmap only after the data path let go of the rings (its Arc keeps the
        // mapping, and its fault-fence entry, alive anyway).
        self.mem = None;
        self.regions.clear();
        self.settle();
    }

    /// Checks a memory table of `total` bytes against the caps and, if it fits,
    /// reserves it in place of the table in force.
    fn admit(&mut self, total: u64) -> VuResult<()> {
        let cap = self.cfg.max_client_memory;
        if total > cap {
            if let Some(suppressed) = self.ctx.may_log(LOG_CAP) {
                tracing::warn!(
                    port = &*self.ctx.name,
                    connection = self.connection,
                    requested = total,
                    cap,
                    suppressed,
                    "client memory table refused: larger than the per-client cap"
                );
            }
            return Err(bad("memory table larger than the per-client cap"));
        }
        if let Err(e) = self.reservation.try_resize(total) {
            if let Some(suppressed) = self.ctx.may_log(LOG_CAP) {
                tracing::warn!(port = &*self.ctx.name, connection = self.connection,
                    error = %e, suppressed,
                    "client memory table refused: the switch's client memory budget is exhausted");
            }
            return Err(bad("memory table over the switch's client memory budget"));
        }
        Ok(())
    }

    /// Accounts for exactly the table in force (after a change or a failed one).
    fn settle(&mut self) {
        let total = self
            .regions
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.size));
        self.reservation.force(total);
    }

    fn reset(&mut self) {
        let c = self.connection;
        let seq = self.seq;
        let stop_timeout = self.stop_timeout;
        *self = Handler::new(self.shared.clone(), self.cfg.clone(), c, self.ctx.clone());
        self.seq = seq;
        self.stop_timeout = stop_timeout;
        for q in 0..NUM_QUEUES {
            self.seq += 1;
            self.queues[q].base_seq = self.seq;
        }
        self.publish();
    }

    fn map_region(&self, r: &VhostUserMemoryRegion, file: File) -> VuResult<MemRegion> {
        let size = r.memory_size;
        if size == 0
            || r.guest_phys_addr.checked_add(size).is_none()
            || r.user_addr.checked_add(size).is_none()
            || usize::try_from(size).is_err()
        {
            return Err(bad("memory region size or address overflows"));
        }
        let end = r
            .mmap_offset
            .checked_add(size)
            .ok_or_else(|| bad("memory region offset overflows"))?;
        let md = file.metadata().map_err(VuError::ReqHandlerError)?;
        if md.is_file() && md.len() < end {
            return Err(bad("memory region larger than its file"));
        }
        let region = fault_fence::map_client_file(
            &file,
            r.mmap_offset,
            size,
            GuestAddress(r.guest_phys_addr),
            &self.fault,
        )
        .map_err(|e| {
            if let Some(suppressed) = self.ctx.may_log(LOG_MAP) {
                tracing::warn!(port = &*self.ctx.name, connection = self.connection,
                    error = %e, suppressed, "cannot map client memory");
            }
            bad("cannot map memory region")
        })?;
        Ok(MemRegion {
            gpa: r.guest_phys_addr,
            size,
            uaddr: r.user_addr,
            region: Arc::new(region),
        })
    }

    fn rebuild(&mut self, mut regions: Vec<MemRegion>) -> VuResult<()> {
        regions.sort_by_key(|r| r.gpa);
        let mem = if regions.is_empty() {
            None
        } else {
            let m =
                ClientMemory::from_arc_regions(regions.iter().map(|r| r.region.clone()).collect())
                    .map_err(|_| bad("memory regions overlap"))?;
            Some(Arc::new(m))
        };
        self.regions = regions;
        self.mem = mem;
        self.publish();
        Ok(())
    }
}

/// What [`crate::fuzzing`] needs of a handler; nothing else uses these.
impl Handler {
    /// The handler of a new connection on `shared`, as the control thread makes
    /// and starts one (`serve`), except that a ring stop does not wait for the
    /// data path (the harness runs the data path on the same thread, between
    /// requests).
    pub(crate) fn connect_for_fuzzing(
        shared: Arc<Shared>,
        cfg: DeviceConfig,
        connection: u64,
    ) -> Self {
        let ctx = Arc::new(DeviceCtx {
            name: Arc::from("fuzz"),
            lim: Mutex::new(RateLimiter::new(5)),
        });
        let mut h = Handler::new(shared.clone(), cfg, connection, ctx);
        h.stop_timeout = Duration::ZERO;
        shared.kick_out.store(false, Ordering::Release);
        shared.store_last_avail(0, 0);
        shared.store_last_avail(1, 0);
        h.publish();
        h
    }

    /// What the control thread does when the client goes away.
    pub(crate) fn disconnect_for_fuzzing(&mut self) {
        self.disconnect();
    }

    /// The handler's invariants after any sequence of requests, hostile or not.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        use vm_memory::GuestMemoryBackend as _;
        let total = self
            .regions
            .iter()
            .try_fold(0u64, |a, r| a.checked_add(r.size))
            .ok_or("memory table size overflows")?;
        if self.regions.len() > MAX_MEM_SLOTS {
            return Err(format!("{} memory regions", self.regions.len()));
        }
        if total > self.cfg.max_client_memory {
            return Err(format!("{total} bytes mapped, over the per-client cap"));
        }
        if self.reservation.bytes() != total {
            return Err(format!(
                "{} bytes reserved for a table of {total}",
                self.reservation.bytes()
            ));
        }
        if let Some(b) = &self.cfg.budget {
            if b.used() > b.limit() {
                return Err(format!("budget: {} used of {}", b.used(), b.limit()));
            }
        }
        match &self.mem {
            None if !self.regions.is_empty() => return Err("regions without memory".into()),
            Some(_) if self.regions.is_empty() => return Err("memory without regions".into()),
            Some(m) if m.num_regions() != self.regions.len() => {
                return Err("memory and regions disagree".into())
            }
            _ => {}
        }
        for w in self.regions.windows(2) {
            if w[0].gpa.saturating_add(w[0].size) > w[1].gpa {
                return Err(format!("regions overlap at {:#x}", w[1].gpa));
            }
        }
        let max = self.cfg.max_queue_size.min(MAX_QUEUE_SIZE);
        for q in &self.queues {
            if q.size != 0 && (!q.size.is_power_of_two() || q.size > max) {
                return Err(format!("ring size {} accepted", q.size));
            }
        }
        Ok(())
    }
}

impl VhostUserBackendReqHandlerMut for Handler {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES)
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !(DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES) != 0 {
            return Err(bad("features outside the offer"));
        }
        self.features = features;
        self.publish();
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        let files: Vec<File> = files.into_iter().map(adopt).collect();
        if ctx.len() != files.len() || ctx.is_empty() || ctx.len() > MAX_MEM_SLOTS {
            return Err(bad("bad memory table"));
        }
        let total = ctx
            .iter()
            .try_fold(0u64, |a, r| a.checked_add(r.memory_size))
            .ok_or_else(|| bad("memory table size overflows"))?;
        // The new table replaces the one in force: it is what gets reserved.
        self.admit(total)?;
        let mut regions = Vec::with_capacity(ctx.len());
        for (r, f) in ctx.iter().zip(files) {
            match self.map_region(r, f) {
                Ok(m) => regions.push(m),
                Err(e) => {
                    self.settle();
                    return Err(e);
                }
            }
        }
        let res = self.rebuild(regions);
        self.settle();
        res.map(|()| None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        let max = u32::from(self.cfg.max_queue_size.min(MAX_QUEUE_SIZE));
        if num == 0 || num > max || !num.is_power_of_two() {
            return Err(bad("bad ring size"));
        }
        self.queue(index)?.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        if !descriptor.is_multiple_of(16) || !used.is_multiple_of(4) || !available.is_multiple_of(2)
        {
            return Err(bad("misaligned ring address"));
        }
        let q = self.queue(index)?;
        q.addrs = Some((descriptor, used, available));
        let q = &self.queues[index as usize];
        if !self.regions.is_empty() && q.size != 0 && self.translate(q).is_none() {
            self.queues[index as usize].addrs = None;
            return Err(bad("ring address outside the memory table"));
        }
        self.publish();
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let base = u16::try_from(base).map_err(|_| bad("ring base above 65535"))?;
        self.seq += 1;
        let seq = self.seq;
        let q = self.queue(index)?;
        q.base = base;
        q.base_seq = seq;
        self.shared.store_last_avail(index as usize, base);
        self.publish();
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let q = self.queue(index)?;
        q.started = false;
        q.kick = None;
        let gen = self.publish();
        if !self.shared.wait_ack(gen, self.stop_timeout) {
            tracing::warn!(
                queue = index,
                "data path did not acknowledge the ring stop in time; using its last stored index"
            );
        }
        let base = self.shared.load_last_avail(index as usize);
        self.queues[index as usize].base = base;
        Ok(VhostUserVringState::new(index, u32::from(base)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let q = self.queue(u32::from(index))?;
        q.kick = fd.map(adopt).map(Arc::new);
        q.started = true;
        self.publish();
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.queue(u32::from(index))?.call = fd.map(adopt).map(Arc::new);
        self.publish();
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.queue(u32::from(index))?.err = fd.map(adopt);
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(offered_protocol())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !offered_protocol().bits() != 0 {
            return Err(bad("protocol features outside the offer"));
        }
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(1)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.queue(index)?.enabled = enable;
        self.publish();
        Ok(())
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        // struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu.
        let mut cfg = [0u8; 12];
        if let Some(m) = self.cfg.mac {
            cfg[..6].copy_from_slice(&m.0);
        }
        cfg[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&1500u16.to_le_bytes());
        let start = offset as usize;
        let end = start
            .checked_add(size as usize)
            .filter(|&e| e <= cfg.len())
            .ok_or_else(|| bad("config read out of range"))?;
        Ok(cfg[start..end].to_vec())
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        Err(bad("config space is read-only"))
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(bad("not a GPU"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(bad("no shared objects"))
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        Err(bad("no inflight tracking"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(bad("no inflight tracking"))
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS as u64)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        let fd = adopt(fd);
        if self.regions.len() >= MAX_MEM_SLOTS {
            return Err(bad("too many memory regions"));
        }
        let total = self
            .regions
            .iter()
            .try_fold(region.memory_size, |a, r| a.checked_add(r.size))
            .ok_or_else(|| bad("memory table size overflows"))?;
        self.admit(total)?;
        let r = match self.map_region(region, fd) {
            Ok(r) => r,
            Err(e) => {
                self.settle();
                return Err(e);
            }
        };
        // On a copy: a region that does not fit (it overlaps another) is refused and
        // the memory already in place stays as it was.
        let mut regions = self.regions.clone();
        regions.push(r);
        let res = self.rebuild(regions);
        self.settle();
        res?;
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        let pos = self
            .regions
            .iter()
            .position(|r| r.gpa == region.guest_phys_addr && r.size == region.memory_size)
            .ok_or_else(|| bad("no such memory region"))?;
        let mut regions = self.regions.clone();
        regions.remove(pos);
        let res = self.rebuild(regions);
        self.settle();
        res
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(bad("no device state transfer"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(bad("no device state transfer"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(bad("no shared memory regions"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(bad("no dirty logging"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    const ENABLE: u32 = FrontendReq::SET_VRING_ENABLE as u32;

    /// A vhost-user message: header (request, flags = version 1, size) and body.
    fn msg(request: u32, body: &[u32]) -> Vec<u8> {
        let mut m = Vec::new();
        for w in [request, 1, 4 * body.len() as u32].iter().chain(body) {
            m.extend_from_slice(&w.to_ne_bytes());
        }
        m
    }

    fn handler() -> Handler {
        let ctx = Arc::new(DeviceCtx {
            name: Arc::from("test"),
            lim: Mutex::new(RateLimiter::new(5)),
        });
        let shared = Arc::new(Shared::new().unwrap());
        Handler::new(shared, DeviceConfig::default(), 1, ctx)
    }

    fn memfd(len: u64) -> File {
        let fd = rustix::fs::memfd_create("ctl-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let f = File::from(fd);
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn a_refused_add_mem_region_leaves_the_memory_in_place() {
        let mut h = handler();
        let r = VhostUserMemoryRegion::new(0, 1 << 20, 0x7000_0000, 0);
        h.set_mem_table(&[r], vec![memfd(1 << 20)], None).unwrap();
        // Overlaps the first region's guest-physical range.
        let overlapping = VhostUserSingleMemoryRegion::new(1 << 19, 1 << 20, 0x9000_0000, 0);
        assert!(h
            .add_mem_region(&overlapping, memfd(1 << 20), None)
            .is_err());
        assert_eq!(h.regions.len(), 1, "the first region was dropped");
        assert!(h.mem.is_some(), "the client's memory was dropped");
        assert_eq!(h.va_to_gpa(0x7000_0000 + 64, 16), Some(64));
        // A region that fits is added next to it.
        let next = VhostUserSingleMemoryRegion::new(1 << 20, 1 << 20, 0x9000_0000, 0);
        h.add_mem_region(&next, memfd(1 << 20), None).unwrap();
        assert_eq!(h.regions.len(), 2);
    }

    #[test]
    fn peeks_a_set_vring_enable_and_leaves_it_in_the_socket() {
        let (mut front, back) = UnixStream::pair().unwrap();
        let m = msg(ENABLE, &[1, 1]);
        front.write_all(&m).unwrap();
        assert_eq!(peek_vring_enable(&back), Some((1, true)));
        let mut got = vec![0u8; m.len()];
        (&back).read_exact(&mut got).unwrap();
        assert_eq!(got, m);

        front.write_all(&msg(ENABLE, &[0, 0])).unwrap();
        assert_eq!(peek_vring_enable(&back), Some((0, false)));
    }

    #[test]
    fn peeks_nothing_from_other_or_malformed_messages() {
        for m in [
            msg(2, &[1, 0]),                     // SET_FEATURES
            msg(ENABLE, &[0, 2]),                // num neither 0 nor 1
            msg(ENABLE, &[0]),                   // short body
            msg(ENABLE, &[0, 1])[..16].to_vec(), // not all there yet
        ] {
            let (mut front, back) = UnixStream::pair().unwrap();
            front.write_all(&m).unwrap();
            assert_eq!(peek_vring_enable(&back), None, "{m:?}");
        }
        let (_front, back) = UnixStream::pair().unwrap();
        assert_eq!(peek_vring_enable(&back), None, "empty socket");
    }
}
