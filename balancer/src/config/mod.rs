//! The daemon's TOML configuration: types with their defaults, parsing, and validation.
//!
//! Values that can be wrong on their own (a ring size that is not a prime, an unknown state) are
//! rejected while parsing, so the error carries the line of the bad value. Checks across fields
//! (a duplicate VIP, an IPv6 backend behind an IPv4 VIP) point at the line of the entry at fault.

mod locate;
mod validate;

pub use locate::{BackendAddr, BackendRef, LocateError};
pub use validate::Invalid;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::maglev::{self, RingSize};

/// Where the daemon pins its maps by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/balancer";
/// Where the daemon keeps runtime overrides by default.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/balancer/state.json";
/// Where the daemon listens for the CLI by default.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/balancer.sock";

/// A configuration error, already pointing at the place to fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file read.
    pub file: PathBuf,
    /// 1-based line of the offending value.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The whole configuration file. A field the file leaves out takes its value from
/// `Config::default()`, the one place the defaults named in these docs are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// How to attach: `auto` (native, falling back to generic with a warning), `native`, `generic`.
    pub xdp_mode: XdpModeSetting,
    /// bpffs directory holding the pinned maps. Default `/sys/fs/bpf/balancer`.
    pub pin_dir: PathBuf,
    /// Unix socket of the control API (`balancer status`, `backend set`, …); created mode 0600
    /// and answering root only. Default `/run/balancer.sock`.
    pub control_socket: PathBuf,
    /// Where runtime overrides (`balancer backend set`) are kept across reloads and restarts.
    /// Default `/var/lib/balancer/state.json`.
    pub state_file: PathBuf,
    /// The admin address: `/metrics` (Prometheus), `/status` (read-only status page) and
    /// `/status.json`. Default `127.0.0.1:9090`.
    pub metrics_address: SocketAddr,
    /// Let the status page on `metrics_address` change a backend's state, weight and route
    /// and run its health check now (as balancer-manager and the jk status worker do), with
    /// the CLI's runtime changes. Each change needs the page's one-time nonce and an `Origin`
    /// of the page itself. Default false: the page is read-only.
    pub admin: bool,
    /// Threads serving the control API, health checks and the admin page. Default: one per CPU
    /// the daemon may run on.
    pub worker_threads: Option<usize>,
    /// L7 worker threads, each a single-threaded event loop that accepts and serves its own
    /// client connections with its own pool of backend connections (nginx's
    /// `worker_processes`, HAProxy's `nbthread`). Read at start; a change needs a restart.
    /// Default: one per CPU the daemon may run on.
    pub l7_workers: Option<usize>,
    /// Seed of the Maglev permutations; every node behind the same ECMP group must share it.
    pub maglev_seed: u64,
    /// Most new flows one CPU pins in the flow table per second (counted per window of 256
    /// jiffies, scaled to the kernel's HZ); beyond it new flows are steered by the Maglev table
    /// without a pin, so a SYN flood cannot evict established
    /// flows (counted as `guarded`). 0: no limit. Default 125000 (Katran's figure per core).
    pub flow_insert_limit: u32,
    /// Answer ICMP echo requests ("ping") to the addresses of L4 VIPs in the data path, since
    /// no host in front of the backends owns them (L7 VIP addresses are this host's, whose
    /// stack answers). Default true.
    pub answer_ping: bool,
    /// MTU per attached interface (`interface_mtu = { eth0 = 1500 }`), where the kernel's is
    /// not the one that counts (a path behind the interface with a smaller one). Default: each
    /// interface's own. IPIP packets that would exceed it once encapsulated are answered with
    /// ICMP "fragmentation needed" / "packet too big".
    pub interface_mtu: std::collections::BTreeMap<String, u16>,
    /// Outer IPv4 source of IPIP packets: a /16, whose low 16 bits the data path fills from the
    /// flow so backends' NICs spread flows over their queues. Default `172.16.0.0/16`.
    #[serde(deserialize_with = "ipip_v4")]
    pub ipip_source_v4: Ipv4Addr,
    /// Outer IPv6 source of IPIP packets: a /96, low 32 bits from the flow. Default `100::/96`
    /// (inside the discard-only prefix, RFC 6666).
    #[serde(deserialize_with = "ipip_v6")]
    pub ipip_source_v6: Ipv6Addr,
    /// How long a stopping daemon (SIGTERM, or after handing over to `run --takeover`) lets
    /// L7 requests in flight finish before it exits. Default 10.
    pub drain_timeout_s: u64,
    /// One line per L7 request, written off the request path. None: no access log.
    pub access_log: Option<AccessLog>,
    /// Announce the VIPs this node can serve through BIRD (several nodes behind ECMP). None:
    /// nothing is announced.
    pub announce: Option<Announce>,
    /// Virtual services.
    #[serde(rename = "vip")]
    pub vips: Vec<Vip>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpModeSetting::default(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin: false,
            worker_threads: None,
            l7_workers: None,
            maglev_seed: maglev::DEFAULT_SEED,
            flow_insert_limit: 125_000,
            answer_ping: true,
            interface_mtu: std::collections::BTreeMap::new(),
            ipip_source_v4: ipip_prefix_v4(DEFAULT_IPIP_SOURCE_V4).expect("valid default"),
            ipip_source_v6: ipip_prefix_v6(DEFAULT_IPIP_SOURCE_V6).expect("valid default"),
            drain_timeout_s: 10,
            access_log: None,
            announce: None,
            vips: Vec::new(),
        }
    }
}

/// Announcing VIPs by BGP through BIRD: the daemon keeps one route per VIP address it can serve
/// in the files below, which BIRD `protocol static` blocks include, and runs `birdc configure`
/// when they change (`balancer bgp config` prints the BIRD side).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Announce {
    /// The IPv4 routes' file. Default `/run/balancer/bird-vips4.conf`.
    pub file_v4: PathBuf,
    /// The IPv6 routes' file. Default `/run/balancer/bird-vips6.conf`.
    pub file_v6: PathBuf,
    /// BIRD's control socket (`birdc -s`). Default `/run/bird/bird.ctl`.
    pub bird_socket: PathBuf,
    /// The `birdc` command. Default `birdc`.
    pub birdc: PathBuf,
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            file_v4: "/run/balancer/bird-vips4.conf".into(),
            file_v6: "/run/balancer/bird-vips6.conf".into(),
            bird_socket: "/run/bird/bird.ctl".into(),
            birdc: "birdc".into(),
        }
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

/// One virtual service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Address and port clients connect to.
    pub address: Spanned<SocketAddr>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// How packets reach backends: `dsr` (default).
    #[serde(default)]
    pub forwarding: Forwarding,
    /// Maglev table size, a prime from 97 to 1000003. Default 65537. Tables above 65537 slots
    /// take more of the ring map (a unit per 65537 slots, 1 MiB each; 64 units for all VIPs):
    /// for fleets of hundreds of backends, where one leaving should move little more than its
    /// own share.
    #[serde(default, deserialize_with = "ring_size")]
    pub ring_size: RingSize,
    /// Leave the source port out of the flow hash (UDP/QUIC clients that change ports).
    #[serde(default)]
    pub ignore_source_port: bool,
    /// What the flow hash (and the flow table's key) covers: `"5-tuple"` (default),
    /// `"ports"` (source and destination ports, not the addresses) or `"destination-port"`
    /// (every client of a port to one backend).
    #[serde(default)]
    pub hash: HashMode,
    /// Serve only clients from these prefixes (`"10.0.0.0/8"`, `"2001:db8::/32"`, of the VIP's
    /// family); packets from elsewhere are dropped by the data path and counted
    /// (`source_filtered`), as Cilium's `loadBalancerSourceRanges`. Empty (default): everyone.
    #[serde(default)]
    pub allow_sources: Vec<Cidr>,
    /// Keep established flows on their backend in the flow table (default true). `false`:
    /// every packet is steered by the Maglev table alone (Katran's `F_LRU_BYPASS`), for a
    /// service with many short flows and backends that rarely change; a change of backends then
    /// moves the flows whose slots changed.
    #[serde(default = "yes")]
    pub flow_table: bool,
    /// Health check for this VIP's backends; none means they are always considered up.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// HTTP session affinity: with this section the daemon terminates HTTP on the VIP (which
    /// must be an address of this host) and the XDP program passes its packets to the stack.
    #[serde(default)]
    pub l7: Option<L7>,
    /// TLS termination on an L7 VIP: its certificates (chosen by SNI), versions and ALPN.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// A name for this entry in status, metrics, the access log and the CLI (`--pool`); needed
    /// where several L7 entries share one address.
    pub name: Option<String>,
    /// L7: which of the address's requests this entry takes, when several entries share it
    /// (`[vip.match]`); none: every request no other entry takes more specifically.
    #[serde(default, rename = "match")]
    pub matches: Option<Match>,
    /// Real servers.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// The requests an L7 entry takes (`[vip.match]`), among the entries of its address; the most
/// specific match wins (see README, "Routing by path and host").
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host names (`Host` without its port, any case), or `*.name` for one label before
    /// `.name`. Empty: any host.
    #[serde(default)]
    pub host: Vec<String>,
    /// Paths: `/cart` (it and below it), `=/login` (exactly), `/*.jsp` (`*`: any characters,
    /// as `JkMount` writes it). Empty: any path.
    #[serde(default)]
    pub path: Vec<String>,
    /// Paths this entry does not take (`ProxyPass /x !`, `JkUnMount`): the next most specific
    /// entry does, else the proxy answers 404.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// What replaces the one prefix `path` before the backend gets it (`ProxyPass /app/
    /// http://be/`: `path = ["/app/"]`, `rewrite = "/"`); `Location` headers and cookie paths
    /// in responses are mapped back (`ProxyPassReverse`, `ProxyPassReverseCookiePath`).
    pub rewrite: Option<String>,
}

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its IP protocol number, as the maps store it: the one mapping between the two.
    pub fn wire(self) -> u8 {
        match self {
            Self::Tcp => balancer_common::proto::TCP,
            Self::Udp => balancer_common::proto::UDP,
        }
    }

    /// The protocol of IP protocol number `n`, if it is one a VIP can have.
    pub fn from_wire(n: u8) -> Option<Self> {
        [Self::Tcp, Self::Udp].into_iter().find(|p| p.wire() == n)
    }
}

/// The group that takes new flows or sessions among `candidates` (each backend's `backup` flag
/// and `distance`), as (backup, distance): the lowest distance of the non-backups, else of the
/// backups (`mod_jk`'s distance and hot standby). The one rule, for the data path's tables and
/// the L7 proxy's choice.
pub fn new_flow_group(candidates: impl Iterator<Item = (bool, u32)>) -> Option<(bool, u32)> {
    // `false` (not a backup) orders before `true`, then the distance: the least is the group.
    candidates.min()
}

/// Forwarding mode of a VIP.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// L2 direct server return: backends share the balancer's L2 segment and hold the VIP on
    /// loopback.
    #[default]
    Dsr,
    /// IP-in-IP to the backend, which strips it (`balancer decap attach`) and holds the VIP on
    /// loopback.
    Ipip,
}

/// One real server of a VIP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The backend's address on the balancer's segment: an IP address, or a host name
    /// resolved when the file is read (at start, on reload and by `balancer check`) to its
    /// first IPv4 address, else its first IPv6 one; it is not resolved again in between.
    #[serde(deserialize_with = "host_or_ip")]
    pub address: Spanned<IpAddr>,
    /// The backend's port. L4 forwarding (DSR, IPIP) cannot change the port, so there it must
    /// be the VIP's; health checks use it. Default: the VIP's port.
    pub port: Option<u16>,
    /// The application's route name for this backend (Tomcat `jvmRoute`), for session stickiness
    /// at L7.
    pub route: Option<String>,
    /// Replication domain (`mod_jk` `domain`): backends that share sessions, tried first when a
    /// sticky backend fails, at L7.
    pub domain: Option<String>,
    /// Share of new flows relative to the VIP's other backends (`mod_jk`'s lbfactor), 0 to
    /// `MAX_WEIGHT`. 0 = none.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// `active` (default), `drain` (keeps its flows, takes no new ones) or `stopped`.
    #[serde(default)]
    pub state: BackendState,
    /// Only takes new flows when no non-backup backend of the VIP is healthy (`mod_proxy`
    /// `status=+H`, `HAProxy` and nginx `backup`).
    #[serde(default)]
    pub backup: bool,
    /// `mod_jk`'s distance: among healthy backends (backups apart), only those with the lowest
    /// distance take new flows. Default 0.
    #[serde(default)]
    pub distance: u32,
    /// This backend's own health check, instead of the VIP's.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// L7: the route of the backend to try first when this one fails (`mod_jk` `redirect`).
    pub redirect: Option<String>,
    /// L7: most requests in flight to this backend (`mod_proxy` `max`); beyond it, others are
    /// tried, then 503.
    pub max: Option<u32>,
    /// L7: open each connection to this backend with a PROXY protocol header (`v1` or `v2`),
    /// instead of the VIP's `send_proxy`.
    pub send_proxy: Option<ProxyVersion>,
    /// L7: the protocol spoken to this backend, instead of the VIP's `backend_protocol`:
    /// `http` or `ajp13` (Tomcat's AJP connector, usually port 8009).
    pub protocol: Option<BackendProtocol>,
    /// L7, `ajp13`: the AJP connector's `secret` (Tomcat's `secret`, `mod_jk`'s
    /// `worker.NAME.secret`), instead of the VIP's `ajp_secret`.
    pub secret: Option<String>,
}

/// What an L7 VIP speaks to a backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 (and HTTP/2 for HTTP/2 clients).
    #[default]
    Http,
    /// AJP/1.3 (`mod_jk`, `mod_proxy_ajp`).
    Ajp13,
}

impl std::fmt::Display for BackendProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Ajp13 => "ajp13",
        })
    }
}

/// A PROXY protocol version (HAProxy's `send-proxy` and `send-proxy-v2`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// TLS settings of an L7 VIP (`[vip.tls]`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chains and their keys. A client's SNI name picks the certificate whose
    /// subject alternative names match it (exact, then `*.` wildcard); the first is for
    /// clients without SNI or with a name no certificate holds.
    #[serde(rename = "certificate")]
    pub certificates: Vec<Certificate>,
    /// Oldest version offered: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`). Default true.
    #[serde(default = "yes")]
    pub h2: bool,
    /// A cleartext port on the same address that answers every request with a 301 to the
    /// same path over HTTPS (`redirect scheme https` in HAProxy).
    pub redirect_http: Option<u16>,
    /// Let returning clients resume their session (a cache of 20,000 sessions per VIP, and TLS
    /// 1.3 tickets that name them) instead of a full handshake. Default true; false is
    /// HAProxy's `no-tls-tickets` with `tune.ssl.cachesize 0`.
    #[serde(default = "yes")]
    pub session_resumption: bool,
}

/// One certificate of a TLS VIP.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM file: the leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1), readable by its owner only.
    pub key: PathBuf,
}

/// The oldest TLS version a VIP accepts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V13,
}

/// Where access log lines go, and how they look (`[access_log]`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A file (appended to; reopened on SIGUSR1 and on reload, for logrotate), or `"stderr"`.
    pub path: PathBuf,
    /// `combined` (default: Apache's combined format with the balancer's fields after it)
    /// or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Keep the query string in the logged path. Default false: queries often carry tokens.
    #[serde(default)]
    pub query: bool,
    /// Lines held for the writer; when it falls this far behind, new lines are dropped and
    /// counted rather than slowing requests. Default 8192.
    #[serde(default = "default_log_buffer")]
    pub buffer: usize,
}

fn default_log_buffer() -> usize {
    8192
}

/// Access log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Apache's combined format, then `key=value` fields.
    #[default]
    Combined,
    /// JSON lines.
    Json,
}

/// How an L7 VIP keeps a session on its backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StickyMode {
    /// The balancer sets its own signed cookie naming the backend's route (`HAProxy` `cookie …
    /// insert`).
    #[default]
    Insert,
    /// The application's session id ends with `.route` (Tomcat `jvmRoute`, `mod_jk`).
    RouteSuffix,
    /// Consistent hash of a cookie, a header or the client address (nginx `hash … consistent`).
    Hash,
}

/// The insert-mode cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also on top-level navigations from other sites.
    Lax,
    /// On every request (browsers then require `Secure`).
    None,
}

impl std::fmt::Display for SameSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        })
    }
}

/// How new sessions are spread (`mod_proxy_balancer`'s `lbmethod`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMethod {
    /// Smooth weighted round robin.
    #[default]
    Byrequests,
    /// Fewest requests in flight relative to weight.
    Bybusyness,
    /// Fewest bytes transferred relative to weight.
    Bytraffic,
}

/// L7 settings of a VIP. Every timeout and limit has a default that suits a Tomcat fleet
/// (`Default`, which also fills every field the file leaves out).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[expect(clippy::struct_excessive_bools, reason = "independent on/off settings, as the config file has them")]
pub struct L7 {
    /// `insert` (default), `route-suffix` or `hash`.
    pub sticky: StickyMode,
    /// Insert mode: the cookie's name. Default `BALANCERID`.
    pub cookie: String,
    /// Insert mode: file holding the HMAC key (mode 0600, at least 16 bytes).
    pub key_file: Option<PathBuf>,
    /// Insert mode: remove our cookie before the request reaches the backend. Default true.
    pub indirect: bool,
    /// Insert mode: responses that set the cookie are marked not cacheable. Default true.
    pub nocache: bool,
    /// Insert mode: ignore a cookie unused for this long (seconds).
    pub max_idle_s: Option<u64>,
    /// Insert mode: ignore a cookie issued longer ago than this (seconds).
    pub max_life_s: Option<u64>,
    /// Insert mode: cookie attributes.
    pub secure: bool,
    /// Default true.
    pub httponly: bool,
    /// `Strict`, `Lax` or `None`.
    pub samesite: Option<SameSite>,
    /// Default `/`.
    pub path: String,
    /// Cookie domain.
    pub domain: Option<String>,
    /// Route-suffix mode: session cookie names (also `;name=` path parameters). Default
    /// `JSESSIONID`, `jsessionid`.
    pub session_cookies: Vec<String>,
    /// Hash mode: `client` (default), `cookie:NAME` or `header:NAME`.
    pub hash_on: String,
    /// New sessions: `byrequests` (default), `bybusyness`, `bytraffic`.
    pub lbmethod: LbMethod,
    /// Answer 503 instead of moving a session whose backend is unavailable (applications without
    /// session replication).
    pub nofailover: bool,
    /// Backends tried for one request that fails to connect (idempotent requests without a body
    /// only, when the backend failed before answering). Default 2.
    pub max_attempts: u32,
    /// Seconds a backend whose connection failed is left out of selection (`mod_proxy` `retry`).
    /// Default 60.
    pub retry_s: u64,
    /// Default 3000.
    pub connect_timeout_ms: u64,
    /// Time to the backend's response headers. Default 60000.
    pub response_timeout_ms: u64,
    /// Time a client has from its connection's accept to its first byte (sockets that never
    /// send are closed), and from a request's first byte to its complete head (slowloris); it
    /// also bounds how long a kept-alive connection may sit idle between requests. Default
    /// 10000.
    pub header_timeout_ms: u64,
    /// Largest request head accepted; larger gets 431. Default 16384.
    pub max_header_bytes: usize,
    /// Client connections served at once; beyond it new clients get a 503 and are closed
    /// (counted as refused). Each needs two file descriptors, and all VIPs' settings must fit
    /// the daemon's descriptor limit (its hard `RLIMIT_NOFILE`, `LimitNOFILE=` under systemd).
    /// Default: 10000, or this VIP's share of what the limit leaves.
    pub max_connections: Option<usize>,
    /// Add a `Via` header. Default false.
    pub via: bool,
    /// Send the client's `Host` header to the backend (Apache's `ProxyPreserveHost On`).
    /// `false` sends the backend's own address instead. Default true.
    pub preserve_host: bool,
    /// Move response bodies of 256 KiB and more from the backend to the client with
    /// `splice(2)`, through a pipe, instead of through the proxy's memory: measured on 1 MiB
    /// responses, 30% less of the proxy's CPU. Default false: on loopback, where the client's
    /// core is the limit, clients also got 15-20% less throughput this way.
    pub splice: bool,
    /// Each client connection starts with a PROXY protocol header (v1 or v2) from the L4 tier
    /// in front, whose addresses then stand for the client's: `X-Forwarded-For`, stickiness by
    /// client address and the access log. Connections without a valid header are closed.
    pub accept_proxy: bool,
    /// Open backend connections with a PROXY protocol header (`v1` or `v2`). Default none.
    pub send_proxy: Option<ProxyVersion>,
    /// What the backends speak, unless one says otherwise: `http` (default) or `ajp13`. A VIP
    /// with AJP backends serves clients HTTP/1.1 only (no HTTP/2 by ALPN).
    pub backend_protocol: BackendProtocol,
    /// The AJP connectors' `secret` (Tomcat 9.0.31+ refuses AJP requests without one unless
    /// `secretRequired="false"`), unless a backend has its own.
    pub ajp_secret: Option<String>,
    /// Seconds an upgraded connection (WebSocket) may pass no byte either way before both
    /// sides are closed (HAProxy's `timeout tunnel`). Default 3600.
    pub tunnel_timeout_s: u64,
}

fn yes() -> bool {
    true
}
impl Default for L7 {
    fn default() -> Self {
        Self {
            sticky: StickyMode::Insert,
            cookie: "BALANCERID".into(),
            key_file: None,
            indirect: true,
            nocache: true,
            max_idle_s: None,
            max_life_s: None,
            secure: false,
            httponly: true,
            samesite: None,
            path: "/".into(),
            domain: None,
            session_cookies: vec!["JSESSIONID".into(), "jsessionid".into()],
            hash_on: "client".into(),
            lbmethod: LbMethod::Byrequests,
            nofailover: false,
            max_attempts: 2,
            retry_s: 60,
            connect_timeout_ms: 3000,
            response_timeout_ms: 60_000,
            header_timeout_ms: 10_000,
            max_header_bytes: 16_384,
            max_connections: None,
            via: false,
            preserve_host: true,
            splice: false,
            accept_proxy: false,
            send_proxy: None,
            backend_protocol: BackendProtocol::Http,
            ajp_secret: None,
            tunnel_timeout_s: 3600,
        }
    }
}

/// `max_connections` where it is not set (and the descriptor limit allows it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Backend {
    /// Where the backend is reached: its address and its `port`, or the VIP's port. This pair
    /// identifies it within its VIP (two application servers may share a host).
    pub fn target(&self, vip_port: u16) -> SocketAddr {
        SocketAddr::new(*self.address.get_ref(), self.port.unwrap_or(vip_port))
    }

    /// Its health check on VIP `vip`: its own, else the VIP's (none: it is not checked).
    pub fn check<'a>(&'a self, vip: &'a Vip) -> Option<&'a HealthCheck> {
        self.health.as_ref().or(vip.health.as_ref())
    }

    /// The protocol spoken to it on an L7 VIP with settings `l7`.
    pub fn protocol(&self, l7: &L7) -> BackendProtocol {
        self.protocol.unwrap_or(l7.backend_protocol)
    }

    /// The AJP secret sent to it on an L7 VIP with settings `l7`, when it speaks AJP.
    pub fn ajp_secret<'a>(&'a self, l7: &'a L7) -> Option<&'a str> {
        (self.protocol(l7) == BackendProtocol::Ajp13)
            .then(|| self.secret.as_deref().or(l7.ajp_secret.as_deref()))
            .flatten()
    }
}

/// An active health check (`HAProxy` `check inter … rise … fall …`); `Default` fills what the
/// file leaves out.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// `tcp` (connect; default), `http` (GET with an expected status) or `ajp-cping` (an AJP
    /// connector's CPing/CPong).
    pub kind: CheckKind,
    /// Port to check; default: the VIP's port.
    pub port: Option<u16>,
    /// HTTP path. Default `/`.
    pub path: String,
    /// Accepted HTTP statuses, `200-399` (default) or a single code.
    #[serde(deserialize_with = "status_range")]
    pub expect: (u16, u16),
    /// Time between checks, ms. Default 2000.
    pub interval_ms: u64,
    /// Time a check may take, ms; at most `interval_ms`. Default 1000, or `interval_ms` when
    /// that is shorter.
    pub timeout_ms: Option<u64>,
    /// Consecutive successes that bring a down backend up. Default 2.
    pub rise: u32,
    /// Consecutive failures that take an up backend down. Default 3.
    pub fall: u32,
    /// Seconds over which a backend that comes back up ramps from a token weight to its full
    /// weight (`HAProxy` `slowstart`), so a cold application server is not flooded. Default 0: no
    /// ramp.
    pub slowstart_s: u64,
}

/// What a health check does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    #[default]
    Tcp,
    /// `GET path` answers with a status in `expect`.
    Http,
    /// An AJP/1.3 connector answers `CPING` with `CPONG` (`mod_jk`'s `ping_mode`).
    #[serde(rename = "ajp-cping")]
    AjpCping,
    /// A TCP SYN to the VIP inside the backend's IPIP tunnel, as the data path sends a client's,
    /// is answered with SYN-ACK: proves the backend still decapsulates and holds the VIP (IPv4
    /// IPIP VIPs).
    Tunnel,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            port: None,
            path: "/".into(),
            expect: (200, 399),
            interval_ms: 2000,
            timeout_ms: None,
            rise: 2,
            fall: 3,
            slowstart_s: 0,
        }
    }
}

impl HealthCheck {
    /// The time a check may take.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(1000.min(self.interval_ms))
    }
}
fn status_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
    let text = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("`{text}` is not a status or a range like 200-399"));
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let (lo, hi): (u16, u16) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Administrative state of a backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new and existing flows.
    #[default]
    Active,
    /// Keeps existing flows, takes no new ones.
    Drain,
    /// Takes no traffic; its flows are re-steered.
    Stopped,
}

/// The config file's word for a value (`route-suffix`, `drain`, …): what status, metrics and
/// the status page print, so they say what the file says.
macro_rules! config_words {
    ($($t:ty { $($v:ident => $w:literal),+ $(,)? })+) => {
        $(
            impl std::fmt::Display for $t {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(match self { $(Self::$v => $w),+ })
                }
            }
        )+
    };
}
config_words! {
    Protocol { Tcp => "tcp", Udp => "udp" }
    Forwarding { Dsr => "dsr", Ipip => "ipip" }
    StickyMode { Insert => "insert", RouteSuffix => "route-suffix", Hash => "hash" }
    BackendState { Active => "active", Drain => "drain", Stopped => "stopped" }
}

/// The largest backend weight, in the file and on the command line alike.
pub const MAX_WEIGHT: u32 = 65_535;

fn default_weight() -> u32 {
    100
}
/// Default outer IPv4 source prefix of IPIP packets.
pub const DEFAULT_IPIP_SOURCE_V4: &str = "172.16.0.0/16";
/// Default outer IPv6 source prefix of IPIP packets (inside the discard-only prefix).
pub const DEFAULT_IPIP_SOURCE_V6: &str = "100::/96";

/// Why a value of an address field is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(missing_docs, reason = "each field is a value its message names")]
pub enum ValueError {
    /// Not `ADDR/LEN` with the one length the field takes.
    #[error("`{text}` is not a /{len} prefix (ADDR/{len})")]
    NotPrefix { text: String, len: u8 },
    /// Not `ADDRESS/LENGTH` at all.
    #[error("`{0}` is not ADDRESS/LENGTH")]
    NotCidr(String),
    /// The part before the `/` is not an address.
    #[error("`{addr}` in `{text}` is not an IP address")]
    NotAddress { addr: String, text: String },
    /// The length is not a number up to the family's bits.
    #[error("`{len}` in `{text}` is not a length 0-{max}")]
    BadLength { len: String, text: String, max: u8 },
    /// Bits set after the prefix length.
    #[error("`{text}` has host bits set after /{len}")]
    HostBits { text: String, len: u8 },
    /// Neither an address nor a name a resolver could look up.
    #[error("`{0}` is neither an IP address nor a host name")]
    NotHost(String),
    /// The resolver failed, or gave nothing.
    #[error("host name `{name}` does not resolve: {why}")]
    Unresolved { name: String, why: String },
}

/// `ADDR/LEN` with exactly prefix length `len` and no host bits set.
fn prefix<A: std::str::FromStr + Into<IpAddr> + Copy>(text: &str, len: u8) -> Result<A, ValueError> {
    let bad = || ValueError::NotPrefix { text: text.to_owned(), len };
    let (addr, l) = text.split_once('/').ok_or_else(bad)?;
    let addr: A = addr.parse().map_err(|_| bad())?;
    if l != len.to_string() {
        return Err(bad());
    }
    let host_bits = match addr.into() {
        IpAddr::V4(a) => u32::from(a) & (u32::MAX >> len) != 0,
        IpAddr::V6(a) => u128::from(a) & (u128::MAX >> len) != 0,
    };
    if host_bits {
        return Err(ValueError::HostBits { text: text.to_owned(), len });
    }
    Ok(addr)
}

/// Parses the IPv4 IPIP source prefix, a /16 (also for `balancer decap attach`).
///
/// # Errors
/// A message naming the text and the expected form.
pub fn ipip_prefix_v4(text: &str) -> Result<Ipv4Addr, ValueError> {
    prefix(text, 16)
}

/// Parses the IPv6 IPIP source prefix, a /96 (also for `balancer decap attach`).
///
/// # Errors
/// A message naming the text and the expected form.
pub fn ipip_prefix_v6(text: &str) -> Result<Ipv6Addr, ValueError> {
    prefix(text, 96)
}

fn ipip_v4<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ipv4Addr, D::Error> {
    ipip_prefix_v4(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}
fn ipip_v6<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ipv6Addr, D::Error> {
    ipip_prefix_v6(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}
fn host_or_ip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Spanned<IpAddr>, D::Error> {
    let text: Spanned<String> = Spanned::deserialize(d)?;
    let span = text.span();
    resolve(text.get_ref()).map(|ip| Spanned::new(span, ip)).map_err(serde::de::Error::custom)
}

/// What an L4 VIP's flow hash covers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HashMode {
    /// Addresses, ports and protocol.
    #[default]
    #[serde(rename = "5-tuple")]
    FiveTuple,
    /// Source and destination ports.
    #[serde(rename = "ports")]
    Ports,
    /// The destination port alone.
    #[serde(rename = "destination-port")]
    DestinationPort,
}

/// An address prefix, `10.0.0.0/8` or `2001:db8::/32`, without host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The prefix's address.
    pub addr: IpAddr,
    /// Its length in bits.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let (a, l) = text.split_once('/').ok_or_else(|| ValueError::NotCidr(text.to_owned()))?;
        let addr: IpAddr =
            a.parse().map_err(|_| ValueError::NotAddress { addr: a.to_owned(), text: text.to_owned() })?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = l.parse().ok().filter(|&n| n <= max).ok_or_else(|| ValueError::BadLength {
            len: l.to_owned(),
            text: text.to_owned(),
            max,
        })?;
        let bits = match addr {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        };
        let host = bits.checked_shl(u32::from(len)).unwrap_or(0);
        if host != 0 && len < max {
            return Err(ValueError::HostBits { text: text.to_owned(), len });
        }
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `name` as an address: itself when it is one, else what the system's resolver gives it
/// (IPv4 first, as the seeds' `localhost` backends expect).
fn resolve(name: &str) -> Result<IpAddr, ValueError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ip);
    }
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(ValueError::NotHost(name.to_owned()));
    }
    let unresolved = |why: String| ValueError::Unresolved { name: name.to_owned(), why };
    let found: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(name, 0))
        .map_err(|e| unresolved(e.to_string()))?
        .map(|a| a.ip())
        .collect();
    found.iter().find(|ip| ip.is_ipv4()).or(found.first()).copied().ok_or_else(|| unresolved("no address".into()))
}
fn ring_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RingSize, D::Error> {
    RingSize::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
}

impl Config {
    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// A `ConfigError` naming the file, line and field, for unreadable files too (line 0).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is only used in errors.
    ///
    /// # Errors
    /// A `ConfigError` naming the file, line and field.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError { file: path.to_owned(), line, column, message: e.message().trim().to_owned() }
        })?;
        validate::check(&config).map_err(|validate::Invalid { offset, message }| {
            let (line, column) = line_col(text, offset);
            ConfigError { file: path.to_owned(), line, column, message }
        })?;
        Ok(config)
    }

    /// `drain_timeout_s` as a duration.
    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_timeout_s)
    }

    /// Checks a configuration changed at run time (by the control API); the error names the
    /// field.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check(&self) -> Result<(), Invalid> {
        validate::check(self)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `[vip.l7]` or `[vip.health]` section that sets nothing gets exactly the documented
    /// defaults, now that `Default` is their one definition.
    /// The top level's defaults, now one `impl Default`: what the field docs promise, and a
    /// file without `interfaces` still refused by name.
    #[test]
    fn a_file_with_interfaces_only_takes_the_documented_top_level_defaults() {
        let c = Config::parse("interfaces = [\"e\"]\n", Path::new("t.toml")).unwrap();
        assert_eq!(
            (c.pin_dir.to_str(), c.control_socket.to_str(), c.state_file.to_str()),
            (Some("/sys/fs/bpf/balancer"), Some("/run/balancer.sock"), Some("/var/lib/balancer/state.json"))
        );
        assert_eq!(c.metrics_address, "127.0.0.1:9090".parse().unwrap());
        assert_eq!((c.flow_insert_limit, c.drain_timeout_s, c.answer_ping), (125_000, 10, true));
        assert_eq!((c.ipip_source_v4, c.ipip_source_v6), ("172.16.0.0".parse().unwrap(), "100::".parse().unwrap()));
        assert_eq!(c.maglev_seed, maglev::DEFAULT_SEED);
        assert!(c.vips.is_empty() && c.announce.is_none() && !c.admin);
        let e = Config::parse("pin_dir = \"/x\"\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("`interfaces` is empty"), "{e}");
    }

    #[test]
    fn empty_sections_take_the_documented_defaults() {
        let c = Config::parse(
            "interfaces = [\"e\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"route-suffix\"\n[vip.health]\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\nroute = \"r1\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let (l7, health) = (c.vips[0].l7.clone().unwrap(), c.vips[0].health.clone().unwrap());
        assert_eq!(l7, L7 { sticky: StickyMode::RouteSuffix, ..L7::default() });
        assert_eq!(health, HealthCheck::default());
        assert_eq!((l7.cookie.as_str(), l7.max_attempts, l7.retry_s, l7.tunnel_timeout_s), ("BALANCERID", 2, 60, 3600));
        assert!(l7.indirect && l7.nocache && l7.httponly && l7.preserve_host && !l7.secure);
        assert_eq!((health.expect, health.interval_ms, health.rise, health.fall), ((200, 399), 2000, 2, 3));
        // A field the file sets keeps the others' defaults.
        let c = Config::parse(
            "interfaces = [\"e\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\nretry_s = 5\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\nroute = \"r1\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.vips[0].l7.clone().unwrap(), L7 { sticky: StickyMode::Hash, retry_s: 5, ..L7::default() });
    }
}
