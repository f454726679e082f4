//! The bootstrap channel between the switch and a driver domain: a unix stream socket
//! that is the DD's standard input (so no descriptor number has to be guessed or
//! trusted), over which the switch sends one message carrying, with SCM_RIGHTS, the
//! descriptors the DD needs, in a fixed order. The framing and SCM_RIGHTS handling
//! are `sandbox::fdpass`'s; this module fixes what the message says.
//!
//! The message body is a small fixed header (magic, descriptor count, poll mode,
//! device kind); both ends refuse anything else. The descriptors depend on the
//! kind of device the domain drives ([`Device`]): a vhost-user NIC (its connected
//! socket, the driver's region and the two queues' eventfds) or a TAP device (its
//! open descriptor), then the exchange region and the two doorbells.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use sandbox::fdpass::{self, FdPassError};

/// Most descriptors handed to a DD (a vhost-user NIC's), in wire order.
pub const FD_COUNT: usize = 9;
/// Descriptors handed to a DD that drives a TAP device.
const TAP_FD_COUNT: usize = 4;
const MAGIC: u32 = 0x5444_4433; // "TDD3"
/// Header byte 9: the device kind.
const KIND_VHOST: u8 = 0;
const KIND_TAP: u8 = 1;

/// Errors of the bootstrap channel.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Sending failed.
    #[error("cannot send the descriptors to the driver domain")]
    Send(#[source] FdPassError),
    /// Receiving failed.
    #[error("cannot receive the descriptors from the switch")]
    Receive(#[source] FdPassError),
    /// The message was not the expected one.
    #[error("bad bootstrap message: {0}")]
    BadMessage(&'static str),
}

/// The device a DD drives, as the switch opened it.
#[derive(Debug)]
pub enum Device {
    /// A vhost-user NIC, driven by the virtio-net driver.
    Vhost {
        /// Connected vhost-user socket of the NIC.
        nic: UnixStream,
        /// The driver's region (sealed memfd).
        region: OwnedFd,
        /// The vring eventfds of the RX and TX queue, (kick, call) each. The
        /// switch keeps copies: whoever runs the fast path kicks the NIC and hears
        /// its calls.
        queues: [(OwnedFd, OwnedFd); 2],
    },
    /// A TAP device (`kernel_nic::Tap`), non-blocking, with the vnet header.
    Tap(OwnedFd),
}

/// What a DD receives.
#[derive(Debug)]
pub struct DomainFds {
    /// The device.
    pub device: Device,
    /// The exchange region (sealed memfd).
    pub exchange: OwnedFd,
    /// The switch rings it when the DD has work or space (switch -> DD).
    pub doorbell_in: OwnedFd,
    /// The DD rings it when the switch has work or space (DD -> switch).
    pub doorbell_out: OwnedFd,
    /// Busy-poll (true) or event-driven.
    pub busy_poll: bool,
}

/// The device's descriptors as the switch sends them, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum OutgoingDevice<'a> {
    /// See [`Device::Vhost`].
    Vhost {
        /// Connected vhost-user socket of the NIC.
        nic: &'a UnixStream,
        /// The driver's region.
        region: BorrowedFd<'a>,
        /// RX and TX (kick, call) eventfds.
        queues: [(BorrowedFd<'a>, BorrowedFd<'a>); 2],
    },
    /// See [`Device::Tap`].
    Tap(BorrowedFd<'a>),
}

/// What the switch sends: the same descriptors, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The device.
    pub device: OutgoingDevice<'a>,
    /// The exchange region.
    pub exchange: BorrowedFd<'a>,
    /// Switch -> DD doorbell.
    pub doorbell_in: BorrowedFd<'a>,
    /// DD -> switch doorbell.
    pub doorbell_out: BorrowedFd<'a>,
    /// Busy-poll (true) or event-driven.
    pub busy_poll: bool,
}

fn header(busy_poll: bool, kind: u8, fds: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(fds as u32).to_le_bytes());
    h[8] = u8::from(busy_poll);
    h[9] = kind;
    h
}

/// Sends the descriptors (switch side).
pub fn send(sock: &UnixStream, out: &Outgoing<'_>) -> Result<(), BootstrapError> {
    let common = [out.exchange, out.doorbell_in, out.doorbell_out];
    match out.device {
        OutgoingDevice::Vhost {
            nic,
            region,
            queues: [(rx_kick, rx_call), (tx_kick, tx_call)],
        } => {
            let fds = [
                nic.as_fd(),
                region,
                common[0],
                common[1],
                common[2],
                rx_kick,
                rx_call,
                tx_kick,
                tx_call,
            ];
            let h = header(out.busy_poll, KIND_VHOST, fds.len());
            fdpass::send(sock, &h, &fds)
        }
        OutgoingDevice::Tap(tap) => {
            let fds = [tap, common[0], common[1], common[2]];
            let h = header(out.busy_poll, KIND_TAP, fds.len());
            fdpass::send(sock, &h, &fds)
        }
    }
    .map_err(BootstrapError::Send)
}

/// Receives the descriptors (DD side). Blocks until the switch sends them.
pub fn receive(sock: &UnixStream) -> Result<DomainFds, BootstrapError> {
    let msg = fdpass::recv(sock, 64, FD_COUNT).map_err(BootstrapError::Receive)?;
    let h = &msg.data;
    if h.len() != 12 || h[..4] != MAGIC.to_le_bytes() || h[10..] != [0, 0] {
        return Err(BootstrapError::BadMessage("wrong header"));
    }
    let (kind, want) = match h[9] {
        KIND_VHOST => (KIND_VHOST, FD_COUNT),
        KIND_TAP => (KIND_TAP, TAP_FD_COUNT),
        _ => return Err(BootstrapError::BadMessage("unknown device kind")),
    };
    if h[4..8] != (want as u32).to_le_bytes() || msg.fds.len() != want {
        return Err(BootstrapError::BadMessage("wrong number of descriptors"));
    }
    let busy_poll = h[8] != 0;
    let mut it = msg.fds.into_iter();
    let mut next = || {
        it.next()
            .ok_or(BootstrapError::BadMessage("missing descriptor"))
    };
    let (device, exchange, doorbell_in, doorbell_out) = if kind == KIND_VHOST {
        let nic = UnixStream::from(next()?);
        let region = next()?;
        let (exchange, doorbell_in, doorbell_out) = (next()?, next()?, next()?);
        let queues = [(next()?, next()?), (next()?, next()?)];
        let device = Device::Vhost {
            nic,
            region,
            queues,
        };
        (device, exchange, doorbell_in, doorbell_out)
    } else {
        let tap = next()?;
        (Device::Tap(tap), next()?, next()?, next()?)
    };
    Ok(DomainFds {
        device,
        exchange,
        doorbell_in,
        doorbell_out,
        busy_poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_cross_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (nic_here, mut nic_there) = UnixStream::pair().unwrap();
        let files: Vec<OwnedFd> = (0..8)
            .map(|i| {
                let fd = rustix::fs::memfd_create(format!("t{i}"), rustix::fs::MemfdFlags::CLOEXEC)
                    .unwrap();
                rustix::fs::ftruncate(&fd, 4096 * (i + 1)).unwrap();
                fd
            })
            .collect();
        let fd = |i: usize| files[i].as_fd();
        let out = Outgoing {
            device: OutgoingDevice::Vhost {
                nic: &nic_here,
                region: fd(0),
                queues: [(fd(4), fd(5)), (fd(6), fd(7))],
            },
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            busy_poll: true,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        assert!(got.busy_poll);
        let size = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_size;
        assert_eq!(size(&got.exchange), 8192);
        assert_eq!(size(&got.doorbell_in), 3 * 4096);
        assert_eq!(size(&got.doorbell_out), 4 * 4096);
        let Device::Vhost {
            mut nic,
            region,
            queues,
        } = got.device
        else {
            panic!("not a vhost-user device");
        };
        assert_eq!(size(&region), 4096);
        assert_eq!(size(&queues[0].0), 5 * 4096);
        assert_eq!(size(&queues[1].1), 8 * 4096);
        nic.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        nic_there.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        // A TAP device's four descriptors, in their order.
        let out = Outgoing {
            device: OutgoingDevice::Tap(fd(7)),
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            busy_poll: false,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        assert!(!got.busy_poll);
        let Device::Tap(tap) = &got.device else {
            panic!("not a TAP device");
        };
        assert_eq!(size(tap), 8 * 4096);
        assert_eq!(size(&got.exchange), 8192);
        assert_eq!(size(&got.doorbell_out), 4 * 4096);
    }

    #[test]
    fn a_count_that_does_not_match_the_kind_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        // A TAP header with a vhost-user NIC's count, and the other way round.
        fdpass::send(
            &a,
            &header(false, KIND_TAP, FD_COUNT),
            &[f.as_fd(); FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
        fdpass::send(
            &a,
            &header(false, KIND_VHOST, TAP_FD_COUNT),
            &[f.as_fd(); TAP_FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
        fdpass::send(
            &a,
            &header(false, 7, TAP_FD_COUNT),
            &[f.as_fd(); TAP_FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
    }

    #[test]
    fn a_message_without_descriptors_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        fdpass::send(&a, &header(false, KIND_VHOST, FD_COUNT), &[]).unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
    }
}
