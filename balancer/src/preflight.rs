//! What `balancer check` verifies beyond parsing: the host-side checks the daemon meets when it
//! starts or reloads (interfaces, routes to L4 backends, key files, listening addresses, the
//! state file), run through the same
//! functions, so a file that `check` accepts is one that `run` and `reload` accept.

use std::{io::ErrorKind, net::SocketAddr};

use crate::{
    config::Config,
    l7::server::{self, L7Error},
};

/// A reason the daemon would refuse the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// An interface to attach to is missing.
    #[error("interfaces: `{0}` does not exist in this network namespace")]
    NoInterface(String),
    /// An L7 VIP's key or listening address.
    #[error(transparent)]
    L7(#[from] L7Error),
    /// The runtime-override state file cannot be read.
    #[error(transparent)]
    State(#[from] crate::overrides::StateError),
    /// The kernel has no route to an L4 backend.
    #[error("backend {backend} of VIP {vip}: {source}")]
    NoRoute {
        /// The VIP.
        vip: SocketAddr,
        /// The backend.
        backend: std::net::IpAddr,
        /// Why.
        source: crate::netlink::NetlinkError,
    },
    /// The route to an L4 backend leaves by an interface the balancer is not attached to.
    #[error(
        "backend {backend} of VIP {vip}: the route to it leaves by interface #{oif}, which the balancer is not attached to ({attached:?})"
    )]
    NotAttached {
        /// The VIP.
        vip: SocketAddr,
        /// The backend.
        backend: std::net::IpAddr,
        /// The route's interface index.
        oif: u32,
        /// The interfaces in the configuration.
        attached: Vec<String>,
    },
    /// A DSR backend behind a gateway: DSR only rewrites MACs.
    #[error(
        "backend {backend} of VIP {vip}: DSR needs backends on the balancer's L2 segment, but it is routed via {gateway} (use forwarding = \"ipip\")"
    )]
    DsrRouted {
        /// The VIP.
        vip: SocketAddr,
        /// The backend.
        backend: std::net::IpAddr,
        /// The gateway the route names.
        gateway: std::net::IpAddr,
    },
    /// The admin address cannot be listened on.
    #[error("metrics_address {address}: {source}")]
    Admin {
        /// The address.
        address: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Every problem the daemon would meet with `config`, in file order. `daemon_running`: a
/// daemon answers on the configuration's control socket, so addresses it listens on already
/// are not counted as taken.
pub fn check(config: &Config, daemon_running: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    for name in &config.interfaces {
        if !interface_exists(name) {
            problems.push(Problem::NoInterface(name.clone()));
        }
    }
    if let Err(e) = crate::overrides::Overrides::load(&config.state_file) {
        problems.push(e.into());
    }
    let taken_by_us = |e: &std::io::Error| daemon_running && e.kind() == ErrorKind::AddrInUse;
    match std::net::TcpListener::bind(config.metrics_address) {
        Err(source) if !taken_by_us(&source) => {
            problems.push(Problem::Admin { address: config.metrics_address, source });
        }
        _ => {}
    }
    if let Err(e) = server::connection_budget(config) {
        problems.push(e.into());
    }
    if !problems.iter().any(|p| matches!(p, Problem::NoInterface(_))) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = runtime {
            problems.extend(rt.block_on(routes(config)));
        }
    }
    // Each VIP on its own, so one bad VIP does not hide the next.
    if let Some(log) = &config.access_log
        && let Err(e) = crate::l7::access_log::check(log)
    {
        problems.push(L7Error::AccessLog(e).into());
    }
    for vip in config.vips.iter().filter(|v| v.l7.is_some()) {
        let one = Config { vips: vec![vip.clone()], access_log: None, ..config.clone() };
        match server::Runtime::default().prepare(&one) {
            // The descriptor budget is counted over all VIPs above.
            Err(L7Error::Listen { source, .. }) if !taken_by_us(&source) => {
                problems.push(L7Error::Listen { source, vip: *vip.address.get_ref() }.into());
            }
            Err(e @ (L7Error::Key { .. } | L7Error::Tls { .. })) => problems.push(e.into()),
            _ => {}
        }
    }
    problems
}

/// Where L4 backend `ip` of `vip` is reached: the next hop of the kernel's route to it (the
/// backend itself, or a gateway for IPIP) and the attached interface it leaves by.
pub async fn backend_route(
    nl: &crate::netlink::Netlink,
    ifaces: &[crate::netlink::Interface],
    vip: &crate::config::Vip,
    ip: std::net::IpAddr,
) -> Result<(std::net::IpAddr, crate::netlink::Interface), Problem> {
    let vaddr = *vip.address.get_ref();
    let (hop, oif) = nl.next_hop(ip).await.map_err(|source| Problem::NoRoute { vip: vaddr, backend: ip, source })?;
    let Some(iface) = ifaces.iter().find(|i| i.index == oif) else {
        let attached = ifaces.iter().map(|i| i.name.clone()).collect();
        return Err(Problem::NotAttached { vip: vaddr, backend: ip, oif, attached });
    };
    if vip.forwarding == crate::config::Forwarding::Dsr && hop != ip {
        return Err(Problem::DsrRouted { vip: vaddr, backend: ip, gateway: hop });
    }
    Ok((hop, iface.clone()))
}

/// The route checks of every L4 backend (no neighbour lookup: a backend that is down would
/// not answer it, and the daemon retries that at start).
async fn routes(config: &Config) -> Vec<Problem> {
    let Ok(nl) = crate::netlink::Netlink::new() else { return Vec::new() };
    let mut ifaces = Vec::new();
    for name in &config.interfaces {
        if let Ok(i) = nl.interface(name).await {
            ifaces.push(i);
        }
    }
    let mut problems = Vec::new();
    for vip in config.vips.iter().filter(|v| v.l7.is_none()) {
        for b in &vip.backends {
            if let Err(p) = backend_route(&nl, &ifaces, vip, *b.address.get_ref()).await {
                problems.push(p);
            }
        }
    }
    problems
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}
