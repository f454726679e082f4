//! An uplink of several queues (`packet:IFNAME,queues=N`,
//! `xdp:IFNAME,queues=N`): one [`Port`] to the data path, N [`Uplink`]s inside,
//! one per queue. Each queue is an uplink of its own in everything but its name
//! (`u0:1`): its own socket, driver domain, fast path, mode, restarts and
//! outages. What they share is the [`QueueGroup`]: the `packet:` sockets are
//! one fanout group ([`Fanout`]), so the kernel gives each frame the interface
//! receives to one queue, by flow; the `xdp:` sockets sit in one program's map
//! ([`XdpAttachment`]), each on its own receive queue of the interface, where
//! the interface's own receive-side scaling spreads the flows.
//!
//! Toward the network a frame leaves by the queue its flow hash picks
//! ([`twin_wire::flow`]), so a conversation keeps its order on the wire; while
//! that queue is down, by the next one that is up. Receiving takes from the
//! queues in turn, starting one further each call, within the data path's
//! batch. A queue's failure stays in that queue: the others keep forwarding,
//! and the addresses learned behind the uplink are forgotten only when every
//! queue is down.
//!
//! Operators' commands on `u0` go to every queue; `u0:1` names one
//! (`twin ctl fault u0:1 kill`). The report sums the queues' counters and
//! lists each queue's details, with the frames the data path took from
//! (`rx_packets`) and delivered to (`tx_packets`) it.
//!
//! Limits: the data path's batch is shared by the queues (one port, one
//! budget); the switch's counters (`rx_packets`...) are the uplink's, per-queue
//! ones are the drivers' in the details.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use kernel_nic::packet::Fanout;
use kernel_nic::xdp::XdpAttachment;
use twin_wire::flow::{flow_hash, FLOW_PREFIX};
use twin_wire::Segments;

use super::{Uplink, UplinkError};
use crate::config::{PollMode, UplinkDevice, UplinkSpec};
use crate::counters::{PortCounters, PortReport};
use crate::port::{
    CommandDone, Delivery, MaintainContext, Port, PortCommand, PortCommandError, PortError,
    PortKind, PortNews,
};

/// What the queues of one uplink share.
#[derive(Debug, Clone)]
pub(super) enum QueueGroup {
    /// The `packet:` sockets' fanout group.
    Fanout(Arc<Fanout>),
    /// The `xdp:` uplink's redirect program.
    Xdp(Arc<XdpAttachment>),
}

/// An uplink of several queues, each an [`Uplink`].
#[derive(Debug)]
pub struct MultiQueueUplink {
    name: String,
    queues: Vec<Uplink>,
    group: QueueGroup,
    /// Frames taken from and delivered to each queue.
    counts: Vec<QueueCounts>,
    /// The queue the next [`Port::receive`] starts with.
    next_rx: usize,
}

/// Frames through one queue, as the data path moved them.
#[derive(Debug, Clone, Copy, Default)]
struct QueueCounts {
    rx_packets: u64,
    tx_packets: u64,
}

impl MultiQueueUplink {
    /// Starts every queue of `spec` (a `packet:` or `xdp:` uplink): queue `i`
    /// is named `NAME:i` (an `xdp:` uplink's queue `i` is the interface's
    /// `queue + i`) and its domains run as `spec.domain_id + i`.
    pub fn new(
        spec: UplinkSpec,
        poll: PollMode,
        restart_budget: usize,
    ) -> Result<Self, UplinkError> {
        let count = spec.device.queues();
        let group = match &spec.device {
            UplinkDevice::Xdp {
                name, queue, mode, ..
            } => QueueGroup::Xdp(Arc::new(XdpAttachment::new(
                name.clone(),
                queue + count,
                *mode,
            ))),
            _ => QueueGroup::Fanout(Arc::new(Fanout::new())),
        };
        let queues = (0..count)
            .map(|i| {
                let mut q = spec.clone();
                q.name = format!("{}:{i}", spec.name);
                q.domain_id = spec.domain_id.map(|id| id.saturating_add(i));
                if let UplinkDevice::Xdp { queue, queues, .. } = &mut q.device {
                    *queue += i;
                    *queues = 1;
                }
                Uplink::start(q, poll, restart_budget, Some(group.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiQueueUplink {
            name: spec.name,
            counts: vec![QueueCounts::default(); queues.len()],
            queues,
            group,
            next_rx: 0,
        })
    }

    /// The queue `frame` leaves by when every queue is up.
    fn queue_of(&self, frame: &Segments<'_>) -> usize {
        let mut prefix = [0u8; FLOW_PREFIX];
        let len = frame.read_prefix(&mut prefix);
        flow_hash(&prefix[..len]) as usize % self.queues.len()
    }

    fn on_every_queue(
        &mut self,
        cmd: PortCommand,
        now: Instant,
    ) -> Result<CommandDone, PortCommandError> {
        let mut fds_changed = false;
        let mut first_error = None;
        for q in &mut self.queues {
            match q.command(cmd, None, now) {
                Ok(done) => fds_changed |= done.fds_changed,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(CommandDone { fds_changed }),
        }
    }
}

impl Port for MultiQueueUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> PortKind {
        PortKind::Uplink
    }

    fn receive(&mut self, max: usize, sink: &mut dyn FnMut(&Segments<'_>)) -> usize {
        let n = self.queues.len();
        let mut took = 0;
        for k in 0..n {
            if took >= max {
                break;
            }
            let i = (self.next_rx + k) % n;
            let got = self.queues[i].receive(max - took, sink);
            self.counts[i].rx_packets += got as u64;
            took += got;
        }
        self.next_rx = (self.next_rx + 1) % n;
        took
    }

    fn deliver(&mut self, frame: &Segments<'_>) -> Delivery {
        let n = self.queues.len();
        let first = self.queue_of(frame);
        for k in 0..n {
            let i = (first + k) % n;
            match self.queues[i].deliver(frame) {
                Delivery::Down => continue,
                Delivery::Delivered => {
                    self.counts[i].tx_packets += 1;
                    return Delivery::Delivered;
                }
                dropped => return dropped,
            }
        }
        Delivery::Down
    }

    fn flush(&mut self) {
        for q in &mut self.queues {
            q.flush();
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        let mut raced = false;
        for q in &mut self.queues {
            raced |= q.set_notify(on);
        }
        raced
    }

    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        for q in &self.queues {
            q.wake_fds(add);
        }
    }

    fn maintain(&mut self, cx: &MaintainContext) -> Result<PortNews, PortError> {
        let mut changed = false;
        for q in &mut self.queues {
            changed |= q.maintain(cx)?.fds_changed;
        }
        Ok(PortNews {
            fds_changed: changed,
            peer_gone: changed && self.queues.iter().all(|q| q.driver().is_none()),
        })
    }

    fn command(
        &mut self,
        cmd: PortCommand,
        queue: Option<u32>,
        now: Instant,
    ) -> Result<CommandDone, PortCommandError> {
        let Some(queue) = queue else {
            return self.on_every_queue(cmd, now);
        };
        let count = self.queues.len();
        match self.queues.get_mut(queue as usize) {
            Some(q) => q.command(cmd, None, now),
            None => Err(PortCommandError::Refused(format!(
                "uplink {} has queues 0 to {}",
                self.name,
                count - 1
            ))),
        }
    }

    fn report(&self, counters: &PortCounters) -> PortReport {
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for q in &self.queues {
            for (k, v) in q.own_drops() {
                *drops.entry(k).or_default() += v;
            }
        }
        let queues: Vec<serde_json::Value> = self
            .queues
            .iter()
            .zip(&self.counts)
            .map(|(q, c)| {
                let mut d = q.detail();
                if let Some(d) = d.as_object_mut() {
                    d.insert("rx_packets".into(), c.rx_packets.into());
                    d.insert("tx_packets".into(), c.tx_packets.into());
                }
                d
            })
            .collect();
        let mut detail = serde_json::json!({
            "queues_connected": self.queues.iter().filter(|q| q.driver().is_some()).count(),
            "queues": queues,
        });
        if let (QueueGroup::Fanout(f), Some(d)) = (&self.group, detail.as_object_mut()) {
            d.insert("fanout_group".into(), f.id().into());
        }
        PortReport::new(
            counters,
            drops,
            self.queues.iter().map(|q| q.connects).sum(),
            self.queues.iter().map(|q| q.disconnects).sum(),
            detail,
        )
    }
}
