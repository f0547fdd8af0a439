//! nginx: `upstream` blocks (`server … weight= max_fails= fail_timeout= backup down
//! max_conns=`, `ip_hash`, `hash … consistent`, `least_conn`) and the `server` / `location`
//! blocks whose `proxy_pass` uses them.

use std::{collections::BTreeMap, path::Path};

use super::{ImportError, Imported, Member, Pool, Source, Val, source, string, url};

/// One directive and its block.
#[derive(Debug, Clone)]
struct Directive {
    name: String,
    args: Vec<String>,
    at: Source,
    block: Option<Vec<Directive>>,
}

/// Tokens with their line: words, `;`, `{`, `}`.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<(String, usize)>, line| {
        if !cur.is_empty() {
            out.push((std::mem::take(cur), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut cur, &mut out, line);
                line += 1;
            }
            '#' if cur.is_empty() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    if q == '\n' {
                        line += 1;
                    }
                    cur.push(q);
                }
                out.push((std::mem::take(&mut cur), line));
            }
            ';' | '{' | '}' => {
                flush(&mut cur, &mut out, line);
                out.push((c.to_string(), line));
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out, line),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out, line);
    out
}

/// The directives of `tokens` from `*i` to the closing `}` (or the end).
fn parse(tokens: &[(String, usize)], i: &mut usize, file: &str, lines: &[&str]) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    while *i < tokens.len() {
        let (t, line) = &tokens[*i];
        *i += 1;
        let at = |l: usize| source(file, l, lines.get(l - 1).copied().unwrap_or(""));
        match t.as_str() {
            ";" | "{" => {
                if words.is_empty() {
                    continue;
                }
                let block = (t == "{").then(|| parse(tokens, i, file, lines));
                out.push(Directive { name: words[0].clone(), args: words[1..].to_vec(), at: at(first_line), block });
                words.clear();
            }
            "}" => return out,
            w => {
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(w.to_owned());
            }
        }
    }
    out
}

/// A pool being built from an upstream for one `server` block.
struct Building {
    upstream: String,
    server: usize,
    pool: Pool,
}

/// Reads `path`.
///
/// # Errors
/// It cannot be read, or no `proxy_pass` uses an upstream or a URL.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read { file: file.clone(), source })?;
    let lines: Vec<&str> = text.lines().collect();
    let tokens = tokens(&text);
    let mut i = 0;
    let top = parse(&tokens, &mut i, &file, &lines);
    let mut imported = Imported { what: format!("nginx {file}"), ..Imported::default() };
    let mut upstreams: BTreeMap<String, &Directive> = BTreeMap::new();
    let mut servers: Vec<&Directive> = Vec::new();
    let mut unrelated: BTreeMap<String, (usize, Source)> = BTreeMap::new();
    let mut stack: Vec<&Directive> = top.iter().collect();
    while let Some(d) = stack.pop() {
        match (d.name.as_str(), &d.block) {
            ("http", Some(b)) => stack.extend(b.iter()),
            ("upstream", Some(_)) if d.args.len() == 1 => {
                upstreams.insert(d.args[0].clone(), d);
            }
            ("server", Some(_)) => servers.push(d),
            ("include", _) => {
                imported.note(Some(&d.at), "included files are not read: import them too (or paste them in)");
            }
            _ => {
                let e = unrelated.entry(d.name.clone()).or_insert((0, d.at.clone()));
                e.0 += 1;
            }
        }
    }
    servers.sort_by_key(|s| s.at.line);
    let mut pools: Vec<Building> = Vec::new();
    for (si, server) in servers.iter().enumerate() {
        let body = server.block.as_deref().unwrap_or(&[]);
        let mut hosts = Vec::new();
        for d in body {
            match d.name.as_str() {
                "listen" => {
                    if let Some(p) =
                        d.args.first().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse::<u16>().ok())
                        && imported.vip.is_none()
                    {
                        imported.vip = Some(Val::from(string(&format!("192.0.2.1:{p}")), &d.at));
                        imported.note(
                            Some(&d.at),
                            "the VIP's address is not in the file: 192.0.2.1 stands for it (or give --vip)",
                        );
                    }
                }
                // The first server block is nginx's default for names no other has.
                "server_name" if si == 0 => {}
                "server_name" => hosts
                    .extend(d.args.iter().filter(|n| *n != "_" && !n.is_empty()).map(|n| Val::from(string(n), &d.at))),
                "location" => location(&mut imported, &upstreams, (si, &hosts), d, &mut pools),
                _ => {
                    let e = unrelated.entry(d.name.clone()).or_insert((0, d.at.clone()));
                    e.0 += 1;
                }
            }
        }
    }
    if !unrelated.is_empty() {
        let list: Vec<String> =
            unrelated.iter().map(|(d, (n, at))| format!("{d} ×{n} (first at {})", at.at())).collect();
        imported.note(
            None,
            format!("web server directives with no meaning for the balancer, left out: {}", list.join(", ")),
        );
    }
    if pools.is_empty() {
        return Err(ImportError::Empty(format!("{file}: no location proxies to an upstream or a URL")));
    }
    // Names: the upstream's, made unique where two server blocks use one upstream.
    let mut seen = BTreeMap::<String, usize>::new();
    for b in &mut pools {
        let n = seen.entry(b.upstream.clone()).or_default();
        *n += 1;
        let name = if *n == 1 { b.upstream.clone() } else { format!("{}-{}", b.upstream, b.server + 1) };
        if let Some(v) = &mut b.pool.name {
            v.toml = string(&name);
        }
    }
    pools.sort_by_key(|b| !(b.pool.paths.is_empty() && b.pool.hosts.is_empty()));
    if pools.first().is_some_and(|b| !(b.pool.paths.is_empty() && b.pool.hosts.is_empty())) {
        imported.note(None, "no `location /` proxies: paths none takes get 404 (nginx served them itself)");
    }
    imported.pools = pools.into_iter().map(|b| b.pool).collect();
    Ok(imported)
}

/// A `location` block: its `proxy_pass` adds its path to the pool of that upstream.
fn location(
    imported: &mut Imported,
    upstreams: &BTreeMap<String, &Directive>,
    (server, hosts): (usize, &[Val]),
    d: &Directive,
    pools: &mut Vec<Building>,
) {
    let (modifier, path) = match &d.args[..] {
        [p] => (None, p.clone()),
        [m, p] => (Some(m.as_str()), p.clone()),
        _ => {
            imported.note(Some(&d.at), "a location without a path; left out");
            return;
        }
    };
    let body = d.block.as_deref().unwrap_or(&[]);
    let Some(pass) = body.iter().find(|x| x.name == "proxy_pass") else {
        imported.note(
            Some(&d.at),
            "served by nginx itself: no equivalent; the proxy answers these paths 404, or another pool takes them",
        );
        return;
    };
    let pattern = match modifier {
        Some("=") => format!("={path}"),
        None | Some("^~") => path.clone(),
        Some(_) => {
            imported.note(
                Some(&d.at),
                "a regular-expression location has no equivalent (prefix, exact and * globs only); left out",
            );
            return;
        }
    };
    let Some(target) = pass.args.first() else { return };
    let Some((scheme, host, port, uri)) = url(target) else {
        imported.note(Some(&pass.at), "not a URL; left out");
        return;
    };
    if scheme != "http" {
        imported.note(Some(&pass.at), format!("{scheme}:// backends are not supported; left out"));
        return;
    }
    let key = if port.is_none() && upstreams.contains_key(&host) {
        host.clone()
    } else {
        format!("{host}:{}", port.unwrap_or(80))
    };
    let at = if let Some(at) = pools.iter().position(|b| b.upstream == key && b.server == server) {
        at
    } else {
        let mut pool = Pool { name: Some(Val::from(string(&key), &pass.at)), hosts: hosts.to_vec(), ..Pool::default() };
        if let Some(u) = upstreams.get(&key) {
            upstream(imported, &mut pool, u);
        } else {
            let mut m = Member::default();
            m.set("address", Val::from(string(&host), &pass.at));
            m.set("port", Val::from(port.unwrap_or(80).to_string(), &pass.at));
            pool.members.push(m);
            pool.l7.set("sticky", Val::chosen(string("hash"), "one server: any stickiness will do"));
        }
        pool.l7.set("preserve_host", Val::chosen("false", "nginx's default: proxy_set_header Host $proxy_host"));
        pools.push(Building { upstream: key, server, pool });
        pools.len() - 1
    };
    let pool = &mut pools[at].pool;
    if path != "/" || modifier == Some("=") {
        if modifier.is_none() && !path.ends_with('/') {
            imported.note(
                Some(&d.at),
                format!("nginx's `location {path}` also takes {path}x…; here {path} and below it only"),
            );
        }
        pool.paths.push(Val::from(string(&pattern), &d.at));
    }
    if !uri.is_empty() && uri != path {
        if pool.rewrite.is_some() || pool.paths.len() > 1 {
            imported.note(Some(&pass.at), "only one rewritten prefix per pool; left as it is");
        } else {
            pool.rewrite = Some(Val::from(string(&uri), &pass.at));
        }
    }
    for x in body.iter().filter(|x| x.name != "proxy_pass") {
        match (x.name.as_str(), x.args.as_slice()) {
            ("proxy_set_header", [h, v]) if h.eq_ignore_ascii_case("host") && (v == "$host" || v == "$http_host") => {
                pool.l7.set("preserve_host", Val::from("true", &x.at));
            }
            ("proxy_connect_timeout", [t]) => seconds(imported, pool, "connect_timeout_ms", t, &x.at),
            ("proxy_read_timeout", [t]) => seconds(imported, pool, "response_timeout_ms", t, &x.at),
            ("proxy_next_upstream_tries", [n]) => match n.parse::<u32>() {
                Ok(n) if n > 0 => pool.l7.set("max_attempts", Val::from(n.to_string(), &x.at)),
                _ => imported.note(Some(&x.at), "0 (no limit) or not a number: max_attempts stays 2"),
            },
            ("proxy_set_header", [h, _])
                if h.eq_ignore_ascii_case("x-forwarded-for") || h.eq_ignore_ascii_case("x-real-ip") =>
            {
                imported.note(Some(&x.at), "X-Forwarded-For is always set (the client's address appended)");
            }
            _ => imported.note(Some(&x.at), "no equivalent; left out"),
        }
    }
}

/// `30s`, `1m` or `30` (seconds) as ms in `key`.
fn seconds(imported: &mut Imported, pool: &mut Pool, key: &'static str, t: &str, at: &Source) {
    let (n, unit) = t.find(|c: char| !c.is_ascii_digit()).map_or((t, ""), |i| t.split_at(i));
    let ms = n.parse::<u64>().ok().and_then(|n| match unit {
        "" | "s" => Some(n * 1000),
        "ms" => Some(n),
        "m" => Some(n * 60_000),
        _ => None,
    });
    match ms {
        Some(ms) if ms > 0 => pool.l7.set(key, Val::from(ms.to_string(), at)),
        _ => imported.note(Some(at), "not a time this importer reads; left out"),
    }
}

/// An `upstream` block's members and balancing.
#[expect(clippy::too_many_lines, reason = "one pass over an upstream block, each arm a directive")]
fn upstream(imported: &mut Imported, pool: &mut Pool, up: &Directive) {
    let mut sticky: Option<Val> = None;
    let mut hash_on: Option<Val> = None;
    let mut retry: Option<(u64, Source)> = None;
    for d in up.block.as_deref().unwrap_or(&[]) {
        match d.name.as_str() {
            "server" => {
                let Some(addr) = d.args.first() else { continue };
                if addr.starts_with("unix:") {
                    imported.note(Some(&d.at), "a Unix socket member is not supported; left out");
                    continue;
                }
                let (host, port) = match addr.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                        (h.trim_matches(['[', ']']).to_owned(), p.parse::<u16>().ok())
                    }
                    _ => (addr.trim_matches(['[', ']']).to_owned(), None),
                };
                let mut m = Member::default();
                m.set("address", Val::from(string(&host), &d.at));
                m.set(
                    "port",
                    port.map_or_else(|| Val::chosen("80", "nginx's default port"), |p| Val::from(p.to_string(), &d.at)),
                );
                for p in &d.args[1..] {
                    let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
                    match k {
                        "weight" => match v.parse::<u32>() {
                            Ok(w) => m.set("weight", Val::from(w.to_string(), &d.at)),
                            Err(_) => imported.note(Some(&d.at), "weight is not a number; left out"),
                        },
                        "backup" => m.set("backup", Val::from("true", &d.at)),
                        "down" => m.set("state", Val::from(string("stopped"), &d.at)),
                        "max_conns" => match v.parse::<u32>() {
                            Ok(n) if n > 0 => m.set("max", Val::from(n.to_string(), &d.at)),
                            _ => {}
                        },
                        "fail_timeout" => {
                            let s = v.trim_end_matches('s').parse::<u64>().unwrap_or(10);
                            if retry.as_ref().is_some_and(|(r, _)| *r != s) {
                                imported.note(
                                    Some(&d.at),
                                    "members have different fail_timeout: the pool's retry_s is the longest",
                                );
                            }
                            if retry.as_ref().is_none_or(|(r, _)| s > *r) {
                                retry = Some((s, d.at.clone()));
                            }
                        }
                        "max_fails" if v == "1" => {}
                        "max_fails" if v == "0" => imported.note(
                            Some(&d.at),
                            "max_fails=0 never leaves a member out; here a failed connection does, for retry_s",
                        ),
                        "max_fails" => imported.note(
                            Some(&d.at),
                            format!("max_fails={v}: here one failed connection leaves a member out (for retry_s)"),
                        ),
                        _ => imported.note(Some(&d.at), format!("`{k}` has no equivalent; left out")),
                    }
                }
                if m.get("weight").is_none() {
                    m.set("weight", Val::chosen("1", "no weight: nginx's default"));
                }
                pool.members.push(m);
            }
            "ip_hash" => {
                sticky = Some(Val::from(string("hash"), &d.at));
                hash_on = Some(Val::from(string("client"), &d.at));
            }
            "hash" => {
                let key = d.args.first().map_or("", String::as_str);
                let on = if key == "$remote_addr" || key == "$binary_remote_addr" {
                    Some("client".to_owned())
                } else if let Some(c) = key.strip_prefix("$cookie_") {
                    Some(format!("cookie:{c}"))
                } else {
                    key.strip_prefix("$http_").map(|h| format!("header:{}", h.replace('_', "-")))
                };
                sticky = Some(Val::from(string("hash"), &d.at));
                if let Some(on) = on {
                    hash_on = Some(Val::from(string(&on), &d.at));
                } else {
                    imported.note(
                        Some(&d.at),
                        format!("hashing on {key} has no equivalent: approximated by the client's address"),
                    );
                    hash_on = Some(Val::chosen(string("client"), "approximates the source's hash key"));
                }
                if !d.args.iter().any(|a| a == "consistent") {
                    imported.note(
                        Some(&d.at),
                        "a hash without `consistent`: ours is consistent (fewer sessions move when members change)",
                    );
                }
            }
            "least_conn" => {
                pool.l7.set("lbmethod", Val::from(string("bybusyness"), &d.at));
                imported.note(Some(&d.at), "least_conn: here it places new sessions only (bybusyness)");
            }
            "keepalive" => imported.note(
                Some(&d.at),
                "connections to members are always kept alive (up to 1024 idle per member and worker)",
            ),
            _ => imported.note(Some(&d.at), "no equivalent; left out"),
        }
    }
    if let Some(s) = sticky {
        pool.l7.set("sticky", s);
        if let Some(h) = hash_on {
            pool.l7.set("hash_on", h);
        }
    } else {
        pool.l7.set("sticky", Val::chosen(string("hash"), "the source balanced each request"));
        imported.note(
            Some(&up.at),
            "round robin without stickiness: approximated by a hash of the client's address (every L7 VIP is sticky)",
        );
    }
    if let Some((s, at)) = retry {
        pool.l7.set("retry_s", Val::from(s.to_string(), &at));
    }
}
