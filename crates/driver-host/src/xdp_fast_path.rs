//! [`XdpFastPath`]: the host-facing data path of one AF_XDP driver instance
//! (crate `af-xdp-driver`), over any environment that lends frame memory as
//! volatile slices: the driver domain's (direct environment), the switch's
//! inline one, and the twin (SVM environment). It calls the driver only
//! through its fast-path entry table (`AfXdpTwin`).
//!
//! * TX: [`XdpFastPath::send`] copies a frame into a free transmit chunk and
//!   commits it; one [`XdpFastPath::flush`] per batch publishes, wakes the
//!   kernel and reaps completions.
//! * RX: [`XdpFastPath::rx_burst`] hands frames to a callback as [`Segments`]
//!   in their chunks, gives the chunks back and publishes once.
//!
//! A failed call (a refused memory access) is counted, the first one kept
//! ([`XdpFastPath::failure`]) and logged once, as in [`crate::FastPath`].
//! Nothing allocates per packet.

use std::cell::Cell;

use af_xdp_driver::{AfXdp, AfXdpTwin, XdpDriverError, XdpLayout};
use serde::Serialize;
use twin_wire::Segments;

use crate::fast_path::{HostEnv, UpcallFailed};

/// What became of a frame handed to [`XdpFastPath::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// On the transmit ring (the kernel's after the next flush).
    Queued,
    /// No transmit chunk is free.
    NoRoom,
    /// Larger than a chunk.
    TooBig,
    /// The driver failed (see [`XdpFastPath::failure`]).
    Failed,
}

/// Counters of an AF_XDP driver (serialisable for reports).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct XdpDriverStats {
    /// Frames received and handed on.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames shorter than an Ethernet header.
    pub rx_too_short: u64,
    /// Frames committed for transmission.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Transmit chunks completed by the kernel.
    pub tx_completed: u64,
    /// Sends that found no free chunk.
    pub tx_no_chunk: u64,
    /// Frames longer than a chunk.
    pub tx_too_long: u64,
    /// Descriptors and indexes from the kernel that failed the checks.
    pub kernel_errors: u64,
    /// Chunk-table entries that made no sense.
    pub bad_state: u64,
    /// Data-path calls that failed (a refused access).
    pub driver_errors: u64,
}

/// One AF_XDP driver instance's data path.
#[derive(Debug)]
pub struct XdpFastPath<E> {
    env: E,
    xdp: AfXdpTwin,
    errors: Cell<u64>,
    first_failure: Cell<Option<XdpDriverError>>,
}

impl<E: HostEnv> XdpFastPath<E> {
    /// Initialises a fresh space (the driver domain, once per socket).
    pub fn init(env: E, layout: XdpLayout) -> Result<Self, XdpDriverError> {
        let xdp = AfXdp::init(&env, layout)?;
        Ok(Self::new(env, xdp))
    }

    /// Continues the driver whose state is in `env`'s space (left at a batch
    /// boundary by another instance); `layout` is the host's own.
    pub fn attach(env: E, layout: XdpLayout) -> Result<Self, XdpDriverError> {
        let xdp = AfXdp::attach(&env, layout)?;
        Ok(Self::new(env, xdp))
    }

    fn new(env: E, xdp: AfXdp) -> Self {
        Self {
            env,
            xdp: AfXdpTwin::new(xdp),
            errors: Cell::new(0),
            first_failure: Cell::new(None),
        }
    }

    /// Re-reads the driver state (after another instance ran the rings),
    /// forgetting earlier failures.
    pub fn reattach(&mut self) -> Result<(), XdpDriverError> {
        let layout = *self.xdp.layout();
        self.xdp = AfXdpTwin::new(AfXdp::attach(&self.env, layout)?);
        self.first_failure.set(None);
        Ok(())
    }

    /// The environment.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// The driver's layout.
    pub fn layout(&self) -> &XdpLayout {
        self.xdp.layout()
    }

    fn fail(&self, what: &'static str, e: XdpDriverError) {
        if self.first_failure.get().is_none() {
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e), what, "AF_XDP data path failed");
            self.first_failure.set(Some(e));
        }
        self.errors.set(self.errors.get() + 1);
    }

    /// The first data-path failure, if any.
    #[inline]
    pub fn failure(&self) -> Option<XdpDriverError> {
        self.first_failure.get()
    }

    /// Copies `frame` into a free transmit chunk and puts it on the ring.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> TxOutcome {
        let chunk = match self.xdp.tx_reserve(&self.env) {
            Ok(Some(c)) => c,
            Ok(None) => return TxOutcome::NoRoom,
            Err(e) => {
                self.fail("tx_reserve", e);
                return TxOutcome::Failed;
            }
        };
        let len = frame.len();
        if len > chunk.capacity as usize {
            if let Err(e) = self.xdp.tx_cancel(&self.env, chunk) {
                self.fail("tx_cancel", e);
            }
            return TxOutcome::TooBig;
        }
        let copied = match self.env.frame_slice(chunk.addr, len, true) {
            Ok(area) => frame.copy_to(&Segments::single(area)),
            Err(e) => {
                self.fail("tx frame", XdpDriverError::Access(e));
                return TxOutcome::Failed;
            }
        };
        // At most a chunk: fits u32.
        match self.xdp.tx_commit(&self.env, chunk, copied as u32) {
            Ok(true) => TxOutcome::Queued,
            Ok(false) => TxOutcome::TooBig,
            Err(e) => {
                self.fail("tx_commit", e);
                TxOutcome::Failed
            }
        }
    }

    /// Publishes the committed frames, wakes the kernel and reaps completions.
    #[inline]
    pub fn flush(&mut self) {
        if let Err(e) = self.xdp.tx_flush(&self.env) {
            self.fail("tx_flush", e);
        }
    }

    /// Whether committed frames wait for the kernel (flush again even without
    /// new ones: the kernel may have been busy).
    #[inline]
    pub fn tx_waiting(&self) -> bool {
        self.xdp.tx_waiting(&self.env).unwrap_or(false)
    }

    /// Hands up to `max` received frames to `f`, gives their chunks back and
    /// publishes once. Returns how many frames `f` saw.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, mut f: impl FnMut(&Segments<'_>)) -> usize {
        let env = &self.env;
        let mut fault = None;
        let r = self.xdp.rx_burst(env, max, |frame| {
            match env.frame_slice(frame.addr, frame.len as usize, false) {
                Ok(s) => f(&Segments::single(s)),
                Err(e) => {
                    fault.get_or_insert(e);
                }
            }
        });
        if let Some(e) = fault {
            self.fail("rx_burst frame", XdpDriverError::Access(e));
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
        self.xdp.rx_pending(&self.env).unwrap_or(false)
    }

    /// Writes the cached state back (a batch boundary another instance can
    /// continue from).
    pub fn sync(&mut self) {
        if let Err(e) = self.xdp.sync(&self.env) {
            self.fail("sync", e);
        }
    }

    /// The driver's counters.
    pub fn stats(&self) -> XdpDriverStats {
        let s = self.xdp.stats(&self.env).unwrap_or_default();
        XdpDriverStats {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            rx_too_short: s.rx_too_short,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            tx_completed: s.tx_completed,
            tx_no_chunk: s.tx_no_chunk,
            tx_too_long: s.tx_too_long,
            kernel_errors: s.kernel_errors,
            bad_state: s.bad_state,
            driver_errors: self.errors.get(),
        }
    }
}

/// The driver domain's own instance: it alone runs slow-path routines.
impl XdpFastPath<crate::env::DirectEnv> {
    /// Runs the slow-path routine `msg` names (a twin's upcall); returns its name.
    pub fn dispatch_upcall(
        &mut self,
        msg: &driver_env::UpcallMsg,
    ) -> Result<&'static str, UpcallFailed<XdpDriverError>> {
        use af_xdp_driver::UpcallDispatchError;
        match self.xdp.inner_mut().dispatch_upcall(&self.env, msg) {
            Ok(call) => Ok(call.name()),
            Err(UpcallDispatchError::Decode(e)) => Err(UpcallFailed::Invalid(e)),
            Err(UpcallDispatchError::Routine { routine, error }) => {
                Err(UpcallFailed::Routine { routine, error })
            }
        }
    }

    /// Whether a slow-path routine asked for a restart.
    pub fn reset_requested(&self) -> bool {
        self.xdp.inner().reset_requested(&self.env).unwrap_or(true)
    }
}
