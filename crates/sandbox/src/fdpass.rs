//! Passing a small message and a list of file descriptors over a unix stream socket
//! (`SCM_RIGHTS`).
//!
//! The switch hands a driver domain every fd it will ever use this way: the DD can
//! open nothing once it is sandboxed. The DD's control socket is its standard input
//! ([`control_from_stdin`]): the switch starts it with one end of a
//! `UnixStream::pair` as stdin, so no fd number travels on the command line and no
//! `unsafe` adoption of an inherited fd is needed.
//!
//! # Framing
//!
//! A stream socket has no message boundaries, so every message is framed:
//!
//! ```text
//! +-----------+-----------+------------------+
//! | len: u32  | nfds: u32 | payload: len B   |   (little endian), fds attached
//! +-----------+-----------+------------------+   to the first byte of the header
//! ```
//!
//! The whole frame is sent with one `sendmsg`, the fds in one `SCM_RIGHTS` control
//! message. The receiver reads the 8-byte header with a control buffer sized for
//! [`MAX_FDS`], then the payload with no control buffer at all. It checks:
//!
//! * the header's `nfds` equals the number of fds that arrived, and is at most the
//!   caller's limit (and [`MAX_FDS`]);
//! * `len` is at most the caller's limit (and [`MAX_PAYLOAD`]);
//! * no control message was truncated (`MSG_CTRUNC`: the kernel closed fds it could
//!   not deliver, so the message is unusable) and no fds arrive with the payload;
//! * only `SCM_RIGHTS` control messages arrive.
//!
//! Every received fd is an [`OwnedFd`] with `FD_CLOEXEC` set (`MSG_CMSG_CLOEXEC`), so
//! on any error the fds that did arrive are closed when the partial result drops.
//! Sends use `MSG_NOSIGNAL`: a vanished peer is an error, never a `SIGPIPE`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Most fds one message may carry (the kernel's own limit, `SCM_MAX_FD`, is 253).
pub const MAX_FDS: usize = 32;
/// Largest payload one message may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Size of the frame header (`len: u32`, `nfds: u32`).
const HEADER: usize = 8;

/// Errors of fd passing.
#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    /// The peer closed the socket before a new message began (a clean end).
    #[error("the peer closed the socket")]
    Closed,
    /// The peer closed the socket in the middle of a message.
    #[error("the peer closed the socket in the middle of a message ({got} of {want} bytes)")]
    ShortMessage {
        /// Bytes of the frame received.
        got: usize,
        /// Bytes of the frame expected.
        want: usize,
    },
    /// A message to send has more fds than [`MAX_FDS`].
    #[error("{0} fds in one message; at most {MAX_FDS}")]
    TooManyFdsToSend(usize),
    /// A message to send has a payload larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes; at most {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
    /// The peer announced more fds than the receiver accepts.
    #[error("the peer announced {announced} fds; at most {limit} accepted")]
    TooManyFds {
        /// Fds in the header.
        announced: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The peer announced a larger payload than the receiver accepts.
    #[error("the peer announced a payload of {announced} bytes; at most {limit} accepted")]
    PayloadTooLong {
        /// Payload length in the header.
        announced: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The number of fds received differs from the number announced.
    #[error("the peer announced {announced} fds but {received} arrived")]
    FdCountMismatch {
        /// Fds in the header.
        announced: usize,
        /// Fds that arrived.
        received: usize,
    },
    /// The kernel truncated the control data (`MSG_CTRUNC`): fds were lost.
    #[error("control data truncated (MSG_CTRUNC): more fds were sent than announced or accepted")]
    ControlTruncated,
    /// Fds arrived in the middle of a payload (not at a frame start).
    #[error("fds arrived in the middle of a payload")]
    UnexpectedFds,
    /// A control message other than `SCM_RIGHTS` arrived.
    #[error("an unexpected control message arrived")]
    UnexpectedControl,
    /// The control buffer could not hold the fds to send.
    #[error("the control buffer could not hold {0} fds")]
    ControlBuffer(usize),
    /// The fd given as the control socket is not a socket.
    #[error("standard input is not a socket")]
    NotASocket,
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl FdPassError {
    fn io(op: &'static str, e: Errno) -> Self {
        Self::Io {
            op,
            source: e.into(),
        }
    }
}

/// One received message: its payload and the fds that came with it.
#[derive(Debug)]
pub struct Message {
    /// The payload.
    pub data: Vec<u8>,
    /// The fds, in the order they were sent, each `FD_CLOEXEC`.
    pub fds: Vec<OwnedFd>,
}

/// Sends `payload` and `fds` as one framed message.
///
/// The fds are duplicated into the peer by the kernel; the caller keeps its own.
pub fn send(
    socket: &UnixStream,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS {
        return Err(FdPassError::TooManyFdsToSend(fds.len()));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(FdPassError::PayloadTooLarge(payload.len()));
    }
    let mut header = [0u8; HEADER];
    // Both fit in u32: bounded by the checks above.
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());

    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(FdPassError::ControlBuffer(fds.len()));
    }

    let total = HEADER + payload.len();
    let mut sent = 0;
    while sent < total {
        let (h, p) = if sent < HEADER {
            (&header[sent..], payload)
        } else {
            (&header[HEADER..], &payload[sent - HEADER..])
        };
        let iov = [IoSlice::new(h), IoSlice::new(p)];
        match sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => {
                return Err(FdPassError::ShortMessage {
                    got: sent,
                    want: total,
                })
            }
            Ok(n) => {
                sent += n;
                // The fds went with the first bytes; never send them twice.
                control.clear();
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(FdPassError::io("sendmsg", e)),
        }
    }
    Ok(())
}

/// Receives one framed message of at most `max_len` payload bytes and `max_fds` fds.
///
/// Returns [`FdPassError::Closed`] if the peer closed the socket between messages.
pub fn recv(socket: &UnixStream, max_len: usize, max_fds: usize) -> Result<Message, FdPassError> {
    let max_len = max_len.min(MAX_PAYLOAD);
    let max_fds = max_fds.min(MAX_FDS);

    // The header, with the fds. Control space for MAX_FDS so that a peer announcing
    // too many is reported as such rather than as truncation.
    let mut header = [0u8; HEADER];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut got = 0;
    while got < HEADER {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut header[got..])];
        let msg = match recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => m,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(FdPassError::io("recvmsg", e)),
        };
        let truncated = msg.flags.contains(ReturnFlags::CTRUNC);
        let arrived = take_fds(&mut control)?;
        if truncated {
            return Err(FdPassError::ControlTruncated);
        }
        if !arrived.is_empty() {
            if got != 0 {
                return Err(FdPassError::UnexpectedFds);
            }
            fds = arrived;
        }
        if msg.bytes == 0 {
            return Err(if got == 0 {
                FdPassError::Closed
            } else {
                FdPassError::ShortMessage { got, want: HEADER }
            });
        }
        got += msg.bytes;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let nfds = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if nfds > max_fds {
        return Err(FdPassError::TooManyFds {
            announced: nfds,
            limit: max_fds,
        });
    }
    if nfds != fds.len() {
        return Err(FdPassError::FdCountMismatch {
            announced: nfds,
            received: fds.len(),
        });
    }
    if len > max_len {
        return Err(FdPassError::PayloadTooLong {
            announced: len,
            limit: max_len,
        });
    }

    // The payload: no fds may come with it. A zero-sized control buffer makes the
    // kernel report any as MSG_CTRUNC (and close them).
    let mut data = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let mut control = RecvAncillaryBuffer::new(&mut []);
        let mut iov = [IoSliceMut::new(&mut data[got..])];
        let msg = match recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => m,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(FdPassError::io("recvmsg", e)),
        };
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(FdPassError::UnexpectedFds);
        }
        if msg.bytes == 0 {
            return Err(FdPassError::ShortMessage {
                got: HEADER + got,
                want: HEADER + len,
            });
        }
        got += msg.bytes;
    }
    Ok(Message { data, fds })
}

/// Collects the fds of every `SCM_RIGHTS` message in `control` (as owned fds, so they
/// close on any error); any other control message is an error.
fn take_fds(control: &mut RecvAncillaryBuffer<'_>) -> Result<Vec<OwnedFd>, FdPassError> {
    let mut fds = Vec::new();
    let mut other = false;
    for msg in control.drain() {
        match msg {
            RecvAncillaryMessage::ScmRights(iter) => fds.extend(iter),
            _ => other = true,
        }
    }
    if other {
        return Err(FdPassError::UnexpectedControl);
    }
    Ok(fds)
}

/// A received descriptor as an `EventFd` (doorbells and vring eventfds cross as
/// plain descriptors). If it is not an eventfd, reads and writes through it fail.
pub fn into_eventfd(fd: OwnedFd) -> vmm_sys_util::eventfd::EventFd {
    crate::sys::eventfd_from_owned(fd)
}

/// The driver domain's control socket: a `FD_CLOEXEC` duplicate of standard input,
/// which must be a unix stream socket (the switch starts the DD with one end of a
/// socket pair as stdin).
pub fn control_from_stdin() -> Result<UnixStream, FdPassError> {
    let stdin = rustix::stdio::stdin();
    let stat = rustix::fs::fstat(stdin).map_err(|e| FdPassError::io("fstat(stdin)", e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(FdPassError::NotASocket);
    }
    let fd = rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3)
        .map_err(|e| FdPassError::io("dup(stdin)", e))?;
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::MemfdFlags;
    use std::io::Write;

    fn memfd(name: &str) -> OwnedFd {
        rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn round_trip_with_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let m1 = memfd("one");
        let m2 = memfd("two");
        rustix::fs::ftruncate(&m2, 12345).unwrap();
        send(&a, b"hello", &[m1.as_fd(), m2.as_fd()]).unwrap();
        let msg = recv(&b, 100, 4).unwrap();
        assert_eq!(msg.data, b"hello");
        assert_eq!(msg.fds.len(), 2);
        // The second received fd is the second memfd (same open file).
        assert_eq!(rustix::fs::fstat(&msg.fds[1]).unwrap().st_size, 12345);
        for fd in &msg.fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
    }

    #[test]
    fn messages_keep_their_boundaries() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = memfd("x");
        send(&a, b"", &[]).unwrap();
        send(&a, b"second", &[m.as_fd()]).unwrap();
        send(&a, &[7u8; 5000], &[]).unwrap();
        let one = recv(&b, 10, 0).unwrap();
        assert!(one.data.is_empty() && one.fds.is_empty());
        let two = recv(&b, 10, 1).unwrap();
        assert_eq!((two.data.as_slice(), two.fds.len()), (&b"second"[..], 1));
        let three = recv(&b, 5000, 0).unwrap();
        assert_eq!(three.data, vec![7u8; 5000]);
    }

    #[test]
    fn closed_between_and_within_messages() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(recv(&b, 10, 0), Err(FdPassError::Closed)));

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[10, 0, 0, 0, 0, 0, 0, 0, 1, 2]).unwrap();
        drop(a);
        assert!(matches!(
            recv(&b, 100, 0),
            Err(FdPassError::ShortMessage { got: 10, want: 18 })
        ));
    }

    #[test]
    fn too_many_fds_announced() {
        let (a, b) = UnixStream::pair().unwrap();
        let fds: Vec<OwnedFd> = (0..3).map(|_| memfd("m")).collect();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        send(&a, b"x", &borrowed).unwrap();
        assert!(matches!(
            recv(&b, 10, 2),
            Err(FdPassError::TooManyFds {
                announced: 3,
                limit: 2
            })
        ));
    }

    #[test]
    fn payload_too_long() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &[0u8; 100], &[]).unwrap();
        assert!(matches!(
            recv(&b, 99, 0),
            Err(FdPassError::PayloadTooLong {
                announced: 100,
                limit: 99
            })
        ));
    }

    #[test]
    fn sender_limits() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            send(&a, &vec![0u8; MAX_PAYLOAD + 1], &[]),
            Err(FdPassError::PayloadTooLarge(_))
        ));
        let m = memfd("m");
        let many = vec![m.as_fd(); MAX_FDS + 1];
        assert!(matches!(
            send(&a, b"", &many),
            Err(FdPassError::TooManyFdsToSend(_))
        ));
    }

    /// A hostile peer announcing fewer fds than it attaches: the kernel delivers them
    /// all (the receiver's control space is for MAX_FDS), the count check catches it.
    #[test]
    fn fd_count_mismatch() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = memfd("m");
        let header = [1u8, 0, 0, 0, 0, 0, 0, 0, b'z'];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let two = [m.as_fd(), m.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&two)));
        sendmsg(
            &a,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(matches!(
            recv(&b, 10, 4),
            Err(FdPassError::FdCountMismatch {
                announced: 0,
                received: 2
            })
        ));
    }

    /// More fds attached than the receiver's control space holds: MSG_CTRUNC.
    #[test]
    fn truncated_control_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = memfd("m");
        let fds = vec![m.as_fd(); MAX_FDS + 8];
        let header = [0u8, 0, 0, 0, (MAX_FDS + 8) as u8, 0, 0, 0];
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        sendmsg(
            &a,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(matches!(
            recv(&b, 10, MAX_FDS),
            Err(FdPassError::ControlTruncated)
        ));
    }

    /// Fds attached to the payload part of a frame are refused.
    #[test]
    fn fds_within_payload_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = memfd("m");
        // Header announcing 4 payload bytes and no fds, sent alone...
        sendmsg(
            &a,
            &[IoSlice::new(&[4, 0, 0, 0, 0, 0, 0, 0])],
            &mut SendAncillaryBuffer::default(),
            SendFlags::empty(),
        )
        .unwrap();
        // ...then the payload with an fd attached.
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let one = [m.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&one)));
        sendmsg(
            &a,
            &[IoSlice::new(b"abcd")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(matches!(recv(&b, 10, 0), Err(FdPassError::UnexpectedFds)));
    }
}
