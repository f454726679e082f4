//! The vhost-user frontend link to a NIC device.
//!
//! Speaks the driver side of vhost-user with `vhost::vhost_user::Frontend`: owner,
//! feature and protocol-feature negotiation, the memory table (the driver region's
//! memfd as one region at guest address 0), and per queue size, base, ring
//! addresses (this process's virtual addresses, as the protocol wants), call and
//! kick eventfds, and enable. Hang-up of the device is detected by polling the
//! socket.
//!
//! Protocol features taken when offered: `MQ` and `REPLY_ACK` (then every request
//! asks for an acknowledgement, so a device that refuses a message is noticed at
//! set-up). DPDK `net_vhost` offers 0x10cbf; everything else it offers is left off.
//!
//! Limits: set-up only; no reconnection, no config space, no backend request
//! channel, no live migration (dirty log).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use driver_virtqueue::QueueLayout;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::region::Region;

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const F_PROTOCOL_FEATURES: u64 = twin_wire::features::VHOST_USER_F_PROTOCOL_FEATURES;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket could not be connected.
    #[error("cannot connect to the NIC's vhost-user socket {path}")]
    ConnectSocket {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A vhost-user request failed or was refused.
    #[error("vhost-user request {request} failed")]
    Request {
        /// Which request.
        request: &'static str,
        /// Cause.
        #[source]
        source: vhost::Error,
    },
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    CreateEventFd(#[source] std::io::Error),
    /// The device offers fewer queues than the driver needs.
    #[error("NIC offers {0} queues, the driver needs 2")]
    TooFewQueues(u64),
}

fn req(request: &'static str) -> impl FnOnce(vhost::Error) -> LinkError {
    move |source| LinkError::Request { request, source }
}

/// One queue to set up at the device.
#[derive(Debug, Clone, Copy)]
pub struct QueueSetup {
    /// Device queue index.
    pub index: u16,
    /// Where its rings are.
    pub layout: QueueLayout,
    /// Avail index to start from.
    pub base: u16,
}

/// One queue's eventfds: the driver writes `kick`, the device writes `call`.
#[derive(Debug)]
pub struct QueueFds {
    /// Driver to device: new buffers.
    pub kick: EventFd,
    /// Device to driver: used buffers.
    pub call: EventFd,
}

impl QueueFds {
    /// A fresh non-blocking pair.
    pub fn new() -> Result<Self, LinkError> {
        Ok(Self {
            kick: EventFd::new(EFD_NONBLOCK).map_err(LinkError::CreateEventFd)?,
            call: EventFd::new(EFD_NONBLOCK).map_err(LinkError::CreateEventFd)?,
        })
    }
}

/// A connected vhost-user frontend.
pub struct NicLink {
    frontend: Frontend,
    sock: UnixStream,
    offered: u64,
    protocol: VhostUserProtocolFeatures,
}

impl std::fmt::Debug for NicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicLink")
            .field("socket_fd", &self.sock.as_raw_fd())
            .field("offered", &format_args!("{:#x}", self.offered))
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl NicLink {
    /// Connects once to `path`, takes ownership and reads the offered features.
    pub fn connect(path: &Path) -> Result<Self, LinkError> {
        let sock = UnixStream::connect(path).map_err(|source| LinkError::ConnectSocket {
            path: path.to_owned(),
            source,
        })?;
        Self::over(sock, path)
    }

    /// Takes ownership of the device over an already connected socket (a driver
    /// domain gets its NIC connection from the switch, as it may open nothing) and
    /// reads the offered features. `path` only names the device in errors.
    pub fn over(sock: UnixStream, path: &Path) -> Result<Self, LinkError> {
        let probe = sock
            .try_clone()
            .map_err(|source| LinkError::ConnectSocket {
                path: path.to_owned(),
                source,
            })?;
        let mut frontend = Frontend::from_stream(sock, 2);
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(req("GET_FEATURES"))?;
        let mut protocol = VhostUserProtocolFeatures::empty();
        if offered & F_PROTOCOL_FEATURES != 0 {
            let dev = frontend
                .get_protocol_features()
                .map_err(req("GET_PROTOCOL_FEATURES"))?;
            protocol = dev & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            frontend
                .set_protocol_features(protocol)
                .map_err(req("SET_PROTOCOL_FEATURES"))?;
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                let n = frontend.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
                if n < 2 {
                    return Err(LinkError::TooFewQueues(n));
                }
            }
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        twin_log::debug_limited!(device = %path.display(), offered = format_args!("{offered:#x}"),
            protocol = format_args!("{:#x}", protocol.bits()), "connected to NIC");
        Ok(Self {
            frontend,
            sock: probe,
            offered,
            protocol,
        })
    }

    /// Virtio features the device offers.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// Acknowledges `features` (plus PROTOCOL_FEATURES when offered), sends the
    /// memory table and sets up and enables `queues`, with the eventfds `fds` (one
    /// pair per queue, in order) or, when `None`, new ones. Returns each queue's
    /// (kick, call) eventfds, in order.
    pub fn start(
        &mut self,
        features: u64,
        region: &Region,
        queues: &[QueueSetup],
        fds: Option<Vec<QueueFds>>,
    ) -> Result<Vec<(EventFd, EventFd)>, LinkError> {
        let mut given = match fds {
            Some(v) if v.len() != queues.len() => {
                return Err(LinkError::TooFewQueues(v.len() as u64))
            }
            Some(v) => Some(v.into_iter()),
            None => None,
        };
        let proto_bit = self.offered & F_PROTOCOL_FEATURES;
        self.frontend
            .set_features(features | proto_bit)
            .map_err(req("SET_FEATURES"))?;
        let host = region.host_addr();
        let mem = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: region.len(),
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: region.file().as_raw_fd(),
        };
        self.frontend
            .set_mem_table(&[mem])
            .map_err(req("SET_MEM_TABLE"))?;
        let mut fds = Vec::with_capacity(queues.len());
        for q in queues {
            let i = usize::from(q.index);
            let QueueFds { kick, call } = match given.as_mut().and_then(Iterator::next) {
                Some(pair) => pair,
                None => QueueFds::new()?,
            };
            let l = q.layout;
            self.frontend
                .set_vring_num(i, l.size)
                .map_err(req("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_base(i, q.base)
                .map_err(req("SET_VRING_BASE"))?;
            let addr = VringConfigData {
                queue_max_size: l.size,
                queue_size: l.size,
                flags: 0,
                desc_table_addr: host + l.desc,
                used_ring_addr: host + l.used,
                avail_ring_addr: host + l.avail,
                log_addr: None,
            };
            self.frontend
                .set_vring_addr(i, &addr)
                .map_err(req("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_call(i, &call)
                .map_err(req("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(i, &kick)
                .map_err(req("SET_VRING_KICK"))?;
            fds.push((kick, call));
        }
        if proto_bit != 0 {
            for q in queues {
                self.frontend
                    .set_vring_enable(usize::from(q.index), true)
                    .map_err(req("SET_VRING_ENABLE"))?;
            }
        }
        Ok(fds)
    }

    /// Sends a memory table verbatim (any sizes and addresses; a test playing a
    /// hostile client). With `REPLY_ACK`, a refusal is an error here.
    pub fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegionInfo],
    ) -> Result<(), LinkError> {
        self.frontend
            .set_mem_table(regions)
            .map_err(req("SET_MEM_TABLE"))?;
        Ok(())
    }

    /// Whether the device is still there: false once the socket reports hang-up,
    /// an error, or end of file.
    pub fn is_connected(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
        match poll(
            &mut fds,
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) {
            Ok(0) => true,
            Ok(_) => {
                let r = fds[0].revents();
                // The device never sends unsolicited messages on this channel (no
                // backend request channel was negotiated), so readable means EOF.
                !(r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL | PollFlags::IN))
            }
            Err(_) => false,
        }
    }
}
