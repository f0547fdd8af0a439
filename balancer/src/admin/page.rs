//! The status page: the daemon (host, version, uptime, reloads), then each VIP with its totals,
//! rates and a chart of the last minutes, and a row per backend with its health, rates and
//! chart. Plain HTML and inline SVG: no script, nothing fetched from elsewhere.

use std::{fmt::Write as _, net::SocketAddr};

use crate::status::{BackendStatus, Rate, Status, VipKind, VipStatus};

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}\
    h2{font-size:16px;margin-top:2em}table{border-collapse:collapse;min-width:60%}\
    th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}\
    th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
    .up,.unchecked{color:#1a7f37}.down{color:#cf222e;font-weight:bold}.retrying{color:#bc4c00}\
    .drain{color:#9a6700}.stopped{color:#777}.meta,.since{color:#555}.since{font-size:12px}\
    form{display:inline;margin:0}input[name=weight]{width:5em}input[name=route]{width:7em}\
    .done{background:#ddf4ff;padding:6px}svg.trend{vertical-align:middle}\
    svg.trend polyline{fill:none;stroke:#0969da;stroke-width:1.5}.c5{color:#cf222e}.c4{color:#9a6700}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `x` with a k/M/G prefix and `unit` (`1.2 kreq/s`, `3.4 Mbit/s`, `12 pkt/s`; `1.6 k` without
/// a unit).
fn si(x: f64, unit: &str) -> String {
    let (v, prefix) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, " G"),
        a if a >= 1e6 => (x / 1e6, " M"),
        a if a >= 1e3 => (x / 1e3, " k"),
        _ => (x, " "),
    };
    let digits = usize::from(v.abs() < 100.0 && v.fract() != 0.0);
    format!("{v:.digits$}{prefix}{unit}").trim_end().to_owned()
}

/// A byte count in binary units (`12.3 MiB`).
fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 || unit == "TiB" {
            return if unit == "B" { format!("{n} B") } else { format!("{v:.1} {unit}") };
        }
        v /= 1024.0;
    }
    unreachable!("the last unit returns")
}

/// A duration in its two largest units (`3m12s`, `2h05m`, `4d03h`).
fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A small line chart of `points` (oldest first), scaled to their largest; its title says the
/// range and the largest value.
fn chart(points: &[f64], every_s: u32, unit: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    if points.len() < 2 {
        return "<span class=\"since\">collecting</span>".into();
    }
    let max = points.iter().copied().fold(0.0, f64::max);
    let step = W / (points.len() - 1) as f64;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let y = if max > 0.0 { H - 1.0 - (H - 2.0) * p / max } else { H - 1.0 };
            format!("{:.1},{y:.1}", i as f64 * step)
        })
        .collect();
    let span = points.len() as u64 * u64::from(every_s);
    format!(
        "<svg class=\"trend\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" data-points=\"{}\">\
         <title>last {}: up to {}</title><rect width=\"{W}\" height=\"{H}\" fill=\"#f6f8fa\"/>\
         <polyline points=\"{}\"/></svg>",
        points.len(),
        ago(span),
        si(max, unit),
        line.join(" ")
    )
}

/// The rate shown for a VIP or backend: requests (and errors) for L7, packets and bits for L4.
fn rate_text(rate: Option<Rate>, l7: bool) -> String {
    match rate {
        None => "-".into(),
        Some(r) if l7 => {
            let errors = if r.errors > 0.0 { format!(", {}", si(r.errors, "err/s")) } else { String::new() };
            format!("{}{errors}", si(r.requests, "req/s"))
        }
        Some(r) => format!("{}, {}", si(r.packets, "pkt/s"), si(r.bits, "bit/s")),
    }
}

/// The daemon's line: host, version, uptime, reloads.
fn header(s: &Status, h: &mut String) {
    let d = &s.daemon;
    let _ = write!(
        h,
        "<h1>balancer on {}</h1><p class=\"meta\" id=\"daemon\">version {} · up {} · reloads: {} applied, {} refused",
        esc(&d.host),
        esc(&d.version),
        ago(d.uptime_s),
        d.reloads.0,
        d.reloads.1
    );
    if let Some(last) = &d.last_reload {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_millis());
        let when = ago(u64::try_from(now.saturating_sub(u128::from(last.at_unix_ms)) / 1000).unwrap_or(u64::MAX));
        match &last.refused {
            None => {
                let _ = write!(h, " · last reload {when} ago: applied");
            }
            Some(why) => {
                let _ = write!(h, " · last reload {when} ago: <span class=\"down\">refused</span> ({})", esc(why));
            }
        }
    }
    h.push_str("</p>");
}

/// The status page; with `nonce` (admin on), each backend's row has a form to change it, and
/// `message` says what the last change did.
pub fn html(s: &Status, nonce: Option<&str>, message: Option<&str>) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>balancer status</title>{}<style>{STYLE}</style></head><body>",
        // Read-only: it refreshes itself. With forms, a refresh would drop what is being typed.
        if nonce.is_none() { "<meta http-equiv=\"refresh\" content=\"10\">" } else { "" }
    );
    header(s, &mut h);
    if let Some(m) = message {
        let _ = write!(h, "<p class=\"done\" id=\"done\">{}</p>", esc(m));
    }
    for p in &s.problems {
        let _ = write!(h, "<p class=\"down\">PROBLEM: {}</p>", esc(p));
    }
    for v in &s.vips {
        vip_section(s, v, nonce, &mut h);
    }
    let passed: Vec<String> =
        s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{} {n}", esc(r))).collect();
    let icmp: Vec<String> = s.icmp.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{} {n}", esc(r))).collect();
    let _ = write!(
        h,
        "<h2>Not balanced</h2><p>{}</p><h2>ICMP</h2><p>{}</p>\
         <p><a href=\"/status.json\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        if passed.is_empty() { "nothing".into() } else { passed.join(", ") },
        if icmp.is_empty() { "nothing".into() } else { icmp.join(", ") }
    );
    h
}

/// Responses by class, the 4xx and 5xx in colour.
fn classes(list: &[(String, u64)]) -> String {
    list.iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| {
            let class = match c.as_bytes().first() {
                Some(b'5') => " class=\"c5\"",
                Some(b'4') => " class=\"c4\"",
                _ => "",
            };
            format!("<span{class}>{} {}</span>", esc(c), si(*n as f64, ""))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn vip_section(s: &Status, v: &VipStatus, nonce: Option<&str>, h: &mut String) {
    let l7 = v.kind.is_l7();
    let mode = match v.kind {
        VipKind::L7 { sticky } => format!("L7, sticky {sticky}"),
        VipKind::L4 { forwarding, ring_size } => format!("L4 {forwarding}, Maglev {ring_size}"),
    };
    let totals = if l7 {
        let ls = || v.backends.iter().filter_map(|b| b.l7.as_ref());
        let requests: u64 = ls().map(|l| l.requests).sum();
        let sessions: u64 = ls().map(|l| l.sessions).sum();
        let mut by_class = [0u64; 5];
        for l in ls() {
            for (k, (_, n)) in l.responses.iter().enumerate().take(5) {
                by_class[k] += n;
            }
        }
        let by_class: Vec<(String, u64)> =
            by_class.iter().enumerate().map(|(k, n)| (format!("{}xx", k + 1), *n)).collect();
        let mut t = format!(
            "{} requests, {} sessions assigned; responses {}",
            si(requests as f64, ""),
            si(sessions as f64, ""),
            classes(&by_class)
        );
        if let Some(c) = &v.connections {
            let _ = write!(t, "; {} connections open, {} WebSocket tunnels", c.open, c.tunnels);
            if let Some(tls) = &c.tls {
                let failed: u64 = tls.failures.iter().map(|(_, n)| n).sum();
                let _ = write!(t, "; TLS: {} handshakes, {failed} failed", tls.handshakes);
                for cert in &tls.certificates {
                    let _ = write!(t, "; {} expires in {} days", esc(&cert.names.join(", ")), cert.days_left);
                }
            }
        }
        t
    } else {
        format!("{} packets, {}, {} new flows", si(v.packets as f64, ""), bytes(v.bytes), si(v.new_flows as f64, ""))
    };
    let unit = if l7 { "req/s" } else { "pkt/s" };
    let _ = write!(
        h,
        "<h2>VIP {} {} <small>({})</small></h2><p>{totals}</p><p>now: {} {}</p>\
         <table><tr><th>backend</th><th>state</th><th>health</th><th>last check passed</th><th>weight</th>\
         <th>group</th><th>share</th><th>route</th><th>domain</th><th>sessions</th><th>requests</th>\
         <th>rate</th><th>trend</th><th>responses</th><th>errors</th><th>latency</th><th>packets</th>{}</tr>",
        esc(&format!("{}{}", v.address, v.name.as_deref().map(|n| format!(" [{n}]")).unwrap_or_default())),
        v.protocol,
        esc(&mode),
        rate_text(v.rate, l7),
        chart(&v.trend, s.sample_every_s, unit),
        if nonce.is_some() { "<th>change</th>" } else { "" }
    );
    for b in &v.backends {
        backend_row(s, v, b, nonce, h);
    }
    h.push_str("</table>");
}

fn backend_row(status: &Status, v: &VipStatus, b: &BackendStatus, nonce: Option<&str>, h: &mut String) {
    let l7 = v.kind.is_l7();
    let state = b.state.to_string();
    let group = if b.backup { format!("backup {}", b.distance) } else { b.distance.to_string() };
    let (share, packets) =
        if l7 { ("-".to_owned(), "-".to_owned()) } else { (format!("{:.1}%", b.share), si(b.packets as f64, "")) };
    let (sessions, requests, responses, errors, latency) = match &b.l7 {
        Some(l) => (
            si(l.sessions as f64, ""),
            si(l.requests as f64, ""),
            classes(&l.responses),
            format!("{}{}", l.errors, if l.retrying { " (retrying)" } else { "" }),
            format!("{:.1} ms", l.mean_latency_ms),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
    };
    let since = b.health_since_s.map(|s| format!(" <span class=\"since\">for {}</span>", ago(s))).unwrap_or_default();
    let passed = b.last_pass_s.map_or("-".to_owned(), |s| format!("{} ago", ago(s)));
    let unit = if l7 { "req/s" } else { "pkt/s" };
    let _ = write!(
        h,
        "<tr><td>{}</td><td class=\"{state}\">{state}</td><td class=\"{health}\">{health}{since}</td><td>{passed}</td>\
         <td>{}</td><td>{}</td><td>{share}</td><td>{}</td><td>{}</td><td>{sessions}</td><td>{requests}</td>\
         <td>{}</td><td>{}</td><td>{responses}</td><td>{errors}</td><td>{latency}</td><td>{packets}</td>{}</tr>",
        esc(&b.l7.as_ref().map_or(b.address.to_string(), |l| l.target.to_string())),
        b.weight,
        esc(&group),
        esc(b.route.as_deref().unwrap_or("")),
        esc(b.domain.as_deref().unwrap_or("")),
        rate_text(b.rate, l7),
        chart(&b.trend, status.sample_every_s, unit),
        nonce.map(|n| form(v, b, n)).unwrap_or_default(),
        health = b.health,
    );
}

/// A backend's row form: state, weight, route (L7), apply, and run the health check now.
fn form(v: &VipStatus, b: &BackendStatus, nonce: &str) -> String {
    let target = b.l7.as_ref().map_or(SocketAddr::new(b.address, v.address.port()), |l| l.target);
    let state = b.state.to_string();
    let options: String = ["active", "drain", "stopped"].iter().fold(String::new(), |mut o, s| {
        let _ = write!(o, "<option{}>{s}</option>", if *s == state { " selected" } else { "" });
        o
    });
    let route = if v.kind.is_l7() {
        format!(" <input name=\"route\" placeholder=\"route\" value=\"{}\">", esc(b.route.as_deref().unwrap_or("")))
    } else {
        String::new()
    };
    format!(
        "<td><form method=\"post\" action=\"/admin/backend\" data-backend=\"{target}\">\
         <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\"><input type=\"hidden\" name=\"vip\" value=\"{}\">\
         <input type=\"hidden\" name=\"proto\" value=\"{}\"><input type=\"hidden\" name=\"pool\" value=\"{}\">\
         <input type=\"hidden\" name=\"backend\" value=\"{target}\"><select name=\"state\">{options}</select> \
         <input name=\"weight\" value=\"{}\">{route} <button name=\"action\" value=\"set\">apply</button> \
         <button name=\"action\" value=\"check\">check now</button></form></td>",
        v.address,
        v.protocol,
        esc(v.name.as_deref().unwrap_or("")),
        b.weight,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_for_people() {
        assert_eq!(si(1234.0, "req/s"), "1.2 kreq/s");
        assert_eq!(si(12.0, "pkt/s"), "12 pkt/s");
        assert_eq!(si(3_400_000.0, "bit/s"), "3.4 Mbit/s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 * 1024 * 1024 + 1), "5.0 MiB");
        assert_eq!(
            (ago(42), ago(192), ago(7500), ago(90_000)),
            ("42s".into(), "3m12s".into(), "2h05m".into(), "1d01h".into())
        );
    }

    #[test]
    fn a_chart_scales_to_its_largest_point_and_says_so() {
        let svg = chart(&[0.0, 50.0, 100.0], 5, "req/s");
        assert!(svg.contains("points=\"0.0,23.0 60.0,12.0 120.0,1.0\""), "{svg}");
        assert!(svg.contains("<title>last 15s: up to 100 req/s</title>"), "{svg}");
        assert!(chart(&[1.0], 5, "req/s").contains("collecting"));
    }
}
