//! Apache httpd with `mod_proxy_balancer`: `<Proxy balancer://NAME>` with its
//! `BalancerMember`s and `ProxySet`, the `ProxyPass` lines that use it (and `ProxyPass PATH !`
//! exclusions), `ProxyPassReverse`, `ProxyPreserveHost`, `<VirtualHost>` with `ServerName`, and
//! `<Location>` blocks holding a one-argument `ProxyPass`.

use std::{collections::BTreeMap, path::Path};

use super::{ImportError, Imported, Member, Pool, Source, Val, lines, source, string, url};

/// The words of a directive line, quotes removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `key=value` parameters after a directive's arguments.
fn params(ws: &[String]) -> Vec<(String, String)> {
    ws.iter().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect()
}

/// A `BalancerMember`: its URL, its `key=value` parameters, its line.
type MemberLine = (String, Vec<(String, String)>, Source);
/// A `ProxySet` parameter and its line.
type SetLine = (String, String, Source);

#[derive(Default)]
struct Balancer {
    at: Option<Source>,
    members: Vec<MemberLine>,
    set: Vec<SetLine>,
}

struct Pass {
    path: String,
    target: String,
    params: Vec<(String, String)>,
    at: Source,
    hosts: Vec<(String, Source)>,
}

/// Reads `path`.
///
/// # Errors
/// It cannot be read, or has no `ProxyPass` to import.
#[expect(clippy::too_many_lines, reason = "one pass over the directives, each arm a directive")]
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let mut imported = Imported { what: format!("httpd {}", path.display()), ..Imported::default() };
    let (file, text) = lines(path)?;
    let mut balancers: BTreeMap<String, Balancer> = BTreeMap::new();
    let mut passes: Vec<Pass> = Vec::new();
    let mut reverse: Vec<(String, Source)> = Vec::new();
    let mut preserve: Option<(bool, Source)> = None;
    let mut port: Option<(u16, Source)> = None;
    // Open sections: (name, argument); `ServerName`s of the open VirtualHost.
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut vhost_names: Vec<(String, Source)> = Vec::new();
    // The first VirtualHost of an address is httpd's default for every name: its ServerName
    // restricts nothing.
    let mut vhosts = 0usize;
    let mut unrelated: BTreeMap<String, (usize, Source)> = BTreeMap::new();
    let mut joined = String::new();
    let mut start = 0;
    for (n, raw) in text.iter().enumerate() {
        if joined.is_empty() {
            start = n + 1;
        }
        if let Some(cont) = raw.strip_suffix('\\') {
            joined.push_str(cont);
            joined.push(' ');
            continue;
        }
        joined.push_str(raw);
        let line = std::mem::take(&mut joined);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = source(&file, start, line);
        if let Some(close) = line.strip_prefix("</") {
            let name = close.trim_end_matches('>').trim().to_ascii_lowercase();
            if sections.last().is_some_and(|(s, _)| *s == name) {
                sections.pop();
                if name == "virtualhost" {
                    vhost_names.clear();
                }
            }
            continue;
        }
        if let Some(open) = line.strip_prefix('<') {
            let ws = words(open.trim_end_matches('>'));
            let name = ws.first().map(|w| w.to_ascii_lowercase()).unwrap_or_default();
            let arg = ws.get(1).cloned().unwrap_or_default();
            match name.as_str() {
                "proxy" if arg.starts_with("balancer://") => {
                    let b = balancers.entry(balancer_name(&arg)).or_default();
                    b.at.get_or_insert(at.clone());
                }
                "virtualhost" => {
                    vhosts += 1;
                    if let Some(p) = arg.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                        port.get_or_insert((p, at.clone()));
                    }
                }
                "location" | "ifmodule" | "ifdefine" | "proxy" => {}
                _ => imported.note(Some(&at), "a section with no equivalent; what it holds is read as if outside it"),
            }
            sections.push((name, arg));
            continue;
        }
        let ws = words(line);
        let Some(directive) = ws.first().map(|d| d.to_ascii_lowercase()) else { continue };
        let in_balancer = sections
            .iter()
            .rev()
            .find(|(s, a)| s == "proxy" && a.starts_with("balancer://"))
            .map(|(_, a)| balancer_name(a));
        let location = sections.iter().rev().find(|(s, _)| s == "location").map(|(_, a)| a.clone());
        match directive.as_str() {
            "balancermember" => {
                let (name, rest) = match (&in_balancer, ws.get(1)) {
                    (Some(b), _) => (b.clone(), &ws[1..]),
                    (None, Some(b)) if b.starts_with("balancer://") => (balancer_name(b), &ws[2..]),
                    _ => {
                        imported.note(
                            Some(&at),
                            "a BalancerMember outside <Proxy balancer://…> names no balancer; left out",
                        );
                        continue;
                    }
                };
                let Some(u) = rest.first() else { continue };
                let b = balancers.entry(name).or_default();
                b.at.get_or_insert(at.clone());
                b.members.push((u.clone(), params(&rest[1..]), at));
            }
            "proxyset" => {
                let (name, rest) = match (&in_balancer, ws.get(1)) {
                    (Some(b), _) => (b.clone(), &ws[1..]),
                    (None, Some(b)) if b.starts_with("balancer://") => (balancer_name(b), &ws[2..]),
                    _ => {
                        imported.note(Some(&at), "a ProxySet for no balancer; left out");
                        continue;
                    }
                };
                let b = balancers.entry(name).or_default();
                b.set.extend(params(rest).into_iter().map(|(k, v)| (k, v, at.clone())));
            }
            "proxypass" => {
                let (path, target, rest) = match (&location, ws.len()) {
                    (Some(loc), 2..) if !ws[1].starts_with('/') || ws.len() == 2 => {
                        (loc.clone(), ws[1].clone(), &ws[2..])
                    }
                    (_, 3..) => (ws[1].clone(), ws[2].clone(), &ws[3..]),
                    _ => {
                        imported.note(Some(&at), "ProxyPass without a path and a target; left out");
                        continue;
                    }
                };
                passes.push(Pass { path, target, params: params(rest), at, hosts: vhost_names.clone() });
            }
            "proxypassreverse" | "proxypassreversecookiepath" => {
                reverse.push((ws.get(1).cloned().unwrap_or_default(), at));
            }
            "proxypreservehost" => preserve = Some((ws.get(1).is_some_and(|v| v.eq_ignore_ascii_case("on")), at)),
            "servername" | "serveralias" if sections.iter().any(|(s, _)| s == "virtualhost") => {
                if vhosts > 1 {
                    vhost_names.extend(ws[1..].iter().map(|n| (n.clone(), at.clone())));
                }
            }
            "listen" => {
                if let Some(p) = ws.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()) {
                    port.get_or_insert((p, at));
                }
            }
            "sethandler" if ws.get(1).is_some_and(|h| h.eq_ignore_ascii_case("balancer-manager")) => {
                imported.note(
                    Some(&at),
                    "balancer-manager: the status page does its work (admin = true, on the admin address); left out",
                );
            }
            "proxyrequests" if ws.get(1).is_some_and(|v| v.eq_ignore_ascii_case("off")) => {}
            d if d.starts_with("proxy") || d.starts_with("balancer") => {
                imported.note(Some(&at), "no equivalent; left out");
            }
            _ => {
                let e = unrelated.entry(ws[0].clone()).or_insert((0, at));
                e.0 += 1;
            }
        }
    }
    if !unrelated.is_empty() {
        let list: Vec<String> =
            unrelated.iter().map(|(d, (count, at))| format!("{d} ×{count} (first at {})", at.at())).collect();
        imported.note(
            None,
            format!("web server directives with no meaning for the balancer, left out: {}", list.join(", ")),
        );
    }
    if passes.iter().all(|p| p.target == "!") {
        return Err(ImportError::Empty(format!("{}: no ProxyPass to a backend", path.display())));
    }
    if let Some((p, at)) = &port {
        imported.vip = Some(Val::from(string(&format!("192.0.2.1:{p}")), at));
        imported.note(Some(at), "the VIP's address is not in the file: 192.0.2.1 stands for it (or give --vip)");
    }
    build(&mut imported, &balancers, &passes, preserve.as_ref());
    for (p, at) in &reverse {
        if !passes.iter().any(|x| x.path == *p) {
            imported.note(Some(at), "no ProxyPass of this path; left out (Location and cookie paths are mapped back for each rewritten path)");
        }
    }
    Ok(imported)
}

/// `balancer://NAME/…` → `NAME`.
fn balancer_name(u: &str) -> String {
    u.trim_start_matches("balancer://").split('/').next().unwrap_or("").to_owned()
}

/// The pools of the `ProxyPass` lines, in order, the one for `/` first.
fn build(
    imported: &mut Imported,
    balancers: &BTreeMap<String, Balancer>,
    passes: &[Pass],
    preserve: Option<&(bool, Source)>,
) {
    let mut pools: Vec<(String, Pool)> = Vec::new();
    for pass in passes.iter().filter(|p| p.target != "!") {
        let (key, members, set): (String, Vec<MemberLine>, Vec<SetLine>) = if pass.target.starts_with("balancer://") {
            let name = balancer_name(&pass.target);
            let Some(b) = balancers.get(&name) else {
                imported.note(Some(&pass.at), format!("no <Proxy balancer://{name}> defines this balancer; left out"));
                continue;
            };
            (name, b.members.clone(), b.set.clone())
        } else {
            let Some((_, host, _, _)) = url(&pass.target) else {
                imported.note(Some(&pass.at), "not a URL this balancer can forward to; left out");
                continue;
            };
            (host, vec![(pass.target.clone(), Vec::new(), pass.at.clone())], Vec::new())
        };
        let target_path = url(&pass.target).map(|(_, _, _, p)| p).unwrap_or_default();
        let i = if let Some(i) = pools.iter().position(|(k, _)| *k == key) {
            i
        } else {
            let mut pool = Pool { name: Some(Val::from(string(&key), &pass.at)), ..Pool::default() };
            fill_members(imported, &mut pool, &members);
            for (k, v, at) in &set {
                setting(imported, &mut pool, k, v, at);
            }
            match preserve {
                Some((on, at)) => pool.l7.set("preserve_host", Val::from(on.to_string(), at)),
                None => {
                    pool.l7.set("preserve_host", Val::chosen("false", "httpd's default: ProxyPreserveHost Off"));
                }
            }
            pools.push((key.clone(), pool));
            pools.len() - 1
        };
        let pool = &mut pools[i].1;
        for (k, v) in &pass.params {
            setting(imported, pool, k, v, &pass.at);
        }
        for (h, at) in &pass.hosts {
            if !pool.hosts.iter().any(|x| x.toml == string(h)) {
                pool.hosts.push(Val::from(string(h), at));
            }
        }
        if pass.path != "/" {
            pool.paths.push(Val::from(string(&pass.path), &pass.at));
        }
        // Where the member's path and the target's meet the request's rest.
        let member_path = members.first().and_then(|(u, _, _)| url(u)).map(|(_, _, _, p)| p).unwrap_or_default();
        let backend = format!("{}{}", member_path.trim_end_matches('/'), target_path);
        let backend = if backend.is_empty() { "/".to_owned() } else { backend };
        let same = backend.trim_end_matches('/') == pass.path.trim_end_matches('/');
        if !same {
            if pool.rewrite.is_some() || pool.paths.len() > 1 || pass.path == "/" {
                imported.note(
                    Some(&pass.at),
                    format!(
                        "the backend path {backend} differs from {}: only one rewritten prefix per pool; left as it is",
                        pass.path
                    ),
                );
            } else {
                pool.rewrite = Some(Val::from(string(&backend), &pass.at));
            }
        }
    }
    // `ProxyPass PATH !`: excluded from every pool that would take it.
    for ex in passes.iter().filter(|p| p.target == "!") {
        let pattern = crate::l7::router::PathPattern::parse(&ex.path);
        for (_, pool) in &mut pools {
            let takes = pool.paths.is_empty()
                || pool.paths.iter().any(|p| {
                    let text = p.toml.trim_matches('"');
                    crate::l7::router::PathPattern::parse(text).is_ok_and(|pp| pp.matches(&ex.path))
                });
            if takes && pattern.is_ok() {
                pool.exclude.push(Val::from(string(&ex.path), &ex.at));
            }
        }
    }
    pools.sort_by_key(|(_, p)| !p.paths.is_empty());
    if pools.first().is_some_and(|(_, p)| !p.paths.is_empty()) {
        imported.note(None, "no ProxyPass of /: paths no ProxyPass takes get 404 (httpd served them itself)");
    }
    for (_, pool) in pools {
        imported.pools.push(pool);
    }
    for i in 0..imported.pools.len() {
        let sticky = imported.pools[i].sticky.clone().map(|(_, at)| at);
        super::stickiness(imported, i, sticky.as_ref());
    }
}

/// A `ProxyPass` / `ProxySet` parameter of a pool.
fn setting(imported: &mut Imported, pool: &mut Pool, key: &str, value: &str, at: &Source) {
    let on = value.eq_ignore_ascii_case("on");
    match key {
        "stickysession" => {
            let names: Vec<String> = value.split('|').map(string).collect();
            pool.l7.set("session_cookies", Val::from(format!("[{}]", names.join(", ")), at));
            pool.sticky = Some((true, at.clone()));
        }
        "nofailover" => pool.l7.set("nofailover", Val::from(on.to_string(), at)),
        "lbmethod" => match value {
            "byrequests" | "bytraffic" | "bybusyness" => pool.l7.set("lbmethod", Val::from(string(value), at)),
            _ => imported.note(Some(at), "this lbmethod has no equivalent; byrequests applies"),
        },
        "maxattempts" => match value.parse::<u32>() {
            // httpd counts the attempts after the first.
            Ok(n) => pool.l7.set("max_attempts", Val::from((n + 1).to_string(), at)),
            Err(_) => imported.note(Some(at), "not a number; left out"),
        },
        "timeout" => match value.parse::<u64>() {
            Ok(s) if s > 0 => pool.l7.set("response_timeout_ms", Val::from((s * 1000).to_string(), at)),
            _ => imported.note(Some(at), "not seconds; left out"),
        },
        _ => imported.note(Some(at), format!("`{key}` has no equivalent; left out")),
    }
}

/// The `BalancerMember`s of a pool.
fn fill_members(imported: &mut Imported, pool: &mut Pool, members: &[MemberLine]) {
    let mut protocols = Vec::new();
    for (u, ps, at) in members {
        let Some((scheme, host, port, _)) = url(u) else {
            imported.note(Some(at), "not a member URL; left out");
            continue;
        };
        let protocol = match scheme.as_str() {
            "ajp" => "ajp13",
            "http" | "ws" => "http",
            _ => {
                imported.note(Some(at), format!("{scheme}:// members are not supported (HTTP and AJP only); left out"));
                continue;
            }
        };
        protocols.push(protocol);
        let mut m = Member::default();
        m.set("address", Val::from(string(&host), at));
        let default_port = if protocol == "ajp13" { 8009 } else { 80 };
        m.set(
            "port",
            port.map_or_else(
                || Val::chosen(default_port.to_string(), "the scheme's default port"),
                |p| Val::from(p.to_string(), at),
            ),
        );
        if protocol == "ajp13" {
            m.set("protocol", Val::from(string("ajp13"), at));
        }
        for (k, v) in ps {
            match k.as_str() {
                "loadfactor" => match v.parse::<u32>() {
                    Ok(f) => m.set("weight", Val::from(f.to_string(), at)),
                    Err(_) => imported.note(Some(at), "loadfactor is not a number; left out"),
                },
                "route" => m.set("route", Val::from(string(v), at)),
                "redirect" => m.set("redirect", Val::from(string(v), at)),
                "max" => match v.parse::<u32>() {
                    Ok(n) => m.set("max", Val::from(n.to_string(), at)),
                    Err(_) => imported.note(Some(at), "max is not a number; left out"),
                },
                "secret" => m.set("secret", Val::from(string(v), at)),
                "status" => {
                    for flag in v.trim_start_matches(['+', '-']).chars() {
                        match flag.to_ascii_uppercase() {
                            'H' => m.set("backup", Val::from("true", at)),
                            'D' | 'S' => m.set("state", Val::from(string("stopped"), at)),
                            'N' => m.set("state", Val::from(string("drain"), at)),
                            f => imported.note(Some(at), format!("status flag {f} has no equivalent; left out")),
                        }
                    }
                }
                _ => imported.note(Some(at), format!("`{k}` has no equivalent; left out")),
            }
        }
        if m.get("weight").is_none() {
            m.set("weight", Val::chosen("1", "no loadfactor: httpd's default"));
        }
        pool.members.push(m);
    }
    // One protocol for the pool when all agree (the member lines say it anyway).
    if !protocols.is_empty() && protocols.iter().all(|p| *p == "ajp13") {
        for m in &mut pool.members {
            m.fields.retain(|(k, _)| *k != "protocol");
        }
        if let Some(at) = members.first().map(|(_, _, at)| at) {
            pool.l7.set("backend_protocol", Val::from(string("ajp13"), at));
        }
    }
}
