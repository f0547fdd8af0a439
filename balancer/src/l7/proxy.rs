//! HTTP/2 clients (h2c with prior knowledge): hyper serves the connection, and each request
//! goes through the same session and selection phases as on the HTTP/1 path, to the backends
//! over HTTP/1.1 with hyper's pooled client.
//!
//! Also the per-VIP state both paths read (`Vip`).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderMap, HeaderValue},
};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tracing::{debug, warn};

use super::{
    cookie::Signer,
    select::{Choice, Pool, Unavailable},
    session,
};
use crate::config::{L7, StickyMode};

/// Bodies the proxy sends either way.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The L7 entries of one address as requests see them, and which entry a request goes to
/// (one entry, taking everything, on most VIPs); replaced whole when configuration or health
/// changes. Connection settings (TLS, PROXY header, limits) are the first entry's.
pub struct Site {
    /// The entries, in configuration order; never empty.
    pub vips: Vec<Vip>,
    /// Picks an entry by host and path.
    pub router: super::router::Router,
    /// HTTP/2 with prior knowledge may be served: no entry's backend gets a PROXY header or
    /// speaks AJP, which the HTTP/2 path cannot do. Found once per build of the state.
    pub h2c: bool,
}

impl Site {
    /// The entries at one address and their router.
    pub fn new(vips: Vec<Vip>, router: super::router::Router) -> Self {
        let h2c = vips.iter().flat_map(|v| v.pool.members()).all(|m| m.send_proxy.is_none() && m.ajp.is_none());
        Self { vips, router, h2c }
    }

    /// The entry whose settings the connection uses.
    pub fn first(&self) -> &Vip {
        &self.vips[0]
    }
}

/// One L7 entry (a VIP, or one of the routes sharing its address) as requests see it.
pub struct Vip {
    /// Unique to this build of the VIP's state (caches keyed by it never see another's).
    pub id: u64,
    /// The VIP's address.
    pub address: SocketAddr,
    /// Its `name`, if it has one (status, the access log).
    pub name: Option<String>,
    /// Its settings.
    pub l7: L7,
    /// Its backends.
    pub pool: Pool,
    /// Insert mode's cookie signer.
    pub signer: Option<Signer>,
    /// Pooled keep-alive connections to its backends.
    pub client: Client<HttpConnector, Body>,
    /// Per member (same index as `pool.members()`): the URI authority and `Host` value of its
    /// address, made once here rather than formatted and parsed for every request.
    pub targets: Vec<Target>,
    /// What new TLS handshakes use, on a TLS VIP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A backend address in the forms a request to it needs.
pub struct Target {
    authority: hyper::http::uri::Authority,
    /// `Host` for the backend itself (`preserve_host = false`).
    pub host: HeaderValue,
    /// `http://<address>`, which a `Location` naming the backend starts with.
    pub origin: String,
}

impl Target {
    /// `addr` as URI authority and as `Host` header value.
    pub fn new(addr: SocketAddr) -> Self {
        let text = addr.to_string();
        Self {
            authority: text.parse().expect("a socket address is a valid authority"),
            host: HeaderValue::from_str(&text).expect("a socket address is a valid header"),
            origin: format!("http://{text}"),
        }
    }
}

/// Serves an HTTP/2 client connection (prior knowledge: its preface has arrived) until it
/// closes or `shutdown` turns true (then streams in flight finish first).
pub async fn serve_h2<S: super::stream::ClientStream>(
    stream: S,
    peer: SocketAddr,
    tls: Option<Box<super::tls::Session>>,
    state: Arc<ArcSwap<Site>>,
    limits: super::h1::Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let tls: Option<Arc<super::tls::Session>> = tls.map(|t| Arc::new(*t));
    let service = hyper::service::service_fn(move |req| {
        let logged =
            super::access_log::enabled().then(|| Pending::of(&req, state.load().first().address, peer, tls.clone()));
        let answer = handle(req, state.clone(), peer, tls.is_some());
        async move {
            let response = answer.await;
            if let (Some(p), Ok(r)) = (logged, &response) {
                p.log(r);
            }
            response
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = super::server::stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "HTTP/2 client connection ended");
    }
}

/// The access log's view of an HTTP/2 request, taken before it is served.
struct Pending {
    start: std::time::Instant,
    time: SystemTime,
    vip: SocketAddr,
    client: SocketAddr,
    method: Box<str>,
    target: Box<str>,
    bytes_in: u64,
    tls: Option<Arc<super::tls::Session>>,
}

/// What the access log learns of the backend that served an HTTP/2 request (a response
/// extension, set where the backend was chosen).
#[derive(Clone)]
struct Served {
    backend: SocketAddr,
    route: Option<Box<str>>,
    pool: Option<Box<str>>,
    chosen: super::access_log::Chosen,
    retries: u32,
}

impl Pending {
    fn of(req: &Request<Incoming>, vip: SocketAddr, client: SocketAddr, tls: Option<Arc<super::tls::Session>>) -> Self {
        let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        Self {
            start: std::time::Instant::now(),
            time: SystemTime::now(),
            vip,
            client,
            method: req.method().as_str().into(),
            target: req.uri().path_and_query().map_or("/", hyper::http::uri::PathAndQuery::as_str).into(),
            bytes_in: length.unwrap_or(0),
            tls,
        }
    }

    /// Logs the request with its response head (its body's length as the head declares it).
    fn log(self, response: &Response<Body>) {
        let served = response.extensions().get::<Served>().cloned();
        let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        super::access_log::log(super::access_log::Entry {
            time: self.time,
            client: self.client,
            vip: self.vip,
            method: self.method,
            target: self.target,
            protocol: "HTTP/2.0",
            status: response.status().as_u16(),
            bytes_in: self.bytes_in,
            bytes_out: length.unwrap_or(0),
            backend: served.as_ref().map(|s| s.backend),
            route: served.as_ref().and_then(|s| s.route.clone()),
            pool: served.as_ref().and_then(|s| s.pool.clone()),
            chosen: served.as_ref().map_or(super::access_log::Chosen::Local, |s| s.chosen),
            retries: served.as_ref().map_or(0, |s| s.retries),
            connect_us: None,
            first_byte_us: Some(self.start.elapsed().as_micros() as u64),
            total_us: self.start.elapsed().as_micros() as u64,
            tls: self.tls.as_ref().map(|t| t.version),
            sni: self.tls.as_ref().and_then(|t| t.sni.clone()),
        });
    }
}

/// The answer to a request whose body framing could be read two ways, which is how requests
/// are smuggled past a proxy. Only `Transfer-Encoding: chunked`, once, is accepted: chunked
/// applied twice (two headers, or a list) is malformed (400); any other coding is one we do not
/// implement (501, RFC 9112 §6.1), as Tomcat answers too.
fn framing_refusal(headers: &HeaderMap) -> Option<Response<Body>> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    let first = codings.next()?;
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    match (chunked(first), codings.next()) {
        (true, None) => None,
        (true, Some(c)) if chunked(c) => Some(text(StatusCode::BAD_REQUEST, "chunked may be applied only once")),
        _ => Some(text(StatusCode::NOT_IMPLEMENTED, "the only transfer coding accepted is chunked")),
    }
}

/// What the proxy adds to `Via` both ways when `via = true` (RFC 9110 §7.6.3).
const VIA: &str = "1.1 balancer";

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// `headers`' Cookie headers without cookie `name` (the backend never sees our cookie).
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|h| {
            super::cookie::pairs(h)
                .filter(|(k, _)| *k != name)
                .map(|(k, v)| v.map_or_else(|| k.to_owned(), |v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|h| !h.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for h in kept {
        if let Ok(v) = HeaderValue::from_str(&h) {
            headers.append(header::COOKIE, v);
        }
    }
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1): each side of the
/// proxy has its own connection, and an HTTP/2 client's must not see HTTP/1.1's.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in super::h1::edit::HOP_BY_HOP {
        if let Ok(name) = hyper::http::HeaderName::from_bytes(name) {
            headers.remove(name);
        }
    }
}

/// Serves one request from `client` (the peer address) on `vip`; `secure`: it came over TLS.
#[expect(clippy::too_many_lines, reason = "one request's phases; to be split by the L7 engine rework")]
pub async fn handle(
    req: Request<Incoming>,
    site: Arc<ArcSwap<Site>>,
    client: SocketAddr,
    secure: bool,
) -> Result<Response<Body>, Infallible> {
    // RFC 9112 §3.2: a request with more than one Host (or an HTTP/1.1 one with none) is
    // answered 400; forwarding it lets the backend and us disagree on the target.
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == hyper::Version::HTTP_11) {
        return Ok(text(StatusCode::BAD_REQUEST, "a request needs exactly one Host header"));
    }
    if let Some(refusal) = framing_refusal(req.headers()) {
        return Ok(refusal);
    }
    let site = site.load_full();
    let asked = req
        .uri()
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| req.headers().get(header::HOST).map(HeaderValue::as_bytes));
    let target = req.uri().path_and_query().map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let entry = match site.router.route(asked, target) {
        Ok(i) => i,
        Err(super::router::Unroutable::DotSegments) => {
            return Ok(text(StatusCode::BAD_REQUEST, "the path has . or .. segments"));
        }
        Err(super::router::Unroutable::NoMatch) => {
            return Ok(text(StatusCode::NOT_FOUND, "nothing is served at this path"));
        }
    };
    let rule = site.router.rule(entry);
    let v = &site.vips[entry];
    let l7 = &v.l7;
    let t = now();
    let (secs, ms) = (t.as_secs(), t.as_millis() as u64);

    // The session, if the request carries one.
    let cookies: Vec<&str> = req.headers().get_all(header::COOKIE).iter().filter_map(|h| h.to_str().ok()).collect();
    let cookies = cookies.iter().copied();
    let header = |name: &str| req.headers().get(name).map(HeaderValue::as_bytes);
    let session =
        session::find(l7, v.signer.as_ref(), cookies, req.uri().path(), header, session::client_key(client.ip()), secs);
    let route: Option<String> = session.route.map(str::to_owned);
    let set_cookie = match (&v.signer, l7.sticky) {
        (Some(signer), StickyMode::Insert) => Some((signer, session.affinity.map(|a| (a.issued, a.seen)))),
        _ => None,
    };
    let hash = session.hash;

    // What the backend gets: forwarded-for headers, our cookie removed in indirect mode.
    let (mut parts, body) = req.into_parts();
    // HTTP/2 clients name the host in `:authority`; backends get HTTP/1.1 with a Host header.
    // An absolute-form target (`GET http://host/path`) names the host itself, and Host is then
    // ignored (RFC 9112 §3.2.2); so does an HTTP/2 `:authority`. Either way the backend gets
    // an origin-form request whose Host says the same as the target did.
    let authority = parts.uri.authority().map(std::string::ToString::to_string);
    let host =
        authority.clone().or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
    if parts.version != hyper::Version::HTTP_11 && parts.version != hyper::Version::HTTP_10 {
        parts.version = hyper::Version::HTTP_11;
    }
    if authority.is_some()
        && let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(header::HOST, h);
    }
    strip_hop_by_hop(&mut parts.headers);
    if l7.sticky == StickyMode::Insert && l7.indirect {
        strip_cookie(&mut parts.headers, &l7.cookie);
    }
    let xff = match parts.headers.get("x-forwarded-for").and_then(|h| h.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    parts.headers.insert("x-forwarded-for", HeaderValue::from_str(&xff).expect("an address is a valid header"));
    parts.headers.insert("x-forwarded-proto", HeaderValue::from_static(if secure { "https" } else { "http" }));
    if let Some(h) = &host
        && let Ok(v) = HeaderValue::from_str(h)
    {
        parts.headers.insert("x-forwarded-host", v);
    }
    if l7.via {
        parts.headers.append(header::VIA, HeaderValue::from_static(VIA));
    }
    let bodiless = parts.headers.get(header::CONTENT_LENGTH).is_none_or(|l| l.as_bytes() == b"0")
        && parts.headers.get(header::TRANSFER_ENCODING).is_none();
    let retryable = bodiless
        && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE);
    let mut path =
        parts.uri.path_and_query().cloned().unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    // The route's path rewrite, the query kept.
    if let Some(mut rewritten) = rule.rewrite(path.path()) {
        if let Some(q) = path.query() {
            rewritten.push('?');
            rewritten.push_str(q);
        }
        if let Ok(p) = rewritten.parse() {
            path = p;
        }
    }

    // Whether the client's body failed (malformed chunking, cut short) or is still arriving:
    // then a broken or late exchange with the backend is the client's doing, not the backend's.
    // A request without a body (most of them) needs no watching: no state, no second box.
    let (body, client_body) = watched(body.boxed());
    let mut body = Some(body);
    let mut exclude = Vec::new();
    for attempt in 0..l7.max_attempts.max(1) {
        let choice = match v.pool.choose(route.as_deref(), hash, &exclude, ms) {
            Ok(c) => c,
            Err(Unavailable::NoFailover) => {
                return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "the server holding this session is unavailable"));
            }
            Err(Unavailable::Full) => {
                return Ok(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "every backend is at its connection limit (max); retry shortly",
                ));
            }
            Err(Unavailable::NoBackend) => {
                let msg = if exclude.is_empty() { "no backend is available" } else { "no backend could be reached" };
                return Ok(text(StatusCode::SERVICE_UNAVAILABLE, msg));
            }
        };
        let i = choice.index();
        let member = &v.pool.members()[i];
        if attempt == 0 && matches!(choice, Choice::Failover(_)) {
            member.live.here().failovers.fetch_add(1, Relaxed);
        }
        let request_body = match body.take() {
            Some(b) => counted(b, member.live.clone()),
            None => Empty::new().map_err(|n| match n {}).boxed(),
        };
        // Only a request that may be tried again keeps a copy of its head: one without a body
        // (a refused connection never sent it; see below) with attempts left.
        let last = !bodiless || attempt + 1 >= l7.max_attempts;
        let head = if last { std::mem::replace(&mut parts, Request::new(()).into_parts().0) } else { parts.clone() };
        let mut up = Request::from_parts(head, request_body);
        let target = &v.targets[i];
        let mut uri = hyper::http::uri::Parts::default();
        uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
        uri.authority = Some(target.authority.clone());
        uri.path_and_query = Some(path.clone());
        *up.uri_mut() = hyper::Uri::from_parts(uri).expect("scheme, authority and path form a URI");
        if !l7.preserve_host {
            up.headers_mut().insert(header::HOST, target.host.clone());
        }
        let live = member.live.clone();
        live.here().inflight.fetch_add(1, Relaxed);
        live.here().requests.fetch_add(1, Relaxed);
        let sent = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_millis(l7.response_timeout_ms), v.client.request(up)).await;
        live.here().inflight.fetch_sub(1, Relaxed);
        live.here().answered(sent.elapsed());
        let failed = |why: &str| {
            live.here().errors.fetch_add(1, Relaxed);
            live.fail(ms, l7.retry_s * 1000);
            warn!(backend = %member.addr, attempt, "{why}; left out for {} s", l7.retry_s);
        };
        let resp = match result {
            Err(_) if client_body.as_ref().is_some_and(|b| b.unfinished()) => {
                debug!(%client, "the client's request body did not arrive in time");
                return Ok(text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"));
            }
            Err(_) => {
                live.here().errors.fetch_add(1, Relaxed);
                live.here().responded(504);
                return Ok(text(StatusCode::GATEWAY_TIMEOUT, "the backend did not answer in time"));
            }
            Ok(Err(e)) if client_body.as_ref().is_some_and(|b| b.failed()) => {
                debug!(%client, error = %e, "the client's request body was malformed or cut short");
                return Ok(text(StatusCode::BAD_REQUEST, "the request body is malformed or incomplete"));
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                failed(if connect { "connect failed" } else { "connection broke before a response" });
                // Another backend may take the request only if nothing of it is lost: it has no
                // body (a body went with the failed attempt), and the connection was refused
                // (nothing reached the backend) or the method is idempotent.
                if bodiless && (connect || retryable) {
                    exclude.push(i);
                    live.here().retries.fetch_add(1, Relaxed);
                    continue;
                }
                let msg = if connect { "the backend could not be reached" } else { "the backend's connection broke" };
                live.here().responded(502);
                return Ok(text(StatusCode::BAD_GATEWAY, msg));
            }
            Ok(Ok(r)) => r,
        };
        live.here().responded(resp.status().as_u16());
        if !matches!(choice, Choice::Sticky(_)) && l7.sticky != StickyMode::Hash {
            live.here().sessions.fetch_add(1, Relaxed);
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        if l7.via {
            rparts.headers.append(header::VIA, HeaderValue::from_static(VIA));
        }
        rewrite_location(&mut rparts.headers, member.addr, host.as_deref());
        if let Some(map) = rule.reverse() {
            reverse_paths(&mut rparts.headers, host.as_deref(), map);
        }
        if let (Some((signer, affinity)), Some(r)) = (set_cookie, &member.route) {
            let session = session::Session {
                affinity: affinity.map(|(issued, seen)| super::cookie::Affinity { route: r, issued, seen }),
                route: None,
                hash: None,
            };
            let value = match session::set_cookie(choice, &session, signer, secs) {
                Some(session::SetCookie::New) => Some(signer.sign(r, secs, secs)),
                Some(session::SetCookie::Refresh { issued }) => Some(signer.sign(r, issued, secs)),
                None => None,
            };
            if let Some(value) = value {
                if let Ok(h) = HeaderValue::from_str(&super::cookie::set_cookie_value(l7, &value)) {
                    rparts.headers.append(header::SET_COOKIE, h);
                }
                if l7.nocache {
                    rparts
                        .headers
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache=\"set-cookie\""));
                }
            }
        }
        if super::access_log::enabled() {
            let chosen = super::access_log::Chosen::of(choice, || {
                route.as_deref().map_or("unavailable", |r| v.pool.why_moved(r, &exclude, ms))
            });
            let route = member.route.as_deref().map(Into::into);
            let pool = v.name.as_deref().map(Into::into);
            rparts.extensions.insert(Served { backend: member.addr, route, pool, chosen, retries: attempt });
        }
        return Ok(Response::from_parts(rparts, counted(rbody.boxed(), live)));
    }
    Ok(text(StatusCode::BAD_GATEWAY, "no backend could be reached"))
}

/// `Location`, `Content-Location` and `Set-Cookie` paths of a rewritten route mapped back to
/// the client's prefix (`map` = (backend prefix, client prefix)).
fn reverse_paths(headers: &mut HeaderMap, host: Option<&str>, map: (&str, &str)) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let mapped = headers.get(&name).and_then(|v| super::h1::edit::reverse_location(v.as_bytes(), host, map));
        if let Some(v) = mapped.and_then(|m| HeaderValue::from_bytes(&m).ok()) {
            headers.insert(name, v);
        }
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| HeaderValue::from_bytes(&super::h1::edit::reverse_cookie_path(v.as_bytes(), map)).ok())
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for c in cookies {
            headers.append(header::SET_COOKIE, c);
        }
    }
}

/// How far a client's request body with content got: streaming, complete, or failed.
#[derive(Default)]
struct BodyState(std::sync::atomic::AtomicU8);

impl BodyState {
    const STREAMING: u8 = 0;
    const DONE: u8 = 1;
    const FAILED: u8 = 2;

    fn failed(&self) -> bool {
        self.0.load(Relaxed) == Self::FAILED
    }

    fn unfinished(&self) -> bool {
        self.0.load(Relaxed) == Self::STREAMING
    }
}

/// `body`, and where it records whether it ended or failed; `None` for a body that has
/// already ended (a bodiless request), which can neither fail nor be late.
fn watched(body: Body) -> (Body, Option<Arc<BodyState>>) {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return (body, None);
    }
    let state = Arc::new(BodyState::default());
    (Watched { inner: body, state: state.clone() }.boxed(), Some(state))
}

struct Watched {
    inner: Body,
    state: Arc<BodyState>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let now = match &polled {
            Poll::Ready(None) => Some(BodyState::DONE),
            Poll::Ready(Some(Err(_))) => Some(BodyState::FAILED),
            // A body of known length ends with its last byte; the reader may not poll again.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => Some(BodyState::DONE),
            _ => None,
        };
        if let Some(state) = now {
            self.state.0.store(state, Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, adding the size of every data frame that streams through to `live.bytes` (for
/// `bytraffic`; chunked bodies have no length to read up front).
fn counted(body: Body, live: Arc<super::select::Live>) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            live.here().bytes.fetch_add(data.len() as u64, Relaxed);
        }
        frame
    })
    .boxed()
}

/// `Location`/`Content-Location` naming the backend's own address point back at the VIP's host
/// (Apache's `ProxyPassReverse`).
fn rewrite_location(headers: &mut HeaderMap, backend: SocketAddr, host: Option<&str>) {
    let Some(host) = host else { return };
    if !headers.contains_key(header::LOCATION) && !headers.contains_key(header::CONTENT_LOCATION) {
        return;
    }
    let prefix = format!("http://{backend}");
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        if let Some(rest) = v.strip_prefix(&prefix)
            && let Ok(nv) = HeaderValue::from_str(&format!("http://{host}{rest}"))
        {
            headers.insert(name, nv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_cookie_is_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; BALANCERID=x.1.1.s; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("BALANCERID=y"));
        strip_cookie(&mut h, "BALANCERID");
        let all: Vec<&str> = h.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["a=1; b=2"]);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(hyper::http::HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn location_pointing_at_the_backend_points_at_the_vip() {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("http://10.0.0.2:8080/login?next=/"));
        rewrite_location(&mut h, "10.0.0.2:8080".parse().unwrap(), Some("shop.example"));
        assert_eq!(h[header::LOCATION], "http://shop.example/login?next=/");
        h.insert(header::LOCATION, HeaderValue::from_static("https://other.example/"));
        rewrite_location(&mut h, "10.0.0.2:8080".parse().unwrap(), Some("shop.example"));
        assert_eq!(h[header::LOCATION], "https://other.example/");
    }
}
