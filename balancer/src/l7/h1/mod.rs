//! The HTTP/1.1 forwarding path: one task per client connection, which reads each request
//! head once where it lies in the connection's buffer, takes a keep-alive backend connection
//! from its worker's free list, and forwards the original bytes with the edits spliced in.
//!
//! Per request it does only what the request needs: no second task or channel, no header map,
//! no copy of the head unless a retry happens (the head stays in the buffer until the response
//! arrives), values fixed per connection computed once, and one timer per connection, reset
//! for each wait. An idle connection holds no buffer: buffers come from the worker's free
//! list when bytes arrive and go back when the exchange is over.

pub mod chunked;
pub mod edit;
mod exchange;
pub mod head;
pub mod upstream;

use std::{cell::RefCell, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{
    net::TcpStream,
    time::{Instant, Sleep},
};
use tracing::debug;

use super::{proxy::Vip, server::VipLive};

/// Settings a VIP's connections read when they start.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept (or the end of the last response) to a request's first byte, and from its
    /// first byte to its complete head.
    pub header_timeout: Duration,
    /// Largest request head.
    pub max_head: usize,
}

/// What an exchange leaves the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Serve the next request.
    Keep,
    /// Close: the client asked, the framing requires it, or something failed.
    Close,
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` writes it.
    client_ip: String,
    /// Hash mode's key for this client.
    client_key: u64,
    /// What the client sent that has not been consumed: the head being served (kept until its
    /// response arrives, so a retry needs no copy), its body, pipelined requests.
    inbuf: Vec<u8>,
    /// The host the client asked for, for `Location` rewriting.
    host: String,
    /// The connection's one timer.
    timer: Pin<Box<Sleep>>,
    limits: Limits,
}

/// Waits for `f` until `until` on `timer`; `None` if the time ran out first.
async fn within<T>(timer: &mut Pin<Box<Sleep>>, until: Instant, f: impl Future<Output = T>) -> Option<T> {
    if timer.deadline() != until {
        timer.as_mut().reset(until);
    }
    tokio::select! {
        biased;
        r = f => Some(r),
        () = timer.as_mut() => None,
    }
}

/// Size of a buffer taken from the free list.
const BUFFER: usize = 16 * 1024;
/// Buffers a worker keeps for reuse, and the largest it keeps.
const KEPT_BUFFERS: usize = 256;
const KEPT_CAPACITY: usize = 256 * 1024;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer from this worker's free list.
fn take_buffer() -> Vec<u8> {
    BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(BUFFER))
}

/// Gives `buf` back to this worker's free list (or to the allocator).
fn give_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEPT_CAPACITY {
        return;
    }
    buf.clear();
    BUFFERS.with_borrow_mut(|kept| {
        if kept.len() < KEPT_BUFFERS {
            kept.push(buf);
        }
    });
}

/// The connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say it speaks.
enum Protocol {
    Http1,
    Http2,
    /// Nothing arrived in time, or the client left.
    Silent,
}

/// Waits for the first bytes and tells HTTP/2's preface from HTTP/1.
async fn sniff(stream: &TcpStream, timer: &mut Pin<Box<Sleep>>, until: Instant) -> Protocol {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        match within(timer, until, stream.peek(&mut first)).await {
            Some(Ok(0) | Err(_)) | None => return Protocol::Silent,
            Some(Ok(n)) if n == H2_PREFACE.len() && first == H2_PREFACE => return Protocol::Http2,
            Some(Ok(n)) if n < H2_PREFACE.len() && first[..n] == H2_PREFACE[..n] => {
                // A preface split across segments (rare): wait for the rest.
                if within(timer, until, tokio::time::sleep(Duration::from_millis(2))).await.is_none() {
                    return Protocol::Silent;
                }
            }
            Some(Ok(_)) => return Protocol::Http1,
        }
    }
}

/// Serves one client connection until it closes, fails, idles out, or `shutdown` turns true
/// (then the request being served finishes first).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ArcSwap<Vip>>,
    limits: Limits,
    live: &VipLive,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut timer = Box::pin(tokio::time::sleep(limits.header_timeout));
    let until = Instant::now() + limits.header_timeout;
    let protocol = tokio::select! {
        p = sniff(&stream, &mut timer, until) => p,
        () = super::server::stopping(&mut shutdown) => return,
    };
    match protocol {
        Protocol::Silent => {
            live.head_timeouts.fetch_add(1, Relaxed);
            debug!(%peer, "closed: no request within the header timeout");
            return;
        }
        Protocol::Http2 => return super::proxy::serve_h2(stream, peer, state, limits, shutdown).await,
        Protocol::Http1 => {}
    }
    let mut c = Conn {
        stream,
        peer,
        client_ip: peer.ip().to_string(),
        client_key: super::session::client_key(peer.ip()),
        inbuf: take_buffer(),
        host: String::new(),
        timer,
        limits,
    };
    loop {
        if c.inbuf.is_empty() {
            // Idle between requests: no buffer held, one timer armed.
            give_buffer(std::mem::take(&mut c.inbuf));
            let until = Instant::now() + limits.header_timeout;
            let waited = tokio::select! {
                r = within(&mut c.timer, until, c.stream.readable()) => r,
                () = super::server::stopping(&mut shutdown) => return,
            };
            if !matches!(waited, Some(Ok(()))) {
                debug!(%peer, "closed: idle for the keep-alive time");
                return;
            }
            c.inbuf = take_buffer();
        }
        match exchange::serve(&mut c, &state, live).await {
            Next::Keep if !*shutdown.borrow() => {}
            Next::Keep | Next::Close => break,
        }
    }
    give_buffer(std::mem::take(&mut c.inbuf));
}
