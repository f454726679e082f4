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
//!   `PACKET_IGNORE_OUTGOING`, `PACKET_QDISC_BYPASS`, `PACKET_FANOUT` set and
//!   read), `bind` to an interface (`struct sockaddr_ll`), and a classic BPF
//!   socket filter (`SO_ATTACH_FILTER`, `struct sock_fprog`).
//!
//! * AF_XDP: the UMEM registration, ring sizes, ring offsets and `bind`
//!   (`struct xdp_umem_reg`, `struct xdp_mmap_offsets`, `struct sockaddr_xdp`);
//!   and the BPF objects that feed the socket: an XSKMAP, the redirect program
//!   (`BPF_PROG_LOAD`), the map's entry, and the program's link to the
//!   interface (`BPF_LINK_CREATE`), each a `bpf(2)` call with the leading fields
//!   of `union bpf_attr` in a `#[repr(C)]` struct of this module.
//! * `mmap` with `MAP_FIXED` inside a reservation this process owns: the pieces
//!   of an AF_XDP driver's space (state memfd, rings, UMEM) placed side by side.
//!
//! Names reach this module as bytes validated by `IfName` (1 to 15 bytes, no
//! NUL); they are copied into a zeroed `ifreq`, so the kernel always finds the
//! terminating NUL.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// `enum tpacket_versions`: TPACKET_V3.
const TPACKET_V3: libc::c_int = 2;

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    setsockopt_at(fd, SOL_PACKET, name, value)
}

fn setsockopt_at<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the option's value is read from `value`, a live `T` of exactly the
    // size passed, for the duration of the call; `fd` is open.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// Makes `fd` (an AF_PACKET socket) a TPACKET_V3 socket with receive ring `rx`
/// and transmit ring `tx` that does not see its own interface's outgoing frames
/// (while it is in no fanout group: see `packet.rs`).
pub(crate) fn packet_rings(
    fd: BorrowedFd<'_>,
    rx: &TpacketReq3,
    tx: &TpacketReq3,
    qdisc_bypass: bool,
) -> io::Result<()> {
    setsockopt(fd, PACKET_VERSION, &TPACKET_V3)?;
    setsockopt(fd, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)?;
    if qdisc_bypass {
        setsockopt(fd, PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
    }
    setsockopt(fd, PACKET_RX_RING, rx)?;
    setsockopt(fd, PACKET_TX_RING, tx)
}

/// Binds the AF_PACKET socket `fd` to every protocol on `ifindex`: from here on
/// it receives that interface's frames.
pub(crate) fn packet_bind(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
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

/// Attaches the classic BPF program `insns` to the socket `fd`
/// (`SO_ATTACH_FILTER`), replacing the one it had: the kernel runs it on every
/// frame before the socket takes it, and drops those it returns 0 for.
pub(crate) fn socket_filter(fd: BorrowedFd<'_>, insns: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        // The kernel copies the instructions in during the call and never
        // writes through this pointer.
        filter: insns.as_ptr().cast_mut(),
    };
    setsockopt_at(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

const PACKET_FANOUT: libc::c_int = 18;

/// Joins the socket `fd` to a fanout group (`PACKET_FANOUT`): `arg` is the
/// group's id in the low 16 bits, its type and flags above.
pub(crate) fn packet_fanout(fd: BorrowedFd<'_>, arg: u32) -> io::Result<()> {
    setsockopt(fd, PACKET_FANOUT, &arg)
}

/// The fanout group the socket `fd` is in: its id in the low 16 bits (0 when
/// in none).
pub(crate) fn packet_fanout_of(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, a live local
    // of that size, and the length it wrote into `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            PACKET_FANOUT,
            (&mut value as *mut u32).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

// ---- AF_XDP and the BPF objects that feed it ----

/// `union bpf_attr` for `BPF_MAP_CREATE` (its leading fields; the kernel reads
/// only the size passed and takes the rest as zero).
#[repr(C)]
#[derive(Default)]
struct BpfMapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct BpfProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
#[derive(Default)]
struct BpfMapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (the XDP form).
#[repr(C)]
#[derive(Default)]
struct BpfLinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;

/// `bpf(cmd, attr, sizeof attr)`; a new descriptor (close-on-exec: the kernel
/// makes every BPF object descriptor so) or an error.
///
/// `attr` is one of this module's `#[repr(C)]` prefixes of `union bpf_attr`; the
/// pointers in it (instructions, license) point at memory the caller keeps alive
/// for the call, and the kernel writes nothing back for these commands.
fn bpf_fd<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live attribute block of the size passed whose pointers
    // are live (see above); the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An XSKMAP of `entries` queues.
pub(crate) fn xsk_map_create(entries: u32) -> io::Result<OwnedFd> {
    bpf_fd(
        BPF_MAP_CREATE,
        &BpfMapCreate {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            map_flags: 0,
        },
    )
}

/// Loads `insns` as an XDP program under `license`.
pub(crate) fn xdp_prog_load(insns: &[u64], license: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"twin_xsk");
    bpf_fd(
        BPF_PROG_LOAD,
        &BpfProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: u32::try_from(insns.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_XDP,
            ..Default::default()
        },
    )
}

/// Puts the socket `xsk` at `queue` of the XSKMAP `map`.
pub(crate) fn xsk_map_set(map: BorrowedFd<'_>, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    let key = queue;
    let value =
        u32::try_from(xsk.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let attr = BpfMapUpdate {
        map_fd: u32::try_from(map.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    // SAFETY: as in `bpf_fd`: a live attribute block whose key and value point at
    // locals of this frame; the command returns 0, not a descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            (&attr as *const BpfMapUpdate).cast::<libc::c_void>(),
            std::mem::size_of::<BpfMapUpdate>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the XDP program `prog` to interface `ifindex` (`flags`: the XDP
/// mode); the program stays attached while the returned link is open.
pub(crate) fn xdp_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    bpf_fd(
        BPF_LINK_CREATE,
        &BpfLinkCreate {
            prog_fd: u32::try_from(prog.as_raw_fd())
                .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        },
    )
}

/// Registers `len` bytes at `addr` (a mapping the caller keeps for the call) as
/// the UMEM of the AF_XDP socket `fd`, in chunks of `chunk`; the kernel pins the
/// pages, so they stay the socket's after the caller unmaps them.
pub(crate) fn xdp_umem_reg(fd: BorrowedFd<'_>, addr: u64, len: u64, chunk: u32) -> io::Result<()> {
    let reg = libc::xdp_umem_reg {
        addr,
        len,
        chunk_size: chunk,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt_at(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
}

/// Sets the size (entries) of one of the socket's rings (`XDP_RX_RING`,
/// `XDP_TX_RING`, `XDP_UMEM_FILL_RING`, `XDP_UMEM_COMPLETION_RING`).
pub(crate) fn xdp_ring_size(fd: BorrowedFd<'_>, ring: libc::c_int, entries: u32) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_XDP, ring, &entries)
}

/// Where each ring's producer, consumer, descriptors and flags lie in its mapping.
pub(crate) fn xdp_mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: `xdp_mmap_offsets` is plain integers: all-zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `off`, a live local of
    // that size, and the length it wrote into `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        // A kernel without the flags field (before 5.4): not supported.
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(off)
}

/// Binds the AF_XDP socket `fd` to queue `queue` of `ifindex` with `flags`
/// (`XDP_COPY`, `XDP_USE_NEED_WAKEUP`...).
pub(crate) fn xdp_bind(fd: BorrowedFd<'_>, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
    let sxdp = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `bind` reads one `sockaddr_xdp` of the size passed from `sxdp`, a
    // local of this frame.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sxdp as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })
}

/// Replaces `len` bytes at offset `at` of `space` (an anonymous mapping this
/// process owns) with a shared mapping of `fd` from `file_offset`, read-write.
/// `at` and `len` must be page multiples inside `space`; the pages are
/// populated at once (a ring's pages are the kernel's, never faulted in late).
pub(crate) fn map_shared_within(
    space: &vm_memory::MmapRegion<()>,
    at: usize,
    len: usize,
    fd: BorrowedFd<'_>,
    file_offset: u64,
) -> io::Result<()> {
    let page = 4096;
    let inside = at.checked_add(len).is_some_and(|end| end <= space.size());
    if !inside || len == 0 || !at.is_multiple_of(page) || !len.is_multiple_of(page) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let offset = libc::off_t::try_from(file_offset)
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `space.as_ptr() + at` is inside `space` (checked above), so the
    // pointer arithmetic stays in one allocation.
    let addr = unsafe { space.as_ptr().add(at) };
    // MAP_FIXED replaces only pages of `space`, which this process mapped and
    // `space` owns (it unmaps the whole range when dropped, pieces included); no
    // other mapping can be clobbered. Nothing holds a Rust reference into those
    // pages: the space is accessed only through volatile and atomic accessors.
    // SAFETY: the range is inside `space`, our own mapping (see above).
    let r = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            offset,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
