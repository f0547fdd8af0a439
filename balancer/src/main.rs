//! `balancer`: the daemon (`balancer run`) and its command-line tools.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let cli = cli::args::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy(),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // One JSON object a line (journald and log shippers read them field by field).
        cli::args::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        cli::args::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    cli::run(cli, ebpf_log_level())
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
