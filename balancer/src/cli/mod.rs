//! The command line: `args` (the clap tree), `local` (commands that need no daemon), `output`
//! (tables), and here the dispatch, including the commands that talk to the daemon.

pub mod args;
mod local;
mod man;
mod output;

use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result, anyhow};
use balancer::{
    config::Config,
    control::{
        client,
        protocol::{FlowAnswer, Request},
    },
    daemon::{Daemon, RunOptions},
    dataplane::{loader, plan},
    status::Status,
};
use clap::CommandFactory as _;

use args::{BackendAction, BgpAction, Cli, Command, DecapAction, NodeAction, OverridesAction, VipAction};

/// Exit code for a configuration error (`EX_CONFIG` of sysexits.h), so scripts and systemd
/// (`RestartPreventExitStatus`) can tell it from a usage error (2, clap's) and from a runtime
/// failure (1).
const EXIT_CONFIG: u8 = 78;

/// The control request of a `balancer backend …` command.
fn backend_request(action: BackendAction) -> Request {
    match action {
        BackendAction::Add { vip, address, proto, weight, state, backup, distance, more, pool } => {
            Request::BackendAdd { vip, protocol: proto, address, weight, state, backup, distance, more, pool }
        }
        BackendAction::Del { target } => Request::BackendDel { target: target.into() },
        BackendAction::Check { target } => Request::BackendCheck { target: target.into() },
        BackendAction::Set { target, weight, state, backup, route } => {
            Request::BackendSet { target: target.into(), weight, state, backup, route }
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, log_level: u8) -> ExitCode {
    if !matches!(cli.command, Command::Run { .. }) {
        // A command's output piped into `head` ends quietly, as other command-line tools do,
        // instead of printing a broken-pipe error. The daemon keeps Rust's ignored SIGPIPE:
        // a client that goes away must never kill it.
        // SAFETY: setting a signal's disposition to the default is always sound; no handler runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Import { from, vip, interface, output } => return import(&from, vip, &interface, output.as_deref()),
        Command::Run { config, bpf_object, xdp_mode, detach_on_exit, takeover } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let opts = RunOptions { bpf_object, xdp_mode, log_level, detach_on_exit, takeover };
            daemon(cfg, &config, opts)
        }
        Command::Status => remote(&cli.socket, &Request::Status).and_then(|d| {
            let mut status: Status = serde_json::from_value(d).context("the daemon's answer is not understood")?;
            // Counted here, from the pinned flow table, so the daemon is never held up by it.
            if let Ok(counts) = balancer::dataplane::stats::flow_counts(&status.pin_dir) {
                for b in status.vips.iter_mut().flat_map(|v| v.backends.iter_mut()) {
                    b.flows = Some(counts.get(&b.id).copied().unwrap_or(0));
                }
            }
            show::<Status>(serde_json::to_value(&status)?, cli.json, output::status)
        }),
        Command::Reload => remote(&cli.socket, &Request::Reload).map(|d| done(&d, cli.json)),
        Command::Node { action } => {
            let request = match action {
                NodeAction::Drain => Request::NodeDrain,
                NodeAction::Resume => Request::NodeResume,
            };
            remote(&cli.socket, &request).map(|d| done(&d, cli.json))
        }
        Command::Bgp { action: BgpAction::Config { config } } => return bgp_config(&config),
        Command::Overrides { action: None | Some(OverridesAction::List) } => remote(&cli.socket, &Request::Overrides)
            .and_then(|d| show::<balancer::overrides::Overrides>(d, cli.json, output::overrides)),
        Command::Overrides { action: Some(OverridesAction::Clear { vip, backend }) } => {
            remote(&cli.socket, &Request::OverridesClear { vip, backend }).map(|d| done(&d, cli.json))
        }
        Command::Vip { action } => match action {
            VipAction::List => {
                remote(&cli.socket, &Request::Status).and_then(|d| show::<Status>(d, cli.json, output::vips))
            }
            VipAction::Add { address, proto, forwarding, ring_size, ignore_source_port } => remote(
                &cli.socket,
                &Request::VipAdd { address, protocol: proto, forwarding, ring_size, ignore_source_port },
            )
            .map(|d| done(&d, cli.json)),
            VipAction::Del { address, proto } => {
                remote(&cli.socket, &Request::VipDel { address, protocol: proto }).map(|d| done(&d, cli.json))
            }
        },
        Command::Backend { action } => remote(&cli.socket, &backend_request(action)).map(|d| done(&d, cli.json)),
        Command::Flow { src, dst, proto } => remote(&cli.socket, &Request::Flow { src, dst, protocol: proto })
            .and_then(|d| {
                show::<FlowAnswer>(d, cli.json, |f| {
                    let name = |b: Option<std::net::IpAddr>| b.map_or("none".to_owned(), |b| b.to_string());
                    println!("new flow -> {}", name(f.table_backend));
                    println!("flow table -> {}", f.pinned_backend.map_or("no entry".to_owned(), |b| b.to_string()));
                })
            }),
        Command::Stats { pin_dir, interval } => local::stats(&pin_dir, interval, cli.json),
        Command::Teardown { pin_dir, stop } => local::teardown(&pin_dir, stop),
        Command::XdpPeer { action } => local::helper(loader::PASS_PROGRAM, "xdp-peer", action, None),
        Command::Decap { action: DecapAction::Attach { iface, pin_dir, ipip_source_v4, ipip_source_v6 } } => {
            local::helper(
                loader::DECAP_PROGRAM,
                "decap",
                args::HelperAction::Attach { iface, pin_dir },
                Some(plan::settings(ipip_source_v4, ipip_source_v6)),
            )
        }
        Command::Decap { action: DecapAction::Detach { iface, pin_dir } } => {
            local::helper(loader::DECAP_PROGRAM, "decap", args::HelperAction::Detach { iface, pin_dir }, None)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "balancer", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man::man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `balancer check`: parsing and validation, then every host-side check the daemon would make.
/// Exit code of an import with notes (something had no equivalent or was approximated).
const EXIT_NOTES: u8 = 3;

fn import(
    from: &args::ImportFrom,
    vip: Option<std::net::SocketAddr>,
    interface: &str,
    output: Option<&Path>,
) -> ExitCode {
    use balancer::import::{self, Val, string};
    let read = match from {
        args::ImportFrom::ModJk { workers, mounts } => import::mod_jk::import(workers, mounts.as_deref()),
        args::ImportFrom::Httpd { file } => import::httpd::import(file),
        args::ImportFrom::Nginx { file } => import::nginx::import(file),
    };
    let mut imported = match read {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let default_vip = if let Some(v) = vip {
        imported.vip = None;
        imported.notes.retain(|n| !n.text.contains("192.0.2.1 stands for it"));
        Val::chosen(string(&v.to_string()), "--vip")
    } else {
        if imported.vip.is_none() {
            imported.note(None, "the VIP's address is not in the source: 192.0.2.1:80 stands for it (or give --vip)");
        }
        Val::chosen(string("192.0.2.1:80"), "stands for the VIP's address: replace it")
    };
    let interfaces = Val::chosen(format!("[{}]", string(interface)), "--interface: where the VIP's traffic arrives");
    let text = import::render(&imported, &default_vip, &interfaces);
    let name = output.map_or_else(|| std::path::PathBuf::from("imported.toml"), Path::to_path_buf);
    if let Err(e) = Config::parse(&text, &name) {
        imported.note(None, format!("the result does not pass `balancer check`: {e}"));
    }
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        }
        None => print!("{text}"),
    }
    let notes = import::notes(&imported);
    for n in &notes {
        eprintln!("note: {n}");
    }
    let members: usize = imported.pools.iter().map(|p| p.members.len()).sum();
    eprintln!("imported {} pools with {members} backends; {} notes", imported.pools.len(), notes.len());
    if notes.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NOTES) }
}

/// `balancer bgp config`: the BIRD side of `[announce]` (the defaults when the file has none).
fn bgp_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let announce = c.announce.unwrap_or_default();
            print!("{}", balancer::announce::bird_config(&announce));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let running = std::os::unix::net::UnixStream::connect(&config.control_socket).is_ok();
    let problems = balancer::preflight::check(&config, running);
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("error: {}: {p}", path.display());
    }
    ExitCode::from(EXIT_CONFIG)
}

fn daemon(config: Config, path: &Path, opts: RunOptions) -> Result<()> {
    let threads =
        config.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    // One worker runs on the calling thread: the multi-thread scheduler's work stealing, shared
    // queues and wakeups cost a single worker about a tenth of the L7 proxy's throughput.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async { Daemon::start(config, path, opts).await?.serve().await })
}

/// Sends `request`; the answer's data, or its error as this command's error.
fn remote(socket: &Path, request: &Request) -> Result<serde_json::Value> {
    let response = client::call(socket, request).map_err(|e| anyhow!(e))?;
    if response.ok { Ok(response.data) } else { Err(anyhow!(response.error.unwrap_or_else(|| "failed".into()))) }
}

fn show<T: serde::de::DeserializeOwned>(data: serde_json::Value, json: bool, table: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        table(&serde_json::from_value(data).context("the daemon's answer is not understood")?);
    }
    Ok(())
}

fn done(data: &serde_json::Value, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "ok": true, "message": data }));
    } else if let Some(s) = data.as_str() {
        println!("{s}");
    }
}
