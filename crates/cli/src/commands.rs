//! The command-line interface: one clap struct per subcommand, and the glue that turns
//! a SIGINT or SIGTERM into a clean stop followed by a one-line JSON report on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use switch::config::PollMode;
use twin_wire::MacAddr;

use crate::switch_args::SwitchArgs;
use crate::{affinity, bench, demo};

/// TwinDrivers: a host-side network I/O plane for VMs. Clients attach over vhost-user,
/// a trusted switch forwards their frames, and each uplink NIC is driven by a
/// virtio-net driver written once for every place it can run.
#[derive(Debug, Parser)]
#[command(name = "twin", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the switch: serve client ports and drive uplink NICs.
    Switch(SwitchArgs),
    /// Run the built-in software NIC (a vhost-user virtio-net device).
    Nic(NicArgs),
    /// Generate traffic as a virtio-net driver over vhost-user, then print counters.
    Gen(GenArgs),
    /// The main job: a NIC, the switch and two generated clients, with counters printed.
    Demo(demo::DemoArgs),
    /// Measure throughput and CPU cost of every data path (a benchmark, not a test).
    Bench(bench::BenchArgs),
    /// Talk to a running switch's control socket: `status`, `mode UPLINK MODE`,
    /// `revive UPLINK` (an uplink that gave up after its restart budget), or
    /// `fault UPLINK FAULT` (only when the switch runs with --fault-injection).
    /// Prints the switch's JSON response.
    #[command(after_help = switch::ctl::usage())]
    Ctl(CtlArgs),
    /// Internal: a driver domain, started by the switch with its bootstrap socket as
    /// standard input.
    #[command(hide = true)]
    DriverDomain(DriverDomainArgs),
}

/// What the switch tells a driver domain on its command line (everything else
/// arrives over the bootstrap socket).
#[derive(Debug, Args)]
struct DriverDomainArgs {
    /// Run as this user and group id outside the sandbox's namespaces.
    #[arg(long)]
    outside_id: Option<u32>,
    /// Address-space limit (RLIMIT_AS), bytes.
    #[arg(long)]
    memory_limit: Option<u64>,
}

#[derive(Debug, Args)]
struct CtlArgs {
    /// The switch's control socket (`twin switch --control PATH`).
    #[arg(long)]
    control: PathBuf,
    /// The command and its arguments (below).
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

/// Options every long-running command shares.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// How the data path waits for work: `adaptive` (busy while there is work,
    /// epoll when idle), `busy` (spin, one full core, never sleep) or `event`
    /// (epoll soon after the work stops).
    /// [default: adaptive]
    #[arg(long, value_parser = parse_poll)]
    pub poll: Option<PollMode>,
    /// Pin the data path to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

fn parse_poll(s: &str) -> Result<PollMode, String> {
    s.parse()
}

fn parse_attack(s: &str) -> Result<soft_nic::Attack, String> {
    s.parse()
        .map_err(|e: soft_nic::hostile::Error| e.to_string())
}

#[derive(Debug, Args)]
struct NicArgs {
    /// The vhost-user socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// `sink` counts and drops every frame; `reflect` sends each back with MACs
    /// swapped; `source` sends its own frames (ethertype 0x88B6, a sequence number
    /// in the payload) to the driver as fast as it posts buffers, or at --rate, and
    /// counts and drops what the driver sends (the receive workload); `hostile`
    /// reflects, and once lies to the driver about the buffers it used (--attack).
    #[arg(long, value_parser = ["sink", "reflect", "source", "hostile"])]
    mode: String,
    /// Hostile mode: the attack, one of bad-used-id (TX used ids out of range or not
    /// in flight), long-length (RX used lengths beyond the buffer), runaway-index
    /// (a TX used index far ahead), stuck (the TX used ring stops advancing until
    /// the driver reconnects).
    #[arg(long, value_parser = parse_attack)]
    attack: Option<soft_nic::Attack>,
    /// Hostile mode: frames received from the driver before the attack starts.
    #[arg(long, default_value_t = 0)]
    attack_after: u64,
    /// Hostile mode, bad-used-id and long-length: how many used entries lie.
    #[arg(long, default_value_t = 4)]
    attack_frames: u64,
    /// Source mode: Ethernet frame size in bytes, without the virtio-net header
    /// (60-1514) [default: 64].
    #[arg(long)]
    size: Option<usize>,
    /// Source mode: frames per second (a token bucket granting whole batches of
    /// 64); omitted means as fast as the driver posts buffers.
    #[arg(long)]
    rate: Option<u64>,
    /// Source mode: destination MAC address (default broadcast). The source MAC is
    /// 02:00:00:00:00:fe.
    #[arg(long)]
    dst_mac: Option<MacAddr>,
    /// Report `rx_digest`: an order-sensitive digest (FNV-1a 64) of every frame
    /// received from the driver.
    #[arg(long)]
    digest: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// The vhost-user device socket to drive (a switch client port, a NIC).
    #[arg(long)]
    socket: PathBuf,
    /// Ethernet frame size in bytes, without the virtio-net header (60-1514).
    #[arg(long)]
    size: usize,
    /// Packets per second; omitted means as fast as possible. 0 sends nothing and
    /// only receives, counting what arrives (for example from `twin nic --mode
    /// source`; its frames count as `rx_foreign`), without a drain phase.
    #[arg(long)]
    rate: Option<u64>,
    /// How long to send, in seconds (fractions allowed). With --count, the most it
    /// may take.
    #[arg(long)]
    duration: f64,
    /// Send exactly this many frames, then stop sending (fewer if --duration ends
    /// first).
    #[arg(long)]
    count: Option<u64>,
    /// Report `rx_digest`: an order-sensitive digest (FNV-1a 64) of every frame
    /// received. Frames then carry no send timestamp (the same frames every run), so
    /// no round-trip time is measured (`rtt_*` in the report are 0).
    #[arg(long)]
    digest: bool,
    /// Source MAC address (default 02:00:00:00:00:<id>).
    #[arg(long)]
    src_mac: Option<MacAddr>,
    /// Destination MAC address (default broadcast).
    #[arg(long)]
    dst_mac: Option<MacAddr>,
    /// Generator id, carried in every frame's payload.
    #[arg(long, default_value_t = 1)]
    id: u32,
    /// Send frames tagged with this 802.1Q VLAN id (1-4094); --size counts the
    /// tag. Received frames are read tagged or not.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4094))]
    vlan: Option<u16>,
    #[command(flatten)]
    run: RunArgs,
}

/// Sets a flag on SIGINT and SIGTERM, so that commands stop cleanly and report.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    Ok(stop)
}

fn print_json<T: serde::Serialize>(report: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}

impl RunArgs {
    /// How the data path waits (adaptive unless told).
    pub fn poll(&self) -> PollMode {
        self.poll.unwrap_or_default()
    }
}

fn pin(run: &RunArgs) -> anyhow::Result<()> {
    if let Some(cpu) = run.cpu {
        affinity::pin_current_thread(cpu)?;
    }
    Ok(())
}

/// `words` without `--output FILE`, and the file.
fn take_output(words: Vec<String>) -> (Vec<String>, Option<PathBuf>) {
    let mut rest = Vec::with_capacity(words.len());
    let mut output = None;
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        if w == "--output" {
            output = it.next().map(PathBuf::from);
        } else {
            rest.push(w);
        }
    }
    (rest, output)
}

/// `twin ctl capture`: streams the capture into `output` (created with mode
/// 0600: frames are the clients' data), then prints the answer with the frames
/// the file holds.
fn capture(
    control: &std::path::Path,
    command: &switch::ctl::Command,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(output) = output else {
        bail!("capture needs --output FILE");
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    // Unbuffered: what arrived is in the file even if a Ctrl-C ends the copy.
    let mut out = file;
    let (answer, bytes) = switch::ctl::capture(control, command, &mut out)?;
    if let switch::ctl::Response::Err(f) = answer.response {
        writeln!(std::io::stdout().lock(), "{}", answer.line)?;
        bail!("the switch refused the command: {f}");
    }
    let frames = pcap_records(&std::fs::read(&output)?);
    let summary = serde_json::json!({"ok": true, "result": {
        "output": output, "bytes": bytes, "frames": frames,
    }});
    writeln!(std::io::stdout().lock(), "{summary}")?;
    Ok(())
}

/// The whole records of a pcap file.
fn pcap_records(bytes: &[u8]) -> u64 {
    let mut at = 24;
    let mut n = 0;
    while let Some(h) = bytes.get(at..at + 16) {
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if bytes.len() < at + 16 + len {
            break;
        }
        at += 16 + len;
        n += 1;
    }
    n
}

/// The exit status for a run that failed: 2 when `twin ctl` got no response
/// from the switch (like clap's for bad arguments), 1 otherwise (an error
/// response included).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<switch::ctl::CtlError>() {
        Some(c) if c.is_no_response() => 2,
        _ => 1,
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Switch(a) => {
            let (cfg, run) = a.into_config()?;
            cfg.validate()?;
            pin(&run)?;
            let stop = stop_flag()?;
            let report = switch::run(&cfg, &stop)?;
            print_json(&report)
        }
        Command::Nic(a) => {
            let mode = match a.mode.as_str() {
                "reflect" => soft_nic::Mode::Reflect,
                "source" => soft_nic::Mode::Source,
                "hostile" => soft_nic::Mode::Hostile,
                _ => soft_nic::Mode::Sink,
            };
            anyhow::ensure!(
                (mode == soft_nic::Mode::Hostile) == a.attack.is_some(),
                "--mode hostile needs --attack, and --attack applies to --mode hostile only"
            );
            anyhow::ensure!(a.attack_frames > 0, "--attack-frames must be at least 1");
            anyhow::ensure!(
                mode == soft_nic::Mode::Source
                    || (a.size.is_none() && a.rate.is_none() && a.dst_mac.is_none()),
                "--size, --rate and --dst-mac apply to --mode source only"
            );
            pin(&a.run)?;
            let stop = stop_flag()?;
            let mut cfg = soft_nic::NicConfig::new(a.socket, mode);
            cfg.busy_poll = a.run.poll() == PollMode::Busy;
            cfg.adaptive = a.run.poll() == PollMode::Adaptive;
            cfg.digest = a.digest;
            let dflt = soft_nic::SourceConfig::default();
            cfg.source = soft_nic::SourceConfig {
                frame_len: a.size.unwrap_or(dflt.frame_len),
                rate_pps: a.rate,
                dst_mac: a.dst_mac.unwrap_or(dflt.dst_mac),
            };
            if let Some(kind) = a.attack {
                cfg.attack = soft_nic::AttackConfig {
                    kind,
                    after: a.attack_after,
                    frames: a.attack_frames,
                };
            }
            let report = soft_nic::run(&cfg, &stop)?;
            print_json(&report)
        }
        Command::Gen(a) => {
            anyhow::ensure!(
                a.duration.is_finite() && a.duration > 0.0,
                "--duration must be a positive number of seconds"
            );
            pin(&a.run)?;
            let stop = stop_flag()?;
            let mut cfg = traffic_gen::GenConfig::new(a.socket);
            cfg.id = a.id;
            cfg.frame_len = a.size;
            cfg.rate_pps = a.rate;
            cfg.duration = Duration::from_secs_f64(a.duration);
            cfg.count = a.count;
            cfg.digest = a.digest;
            cfg.src_mac = a.src_mac;
            cfg.dst_mac = a.dst_mac.unwrap_or(MacAddr::BROADCAST);
            cfg.vlan = a.vlan;
            cfg.mode = match a.run.poll() {
                PollMode::Busy => traffic_gen::PollMode::BusyPoll,
                PollMode::Event => traffic_gen::PollMode::EventDriven,
                PollMode::Adaptive => traffic_gen::PollMode::Adaptive,
            };
            let report = traffic_gen::run(&cfg, &stop)?;
            print_json(&report)
        }
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Ctl(a) => {
            // `capture ... --output FILE`: the file is this side's.
            let (words, output) = take_output(a.command);
            let command = switch::ctl::Command::from_words(&words).unwrap_or_else(|f| {
                // Bad arguments: clap's own error (exit status 2).
                let mut cli = <Cli as clap::CommandFactory>::command();
                cli.build();
                let ctl = cli
                    .find_subcommand_mut("ctl")
                    .expect("twin has a ctl command");
                ctl.error(clap::error::ErrorKind::InvalidValue, f.message)
                    .exit()
            });
            if let switch::ctl::Command::Capture { .. } = command {
                return capture(&a.control, &command, output);
            }
            // No response: exit status 2 (see `exit_status`).
            let answer = switch::ctl::call(&a.control, &command)?;
            writeln!(std::io::stdout().lock(), "{}", answer.line)
                .context("cannot print the response")?;
            if let switch::ctl::Response::Err(f) = answer.response {
                bail!("the switch refused the command: {f}");
            }
            Ok(())
        }
        Command::DriverDomain(a) => {
            use std::os::fd::AsFd;
            let boot = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .context("no bootstrap socket on standard input")?;
            let stop = stop_flag()?;
            // Once its descriptors arrived, the domain enters its sandbox: own
            // namespaces, empty root, no capabilities, no_new_privs, then a seccomp
            // allow-list that kills it on anything else (crates/sandbox).
            let mut policy = sandbox::Policy::driver_domain();
            policy.outside_ids = a.outside_id.map(|id| sandbox::Ids { uid: id, gid: id });
            policy.memory_limit = a.memory_limit;
            // The allow-list grows by what the device's kind needs (AF_PACKET,
            // AF_XDP: a send of no bytes), once the kind is known.
            let jail = |kind| {
                use driver_domain::bootstrap::DeviceKind;
                if matches!(kind, DeviceKind::Packet | DeviceKind::Xdp) {
                    policy.kind = sandbox::ProcessKind::RingDomain;
                }
                sandbox::enter(&policy)
            };
            driver_domain::serve(std::os::unix::net::UnixStream::from(boot), &stop, jail)?;
            Ok(())
        }
    }
}
