//! A response body from the backend to the client: a `Content-Length` body (in one write with
//! its head when it is all there, else streamed, or through a pipe), or a chunked body or one
//! that ends when the backend closes.

use std::time::Duration;

use tokio::{io::AsyncReadExt as _, net::TcpStream, time::Instant};

use super::{ClientStream, Conn, chunked::Decoder, splice, within, write_out};

/// Bytes read at once while relaying a body.
const RELAY_CHUNK: usize = 64 * 1024;

/// A response body relayed whole.
pub(super) struct Relayed {
    /// Body bytes the client got.
    pub bytes: u64,
    /// Whether the backend sent nothing beyond the body (else its connection is not reused).
    pub reusable: bool,
}

/// Relays a `Content-Length` body of `n` bytes whose first bytes are `rbuf[start..]`, after the
/// head in `out` (which is left holding what remains to write), through a pipe when
/// `may_splice` and it is large; `None` if either side failed.
pub(super) async fn relay_length<S: ClientStream>(
    c: &mut Conn<S>,
    (up, may_splice): (&mut TcpStream, bool),
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    (start, n): (usize, u64),
    timeout: Duration,
) -> Option<Relayed> {
    let body = &rbuf[start..];
    let take = (body.len() as u64).min(n) as usize;
    let mut reusable = body.len() as u64 <= n;
    out.extend_from_slice(&body[..take]);
    if take as u64 == n {
        // The common case: head and body go out in one write, by the caller.
        return Some(Relayed { bytes: n, reusable });
    }
    within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, out)).await?.ok()?;
    out.clear();
    let mut left = n - take as u64;
    if may_splice
        && left >= splice::MIN
        && let Some(client) = c.stream.plain()
        && let Ok(mut pipe) = splice::Pipe::take()
    {
        let moved = splice::relay(up, client, &mut pipe, left, &mut c.timer, timeout).await;
        pipe.give();
        return moved.ok().map(|()| Relayed { bytes: n, reusable });
    }
    while left > 0 {
        rbuf.clear();
        rbuf.reserve(RELAY_CHUNK);
        let got = within(&mut c.timer, Instant::now() + timeout, up.read_buf(rbuf)).await?.ok().filter(|&g| g > 0)?;
        let take = (got as u64).min(left) as usize;
        reusable &= got as u64 <= left;
        within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, &rbuf[..take])).await?.ok()?;
        left -= take as u64;
    }
    Some(Relayed { bytes: n, reusable })
}

/// Relays a chunked body (through `decoder`) or one that ends when the backend closes
/// (`decoder` is `None`), starting at `rbuf[start..]`; `out` holds the head to write first.
pub(super) async fn relay_stream<S: ClientStream>(
    c: &mut Conn<S>,
    up: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    mut start: usize,
    mut decoder: Option<Decoder>,
    timeout: Duration,
) -> Option<Relayed> {
    let (mut bytes, mut reusable) = (0u64, true);
    loop {
        let before = out.len();
        let pending = &rbuf[start..];
        let ended = if let Some(d) = &mut decoder {
            let fed = d.feed(pending, out);
            let Ok(used) = fed else {
                // What was valid reaches the client; the connection then closes mid-body.
                let _ = within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, out)).await;
                return None;
            };
            reusable &= used == pending.len();
            d.done()
        } else {
            out.extend_from_slice(pending);
            false
        };
        bytes += (out.len() - before) as u64;
        if ended {
            return Some(Relayed { bytes, reusable });
        }
        if !out.is_empty() {
            within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, out)).await?.ok()?;
            out.clear();
        }
        rbuf.clear();
        start = 0;
        rbuf.reserve(RELAY_CHUNK);
        match within(&mut c.timer, Instant::now() + timeout, up.read_buf(rbuf)).await?.ok()? {
            // The end of an until-close body; a chunked one cut short fails.
            0 if decoder.is_none() => return Some(Relayed { bytes, reusable: false }),
            0 => return None,
            _ => {}
        }
    }
}
