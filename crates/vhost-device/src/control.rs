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
                twin_log::error_limited!(path = %self.path.display(), "vhost-user control thread panicked");
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
    shared.set_offered_mac(cfg.mac);
    let stop = Arc::new(AtomicBool::new(false));
    let name: Arc<str> = Arc::from(path.display().to_string());
    let handle = DeviceHandle::new(shared.clone(), name.clone());
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("vhost-ctl".into())
        .spawn(move || {
            if let Err(e) = control_loop(listener, shared, cfg, stop2, &name) {
                twin_log::error_limited!(port = &*name, error = %e, "vhost-user control thread failed");
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
    twin_log::info_local!(port = name, "vhost-user device listening");
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
                    twin_log::warn_limited!(port = name, error = %e, suppressed, "accept failed");
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
    twin_log::info_limited!(port = name, connection, "vhost-user client connected");
    shared.kick_out.store(false, Ordering::Release);
    shared.store_last_avail(0, 0);
    shared.store_last_avail(1, 0);
    lock(handler).publish();
    let sock = match req.try_clone_connection() {
        Ok(s) => s,
        Err(e) => {
            twin_log::warn_limited!(port = name, error = %e, "cannot clone client socket");
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
            twin_log::warn_limited!(port = name, error = %e, "cannot start the stall watcher");
        }
        let reason = serve_requests(
            &mut req, handler, shared, stop, name, connection, lim, &ep, &sock, &watch,
        );
        watch.finish();
        reason
    })?;
    let _ = sock.shutdown(std::net::Shutdown::Both);
    lock(handler).disconnect();
    twin_log::info_limited!(
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
                twin_log::warn_limited!(port = name, connection, suppressed, timeout = ?READ_TIMEOUT,
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
                    twin_log::debug_limited!(
                        port = name,
                        connection,
                        index,
                        enable,
                        "SET_VRING_ENABLE before SET_FEATURES"
                    );
                    if let Err(e) = lock(handler).set_vring_enable(index, enable) {
                        twin_log::debug_limited!(port = name, connection, error = %e,
                            "early SET_VRING_ENABLE refused");
                    }
                }
            }
            Err(e) => {
                shared.refused_requests.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = lim.check(1) {
                    twin_log::warn_limited!(port = name, connection, error = %e, suppressed,
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
        twin_log::warn_limited!(error = %e, "cannot make a client descriptor close-on-exec");
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
    twin_log::debug_limited!(what, "rejected vhost-user request");
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
                        twin_log::warn_limited!(
                            queue = qi,
                            "ring addresses not in the memory table"
                        )
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
                twin_log::warn_limited!(
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
                twin_log::warn_limited!(port = &*self.ctx.name, connection = self.connection,
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
                twin_log::warn_limited!(port = &*self.ctx.name, connection = self.connection,
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
            twin_log::warn_limited!(
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
        if let Some(m) = self.shared.offered_mac() {
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

    // ---- The request handler's validation, one claim per test. ----

    use twin_wire::features::F_VERSION_1;

    const MIB: u64 = 1 << 20;

    fn handler_with(cfg: DeviceConfig) -> Handler {
        let ctx = Arc::new(DeviceCtx {
            name: Arc::from("test"),
            lim: Mutex::new(RateLimiter::new(5)),
        });
        let shared = Arc::new(Shared::new().unwrap());
        shared.set_offered_mac(cfg.mac);
        // No data path: a ring stop is acknowledged at once.
        shared.handle_alive.store(false, Ordering::Release);
        Handler::new(shared, cfg, 1, ctx)
    }

    /// Why a request was refused (the handler's reason string).
    fn why<T: std::fmt::Debug>(r: VuResult<T>) -> &'static str {
        match r {
            Err(VuError::InvalidOperation(w)) => w,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn published(h: &Handler) -> Published {
        h.shared.snapshot().1
    }

    /// One region: guest-physical `gpa`, client virtual `uaddr`, `size` bytes.
    fn table(h: &mut Handler, gpa: u64, uaddr: u64, size: u64) -> VuResult<()> {
        let r = VhostUserMemoryRegion::new(gpa, size, uaddr, 0);
        h.set_mem_table(&[r], vec![memfd(size)], None).map(|_| ())
    }

    /// A bit the device does not offer.
    fn unoffered_bit(offer: u64) -> u64 {
        (0..64).map(|b| 1u64 << b).find(|b| b & offer == 0).unwrap()
    }

    #[test]
    fn features_outside_the_offer_are_refused_and_offered_ones_are_published() {
        let mut h = handler();
        let offer = h.get_features().unwrap();
        assert_eq!(offer, DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES);
        for b in (0..64).map(|b| 1u64 << b).filter(|b| b & offer != 0) {
            h.set_features(b).unwrap();
            assert_eq!(h.features, b);
        }
        h.set_features(offer).unwrap();
        // The vhost-user bit is not a virtio feature: the data path never sees it.
        assert_eq!(published(&h).features, DEVICE_OFFER);
        let bad_bit = unoffered_bit(offer);
        assert_eq!(
            why(h.set_features(F_VERSION_1 | bad_bit)),
            "features outside the offer"
        );
        assert_eq!(h.features, offer, "a refused request changes nothing");
    }

    #[test]
    fn protocol_features_outside_the_offer_are_refused() {
        let mut h = handler();
        let offer = h.get_protocol_features().unwrap();
        assert_eq!(
            offer,
            VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        );
        for f in [
            VhostUserProtocolFeatures::REPLY_ACK,
            VhostUserProtocolFeatures::CONFIG,
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
        ] {
            h.set_protocol_features(f.bits()).unwrap();
            assert_eq!(h.protocol, f.bits());
        }
        let bad = unoffered_bit(offer.bits());
        assert_eq!(
            why(h.set_protocol_features(bad)),
            "protocol features outside the offer"
        );
        assert_eq!(
            h.protocol,
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS.bits()
        );
        assert_eq!(h.get_queue_num().unwrap(), 1);
        assert_eq!(h.get_max_mem_slots().unwrap(), MAX_MEM_SLOTS as u64);
    }

    #[test]
    fn malformed_memory_tables_are_refused() {
        let mut h = handler();
        let r = VhostUserMemoryRegion::new(0, MIB, 0x7000_0000, 0);
        assert_eq!(why(h.set_mem_table(&[r], vec![], None)), "bad memory table");
        assert_eq!(
            why(h.set_mem_table(&[], vec![memfd(MIB)], None)),
            "bad memory table"
        );
        assert_eq!(why(h.set_mem_table(&[], vec![], None)), "bad memory table");
        let many = |n: u64| -> (Vec<VhostUserMemoryRegion>, Vec<File>) {
            (0..n)
                .map(|i| {
                    let r = VhostUserMemoryRegion::new(i * 4096, 4096, 0x1000_0000 + i * 4096, 0);
                    (r, memfd(4096))
                })
                .unzip()
        };
        let (rs, fs) = many(MAX_MEM_SLOTS as u64 + 1);
        assert_eq!(why(h.set_mem_table(&rs, fs, None)), "bad memory table");
        assert!(h.mem.is_none());
        let (rs, fs) = many(MAX_MEM_SLOTS as u64);
        h.set_mem_table(&rs, fs, None).unwrap();
        assert_eq!(h.regions.len(), MAX_MEM_SLOTS);
        // Sizes that overflow when summed.
        let big = VhostUserMemoryRegion::new(0, u64::MAX / 2 + 1, 0, 0);
        assert_eq!(
            why(h.set_mem_table(&[big, big], vec![memfd(4096), memfd(4096)], None)),
            "memory table size overflows"
        );
        assert_eq!(h.regions.len(), MAX_MEM_SLOTS, "the table in force stays");
    }

    #[test]
    fn memory_regions_that_overflow_or_exceed_their_file_are_refused() {
        let mut h = handler();
        let refuse = |h: &mut Handler, r: VhostUserMemoryRegion, file_len: u64| {
            why(h.set_mem_table(&[r], vec![memfd(file_len)], None))
        };
        assert_eq!(
            refuse(&mut h, VhostUserMemoryRegion::new(0, 0, 0, 0), 4096),
            "memory region size or address overflows"
        );
        assert_eq!(
            refuse(
                &mut h,
                VhostUserMemoryRegion::new(u64::MAX - 4095, 8192, 0, 0),
                8192
            ),
            "memory region size or address overflows"
        );
        assert_eq!(
            refuse(
                &mut h,
                VhostUserMemoryRegion::new(0, 8192, u64::MAX - 4095, 0),
                8192
            ),
            "memory region size or address overflows"
        );
        assert_eq!(
            refuse(
                &mut h,
                VhostUserMemoryRegion::new(0, 8192, 0, u64::MAX - 4095),
                8192
            ),
            "memory region offset overflows"
        );
        assert_eq!(
            refuse(&mut h, VhostUserMemoryRegion::new(0, 8192, 0, 4096), 8192),
            "memory region larger than its file"
        );
        assert!(h.mem.is_none());
        assert_eq!(h.reservation.bytes(), 0);
        // Exactly to the end of the file is fine.
        let r = VhostUserMemoryRegion::new(0, 8192, 0, 4096);
        h.set_mem_table(&[r], vec![memfd(3 * 4096)], None).unwrap();
        assert_eq!(h.reservation.bytes(), 8192);
        // Overlapping guest-physical ranges.
        let a = VhostUserMemoryRegion::new(0, 8192, 0, 0);
        let b = VhostUserMemoryRegion::new(4096, 8192, 0x10000, 0);
        assert_eq!(
            why(h.set_mem_table(&[a, b], vec![memfd(8192), memfd(8192)], None)),
            "memory regions overlap"
        );
        assert_eq!(
            h.reservation.bytes(),
            8192,
            "the table in force stays reserved"
        );
    }

    #[test]
    fn a_table_over_the_per_client_cap_is_refused() {
        let mut h = handler_with(DeviceConfig {
            max_client_memory: MIB,
            ..Default::default()
        });
        assert_eq!(
            why(table(&mut h, 0, 0, MIB + 4096)),
            "memory table larger than the per-client cap"
        );
        assert!(h.mem.is_none());
        table(&mut h, 0, 0, MIB).unwrap();
        assert_eq!(h.reservation.bytes(), MIB);
        // ADD_MEM_REG counts the whole table.
        let more = VhostUserSingleMemoryRegion::new(MIB, 4096, MIB, 0);
        assert_eq!(
            why(h.add_mem_region(&more, memfd(4096), None)),
            "memory table larger than the per-client cap"
        );
        assert_eq!(h.regions.len(), 1);
    }

    #[test]
    fn clients_share_the_switch_budget_and_release_it_on_disconnect() {
        let budget = MemoryBudget::new(MIB);
        let cfg = DeviceConfig {
            budget: Some(budget.clone()),
            ..Default::default()
        };
        let mut a = handler_with(cfg.clone());
        let mut b = handler_with(cfg);
        table(&mut a, 0, 0, MIB - 4096).unwrap();
        assert_eq!(
            why(table(&mut b, 0, 0, 8192)),
            "memory table over the switch's client memory budget"
        );
        assert_eq!(budget.used(), MIB - 4096);
        table(&mut b, 0, 0, 4096).unwrap();
        assert_eq!(budget.used(), MIB);
        // A replaced table frees what it no longer needs.
        table(&mut a, 0, 0, 4096).unwrap();
        assert_eq!(budget.used(), 8192);
        a.disconnect();
        assert_eq!(budget.used(), 4096);
        assert!(a.mem.is_none());
        assert!(a.regions.is_empty());
        let p = published(&a);
        assert!(!p.connected);
        assert_eq!(p.connection, 1);
        assert!(Arc::ptr_eq(&p.fault, &a.fault));
        assert!(p.mem.is_none());
    }

    #[test]
    fn add_and_remove_mem_region_keep_the_table_and_its_reservation_exact() {
        let mut h = handler();
        for i in 0..MAX_MEM_SLOTS as u64 {
            let r = VhostUserSingleMemoryRegion::new(i * 4096, 4096, 0x1000_0000 + i * 4096, 0);
            h.add_mem_region(&r, memfd(4096), None).unwrap();
        }
        assert_eq!(h.reservation.bytes(), MAX_MEM_SLOTS as u64 * 4096);
        let extra = VhostUserSingleMemoryRegion::new(1 << 30, 4096, 1 << 30, 0);
        assert_eq!(
            why(h.add_mem_region(&extra, memfd(4096), None)),
            "too many memory regions"
        );
        // Removal matches address and size exactly.
        let wrong_size = VhostUserSingleMemoryRegion::new(0, 8192, 0x1000_0000, 0);
        assert_eq!(
            why(h.remove_mem_region(&wrong_size)),
            "no such memory region"
        );
        let wrong_addr = VhostUserSingleMemoryRegion::new(8192 + 1, 4096, 0x1000_0000, 0);
        assert_eq!(
            why(h.remove_mem_region(&wrong_addr)),
            "no such memory region"
        );
        let second = VhostUserSingleMemoryRegion::new(4096, 4096, 0, 0);
        h.remove_mem_region(&second).unwrap();
        assert_eq!(h.regions.len(), MAX_MEM_SLOTS - 1);
        assert!(h.regions.iter().all(|r| r.gpa != 4096));
        assert_eq!(h.reservation.bytes(), (MAX_MEM_SLOTS as u64 - 1) * 4096);
        use vm_memory::GuestMemoryBackend as _;
        assert_eq!(published(&h).mem.unwrap().num_regions(), MAX_MEM_SLOTS - 1);
        // A region that cannot be mapped leaves the table and reservation as they were.
        let unmappable = VhostUserSingleMemoryRegion::new(1 << 30, 8192, 1 << 30, 0);
        assert_eq!(
            why(h.add_mem_region(&unmappable, memfd(4096), None)),
            "memory region larger than its file"
        );
        assert_eq!(h.reservation.bytes(), (MAX_MEM_SLOTS as u64 - 1) * 4096);
        let overflow = VhostUserSingleMemoryRegion::new(1 << 30, u64::MAX - 4096, 1 << 30, 0);
        assert_eq!(
            why(h.add_mem_region(&overflow, memfd(4096), None)),
            "memory table size overflows"
        );
        // Removing every region leaves no memory.
        for i in (0..MAX_MEM_SLOTS as u64).filter(|&i| i != 1) {
            let r = VhostUserSingleMemoryRegion::new(i * 4096, 4096, 0, 0);
            h.remove_mem_region(&r).unwrap();
        }
        assert!(h.mem.is_none());
        assert_eq!(h.reservation.bytes(), 0);
    }

    #[test]
    fn ring_sizes_must_be_powers_of_two_up_to_the_configured_maximum() {
        let mut h = handler();
        for bad in [0, 3, 96, u32::from(MAX_QUEUE_SIZE) * 2, u32::MAX] {
            assert_eq!(why(h.set_vring_num(0, bad)), "bad ring size", "{bad}");
        }
        h.set_vring_num(0, u32::from(MAX_QUEUE_SIZE)).unwrap();
        assert_eq!(h.queues[0].size, MAX_QUEUE_SIZE);
        h.set_vring_num(1, 1).unwrap();
        assert_eq!(h.queues[1].size, 1);
        assert!(matches!(
            h.set_vring_num(2, 256),
            Err(VuError::InvalidParam)
        ));
        let mut small = handler_with(DeviceConfig {
            max_queue_size: 256,
            ..Default::default()
        });
        small.set_vring_num(0, 256).unwrap();
        assert_eq!(why(small.set_vring_num(0, 512)), "bad ring size");
        assert_eq!(small.queues[0].size, 256);
    }

    /// A handler with one 64 KiB region at guest-physical 0x10000, client virtual
    /// 0x7000_0000, and queue 0 of 256 entries.
    fn with_region() -> Handler {
        let mut h = handler();
        table(&mut h, 0x10000, 0x7000_0000, 0x10000).unwrap();
        h.set_vring_num(0, 256).unwrap();
        h
    }

    const VA: u64 = 0x7000_0000;
    const END: u64 = VA + 0x10000;
    const FLAGS: VhostUserVringAddrFlags = VhostUserVringAddrFlags::empty();

    #[test]
    fn misaligned_ring_addresses_are_refused() {
        let mut h = with_region();
        let cases = [(VA + 8, VA, VA), (VA, VA + 2, VA), (VA, VA, VA + 1)];
        for (d, u, a) in cases {
            assert_eq!(
                why(h.set_vring_addr(0, FLAGS, d, u, a, 0)),
                "misaligned ring address"
            );
            assert!(h.queues[0].addrs.is_none());
        }
        h.set_vring_addr(0, FLAGS, VA + 16, VA + 4, VA + 2, 0)
            .unwrap();
        assert_eq!(h.queues[0].addrs, Some((VA + 16, VA + 4, VA + 2)));
    }

    #[test]
    fn ring_areas_must_lie_wholly_inside_the_memory_table() {
        // 256 entries: descriptors 4096 bytes, avail 6 + 512, used 6 + 2048.
        let (d, a, u) = (END - 4096, END - 518, END - 2056);
        let mut h = with_region();
        h.set_vring_addr(0, FLAGS, d, u, a, 0).unwrap();
        assert_eq!(
            h.translate(&h.queues[0]),
            Some((0x10000 + 0x10000 - 4096, 0x20000 - 518, 0x20000 - 2056))
        );
        for (d2, u2, a2) in [
            (d + 16, u, a),
            (d, u + 4, a),
            (d, u, a + 2),
            (VA - 16, u, a),
        ] {
            assert_eq!(
                why(h.set_vring_addr(0, FLAGS, d2, u2, a2, 0)),
                "ring address outside the memory table"
            );
            assert!(
                h.queues[0].addrs.is_none(),
                "a refused address is forgotten"
            );
        }
        // Before a memory table (or a size), addresses cannot be checked yet.
        let mut early = handler();
        early.set_vring_num(0, 256).unwrap();
        early.set_vring_addr(0, FLAGS, 0, 0, 0, 0).unwrap();
        let mut sizeless = handler();
        table(&mut sizeless, 0, VA, 4096).unwrap();
        sizeless.set_vring_addr(0, FLAGS, 0, 0, 0, 0).unwrap();
        assert_eq!(sizeless.queues[0].addrs, Some((0, 0, 0)));
    }

    /// Sets queue `qi` of `h` up as a client does, within the region of [`with_region`].
    fn start_queue(h: &mut Handler, qi: u32) {
        h.set_vring_num(qi, 256).unwrap();
        h.set_vring_addr(qi, FLAGS, VA, VA + 0x2000, VA + 0x1000, 0)
            .unwrap();
        h.set_vring_kick(qi as u8, Some(memfd(0))).unwrap();
    }

    #[test]
    fn a_started_queue_is_published_with_guest_physical_addresses() {
        let mut h = with_region();
        let p = published(&h);
        assert!(p.connected);
        assert!(!p.queues[0].started);
        h.set_vring_call(0, Some(memfd(0))).unwrap();
        // Sized and addressed, but no kick yet: not started.
        h.set_vring_num(0, 256).unwrap();
        h.set_vring_addr(0, FLAGS, VA, VA + 0x2000, VA + 0x1000, 0)
            .unwrap();
        assert!(!published(&h).queues[0].started);
        assert_eq!(published(&h).queues[0].desc, 0);
        start_queue(&mut h, 0);
        let p = published(&h);
        let q = &p.queues[0];
        assert!(q.started);
        assert!(q.enabled, "without PROTOCOL_FEATURES a ring is enabled");
        assert_eq!(
            (q.size, q.desc, q.avail, q.used),
            (256, 0x10000, 0x11000, 0x12000)
        );
        assert!(q.kick.is_some());
        assert!(q.call.is_some());
        assert_eq!(q.base_seq, h.queues[0].base_seq);
        // The other queue: not started, nothing translated.
        assert!(!p.queues[1].started);
        assert_eq!(p.queues[1].desc, 0);
        // With PROTOCOL_FEATURES, SET_VRING_ENABLE decides.
        h.set_features(DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES)
            .unwrap();
        assert!(!published(&h).queues[0].enabled);
        h.set_vring_enable(0, true).unwrap();
        assert!(published(&h).queues[0].enabled);
        h.set_vring_enable(0, false).unwrap();
        assert!(!published(&h).queues[0].enabled);
        assert!(matches!(
            h.set_vring_enable(2, true),
            Err(VuError::InvalidParam)
        ));
        h.set_vring_err(0, Some(memfd(0))).unwrap();
        assert!(h.queues[0].err.is_some());
        assert!(matches!(
            h.set_vring_err(2, None),
            Err(VuError::InvalidParam)
        ));
    }

    #[test]
    fn a_started_queue_whose_memory_went_away_is_published_stopped() {
        let mut h = with_region();
        start_queue(&mut h, 0);
        assert!(published(&h).queues[0].started);
        let r = VhostUserSingleMemoryRegion::new(0x10000, 0x10000, 0, 0);
        h.remove_mem_region(&r).unwrap();
        let p = published(&h);
        assert!(!p.queues[0].started);
        assert_eq!(p.queues[0].desc, 0);
    }

    #[test]
    fn set_vring_base_restarts_the_ring_and_get_vring_base_stops_it() {
        let mut h = with_region();
        start_queue(&mut h, 0);
        assert_eq!(why(h.set_vring_base(0, 65536)), "ring base above 65535");
        let seqs: Vec<u64> = (0..NUM_QUEUES).map(|q| h.queues[q].base_seq).collect();
        h.set_vring_base(0, 7).unwrap();
        let p = published(&h);
        assert_eq!(p.queues[0].base, 7);
        assert!(!seqs.contains(&p.queues[0].base_seq), "a new base sequence");
        assert_eq!(h.shared.load_last_avail(0), 7);
        let before = p.queues[0].base_seq;
        h.set_vring_base(0, 7).unwrap();
        assert_ne!(published(&h).queues[0].base_seq, before);
        assert!(matches!(h.set_vring_base(2, 0), Err(VuError::InvalidParam)));
        // The data path stored where it stopped.
        h.shared.store_last_avail(0, 42);
        let st = h.get_vring_base(0).unwrap();
        assert_eq!((st.index, st.num), (0, 42));
        assert_eq!(h.queues[0].base, 42);
        let p = published(&h);
        assert!(!p.queues[0].started);
        assert!(p.queues[0].kick.is_none());
        assert!(matches!(h.get_vring_base(2), Err(VuError::InvalidParam)));
    }

    #[test]
    fn a_reset_forgets_the_rings_and_starts_new_base_sequences() {
        let mut h = with_region();
        h.set_features(F_VERSION_1).unwrap();
        start_queue(&mut h, 0);
        start_queue(&mut h, 1);
        let old: Vec<u64> = (0..NUM_QUEUES).map(|q| h.queues[q].base_seq).collect();
        h.reset_device().unwrap();
        let p = published(&h);
        assert_eq!(p.features, 0);
        assert!(p.queues.iter().all(|q| !q.started && q.size == 0));
        let new: Vec<u64> = p.queues.iter().map(|q| q.base_seq).collect();
        assert!(new.iter().all(|s| !old.contains(s)), "{old:?} -> {new:?}");
        assert_ne!(new[0], new[1]);
        h.reset_owner().unwrap();
        let again: Vec<u64> = published(&h).queues.iter().map(|q| q.base_seq).collect();
        assert!(again.iter().all(|s| !new.contains(s) && !old.contains(s)));
        h.set_owner().unwrap();
    }

    #[test]
    fn the_config_space_holds_mac_link_up_one_pair_and_mtu() {
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let mut h = handler_with(DeviceConfig {
            mac: Some(mac),
            ..Default::default()
        });
        let f = VhostUserConfigFlags::empty();
        let all = h.get_config(0, 12, f).unwrap();
        assert_eq!(all, [2, 0, 0, 0, 0, 9, 1, 0, 1, 0, 0xdc, 0x05]);
        assert_eq!(h.get_config(10, 2, f).unwrap(), [0xdc, 0x05]);
        assert_eq!(why(h.get_config(11, 2, f)), "config read out of range");
        assert_eq!(
            why(h.get_config(u32::MAX, 2, f)),
            "config read out of range"
        );
        assert_eq!(handler().get_config(0, 6, f).unwrap(), [0; 6]);
        // The owner changes the MAC: the next read reports it, or zeroes.
        h.shared
            .set_offered_mac(Some(MacAddr([2, 0, 0, 0, 0, 0x0a])));
        assert_eq!(h.get_config(0, 6, f).unwrap(), [2, 0, 0, 0, 0, 0x0a]);
        h.shared.set_offered_mac(None);
        assert_eq!(h.get_config(0, 6, f).unwrap(), [0; 6]);
        assert_eq!(
            why(h.set_config(0, &[0; 6], f)),
            "config space is read-only"
        );
    }

    #[test]
    fn unsupported_requests_are_refused() {
        let mut h = handler();
        assert_eq!(why(h.get_shmem_config()), "no shared memory regions");
        assert_eq!(why(h.check_device_state()), "no device state transfer");
        assert_eq!(
            why(h.set_device_state_fd(
                VhostTransferStateDirection::SAVE,
                VhostTransferStatePhase::STOPPED,
                memfd(0)
            )),
            "no device state transfer"
        );
        let inflight = VhostUserInflight::default();
        assert_eq!(
            why(h.get_inflight_fd(&inflight).map(|_| ())),
            "no inflight tracking"
        );
        assert_eq!(
            why(h.set_inflight_fd(&inflight, memfd(0))),
            "no inflight tracking"
        );
        assert_eq!(
            why(h.get_shared_object(VhostUserSharedMsg::default())),
            "no shared objects"
        );
        assert_eq!(
            why(h.set_log_base(&VhostUserLog::default(), memfd(0))),
            "no dirty logging"
        );
    }

    #[test]
    fn received_descriptors_are_made_close_on_exec() {
        let fd = rustix::fs::memfd_create("no-cloexec", rustix::fs::MemfdFlags::empty()).unwrap();
        let f = adopt(File::from(fd));
        let flags = rustix::io::fcntl_getfd(&f).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    // ---- The control thread, over a real socket. ----

    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    use vhost::vhost_user::Frontend;
    use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
    use vmm_sys_util::eventfd::EventFd;

    use crate::datapath::PortEvent;

    /// A fresh socket path for one test.
    fn sock_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vhost-device-{}-{tag}.sock", std::process::id()))
    }

    /// Polls `f` (every millisecond) until it returns `Some`, for at most `secs`.
    fn within<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn next_event(h: &mut DeviceHandle, what: &str) -> PortEvent {
        within(10, what, || h.refresh())
    }

    /// Client memory: 1 MiB at client virtual address `CLIENT_VA`, guest-physical 0.
    const CLIENT_VA: u64 = 0x7f00_0000_0000;

    /// Sets up both rings of `fe` as a virtio-net driver does (queue `q`'s areas at
    /// guest-physical `q * 0x4000`: descriptors, avail at +0x1000, used at +0x2000).
    fn bring_up(fe: &mut Frontend, mem: &File, features: u64) {
        fe.set_owner().unwrap();
        assert_eq!(
            fe.get_features().unwrap(),
            DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES
        );
        fe.set_features(features).unwrap();
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MIB,
            userspace_addr: CLIENT_VA,
            mmap_offset: 0,
            mmap_handle: mem.as_raw_fd(),
        };
        fe.set_mem_table(&[region]).unwrap();
        for q in 0..2usize {
            let base = CLIENT_VA + 0x4000 * q as u64;
            fe.set_vring_num(q, 256).unwrap();
            let cfg = VringConfigData {
                queue_max_size: 256,
                queue_size: 256,
                flags: 0,
                desc_table_addr: base,
                used_ring_addr: base + 0x2000,
                avail_ring_addr: base + 0x1000,
                log_addr: None,
            };
            fe.set_vring_addr(q, &cfg).unwrap();
            fe.set_vring_base(q, 0).unwrap();
            fe.set_vring_call(q, &EventFd::new(0).unwrap()).unwrap();
            fe.set_vring_kick(q, &EventFd::new(0).unwrap()).unwrap();
        }
    }

    #[test]
    fn the_control_thread_serves_one_client_after_another_and_kicks_out_ring_breakers() {
        let path = sock_path("serve");
        let (dev, mut h) = crate::listen(&path, DeviceConfig::default()).unwrap();
        assert_eq!(dev.path(), path.as_path());
        let mem = memfd(MIB);
        let mut fe = Frontend::connect(&path, 2).unwrap();
        bring_up(&mut fe, &mem, F_VERSION_1);
        assert_eq!(
            next_event(&mut h, "first client ready"),
            PortEvent::Connected {
                features: F_VERSION_1,
                connection: 1
            }
        );
        // The client's TX avail index runs 257 ahead of a 256-entry ring.
        mem.write_at(&257u16.to_le_bytes(), 0x4000 + 0x1000 + 2)
            .unwrap();
        assert_eq!(h.pop_tx(64, |_| panic!("no frame")), 0);
        assert_eq!(
            next_event(&mut h, "ring breaker dropped"),
            PortEvent::Disconnected
        );
        assert!(fe.get_features().is_err(), "its socket was closed");
        // The device listens again: the next client is connection 2.
        let mem2 = memfd(MIB);
        let mut fe2 = Frontend::connect(&path, 2).unwrap();
        bring_up(&mut fe2, &mem2, F_VERSION_1);
        assert_eq!(
            next_event(&mut h, "second client ready"),
            PortEvent::Connected {
                features: F_VERSION_1,
                connection: 2
            }
        );
        drop(fe2);
        assert_eq!(
            next_event(&mut h, "second client gone"),
            PortEvent::Disconnected
        );
        drop(dev);
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn an_early_set_vring_enable_is_carried_out_as_qemu_expects() {
        let path = sock_path("early-enable");
        let (_dev, mut h) = crate::listen(&path, DeviceConfig::default()).unwrap();
        let sock = UnixStream::connect(&path).unwrap();
        let mut raw = sock.try_clone().unwrap();
        let mut fe = Frontend::from_stream(sock, 2);
        // QEMU 7.2 enables both rings before SET_FEATURES acks PROTOCOL_FEATURES.
        raw.write_all(&msg(ENABLE, &[0, 1])).unwrap();
        raw.write_all(&msg(ENABLE, &[1, 1])).unwrap();
        let mem = memfd(MIB);
        bring_up(&mut fe, &mem, F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES);
        assert_eq!(
            next_event(&mut h, "rings enabled early"),
            PortEvent::Connected {
                features: F_VERSION_1,
                connection: 1
            }
        );
    }

    /// Whether the peer closed `s` within `secs` (reads until EOF, a reset or the
    /// timeout).
    fn closed_within(s: &mut UnixStream, secs: u64) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                // Closed with our bytes still unread on its side.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    #[test]
    fn an_idle_client_stays_and_one_stalled_mid_message_is_dropped() {
        let path = sock_path("stall");
        let (dev, _h) = crate::listen(&path, DeviceConfig::default()).unwrap();
        let fe = Frontend::connect(&path, 2).unwrap();
        fe.set_owner().unwrap();
        // Idle between requests for longer than the stall timeout: still served.
        std::thread::sleep(READ_TIMEOUT + Duration::from_secs(1));
        assert!(fe.get_features().is_ok());
        drop(fe);
        // Half a header, then nothing: dropped once the timeout passed.
        let mut s = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        s.write_all(&msg(1, &[])[..6]).unwrap();
        assert!(
            closed_within(&mut s, 20),
            "a stalled client was not dropped"
        );
        assert!(started.elapsed() >= READ_TIMEOUT);
        // Stopping the device while a client is stalled mid-message does not wait
        // for the stall timeout. (A served request first: the device is in its
        // request loop, and takes the partial message as soon as it arrives.)
        let sock = UnixStream::connect(&path).unwrap();
        let mut raw = sock.try_clone().unwrap();
        let fe = Frontend::from_stream(sock, 2);
        assert!(fe.get_features().is_ok());
        raw.write_all(&msg(1, &[])[..6]).unwrap();
        let stopping = Instant::now();
        drop(dev);
        assert!(
            stopping.elapsed() < READ_TIMEOUT,
            "stopping waited for the stall timeout"
        );
        assert!(closed_within(&mut raw, 1));
    }

    #[test]
    fn refused_memory_tables_are_logged_with_the_cap_and_rate_limited() {
        use crate::test_log::Capture;
        let log = Capture::default();
        let mut h = handler_with(DeviceConfig {
            max_client_memory: MIB,
            budget: Some(MemoryBudget::new(2 * MIB)),
            ..Default::default()
        });
        log.run(|| {
            for _ in 0..7 {
                assert!(table(&mut h, 0, 0, 2 * MIB).is_err());
            }
        });
        let warnings = |c: &Capture| -> Vec<crate::test_log::Line> {
            let w = c.take().into_iter();
            w.filter(|l| l.level == tracing::Level::WARN).collect()
        };
        let lines = warnings(&log);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(
            lines[0].message,
            "client memory table refused: larger than the per-client cap"
        );
        assert!(lines[0].fields.contains(&format!("requested={}", 2 * MIB)));
        assert!(lines[0].fields.contains(&format!("cap={MIB}")));
        assert!(lines[0].fields.contains(&"suppressed=0".to_string()));
        // Over the shared budget (another client holds most of it), on a device
        // whose log lines were not used up yet.
        let mut h2 = handler_with(h.cfg.clone());
        let mut r = Reservation::new(h.cfg.budget.clone());
        r.try_resize(2 * MIB - 4096).unwrap();
        let other = Capture::default();
        other.run(|| assert!(table(&mut h2, 0, 0, 8192).is_err()));
        let lines = warnings(&other);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            lines[0].message,
            "client memory table refused: the switch's client memory budget is exhausted"
        );
        // A region the kernel will not map (offset not page aligned).
        let map = Capture::default();
        map.run(|| {
            let r = VhostUserMemoryRegion::new(0, 4096, 0, 3);
            assert_eq!(
                why(h.set_mem_table(&[r], vec![memfd(8192)], None)),
                "cannot map memory region"
            );
        });
        let lines = warnings(&map);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].message, "cannot map client memory");
        assert!(lines[0].fields.contains(&"suppressed=0".to_string()));
    }

    #[test]
    fn get_vring_base_waits_for_the_data_path_to_acknowledge_the_stop() {
        use crate::test_log::Capture;
        let mut h = handler();
        h.stop_timeout = Duration::from_secs(10);
        // The data path is up to date with the current snapshot and stopped at 5.
        let g0 = h.shared.generation();
        h.shared.ack(g0);
        h.shared.store_last_avail(0, 5);
        let shared = h.shared.clone();
        let data_path = std::thread::spawn(move || loop {
            // It sees the stop, stores where it stopped, then acknowledges.
            let g = shared.generation();
            if g > g0 {
                shared.store_last_avail(0, 99);
                shared.ack(g);
                return;
            }
            std::thread::yield_now();
        });
        let log = Capture::default();
        let st = log.run(|| h.get_vring_base(0).unwrap());
        data_path.join().unwrap();
        assert_eq!((st.index, st.num), (0, 99));
        assert!(log.lines().is_empty(), "{:?}", log.lines());
        // No acknowledgement in time: the last stored index, and a warning.
        h.stop_timeout = Duration::from_millis(10);
        let st = log.run(|| h.get_vring_base(1).unwrap());
        let num = st.num;
        assert_eq!(num, 0);
        let lines = log.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            lines[0].message,
            "data path did not acknowledge the ring stop in time; using its last stored index"
        );
    }
}
