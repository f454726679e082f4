//! The data-path half of a device: [`DeviceHandle`], owned by one thread.
//!
//! Per batch the owner calls [`DeviceHandle::refresh`] (one atomic load when
//! nothing changed), then [`DeviceHandle::pop_tx`] to take frames the client
//! transmitted and [`DeviceHandle::push_rx`] + [`DeviceHandle::flush_rx`] to
//! deliver frames to it. Ring addresses are validated once per snapshot
//! ([`crate::ring_access`]); nothing is allocated per packet.
//!
//! Everything in the rings is hostile input: bad chains are dropped and counted
//! ([`DropReason`]), the used entry is still returned so the client can reclaim
//! the buffer; an avail index that runs more than the queue size ahead marks the
//! ring broken, stops it and asks the control thread to drop the connection (the
//! client must reconnect / reset to get a working port again). Log lines a client
//! can trigger are rate limited.
//!
//! Memory faults: a client that truncates a file of its memory makes our next
//! access to it fault; [`crate::fault_fence`] contains the fault (the memory then
//! reads as zeros) and raises the connection's [`FaultFlag`]. The handle reads
//! that flag (one relaxed load) at the start and end of every TX batch, in
//! [`DeviceHandle::flush_rx`] (once per RX batch) and on every refresh; once it is
//! set the port is *fenced*: its rings are dropped, `memory_faults` is counted, a
//! rate-limited warning says why, and the control thread disconnects the client.
//! Frames already copied into the zeroed memory in that batch are lost. The next
//! connection gets a fresh flag and a working port.
//!
//! Notification suppression: the TX queue is in busy-poll mode (no kicks) unless
//! [`DeviceHandle::set_tx_notify`] turned kicks on; the RX queue never asks for
//! kicks (a frame without a buffer is dropped, as a NIC does). Interrupts to the
//! client honour `used_event` (EVENT_IDX) or `VRING_AVAIL_F_NO_INTERRUPT`, after a
//! full fence, once per batch.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use twin_wire::ether::{ETH_HLEN, MAX_FRAME};
use twin_wire::features::{has, NET_F_MRG_RXBUF, RING_F_EVENT_IDX};
use twin_wire::{net_hdr, Segments, MAX_SEGMENTS};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::fault_fence::{ClientMemory, FaultFlag};
use crate::ratelimit::RateLimiter;
use crate::ring_access::{
    full_fence, RawRing, AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
    USED_F_NO_NOTIFY,
};
use crate::shared::{Published, Shared, RX_QUEUE, TX_QUEUE};
use crate::stats::{DropCounts, DropReason, PortStats};

/// Errors of this module (the data path itself reports drops, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an eventfd failed.
    #[error("eventfd read failed: {0}")]
    EventFd(#[source] std::io::Error),
}

/// A change of the port seen by [`DeviceHandle::refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortEvent {
    /// Both rings are running: the port is ready.
    Connected {
        /// Negotiated virtio features.
        features: u64,
        /// Connection sequence number (changes on every reconnect).
        connection: u64,
    },
    /// The client is still connected but stopped its rings (driver reset).
    Stopped,
    /// The client went away (socket closed or kicked out for breaking a ring).
    Disconnected,
}

const LOG_PER_SEC: u32 = 5;

#[derive(Debug, Default)]
struct Queue {
    ring: Option<RawRing>,
    last_avail: u16,
    next_used: u16,
    used_flushed: u16,
    base_seq: u64,
    broken: bool,
    kick: Option<Arc<File>>,
    call: Option<Arc<File>>,
}

/// The data-path handle of one device. `Send`; use it from one thread.
#[derive(Debug)]
pub struct DeviceHandle {
    shared: Arc<Shared>,
    name: Arc<str>,
    gen: u64,
    connection: u64,
    connected: bool,
    ready: bool,
    features: u64,
    hdr_len: usize,
    event_idx: bool,
    mrg: bool,
    tx_notify: bool,
    rx: Queue,
    tx: Queue,
    stats: PortStats,
    lim_tx: RateLimiter<{ DropReason::COUNT }>,
    lim_rx: RateLimiter<{ DropReason::COUNT }>,
    /// The current connection's fault flag.
    fault: Arc<FaultFlag>,
    /// The current connection's memory faulted: no rings until it is replaced.
    fenced: bool,
    lim_fault: RateLimiter<1>,
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.shared
            .handle_alive
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

fn log_drop(
    lim: &mut RateLimiter<{ DropReason::COUNT }>,
    port: &str,
    dir: &'static str,
    r: DropReason,
) {
    if let Some(suppressed) = lim.check(r.index()) {
        match r {
            DropReason::NotReady | DropReason::NoBuffers | DropReason::BufferTooSmall => {
                twin_log::debug_limited!(
                    port,
                    dir,
                    reason = r.as_str(),
                    suppressed,
                    "frame dropped"
                )
            }
            _ => {
                twin_log::warn_limited!(port, dir, reason = r.as_str(), suppressed, "frame dropped")
            }
        }
    }
}

/// Most descriptors one chain may have: every segment a frame may span, and as many
/// empty descriptors again. The bound is on descriptors, not bytes: zero-length
/// descriptors add no segment, and a chain of them up to the ring's size (32768)
/// once cost the data path ~4000 times a good chain.
pub const MAX_CHAIN_DESCRIPTORS: u32 = 2 * MAX_SEGMENTS as u32;

/// Walks one descriptor chain into `out`. `device_writes` selects RX (writable
/// buffers) or TX (readable buffers).
#[inline]
fn walk<'m>(
    ring: &RawRing,
    mem: &'m ClientMemory,
    head: u16,
    device_writes: bool,
    out: &mut Segments<'m>,
) -> Result<(), DropReason> {
    let size = ring.size();
    if head >= size {
        return Err(DropReason::BadIndex);
    }
    let mut i = head;
    let mut count: u32 = 0;
    loop {
        count += 1;
        if count > MAX_CHAIN_DESCRIPTORS.min(u32::from(size)) {
            return Err(DropReason::ChainLoop);
        }
        let d = ring.desc(i);
        if d.flags & DESC_F_INDIRECT != 0 {
            return Err(DropReason::Indirect);
        }
        if (d.flags & DESC_F_WRITE != 0) != device_writes {
            return Err(DropReason::WrongDirection);
        }
        if d.len != 0 {
            let s = mem
                .get_slice(GuestAddress(d.addr), d.len as usize)
                .map_err(|_| DropReason::OutOfMemory)?;
            out.push(s).map_err(|_| DropReason::TooManySegments)?;
        }
        if d.flags & DESC_F_NEXT == 0 {
            return Ok(());
        }
        if d.next >= size {
            return Err(DropReason::BadIndex);
        }
        i = d.next;
    }
}

/// Publishes the used index once and interrupts the client if it wants it.
#[inline]
fn flush_queue(q: &mut Queue, event_idx: bool, calls: &mut u64) {
    let Some(ring) = q.ring.as_ref() else {
        return;
    };
    let new = q.next_used;
    let old = q.used_flushed;
    if new == old {
        return;
    }
    ring.set_used_idx(new);
    q.used_flushed = new;
    full_fence();
    let notify = if event_idx {
        let ev = ring.used_event();
        new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        ring.avail_flags() & AVAIL_F_NO_INTERRUPT == 0
    };
    if notify {
        if let Some(c) = &q.call {
            if (&**c).write(&1u64.to_ne_bytes()).is_ok() {
                *calls += 1;
            }
        }
    }
}

/// Asks for kicks (`on`) or suppresses them on a ring we consume.
#[inline]
fn set_kicks(ring: &RawRing, on: bool, event_idx: bool, last_avail: u16) {
    if event_idx {
        // With EVENT_IDX the client kicks when it moves avail idx past avail_event.
        // last_avail - 1 is behind anything it can still publish: no kicks.
        ring.set_avail_event(if on {
            last_avail
        } else {
            last_avail.wrapping_sub(1)
        });
    } else {
        ring.set_used_flags(if on { 0 } else { USED_F_NO_NOTIFY });
    }
}

/// How a batch of TX chains ended.
enum Batch {
    Done(usize),
    Broken,
}

/// Pops up to `max` chains from a queue the client fills with frames for us.
#[allow(clippy::too_many_arguments)] // disjoint borrows of the handle's fields
#[inline]
fn pop_batch(
    q: &mut Queue,
    max: usize,
    hdr_len: usize,
    drops: &mut DropCounts,
    lim: &mut RateLimiter<{ DropReason::COUNT }>,
    port: &str,
    packets: &mut u64,
    bytes: &mut u64,
    mut f: impl FnMut(&Segments<'_>),
) -> Batch {
    let Queue {
        ring,
        last_avail,
        next_used,
        ..
    } = q;
    let Some(ring) = ring.as_ref() else {
        return Batch::Done(0);
    };
    let avail = ring.avail_idx();
    let pending = avail.wrapping_sub(*last_avail);
    if pending == 0 {
        return Batch::Done(0);
    }
    if pending > ring.size() {
        return Batch::Broken;
    }
    let n = usize::from(pending).min(max);
    let mem = ring.mem().as_ref();
    for _ in 0..n {
        let head = ring.avail_entry(*last_avail);
        *last_avail = last_avail.wrapping_add(1);
        let mut segs = Segments::new();
        let res = walk(ring, mem, head, false, &mut segs).and_then(|()| {
            let len = segs.len();
            if len < hdr_len + ETH_HLEN {
                Err(DropReason::TooShort)
            } else if len > hdr_len + MAX_FRAME {
                Err(DropReason::TooLong)
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                segs.skip(hdr_len);
                *packets += 1;
                *bytes += segs.len() as u64;
                f(&segs);
            }
            Err(r) => {
                drops.add(r);
                log_drop(lim, port, "from_client", r);
            }
        }
        ring.set_used_elem(*next_used, u32::from(head), 0);
        *next_used = next_used.wrapping_add(1);
    }
    Batch::Done(n)
}

/// Copies one frame into the client's RX ring (not yet published).
#[inline]
fn push_frame(
    q: &mut Queue,
    frame: &Segments<'_>,
    hdr_len: usize,
    mrg: bool,
    edit: impl FnOnce(&mut [u8; ETH_HLEN]),
) -> Result<(), DropReason> {
    let Queue {
        ring,
        last_avail,
        next_used,
        ..
    } = q;
    let Some(ring) = ring.as_ref() else {
        return Err(DropReason::NotReady);
    };
    let len = frame.len();
    if len < ETH_HLEN {
        return Err(DropReason::TooShort);
    }
    if len > MAX_FRAME {
        return Err(DropReason::TooLong);
    }
    let need = hdr_len + len;
    let avail = ring.avail_idx();
    let pending = avail.wrapping_sub(*last_avail);
    if pending > ring.size() {
        return Err(DropReason::RingBroken);
    }
    let mem = ring.mem().as_ref();
    let mut dst = Segments::new();
    let mut heads = [(0u16, 0u32); MAX_SEGMENTS];
    let mut nh = 0usize;
    let mut cursor = *last_avail;
    let mut cap = 0usize;
    while cap < need {
        if cursor == avail || nh == heads.len() {
            // Not consumed: the buffers stay for a later (smaller) frame.
            return Err(DropReason::NoBuffers);
        }
        let head = ring.avail_entry(cursor);
        cursor = cursor.wrapping_add(1);
        let before = dst.len();
        if let Err(r) = walk(ring, mem, head, true, &mut dst) {
            // A bad chain is consumed (returned with length 0) so the ring moves on;
            // so are the good buffers gathered before it for this frame.
            for &(h, _) in &heads[..nh] {
                ring.set_used_elem(*next_used, u32::from(h), 0);
                *next_used = next_used.wrapping_add(1);
            }
            ring.set_used_elem(*next_used, u32::from(head), 0);
            *next_used = next_used.wrapping_add(1);
            *last_avail = cursor;
            return Err(r);
        }
        let c = dst.len() - before;
        heads[nh] = (head, c as u32);
        nh += 1;
        cap += c;
        if !mrg {
            break;
        }
    }
    if cap < need {
        return Err(DropReason::BufferTooSmall);
    }
    let nb = if mrg { nh as u16 } else { 1 };
    let hdr = net_hdr::header_bytes(nb);
    dst.write_prefix(&hdr[..hdr_len]);
    let mut body = dst;
    body.skip(hdr_len);
    body.truncate(len);
    frame.copy_to(&body);
    let mut eth = [0u8; ETH_HLEN];
    if body.read_prefix(&mut eth) == ETH_HLEN {
        let orig = eth;
        edit(&mut eth);
        if eth != orig {
            body.write_prefix(&eth);
        }
    }
    let mut left = need;
    for &(h, c) in &heads[..nh] {
        let used = (c as usize).min(left);
        left -= used;
        ring.set_used_elem(*next_used, u32::from(h), used as u32);
        *next_used = next_used.wrapping_add(1);
    }
    *last_avail = cursor;
    Ok(())
}

impl DeviceHandle {
    pub(crate) fn new(shared: Arc<Shared>, name: Arc<str>) -> Self {
        Self {
            shared,
            name,
            gen: 0,
            connection: 0,
            connected: false,
            ready: false,
            features: 0,
            hdr_len: net_hdr::HDR_LEN_MODERN,
            event_idx: false,
            mrg: false,
            tx_notify: false,
            rx: Queue::default(),
            tx: Queue::default(),
            stats: PortStats::default(),
            lim_tx: RateLimiter::new(LOG_PER_SEC),
            lim_rx: RateLimiter::new(LOG_PER_SEC),
            fault: Arc::default(),
            fenced: false,
            lim_fault: RateLimiter::new(LOG_PER_SEC),
        }
    }

    /// Fences the port off if its memory faulted: one relaxed load when it did not.
    #[inline]
    fn check_fault(&mut self) {
        if !self.fenced && self.fault.is_set() {
            self.fence_off();
        }
    }

    /// The client's memory faulted (its file was truncated; the mapping now reads
    /// zeros): drop the rings, count it, and have the control thread disconnect
    /// the client.
    #[cold]
    fn fence_off(&mut self) {
        self.fenced = true;
        self.rx.ring = None;
        self.tx.ring = None;
        self.ready = false;
        self.stats.memory_faults += 1;
        if let Some(suppressed) = self.lim_fault.check(0) {
            twin_log::warn_limited!(
                port = &*self.name,
                reason = "memory_fault",
                suppressed,
                "client memory faulted (file truncated?): port fenced off, disconnecting the client"
            );
        }
        self.shared
            .kick_out
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the current connection was fenced off after a memory fault.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Whether the control thread published a change that [`DeviceHandle::refresh`]
    /// has not adopted yet (one atomic load). A data path that sees it drains the
    /// transmit ring first, so that a client which stops its rings (GET_VRING_BASE)
    /// after its last frame gets every frame it posted consumed, not stranded.
    #[inline]
    pub fn has_pending_change(&self) -> bool {
        self.shared.generation() != self.gen
    }

    /// Adopts the control thread's latest snapshot if it changed. Call once per
    /// batch; costs one atomic load when nothing changed.
    #[inline]
    pub fn refresh(&mut self) -> Option<PortEvent> {
        if self.shared.generation() == self.gen {
            return None;
        }
        self.refresh_slow()
    }

    #[cold]
    fn refresh_slow(&mut self) -> Option<PortEvent> {
        // Publish what we completed on the old rings before leaving them.
        self.flush_rx();
        flush_queue(&mut self.tx, self.event_idx, &mut self.stats.calls);
        self.store_indices();
        let (gen, p) = self.shared.snapshot();
        // Counted before the disconnection it caused was published.
        self.stats.refused_requests = self
            .shared
            .refused_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let was_ready = self.ready;
        let was_connected = self.connected;
        let old_conn = self.connection;
        self.features = p.features;
        self.hdr_len = net_hdr::hdr_len(p.features);
        self.event_idx = has(p.features, RING_F_EVENT_IDX);
        self.mrg = has(p.features, NET_F_MRG_RXBUF);
        self.connected = p.connected;
        self.connection = p.connection;
        if self.connection != old_conn {
            self.fenced = false;
        }
        self.fault = p.fault.clone();
        self.adopt(RX_QUEUE, &p);
        self.adopt(TX_QUEUE, &p);
        self.ready = p.connected && self.rx.ring.is_some() && self.tx.ring.is_some();
        // A fault before this refresh fences the rings just built.
        self.check_fault();
        self.gen = gen;
        self.store_indices();
        self.shared.ack(gen);
        let new_conn = self.connection != old_conn;
        if self.ready && (!was_ready || new_conn) {
            if was_ready {
                self.stats.disconnects += 1;
            }
            self.stats.connects += 1;
            Some(PortEvent::Connected {
                features: self.features,
                connection: self.connection,
            })
        } else if was_connected && (!p.connected || new_conn) {
            self.stats.disconnects += 1;
            Some(PortEvent::Disconnected)
        } else if !self.ready && was_ready {
            Some(PortEvent::Stopped)
        } else {
            None
        }
    }

    fn adopt(&mut self, qi: usize, p: &Published) {
        let conf = &p.queues[qi];
        let event_idx = self.event_idx;
        let notify = qi == TX_QUEUE && self.tx_notify;
        let name = self.name.clone();
        let fenced = self.fenced;
        let q = if qi == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        if conf.base_seq != q.base_seq {
            q.last_avail = conf.base;
            q.next_used = conf.base;
            q.used_flushed = conf.base;
            q.base_seq = conf.base_seq;
            q.broken = false;
        }
        q.kick = conf.kick.clone();
        q.call = conf.call.clone();
        q.ring = None;
        let Some(mem) = p.mem.as_ref() else {
            return;
        };
        if !p.connected || !conf.runnable() || q.broken || fenced {
            return;
        }
        match RawRing::new(mem.clone(), conf.size, conf.desc, conf.avail, conf.used) {
            Ok(ring) => {
                set_kicks(&ring, notify, event_idx, q.last_avail);
                q.ring = Some(ring);
            }
            Err(e) => {
                twin_log::warn_limited!(port = &*name, queue = qi, error = %e, "ring rejected");
                self.stats.ring_resets += 1;
                self.shared
                    .kick_out
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }

    fn store_indices(&self) {
        self.shared.store_last_avail(RX_QUEUE, self.rx.last_avail);
        self.shared.store_last_avail(TX_QUEUE, self.tx.last_avail);
    }

    fn break_queue(&mut self, qi: usize) {
        let q = if qi == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        q.ring = None;
        q.broken = true;
        self.ready = false;
        self.stats.ring_resets += 1;
        let lim = if qi == RX_QUEUE {
            &mut self.lim_rx
        } else {
            &mut self.lim_tx
        };
        if let Some(suppressed) = lim.check(DropReason::RingBroken.index()) {
            twin_log::warn_limited!(
                port = &*self.name,
                queue = qi,
                suppressed,
                "avail index ran more than the queue size ahead: ring broken, resetting the port"
            );
        }
        self.shared
            .kick_out
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Sets the MAC address the device's config space offers to a driver that
    /// reads it from now on (`None`: zeroes, the driver keeps its own).
    pub fn set_offered_mac(&self, mac: Option<twin_wire::MacAddr>) {
        self.shared.set_offered_mac(mac);
    }

    /// Whether both rings run (a client is attached and its driver is up).
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Negotiated virtio features of the current connection.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The generation of the snapshot in use; changes whenever fds or rings may
    /// have changed (re-register epoll fds when it does).
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// The device's socket path (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes up to `max` frames the client transmitted and calls `f` with each
    /// (the virtio-net header already skipped). Bad chains are dropped and counted.
    /// Used entries are published once, the client interrupted at most once.
    /// Returns the number of chains consumed (frames plus drops).
    pub fn pop_tx(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        self.check_fault();
        let res = pop_batch(
            &mut self.tx,
            max,
            self.hdr_len,
            &mut self.stats.from_client_drops,
            &mut self.lim_tx,
            &self.name,
            &mut self.stats.from_client_packets,
            &mut self.stats.from_client_bytes,
            f,
        );
        self.finish_tx(res)
    }

    fn finish_tx(&mut self, res: Batch) -> usize {
        // A fault during the batch: what it read was zeros; fence before
        // publishing anything.
        self.check_fault();
        if self.fenced {
            return match res {
                Batch::Done(n) => n,
                Batch::Broken => 0,
            };
        }
        match res {
            Batch::Done(0) => 0,
            Batch::Done(n) => {
                flush_queue(&mut self.tx, self.event_idx, &mut self.stats.calls);
                if let Some(r) = self.tx.ring.as_ref() {
                    if !self.tx_notify && self.event_idx {
                        set_kicks(r, false, true, self.tx.last_avail);
                    }
                }
                self.shared.store_last_avail(TX_QUEUE, self.tx.last_avail);
                n
            }
            Batch::Broken => {
                self.stats.from_client_drops.add(DropReason::RingBroken);
                self.break_queue(TX_QUEUE);
                0
            }
        }
    }

    /// Takes up to `max` frames from the client and sends each straight back into
    /// its RX queue after `edit` changed the Ethernet header of the copy (the
    /// reflecting NIC). Returns the number of TX chains consumed.
    pub fn reflect_tx(&mut self, max: usize, mut edit: impl FnMut(&mut [u8; ETH_HLEN])) -> usize {
        self.check_fault();
        let hdr_len = self.hdr_len;
        let mrg = self.mrg;
        let rx = &mut self.rx;
        let stats = &mut self.stats;
        let lim_rx = &mut self.lim_rx;
        let name: &str = &self.name;
        let mut rx_broken = false;
        let res = pop_batch(
            &mut self.tx,
            max,
            hdr_len,
            &mut stats.from_client_drops,
            &mut self.lim_tx,
            name,
            &mut stats.from_client_packets,
            &mut stats.from_client_bytes,
            |frame| match push_frame(rx, frame, hdr_len, mrg, &mut edit) {
                Ok(()) => {
                    stats.to_client_packets += 1;
                    stats.to_client_bytes += frame.len() as u64;
                }
                Err(r) => {
                    if r == DropReason::RingBroken {
                        rx_broken = true;
                    }
                    stats.to_client_drops.add(r);
                    log_drop(lim_rx, name, "to_client", r);
                }
            },
        );
        if rx_broken {
            self.break_queue(RX_QUEUE);
        }
        self.flush_rx();
        self.finish_tx(res)
    }

    /// Copies one frame into the client's RX queue: writes the virtio-net header
    /// (`num_buffers` included), spreading over several buffers with MRG_RXBUF.
    /// Not visible to the client before [`DeviceHandle::flush_rx`].
    #[inline]
    pub fn push_rx(&mut self, frame: &Segments<'_>) -> Result<(), DropReason> {
        self.push_rx_edit(frame, |_| {})
    }

    /// Like [`DeviceHandle::push_rx`], but `edit` may change the first 14 bytes
    /// (the Ethernet header) of the copy, for example to swap MAC addresses.
    pub fn push_rx_edit(
        &mut self,
        frame: &Segments<'_>,
        edit: impl FnOnce(&mut [u8; ETH_HLEN]),
    ) -> Result<(), DropReason> {
        match push_frame(&mut self.rx, frame, self.hdr_len, self.mrg, edit) {
            Ok(()) => {
                self.stats.to_client_packets += 1;
                self.stats.to_client_bytes += frame.len() as u64;
                Ok(())
            }
            Err(r) => {
                self.stats.to_client_drops.add(r);
                log_drop(&mut self.lim_rx, &self.name, "to_client", r);
                if r == DropReason::RingBroken {
                    self.break_queue(RX_QUEUE);
                }
                Err(r)
            }
        }
    }

    /// Publishes the RX used index once and interrupts the client if it wants it.
    pub fn flush_rx(&mut self) {
        self.check_fault();
        flush_queue(&mut self.rx, self.event_idx, &mut self.stats.calls);
        if let Some(r) = self.rx.ring.as_ref() {
            set_kicks(r, false, self.event_idx, self.rx.last_avail);
        }
        self.shared.store_last_avail(RX_QUEUE, self.rx.last_avail);
    }

    /// The client's TX kick eventfd, for an event-driven data path. Valid until the
    /// generation changes. It may be a blocking fd: read it only when epoll says so.
    pub fn tx_kick_fd(&self) -> Option<RawFd> {
        self.tx.kick.as_ref().map(|k| k.as_raw_fd())
    }

    /// Consumes a pending kick (call only after epoll reported the kick fd readable).
    pub fn drain_tx_kick(&self) -> Result<(), Error> {
        match self.tx.kick.as_ref() {
            Some(k) => {
                let mut b = [0u8; 8];
                (&**k).read(&mut b).map(|_| ()).map_err(Error::EventFd)
            }
            None => Ok(()),
        }
    }

    /// An fd that becomes readable whenever the control thread published a change
    /// (call [`DeviceHandle::refresh`] then). Non-blocking.
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Consumes pending wake-ups (non-blocking).
    pub fn drain_wake(&self) {
        let _ = self.shared.wake.read();
    }

    /// Turns client kicks on the TX queue on (event mode) or off (busy poll).
    /// Returns true when, after turning them on, frames are already pending: poll
    /// again instead of sleeping (the client will not kick for those).
    pub fn set_tx_notify(&mut self, on: bool) -> bool {
        self.tx_notify = on;
        let Some(ring) = self.tx.ring.as_ref() else {
            return false;
        };
        set_kicks(ring, on, self.event_idx, self.tx.last_avail);
        if on {
            full_fence();
            ring.avail_idx() != self.tx.last_avail
        } else {
            false
        }
    }

    /// The port's counters.
    pub fn stats(&self) -> &PortStats {
        &self.stats
    }
}

#[cfg(feature = "hostile-nic")]
pub mod hostile;

#[cfg(test)]
mod tests;
