//! The daemon's status, built once per request from its state: the data path's counters, the
//! tables last written, health, and the L7 proxy's counters.

use std::{net::SocketAddr, sync::atomic::Ordering::Relaxed};

use super::Daemon;
use crate::{
    config,
    dataplane::stats::{Snapshot, StatsError},
    status::{BackendStatus, Health, L7BackendStatus, L7VipStatus, Status, VipKind, VipStatus},
};

impl Daemon {
    /// A TLS VIP's handshake counters and certificates.
    fn tls_status(&self, vip: SocketAddr, live: &crate::l7::tls::TlsLive) -> crate::status::TlsStatus {
        use crate::l7::tls::{self, Failure};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let count = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        crate::status::TlsStatus {
            handshakes: count(&live.handshakes),
            failures: Failure::ALL.iter().zip(&live.failures).map(|(f, n)| (f.name().to_owned(), count(n))).collect(),
            versions: tls::VERSIONS.iter().zip(&live.versions).map(|(v, n)| ((*v).to_owned(), count(n))).collect(),
            alpn: tls::ALPN.iter().zip(&live.alpn).map(|(p, n)| ((*p).to_owned(), count(n))).collect(),
            certificates: self
                .l7_certificates(vip)
                .unwrap_or_default()
                .iter()
                .map(|c| crate::status::CertificateStatus {
                    file: c.file.clone(),
                    names: c.names.clone(),
                    days_left: c.days_left(now),
                })
                .collect(),
        }
    }

    /// The status now.
    ///
    /// # Errors
    /// When the data path's counters cannot be read.
    pub fn status(&self) -> Result<Status, StatsError> {
        let snap = Snapshot::from_ebpf(self.dataplane().ebpf())?;
        let (assigned, last) = self.last_plan();
        let mut vips = Vec::new();
        for (i, v) in self.config().vips.iter().enumerate() {
            let vid = assigned.vips[i];
            let ring = last.vips.iter().find(|p| p.meta.id == vid).map_or(&[][..], |p| p.ring.as_slice());
            let traffic = snap.vips.iter().find(|s| s.id == vid).map(|s| s.traffic).unwrap_or_default();
            let flows = (v.l7.is_none() && v.flow_table)
                .then(|| snap.vips.iter().find(|s| s.id == vid).map(|s| s.flows).unwrap_or_default());
            let mut backends = Vec::new();
            for (j, b) in v.backends.iter().enumerate() {
                let id = assigned.backends[i][j];
                let slots = ring.iter().filter(|&&s| s == id).count() as u32;
                let t = snap.backends.iter().find(|s| s.id == id).map(|s| s.traffic).unwrap_or_default();
                backends.push(BackendStatus {
                    address: *b.address.get_ref(),
                    id,
                    weight: b.weight,
                    state: b.state,
                    backup: b.backup,
                    distance: b.distance,
                    health: self.health_of(v, b),
                    route: b.route.clone(),
                    domain: b.domain.clone(),
                    slots,
                    share: if ring.is_empty() { 0.0 } else { 100.0 * f64::from(slots) / ring.len() as f64 },
                    packets: t.packets,
                    bytes: t.bytes,
                    new_flows: t.new_flows,
                    flows: None,
                    l7: v.l7.as_ref().and_then(|_| {
                        let target = b.target(v.address.get_ref().port());
                        let live = self.l7_live(*v.address.get_ref(), target)?;
                        let requests = live.requests();
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64;
                        Some(L7BackendStatus {
                            target,
                            sessions: live.sessions(),
                            requests,
                            errors: live.errors(),
                            inflight: live.inflight(),
                            bytes: live.bytes(),
                            mean_latency_ms: if requests == 0 {
                                0.0
                            } else {
                                live.latency_us() as f64 / requests as f64 / 1000.0
                            },
                            retrying: live.retrying(now_ms, self.last_pass_of(v, b)),
                        })
                    }),
                });
            }
            // Passive failures seen by the proxy show as health, beside the active checks.
            for b in &mut backends {
                if b.l7.as_ref().is_some_and(|l| l.retrying) && b.health != Health::Down {
                    b.health = Health::Retrying;
                }
            }
            vips.push(VipStatus {
                address: *v.address.get_ref(),
                protocol: v.protocol,
                kind: match &v.l7 {
                    Some(l7) => VipKind::L7 { sticky: l7.sticky },
                    None => VipKind::L4 { forwarding: v.forwarding, ring_size: v.ring_size.get() },
                },
                name: v.name.clone(),
                takes: v.matches.as_ref().map(describe_match),
                flows,
                packets: traffic.packets,
                bytes: traffic.bytes,
                new_flows: traffic.new_flows,
                connections: self.l7_vip_live(*v.address.get_ref()).map(|l| L7VipStatus {
                    open: l.open.load(Relaxed),
                    refused: l.refused.load(Relaxed),
                    accept_errors: l.accept_errors.load(Relaxed),
                    head_timeouts: l.head_timeouts.load(Relaxed),
                    proxy_refused: l.proxy_refused.load(Relaxed),
                    tunnels: l.tunnels.load(Relaxed),
                    upgrades: l.upgrades.load(Relaxed),
                    tls: v.tls.as_ref().map(|_| self.tls_status(*v.address.get_ref(), &l.tls)),
                }),
                backends,
            });
        }
        let not_balanced = snap.not_balanced.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
        let icmp = snap.icmp.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
        Ok(Status {
            pin_dir: self.config().pin_dir.clone(),
            vips,
            flow_table_entries: self.flow_table_entries(),
            not_balanced,
            icmp,
            problems: self.problems(),
            access_log: (crate::l7::access_log::WRITTEN.load(Relaxed), crate::l7::access_log::DROPPED.load(Relaxed)),
            admin: self.config().admin,
        })
    }
}

/// `[vip.match]` in one line: `host a,b path /x,/*.jsp exclude /x/s rewrite /`.
fn describe_match(m: &config::Match) -> String {
    let mut parts = Vec::new();
    for (word, list) in [("host", &m.host), ("path", &m.path), ("exclude", &m.exclude)] {
        if !list.is_empty() {
            parts.push(format!("{word} {}", list.join(",")));
        }
    }
    if let Some(r) = &m.rewrite {
        parts.push(format!("rewrite {r}"));
    }
    parts.join(" ")
}
