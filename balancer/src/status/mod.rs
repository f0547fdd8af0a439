//! What the daemon reports about itself: one typed model, built once per request from the
//! daemon's state (`daemon::status`) and rendered by the CLI (table and `--json`), the status
//! page, `/status.json` and `/metrics`. The control socket carries it as JSON; inside the
//! process it stays typed. `history`: the samples rates and charts are taken from.

pub mod history;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{BackendState, Forwarding, Protocol};

/// A backend's health as the daemon sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Its check passes.
    Up,
    /// Its check fails: it takes no traffic.
    Down,
    /// It has no check (it counts as up).
    Unchecked,
    /// Up by its check, but the L7 proxy leaves it out after a failed request (`retry_s`).
    Retrying,
}

impl Health {
    /// Whether it may take traffic by its check (`retrying` does, once its window ends).
    pub fn is_up(self) -> bool {
        self != Self::Down
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unchecked => "unchecked",
            Self::Retrying => "retrying",
        })
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
    /// Health by its check and the proxy's passive failures.
    pub health: Health,
    /// Seconds since its check last changed its health (`None`: not since the daemon started).
    #[serde(default)]
    pub health_since_s: Option<u64>,
    /// Seconds since its check last passed (`None`: no check, or none passed yet).
    #[serde(default)]
    pub last_pass_s: Option<u64>,
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
    /// Per-second rates over the last sample interval (`None` until two samples exist).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Its main rate (requests/s on an L7 VIP, packets/s on an L4 one) per sample interval
    /// over the last minutes, oldest first.
    #[serde(default)]
    pub trend: Vec<f64>,
}

/// Per-second rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Packets forwarded (L4).
    pub packets: f64,
    /// Bits forwarded (L4) or streamed (L7 bodies).
    pub bits: f64,
    /// Requests sent (L7).
    pub requests: f64,
    /// Failed connections and broken responses (L7).
    pub errors: f64,
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
    /// Times to the response headers per bucket of `latency_bounds_ms` (not cumulative; one
    /// more entry counts those above the last bound).
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
    /// Sum of the times to the response headers, µs.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Responses the client got, by class (`1xx` … `5xx`; a JSON object).
    #[serde(
        default,
        serialize_with = "crate::dataplane::stats::counts",
        deserialize_with = "crate::dataplane::stats::counts_from"
    )]
    pub responses: Vec<(String, u64)>,
    /// Requests that failed on it and were sent to another backend.
    #[serde(default)]
    pub retries: u64,
    /// Requests it took over from the backend holding their session.
    #[serde(default)]
    pub failovers: u64,
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
    /// L4 (forwarded by the data path) or L7 (terminated by the proxy), with what each has.
    #[serde(flatten)]
    pub kind: VipKind,
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
    /// L4: a digest of its Maglev table (the backend address in each slot), equal on every
    /// node that agrees on its backends, weights and health.
    #[serde(default)]
    pub table_digest: Option<String>,
    /// With `[announce]`: whether this node announces the VIP's address by BGP now.
    #[serde(default)]
    pub announced: Option<bool>,
    /// Per-second rates over the last sample interval, all its backends together.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Its main rate per sample interval over the last minutes, oldest first.
    #[serde(default)]
    pub trend: Vec<f64>,
}

/// What kind of VIP it is: an L4 VIP has a forwarding mode and a Maglev table, an L7 VIP a
/// session affinity mode and neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VipKind {
    /// Balanced by the XDP program.
    L4 {
        /// dsr or ipip.
        forwarding: Forwarding,
        /// Maglev table size.
        ring_size: u32,
    },
    /// Terminated by the daemon's proxy.
    L7 {
        /// `insert`, `route-suffix` or `hash`.
        sticky: crate::config::StickyMode,
    },
}

impl VipKind {
    /// Whether the proxy terminates it.
    pub fn is_l7(self) -> bool {
        matches!(self, Self::L7 { .. })
    }
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
    /// The daemon itself: host, version, uptime, reloads.
    #[serde(default)]
    pub daemon: DaemonInfo,
    /// Seconds between the samples `rate` and `trend` are taken from.
    #[serde(default)]
    pub sample_every_s: u32,
    /// Upper bounds of the L7 latency buckets, ms.
    #[serde(default)]
    pub latency_bounds_ms: Vec<f64>,
}

impl Status {
    /// A status with nothing in it yet (maps pinned at `pin_dir`).
    pub fn empty(pin_dir: std::path::PathBuf) -> Self {
        Self {
            pin_dir,
            vips: Vec::new(),
            flow_table_entries: None,
            not_balanced: Vec::new(),
            icmp: Vec::new(),
            problems: Vec::new(),
            access_log: (0, 0),
            admin: false,
            daemon: DaemonInfo::default(),
            sample_every_s: 0,
            latency_bounds_ms: Vec::new(),
        }
    }
}

/// The daemon itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The host's name.
    pub host: String,
    /// The daemon's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Reloads that took effect and that were refused, since it started.
    pub reloads: (u64, u64),
    /// The last reload, if there was one.
    pub last_reload: Option<Reload>,
    /// `node drain`: its VIPs are withdrawn from BGP.
    #[serde(default)]
    pub drained: bool,
    /// Why the last BGP announcement through BIRD failed (`None`: it worked, or there is none).
    #[serde(default)]
    pub announce_error: Option<String>,
}

/// One reload of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reload {
    /// When, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Why it was refused (the running configuration stayed); `None`: it took effect.
    pub refused: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: an L7 VIP showed as `dsr` with ring 0, and `routesuffix` where the config says
    /// `route-suffix`. Each kind now carries only what it has, in the config's words.
    #[test]
    fn a_vip_s_kind_carries_only_what_it_has_in_the_config_s_words() {
        let l7 = serde_json::to_value(VipKind::L7 { sticky: crate::config::StickyMode::RouteSuffix }).unwrap();
        assert_eq!(l7, serde_json::json!({"kind": "l7", "sticky": "route-suffix"}));
        let l4 = serde_json::to_value(VipKind::L4 { forwarding: Forwarding::Ipip, ring_size: 251 }).unwrap();
        assert_eq!(l4, serde_json::json!({"kind": "l4", "forwarding": "ipip", "ring_size": 251}));
        assert_eq!(
            serde_json::from_value::<VipKind>(l7).unwrap(),
            VipKind::L7 { sticky: crate::config::StickyMode::RouteSuffix }
        );
        for (h, word) in [(Health::Up, "up"), (Health::Down, "down"), (Health::Retrying, "retrying")] {
            assert_eq!((h.to_string(), serde_json::to_value(h).unwrap()), (word.to_owned(), serde_json::json!(word)));
        }
    }
}
