//! Tables for people; `--json` prints the same data for scripts. Columns are as wide as their
//! widest cell (an IPv6 backend does not push the rest of its row out of line).

use balancer::{
    dataplane::stats::Snapshot,
    status::{Status, VipKind},
};
use comfy_table::{CellAlignment, ContentArrangement, Table, presets::NOTHING};

/// A borderless table with `headers`; columns whose header is in `right` (numbers) are
/// right-aligned.
fn table(headers: &[&str], right: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(headers.to_vec());
    for (i, h) in headers.iter().enumerate() {
        if let (true, Some(c)) = (right.contains(h), t.column_mut(i)) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Prints `t` with every line indented by `indent`.
fn print_table(t: &Table, indent: &str) {
    for line in t.lines() {
        println!("{indent}{}", line.trim_end());
    }
}

/// `balancer status`.
pub fn status(s: &Status) {
    for p in &s.problems {
        println!("PROBLEM: {p}");
    }
    if s.daemon.drained {
        println!("node drained: every VIP withdrawn from BGP, forwarding goes on (`balancer node resume`)");
    }
    if let Some(e) = &s.daemon.announce_error {
        println!("PROBLEM: announcing through BIRD: {e}");
    }
    for v in &s.vips {
        let proto = v.protocol.to_string();
        match v.kind {
            VipKind::L7 { sticky } => l7_vip(v, &proto, sticky),
            VipKind::L4 { forwarding, ring_size } => l4_vip(v, &proto, (forwarding, ring_size)),
        }
    }
    let passed: Vec<String> = s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    println!("not balanced: {}", if passed.is_empty() { "none".into() } else { passed.join(" ") });
    let icmp: Vec<String> = s.icmp.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    println!("icmp: {}", if icmp.is_empty() { "none".into() } else { icmp.join(" ") });
}

/// `  announced` / `  withdrawn` with `[announce]`, else nothing.
fn announced(v: &balancer::status::VipStatus) -> &'static str {
    match v.announced {
        Some(true) => "  announced",
        Some(false) => "  withdrawn",
        None => "",
    }
}

fn group(b: &balancer::status::BackendStatus) -> String {
    if b.backup { format!("b{}", b.distance) } else { b.distance.to_string() }
}

fn l4_vip(v: &balancer::status::VipStatus, proto: &str, (forwarding, ring): (balancer::config::Forwarding, u32)) {
    println!(
        "VIP {} {proto} {forwarding}  ring {ring}  table {}{}  packets {}  bytes {}  new flows {}",
        v.address,
        v.table_digest.as_deref().unwrap_or("-"),
        announced(v),
        v.packets,
        v.bytes,
        v.new_flows
    );
    match &v.flows {
        Some(f) => println!(
            "  flow table: misses {}  pinned {}  evicted {}  not pinned (insert limit) {}",
            f.misses, f.inserts, f.evictions, f.guarded
        ),
        None => println!("  flow table: off (every packet steered by the ring)"),
    }
    print_table(&l4_backends(v), "  ");
}

/// The backend table of an L4 VIP.
fn l4_backends(v: &balancer::status::VipStatus) -> Table {
    let headers = ["BACKEND", "ID", "WEIGHT", "STATE", "HEALTH", "GROUP", "SHARE", "FLOWS", "PACKETS", "BYTES", "NEW"];
    let mut t = table(&headers, &["ID", "WEIGHT", "GROUP", "SHARE", "FLOWS", "PACKETS", "BYTES", "NEW"]);
    for b in &v.backends {
        t.add_row(vec![
            b.address.to_string(),
            b.id.to_string(),
            b.weight.to_string(),
            b.state.to_string(),
            b.health.to_string(),
            group(b),
            format!("{:.2}%", b.share),
            b.flows.map_or("-".to_owned(), |f| f.to_string()),
            b.packets.to_string(),
            b.bytes.to_string(),
            b.new_flows.to_string(),
        ]);
    }
    t
}

fn l7_vip(v: &balancer::status::VipStatus, proto: &str, mode: balancer::config::StickyMode) {
    let name = v.name.as_deref().map(|n| format!(" [{n}]")).unwrap_or_default();
    let takes = v.takes.as_deref().map(|t| format!(", takes {t}")).unwrap_or_default();
    println!("VIP {}{name} {proto} L7, sticky {mode}{takes}{}", v.address, announced(v));
    let headers =
        ["BACKEND", "ROUTE", "WEIGHT", "STATE", "HEALTH", "GROUP", "SESSIONS", "REQUESTS", "ERRORS", "LATENCY"];
    let mut t = table(&headers, &["WEIGHT", "GROUP", "SESSIONS", "REQUESTS", "ERRORS", "LATENCY"]);
    for b in &v.backends {
        let l = b.l7.as_ref();
        t.add_row(vec![
            l.map_or(b.address.to_string(), |l| l.target.to_string()),
            b.route.clone().unwrap_or_else(|| "-".into()),
            b.weight.to_string(),
            b.state.to_string(),
            b.health.to_string(),
            group(b),
            l.map_or(0, |l| l.sessions).to_string(),
            l.map_or(0, |l| l.requests).to_string(),
            l.map_or(0, |l| l.errors).to_string(),
            format!("{:.1}ms", l.map_or(0.0, |l| l.mean_latency_ms)),
        ]);
    }
    print_table(&t, "  ");
    let Some(c) = &v.connections else { return };
    println!(
        "  connections: {} open, {} refused, {} head timeouts, {} without a PROXY header, {} WebSocket tunnels ({} upgrades)",
        c.open, c.refused, c.head_timeouts, c.proxy_refused, c.tunnels, c.upgrades
    );
    if let Some(t) = &c.tls {
        let failed: Vec<String> = t.failures.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r} {n}")).collect();
        let counts =
            |list: &[(String, u64)]| list.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
        println!(
            "  tls: {} handshakes ({}), alpn {}, failed: {}",
            t.handshakes,
            counts(&t.versions),
            counts(&t.alpn),
            if failed.is_empty() { "none".into() } else { failed.join(", ") }
        );
        for cert in &t.certificates {
            println!("  certificate {} ({}): {} days left", cert.file.display(), cert.names.join(", "), cert.days_left);
        }
    }
}

/// `balancer vip list`.
pub fn vips(s: &Status) {
    print_table(&vip_table(s), "");
}

/// One row per VIP: an L4 VIP's forwarding mode and table size, an L7 VIP's stickiness (it has
/// no Maglev table: the proxy picks).
fn vip_table(s: &Status) -> Table {
    let mut t = table(&["VIP", "PROTO", "MODE", "RING", "BACKENDS"], &["RING", "BACKENDS"]);
    for v in &s.vips {
        let (mode, ring) = match v.kind {
            VipKind::L7 { sticky } => (format!("l7 {sticky}"), "-".to_owned()),
            VipKind::L4 { forwarding, ring_size } => (forwarding.to_string(), ring_size.to_string()),
        };
        t.add_row(vec![v.address.to_string(), v.protocol.to_string(), mode, ring, v.backends.len().to_string()]);
    }
    t
}

/// Per-second rates between two snapshots, keyed like the snapshot's rows.
#[derive(Debug, serde::Serialize)]
pub struct Rates {
    /// Per VIP (same order as the snapshot): packets/s, bits/s, new flows/s.
    pub vips: Vec<(String, f64, f64, f64)>,
    /// Per backend id: packets/s, bits/s, new flows/s.
    pub backends: Vec<(u32, f64, f64, f64)>,
}

impl Rates {
    /// Rates from `a` to `b`, `secs` apart. Rows missing from `a` count from zero.
    pub fn between(a: &Snapshot, b: &Snapshot, secs: f64) -> Self {
        let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        let vips = b
            .vips
            .iter()
            .map(|v| {
                let o = a.vips.iter().find(|o| o.id == v.id).map(|o| o.traffic).unwrap_or_default();
                let t = v.traffic;
                (v.vip.clone(), per(o.packets, t.packets), 8.0 * per(o.bytes, t.bytes), per(o.new_flows, t.new_flows))
            })
            .collect();
        let backends = b
            .backends
            .iter()
            .map(|v| {
                let o = a.backends.iter().find(|o| o.id == v.id).map(|o| o.traffic).unwrap_or_default();
                let t = v.traffic;
                (v.id, per(o.packets, t.packets), 8.0 * per(o.bytes, t.bytes), per(o.new_flows, t.new_flows))
            })
            .collect();
        Self { vips, backends }
    }
}

fn rate(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// `balancer stats`.
pub fn stats(s: &Snapshot, rates: Option<&Rates>) {
    let vrate = |i: usize| rates.and_then(|r| r.vips.get(i)).map(|r| (rate(r.1), rate(r.2), rate(r.3)));
    let brate =
        |id: u32| rates.and_then(|r| r.backends.iter().find(|b| b.0 == id)).map(|r| (rate(r.1), rate(r.2), rate(r.3)));
    let dash = || ("-".to_owned(), "-".to_owned(), "-".to_owned());
    let numbers = ["PPS", "BPS", "FLOWS/S", "PACKETS", "BYTES", "NEW FLOWS"];
    let totals = |t: &balancer::dataplane::stats::TrafficView| {
        [t.packets.to_string(), t.bytes.to_string(), t.new_flows.to_string()]
    };
    let mut vips = table(&["VIP", "PROTO", "PPS", "BPS", "FLOWS/S", "PACKETS", "BYTES", "NEW FLOWS"], &numbers);
    for (i, v) in s.vips.iter().enumerate() {
        let (pps, bps, fps) = vrate(i).unwrap_or_else(dash);
        let mut row = vec![v.vip.clone(), v.protocol.to_string(), pps, bps, fps];
        row.extend(totals(&v.traffic));
        vips.add_row(row);
    }
    print_table(&vips, "");
    println!();
    let mut backends =
        table(&["ID", "BACKEND", "STATE", "PPS", "BPS", "FLOWS/S", "PACKETS", "BYTES", "NEW FLOWS"], &numbers);
    for b in &s.backends {
        let (pps, bps, fps) = brate(b.id).unwrap_or_else(dash);
        let mut row = vec![b.id.to_string(), b.address.to_string(), b.state.to_owned(), pps, bps, fps];
        row.extend(totals(&b.traffic));
        backends.add_row(row);
    }
    print_table(&backends, "");
    println!();
    println!("not balanced: {}", s.not_balanced.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" "));
    println!("icmp: {}", s.icmp.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" "));
}

/// `balancer overrides`: one line per overridden field, with the file's value beside it.
pub fn overrides(o: &balancer::overrides::Overrides) {
    if o.backends.is_empty() {
        println!("no runtime overrides: the configuration file's values apply");
    }
    for b in &o.backends {
        let mut fields = Vec::new();
        if let Some(f) = b.weight {
            fields.push(format!("weight {} (file: {})", f.value, f.base));
        }
        if let Some(f) = b.state {
            fields.push(format!("state {} (file: {})", state_word(f.value), state_word(f.base)));
        }
        if let Some(f) = b.backup {
            fields.push(format!("backup {} (file: {})", f.value, f.base));
        }
        println!("{} {}: {}", b.vip, b.backend, fields.join(", "));
    }
}

fn state_word(s: balancer::config::BackendState) -> &'static str {
    match s {
        balancer::config::BackendState::Active => "active",
        balancer::config::BackendState::Drain => "drain",
        balancer::config::BackendState::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use balancer::{
        config::{BackendState, Forwarding, Protocol},
        status::{BackendStatus, VipStatus},
    };

    use super::*;

    fn backend(address: &str, id: u32) -> BackendStatus {
        BackendStatus {
            address: address.parse().unwrap(),
            id,
            weight: 100,
            state: BackendState::Active,
            backup: false,
            distance: 0,
            health: balancer::status::Health::Up,
            health_since_s: None,
            last_pass_s: None,
            route: None,
            domain: None,
            slots: 0,
            share: 50.0,
            packets: 123_456_789,
            bytes: 1,
            new_flows: 2,
            flows: Some(3),
            l7: None,
            rate: None,
            trend: Vec::new(),
        }
    }

    /// Issue 15: the backend column was 26 characters wide, so a longer IPv6 address pushed the
    /// rest of its row out of line with the header.
    #[test]
    fn columns_fit_their_widest_cell() {
        let v = VipStatus {
            backends: vec![backend("2001:db8:ffff:ffff:ffff:ffff:ffff:1234", 7), backend("10.0.0.2", 12)],
            ..vip("[2001:db8::10]:80", None)
        };
        let lines: Vec<String> = l4_backends(&v).lines().collect();
        // The ID column ends at the same offset on every line (right-aligned numbers).
        let end = |l: &str, word: &str| l.find(word).map(|i| i + word.len());
        let header = end(&lines[0], "ID").expect("header");
        assert_eq!(end(&lines[1], " 7 "), Some(header + 1), "{lines:#?}");
        assert_eq!(end(&lines[2], " 12 "), Some(header + 1), "{lines:#?}");
        assert!(lines[1].contains("2001:db8:ffff:ffff:ffff:ffff:ffff:1234"));
    }

    /// Issue 15: `vip list` showed an L7 VIP as `dsr` with ring 0, and status said `routesuffix`
    /// where the file says `route-suffix`.
    #[test]
    fn an_l7_vip_is_listed_by_its_stickiness_in_the_file_s_words() {
        let l4 = vip("10.0.0.1:80", None);
        let l7 = vip("10.0.0.2:80", Some(balancer::config::StickyMode::RouteSuffix));
        let s = Status { vips: vec![l4, l7], ..Status::empty("/x".into()) };
        let lines: Vec<String> =
            vip_table(&s).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(lines[1], "10.0.0.1:80 tcp ipip 65537 0");
        assert_eq!(lines[2], "10.0.0.2:80 tcp l7 route-suffix - 0");
        let json = serde_json::to_value(&s.vips[1]).unwrap();
        assert_eq!(json["sticky"], "route-suffix");
    }

    /// Issue 15: counts went to scripts as lists of `[name, count]` pairs; they are objects
    /// keyed by name, and read back as they were.
    #[test]
    fn counts_are_json_objects_by_name() {
        let s = Status {
            not_balanced: vec![("no_vip".into(), 3), ("icmp".into(), 1)],
            icmp: vec![("relayed".into(), 4)],
            ..Status::empty("/x".into())
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["not_balanced"], serde_json::json!({"no_vip": 3, "icmp": 1}));
        assert_eq!(json["icmp"]["relayed"], 4);
        let back: Status = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.not_balanced, s.not_balanced);
        assert_eq!(back.icmp, s.icmp);
    }

    fn vip(address: &str, sticky: Option<balancer::config::StickyMode>) -> VipStatus {
        VipStatus {
            address: address.parse().unwrap(),
            protocol: Protocol::Tcp,
            kind: sticky.map_or(VipKind::L4 { forwarding: Forwarding::Ipip, ring_size: 65537 }, |sticky| VipKind::L7 {
                sticky,
            }),
            name: None,
            takes: None,
            flows: None,
            packets: 0,
            bytes: 0,
            new_flows: 0,
            connections: None,
            backends: Vec::new(),
            table_digest: None,
            announced: None,
            rate: None,
            trend: Vec::new(),
        }
    }
}
