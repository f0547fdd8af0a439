//! One health check against one backend.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::timeout,
};

use crate::{
    config::{CheckKind, HealthCheck},
    l7::ajp::{self, Connector},
};

/// One backend's check: the configured one, and how the backend is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What to check, how often.
    pub health: HealthCheck,
    /// Set when the backend speaks AJP: an `http` check goes as an AJP request, with the
    /// connector's secret, so a wrong secret shows as a failed check.
    pub ajp: Option<Connector>,
    /// Set for `kind = "tunnel"`: the VIP and outer source the SYN goes with.
    pub tunnel: Option<super::tunnel::Tunnel>,
}

/// Runs `check` against `addr`; `Err` says why it failed, for the log line of a flip.
pub async fn run(check: &Check, addr: SocketAddr) -> Result<(), String> {
    let limit = Duration::from_millis(check.health.timeout_ms());
    if let (Some(t), std::net::IpAddr::V4(backend)) = (check.tunnel, addr.ip()) {
        // Keeps its own deadline, so its failure can say what did not answer.
        return tokio::task::spawn_blocking(move || super::tunnel::probe(t, backend, limit))
            .await
            .map_err(|e| format!("tunnel check task: {e}"))?;
    }
    match timeout(limit, attempt(check, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", check.health.timeout_ms())),
    }
}

async fn attempt(Check { health: check, ajp, .. }: &Check, addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    match (check.kind, ajp) {
        (CheckKind::Tcp | CheckKind::Tunnel, _) => return Ok(()),
        (CheckKind::AjpCping, _) => return cping(&mut stream).await,
        (CheckKind::Http, Some(connector)) => return ajp_get(&mut stream, check, connector, addr).await,
        (CheckKind::Http, None) => {}
    }
    let host = addr.ip();
    let request = format!("GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: balancer-health\r\n\r\n", check.path);
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 32];
    let mut n = 0;
    // The status line's first 12 bytes ("HTTP/1.1 200") are all that is needed.
    while n < 12 {
        let got = stream.read(&mut head[n..]).await.map_err(|e| format!("receive: {e}"))?;
        if got == 0 {
            return Err("connection closed before a status line".into());
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {line:?}"))?;
    let (lo, hi) = check.expect;
    if (lo..=hi).contains(&status) { Ok(()) } else { Err(format!("HTTP status {status}, expected {lo}-{hi}")) }
}

/// `GET path` as an AJP forward request with the connector's secret; the status of the
/// container's `SEND_HEADERS` must be in `expect`. Tomcat answers a missing or wrong secret
/// with 403 before any application sees the request.
async fn ajp_get(
    stream: &mut TcpStream,
    check: &HealthCheck,
    connector: &Connector,
    addr: SocketAddr,
) -> Result<(), String> {
    let host = addr.ip().to_string();
    let (uri, query) = check.path.split_once('?').map_or((&check.path[..], None), |(p, q)| (p, Some(q)));
    let headers: [(&[u8], &[u8]); 2] = [(b"host", host.as_bytes()), (b"user-agent", b"balancer-health")];
    let request = ajp::ForwardRequest {
        method: "GET",
        protocol: "HTTP/1.1",
        uri,
        query,
        remote_addr: "127.0.0.1",
        remote_port: 0,
        server_name: &host,
        server_port: addr.port(),
        is_ssl: false,
        headers: &headers,
        route: None,
        secret: connector.secret.as_deref(),
    };
    let mut packet = Vec::new();
    ajp::forward_request(&request, &mut packet).map_err(|e| e.to_string())?;
    stream.write_all(&packet).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(ajp::MAX_PACKET);
    loop {
        match ajp::parse(&buf) {
            Ok(Some((ajp::Message::SendHeaders { status, .. }, _))) => {
                let (lo, hi) = check.expect;
                return match status {
                    _ if (lo..=hi).contains(&status) => Ok(()),
                    403 => Err(format!(
                        "AJP status 403, expected {lo}-{hi}: the connector refuses the request (is `secret` the \
                         connector's?)"
                    )),
                    _ => Err(format!("AJP status {status}, expected {lo}-{hi}")),
                };
            }
            Ok(Some((other, _))) => return Err(format!("answered an AJP request with {other:?}")),
            Ok(None) => {}
            Err(e) => return Err(format!("not an AJP connector: {e}")),
        }
        if stream.read_buf(&mut buf).await.map_err(|e| format!("receive: {e}"))? == 0 {
            return Err("connection closed before the AJP response head".into());
        }
    }
}

/// `CPING` on `stream`; `Ok` on a `CPONG`. The connector answers it without the request
/// `secret`, so a wrong secret shows in requests (403), not here.
async fn cping(stream: &mut TcpStream) -> Result<(), String> {
    use crate::l7::ajp;
    stream.write_all(&ajp::CPING).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
    match ajp::parse(&buf) {
        Ok(Some((ajp::Message::CPong, _))) => Ok(()),
        Ok(other) => Err(format!("answered CPING with {other:?}, not CPONG")),
        Err(e) => Err(format!("not an AJP connector: {e}")),
    }
}
