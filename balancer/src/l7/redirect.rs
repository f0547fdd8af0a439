//! A TLS VIP's cleartext port (`redirect_http`): every request gets a `301` to the same host
//! and path over HTTPS, and the connection closes.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::debug;

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Connections the redirect port serves at once; beyond, new ones are closed unanswered (a
/// flood on the cleartext port must not take the descriptors the TLS VIP needs).
const MAX_CONNECTIONS: usize = 1024;

/// The response to the request head in `raw` (complete or not), for a TLS VIP on `https_port`;
/// `None` while the head is incomplete.
pub fn answer(raw: &[u8], https_port: u16) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let bad = || b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec();
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if raw.len() < MAX_HEAD => return None,
        _ => return Some(bad()),
    }
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()).filter(|h| valid_host(h)) else {
        return Some(bad());
    };
    // The host without its port (`[v6]:80` keeps its brackets), then the VIP's TLS port.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let path = req.path.filter(|p| p.starts_with('/')).unwrap_or("/");
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let location = format!("https://{name}{port}{path}");
    Some(
        format!(
            "HTTP/1.1 301 Moved Permanently\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// A `Host` value that can go into a `Location` unchanged: a name or address, an optional port.
fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// Answers every connection of `listener` with a redirect to port `https_port`.
pub async fn serve(listener: TcpListener, https_port: u16, header_timeout: Duration) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "redirect port: at its connection limit");
            continue;
        };
        tokio::spawn(async move {
            if tokio::time::timeout(header_timeout, one(stream, https_port)).await.is_err() {
                debug!(%peer, "redirect port: no request head in time");
            }
            drop(permit);
        });
    }
}

async fn one(mut stream: TcpStream, https_port: u16) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(response) = answer(&buf, https_port) {
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// The socket address of a VIP's redirect port.
pub fn address(vip: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(vip.ip(), port)
}

#[cfg(test)]
mod tests {
    use super::answer;

    fn location(raw: &[u8], port: u16) -> String {
        let out = String::from_utf8(answer(raw, port).unwrap()).unwrap();
        out.lines().find_map(|l| l.strip_prefix("location: ")).unwrap_or(out.lines().next().unwrap()).to_owned()
    }

    #[test]
    fn the_same_host_and_path_over_https() {
        assert_eq!(
            location(b"GET /cart?x=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n", 443),
            "https://shop.example/cart?x=1"
        );
        assert_eq!(location(b"GET / HTTP/1.1\r\nHost: shop.example:80\r\n\r\n", 8443), "https://shop.example:8443/");
        assert_eq!(location(b"GET /a HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 443), "https://[2001:db8::1]/a");
        assert_eq!(location(b"GET /a HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n", 443), "https://[2001:db8::1]/a");
    }

    #[test]
    fn a_missing_or_hostile_host_gets_400_and_a_partial_head_waits() {
        assert_eq!(location(b"GET / HTTP/1.1\r\n\r\n", 443), "HTTP/1.1 400 Bad Request");
        assert_eq!(location(b"GET / HTTP/1.1\r\nHost: evil.example/\r\n\r\n", 443), "HTTP/1.1 400 Bad Request");
        assert_eq!(location(b"GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", 443), "HTTP/1.1 400 Bad Request");
        assert!(answer(b"GET / HTTP/1.1\r\nHost: x", 443).is_none());
    }
}
