//! Request and response heads, scanned once with httparse where they lie in the connection's
//! buffer, and the framing rules that decide where each message ends.
//!
//! A request that could be framed two ways is refused here, before anything reaches a
//! backend: that disagreement is what request smuggling exploits.

use httparse::{EMPTY_HEADER, Header, Status};

/// Headers a message may carry (HAProxy's default limit is 101); more get 431 or 502.
pub const MAX_HEADERS: usize = 100;

/// Storage for one head's headers, on the stack of the synchronous step that reads it.
pub type Storage<'b> = [Header<'b>; MAX_HEADERS];

/// Empty header storage.
pub fn storage<'b>() -> Storage<'b> {
    [EMPTY_HEADER; MAX_HEADERS]
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a request head is refused, and what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not HTTP/1.x syntax (bare CR, obs-fold, space before a colon, NUL, …).
    Malformed,
    /// Longer than `max_header_bytes` or more than `MAX_HEADERS` headers.
    TooLarge,
    /// No Host on HTTP/1.1, or more than one.
    Host,
    /// `Content-Length` that is not one decimal number, or two that differ.
    Length,
    /// Transfer codings that do not end in one `chunked`, or any on HTTP/1.0.
    Codings,
    /// A transfer coding before `chunked` (gzip, …): valid, but not one we decode.
    CodingNotImplemented,
    /// `CONNECT`: this is not a forward proxy.
    Connect,
}

impl Refusal {
    /// The whole response the client gets before the connection closes.
    pub fn response(self) -> &'static [u8] {
        match self {
            Refusal::Malformed => {
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 28\r\n\r\nthe request head is invalid\n"
            }
            Refusal::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 30\r\n\r\nthe request head is too large\n"
            }
            Refusal::Host => {
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 39\r\n\r\na request needs exactly one Host header\n"
            }
            Refusal::Length => {
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 32\r\n\r\nthe Content-Length is not valid\n"
            }
            Refusal::Codings => {
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 56\r\n\r\nTransfer-Encoding must be chunked, once, and on HTTP/1.1\n"
            }
            Refusal::CodingNotImplemented => {
                b"HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 45\r\n\r\nthe only transfer coding accepted is chunked\n"
            }
            Refusal::Connect => {
                b"HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 24\r\n\r\nCONNECT is not supported\n"
            }
        }
    }
}

/// A parsed request head, borrowing the buffer it was read into.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// The method.
    pub method: &'b str,
    /// The target in origin form (`/path?query`), or `*`.
    pub target: &'b str,
    /// The host an absolute-form target names (`GET http://host/path`), which overrides `Host`.
    pub authority: Option<&'b str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Every header, in order.
    pub headers: &'h [Header<'b>],
    /// The one `Host` value, if any.
    pub host: Option<&'b [u8]>,
    /// How its body ends.
    pub framing: Framing,
    /// Whether the client's connection ends after this exchange: `Connection: close`,
    /// HTTP/1.0 without keep-alive, or a request that carried both framings.
    pub close: bool,
    /// `Expect: 100-continue`: the proxy answers it itself before it reads the body.
    pub expect_continue: bool,
    /// The protocol an HTTP/1.1 request without a body asks to switch to (`Upgrade`, with
    /// `upgrade` among its `Connection` tokens): WebSocket, mostly.
    pub upgrade: Option<&'b [u8]>,
    /// Bytes of the head, through its empty line.
    pub len: usize,
}

impl Request<'_, '_> {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// Whether the method is `HEAD` (its response has no body, whatever its headers say).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Whether the method may be sent again after a broken attempt (RFC 9110 §9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(self.method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "DELETE" | "PUT")
    }
}

/// The comma-separated tokens of a header value, trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// Whether a message's connection ends after it, given its `Connection` header `value`, its
/// HTTP/1.`minor` version and what was decided so far (`close` closes; `keep-alive` keeps an
/// HTTP/1.0 one).
fn closes(value: &[u8], minor: u8, mut close: bool) -> bool {
    for t in tokens(value) {
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
            close = false;
        }
    }
    close
}

/// `Content-Length`: decimal digits only (no sign, no list, no white space inside), fitting u64.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The request head at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// # Errors
/// The refusal the client gets: the request cannot be framed one way only, or is not HTTP/1.x.
pub fn request<'b, 'h>(
    buf: &'b [u8],
    storage: &'h mut Storage<'b>,
    max_head: usize,
) -> Result<Option<Request<'b, 'h>>, Refusal> {
    let mut parsed = httparse::Request::new(storage);
    let len = match parsed.parse(buf) {
        Ok(Status::Complete(n)) if n <= max_head => n,
        Ok(Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Ok(Status::Partial) if buf.len() > max_head => return Err(Refusal::TooLarge),
        Ok(Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(Refusal::Malformed);
    };
    let headers: &'h [Header<'b>] = parsed.headers;
    if method == "CONNECT" {
        return Err(Refusal::Connect);
    }
    let (target, authority) = origin_form(target)?;
    let mut host = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked_last = false;
    let mut close = minor == 0;
    let mut expect_continue = false;
    let (mut upgrade, mut upgrade_token) = (None, false);
    for h in headers {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(Refusal::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::Length);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in tokens(value) {
                if chunked_last {
                    // Something after chunked: chunked twice, or another coding last.
                    return Err(Refusal::Codings);
                }
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = closes(value, minor, close);
            upgrade_token |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"upgrade") && !value.is_empty() {
            upgrade = Some(value);
        } else if name.eq_ignore_ascii_case(b"expect") && value.eq_ignore_ascii_case(b"100-continue") {
            expect_continue = minor == 1;
        }
    }
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err(Refusal::Host);
    }
    let framing = if codings > 0 {
        if minor == 0 || !chunked_last {
            return Err(Refusal::Codings);
        }
        if codings > 1 {
            return Err(Refusal::CodingNotImplemented);
        }
        // Both framings: chunked wins (RFC 9112 §6.3), the length is dropped, and the
        // connection closes after this exchange so nothing read past the body is trusted.
        if length.is_some() {
            close = true;
        }
        Framing::Chunked
    } else {
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    // An upgrade carries no body on the old protocol: WebSocket's handshake is a GET. One with
    // a body (h2c's) is served as a plain request, its upgrade headers dropped.
    let upgrade = upgrade.filter(|_| upgrade_token && minor == 1 && framing == Framing::None);
    Ok(Some(Request { method, target, authority, minor, headers, host, framing, close, expect_continue, upgrade, len }))
}

/// The origin-form target and the authority of an absolute-form one (RFC 9112 §3.2).
fn origin_form(target: &str) -> Result<(&str, Option<&str>), Refusal> {
    if target.starts_with('/') || target == "*" {
        return Ok((target, None));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            target.get(..scheme.len()).filter(|s| s.eq_ignore_ascii_case(scheme)).map(|_| &target[scheme.len()..])
        })
        .ok_or(Refusal::Malformed)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(Refusal::Malformed);
    }
    match path {
        "" => Ok(("/", Some(authority))),
        // `http://host?q`: origin form would need a `/` the buffer does not hold; rare enough
        // to refuse rather than copy.
        p if p.starts_with('?') => Err(Refusal::Malformed),
        p => Ok((p, Some(authority))),
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct Response<'b, 'h> {
    /// The status code.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'b str,
    /// Every header, in order.
    pub headers: &'h [Header<'b>],
    /// How its body ends.
    pub framing: Framing,
    /// Whether the backend closes its connection after it.
    pub close: bool,
    /// Bytes of the head.
    pub len: usize,
}

/// Why a backend's response head is unusable (a 502, counted against the backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// Not HTTP/1.x.
    #[error("the backend's response head is not HTTP/1.x")]
    Malformed,
    /// Beyond the head size limit.
    #[error("the backend's response head is too large")]
    TooLarge,
    /// A `Content-Length` that is not one number.
    #[error("the backend's Content-Length is invalid")]
    Length,
}

/// The response head at the start of `buf` for a request that was a HEAD (`head`).
///
/// # Errors
/// The response cannot be read as HTTP/1.x.
pub fn response<'b, 'h>(
    buf: &'b [u8],
    storage: &'h mut Storage<'b>,
    head: bool,
    max_head: usize,
) -> Result<Option<Response<'b, 'h>>, BadResponse> {
    let mut parsed = httparse::Response::new(storage);
    let len = match parsed.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() > max_head => return Err(BadResponse::TooLarge),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let (Some(code), Some(minor)) = (parsed.code, parsed.version) else { return Err(BadResponse::Malformed) };
    let reason = parsed.reason.unwrap_or("");
    let headers: &'h [Header<'b>] = parsed.headers;
    let mut close = minor == 0;
    let mut length = None;
    let mut chunked_last = None;
    for h in headers {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(BadResponse::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::Length);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked_last = tokens(value).last().map(|c| c.eq_ignore_ascii_case(b"chunked")).or(chunked_last);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = closes(value, minor, close);
        }
    }
    // RFC 9112 §6.3, in its order.
    let framing = if head || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::None
    } else if let Some(chunked) = chunked_last {
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else {
        match length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        close = true;
    }
    Ok(Some(Response { code, reason, headers, framing, close, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> Result<Option<(Framing, bool, usize)>, Refusal> {
        let mut s = storage();
        request(bytes, &mut s, 16384).map(|r| r.map(|r| (r.framing, r.close, r.len)))
    }

    #[test]
    fn a_plain_request_is_framed_without_a_body_and_kept_alive() {
        let b = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        let mut s = storage();
        let r = request(b, &mut s, 16384).unwrap().unwrap();
        assert_eq!((r.method, r.target, r.path(), r.host), ("GET", "/a?b=1", "/a", Some(&b"x"[..])));
        assert_eq!((r.framing, r.close, r.len), (Framing::None, false, 32));
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_is_refused() {
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n", "a".repeat(20000));
        assert_eq!(req(big.as_bytes()), Err(Refusal::TooLarge));
        let many = "X-A: 1\r\n".repeat(MAX_HEADERS + 1);
        assert_eq!(req(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()), Err(Refusal::TooLarge));
    }

    #[test]
    fn lengths_must_be_one_decimal_number() {
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"),
            Ok(Some((Framing::Length(3), false, 47)))
        );
        let two = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(req(two).unwrap().unwrap().0, Framing::Length(3), "equal duplicates are one length");
        for bad in ["3, 3", "+3", "-1", "0x3", " ", "99999999999999999999999", "3 4"] {
            let r = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(req(r.as_bytes()), Err(Refusal::Length), "{bad:?}");
        }
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n"),
            Err(Refusal::Length)
        );
    }

    #[test]
    fn only_one_chunked_last_is_a_valid_coding() {
        let te = |v: &str| req(format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {v}\r\n\r\n").as_bytes());
        assert_eq!(te("chunked").unwrap().unwrap().0, Framing::Chunked);
        assert_eq!(te("Chunked").unwrap().unwrap().0, Framing::Chunked);
        assert_eq!(te("gzip, chunked"), Err(Refusal::CodingNotImplemented));
        for bad in ["chunked, gzip", "xchunked", "chunked, chunked", "identity"] {
            assert_eq!(te(bad), Err(Refusal::Codings), "{bad:?}");
        }
        let twice = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(req(twice), Err(Refusal::Codings));
        assert_eq!(req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(Refusal::Codings));
    }

    #[test]
    fn both_framings_mean_chunked_and_a_closing_connection() {
        let r = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (framing, close, _) = req(r).unwrap().unwrap();
        assert_eq!(framing, Framing::Chunked);
        assert!(close, "the connection closes after it");
    }

    #[test]
    fn hosts_and_syntax_are_checked() {
        assert_eq!(req(b"GET / HTTP/1.1\r\n\r\n"), Err(Refusal::Host));
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(Refusal::Host));
        assert!(req(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().1, "HTTP/1.0 closes by default");
        assert!(!req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().1);
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"[..],
            b"GET / HTTP/1.1\rHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(req(bad), Err(Refusal::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(req(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), Err(Refusal::Connect));
        assert!(req(b"GET / HTTP/1.1\nHost: x\n\n").unwrap().is_some(), "bare LF line ends are accepted");
    }

    #[test]
    fn an_absolute_target_becomes_origin_form_with_its_authority() {
        let mut s = storage();
        let r = request(b"GET http://other.example/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", &mut s, 16384).unwrap().unwrap();
        assert_eq!((r.target, r.authority), ("/p?q=1", Some("other.example")));
        assert_eq!(origin_form("http://h:81"), Ok(("/", Some("h:81"))));
        assert_eq!(origin_form("HTTP://h/x"), Ok(("/x", Some("h"))));
        assert_eq!(origin_form("http://h?x"), Err(Refusal::Malformed));
        assert_eq!(origin_form("http://u@h/"), Err(Refusal::Malformed));
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let resp = |b: &[u8], head: bool| {
            let mut s = storage();
            response(b, &mut s, head, 65536).map(|r| r.map(|r| (r.code, r.framing, r.close)))
        };
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(resp(ok, false), Ok(Some((200, Framing::Length(5), false))));
        assert_eq!(resp(ok, true), Ok(Some((200, Framing::None, false))), "a HEAD's response has no body");
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(resp(both, false).unwrap().unwrap().1, Framing::Chunked);
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\n\r\n", false), Ok(Some((200, Framing::UntilClose, true))));
        assert_eq!(
            resp(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false).unwrap().unwrap().1,
            Framing::None
        );
        assert!(resp(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap().unwrap().2, "HTTP/1.0 closes");
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false), Err(BadResponse::Length));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nContent", false), Ok(None));
        assert_eq!(resp(b"SSH-2.0-OpenSSH\r\n\r\n", false), Err(BadResponse::Malformed));
    }
}
