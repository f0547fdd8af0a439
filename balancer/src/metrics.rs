//! Prometheus metrics (served by `admin`), rendered at scrape time from the same status the CLI shows, so there is
//! one source of truth and nothing to keep in step between scrapes.

use std::sync::atomic::AtomicU64;

use crate::status::Status;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

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
        "backend_ring_share",
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
    let mut counted = std::collections::HashSet::new();
    for v in &status.vips {
        let vl = VipLabels { vip: v.address.to_string(), protocol: v.protocol.to_string() };
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
                backend: b.address.to_string(),
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
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{BackendState, Forwarding, Protocol},
        status::{BackendStatus, Health, VipKind, VipStatus},
    };

    #[test]
    fn renders_counters_and_gauges_with_vip_and_backend_labels() {
        let status = Status {
            pin_dir: "/sys/fs/bpf/x".into(),
            vips: vec![VipStatus {
                address: "10.0.0.1:80".parse().unwrap(),
                protocol: Protocol::Tcp,
                kind: VipKind::L4 { forwarding: Forwarding::Dsr, ring_size: 65537 },
                name: None,
                takes: None,
                flows: None,
                packets: 7,
                bytes: 700,
                new_flows: 2,
                connections: None,
                backends: vec![BackendStatus {
                    address: "10.0.0.2".parse().unwrap(),
                    id: 0,
                    weight: 100,
                    state: BackendState::Active,
                    backup: false,
                    distance: 0,
                    health: Health::Down,
                    route: None,
                    domain: None,
                    slots: 0,
                    share: 0.0,
                    packets: 5,
                    bytes: 500,
                    new_flows: 1,
                    flows: None,
                    l7: None,
                }],
            }],
            flow_table_entries: Some(12),
            not_balanced: vec![("no_vip".into(), 3)],
            icmp: vec![("relayed".into(), 4)],
            problems: Vec::new(),
            access_log: (0, 0),
            admin: false,
        };
        let text = render(&status);
        assert!(text.contains(r#"balancer_vip_packets_total{vip="10.0.0.1:80",protocol="tcp"} 7"#), "{text}");
        assert!(
            text.contains(r#"balancer_backend_up{vip="10.0.0.1:80",protocol="tcp",pool="",backend="10.0.0.2"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"balancer_not_balanced_packets_total{reason="no_vip"} 3"#), "{text}");
        assert!(text.contains(r#"balancer_icmp_messages_total{event="relayed"} 4"#), "{text}");
        assert!(text.contains("balancer_flow_table_entries 12"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
