//! Which of an address's L7 entries a request goes to: by `Host` (name-based virtual hosts)
//! and by path (prefix, exact, or a `JkMount`-style glob), with exclusions, the most specific
//! match winning. Also the path rewrite of an entry (`ProxyPass /app/ http://be/`) and its
//! reverse on response headers (`ProxyPassReverse`, `ProxyPassReverseCookiePath`).
//!
//! Specificity, in this order: a host named exactly beats a `*.` wildcard, which beats an entry
//! for any host; then an exact path beats a pattern; then the pattern with more literal
//! characters wins (`/cart/checkout` over `/cart`, `/cart` over `/*`); then a prefix beats a
//! glob of the same length. An excluded path falls to the next entry in that order, or is
//! answered 404 when none is left.

use crate::config::Match;

/// One path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `=/login`: that path only.
    Exact(String),
    /// `/cart`: that path and everything below it (`/cart`, `/cart/`, `/cart/x`; not `/cartx`).
    Prefix(String),
    /// `/*.jsp`, `/app/*`: `*` stands for any characters, `/` included (as `JkMount` reads it).
    Glob(String),
}

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Paths start with `/`.
    #[error("`{0}`: a path pattern starts with `/` (or `=/` for an exact path)")]
    NotAbsolute(String),
    /// Host names are plain names or one leading `*.`.
    #[error("`{0}`: a host is a name, or `*.` and a name")]
    BadHost(String),
}

impl PathPattern {
    /// Reads `=/exact`, `/prefix` or a pattern with `*`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if let Some(exact) = text.strip_prefix('=') {
            if !exact.starts_with('/') {
                return Err(PatternError::NotAbsolute(text.into()));
            }
            return Ok(Self::Exact(exact.into()));
        }
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute(text.into()));
        }
        Ok(if text.contains('*') { Self::Glob(text.into()) } else { Self::Prefix(text.into()) })
    }

    /// Whether `path` (no query, no `;` parameters) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/')),
            Self::Glob(g) => glob(g.as_bytes(), path.as_bytes()),
        }
    }

    /// (exact, literal characters, prefix): larger is more specific.
    fn rank(&self) -> (bool, usize, bool) {
        match self {
            Self::Exact(p) => (true, p.len(), false),
            Self::Prefix(p) => (false, p.len(), true),
            Self::Glob(g) => (false, g.bytes().filter(|&b| b != b'*').count(), false),
        }
    }
}

/// `*` matches any run of bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative, with one backtrack point: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: one label before `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, PatternError> {
        let lower = text.to_ascii_lowercase();
        let bad = |s: &str| s.is_empty() || s.contains(['*', '/', ' ', ':']);
        match lower.strip_prefix("*.") {
            Some(rest) if !bad(rest) => Ok(Self::Wildcard(format!(".{rest}"))),
            None if !bad(&lower) => Ok(Self::Exact(lower)),
            _ => Err(PatternError::BadHost(text.into())),
        }
    }

    /// 2: named exactly, 1: by wildcard; `host` is lowercase, without port.
    fn rank(&self, host: &str) -> Option<u8> {
        match self {
            Self::Exact(h) => (h == host).then_some(2),
            Self::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                .then_some(1),
        }
    }
}

/// One entry's match, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    hosts: Vec<HostPattern>,
    paths: Vec<PathPattern>,
    exclude: Vec<PathPattern>,
    /// The prefix replaced, and what replaces it.
    rewrite: Option<(String, String)>,
}

/// How specific a match is: compared as a tuple, larger wins.
type Score = (u8, bool, usize, bool);

impl Rule {
    /// `m` compiled; `None` matches every request.
    pub fn new(m: Option<&Match>) -> Result<Self, PatternError> {
        let Some(m) = m else { return Ok(Self { hosts: vec![], paths: vec![], exclude: vec![], rewrite: None }) };
        let hosts = m.host.iter().map(|h| HostPattern::parse(h)).collect::<Result<_, _>>()?;
        let paths: Vec<PathPattern> = m.path.iter().map(|p| PathPattern::parse(p)).collect::<Result<_, _>>()?;
        let exclude = m.exclude.iter().map(|p| PathPattern::parse(p)).collect::<Result<_, _>>()?;
        let rewrite = match (&m.rewrite, &paths[..]) {
            (Some(to), [PathPattern::Prefix(from)]) => Some((from.clone(), to.clone())),
            _ => None,
        };
        Ok(Self { hosts, paths, exclude, rewrite })
    }

    fn is_catch_all(&self) -> bool {
        self.hosts.is_empty() && self.paths.is_empty() && self.exclude.is_empty()
    }

    /// How specifically this rule takes (`host`, `path`), if it does.
    fn score(&self, host: &str, path: &str) -> Option<Score> {
        let host_rank = if self.hosts.is_empty() { 0 } else { self.hosts.iter().filter_map(|h| h.rank(host)).max()? };
        if self.exclude.iter().any(|e| e.matches(path)) {
            return None;
        }
        let (exact, len, prefix) = if self.paths.is_empty() {
            (false, 0, true)
        } else {
            self.paths.iter().filter(|p| p.matches(path)).map(PathPattern::rank).max()?
        };
        Some((host_rank, exact, len, prefix))
    }

    /// The path the backend gets for `path` (`None`: unchanged).
    pub fn rewrite(&self, path: &str) -> Option<String> {
        let (from, to) = self.rewrite.as_ref()?;
        let rest = path.strip_prefix(from.as_str())?;
        // `/app` → `/`: `/app/x` becomes `/x`, not `//x`.
        Some(match (to.ends_with('/'), rest.strip_prefix('/')) {
            (true, Some(r)) => format!("{to}{r}"),
            _ => format!("{to}{rest}"),
        })
    }

    /// The (backend prefix, client prefix) pair that response headers are mapped back with.
    pub fn reverse(&self) -> Option<(&str, &str)> {
        self.rewrite.as_ref().map(|(from, to)| (to.as_str(), from.as_str()))
    }
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// Its path has `.` or `..` segments (raw or `%2e`): refused, so no exclusion can be
    /// walked around.
    DotSegments,
    /// No entry takes it.
    NoMatch,
}

/// The rules of one address's entries, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<Rule>,
}

impl Router {
    /// A router over `rules` (index = entry).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The rule of entry `i`.
    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i]
    }

    /// The entry for a request to `host` (as the client wrote it, port and case aside) and
    /// `target` (origin form, query and `;` parameters allowed).
    pub fn route(&self, host: Option<&[u8]>, target: &str) -> Result<usize, Unroutable> {
        // One entry for everything (most VIPs): nothing to look at.
        if self.rules.is_empty() || (self.rules.len() == 1 && self.rules[0].is_catch_all()) {
            return Ok(0);
        }
        let path = target.split(['?', '#']).next().unwrap_or(target);
        let path = path.split(';').next().unwrap_or(path);
        if has_dot_segment(path) {
            return Err(Unroutable::DotSegments);
        }
        let host = host.and_then(|h| std::str::from_utf8(h).ok()).map_or_else(String::new, host_only);
        let mut best: Option<(Score, usize)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(score) = rule.score(&host, path)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i).ok_or(Unroutable::NoMatch)
    }
}

/// `host` lowercase, without its port.
fn host_only(host: &str) -> String {
    without_port(host.trim()).trim_end_matches('.').to_ascii_lowercase()
}

/// `host` (a `Host` header's value) without its port (`[::1]:8080` → `[::1]`, `shop:80` →
/// `shop`); the AJP forward request's server name too.
pub fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i + 1..].is_empty() && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            if host.starts_with('[') && !host[..i].ends_with(']') { host } else { &host[..i] }
        }
        _ => host,
    }
}

fn has_dot_segment(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.split('/').any(|s| matches!(s, "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."))
        || lower.contains("%2f")
        || lower.contains("%5c")
}

/// Checks the entries of one address together: the same (host, path) taken twice, or an
/// entry whose every path its own exclusions take, can never be what a user meant. Returns the
/// indices of the pair (or the entry twice) at fault, with why.
pub fn conflicts(rules: &[(Option<&Match>, Rule)]) -> Option<(usize, usize, String)> {
    let keys = |m: Option<&Match>| -> Vec<(String, String)> {
        let hosts = m.map_or(vec![], |m| m.host.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>());
        let paths = m.map_or(vec![], |m| m.path.clone());
        let hosts = if hosts.is_empty() { vec!["*any*".into()] } else { hosts };
        let paths = if paths.is_empty() { vec!["/".into()] } else { paths };
        hosts.iter().flat_map(|h| paths.iter().map(move |p| (h.clone(), p.clone()))).collect()
    };
    for (i, (m, rule)) in rules.iter().enumerate() {
        if let Some(m) = m {
            if let Some(p) = m.exclude.iter().find(|e| m.path.contains(e)) {
                return Some((i, i, format!("`{p}` is both matched and excluded, so it is unreachable")));
            }
            if m.rewrite.is_some() && rule.rewrite.is_none() {
                return Some((i, i, "`rewrite` needs exactly one prefix `path` (like `/app/`) to replace".into()));
            }
        }
        let mine = keys(*m);
        for (j, (other, _)) in rules.iter().enumerate().take(i) {
            if let Some((h, p)) = keys(*other).into_iter().find(|k| mine.contains(k)) {
                let host = if h == "*any*" { "any host".to_owned() } else { format!("host `{h}`") };
                return Some((j, i, format!("both take {host} and path `{p}`; the second is unreachable")));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: &[&str], path: &[&str], exclude: &[&str]) -> Match {
        Match {
            host: host.iter().map(|s| (*s).to_owned()).collect(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
            rewrite: None,
        }
    }

    fn router(entries: &[Option<Match>]) -> Router {
        Router::new(entries.iter().map(|e| Rule::new(e.as_ref()).unwrap()).collect())
    }

    #[test]
    fn the_host_loses_its_port_only() {
        assert_eq!(without_port("shop.example:8080"), "shop.example");
        assert_eq!(without_port("shop.example"), "shop.example");
        assert_eq!(without_port("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(without_port("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(without_port("shop:"), "shop:");
    }

    #[test]
    fn patterns_match_as_documented() {
        let p = |s| PathPattern::parse(s).unwrap();
        assert!(p("/cart").matches("/cart") && p("/cart").matches("/cart/x") && !p("/cart").matches("/cartoon"));
        assert!(p("/app/").matches("/app/x") && !p("/app/").matches("/app"));
        assert!(p("=/login").matches("/login") && !p("=/login").matches("/login/x"));
        assert!(p("/*.jsp").matches("/a/b/c.jsp") && !p("/*.jsp").matches("/a.jspx"));
        assert!(p("/app/*").matches("/app/x") && !p("/app/*").matches("/other"));
        assert!(p("/*/a*b*c").matches("/x/aXbYc") && !p("/*/a*b*c").matches("/x/aXbY"));
        assert_eq!(PathPattern::parse("cart"), Err(PatternError::NotAbsolute("cart".into())));
        // A long text of near-misses is not slow.
        let long = format!("/{}", "a".repeat(10_000));
        assert!(!p("/*a*a*a*a*b").matches(&long));
    }

    #[test]
    fn the_most_specific_entry_wins_and_exclusions_fall_through() {
        let r = router(&[
            None,                                          // 0: default
            Some(m(&[], &["/cart"], &["/cart/static"])),   // 1
            Some(m(&[], &["/cart/checkout"], &[])),        // 2
            Some(m(&[], &["/*.jsp"], &[])),                // 3
            Some(m(&["api.example"], &[], &[])),           // 4
            Some(m(&["*.shop.example"], &["/cart"], &[])), // 5
            Some(m(&[], &["=/lbmanager"], &[])),           // 6
        ]);
        let at = |host: &str, path: &str| r.route(Some(host.as_bytes()), path);
        assert_eq!(at("shop", "/"), Ok(0));
        assert_eq!(at("shop", "/cart/view?x=1"), Ok(1));
        assert_eq!(at("shop", "/cart;jsessionid=A.t1"), Ok(1));
        assert_eq!(at("shop", "/cart/checkout/pay"), Ok(2));
        assert_eq!(at("shop", "/cart/static/a.css"), Ok(0), "excluded from 1, taken by the default");
        assert_eq!(at("shop", "/x/index.jsp"), Ok(3));
        assert_eq!(at("shop", "/cart/index.jsp"), Ok(1), "as many literal characters: the prefix wins");
        assert_eq!(at("shop", "/cart/checkout/a.jsp"), Ok(2), "more literal characters");
        assert_eq!(at("API.example:8080", "/cart"), Ok(4), "a named host beats any path rule");
        assert_eq!(at("eu.shop.example", "/cart"), Ok(5));
        assert_eq!(at("a.b.shop.example", "/cart"), Ok(1), "a wildcard covers one label");
        assert_eq!(at("shop", "/lbmanager"), Ok(6));
        assert_eq!(at("shop", "/cart/../lbmanager"), Err(Unroutable::DotSegments));
        assert_eq!(at("shop", "/cart/%2E%2e/lbmanager"), Err(Unroutable::DotSegments));
        let no_default = router(&[Some(m(&[], &["/cart"], &[])), Some(m(&[], &["/shop"], &[]))]);
        assert_eq!(no_default.route(None, "/other"), Err(Unroutable::NoMatch));
    }

    #[test]
    fn a_rewrite_replaces_the_prefix_and_is_mapped_back() {
        let mut app = m(&[], &["/app/"], &[]);
        app.rewrite = Some("/".into());
        let rule = Rule::new(Some(&app)).unwrap();
        assert_eq!(rule.rewrite("/app/x/y"), Some("/x/y".into()));
        assert_eq!(rule.rewrite("/app/"), Some("/".into()));
        assert_eq!(rule.reverse(), Some(("/", "/app/")));
        let mut inner = m(&[], &["/shop"], &[]);
        inner.rewrite = Some("/store".into());
        let rule = Rule::new(Some(&inner)).unwrap();
        assert_eq!(rule.rewrite("/shop/cart"), Some("/store/cart".into()));
    }

    #[test]
    fn overlapping_and_unreachable_entries_are_found() {
        let rules = |ms: &[Option<Match>]| -> Option<(usize, usize, String)> {
            let compiled: Vec<_> = ms.iter().map(|m| (m.as_ref(), Rule::new(m.as_ref()).unwrap())).collect();
            conflicts(&compiled)
        };
        assert_eq!(rules(&[None, Some(m(&[], &["/cart"], &[]))]), None);
        let (a, b, why) = rules(&[None, Some(m(&[], &["/cart"], &[])), Some(m(&[], &["/cart"], &[]))]).unwrap();
        assert_eq!((a, b), (1, 2), "{why}");
        let (a, b, _) = rules(&[None, None]).unwrap();
        assert_eq!((a, b), (0, 1));
        let (a, _, why) = rules(&[Some(m(&[], &["/x"], &["/x"]))]).unwrap();
        assert!(a == 0 && why.contains("unreachable"), "{why}");
        let mut glob = m(&[], &["/*.jsp"], &[]);
        glob.rewrite = Some("/".into());
        assert!(rules(&[Some(glob)]).unwrap().2.contains("rewrite"));
    }
}
