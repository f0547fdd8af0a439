//! Keep-alive connections to backends, one free list per worker thread.
//!
//! Each worker is a single-threaded runtime, and a connection task never leaves the worker
//! that accepted it, so the worker's idle backend connections sit in a thread-local list: a
//! request takes one and gives it back without a lock, a channel or a second task.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

/// How long an idle backend connection is kept (backends close theirs after 20 s (Tomcat) to
/// 75 s (nginx); one the backend closed first is noticed and dropped).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Idle connections kept per backend and worker.
const MAX_IDLE: usize = 1024;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// What an idle connection may serve: requests to its backend, and, when it started with a
/// PROXY header naming one client, that client's only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The backend.
    pub backend: SocketAddr,
    /// The client its PROXY header named.
    pub client: Option<SocketAddr>,
}

thread_local! {
    static IDLE: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A backend connection of this worker.
pub struct Upstream {
    /// The connection.
    pub stream: TcpStream,
    /// Whether it served a request before: a reused connection that fails without a byte of
    /// answer was most likely closed by the backend while idle, and the request may be sent
    /// again on a fresh one without blaming the backend.
    pub reused: bool,
}

/// An idle connection to `addr`, the most recently used first (its caches are warm), or
/// `None`. Connections that the backend closed, or that sat idle too long, are dropped.
pub fn take(addr: Key) -> Option<Upstream> {
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // The reactor knows whether the socket became readable while idle (a FIN, or
            // bytes a backend should not have sent); only then does this read reach the kernel.
            let mut probe = [0u8; 1];
            match c.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Some(Upstream { stream: c.stream, reused: true });
                }
                _ => {}
            }
        }
        None
    })
}

/// Gives `stream`, which has just completed an exchange, back to this worker's list for `addr`.
pub fn put(addr: Key, stream: TcpStream) {
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(Idle { stream, since: Instant::now() });
        }
    });
}

/// Drops this worker's connections that sat idle past `IDLE_TIMEOUT` (run periodically, so a
/// backend that no longer gets requests does not keep descriptors open).
pub fn sweep() {
    IDLE.with_borrow_mut(|idle| {
        idle.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    });
}

/// Idle connections this worker holds (for tests and status).
pub fn idle_count() -> usize {
    IDLE.with_borrow(|idle| idle.values().map(Vec::len).sum())
}

/// A new connection to `addr` within `timeout`, started with `proxy` (a PROXY header) if
/// given.
///
/// # Errors
/// The connection was refused, failed, or timed out.
pub async fn connect(addr: SocketAddr, timeout: Duration, proxy: Option<&[u8]>) -> std::io::Result<Upstream> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    let until = tokio::time::Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(until, TcpStream::connect(addr)).await.map_err(|_| timed_out())??;
    // Requests are written whole; Nagle would only delay the last segment of a large one.
    stream.set_nodelay(true)?;
    if let Some(header) = proxy {
        use tokio::io::AsyncWriteExt as _;
        tokio::time::timeout_at(until, stream.write_all(header)).await.map_err(|_| timed_out())??;
    }
    Ok(Upstream { stream, reused: false })
}
