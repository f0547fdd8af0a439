//! One health check against one backend.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::timeout,
};

use crate::config::{CheckKind, HealthCheck};

/// Runs `check` against `addr`; `Err` says why it failed, for the log line of a flip.
pub async fn run(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let limit = Duration::from_millis(check.timeout_ms());
    match timeout(limit, attempt(check, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", check.timeout_ms())),
    }
}

async fn attempt(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    match check.kind {
        CheckKind::Tcp => return Ok(()),
        CheckKind::AjpCping => return cping(&mut stream).await,
        CheckKind::Http => {}
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
