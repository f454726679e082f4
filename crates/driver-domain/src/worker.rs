//! The driver domain's side: the translation module between the exchange rings and
//! the virtio-net driver.
//!
//! [`serve`] takes the bootstrap socket (the process's standard input), receives its
//! descriptors, attaches the driver to the NIC in the region the switch created,
//! marks itself Running and loops:
//!
//! * `to_nic` ring -> driver transmit buffers (one copy), published once per batch;
//! * driver receive -> `from_nic` ring (one copy), published once per batch;
//! * the heartbeat advances every loop, and at least every [`MAX_SLEEP`] while idle.
//!
//! A NIC that hangs up, or an exchange error, ends the process with a Failed status:
//! the switch restarts it with a fresh NIC connection. The DD trusts the switch only
//! as far as the exchange crate's checks go.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use driver_host::link::NicLink;
use driver_host::{DriverConfig, HostedDriver};
use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::bootstrap::{self, BootstrapError};

/// Frames moved per direction per loop.
const BATCH: usize = 64;
/// The longest an idle DD sleeps before beating again.
pub const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Control fields of the exchange header the DD writes its drop counters into (read
/// by the switch for its report; informational, never trusted for anything else).
/// Word 2 carries fault requests (`crate::fault::CONTROL_FAULT`).
pub mod control {
    /// Frames from the NIC dropped because the `from_nic` ring was full.
    pub const FROM_NIC_RING_FULL: usize = 0;
    /// Frames from the switch dropped because the driver's transmit ring was full.
    pub const NIC_TX_RING_FULL: usize = 1;
}
/// Status codes a DD reports with [`DdState::Failed`].
pub mod code {
    /// The NIC hung up.
    pub const NIC_GONE: u32 = 1;
    /// The switch's side of the exchange region broke its rules.
    pub const EXCHANGE: u32 = 2;
    /// The sandbox could not be entered.
    pub const SANDBOX: u32 = 3;
}

/// Errors of a driver domain.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The descriptors did not arrive.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The exchange region could not be attached.
    #[error("cannot attach the exchange region")]
    Exchange(#[source] exchange::RegionError),
    /// The exchange rings broke.
    #[error("exchange ring failed")]
    Ring(#[source] exchange::ExchangeError),
    /// The driver could not attach to the NIC.
    #[error("cannot attach the driver to the NIC")]
    Driver(#[source] driver_host::Error),
    /// epoll failed.
    #[error("epoll failed")]
    Epoll(#[source] std::io::Error),
    /// The NIC went away.
    #[error("the NIC hung up")]
    NicGone,
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

/// Runs a driver domain on the bootstrap socket `boot` until `stop` is set or the NIC
/// goes away. `before_loop` runs after the descriptors arrived and before any
/// untrusted data is touched: the place to enter the sandbox.
pub fn serve(
    boot: UnixStream,
    stop: &AtomicBool,
    before_loop: impl FnOnce() -> Result<(), String>,
) -> Result<(), WorkerError> {
    let fds = bootstrap::receive(&boot)?;
    let xr = Arc::new(
        ExchangeRegion::attach(std::fs::File::from(fds.exchange)).map_err(WorkerError::Exchange)?,
    );
    xr.set_status(DdStatus {
        state: DdState::Starting,
        code: 0,
    });
    if let Err(e) = before_loop() {
        tracing::error!("driver domain set-up failed: {e}");
        xr.set_status(DdStatus {
            state: DdState::Failed,
            code: code::SANDBOX,
        });
        return Ok(());
    }
    let device = Path::new("nic");
    let link = NicLink::over(fds.nic, device)
        .map_err(|e| WorkerError::Driver(driver_host::Error::Link(e)))?;
    let cfg = DriverConfig {
        rx_notify: !fds.busy_poll,
        ..DriverConfig::default()
    };
    let mut drv = HostedDriver::attach(link, Some(std::fs::File::from(fds.region)), &cfg, device)
        .map_err(WorkerError::Driver)?;
    let mut to_nic = Consumer::new(xr.clone(), RingId::ToNic);
    let mut from_nic = Producer::new(xr.clone(), RingId::FromNic);
    xr.set_status(DdStatus {
        state: DdState::Running,
        code: 0,
    });
    tracing::info!("driver domain running");
    let ep = Epoll::new().map_err(WorkerError::Epoll)?;
    for fd in [fds.doorbell_in.as_raw_fd(), drv.rx_call_fd()] {
        ep.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, fd as u64),
        )
        .map_err(WorkerError::Epoll)?;
    }
    let result = run_loop(
        &xr,
        &mut drv,
        &mut to_nic,
        &mut from_nic,
        &fds.doorbell_in,
        &fds.doorbell_out,
        &ep,
        fds.busy_poll,
        stop,
    );
    let code = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(_) => Some(code::EXCHANGE),
    };
    if let Some(code) = code {
        xr.set_status(DdStatus {
            state: DdState::Failed,
            code,
        });
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    xr: &ExchangeRegion,
    drv: &mut HostedDriver,
    to_nic: &mut Consumer,
    from_nic: &mut Producer,
    doorbell_in: &OwnedFd,
    doorbell_out: &OwnedFd,
    ep: &Epoll,
    busy_poll: bool,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    let mut idle = 0u32;
    let mut iter = 0u64;
    let (mut from_nic_full, mut nic_tx_full) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        xr.beat();
        if let Some(f) = crate::fault::requested(xr) {
            crate::fault::commit(xr, from_nic, f);
        }
        iter += 1;
        if iter.is_multiple_of(1024) && !drv.is_connected() {
            return Err(WorkerError::NicGone);
        }
        // Switch -> NIC.
        let sent = to_nic
            .poll(BATCH, |frame| {
                match drv.tx_reserve() {
                    Some(slot) if slot.capacity() >= frame.len() => {
                        let n = frame.copy_to(&slot.frame());
                        slot.commit(n);
                    }
                    // Too big cannot happen (slots are smaller than DMA buffers).
                    Some(_) => {}
                    None => nic_tx_full += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        if sent > 0 {
            drv.tx_flush();
            if to_nic.needs_notify() {
                ring(doorbell_out);
            }
        }
        // NIC -> switch.
        let mut ring_err = None;
        let got = drv.rx_burst(BATCH, |frame| match from_nic.reserve() {
            Ok(Some(slot)) => {
                let n = frame.copy_to(&slot.frame());
                if let Err(e) = slot.commit(n) {
                    ring_err.get_or_insert(e);
                }
            }
            // The switch is not keeping up: the frame is dropped here, and counted.
            Ok(None) => from_nic_full += 1,
            Err(e) => {
                ring_err.get_or_insert(e);
            }
        });
        if let Some(e) = ring_err {
            return Err(WorkerError::Ring(e));
        }
        if got > 0 {
            from_nic.publish();
            if from_nic.needs_notify() {
                ring(doorbell_out);
            }
        }
        if sent + got > 0 {
            let _ = xr.set_control(control::FROM_NIC_RING_FULL, from_nic_full);
            let _ = xr.set_control(control::NIC_TX_RING_FULL, nic_tx_full);
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if busy_poll {
            if idle > 16 {
                std::thread::yield_now();
            }
            continue;
        }
        if idle < 64 {
            continue;
        }
        // Event-driven: ask for notifications, re-check, sleep.
        let raced = to_nic.arm_notify() | drv.set_rx_notify(true);
        if !raced {
            let mut events = [EpollEvent::default(); 4];
            match ep.wait(MAX_SLEEP.as_millis() as i32, &mut events) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WorkerError::Epoll(e)),
            }
            drain(doorbell_in);
        }
        drv.set_rx_notify(false);
    }
    Ok(())
}
