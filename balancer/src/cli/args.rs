//! The command line, as clap derives it.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Parser, Subcommand};

use balancer::config::{
    self, BackendState, DEFAULT_CONTROL_SOCKET, DEFAULT_IPIP_SOURCE_V4, DEFAULT_IPIP_SOURCE_V6, DEFAULT_PIN_DIR,
    Forwarding, Protocol, XdpModeSetting,
};

/// XDP L4 load balancer with weighted Maglev hashing.
#[derive(Parser)]
#[command(name = "balancer", version, about)]
pub struct Cli {
    /// The daemon's control socket (the config's `control_socket`).
    #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// How log lines are written: `auto` (to the journal when systemd connected standard error
    /// to it, else text), `text`, `json` (one object a line on standard error) or `journald`.
    #[arg(long, global = true, value_enum, default_value = "auto", env = "BALANCER_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Command {
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
        /// Seamless restart or upgrade: take over from the daemon running with this
        /// configuration (its L7 listening sockets and pin lock, over the control socket). It
        /// stops accepting, finishes its in-flight requests within `drain_timeout_s` and exits;
        /// no connection is refused meanwhile. Without a running daemon, starts normally.
        #[arg(long)]
        takeover: bool,
    },
    /// Turn a `mod_jk`, Apache httpd (`mod_proxy_balancer`) or nginx configuration into ours:
    /// annotated TOML on standard output, a note on standard error for every directive with no
    /// equivalent or only approximated. Exit 0: imported cleanly; 3: imported with notes; 2: not
    /// importable.
    Import {
        /// What to read.
        #[command(subcommand)]
        from: ImportFrom,
        /// The VIP's address:port (default: 192.0.2.1 and the port the source listens on).
        #[arg(long, global = true)]
        vip: Option<SocketAddr>,
        /// The interface the VIP's traffic arrives on.
        #[arg(long, global = true, default_value = "eth0")]
        interface: String,
        /// Write the TOML here instead of standard output.
        #[arg(short, long, global = true)]
        output: Option<PathBuf>,
    },
    /// Check a configuration file and exit: 0 when valid, 78 with the error otherwise.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
    },
    /// VIPs and backends: state, health, weight, ring share, counters.
    Status,
    /// Re-read the daemon's configuration file. Changes made with `backend set` are kept (see
    /// `overrides`); those made with `vip`/`backend add`/`del` are dropped.
    Reload,
    /// Runtime overrides (`backend set`) the daemon keeps across reloads and restarts in its
    /// `state_file`, until the file changes the same field or they are cleared.
    Overrides {
        #[command(subcommand)]
        action: Option<OverridesAction>,
    },
    /// Add, remove or list VIPs (until the next reload).
    Vip {
        #[command(subcommand)]
        action: VipAction,
    },
    /// Add, remove or change backends (until the next reload).
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Which backend a 5-tuple goes to, and whether the flow table holds it.
    Flow {
        /// Client address and port.
        src: SocketAddr,
        /// VIP address and port.
        dst: SocketAddr,
        /// Transport protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Protocol,
    },
    /// Per VIP and backend rates (packets/s, bits/s, new flows/s) and totals, read straight from
    /// the pinned maps (works while the daemon is down).
    Stats {
        /// Where the daemon pins its maps (the config's `pin_dir`).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Seconds between the two samples the rates come from; 0 prints totals only.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Remove everything `balancer run` left in bpffs: the XDP program leaves the interfaces,
    /// the flow table and counters are freed.
    Teardown {
        /// The config's `pin_dir`.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Stop the daemon running on this pin dir first (SIGTERM, then wait up to 10 s);
        /// without it, teardown refuses while a daemon runs.
        #[arg(long)]
        stop: bool,
    },
    /// On a backend of an IPIP VIP: strip the balancer's outer header in XDP, so the local stack
    /// gets the client's packet (the VIP must be on this host's loopback).
    Decap {
        #[command(subcommand)]
        action: DecapAction,
    },
    /// Make a veth accept frames the balancer sends into it: attaches a pass-only XDP program to
    /// the peer of a veth the balancer runs on (veths drop `XDP_TX/redirected` frames otherwise).
    XdpPeer {
        #[command(subcommand)]
        action: HelperAction,
    },
    /// This node behind ECMP: withdraw its VIPs from BGP and keep forwarding (`drain`), or
    /// announce them again (`resume`).
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// BGP through BIRD: `config` prints the BIRD configuration that takes this node's routes.
    Bgp {
        #[command(subcommand)]
        action: BgpAction,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write every page: one per subcommand
    /// (balancer-run.1, balancer-backend-set.1, …) and balancer.toml.5.
    Man {
        /// Directory to write the pages into (created if missing); their paths are printed.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// `balancer node …`
#[derive(Subcommand)]
pub enum NodeAction {
    /// Withdraw every VIP (the router moves traffic to the other nodes); the data path forwards
    /// on, so connections still arriving here are served.
    Drain,
    /// Announce again the VIPs this node can serve.
    Resume,
}

/// `balancer bgp …`
#[derive(Subcommand)]
pub enum BgpAction {
    /// Print the BIRD configuration that includes the routes files of `[announce]`.
    Config {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/balancer/balancer.toml")]
        config: PathBuf,
    },
}

/// `balancer vip …`
#[derive(Subcommand)]
pub enum VipAction {
    /// Add a VIP, without backends.
    Add {
        /// Address and port.
        address: SocketAddr,
        /// Transport protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Protocol,
        /// How packets reach backends.
        #[arg(long, value_enum, default_value = "dsr")]
        forwarding: Forwarding,
        /// Maglev table size, a prime up to 65537.
        #[arg(long)]
        ring_size: Option<u32>,
        /// Hash on the client address only.
        #[arg(long)]
        ignore_source_port: bool,
    },
    /// Remove a VIP and its backends.
    Del {
        /// Address and port.
        address: SocketAddr,
        /// Transport protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Protocol,
    },
    /// List VIPs (a short `status`).
    List,
}

/// `balancer backend …`
#[derive(Subcommand)]
pub enum BackendAction {
    /// Add a backend to a VIP.
    Add {
        /// The VIP (address:port).
        vip: SocketAddr,
        /// The backend's address.
        address: IpAddr,
        /// The VIP's protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Protocol,
        /// Share of new flows (lbfactor), 0 to 65535.
        #[arg(long, default_value_t = 100, value_parser = weight)]
        weight: u32,
        /// active, drain or stopped.
        #[arg(long, value_enum, default_value = "active")]
        state: BackendState,
        /// Only takes new flows when no primary is healthy.
        #[arg(long)]
        backup: bool,
        /// `mod_jk` distance group.
        #[arg(long, default_value_t = 0)]
        distance: u32,
        /// Port, route, domain, redirect, max, protocol, secret.
        #[command(flatten)]
        more: balancer::control::protocol::NewBackend,
        /// The pool (the entry's `name`) where several share the VIP's address.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Remove a backend; its flows move to the others.
    Del {
        /// Which backend.
        #[command(flatten)]
        target: BackendTarget,
    },
    /// Run a backend's health check now (its result counts as any other).
    Check {
        /// Which backend.
        #[command(flatten)]
        target: BackendTarget,
    },
    /// Change a backend: weight, state (drain keeps its flows), backup flag, route.
    Set {
        /// Which backend.
        #[command(flatten)]
        target: BackendTarget,
        /// New route (Tomcat `jvmRoute`), L7.
        #[arg(long)]
        route: Option<String>,
        /// New weight, 0 to 65535.
        #[arg(long, value_parser = weight)]
        weight: Option<u32>,
        /// New state.
        #[arg(long, value_enum)]
        state: Option<BackendState>,
        /// New backup flag.
        #[arg(long)]
        backup: Option<bool>,
    },
}

/// How `backend del`, `check` and `set` name a backend.
#[derive(clap::Args)]
pub struct BackendTarget {
    /// The VIP (address:port).
    pub vip: SocketAddr,
    /// The backend: IP, or IP:port where two backends share the IP.
    pub address: balancer::config::BackendAddr,
    /// The VIP's protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: Protocol,
    /// The pool (the entry's `name`) where several share the VIP's address.
    #[arg(long)]
    pub pool: Option<String>,
}

impl From<BackendTarget> for balancer::config::BackendRef {
    fn from(t: BackendTarget) -> Self {
        Self { vip: t.vip, protocol: t.proto, pool: t.pool, backend: t.address }
    }
}

/// The configurations `balancer import` reads.
#[derive(Subcommand)]
pub enum ImportFrom {
    /// `workers.properties`, with the mounts (`uriworkermap.properties`, or a file of `JkMount`
    /// lines).
    #[command(name = "mod_jk")]
    ModJk {
        /// The workers file.
        workers: PathBuf,
        /// The mounts.
        #[arg(long)]
        mounts: Option<PathBuf>,
    },
    /// An httpd configuration with `<Proxy balancer://…>` and `ProxyPass`.
    Httpd {
        /// The file.
        file: PathBuf,
    },
    /// An nginx configuration with `upstream` and `proxy_pass`.
    Nginx {
        /// The file.
        file: PathBuf,
    },
}

/// `attach` / `detach` of a helper program.
#[derive(Subcommand)]
pub enum HelperAction {
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

/// `balancer decap …`
#[derive(Subcommand)]
pub enum DecapAction {
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journald` under systemd (`JOURNAL_STREAM` names standard error), else `text`.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object a line, its fields as keys.
    Json,
    /// Records to the systemd journal, each field its own journal field (`journalctl -o
    /// verbose` shows them; `BACKEND=`, `VIP=` can be matched on).
    Journald,
}

impl LogFormat {
    /// `Auto` made concrete: journald when standard error is the stream systemd's
    /// `JOURNAL_STREAM` (`DEVICE:INODE`) names, as `sd_journal_stream_fd` callers check.
    pub fn resolve(self) -> Self {
        let stderr = nix::sys::stat::fstat(std::io::stderr()).ok().map(|st| (st.st_dev, st.st_ino));
        self.resolve_for(std::env::var("JOURNAL_STREAM").ok().as_deref(), stderr)
    }

    fn resolve_for(self, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> Self {
        if self != Self::Auto {
            return self;
        }
        let named = journal_stream.and_then(|v| {
            let (d, i) = v.split_once(':')?;
            Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
        });
        if named.is_some() && named == stderr { Self::Journald } else { Self::Text }
    }
}

/// `balancer overrides …`.
#[derive(Debug, Subcommand)]
pub enum OverridesAction {
    /// List them (the default).
    List,
    /// Remove overrides, so the file's values apply: all, one VIP's, or one backend's.
    Clear {
        /// Only this VIP's (address:port).
        vip: Option<SocketAddr>,
        /// Only this backend's.
        backend: Option<IpAddr>,
    },
}

/// A weight within the configuration file's bounds.
fn weight(text: &str) -> Result<u32, String> {
    let w: u32 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if w > config::MAX_WEIGHT {
        return Err(format!("{w} is above the largest weight, {}", config::MAX_WEIGHT));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, LogFormat};

    /// Issue 10, defect 7: the CLI took weights the configuration file refuses.
    #[test]
    fn a_weight_above_the_files_bound_is_refused_on_the_command_line() {
        let set =
            |w: &str| Cli::try_parse_from(["balancer", "backend", "set", "10.0.0.1:80", "10.0.0.2", "--weight", w]);
        let e = set("70000").err().expect("refused").to_string();
        assert!(e.contains("70000 is above the largest weight, 65535"), "{e}");
        assert!(set("65535").is_ok());
        let add = Cli::try_parse_from(["balancer", "backend", "add", "10.0.0.1:80", "10.0.0.2", "--weight", "65536"]);
        assert!(add.is_err());
    }

    /// systemd sets `JOURNAL_STREAM` for the unit's own standard error; a child that inherits
    /// the variable with standard error sent elsewhere must not log to the journal.
    #[test]
    fn auto_logs_to_the_journal_only_when_stderr_is_the_named_stream() {
        assert_eq!(LogFormat::Auto.resolve_for(Some("8:1234"), Some((8, 1234))), LogFormat::Journald);
        assert_eq!(LogFormat::Auto.resolve_for(Some("8:1234"), Some((8, 99))), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve_for(None, Some((8, 1234))), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve_for(Some("junk"), None), LogFormat::Text);
        assert_eq!(LogFormat::Json.resolve_for(Some("8:1234"), Some((8, 1234))), LogFormat::Json);
    }
}
