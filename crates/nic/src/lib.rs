//! The built-in software NIC: a vhost-user virtio-net device (served with the
//! `vhost-device` crate) that either sinks every frame its driver sends (counts and
//! drops it), reflects it back with the MAC addresses swapped, or, in source mode,
//! sends its own frames to the driver (the benchmark's receive workload, NIC to
//! client; see [`source`]) while sinking what the driver sends.
//!
//! [`run`] serves one socket until `stop` is set, surviving its driver
//! disconnecting and reconnecting, and returns a [`NicReport`]. It busy-polls
//! (one core at 100 %) or, with `busy_poll: false`, sleeps in epoll on the TX kick
//! fd and the control wake-up (notifications are re-enabled and the ring
//! re-checked before sleeping; with `adaptive`, only after a run of empty rounds).
//! How it waits is a [`twin_poll::Waiter`]; the fds are registered edge-triggered
//! and never read (the kick fd is the driver's and may be blocking).
//!
//! With `digest` on, the NIC folds every frame it receives from its driver, in
//! arrival order, into an order-sensitive digest ([`FrameDigest`], reported as
//! `rx_digest`); in reflect mode each frame is then copied out of the ring once
//! more before it is sent back. Off (the default), nothing changes per frame.
//!
//! Limits: one queue pair; in reflect mode a frame the driver has no RX buffer for
//! is dropped and counted (`tx_drops.no_buffers`), like a real NIC. Source mode
//! has limits of its own (no RX kicks to sleep on, rates below one batch per
//! millisecond are lumpy): see [`source`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod hostile;
pub mod source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use std::os::fd::RawFd;
use twin_poll::{Policy, PollMode, Sources, Waiter};
use twin_wire::ether::{swap_macs, MAX_FRAME};
use twin_wire::{MacAddr, Segments};
use vhost_device::{DeviceConfig, DeviceHandle, DropCounts, DropReason, PortEvent};

pub use hostile::{Attack, AttackConfig, AttackReport};
pub use source::{SourceConfig, SourceFrame};
pub use twin_wire::digest::FrameDigest;

use hostile::Hostile;
use source::Source;
use std::cell::Cell;

/// Errors of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vhost-user device could not be created.
    #[error("cannot start the NIC device: {0}")]
    Device(#[from] vhost_device::Error),
    /// Waiting for work (epoll) failed (event mode).
    #[error("waiting for work failed")]
    Wait(#[from] twin_poll::WaitError),
    /// The source-mode configuration is invalid.
    #[error("invalid source-mode configuration")]
    Source(#[from] source::Error),
    /// The hostile-mode configuration is invalid.
    #[error("invalid hostile-mode configuration")]
    Hostile(#[from] hostile::Error),
}

/// What the NIC does with frames its driver transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Count and drop.
    Sink,
    /// Send back with destination and source MAC swapped.
    Reflect,
    /// Count and drop, and send own frames to the driver ([`source`]).
    Source,
    /// Reflect, and once lie to the driver about used buffers ([`hostile`]).
    Hostile,
}

/// Configuration of [`run`].
#[derive(Debug, Clone)]
pub struct NicConfig {
    /// vhost-user socket path (created; a stale file is replaced).
    pub socket: PathBuf,
    /// Sink, reflect or source.
    pub mode: Mode,
    /// Busy-poll (true) or sleep on the kick eventfd (false).
    pub busy_poll: bool,
    /// With `busy_poll` false: busy-poll while there is work and sleep only after
    /// a run of empty rounds (`twin_poll::PollMode::Adaptive`) instead of at the
    /// first empty round.
    pub adaptive: bool,
    /// MAC reported in the device config space (and, in source mode, the source
    /// MAC of the NIC's frames; [`source::SOURCE_MAC`] when `None`).
    pub mac: Option<MacAddr>,
    /// Frames per batch.
    pub batch: usize,
    /// Compute [`NicReport::rx_digest`] over every frame received from the driver.
    pub digest: bool,
    /// What source mode sends (ignored in the other modes).
    pub source: SourceConfig,
    /// What hostile mode does (ignored in the other modes).
    pub attack: AttackConfig,
}

impl NicConfig {
    /// A busy-polling NIC on `socket`, batches of 64.
    pub fn new(socket: impl Into<PathBuf>, mode: Mode) -> Self {
        Self {
            socket: socket.into(),
            mode,
            busy_poll: true,
            adaptive: false,
            mac: None,
            batch: 64,
            digest: false,
            source: SourceConfig::default(),
            attack: AttackConfig::default(),
        }
    }
}

/// Counters of one [`run`], from the NIC's point of view: `rx` = frames received
/// from the driver (its TX queue), `tx` = frames sent to the driver (its RX queue).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NicReport {
    /// Mode that ran.
    pub mode: Option<Mode>,
    /// Frames received from the driver.
    pub rx_packets: u64,
    /// Bytes received (without virtio-net header).
    pub rx_bytes: u64,
    /// Frames from the driver dropped, by reason.
    pub rx_drops: DropCounts,
    /// Frames sent to the driver (reflect and source mode).
    pub tx_packets: u64,
    /// Bytes sent (without virtio-net header).
    pub tx_bytes: u64,
    /// Frames for the driver dropped, by reason. In source mode a send refused for
    /// lack of buffers is not a drop (`no_buffers` stays 0; see `source_ring_full`
    /// and `source_not_sent`).
    pub tx_drops: DropCounts,
    /// Source mode: sends refused because the driver had no RX buffer posted. Each
    /// ends a batch (the rest is not attempted), so this counts polls of a full
    /// ring, not frames. 0 in the other modes.
    pub source_ring_full: u64,
    /// Source mode with a rate: frames that were due (granted by the token bucket)
    /// and did not go because the driver had no buffer (or its buffer was refused,
    /// the rest of that batch). Like the generator's `tx_dropped_ring_full`, an
    /// unlimited run never counts here: it sends when there is room. 0 in the other
    /// modes.
    pub source_not_sent: u64,
    /// Interrupts sent to the driver.
    pub calls: u64,
    /// Driver connections (ready transitions).
    pub connects: u64,
    /// Driver disconnections.
    pub disconnects: u64,
    /// Rings found broken (port reset).
    pub ring_resets: u64,
    /// With [`NicConfig::digest`]: FNV-1a 64 over every frame received from the
    /// driver (its length as u64 little-endian, then its bytes, before any MAC
    /// swap), in arrival order, the state carried from frame to frame; 16 hex
    /// digits. Over every connection of the run. `None` when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_digest: Option<String>,
    /// Hostile mode: what the attack did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackReport>,
}

fn report(
    mode: Mode,
    h: &DeviceHandle,
    dg: Option<&Digester>,
    src: Option<&Source>,
    host: Option<&Hostile>,
) -> NicReport {
    let s = h.stats();
    let mut tx_drops = s.to_client_drops.clone();
    if let Some(src) = src {
        // A refused send for lack of buffers is a poll of the ring, not a drop.
        let i = DropReason::NoBuffers.index();
        tx_drops.0[i] = tx_drops.0[i].saturating_sub(src.ring_full);
    }
    NicReport {
        mode: Some(mode),
        rx_packets: s.from_client_packets,
        rx_bytes: s.from_client_bytes,
        rx_drops: s.from_client_drops.clone(),
        tx_packets: s.to_client_packets,
        tx_bytes: s.to_client_bytes,
        tx_drops,
        source_ring_full: src.map_or(0, |x| x.ring_full),
        source_not_sent: src.map_or(0, |x| x.not_sent),
        calls: s.calls,
        connects: s.connects,
        disconnects: s.disconnects,
        ring_resets: s.ring_resets,
        rx_digest: dg.map(|d| d.digest.hex()),
        attack: host.map(|x| x.report.clone()),
    }
}

/// The digest of received frames, and room to copy one batch out of the ring
/// (reflect mode: a frame is digested and copied inside the TX pop, then sent back
/// once the pop released the handle).
#[derive(Debug)]
struct Digester {
    digest: FrameDigest,
    buf: Vec<u8>,
    lens: Vec<usize>,
}

impl Digester {
    fn new(batch: usize) -> Self {
        Self {
            digest: FrameDigest::new(),
            buf: vec![0u8; batch * MAX_FRAME],
            lens: Vec::with_capacity(batch),
        }
    }
}

fn log_event(ev: PortEvent, socket: &str, host: &mut Option<Hostile>) {
    if let Some(x) = host.as_mut() {
        x.connection(match ev {
            PortEvent::Connected { connection, .. } => Some(connection),
            PortEvent::Stopped | PortEvent::Disconnected => None,
        });
    }
    match ev {
        PortEvent::Connected {
            features,
            connection,
        } => twin_log::info_limited!(
            socket,
            features = format_args!("{features:#x}"),
            connection,
            "NIC driver up"
        ),
        PortEvent::Stopped => twin_log::info_limited!(socket, "NIC driver stopped its rings"),
        PortEvent::Disconnected => twin_log::info_limited!(socket, "NIC driver disconnected"),
    }
}

/// At most this many batches are drained before adopting a control change.
const MAX_DRAIN_BATCHES: usize = 64;

/// What an idle NIC waits on: the control wake-up and the driver's TX kicks.
struct Kicks<'a>(&'a mut DeviceHandle);

impl Sources for Kicks<'_> {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.0.wake_fd());
        if let Some(fd) = self.0.tx_kick_fd() {
            add(fd);
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        if on {
            self.0.is_ready() && self.0.set_tx_notify(true)
        } else {
            self.0.set_tx_notify(false)
        }
    }
}

/// Takes one batch of the driver's frames (sink, reflect; source mode sinks them;
/// hostile mode reflects them and may lie about the used buffers).
#[inline]
fn batch(
    h: &mut DeviceHandle,
    mode: Mode,
    n: usize,
    dg: &mut Option<Digester>,
    host: &mut Option<Hostile>,
) -> usize {
    if let Some(x) = host.as_mut() {
        return hostile_batch(h, n, dg, x);
    }
    match (mode, dg) {
        (Mode::Sink | Mode::Source, None) => h.pop_tx(n, |_| {}),
        (Mode::Sink | Mode::Source, Some(d)) => h.pop_tx(n, |f| d.digest.frame_segments(f)),
        (Mode::Reflect | Mode::Hostile, None) => h.reflect_tx(n, swap_macs),
        (Mode::Reflect | Mode::Hostile, Some(d)) => reflect_digested(h, n, d),
    }
}

/// Hostile mode: reflects up to `n` frames, the attack choosing each used entry.
fn hostile_batch(
    h: &mut DeviceHandle,
    n: usize,
    dg: &mut Option<Digester>,
    x: &mut Hostile,
) -> usize {
    let received = Cell::new(h.stats().from_client_packets);
    let conn = x.current();
    let taken = h.hostile_reflect_tx(
        n,
        swap_macs,
        |f| {
            received.set(received.get() + 1);
            if let Some(d) = dg.as_mut() {
                d.digest.frame_segments(f);
            }
        },
        |ring| x.decide(ring, received.get(), conn),
    );
    x.taken(taken);
    taken
}

/// One round of work on a ready port: a batch of the driver's frames, then (source
/// mode) one batch of own frames. Returns frames taken plus frames sent.
#[inline]
fn work(
    h: &mut DeviceHandle,
    mode: Mode,
    n: usize,
    dg: &mut Option<Digester>,
    src: &mut Option<Source>,
    host: &mut Option<Hostile>,
) -> usize {
    let taken = batch(h, mode, n, dg, host);
    match src {
        Some(s) => taken + s.round(h),
        None => taken,
    }
}

/// Reflect mode with a digest: takes up to `n` frames (at most the batch the
/// digester has room for), digests and copies each, then sends the copies back with
/// MACs swapped, in order. Same counters as `reflect_tx`.
fn reflect_digested(h: &mut DeviceHandle, n: usize, d: &mut Digester) -> usize {
    let Digester { digest, buf, lens } = d;
    lens.clear();
    let n = n.min(buf.len() / MAX_FRAME);
    let taken = h.pop_tx(n, |f| {
        digest.frame_segments(f);
        let i = lens.len();
        // pop_tx never hands out frames longer than MAX_FRAME.
        let len = f.len().min(MAX_FRAME);
        let copied = f.read_prefix(&mut buf[i * MAX_FRAME..i * MAX_FRAME + len]);
        lens.push(copied);
    });
    for (i, &len) in lens.iter().enumerate() {
        let frame = &mut buf[i * MAX_FRAME..i * MAX_FRAME + len];
        // Counted by the handle when refused (no buffers, too short, ...).
        let _ = h.push_rx_edit(
            &Segments::single(vm_memory::VolatileSlice::from(frame)),
            swap_macs,
        );
    }
    if !lens.is_empty() {
        h.flush_rx();
    }
    taken
}

/// Serves the NIC on `cfg.socket` until `stop` is set; returns the counters.
/// A source-mode configuration is checked before the socket is created.
pub fn run(cfg: &NicConfig, stop: &AtomicBool) -> Result<NicReport, Error> {
    let n = cfg.batch.max(1);
    let mut src = match cfg.mode {
        Mode::Source => Some(Source::new(
            &cfg.source,
            cfg.mac.unwrap_or(source::SOURCE_MAC),
            n,
            !cfg.busy_poll,
        )?),
        Mode::Sink | Mode::Reflect | Mode::Hostile => None,
    };
    let mut host = (cfg.mode == Mode::Hostile).then(|| Hostile::new(cfg.attack));
    let dev_cfg = DeviceConfig {
        mac: cfg.mac,
        ..DeviceConfig::default()
    };
    let (_dev, mut h) = vhost_device::listen(&cfg.socket, dev_cfg)?;
    let name = cfg.socket.display().to_string();
    let mut dg = cfg.digest.then(|| Digester::new(n));
    if cfg.busy_poll {
        // Spins, then yields its core (`twin_poll::waiter::SPINS_BEFORE_YIELD`);
        // never sleeps in epoll, never touches notifications.
        let mut waiter = Waiter::new(PollMode::Busy, Policy::new(Duration::ZERO));
        while !stop.load(Ordering::Relaxed) {
            if h.has_pending_change() && h.is_ready() {
                // Drain before adopting the change: a driver stops its rings only
                // after its last frame, so every frame it posted is taken (bounded
                // against a driver that keeps posting).
                for _ in 0..MAX_DRAIN_BATCHES {
                    if batch(&mut h, cfg.mode, n, &mut dg, &mut host) == 0 {
                        break;
                    }
                }
            }
            if let Some(ev) = h.refresh() {
                log_event(ev, &name, &mut host);
            }
            if !h.is_ready() {
                if let Some(s) = src.as_mut() {
                    s.pause();
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if work(&mut h, cfg.mode, n, &mut dg, &mut src, &mut host) == 0 {
                waiter.idle(&mut Kicks(&mut h))?;
            } else {
                waiter.work();
            }
        }
    } else {
        let mode = if cfg.adaptive {
            PollMode::Adaptive
        } else {
            PollMode::Event
        };
        run_events(
            &mut h, cfg.mode, n, stop, &name, &mut dg, &mut src, &mut host, mode,
        )?;
    }
    Ok(report(
        cfg.mode,
        &h,
        dg.as_ref(),
        src.as_ref(),
        host.as_ref(),
    ))
}

/// The longest epoll sleep (a control change or a kick ends it earlier).
const EVENT_SLEEP_MS: u64 = 100;

#[allow(clippy::too_many_arguments)] // the loop's state, borrowed from `run`
fn run_events(
    h: &mut DeviceHandle,
    mode: Mode,
    n: usize,
    stop: &AtomicBool,
    name: &str,
    dg: &mut Option<Digester>,
    src: &mut Option<Source>,
    host: &mut Option<Hostile>,
    poll: PollMode,
) -> Result<(), Error> {
    // Event mode sleeps at the first empty round (no spinning first).
    let policy = Policy::new(Duration::from_millis(EVENT_SLEEP_MS)).with_event_rounds(0);
    let mut waiter = Waiter::new(poll, policy);
    let mut gen = u64::MAX;
    let mut streak = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // Drain the ring before adopting a new snapshot: a ring stop
        // (GET_VRING_BASE) waits for our acknowledgement, so frames the driver
        // already posted are still taken.
        let did = if h.is_ready() {
            work(h, mode, n, dg, src, host)
        } else {
            0
        };
        if did > 0 && streak < 64 {
            streak += 1;
            waiter.work();
            continue;
        }
        streak = 0;
        if let Some(ev) = h.refresh() {
            log_event(ev, name, host);
        }
        if h.generation() != gen {
            // The kick fd may have changed: registered again at the next sleep.
            gen = h.generation();
            waiter.invalidate();
            continue;
        }
        if did > 0 {
            // Still busy: the snapshot is adopted, go on.
            waiter.work();
            continue;
        }
        // Nothing pending: ask for kicks, re-check, then sleep (source mode: at
        // most until its next batch is due, or a short while when the driver had
        // no buffers, since RX kicks are not available).
        let timeout = match src.as_mut() {
            Some(s) if h.is_ready() => s.sleep_hint().map_or(EVENT_SLEEP_MS, |d| {
                d.as_micros().div_ceil(1000).clamp(1, 100) as u64
            }),
            Some(s) => {
                s.pause();
                EVENT_SLEEP_MS
            }
            None => EVENT_SLEEP_MS,
        };
        waiter.idle_for(&mut Kicks(h), Duration::from_millis(timeout))?;
    }
    Ok(())
}
