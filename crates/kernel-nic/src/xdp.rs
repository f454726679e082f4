//! An AF_XDP socket on one queue of an interface (the next uplink kind): frames
//! the interface receives on that queue are redirected by a small XDP program into
//! the socket's receive ring, and frames put on its transmit ring leave through the
//! interface's driver. Its memory (the UMEM: fixed-size chunks the frames live in)
//! and its four rings are shared with the kernel.
//!
//! The work is split by privilege:
//!
//! * the switch attaches the redirect program with its XSKMAP to the interface
//!   ([`XdpProgram::attach`]; it stays attached while the switch holds it: one
//!   per uplink, shared by its queues' domains through an [`XdpAttachment`]), and
//!   for each driver domain opens a socket ([`XdpProgram::open_socket`]): a UMEM
//!   in a memfd it registers, the ring sizes, `bind` to the queue, its entry in
//!   the map, and a sealed memfd for the driver's state. It hands the domain the
//!   socket, both memfds and the driver's layout ([`XdpHandover`]);
//! * the domain maps them into one space ([`map_space`]) and runs the AF_XDP
//!   driver (crate `af-xdp-driver`) over it: no `socket`, no `bpf`, no
//!   `setsockopt`; a `send` of nothing wakes the kernel to transmit
//!   ([`wake_tx`]). The switch maps the same space for the driver's twin.
//!
//! The redirect program is five instructions (six slots), assembled here
//! ([`redirect_program`]) rather than compiled or loaded by a crate:
//! `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`, so a queue without
//! a socket passes its frames to the host's stack. (aya's loader would bring an
//! ELF parser and a BPF toolchain for five fixed instructions; clang's `-target
//! bpf` would add a build step and a compiler to every machine.)
//!
//! The driver checks everything the kernel writes before use (ring indexes that
//! move by more than a ring, a descriptor whose chunk is outside the UMEM or not
//! the kernel's to return, a frame that leaves its chunk).
//!
//! Limits: copy mode (`XDP_COPY`: no driver here supports zero copy, and copy mode
//! works on every interface); one socket per queue, and the queues of one
//! interface belong to one uplink (one program per interface); chunks of [`FRAME_SIZE`] with
//! the frame at the start of its chunk on transmit.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use af_xdp_driver::RingOffsets;
pub use af_xdp_driver::{XdpConfig, XdpLayout, FRAME_SIZE};
use vm_memory::MmapRegion;

use crate::ifname::IfName;
use crate::space::{map_pieces, sealed_memfd, Piece, SpaceError};
use crate::sys;

/// How often `bind` (or attaching the program) is tried, 10 ms apart, while the
/// queue (or the interface) is still the previous socket's (program's): two
/// seconds.
const BIND_TRIES: u32 = 200;
/// `XDP_PASS`: what the program does with a frame of a queue without a socket.
const XDP_PASS: i32 = 2;
/// `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_FLAGS_SKB_MODE`, `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): fastest, where the driver supports it.
    Native,
    /// In the kernel's generic path (`XDP_FLAGS_SKB_MODE`): every interface.
    #[default]
    Generic,
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            _ => Err(format!("{s:?} is not an XDP mode (native, generic)")),
        }
    }
}

/// The UMEM's and the rings' shape: `frames` chunks of [`FRAME_SIZE`], half for
/// receiving and half for transmitting; the fill ring of `frames` entries, the
/// others of `frames / 2` (all powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpGeometry {
    /// Chunks in the UMEM.
    pub frames: u32,
}

impl Default for XdpGeometry {
    /// 4096 chunks (8 MiB), rings of 2048.
    fn default() -> Self {
        XdpGeometry { frames: 4096 }
    }
}

impl XdpGeometry {
    /// Entries of the completion, receive and transmit rings (the fill ring
    /// has `frames`: see `XdpLayout::entries`).
    pub fn ring_entries(&self) -> u32 {
        self.frames / 2
    }

    /// Bytes of the UMEM.
    pub fn umem_len(&self) -> usize {
        self.frames as usize * FRAME_SIZE as usize
    }

    /// Whether a domain can map it: a power of two from 64 to 65536 chunks.
    pub fn is_valid(&self) -> bool {
        self.frames.is_power_of_two() && (64..=65536).contains(&self.frames)
    }
}

/// Why an AF_XDP socket or its program could not be set up or mapped.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No such interface.
    #[error("no interface {0}")]
    NoInterface(IfName),
    /// A system call failed.
    #[error("AF_XDP on {name}: {what}")]
    Sys {
        /// The interface.
        name: IfName,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The UMEM shape asked for is not one the driver takes.
    #[error("bad UMEM shape {0:?}")]
    Geometry(XdpGeometry),
    /// A ring or the UMEM could not be mapped.
    #[error("cannot map the {0}")]
    Map(&'static str, #[source] vm_memory::mmap::MmapRegionError),
    /// The driver's space could not be built.
    #[error("cannot map the driver's space")]
    Space(#[from] SpaceError),
    /// The kernel's ring offsets give no layout the driver accepts.
    #[error("the kernel's ring offsets give no usable layout")]
    Layout(#[source] af_xdp_driver::XdpLayoutError),
    /// A descriptor could not be copied.
    #[error("cannot copy a descriptor")]
    Copy(#[source] std::io::Error),
}

/// The redirect program: `return bpf_redirect_map(&xsks, ctx->rx_queue_index,
/// XDP_PASS);` with `xsks` the map at `map_fd`. One `u64` per instruction
/// (`struct bpf_insn`: opcode, registers, offset, immediate, little-endian).
pub fn redirect_program(map_fd: i32) -> [u64; 6] {
    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        (code as u64)
            | (((src << 4) | dst) as u64) << 8
            | ((off as u16) as u64) << 16
            | ((imm as u32) as u64) << 32
    }
    [
        // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index (BPF_LDX | BPF_W | BPF_MEM).
        insn(0x61, 2, 1, 16, 0),
        // r1 = the map (BPF_LD | BPF_DW | BPF_IMM, BPF_PSEUDO_MAP_FD), two slots.
        insn(0x18, 1, 1, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // r3 = XDP_PASS (BPF_ALU64 | BPF_MOV | BPF_K): the action for a queue
        // without a socket.
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // call bpf_redirect_map (BPF_JMP | BPF_CALL); its result is r0.
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // return r0 (BPF_JMP | BPF_EXIT).
        insn(0x95, 0, 0, 0, 0),
    ]
}

fn ifindex(name: &IfName) -> Result<u32, XdpError> {
    let sys_err = |what| {
        move |e: rustix::io::Errno| XdpError::Sys {
            name: name.clone(),
            what,
            source: e.into(),
        }
    };
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(sys_err("a socket to look the interface up"))?;
    match rustix::net::netdevice::name_to_index(&sock, name.as_str()) {
        Ok(i) => Ok(i),
        Err(rustix::io::Errno::NODEV) => Err(XdpError::NoInterface(name.clone())),
        Err(e) => Err(sys_err("interface index")(e)),
    }
}

/// The redirect program attached to an interface with its XSKMAP: the interface's
/// frames on a queue with a socket go to that socket. Detached when dropped.
#[derive(Debug)]
pub struct XdpProgram {
    name: IfName,
    ifindex: u32,
    queues: u32,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl XdpProgram {
    /// Loads the program with a map for queues `0..queues` and attaches it to
    /// `name` in `mode` (needs `CAP_NET_ADMIN` and `CAP_BPF` or root).
    pub fn attach(name: &IfName, queues: u32, mode: XdpMode) -> Result<XdpProgram, XdpError> {
        let ifindex = ifindex(name)?;
        let sys_err = |what| {
            move |source| XdpError::Sys {
                name: name.clone(),
                what,
                source,
            }
        };
        let map = sys::xsk_map_create(queues.max(1)).map_err(sys_err("the XSKMAP"))?;
        let insns = redirect_program(std::os::fd::AsRawFd::as_raw_fd(&map));
        let prog = sys::xdp_prog_load(&insns, c"Dual MIT/GPL")
            .map_err(sys_err("loading the redirect program"))?;
        let flags = match mode {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        };
        let link = sys::xdp_link_create(prog.as_fd(), ifindex, flags)
            .map_err(sys_err("attaching the program"))?;
        Ok(XdpProgram {
            name: name.clone(),
            ifindex,
            queues: queues.max(1),
            map,
            _prog: prog,
            _link: link,
        })
    }

    /// Opens a socket on `queue` with a UMEM and rings of `geometry`, bound and
    /// entered in the map (replacing the previous socket of that queue).
    pub fn open_socket(&self, queue: u32, geometry: XdpGeometry) -> Result<XdpHandover, XdpError> {
        let name = &self.name;
        let sys_err = |what| {
            move |source| XdpError::Sys {
                name: name.clone(),
                what,
                source,
            }
        };
        if !geometry.is_valid() {
            return Err(XdpError::Geometry(geometry));
        }
        if queue >= self.queues {
            return Err(sys_err("queue")(std::io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let errno = |what| move |e: rustix::io::Errno| sys_err(what)(e.into());
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::XDP,
            rustix::net::SocketType::RAW,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )
        .map_err(errno("socket"))?;
        let umem = sealed_memfd("twin-umem", geometry.umem_len() as u64)
            .map_err(errno("the UMEM's memfd"))?;
        {
            // Mapped for the registration only: the kernel pins the pages, and the
            // domain (and a twin) map the memfd themselves.
            let copy = umem.try_clone().map_err(XdpError::Copy)?;
            let map = MmapRegion::<()>::build(
                Some(vm_memory::FileOffset::new(File::from(copy), 0)),
                geometry.umem_len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
            )
            .map_err(|e| XdpError::Map("UMEM", e))?;
            sys::xdp_umem_reg(
                socket.as_fd(),
                map.as_ptr() as u64,
                geometry.umem_len() as u64,
                FRAME_SIZE,
            )
            .map_err(sys_err("registering the UMEM"))?;
        }
        // As the driver's layout has them: the fill ring twice the others.
        let entries = geometry.ring_entries();
        for (ring, entries, what) in [
            (libc::XDP_UMEM_FILL_RING, geometry.frames, "the fill ring"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                entries,
                "the completion ring",
            ),
            (libc::XDP_RX_RING, entries, "the receive ring"),
            (libc::XDP_TX_RING, entries, "the transmit ring"),
        ] {
            sys::xdp_ring_size(socket.as_fd(), ring, entries).map_err(sys_err(what))?;
        }
        let o = sys::xdp_mmap_offsets(socket.as_fd()).map_err(sys_err("the rings' offsets"))?;
        let ring = |r: &libc::xdp_ring_offset| RingOffsets {
            producer: r.producer,
            consumer: r.consumer,
            desc: r.desc,
            flags: r.flags,
        };
        let layout = XdpLayout::new(XdpConfig {
            frames: geometry.frames,
            fill: ring(&o.fr),
            completion: ring(&o.cr),
            rx: ring(&o.rx),
            tx: ring(&o.tx),
        })
        .map_err(XdpError::Layout)?;
        let state = sealed_memfd("twin-xdp-state", layout.state_len)
            .map_err(errno("the driver's state memfd"))?;
        // The previous socket of the queue (a dead domain's) lets go of it only
        // after its last descriptor closed and the kernel's deferred clean-up ran:
        // until then `bind` says EBUSY.
        let mut tries = 0;
        loop {
            match sys::xdp_bind(
                socket.as_fd(),
                self.ifindex,
                queue,
                libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            ) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < BIND_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(sys_err("bind")(e)),
            }
        }
        sys::xsk_map_set(self.map.as_fd(), queue, socket.as_fd())
            .map_err(sys_err("the map's entry"))?;
        Ok(XdpHandover {
            socket,
            umem,
            state,
            layout,
        })
    }
}

/// One uplink's redirect program, shared by the domains of its queues: attached
/// when the first of them starts ([`XdpAttachment::program`]), kept while one
/// of them holds it, detached after the last is gone, and attached anew to an
/// interface deleted and created again under the same name. The kernel takes
/// one program per interface, so every AF_XDP queue of an interface must come
/// through one attachment.
#[derive(Debug)]
pub struct XdpAttachment {
    name: IfName,
    queues: u32,
    mode: XdpMode,
    current: Mutex<Weak<XdpProgram>>,
}

impl XdpAttachment {
    /// The program for queues `0..queues` of `name`, in `mode`, not attached yet.
    pub fn new(name: IfName, queues: u32, mode: XdpMode) -> Self {
        XdpAttachment {
            name,
            queues,
            mode,
            current: Mutex::new(Weak::new()),
        }
    }

    /// The interface.
    pub fn name(&self) -> &IfName {
        &self.name
    }

    /// The program, attached: the one a queue's domain holds now, if it is on the
    /// interface of that name now, or else a new one. A previous program
    /// (dropped with the last domain that held it) may still be going away:
    /// while the interface says it is busy, this tries again for up to two
    /// seconds.
    pub fn program(&self) -> Result<Arc<XdpProgram>, XdpError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = current.upgrade() {
            if ifindex(&self.name).ok() == Some(p.ifindex) {
                return Ok(p);
            }
        }
        let mut tries = 0;
        let p = loop {
            match XdpProgram::attach(&self.name, self.queues, self.mode) {
                Err(XdpError::Sys { source, .. })
                    if source.kind() == std::io::ErrorKind::ResourceBusy && tries < BIND_TRIES =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break Arc::new(r?),
            }
        };
        *current = Arc::downgrade(&p);
        Ok(p)
    }
}

/// What the switch hands a domain: the bound socket, its UMEM's memfd, the
/// driver's state memfd, and the driver's layout (from the kernel's ring offsets).
#[derive(Debug)]
pub struct XdpHandover {
    /// The socket, bound to its queue and in the map.
    pub socket: OwnedFd,
    /// The UMEM (a sealed memfd of the geometry's size).
    pub umem: OwnedFd,
    /// The driver's state, the first piece of its space (a sealed memfd).
    pub state: OwnedFd,
    /// Where everything lies in the driver's space.
    pub layout: XdpLayout,
}

/// Maps the driver's space of an AF_XDP socket: one reservation of
/// `layout.len` bytes, with the state memfd, the four rings (mappings of the
/// socket) and the UMEM placed at the layout's offsets. The driver domain and
/// the switch (for the twin) map the same pieces at the same offsets, so a
/// driver address means the same in both. Dropping the mapping unmaps all of
/// it.
pub fn map_space(
    layout: &XdpLayout,
    state: BorrowedFd<'_>,
    socket: BorrowedFd<'_>,
    umem: BorrowedFd<'_>,
) -> Result<MmapRegion<()>, XdpError> {
    let piece = |at, len, fd, file_offset, what| Piece {
        at,
        len,
        fd,
        file_offset,
        what,
    };
    let pieces = [
        piece(0, layout.state_len, state, 0, "state"),
        piece(
            layout.fill.base,
            layout.fill.len,
            socket,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            "fill ring",
        ),
        piece(
            layout.completion.base,
            layout.completion.len,
            socket,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            "completion ring",
        ),
        piece(
            layout.rx.base,
            layout.rx.len,
            socket,
            libc::XDP_PGOFF_RX_RING as u64,
            "receive ring",
        ),
        piece(
            layout.tx.base,
            layout.tx.len,
            socket,
            libc::XDP_PGOFF_TX_RING as u64,
            "transmit ring",
        ),
        piece(layout.umem, layout.umem_len(), umem, 0, "UMEM"),
    ];
    Ok(map_pieces(layout.len, &pieces)?)
}

/// Whether the socket is still bound: a deleted interface unbinds it, and a read
/// (of nothing: AF_XDP has no data to read) then says so. `Err` when it is gone.
pub fn check_bound(socket: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    match rustix::io::read(socket, &mut b) {
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Wakes the kernel to transmit what is on the socket's transmit ring (a `send`
/// of nothing). Busy or out of buffers is not an error: the frames stay queued
/// for the next wake-up.
pub fn wake_tx(socket: BorrowedFd<'_>) -> std::io::Result<()> {
    match rustix::net::send(socket, &[], rustix::net::SendFlags::DONTWAIT) {
        Ok(_)
        | Err(rustix::io::Errno::AGAIN)
        | Err(rustix::io::Errno::BUSY)
        | Err(rustix::io::Errno::NOBUFS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_five_instructions_of_the_kernels_encoding() {
        let p = redirect_program(7);
        // r2 = *(u32 *)(r1 + 16): opcode 0x61, dst 2, src 1, offset 16.
        assert_eq!(p[0], 0x0010_1261);
        // ld_imm64 r1 with the map fd in the immediate, pseudo-map source.
        assert_eq!(p[1] & 0xff, 0x18);
        assert_eq!((p[1] >> 8) & 0xff, 0x11);
        assert_eq!(p[1] >> 32, 7);
        assert_eq!(p[2], 0);
        assert_eq!(p[3], (2u64 << 32) | 0x03b7);
        assert_eq!(p[4], (51u64 << 32) | 0x85);
        assert_eq!(p[5], 0x95);
    }
}
