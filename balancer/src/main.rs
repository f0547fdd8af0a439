//! `balancer`: the daemon (`balancer run`) and its command-line tools.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let cli = cli::args::Cli::parse();
    init_logs(cli.log_format.resolve());
    cli::run(cli, ebpf_log_level())
}

fn init_logs(format: cli::args::LogFormat) {
    use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = || EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        // One JSON object a line (log shippers read them field by field).
        cli::args::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        cli::args::LogFormat::Journald => match tracing_journald::layer() {
            Ok(journal) => tracing_subscriber::registry().with(filter()).with(journal).init(),
            Err(e) => {
                logs.init();
                tracing::warn!("the journal's socket is not usable ({e}): logging to standard error");
            }
        },
        cli::args::LogFormat::Text | cli::args::LogFormat::Auto => logs.init(),
    }
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
