//! An upgraded connection (WebSocket): after `101 Switching Protocols` the client's and the
//! backend's connections are joined both ways, until both ends have closed, either fails, or
//! no byte has passed either way for the VIP's `tunnel_timeout_s`.
//!
//! A stop does not cut a tunnel: a graceful restart waits for it up to its drain deadline,
//! and the old daemon's exit closes what is left.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};

use super::ClientStream;

/// Bytes each direction reads at once.
const CHUNK: usize = 16 * 1024;

/// Bytes that passed each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    /// From the client to the backend.
    pub up: u64,
    /// From the backend to the client.
    pub down: u64,
}

/// Joins `client` and `backend` until the tunnel ends; returns what passed.
pub async fn run<S: ClientStream>(client: &mut S, backend: &mut TcpStream, idle: Duration) -> Moved {
    let start = Instant::now();
    // Milliseconds from `start` of the last byte either way.
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_backend, mut to_backend) = backend.split();
    let both = async {
        tokio::try_join!(
            pump(&mut from_client, &mut to_backend, &up, (&last, start)),
            pump(&mut from_backend, &mut to_client, &down, (&last, start)),
        )
    };
    let quiet = async {
        loop {
            let until = start + Duration::from_millis(last.load(Relaxed)) + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        _ = both => {}
        () = quiet => tracing::debug!("tunnel closed: idle for tunnel_timeout_s"),
    }
    Moved { up: up.load(Relaxed), down: down.load(Relaxed) }
}

/// Copies `from` to `to` until `from` ends (then `to` is shut for writing: the other side sees
/// the end, and may still answer).
async fn pump<R, W>(from: &mut R, to: &mut W, moved: &AtomicU64, (last, start): (&AtomicU64, Instant)) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        moved.fetch_add(n as u64, Relaxed);
        last.store(start.elapsed().as_millis() as u64, Relaxed);
    }
}
