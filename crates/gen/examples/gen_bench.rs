//! Runs the generator once against a vhost-user device socket and prints the report
//! as JSON. For quick manual throughput measurements (pin it with `taskset`):
//!
//! `gen_bench SOCKET FRAME_LEN SECONDS [busy|event]`

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use traffic_gen::{run, GenConfig, PollMode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: gen_bench SOCKET FRAME_LEN SECONDS [busy|event]");
        std::process::exit(2);
    }
    let mut cfg = GenConfig::new(&args[1]);
    cfg.frame_len = args[2].parse().unwrap_or(64);
    cfg.duration = Duration::from_secs_f64(args[3].parse().unwrap_or(2.0));
    cfg.connect_timeout = Duration::from_secs(10);
    if args.get(4).map(String::as_str) == Some("event") {
        cfg.mode = PollMode::EventDriven;
    }
    let stop = AtomicBool::new(false);
    match run(&cfg, &stop) {
        Ok(r) => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
        Err(e) => {
            eprintln!("generator failed: {e}");
            std::process::exit(1);
        }
    }
}
