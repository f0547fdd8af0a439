//! Requests and responses of the control API, shared by the daemon and the CLI.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{BackendState, Forwarding, Protocol};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// VIPs and backends with state, health, weight, ring share and counters.
    Status,
    /// Re-read the configuration file (drops changes made through this API).
    Reload,
    /// Add a VIP (without backends).
    VipAdd {
        /// Address and port.
        address: SocketAddr,
        /// tcp or udp.
        protocol: Protocol,
        /// dsr or ipip.
        forwarding: Forwarding,
        /// Maglev table size (a prime); default 65537.
        ring_size: Option<u32>,
        /// Hash on the client address only.
        ignore_source_port: bool,
    },
    /// Remove a VIP and its backends.
    VipDel {
        /// Address and port.
        address: SocketAddr,
        /// tcp or udp.
        protocol: Protocol,
    },
    /// Add a backend to a VIP.
    BackendAdd {
        /// The VIP.
        vip: SocketAddr,
        /// Its protocol.
        protocol: Protocol,
        /// The backend.
        address: IpAddr,
        /// Weight (lbfactor).
        weight: u32,
        /// Administrative state.
        state: BackendState,
        /// Only when no primary is healthy.
        backup: bool,
        /// `mod_jk` distance group.
        distance: u32,
        /// The rest of a backend's settings (L7 ones mostly).
        #[serde(default)]
        more: NewBackend,
        /// The pool (entry `name`) where several share the VIP's address.
        #[serde(default)]
        pool: Option<String>,
    },
    /// Remove a backend: its flows move.
    BackendDel {
        /// The backend.
        target: crate::config::BackendRef,
    },
    /// Change a backend's weight, state, backup flag or route.
    BackendSet {
        /// The backend.
        target: crate::config::BackendRef,
        /// New weight.
        weight: Option<u32>,
        /// New administrative state.
        state: Option<BackendState>,
        /// New backup flag.
        backup: Option<bool>,
        /// New route (jvmRoute), L7.
        #[serde(default)]
        route: Option<String>,
    },
    /// Run a backend's health check now instead of at its next interval.
    BackendCheck {
        /// The backend.
        target: crate::config::BackendRef,
    },
    /// Which backend a 5-tuple goes to, and whether the flow table holds it.
    Flow {
        /// Client address and port.
        src: SocketAddr,
        /// VIP address and port.
        dst: SocketAddr,
        /// tcp or udp.
        protocol: Protocol,
    },
    /// The runtime overrides kept across reloads and restarts.
    Overrides,
    /// From a daemon starting with `--takeover`: pass it the pin lock and the listening
    /// sockets (`SCM_RIGHTS`); once it says `ready` on the same connection, stop accepting,
    /// finish in-flight requests and exit (`handoff`).
    Handoff,
    /// Raised by the control server, not sent by clients: the new daemon said `ready`.
    HandoffDone,
    /// Raised by the control server: the new daemon went away before `ready`.
    HandoffAborted,
    /// Remove overrides: all, those of one VIP, or those of one backend of it.
    OverridesClear {
        /// Only this VIP's.
        vip: Option<SocketAddr>,
        /// Only this backend's (of `vip`).
        backend: Option<IpAddr>,
    },
}

impl Request {
    /// Whether it changes the configuration in force.
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Self::Reload
                | Self::VipAdd { .. }
                | Self::VipDel { .. }
                | Self::BackendAdd { .. }
                | Self::BackendDel { .. }
                | Self::BackendSet { .. }
                | Self::OverridesClear { .. }
        )
    }
}

/// What the daemon answers: `data` on success, `error` (one line a person can act on) otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    /// A success carrying `data`.
    pub fn ok(data: impl Serialize) -> Self {
        Self { ok: true, error: None, data: serde_json::to_value(data).unwrap_or_default() }
    }

    /// A failure.
    pub fn err(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), data: serde_json::Value::Null }
    }
}

/// One backend in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub address: IpAddr,
    /// Id in the maps.
    pub id: u32,
    /// Configured weight.
    pub weight: u32,
    /// Administrative state.
    pub state: BackendState,
    /// Backup flag.
    pub backup: bool,
    /// Distance group.
    pub distance: u32,
    /// `up`, `down` or `unchecked`.
    pub health: String,
    /// Route name (jvmRoute), if configured.
    #[serde(default)]
    pub route: Option<String>,
    /// Replication domain, if configured.
    #[serde(default)]
    pub domain: Option<String>,
    /// Ring slots it holds.
    pub slots: u32,
    /// Share of the VIP's ring, in percent.
    pub share: f64,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Flows assigned by the ring.
    pub new_flows: u64,
    /// Entries in the flow table pinned to it (filled in by the CLI).
    #[serde(default)]
    pub flows: Option<u64>,
    /// L7 VIPs only: what the proxy saw of this backend.
    #[serde(default)]
    pub l7: Option<L7BackendStatus>,
}

/// What the L7 proxy saw of one backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct L7BackendStatus {
    /// Where it is connected to.
    pub target: SocketAddr,
    /// Sessions assigned (new and by failover).
    pub sessions: u64,
    /// Requests sent.
    pub requests: u64,
    /// Failed connections and broken responses.
    pub errors: u64,
    /// Requests in flight.
    pub inflight: u32,
    /// Body bytes streamed both ways (what `bytraffic` balances).
    #[serde(default)]
    pub bytes: u64,
    /// Mean time to the response headers, ms.
    pub mean_latency_ms: f64,
    /// Left out of selection after a failure (inside its `retry` window).
    pub retrying: bool,
}

/// One VIP in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VipStatus {
    /// Address and port.
    pub address: SocketAddr,
    /// tcp or udp.
    pub protocol: Protocol,
    /// dsr or ipip.
    pub forwarding: Forwarding,
    /// Maglev table size (L4), or 0 for an L7 VIP.
    pub ring_size: u32,
    /// `insert`, `route-suffix` or `hash` for an L7 VIP.
    #[serde(default)]
    pub sticky: Option<crate::config::StickyMode>,
    /// The entry's `name`, if it has one (entries sharing an address have one each).
    #[serde(default)]
    pub name: Option<String>,
    /// What the entry takes of its address's requests (`host … path … exclude …`), if it is
    /// not everything.
    #[serde(default)]
    pub takes: Option<String>,
    /// L4 VIPs with a flow table: its misses, pins, evictions and guarded new flows.
    #[serde(default)]
    pub flows: Option<crate::dataplane::stats::FlowEventsView>,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// L7 VIPs only: its client connections.
    #[serde(default)]
    pub connections: Option<L7VipStatus>,
    /// Its backends.
    pub backends: Vec<BackendStatus>,
}

/// An L7 VIP's client connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct L7VipStatus {
    /// Open now.
    pub open: u64,
    /// Refused at `max_connections`.
    pub refused: u64,
    /// Failed accepts (out of file descriptors, mostly).
    pub accept_errors: u64,
    /// Closed without a complete request head within `header_timeout_ms`.
    pub head_timeouts: u64,
    /// Closed for want of a valid PROXY protocol header.
    #[serde(default)]
    pub proxy_refused: u64,
    /// Upgraded connections (WebSocket) open now.
    #[serde(default)]
    pub tunnels: u64,
    /// Upgrades since the VIP started.
    #[serde(default)]
    pub upgrades: u64,
    /// TLS VIPs only: handshakes and certificates.
    #[serde(default)]
    pub tls: Option<TlsStatus>,
}

/// A TLS VIP's handshakes and certificates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TlsStatus {
    /// Completed handshakes.
    pub handshakes: u64,
    /// Failed handshakes by reason (`timeout`, `not_tls`, …), every reason listed.
    pub failures: Vec<(String, u64)>,
    /// Completed handshakes by version (`TLSv1.2`, `TLSv1.3`).
    pub versions: Vec<(String, u64)>,
    /// Completed handshakes by ALPN result (`h2`, `http/1.1`, `none`).
    pub alpn: Vec<(String, u64)>,
    /// The certificates in force.
    pub certificates: Vec<CertificateStatus>,
}

/// One certificate of a TLS VIP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// Its file.
    pub file: std::path::PathBuf,
    /// The names it serves.
    pub names: Vec<String>,
    /// Whole days until it expires (negative after).
    pub days_left: i64,
}

/// The settings of a backend added at run time besides weight, state, backup and distance:
/// everything a `[[vip.backend]]` entry can say, so two application servers on one host can be
/// added (each its own `port`) with the routes their sessions carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct NewBackend {
    /// Its port (default: the VIP's; L7 VIPs only may differ).
    #[arg(long)]
    pub port: Option<u16>,
    /// Its session route (Tomcat `jvmRoute`).
    #[arg(long)]
    pub route: Option<String>,
    /// Its replication domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// The route its sessions go to first when it fails.
    #[arg(long)]
    pub redirect: Option<String>,
    /// Most requests in flight to it.
    #[arg(long)]
    pub max: Option<u32>,
    /// What it speaks (default: the VIP's `backend_protocol`).
    #[arg(long, value_enum)]
    pub protocol: Option<crate::config::BackendProtocol>,
    /// Its AJP connector's secret (default: the VIP's `ajp_secret`).
    #[arg(long)]
    pub secret: Option<String>,
}

/// Answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Where the maps are pinned: the CLI counts live flows there itself, so a large flow table
    /// never holds up the daemon.
    pub pin_dir: std::path::PathBuf,
    /// VIPs.
    pub vips: Vec<VipStatus>,
    /// Entries in the flow table, as last counted by the daemon's background count (`None`
    /// before the first count).
    #[serde(default)]
    pub flow_table_entries: Option<u64>,
    /// Packets not balanced, by reason (a JSON object, reason → count).
    #[serde(
        serialize_with = "crate::dataplane::stats::counts",
        deserialize_with = "crate::dataplane::stats::counts_from"
    )]
    pub not_balanced: Vec<(String, u64)>,
    /// ICMP the data path relayed or sent, by event (`relayed`, `too_big_sent`, `echo_replied`;
    /// a JSON object).
    #[serde(
        default,
        serialize_with = "crate::dataplane::stats::counts",
        deserialize_with = "crate::dataplane::stats::counts_from"
    )]
    pub icmp: Vec<(String, u64)>,
    /// What keeps the daemon from doing its work (its pinned data path removed under it).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Access log lines written and dropped (the writer was behind) since the daemon started.
    #[serde(default)]
    pub access_log: (u64, u64),
    /// The status page may change backends (`admin = true`).
    #[serde(default)]
    pub admin: bool,
}

/// Answer to `handoff`. The descriptors sent with it are, in order: the pin lock, the admin
/// socket, then one listening socket per address in `listeners`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoffAnswer {
    /// L7 VIP addresses.
    pub listeners: Vec<SocketAddr>,
}

/// Answer to `flow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowAnswer {
    /// The backend a new flow with this 5-tuple gets from the live table (none when the VIP
    /// has no backend taking new flows).
    pub table_backend: Option<IpAddr>,
    /// The backend the flow table pins it to, if it has an entry.
    pub pinned_backend: Option<IpAddr>,
}
