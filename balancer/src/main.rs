//! `balancer`: the daemon (`balancer run`) and its command-line tools.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use balancer::{
    config::{Config, DEFAULT_PIN_DIR, XdpModeSetting},
    dataplane::{Dataplane, loader::{self, BALANCER_PROGRAM}, plan, stats::Snapshot, sync},
    netlink::Netlink,
};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, level_filters::LevelFilter, warn};

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
        action: PeerAction,
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
enum PeerAction {
    /// Attach, and keep it attached after this command exits (a pinned link).
    Attach {
        /// The veth peer, in the current network namespace.
        #[arg(long)]
        iface: String,
        /// bpffs directory for the pinned link.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Detach what `attach` attached.
    Detach {
        /// The veth peer, in the current network namespace.
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
        Command::Run { config, bpf_object, xdp_mode } => {
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
                .and_then(|rt| rt.block_on(run(cfg, bpf_object.as_deref(), xdp_mode)))
        }
        Command::Stats { pin_dir, json } => stats(&pin_dir, json),
        Command::XdpPeer { action } => xdp_peer(action),
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

async fn run(cfg: Config, bpf_object: Option<&Path>, xdp_mode: Option<XdpModeSetting>) -> Result<()> {
    let mut dp = Dataplane::load(bpf_object, Some(&cfg.pin_dir), ebpf_log_level())
        .context("loading the data path (try `--bpf-object` to load a freshly built object)")?;
    spawn_ebpf_logger(&mut dp);

    let nl = Netlink::new().context("opening netlink")?;
    let mut ifaces = Vec::new();
    for name in &cfg.interfaces {
        ifaces.push(nl.interface(name).await.with_context(|| format!("interface `{name}` from the config"))?);
    }
    let mut hops = HashMap::new();
    for vip in &cfg.vips {
        for b in &vip.backends {
            let ip = *b.address.get_ref();
            if hops.contains_key(&ip) {
                continue;
            }
            let mut found = None;
            let mut last_err = None;
            for iface in &ifaces {
                match nl.neighbour_mac(ip, iface, Duration::from_secs(3)).await {
                    Ok(mac) => {
                        found = Some(plan::NextHop { mac, ifindex: iface.index });
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let hop = found.ok_or_else(|| last_err.expect("at least one interface"))
                .with_context(|| format!("backend {ip} of VIP {}", vip.address.get_ref()))?;
            info!(backend = %ip, mac = %fmt_mac(&hop.mac), ifindex = hop.ifindex, "backend resolved");
            hops.insert(ip, hop);
        }
    }
    let p = plan::plan(&cfg, &hops);
    sync::apply(&mut dp, &p).context("programming the maps")?;
    let mode = xdp_mode.unwrap_or(cfg.xdp_mode);
    for iface in &ifaces {
        dp.attach(BALANCER_PROGRAM, &iface.name, mode)
            .with_context(|| format!("attaching to `{}` (try --xdp-mode generic)", iface.name))?;
    }
    info!(vips = p.vips.len(), backends = p.backends.len(), "balancer running");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    info!("shutting down: detaching the XDP program");
    drop(dp);
    Ok(())
}

/// Forwards the program's aya-log records to `tracing` (through the `log` bridge).
fn spawn_ebpf_logger(dp: &mut Dataplane) {
    let logger = match aya_log::EbpfLogger::init(dp.ebpf_mut()) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "XDP program logs are unavailable");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged until the
    // logger (moved into the AsyncFd) is dropped.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "XDP program logs are unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

fn xdp_peer(action: PeerAction) -> Result<()> {
    match action {
        PeerAction::Attach { iface, pin_dir } => {
            let pin = loader::peer_link_pin(&pin_dir, &iface);
            let mut dp = Dataplane::load_helpers().context("loading the pass program")?;
            dp.attach_pinned(loader::PASS_PROGRAM, &iface, XdpModeSetting::Native, &pin)
                .with_context(|| format!("attaching the pass program to `{iface}`"))?;
            println!("{}", pin.display());
        }
        PeerAction::Detach { iface, pin_dir } => {
            let pin = loader::peer_link_pin(&pin_dir, &iface);
            loader::unpin_link(&pin).with_context(|| format!("was `balancer xdp-peer attach --iface {iface}` run in this namespace?"))?;
        }
    }
    Ok(())
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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
