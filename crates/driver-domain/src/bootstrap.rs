//! The bootstrap channel between the switch and a driver domain: a unix stream socket
//! that is the DD's standard input (so no descriptor number has to be guessed or
//! trusted), over which the switch sends one message carrying, with SCM_RIGHTS, the
//! descriptors the DD needs, in a fixed order. The framing and SCM_RIGHTS handling
//! are `sandbox::fdpass`'s; this module fixes what the message says.
//!
//! The message body is a small fixed header (magic, descriptor count, poll mode);
//! both ends refuse anything else.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use sandbox::fdpass::{self, FdPassError};

/// Descriptors handed to a DD, in wire order.
pub const FD_COUNT: usize = 9;
const MAGIC: u32 = 0x5444_4432; // "TDD2"

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

/// What a DD receives.
#[derive(Debug)]
pub struct DomainFds {
    /// Connected vhost-user socket of the NIC.
    pub nic: UnixStream,
    /// The driver's region (sealed memfd).
    pub region: OwnedFd,
    /// The exchange region (sealed memfd).
    pub exchange: OwnedFd,
    /// The switch rings it when the DD has work or space (switch -> DD).
    pub doorbell_in: OwnedFd,
    /// The DD rings it when the switch has work or space (DD -> switch).
    pub doorbell_out: OwnedFd,
    /// The vring eventfds of the RX and TX queue, (kick, call) each. The switch
    /// keeps copies: whoever runs the fast path kicks the NIC and hears its calls.
    pub queues: [(OwnedFd, OwnedFd); 2],
    /// Busy-poll (true) or event-driven.
    pub busy_poll: bool,
}

/// What the switch sends: the same descriptors, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Connected vhost-user socket of the NIC.
    pub nic: &'a UnixStream,
    /// The driver's region.
    pub region: BorrowedFd<'a>,
    /// The exchange region.
    pub exchange: BorrowedFd<'a>,
    /// Switch -> DD doorbell.
    pub doorbell_in: BorrowedFd<'a>,
    /// DD -> switch doorbell.
    pub doorbell_out: BorrowedFd<'a>,
    /// RX and TX (kick, call) eventfds.
    pub queues: [(BorrowedFd<'a>, BorrowedFd<'a>); 2],
    /// Busy-poll (true) or event-driven.
    pub busy_poll: bool,
}

fn header(busy_poll: bool) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(FD_COUNT as u32).to_le_bytes());
    h[8] = u8::from(busy_poll);
    h
}

/// Sends the descriptors (switch side).
pub fn send(sock: &UnixStream, out: &Outgoing<'_>) -> Result<(), BootstrapError> {
    let [(rx_kick, rx_call), (tx_kick, tx_call)] = out.queues;
    let fds = [
        out.nic.as_fd(),
        out.region,
        out.exchange,
        out.doorbell_in,
        out.doorbell_out,
        rx_kick,
        rx_call,
        tx_kick,
        tx_call,
    ];
    fdpass::send(sock, &header(out.busy_poll), &fds).map_err(BootstrapError::Send)
}

/// Receives the descriptors (DD side). Blocks until the switch sends them.
pub fn receive(sock: &UnixStream) -> Result<DomainFds, BootstrapError> {
    let msg = fdpass::recv(sock, 64, FD_COUNT).map_err(BootstrapError::Receive)?;
    let h = &msg.data;
    if h.len() != 12 || h[..8] != header(false)[..8] {
        return Err(BootstrapError::BadMessage("wrong header"));
    }
    if msg.fds.len() != FD_COUNT {
        return Err(BootstrapError::BadMessage("wrong number of descriptors"));
    }
    let busy_poll = h[8] != 0;
    let mut it = msg.fds.into_iter();
    let mut next = || {
        it.next()
            .ok_or(BootstrapError::BadMessage("missing descriptor"))
    };
    Ok(DomainFds {
        nic: UnixStream::from(next()?),
        region: next()?,
        exchange: next()?,
        doorbell_in: next()?,
        doorbell_out: next()?,
        queues: [(next()?, next()?), (next()?, next()?)],
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
            nic: &nic_here,
            region: fd(0),
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            queues: [(fd(4), fd(5)), (fd(6), fd(7))],
            busy_poll: true,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        assert!(got.busy_poll);
        let size = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_size;
        assert_eq!(size(&got.region), 4096);
        assert_eq!(size(&got.exchange), 8192);
        assert_eq!(size(&got.doorbell_in), 3 * 4096);
        assert_eq!(size(&got.doorbell_out), 4 * 4096);
        assert_eq!(size(&got.queues[0].0), 5 * 4096);
        assert_eq!(size(&got.queues[1].1), 8 * 4096);
        let mut nic = got.nic;
        nic.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        nic_there.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_message_without_descriptors_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        fdpass::send(&a, &header(false), &[]).unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
    }
}
