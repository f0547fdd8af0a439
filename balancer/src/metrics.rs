//! Prometheus metrics (served by `admin`), rendered at scrape time from the same status the CLI
//! shows, so there is one source of truth and nothing to keep in step between scrapes. Names
//! follow Prometheus' conventions (`_total` counters, base units, `_ratio` for 0–1); backends
//! are labelled `ip:port`.

use std::sync::{RwLock, atomic::AtomicU64};

use crate::status::Status;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

/// A histogram whose buckets were counted elsewhere (by the proxy's workers): sum, count and
/// the count per bucket (not cumulative), the last bucket's bound `+Inf`.
#[derive(Debug, Default)]
struct Counted(RwLock<Buckets>);

/// Sum, count, and (upper bound, count) per bucket.
type Buckets = (f64, u64, Vec<(f64, u64)>);

impl Counted {
    fn set(&self, sum: f64, buckets: Vec<(f64, u64)>) {
        let count = buckets.iter().map(|(_, n)| n).sum();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (sum, count, buckets);
    }
}

impl TypedMetric for Counted {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = &*self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    vip: String,
    protocol: String,
    pool: String,
    backend: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    vip: String,
    protocol: String,
    /// The VIP entry's `name` (empty without one): entries sharing an address are pools of
    /// their own.
    pool: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    vip: String,
    /// A failure's reason, a version or an ALPN protocol.
    value: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    vip: String,
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The `OpenMetrics` text for `status`.
#[expect(clippy::too_many_lines, reason = "the list of metric families, each registered and filled once, in one place")]
pub fn render(status: &Status) -> String {
    let mut registry = Registry::with_prefix("balancer");
    let vip_packets = Family::<VipLabels, Counter>::default();
    let vip_bytes = Family::<VipLabels, Counter>::default();
    let vip_flows = Family::<VipLabels, Counter>::default();
    let be_packets = Family::<BackendLabels, Counter>::default();
    let be_bytes = Family::<BackendLabels, Counter>::default();
    let be_flows = Family::<BackendLabels, Counter>::default();
    let be_up = Family::<BackendLabels, Gauge>::default();
    let be_weight = Family::<BackendLabels, Gauge>::default();
    let be_share = Family::<BackendLabels, Gauge<f64, AtomicU64>>::default();
    let passed = Family::<ReasonLabels, Counter>::default();
    let flow_entries = Gauge::<i64>::default();
    let l7_open = Family::<VipLabels, Gauge>::default();
    let l7_refused = Family::<VipLabels, Counter>::default();
    let l7_accept_errors = Family::<VipLabels, Counter>::default();
    let l7_head_timeouts = Family::<VipLabels, Counter>::default();
    registry.register("l7_connections", "Client connections open on the L7 VIP", l7_open.clone());
    registry.register(
        "l7_refused_connections",
        "Client connections refused at the VIP's max_connections",
        l7_refused.clone(),
    );
    registry.register("l7_accept_errors", "Failed accepts (out of file descriptors, mostly)", l7_accept_errors.clone());
    registry.register(
        "l7_head_timeouts",
        "Client connections closed without a complete request head in header_timeout_ms",
        l7_head_timeouts.clone(),
    );
    let l7_proxy_refused = Family::<VipLabels, Counter>::default();
    let l7_tunnels = Family::<VipLabels, Gauge>::default();
    let l7_upgrades = Family::<VipLabels, Counter>::default();
    let tls_handshakes = Family::<VipLabels, Counter>::default();
    let tls_failures = Family::<TlsLabels, Counter>::default();
    let tls_versions = Family::<TlsLabels, Counter>::default();
    let tls_alpn = Family::<TlsLabels, Counter>::default();
    let tls_days = Family::<CertLabels, Gauge>::default();
    let log_lines = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "l7_proxy_refused_connections",
        "Client connections closed for want of a valid PROXY protocol header",
        l7_proxy_refused.clone(),
    );
    registry.register("l7_tunnels", "Upgraded (WebSocket) connections open now", l7_tunnels.clone());
    registry.register("l7_upgrades", "Connections upgraded (WebSocket) since the VIP started", l7_upgrades.clone());
    registry.register("tls_handshakes", "Completed TLS handshakes", tls_handshakes.clone());
    registry.register("tls_handshake_failures", "Failed TLS handshakes, by reason (value)", tls_failures.clone());
    registry.register("tls_versions", "Completed TLS handshakes by version (value)", tls_versions.clone());
    registry.register("tls_alpn", "Completed TLS handshakes by ALPN protocol (value)", tls_alpn.clone());
    registry.register("tls_certificate_days_left", "Whole days until the certificate expires", tls_days.clone());
    registry.register(
        "access_log_lines",
        "Access log lines, written or dropped (the writer was behind)",
        log_lines.clone(),
    );
    log_lines.get_or_create(&OutcomeLabels { outcome: "written".into() }).inc_by(status.access_log.0);
    log_lines.get_or_create(&OutcomeLabels { outcome: "dropped".into() }).inc_by(status.access_log.1);
    registry.register("vip_packets", "Packets forwarded for the VIP", vip_packets.clone());
    registry.register("vip_bytes", "Bytes forwarded for the VIP, as received", vip_bytes.clone());
    registry.register("vip_new_flows", "Flows the VIP's Maglev table assigned", vip_flows.clone());
    registry.register("backend_packets", "Packets forwarded to the backend", be_packets.clone());
    registry.register("backend_bytes", "Bytes forwarded to the backend, as received", be_bytes.clone());
    registry.register("backend_new_flows", "Flows the Maglev table assigned to the backend", be_flows.clone());
    registry.register("backend_up", "1 when the backend passes its health check (or has none)", be_up.clone());
    registry.register("backend_weight", "Configured weight", be_weight.clone());
    registry.register(
        "backend_ring_share_ratio",
        "Share of the VIP's Maglev table the backend holds (0-1)",
        be_share.clone(),
    );
    registry.register(
        "not_balanced_packets",
        "Packets passed or dropped instead of balanced, by reason",
        passed.clone(),
    );
    if let Some(n) = status.flow_table_entries {
        flow_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
        registry.register("flow_table_entries", "Entries in the flow table (counted every 10 s)", flow_entries.clone());
    }
    let flow_misses = Family::<VipLabels, Counter>::default();
    let flow_inserts = Family::<VipLabels, Counter>::default();
    let flow_evictions = Family::<VipLabels, Counter>::default();
    let flow_guarded = Family::<VipLabels, Counter>::default();
    registry.register(
        "vip_flow_misses",
        "TCP packets past their SYN that the flow table did not hold (steered by the ring alone)",
        flow_misses.clone(),
    );
    registry.register("vip_flow_inserts", "Flows pinned in the flow table", flow_inserts.clone());
    registry.register(
        "vip_flow_evictions",
        "Pins that took another flow's slot (its set was full)",
        flow_evictions.clone(),
    );
    registry.register(
        "vip_flows_guarded",
        "New flows not pinned: the CPU was over flow_insert_limit (a SYN flood)",
        flow_guarded.clone(),
    );
    let announced = Family::<VipLabels, Gauge>::default();
    registry.register(
        "vip_announced",
        "With [announce]: 1 while this node announces the VIP's address by BGP",
        announced.clone(),
    );
    let mut counted = std::collections::HashSet::new();
    for v in &status.vips {
        let vl = VipLabels { vip: v.address.to_string(), protocol: v.protocol.to_string() };
        if let Some(a) = v.announced {
            announced.get_or_create(&vl).set(i64::from(a));
        }
        let pool = v.name.clone().unwrap_or_default();
        // The address's own counters once, however many entries (pools) share it.
        let first = counted.insert((v.address, v.protocol));
        let connections = v.connections.as_ref().filter(|_| first);
        if let Some(f) = &v.flows {
            flow_misses.get_or_create(&vl).inc_by(f.misses);
            flow_inserts.get_or_create(&vl).inc_by(f.inserts);
            flow_evictions.get_or_create(&vl).inc_by(f.evictions);
            flow_guarded.get_or_create(&vl).inc_by(f.guarded);
        }
        if first {
            vip_packets.get_or_create(&vl).inc_by(v.packets);
            vip_bytes.get_or_create(&vl).inc_by(v.bytes);
            vip_flows.get_or_create(&vl).inc_by(v.new_flows);
        }
        if let Some(c) = connections {
            l7_open.get_or_create(&vl).set(i64::try_from(c.open).unwrap_or(i64::MAX));
            l7_refused.get_or_create(&vl).inc_by(c.refused);
            l7_accept_errors.get_or_create(&vl).inc_by(c.accept_errors);
            l7_head_timeouts.get_or_create(&vl).inc_by(c.head_timeouts);
            l7_proxy_refused.get_or_create(&vl).inc_by(c.proxy_refused);
            l7_tunnels.get_or_create(&vl).set(i64::try_from(c.tunnels).unwrap_or(i64::MAX));
            l7_upgrades.get_or_create(&vl).inc_by(c.upgrades);
            if let Some(t) = &c.tls {
                tls_handshakes.get_or_create(&vl).inc_by(t.handshakes);
                let labels = |value: &str| TlsLabels { vip: vl.vip.clone(), value: value.to_owned() };
                for (reason, n) in &t.failures {
                    tls_failures.get_or_create(&labels(reason)).inc_by(*n);
                }
                for (version, n) in &t.versions {
                    tls_versions.get_or_create(&labels(version)).inc_by(*n);
                }
                for (protocol, n) in &t.alpn {
                    tls_alpn.get_or_create(&labels(protocol)).inc_by(*n);
                }
                for cert in &t.certificates {
                    let cl = CertLabels { vip: vl.vip.clone(), file: cert.file.display().to_string() };
                    tls_days.get_or_create(&cl).set(cert.days_left);
                }
            }
        }
        for b in &v.backends {
            let bl = BackendLabels {
                vip: vl.vip.clone(),
                protocol: vl.protocol.clone(),
                pool: pool.clone(),
                backend: backend_label(v, b),
            };
            be_packets.get_or_create(&bl).inc_by(b.packets);
            be_bytes.get_or_create(&bl).inc_by(b.bytes);
            be_flows.get_or_create(&bl).inc_by(b.new_flows);
            be_up.get_or_create(&bl).set(i64::from(b.health.is_up()));
            be_weight.get_or_create(&bl).set(i64::from(b.weight));
            be_share.get_or_create(&bl).set(b.share / 100.0);
        }
    }
    for (reason, n) in &status.not_balanced {
        passed.get_or_create(&ReasonLabels { reason: reason.clone() }).inc_by(*n);
    }
    let icmp = Family::<EventLabels, Counter>::default();
    registry.register(
        "icmp_messages",
        "ICMP the data path handled: errors relayed to a flow's backend, too-big sent to clients, echo replies",
        icmp.clone(),
    );
    for (event, n) in &status.icmp {
        icmp.get_or_create(&EventLabels { event: event.clone() }).inc_by(*n);
    }
    daemon_metrics(&mut registry, status);
    l7_backend_metrics(&mut registry, status);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// The backend label: `ip:port` (an L4 backend is reached on the VIP's port).
fn backend_label(v: &crate::status::VipStatus, b: &crate::status::BackendStatus) -> String {
    b.l7.as_ref().map_or_else(|| std::net::SocketAddr::new(b.address, v.address.port()), |l| l.target).to_string()
}

/// Build, uptime and reloads.
fn daemon_metrics(registry: &mut Registry, status: &Status) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels { version: status.daemon.version.clone() }).set(1);
    registry.register("build_info", "The daemon's version (value 1)", info);
    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(status.daemon.uptime_s).unwrap_or(i64::MAX));
    registry.register_with_unit("uptime", "Time since the daemon started", Unit::Seconds, uptime);
    let reloads = Family::<OutcomeLabels, Counter>::default();
    reloads.get_or_create(&OutcomeLabels { outcome: "success".into() }).inc_by(status.daemon.reloads.0);
    reloads.get_or_create(&OutcomeLabels { outcome: "failure".into() }).inc_by(status.daemon.reloads.1);
    registry.register("config_reloads", "Configuration reloads that took effect or were refused", reloads);
    let drained = Gauge::<i64>::default();
    drained.set(i64::from(status.daemon.drained));
    registry.register("node_drained", "1 after `balancer node drain`: nothing announced, forwarding on", drained);
    if let Some(last) = &status.daemon.last_reload {
        let at = Gauge::<i64>::default();
        at.set(i64::try_from(last.at_unix_ms / 1000).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "config_last_reload_timestamp",
            "When the configuration was last reloaded (or refused), Unix time",
            Unit::Seconds,
            at,
        );
    }
}

/// What the proxy saw of each L7 backend: responses by class, latency, sessions, retries,
/// failovers, requests in flight.
fn l7_backend_metrics(registry: &mut Registry, status: &Status) {
    let responses = Family::<ClassLabels, Counter>::default();
    let requests = Family::<BackendLabels, Counter>::default();
    let errors = Family::<BackendLabels, Counter>::default();
    let sessions = Family::<BackendLabels, Counter>::default();
    let retries = Family::<BackendLabels, Counter>::default();
    let failovers = Family::<BackendLabels, Counter>::default();
    let inflight = Family::<BackendLabels, Gauge>::default();
    let latency = Family::<BackendLabels, Counted>::default();
    let bounds_s: Vec<f64> = status.latency_bounds_ms.iter().map(|ms| ms / 1000.0).chain([f64::INFINITY]).collect();
    for v in &status.vips {
        for b in &v.backends {
            let Some(l) = &b.l7 else { continue };
            let bl = BackendLabels {
                vip: v.address.to_string(),
                protocol: v.protocol.to_string(),
                pool: v.name.clone().unwrap_or_default(),
                backend: backend_label(v, b),
            };
            for (class, n) in &l.responses {
                let cl = ClassLabels {
                    vip: bl.vip.clone(),
                    protocol: bl.protocol.clone(),
                    pool: bl.pool.clone(),
                    backend: bl.backend.clone(),
                    class: class.clone(),
                };
                responses.get_or_create(&cl).inc_by(*n);
            }
            requests.get_or_create(&bl).inc_by(l.requests);
            errors.get_or_create(&bl).inc_by(l.errors);
            sessions.get_or_create(&bl).inc_by(l.sessions);
            retries.get_or_create(&bl).inc_by(l.retries);
            failovers.get_or_create(&bl).inc_by(l.failovers);
            inflight.get_or_create(&bl).set(i64::from(l.inflight));
            let buckets = bounds_s.iter().copied().zip(l.latency_buckets.iter().copied()).collect();
            latency.get_or_create(&bl).set(l.latency_sum_us as f64 / 1e6, buckets);
        }
    }
    registry.register(
        "l7_responses",
        "Responses the clients got for requests sent to the backend, by class",
        responses,
    );
    registry.register("l7_requests", "Requests sent to the backend", requests);
    registry.register("l7_errors", "Failed connections and broken responses of the backend", errors);
    registry.register("l7_sessions", "Sessions assigned to the backend (new and by failover)", sessions);
    registry.register("l7_retries", "Requests that failed on the backend and were sent to another", retries);
    registry.register("l7_failovers", "Requests the backend took over from the one holding their session", failovers);
    registry.register("l7_inflight_requests", "Requests in flight to the backend", inflight);
    registry.register_with_unit(
        "l7_upstream_latency",
        "Time from sending the request to the backend's response head",
        Unit::Seconds,
        latency,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{BackendState, Forwarding, Protocol, StickyMode},
        status::{BackendStatus, DaemonInfo, Health, L7BackendStatus, VipKind, VipStatus},
    };

    fn backend(address: &str, health: Health, l7: Option<L7BackendStatus>) -> BackendStatus {
        BackendStatus {
            address: address.parse().unwrap(),
            id: 0,
            weight: 100,
            state: BackendState::Active,
            backup: false,
            distance: 0,
            health,
            health_since_s: None,
            last_pass_s: None,
            route: None,
            domain: None,
            slots: 0,
            share: 25.0,
            packets: 5,
            bytes: 500,
            new_flows: 1,
            flows: None,
            l7,
            rate: None,
            trend: Vec::new(),
        }
    }

    fn vip(address: &str, kind: VipKind, backends: Vec<BackendStatus>) -> VipStatus {
        VipStatus {
            address: address.parse().unwrap(),
            protocol: Protocol::Tcp,
            kind,
            name: None,
            takes: None,
            flows: None,
            packets: 7,
            bytes: 700,
            new_flows: 2,
            connections: None,
            backends,
            table_digest: None,
            announced: None,
            rate: None,
            trend: Vec::new(),
        }
    }

    fn l7_backend() -> L7BackendStatus {
        L7BackendStatus {
            target: "10.0.0.3:8080".parse().unwrap(),
            sessions: 4,
            requests: 10,
            errors: 1,
            inflight: 2,
            bytes: 0,
            mean_latency_ms: 3.0,
            // 1 ms: 6, 2.5 ms: 0, 5 ms: 3, then nothing until one above 10 s.
            latency_buckets: vec![6, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            latency_sum_us: 30_000,
            responses: vec![
                ("1xx".into(), 0),
                ("2xx".into(), 8),
                ("3xx".into(), 0),
                ("4xx".into(), 1),
                ("5xx".into(), 1),
            ],
            retries: 1,
            failovers: 3,
            retrying: false,
        }
    }

    fn status() -> Status {
        Status {
            vips: vec![
                vip(
                    "10.0.0.1:80",
                    VipKind::L4 { forwarding: Forwarding::Dsr, ring_size: 65537 },
                    vec![backend("10.0.0.2", Health::Down, None)],
                ),
                vip(
                    "10.0.0.1:8000",
                    VipKind::L7 { sticky: StickyMode::Insert },
                    vec![backend("10.0.0.3", Health::Up, Some(l7_backend()))],
                ),
            ],
            flow_table_entries: Some(12),
            not_balanced: vec![("no_vip".into(), 3)],
            icmp: vec![("relayed".into(), 4)],
            daemon: DaemonInfo {
                version: "0.1.0".into(),
                uptime_s: 9,
                reloads: (2, 1),
                drained: true,
                ..DaemonInfo::default()
            },
            latency_bounds_ms: crate::l7::select::LATENCY_BOUNDS_MS.to_vec(),
            ..Status::empty("/sys/fs/bpf/x".into())
        }
    }

    #[test]
    fn renders_counters_and_gauges_with_vip_and_backend_labels() {
        let text = render(&status());
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        has(r#"balancer_vip_packets_total{vip="10.0.0.1:80",protocol="tcp"} 7"#);
        // An L4 backend is labelled with the port it is reached on, the VIP's.
        has(r#"balancer_backend_up{vip="10.0.0.1:80",protocol="tcp",pool="",backend="10.0.0.2:80"} 0"#);
        has(
            r#"balancer_backend_ring_share_ratio{vip="10.0.0.1:80",protocol="tcp",pool="",backend="10.0.0.2:80"} 0.25"#,
        );
        has(r#"balancer_not_balanced_packets_total{reason="no_vip"} 3"#);
        has(r#"balancer_icmp_messages_total{event="relayed"} 4"#);
        has("balancer_flow_table_entries 12");
        assert!(text.ends_with("# EOF\n"));
    }

    /// Issue 15: build, reloads, the node's announcement (issue 16), and the L7 backends' responses by class, latency histogram,
    /// sessions, retries and failovers.
    #[test]
    fn renders_the_daemon_and_the_l7_backends() {
        let mut s = status();
        s.vips[0].announced = Some(true);
        let text = render(&s);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        has(r#"balancer_build_info{version="0.1.0"} 1"#);
        has(r#"balancer_config_reloads_total{outcome="success"} 2"#);
        has(r#"balancer_config_reloads_total{outcome="failure"} 1"#);
        has("balancer_uptime_seconds 9");
        has("balancer_node_drained 1");
        has(r#"balancer_vip_announced{vip="10.0.0.1:80",protocol="tcp"} 1"#);
        assert!(!text.contains(r#"balancer_vip_announced{vip="10.0.0.1:8000""#), "not announced without [announce]");
        let b = r#"vip="10.0.0.1:8000",protocol="tcp",pool="",backend="10.0.0.3:8080""#;
        has(&format!(r#"balancer_l7_responses_total{{{b},class="2xx"}} 8"#));
        has(&format!(r#"balancer_l7_responses_total{{{b},class="5xx"}} 1"#));
        has(&format!("balancer_l7_sessions_total{{{b}}} 4"));
        has(&format!("balancer_l7_retries_total{{{b}}} 1"));
        has(&format!("balancer_l7_failovers_total{{{b}}} 3"));
        has(&format!("balancer_l7_inflight_requests{{{b}}} 2"));
        // Cumulative buckets in seconds, with the sum and count.
        has(&format!(r#"balancer_l7_upstream_latency_seconds_bucket{{le="0.001",{b}}} 6"#));
        has(&format!(r#"balancer_l7_upstream_latency_seconds_bucket{{le="0.005",{b}}} 9"#));
        has(&format!(r#"balancer_l7_upstream_latency_seconds_bucket{{le="10.0",{b}}} 9"#));
        has(&format!(r#"balancer_l7_upstream_latency_seconds_bucket{{le="+Inf",{b}}} 10"#));
        has(&format!("balancer_l7_upstream_latency_seconds_count{{{b}}} 10"));
        has(&format!("balancer_l7_upstream_latency_seconds_sum{{{b}}} 0.03"));
    }

    /// The Grafana dashboard in the repository asks only for series the daemon exports: a
    /// renamed metric breaks this test, not an operator's dashboard.
    #[test]
    fn the_grafana_dashboard_uses_only_exported_series() {
        let mut s = status();
        s.vips[0].flows = Some(crate::dataplane::stats::FlowEventsView::default());
        s.vips[1].connections = Some(crate::status::L7VipStatus {
            tls: Some(crate::status::TlsStatus { failures: vec![("timeout".into(), 1)], ..Default::default() }),
            ..Default::default()
        });
        s.vips[0].announced = Some(true);
        let text = render(&s);
        let mut exported = std::collections::HashSet::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => exported.extend([format!("{name}_total")]),
                "histogram" => exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
                _ => exported.extend([name.to_owned()]),
            }
        }
        let dashboard = include_str!("../../packaging/grafana-dashboard.json");
        let _: serde_json::Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
        let mut used: Vec<&str> = dashboard
            .match_indices("balancer_")
            .map(|(i, _)| {
                let end = dashboard[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap();
                &dashboard[i..i + end]
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() > 15, "{used:?}");
        let missing: Vec<&&str> = used.iter().filter(|n| !exported.contains(**n)).collect();
        assert!(missing.is_empty(), "the dashboard asks for series /metrics does not have: {missing:?}");
    }
}
