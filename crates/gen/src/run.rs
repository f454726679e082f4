//! The generator loop.
//!
//! Per iteration: grant a batch from the token bucket ([`twin_poll::TokenBucket`],
//! the NIC's source mode's too; or a full batch when not
//! rate limited; never more than a frame count still allows), reserve/copy/commit
//! that many frames, flush once, receive one burst and check each own frame's
//! sequence number (and, when asked, fold it into the receive digest). In event-driven mode an idle
//! iteration arms RX notifications and sleeps on the RX call eventfd (at most until
//! the next token is due); in adaptive mode (the default) it yields its core like a
//! busy poller for [`twin_poll::waiter::ADAPTIVE_ROUNDS`] idle iterations in a row,
//! then sleeps like an event-driven one. After the send phase, a drain phase collects frames
//! still in flight: when the generator's own frames come back (a reflecting peer),
//! until every frame it sent is back or [`GenConfig::drain`] has passed (a loaded
//! machine may hold them for a while; a lost frame costs the whole drain); when
//! none of its own come back, until nothing arrived for 50 ms.
//!
//! Receive only: with a rate of 0 ([`GenConfig::rate_pps`] `Some(0)`) the generator
//! sends nothing and only receives, counting what arrives (`rx_packets`,
//! `rx_bytes`; frames that are not its own, such as those of a NIC in source mode,
//! as `rx_foreign`). There is no drain phase then (nothing of its own is in
//! flight, and a source that never pauses would keep it going and inflate
//! `rx_mpps`).
//!
//! Round-trip time: every frame carries a send timestamp (ns since the generator
//! started, from the monotonic clock). The clock is read once per batch, at the top
//! of the iteration, and all frames of a batch carry that time, so an RTT includes
//! the time a frame waited while its batch was built (at light load, a batch is one
//! or a few frames and that is ~0). On receive, the first own frame of a burst reads
//! the clock once for the whole burst; each own frame with a plausible timestamp
//! (not in the future, under [`RTT_MAX`]) goes into a [`LatencyHistogram`]
//! allocated once, the others count as `rtt_invalid`. With [`GenConfig::digest`],
//! frames carry no timestamp (so that the same frames have the same digest run after
//! run) and no RTT is measured.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use driver_host::{DriverConfig, DriverStats, HostedDriver};
use serde::Serialize;
use twin_poll::TokenBucket;
use twin_wire::MacAddr;

use crate::frame::{FrameError, GenFrame, GEN_HDR_LEN, NO_TIMESTAMP};
use crate::latency::LatencyHistogram;
use twin_wire::digest::FrameDigest;

/// How often the drain looks for frames still on their way when none came.
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// Longest sleep of an idle event-driven generator.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Round-trip times from this long on count as `rtt_invalid`.
pub const RTT_MAX: Duration = Duration::from_secs(60);

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The configuration is invalid.
    #[error("invalid generator configuration")]
    Config(#[from] FrameError),
    /// The batch size is zero.
    #[error("batch size must be at least 1")]
    InvalidBatch,
    /// The rate needs a token bucket larger than one can be.
    #[error("rate too high for a token bucket")]
    Bucket(#[from] twin_poll::BucketError),
    /// No connection within the timeout.
    #[error("could not connect to {path} within {timeout:?}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Timeout.
        timeout: Duration,
        /// Last error.
        #[source]
        source: driver_host::Error,
    },
    /// Stopped before a connection was made.
    #[error("stopped before connecting")]
    Stopped,
}

/// How the generator waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PollMode {
    /// Spin on the rings; notifications off.
    BusyPoll,
    /// Sleep on the RX call eventfd when idle.
    EventDriven,
    /// Busy while there is work; after a run of idle iterations, sleep as
    /// `EventDriven` does.
    #[default]
    Adaptive,
}

impl PollMode {
    /// Whether an idle generator may sleep (and so needs rings and a token bucket
    /// deep enough to keep its rate across a sleep).
    fn sleeps(self) -> bool {
        self != PollMode::BusyPoll
    }
}

/// Generator configuration.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// vhost-user device socket to connect to.
    pub socket: PathBuf,
    /// Generator id (in every frame; default source MAC is `MacAddr::local(id)`).
    pub id: u32,
    /// Ethernet frame length without FCS and virtio header, 60..=1514.
    pub frame_len: usize,
    /// Packets per second; `None`: as fast as possible; `Some(0)`: send nothing,
    /// receive only (no drain phase).
    pub rate_pps: Option<u64>,
    /// How long to send.
    pub duration: Duration,
    /// Send exactly this many frames, then stop sending (and drain). `duration`
    /// still bounds the run: a run that cannot send them in time sends fewer.
    /// Frames a rate-limited run could not send (ring full, counted in
    /// `tx_dropped_ring_full`) do not count toward it.
    pub count: Option<u64>,
    /// Compute [`GenReport::rx_digest`] over every received frame. Off: no
    /// per-frame cost. On: frames carry no send timestamp (their bytes depend only
    /// on the configuration and the sequence number) and no RTT is measured.
    pub digest: bool,
    /// Source MAC (default `MacAddr::local(id)`).
    pub src_mac: Option<MacAddr>,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Send frames with an 802.1Q tag of this VLAN id (1..=4094); `None`:
    /// untagged.
    pub vlan: Option<u16>,
    /// Busy poll or event driven.
    pub mode: PollMode,
    /// Frames per batch.
    pub batch: usize,
    /// Keep retrying the connection this long.
    pub connect_timeout: Duration,
    /// After sending, keep receiving at most this long: until every frame sent came
    /// back when its own frames come back, else until idle for 50 ms. Not with a
    /// rate of 0 (receive only).
    pub drain: Duration,
    /// The driver instance.
    pub driver: DriverConfig,
}

impl GenConfig {
    /// Defaults for `socket`: 64-byte frames, 1 s, unlimited rate, broadcast, busy poll.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            id: 1,
            frame_len: 64,
            rate_pps: None,
            duration: Duration::from_secs(1),
            count: None,
            digest: false,
            src_mac: None,
            dst_mac: MacAddr::BROADCAST,
            vlan: None,
            // The library's callers choose; `twin gen`'s default is adaptive.
            mode: PollMode::BusyPoll,
            batch: 32,
            connect_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            driver: DriverConfig::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenReport {
    /// Frames sent (committed to the NIC).
    pub tx_packets: u64,
    /// Bytes sent (frame bytes, no header).
    pub tx_bytes: u64,
    /// Frames not sent because the TX ring was full. Only rate-limited runs count
    /// here (frames that were due and could not go); an unlimited run simply sends
    /// when the ring has room (see `driver.tx_ring_full` for reservation failures).
    /// Also the frames that became due while the ring was full (since the last
    /// reservation failed) beyond what the token bucket holds.
    pub tx_dropped_ring_full: u64,
    /// Rate-limited runs: frames that were due but were given up because the
    /// generator ran too late to send them, with room in its ring (more accrued
    /// while it was not running than its token bucket holds). With `tx_packets`
    /// and `tx_dropped_ring_full`, the rate times `duration_s` less at most a
    /// bucket (still in it at the end).
    pub tx_late: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received frames carrying this generator's id.
    pub rx_own: u64,
    /// Own frames whose destination MAC is this generator's source MAC (reflected
    /// with swapped addresses).
    pub rx_own_swapped: u64,
    /// Own frames whose sequence number was not above the previous one.
    pub rx_out_of_order: u64,
    /// Frames of other generators or other protocols.
    pub rx_foreign: u64,
    /// Own frames whose round-trip time was measured (every own frame with a
    /// plausible send timestamp; 0 with [`GenConfig::digest`]).
    pub rtt_samples: u64,
    /// Own frames whose send timestamp was implausible (in the future, or at least
    /// [`RTT_MAX`] ago).
    pub rtt_invalid: u64,
    /// Round-trip time, median, in microseconds (0 without samples). From a
    /// log-linear histogram: within 0.8 % of the exact value.
    pub rtt_p50_us: f64,
    /// Round-trip time, 99th percentile, in microseconds (0 without samples).
    pub rtt_p99_us: f64,
    /// Round-trip time, 99.9th percentile, in microseconds (0 without samples).
    pub rtt_p999_us: f64,
    /// Largest round-trip time, in microseconds (exact; 0 without samples).
    pub rtt_max_us: f64,
    /// Length of the send phase in seconds.
    pub duration_s: f64,
    /// Transmit rate in million packets per second over the send phase.
    pub mpps: f64,
    /// Receive rate in Mpps: every frame received (the drain phase's included)
    /// over the length of the send phase.
    pub rx_mpps: f64,
    /// Transmit throughput in Gbit/s (frame bytes).
    pub tx_gbps: f64,
    /// Whether the NIC hung up during the run.
    pub nic_disconnected: bool,
    /// With [`GenConfig::digest`]: FNV-1a 64 over every received frame (its length
    /// as u64 little-endian, then its bytes), in arrival order, the state carried
    /// from frame to frame; 16 hex digits. `None` when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_digest: Option<String>,
    /// The driver's own counters.
    pub driver: DriverStats,
}

/// What the receive side carries from burst to burst.
#[derive(Debug, Default)]
struct RxState {
    last_seq: Option<u64>,
    digest: Option<FrameDigest>,
    /// `None` when frames carry no timestamp.
    rtt: Option<Rtt>,
}

/// Round-trip-time measurement.
#[derive(Debug)]
struct Rtt {
    /// The generator's start: timestamps are nanoseconds since then.
    t0: Instant,
    hist: LatencyHistogram,
    invalid: u64,
}

/// Nanoseconds from `t0` to `t` (saturating).
fn ns_since(t0: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(t0).as_nanos()).unwrap_or(u64::MAX)
}

struct Rx<'a> {
    id: u32,
    src: MacAddr,
    st: &'a mut RxState,
    r: &'a mut GenReport,
    /// The burst's receive time (read at its first own frame).
    now_ns: Option<u64>,
}

impl Rx<'_> {
    fn frame(&mut self, seg: &twin_wire::Segments<'_>) {
        self.r.rx_packets += 1;
        self.r.rx_bytes += seg.len() as u64;
        if let Some(d) = self.st.digest.as_mut() {
            d.frame_segments(seg);
        }
        // Room for an 802.1Q tag in front of the generator header.
        let mut hdr = [0u8; GEN_HDR_LEN + 4];
        let n = seg.read_prefix(&mut hdr);
        match GenFrame::parse(&hdr[..n]) {
            Some(p) if p.id == self.id => {
                self.r.rx_own += 1;
                if p.dst == self.src {
                    self.r.rx_own_swapped += 1;
                }
                let last = &mut self.st.last_seq;
                if last.is_some_and(|l| p.seq <= l) {
                    self.r.rx_out_of_order += 1;
                }
                *last = Some(last.map_or(p.seq, |l| l.max(p.seq)));
                if let Some(rtt) = self.st.rtt.as_mut() {
                    let now = *self
                        .now_ns
                        .get_or_insert_with(|| ns_since(rtt.t0, Instant::now()));
                    match now.checked_sub(p.sent_ns) {
                        Some(d) if d < RTT_MAX.as_nanos() as u64 => rtt.hist.record(d),
                        _ => rtt.invalid += 1,
                    }
                }
            }
            _ => self.r.rx_foreign += 1,
        }
    }
}

/// The driver's configuration: `cfg.driver`, with rings deep enough for an
/// event-driven, rate-limited run to keep its rate across a sleep (epoll sleeps in
/// whole milliseconds and the transmit ring is what carries the frames due
/// meanwhile): at least two milliseconds' worth, up to 4096 descriptors.
fn driver_config(cfg: &GenConfig) -> DriverConfig {
    let mut d = cfg.driver;
    if let (true, Some(rate)) = (cfg.mode.sleeps(), cfg.rate_pps) {
        let want = (rate / 500).clamp(1, 4096).next_power_of_two();
        d.queue_size = d.queue_size.max(u16::try_from(want).unwrap_or(4096));
    }
    d
}

fn connect(cfg: &GenConfig, stop: &AtomicBool) -> Result<HostedDriver, GenError> {
    let deadline = Instant::now() + cfg.connect_timeout;
    loop {
        match HostedDriver::connect(&cfg.socket, &driver_config(cfg)) {
            Ok(d) => return Ok(d),
            Err(e) if Instant::now() >= deadline => {
                return Err(GenError::Connect {
                    path: cfg.socket.clone(),
                    timeout: cfg.connect_timeout,
                    source: e,
                })
            }
            Err(e) => twin_log::debug_limited!(error = %e, "connect failed, retrying"),
        }
        if stop.load(Ordering::Relaxed) {
            return Err(GenError::Stopped);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the generator until `cfg.duration` passes or `stop` is set.
pub fn run(cfg: &GenConfig, stop: &AtomicBool) -> Result<GenReport, GenError> {
    let src = cfg.src_mac.unwrap_or(MacAddr::local(cfg.id));
    let mut tmpl = match cfg.vlan {
        None => GenFrame::new(cfg.frame_len, src, cfg.dst_mac, cfg.id)?,
        Some(vid) => GenFrame::tagged(cfg.frame_len, src, cfg.dst_mac, cfg.id, vid)?,
    };
    if cfg.batch == 0 {
        return Err(GenError::InvalidBatch);
    }
    let mut d = connect(cfg, stop)?;
    let mut report = GenReport::default();
    let mut seq = 0u64;
    let batch = cfg.batch;
    let start = Instant::now();
    let stamp = !cfg.digest;
    let mut rx_state = RxState {
        last_seq: None,
        digest: cfg.digest.then(FrameDigest::new),
        rtt: stamp.then(|| Rtt {
            t0: start,
            hist: LatencyHistogram::new(),
            invalid: 0,
        }),
    };
    let end = start + cfg.duration;
    // Tokens over the bucket, given up: while the ring was full (the last
    // reservation failed), or while the generator was late with room in it.
    let mut over_full = 0f64;
    let mut late = 0f64;
    let mut ring_full = false;
    let mut iter = 0u64;
    let sleeps = cfg.mode.sleeps();
    // Idle iterations in a row, and how many an adaptive generator spends yielding
    // before it sleeps.
    let mut idle_rounds = 0u32;
    let sleep_after = match cfg.mode {
        PollMode::BusyPoll => None,
        PollMode::EventDriven => Some(0),
        PollMode::Adaptive => Some(twin_poll::waiter::ADAPTIVE_ROUNDS),
    };
    // The bucket (`twin_poll`) holds two batches, and in a mode that sleeps at least twice
    // what accrues during one sleep (epoll waits have millisecond granularity), so
    // sleeping never lowers the rate. It starts empty, at `start`.
    let mut bucket = cfg
        .rate_pps
        .map(|rate| TokenBucket::for_batches(rate, batch, sleeps.then_some(MAX_SLEEP)))
        .transpose()?;
    if let Some(b) = bucket.as_mut() {
        b.refill(start);
    }
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let left = match cfg.count {
            Some(c) if report.tx_packets >= c => break,
            Some(c) => usize::try_from(c - report.tx_packets).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        iter += 1;
        if iter.is_multiple_of(4096) && !d.is_connected() {
            report.nic_disconnected = true;
            twin_log::warn_limited!("NIC hung up");
            break;
        }
        let grant = match bucket.as_mut() {
            None => batch.min(left),
            Some(b) => {
                let over = b.refill(now);
                if ring_full {
                    over_full += over;
                } else {
                    late += over;
                }
                b.take(batch.min(left))
            }
        };
        let mut sent = 0;
        // One timestamp for the whole batch (the clock read above).
        let t_ns = if stamp {
            ns_since(start, now)
        } else {
            NO_TIMESTAMP
        };
        for i in 0..grant {
            let Some(slot) = d.tx_reserve().inspect(|_| ring_full = false) else {
                ring_full = true;
                // The ring stays full for the rest of this batch (tx_reserve already
                // tried to reap): stop trying. With a rate, the rest of the grant was
                // due and is lost.
                if cfg.rate_pps.is_some() {
                    report.tx_dropped_ring_full += (grant - i) as u64;
                }
                break;
            };
            let bytes = tmpl.with_seq_and_time(seq, t_ns);
            if slot.frame().write_prefix(bytes) == bytes.len() && slot.commit(bytes.len()) {
                seq += 1;
                sent += 1;
                report.tx_packets += 1;
                report.tx_bytes += bytes.len() as u64;
            }
        }
        if sent > 0 {
            d.tx_flush();
        }
        let got = rx_burst(&mut d, &mut report, cfg.id, src, &mut rx_state, 2 * batch);
        if sent > 0 || got > 0 {
            idle_rounds = 0;
        } else if sleep_after.is_some_and(|n| idle_rounds >= n) {
            // Sleep until a batch's worth of tokens is due (or frames arrive).
            let wait = bucket
                .as_ref()
                .and_then(|b| b.until(batch))
                .unwrap_or(MAX_SLEEP);
            d.wait_rx(wait.min(MAX_SLEEP));
        } else {
            // Polling with nothing to do (ring full, or not due): give the core to
            // whoever shares it — on two cores that is often the peer we wait for.
            idle_rounds = idle_rounds.saturating_add(1);
            std::thread::yield_now();
        }
    }
    let end_of_sending = Instant::now();
    let sent_for = end_of_sending.duration_since(start).as_secs_f64();
    let counted_out = cfg.count.is_some_and(|c| report.tx_packets >= c);
    if let (Some(b), false) = (bucket.as_mut(), counted_out) {
        // What accrued since the last refill counts too: over a bucket, it was late.
        let over = b.refill(end_of_sending);
        if ring_full {
            over_full += over;
        } else {
            late += over;
        }
    }
    report.tx_late = late as u64;
    report.tx_dropped_ring_full += over_full as u64;
    // Drain: frames still in flight (none when receiving only).
    let drain = if cfg.rate_pps == Some(0) {
        Duration::ZERO
    } else {
        cfg.drain
    };
    let drain_end = Instant::now() + drain;
    let mut idle_since = Instant::now();
    // A reflecting peer returns every frame, so the count says when all are back;
    // timing (an idle spell) would end the drain early on a busy machine.
    let own_come_back = report.rx_own_swapped > 0;
    while Instant::now() < drain_end {
        if own_come_back {
            if report.rx_own_swapped >= report.tx_packets {
                break;
            }
        } else if idle_since.elapsed() >= Duration::from_millis(50) {
            break;
        }
        d.tx_flush();
        if rx_burst(&mut d, &mut report, cfg.id, src, &mut rx_state, 2 * batch) > 0 {
            idle_since = Instant::now();
        } else {
            // What is still out is on its way through peers that may share this
            // core: let them run, without spinning through the drain (an
            // event-driven generator must not busy-poll here either).
            std::thread::sleep(DRAIN_POLL);
        }
    }
    report.duration_s = sent_for;
    if sent_for > 0.0 {
        report.mpps = report.tx_packets as f64 / sent_for / 1e6;
        report.rx_mpps = report.rx_packets as f64 / sent_for / 1e6;
        report.tx_gbps = report.tx_bytes as f64 * 8.0 / sent_for / 1e9;
    }
    report.driver = d.stats();
    report.rx_digest = rx_state.digest.map(|dg| dg.hex());
    if let Some(rtt) = &rx_state.rtt {
        let h = &rtt.hist;
        let us = |ns: u64| ns as f64 / 1e3;
        report.rtt_samples = h.count();
        report.rtt_invalid = rtt.invalid;
        if h.count() > 0 {
            report.rtt_p50_us = us(h.value_at_quantile(0.5));
            report.rtt_p99_us = us(h.value_at_quantile(0.99));
            report.rtt_p999_us = us(h.value_at_quantile(0.999));
            report.rtt_max_us = us(h.max());
        }
    }
    twin_log::info_local!(
        tx = report.tx_packets,
        rx = report.rx_packets,
        mpps = report.mpps,
        rtt_p50_us = report.rtt_p50_us,
        rtt_p99_us = report.rtt_p99_us,
        "generator done"
    );
    Ok(report)
}

fn rx_burst(
    d: &mut HostedDriver,
    report: &mut GenReport,
    id: u32,
    src: MacAddr,
    st: &mut RxState,
    max: usize,
) -> usize {
    let mut rx = Rx {
        id,
        src,
        st,
        r: report,
        now_ns: None,
    };
    d.rx_burst(max, |seg| rx.frame(seg))
}
