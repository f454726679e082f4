//! `twin demo`: the main job, on the built-in parts only. It starts, as separate
//! processes of this same binary, a software NIC in reflect mode, the switch with two
//! client ports and one uplink in the default mode (twin: the driver's fast path in
//! the switch, checked by the SVM), and two traffic generators, then prints every
//! process's counters.
//!
//! Traffic: client `c1` sends to an address behind the uplink (the NIC reflects it
//! back to `c1`), client `c2` sends to `c1`. The first frames are flooded until the
//! switch has learned where each address lives.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use twin_bench::procs::{self, n, wait_for_path, Proc};

/// Options of `twin demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frame size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Packets per second per generator (the demo runs five processes on two cores,
    /// so it runs them event-driven at a moderate rate).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
}

const C1_MAC: &str = "02:00:00:00:00:01";
const C2_MAC: &str = "02:00:00:00:00:02";
const OUTSIDE_MAC: &str = "02:00:00:00:00:fe";

/// Runs the demo and prints the counters.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let dir: PathBuf = std::env::temp_dir().join(format!("twin-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (nic_s, c1_s, c2_s) = (sock("nic.sock"), sock("c1.sock"), sock("c2.sock"));
    let (dur, size, rate) = (
        a.duration.to_string(),
        a.size.to_string(),
        a.rate.to_string(),
    );

    println!(
        "twin demo: NIC (reflect) <- uplink u0 <- switch -> clients c1, c2 in {}",
        dir.display()
    );
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event",
        ],
    )?;
    let c1 = format!("c1={c1_s},mac={C1_MAC}");
    let c2 = format!("c2={c2_s},mac={C2_MAC}");
    let up = format!("u0={nic_s}");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch", "--client", &c1, "--client", &c2, "--uplink", &up, "--poll", "event",
        ],
    )?;
    wait_for_path(&c1_s, Duration::from_secs(10))?;
    wait_for_path(&c2_s, Duration::from_secs(10))?;
    let gen = |id: &str, s: &str, src: &str, dst: &str| -> procs::Result<Proc> {
        Proc::twin(
            "gen",
            &[
                "gen",
                "--socket",
                s,
                "--size",
                &size,
                "--rate",
                &rate,
                "--duration",
                &dur,
                "--src-mac",
                src,
                "--dst-mac",
                dst,
                "--id",
                id,
                "--poll",
                "event",
            ],
        )
    };
    let mut g1 = gen("1", &c1_s, C1_MAC, OUTSIDE_MAC)?;
    let mut g2 = gen("2", &c2_s, C2_MAC, C1_MAC)?;
    let wait = Duration::from_secs_f64(a.duration + 30.0);
    let r1 = g1.report(wait)?;
    let r2 = g2.report(wait)?;
    let rs = sw.stop_report()?;
    let rn = nic.stop_report()?;
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<24} {:>12} {:>12}",
        "process", "tx_packets", "rx_packets"
    );
    let row = |name: &str, v: &serde_json::Value| {
        let (tx, rx) = (n(v, "/tx_packets"), n(v, "/rx_packets"));
        println!("{name:<24} {tx:>12} {rx:>12}");
    };
    row("gen c1 -> outside", &r1);
    row("gen c2 -> c1", &r2);
    row("nic (reflect)", &rn);
    println!();
    println!("switch ports (rx = from the port, tx = to the port):");
    println!(
        "{:<24} {:>12} {:>12}  drops",
        "port", "rx_packets", "tx_packets"
    );
    for kind in ["clients", "uplinks"] {
        if let Some(ports) = rs.get(kind).and_then(|v| v.as_object()) {
            for (name, p) in ports {
                // The report lists every reason; show the ones that counted.
                let drops: serde_json::Map<String, serde_json::Value> = p
                    .get("drops")
                    .and_then(|d| d.as_object())
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_u64().is_some_and(|c| c > 0))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let drops = serde_json::Value::Object(drops);
                let (rx, tx) = (n(p, "/rx_packets"), n(p, "/tx_packets"));
                println!(
                    "{:<24} {rx:>12} {tx:>12}  {drops}",
                    format!("{kind}/{name}")
                );
            }
        }
    }
    let expect_c1 = n(&r1, "/tx_packets") + n(&r2, "/tx_packets");
    println!(
        "\nc1 received {} of the {} frames sent to it (its own, reflected by the NIC, and c2's);",
        n(&r1, "/rx_packets"),
        expect_c1
    );
    println!("the rest are counted above under their drop reasons.");
    println!("\nfull switch report:\n{}", serde_json::to_string(&rs)?);
    Ok(())
}
