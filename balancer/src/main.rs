//! `balancer`: the daemon (`balancer run`) and its command-line tools.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    cli::run(cli::args::Cli::parse(), ebpf_log_level())
}

/// aya-log level matching the most verbose level tracing lets through: the program then skips
/// the work of records nobody would see.
fn ebpf_log_level() -> u8 {
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}
