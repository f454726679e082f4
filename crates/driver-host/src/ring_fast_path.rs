//! [`RingFastPath`]: the host-facing data path of one ring driver instance (the
//! AF_XDP driver of crate `af-xdp-driver`, the AF_PACKET driver of crate
//! `af-packet-driver`), over any environment that lends frame memory as
//! volatile slices: the driver domain's (direct environment), the switch's
//! inline one, and the twin (SVM environment). It calls the driver only
//! through its fast-path entry table (`AfXdpTwin`, `AfPacketTwin`), which
//! [`RingDriver`] names for both.
//!
//! * TX: [`RingFastPath::send`] copies a frame into a free transmit buffer and
//!   commits it; one [`RingFastPath::flush`] per batch wakes the kernel (the
//!   driver's doorbell) and, for AF_PACKET, takes back what a down interface
//!   kept when the doorbell heard so ([`PacketBell`]).
//! * RX: [`RingFastPath::rx_burst`] hands frames to a callback as [`Segments`]
//!   in the driver's memory, gives their buffers back and publishes once.
//!
//! A failed call (a refused memory access) is counted, the first one kept
//! ([`RingFastPath::failure`]) and logged once, as in [`crate::FastPath`].
//! Nothing allocates per packet.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use af_packet_driver::{AfPacket, AfPacketTwin, PacketDriverError, PacketLayout, PacketStats};
use af_xdp_driver::{AfXdp, AfXdpTwin, XdpDriverError, XdpLayout, XdpStats};
use driver_env::{DriverEnv, MemFault, RxFrame, TxChunk, UpcallMsg};
use serde::Serialize;
use twin_wire::Segments;

use crate::fast_path::{HostEnv, UpcallFailed};

/// What became of a frame handed to [`RingFastPath::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Handed to the kernel (woken at the next flush).
    Queued,
    /// No transmit buffer is free.
    NoRoom,
    /// Larger than a buffer.
    TooBig,
    /// The driver failed (see [`RingFastPath::failure`]).
    Failed,
}

/// A ring driver's fast-path entry table, as [`RingFastPath`] calls it: the
/// methods `twin-derive` generated for each driver, and the driver-domain
/// calls (slow paths) beside them.
#[allow(missing_docs)]
pub trait RingDriver: Sized + std::fmt::Debug + Send + 'static {
    /// The driver's error.
    type Error: Copy + std::error::Error + From<MemFault> + 'static;
    /// The driver's counters.
    type Stats: Copy + Default + Serialize;
    /// The driver's layout.
    type Layout: Copy;
    /// The driver's name, for log lines.
    const WHAT: &'static str;
    fn init<E: DriverEnv>(env: &E, layout: Self::Layout) -> Result<Self, Self::Error>;
    fn attach<E: DriverEnv>(env: &E, layout: Self::Layout) -> Result<Self, Self::Error>;
    fn layout(&self) -> &Self::Layout;
    fn rx_burst<E: DriverEnv>(
        &mut self,
        env: &E,
        max: usize,
        f: impl FnMut(RxFrame),
    ) -> Result<usize, Self::Error>;
    fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, Self::Error>;
    fn tx_reserve<E: DriverEnv>(&mut self, env: &E) -> Result<Option<TxChunk>, Self::Error>;
    fn tx_cancel<E: DriverEnv>(&mut self, env: &E, chunk: TxChunk) -> Result<(), Self::Error>;
    fn tx_commit<E: DriverEnv>(
        &mut self,
        env: &E,
        chunk: TxChunk,
        len: u32,
    ) -> Result<bool, Self::Error>;
    fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<(), Self::Error>;
    fn tx_waiting<E: DriverEnv>(&self, env: &E) -> Result<bool, Self::Error>;
    /// Takes back what a down interface kept (AF_PACKET); returns how many.
    fn tx_take_back<E: DriverEnv>(&mut self, env: &E) -> Result<u32, Self::Error>;
    fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), Self::Error>;
    fn stats<E: DriverEnv>(&self, env: &E) -> Result<Self::Stats, Self::Error>;
    /// Runs the slow-path routine `msg` names (driver domain only).
    fn dispatch_upcall<E: DriverEnv>(
        &mut self,
        env: &E,
        msg: &UpcallMsg,
    ) -> Result<&'static str, UpcallFailed<Self::Error>>;
    /// Whether a slow-path routine asked for a restart (driver domain only).
    fn reset_requested<E: DriverEnv>(&self, env: &E) -> Result<bool, Self::Error>;
}

/// Forwards [`RingDriver`] to a generated entry table `$twin` over driver
/// `$drv` (both drivers have the same method names).
macro_rules! ring_driver {
    ($twin:ident, $drv:ident, $err:ty, $stats:ty, $layout:ty, $what:literal, $dispatch:path) => {
        impl RingDriver for $twin {
            type Error = $err;
            type Stats = $stats;
            type Layout = $layout;
            const WHAT: &'static str = $what;
            fn init<E: DriverEnv>(env: &E, layout: $layout) -> Result<Self, $err> {
                Ok($twin::new($drv::init(env, layout)?))
            }
            fn attach<E: DriverEnv>(env: &E, layout: $layout) -> Result<Self, $err> {
                Ok($twin::new($drv::attach(env, layout)?))
            }
            fn layout(&self) -> &$layout {
                $twin::layout(self)
            }
            #[inline]
            fn rx_burst<E: DriverEnv>(
                &mut self,
                env: &E,
                max: usize,
                f: impl FnMut(RxFrame),
            ) -> Result<usize, $err> {
                $twin::rx_burst(self, env, max, f)
            }
            fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, $err> {
                $twin::rx_pending(self, env)
            }
            #[inline]
            fn tx_reserve<E: DriverEnv>(&mut self, env: &E) -> Result<Option<TxChunk>, $err> {
                $twin::tx_reserve(self, env)
            }
            fn tx_cancel<E: DriverEnv>(&mut self, env: &E, chunk: TxChunk) -> Result<(), $err> {
                $twin::tx_cancel(self, env, chunk)
            }
            #[inline]
            fn tx_commit<E: DriverEnv>(
                &mut self,
                env: &E,
                chunk: TxChunk,
                len: u32,
            ) -> Result<bool, $err> {
                $twin::tx_commit(self, env, chunk, len)
            }
            fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<(), $err> {
                $twin::tx_flush(self, env)
            }
            fn tx_waiting<E: DriverEnv>(&self, env: &E) -> Result<bool, $err> {
                $twin::tx_waiting(self, env)
            }
            fn tx_take_back<E: DriverEnv>(&mut self, env: &E) -> Result<u32, $err> {
                ring_driver!(@take_back $twin, self, env)
            }
            fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), $err> {
                $twin::sync(self, env)
            }
            fn stats<E: DriverEnv>(&self, env: &E) -> Result<$stats, $err> {
                $twin::stats(self, env)
            }
            fn dispatch_upcall<E: DriverEnv>(
                &mut self,
                env: &E,
                msg: &UpcallMsg,
            ) -> Result<&'static str, UpcallFailed<$err>> {
                use $dispatch as Dispatch;
                match self.inner_mut().dispatch_upcall(env, msg) {
                    Ok(call) => Ok(call.name()),
                    Err(Dispatch::Decode(e)) => Err(UpcallFailed::Invalid(e)),
                    Err(Dispatch::Routine { routine, error }) => {
                        Err(UpcallFailed::Routine { routine, error })
                    }
                }
            }
            fn reset_requested<E: DriverEnv>(&self, env: &E) -> Result<bool, $err> {
                self.inner().reset_requested(env)
            }
        }
    };
    (@take_back AfXdpTwin, $s:ident, $env:ident) => {{
        // An AF_XDP socket's ring stays the kernel's while the link is down; it
        // sends what is on it when the link returns.
        let _ = ($s, $env);
        Ok(0)
    }};
    (@take_back AfPacketTwin, $s:ident, $env:ident) => {
        AfPacketTwin::tx_take_back($s, $env)
    };
}

ring_driver!(
    AfXdpTwin,
    AfXdp,
    XdpDriverError,
    XdpStats,
    XdpLayout,
    "AF_XDP",
    af_xdp_driver::UpcallDispatchError
);
ring_driver!(
    AfPacketTwin,
    AfPacket,
    PacketDriverError,
    PacketStats,
    PacketLayout,
    "AF_PACKET",
    af_packet_driver::UpcallDispatchError
);

/// An AF_PACKET socket's transmit wake-up (a `send` of nothing), which also
/// notes when the kernel answered that the interface is down: the kernel then
/// keeps the frames handed to it, and the host takes them back
/// ([`RingFastPath::flush`]).
#[derive(Debug)]
pub struct PacketBell {
    socket: Arc<OwnedFd>,
    link_down: AtomicBool,
}

impl PacketBell {
    /// A bell on `socket`.
    pub fn new(socket: Arc<OwnedFd>) -> Arc<PacketBell> {
        Arc::new(PacketBell {
            socket,
            link_down: AtomicBool::new(false),
        })
    }

    /// Wakes the kernel. A busy kernel (its send buffer full) is not an error:
    /// the frames wait for the next wake-up.
    pub fn ring(&self) -> std::io::Result<()> {
        match rustix::net::send(&*self.socket, &[], rustix::net::SendFlags::DONTWAIT) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::NOBUFS) => Ok(()),
            Err(rustix::io::Errno::NETDOWN) => {
                self.link_down.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a wake-up since the last call found the interface down.
    pub fn take_link_down(&self) -> bool {
        self.link_down.swap(false, Ordering::Relaxed)
    }

    /// The socket.
    pub fn socket(&self) -> &Arc<OwnedFd> {
        &self.socket
    }
}

/// Counters of a ring driver and of its host (serialisable for reports).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RingStats<S> {
    /// The driver's own (in the shared state).
    #[serde(flatten)]
    pub driver: S,
    /// Data-path calls that failed (a refused access).
    pub driver_errors: u64,
}

/// One ring driver instance's data path.
#[derive(Debug)]
pub struct RingFastPath<E, D: RingDriver> {
    env: E,
    drv: D,
    /// An AF_PACKET socket's bell, to hear of a down interface.
    bell: Option<Arc<PacketBell>>,
    errors: Cell<u64>,
    first_failure: Cell<Option<D::Error>>,
}

/// The AF_XDP driver's data path.
pub type XdpFastPath<E> = RingFastPath<E, AfXdpTwin>;
/// The AF_PACKET driver's data path.
pub type PacketFastPath<E> = RingFastPath<E, AfPacketTwin>;

impl<E: HostEnv, D: RingDriver> RingFastPath<E, D> {
    /// Initialises a fresh space (the driver domain, once per socket). `bell`:
    /// the AF_PACKET socket's bell that `env` rings, if any.
    pub fn init(
        env: E,
        layout: D::Layout,
        bell: Option<Arc<PacketBell>>,
    ) -> Result<Self, D::Error> {
        let drv = D::init(&env, layout)?;
        Ok(Self::new(env, drv, bell))
    }

    /// Continues the driver whose state is in `env`'s space (left at a batch
    /// boundary by another instance); `layout` is the host's own.
    pub fn attach(
        env: E,
        layout: D::Layout,
        bell: Option<Arc<PacketBell>>,
    ) -> Result<Self, D::Error> {
        let drv = D::attach(&env, layout)?;
        Ok(Self::new(env, drv, bell))
    }

    fn new(env: E, drv: D, bell: Option<Arc<PacketBell>>) -> Self {
        Self {
            env,
            drv,
            bell,
            errors: Cell::new(0),
            first_failure: Cell::new(None),
        }
    }

    /// Re-reads the driver state (after another instance ran the rings),
    /// forgetting earlier failures.
    pub fn reattach(&mut self) -> Result<(), D::Error> {
        let layout = *self.drv.layout();
        self.drv = D::attach(&self.env, layout)?;
        self.first_failure.set(None);
        Ok(())
    }

    /// The environment.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// The driver's layout.
    pub fn layout(&self) -> &D::Layout {
        self.drv.layout()
    }

    fn fail(&self, what: &'static str, e: D::Error) {
        if self.first_failure.get().is_none() {
            twin_log::error_limited!(error = %e, cause = ?std::error::Error::source(&e), what, driver = D::WHAT, "data path failed");
            self.first_failure.set(Some(e));
        }
        self.errors.set(self.errors.get() + 1);
    }

    /// The first data-path failure, if any.
    #[inline]
    pub fn failure(&self) -> Option<D::Error> {
        self.first_failure.get()
    }

    /// Copies `frame` into a free transmit buffer and hands it to the kernel.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> TxOutcome {
        let chunk = match self.drv.tx_reserve(&self.env) {
            Ok(Some(c)) => c,
            Ok(None) => return TxOutcome::NoRoom,
            Err(e) => {
                self.fail("tx_reserve", e);
                return TxOutcome::Failed;
            }
        };
        let len = frame.len();
        if len > chunk.capacity as usize {
            if let Err(e) = self.drv.tx_cancel(&self.env, chunk) {
                self.fail("tx_cancel", e);
            }
            return TxOutcome::TooBig;
        }
        let copied = match self.env.frame_slice(chunk.addr, len, true) {
            Ok(area) => frame.copy_to(&Segments::single(area)),
            Err(e) => {
                self.fail("tx frame", e.into());
                return TxOutcome::Failed;
            }
        };
        // At most a buffer: fits u32.
        match self.drv.tx_commit(&self.env, chunk, copied as u32) {
            Ok(true) => TxOutcome::Queued,
            Ok(false) => TxOutcome::TooBig,
            Err(e) => {
                self.fail("tx_commit", e);
                TxOutcome::Failed
            }
        }
    }

    /// Wakes the kernel for what was handed to it (and reaps completions);
    /// takes back what a down interface kept, when the bell heard so.
    #[inline]
    pub fn flush(&mut self) {
        if let Err(e) = self.drv.tx_flush(&self.env) {
            self.fail("tx_flush", e);
        }
        if self.bell.as_ref().is_some_and(|b| b.take_link_down()) {
            if let Err(e) = self.drv.tx_take_back(&self.env) {
                self.fail("tx_take_back", e);
            }
        }
    }

    /// Whether frames handed to the kernel wait for a wake-up (flush again
    /// even without new ones: the kernel may have been busy).
    #[inline]
    pub fn tx_waiting(&self) -> bool {
        self.drv.tx_waiting(&self.env).unwrap_or(false)
    }

    /// Hands up to `max` received frames to `f`, gives their buffers back and
    /// publishes once. Returns how many frames `f` saw.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, mut f: impl FnMut(&Segments<'_>)) -> usize {
        let env = &self.env;
        let mut fault = None;
        let r = self.drv.rx_burst(env, max, |frame| {
            match env.frame_slice(frame.addr, frame.len as usize, false) {
                Ok(s) => f(&Segments::single(s)),
                Err(e) => {
                    fault.get_or_insert(e);
                }
            }
        });
        if let Some(e) = fault {
            self.fail("rx_burst frame", e.into());
        }
        match r {
            Ok(n) => n,
            Err(e) => {
                self.fail("rx_burst", e);
                0
            }
        }
    }

    /// Whether received frames wait (cheap; no side effects).
    pub fn rx_pending(&self) -> bool {
        self.drv.rx_pending(&self.env).unwrap_or(false)
    }

    /// Writes the cached state back (a batch boundary another instance can
    /// continue from).
    pub fn sync(&mut self) {
        if let Err(e) = self.drv.sync(&self.env) {
            self.fail("sync", e);
        }
    }

    /// The driver's counters.
    pub fn stats(&self) -> RingStats<D::Stats> {
        RingStats {
            driver: self.drv.stats(&self.env).unwrap_or_default(),
            driver_errors: self.errors.get(),
        }
    }
}

/// The driver domain's own instance: it alone runs slow-path routines.
impl<D: RingDriver> RingFastPath<crate::env::DirectEnv, D> {
    /// Runs the slow-path routine `msg` names (a twin's upcall); returns its name.
    pub fn dispatch_upcall(
        &mut self,
        msg: &UpcallMsg,
    ) -> Result<&'static str, UpcallFailed<D::Error>> {
        self.drv.dispatch_upcall(&self.env, msg)
    }

    /// Whether a slow-path routine asked for a restart.
    pub fn reset_requested(&self) -> bool {
        self.drv.reset_requested(&self.env).unwrap_or(true)
    }
}
