//! What the daemon does beside its main loop: resolving backends' next hops, forwarding the
//! program's log records, counting the flow table.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use tracing::{info, warn};

use super::RESOLVE_TIMEOUT;
use crate::{
    config::Config,
    dataplane::{Dataplane, plan::NextHop},
    netlink::{Interface, Netlink},
};

/// The next hop of every backend of `config`: taken from `known` when resolved before, else
/// resolved now. DSR needs the backend itself on the segment of an attached interface; IPIP
/// follows the kernel's route to it and sends to the gateway when there is one.
pub(super) async fn resolve(
    nl: &Netlink,
    ifaces: &[Interface],
    config: &Config,
    known: &HashMap<IpAddr, NextHop>,
) -> Result<HashMap<IpAddr, NextHop>> {
    let mut hops = HashMap::new();
    // L7 backends are reached through the kernel's stack: no next hop to learn.
    for vip in config.vips.iter().filter(|v| v.l7.is_none()) {
        for b in &vip.backends {
            let ip = *b.address.get_ref();
            if hops.contains_key(&ip) {
                continue;
            }
            if let Some(hop) = known.get(&ip) {
                hops.insert(ip, NextHop { mtu: mtu_of(config, ifaces, hop.ifindex), ..*hop });
                continue;
            }
            let at = || format!("backend {ip} of VIP {}", vip.address.get_ref());
            let (hop_ip, iface) = crate::preflight::backend_route(nl, ifaces, vip, ip).await?;
            let mac = nl.neighbour_mac(hop_ip, &iface, RESOLVE_TIMEOUT).await.with_context(at)?;
            if hop_ip != ip {
                info!(backend = %ip, gateway = %hop_ip, iface = %iface.name, "backend reached through a gateway");
            }
            hops.insert(ip, NextHop { mac, ifindex: iface.index, mtu: mtu_of(config, ifaces, iface.index) });
        }
    }
    Ok(hops)
}

/// The MTU packets leave interface `ifindex` with: `interface_mtu`'s, else the kernel's (read
/// at start and on reload), 0 when unknown.
fn mtu_of(config: &Config, ifaces: &[Interface], ifindex: u32) -> u16 {
    ifaces.iter().find(|i| i.index == ifindex).map_or(0, |i| {
        config.interface_mtu.get(&i.name).copied().unwrap_or_else(|| u16::try_from(i.mtu).unwrap_or(u16::MAX))
    })
}

/// Forwards the program's aya-log records to `tracing` (through the `log` bridge).
pub(super) fn spawn_ebpf_logger(dp: &mut Dataplane) {
    let logger = match aya_log::EbpfLogger::init(dp.ebpf_mut()) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "XDP program logs are unavailable");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged until the
    // logger (moved into the AsyncFd) is dropped.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
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

/// Counts the flow table every 10 s on a blocking thread: walking up to a million entries takes
/// seconds, which must not delay health flips or control requests.
pub(super) fn count_flows_in_background(pin_dir: PathBuf) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(u64::MAX));
    let out = count.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let dir = pin_dir.clone();
            if let Ok(Ok(counts)) =
                tokio::task::spawn_blocking(move || crate::dataplane::stats::flow_counts(&dir)).await
            {
                out.store(counts.values().sum(), Ordering::Relaxed);
            }
        }
    });
    count
}
