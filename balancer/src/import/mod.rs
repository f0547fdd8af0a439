//! `balancer import`: a `mod_jk` (`workers.properties` and its mounts), Apache httpd
//! (`mod_proxy_balancer`) or nginx configuration turned into ours, as annotated TOML.
//!
//! Each reader fills one model (`Imported`): VIP entries (pools) with their match, L7 settings,
//! health check and backends, every value with the source line it came from; and notes for
//! every directive that has no equivalent or was only approximated. The writer prints the model
//! with each value's source in a comment, so an operator can check every line; nothing is
//! dropped without a note.

pub mod httpd;
pub mod mod_jk;
pub mod nginx;

use std::{fmt::Write as _, path::Path};

/// Why a source cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// It cannot be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds nothing to import.
    #[error("{0}")]
    Empty(String),
}

/// Where a value came from: a file, a line, and what the line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file's name as given.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// The directive, trimmed (shortened when long).
    pub says: String,
}

impl Source {
    /// `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A TOML value (already written as TOML) and its source; `None` for a value the importer
/// chose, with why in `because`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Val {
    /// The TOML text of the value.
    pub toml: String,
    /// The line it came from.
    pub from: Option<Source>,
    /// When there is no source line: why this value.
    pub because: Option<String>,
}

impl Val {
    /// `toml` from `from`.
    pub fn from(toml: impl Into<String>, from: &Source) -> Self {
        Self { toml: toml.into(), from: Some(from.clone()), because: None }
    }

    /// `toml`, chosen by the importer for `because`.
    pub fn chosen(toml: impl Into<String>, because: impl Into<String>) -> Self {
        Self { toml: toml.into(), from: None, because: Some(because.into()) }
    }
}

/// `s` as a TOML string.
pub fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One backend.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// `(key, value)` in the order written.
    pub fields: Vec<(&'static str, Val)>,
}

impl Member {
    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &'static str, value: Val) {
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, value));
    }

    /// The TOML of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v.toml.as_str())
    }
}

/// One VIP entry: a pool and the requests it takes.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Its `name`, with where it was defined.
    pub name: Option<Val>,
    /// `[vip.match]`: `host`, `path`, `exclude` (lists) and `rewrite`.
    pub hosts: Vec<Val>,
    /// Paths.
    pub paths: Vec<Val>,
    /// Excluded paths.
    pub exclude: Vec<Val>,
    /// Path rewrite.
    pub rewrite: Option<Val>,
    /// `[vip.l7]` settings.
    pub l7: Member,
    /// `[vip.health]`, if any.
    pub health: Member,
    /// Whether the source asked for sticky sessions, and where (none: it did not say).
    pub sticky: Option<(bool, Source)>,
    /// Backends.
    pub members: Vec<Member>,
}

/// One note for standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where (none: about the whole import).
    pub at: Option<Source>,
    /// What happened to it.
    pub text: String,
}

/// What a reader made of a source.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The reader (`mod_jk`, `httpd`, `nginx`) and its files, for the header.
    pub what: String,
    /// The VIP's address, if the source says it (`Listen`, `listen`), else the command's.
    pub vip: Option<Val>,
    /// The entries, the first one taking what no other takes.
    pub pools: Vec<Pool>,
    /// Directives with no equivalent, or only approximated.
    pub notes: Vec<Note>,
}

impl Imported {
    /// Notes `text` about `at`.
    pub fn note(&mut self, at: Option<&Source>, text: impl Into<String>) {
        self.notes.push(Note { at: at.cloned(), text: text.into() });
    }
}

/// Reads `path` as lines (numbered from 1).
///
/// # Errors
/// When it cannot be read.
pub fn lines(path: &Path) -> Result<(String, Vec<String>), ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read { file: file.clone(), source })?;
    Ok((file, text.lines().map(str::to_owned).collect()))
}

/// A source line, its text shortened to what fits a comment.
pub fn source(file: &str, line: usize, says: &str) -> Source {
    let says = says.trim();
    let says = if says.chars().count() > 70 {
        format!("{}…", says.chars().take(69).collect::<String>())
    } else {
        says.to_owned()
    };
    Source { file: file.to_owned(), line, says }
}

/// The comment for a value.
fn comment(v: &Val) -> String {
    match (&v.from, &v.because) {
        (Some(s), _) => format!("# {} {}", s.at(), s.says),
        (None, Some(why)) => format!("# {why}"),
        (None, None) => String::new(),
    }
}

fn line(out: &mut String, key: &str, v: &Val) {
    let _ = writeln!(out, "{key} = {}   {}", v.toml, comment(v));
}

fn list(out: &mut String, key: &str, values: &[Val]) {
    let _ = writeln!(out, "{key} = [");
    for v in values {
        let _ = writeln!(out, "  {},   {}", v.toml, comment(v));
    }
    out.push_str("]\n");
}

/// The annotated TOML of `imported`, for VIP address `vip` when the source gave none and
/// `interfaces`.
pub fn render(imported: &Imported, vip: &Val, interfaces: &Val) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Imported by `balancer import {}`.", imported.what);
    out.push_str("# Each value names the line it came from; what has no equivalent, or was only approximated,\n");
    out.push_str("# was listed on standard error. Check with `balancer check -c FILE`.\n");
    line(&mut out, "interfaces", interfaces);
    let address = imported.vip.as_ref().unwrap_or(vip);
    for pool in &imported.pools {
        out.push_str("\n[[vip]]\n");
        line(&mut out, "address", address);
        if let Some(name) = &pool.name {
            line(&mut out, "name", name);
        }
        if !(pool.hosts.is_empty() && pool.paths.is_empty() && pool.exclude.is_empty()) {
            out.push_str("[vip.match]\n");
            for (key, values) in [("host", &pool.hosts), ("path", &pool.paths), ("exclude", &pool.exclude)] {
                if !values.is_empty() {
                    list(&mut out, key, values);
                }
            }
            if let Some(r) = &pool.rewrite {
                line(&mut out, "rewrite", r);
            }
        }
        out.push_str("[vip.l7]\n");
        for (key, v) in &pool.l7.fields {
            line(&mut out, key, v);
        }
        if !pool.health.fields.is_empty() {
            out.push_str("[vip.health]\n");
            for (key, v) in &pool.health.fields {
                line(&mut out, key, v);
            }
        }
        for m in &pool.members {
            out.push_str("[[vip.backend]]\n");
            for (key, v) in &m.fields {
                line(&mut out, key, v);
            }
        }
    }
    out
}

/// The notes as lines for standard error.
pub fn notes(imported: &Imported) -> Vec<String> {
    imported
        .notes
        .iter()
        .map(|n| match &n.at {
            Some(s) => format!("{}: `{}`: {}", s.at(), s.says, n.text),
            None => n.text.clone(),
        })
        .collect()
}

/// Where a URL points: scheme, host, port, path (`ajp://10.0.0.1:8009/cart` →
/// `("ajp", "10.0.0.1", Some(8009), "/cart")`). IPv6 hosts keep no brackets.
pub fn url(u: &str) -> Option<(String, String, Option<u16>, String)> {
    let (scheme, rest) = u.split_once("://")?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h.to_owned(), p.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.parse().ok()?)),
            None => (authority.to_owned(), None),
        }
    };
    (!host.is_empty()).then(|| (scheme.to_ascii_lowercase(), host, port, path.to_owned()))
}

/// Chooses the stickiness of `pool`: `route-suffix` when every member has a route (what
/// `mod_jk` and `mod_proxy_balancer` do with sticky sessions), else a hash of the client's
/// address, with a note. `sticky`: the source asked for sticky sessions (and where).
pub fn stickiness(imported: &mut Imported, pool_index: usize, sticky: Option<&Source>) {
    let pool = &imported.pools[pool_index];
    let routed = !pool.members.is_empty() && pool.members.iter().all(|m| m.get("route").is_some());
    let name = pool.name.as_ref().map_or_else(String::new, |n| n.toml.clone());
    let (value, note) = match (sticky, routed) {
        (Some(at), true) => (Val::from(string("route-suffix"), at), None),
        (Some(at), false) => (
            Val::chosen(string("hash"), "sticky sessions without a route on every member"),
            Some((
                Some(at.clone()),
                format!(
                    "pool {name}: members without a route cannot be told apart in JSESSIONID; approximated by a hash of the client's address (sticky = \"hash\")"
                ),
            )),
        ),
        (None, true) => (
            Val::chosen(string("route-suffix"), "members have routes; the source balanced without stickiness"),
            Some((
                None,
                format!(
                    "pool {name}: the source balanced each request; here sessions stay on the member their JSESSIONID's route names (every L7 VIP is sticky)"
                ),
            )),
        ),
        (None, false) => (
            Val::chosen(string("hash"), "the source balanced without stickiness"),
            Some((
                None,
                format!(
                    "pool {name}: the source balanced each request; approximated by a hash of the client's address (every L7 VIP is sticky)"
                ),
            )),
        ),
    };
    if let Some((at, text)) = note {
        imported.note(at.as_ref(), text);
    }
    let pool = &mut imported.pools[pool_index];
    let mut l7 = Member { fields: vec![("sticky", value)] };
    l7.fields.extend(pool.l7.fields.drain(..).filter(|(k, _)| *k != "sticky"));
    pool.l7 = l7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        assert_eq!(
            url("ajp://192.168.1.51:8009/cart"),
            Some(("ajp".into(), "192.168.1.51".into(), Some(8009), "/cart".into()))
        );
        assert_eq!(url("http://localhost:8877"), Some(("http".into(), "localhost".into(), Some(8877), String::new())));
        assert_eq!(
            url("http://[2001:db8::1]:8080/"),
            Some(("http".into(), "2001:db8::1".into(), Some(8080), "/".into()))
        );
        assert_eq!(url("balancer://tcsrvs/"), Some(("balancer".into(), "tcsrvs".into(), None, "/".into())));
        assert_eq!(url("/local"), None);
        assert_eq!(url("http://h:x/"), None);
    }

    #[test]
    fn strings_are_escaped_for_toml() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
