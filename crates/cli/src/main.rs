//! `twin`: the one binary of the project. Each subcommand is a thin wrapper that parses
//! its arguments and calls a library crate; errors become a message and exit code 2
//! (bad arguments, from clap, and `twin ctl` without a response from the switch)
//! or 1 (the run failed, `twin ctl`'s error responses included).

mod affinity;
mod bench;
mod commands;
mod demo;
mod switch_args;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    // Colours only on a terminal: a driver domain's stderr is a pipe the switch
    // relays, and logs are mostly read from files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TWIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twin: error: {e:#}");
            std::process::ExitCode::from(commands::exit_status(&e))
        }
    }
}
