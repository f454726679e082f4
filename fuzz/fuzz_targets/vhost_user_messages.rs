//! A hostile vhost-user client's messages, into the device's request handler.
//!
//! The input is a device configuration and a sequence of requests, each one what
//! `vhost` hands the handler after decoding a message: memory tables of small
//! memfds (sealed or not, any offset, size and address), ring sizes, addresses,
//! bases, kick/call/err eventfds, enables, config reads, features. Between requests
//! the data path adopts the published snapshot and runs both rings over whatever
//! the client wrote into its memory (the input writes it too), and the client may
//! shrink its memory files under the mappings (a contained SIGBUS).
//!
//! Checked: no panic, no hang (a ring stop does not wait for an acknowledgement
//! here), and after every request the handler's invariants (memory table within
//! the caps, reservation equal to the table in force, no overlapping regions, only
//! valid ring sizes accepted; `FuzzDevice::check`).
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use twin_wire::features::{DEVICE_OFFER, VHOST_USER_F_PROTOCOL_FEATURES};
use twin_wire::Segments;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserMemoryRegion, VhostUserSingleMemoryRegion,
    VhostUserVringAddrFlags,
};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;
use vhost_device::fuzzing::FuzzDevice;
use vhost_device::{DeviceConfig, MemoryBudget};
use vm_memory::VolatileSlice;

const PAGE: u64 = 4096;
/// Client virtual addresses start here (QEMU-like).
const UA: u64 = 0x7f00_0000_0000;
/// Most files the harness keeps to write into or shrink.
const MAX_FILES: usize = 40;

#[derive(Arbitrary, Debug)]
struct Input {
    cap_pages: u8,
    budget_pages: Option<u8>,
    max_queue_size: u16,
    msgs: Vec<Msg>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Gpa {
    Page(u8),
    Raw(u64),
}

impl Gpa {
    fn get(self) -> u64 {
        match self {
            Gpa::Page(p) => u64::from(p) * PAGE,
            Gpa::Raw(v) => v,
        }
    }
}

/// A client virtual address: near the client's base, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Va {
    Page(u8),
    Off(u32),
    Raw(u64),
}

impl Va {
    fn get(self) -> u64 {
        match self {
            Va::Page(p) => UA + u64::from(p) * PAGE,
            Va::Off(o) => UA + u64::from(o % (1 << 20)),
            Va::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Pages(u8),
    Bytes(u32),
    Raw(u64),
}

impl Size {
    fn get(self) -> u64 {
        match self {
            Size::Pages(p) => u64::from(p % 33) * PAGE,
            Size::Bytes(b) => u64::from(b % (1 << 18)),
            Size::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fd {
    /// A memfd of this many pages, sealed against shrinking or not.
    Memfd { pages: u8, sealed: bool },
    /// A file that cannot be mapped as memory.
    EventFd,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Region {
    gpa: Gpa,
    size: Size,
    uaddr: Va,
    offset: Size,
    fd: Fd,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Features {
    /// A subset of the offer.
    Offered(u64),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Msg {
    SetOwner,
    ResetOwner,
    ResetDevice,
    GetFeatures,
    SetFeatures(Features),
    GetProtocolFeatures,
    SetProtocolFeatures(u64),
    SetMemTable(Vec<Region>),
    /// More descriptors than regions, or fewer.
    SetMemTableMismatched(Vec<Region>, u8),
    AddMemRegion(Region),
    RemoveMemRegion {
        gpa: Gpa,
        size: Size,
    },
    GetMaxMemSlots,
    GetQueueNum,
    SetVringNum {
        index: u8,
        num: u32,
    },
    SetVringAddr {
        index: u8,
        desc: Va,
        used: Va,
        avail: Va,
        flags: u32,
        log: u64,
    },
    SetVringBase {
        index: u8,
        base: u32,
    },
    GetVringBase {
        index: u8,
    },
    SetVringKick {
        index: u8,
        fd: bool,
    },
    SetVringCall {
        index: u8,
        fd: bool,
    },
    SetVringErr {
        index: u8,
        fd: bool,
    },
    SetVringEnable {
        index: u8,
        enable: bool,
    },
    GetConfig {
        offset: u32,
        size: u32,
    },
    SetConfig {
        offset: u32,
        buf: Vec<u8>,
    },
    /// The client writes into its memory (a file it passed, by position).
    WriteMem {
        file: u8,
        offset: u32,
        bytes: Vec<u8>,
    },
    /// The client shrinks a file it passed (faults on an unsealed one are contained).
    Truncate {
        file: u8,
        pages: u8,
    },
    /// The data path runs a batch: TX (reflected into RX, or popped), RX.
    DataPath {
        pop: u8,
        reflect: bool,
        push: u8,
    },
    /// The client closes the socket and connects again.
    Disconnect,
}

fn queue_index(i: u8) -> u32 {
    // Mostly the two valid queues, sometimes not.
    match i {
        0..=119 => 0,
        120..=239 => 1,
        i => u32::from(i),
    }
}

struct Client {
    files: Vec<File>,
}

impl Client {
    fn fd(&mut self, fd: Fd) -> File {
        match fd {
            Fd::Memfd { pages, sealed } => {
                let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
                let f = File::from(rustix::fs::memfd_create("fuzz-client", flags).expect("memfd"));
                f.set_len(u64::from(pages % 65) * PAGE).expect("memfd size");
                if sealed {
                    rustix::fs::fcntl_add_seals(&f, rustix::fs::SealFlags::SHRINK).expect("seal");
                }
                if self.files.len() < MAX_FILES {
                    self.files.push(f.try_clone().expect("dup"));
                }
                f
            }
            Fd::EventFd => eventfd(),
        }
    }

    fn file(&self, i: u8) -> Option<&File> {
        if self.files.is_empty() {
            None
        } else {
            self.files.get(usize::from(i) % self.files.len())
        }
    }
}

fn eventfd() -> File {
    let flags = rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC;
    File::from(rustix::event::eventfd(0, flags).expect("eventfd"))
}

fn region(r: &Region) -> VhostUserMemoryRegion {
    VhostUserMemoryRegion::new(r.gpa.get(), r.size.get(), r.uaddr.get(), r.offset.get())
}

fn run(input: Input) {
    let cfg = DeviceConfig {
        mac: None,
        max_queue_size: input.max_queue_size,
        max_client_memory: u64::from(input.cap_pages) * 2 * PAGE,
        budget: input
            .budget_pages
            .map(|p| MemoryBudget::new(u64::from(p) * 2 * PAGE)),
    };
    let budget = cfg.budget.clone();
    let mut dev = FuzzDevice::new(cfg).expect("device");
    let mut client = Client { files: Vec::new() };
    let mut frame = [0x5au8; 1600];
    for msg in input.msgs.into_iter().take(64) {
        let h = dev.handler();
        // Results are the client's problem: a refused request is a reply, not a bug.
        match msg {
            Msg::SetOwner => drop(h.set_owner()),
            Msg::ResetOwner => drop(h.reset_owner()),
            Msg::ResetDevice => drop(h.reset_device()),
            Msg::GetFeatures => {
                let f = h.get_features().expect("GET_FEATURES");
                assert_eq!(f, DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES);
            }
            Msg::SetFeatures(f) => {
                let v = match f {
                    Features::Offered(m) => m & (DEVICE_OFFER | VHOST_USER_F_PROTOCOL_FEATURES),
                    Features::Raw(v) => v,
                };
                drop(h.set_features(v));
            }
            Msg::GetProtocolFeatures => drop(h.get_protocol_features()),
            Msg::SetProtocolFeatures(v) => drop(h.set_protocol_features(v)),
            Msg::SetMemTable(regions) => {
                let regions: Vec<Region> = regions.into_iter().take(36).collect();
                let ctx: Vec<_> = regions.iter().map(region).collect();
                let files = regions.iter().map(|r| client.fd(r.fd)).collect();
                drop(dev.handler().set_mem_table(&ctx, files, None));
            }
            Msg::SetMemTableMismatched(regions, nfiles) => {
                let regions: Vec<Region> = regions.into_iter().take(36).collect();
                let ctx: Vec<_> = regions.iter().map(region).collect();
                let files = (0..nfiles % 36)
                    .map(|_| {
                        client.fd(Fd::Memfd {
                            pages: 1,
                            sealed: false,
                        })
                    })
                    .collect();
                drop(dev.handler().set_mem_table(&ctx, files, None));
            }
            Msg::AddMemRegion(r) => {
                let fd = client.fd(r.fd);
                let single = VhostUserSingleMemoryRegion::new(
                    r.gpa.get(),
                    r.size.get(),
                    r.uaddr.get(),
                    r.offset.get(),
                );
                drop(dev.handler().add_mem_region(&single, fd, None));
            }
            Msg::RemoveMemRegion { gpa, size } => {
                let single = VhostUserSingleMemoryRegion::new(gpa.get(), size.get(), 0, 0);
                drop(h.remove_mem_region(&single));
            }
            Msg::GetMaxMemSlots => drop(h.get_max_mem_slots()),
            Msg::GetQueueNum => drop(h.get_queue_num()),
            Msg::SetVringNum { index, num } => drop(h.set_vring_num(queue_index(index), num)),
            Msg::SetVringAddr {
                index,
                desc,
                used,
                avail,
                flags,
                log,
            } => drop(h.set_vring_addr(
                queue_index(index),
                VhostUserVringAddrFlags::from_bits_retain(flags),
                desc.get(),
                used.get(),
                avail.get(),
                log,
            )),
            Msg::SetVringBase { index, base } => drop(h.set_vring_base(queue_index(index), base)),
            Msg::GetVringBase { index } => drop(h.get_vring_base(queue_index(index))),
            Msg::SetVringKick { index, fd } => {
                drop(h.set_vring_kick(queue_index(index) as u8, fd.then(eventfd)))
            }
            Msg::SetVringCall { index, fd } => {
                drop(h.set_vring_call(queue_index(index) as u8, fd.then(eventfd)))
            }
            Msg::SetVringErr { index, fd } => {
                drop(h.set_vring_err(queue_index(index) as u8, fd.then(eventfd)))
            }
            Msg::SetVringEnable { index, enable } => {
                drop(h.set_vring_enable(queue_index(index), enable))
            }
            Msg::GetConfig { offset, size } => {
                if let Ok(v) = h.get_config(offset, size, VhostUserConfigFlags::empty()) {
                    assert_eq!(v.len(), size as usize);
                }
            }
            Msg::SetConfig { offset, buf } => {
                assert!(h
                    .set_config(offset, &buf, VhostUserConfigFlags::WRITABLE)
                    .is_err())
            }
            Msg::WriteMem {
                file,
                offset,
                bytes,
            } => {
                if let Some(f) = client.file(file) {
                    let _ = f.write_at(&bytes, u64::from(offset % (64 * PAGE as u32)));
                }
            }
            Msg::Truncate { file, pages } => {
                if let Some(f) = client.file(file) {
                    // Refused on a sealed memfd, as it should be.
                    let _ = f.set_len(u64::from(pages % 65) * PAGE);
                }
            }
            Msg::DataPath { pop, reflect, push } => {
                let dp = dev.data_path();
                let _ = dp.refresh();
                let max = usize::from(pop % 65);
                let n = if reflect {
                    dp.reflect_tx(max, twin_wire::ether::swap_macs)
                } else {
                    dp.pop_tx(max, |f| assert!(f.len() <= twin_wire::ether::MAX_FRAME))
                };
                assert!(n <= max);
                for i in 0..push % 9 {
                    let len = 14 + usize::from(i) * 190;
                    let seg = Segments::single(VolatileSlice::from(&mut frame[..len]));
                    let _ = dp.push_rx(&seg);
                }
                dp.flush_rx();
            }
            Msg::Disconnect => dev.reconnect(),
        }
        let _ = dev.data_path().refresh();
        if let Err(e) = dev.check() {
            panic!("handler invariant broken: {e}");
        }
        if dev.kick_out_requested() {
            // What the control thread does: drop the client; it connects again.
            dev.reconnect();
        }
    }
    drop(dev);
    if let Some(b) = budget {
        // Every connection's reservation is released with its handler.
        assert_eq!(b.used(), 0, "budget leaked");
    }
}

fuzz_target!(|input: Input| run(input));
