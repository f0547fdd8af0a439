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

/// Why a check failed, for the log line of a flip.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailed {
    /// The whole check took longer than `timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The TCP connection was refused or failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Sending the request or reading the answer failed.
    #[error("{what}: {source}")]
    Io {
        /// `send` or `receive`.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The backend does not speak HTTP/1 the way hyper's client understands.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// `path` is not a request target.
    #[error("health check path {path:?}: {source}")]
    Path {
        /// The configured path.
        path: String,
        /// Why it is not one.
        source: hyper::http::Error,
    },
    /// The answer's status is outside `expect`.
    #[error("{protocol} status {status}, expected {}-{}", .expect.0, .expect.1)]
    Status {
        /// `HTTP` or `AJP`.
        protocol: &'static str,
        /// What came back.
        status: u16,
        /// The configured range.
        expect: (u16, u16),
    },
    /// Tomcat refuses a request without the connector's secret with 403.
    #[error(
        "AJP status 403, expected {}-{}: the connector refuses the request (is `secret` the connector's?)",
        .0.0, .0.1
    )]
    SecretRefused((u16, u16)),
    /// An AJP answer of the wrong kind.
    #[error("answered {request} with {answer}")]
    Unexpected {
        /// What was sent.
        request: &'static str,
        /// What came back, as the parser names it.
        answer: String,
    },
    /// Bytes that are not AJP, or a request that cannot be encoded.
    #[error("not an AJP connector: {0}")]
    NotAjp(#[from] ajp::AjpError),
    /// The check's own request does not fit an AJP packet (a very long `path`).
    #[error("health check request: {0}")]
    Encode(ajp::AjpError),
    /// The connection closed before a whole answer.
    #[error("connection closed before the AJP response head")]
    Closed,
    /// `kind = "tunnel"`.
    #[error(transparent)]
    Tunnel(#[from] super::tunnel::TunnelFailed),
}

/// Runs `check` against `addr`; `Err` says why it failed, for the log line of a flip.
pub async fn run(check: &Check, addr: SocketAddr) -> Result<(), CheckFailed> {
    let limit = Duration::from_millis(check.health.timeout_ms());
    if let (Some(t), std::net::IpAddr::V4(backend)) = (check.tunnel, addr.ip()) {
        // Keeps its own deadline, so its failure can say what did not answer.
        return match tokio::task::spawn_blocking(move || super::tunnel::probe(t, backend, limit)).await {
            Ok(r) => Ok(r?),
            // Only a panic or the runtime's shutdown stops the task: no answer either way.
            Err(_) => Err(CheckFailed::Timeout(check.health.timeout_ms())),
        };
    }
    match timeout(limit, attempt(check, addr)).await {
        Ok(r) => r,
        Err(_) => Err(CheckFailed::Timeout(check.health.timeout_ms())),
    }
}

async fn attempt(Check { health: check, ajp, .. }: &Check, addr: SocketAddr) -> Result<(), CheckFailed> {
    let mut stream = TcpStream::connect(addr).await.map_err(CheckFailed::Connect)?;
    match (check.kind, ajp) {
        (CheckKind::Tcp | CheckKind::Tunnel, _) => Ok(()),
        (CheckKind::AjpCping, _) => cping(&mut stream).await,
        (CheckKind::Http, Some(connector)) => ajp_get(&mut stream, check, connector, addr).await,
        (CheckKind::Http, None) => http_get(stream, check, addr).await,
    }
}

/// `GET path` over HTTP/1.1 with hyper's client connection (a whole, parsed response head,
/// however the bytes arrive); its status must be in `expect`. The body is not read: the
/// connection is dropped with the response.
async fn http_get(stream: TcpStream, check: &HealthCheck, addr: SocketAddr) -> Result<(), CheckFailed> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(&check.path)
        .header(hyper::header::HOST, addr.ip().to_string())
        .header(hyper::header::USER_AGENT, "balancer-health")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|source| CheckFailed::Path { path: check.path.clone(), source })?;
    let response = sender.send_request(request).await;
    driver.abort();
    let status = response?.status().as_u16();
    let (lo, hi) = check.expect;
    if (lo..=hi).contains(&status) {
        Ok(())
    } else {
        Err(CheckFailed::Status { protocol: "HTTP", status, expect: check.expect })
    }
}

/// `GET path` as an AJP forward request with the connector's secret; the status of the
/// container's `SEND_HEADERS` must be in `expect`. Tomcat answers a missing or wrong secret
/// with 403 before any application sees the request.
async fn ajp_get(
    stream: &mut TcpStream,
    check: &HealthCheck,
    connector: &Connector,
    addr: SocketAddr,
) -> Result<(), CheckFailed> {
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
    ajp::forward_request(&request, &mut packet).map_err(CheckFailed::Encode)?;
    stream.write_all(&packet).await.map_err(io("send"))?;
    let mut buf = Vec::with_capacity(ajp::MAX_PACKET);
    loop {
        match ajp::parse(&buf) {
            Ok(Some((ajp::Message::SendHeaders { status, .. }, _))) => {
                let (lo, hi) = check.expect;
                return match status {
                    _ if (lo..=hi).contains(&status) => Ok(()),
                    403 => Err(CheckFailed::SecretRefused(check.expect)),
                    _ => Err(CheckFailed::Status { protocol: "AJP", status, expect: check.expect }),
                };
            }
            Ok(Some((other, _))) => {
                return Err(CheckFailed::Unexpected { request: "an AJP request", answer: format!("{other:?}") });
            }
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        if stream.read_buf(&mut buf).await.map_err(io("receive"))? == 0 {
            return Err(CheckFailed::Closed);
        }
    }
}

/// `CPING` on `stream`; `Ok` on a `CPONG`. The connector answers it without the request
/// `secret`, so a wrong secret shows in requests (403), not here.
async fn cping(stream: &mut TcpStream) -> Result<(), CheckFailed> {
    stream.write_all(&ajp::CPING).await.map_err(io("send"))?;
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.map_err(io("receive"))?;
    match ajp::parse(&buf)? {
        Some((ajp::Message::CPong, _)) => Ok(()),
        other => Err(CheckFailed::Unexpected { request: "CPING", answer: format!("{other:?}, not CPONG") }),
    }
}

/// An I/O failure while `what` (`send`, `receive`).
fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CheckFailed {
    move |source| CheckFailed::Io { what, source }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    /// A server that answers one connection with `chunks`, written one at a time.
    async fn answering(chunks: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await;
            for c in chunks {
                let _ = s.write_all(c).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        addr
    }

    fn http(path: &str) -> Check {
        let health = HealthCheck {
            kind: CheckKind::Http,
            port: None,
            path: path.into(),
            expect: (200, 399),
            interval_ms: 1000,
            timeout_ms: Some(1000),
            rise: 1,
            fall: 1,
            slowstart_s: 0,
        };
        Check { health, ajp: None, tunnel: None }
    }

    /// Issue 15: the HTTP check read the first 12 bytes by hand, so a backend that sent a
    /// status line and then a broken head passed. It is hyper's client now: the whole head is
    /// parsed, however it arrives.
    #[tokio::test]
    async fn the_status_of_a_whole_response_head_decides() {
        let ok = answering(vec![b"HTTP/1.1 2", b"04 No Content\r\n", b"\r\n"]).await;
        let check = http("/");
        let run = async |_: &Check, addr| run(&check, addr).await.map_err(|e| e.to_string());
        assert_eq!(run(&http("/"), ok).await, Ok(()), "a head split across writes");
        let busy = answering(vec![b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"]).await;
        assert_eq!(run(&http("/"), busy).await, Err("HTTP status 503, expected 200-399".into()));
        let broken = answering(vec![b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"]).await;
        let e = run(&http("/"), broken).await.unwrap_err();
        assert!(e.starts_with("HTTP:"), "a broken head fails: {e}");
        let garbage = answering(vec![b"SSH-2.0-OpenSSH_9.2\r\n"]).await;
        assert!(run(&http("/"), garbage).await.is_err(), "not HTTP at all");
    }
}
