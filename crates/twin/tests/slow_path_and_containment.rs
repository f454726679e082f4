//! A twin and its driver domain's instance on one region, in one process:
//!
//! * the slow path end to end: the twin meets a device error, posts the driver's
//!   `device_error` upcall into the exchange region's `upcalls` ring, and the
//!   domain's instance takes it off the ring and runs the routine, which records it
//!   in the domain's private page, a page the twin itself cannot read;
//! * containment: each injected fault (forbidden read, wild write, panic, stuck
//!   loop) disables the twin with the right report, and a disabled twin does nothing.
//!
//! The end-to-end tests with real processes are in `crates/cli/tests/e2e_twin.rs`.

use std::sync::{Arc, Mutex};

use driver_domain::handover::{decode_upcall, SharedUpcalls, UpcallChannel};
use driver_env::{Doorbell, DriverMem, FaultKind};
use driver_host::env::DirectEnv;
use driver_host::region::Region;
use driver_host::FastPath;
use exchange::{Consumer, ExchangeRegion, Geometry, RingId};
use twin_runtime::SvmEnv;
use virtio_net_driver::{NetConfig, NetLayout, VirtioNet};
use vmm_sys_util::eventfd::EventFd;

const CFG: NetConfig = NetConfig {
    queue_size: 64,
    buf_size: 2048,
};

struct Rig {
    layout: NetLayout,
    /// The driver domain's view (and, through it, the test plays the device).
    domain: FastPath<DirectEnv>,
    twin: FastPath<SvmEnv>,
    upcalls: Consumer,
}

fn rig() -> Rig {
    let layout = NetLayout::new(CFG).unwrap();
    let region = Arc::new(Region::create("upcall-test", layout.region_len).unwrap());
    // The domain initialises the driver (features: VERSION_1 only).
    let dd_env = DirectEnv::new(region.clone(), Vec::new());
    let net = VirtioNet::init(&dd_env, CFG, twin_wire::features::F_VERSION_1).unwrap();
    let domain = FastPath::new(dd_env, net);
    let xr = Arc::new(
        ExchangeRegion::create(
            "upcall-test-xchg",
            Geometry {
                slots: 16,
                slot_size: 64,
            },
        )
        .unwrap(),
    );
    let bell = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap();
    let sink = SharedUpcalls(Arc::new(Mutex::new(UpcallChannel::new(xr.clone(), bell))));
    let svm = svm::Svm::new(region, &layout.twin_access_map()).unwrap();
    let kicks = vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
    let twin = FastPath::attach(SvmEnv::new(svm, kicks, Box::new(sink))).unwrap();
    Rig {
        layout,
        domain,
        twin,
        upcalls: Consumer::new(xr, RingId::Upcalls),
    }
}

#[test]
fn a_device_error_in_the_twin_runs_the_slow_path_in_the_domain() {
    let mut r = rig();
    // The device publishes a used TX entry naming a descriptor that does not exist.
    let used = r.layout.tx.used;
    let env = r.domain.env();
    env.write_u32(used + 4, 9999).unwrap();
    env.write_u32(used + 8, 60).unwrap();
    env.store_release_u16(used + 2, 1).unwrap();
    env.kick(0);

    // The twin reaps it at its flush: counted, and reported once for the batch.
    r.twin.tx_flush();
    assert!(r.twin.failure().is_none(), "{:?}", r.twin.failure());
    assert_eq!(r.twin.stats().tx_device_errors, 1);
    assert!(r.twin.env().fault().is_none());

    // The domain takes the upcall off the ring and runs it.
    let mut msgs = Vec::new();
    r.upcalls.poll(16, |f| msgs.push(decode_upcall(f))).unwrap();
    assert_eq!(msgs.len(), 1, "one upcall per batch");
    let msg = msgs[0].expect("a well-formed message");
    assert_eq!(r.domain.dispatch_upcall(&msg), Ok("device_error"));
    let recorded = r.domain.driver().domain_errors(r.domain.env()).unwrap();
    assert_eq!(recorded.tx_device_errors, 1);
    assert_eq!(recorded.last_error, Some((1, 1)));
    assert!(!recorded.reset_requested);
}

#[test]
fn the_twin_cannot_read_what_the_slow_path_recorded() {
    let r = rig();
    let private = r.layout.private;
    let e = r.twin.env().read_u64(private).unwrap_err();
    assert_eq!(e.kind, FaultKind::Permission);
    assert!(
        r.twin.env().fault().is_some(),
        "the fault is kept for the runtime"
    );
    // The domain's own instance reads it.
    assert!(r.domain.env().read_u64(private).is_ok());
}

#[test]
fn a_garbage_upcall_is_refused_by_the_domain() {
    let mut r = rig();
    let bogus = driver_env::UpcallMsg {
        op: 77,
        args: [1, 2, 3],
    };
    assert!(r.domain.dispatch_upcall(&bogus).is_err());
    let bad_arg = driver_env::UpcallMsg {
        op: 1,
        args: [u64::MAX, 1, 0],
    };
    assert!(r.domain.dispatch_upcall(&bad_arg).is_err());
    let recorded = r.domain.driver().domain_errors(r.domain.env()).unwrap();
    assert_eq!(recorded.tx_device_errors + recorded.rx_device_errors, 0);
}

/// Containment of the twin's own faults (the driver is built with its
/// `fault-injection` feature by the workspace's binary; these tests enable it too).
mod containment {
    use super::*;
    use driver_env::InjectedFault;
    use twin_runtime::{Twin, TwinFault};

    fn twin() -> Twin<FastPath<SvmEnv>> {
        Twin::new(rig().twin)
    }

    #[test]
    fn a_forbidden_read_disables_the_twin_with_the_svm_fault() {
        let mut t = twin();
        t.inject(InjectedFault::ForbiddenRead);
        assert_eq!(t.rx_burst(64, |_| {}), 0);
        match t.fault() {
            Some(TwinFault::Svm(f)) => assert_eq!(f.range, Some("private"), "{f}"),
            other => panic!("expected an SVM fault, got {other:?}"),
        }
        // Disabled: nothing runs any more.
        assert_eq!(
            t.send(&twin_wire::Segments::new()),
            driver_domain::launch::Send::Failed
        );
    }

    #[test]
    fn a_wild_write_disables_the_twin() {
        let mut t = twin();
        t.inject(InjectedFault::WildWrite);
        t.flush();
        assert!(
            matches!(t.fault(), Some(TwinFault::Svm(_))),
            "{:?}",
            t.fault()
        );
    }

    #[test]
    fn a_panic_is_caught_and_disables_the_twin() {
        let mut t = twin();
        t.inject(InjectedFault::Panic);
        t.flush();
        assert!(
            matches!(t.fault(), Some(TwinFault::Panic(m)) if m.contains("injected")),
            "{:?}",
            t.fault()
        );
    }

    #[test]
    fn a_stuck_fast_path_is_stopped_by_the_watchdog() {
        let mut t = twin();
        t.inject(InjectedFault::Stuck);
        let start = std::time::Instant::now();
        assert_eq!(t.rx_burst(64, |_| {}), 0);
        assert!(
            matches!(t.fault(), Some(TwinFault::Stuck { ran_for_ms }) if *ran_for_ms >= 50),
            "{:?}",
            t.fault()
        );
        // It ran for the watchdog's limit, not forever.
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}
