//! The admin address (127.0.0.1 by default): `/metrics` for Prometheus, `/status` for people
//! (like Apache's balancer-manager or `mod_jk`'s status worker; with `admin = true` it can change
//! members, see `change`) and `/status.json` for scripts. All three render the same typed
//! status, asked of the daemon's loop at each request (`StatusCall`: no JSON in between).

mod change;

use std::{convert::Infallible, fmt::Write as _, net::SocketAddr};

use http_body_util::Full;
use hyper::{
    Request as HttpRequest, Response as HttpResponse, StatusCode,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::{
    control::{protocol::Request, server::Call},
    metrics,
    status::Status,
};

/// A request for the daemon's status: its loop answers on the channel.
pub type StatusCall = oneshot::Sender<Result<Status, crate::dataplane::stats::StatsError>>;

/// The channels the admin server asks the daemon on: changes go as control requests, status
/// as a typed call.
#[derive(Clone)]
pub struct Daemon {
    /// Control requests (the status page's changes).
    pub calls: mpsc::Sender<Call>,
    /// Status.
    pub status: mpsc::Sender<StatusCall>,
}

/// The admin server: its accept loop, and a descriptor of its socket to hand over on a
/// seamless restart.
pub struct Admin {
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
    /// The listening socket.
    pub socket: std::os::fd::OwnedFd,
}

/// Serves the admin pages on `addr`, on `inherited` when a daemon handed its socket over.
///
/// # Errors
/// When the address cannot be bound.
pub fn serve(addr: SocketAddr, inherited: Option<std::net::TcpListener>, daemon: Daemon) -> std::io::Result<Admin> {
    let listener = match inherited.filter(|l| l.local_addr().is_ok_and(|a| a == addr)) {
        Some(l) => l,
        None => std::net::TcpListener::bind(addr)?,
    };
    listener.set_nonblocking(true)?;
    let socket = listener.try_clone()?.into();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| page(req, daemon.clone(), addr));
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    warn!(error = %e, "admin connection");
                }
            });
        }
    });
    Ok(Admin { task, socket })
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> HttpResponse<Full<Bytes>> {
    let mut r = HttpResponse::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl Daemon {
    /// The daemon's status; `None` when its loop is gone (shutting down).
    async fn status(&self) -> Option<Result<Status, crate::dataplane::stats::StatsError>> {
        let (tx, rx) = oneshot::channel();
        self.status.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Asks the daemon to carry out `request`; why not, when it did not.
    async fn ask(&self, request: Request) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.calls.send((request, tx)).await.is_err() {
            return Err("shutting down".into());
        }
        let answer = rx.await.map_err(|_| "no answer".to_owned())?.response;
        if answer.ok { Ok(()) } else { Err(answer.error.unwrap_or_default()) }
    }
}

async fn page(
    req: HttpRequest<hyper::body::Incoming>,
    daemon: Daemon,
    me: SocketAddr,
) -> Result<HttpResponse<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/admin/backend" {
        return Ok(admin_change(req, &daemon, me).await);
    }
    if !matches!(&path[..], "/metrics" | "/status" | "/status.json" | "/") {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", "try /status, /status.json or /metrics\n".into()));
    }
    let status = match daemon.status().await {
        Some(Ok(status)) => status,
        Some(Err(e)) => {
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("status unavailable: {e}\n")));
        }
        None => return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n".into())),
    };
    Ok(match &path[..] {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::render(&status),
        ),
        "/status.json" => {
            reply(StatusCode::OK, "application/json", serde_json::to_string_pretty(&status).unwrap_or_default())
        }
        _ => {
            let message = req.uri().query().and_then(|q| q.strip_prefix("done=")).map(|m| change::decode(m.as_bytes()));
            let nonce = status.admin.then(change::nonce);
            let mut r =
                reply(StatusCode::OK, "text/html; charset=utf-8", html(&status, nonce.as_deref(), message.as_deref()));
            // Not to be framed by another site (clickjacking), nor cached with its nonce.
            r.headers_mut().insert("x-frame-options", HeaderValue::from_static("DENY"));
            r.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
            r
        }
    })
}

/// `POST /admin/backend`: one change from the status page's form, then back to the page.
async fn admin_change(
    req: HttpRequest<hyper::body::Incoming>,
    daemon: &Daemon,
    me: SocketAddr,
) -> HttpResponse<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let refused = |e: &change::Refused| {
        let code = if matches!(e, change::Refused::Form(_)) { StatusCode::BAD_REQUEST } else { StatusCode::FORBIDDEN };
        reply(code, "text/plain; charset=utf-8", format!("{e}\n"))
    };
    if req.method() != hyper::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "changes are POSTed by the status page's forms\n".into(),
        );
    }
    let admin = daemon.status().await.is_some_and(|s| s.is_ok_and(|s| s.admin));
    if !admin {
        return refused(&change::Refused::Disabled);
    }
    let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    if let Err(e) =
        change::same_origin(me, header(hyper::header::HOST).as_deref(), header(hyper::header::ORIGIN).as_deref())
    {
        warn!(error = %e, "status page change refused");
        return refused(&e);
    }
    let Ok(body) =
        http_body_util::Limited::new(req.into_body(), 4096).collect().await.map(http_body_util::Collected::to_bytes)
    else {
        return refused(&change::Refused::Form("the form is larger than 4 KiB".into()));
    };
    let action = match change::parse(&body) {
        Ok(a) => a,
        Err(e) => return refused(&e),
    };
    let (request, what) = match action {
        change::Action::Check(target) => {
            let what = format!("health check of {} started", target.backend);
            (Request::BackendCheck { target }, what)
        }
        change::Action::Set { target, state, weight, route } => {
            let what = format!("{} changed", target.backend);
            (Request::BackendSet { target, weight, state, backup: None, route }, what)
        }
    };
    let done = match daemon.ask(request).await {
        Ok(()) => what,
        Err(e) => format!("not changed: {e}"),
    };
    let encoded: String = done
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    let mut r = reply(StatusCode::SEE_OTHER, "text/plain", String::new());
    if let Ok(v) = HeaderValue::from_str(&format!("/status?done={encoded}")) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A backend's row form: state, weight, route (L7), apply, and run the health check now.
fn form(v: &crate::status::VipStatus, b: &crate::status::BackendStatus, nonce: &str) -> String {
    let target = b.l7.as_ref().map_or(SocketAddr::new(b.address, v.address.port()), |l| l.target);
    let state = b.state.to_string();
    let options: String = ["active", "drain", "stopped"].iter().fold(String::new(), |mut o, s| {
        let _ = write!(o, "<option{}>{s}</option>", if *s == state { " selected" } else { "" });
        o
    });
    let route = if v.kind.is_l7() {
        format!(" <input name=\"route\" placeholder=\"route\" value=\"{}\">", esc(b.route.as_deref().unwrap_or("")))
    } else {
        String::new()
    };
    format!(
        "<td><form method=\"post\" action=\"/admin/backend\" data-backend=\"{target}\">\
         <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\"><input type=\"hidden\" name=\"vip\" value=\"{}\">\
         <input type=\"hidden\" name=\"proto\" value=\"{}\"><input type=\"hidden\" name=\"pool\" value=\"{}\">\
         <input type=\"hidden\" name=\"backend\" value=\"{target}\"><select name=\"state\">{options}</select> \
         <input name=\"weight\" value=\"{}\">{route} <button name=\"action\" value=\"set\">apply</button> \
         <button name=\"action\" value=\"check\">check now</button></form></td>",
        v.address,
        v.protocol,
        esc(v.name.as_deref().unwrap_or("")),
        b.weight,
    )
}

/// The status page; with `nonce` (admin on), each backend's row has a form to change it, and
/// `message` says what the last change did.
pub fn html(s: &Status, nonce: Option<&str>, message: Option<&str>) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>balancer status</title>\
         <style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}\
         h2{font-size:16px;margin-top:2em}table{border-collapse:collapse;min-width:60%}\
         th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}\
         th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
         .up{color:#1a7f37}.down{color:#cf222e;font-weight:bold}.drain{color:#9a6700}\
         .stopped{color:#777}form{display:inline;margin:0}input[name=weight]{width:5em}\
         input[name=route]{width:7em}.done{background:#ddf4ff;padding:6px}</style></head><body><h1>balancer</h1>",
    );
    if nonce.is_none() {
        // Read-only: it refreshes itself. With forms, a refresh would drop what is being typed.
        h = h.replacen("<style>", "<meta http-equiv=\"refresh\" content=\"10\"><style>", 1);
    }
    if let Some(m) = message {
        let _ = write!(h, "<p class=\"done\" id=\"done\">{}</p>", esc(m));
    }
    for v in &s.vips {
        let proto = v.protocol.to_string();
        let mode = match v.kind {
            crate::status::VipKind::L7 { sticky } => format!("L7, sticky {sticky}"),
            crate::status::VipKind::L4 { forwarding, ring_size } => format!("L4 {forwarding}, Maglev {ring_size}"),
        };
        let traffic = if v.kind.is_l7() {
            let requests: u64 = v.backends.iter().filter_map(|b| b.l7.as_ref()).map(|l| l.requests).sum();
            let sessions: u64 = v.backends.iter().filter_map(|b| b.l7.as_ref()).map(|l| l.sessions).sum();
            let mut t = format!("{requests} requests, {sessions} sessions assigned");
            if let Some(c) = &v.connections {
                let _ = write!(t, "; {} connections open, {} WebSocket tunnels", c.open, c.tunnels);
                if let Some(tls) = &c.tls {
                    let failed: u64 = tls.failures.iter().map(|(_, n)| n).sum();
                    let _ = write!(t, "; TLS: {} handshakes, {failed} failed", tls.handshakes);
                    for cert in &tls.certificates {
                        let _ = write!(t, "; {} expires in {} days", cert.names.join(", "), cert.days_left);
                    }
                }
            }
            t
        } else {
            format!("{} packets, {} bytes, {} new flows", v.packets, v.bytes, v.new_flows)
        };
        let _ = write!(
            h,
            "<h2>VIP {} {proto} <small>({})</small></h2><p>{}</p>\
             <table><tr><th>backend</th><th>state</th><th>health</th><th>weight</th><th>group</th>\
             <th>share</th><th>route</th><th>domain</th><th>sessions</th><th>requests</th><th>errors</th>\
             <th>latency</th><th>packets</th>{}</tr>",
            esc(&format!("{}{}", v.address, v.name.as_deref().map(|n| format!(" [{n}]")).unwrap_or_default())),
            esc(&mode),
            esc(&traffic),
            if nonce.is_some() { "<th>change</th>" } else { "" }
        );
        for b in &v.backends {
            let state = b.state.to_string();
            let group = if b.backup { format!("backup {}", b.distance) } else { b.distance.to_string() };
            let (share, packets) = if v.kind.is_l7() {
                ("-".to_owned(), "-".to_owned())
            } else {
                (format!("{:.1}%", b.share), b.packets.to_string())
            };
            let (sessions, requests, errors, latency) = match &b.l7 {
                Some(l) => (
                    l.sessions.to_string(),
                    l.requests.to_string(),
                    format!("{}{}", l.errors, if l.retrying { " (retrying)" } else { "" }),
                    format!("{:.1} ms", l.mean_latency_ms),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{state}\">{state}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>\
                 <td>{share}</td><td>{}</td><td>{}</td><td>{sessions}</td><td>{requests}</td><td>{errors}</td>\
                 <td>{latency}</td><td>{packets}</td>{}</tr>",
                esc(&b.l7.as_ref().map_or(b.address.to_string(), |l| l.target.to_string())),
                b.health,
                b.health,
                b.weight,
                esc(&group),
                esc(b.route.as_deref().unwrap_or("")),
                esc(b.domain.as_deref().unwrap_or("")),
                nonce.map(|n| form(v, b, n)).unwrap_or_default(),
            );
        }
        h.push_str("</table>");
    }
    let passed: Vec<String> =
        s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{} {n}", esc(r))).collect();
    let icmp: Vec<String> = s.icmp.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{} {n}", esc(r))).collect();
    let _ = write!(
        h,
        "<h2>Not balanced</h2><p>{}</p><h2>ICMP</h2><p>{}</p><p><a href=\"/status.json\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        if passed.is_empty() { "nothing".into() } else { passed.join(", ") },
        if icmp.is_empty() { "nothing".into() } else { icmp.join(", ") }
    );
    h
}
