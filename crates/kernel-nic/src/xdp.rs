//! An AF_XDP socket on one queue of an interface (the next uplink kind): frames
//! the interface receives on that queue are redirected by a small XDP program into
//! the socket's receive ring, and frames put on its transmit ring leave through the
//! interface's driver. Its memory (the UMEM: fixed-size chunks the frames live in)
//! and its four rings are shared with the kernel.
//!
//! The work is split by privilege:
//!
//! * the switch attaches the redirect program with its XSKMAP to the interface
//!   ([`XdpProgram::attach`]; it stays attached while the switch holds it), and
//!   for each driver domain opens a socket ([`XdpProgram::open_socket`]): a UMEM
//!   in a memfd it registers, the ring sizes, `bind` to the queue, its entry in
//!   the map. It hands the domain the socket, the memfd and where the rings lie
//!   ([`XdpHandover`]);
//! * the domain maps them ([`XdpRings::map`]): no `socket`, no `bpf`, no
//!   `setsockopt`; a `send` of nothing wakes the kernel to transmit.
//!
//! The redirect program is five instructions (six slots), assembled here
//! ([`redirect_program`]) rather than compiled or loaded by a crate:
//! `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`, so a queue without
//! a socket passes its frames to the host's stack. (aya's loader would bring an
//! ELF parser and a BPF toolchain for five fixed instructions; clang's `-target
//! bpf` would add a build step and a compiler to every machine.)
//!
//! Everything the kernel writes is checked before use: ring indexes that move by
//! more than a ring, a descriptor whose chunk is outside the UMEM or not the
//! kernel's to return, a frame that leaves its chunk. Each is counted
//! ([`XdpRings::bad_descriptors`]) and the frame or chunk dropped, never used.
//!
//! Limits: copy mode (`XDP_COPY`: no driver here supports zero copy, and copy mode
//! works on every interface); one socket per queue; chunks of [`FRAME_SIZE`] with
//! the frame at the start of its chunk on transmit.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::ifname::IfName;
use crate::sys;

/// Bytes of one UMEM chunk.
pub const FRAME_SIZE: u32 = 2048;
/// How often `bind` is tried, 10 ms apart, while the queue is still the previous
/// socket's (two seconds).
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
/// receiving and half for transmitting, and each ring of `frames / 2` entries
/// (both powers of two).
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
    /// Entries of each ring.
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
    /// The shape handed over is not one a domain maps.
    #[error("bad UMEM shape {0:?}")]
    Geometry(XdpGeometry),
    /// A ring or the UMEM could not be mapped.
    #[error("cannot map the {0}")]
    Map(&'static str, #[source] vm_memory::mmap::MmapRegionError),
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
        let umem = rustix::fs::memfd_create("twin-umem", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(errno("the UMEM's memfd"))?;
        rustix::fs::ftruncate(&umem, geometry.umem_len() as u64)
            .map_err(errno("the UMEM's size"))?;
        {
            // Mapped for the registration only: the kernel pins the pages, and the
            // domain maps the memfd itself.
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
        let entries = geometry.ring_entries();
        for (ring, what) in [
            (libc::XDP_UMEM_FILL_RING, "the fill ring"),
            (libc::XDP_UMEM_COMPLETION_RING, "the completion ring"),
            (libc::XDP_RX_RING, "the receive ring"),
            (libc::XDP_TX_RING, "the transmit ring"),
        ] {
            sys::xdp_ring_size(socket.as_fd(), ring, entries).map_err(sys_err(what))?;
        }
        let o = sys::xdp_mmap_offsets(socket.as_fd()).map_err(sys_err("the rings' offsets"))?;
        let ring = |r: &libc::xdp_ring_offset| [r.producer, r.consumer, r.desc, r.flags];
        let layout = XdpLayout {
            geometry,
            rx: ring(&o.rx),
            tx: ring(&o.tx),
            fill: ring(&o.fr),
            completion: ring(&o.cr),
        };
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
            layout,
        })
    }
}

/// Where a socket's rings lie: per ring, the offsets of its producer index,
/// consumer index, descriptors and flags in its mapping (the kernel's
/// `xdp_mmap_offsets`), and the UMEM's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpLayout {
    /// The UMEM's shape.
    pub geometry: XdpGeometry,
    /// The receive ring.
    pub rx: [u64; 4],
    /// The transmit ring.
    pub tx: [u64; 4],
    /// The fill ring.
    pub fill: [u64; 4],
    /// The completion ring.
    pub completion: [u64; 4],
}

impl XdpLayout {
    /// Whether a domain can map it: a valid shape, every offset within the first
    /// page, each index word aligned.
    pub fn is_valid(&self) -> bool {
        self.geometry.is_valid()
            && [self.rx, self.tx, self.fill, self.completion]
                .iter()
                .all(|r| r.iter().all(|&o| o < 4096 && o % 4 == 0) && r[2] % 8 == 0)
    }
}

/// What the switch hands a domain: the bound socket, its UMEM's memfd, where the
/// rings lie.
#[derive(Debug)]
pub struct XdpHandover {
    /// The socket, bound to its queue and in the map.
    pub socket: OwnedFd,
    /// The UMEM (a memfd of the geometry's size).
    pub umem: OwnedFd,
    /// The rings' layout.
    pub layout: XdpLayout,
}

/// One mapped ring: indexes and descriptors at the kernel's offsets.
#[derive(Debug)]
struct Ring {
    map: MmapRegion<()>,
    producer: usize,
    consumer: usize,
    desc: usize,
    flags: usize,
    mask: u32,
}

impl Ring {
    fn map(
        fd: &OwnedFd,
        pgoff: u64,
        offsets: [u64; 4],
        entries: u32,
        desc_size: usize,
        what: &'static str,
    ) -> Result<Ring, XdpError> {
        let len = offsets[2] as usize + entries as usize * desc_size;
        let copy = fd.try_clone().map_err(XdpError::Copy)?;
        let map = MmapRegion::build(
            Some(vm_memory::FileOffset::new(File::from(copy), pgoff)),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
        )
        .map_err(|e| XdpError::Map(what, e))?;
        Ok(Ring {
            map,
            producer: offsets[0] as usize,
            consumer: offsets[1] as usize,
            desc: offsets[2] as usize,
            flags: offsets[3] as usize,
            mask: entries - 1,
        })
    }

    fn load(&self, at: usize) -> u32 {
        self.map
            .get_slice(at, 4)
            .and_then(|s| s.load::<u32>(0, Ordering::Acquire))
            .unwrap_or(0)
    }

    fn store(&self, at: usize, v: u32) {
        let _ = self
            .map
            .get_slice(at, 4)
            .and_then(|s| s.store(v, 0, Ordering::Release));
    }

    fn needs_wakeup(&self) -> bool {
        self.load(self.flags) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// The `u64` of an address ring's entry `i`.
    fn addr(&self, i: u32) -> u64 {
        read_u64(&self.map, self.desc + (i & self.mask) as usize * 8)
    }

    fn set_addr(&self, i: u32, addr: u64) {
        write(&self.map, self.desc + (i & self.mask) as usize * 8, addr);
    }

    /// A descriptor ring's entry `i`: address and length, each read once.
    fn desc(&self, i: u32) -> (u64, u32) {
        let at = self.desc + (i & self.mask) as usize * 16;
        let len = self
            .map
            .get_slice(at + 8, 4)
            .and_then(|s| s.read_obj::<u32>(0))
            .unwrap_or(0);
        (read_u64(&self.map, at), len)
    }

    fn set_desc(&self, i: u32, addr: u64, len: u32) {
        let at = self.desc + (i & self.mask) as usize * 16;
        write(&self.map, at, addr);
        write(&self.map, at + 8, len);
        write(&self.map, at + 12, 0u32);
    }
}

/// The `u64` at `at` (`u64::MAX`, outside every UMEM, if it is not mapped).
fn read_u64(map: &MmapRegion<()>, at: usize) -> u64 {
    map.get_slice(at, 8)
        .and_then(|s| s.read_obj::<u64>(0))
        .unwrap_or(u64::MAX)
}

fn write<T: vm_memory::ByteValued>(map: &MmapRegion<()>, at: usize, v: T) {
    if let Ok(s) = map.get_slice(at, std::mem::size_of::<T>()) {
        let _ = s.write_obj(v, 0);
    }
}

/// Who holds a UMEM chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// On the fill ring or the receive ring: the kernel's until it is received.
    KernelRx,
    /// Free for a frame to transmit.
    FreeTx,
    /// On the transmit ring: the kernel's until it completes.
    KernelTx,
}

/// What [`XdpRings::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpSend {
    /// The frame is on the transmit ring, handed over at the next [`XdpRings::kick`].
    Queued,
    /// No transmit chunk is free.
    Full,
    /// The frame is larger than a chunk.
    TooLong,
}

/// A domain's mapping of an AF_XDP socket: the UMEM and the four rings.
#[derive(Debug)]
pub struct XdpRings {
    fd: OwnedFd,
    umem: MmapRegion<()>,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    completion: Ring,
    geometry: XdpGeometry,
    holders: Vec<Holder>,
    free_tx: Vec<u32>,
    rx_cons: u32,
    fill_prod: u32,
    tx_prod: u32,
    comp_cons: u32,
    tx_pending: u32,
    bad: u64,
}

impl XdpRings {
    /// Maps the UMEM and the rings of a socket from [`XdpProgram::open_socket`]
    /// and gives the kernel the receive half of the UMEM.
    pub fn map(socket: OwnedFd, umem: OwnedFd, layout: XdpLayout) -> Result<XdpRings, XdpError> {
        let g = layout.geometry;
        if !layout.is_valid() {
            return Err(XdpError::Geometry(g));
        }
        let umem_map = MmapRegion::build(
            Some(vm_memory::FileOffset::new(File::from(umem), 0)),
            g.umem_len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| XdpError::Map("UMEM", e))?;
        let n = g.ring_entries();
        let rx = Ring::map(
            &socket,
            libc::XDP_PGOFF_RX_RING as u64,
            layout.rx,
            n,
            16,
            "receive ring",
        )?;
        let tx = Ring::map(
            &socket,
            libc::XDP_PGOFF_TX_RING as u64,
            layout.tx,
            n,
            16,
            "transmit ring",
        )?;
        let fill = Ring::map(
            &socket,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            layout.fill,
            n,
            8,
            "fill ring",
        )?;
        let completion = Ring::map(
            &socket,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            layout.completion,
            n,
            8,
            "completion ring",
        )?;
        let half = g.frames / 2;
        let mut holders = vec![Holder::KernelRx; half as usize];
        holders.resize(g.frames as usize, Holder::FreeTx);
        let mut r = XdpRings {
            fd: socket,
            umem: umem_map,
            rx,
            tx,
            fill,
            completion,
            geometry: g,
            holders,
            // Taken from the end: the lowest chunk first.
            free_tx: (half..g.frames).rev().collect(),
            rx_cons: 0,
            fill_prod: 0,
            tx_prod: 0,
            comp_cons: 0,
            tx_pending: 0,
            bad: 0,
        };
        r.rx_cons = r.rx.load(r.rx.consumer);
        r.fill_prod = r.fill.load(r.fill.producer);
        r.tx_prod = r.tx.load(r.tx.producer);
        r.comp_cons = r.completion.load(r.completion.consumer);
        for c in 0..half {
            r.fill
                .set_addr(r.fill_prod, u64::from(c) * u64::from(FRAME_SIZE));
            r.fill_prod = r.fill_prod.wrapping_add(1);
        }
        r.fill.store(r.fill.producer, r.fill_prod);
        Ok(r)
    }

    /// The chunk an address is in, if it is inside the UMEM.
    fn chunk_of(&self, addr: u64) -> Option<usize> {
        let c = addr / u64::from(FRAME_SIZE);
        (c < u64::from(self.geometry.frames)).then_some(c as usize)
    }

    /// Receives up to `max` frames: each is copied into `buf` and passed to `f`,
    /// and its chunk goes back to the kernel. Returns the frames passed on.
    pub fn recv(&mut self, buf: &mut [u8], max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let prod = self.rx.load(self.rx.producer);
        let ready = prod.wrapping_sub(self.rx_cons);
        if ready > self.rx.mask + 1 {
            // The kernel's index ran past the ring: nothing of it is believed.
            self.bad += 1;
            return 0;
        }
        let n = (ready as usize).min(max) as u32;
        // Room on the fill ring, read once per batch (the kernel's consumer only
        // moves forward, so the room only grows meanwhile).
        let queued = self
            .fill_prod
            .wrapping_sub(self.fill.load(self.fill.consumer));
        let mut fill_room = (self.fill.mask + 1).saturating_sub(queued);
        let mut got = 0;
        for i in 0..n {
            let (addr, len) = self.rx.desc(self.rx_cons.wrapping_add(i));
            let Some(c) = self.chunk_of(addr) else {
                self.bad += 1;
                continue;
            };
            if self.holders[c] != Holder::KernelRx {
                // Not a chunk the kernel may return: left where it is.
                self.bad += 1;
                continue;
            }
            let in_chunk = (addr % u64::from(FRAME_SIZE)) as usize;
            let len = len as usize;
            let fits = in_chunk + len <= FRAME_SIZE as usize && len <= buf.len();
            match self.umem.get_slice(addr as usize, len) {
                Ok(s) if fits && len >= twin_wire::ether::ETH_HLEN => {
                    s.copy_to(&mut buf[..len]);
                    f(&buf[..len]);
                    got += 1;
                }
                _ => self.bad += 1,
            }
            // Back on the fill ring at the chunk's start, unless the ring is full
            // (only a kernel that returned a chunk twice can make it so: the ring
            // holds every receive chunk).
            if fill_room == 0 {
                self.bad += 1;
                continue;
            }
            fill_room -= 1;
            self.fill
                .set_addr(self.fill_prod, c as u64 * u64::from(FRAME_SIZE));
            self.fill_prod = self.fill_prod.wrapping_add(1);
        }
        if n > 0 {
            self.rx_cons = self.rx_cons.wrapping_add(n);
            self.rx.store(self.rx.consumer, self.rx_cons);
            self.fill.store(self.fill.producer, self.fill_prod);
        }
        got
    }

    /// Takes back the chunks the kernel finished transmitting.
    fn complete(&mut self) {
        let prod = self.completion.load(self.completion.producer);
        let done = prod.wrapping_sub(self.comp_cons);
        if done > self.completion.mask + 1 {
            self.bad += 1;
            return;
        }
        for i in 0..done {
            let addr = self.completion.addr(self.comp_cons.wrapping_add(i));
            match self.chunk_of(addr) {
                Some(c) if self.holders[c] == Holder::KernelTx => {
                    self.holders[c] = Holder::FreeTx;
                    self.free_tx.push(c as u32);
                }
                _ => self.bad += 1,
            }
        }
        if done > 0 {
            self.comp_cons = self.comp_cons.wrapping_add(done);
            self.completion
                .store(self.completion.consumer, self.comp_cons);
        }
    }

    /// Puts `frame` on the transmit ring when a chunk is free.
    pub fn send(&mut self, frame: &[u8]) -> XdpSend {
        if frame.len() > FRAME_SIZE as usize {
            return XdpSend::TooLong;
        }
        if self.free_tx.is_empty() {
            self.complete();
        }
        let Some(c) = self.free_tx.pop() else {
            return XdpSend::Full;
        };
        let addr = u64::from(c) * u64::from(FRAME_SIZE);
        if let Ok(s) = self.umem.get_slice(addr as usize, frame.len()) {
            s.copy_from(frame);
        }
        self.holders[c as usize] = Holder::KernelTx;
        self.tx.set_desc(self.tx_prod, addr, frame.len() as u32);
        self.tx_prod = self.tx_prod.wrapping_add(1);
        self.tx_pending += 1;
        XdpSend::Queued
    }

    /// Hands the queued frames to the kernel and, while it has not taken them all
    /// and asks for it, wakes it (a `send` of nothing; in copy mode the kernel
    /// transmits a bounded batch per call, so it may take several). An error
    /// means the interface is gone or down.
    pub fn kick(&mut self) -> std::io::Result<()> {
        if self.tx_pending > 0 {
            self.tx_pending = 0;
            self.tx.store(self.tx.producer, self.tx_prod);
        }
        // At most one call per kernel batch (32 frames) of a full ring, and one more.
        for _ in 0..(self.tx.mask + 1) / 32 + 2 {
            let taken = self.tx.load(self.tx.consumer);
            if taken == self.tx_prod || !self.tx.needs_wakeup() {
                return Ok(());
            }
            match rustix::net::send(&self.fd, &[], rustix::net::SendFlags::DONTWAIT) {
                // More to send: call again.
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                // Busy or out of buffers: the frames stay queued for the next kick.
                Err(rustix::io::Errno::BUSY) | Err(rustix::io::Errno::NOBUFS) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether frames wait on the transmit ring for the kernel (the next
    /// [`XdpRings::kick`] should be made even without new ones).
    pub fn tx_waiting(&self) -> bool {
        self.tx.load(self.tx.consumer) != self.tx_prod
    }

    /// Whether the socket is still bound: a deleted interface unbinds it, and a
    /// read (of nothing: AF_XDP has no data to read) then says so. `Err` when
    /// it is gone.
    pub fn check_bound(&self) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        match rustix::io::read(&self.fd, &mut b) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Descriptors and indexes from the kernel that failed the checks.
    pub fn bad_descriptors(&self) -> u64 {
        self.bad
    }

    /// The socket, to wait on (readable when frames were received).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: u32 = 64;
    const ENTRIES: u32 = FRAMES / 2;
    /// Where the fake kernel keeps each ring's fields: producer, consumer,
    /// descriptors, flags.
    const OFFSETS: [u64; 4] = [0, 64, 256, 128];

    /// Rings over a sparse memfd standing in for the socket (mapped at the same
    /// page offsets), and the "kernel's" view of each ring.
    struct Fake {
        rings: XdpRings,
        rx: Ring,
        fill: Ring,
        completion: Ring,
    }

    fn memfd(len: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("xdp-fake", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    fn fake() -> Fake {
        let socket = memfd(libc::XDP_UMEM_PGOFF_COMPLETION_RING + (1 << 20));
        let umem = memfd(u64::from(FRAMES * FRAME_SIZE));
        let layout = XdpLayout {
            geometry: XdpGeometry { frames: FRAMES },
            rx: OFFSETS,
            tx: OFFSETS,
            fill: OFFSETS,
            completion: OFFSETS,
        };
        let view =
            |pgoff, size, what| Ring::map(&socket, pgoff, OFFSETS, ENTRIES, size, what).unwrap();
        let rx = view(libc::XDP_PGOFF_RX_RING as u64, 16, "rx");
        let fill = view(libc::XDP_UMEM_PGOFF_FILL_RING, 8, "fill");
        let completion = view(libc::XDP_UMEM_PGOFF_COMPLETION_RING, 8, "completion");
        let rings = XdpRings::map(socket, umem, layout).unwrap();
        Fake {
            rings,
            rx,
            fill,
            completion,
        }
    }

    impl Fake {
        /// The kernel takes a chunk from the fill ring and receives a frame of
        /// `len` at `addr`.
        fn kernel_rx(&mut self, addr: u64, len: u32) {
            let taken = self.fill.load(self.fill.consumer);
            self.fill.store(self.fill.consumer, taken.wrapping_add(1));
            let prod = self.rx.load(self.rx.producer);
            self.rx.set_desc(prod, addr, len);
            self.rx.store(self.rx.producer, prod.wrapping_add(1));
        }

        fn recv(&mut self) -> Vec<Vec<u8>> {
            let mut buf = vec![0u8; FRAME_SIZE as usize];
            let mut got = Vec::new();
            self.rings.recv(&mut buf, 64, |f| got.push(f.to_vec()));
            got
        }
    }

    #[test]
    fn the_receive_half_is_given_to_the_kernel_at_start() {
        let f = fake();
        assert_eq!(f.fill.load(f.fill.producer), ENTRIES);
        let addrs: Vec<u64> = (0..ENTRIES).map(|i| f.fill.addr(i)).collect();
        let want: Vec<u64> = (0..ENTRIES).map(|c| u64::from(c * FRAME_SIZE)).collect();
        assert_eq!(addrs, want);
    }

    #[test]
    fn a_received_frame_is_passed_on_and_its_chunk_refilled() {
        let mut f = fake();
        let frame: Vec<u8> = (0..60u8).collect();
        // At an offset inside chunk 3, as the kernel puts frames after headroom.
        let addr = u64::from(3 * FRAME_SIZE + 256);
        f.rings
            .umem
            .get_slice(addr as usize, 60)
            .unwrap()
            .copy_from(&frame);
        f.kernel_rx(addr, 60);
        assert_eq!(f.recv(), vec![frame]);
        assert_eq!(f.rx.load(f.rx.consumer), 1);
        assert_eq!(f.fill.load(f.fill.producer), ENTRIES + 1);
        assert_eq!(f.fill.addr(ENTRIES), u64::from(3 * FRAME_SIZE));
        assert_eq!(f.rings.bad_descriptors(), 0);
    }

    #[test]
    fn lies_in_receive_descriptors_are_counted_and_nothing_of_them_used() {
        let mut f = fake();
        let tx_chunk = u64::from(ENTRIES * FRAME_SIZE);
        for (addr, len) in [
            // Outside the UMEM.
            (u64::from(FRAMES * FRAME_SIZE), 60),
            (u64::MAX - 10, 60),
            // A transmit chunk, never given to the kernel for receiving.
            (tx_chunk, 60),
            // Leaves its chunk.
            (u64::from(FRAME_SIZE) - 30, 60),
            // Shorter than an Ethernet header.
            (0, 10),
        ] {
            f.kernel_rx(addr, len);
        }
        assert!(f.recv().is_empty());
        assert_eq!(f.rings.bad_descriptors(), 5);
        // Only the two in receive chunks went back to the kernel.
        assert_eq!(f.fill.load(f.fill.producer), ENTRIES + 2);
        // An index that runs more than a ring ahead: nothing is read.
        let cons = f.rx.load(f.rx.consumer);
        f.rx.store(f.rx.producer, cons.wrapping_add(ENTRIES + 1));
        assert!(f.recv().is_empty());
        assert_eq!(f.rings.bad_descriptors(), 6);
        assert_eq!(f.rx.load(f.rx.consumer), cons, "nothing consumed");
    }

    #[test]
    fn only_chunks_in_flight_complete() {
        let mut f = fake();
        let frame = [7u8; 60];
        for _ in 0..ENTRIES {
            assert_eq!(f.rings.send(&frame), XdpSend::Queued);
        }
        assert_eq!(f.rings.send(&frame), XdpSend::Full);
        // The kernel completes a receive chunk (a lie), a chunk outside the UMEM
        // (a lie) and the first transmit chunk.
        let first_tx = u64::from(ENTRIES * FRAME_SIZE);
        for (i, addr) in [0, u64::from(FRAMES * FRAME_SIZE), first_tx]
            .into_iter()
            .enumerate()
        {
            f.completion.set_addr(i as u32, addr);
        }
        f.completion.store(f.completion.producer, 3);
        assert_eq!(f.rings.send(&frame), XdpSend::Queued, "the completed chunk");
        assert_eq!(f.rings.bad_descriptors(), 2);
        assert_eq!(f.rings.send(&frame), XdpSend::Full);
        // Completed twice: the second is a lie.
        f.completion.set_addr(3, first_tx);
        f.completion.set_addr(4, first_tx);
        f.completion.store(f.completion.producer, 5);
        assert_eq!(f.rings.send(&frame), XdpSend::Queued);
        assert_eq!(f.rings.bad_descriptors(), 3);
        assert_eq!(f.rings.send(&[0u8; 4096]), XdpSend::TooLong);
    }

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
