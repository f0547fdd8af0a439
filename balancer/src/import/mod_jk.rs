//! `mod_jk`: `workers.properties` (lb and ajp13 workers) and the mounts (`uriworkermap.properties`
//! lines `/path=worker`, `!/path=worker`, or httpd's `JkMount` / `JkUnMount` lines).
//!
//! `mod_jk` reads `#` to the end of a line as a comment, lets a later line override an earlier
//! one (except `worker.list`, which adds up), names a worker's attribute by the last dot
//! (`worker.tomcat-6.0.26-1.port`), and defaults a member's host to `localhost`, its port to
//! 8009, its route to its name, its `lbfactor` to 1 and `sticky_session` to true.

use std::{collections::BTreeMap, path::Path};

use super::{ImportError, Imported, Member, Pool, Source, Val, lines, source, string};

/// One worker's attributes, each with its line.
type Attrs = BTreeMap<String, (String, Source)>;

/// What the workers file says.
struct Workers {
    /// `worker.list`, in order, with where each name was listed.
    list: Vec<(String, Source)>,
    /// Each worker's attributes.
    workers: BTreeMap<String, Attrs>,
}

fn read_workers(path: &Path, imported: &mut Imported) -> Result<Workers, ImportError> {
    let (file, text) = lines(path)?;
    let mut w = Workers { list: Vec::new(), workers: BTreeMap::new() };
    for (n, raw) in text.iter().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = source(&file, n + 1, line);
        let Some((key, value)) = line.split_once('=') else {
            imported.note(Some(&at), "not `key = value`: left out");
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "worker.list" {
            w.list
                .extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| (s.to_owned(), at.clone())));
            continue;
        }
        let Some(rest) = key.strip_prefix("worker.") else {
            imported.note(Some(&at), "not a worker setting: left out");
            continue;
        };
        if rest == "maintain" {
            imported.note(
                Some(&at),
                "mod_jk's maintenance interval has no equivalent (health checks run on their own interval)",
            );
            continue;
        }
        let Some((name, attr)) = rest.rsplit_once('.') else {
            imported.note(Some(&at), "not `worker.NAME.ATTRIBUTE`: left out");
            continue;
        };
        w.workers.entry(name.to_owned()).or_default().insert(attr.to_owned(), (value.to_owned(), at));
    }
    Ok(w)
}

/// A mount: a path pattern for a worker, or its exclusion.
struct Mount {
    pattern: String,
    worker: String,
    unmount: bool,
    at: Source,
}

fn read_mounts(path: &Path, imported: &mut Imported) -> Result<Vec<Mount>, ImportError> {
    let (file, text) = lines(path)?;
    let mut mounts = Vec::new();
    for (n, raw) in text.iter().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = source(&file, n + 1, line);
        let words: Vec<&str> = line.split_whitespace().collect();
        let mount = match words.first().map(|w| w.to_ascii_lowercase()).as_deref() {
            Some(d @ ("jkmount" | "jkunmount")) if words.len() == 3 => {
                Mount { pattern: words[1].into(), worker: words[2].into(), unmount: d == "jkunmount", at }
            }
            Some("jkmount" | "jkunmount") => {
                imported.note(Some(&at), "a JkMount inside <Location> (one argument) names no path here: left out");
                continue;
            }
            _ => match line.split_once('=') {
                Some((p, w)) if p.trim().starts_with(['/', '!', '-']) => {
                    let p = p.trim();
                    if let Some(disabled) = p.strip_prefix('-') {
                        imported.note(Some(&at), format!("a disabled mapping (`-{disabled}`): left out"));
                        continue;
                    }
                    let (pattern, unmount) = p.strip_prefix('!').map_or((p, false), |q| (q, true));
                    Mount { pattern: pattern.into(), worker: w.trim().into(), unmount, at }
                }
                _ => {
                    imported.note(Some(&at), "not a mount (JkMount, JkUnMount or /path=worker): left out");
                    continue;
                }
            },
        };
        mounts.push(mount);
    }
    Ok(mounts)
}

/// A `mod_jk` mount pattern as ours: `/*` is everything (`None`), a pattern with `*` stays a
/// glob, and a plain path is exact.
fn pattern(p: &str) -> Option<String> {
    match p {
        "/*" | "*" => None,
        p if p.contains('*') => Some(p.to_owned()),
        p => Some(format!("={p}")),
    }
}

/// Reads `workers` (and `mounts`).
///
/// # Errors
/// A file cannot be read, or defines no worker to balance.
pub fn import(workers: &Path, mounts: Option<&Path>) -> Result<Imported, ImportError> {
    let mut imported = Imported {
        what: format!(
            "mod_jk {}{}",
            workers.display(),
            mounts.map(|m| format!(" --mounts {}", m.display())).unwrap_or_default()
        ),
        ..Imported::default()
    };
    let w = read_workers(workers, &mut imported)?;
    let mut mounts = match mounts {
        Some(m) => read_mounts(m, &mut imported)?,
        None => Vec::new(),
    };
    // `worker.NAME.mount` in the workers file mounts too.
    for (name, attrs) in &w.workers {
        if let Some((paths, at)) = attrs.get("mount") {
            for p in paths.split_whitespace() {
                let (pattern, unmount) = p.strip_prefix('!').map_or((p, false), |q| (q, true));
                mounts.push(Mount { pattern: pattern.into(), worker: name.clone(), unmount, at: at.clone() });
            }
        }
    }
    let kind = |name: &str| w.workers.get(name).and_then(|a| a.get("type")).map_or("ajp13", |(t, _)| t.as_str());
    // The workers that take requests: the listed ones, lb or ajp13.
    let mut served: Vec<(String, Source)> = Vec::new();
    for (name, at) in &w.list {
        match kind(name) {
            "lb" | "ajp13" => served.push((name.clone(), at.clone())),
            "status" => imported.note(
                Some(at),
                format!("`{name}` is a jk status worker: the status page (admin = true) does its work; left out"),
            ),
            other => imported
                .note(Some(at), format!("`{name}` is a worker of type {other}, which has no equivalent; left out")),
        }
    }
    if served.is_empty() {
        return Err(ImportError::Empty(format!("{}: worker.list names no lb or ajp13 worker", workers.display())));
    }
    // Workers nothing uses: said, not silently dropped.
    for (name, attrs) in &w.workers {
        let member = served.iter().any(|(s, _)| {
            w.workers
                .get(s)
                .and_then(|a| a.get("balance_workers").or_else(|| a.get("balanced_workers")))
                .is_some_and(|(list, _)| list.split(',').any(|m| m.trim() == name))
        });
        let listed = w.list.iter().any(|(l, _)| l == name);
        if !member && !listed {
            let at = attrs.values().map(|(_, at)| at).min_by_key(|at| at.line);
            imported
                .note(at, format!("worker `{name}` is neither listed nor a member of a listed lb worker; left out"));
        }
    }
    // Each served worker is a pool; a mount of `/*` (or none given, for the first) takes the rest.
    let mut catch_all: Option<String> = None;
    let mut pools: Vec<(String, Pool)> = Vec::new();
    for (name, at) in &served {
        let mut pool = build_pool(&w, name, at, &mut imported);
        for m in mounts.iter().filter(|m| &m.worker == name) {
            match (pattern(&m.pattern), m.unmount) {
                (None, false) if catch_all.is_none() => catch_all = Some(name.clone()),
                (None, false) => imported.note(
                    Some(&m.at),
                    format!("`/*` is mounted on `{}` already; left out", catch_all.as_deref().unwrap_or("")),
                ),
                (None, true) => imported.note(Some(&m.at), "unmounting everything leaves the worker nothing; left out"),
                (Some(p), false) => pool.paths.push(Val::from(string(&p), &m.at)),
                (Some(p), true) => pool.exclude.push(Val::from(string(&p), &m.at)),
            }
        }
        pools.push((name.clone(), pool));
    }
    for m in &mounts {
        if !served.iter().any(|(n, _)| *n == m.worker) && kind(&m.worker) != "status" {
            imported.note(Some(&m.at), format!("`{}` is not an lb or ajp13 worker of worker.list; left out", m.worker));
        } else if kind(&m.worker) == "status" {
            imported
                .note(Some(&m.at), "the jk status worker's mount: the status page is on the admin address; left out");
        }
    }
    match &catch_all {
        Some(name) => {
            // `/*` takes the rest: that pool has no paths of its own (they would only repeat it).
            pools.sort_by_key(|(n, _)| n != name);
            if !pools[0].1.paths.is_empty() {
                imported.note(None, format!("`{name}` is mounted on /* and on other paths: /* covers them"));
                pools[0].1.paths.clear();
            }
        }
        None if mounts.is_empty() => {
            if pools.len() > 1 {
                for (name, pool) in pools.drain(1..) {
                    let at = pool.name.as_ref().and_then(|n| n.from.clone());
                    imported.note(
                        at.as_ref(),
                        format!("`{name}`: without mounts (--mounts) the first worker takes every request; left out"),
                    );
                }
            }
        }
        None => {
            imported.note(None, "no worker is mounted on /*: paths no mount takes get 404 (Apache served them itself)");
            pools.retain(|(name, pool)| {
                let keep = !pool.paths.is_empty();
                if !keep {
                    let at = pool.name.as_ref().and_then(|n| n.from.clone());
                    imported.note(at.as_ref(), format!("`{name}` has no mount: nothing reaches it; left out"));
                }
                keep
            });
        }
    }
    imported.pools.extend(pools.into_iter().map(|(_, p)| p));
    for i in 0..imported.pools.len() {
        let sticky = match imported.pools[i].sticky.clone() {
            Some((true, at)) => Some(at),
            Some((false, _)) => None,
            // mod_jk's default: sticky sessions on.
            None => imported.pools[i].name.as_ref().and_then(|n| n.from.clone()),
        };
        super::stickiness(&mut imported, i, sticky.as_ref());
    }
    Ok(imported)
}

/// The pool of served worker `name` (an lb worker's members, or one ajp13 worker).
fn build_pool(w: &Workers, name: &str, listed: &Source, imported: &mut Imported) -> Pool {
    let empty = Attrs::new();
    let attrs = w.workers.get(name).unwrap_or(&empty);
    let defined = attrs.get("type").map_or(listed, |(_, at)| at);
    let mut pool = Pool { name: Some(Val::from(string(name), defined)), ..Pool::default() };
    let is_lb = attrs.get("type").is_some_and(|(t, _)| t == "lb");
    let members: Vec<String> = if is_lb {
        let list = attrs.get("balance_workers").or_else(|| attrs.get("balanced_workers"));
        list.map(|(v, _)| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    } else {
        vec![name.to_owned()]
    };
    if members.is_empty() {
        imported.note(Some(defined), format!("lb worker `{name}` has no balance_workers"));
    }
    pool.l7.set("backend_protocol", Val::from(string("ajp13"), defined));
    if is_lb {
        lb_settings(attrs, &mut pool, imported);
    }
    let secrets: Vec<Option<String>> = members
        .iter()
        .map(|m| w.workers.get(m).and_then(|a| a.get("secret")).or_else(|| attrs.get("secret")).map(|(s, _)| s.clone()))
        .collect();
    let shared = secrets.first().cloned().flatten().filter(|s| secrets.iter().all(|x| x.as_deref() == Some(s)));
    if let (Some(s), Some((_, at))) = (
        &shared,
        members.first().and_then(|m| w.workers.get(m)).and_then(|a| a.get("secret")).or_else(|| attrs.get("secret")),
    ) {
        pool.l7.set("ajp_secret", Val::from(string(s), at));
    }
    let route_of =
        |m: &str| w.workers.get(m).and_then(|a| a.get("route")).map_or_else(|| m.to_owned(), |(r, _)| r.clone());
    for m in &members {
        let a = w.workers.get(m).unwrap_or(&empty);
        pool.members.push(member(m, a, shared.is_none(), &route_of, imported));
        if a.contains_key("ping_mode") && pool.health.fields.is_empty() {
            let at = &a["ping_mode"].1;
            pool.health.set("kind", Val::from(string("ajp-cping"), at));
        }
    }
    pool
}

/// An lb worker's own settings.
fn lb_settings(attrs: &Attrs, pool: &mut Pool, imported: &mut Imported) {
    for (attr, (value, at)) in attrs {
        let v = value.as_str();
        let on = matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes");
        match attr.as_str() {
            "type" | "balance_workers" | "balanced_workers" | "secret" | "mount" => {}
            "sticky_session" => pool.sticky = Some((on, at.clone())),
            "sticky_session_force" => pool.l7.set("nofailover", Val::from(on.to_string(), at)),
            "method" => {
                let m = match v.chars().next().map(|c| c.to_ascii_uppercase()) {
                    Some('T') => Some("bytraffic"),
                    Some('B') => Some("bybusyness"),
                    Some('R') => Some("byrequests"),
                    _ => None,
                };
                match m {
                    Some(m) => pool.l7.set("lbmethod", Val::from(string(m), at)),
                    None => imported.note(Some(at), "this method has no equivalent; byrequests applies"),
                }
            }
            "retries" => match v.parse::<u32>() {
                Ok(n) if n > 0 => pool.l7.set("max_attempts", Val::from(n.to_string(), at)),
                _ => imported.note(Some(at), "not a number of attempts; left out"),
            },
            "session_cookie" | "session_path" => {
                let names = match pool.l7.get("session_cookies") {
                    Some(prev) => format!("{}, {}]", prev.trim_end_matches(']'), string(v)),
                    None => format!("[{}]", string(v)),
                };
                pool.l7.set("session_cookies", Val::from(names, at));
            }
            "recover_time" => match v.parse::<u64>() {
                Ok(n) => pool.l7.set("retry_s", Val::from(n.to_string(), at)),
                Err(_) => imported.note(Some(at), "not seconds; left out"),
            },
            _ => imported.note(Some(at), "no equivalent; left out"),
        }
    }
}

/// One ajp13 member.
fn member(
    name: &str,
    a: &Attrs,
    own_secret: bool,
    route_of: &dyn Fn(&str) -> String,
    imported: &mut Imported,
) -> Member {
    let mut m = Member::default();
    if let Some((h, at)) = a.get("host") {
        m.set("address", Val::from(string(h), at));
    } else {
        m.set("address", Val::chosen(string("localhost"), format!("{name} has no host: mod_jk's default")));
        imported.note(None, format!("worker `{name}` has no host: mod_jk's default, localhost, is used"));
    }
    match a.get("port") {
        Some((p, at)) => match p.parse::<u16>() {
            Ok(p) => m.set("port", Val::from(p.to_string(), at)),
            Err(_) => imported.note(Some(at), "not a port; left out"),
        },
        None => m.set("port", Val::chosen("8009", format!("{name} has no port: mod_jk's default"))),
    }
    match a.get("route") {
        Some((r, at)) => m.set("route", Val::from(string(r), at)),
        None => m.set("route", Val::chosen(string(name), "no route: mod_jk routes by the worker's name")),
    }
    for (attr, (value, at)) in a {
        let v = value.as_str();
        match attr.as_str() {
            "secret" if own_secret => m.set("secret", Val::from(string(v), at)),
            "host" | "port" | "route" | "type" | "ping_mode" | "mount" | "secret" => {}
            "lbfactor" => match v.parse::<u32>() {
                Ok(f) => m.set("weight", Val::from(f.to_string(), at)),
                Err(_) => imported.note(Some(at), "not a number; left out"),
            },
            "domain" => m.set("domain", Val::from(string(v), at)),
            "redirect" => m.set("redirect", Val::from(string(&route_of(v)), at)),
            "distance" => match v.parse::<u32>() {
                Ok(d) => m.set("distance", Val::from(d.to_string(), at)),
                Err(_) => imported.note(Some(at), "not a number; left out"),
            },
            "activation" => match v.chars().next().map(|c| c.to_ascii_uppercase()) {
                Some('D') => m.set("state", Val::from(string("drain"), at)),
                Some('S') => m.set("state", Val::from(string("stopped"), at)),
                Some('A') => m.set("state", Val::from(string("active"), at)),
                _ => imported.note(Some(at), "not A, D or S; left out"),
            },
            _ => imported.note(Some(at), "no equivalent; left out"),
        }
    }
    if m.get("weight").is_none() {
        m.set("weight", Val::chosen("1", "no lbfactor: mod_jk's default"));
    }
    m
}
