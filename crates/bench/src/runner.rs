//! Runs one [`Spec`]: starts its NIC, switch (unless `native`) and client as
//! fresh processes placed as [`Spec::placement`] says, measures a window of
//! traffic, stops them and returns a [`Sample`].
//!
//! Counting (what "delivered" means): the far end's frames — the NIC's for
//! transmit, the client's for receive and round trip.
//! * `twin gen` as the counter: its received frames over its own sending time.
//! * `twin nic`, or testpmd as the NIC of a `twin gen` client, as the counter:
//!   its received frames (testpmd's total at exit) over the generator's sending
//!   time; with a testpmd client (which has no duration of its own), testpmd's
//!   median per-second transmit rate scaled by the fraction of its frames that the
//!   NIC received (from testpmd's totals at exit).
//! * testpmd as the counter otherwise: the median of its per-second receive
//!   rates (`--stats-period 1`).
//!
//! CPU time comes from /proc (each thread's run time from schedstat, in ns) for
//! each process, read at the start and the end of the window; `domain` is the
//! switch's descendants (the driver domain's reaper and worker). Every role that
//! ran must show CPU time: one that cannot be read, or reads zero, fails the run.
//!
//! What else a run checks and records: the switch's final report (the uplink's
//! fast path at the end must be the spec's mode, with no twin fault and no
//! driver-domain disconnect: [`stop_switch`]), and for transmit runs where every
//! frame went ([`Frames`]: sent, delivered, drops by reason, and at a fixed rate
//! what the rate offered).
//!
//! Limits: one client port and one uplink, one queue pair; the numbers mean
//! something only when nothing else keeps the two cores busy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::fail;
use crate::plan::{Mode, Peer, Placement, Poll, Spec, Workload};
use crate::procs::{
    self, cpu_seconds_of, median_nonzero, testpmd_rates, testpmd_totals, wait_for_path, Proc,
};
use crate::results::{Frames, Sample, SwitchEnd};
use crate::Error;

/// The client's MAC: the switch port is configured with it (so frames toward the
/// client are known unicast even when it never sends).
const CLIENT_MAC: &str = "02:00:00:00:00:01";
/// The destination of the client's frames (the NIC side).
const NIC_MAC: &str = "02:00:00:00:00:fe";

/// A directory for the runs' sockets, removed at the end.
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh directory under the temporary directory.
    pub fn new() -> Result<Scratch, Error> {
        let d = std::env::temp_dir().join(format!("twin-bench-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }

    fn sock(&self, name: &str) -> String {
        let p = self.0.join(name);
        let _ = std::fs::remove_file(&p);
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The processes of one run, by role.
struct Run {
    nic: Proc,
    switch: Option<Proc>,
    /// The switch's control socket.
    ctl: String,
}

/// CPU-seconds so far of every role except the client, and the driver domain's
/// processes they were read from.
struct CpuReading {
    seconds: BTreeMap<String, f64>,
    domain_pids: Vec<u32>,
}

impl Run {
    /// CPU-seconds so far of every role except the client. An error when a role's
    /// time cannot be read, or when the switch has no driver domain.
    fn cpu(&self) -> Result<CpuReading, Error> {
        let mut m = BTreeMap::new();
        m.insert("nic".to_string(), self.nic.cpu_seconds()?);
        let mut domain_pids = Vec::new();
        if let Some(sw) = &self.switch {
            m.insert("switch".to_string(), sw.cpu_seconds()?);
            domain_pids = sw.descendants();
            if domain_pids.is_empty() {
                fail!("the switch has no driver domain to measure");
            }
            let mut dd = 0.0;
            for &pid in &domain_pids {
                dd += cpu_seconds_of(pid).map_err(|e| procs::Error::Cpu {
                    name: "the driver domain".to_string(),
                    source: Box::new(e),
                })?;
            }
            m.insert("domain".to_string(), dd);
        }
        Ok(CpuReading {
            seconds: m,
            domain_pids,
        })
    }
}

/// CPU-seconds of each role between two readings. Every role that ran must have
/// used some CPU time in the window: a zero or negative difference (a process
/// measured at one end only, a driver domain replaced meanwhile) is an error, not
/// a 0 in the results.
fn delta(end: &CpuReading, start: &CpuReading) -> Result<BTreeMap<String, f64>, Error> {
    if end.domain_pids != start.domain_pids {
        fail!(
            "the driver domain changed during the window ({:?} then {:?}): its CPU time \
             cannot be measured",
            start.domain_pids,
            end.domain_pids
        );
    }
    let mut out = BTreeMap::new();
    for (k, v) in &end.seconds {
        let Some(s) = start.seconds.get(k) else {
            fail!("no CPU time of {k} at the start of the window");
        };
        out.insert(k.clone(), positive_cpu(k, v - s)?);
    }
    Ok(out)
}

/// `cpu`, when it is a measurement of a role that ran (more than zero).
fn positive_cpu(role: &str, cpu: f64) -> Result<f64, Error> {
    if cpu > 0.0 && cpu.is_finite() {
        Ok(cpu)
    } else {
        fail!("{role} ran but {cpu} CPU-seconds were measured for it")
    }
}

/// A counter of a report; an error when it is missing (never read as 0).
fn count(v: &serde_json::Value, pointer: &str) -> Result<u64, Error> {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Run(format!("no counter {pointer} in {v}")))
}

/// Every counter of the object at `pointer` (drops by reason), each named
/// `prefix/reason`, into `into`; an error when the object is missing.
fn drops_into(
    into: &mut BTreeMap<String, u64>,
    prefix: &str,
    v: &serde_json::Value,
    pointer: &str,
) -> Result<(), Error> {
    let m = v
        .pointer(pointer)
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| Error::Run(format!("no drop counters {pointer} in {v}")))?;
    for (k, c) in m {
        let c = c
            .as_u64()
            .ok_or_else(|| Error::Run(format!("drop counter {pointer}/{k} is not a count: {c}")))?;
        into.insert(format!("{prefix}/{k}"), c);
    }
    Ok(())
}

/// The switch's live report (`None` while it does not answer with one).
fn switch_status(ctl: &str) -> Option<serde_json::Value> {
    let answer = switch::ctl::call(std::path::Path::new(ctl), &switch::ctl::Command::Status);
    let report = answer.ok()?.response.into_result().ok()?;
    serde_json::from_str(report.get()).ok()
}

/// Waits until the switch has taken the client's disconnect: its data path drains
/// a client's transmit ring before it adopts a disconnect, so from then on every
/// frame the client sent has been counted by the switch (forwarded or dropped).
fn wait_client_gone(ctl: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = switch_status(ctl);
        let gone = status
            .as_ref()
            .and_then(|s| s.pointer("/clients/c1/disconnects"))
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|d| d >= 1);
        if gone {
            return Ok(());
        }
        if Instant::now() > deadline {
            fail!("the switch did not see the client go within 10 s: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the switch and checks its final report: the uplink's fast path at the
/// end must be the spec's mode, with no twin fault and no disconnect of the
/// driver domain during the run (a twin that fell back to `domain` mid-run must
/// not be reported as `twin`). Returns what it recorded and the switch's drops.
fn stop_switch(sw: &mut Proc, spec: &Spec) -> Result<(SwitchEnd, serde_json::Value), Error> {
    let r = sw.stop_report()?;
    let end = SwitchEnd {
        fast_path: r
            .pointer("/uplinks/u0/detail/driver/fast_path")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("none (no driver domain connected)")
            .to_string(),
        twin_faults: count(&r, "/uplinks/u0/detail/twin_fault_count")?,
        uplink_disconnects: count(&r, "/uplinks/u0/disconnects")?,
    };
    if end.fast_path != spec.mode.name() || end.twin_faults != 0 || end.uplink_disconnects != 0 {
        fail!(
            "{}: the uplink's fast path ended in {} with {} twin fault(s) and {} \
             disconnect(s) of its driver domain; faults: {}",
            spec.label(),
            end.fast_path,
            end.twin_faults,
            end.uplink_disconnects,
            r.pointer("/uplinks/u0/detail/twin_faults")
                .cloned()
                .unwrap_or_default()
        );
    }
    Ok((end, r))
}

fn testpmd_fwd(workload: Workload, side: Peer) -> &'static str {
    match (workload, side) {
        (Workload::Transmit, Peer::Builtin) | (Workload::Receive, Peer::Dpdk) => "rxonly",
        (Workload::Transmit, Peer::Dpdk) | (Workload::Receive, Peer::Builtin) => "txonly",
        // The client generates and counts what comes back; the NIC swaps MACs.
        (Workload::Roundtrip, Peer::Dpdk) => "flowgen",
        (Workload::Roundtrip, Peer::Builtin) => "macswap",
    }
}

/// The other core of the two: testpmd's main lcore, when it forwards on `cpu`.
fn other_core(cpu: usize) -> u32 {
    if cpu == 0 {
        1
    } else {
        0
    }
}

fn start_nic(spec: &Spec, pl: &Placement, sock: &str) -> Result<Proc, Error> {
    let size = spec.size.to_string();
    match spec.nic {
        Peer::Builtin => {
            let mode = match spec.workload {
                Workload::Transmit => "sink",
                Workload::Receive => "source",
                Workload::Roundtrip => "reflect",
            };
            let cpu = pl.nic.to_string();
            let mut args = vec![
                "nic", "--socket", sock, "--mode", mode, "--cpu", &cpu, "--poll",
            ];
            args.push(pl.poll.name());
            if spec.workload == Workload::Receive {
                args.extend(["--size", &size, "--dst-mac", CLIENT_MAC]);
            }
            let p = Proc::twin("nic", &args)?;
            wait_for_path(sock, Duration::from_secs(10))?;
            Ok(p)
        }
        Peer::Dpdk => {
            // The NIC side (testpmd's port 0 is the vhost device; its "tx" goes to
            // the driver, i.e. to the switch or the client).
            let vdev = format!("net_vhost0,iface={sock},queues=1");
            let fwd = format!(
                "--forward-mode={}",
                testpmd_fwd(spec.workload, Peer::Builtin)
            );
            let txpkts = format!("--txpkts={size}");
            let peer = format!("--eth-peer=0,{CLIENT_MAC}");
            let p = Proc::testpmd("nic", other_core(pl.nic), &vdev, &[&fwd, &txpkts, &peer])?;
            wait_for_path(sock, Duration::from_secs(20))?;
            Ok(p)
        }
    }
}

/// Waits until a testpmd NIC forwards: its first per-second statistics (printed,
/// and flushed, once forwarding runs; `--stats-period 1`). Traffic must not come
/// earlier: when it starts forwarding, testpmd drains its receive queue (twice, a
/// full ring each) without counting what it drained, and our driver sees those
/// frames completed. testpmd runs with `--disable-link-check`, so it forwards
/// before any frontend connects, with or without a switch in between.
fn wait_testpmd_forwarding(nic: &Proc) -> Result<(), Error> {
    nic.wait_for_output("NIC statistics for port", Duration::from_secs(20))?;
    Ok(())
}

/// Starts the switch and waits until its uplink runs in `mode` (its driver domain
/// connected to the NIC and, for inline and twin, the switch attached).
fn start_switch(
    spec: &Spec,
    pl: &Placement,
    nic_sock: &str,
    client_sock: &str,
    ctl: &str,
) -> Result<Proc, Error> {
    let mode = spec.mode.name();
    let client = match spec.client {
        Peer::Builtin => format!("c1={client_sock},mac={CLIENT_MAC}"),
        // testpmd's virtio-user picks its own MAC: the port learns it.
        Peer::Dpdk => format!("c1={client_sock}"),
    };
    let uplink = format!("u0={nic_sock},mode={mode}");
    let cpu = pl.switch.to_string();
    let args = [
        "switch",
        "--client",
        &client,
        "--uplink",
        &uplink,
        "--control",
        ctl,
        "--cpu",
        &cpu,
        "--poll",
        pl.poll.name(),
    ];
    let mut sw = Proc::twin("switch", &args)?;
    wait_for_path(client_sock, Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = switch_status(ctl);
        let d = status
            .as_ref()
            .and_then(|s| s.pointer("/uplinks/u0/detail"));
        let ready = d.is_some_and(|d| {
            d["connected"].as_bool() == Some(true) && d["mode"].as_str() == Some(mode)
        });
        if ready {
            return Ok(sw);
        }
        if Instant::now() > deadline {
            let out = sw.wait(Duration::from_millis(10)).unwrap_or_default();
            fail!("the uplink did not come up in {mode} mode within 20 s: {status:?} {out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gen_args(spec: &Spec, pl: &Placement, sock: &str, dur: f64) -> Vec<String> {
    let mut a: Vec<String> = [
        "gen",
        "--socket",
        sock,
        "--size",
        &spec.size.to_string(),
        "--duration",
        &dur.to_string(),
        "--cpu",
        &pl.client.to_string(),
        "--poll",
        pl.poll.name(),
        "--src-mac",
        CLIENT_MAC,
        "--dst-mac",
        NIC_MAC,
    ]
    .map(String::from)
    .to_vec();
    let rate = match spec.workload {
        // Receive only: the generator sends nothing and counts.
        Workload::Receive => Some(0),
        _ => spec.rate_pps,
    };
    if let Some(r) = rate {
        a.extend(["--rate".to_string(), r.to_string()]);
    }
    a
}

/// What one run measured, before it becomes a [`Sample`].
struct Measured {
    packets: f64,
    secs: f64,
    cpu: BTreeMap<String, f64>,
    switch_end: Option<SwitchEnd>,
    frames: Option<Frames>,
}

/// Attempts at a fixed-rate run before the benchmark gives up on it.
pub const FIXED_RATE_ATTEMPTS: u32 = 3;

/// The generator's token bucket at `rate` (crates/gen/src/run.rs: two batches of
/// 32, and at least what accrues during two of its longest sleeps, 10 ms each).
pub fn gen_bucket(rate: u64) -> u64 {
    (2.0 * 32.0f64).max(rate as f64 * 2.0 * 0.010).ceil() as u64
}

/// What a fixed-rate run's generator did with the frames its rate offered.
enum Offered {
    /// It sent them, or held back at most a bucket (see [`check_offered`]).
    Sent,
    /// It could not run in time for more than a bucket's worth (`tx_late`): the
    /// machine's doing; worth another attempt.
    Late(String),
    /// More than a bucket's worth found its ring full: the path did not take the
    /// rate (or the generator's ring is too shallow for it, the bug of commit
    /// 11d8627); worth another attempt, and a failure when it stays so.
    Refused(String),
}

/// Checks a fixed-rate sample's frames against its rate. The generator's token
/// bucket starts empty when its send phase starts and fills at the rate, so over
/// the phase exactly `offered` (rate x its length) became due: each frame was
/// sent, found the ring full (`not_sent_ring_full`), was given up because the
/// generator ran too late (`not_sent_late`), or is still in the bucket at the
/// end: at most a bucket, plus a frame of rounding either way. An accounting that
/// does not add up is an error.
fn check_offered(sample: &Sample) -> Result<Offered, Error> {
    let (Some(rate), Some(f)) = (sample.spec.rate_pps, sample.frames.as_ref()) else {
        return Ok(Offered::Sent);
    };
    let offered = f
        .offered
        .ok_or_else(|| Error::Run("a fixed-rate run without its offered frames".into()))?;
    let bucket = gen_bucket(rate);
    let label = sample.spec.label();
    let held_back = offered as i128 - (f.sent + f.not_sent_ring_full + f.not_sent_late) as i128;
    if !(-2..=bucket as i128 + 2).contains(&held_back) {
        fail!(
            "{label}: {offered} frames offered over {:.3} s, {} sent, {} found the ring \
             full, {} late: {held_back} held back is not within a bucket ({bucket})",
            sample.secs,
            f.sent,
            f.not_sent_ring_full,
            f.not_sent_late
        );
    }
    let what = format!(
        "{label}: the generator sent {} of the {offered} frames offered ({} found its ring \
         full, {} were due while it did not run; a bucket is {bucket})",
        f.sent, f.not_sent_ring_full, f.not_sent_late
    );
    Ok(if f.not_sent_ring_full > bucket {
        Offered::Refused(what)
    } else if f.not_sent_late > bucket {
        Offered::Late(what)
    } else {
        Offered::Sent
    })
}

/// Runs `spec` with `dur` seconds of traffic. A fixed-rate run whose generator
/// did not send what the rate offered, less a bucket ([`check_offered`]), is run
/// again, up to [`FIXED_RATE_ATTEMPTS`] times in all. When the frames still found
/// the generator's ring full, the benchmark fails; when the generator still could
/// not run in time (a loaded machine), the last run stands, its `not_sent_late`
/// recorded. The sample says how many attempts it took.
pub fn run(s: &Scratch, spec: &Spec, dur: f64) -> Result<Sample, Error> {
    let mut attempt = 1;
    loop {
        let mut sample = run_once(s, spec, dur)?;
        sample.attempts = attempt;
        let why = match check_offered(&sample)? {
            Offered::Sent => return Ok(sample),
            Offered::Late(why) if attempt == FIXED_RATE_ATTEMPTS => {
                eprintln!("twin bench: {why}, in each of {attempt} attempts; kept");
                return Ok(sample);
            }
            Offered::Refused(why) if attempt == FIXED_RATE_ATTEMPTS => {
                fail!("{why}, in each of {attempt} attempts")
            }
            Offered::Late(why) | Offered::Refused(why) => why,
        };
        eprintln!("twin bench: {why}; running it again");
        attempt += 1;
    }
}

/// Runs `spec` once with `dur` seconds of traffic.
fn run_once(s: &Scratch, spec: &Spec, dur: f64) -> Result<Sample, Error> {
    let pl = spec.placement();
    let (nic_s, c1_s, ctl_s) = (s.sock("nic.sock"), s.sock("c1.sock"), s.sock("ctl.sock"));
    let nic = start_nic(spec, &pl, &nic_s)?;
    let switch = match spec.mode {
        Mode::Native => None,
        _ => Some(start_switch(spec, &pl, &nic_s, &c1_s, &ctl_s)?),
    };
    if spec.nic == Peer::Dpdk {
        wait_testpmd_forwarding(&nic)?;
    }
    let client_sock = if switch.is_some() { &c1_s } else { &nic_s };
    let mut run = Run {
        nic,
        switch,
        ctl: ctl_s.clone(),
    };
    let m = match spec.client {
        Peer::Builtin => run_gen_client(&mut run, spec, &pl, client_sock, dur)?,
        Peer::Dpdk => run_testpmd_client(&mut run, spec, &pl, client_sock, dur)?,
    };
    Ok(Sample {
        spec: *spec,
        poll: pl.poll,
        packets: m.packets,
        secs: m.secs,
        cpu_s: m.cpu,
        switch_end: m.switch_end,
        frames: m.frames,
        attempts: 1,
    })
}

/// Once the client has gone: waits until the switch has taken its disconnect,
/// stops the switch and checks its final report ([`stop_switch`]). Returns what
/// it recorded and its drops by reason (`switch/REASON`, every port's), or
/// nothing in `native`.
fn finish_switch(
    run: &mut Run,
    spec: &Spec,
) -> Result<(Option<SwitchEnd>, BTreeMap<String, u64>), Error> {
    let mut drops = BTreeMap::new();
    let Some(mut sw) = run.switch.take() else {
        return Ok((None, drops));
    };
    wait_client_gone(&run.ctl)?;
    let (end, r) = stop_switch(&mut sw, spec)?;
    drops_into(&mut drops, "switch", &r, "/drops")?;
    Ok((Some(end), drops))
}

/// The built-in NIC's final report: the frames it received and its receive drops
/// by reason (`nic/REASON`) added to `drops`.
fn finish_builtin_nic(run: &mut Run, drops: &mut BTreeMap<String, u64>) -> Result<u64, Error> {
    let r = run.nic.stop_report()?;
    drops_into(drops, "nic", &r, "/rx_drops")?;
    count(&r, "/rx_packets")
}

/// A testpmd NIC's exit: its median per-second receive rate and its total of
/// received frames.
fn finish_testpmd_nic(nic: &mut Proc) -> Result<(f64, u64), Error> {
    nic.interrupt();
    let out = nic.wait(Duration::from_secs(15))?;
    let rx: Vec<u64> = testpmd_rates(&out, 0).into_iter().map(|(r, _)| r).collect();
    let (total_rx, _) = testpmd_totals(&out)
        .ok_or_else(|| Error::Run("testpmd (the NIC) printed no totals".into()))?;
    Ok((median_nonzero(rx) as f64, total_rx))
}

fn run_gen_client(
    run: &mut Run,
    spec: &Spec,
    pl: &Placement,
    sock: &str,
    dur: f64,
) -> Result<Measured, Error> {
    let args = gen_args(spec, pl, sock, dur);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cpu0 = run.cpu()?;
    let mut gen = Proc::twin("gen", &args)?;
    std::thread::sleep(Duration::from_secs_f64(dur));
    // The generator is still sending (it connected after it started): its CPU time
    // is read while it certainly exists.
    let cpu_gen = gen.cpu_seconds()?;
    let mut cpu = delta(&run.cpu()?, &cpu0)?;
    cpu.insert("client".to_string(), positive_cpu("client", cpu_gen)?);
    let g = gen.report(Duration::from_secs(30))?;
    let secs = g
        .pointer("/duration_s")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| Error::Run(format!("no duration_s in the generator's report {g}")))?;
    let (switch_end, mut drops) = finish_switch(run, spec)?;
    let mut frames = None;
    let packets = match (spec.workload, spec.nic) {
        (Workload::Transmit, Peer::Builtin) => {
            let delivered = finish_builtin_nic(run, &mut drops)?;
            frames = Some(gen_frames(spec, &g, secs, delivered, drops)?);
            delivered as f64
        }
        (Workload::Transmit, Peer::Dpdk) => {
            // Counted like the built-in NIC: testpmd's total over the generator's
            // send phase (its per-second rates need a run of whole seconds).
            let (_, delivered) = finish_testpmd_nic(&mut run.nic)?;
            frames = Some(gen_frames(spec, &g, secs, delivered, drops)?);
            delivered as f64
        }
        _ => count(&g, "/rx_packets")? as f64,
    };
    Ok(Measured {
        packets,
        secs,
        cpu,
        switch_end,
        frames,
    })
}

/// The frame accounting of a run whose client is the generator: what its rate
/// offered over its send phase, what it sent, what reached the NIC, and the
/// drops counted between them.
fn gen_frames(
    spec: &Spec,
    g: &serde_json::Value,
    secs: f64,
    delivered: u64,
    drops: BTreeMap<String, u64>,
) -> Result<Frames, Error> {
    Ok(Frames {
        // The token bucket starts empty when the send phase starts and fills at the
        // rate: no more than this can have been due.
        offered: spec.rate_pps.map(|r| (r as f64 * secs).floor() as u64),
        not_sent_ring_full: count(g, "/tx_dropped_ring_full")?,
        not_sent_late: count(g, "/tx_late")?,
        sent: count(g, "/tx_packets")?,
        delivered,
        drops,
    })
}

fn run_testpmd_client(
    run: &mut Run,
    spec: &Spec,
    pl: &Placement,
    sock: &str,
    dur: f64,
) -> Result<Measured, Error> {
    let vdev = format!("net_virtio_user0,path={sock},queues=1");
    let fwd = format!("--forward-mode={}", testpmd_fwd(spec.workload, Peer::Dpdk));
    let txpkts = format!("--txpkts={}", spec.size);
    let peer = format!("--eth-peer=0,{NIC_MAC}");
    let mut client = Proc::testpmd(
        "client",
        other_core(pl.client),
        &vdev,
        &[&fwd, &txpkts, &peer],
    )?;
    // Printed when forwarding starts (with --stats-period there is no "Press enter").
    client.wait_for_output("packet forwarding - ports=", Duration::from_secs(20))?;
    let cpu0 = run.cpu()?;
    let client_cpu0 = client.cpu_seconds()?;
    // testpmd's per-second figures: a whole number of periods, plus one to lose.
    let window = dur.ceil() + 1.0;
    std::thread::sleep(Duration::from_secs_f64(window));
    let mut cpu = delta(&run.cpu()?, &cpu0)?;
    cpu.insert(
        "client".to_string(),
        positive_cpu("client", client.cpu_seconds()? - client_cpu0)?,
    );
    client.interrupt();
    let out = client.wait(Duration::from_secs(15))?;
    let (switch_end, mut drops) = finish_switch(run, spec)?;
    let rates = testpmd_rates(&out, 0);
    let mut frames = None;
    let pps = match (spec.workload, spec.nic) {
        (Workload::Transmit, Peer::Builtin) => {
            let delivered = finish_builtin_nic(run, &mut drops)?;
            let (_, client_tx) = testpmd_totals(&out)
                .ok_or_else(|| Error::Run("testpmd printed no totals".into()))?;
            let tx_pps = median_nonzero(rates.iter().map(|&(_, t)| t).collect()) as f64;
            frames = Some(Frames {
                offered: None,
                not_sent_ring_full: 0,
                not_sent_late: 0,
                sent: client_tx,
                delivered,
                drops,
            });
            if client_tx == 0 {
                0.0
            } else {
                tx_pps * (delivered as f64 / client_tx as f64).min(1.0)
            }
        }
        (Workload::Transmit, Peer::Dpdk) => finish_testpmd_nic(&mut run.nic)?.0,
        _ => median_nonzero(rates.iter().map(|&(r, _)| r).collect()) as f64,
    };
    Ok(Measured {
        packets: pps * window,
        secs: window,
        cpu,
        switch_end,
        frames,
    })
}

/// Offered load of the round-trip-time runs: light, so that the times are the
/// path's, not a queue's.
pub const RTT_RATE_PPS: u64 = 10_000;
/// Frame size of the round-trip-time runs.
pub const RTT_SIZE: usize = 64;

/// Round-trip time under light load: the generator's own 64-byte frames through
/// `mode` to a reflecting NIC and back, busy polling, placed as the throughput
/// runs. Returns (p50, p99, p99.9, max) in microseconds.
pub fn run_rtt(s: &Scratch, mode: Mode, dur: f64) -> Result<[f64; 4], Error> {
    let spec = Spec {
        mode,
        workload: Workload::Roundtrip,
        client: Peer::Builtin,
        nic: Peer::Builtin,
        size: RTT_SIZE,
        rate_pps: Some(RTT_RATE_PPS),
    };
    let pl = Placement {
        poll: Poll::Busy,
        ..spec.placement()
    };
    let (nic_s, c1_s, ctl_s) = (s.sock("nic.sock"), s.sock("c1.sock"), s.sock("ctl.sock"));
    let mut nic = start_nic(&spec, &pl, &nic_s)?;
    let mut sw = match mode {
        Mode::Native => None,
        _ => Some(start_switch(&spec, &pl, &nic_s, &c1_s, &ctl_s)?),
    };
    let target = if sw.is_some() { &c1_s } else { &nic_s };
    let args = gen_args(&spec, &pl, target, dur);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let g = Proc::twin("gen", &args)?.report(Duration::from_secs(30))?;
    if let Some(sw) = sw.as_mut() {
        stop_switch(sw, &spec)?;
    }
    nic.stop_report()?;
    if count(&g, "/rtt_samples")? == 0 {
        fail!("no frame came back");
    }
    let f = |p: &str| {
        g.pointer(p)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| Error::Run(format!("no {p} in the generator's report {g}")))
    };
    Ok([
        f("/rtt_p50_us")?,
        f("/rtt_p99_us")?,
        f("/rtt_p999_us")?,
        f("/rtt_max_us")?,
    ])
}
