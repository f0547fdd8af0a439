//! Changes made from the status page (`admin = true`): a member's state, weight and route, and
//! a health check run now, as balancer-manager and the jk status worker offer. Each is the
//! same runtime change the CLI makes (kept across reloads like it).
//!
//! A page on another site must not be able to make them through the operator's browser
//! (cross-site request forgery), nor a name that resolves to loopback (DNS rebinding). So a
//! change is taken only when its `Host` is the admin address itself, its `Origin` is that
//! address's own (browsers send `Origin` with every POST), and it carries a nonce that a page
//! rendered by this process handed out, once; the nonce alone is what balancer-manager checks.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io::Read as _,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::{BackendAddr, BackendRef, BackendState, Protocol};

/// How long a page's nonce can be used.
const NONCE_LIFE: Duration = Duration::from_mins(10);
/// Nonces outstanding at once (each page view makes one).
const NONCES: usize = 256;

static ISSUED: Mutex<VecDeque<(String, Instant)>> = Mutex::new(VecDeque::new());

/// A fresh nonce for one page, remembered until it is used or too old.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // The kernel's generator; without it there is no nonce to trust, and no change is taken.
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        return String::new();
    }
    let text = bytes.iter().fold(String::with_capacity(32), |mut t, b| {
        let _ = write!(t, "{b:02x}");
        t
    });
    let mut issued = ISSUED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    issued.retain(|(_, at)| at.elapsed() < NONCE_LIFE);
    if issued.len() >= NONCES {
        issued.pop_front();
    }
    issued.push_back((text.clone(), Instant::now()));
    text
}

/// Whether `n` was handed out, recently, and not used yet; it cannot be used again.
fn redeem(n: &str) -> bool {
    if n.len() != 32 {
        return false;
    }
    let mut issued = ISSUED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(i) = issued.iter().position(|(t, at)| t == n && at.elapsed() < NONCE_LIFE) else { return false };
    issued.remove(i);
    true
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `admin = true` is not set.
    #[error("the status page is read-only: set `admin = true` in the configuration to change backends from it")]
    Disabled,
    /// Not the admin address in `Host`, or an `Origin` of another site (or none).
    #[error("cross-site request refused: changes are taken only from this status page ({0})")]
    CrossSite(String),
    /// No nonce, an old one, or one used already.
    #[error("this page has expired: reload the status page and try again")]
    Nonce,
    /// A field the form does not send, or a value out of range.
    #[error("{0}")]
    Form(String),
}

/// Checks `Host` and `Origin` against the admin address `me`.
pub fn same_origin(me: SocketAddr, host: Option<&str>, origin: Option<&str>) -> Result<(), Refused> {
    let mine = [me.to_string(), format!("localhost:{}", me.port())];
    let host_ok = host.is_some_and(|h| mine.iter().any(|m| m.eq_ignore_ascii_case(h)));
    let origin_ok = origin.is_some_and(|o| mine.iter().any(|m| o.eq_ignore_ascii_case(&format!("http://{m}"))));
    if host_ok && origin_ok {
        Ok(())
    } else {
        Err(Refused::CrossSite(format!("Host {}, Origin {}", host.unwrap_or("none"), origin.unwrap_or("none"))))
    }
}

/// What a form asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `backend set` with these fields.
    Set { target: BackendRef, state: Option<BackendState>, weight: Option<u32>, route: Option<String> },
    /// `backend check`.
    Check(BackendRef),
}

/// The form's `application/x-www-form-urlencoded` body as an action, its nonce redeemed.
pub fn parse(body: &[u8]) -> Result<Action, Refused> {
    let fields: Vec<(String, String)> = body
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (decode(k), decode(v))
        })
        .collect();
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if !get("nonce").is_some_and(redeem) {
        return Err(Refused::Nonce);
    }
    let bad = |what: &str| Refused::Form(format!("the form's `{what}` is missing or not valid"));
    let vip: SocketAddr = get("vip").and_then(|v| v.parse().ok()).ok_or_else(|| bad("vip"))?;
    let protocol = match get("proto") {
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        _ => return Err(bad("proto")),
    };
    let pool = get("pool").filter(|p| !p.is_empty()).map(str::to_owned);
    let backend: BackendAddr = get("backend").and_then(|b| b.parse().ok()).ok_or_else(|| bad("backend"))?;
    let target = BackendRef { vip, protocol, pool, backend };
    match get("action") {
        Some("check") => Ok(Action::Check(target)),
        Some("set") => {
            let state = match get("state") {
                Some("active") => Some(BackendState::Active),
                Some("drain") => Some(BackendState::Drain),
                Some("stopped") => Some(BackendState::Stopped),
                None | Some("") => None,
                Some(_) => return Err(bad("state")),
            };
            let weight = match get("weight").filter(|w| !w.is_empty()) {
                Some(w) => Some(
                    w.parse::<u32>().ok().filter(|&w| w <= crate::config::MAX_WEIGHT).ok_or_else(|| bad("weight"))?,
                ),
                None => None,
            };
            let route = get("route").map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
            Ok(Action::Set { target, state, weight, route })
        }
        _ => Err(bad("action")),
    }
}

/// `+` and `%XX` decoded; invalid escapes are kept as they are.
pub fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_own_origin_and_host_may_change_anything() {
        let me: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        assert_eq!(same_origin(me, Some("127.0.0.1:9090"), Some("http://127.0.0.1:9090")), Ok(()));
        assert_eq!(same_origin(me, Some("localhost:9090"), Some("http://localhost:9090")), Ok(()));
        for (host, origin) in [
            (Some("127.0.0.1:9090"), Some("http://evil.example")),
            (Some("127.0.0.1:9090"), None),
            (Some("127.0.0.1:9090"), Some("null")),
            // DNS rebinding: the attacker's name resolved to loopback.
            (Some("evil.example:9090"), Some("http://evil.example:9090")),
            (None, Some("http://127.0.0.1:9090")),
        ] {
            assert!(matches!(same_origin(me, host, origin), Err(Refused::CrossSite(_))), "{host:?} {origin:?}");
        }
    }

    #[test]
    fn a_nonce_is_good_once_and_a_form_names_one_backend() {
        let n = nonce();
        let body = format!(
            "nonce={n}&vip=198.51.100.10%3A80&proto=tcp&pool=cart&backend=198.18.0.3%3A8081&action=set&state=drain&weight=50&route=+t9+"
        );
        let Action::Set { target, state, weight, route } = parse(body.as_bytes()).unwrap() else { panic!() };
        assert_eq!(target.vip.to_string(), "198.51.100.10:80");
        assert_eq!((target.pool.as_deref(), target.backend.to_string()), (Some("cart"), "198.18.0.3:8081".into()));
        assert_eq!((state, weight, route.as_deref()), (Some(BackendState::Drain), Some(50), Some("t9")));
        assert_eq!(parse(body.as_bytes()), Err(Refused::Nonce), "used once");
        assert_eq!(parse(b"vip=1.2.3.4%3A80&action=check"), Err(Refused::Nonce));
        let n = nonce();
        let e = parse(format!("nonce={n}&vip=x&proto=tcp&backend=1.2.3.4&action=set").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("`vip`"), "{e}");
        assert_eq!(decode(b"a%2Fb%zz%4"), "a/b%zz%4");
    }
}
