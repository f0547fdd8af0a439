//! The exchange's upstream phases when the backend speaks AJP/1.3 (`l7::ajp` holds the
//! codec): the forward request instead of an HTTP head, the request body as the container
//! asks for it (`GET_BODY_CHUNK`), and the container's `SEND_HEADERS`, `SEND_BODY_CHUNK` and
//! `END_RESPONSE` turned into the HTTP/1.1 response the client gets, through the same
//! response filter as an HTTP backend's.
//!
//! The session, the choice of backend, retries and failover are the exchange's own, so they
//! behave exactly as with HTTP backends; only the bytes on the backend connection differ.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};

use super::{
    super::{
        ClientStream, Conn, Next,
        chunked::{self, Decoder},
        edit,
        head::{self, Framing},
        upstream::{self, Upstream},
        within, write_out,
    },
    Failure, Filtered, MAX_RESPONSE_HEAD, Plan, Responded, SendError, Step, continue_if_expected, malformed,
    read_client,
};
use crate::l7::{
    ajp::{self, AjpError, Connector, ForwardRequest, Message},
    proxy::{Site, Vip},
    router::without_port,
};

/// How long a response head waits for the first of its body before it goes out alone.
const HEAD_WAIT: Duration = Duration::from_millis(2);

/// Appends the forward-request packet for `req` to `out`.
pub(super) fn forward<S: ClientStream>(
    out: &mut Vec<u8>,
    req: &head::Request<'_, '_>,
    edits: &edit::RequestEdits<'_>,
    (c, vip, route, connector): (&Conn<S>, &Vip, Option<&str>, &Connector),
) -> Result<(), AjpError> {
    let mut scratch = Vec::new();
    let headers = edit::ajp_headers(req, edits, &mut scratch);
    let target = edits.target.unwrap_or(req.target);
    let (uri, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let asked = edits.forwarded_host.and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
    let forward = ForwardRequest {
        method: req.method,
        protocol: if req.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
        uri,
        query,
        remote_addr: &c.client_ip,
        remote_port: c.peer.port(),
        server_name: without_port(asked),
        server_port: vip.address.port(),
        is_ssl: c.tls.is_some(),
        headers: &headers,
        route,
        secret: connector.secret.as_deref(),
    };
    ajp::forward_request(&forward, out)
}

/// The request body, handed to the container a packet at a time as it asks.
pub(super) struct Body {
    framing: Framing,
    /// Where the body not yet sent starts in `c.inbuf`.
    pos: usize,
    /// `Length`: bytes not yet sent.
    left: u64,
    /// `Chunked`: the decoder, and data decoded but not yet sent.
    decoder: Option<Decoder>,
    pending: Vec<u8>,
    /// The body was read past what the buffer held: the head is gone from it.
    streamed: bool,
    /// Body bytes sent.
    pub(super) sent: u64,
}

impl Body {
    pub(super) fn new(plan: &Plan) -> Self {
        let (left, decoder) = match plan.framing {
            Framing::Length(n) => (n, None),
            Framing::Chunked => (0, Some(Decoder::new(chunked::Output::Data))),
            Framing::None | Framing::UntilClose => (0, None),
        };
        Self { framing: plan.framing, pos: plan.head_len, left, decoder, pending: Vec::new(), streamed: false, sent: 0 }
    }

    /// Whether the whole body has been sent.
    pub(super) fn done(&self) -> bool {
        match &self.decoder {
            Some(d) => d.done() && self.pending.is_empty(),
            None => self.left == 0,
        }
    }

    /// How much of `c.inbuf` the request has used.
    pub(super) fn used(&self) -> usize {
        self.pos
    }

    /// Appends the next body packet, at most `max` bytes of data (the empty packet once the
    /// body is all sent), reading the client when the buffer has no more of it.
    async fn next<S: ClientStream>(
        &mut self,
        c: &mut Conn<S>,
        plan: &Plan,
        max: usize,
        out: &mut Vec<u8>,
        by: Instant,
    ) -> Result<(), SendError> {
        let max = max.clamp(1, ajp::MAX_CHUNK);
        if self.framing == Framing::Chunked {
            while self.pending.is_empty() && !self.decoder.as_ref().is_some_and(Decoder::done) {
                if self.pos >= c.inbuf.len() {
                    self.refill(c, plan, by).await?;
                }
                let decoder = self.decoder.as_mut().expect("a chunked body has a decoder");
                self.pos += decoder.feed(&c.inbuf[self.pos..], &mut self.pending).map_err(|_| malformed())?;
            }
            let take = self.pending.len().min(max);
            ajp::body(&self.pending[..take], out);
            self.pending.drain(..take);
            self.sent += take as u64;
            return Ok(());
        }
        if self.left == 0 {
            ajp::body(&[], out);
            return Ok(());
        }
        if self.pos >= c.inbuf.len() {
            self.refill(c, plan, by).await?;
        }
        let take = (c.inbuf.len() - self.pos).min(max).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        ajp::body(&c.inbuf[self.pos..self.pos + take], out);
        self.pos += take;
        self.left -= take as u64;
        self.sent += take as u64;
        Ok(())
    }

    /// More of the body from the client into the emptied buffer (after `100 Continue`, the
    /// first time).
    async fn refill<S: ClientStream>(&mut self, c: &mut Conn<S>, plan: &Plan, by: Instant) -> Result<(), SendError> {
        if !self.streamed {
            continue_if_expected(c, plan, by).await?;
            self.streamed = true;
        }
        c.inbuf.clear();
        self.pos = 0;
        read_client(c, by).await
    }
}

/// Sends the forward request in `out` (with the first body packet, which the container expects
/// unasked when the length is known) and reads the container's messages, answering its
/// `GET_BODY_CHUNK`s, until its `SEND_HEADERS`. Then `head` holds the response head as HTTP/1.1
/// and `rbuf` the container's messages after it.
pub(super) async fn request<S: ClientStream>(
    c: &mut Conn<S>,
    up: &mut TcpStream,
    plan: &Plan,
    body: &mut Body,
    (out, rbuf, head): (&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>),
    by: Instant,
) -> Result<(), Step> {
    let written = |r: Option<std::io::Result<()>>| match r {
        Some(Ok(())) => Ok(()),
        _ => Err(Step::Backend(Failure::Broken { nothing: true })),
    };
    if matches!(plan.framing, Framing::Length(n) if n > 0) {
        body.next(c, plan, ajp::MAX_CHUNK, out, by).await.map_err(Step::from)?;
    }
    written(within(&mut c.timer, by, up.write_all(out)).await)?;
    let mut heard = false;
    loop {
        let mut at = 0;
        while let Some((message, len)) = ajp::parse(&rbuf[at..]).map_err(|e| Step::Backend(Failure::Ajp(e)))? {
            heard = true;
            match message {
                Message::GetBodyChunk(n) => {
                    out.clear();
                    body.next(c, plan, usize::from(n), out, by).await.map_err(Step::from)?;
                    written(within(&mut c.timer, by, up.write_all(out)).await)?;
                }
                Message::SendHeaders { status, reason, headers } => {
                    let made = http_head(head, status, reason, &headers, plan.is_head);
                    drop(headers);
                    made.map_err(Step::Backend)?;
                    rbuf.drain(..at + len);
                    return Ok(());
                }
                Message::BodyChunk(_) | Message::EndResponse { .. } | Message::CPong => {
                    return Err(Step::Backend(Failure::Ajp(AjpError::Type(0))));
                }
            }
            at += len;
        }
        rbuf.drain(..at);
        rbuf.reserve(super::super::BUFFER);
        match within(&mut c.timer, by, up.read_buf(rbuf)).await {
            Some(Ok(0) | Err(_)) => {
                return Err(Step::Backend(Failure::Broken { nothing: !heard && rbuf.is_empty() }));
            }
            Some(Ok(_)) => {}
            None => return Err(Step::Backend(Failure::Timeout)),
        }
    }
}

/// Writes the container's response head to `head` as HTTP/1.1, chunked when it gave no length
/// and a body may follow, and checks it as an HTTP backend's head is checked (a header with a
/// line break in it would be two).
fn http_head(
    head: &mut Vec<u8>,
    status: u16,
    reason: &[u8],
    headers: &[(std::borrow::Cow<'_, [u8]>, &[u8])],
    is_head: bool,
) -> Result<(), Failure> {
    let bad = |b: &[u8]| b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0);
    if !(100..=999).contains(&status) || bad(reason) || headers.iter().any(|(n, v)| bad(n) || bad(v)) {
        return Err(Failure::Bad(head::BadResponse::Malformed));
    }
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    head.extend_from_slice(if reason.is_empty() { b"-" } else { reason });
    head.extend_from_slice(b"\r\n");
    let mut length = false;
    for (name, value) in headers {
        length |= name.eq_ignore_ascii_case(b"content-length");
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    let bodiless = is_head || status == 204 || status == 304 || status < 200;
    if !length && !bodiless {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut storage = head::storage();
    match head::response(head, &mut storage, is_head, MAX_RESPONSE_HEAD) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Failure::Bad(head::BadResponse::Malformed)),
        Err(e) => Err(Failure::Bad(e)),
    }
}

/// The response phase: `head` (from `request`) through the filter to the client, then the
/// container's body chunks, framed as the head says, until `END_RESPONSE`; the connection goes
/// back to the free list when the container keeps it and nothing is left over. Gives back the
/// body, which says how much of the client's buffer the request used.
pub(super) async fn respond<S: ClientStream>(
    c: &mut Conn<S>,
    vip: (&Vip, &Site),
    plan: &Plan,
    (mut up, key): (Upstream, upstream::Key),
    (head, mut rbuf, mut body): (Vec<u8>, Vec<u8>, Body),
    buffers: (&mut Vec<u8>, &mut Vec<u8>),
    secs: u64,
) -> (Responded, Body) {
    let (responded, reuse) = relay(c, vip, plan, &mut up.stream, (&head, &mut rbuf, &mut body), buffers, secs).await;
    super::super::give_buffer(rbuf);
    super::super::give_buffer(head);
    if reuse {
        upstream::put(key, up.stream);
    }
    (responded, body)
}

/// `respond`'s work; true with the response when the backend connection can serve another.
async fn relay<S: ClientStream>(
    c: &mut Conn<S>,
    (vip, site): (&Vip, &Site),
    plan: &Plan,
    up: &mut TcpStream,
    (head, rbuf, body): (&[u8], &mut Vec<u8>, &mut Body),
    (out, aux): (&mut Vec<u8>, &mut Vec<u8>),
    secs: u64,
) -> (Responded, bool) {
    let closed = |status| (Responded { next: Next::Close, status, bytes_out: 0, switched: None }, false);
    let Some(filtered): Option<Filtered> = super::filter_head(c, (vip, site), plan, head, (out, aux), secs) else {
        return closed(0);
    };
    let status = filtered.status;
    let timeout = Duration::from_millis(vip.l7.response_timeout_ms);
    let framed = filtered.framing == Framing::Chunked && !filtered.dechunk;
    let room = |bytes: u64| match filtered.framing {
        Framing::Length(n) => n.saturating_sub(bytes),
        _ => u64::MAX,
    };
    // Body bytes from the container, and bytes written to the client.
    let (mut bytes, mut written) = (0u64, 0u64);
    let mut waited = false;
    let mut packet = Vec::new();
    let reuse = loop {
        let mut at = 0;
        let mut end = None;
        while end.is_none() {
            let Ok(parsed) = ajp::parse(&rbuf[at..]) else { return closed(status) };
            let Some((message, len)) = parsed else { break };
            at += len;
            match message {
                Message::BodyChunk(data) if filtered.framing == Framing::None || data.is_empty() => {}
                Message::BodyChunk(data) => {
                    if data.len() as u64 > room(bytes) {
                        // More than the container's own Content-Length: the response is broken.
                        return closed(status);
                    }
                    if framed {
                        let _ = std::io::Write::write_fmt(out, format_args!("{:x}\r\n", data.len()));
                    }
                    out.extend_from_slice(data);
                    if framed {
                        out.extend_from_slice(b"\r\n");
                    }
                    bytes += data.len() as u64;
                }
                Message::GetBodyChunk(n) => {
                    // The application reads its body after it began answering.
                    packet.clear();
                    let by = Instant::now() + timeout;
                    if body.next(c, plan, usize::from(n), &mut packet, by).await.is_err()
                        || !matches!(within(&mut c.timer, by, up.write_all(&packet)).await, Some(Ok(())))
                    {
                        return closed(status);
                    }
                }
                Message::EndResponse { reuse } => end = Some(reuse),
                Message::SendHeaders { .. } | Message::CPong => return closed(status),
            }
        }
        rbuf.drain(..at);
        if let Some(reuse) = end {
            break reuse && rbuf.is_empty();
        }
        if !out.is_empty() {
            // A head alone: its body usually follows at once (Tomcat sends SEND_HEADERS when
            // the response commits, the rest when it ends), so it waits a moment to go out in
            // one write with it; a response that streams gets its head after that moment.
            if written == 0 && bytes == 0 && !waited {
                waited = true;
                rbuf.reserve(super::super::BUFFER);
                match within(&mut c.timer, Instant::now() + HEAD_WAIT, up.read_buf(rbuf)).await {
                    Some(Ok(n)) if n > 0 => continue,
                    Some(_) => return closed(status),
                    None => {}
                }
            }
            // What the container flushed goes on before waiting for more.
            let by = Instant::now() + timeout;
            if !matches!(within(&mut c.timer, by, write_out(&mut c.stream, out)).await, Some(Ok(()))) {
                return closed(status);
            }
            written += out.len() as u64;
            out.clear();
        }
        rbuf.reserve(super::super::BUFFER);
        match within(&mut c.timer, Instant::now() + timeout, up.read_buf(rbuf)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return closed(status),
        }
    };
    if framed {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty()
        && !matches!(within(&mut c.timer, Instant::now() + timeout, write_out(&mut c.stream, out)).await, Some(Ok(())))
    {
        return closed(status);
    }
    written += out.len() as u64;
    vip.pool.members()[plan.member].live.here().bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    // A response shorter than its length, or a body the application did not read (still on
    // the client connection): the client connection closes.
    let complete = !matches!(filtered.framing, Framing::Length(n) if n != bytes);
    let next = if filtered.close || !complete || !body.done() { Next::Close } else { Next::Keep };
    (Responded { next, status, bytes_out: written, switched: None }, reuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_head_becomes_http_with_chunking_where_no_length_is_given() {
        let mut head = Vec::new();
        let ct: (std::borrow::Cow<'_, [u8]>, &[u8]) = (b"Content-Type"[..].into(), b"text/plain");
        http_head(&mut head, 200, b"OK", std::slice::from_ref(&ct), false).map_err(|_| ()).unwrap();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
        let len: (std::borrow::Cow<'_, [u8]>, &[u8]) = (b"Content-Length"[..].into(), b"5");
        http_head(&mut head, 200, b"", &[ct.clone(), len], false).map_err(|_| ()).unwrap();
        assert_eq!(head, b"HTTP/1.1 200 -\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
        http_head(&mut head, 304, b"Not Modified", &[], false).map_err(|_| ()).unwrap();
        assert_eq!(head, b"HTTP/1.1 304 Not Modified\r\n\r\n");
        http_head(&mut head, 200, b"OK", std::slice::from_ref(&ct), true).map_err(|_| ()).unwrap();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
        // A line break inside a value would smuggle a header to the client.
        let evil: (std::borrow::Cow<'_, [u8]>, &[u8]) = (b"X-A"[..].into(), b"1\r\nSet-Cookie: x=1");
        assert!(http_head(&mut head, 200, b"OK", &[evil], false).is_err());
        assert!(http_head(&mut head, 42, b"OK", &[], false).is_err());
    }
}
