//! AJP/1.3, the binary protocol `mod_jk` and `mod_proxy_ajp` speak to Tomcat's AJP connector:
//! packets, the forward-request message, body chunks, and the container's messages
//! (`SEND_HEADERS`, `SEND_BODY_CHUNK`, `GET_BODY_CHUNK`, `END_RESPONSE`, `CPONG`).
//!
//! Written from the protocol's description (Apache Tomcat's `AJPv13` document); no crate
//! implements it. Only the codec lives here: no I/O, so every rule has a test on bytes.
//!
//! A packet to the container starts `0x12 0x34`, one from it `A B`; then a big-endian 16-bit
//! payload length. Strings are a 16-bit length, the bytes and a NUL (length `0xFFFF`: no
//! string). Packets are at most 8192 bytes (Tomcat's default `packetSize`).

use std::borrow::Cow;

/// The largest packet, header included (Tomcat's and `mod_jk`'s default).
pub const MAX_PACKET: usize = 8192;
/// The most body bytes one data packet carries: the packet less its 4-byte header and the
/// chunk's 2-byte length.
pub const MAX_CHUNK: usize = MAX_PACKET - 6;

/// `CPING`: asks the container for a `CPONG` (`mod_jk`'s `ping_mode`).
pub const CPING: [u8; 5] = [0x12, 0x34, 0x00, 0x01, 0x0a];

/// An AJP backend as the proxy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// The connector's `secret`, sent with every request.
    pub secret: Option<std::sync::Arc<str>>,
}

/// Why bytes are not AJP, or a request cannot be put in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AjpError {
    /// A packet from the container does not start with `AB`.
    #[error("not an AJP/1.3 packet from the container (bad magic)")]
    Magic,
    /// A packet longer than `MAX_PACKET`.
    #[error("AJP packet of {0} bytes is longer than {MAX_PACKET}")]
    TooLong(usize),
    /// A message ends inside one of its fields.
    #[error("AJP message cut short in its {0}")]
    Short(&'static str),
    /// A message type the container does not send.
    #[error("unknown AJP message type {0}")]
    Type(u8),
    /// The request head does not fit one packet (`mod_jk`'s limit too).
    #[error("the request head needs more than one {MAX_PACKET}-byte AJP packet")]
    HeadTooLarge,
}

/// Method codes of the forward-request message, in the description's order.
const METHODS: [&str; 27] = [
    "OPTIONS",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "TRACE",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "ACL",
    "REPORT",
    "VERSION-CONTROL",
    "CHECKIN",
    "CHECKOUT",
    "UNCHECKOUT",
    "SEARCH",
    "MKWORKSPACE",
    "UPDATE",
    "LABEL",
    "MERGE",
    "BASELINE-CONTROL",
    "MKACTIVITY",
];

/// Request headers sent as a code (`0xA0` then the index + 1).
const REQUEST_HEADERS: [&str; 14] = [
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "cookie2",
    "host",
    "pragma",
    "referer",
    "user-agent",
];

/// Response headers the container sends as a code.
const RESPONSE_HEADERS: [&str; 11] = [
    "Content-Type",
    "Content-Language",
    "Content-Length",
    "Date",
    "Last-Modified",
    "Location",
    "Set-Cookie",
    "Set-Cookie2",
    "Servlet-Engine",
    "Status",
    "WWW-Authenticate",
];

/// Attribute codes of the forward-request message.
mod attr {
    pub const QUERY_STRING: u8 = 0x05;
    pub const JVM_ROUTE: u8 = 0x06;
    pub const REQ_ATTRIBUTE: u8 = 0x0a;
    pub const SECRET: u8 = 0x0c;
    pub const STORED_METHOD: u8 = 0x0d;
    pub const ARE_DONE: u8 = 0xff;
}

/// What the forward-request message says of a request.
#[derive(Debug, Clone)]
pub struct ForwardRequest<'a> {
    /// The method, as the client sent it.
    pub method: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// The path, without the query.
    pub uri: &'a str,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
    /// The client's address (`request.getRemoteAddr()`).
    pub remote_addr: &'a str,
    /// The client's port (the `AJP_REMOTE_PORT` attribute, as `mod_jk` sends it).
    pub remote_port: u16,
    /// The host the client asked for, without its port.
    pub server_name: &'a str,
    /// The VIP's port.
    pub server_port: u16,
    /// The client came over TLS (`request.isSecure()`).
    pub is_ssl: bool,
    /// The headers to pass, lowercase names.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The backend's route (`jvm_route`), for the container's session ids.
    pub route: Option<&'a str>,
    /// The connector's `secret` (Tomcat 9.0.31+ requires one by default).
    pub secret: Option<&'a str>,
}

/// Appends the AJP string `s`.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
    out.push(0);
}

/// Appends the 16-bit `n`.
fn int(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends the packet header for a payload that starts at `start` once it is written.
fn begin(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0x12, 0x34, 0, 0]);
    out.len()
}

/// Writes the payload length of the packet whose payload began at `start`.
fn finish(out: &mut [u8], start: usize) -> Result<(), AjpError> {
    let len = out.len() - start;
    if len + 4 > MAX_PACKET {
        return Err(AjpError::HeadTooLarge);
    }
    out[start - 2..start].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

/// Appends the forward-request packet for `req` to `out`.
pub fn forward_request(req: &ForwardRequest<'_>, out: &mut Vec<u8>) -> Result<(), AjpError> {
    let start = begin(out);
    out.push(0x02);
    let method = METHODS.iter().position(|m| *m == req.method);
    out.push(method.map_or(0xff, |i| i as u8 + 1));
    string(out, req.protocol.as_bytes());
    string(out, req.uri.as_bytes());
    string(out, req.remote_addr.as_bytes());
    // remote_host: unresolved, as `mod_jk` sends it without HostnameLookups.
    string(out, req.remote_addr.as_bytes());
    string(out, req.server_name.as_bytes());
    int(out, req.server_port);
    out.push(u8::from(req.is_ssl));
    int(out, req.headers.len() as u16);
    for (name, value) in req.headers {
        match REQUEST_HEADERS.iter().position(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
            Some(i) => out.extend_from_slice(&[0xa0, i as u8 + 1]),
            None => string(out, name),
        }
        string(out, value);
    }
    if let Some(q) = req.query {
        out.push(attr::QUERY_STRING);
        string(out, q.as_bytes());
    }
    if let Some(r) = req.route {
        out.push(attr::JVM_ROUTE);
        string(out, r.as_bytes());
    }
    if let Some(s) = req.secret {
        out.push(attr::SECRET);
        string(out, s.as_bytes());
    }
    if method.is_none() {
        out.push(attr::STORED_METHOD);
        string(out, req.method.as_bytes());
    }
    out.push(attr::REQ_ATTRIBUTE);
    string(out, b"AJP_REMOTE_PORT");
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut port = req.remote_port;
    loop {
        at -= 1;
        digits[at] = b'0' + (port % 10) as u8;
        port /= 10;
        if port == 0 {
            break;
        }
    }
    string(out, &digits[at..]);
    out.push(attr::ARE_DONE);
    finish(out, start)
}

/// Appends body data packets for `data` (each at most `MAX_CHUNK` bytes); an empty `data`
/// appends the empty packet that ends a body.
pub fn body(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        out.extend_from_slice(&[0x12, 0x34, 0, 0]);
        return;
    }
    for chunk in data.chunks(MAX_CHUNK) {
        out.extend_from_slice(&[0x12, 0x34]);
        out.extend_from_slice(&((chunk.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// A message from the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// The response's status and headers.
    SendHeaders {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: &'a [u8],
        /// Headers, in order (coded names spelled out).
        headers: Vec<(Cow<'a, [u8]>, &'a [u8])>,
    },
    /// Response body bytes.
    BodyChunk(&'a [u8]),
    /// The response is complete; `reuse`: the connection may carry another request.
    EndResponse {
        /// Whether the container keeps the connection.
        reuse: bool,
    },
    /// The container asks for up to this many more request body bytes.
    GetBodyChunk(u16),
    /// The answer to `CPING`.
    CPong,
}

/// A reader over one message's payload.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn byte(&mut self, what: &'static str) -> Result<u8, AjpError> {
        let (&b, rest) = self.rest.split_first().ok_or(AjpError::Short(what))?;
        self.rest = rest;
        Ok(b)
    }

    fn int(&mut self, what: &'static str) -> Result<u16, AjpError> {
        let b = self.rest.get(..2).ok_or(AjpError::Short(what))?;
        self.rest = &self.rest[2..];
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], AjpError> {
        let b = self.rest.get(..n).ok_or(AjpError::Short(what))?;
        self.rest = &self.rest[n..];
        Ok(b)
    }

    /// A string; `0xFFFF` (none) reads as empty.
    fn string(&mut self, what: &'static str) -> Result<&'a [u8], AjpError> {
        let n = self.int(what)?;
        if n == 0xffff {
            return Ok(&[]);
        }
        let s = self.bytes(usize::from(n), what)?;
        self.bytes(1, what)?;
        Ok(s)
    }
}

/// Parses the container's message at the start of `buf`: `Ok(None)` while its packet is
/// incomplete, else the message and the packet's length.
pub fn parse(buf: &[u8]) -> Result<Option<(Message<'_>, usize)>, AjpError> {
    if buf.len() >= 2 && buf[..2] != *b"AB" {
        return Err(AjpError::Magic);
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len > MAX_PACKET {
        return Err(AjpError::TooLong(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut f = Fields { rest: &buf[4..len] };
    let message = match f.byte("type")? {
        3 => {
            let n = f.int("chunk length")?;
            Message::BodyChunk(f.bytes(usize::from(n), "chunk")?)
        }
        4 => {
            let status = f.int("status")?;
            let reason = f.string("reason")?;
            let count = f.int("header count")?;
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let name: Cow<'_, [u8]> = if f.rest.first() == Some(&0xa0) {
                    let code = f.int("header code")? & 0xff;
                    let name = RESPONSE_HEADERS
                        .get(usize::from(code).wrapping_sub(1))
                        .ok_or(AjpError::Short("header code"))?;
                    Cow::Borrowed(name.as_bytes())
                } else {
                    Cow::Borrowed(f.string("header name")?)
                };
                headers.push((name, f.string("header value")?));
            }
            Message::SendHeaders { status, reason, headers }
        }
        5 => Message::EndResponse { reuse: f.byte("reuse").is_ok_and(|b| b == 1) },
        6 => Message::GetBodyChunk(f.int("requested length")?),
        9 => Message::CPong,
        t => return Err(AjpError::Type(t)),
    };
    Ok(Some((message, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AJP string as the description writes it.
    fn s(text: &str) -> Vec<u8> {
        let mut v = (text.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(text.as_bytes());
        v.push(0);
        v
    }

    #[test]
    fn a_forward_request_has_every_field_in_the_descriptions_order() {
        let headers: [(&[u8], &[u8]); 3] =
            [(b"host", b"shop.example"), (b"cookie", b"JSESSIONID=a.t1"), (b"x-app", b"1")];
        let req = ForwardRequest {
            method: "GET",
            protocol: "HTTP/1.1",
            uri: "/cart",
            query: Some("item=7"),
            remote_addr: "198.18.0.7",
            remote_port: 40000,
            server_name: "shop.example",
            server_port: 443,
            is_ssl: true,
            headers: &headers,
            route: Some("t1"),
            secret: Some("s3cret"),
        };
        let mut out = Vec::new();
        forward_request(&req, &mut out).unwrap();
        let mut payload = vec![0x02, 0x02];
        for f in ["HTTP/1.1", "/cart", "198.18.0.7", "198.18.0.7", "shop.example"] {
            payload.extend(s(f));
        }
        payload.extend([0x01, 0xbb, 0x01, 0x00, 0x03]);
        payload.extend([0xa0, 0x0b]);
        payload.extend(s("shop.example"));
        payload.extend([0xa0, 0x09]);
        payload.extend(s("JSESSIONID=a.t1"));
        payload.extend(s("x-app"));
        payload.extend(s("1"));
        payload.push(0x05);
        payload.extend(s("item=7"));
        payload.push(0x06);
        payload.extend(s("t1"));
        payload.push(0x0c);
        payload.extend(s("s3cret"));
        payload.push(0x0a);
        payload.extend(s("AJP_REMOTE_PORT"));
        payload.extend(s("40000"));
        payload.push(0xff);
        let mut want = vec![0x12, 0x34];
        want.extend((payload.len() as u16).to_be_bytes());
        want.extend(payload);
        assert_eq!(out, want);
    }

    /// A GET of `/` with `headers` and nothing optional.
    fn minimal<'a>(headers: &'a [(&'a [u8], &'a [u8])]) -> ForwardRequest<'a> {
        ForwardRequest {
            method: "GET",
            protocol: "HTTP/1.1",
            uri: "/",
            query: None,
            remote_addr: "1.2.3.4",
            remote_port: 1,
            server_name: "x",
            server_port: 80,
            is_ssl: false,
            headers,
            route: None,
            secret: None,
        }
    }

    #[test]
    fn an_unlisted_method_is_sent_as_a_stored_method() {
        let req = ForwardRequest { method: "PATCH", ..minimal(&[]) };
        let mut out = Vec::new();
        forward_request(&req, &mut out).unwrap();
        assert_eq!(out[5], 0xff, "method code");
        let stored = [&[0x0d][..], &s("PATCH")].concat();
        assert!(out.windows(stored.len()).any(|w| w == stored), "{out:?}");
        assert_eq!(*out.last().unwrap(), 0xff);
    }

    #[test]
    fn a_head_that_does_not_fit_one_packet_is_refused() {
        let big = vec![b'x'; MAX_PACKET];
        let headers: [(&[u8], &[u8]); 1] = [(b"x-big", &big)];
        let req = minimal(&headers);
        assert_eq!(forward_request(&req, &mut Vec::new()), Err(AjpError::HeadTooLarge));
    }

    #[test]
    fn bodies_go_in_chunks_of_at_most_8186_bytes_and_end_with_an_empty_packet() {
        let data = vec![7u8; MAX_CHUNK + 10];
        let mut out = Vec::new();
        body(&data, &mut out);
        assert_eq!(&out[..6], &[0x12, 0x34, 0x1f, 0xfc, 0x1f, 0xfa]);
        let second = 6 + MAX_CHUNK;
        assert_eq!(&out[second..second + 6], &[0x12, 0x34, 0x00, 0x0c, 0x00, 0x0a]);
        assert_eq!(out.len(), 12 + data.len());
        let mut end = Vec::new();
        body(&[], &mut end);
        assert_eq!(end, [0x12, 0x34, 0, 0]);
    }

    /// A container packet around `payload`.
    fn from_container(payload: &[u8]) -> Vec<u8> {
        let mut v = b"AB".to_vec();
        v.extend((payload.len() as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn the_containers_messages_parse_with_coded_and_named_headers() {
        let mut p = vec![0x04, 0x00, 0xc8];
        p.extend(s("OK"));
        p.extend([0x00, 0x03, 0xa0, 0x01]);
        p.extend(s("text/html;charset=UTF-8"));
        p.extend([0xa0, 0x07]);
        p.extend(s("JSESSIONID=abc.t1; Path=/; HttpOnly"));
        p.extend(s("X-Powered-By"));
        p.extend(s("JSP/3.0"));
        let raw =
            [from_container(&p), from_container(&[0x03, 0x00, 0x02, b'h', b'i', 0x00]), from_container(&[0x05, 0x01])]
                .concat();
        let (m, n) = parse(&raw).unwrap().unwrap();
        let Message::SendHeaders { status, reason, headers } = m else { panic!("{m:?}") };
        assert_eq!((status, reason), (200, &b"OK"[..]));
        assert_eq!(headers[0], (Cow::Borrowed(&b"Content-Type"[..]), &b"text/html;charset=UTF-8"[..]));
        assert_eq!(headers[1].0.as_ref(), b"Set-Cookie");
        assert_eq!(headers[2], (Cow::Borrowed(&b"X-Powered-By"[..]), &b"JSP/3.0"[..]));
        let (m, k) = parse(&raw[n..]).unwrap().unwrap();
        assert_eq!(m, Message::BodyChunk(b"hi"));
        assert_eq!(parse(&raw[n + k..]).unwrap().unwrap().0, Message::EndResponse { reuse: true });
        assert_eq!(parse(&from_container(&[0x06, 0x1f, 0xfa])).unwrap().unwrap().0, Message::GetBodyChunk(8186));
        assert_eq!(parse(&[b'A', b'B', 0, 1, 9]).unwrap().unwrap().0, Message::CPong);
    }

    #[test]
    fn partial_packets_wait_and_wrong_ones_are_named() {
        assert_eq!(parse(b"A").unwrap(), None);
        assert_eq!(parse(&[b'A', b'B', 0, 5, 3]).unwrap(), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), Err(AjpError::Magic));
        assert_eq!(parse(&[b'A', b'B', 0xff, 0xff]), Err(AjpError::TooLong(65539)));
        assert_eq!(parse(&from_container(&[0x63])), Err(AjpError::Type(0x63)));
        assert_eq!(parse(&from_container(&[0x04, 0x00])), Err(AjpError::Short("status")));
        assert_eq!(parse(&from_container(&[0x03, 0x00, 0x09, b'x'])), Err(AjpError::Short("chunk")));
        let mut bad = vec![0x04, 0x00, 0xc8];
        bad.extend(s("OK"));
        bad.extend([0x00, 0x01, 0xa0, 0x33]);
        assert!(matches!(parse(&from_container(&bad)), Err(AjpError::Short(_))));
    }
}
