//! The state the control thread publishes to the data path.
//!
//! The control thread owns the vhost-user conversation and edits a [`Published`]
//! snapshot under a mutex, bumping an atomic generation counter each time. The
//! data-path thread compares the generation once per batch (one relaxed-cost
//! acquire load) and re-snapshots only when it changed, then acknowledges the
//! generation it adopted. Stopping a ring (`GET_VRING_BASE`) uses that
//! acknowledgement as a handshake: the control thread marks the ring stopped,
//! waits (bounded) until the data path has acknowledged the new generation, and
//! then reads the last avail index the data path stored for that ring.
//!
//! Limits: one data-path thread per device; the wait is bounded
//! ([`STOP_TIMEOUT`]); if it expires, the control thread uses the index the data
//! path stored at the end of its last batch and logs a warning.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::fault_fence::{ClientMemory, FaultFlag};
use twin_wire::MacAddr;

/// Queue index of the receive queue (device -> client).
pub const RX_QUEUE: usize = 0;
/// Queue index of the transmit queue (client -> device).
pub const TX_QUEUE: usize = 1;
/// Number of queues (one pair).
pub const NUM_QUEUES: usize = 2;
/// Longest wait for the data path to acknowledge a ring stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wake-up eventfd could not be created.
    #[error("cannot create the wake-up eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// One queue as published: everything the data path needs to run it.
#[derive(Debug, Clone, Default)]
pub struct QueueConf {
    /// Queue size (power of two), 0 when not set.
    pub size: u16,
    /// Guest-physical address of the descriptor table (valid when `started`).
    pub desc: u64,
    /// Guest-physical address of the avail ring.
    pub avail: u64,
    /// Guest-physical address of the used ring.
    pub used: u64,
    /// Index to start from when `base_seq` changed.
    pub base: u16,
    /// Bumped whenever the data path must (re)start from `base`.
    pub base_seq: u64,
    /// The client's kick eventfd (it writes it when it adds buffers).
    pub kick: Option<Arc<File>>,
    /// The client's call eventfd (we write it to interrupt the client).
    pub call: Option<Arc<File>>,
    /// Kick received, addresses translated, not stopped.
    pub started: bool,
    /// Enabled (`SET_VRING_ENABLE`, or implicitly without protocol features).
    pub enabled: bool,
}

impl QueueConf {
    /// Whether the data path may run this queue.
    pub fn runnable(&self) -> bool {
        self.started && self.enabled && self.size != 0
    }
}

/// The snapshot the data path copies.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Sequence number of the client connection, 0 before the first one.
    pub connection: u64,
    /// A client is connected to the socket.
    pub connected: bool,
    /// Negotiated virtio features.
    pub features: u64,
    /// The client's memory, when a table was received.
    pub mem: Option<Arc<ClientMemory>>,
    /// Raised by the SIGBUS handler when a fenced mapping of this connection's
    /// memory faulted ([`crate::fault_fence`]); one per connection.
    pub fault: Arc<FaultFlag>,
    /// The two queues.
    pub queues: [QueueConf; NUM_QUEUES],
}

/// Shared between the control thread and the data path of one device.
#[derive(Debug)]
pub struct Shared {
    generation: AtomicU64,
    acked: AtomicU64,
    state: Mutex<Published>,
    /// Last avail index of each queue as stored by the data path (u16 in a u32).
    pub last_avail: [AtomicU32; NUM_QUEUES],
    /// The data-path handle still exists (otherwise nobody will acknowledge).
    pub handle_alive: AtomicBool,
    /// Set by the data path when a client broke a ring: the control thread drops
    /// the connection so the client resets.
    pub kick_out: AtomicBool,
    /// Written by the control thread after each publish, so an event-driven data
    /// path that sleeps in epoll wakes up and refreshes.
    pub wake: EventFd,
    /// vhost-user requests refused (each one also dropped its client), counted by
    /// the control thread before it publishes the disconnection.
    pub refused_requests: AtomicU64,
    /// The MAC the config space offers ([`Shared::offered_mac`]), set by the
    /// owner of the device at any time.
    offered_mac: AtomicU64,
}

/// [`Shared::offered_mac`]'s encoding: the address in the low 48 bits, this bit
/// set when there is one.
const MAC_PRESENT: u64 = 1 << 48;

impl Shared {
    /// A fresh shared state: no client.
    pub fn new() -> Result<Self, Error> {
        Ok(Self {
            generation: AtomicU64::new(1),
            acked: AtomicU64::new(0),
            state: Mutex::new(Published::default()),
            last_avail: [AtomicU32::new(0), AtomicU32::new(0)],
            handle_alive: AtomicBool::new(true),
            kick_out: AtomicBool::new(false),
            wake: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
            refused_requests: AtomicU64::new(0),
            offered_mac: AtomicU64::new(0),
        })
    }

    /// The MAC address the config space reports (GET_CONFIG), if any.
    pub fn offered_mac(&self) -> Option<MacAddr> {
        let v = self.offered_mac.load(Ordering::Relaxed);
        (v & MAC_PRESENT != 0).then(|| {
            let b = v.to_be_bytes();
            MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    /// Sets what [`Shared::offered_mac`] reports: to a driver that reads the
    /// config space from now on (one that read it before keeps what it read).
    pub fn set_offered_mac(&self, mac: Option<MacAddr>) {
        let v = mac.map_or(0, |m| {
            let mut b = [0u8; 8];
            b[2..].copy_from_slice(&m.0);
            u64::from_be_bytes(b) | MAC_PRESENT
        });
        self.offered_mac.store(v, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        // A panic while holding the lock cannot leave `Published` half-updated in a
        // way that matters (every field is replaced whole), so poison is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the snapshot and bumps the generation; returns the new generation.
    pub fn publish(&self, p: Published) -> u64 {
        let gen = {
            let mut g = self.lock();
            *g = p;
            self.generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        // Best effort: a full eventfd counter still wakes the reader.
        let _ = self.wake.write(1);
        gen
    }

    /// The current generation (data path, once per batch).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A copy of the snapshot with its generation (data path, on change only).
    pub fn snapshot(&self) -> (u64, Published) {
        let g = self.lock();
        (self.generation.load(Ordering::Acquire), g.clone())
    }

    /// The data path adopted generation `gen` (after storing its indices).
    pub fn ack(&self, gen: u64) {
        self.acked.store(gen, Ordering::Release);
    }

    /// Waits until the data path acknowledged `gen` (or it is gone). Returns false
    /// on timeout.
    pub fn wait_ack(&self, gen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if self.acked.load(Ordering::Acquire) >= gen
                || !self.handle_alive.load(Ordering::Acquire)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            spins += 1;
            if spins < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Stores a queue's last avail index (data path, end of each batch).
    #[inline]
    pub fn store_last_avail(&self, q: usize, idx: u16) {
        if let Some(a) = self.last_avail.get(q) {
            a.store(u32::from(idx), Ordering::Release);
        }
    }

    /// Reads a queue's last avail index (control thread, after the handshake).
    pub fn load_last_avail(&self, q: usize) -> u16 {
        self.last_avail
            .get(q)
            .map(|a| a.load(Ordering::Acquire) as u16)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_runs_only_when_started_enabled_and_sized() {
        let q = QueueConf {
            size: 256,
            started: true,
            enabled: true,
            ..Default::default()
        };
        assert!(q.runnable());
        for q in [
            QueueConf {
                size: 0,
                ..q.clone()
            },
            QueueConf {
                started: false,
                ..q.clone()
            },
            QueueConf {
                enabled: false,
                ..q.clone()
            },
        ] {
            assert!(!q.runnable(), "{q:?}");
        }
    }

    #[test]
    fn publishing_bumps_the_generation_and_wakes_the_data_path() {
        let s = Shared::new().unwrap();
        assert_eq!(s.generation(), 1);
        assert!(s.wake.read().is_err(), "nothing published yet");
        let gen = s.publish(Published {
            connection: 9,
            ..Default::default()
        });
        assert_eq!(gen, 2);
        assert_eq!(s.generation(), 2);
        let (g, p) = s.snapshot();
        assert_eq!((g, p.connection), (2, 9));
        assert_eq!(s.wake.read().unwrap(), 1);
        assert_eq!(s.publish(Published::default()), 3);
    }

    #[test]
    fn wait_ack_returns_on_the_ack_on_a_gone_handle_or_at_the_timeout() {
        let s = Shared::new().unwrap();
        let gen = s.publish(Published::default());
        let started = Instant::now();
        assert!(!s.wait_ack(gen, Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        s.ack(gen - 1);
        assert!(!s.wait_ack(gen, Duration::ZERO));
        s.ack(gen);
        assert!(s.wait_ack(gen, Duration::ZERO));
        assert!(s.wait_ack(gen - 1, Duration::ZERO));
        s.handle_alive.store(false, Ordering::Release);
        assert!(s.wait_ack(gen + 1, Duration::ZERO));
    }

    #[test]
    fn wait_ack_sees_an_ack_that_comes_later() {
        let s = Arc::new(Shared::new().unwrap());
        let gen = s.publish(Published::default());
        let s2 = s.clone();
        let acker = std::thread::spawn(move || {
            // Acknowledge only once the waiter has been waiting for a while
            // (past its spinning phase).
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(50) {
                std::thread::yield_now();
            }
            s2.ack(gen);
        });
        assert!(s.wait_ack(gen, Duration::from_secs(10)));
        acker.join().unwrap();
    }

    #[test]
    fn last_avail_indices_are_stored_per_queue() {
        let s = Shared::new().unwrap();
        s.store_last_avail(RX_QUEUE, 5);
        s.store_last_avail(TX_QUEUE, 0xfffe);
        s.store_last_avail(NUM_QUEUES, 7);
        assert_eq!(s.load_last_avail(RX_QUEUE), 5);
        assert_eq!(s.load_last_avail(TX_QUEUE), 0xfffe);
        assert_eq!(s.load_last_avail(NUM_QUEUES), 0);
    }
}
