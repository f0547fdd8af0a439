//! One request and its response, in phases: the head and the session (`plan`), the upstream
//! request and its body (`send`), with a retry where nothing would be lost, then the response
//! head through the filter (`respond`) and its body (`relay`).

use std::{
    cell::RefCell,
    io,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};
use tracing::{debug, warn};

use super::{
    ClientStream, Conn, Next,
    chunked::{self, Decoder},
    edit, give_buffer,
    head::{self, Framing},
    relay, take_buffer,
    upstream::{self, Upstream},
    within, write_out,
};
mod ajp;

use crate::{
    config::StickyMode,
    l7::{
        access_log::{self, Chosen, Entry},
        proxy::{Site, Vip},
        proxy_header,
        router::Unroutable,
        select::{Choice, Unavailable},
        server::VipLive,
        session::{self, SetCookie},
    },
};

/// Largest response head read from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What `plan` decided for a complete request head.
#[expect(clippy::struct_excessive_bools, reason = "facts read off the head, each used once")]
struct Plan {
    /// The entry of the address that takes the request.
    route: usize,
    member: usize,
    choice: Choice,
    head_len: usize,
    framing: Framing,
    client_close: bool,
    minor: u8,
    expect_continue: bool,
    is_head: bool,
    idempotent: bool,
    set_cookie: Option<SetCookie>,
    /// Bytes of `aux` holding the host the client asked for (for `Location` rewriting).
    host_len: usize,
    /// The client asks to switch protocols (WebSocket).
    upgrade: bool,
    /// Why the session moved, for a failover.
    moved: Option<&'static str>,
    /// Method and target, when the access log wants them.
    line: Option<Line>,
}

/// A request's method and target, for the access log.
type Line = (Box<str>, Box<str>);

enum Planned {
    /// The head is not complete yet.
    Partial,
    /// Refused before anything reached a backend; the connection closes.
    Refused(head::Refusal),
    /// Answered by the proxy (no backend can take it).
    Local { status: &'static str, message: &'static str, keep: bool, line: Option<Line>, route: usize },
    /// To be sent; the upstream head is in `out`.
    Send(Plan),
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The head, session and backend of the request at the start of `c.inbuf`, its upstream head
/// written to `out`, and the host it asked for to `aux`. Synchronous: the parsed headers never
/// outlive it. `logging`: the access log is on, and wants the method and target.
fn plan<S: ClientStream>(
    c: &Conn<S>,
    site: &Site,
    exclude: &[usize],
    (now, logging): ((u64, u64), bool),
    out: &mut Vec<u8>,
    aux: &mut Vec<u8>,
) -> Planned {
    let (secs, ms) = now;
    let mut storage = head::storage();
    let req = match head::request(&c.inbuf, &mut storage, c.limits.max_head) {
        Ok(Some(r)) => r,
        Ok(None) => return Planned::Partial,
        Err(refusal) => return Planned::Refused(refusal),
    };
    let line = logging.then(|| (req.method.into(), req.target.into()));
    let asked = req.authority.map(str::as_bytes).or(req.host);
    let route = match site.router.route(asked, req.target) {
        Ok(i) => i,
        Err(why) => return unroutable(why, &req, line),
    };
    let vip = &site.vips[route];
    let l7 = &vip.l7;
    let cookies = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok());
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let session = session::find(l7, vip.signer.as_ref(), cookies, req.path(), header, c.client_key, secs);
    let keep = req.framing == Framing::None && !req.close;
    let choice = match vip.pool.choose(session.route, session.hash, exclude, ms) {
        Ok(choice) => choice,
        Err(why) => {
            let message = match why {
                Unavailable::NoFailover => "the server holding this session is unavailable\n",
                Unavailable::Full => "every backend is at its connection limit (max); retry shortly\n",
                Unavailable::NoBackend if exclude.is_empty() => "no backend is available\n",
                Unavailable::NoBackend => "no backend could be reached\n",
            };
            return Planned::Local { status: "503 Service Unavailable", message, keep, line, route };
        }
    };
    let member = choice.index();
    let target = &vip.targets[member];
    aux.clear();
    if let Some(h) = asked.filter(|h| std::str::from_utf8(h).is_ok()) {
        aux.extend_from_slice(h);
    }
    // The route's path rewrite, the query kept.
    let rewritten = site.router.rule(route).rewrite(req.path()).map(|mut path| {
        if let Some((_, query)) = req.target.split_once('?') {
            path.push('?');
            path.push_str(query);
        }
        path
    });
    let edits = edit::RequestEdits {
        host: if l7.preserve_host { req.authority.map(str::as_bytes) } else { Some(target.host.as_bytes()) },
        forwarded_host: asked,
        strip_cookie: (l7.sticky == StickyMode::Insert && l7.indirect).then_some(l7.cookie.as_str()),
        client: &c.client_ip,
        https: c.tls.is_some(),
        via: l7.via,
        expect_handled: req.expect_continue,
        upgrade: req.upgrade,
        target: rewritten.as_deref(),
    };
    let chosen = &vip.pool.members()[member];
    if let Some(connector) = &chosen.ajp {
        if let Err(e) = ajp::forward(out, &req, &edits, (c, vip, chosen.route.as_deref(), connector)) {
            debug!(peer = %c.peer, error = %e, "request cannot be forwarded by AJP");
            let message = "the request head is too large for the backend's AJP packet (8 KiB)\n";
            return Planned::Local { status: "431 Request Header Fields Too Large", message, keep: false, line, route };
        }
    } else {
        edit::request(out, &req, &edits);
    }
    let set_cookie = match (&vip.signer, &vip.pool.members()[member].route) {
        (Some(signer), Some(_)) if l7.sticky == StickyMode::Insert => {
            session::set_cookie(choice, &session, signer, secs)
        }
        _ => None,
    };
    Planned::Send(Plan {
        route,
        member,
        choice,
        head_len: req.len,
        framing: req.framing,
        client_close: req.close,
        minor: req.minor,
        expect_continue: req.expect_continue,
        is_head: req.is_head(),
        idempotent: req.idempotent(),
        set_cookie,
        host_len: aux.len(),
        // AJP carries no protocol switch: the container answers the request as it is.
        upgrade: req.upgrade.is_some() && chosen.ajp.is_none(),
        moved: match (choice, session.route) {
            (Choice::Failover(_), Some(route)) if line.is_some() => Some(vip.pool.why_moved(route, exclude, ms)),
            _ => None,
        },
        line,
    })
}

/// The proxy's answer to a request no entry of the address takes.
fn unroutable(why: Unroutable, req: &head::Request<'_, '_>, line: Option<Line>) -> Planned {
    let (status, message) = match why {
        Unroutable::DotSegments => ("400 Bad Request", "the path has . or .. segments\n"),
        Unroutable::NoMatch => ("404 Not Found", "nothing is served at this path\n"),
    };
    let keep = req.framing == Framing::None && !req.close;
    Planned::Local { status, message, keep, line, route: 0 }
}

/// A whole response written by the proxy itself.
fn local(out: &mut Vec<u8>, status: &str, message: &str, close: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.extend_from_slice(if close { b"\r\nconnection: close\r\n\r\n" } else { b"\r\n\r\n" });
    out.extend_from_slice(message.as_bytes());
}

/// Why the request's body did not reach the backend.
enum SendError {
    /// The client's fault: malformed, cut short (`None`: it closed), or too slow.
    Client(&'static str, &'static str),
    /// The backend's connection failed while the request went out.
    Backend(io::Error),
}

/// Writes the upstream head in `out` and the request's body to the backend: from the buffer
/// when it is all there (then `out` still holds the whole request and it can be sent again),
/// else streamed from the client. Returns how much of `c.inbuf` the request used (counted from
/// the start of what the buffer holds when it returns) and how many body bytes went out.
async fn send<S: ClientStream>(
    c: &mut Conn<S>,
    up: &mut TcpStream,
    plan: &Plan,
    out: &mut Vec<u8>,
    by: Instant,
) -> Result<(usize, u64), SendError> {
    let body_start = plan.head_len;
    let written = |r: Option<io::Result<()>>| match r {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(SendError::Backend(e)),
        None => Err(SendError::Backend(io::Error::new(io::ErrorKind::TimedOut, "timed out sending"))),
    };
    match plan.framing {
        Framing::None | Framing::UntilClose => {
            written(within(&mut c.timer, by, up.write_all(out)).await)?;
            Ok((body_start, 0))
        }
        Framing::Length(n) => {
            let have = (c.inbuf.len() - body_start) as u64;
            if have >= n {
                let end = body_start + n as usize;
                out.extend_from_slice(&c.inbuf[body_start..end]);
                written(within(&mut c.timer, by, up.write_all(out)).await)?;
                return Ok((end, n));
            }
            // Streamed: the head is gone from the buffer once this starts.
            continue_if_expected(c, plan, by).await?;
            out.extend_from_slice(&c.inbuf[body_start..]);
            written(within(&mut c.timer, by, up.write_all(out)).await)?;
            let mut left = n - have;
            c.inbuf.clear();
            while left > 0 {
                read_client(c, by).await?;
                let take = (c.inbuf.len() as u64).min(left) as usize;
                written(within(&mut c.timer, by, up.write_all(&c.inbuf[..take])).await)?;
                left -= take as u64;
                if left > 0 {
                    c.inbuf.clear();
                } else {
                    return Ok((take, n));
                }
            }
            Ok((0, n))
        }
        Framing::Chunked => {
            let mut decoder = Decoder::new(chunked::Output::Chunked);
            let head_out = out.len();
            let used = decoder.feed(&c.inbuf[body_start..], out).map_err(|_| malformed())?;
            let mut sent = (out.len() - head_out) as u64;
            if decoder.done() {
                written(within(&mut c.timer, by, up.write_all(out)).await)?;
                return Ok((body_start + used, sent));
            }
            continue_if_expected(c, plan, by).await?;
            written(within(&mut c.timer, by, up.write_all(out)).await)?;
            c.inbuf.clear();
            loop {
                read_client(c, by).await?;
                out.clear();
                let used = decoder.feed(&c.inbuf, out).map_err(|_| malformed())?;
                sent += out.len() as u64;
                written(within(&mut c.timer, by, up.write_all(out)).await)?;
                if decoder.done() {
                    return Ok((used, sent));
                }
                c.inbuf.clear();
            }
        }
    }
}

/// How an attempt ended before a response head: the client's fault (the answer it gets), or
/// the backend's. A backend connection that broke while the request went out is `Broken`
/// without a byte of answer.
enum Step {
    Client(&'static str, &'static str),
    Backend(Failure),
}

impl From<SendError> for Step {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Client(status, message) => Step::Client(status, message),
            SendError::Backend(_) => Step::Backend(Failure::Broken { nothing: true }),
        }
    }
}

fn malformed() -> SendError {
    SendError::Client("400 Bad Request", "the request body is malformed or incomplete\n")
}

/// `100 Continue` to a client that waits for it before sending its body.
async fn continue_if_expected<S: ClientStream>(c: &mut Conn<S>, plan: &Plan, by: Instant) -> Result<(), SendError> {
    if plan.expect_continue {
        match within(&mut c.timer, by, write_out(&mut c.stream, b"HTTP/1.1 100 Continue\r\n\r\n")).await {
            Some(Ok(())) => {}
            _ => return Err(malformed()),
        }
    }
    Ok(())
}

/// More of the client's body into the (empty) buffer.
async fn read_client<S: ClientStream>(c: &mut Conn<S>, by: Instant) -> Result<(), SendError> {
    c.inbuf.reserve(super::BUFFER);
    match within(&mut c.timer, by, c.stream.read_buf(&mut c.inbuf)).await {
        Some(Ok(0) | Err(_)) => Err(malformed()),
        Some(Ok(_)) => Ok(()),
        None => Err(SendError::Client("408 Request Timeout", "the request body did not arrive in time\n")),
    }
}

/// How a backend failed a request.
enum Failure {
    Connect(io::Error),
    /// The connection broke before a response head (`nothing`: not a byte came back).
    Broken {
        nothing: bool,
    },
    /// No response head within `response_timeout_ms`.
    Timeout,
    /// A response head that is not HTTP/1.x.
    Bad(head::BadResponse),
    /// An AJP backend's bytes that are not AJP/1.3.
    Ajp(crate::l7::ajp::AjpError),
}

/// Reads the backend's response head into `rbuf` (skipping interim 1xx responses).
async fn response_head<S: ClientStream>(
    c: &mut Conn<S>,
    up: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    (is_head, upgrade): (bool, bool),
    by: Instant,
) -> Result<(), Failure> {
    loop {
        if !rbuf.is_empty() {
            let mut storage = head::storage();
            match head::response(rbuf, &mut storage, is_head, MAX_RESPONSE_HEAD) {
                Ok(Some(r)) if (102..200).contains(&r.code) || r.code == 100 => {
                    let len = r.len;
                    rbuf.drain(..len);
                    continue;
                }
                // A switch nobody asked for cannot be followed.
                Ok(Some(r)) if r.code == 101 && !upgrade => return Err(Failure::Bad(head::BadResponse::Malformed)),
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(e) => return Err(Failure::Bad(e)),
            }
        }
        rbuf.reserve(super::BUFFER);
        match within(&mut c.timer, by, up.read_buf(rbuf)).await {
            Some(Ok(0) | Err(_)) => return Err(Failure::Broken { nothing: rbuf.is_empty() }),
            Some(Ok(_)) => {}
            None => return Err(Failure::Timeout),
        }
    }
}

/// A route's `Set-Cookie` line for new sessions in one second.
struct NewCookie {
    vip: u64,
    member: usize,
    secs: u64,
    line: Vec<u8>,
}

thread_local! {
    /// Each route's newest `Set-Cookie` line, per VIP generation: every new session of a route
    /// in the same second gets the same value, signed once.
    static NEW_COOKIES: RefCell<Vec<NewCookie>> = const { RefCell::new(Vec::new()) };
}

/// Appends the `Set-Cookie` line for `member` of `vip` to `line`; false when there is none.
fn cookie_line(vip: &Vip, member: usize, set: SetCookie, secs: u64, line: &mut Vec<u8>) -> bool {
    let (Some(signer), Some(route)) = (vip.signer.as_ref(), vip.pool.members()[member].route.as_deref()) else {
        return false;
    };
    match set {
        SetCookie::Refresh { issued } => {
            line.extend_from_slice(&crate::l7::cookie::set_cookie_line(&vip.l7, &signer.sign(route, issued, secs)));
        }
        SetCookie::New => NEW_COOKIES.with_borrow_mut(|cache| {
            if let Some(c) = cache.iter().find(|c| c.vip == vip.id && c.member == member && c.secs == secs) {
                line.extend_from_slice(&c.line);
                return;
            }
            let fresh = crate::l7::cookie::set_cookie_line(&vip.l7, &signer.sign(route, secs, secs));
            line.extend_from_slice(&fresh);
            cache.retain(|c| !(c.vip == vip.id && c.member == member) && c.secs + 1 >= secs);
            if cache.len() >= 256 {
                cache.remove(0);
            }
            cache.push(NewCookie { vip: vip.id, member, secs, line: fresh });
        }),
    }
    true
}

/// What the access log needs of one exchange, gathered as it goes.
struct Record {
    /// The entry of the address that served it.
    route: usize,
    /// When the exchange began, when the access log is on (the clock is read only then).
    start: Option<(std::time::Instant, SystemTime)>,
    line: Option<Line>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    member: Option<usize>,
    chosen: Chosen,
    retries: u32,
    connect_us: Option<u64>,
    first_byte_us: Option<u64>,
    minor: u8,
}

impl Record {
    fn new() -> Self {
        Self {
            route: 0,
            start: access_log::enabled().then(|| (std::time::Instant::now(), SystemTime::now())),
            line: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            member: None,
            chosen: Chosen::Local,
            retries: 0,
            connect_us: None,
            first_byte_us: None,
            minor: 1,
        }
    }

    /// Writes the line, if the access log is on and the request was read.
    fn log<S: ClientStream>(self, c: &Conn<S>, vip: &Vip) {
        let (Some((method, target)), Some((start, time))) = (self.line, self.start) else { return };
        let member = self.member.map(|i| &vip.pool.members()[i]);
        access_log::log(Entry {
            time,
            client: c.peer,
            vip: vip.address,
            method,
            target,
            protocol: if self.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            backend: member.map(|m| m.addr),
            route: member.and_then(|m| m.route.as_deref()).map(Into::into),
            pool: vip.name.as_deref().map(Into::into),
            chosen: self.chosen,
            retries: self.retries,
            connect_us: self.connect_us,
            first_byte_us: self.first_byte_us,
            total_us: start.elapsed().as_micros() as u64,
            tls: c.tls.as_ref().map(|t| t.version),
            sni: c.tls.as_ref().and_then(|t| t.sni.clone()),
        });
    }
}

/// The status code at the start of a response the proxy wrote (`HTTP/1.1 503 ...`).
fn status_of(response: &[u8]) -> u16 {
    response.get(9..12).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| d.parse().ok()).unwrap_or(0)
}

/// Serves the request at the start of `c.inbuf`.
#[expect(clippy::too_many_lines, reason = "the phases of one exchange, each a call; the loop is the retry")]
pub(super) async fn serve<S: ClientStream>(c: &mut Conn<S>, state: &ArcSwap<Site>, vlive: &VipLive) -> Next {
    let head_by = Instant::now() + c.limits.header_timeout;
    let site = match c.vip.take() {
        Some(v) if Arc::ptr_eq(&v, &state.load()) => v,
        _ => state.load_full(),
    };
    let t = now();
    let (secs, ms) = (t.as_secs(), t.as_millis() as u64);
    let mut out = take_buffer();
    let mut aux = take_buffer();
    let mut exclude: Vec<usize> = Vec::new();
    let mut attempt = 0;
    let mut record = Record::new();
    let next = 'attempts: loop {
        out.clear();
        let logging = record.start.is_some();
        let plan = match plan(c, &site, &exclude, ((secs, ms), logging), &mut out, &mut aux) {
            Planned::Send(p) => p,
            Planned::Partial => {
                c.inbuf.reserve(super::BUFFER);
                match within(&mut c.timer, head_by, c.stream.read_buf(&mut c.inbuf)).await {
                    Some(Ok(0) | Err(_)) => break Next::Close,
                    Some(Ok(_)) => continue,
                    None => {
                        vlive.head_timeouts.fetch_add(1, Relaxed);
                        debug!(peer = %c.peer, "closed: the request head did not arrive in time");
                        break Next::Close;
                    }
                }
            }
            Planned::Refused(refusal) => {
                debug!(peer = %c.peer, ?refusal, "request refused");
                if record.start.is_some() {
                    // Not a request that can be named: logged as HAProxy logs a bad one.
                    record.line = Some(("-".into(), "<BADREQ>".into()));
                    (record.status, record.bytes_out) =
                        (status_of(refusal.response()), refusal.response().len() as u64);
                }
                let _ = within(&mut c.timer, head_by, write_out(&mut c.stream, refusal.response())).await;
                break Next::Close;
            }
            Planned::Local { status, message, keep, line, route } => {
                record.route = route;
                local(&mut out, status, message, !keep);
                (record.line, record.status, record.bytes_out) = (line, status_of(&out), out.len() as u64);
                let sent = within(&mut c.timer, head_by, write_out(&mut c.stream, &out)).await;
                if keep && matches!(sent, Some(Ok(()))) {
                    let len = head_len(c);
                    c.inbuf.drain(..len);
                    break Next::Keep;
                }
                break Next::Close;
            }
        };
        let vip = &site.vips[plan.route];
        let l7 = &vip.l7;
        let member = &vip.pool.members()[plan.member];
        let live = &member.live;
        record.route = plan.route;
        record.minor = plan.minor;
        record.line.clone_from(&plan.line);
        record.member = Some(plan.member);
        record.retries = attempt;
        record.chosen = Chosen::of(plan.choice, || plan.moved.unwrap_or("unavailable"));
        if attempt == 0 && matches!(plan.choice, Choice::Failover(_)) {
            live.here().failovers.fetch_add(1, Relaxed);
        }
        let replayable = match plan.framing {
            Framing::None | Framing::UntilClose => true,
            Framing::Length(n) => (c.inbuf.len() - plan.head_len) as u64 >= n,
            Framing::Chunked => false,
        };
        // With a PROXY header, a backend connection speaks for one client only.
        let key = upstream::Key { backend: member.addr, client: member.send_proxy.map(|_| c.peer) };
        // A connection from the free list, else a new one. A reused one that breaks without a
        // byte of answer was closed by the backend while idle: the request goes again on a new
        // connection, not counted against the backend.
        let mut reuse = true;
        let mut rbuf = take_buffer();
        // An AJP backend's response head, as HTTP/1.1, and the request body it asks for.
        let mut ajp_head = if member.ajp.is_some() { take_buffer() } else { Vec::new() };
        let mut ajp_body = None;
        // `send` appends a buffered body to the head; a second try starts from the head again.
        let head_out = out.len();
        let outcome = loop {
            out.truncate(head_out);
            let pooled = if reuse { upstream::take(key) } else { None };
            let connecting = record.start.map(|_| std::time::Instant::now());
            let mut up = if let Some(u) = pooled {
                u
            } else {
                let mut header = Vec::new();
                if let Some(version) = member.send_proxy {
                    proxy_header::write(version, c.peer, vip.address, &mut header);
                }
                let timeout = Duration::from_millis(l7.connect_timeout_ms);
                match upstream::connect(member.addr, timeout, member.send_proxy.map(|_| &header[..])).await {
                    Ok(u) => u,
                    Err(e) => break Err(Failure::Connect(e)),
                }
            };
            record.connect_us = connecting.map(|t| t.elapsed().as_micros() as u64);
            live.here().inflight.fetch_add(1, Relaxed);
            live.here().requests.fetch_add(1, Relaxed);
            let sent_at = std::time::Instant::now();
            let by = Instant::now() + Duration::from_millis(l7.response_timeout_ms);
            let sent = if member.ajp.is_some() {
                let mut body = ajp::Body::new(&plan);
                let buffers = (&mut out, &mut rbuf, &mut ajp_head);
                let r = ajp::request(c, &mut up.stream, &plan, &mut body, buffers, by).await;
                ajp_body = Some(body);
                r.map(|()| (0, 0))
            } else {
                send(c, &mut up.stream, &plan, &mut out, by).await.map_err(|e| {
                    if let SendError::Backend(e) = &e {
                        debug!(backend = %member.addr, error = %e, "sending the request failed");
                    }
                    Step::from(e)
                })
            };
            let got = match sent {
                Err(Step::Client(status, message)) => {
                    live.here().inflight.fetch_sub(1, Relaxed);
                    debug!(peer = %c.peer, status, "the client's request body failed");
                    local(&mut out, status, message, true);
                    (record.status, record.bytes_out) = (status_of(&out), out.len() as u64);
                    let _ = within(&mut c.timer, by, write_out(&mut c.stream, &out)).await;
                    give_buffer(rbuf);
                    break 'attempts Next::Close;
                }
                Err(Step::Backend(f)) => Err(f),
                Ok(n) if member.ajp.is_some() => Ok(n),
                Ok(n) => {
                    let head = response_head(c, &mut up.stream, &mut rbuf, (plan.is_head, plan.upgrade), by).await;
                    head.map(|()| n)
                }
            };
            live.here().inflight.fetch_sub(1, Relaxed);
            live.here().answered(sent_at.elapsed());
            match got {
                Err(Failure::Broken { nothing: true }) if up.reused && replayable => {
                    rbuf.clear();
                    live.here().requests.fetch_sub(1, Relaxed);
                    reuse = false;
                }
                Ok(consumed) => {
                    record.first_byte_us = record.start.map(|_| sent_at.elapsed().as_micros() as u64);
                    break Ok((up, consumed));
                }
                Err(f) => break Err(f),
            }
        };
        let (up, consumed) = match outcome {
            Ok(x) => x,
            Err(failure) => {
                give_buffer(std::mem::take(&mut rbuf));
                let fail = |why: &str| {
                    live.here().errors.fetch_add(1, Relaxed);
                    live.fail(ms, l7.retry_s * 1000);
                    warn!(backend = %member.addr, attempt, "{why}; left out for {} s", l7.retry_s);
                };
                let (status, message) = match failure {
                    Failure::Timeout => {
                        live.here().errors.fetch_add(1, Relaxed);
                        ("504 Gateway Timeout", "the backend did not answer in time\n")
                    }
                    Failure::Connect(e) => {
                        fail(&format!("connect failed ({e})"));
                        // Nothing reached the backend: another may take the request.
                        if replayable && attempt + 1 < l7.max_attempts.max(1) {
                            exclude.push(plan.member);
                            live.here().retries.fetch_add(1, Relaxed);
                            attempt += 1;
                            continue;
                        }
                        ("502 Bad Gateway", "the backend could not be reached\n")
                    }
                    Failure::Broken { .. } => {
                        fail("connection broke before a response");
                        if replayable
                            && plan.framing == Framing::None
                            && plan.idempotent
                            && attempt + 1 < l7.max_attempts.max(1)
                        {
                            exclude.push(plan.member);
                            live.here().retries.fetch_add(1, Relaxed);
                            attempt += 1;
                            continue;
                        }
                        ("502 Bad Gateway", "the backend's connection broke\n")
                    }
                    Failure::Bad(e) => {
                        fail(&e.to_string());
                        ("502 Bad Gateway", "the backend's response was not valid HTTP\n")
                    }
                    Failure::Ajp(e) => {
                        fail(&e.to_string());
                        ("502 Bad Gateway", "the backend's response was not valid AJP/1.3\n")
                    }
                };
                local(&mut out, status, message, true);
                (record.status, record.bytes_out) = (status_of(&out), out.len() as u64);
                live.here().responded(record.status);
                let until = Instant::now() + c.limits.header_timeout;
                let _ = within(&mut c.timer, until, write_out(&mut c.stream, &out)).await;
                break Next::Close;
            }
        };
        if !matches!(plan.choice, Choice::Sticky(_)) && l7.sticky != StickyMode::Hash {
            live.here().sessions.fetch_add(1, Relaxed);
        }
        let (mut consumed, mut body_in) = consumed;
        let responded = if let Some(body) = ajp_body {
            let (responded, body) =
                ajp::respond(c, (vip, &site), &plan, (up, key), (ajp_head, rbuf, body), (&mut out, &mut aux), secs)
                    .await;
            (consumed, body_in) = (body.used(), body.sent);
            responded
        } else {
            respond(c, (vip, &site), &plan, (up, key), rbuf, (&mut out, &mut aux), secs).await
        };
        record.bytes_in = plan.head_len as u64 + body_in;
        live.here().bytes.fetch_add(body_in, Relaxed);
        (record.status, record.bytes_out) = (responded.status, responded.bytes_out);
        live.here().responded(responded.status);
        if let Some(mut up) = responded.switched {
            // The request's head went to the backend; what the client sent after it is the new
            // protocol's, and goes first.
            let early = c.inbuf.get(plan.head_len..).unwrap_or_default();
            let ok = early.is_empty() || up.stream.write_all(early).await.is_ok();
            c.inbuf.clear();
            if ok {
                vlive.upgrades.fetch_add(1, Relaxed);
                vlive.tunnels.fetch_add(1, Relaxed);
                let idle = Duration::from_secs(l7.tunnel_timeout_s);
                let moved = super::tunnel::run(&mut c.stream, &mut up.stream, idle).await;
                vlive.tunnels.fetch_sub(1, Relaxed);
                record.bytes_in += moved.up;
                record.bytes_out += moved.down;
                member.live.here().bytes.fetch_add(moved.up + moved.down, Relaxed);
            }
            break Next::Close;
        }
        // What the request used leaves the buffer; pipelined bytes stay.
        let used = consumed.min(c.inbuf.len());
        c.inbuf.drain(..used);
        break responded.next;
    };
    let route = record.route;
    record.log(c, &site.vips[route]);
    give_buffer(out);
    give_buffer(aux);
    c.vip = Some(site);
    next
}

/// The head length of the complete request at the start of `c.inbuf`.
fn head_len<S: ClientStream>(c: &Conn<S>) -> usize {
    let mut storage = head::storage();
    head::request(&c.inbuf, &mut storage, usize::MAX).ok().flatten().map_or(c.inbuf.len(), |r| r.len)
}

/// What the response filter made of a backend's head.
struct Filtered {
    framing: Framing,
    /// The backend closes its connection after this response.
    backend_close: bool,
    head_len: usize,
    /// A chunked body goes to an HTTP/1.0 client as bare data.
    dechunk: bool,
    /// The client connection closes after this response.
    close: bool,
    status: u16,
}

/// The response filter: writes to `out` the head the client gets for the backend's head at
/// the start of `rbuf` (the session cookie from `aux`, after the host the client asked for).
fn filter_head<S: ClientStream>(
    c: &Conn<S>,
    (vip, site): (&Vip, &Site),
    plan: &Plan,
    rbuf: &[u8],
    (out, aux): (&mut Vec<u8>, &mut Vec<u8>),
    secs: u64,
) -> Option<Filtered> {
    let l7 = &vip.l7;
    aux.truncate(plan.host_len);
    let has_cookie = plan.set_cookie.is_some_and(|set| cookie_line(vip, plan.member, set, secs, aux));
    let (host, cookie) = aux.split_at(plan.host_len);
    let host = std::str::from_utf8(host).ok().filter(|h| !h.is_empty());
    out.clear();
    let mut storage = head::storage();
    let Ok(Some(resp)) = head::response(rbuf, &mut storage, plan.is_head, MAX_RESPONSE_HEAD) else {
        return None;
    };
    let dechunk = resp.framing == Framing::Chunked && plan.minor == 0;
    let close = plan.client_close || resp.framing == Framing::UntilClose || dechunk;
    let keep_alive_10 = plan.minor == 0 && !close;
    let edits = edit::ResponseEdits {
        backend_origin: &vip.targets[plan.member].origin,
        host,
        set_cookie: has_cookie.then_some(cookie),
        nocache: l7.nocache,
        via: l7.via,
        dechunk,
        close,
        keep_alive_10,
        https: c.tls.is_some(),
        path_map: site.router.rule(plan.route).reverse(),
    };
    edit::response(out, &resp, &edits);
    Some(Filtered {
        framing: resp.framing,
        backend_close: resp.close,
        head_len: resp.len,
        dechunk,
        close,
        status: resp.code,
    })
}

/// What the response phase did.
struct Responded {
    next: Next,
    /// The status the client got (0: none reached it).
    status: u16,
    /// Bytes the client got.
    bytes_out: u64,
    /// The backend switched protocols: its connection, to be joined with the client's.
    switched: Option<Upstream>,
}

/// The response phase: the backend's head through the filter to the client, then its body;
/// the backend connection goes back to the free list when it can serve another request.
async fn respond<S: ClientStream>(
    c: &mut Conn<S>,
    (vip, site): (&Vip, &Site),
    plan: &Plan,
    (mut up, key): (Upstream, upstream::Key),
    mut rbuf: Vec<u8>,
    (out, aux): (&mut Vec<u8>, &mut Vec<u8>),
    secs: u64,
) -> Responded {
    let closed = |status| Responded { next: Next::Close, status, bytes_out: 0, switched: None };
    let member = &vip.pool.members()[plan.member];
    let l7 = &vip.l7;
    let Some(Filtered { framing, backend_close, head_len, dechunk, close, status }) =
        filter_head(c, (vip, site), plan, &rbuf, (out, aux), secs)
    else {
        return closed(0);
    };
    let head_out = out.len() as u64;
    if status == 101 {
        // What the backend sent after its head is already the new protocol's.
        out.extend_from_slice(&rbuf[head_len..]);
        give_buffer(rbuf);
        let until = Instant::now() + Duration::from_millis(l7.response_timeout_ms);
        let sent = matches!(within(&mut c.timer, until, write_out(&mut c.stream, out)).await, Some(Ok(())));
        let bytes_out = out.len() as u64;
        return Responded { next: Next::Close, status, bytes_out, switched: sent.then_some(up) };
    }
    let timeout = Duration::from_millis(l7.response_timeout_ms);
    let body = &rbuf[head_len..];
    let relayed = match framing {
        // Bytes after a bodiless response are not the backend's to send.
        Framing::None => Some(relay::Relayed { bytes: 0, reusable: body.is_empty() }),
        Framing::Length(n) => {
            let stream = (&mut up.stream, l7.splice);
            relay::relay_length(c, stream, &mut rbuf, out, (head_len, n), timeout).await
        }
        Framing::Chunked | Framing::UntilClose => {
            let decoder = (framing == Framing::Chunked)
                .then(|| Decoder::new(if dechunk { chunked::Output::Data } else { chunked::Output::Chunked }));
            relay::relay_stream(c, &mut up.stream, &mut rbuf, out, head_len, decoder, timeout).await
        }
    };
    give_buffer(rbuf);
    let Some(relayed) = relayed else { return closed(status) };
    if !out.is_empty()
        && !matches!(within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, out)).await, Some(Ok(())))
    {
        return closed(status);
    }
    member.live.here().bytes.fetch_add(relayed.bytes, Relaxed);
    if relayed.reusable && !backend_close && framing != Framing::UntilClose {
        upstream::put(key, up.stream);
    }
    let next = if close { Next::Close } else { Next::Keep };
    Responded { next, status, bytes_out: head_out + relayed.bytes, switched: None }
}
