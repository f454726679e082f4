//! Source mode: the NIC as a packet source toward its driver, the benchmark's
//! receive workload (NIC to client).
//!
//! The NIC writes frames into the buffers its driver posted on its RX queue (the
//! device's RX direction toward the driver, what [`DeviceHandle::push_rx`] and
//! [`DeviceHandle::flush_rx`] do), in batches of [`NicConfig::batch`] frames with one
//! flush (at most one interrupt) per batch. It sends as fast as the driver posts
//! buffers or, with a rate, at most that many frames per second: a token bucket
//! ([`twin_poll::TokenBucket`], the generator's too) that grants whole batches (it holds two batches, and in event mode at least
//! what accrues in [`MAX_BUCKET_SLEEP`]), so rates below one batch per millisecond
//! are lumpy. Frames the driver transmits meanwhile are taken and counted as in
//! sink mode.
//!
//! Frame format ([`SourceFrame`]), built once as a template; per frame only the
//! sequence number is written, and the frame is copied into the driver's buffer
//! (no allocation per frame):
//!
//! ```text
//! 0   dst MAC (6, --dst-mac, default broadcast)
//! 6   src MAC (6, the device config MAC, default SOURCE_MAC 02:00:00:00:00:fe)
//! 12  ethertype 0x88B6 (2, big-endian; IEEE local experimental 2)
//! 14  sequence number (u64 LE)
//! 22  payload pattern: byte 22 + i is i as u8, up to the frame length
//! ```
//!
//! 60..=1514 bytes (Ethernet without FCS, without the virtio-net header). The
//! sequence number starts at 0 and counts frames given to the driver, over every
//! connection of a run: frames that were never attempted take no number, so a
//! receiver that sees a gap saw a loss (the NIC's own drops, `tx_drops`, also
//! leave a gap).
//!
//! No buffers: the device handle has no way to ask whether the driver's RX ring has
//! room, so the NIC tries the next frame, and a refusal for lack of buffers ends
//! the batch without consuming anything. That refusal is a poll, not a lost frame:
//! it is taken back out of `tx_drops.no_buffers` (which therefore stays 0 in source
//! mode) and counted in `source_ring_full`. Like the generator's
//! `tx_dropped_ring_full`, only a rate-limited run counts frames as not sent
//! (`source_not_sent`): the rest of a granted batch was due and could not go. An
//! unlimited run simply sends when there is room. Tokens beyond the bucket (the NIC
//! was descheduled or asleep for longer than the bucket covers) are not counted.
//! Any other refusal (a bad or too small buffer, a broken ring) is the handle's
//! counted drop (`tx_drops.<reason>`), ends the batch, and takes a sequence number.
//!
//! Waiting: busy mode polls and yields its core after a few empty rounds, like the
//! other modes. Event mode sleeps in epoll on the driver's TX kicks and the
//! control wake-up, but the handle exposes no RX kick fd (and the device never
//! asks for RX kicks), so a NIC that found no buffers sleeps
//! [`RING_FULL_SLEEP`] (1 ms, epoll's granularity) and polls again. It keeps
//! sending without sleeping as long as the driver keeps up; a driver that falls a
//! whole ring behind gets at most one ring of frames per millisecond until it
//! catches up, and its ring may run empty while the NIC sleeps. A rate-limited NIC
//! sleeps until its next batch is due (rounded up to whole milliseconds, at most
//! [`MAX_BUCKET_SLEEP`]).
//!
//! The bucket of a busy-polling NIC holds two batches, as the generator's does:
//! a NIC that loses its core for longer than two batches take at the rate (it
//! yields after a few empty rounds, and another busy process may keep the core)
//! loses those tokens, and the achieved rate falls below the one asked for.

use std::time::{Duration, Instant};

use twin_poll::TokenBucket;
use twin_wire::{MacAddr, Segments};
use vhost_device::{DeviceHandle, DropReason};

#[cfg(doc)]
use crate::NicConfig;

/// IEEE "local experimental 2" ethertype of source-mode frames (the generator
/// uses 0x88B5, so it counts these as `rx_foreign`).
pub const ETHERTYPE_SOURCE: u16 = 0x88B6;
/// Source MAC of source-mode frames when the device config has none.
pub const SOURCE_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
/// Smallest source-mode frame.
pub const MIN_FRAME_LEN: usize = 60;
/// Largest source-mode frame.
pub const MAX_FRAME_LEN: usize = 1514;
/// Bytes before the payload pattern (Ethernet header and sequence number).
pub const SOURCE_HDR_LEN: usize = 22;
/// How long an event-mode NIC that found no RX buffers sleeps before polling again.
pub const RING_FULL_SLEEP: Duration = Duration::from_millis(1);
/// Longest sleep of a rate-limited event-mode NIC waiting for its next batch; the
/// bucket holds at least twice what accrues in it.
pub const MAX_BUCKET_SLEEP: Duration = Duration::from_millis(10);

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested frame length is outside 60..=1514.
    #[error("frame size {0} B is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN} B (Ethernet frame without FCS and virtio header)")]
    InvalidFrameLen(usize),
    /// The rate needs a token bucket larger than one can be.
    #[error("rate too high for a token bucket")]
    Bucket(#[from] twin_poll::BucketError),
}

/// What source mode sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceConfig {
    /// Ethernet frame length without FCS and virtio header, 60..=1514.
    pub frame_len: usize,
    /// Frames per second; `None`: as fast as the driver posts buffers. `Some(0)`
    /// sends nothing.
    pub rate_pps: Option<u64>,
    /// Destination MAC.
    pub dst_mac: MacAddr,
}

impl Default for SourceConfig {
    /// 64-byte broadcast frames, unlimited.
    fn default() -> Self {
        Self {
            frame_len: 64,
            rate_pps: None,
            dst_mac: MacAddr::BROADCAST,
        }
    }
}

/// A source-mode frame template; only the sequence number changes per frame.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    buf: [u8; MAX_FRAME_LEN],
    len: usize,
}

impl SourceFrame {
    /// A template of `len` bytes from `src` to `dst`.
    pub fn new(len: usize, src: MacAddr, dst: MacAddr) -> Result<Self, Error> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Err(Error::InvalidFrameLen(len));
        }
        let mut buf = [0u8; MAX_FRAME_LEN];
        buf[0..6].copy_from_slice(&dst.0);
        buf[6..12].copy_from_slice(&src.0);
        buf[12..14].copy_from_slice(&ETHERTYPE_SOURCE.to_be_bytes());
        for (i, b) in buf[SOURCE_HDR_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(Self { buf, len })
    }

    /// The frame bytes with sequence number `seq`.
    pub fn with_seq(&mut self, seq: u64) -> &[u8] {
        self.with_seq_mut(seq)
    }

    /// Like [`SourceFrame::with_seq`], mutable (a `VolatileSlice` wants that).
    #[inline]
    fn with_seq_mut(&mut self, seq: u64) -> &mut [u8] {
        self.buf[14..SOURCE_HDR_LEN].copy_from_slice(&seq.to_le_bytes());
        &mut self.buf[..self.len]
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (frames are at least 60 bytes).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence number of a received frame, from its first bytes; `None` if it
    /// is not a source-mode frame.
    pub fn parse_seq(hdr: &[u8]) -> Option<u64> {
        let h: &[u8; SOURCE_HDR_LEN] = hdr.get(..SOURCE_HDR_LEN)?.try_into().ok()?;
        if u16::from_be_bytes([h[12], h[13]]) != ETHERTYPE_SOURCE {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&h[14..SOURCE_HDR_LEN]);
        Some(u64::from_le_bytes(seq))
    }
}

/// How the last [`Source::round`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every granted frame was sent.
    Sent,
    /// Rate limited: no batch due yet.
    NotDue,
    /// The driver had no buffer for the next frame.
    RingFull,
    /// A frame was refused for another reason (a counted drop).
    Refused,
}

/// The sending half of a source-mode NIC, owned by its loop.
#[derive(Debug)]
pub(crate) struct Source {
    frame: SourceFrame,
    seq: u64,
    /// Rate-limited: the token bucket (`twin_poll`); `None`: unlimited.
    bucket: Option<TokenBucket>,
    batch: usize,
    /// Sends refused for lack of buffers (taken out of `tx_drops.no_buffers`).
    pub(crate) ring_full: u64,
    /// Rate-limited: frames due that did not go.
    pub(crate) not_sent: u64,
    pub(crate) last: Outcome,
}

impl Source {
    /// `src` is the NIC's MAC; `event`: the loop sleeps between batches.
    pub(crate) fn new(
        cfg: &SourceConfig,
        src: MacAddr,
        batch: usize,
        event: bool,
    ) -> Result<Self, Error> {
        let frame = SourceFrame::new(cfg.frame_len, src, cfg.dst_mac)?;
        let batch = batch.max(1);
        // Two batches, and in event mode at least twice what accrues in the
        // longest sleep.
        let sleep = event.then_some(MAX_BUCKET_SLEEP);
        let bucket = cfg
            .rate_pps
            .map(|r| TokenBucket::for_batches(r, batch, sleep))
            .transpose()?;
        Ok(Self {
            frame,
            seq: 0,
            bucket,
            batch,
            ring_full: 0,
            not_sent: 0,
            last: Outcome::Sent,
        })
    }

    /// Frames granted now: a whole batch, or none when rate limited and not due.
    /// The bucket starts empty at the first call.
    #[inline]
    fn grant(&mut self, now: impl FnOnce() -> Instant) -> usize {
        let Some(b) = self.bucket.as_mut() else {
            return self.batch;
        };
        // Tokens beyond the bucket are not counted (see the module docs).
        let _spilled = b.refill(now());
        b.take_exact(self.batch)
    }

    /// Restarts the bucket (nothing accrues while the driver is away).
    pub(crate) fn pause(&mut self) {
        if let Some(b) = self.bucket.as_mut() {
            b.reset();
        }
    }

    /// Sends one granted batch into the driver's RX queue and flushes it once.
    /// Returns the frames sent.
    #[inline]
    pub(crate) fn round(&mut self, h: &mut DeviceHandle) -> usize {
        self.round_at(h, Instant::now)
    }

    fn round_at(&mut self, h: &mut DeviceHandle, now: impl FnOnce() -> Instant) -> usize {
        let grant = self.grant(now);
        if grant == 0 {
            self.last = Outcome::NotDue;
            return 0;
        }
        let limited = self.bucket.is_some();
        let mut sent = 0;
        self.last = Outcome::Sent;
        for i in 0..grant {
            let frame = self.frame.with_seq_mut(self.seq);
            match h.push_rx(&Segments::single(vm_memory::VolatileSlice::from(frame))) {
                Ok(()) => {
                    self.seq += 1;
                    sent += 1;
                }
                Err(DropReason::NoBuffers) => {
                    // Nothing consumed: the same frame goes first next time.
                    self.ring_full += 1;
                    if limited {
                        self.not_sent += (grant - i) as u64;
                    }
                    self.last = Outcome::RingFull;
                    break;
                }
                Err(_) => {
                    // Counted by the handle (tx_drops); the frame is lost.
                    self.seq += 1;
                    if limited {
                        self.not_sent += (grant - i - 1) as u64;
                    }
                    self.last = Outcome::Refused;
                    break;
                }
            }
        }
        if self.last != Outcome::RingFull || sent > 0 {
            h.flush_rx();
        }
        sent
    }

    /// How long an idle event-mode loop may sleep: `None` when only the driver's
    /// kicks or a control change can bring work (nothing to send).
    pub(crate) fn sleep_hint(&self) -> Option<Duration> {
        match (self.last, &self.bucket) {
            (_, Some(b)) if b.rate() == 0 => None,
            (Outcome::NotDue, Some(b)) => b.until(self.batch).map(|d| d.min(MAX_BUCKET_SLEEP)),
            _ => Some(RING_FULL_SLEEP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let mk = |len| SourceFrame::new(len, SOURCE_MAC, MacAddr::BROADCAST);
        assert_eq!(mk(59).unwrap_err(), Error::InvalidFrameLen(59));
        assert_eq!(mk(1515).unwrap_err(), Error::InvalidFrameLen(1515));
        for len in [60, 64, 1500, 1514] {
            let mut f = mk(len).unwrap();
            assert_eq!(f.len(), len);
            let bytes = f.with_seq(0x0102_0304_0506_0708).to_vec();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes[0..6], MacAddr::BROADCAST.0);
            assert_eq!(bytes[6..12], SOURCE_MAC.0);
            assert_eq!(bytes[12..14], [0x88, 0xb6]);
            assert_eq!(SourceFrame::parse_seq(&bytes), Some(0x0102_0304_0506_0708));
            assert!(bytes[SOURCE_HDR_LEN..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == i as u8));
            // Only the sequence number changes.
            let next = f.with_seq(9).to_vec();
            assert_eq!(next[..14], bytes[..14]);
            assert_eq!(next[SOURCE_HDR_LEN..], bytes[SOURCE_HDR_LEN..]);
            assert_eq!(SourceFrame::parse_seq(&next), Some(9));
        }
        let mut f = mk(60).unwrap();
        let mut other = f.with_seq(1).to_vec();
        assert_eq!(SourceFrame::parse_seq(&other[..SOURCE_HDR_LEN - 1]), None);
        other[13] = 0xb5;
        assert_eq!(SourceFrame::parse_seq(&other), None);
    }

    fn source(rate: Option<u64>, event: bool) -> Source {
        let cfg = SourceConfig {
            rate_pps: rate,
            ..SourceConfig::default()
        };
        Source::new(&cfg, SOURCE_MAC, 8, event).unwrap()
    }

    #[test]
    fn bucket_grants_whole_batches_at_the_rate() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        // 1000 pps, batches of 8: a batch every 8 ms, the bucket starts empty.
        let mut s = source(Some(1000), false);
        assert_eq!(s.grant(|| at(0)), 0);
        assert_eq!(s.grant(|| at(7_000)), 0);
        assert_eq!(s.grant(|| at(8_000)), 8);
        assert_eq!(s.grant(|| at(8_001)), 0);
        // A long pause: at most the bucket (two batches), then the rate again.
        assert_eq!(s.grant(|| at(1_000_000)), 8);
        assert_eq!(s.grant(|| at(1_000_000)), 8);
        assert_eq!(s.grant(|| at(1_000_000)), 0);
        // Over one simulated second, about 1000 frames.
        let mut total = 0;
        for ms in 0..1000u64 {
            total += s.grant(|| at(1_000_000 + ms * 1000 + 1000));
        }
        assert!((992..=1000).contains(&total), "{total}");
        // Unlimited: a batch every time; rate 0: never.
        assert_eq!(source(None, false).grant(|| unreachable!()), 8);
        let mut zero = source(Some(0), true);
        assert_eq!(zero.grant(|| at(0)), 0);
        assert_eq!(zero.grant(|| at(10_000_000)), 0);
        assert_eq!(zero.sleep_hint(), None);
    }

    #[test]
    fn event_mode_bucket_covers_a_sleep() {
        // 1 Mpps: a batch of 8 is due every 8 us, far below epoll's millisecond.
        let s = source(Some(1_000_000), true);
        let capacity = s.bucket.as_ref().unwrap().capacity() as f64;
        assert!(capacity >= 2.0 * 1e6 * MAX_BUCKET_SLEEP.as_secs_f64());
        // Busy mode: two batches.
        let busy = source(Some(1_000_000), false);
        assert_eq!(busy.bucket.as_ref().unwrap().capacity(), 16);
        let mut s = source(Some(1000), true);
        s.last = Outcome::NotDue;
        assert_eq!(s.sleep_hint(), Some(Duration::from_millis(8)));
        s.last = Outcome::RingFull;
        assert_eq!(s.sleep_hint(), Some(RING_FULL_SLEEP));
        s.pause();
        assert_eq!(s.bucket.as_ref().unwrap().tokens(), 0.0);
    }
}
