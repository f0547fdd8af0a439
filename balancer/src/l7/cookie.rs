//! The insert-mode affinity cookie: which backend route a client belongs to, signed so it
//! cannot be forged or steered.
//!
//! Value: `ROUTE.ISSUED.SEEN.SIG`, where ISSUED and SEEN are Unix seconds (first assignment and
//! last refresh) and SIG is base64url(HMAC-SHA256(key, "ROUTE.ISSUED.SEEN")). A cookie that is
//! malformed, badly signed, past `max_life` since ISSUED or `max_idle` since SEEN is ignored,
//! as is one naming a route no backend has; the client then gets a fresh assignment.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a cookie was not accepted (for debug logs; every case is handled the same way).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not four dot-separated fields with numbers where numbers belong.
    Malformed,
    /// The signature does not match: forged or tampered.
    BadSignature,
    /// Older than `max_life`.
    TooOld,
    /// Unused for longer than `max_idle`.
    Idle,
}

/// A verified cookie, borrowing the request it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affinity<'a> {
    /// The backend's route.
    pub route: &'a str,
    /// When the client was first assigned (Unix seconds).
    pub issued: u64,
    /// When the cookie was last refreshed (Unix seconds).
    pub seen: u64,
}

/// Signs and verifies affinity cookies with one key.
#[derive(Clone)]
pub struct Signer {
    /// The HMAC with its key already absorbed: each use clones the state instead of hashing
    /// the key again.
    keyed: HmacSha256,
    max_life: Option<u64>,
    max_idle: Option<u64>,
}

/// Why an insert-mode key cannot be used. The same checks run for `balancer check`, at start
/// and on reload, so `check` accepting a file means the daemon accepts it too.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("key_file {}: {source}", path.display())]
    Unreadable {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read it.
    #[error("key_file {} is mode {mode:o}; make it 0600 (it signs session cookies)", path.display())]
    Mode {
        /// The key file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Too short to be a key.
    #[error("key_file {}: the cookie key is {len} bytes; use at least {MIN_KEY} random bytes", path.display())]
    Short {
        /// The key file.
        path: std::path::PathBuf,
        /// Its length after trimming white space.
        len: usize,
    },
}

/// Shortest key accepted, in bytes.
pub const MIN_KEY: usize = 16;

impl Signer {
    /// A signer with `key` (at least 16 bytes) and the optional limits in seconds; `None` when
    /// the key is too short.
    pub fn new(key: &[u8], max_life: Option<u64>, max_idle: Option<u64>) -> Option<Self> {
        (key.len() >= MIN_KEY).then(|| Self {
            keyed: HmacSha256::new_from_slice(key).expect("HMAC takes any key length"),
            max_life,
            max_idle,
        })
    }

    /// The signer for a key file, which must not be readable by group or others (mode 0600).
    pub fn from_key_file(
        path: &std::path::Path,
        max_life: Option<u64>,
        max_idle: Option<u64>,
    ) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt as _;
        let unreadable = |source| KeyError::Unreadable { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(unreadable)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode { path: path.to_owned(), mode });
        }
        let key = std::fs::read(path).map_err(unreadable)?.trim_ascii().to_vec();
        let len = key.len();
        Self::new(&key, max_life, max_idle).ok_or(KeyError::Short { path: path.to_owned(), len })
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(payload.as_bytes());
        m
    }

    /// The cookie value for `route`, first issued at `issued`, refreshed `now`.
    pub fn sign(&self, route: &str, issued: u64, now: u64) -> String {
        let payload = format!("{route}.{issued}.{now}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Verifies `value` at time `now`.
    ///
    /// # Errors
    /// Why it is not acceptable.
    pub fn verify<'a>(&self, value: &'a str, now: u64) -> Result<Affinity<'a>, Rejected> {
        let (payload, sig) = value.rsplit_once('.').ok_or(Rejected::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| Rejected::Malformed)?;
        // Constant-time comparison, before anything else is believed.
        self.mac(payload).verify_slice(&sig).map_err(|_| Rejected::BadSignature)?;
        let mut parts = payload.rsplitn(3, '.');
        let seen: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or(Rejected::Malformed)?;
        let issued: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or(Rejected::Malformed)?;
        let route = parts.next().filter(|r| !r.is_empty()).ok_or(Rejected::Malformed)?;
        if self.max_life.is_some_and(|l| now.saturating_sub(issued) > l) {
            return Err(Rejected::TooOld);
        }
        if self.max_idle.is_some_and(|l| now.saturating_sub(seen) > l) {
            return Err(Rejected::Idle);
        }
        Ok(Affinity { route, issued, seen })
    }

    /// Whether a verified cookie should be sent again with a fresh `seen` time: with `max_idle`,
    /// once a quarter of it has passed (as `HAProxy` does), so an active client never expires.
    pub fn needs_refresh(&self, a: &Affinity<'_>, now: u64) -> bool {
        self.max_idle.is_some_and(|l| now.saturating_sub(a.seen) > l / 4)
    }
}

/// The `name=value` pairs of one `Cookie` header (RFC 6265 §4.2.1), trimmed; a pair without
/// `=` has no value. The one cookie parser of the L7 layer.
pub fn pairs(header: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    header.split(';').map(str::trim).filter(|p| !p.is_empty()).map(|p| match p.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (p, None),
    })
}

/// The value of the first cookie `name` among `headers` (the values of a request's `Cookie`
/// headers).
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers.into_iter().flat_map(pairs).find_map(|(k, v)| if k == name { v } else { None })
}

/// The `Set-Cookie` header line (with its CRLF) for our affinity cookie with `value`.
pub fn set_cookie_line(l7: &crate::config::L7, value: &str) -> Vec<u8> {
    format!("set-cookie: {}\r\n", set_cookie_value(l7, value)).into_bytes()
}

/// The `Set-Cookie` value for our affinity cookie with `value`, with the VIP's attributes
/// (`cookie` writes the attributes, as RFC 6265 spells them).
pub fn set_cookie_value(l7: &crate::config::L7, value: &str) -> String {
    use crate::config::SameSite;
    let mut c = cookie::Cookie::build((l7.cookie.as_str(), value))
        .path(l7.path.as_str())
        .http_only(l7.httponly)
        .secure(l7.secure);
    if let Some(d) = &l7.domain {
        c = c.domain(d.as_str());
    }
    if let Some(life) = l7.max_life_s {
        c = c.max_age(cookie::time::Duration::seconds(i64::try_from(life).unwrap_or(i64::MAX)));
    }
    if let Some(s) = l7.samesite {
        c = c.same_site(match s {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        });
    }
    c.build().to_string()
}

#[cfg(test)]
mod tests {
    /// The attributes a browser acts on, each from its field; none that the VIP leaves unset.
    #[test]
    fn set_cookie_carries_each_configured_attribute() {
        let l7 = crate::config::L7 {
            domain: Some("shop.example".into()),
            max_life_s: Some(3600),
            secure: true,
            samesite: Some(crate::config::SameSite::Lax),
            path: "/app/".into(),
            ..crate::config::L7::default()
        };
        let v = super::set_cookie_value(&l7, "r1.1.1.sig");
        assert!(v.starts_with("BALANCERID=r1.1.1.sig; "), "{v}");
        let mut attrs: Vec<&str> = v.split("; ").skip(1).collect();
        attrs.sort_unstable();
        assert_eq!(attrs, ["Domain=shop.example", "HttpOnly", "Max-Age=3600", "Path=/app/", "SameSite=Lax", "Secure"]);
        let plain =
            super::set_cookie_value(&crate::config::L7 { httponly: false, ..crate::config::L7::default() }, "x");
        assert_eq!(plain, "BALANCERID=x; Path=/");
    }

    #[test]
    fn cookie_pairs_are_split_trimmed_and_found_across_headers() {
        let got: Vec<_> = pairs(" a=1;b = 2 ; flag;;c=").collect();
        assert_eq!(got, [("a", Some("1")), ("b", Some("2")), ("flag", None), ("c", Some(""))]);
        assert_eq!(find(["x=1", "a=2; BALANCERID=v"], "BALANCERID"), Some("v"));
        assert_eq!(find(["BALANCERIDX=v"], "BALANCERID"), None);
    }

    use super::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123456789abcdef", Some(3600), Some(600)).unwrap()
    }

    #[test]
    fn a_signed_cookie_verifies_and_names_its_route() {
        let s = signer();
        let v = s.sign("tomcat1", 1000, 1100);
        assert_eq!(s.verify(&v, 1200), Ok(Affinity { route: "tomcat1", issued: 1000, seen: 1100 }));
    }

    #[test]
    fn routes_with_dots_survive() {
        let s = signer();
        assert_eq!(s.verify(&s.sign("node.eu.1", 5, 5), 6).unwrap().route, "node.eu.1");
    }

    #[test]
    fn every_kind_of_tampering_is_rejected() {
        let s = signer();
        let v = s.sign("tomcat1", 1000, 1100);
        let other_route = v.replacen("tomcat1", "tomcat2", 1);
        let later_issue = v.replacen(".1000.", ".1099.", 1);
        let mut flipped = v.clone().into_bytes();
        let mid = flipped.len() - 10;
        flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
        let other_key =
            Signer::new(b"fedcba9876543210fedcba9876543210", None, None).unwrap().sign("tomcat1", 1000, 1100);
        for (what, bad) in [
            ("route changed", other_route),
            ("issue time changed", later_issue),
            ("signature changed", String::from_utf8(flipped).unwrap()),
            ("signed with another key", other_key),
        ] {
            assert_eq!(s.verify(&bad, 1200), Err(Rejected::BadSignature), "{what}");
        }
        for bad in ["", "tomcat1", "tomcat1.1000.1100", "tomcat1.1000.1100.!!!", ".."] {
            assert!(s.verify(bad, 1200).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn old_and_idle_cookies_are_rejected_and_active_ones_refreshed() {
        let s = signer();
        assert_eq!(s.verify(&s.sign("a", 1000, 4000), 4601), Err(Rejected::TooOld));
        assert_eq!(s.verify(&s.sign("a", 1000, 1000), 1601), Err(Rejected::Idle));
        let signed = s.sign("a", 1000, 1000);
        let a = s.verify(&signed, 1100).unwrap();
        assert!(!s.needs_refresh(&a, 1100));
        assert!(s.needs_refresh(&a, 1151));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Signer::new(b"short", None, None).is_none());
    }
}
