//! Runs one [`Spec`]: starts its NIC, switch (unless `native`) and client as
//! fresh processes placed as [`Spec::placement`] says, measures a window of
//! traffic, stops them and returns a [`Sample`].
//!
//! Counting (what "delivered" means): the far end's frames — the NIC's for
//! transmit, the client's for receive and round trip.
//! * `twin gen` as the counter: its received frames over its own sending time.
//! * `twin nic` as the counter: its received frames over the generator's sending
//!   time; with a testpmd client (which has no duration of its own), testpmd's
//!   median per-second transmit rate scaled by the fraction of its frames that the
//!   NIC received (from testpmd's totals at exit).
//! * testpmd as the counter: the median of its per-second receive rates
//!   (`--stats-period 1`).
//!
//! CPU time comes from /proc (each thread's run time from schedstat, in ns) for
//! each process, read at the start and the end of the window; `domain` is the switch's descendants
//! (the driver domain's reaper and worker).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::plan::{Mode, Peer, Placement, Poll, Spec, Workload};
use super::results::Sample;
use crate::procs::{median_nonzero, n, testpmd_rates, testpmd_totals, wait_for_path, Proc};

/// The client's MAC: the switch port is configured with it (so frames toward the
/// client are known unicast even when it never sends).
const CLIENT_MAC: &str = "02:00:00:00:00:01";
/// The destination of the client's frames (the NIC side).
const NIC_MAC: &str = "02:00:00:00:00:fe";

/// A directory for the runs' sockets, removed at the end.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh directory under the temporary directory.
    pub fn new() -> anyhow::Result<Scratch> {
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
}

impl Run {
    /// CPU-seconds so far of every role except the client.
    fn cpu(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("nic".to_string(), self.nic.cpu_seconds());
        if let Some(sw) = &self.switch {
            m.insert("switch".to_string(), sw.cpu_seconds());
            m.insert("domain".to_string(), sw.descendants_cpu_seconds());
        }
        m
    }
}

fn delta(end: &BTreeMap<String, f64>, start: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    end.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - start.get(k).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .collect()
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

fn start_nic(spec: &Spec, pl: &Placement, sock: &str) -> anyhow::Result<Proc> {
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

/// Starts the switch and waits until its uplink runs in `mode` (its driver domain
/// connected to the NIC and, for inline and twin, the switch attached).
fn start_switch(
    spec: &Spec,
    pl: &Placement,
    nic_sock: &str,
    client_sock: &str,
    ctl: &str,
) -> anyhow::Result<Proc> {
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
        let status = switch::ctl::call(std::path::Path::new(ctl), "status")
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
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
            bail!("the uplink did not come up in {mode} mode within 20 s: {status:?} {out}");
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

/// Runs `spec` once with `dur` seconds of traffic.
pub fn run(s: &Scratch, spec: &Spec, dur: f64) -> anyhow::Result<Sample> {
    let pl = spec.placement();
    let (nic_s, c1_s, ctl_s) = (s.sock("nic.sock"), s.sock("c1.sock"), s.sock("ctl.sock"));
    let nic = start_nic(spec, &pl, &nic_s)?;
    let switch = match spec.mode {
        Mode::Native => None,
        _ => Some(start_switch(spec, &pl, &nic_s, &c1_s, &ctl_s)?),
    };
    let client_sock = if switch.is_some() { &c1_s } else { &nic_s };
    let mut run = Run { nic, switch };
    let (packets, secs, cpu) = match spec.client {
        Peer::Builtin => run_gen_client(&mut run, spec, &pl, client_sock, dur)?,
        Peer::Dpdk => run_testpmd_client(&mut run, spec, &pl, client_sock, dur)?,
    };
    Ok(Sample {
        spec: *spec,
        poll: pl.poll,
        packets,
        secs,
        cpu_s: cpu,
    })
}

/// The far end's median per-second receive rate, when it is a testpmd NIC.
fn testpmd_nic_rx_pps(nic: &mut Proc) -> anyhow::Result<f64> {
    nic.interrupt();
    let out = nic.wait(Duration::from_secs(15))?;
    let rx: Vec<u64> = testpmd_rates(&out, 0).into_iter().map(|(r, _)| r).collect();
    Ok(median_nonzero(rx) as f64)
}

fn run_gen_client(
    run: &mut Run,
    spec: &Spec,
    pl: &Placement,
    sock: &str,
    dur: f64,
) -> anyhow::Result<(f64, f64, BTreeMap<String, f64>)> {
    let args = gen_args(spec, pl, sock, dur);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cpu0 = run.cpu();
    let mut gen = Proc::twin("gen", &args)?;
    std::thread::sleep(Duration::from_secs_f64(dur));
    // The generator is still sending (it connected after it started): its CPU time
    // is read while it certainly exists.
    let cpu_gen = gen.cpu_seconds();
    let mut cpu = delta(&run.cpu(), &cpu0);
    cpu.insert("client".to_string(), cpu_gen);
    let g = gen.report(Duration::from_secs(30))?;
    let secs = g
        .pointer("/duration_s")
        .and_then(|v| v.as_f64())
        .unwrap_or(dur);
    if let Some(mut sw) = run.switch.take() {
        sw.stop_report()?;
    }
    let packets = match (spec.workload, spec.nic) {
        (Workload::Transmit, Peer::Builtin) => n(&run.nic.stop_report()?, "/rx_packets") as f64,
        (Workload::Transmit, Peer::Dpdk) => testpmd_nic_rx_pps(&mut run.nic)? * secs,
        _ => n(&g, "/rx_packets") as f64,
    };
    Ok((packets, secs, cpu))
}

fn run_testpmd_client(
    run: &mut Run,
    spec: &Spec,
    pl: &Placement,
    sock: &str,
    dur: f64,
) -> anyhow::Result<(f64, f64, BTreeMap<String, f64>)> {
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
    let cpu0 = run.cpu();
    let client_cpu0 = client.cpu_seconds();
    // testpmd's per-second figures: a whole number of periods, plus one to lose.
    let window = dur.ceil() + 1.0;
    std::thread::sleep(Duration::from_secs_f64(window));
    let mut cpu = delta(&run.cpu(), &cpu0);
    cpu.insert("client".to_string(), client.cpu_seconds() - client_cpu0);
    client.interrupt();
    let out = client.wait(Duration::from_secs(15))?;
    if let Some(mut sw) = run.switch.take() {
        sw.stop_report()?;
    }
    let rates = testpmd_rates(&out, 0);
    let pps = match (spec.workload, spec.nic) {
        (Workload::Transmit, Peer::Builtin) => {
            let r = run.nic.stop_report()?;
            let (_, client_tx) = testpmd_totals(&out).context("testpmd printed no totals")?;
            let delivered = n(&r, "/rx_packets") as f64;
            let tx_pps = median_nonzero(rates.iter().map(|&(_, t)| t).collect()) as f64;
            if client_tx == 0 {
                0.0
            } else {
                tx_pps * (delivered / client_tx as f64).min(1.0)
            }
        }
        (Workload::Transmit, Peer::Dpdk) => testpmd_nic_rx_pps(&mut run.nic)?,
        _ => median_nonzero(rates.iter().map(|&(r, _)| r).collect()) as f64,
    };
    Ok((pps * window, window, cpu))
}

/// Offered load of the round-trip-time runs: light, so that the times are the
/// path's, not a queue's.
pub const RTT_RATE_PPS: u64 = 10_000;
/// Frame size of the round-trip-time runs.
pub const RTT_SIZE: usize = 64;

/// Round-trip time under light load: the generator's own 64-byte frames through
/// `mode` to a reflecting NIC and back, busy polling, placed as the throughput
/// runs. Returns (p50, p99, p99.9, max) in microseconds.
pub fn run_rtt(s: &Scratch, mode: Mode, dur: f64) -> anyhow::Result<[f64; 4]> {
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
        sw.stop_report()?;
    }
    nic.stop_report()?;
    if n(&g, "/rtt_samples") == 0 {
        bail!("no frame came back");
    }
    let f = |p: &str| g.pointer(p).and_then(|v| v.as_f64()).unwrap_or(0.0);
    Ok([
        f("/rtt_p50_us"),
        f("/rtt_p99_us"),
        f("/rtt_p999_us"),
        f("/rtt_max_us"),
    ])
}
