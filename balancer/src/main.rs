//! `balancer`: the daemon (`balancer run`) and its command-line tools.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use balancer::{
    config::{self, Config, DEFAULT_IPIP_SOURCE_V4, DEFAULT_IPIP_SOURCE_V6, DEFAULT_PIN_DIR, XdpModeSetting},
    daemon::{Daemon, RunOptions},
    dataplane::{Dataplane, loader, plan, stats::Snapshot, sync},
};
use balancer_common::vip::Settings;
use clap::{Parser, Subcommand};
use tracing::level_filters::LevelFilter;

/// XDP L4 load balancer with weighted Maglev hashing.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load and attach the XDP program, program the VIPs, serve until signalled.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
        /// Use this XDP object instead of the one built into the binary (development).
        #[arg(long, value_name = "PATH")]
        bpf_object: Option<PathBuf>,
        /// Override the config's `xdp_mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeSetting>,
        /// Detach the XDP program on exit. By default it stays attached (pinned) and keeps
        /// balancing with the last tables, so a restart or upgrade drops no connection.
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Remove everything `balancer run` left in bpffs: the XDP program leaves the interfaces,
    /// the flow table and counters are freed.
    Teardown {
        /// The config's `pin_dir`.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Check a configuration file and exit: 0 when valid, 2 with the error otherwise.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
    },
    /// Make a veth accept frames the balancer sends into it: attaches a pass-only XDP program to
    /// the peer of a veth the balancer runs on (veths drop XDP_TX/redirected frames otherwise).
    XdpPeer {
        #[command(subcommand)]
        action: HelperAction,
    },
    /// On a backend of an IPIP VIP: strip the balancer's outer header in XDP, so the local stack
    /// gets the client's packet (the VIP must be on this host's loopback).
    Decap {
        #[command(subcommand)]
        action: DecapAction,
    },
    /// Print the data path's counters, read from the maps a running daemon pinned.
    Stats {
        /// Where the daemon pins its maps (the config's `pin_dir`).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HelperAction {
    /// Attach, and keep it attached after this command exits (a pinned link).
    Attach {
        /// The interface, in the current network namespace.
        #[arg(long)]
        iface: String,
        /// bpffs directory for the pinned link.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Detach what `attach` attached.
    Detach {
        /// The interface, in the current network namespace.
        #[arg(long)]
        iface: String,
        /// bpffs directory of the pinned link.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DecapAction {
    /// Attach, and keep it attached after this command exits (a pinned link).
    Attach {
        /// The interface the balancer's IPIP packets arrive on.
        #[arg(long)]
        iface: String,
        /// bpffs directory for the pinned link.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Only strip packets from this outer IPv4 source prefix: the balancers'
        /// `ipip_source_v4`.
        #[arg(long, default_value = DEFAULT_IPIP_SOURCE_V4, value_parser = config::ipip_prefix_v4)]
        ipip_source_v4: std::net::Ipv4Addr,
        /// Only strip packets from this outer IPv6 source prefix: the balancers'
        /// `ipip_source_v6`.
        #[arg(long, default_value = DEFAULT_IPIP_SOURCE_V6, value_parser = config::ipip_prefix_v6)]
        ipip_source_v6: std::net::Ipv6Addr,
    },
    /// Detach what `attach` attached.
    Detach {
        /// The interface.
        #[arg(long)]
        iface: String,
        /// bpffs directory of the pinned link.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// Exit code for a configuration error, so scripts can tell it from a runtime failure.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Command::Teardown { pin_dir } => teardown(&pin_dir),
        Command::Run { config, bpf_object, xdp_mode, detach_on_exit } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| {
                    let opts = RunOptions { bpf_object, xdp_mode, log_level: ebpf_log_level(), detach_on_exit };
                    rt.block_on(async { Daemon::start(cfg, &config, opts).await?.serve().await })
                })
        }
        Command::Stats { pin_dir, json } => stats(&pin_dir, json),
        Command::XdpPeer { action } => helper(loader::PASS_PROGRAM, "xdp-peer", action, None),
        Command::Decap { action: DecapAction::Attach { iface, pin_dir, ipip_source_v4, ipip_source_v6 } } => helper(
            loader::DECAP_PROGRAM,
            "decap",
            HelperAction::Attach { iface, pin_dir },
            Some(plan::settings(ipip_source_v4, ipip_source_v6)),
        ),
        Command::Decap { action: DecapAction::Detach { iface, pin_dir } } => {
            helper(loader::DECAP_PROGRAM, "decap", HelperAction::Detach { iface, pin_dir }, None)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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

fn teardown(pin_dir: &Path) -> Result<()> {
    if !pin_dir.exists() {
        println!("nothing pinned at {}", pin_dir.display());
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(pin_dir)
        .with_context(|| format!("reading {}", pin_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    std::fs::remove_dir_all(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    println!("removed {} ({})", pin_dir.display(), entries.join(", "));
    Ok(())
}

/// Attaches or detaches one of the object's helper programs with a pinned link; `settings` are
/// written to its `SETTINGS` map first.
fn helper(program: &'static str, command: &str, action: HelperAction, settings: Option<Settings>) -> Result<()> {
    match action {
        HelperAction::Attach { iface, pin_dir } => {
            let pin = loader::helper_link_pin(&pin_dir, program, &iface);
            let mut dp = Dataplane::load_helpers().with_context(|| format!("loading the {program} program"))?;
            if let Some(s) = settings {
                sync::write_settings(&mut dp, s).context("writing the settings")?;
            }
            dp.attach_pinned(program, &iface, XdpModeSetting::Auto, &pin)
                .with_context(|| format!("attaching the {program} program to `{iface}`"))?;
            println!("{}", pin.display());
        }
        HelperAction::Detach { iface, pin_dir } => {
            let pin = loader::helper_link_pin(&pin_dir, program, &iface);
            loader::unpin_link(&pin)
                .with_context(|| format!("was `balancer {command} attach --iface {iface}` run in this namespace?"))?;
        }
    }
    Ok(())
}

fn stats(pin_dir: &Path, json: bool) -> Result<()> {
    let s = Snapshot::from_pins(pin_dir)
        .with_context(|| format!("is the daemon running with pin_dir = {}?", pin_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{:<28} {:>5} {:>12} {:>14} {:>10}", "VIP", "PROTO", "PACKETS", "BYTES", "NEW FLOWS");
    for v in &s.vips {
        println!("{:<28} {:>5} {:>12} {:>14} {:>10}", v.vip, v.protocol, v.traffic.packets, v.traffic.bytes, v.traffic.new_flows);
    }
    println!();
    println!("{:<6} {:<28} {:<8} {:>12} {:>14} {:>10}", "ID", "BACKEND", "STATE", "PACKETS", "BYTES", "NEW FLOWS");
    for b in &s.backends {
        println!(
            "{:<6} {:<28} {:<8} {:>12} {:>14} {:>10}",
            b.id, b.address, b.state, b.traffic.packets, b.traffic.bytes, b.traffic.new_flows
        );
    }
    println!();
    println!("not balanced: {}", s.not_balanced.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" "));
    Ok(())
}
