//! Tables for people; `--json` prints the same data for scripts.

use balancer::{control::protocol::Status, dataplane::stats::Snapshot};

/// `balancer status`.
pub fn status(s: &Status) {
    for p in &s.problems {
        println!("PROBLEM: {p}");
    }
    for v in &s.vips {
        let proto = format!("{:?}", v.protocol).to_lowercase();
        match &v.sticky {
            Some(mode) => l7_vip(v, &proto, mode),
            None => l4_vip(v, &proto),
        }
    }
    let passed: Vec<String> = s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    println!("not balanced: {}", if passed.is_empty() { "none".into() } else { passed.join(" ") });
    let icmp: Vec<String> = s.icmp.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    println!("icmp: {}", if icmp.is_empty() { "none".into() } else { icmp.join(" ") });
}

fn group(b: &balancer::control::protocol::BackendStatus) -> String {
    if b.backup { format!("b{}", b.distance) } else { b.distance.to_string() }
}

fn l4_vip(v: &balancer::control::protocol::VipStatus, proto: &str) {
    println!(
        "VIP {} {proto} {}  ring {}  packets {}  bytes {}  new flows {}",
        v.address,
        format!("{:?}", v.forwarding).to_lowercase(),
        v.ring_size,
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
    println!(
        "  {:<26} {:>5} {:>6} {:<8} {:<9} {:>6} {:>7} {:>8} {:>10} {:>12} {:>9}",
        "BACKEND", "ID", "WEIGHT", "STATE", "HEALTH", "GROUP", "SHARE", "FLOWS", "PACKETS", "BYTES", "NEW"
    );
    for b in &v.backends {
        println!(
            "  {:<26} {:>5} {:>6} {:<8} {:<9} {:>6} {:>6.2}% {:>8} {:>10} {:>12} {:>9}",
            b.address,
            b.id,
            b.weight,
            format!("{:?}", b.state).to_lowercase(),
            b.health,
            group(b),
            b.share,
            b.flows.map_or("-".to_owned(), |f| f.to_string()),
            b.packets,
            b.bytes,
            b.new_flows
        );
    }
}

fn l7_vip(v: &balancer::control::protocol::VipStatus, proto: &str, mode: &str) {
    let name = v.name.as_deref().map(|n| format!(" [{n}]")).unwrap_or_default();
    let takes = v.takes.as_deref().map(|t| format!(", takes {t}")).unwrap_or_default();
    println!("VIP {}{name} {proto} L7, sticky {mode}{takes}", v.address);
    println!(
        "  {:<26} {:<10} {:>6} {:<8} {:<9} {:>6} {:>9} {:>9} {:>7} {:>10}",
        "BACKEND", "ROUTE", "WEIGHT", "STATE", "HEALTH", "GROUP", "SESSIONS", "REQUESTS", "ERRORS", "LATENCY"
    );
    for b in &v.backends {
        let l = b.l7.as_ref();
        println!(
            "  {:<26} {:<10} {:>6} {:<8} {:<9} {:>6} {:>9} {:>9} {:>7} {:>8.1}ms",
            l.map_or(b.address.to_string(), |l| l.target.to_string()),
            b.route.as_deref().unwrap_or("-"),
            b.weight,
            format!("{:?}", b.state).to_lowercase(),
            b.health,
            group(b),
            l.map_or(0, |l| l.sessions),
            l.map_or(0, |l| l.requests),
            l.map_or(0, |l| l.errors),
            l.map_or(0.0, |l| l.mean_latency_ms)
        );
    }
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
    println!("{:<30} {:<5} {:<5} {:>6} {:>9}", "VIP", "PROTO", "MODE", "RING", "BACKENDS");
    for v in &s.vips {
        println!(
            "{:<30} {:<5} {:<5} {:>6} {:>9}",
            v.address.to_string(),
            format!("{:?}", v.protocol).to_lowercase(),
            format!("{:?}", v.forwarding).to_lowercase(),
            v.ring_size,
            v.backends.len()
        );
    }
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
    println!(
        "{:<28} {:>5} {:>8} {:>8} {:>8} {:>12} {:>14} {:>10}",
        "VIP", "PROTO", "PPS", "BPS", "FLOWS/S", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for (i, v) in s.vips.iter().enumerate() {
        let (p, b, f) = vrate(i).unwrap_or_else(dash);
        println!(
            "{:<28} {:>5} {:>8} {:>8} {:>8} {:>12} {:>14} {:>10}",
            v.vip, v.protocol, p, b, f, v.traffic.packets, v.traffic.bytes, v.traffic.new_flows
        );
    }
    println!();
    println!(
        "{:<6} {:<28} {:<8} {:>8} {:>8} {:>8} {:>12} {:>14} {:>10}",
        "ID", "BACKEND", "STATE", "PPS", "BPS", "FLOWS/S", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for b in &s.backends {
        let (p, bps, f) = brate(b.id).unwrap_or_else(dash);
        println!(
            "{:<6} {:<28} {:<8} {:>8} {:>8} {:>8} {:>12} {:>14} {:>10}",
            b.id, b.address, b.state, p, bps, f, b.traffic.packets, b.traffic.bytes, b.traffic.new_flows
        );
    }
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
