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
    /// Withdraw every VIP from BGP and keep forwarding (`node drain`).
    NodeDrain,
    /// Announce again the VIPs this node can serve (`node resume`).
    NodeResume,
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
