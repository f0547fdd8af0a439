//! The session phase, shared by the HTTP/1 path and HTTP/2 clients: which session a request
//! carries, and whether its response must set our cookie. Neither depends on how the request
//! was read, so h1 and h2 clients get the same stickiness.

use super::{
    cookie::{self, Affinity, Signer},
    route,
    select::Choice,
};
use crate::config::{L7, StickyMode};

/// What a request says about its session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session<'a> {
    /// Insert mode: our verified cookie.
    pub affinity: Option<Affinity<'a>>,
    /// The route to stick to: from our cookie, or from the application's session id.
    pub route: Option<&'a str>,
    /// Hash mode: the key.
    pub hash: Option<u64>,
}

/// The hash of `hash` mode's keys (the Maglev identities' hash).
pub use crate::maglev::fnv1a;

/// The hash key of a client address (`hash_on = "client"`), computed once per connection.
pub fn client_key(ip: std::net::IpAddr) -> u64 {
    fnv1a(ip.to_string().as_bytes())
}

/// The session of a request with these `cookies` (its `Cookie` header values), `path`, and
/// `header(name)` for hash mode's `header:NAME`, from client `client_key`, at `now` (Unix s).
pub fn find<'a, C>(
    l7: &L7,
    signer: Option<&Signer>,
    cookies: C,
    path: &'a str,
    header: impl Fn(&str) -> Option<&'a [u8]>,
    client_key: u64,
    now: u64,
) -> Session<'a>
where
    C: IntoIterator<Item = &'a str> + Clone,
{
    match l7.sticky {
        StickyMode::Insert => {
            let affinity = signer.and_then(|s| {
                let value = cookie::find(cookies, &l7.cookie)?;
                s.verify(value, now).map_err(|why| tracing::debug!(?why, "affinity cookie ignored")).ok()
            });
            Session { affinity, route: affinity.map(|a| a.route), hash: None }
        }
        StickyMode::RouteSuffix => {
            // The id's hash picks the replacement when the route's backend is gone: the same on
            // every node, so a session does not bounce while the application moves it.
            let id = route::session_id(&cookies, path, &l7.session_cookies);
            let route = id.and_then(route::route_of);
            Session { affinity: None, route, hash: id.map(|id| fnv1a(id.as_bytes())) }
        }
        StickyMode::Hash => {
            let hash = if let Some(name) = l7.hash_on.strip_prefix("cookie:") {
                fnv1a(cookie::find(cookies, name).unwrap_or("").as_bytes())
            } else if let Some(name) = l7.hash_on.strip_prefix("header:") {
                fnv1a(header(name).unwrap_or(&[]))
            } else {
                client_key
            };
            Session { affinity: None, route: None, hash: Some(hash) }
        }
    }
}

/// Which cookie a response carries in insert mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCookie {
    /// A new assignment issued now (the same value for every client of that route in the same
    /// second, so it can be cached).
    New,
    /// The session's cookie with a fresh last-seen time (`issued` kept).
    Refresh {
        /// When it was first issued.
        issued: u64,
    },
}

/// Whether the response to a request with `session`, sent where `choice` says, sets our
/// cookie: a new session or a moved one gets a new cookie; one that stays gets a refresh when
/// its idle limit asks for it.
pub fn set_cookie(choice: Choice, session: &Session<'_>, signer: &Signer, now: u64) -> Option<SetCookie> {
    match (choice, &session.affinity) {
        (Choice::Sticky(_), Some(a)) if signer.needs_refresh(a, now) => Some(SetCookie::Refresh { issued: a.issued }),
        (Choice::Sticky(_), Some(_)) => None,
        _ => Some(SetCookie::New),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l7(toml_body: &str) -> L7 {
        let config: crate::config::Config = toml::from_str(&format!(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\n{toml_body}\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\n"
        ))
        .unwrap();
        config.vips[0].l7.clone().unwrap()
    }

    #[test]
    fn insert_mode_reads_a_valid_cookie_and_ignores_a_forged_one() {
        let l7 = l7("");
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef", None, Some(600)).unwrap();
        let good = format!("a=1; BALANCERID={}", signer.sign("r2", 100, 100));
        let s = find(&l7, Some(&signer), [good.as_str()], "/", |_| None, 0, 120);
        assert_eq!(s.route, Some("r2"));
        assert_eq!(set_cookie(Choice::Sticky(1), &s, &signer, 120), None);
        assert_eq!(set_cookie(Choice::Sticky(1), &s, &signer, 300), Some(SetCookie::Refresh { issued: 100 }));
        assert_eq!(set_cookie(Choice::Failover(0), &s, &signer, 120), Some(SetCookie::New));
        let forged = find(&l7, Some(&signer), ["BALANCERID=r3.100.100.AAAA"], "/", |_| None, 0, 120);
        assert_eq!(forged, Session::default());
    }

    #[test]
    fn route_suffix_and_hash_modes_read_their_keys() {
        let rs = l7("sticky = \"route-suffix\"");
        assert_eq!(find(&rs, None, ["JSESSIONID=abc.t2"], "/", |_| None, 0, 0).route, Some("t2"));
        let by_cookie = l7("sticky = \"hash\"\nhash_on = \"cookie:uid\"");
        let h = find(&by_cookie, None, ["uid=42"], "/", |_| None, 7, 0).hash;
        assert_eq!(h, Some(fnv1a(b"42")));
        let by_header = l7("sticky = \"hash\"\nhash_on = \"header:X-User\"");
        let h = find(&by_header, None, [], "/", |n| (n == "X-User").then_some(&b"u"[..]), 7, 0).hash;
        assert_eq!(h, Some(fnv1a(b"u")));
        let by_client = l7("sticky = \"hash\"");
        assert_eq!(find(&by_client, None, [], "/", |_| None, 7, 0).hash, Some(7));
    }
}
