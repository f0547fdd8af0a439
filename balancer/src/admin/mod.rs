//! The admin address (127.0.0.1 by default): `/metrics` for Prometheus, `/status` for people
//! (like Apache's balancer-manager or `mod_jk`'s status worker; with `admin = true` it can change
//! members, see `change`) and `/status.json` for scripts. All three render the same typed
//! status, asked of the daemon's loop at each request (`StatusCall`: no JSON in between).

mod change;
mod page;

pub use page::html;

use std::{convert::Infallible, net::SocketAddr};

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
    async fn ask(&self, request: Request) -> Result<(), Refused> {
        let (tx, rx) = oneshot::channel();
        if self.calls.send((request, tx)).await.is_err() {
            return Err(Refused::ShuttingDown);
        }
        let answer = rx.await.map_err(|_| Refused::ShuttingDown)?.response;
        if answer.ok { Ok(()) } else { Err(Refused::Daemon(answer.error.unwrap_or_default())) }
    }
}

/// Why a change from the page was not made.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The daemon's loop is gone (it is stopping).
    #[error("shutting down")]
    ShuttingDown,
    /// The daemon refused it: its message.
    #[error("{0}")]
    Daemon(String),
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
