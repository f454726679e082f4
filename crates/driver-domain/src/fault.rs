//! Fault injection into a driver domain, for users and tests: the switch writes a
//! request into a control word of the exchange region, and the domain carries it out
//! at its next loop. Each fault is one way a real driver domain can fail; the switch
//! must detect and survive every one of them.

use std::sync::atomic::Ordering;

use exchange::layout::OFF_PROD_IDX;
use exchange::{ExchangeRegion, RingId};
use vm_memory::Bytes;

/// Control word of the exchange header that carries a fault request.
pub const CONTROL_FAULT: usize = 2;

/// A fault a driver domain can be asked to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Fault {
    /// `panic!` (the process exits with status 101).
    Panic = 1,
    /// Spin forever without a heartbeat.
    Hang = 2,
    /// Write a producer index far beyond the ring into `from_nic`.
    Garbage = 3,
    /// Publish a `from_nic` slot whose length exceeds the slot.
    BogusLength = 4,
    /// Try to open a file (the sandbox kills the process).
    OpenFile = 5,
    /// Try to create a socket (the sandbox kills the process).
    OpenSocket = 6,
    /// Keep running (and beating) but never answer an ownership request again: a
    /// domain that will not hand the fast path over (the switch's handover
    /// timeout must catch it).
    RefuseHandover = 7,
    /// Issue an ioctl outside the sandbox's allow-list (`SIOCGIFINDEX`) on the
    /// domain's device: a TAP device's descriptor, an AF_PACKET or AF_XDP socket,
    /// or the driver's region for a vhost-user NIC. A domain that tries to
    /// reconfigure its device (the sandbox kills the process).
    Ioctl = 8,
    /// Overwrite the driver's state that a switch-side instance shares (an
    /// AF_XDP driver's chunk tables) with nonsense, and keep running: a
    /// compromised domain attacking the switch's twin through memory they
    /// share. Only an AF_XDP domain carries it out (the others ignore it).
    ScribbleState = 9,
}

impl Fault {
    /// Every fault the domain commits itself (kill -9 is the switch's own).
    pub const ALL: [Fault; 9] = [
        Fault::Panic,
        Fault::Hang,
        Fault::Garbage,
        Fault::BogusLength,
        Fault::OpenFile,
        Fault::OpenSocket,
        Fault::RefuseHandover,
        Fault::Ioctl,
        Fault::ScribbleState,
    ];

    /// The fault's name in the domain's log: the name the switch's control
    /// protocol gives it (`switch::ctl::Fault`, whose tests keep the two equal).
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::Panic => "panic",
            Fault::Hang => "hang",
            Fault::Garbage => "garbage",
            Fault::BogusLength => "bogus-length",
            Fault::OpenFile => "open-file",
            Fault::OpenSocket => "open-socket",
            Fault::RefuseHandover => "refuse-handover",
            Fault::Ioctl => "ioctl",
            Fault::ScribbleState => "scribble-state",
        }
    }

    fn from_code(c: u64) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| *f as u64 == c)
    }
}

/// The fault requested of this domain, if any (one load; call once per loop).
#[inline]
pub fn requested(xr: &ExchangeRegion) -> Option<Fault> {
    match xr.control(CONTROL_FAULT) {
        Ok(0) | Err(_) => None,
        Ok(c) => Fault::from_code(c),
    }
}

/// Commits `fault` (domain side), `from_nic` being the domain's producer handle.
/// Returns only for a bogus length, for sandbox violations that were allowed, for
/// a refused handover (which the caller carries out: it stops answering
/// ownership requests), and for scribbled state (the caller's: it knows the
/// driver's state).
pub fn commit(
    xr: &ExchangeRegion,
    from_nic: &mut exchange::Producer,
    device: std::os::fd::BorrowedFd<'_>,
    fault: Fault,
) {
    let _ = xr.set_control(CONTROL_FAULT, 0);
    twin_log::warn_local!(fault = fault.as_str(), "driver domain: injected fault");
    let prod_at = xr.layout().ring(RingId::FromNic) + OFF_PROD_IDX;
    let load_prod = || {
        xr.region()
            .slice(prod_at, 4)
            .and_then(|s| s.load::<u32>(0, Ordering::Acquire).ok())
            .unwrap_or(0)
    };
    let store_prod = |v: u32| {
        if let Some(s) = xr.region().slice(prod_at, 4) {
            let _ = s.store(v, 0, Ordering::Release);
        }
    };
    match fault {
        Fault::Panic => panic!("injected fault: panic"),
        Fault::Hang =>
        {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        Fault::Garbage => {
            // A domain that scribbles keeps scribbling (and keeps beating, so only the
            // ring check can catch it): a single write could be overwritten by the
            // next honest publish before the switch looks.
            let garbage = load_prod().wrapping_add(100_000);
            loop {
                store_prod(garbage);
                xr.beat();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Fault::BogusLength => {
            if let Ok(Some(slot)) = from_nic.reserve() {
                let _ = slot.commit_unchecked(0xffff_fff0);
            }
            from_nic.publish();
        }
        Fault::OpenFile => {
            let r = std::fs::File::open("/etc/hostname");
            twin_log::error_local!("open succeeded?! {r:?}");
        }
        Fault::OpenSocket => {
            let r = std::net::UdpSocket::bind("127.0.0.1:0");
            twin_log::error_local!("socket succeeded?! {r:?}");
        }
        Fault::RefuseHandover | Fault::ScribbleState => {}
        Fault::Ioctl => {
            let r = rustix::net::netdevice::name_to_index(device, "lo");
            twin_log::error_local!("ioctl succeeded?! {r:?}");
        }
    }
}

/// Requests `fault` (switch side).
pub fn request(xr: &ExchangeRegion, fault: Fault) -> Result<(), exchange::RegionError> {
    xr.set_control(CONTROL_FAULT, fault as u64)
}
