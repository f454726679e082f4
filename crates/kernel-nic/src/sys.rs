//! The crate's only `unsafe` code: the interface ioctls, which neither rustix nor
//! libc wraps safely.
//!
//! * `TUNSETIFF`: attaches a TUN/TAP descriptor to a named device, creating it;
//!   a `struct ifreq` in and out.
//! * `TUNSETVNETHDRSZ`: the size of the vnet header; an `int` by pointer.
//! * `TUNSETOFFLOAD`: the offloads the descriptor's reader accepts; an `unsigned
//!   int` by value.
//! * `TUNGETIFF`: the device a TUN/TAP descriptor is attached to (`EBADFD` once
//!   the device was deleted); a `struct ifreq` out.
//! * `SIOCGIFFLAGS`: an interface's flags; a `struct ifreq` in and out.
//! * AF_PACKET socket options (`PACKET_VERSION`, `PACKET_RX_RING`,
//!   `PACKET_IGNORE_OUTGOING`) and `bind` to an interface (`struct sockaddr_ll`).
//!
//! Names reach this module as bytes validated by `IfName` (1 to 15 bytes, no
//! NUL); they are copied into a zeroed `ifreq`, so the kernel always finds the
//! terminating NUL.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A zeroed `ifreq` holding `name` (at most `IFNAMSIZ - 1` bytes are copied).
fn ifreq(name: &[u8]) -> libc::ifreq {
    // `ifreq` is plain data: a byte array and a union of integers, byte arrays,
    // socket addresses and a pointer (a null `ifru_data`, which nothing reads).
    // SAFETY: all-zero bytes are a valid value of each of those fields.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let room = libc::IFNAMSIZ - 1;
    for (d, s) in req.ifr_name.iter_mut().zip(name.iter().take(room)) {
        *d = *s as libc::c_char;
    }
    req
}

/// The name the kernel left in `req`.
fn name_of(req: &libc::ifreq) -> Vec<u8> {
    req.ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect()
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `TUNSETIFF`: attaches `fd` (an open `/dev/net/tun`) to device `name` with
/// `flags` (`IFF_TAP`, `IFF_NO_PI`, `IFF_VNET_HDR`...), creating the device when it
/// does not exist. Returns the device's name as the kernel set it.
pub(crate) fn tun_set_iff(
    fd: BorrowedFd<'_>,
    name: &[u8],
    flags: libc::c_short,
) -> io::Result<Vec<u8>> {
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` through its pointer
    // argument; `req` is one, alive and exclusively borrowed for the call. `fd` is
    // an open descriptor for the duration of the borrow.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    })?;
    Ok(name_of(&req))
}

/// `TUNSETVNETHDRSZ`: the vnet header that precedes every frame is `size` bytes.
pub(crate) fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, size: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through its pointer argument; `size`
    // lives on this frame for the whole call and is only read.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ as _,
            &size as *const libc::c_int,
        )
    })
}

/// `TUNSETOFFLOAD`: the offloads (`TUN_F_*`) the reader of `fd` accepts.
pub(crate) fn tun_set_offload(fd: BorrowedFd<'_>, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value, not as a pointer: no
    // memory of this process is read or written.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            libc::c_ulong::from(offloads),
        )
    })
}

/// `TUNGETIFF`: whether `fd` is still attached to a device (`EBADFD`: the device
/// was deleted under it).
pub(crate) fn tun_attached(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut req = ifreq(&[]);
    // SAFETY: TUNGETIFF writes one `struct ifreq` through its pointer argument;
    // `req` is one, alive and exclusively borrowed for the call.
    let r = check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNGETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    });
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `SIOCGIFFLAGS` on socket `sock`: the flags (`IFF_UP`, `IFF_RUNNING`...) of
/// interface `name` in the socket's network namespace.
pub(crate) fn if_flags(sock: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::c_short> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into one
    // `struct ifreq` through its pointer argument; `req` is one, alive and
    // exclusively borrowed for the call.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut req as *mut libc::ifreq,
        )
    })?;
    // SAFETY: the call succeeded, so the kernel wrote `ifru_flags`; every bit
    // pattern is a valid `c_short`.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// `struct tpacket_req3` (linux/if_packet.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TpacketReq3 {
    pub block_size: libc::c_uint,
    pub block_nr: libc::c_uint,
    pub frame_size: libc::c_uint,
    pub frame_nr: libc::c_uint,
    pub retire_blk_tov: libc::c_uint,
    pub sizeof_priv: libc::c_uint,
    pub feature_req_word: libc::c_uint,
}

const SOL_PACKET: libc::c_int = 263;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `enum tpacket_versions`: TPACKET_V3.
const TPACKET_V3: libc::c_int = 2;

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the option's value is read from `value`, a live `T` of exactly the
    // size passed, for the duration of the call; `fd` is open.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// Makes `fd` (an AF_PACKET socket) a TPACKET_V3 socket with receive ring `rx`
/// and transmit ring `tx` that does not see its own interface's outgoing frames,
/// bound to `ifindex`.
pub(crate) fn packet_rings(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    rx: &TpacketReq3,
    tx: &TpacketReq3,
) -> io::Result<()> {
    setsockopt(fd, PACKET_VERSION, &TPACKET_V3)?;
    setsockopt(fd, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)?;
    setsockopt(fd, PACKET_RX_RING, rx)?;
    setsockopt(fd, PACKET_TX_RING, tx)?;
    // SAFETY: `sockaddr_ll` is plain data (integers, a byte array): all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `bind` reads one `sockaddr_ll` of the size passed from `sll`, which
    // lives on this frame for the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
}
