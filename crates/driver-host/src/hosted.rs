//! [`HostedDriver`]: a virtio-net driver instance in this process that owns its NIC
//! link: what a driver domain and the traffic generator run.
//!
//! * The data path is a [`FastPath`] over the direct environment: TX
//!   ([`HostedDriver::tx_reserve`] → [`TxSlot::frame`] → [`TxSlot::commit`], one
//!   [`HostedDriver::tx_flush`] per batch) and RX bursts ([`HostedDriver::rx_burst`]).
//! * Events: [`HostedDriver::rx_call_fd`] / [`HostedDriver::tx_call_fd`] for epoll and
//!   [`HostedDriver::set_rx_notify`] for event-driven hosts; busy-poll hosts leave
//!   notifications off (the default).
//! * Hand-over (driver domain): [`HostedDriver::release`] stops at a batch boundary,
//!   [`HostedDriver::reacquire`] re-reads the region after another instance ran the
//!   queues; [`HostedDriver::dispatch_upcall`] runs a slow-path routine a switch-side
//!   instance asked for.
//!
//! Errors from the data path (a fault in the region, a broken queue) are counted in
//! [`DriverStats`] and logged once; the data path then returns zero work. Nothing
//! allocates per packet.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use driver_env::{DriverMem, UpcallMsg};
use serde::Serialize;
use twin_wire::Segments;
use virtio_net_driver::driver::negotiate;
use virtio_net_driver::layout::{RX_QUEUE, TX_QUEUE};
use virtio_net_driver::{NetConfig, NetError, NetLayout, VirtioNet};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::env::DirectEnv;
use crate::fast_path::{FastPath, TxSlot, UpcallFailed};
use crate::link::{LinkError, NicLink, QueueFds, QueueSetup};
use crate::region::{Region, RegionError};

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the NIC failed.
    #[error("NIC link failed")]
    Link(#[from] LinkError),
    /// The region could not be created.
    #[error("driver region failed")]
    Region(#[from] RegionError),
    /// The epoll instance for event-driven waits could not be set up.
    #[error("cannot set up epoll on the RX call eventfd")]
    CreateEpoll(#[source] std::io::Error),
    /// The driver refused (features, layout, memory fault).
    #[error("virtio-net driver failed")]
    Driver(#[from] NetError),
}

/// How to build the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Descriptors per queue (power of two).
    pub queue_size: u16,
    /// Bytes per DMA buffer (12-byte header + frame), multiple of 64, at least 1536.
    pub buf_size: u32,
    /// Start with RX interrupts on (event-driven host) instead of off (busy poll).
    pub rx_notify: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            queue_size: 512,
            buf_size: 2048,
            rx_notify: false,
        }
    }
}

/// Counters of a hosted driver (serialisable for reports).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DriverStats {
    /// Frames committed for transmission.
    pub tx_packets: u64,
    /// Frame bytes committed.
    pub tx_bytes: u64,
    /// TX completions reaped.
    pub tx_completed: u64,
    /// Reservations refused because the TX ring was full.
    pub tx_ring_full: u64,
    /// Frames refused as too long.
    pub tx_too_long: u64,
    /// Invalid TX used entries from the NIC.
    pub tx_device_errors: u64,
    /// TX kicks sent.
    pub tx_kicks: u64,
    /// TX publishes where the NIC wanted no kick.
    pub tx_kicks_suppressed: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Frame bytes received.
    pub rx_bytes: u64,
    /// RX entries shorter than the header.
    pub rx_short: u64,
    /// RX frames spread over several buffers (dropped).
    pub rx_merged: u64,
    /// Invalid RX used entries from the NIC (bad id, not in flight, too long).
    pub rx_device_errors: u64,
    /// RX kicks sent.
    pub rx_kicks: u64,
    /// Data-path calls that failed (region fault or broken queue).
    pub driver_errors: u64,
    /// A queue is broken (needs a new driver).
    pub broken: bool,
    /// Negotiated virtio features.
    pub features: u64,
    /// Which of the driver's checks of the NIC's used rings fired, per queue.
    pub rx_checks: UsedRingChecks,
    /// The same for the TX queue.
    pub tx_checks: UsedRingChecks,
}

/// How often each check of a used ring fired (the virtqueue's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsedRingChecks {
    /// Used ids out of range.
    pub bad_used_id: u64,
    /// Used ids not in flight.
    pub not_in_flight: u64,
    /// Used lengths beyond the posted buffer.
    pub len_too_large: u64,
    /// Used index jumps (the queue broke).
    pub used_idx_jump: u64,
}

impl From<&driver_virtqueue::QueueCounters> for UsedRingChecks {
    fn from(c: &driver_virtqueue::QueueCounters) -> Self {
        Self {
            bad_used_id: c.bad_used_id,
            not_in_flight: c.not_in_flight,
            len_too_large: c.len_too_large,
            used_idx_jump: c.used_idx_jump,
        }
    }
}

/// A virtio-net driver in this process, connected to a NIC over vhost-user.
#[derive(Debug)]
pub struct HostedDriver {
    fp: FastPath<DirectEnv>,
    link: NicLink,
    rx_call: EventFd,
    rx_epoll: Epoll,
    tx_call: EventFd,
}

fn layout_of(cfg: &DriverConfig) -> Result<NetLayout, Error> {
    Ok(NetLayout::new(NetConfig {
        queue_size: cfg.queue_size,
        buf_size: cfg.buf_size,
    })
    .map_err(NetError::from)?)
}

impl HostedDriver {
    /// Connects once to the NIC's vhost-user socket (the caller retries), creates
    /// the region, initialises the driver and starts both queues.
    pub fn connect(socket: &Path, cfg: &DriverConfig) -> Result<Self, Error> {
        let link = NicLink::connect(socket)?;
        Self::attach(link, None, None, cfg, socket)
    }

    /// The size of the region a driver with `cfg` needs, for a host that creates the
    /// region itself and hands it over (the switch, for a driver domain).
    pub fn region_len_for(cfg: &DriverConfig) -> Result<u64, Error> {
        Ok(layout_of(cfg)?.region_len)
    }

    /// Starts the driver on an established NIC link, in `region` (a memfd of at
    /// least [`HostedDriver::region_len_for`] bytes) or, when `None`, in a new region,
    /// with the queues' (kick, call) eventfds `queue_fds` (RX, then TX) or, when
    /// `None`, new ones. `device` names the NIC in logs.
    pub fn attach(
        mut link: NicLink,
        region: Option<std::fs::File>,
        queue_fds: Option<[QueueFds; 2]>,
        cfg: &DriverConfig,
        device: &Path,
    ) -> Result<Self, Error> {
        let socket = device;
        let layout = layout_of(cfg)?;
        let features = negotiate(link.offered_features())?;
        let region = Arc::new(match region {
            Some(file) => Region::map(file, layout.region_len)?,
            None => Region::create("twin-virtio-net", layout.region_len)?,
        });
        // Initialise the region before the device sees it; doorbells are wired after.
        let setup_env = DirectEnv::new(region.clone(), Vec::new());
        let net = VirtioNet::init(&setup_env, layout.cfg, features)?;
        let queues = [
            QueueSetup {
                index: RX_QUEUE,
                layout: layout.rx,
                base: net.rx_queue().avail_base(),
            },
            QueueSetup {
                index: TX_QUEUE,
                layout: layout.tx,
                base: net.tx_queue().avail_base(),
            },
        ];
        let mut fds = link
            .start(features, &region, &queues, queue_fds.map(Vec::from))?
            .into_iter();
        let (Some((rx_kick, rx_call)), Some((tx_kick, tx_call))) = (fds.next(), fds.next()) else {
            return Err(Error::Link(LinkError::TooFewQueues(0)));
        };
        let env = DirectEnv::new(region, vec![rx_kick, tx_kick]);
        let rx_epoll = Epoll::new().map_err(Error::CreateEpoll)?;
        rx_epoll
            .ctl(
                ControlOperation::Add,
                rx_call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(Error::CreateEpoll)?;
        let mut me = Self {
            fp: FastPath::new(env, net),
            link,
            rx_call,
            rx_epoll,
            tx_call,
        };
        me.set_rx_notify(cfg.rx_notify);
        // Tell the NIC about the posted RX buffers.
        driver_env::Doorbell::kick(me.fp.env(), RX_QUEUE);
        twin_log::info_limited!(socket = %socket.display(), features = format_args!("{features:#x}"),
            queue_size = cfg.queue_size, region_len = layout.region_len, "driver connected to NIC");
        Ok(me)
    }

    /// Reserves a TX buffer. `None`: the ring is full (counted; the caller counts a
    /// drop) or the driver failed. Dropping the slot without committing returns it.
    #[inline]
    pub fn tx_reserve(&mut self) -> Option<TxSlot<'_, DirectEnv>> {
        self.fp.tx_reserve()
    }

    /// Publishes the committed TX batch, kicks the NIC if it wants a kick, and reaps
    /// completions.
    #[inline]
    pub fn tx_flush(&mut self) {
        self.fp.tx_flush()
    }

    /// Hands up to `max` received frames (without virtio header) to `f`, recycles
    /// their buffers and publishes once. Returns how many frames `f` saw.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        self.fp.rx_burst(max, f)
    }

    /// Whether received frames are waiting (cheap; no side effects).
    pub fn rx_pending(&self) -> bool {
        self.fp.rx_pending()
    }

    /// The eventfd the NIC signals when RX frames arrive (with notifications on).
    pub fn rx_call_fd(&self) -> RawFd {
        self.rx_call.as_raw_fd()
    }

    /// The eventfd the NIC signals on TX completions (TX notifications stay off;
    /// completions are reaped by [`HostedDriver::tx_flush`]).
    pub fn tx_call_fd(&self) -> RawFd {
        self.tx_call.as_raw_fd()
    }

    /// Clears the RX call eventfd after a wake-up (non-blocking).
    pub fn rx_call_clear(&self) {
        let _ = self.rx_call.read();
    }

    /// Event-driven wait: arms RX notifications, sleeps on the RX call eventfd for
    /// at most `timeout` unless frames already raced in, then disarms them again.
    /// Returns true when frames are (probably) waiting.
    pub fn wait_rx(&mut self, timeout: std::time::Duration) -> bool {
        if self.set_rx_notify(true) {
            self.set_rx_notify(false);
            return true;
        }
        // epoll counts whole milliseconds: round up, so a short wait still sleeps.
        let ms = i32::try_from(timeout.as_micros().div_ceil(1000).max(1)).unwrap_or(i32::MAX);
        let mut ev = [EpollEvent::default()];
        let woke = matches!(self.rx_epoll.wait(ms, &mut ev), Ok(n) if n > 0);
        self.rx_call_clear();
        self.set_rx_notify(false);
        woke || self.rx_pending()
    }

    /// Turns RX notifications on (event mode) or off (busy poll). Turning them on
    /// returns true when frames raced in: poll again instead of sleeping.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        self.fp.set_rx_notify(on)
    }

    /// Stops using the queues: writes everything back (a batch boundary another
    /// instance can continue from). The driver domain calls it when it hands the
    /// fast path over.
    pub fn release(&mut self) {
        self.fp.sync();
    }

    /// Takes the queues back after another instance ran them: re-reads and
    /// validates the driver state in the region.
    pub fn reacquire(&mut self) -> Result<(), Error> {
        Ok(self.fp.reattach()?)
    }

    /// Runs a slow-path routine a twin asked for (see `twin-derive`); returns its
    /// name.
    pub fn dispatch_upcall(&mut self, msg: &UpcallMsg) -> Result<&'static str, UpcallFailed> {
        self.fp.dispatch_upcall(msg)
    }

    /// Whether a slow-path routine asked for a device reset (a broken queue).
    pub fn reset_requested(&self) -> bool {
        self.fp.reset_requested()
    }

    /// Whether the NIC is still connected (its vhost-user socket has not hung up)
    /// and the driver has not failed.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The counters.
    pub fn stats(&self) -> DriverStats {
        self.fp.stats()
    }

    /// The first data-path failure, if any.
    pub fn failure(&self) -> Option<NetError> {
        self.fp.failure()
    }

    /// Largest frame one TX buffer holds.
    pub fn frame_capacity(&self) -> usize {
        self.fp.frame_capacity()
    }

    /// The region's memfd (to share the driver state with another process later).
    pub fn region_fd(&self) -> BorrowedFd<'_> {
        self.fp.env().region().fd()
    }

    /// The region's size in bytes.
    pub fn region_len(&self) -> u64 {
        self.fp.env().region_len()
    }
}
