//! Packet capture of one port (`twin ctl capture PORT`), written as pcap while
//! traffic flows, at a bounded cost to the data path.
//!
//! A capture is a [`Tap`] on the port's entry in the data path and a [`Sink`]
//! on a writer thread, joined by two channels over [`SLOTS`] buffers allocated
//! when the capture starts: the data path takes a free buffer, copies the frame
//! in (at most [`SNAPLEN`] bytes; the record keeps the frame's real length) and
//! passes it on; the writer writes the record and gives the buffer back. When
//! no buffer is free (the writer, or whoever reads the capture, is slower than
//! the port) the frame is left out of the capture and counted as missed: the
//! data path never waits and never drops a frame for a capture. Received frames
//! (`rx`: what the port's peer sent the switch) are taken before the switch
//! looks at them, sent ones (`tx`) as delivered.
//!
//! The output is classic pcap with nanosecond timestamps (magic `0xa1b23c4d`,
//! link type Ethernet), which `tcpdump -r` and Wireshark read. The capture ends
//! when it has its count of frames, or when its reader goes away.
//!
//! Limits: one capture per port at a time; frames longer than [`SNAPLEN`] are
//! cut (marked so by their record's lengths).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use twin_wire::Segments;

/// Buffers of one capture: frames that can wait for the writer.
pub const SLOTS: usize = 512;
/// Bytes of a frame kept.
pub const SNAPLEN: usize = 2048;

/// Which frames of a port a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// What the port's peer sends the switch.
    Rx,
    /// What the switch delivers to the port.
    Tx,
    /// Both.
    #[default]
    Both,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rx" => Ok(Direction::Rx),
            "tx" => Ok(Direction::Tx),
            "both" => Ok(Direction::Both),
            _ => Err(format!("unknown direction {s:?} (known: rx, tx, both)")),
        }
    }
}

/// A captured frame on its way to the writer.
#[derive(Debug)]
struct Record {
    buf: Vec<u8>,
    orig_len: u32,
    /// Nanoseconds since the Unix epoch.
    at_ns: u128,
}

/// The data path's end of a capture.
#[derive(Debug)]
pub struct Tap {
    direction: Direction,
    /// Frames still to take (`None`: until the reader goes away).
    remaining: Option<u64>,
    free: Receiver<Vec<u8>>,
    filled: SyncSender<Record>,
    /// Frames taken.
    pub captured: u64,
    /// Frames left out for want of a free buffer.
    pub missed: u64,
    closed: bool,
    /// Set when the writer's end is gone.
    reader_gone: Arc<AtomicBool>,
}

/// The writer's end of a capture.
#[derive(Debug)]
pub struct Sink {
    filled: Receiver<Record>,
    free: SyncSender<Vec<u8>>,
    reader_gone: Arc<AtomicBool>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Seen by the data path even when no frame comes to find the channel
        // closed.
        self.reader_gone.store(true, Ordering::Relaxed);
    }
}

/// A capture of `direction` frames, `count` of them or until the reader goes
/// away: its two ends, with [`SLOTS`] buffers of [`SNAPLEN`] bytes.
pub fn capture(direction: Direction, count: Option<u64>) -> (Tap, Sink) {
    let (free_tx, free_rx) = mpsc::sync_channel(SLOTS);
    let (filled_tx, filled_rx) = mpsc::sync_channel(SLOTS);
    for _ in 0..SLOTS {
        // Cannot fail: the channel holds SLOTS and its receiver is here.
        let _ = free_tx.try_send(Vec::with_capacity(SNAPLEN));
    }
    let reader_gone = Arc::new(AtomicBool::new(false));
    (
        Tap {
            direction,
            remaining: count,
            free: free_rx,
            filled: filled_tx,
            captured: 0,
            missed: 0,
            closed: false,
            reader_gone: Arc::clone(&reader_gone),
        },
        Sink {
            filled: filled_rx,
            free: free_tx,
            reader_gone,
        },
    )
}

impl Tap {
    /// Takes `frame`, going `dir`, into the capture if it wants it and a buffer
    /// is free.
    #[inline]
    pub fn frame(&mut self, frame: &Segments<'_>, dir: Direction) {
        if self.closed || (self.direction != Direction::Both && self.direction != dir) {
            return;
        }
        let mut buf = match self.free.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) => {
                self.missed += 1;
                return;
            }
            Err(TryRecvError::Disconnected) => {
                self.closed = true;
                return;
            }
        };
        let keep = frame.len().min(SNAPLEN);
        // The buffer's capacity is SNAPLEN: no allocation.
        buf.resize(keep, 0);
        let got = frame.read_prefix(&mut buf);
        buf.truncate(got);
        let at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let record = Record {
            buf,
            orig_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            at_ns,
        };
        match self.filled.try_send(record) {
            Ok(()) => {
                self.captured += 1;
                if let Some(r) = &mut self.remaining {
                    *r -= 1;
                    if *r == 0 {
                        self.closed = true;
                    }
                }
            }
            // Full cannot happen (there are as many slots as buffers).
            Err(TrySendError::Full(_)) => self.missed += 1,
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
    }

    /// Whether the capture is over (its count taken, or its reader gone): the
    /// data path then drops the tap, which ends the writer.
    pub fn finished(&self) -> bool {
        self.closed || self.reader_gone.load(Ordering::Relaxed)
    }
}

/// pcap's file header: magic for nanosecond timestamps, version 2.4, no zone,
/// snap length, link type 1 (Ethernet).
fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

impl Sink {
    /// Writes the capture to `out` as pcap until the data path ends it (its
    /// count taken) or `out` fails (the reader went away). Returns the frames
    /// written.
    pub fn write_to(&self, mut out: impl Write) -> std::io::Result<u64> {
        out.write_all(&file_header())?;
        let mut written = 0;
        loop {
            // What waits is written out before the writer sleeps, so a reader
            // sees a slow trickle of frames as they come.
            let r = match self.filled.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => {
                    out.flush()?;
                    match self.filled.recv() {
                        Ok(r) => r,
                        // The tap was dropped (after the last record it sent).
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&((r.at_ns / 1_000_000_000) as u32).to_le_bytes());
            h[4..8].copy_from_slice(&((r.at_ns % 1_000_000_000) as u32).to_le_bytes());
            h[8..12].copy_from_slice(&(r.buf.len() as u32).to_le_bytes());
            h[12..16].copy_from_slice(&r.orig_len.to_le_bytes());
            out.write_all(&h)?;
            out.write_all(&r.buf)?;
            written += 1;
            // The tap may be gone already: then the buffer just goes.
            let _ = self.free.try_send(r.buf);
        }
        out.flush()?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::VolatileSlice;

    fn frame_of(bytes: &mut [u8]) -> Segments<'_> {
        Segments::single(VolatileSlice::from(bytes))
    }

    #[test]
    fn a_capture_writes_pcap_of_the_frames_it_wants() {
        let (mut tap, sink) = capture(Direction::Tx, Some(2));
        let mut a = [0xaau8; 60];
        let mut b = vec![0xbbu8; SNAPLEN + 100];
        tap.frame(&frame_of(&mut a), Direction::Rx); // not wanted
        tap.frame(&frame_of(&mut a), Direction::Tx);
        tap.frame(&frame_of(&mut b), Direction::Tx);
        assert!(tap.finished(), "its count taken");
        tap.frame(&frame_of(&mut a), Direction::Tx); // after the end
        assert_eq!((tap.captured, tap.missed), (2, 0));
        drop(tap);
        let mut out = Vec::new();
        assert_eq!(sink.write_to(&mut out).unwrap(), 2);
        assert_eq!(&out[0..4], &0xa1b2_3c4du32.to_le_bytes());
        let rec = |at: usize| {
            let h = &out[at..at + 16];
            let incl = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
            let orig = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
            (incl, orig, at + 16 + incl)
        };
        let (incl, orig, next) = rec(24);
        assert_eq!((incl, orig), (60, 60));
        assert!(out[24 + 16..next].iter().all(|x| *x == 0xaa));
        let (incl, orig, end) = rec(next);
        assert_eq!(
            (incl, orig),
            (SNAPLEN, SNAPLEN + 100),
            "cut, its length kept"
        );
        assert_eq!(end, out.len());
    }

    #[test]
    fn a_slow_reader_costs_missed_frames_not_waiting() {
        let (mut tap, sink) = capture(Direction::Both, None);
        let mut a = [1u8; 64];
        for _ in 0..SLOTS + 10 {
            tap.frame(&frame_of(&mut a), Direction::Rx);
        }
        assert_eq!((tap.captured, tap.missed), (SLOTS as u64, 10));
        // The reader gone: the tap is finished, frame or not.
        assert!(!tap.finished());
        drop(sink);
        assert!(tap.finished());
    }
}
