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
mod relay;
pub mod splice;
mod tunnel;
pub mod upstream;

use std::{cell::RefCell, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{
    io::AsyncWriteExt as _,
    net::TcpStream,
    time::{Instant, Sleep},
};
use tracing::debug;

use super::{proxy::Site, server::VipLive, stream::ClientStream, tls};

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

/// Who is at the other end of a client connection.
pub struct Client {
    /// The client's address: the socket's peer, or the source a PROXY header gave.
    pub addr: SocketAddr,
    /// The handshake, on a TLS VIP.
    pub tls: Option<Box<tls::Session>>,
    /// ALPN chose HTTP/2.
    pub h2: bool,
    /// HTTP/2 with prior knowledge may be served (not where backends get a PROXY header: the
    /// HTTP/2 path cannot send one, so such a preface is refused as a malformed request).
    pub h2c: bool,
}

/// One client connection.
struct Conn<S> {
    stream: S,
    peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` writes it.
    client_ip: String,
    /// Hash mode's key for this client.
    client_key: u64,
    /// The handshake, on a TLS VIP (`X-Forwarded-Proto`, the access log).
    tls: Option<Box<tls::Session>>,
    /// What the client sent that has not been consumed: the head being served (kept until its
    /// response arrives, so a retry needs no copy), its body, pipelined requests.
    inbuf: Vec<u8>,
    /// The VIP's state as this connection last read it: taken again only when it changed, so
    /// requests do not all write one reference count.
    vip: Option<Arc<Site>>,
    /// The connection's one timer.
    timer: Pin<Box<Sleep>>,
    limits: Limits,
}

/// Writes `bytes` to the client and pushes them out (TLS keeps records it could not send
/// until flushed).
async fn write_out<S: ClientStream>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
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

/// What ended an idle connection's wait.
enum Woke {
    /// Bytes (or the end) arrived.
    Readable,
    /// The keep-alive time ran out.
    Idle,
    /// The daemon is stopping.
    Stop,
}

/// Serves one client connection until it closes, fails, idles out, or `shutdown` turns true
/// (then the request being served finishes first).
///
/// Not an `async fn`: the arguments go into the connection's state here, so the task does not
/// also keep them in slots of its own for its whole life.
pub fn serve<S: ClientStream>(
    stream: S,
    client: Client,
    state: Arc<ArcSwap<Site>>,
    limits: Limits,
    live: &VipLive,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = Option<S>> + '_ {
    let (h2, h2c) = (client.h2, client.h2c);
    let c = Conn {
        stream,
        peer: client.addr,
        client_ip: client.addr.ip().to_string(),
        client_key: super::session::client_key(client.addr.ip()),
        tls: client.tls,
        inbuf: Vec::new(),
        vip: None,
        timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
        limits,
    };
    run(c, (h2, h2c), state, live, shutdown)
}

/// Serves the connection; gives its stream back when it ended on HTTP/1 (for TLS's
/// `close_notify`), `None` when it was handed to HTTP/2 or never spoke.
async fn run<S: ClientStream>(
    mut c: Conn<S>,
    (h2, h2c): (bool, bool),
    state: Arc<ArcSwap<Site>>,
    live: &VipLive,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<S> {
    use std::sync::atomic::Ordering::Relaxed;
    let until = Instant::now() + c.limits.header_timeout;
    // Not cut short by a stop: a client the daemon accepted has sent, or is sending, a request
    // that deserves its answer (it cannot know a restart began). Bounded by the head timeout.
    // Over TLS, ALPN has said which protocol comes.
    let protocol = match c.stream.plain() {
        _ if h2 => Protocol::Http2,
        Some(tcp) if h2c => Box::pin(sniff(tcp, &mut c.timer, until)).await,
        _ => Protocol::Http1,
    };
    match protocol {
        Protocol::Silent => {
            live.head_timeouts.fetch_add(1, Relaxed);
            debug!(peer = %c.peer, "closed: no request within the header timeout");
            return None;
        }
        // Boxed, as the exchange below: hyper's connection state is larger still.
        Protocol::Http2 => {
            let (stream, peer, tls, limits) = (c.stream, c.peer, c.tls, c.limits);
            Box::pin(super::proxy::serve_h2(stream, peer, tls, state, limits, shutdown)).await;
            return None;
        }
        Protocol::Http1 => {}
    }
    'serve: {
        c.inbuf = take_buffer();
        // Until its first request is served, a connection waits for it even when a stop begins;
        // after that, a stop closes it between requests.
        let mut served = false;
        loop {
            if c.inbuf.is_empty() {
                // Idle between requests: no buffer held, and no future but the stop signal's.
                give_buffer(std::mem::take(&mut c.inbuf));
                if served && *shutdown.borrow() {
                    break 'serve;
                }
                c.timer.as_mut().reset(Instant::now() + c.limits.header_timeout);
                let woke = {
                    let changed = shutdown.changed();
                    tokio::pin!(changed);
                    std::future::poll_fn(|cx| {
                        use std::task::Poll;
                        if c.stream.poll_idle(cx).is_ready() {
                            return Poll::Ready(Woke::Readable);
                        }
                        if served && changed.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::Stop);
                        }
                        if c.timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::Idle);
                        }
                        Poll::Pending
                    })
                    .await
                };
                match woke {
                    Woke::Readable => {}
                    Woke::Idle if !served => {
                        live.head_timeouts.fetch_add(1, Relaxed);
                        debug!(peer = %c.peer, "closed: no request within the header timeout");
                        break 'serve;
                    }
                    Woke::Idle => {
                        debug!(peer = %c.peer, "closed: idle for the keep-alive time");
                        break 'serve;
                    }
                    Woke::Stop => break 'serve,
                }
                c.inbuf = take_buffer();
            }
            // Boxed: the exchange's state is large, and an idle connection's task then holds only
            // the connection's own.
            let next = Box::pin(exchange::serve(&mut c, &state, live)).await;
            served = true;
            match next {
                Next::Keep if !*shutdown.borrow() => {}
                Next::Keep | Next::Close => break 'serve,
            }
        }
    }
    give_buffer(std::mem::take(&mut c.inbuf));
    Some(c.stream)
}

#[cfg(test)]
mod tests {
    /// What an idle keep-alive connection costs is mostly its task: the state kept across the
    /// wait for its next request. HAProxy keeps about 1.1 KiB per idle connection; the task,
    /// its timer and its socket's registration must stay under that.
    #[tokio::test]
    async fn an_idle_connections_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let config: crate::config::Config = toml::from_str(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\n",
        )
        .unwrap();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let vip = crate::l7::proxy::Vip {
            id: 0,
            address: addr,
            name: None,
            l7: config.vips[0].l7.clone().unwrap(),
            pool: crate::l7::select::Pool::new(vec![], crate::config::LbMethod::Byrequests, false, false),
            signer: None,
            client,
            targets: vec![],
            tls: None,
        };
        let site = crate::l7::proxy::Site::new(vec![vip], crate::l7::router::Router::default());
        let state = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(site));
        let live = super::VipLive::default();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let limits = super::Limits { header_timeout: std::time::Duration::from_secs(1), max_head: 1000 };
        let client = super::Client { addr, tls: None, h2: false, h2c: true };
        let task = super::serve(stream, client, state, limits, &live, shutdown);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 640, "a connection's task is {size} bytes");
    }
}
