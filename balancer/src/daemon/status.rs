//! The daemon's status, built once per request from its state: the data path's counters, the
//! tables last written, health, and the L7 proxy's counters.

use std::{collections::HashMap, net::SocketAddr, sync::atomic::Ordering::Relaxed, time::Instant};

use super::Daemon;
use crate::{
    config,
    dataplane::stats::{Snapshot, StatsError},
    health::scheduler::BackendKey,
    l7::select::LATENCY_BOUNDS_MS,
    status::{
        BackendStatus, DaemonInfo, Health, L7BackendStatus, L7VipStatus, Reload, Status, VipKind, VipStatus,
        history::History,
    },
};

/// What the daemon keeps for its status beyond the data path's and the proxy's counters.
pub(super) struct About {
    started: Instant,
    host: String,
    /// Reloads that took effect, and that were refused.
    reloads: (u64, u64),
    last_reload: Option<Reload>,
    /// When each backend's health last changed.
    pub(super) health_changed: HashMap<BackendKey, Instant>,
    history: History,
}

impl About {
    pub(super) fn new() -> Self {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        Self {
            started: Instant::now(),
            host,
            reloads: (0, 0),
            last_reload: None,
            health_changed: HashMap::new(),
            history: History::default(),
        }
    }

    /// A reload took effect (`refused: None`) or was refused.
    pub(super) fn reloaded(&mut self, refused: Option<String>) {
        if refused.is_some() {
            self.reloads.1 += 1;
        } else {
            self.reloads.0 += 1;
        }
        self.last_reload = Some(Reload { at_unix_ms: unix_ms(), refused });
    }

    /// The daemon's line of status; `drained` and `announce_error` are the announcer's.
    fn info(&self, drained: bool, announce_error: Option<String>) -> DaemonInfo {
        DaemonInfo {
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            reloads: self.reloads,
            last_reload: self.last_reload.clone(),
            drained,
            announce_error,
        }
    }
}

/// A digest of a Maglev table by the backend in each slot (its address bytes and family, not its
/// id, which differs between nodes): 16 hex digits.
fn digest(ring: &[u32], backends: &[(u32, balancer_common::backend::Backend)]) -> String {
    let by_id: HashMap<u32, &balancer_common::backend::Backend> = backends.iter().map(|(id, b)| (*id, b)).collect();
    let mut bytes = Vec::with_capacity(ring.len() * 17);
    for id in ring {
        if let Some(b) = by_id.get(id) {
            bytes.extend_from_slice(&b.addr);
            bytes.push(b.family);
        }
    }
    format!("{:016x}", crate::maglev::fnv1a(&bytes))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

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

    /// The status now, with rates and trends from the samples taken so far.
    ///
    /// # Errors
    /// When the data path's counters cannot be read.
    pub fn status(&self) -> Result<Status, StatsError> {
        let mut status = self.counters()?;
        self.about.history.fill(&mut status);
        Ok(status)
    }

    /// Takes a sample of the counters for rates and trends (every `history::EVERY`).
    pub(super) fn sample(&mut self) {
        match self.counters() {
            Ok(status) => self.about.history.record(&status, Instant::now()),
            Err(e) => tracing::debug!(error = %e, "no counter sample"),
        }
    }

    /// The status's counters and states, without rates.
    fn counters(&self) -> Result<Status, StatsError> {
        let snap = Snapshot::from_ebpf(self.dataplane().ebpf())?;
        let (assigned, last) = self.last_plan();
        let mut vips = Vec::new();
        for (i, v) in self.config().vips.iter().enumerate() {
            let vid = assigned.vips[i];
            let ring = last.vips.iter().find(|p| p.meta.id == vid).map_or(&[][..], |p| p.ring.as_slice());
            let traffic = snap.vips.iter().find(|s| s.id == vid).map(|s| s.traffic).unwrap_or_default();
            let flows = (v.l7.is_none() && v.flow_table)
                .then(|| snap.vips.iter().find(|s| s.id == vid).map(|s| s.flows).unwrap_or_default());
            let backends = v
                .backends
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    let id = assigned.backends[i][j];
                    let t = snap.backends.iter().find(|s| s.id == id).map(|s| s.traffic).unwrap_or_default();
                    self.backend_status(v, b, (id, ring), t)
                })
                .collect();
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
                table_digest: (v.l7.is_none() && !ring.is_empty()).then(|| digest(ring, &last.backends)),
                announced: self
                    .announcer
                    .as_ref()
                    .map(|a| a.announced().is_some_and(|set| set.contains(&v.address.get_ref().ip()))),
                rate: None,
                trend: Vec::new(),
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
            daemon: self.about.info(self.drained, self.announcer.as_ref().and_then(|a| a.error.clone())),
            sample_every_s: 0,
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        })
    }

    /// One backend of `vip`: its state, health, ring share (`id` in `ring`) and counters.
    fn backend_status(
        &self,
        v: &config::Vip,
        b: &config::Backend,
        (id, ring): (u32, &[u32]),
        t: crate::dataplane::stats::TrafficView,
    ) -> BackendStatus {
        let slots = ring.iter().filter(|&&s| s == id).count() as u32;
        let key = BackendKey::of(v, b);
        let now_ms = unix_ms();
        let l7 = v.l7.as_ref().and_then(|_| self.l7_backend_status(v, b, now_ms));
        let mut health = self.health_of(v, b);
        // Passive failures seen by the proxy show as health, beside the active checks.
        if l7.as_ref().is_some_and(|l| l.retrying) && health != Health::Down {
            health = Health::Retrying;
        }
        BackendStatus {
            address: *b.address.get_ref(),
            id,
            weight: b.weight,
            state: b.state,
            backup: b.backup,
            distance: b.distance,
            health,
            health_since_s: self.about.health_changed.get(&key).map(|at| at.elapsed().as_secs()),
            last_pass_s: self.last_pass_of(v, b).filter(|&p| p > 0).map(|p| now_ms.saturating_sub(p) / 1000),
            route: b.route.clone(),
            domain: b.domain.clone(),
            slots,
            share: if ring.is_empty() { 0.0 } else { 100.0 * f64::from(slots) / ring.len() as f64 },
            packets: t.packets,
            bytes: t.bytes,
            new_flows: t.new_flows,
            flows: None,
            l7,
            rate: None,
            trend: Vec::new(),
        }
    }

    /// What the proxy saw of backend `b` of L7 VIP `v`.
    fn l7_backend_status(&self, v: &config::Vip, b: &config::Backend, now_ms: u64) -> Option<L7BackendStatus> {
        let target = b.target(v.address.get_ref().port());
        let live = self.l7_live(*v.address.get_ref(), target)?;
        let requests = live.requests();
        let classes = live.classes();
        Some(L7BackendStatus {
            target,
            sessions: live.sessions(),
            requests,
            errors: live.errors(),
            inflight: live.inflight(),
            bytes: live.bytes(),
            mean_latency_ms: if requests == 0 { 0.0 } else { live.latency_us() as f64 / requests as f64 / 1000.0 },
            latency_buckets: live.latency_buckets().to_vec(),
            latency_sum_us: live.latency_us(),
            responses: (1..=5).map(|c| (format!("{c}xx"), classes[c - 1])).collect(),
            retries: live.retries(),
            failovers: live.failovers(),
            retrying: live.retrying(now_ms, self.last_pass_of(v, b)),
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
