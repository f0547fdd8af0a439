//! The admin address (127.0.0.1 by default): `/metrics` for Prometheus, `/status` for people
//! (like Apache's balancer-manager or `mod_jk`'s status worker, read-only) and `/status.json` for
//! scripts. All three render the same status snapshot, asked of the daemon at each request.

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
    control::{
        protocol::{Request, Status},
        server::Call,
    },
    metrics,
};

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
pub fn serve(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    calls: mpsc::Sender<Call>,
) -> std::io::Result<Admin> {
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
            let calls = calls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| page(req, calls.clone()));
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

async fn page(
    req: HttpRequest<hyper::body::Incoming>,
    calls: mpsc::Sender<Call>,
) -> Result<HttpResponse<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/status" | "/status.json" | "/") {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", "try /status, /status.json or /metrics\n".into()));
    }
    let (tx, rx) = oneshot::channel();
    if calls.send((Request::Status, tx)).await.is_err() {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n".into()));
    }
    let Some(status) =
        rx.await.ok().map(|r| r.response).filter(|r| r.ok).and_then(|r| serde_json::from_value::<Status>(r.data).ok())
    else {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "status unavailable\n".into()));
    };
    Ok(match path {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::render(&status),
        ),
        "/status.json" => {
            reply(StatusCode::OK, "application/json", serde_json::to_string_pretty(&status).unwrap_or_default())
        }
        _ => reply(StatusCode::OK, "text/html; charset=utf-8", html(&status)),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The status page.
pub fn html(s: &Status) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>balancer status</title>\
         <meta http-equiv=\"refresh\" content=\"10\"><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}\
         h2{font-size:16px;margin-top:2em}table{border-collapse:collapse;min-width:60%}\
         th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}\
         th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
         .up{color:#1a7f37}.down{color:#cf222e;font-weight:bold}.drain{color:#9a6700}\
         .stopped{color:#777}</style></head><body><h1>balancer</h1>",
    );
    for v in &s.vips {
        let proto = format!("{:?}", v.protocol).to_lowercase();
        let mode = match &v.sticky {
            Some(m) => format!("L7, sticky {m}"),
            None => format!("L4 {}, Maglev {}", format!("{:?}", v.forwarding).to_lowercase(), v.ring_size),
        };
        let traffic = if v.sticky.is_some() {
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
             <th>latency</th><th>packets</th></tr>",
            esc(&v.address.to_string()),
            esc(&mode),
            esc(&traffic)
        );
        for b in &v.backends {
            let state = format!("{:?}", b.state).to_lowercase();
            let group = if b.backup { format!("backup {}", b.distance) } else { b.distance.to_string() };
            let (share, packets) = if v.sticky.is_some() {
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
                 <td>{latency}</td><td>{packets}</td></tr>",
                esc(&b.l7.as_ref().map_or(b.address.to_string(), |l| l.target.to_string())),
                esc(&b.health),
                esc(&b.health),
                b.weight,
                esc(&group),
                esc(b.route.as_deref().unwrap_or("")),
                esc(b.domain.as_deref().unwrap_or("")),
            );
        }
        h.push_str("</table>");
    }
    let passed: Vec<String> =
        s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{} {n}", esc(r))).collect();
    let _ = write!(
        h,
        "<h2>Not balanced</h2><p>{}</p><p><a href=\"/status.json\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        if passed.is_empty() { "nothing".into() } else { passed.join(", ") }
    );
    h
}
