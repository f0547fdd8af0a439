//! What changes between the head a peer sent and the head the other peer gets: the header
//! policy of the HTTP/1 path, as byte edits on the original head.
//!
//! Request names are written in lowercase (as HAProxy and hyper write them), values as the
//! client sent them; response headers keep the backend's spelling.

use httparse::Header;

use super::head::{self, Framing};

/// Headers that concern one connection only (RFC 9110 §7.6.1), never forwarded (by the HTTP/2
/// path either).
pub const HOP_BY_HOP: [&[u8]; 6] = [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"];

/// What the proxy adds to `Via` both ways when `via = true` (RFC 9110 §7.6.3).
pub const VIA: &[u8] = b"1.1 balancer";

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// A message's end-to-end headers as (name, trimmed value): without the hop-by-hop ones and
/// those its `Connection` headers name (besides `close` and `keep-alive`, which name nothing
/// beyond the hop-by-hop set). The list of named ones is empty, without allocating, for nearly
/// every message.
fn end_to_end<'h, 'b>(headers: &'h [Header<'b>]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 'h {
    let mut named: Vec<&'b [u8]> = Vec::new();
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
        named.extend(
            head::tokens(h.value)
                .filter(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")),
        );
    }
    headers
        .iter()
        .map(|h| (h.name.as_bytes(), h.value.trim_ascii()))
        .filter(move |(name, _)| !is_hop_by_hop(name) && !named.iter().any(|n| name.eq_ignore_ascii_case(n)))
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn lowercase_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let at = out.len();
    out.extend_from_slice(name);
    out[at..].make_ascii_lowercase();
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request-side edits.
pub struct RequestEdits<'a> {
    /// The `Host` the backend gets instead of the client's (its own address when
    /// `preserve_host = false`, the absolute-form target's authority otherwise); `None` keeps it.
    pub host: Option<&'a [u8]>,
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub forwarded_host: Option<&'a [u8]>,
    /// Insert mode with `indirect`: our cookie, removed from `Cookie`.
    pub strip_cookie: Option<&'a str>,
    /// The client's address as text, appended to `X-Forwarded-For`.
    pub client: &'a str,
    /// Whether to add `Via`.
    pub via: bool,
    /// Whether the proxy answers `Expect: 100-continue` itself (then the backend is not asked).
    pub expect_handled: bool,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
    /// The protocol the client asks to switch to, passed on with `Connection: upgrade`.
    pub upgrade: Option<&'a [u8]>,
    /// The target the backend gets instead of the client's (a route's path rewrite).
    pub target: Option<&'a str>,
}

/// Writes to `out` the head the backend gets for `req`: always HTTP/1.1 (so the backend
/// connection can be kept), origin form, one framing, hop-by-hop headers removed, forwarded-for
/// headers set.
pub fn request(out: &mut Vec<u8>, req: &head::Request<'_, '_>, edits: &RequestEdits<'_>) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(edits.target.unwrap_or(req.target).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if req.host.is_none()
        && let Some(h) = edits.host.or(edits.forwarded_host)
    {
        header(out, b"host", h);
    }
    // The client's own lists (none, without allocating, for most requests), written first in
    // ours.
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut length_written = false;
    for (name, value) in end_to_end(req.headers) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            4 if is("host") => header(out, b"host", edits.host.unwrap_or(value)),
            6 if is("cookie") => match edits.strip_cookie {
                Some(ours) => without_cookie(out, value, ours),
                None => lowercase_header(out, name, value),
            },
            6 if is("expect") && edits.expect_handled => {}
            14 if is("content-length") => {
                // One length, and none beside chunked (the head check made them agree).
                if req.framing != Framing::Chunked && !length_written {
                    lowercase_header(out, name, value);
                    length_written = true;
                }
            }
            15 if is("x-forwarded-for") => forwarded_for.push(value),
            16 | 17 if is("x-forwarded-proto") || is("x-forwarded-host") => {}
            _ => lowercase_header(out, name, value),
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for prev in forwarded_for {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(edits.client.as_bytes());
    out.extend_from_slice(if edits.https {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(h) = edits.forwarded_host {
        header(out, b"x-forwarded-host", h);
    }
    if let Some(protocol) = edits.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        header(out, b"upgrade", protocol);
    }
    if edits.via {
        header(out, b"via", VIA);
    }
    out.extend_from_slice(b"\r\n");
}

/// The headers an AJP container gets for `req`, by the policy of `request`: hop-by-hop ones
/// out, our cookie out with `strip_cookie`, `Host` from `edits.host`, `Expect` out when the proxy
/// answers it. The container gets the body decoded, so `Content-Length` stays and
/// `Transfer-Encoding` goes; the client's address, port and TLS travel as fields of the
/// forward request, so no `X-Forwarded-*` is added. Rewritten `Cookie` values are written to
/// `scratch` first, which the pairs then borrow.
pub fn ajp_headers<'a>(
    req: &head::Request<'a, '_>,
    edits: &RequestEdits<'a>,
    scratch: &'a mut Vec<u8>,
) -> Vec<(&'a [u8], &'a [u8])> {
    let is = |name: &[u8], n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    // Our cookie out of each `Cookie` header, as (start, end) in `scratch`.
    let mut cookies = Vec::new();
    if let Some(ours) = edits.strip_cookie {
        for (_, value) in end_to_end(req.headers).filter(|(n, _)| is(n, "cookie")) {
            let start = scratch.len();
            without_cookie(scratch, value, ours);
            cookies.push((start, scratch.len()));
        }
    }
    let scratch: &'a [u8] = scratch;
    let mut cookies = cookies.into_iter().map(|(start, end)| {
        // `without_cookie` wrote a whole `cookie: …\r\n` line, or nothing.
        let line = &scratch[start..end];
        line.strip_prefix(b"cookie: ").and_then(|v| v.strip_suffix(b"\r\n"))
    });
    let mut headers = Vec::with_capacity(req.headers.len() + 1);
    if req.host.is_none()
        && let Some(h) = edits.host.or(edits.forwarded_host)
    {
        headers.push((&b"host"[..], h));
    }
    for (name, value) in end_to_end(req.headers) {
        match name {
            _ if is(name, "host") => headers.push((name, edits.host.unwrap_or(value))),
            _ if is(name, "cookie") && edits.strip_cookie.is_some() => {
                if let Some(Some(kept)) = cookies.next() {
                    headers.push((name, kept));
                }
            }
            _ if is(name, "expect") && edits.expect_handled => {}
            _ if is(name, "transfer-encoding") => {}
            _ if is(name, "content-length") => {
                if req.framing != Framing::Chunked && !headers.iter().any(|(n, _)| is(n, "content-length")) {
                    headers.push((name, value));
                }
            }
            _ => headers.push((name, value)),
        }
    }
    headers
}

/// A `Cookie` header without the pairs named `ours`; nothing when none is left.
fn without_cookie(out: &mut Vec<u8>, value: &[u8], ours: &str) {
    let Ok(value) = std::str::from_utf8(value) else { return lowercase_header(out, b"cookie", value) };
    let mut kept = super::super::cookie::pairs(value).filter(|(k, _)| *k != ours).peekable();
    if kept.peek().is_none() {
        return;
    }
    out.extend_from_slice(b"cookie: ");
    for (i, (k, v)) in kept.enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(k.as_bytes());
        if let Some(v) = v {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The response-side edits.
#[expect(clippy::struct_excessive_bools, reason = "independent switches of the response filter")]
pub struct ResponseEdits<'a> {
    /// `http://<backend address>`: a `Location` starting with it names the backend itself.
    pub backend_origin: &'a str,
    /// The host the client asked for, which such a `Location` is rewritten to.
    pub host: Option<&'a str>,
    /// A whole `Set-Cookie` header line (with its CRLF) to add.
    pub set_cookie: Option<&'a [u8]>,
    /// With `set_cookie`: replace `Cache-Control` so shared caches do not store the cookie.
    pub nocache: bool,
    /// Whether to add `Via`.
    pub via: bool,
    /// The body is decoded from chunked for an HTTP/1.0 client.
    pub dechunk: bool,
    /// The client connection closes after this response.
    pub close: bool,
    /// An HTTP/1.0 client asked to keep its connection, and will.
    pub keep_alive_10: bool,
    /// The client came over TLS: a rewritten `Location` says `https`.
    pub https: bool,
    /// The route's path rewrite, reversed: (backend prefix, client prefix) for `Location`
    /// paths and `Set-Cookie` `Path` attributes.
    pub path_map: Option<(&'a str, &'a str)>,
}

/// Writes to `out` the head the client gets for the backend's `resp`.
pub fn response(out: &mut Vec<u8>, resp: &head::Response<'_, '_>, edits: &ResponseEdits<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = itoa_3(resp.code);
    out.append(&mut code);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in end_to_end(resp.headers) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            17 if is("transfer-encoding") && edits.dechunk => {}
            14 if is("content-length") && resp.framing == Framing::Chunked => {}
            13 if is("cache-control") && edits.set_cookie.is_some() && edits.nocache => {}
            8 | 16 if is("location") || is("content-location") => match (edits.host, strip_origin(value, edits)) {
                (Some(host), Some(rest)) => {
                    out.extend_from_slice(name);
                    out.extend_from_slice(if edits.https { b": https://" } else { b": http://" });
                    out.extend_from_slice(host.as_bytes());
                    map_path(out, rest, edits.path_map);
                    out.extend_from_slice(b"\r\n");
                }
                _ => match (edits.path_map, path_of(value, edits.host)) {
                    (Some(map), Some(at)) => {
                        out.extend_from_slice(name);
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(&value[..at]);
                        map_path(out, &value[at..], Some(map));
                        out.extend_from_slice(b"\r\n");
                    }
                    _ => header(out, name, value),
                },
            },
            10 if is("set-cookie") && edits.path_map.is_some() => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                map_cookie_path(out, value, edits.path_map.unwrap_or_default());
                out.extend_from_slice(b"\r\n");
            }
            _ => header(out, name, value),
        }
    }
    if let Some(line) = edits.set_cookie {
        out.extend_from_slice(line);
        if edits.nocache {
            out.extend_from_slice(b"cache-control: private, no-cache=\"set-cookie\"\r\n");
        }
    }
    if edits.via {
        header(out, b"via", VIA);
    }
    let switched = (resp.code == 101)
        .then(|| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("upgrade")).map(|h| h.value.trim_ascii()))
        .flatten();
    if let Some(protocol) = switched {
        // The two connections become one tunnel: the switch is the last thing said in HTTP.
        out.extend_from_slice(b"connection: upgrade\r\n");
        header(out, b"upgrade", protocol);
    } else if edits.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if edits.keep_alive_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where the path starts in a `Location` value that names this site: an absolute path, or an
/// absolute URL whose authority is `host` (what the client asked for, which a backend that got
/// the client's `Host` writes).
fn path_of(value: &[u8], host: Option<&str>) -> Option<usize> {
    if value.first() == Some(&b'/') && value.get(1) != Some(&b'/') {
        return Some(0);
    }
    let host = host?.as_bytes();
    let rest = value.strip_prefix(b"http://").or_else(|| value.strip_prefix(b"https://"))?;
    let after = rest.get(..host.len()).filter(|h| h.eq_ignore_ascii_case(host)).map(|_| &rest[host.len()..])?;
    (after.first() == Some(&b'/')).then(|| value.len() - after.len())
}

/// A `Location` value that names this site (`host`, or an absolute path) with its path mapped
/// back (`map` = (backend prefix, client prefix)); `None` when it is left as it is. For the
/// HTTP/2 path, whose headers are a map.
pub fn reverse_location(value: &[u8], host: Option<&str>, map: (&str, &str)) -> Option<Vec<u8>> {
    let at = path_of(value, host)?;
    value[at..].starts_with(map.0.as_bytes()).then(|| {
        let mut out = value[..at].to_vec();
        map_path(&mut out, &value[at..], Some(map));
        out
    })
}

/// A `Set-Cookie` value with its `Path` mapped back, for the HTTP/2 path.
pub fn reverse_cookie_path(value: &[u8], map: (&str, &str)) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 8);
    map_cookie_path(&mut out, value, map);
    out
}

/// `path`, with the backend's prefix replaced by the client's (`map` = (backend, client)).
fn map_path(out: &mut Vec<u8>, path: &[u8], map: Option<(&str, &str)>) {
    match map.and_then(|(from, to)| Some((path.strip_prefix(from.as_bytes())?, to))) {
        Some((rest, to)) => {
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(path),
    }
}

/// A `Set-Cookie` value with its `Path` attribute mapped (`ProxyPassReverseCookiePath`).
fn map_cookie_path(out: &mut Vec<u8>, value: &[u8], map: (&str, &str)) {
    for (i, attr) in value.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        let trimmed = attr.trim_ascii_start();
        let lead = attr.len() - trimmed.len();
        match trimmed.get(..5) {
            Some(p) if i > 0 && p.eq_ignore_ascii_case(b"path=") => {
                out.extend_from_slice(&attr[..lead + 5]);
                map_path(out, trimmed[5..].trim_ascii_end(), Some(map));
            }
            _ => out.extend_from_slice(attr),
        }
    }
}

/// What follows the backend's own origin in a `Location` value, if it starts with it (and
/// the origin ends there: `http://10.0.0.2:80801` is another port).
fn strip_origin<'v>(value: &'v [u8], edits: &ResponseEdits<'_>) -> Option<&'v [u8]> {
    let rest = value.strip_prefix(edits.backend_origin.as_bytes())?;
    (rest.is_empty() || matches!(rest[0], b'/' | b'?' | b'#')).then_some(rest)
}

fn itoa_3(code: u16) -> Vec<u8> {
    // Status codes are three digits (httparse checks).
    let c = code.min(999);
    vec![b'0' + (c / 100) as u8, b'0' + (c / 10 % 10) as u8, b'0' + (c % 10) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(raw: &[u8], edits: &RequestEdits<'_>) -> String {
        let mut s = head::storage();
        let req = head::request(raw, &mut s, 65536).unwrap().unwrap();
        let mut out = Vec::new();
        request(&mut out, &req, edits);
        String::from_utf8(out).unwrap()
    }

    fn plain<'a>() -> RequestEdits<'a> {
        RequestEdits {
            host: None,
            forwarded_host: Some(b"x"),
            strip_cookie: None,
            client: "198.18.0.1",
            via: false,
            expect_handled: false,
            https: false,
            upgrade: None,
            target: None,
        }
    }

    #[test]
    fn the_ajp_container_gets_end_to_end_headers_without_our_cookie_or_framing() {
        let raw = b"POST /a HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\
                    Cookie: BALANCERID=abc; JSESSIONID=1.t1\r\nCookie: BALANCERID=only\r\n\
                    Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nAccept: */*\r\n\r\n";
        let mut s = head::storage();
        let req = head::request(raw, &mut s, 65536).unwrap().unwrap();
        let edits = RequestEdits { strip_cookie: Some("BALANCERID"), expect_handled: true, ..plain() };
        let mut scratch = Vec::new();
        let got: Vec<(String, String)> = ajp_headers(&req, &edits, &mut scratch)
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let want = [("Host", "shop"), ("Cookie", "JSESSIONID=1.t1"), ("Accept", "*/*")];
        assert_eq!(got, want.map(|(n, v)| (n.to_string(), v.to_string())));
    }

    #[test]
    fn the_backend_gets_one_framing_lowercase_names_and_forwarded_headers() {
        let got = forward(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nX-App: A\r\n\r\n",
            &plain(),
        );
        assert_eq!(
            got,
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nx-app: A\r\n\
             x-forwarded-for: 198.18.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: x\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let got = forward(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nUpgrade: websocket\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n",
            &plain(),
        );
        assert!(got.starts_with("GET / HTTP/1.1\r\nhost: x\r\nx-kept: 1\r\nx-forwarded-for: "), "{got}");
    }

    #[test]
    fn forwarded_for_lists_are_joined_and_ours_replace_the_clients_proto_and_host() {
        let got = forward(
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: x\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
            &RequestEdits { via: true, ..plain() },
        );
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 198.18.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: x\r\nvia: 1.1 balancer\r\n\r\n"
        );
    }

    #[test]
    fn our_cookie_is_removed_and_the_others_kept() {
        let edits = RequestEdits { strip_cookie: Some("BALANCERID"), ..plain() };
        let got = forward(
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; BALANCERID=x.1.1.s; b=2\r\nCookie: BALANCERID=y\r\n\r\n",
            &edits,
        );
        assert!(got.contains("\r\ncookie: a=1; b=2\r\nx-forwarded-for"), "{got}");
        assert_eq!(got.matches("cookie").count(), 1, "{got}");
    }

    #[test]
    fn host_is_replaced_in_place_or_added_for_http_10() {
        let edits = RequestEdits { host: Some(b"10.0.0.2:8080"), ..plain() };
        assert!(
            forward(b"GET / HTTP/1.1\r\nA: 1\r\nHost: x\r\n\r\n", &edits)
                .starts_with("GET / HTTP/1.1\r\na: 1\r\nhost: 10.0.0.2:8080\r\n")
        );
        let ten = RequestEdits { forwarded_host: None, ..edits };
        assert!(
            forward(b"GET / HTTP/1.0\r\n\r\n", &ten)
                .starts_with("GET / HTTP/1.1\r\nhost: 10.0.0.2:8080\r\nx-forwarded-for")
        );
    }

    fn answer(raw: &[u8], edits: &ResponseEdits<'_>) -> String {
        let mut s = head::storage();
        let resp = head::response(raw, &mut s, false, 65536).unwrap().unwrap();
        let mut out = Vec::new();
        response(&mut out, &resp, edits);
        String::from_utf8(out).unwrap()
    }

    fn keep<'a>() -> ResponseEdits<'a> {
        ResponseEdits {
            backend_origin: "http://10.0.0.2:8080",
            host: Some("shop.example"),
            set_cookie: None,
            nocache: true,
            via: false,
            dechunk: false,
            close: false,
            keep_alive_10: false,
            https: false,
            path_map: None,
        }
    }

    #[test]
    fn a_rewritten_route_maps_locations_and_cookie_paths_back() {
        let edits = ResponseEdits { path_map: Some(("/inner/", "/app/")), ..keep() };
        let raw = b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.2:8080/inner/login\r\n\
                    Content-Location: /inner/x\r\nSet-Cookie: JSESSIONID=1.t1; Path=/inner/; HttpOnly\r\n\
                    Set-Cookie: other=1; path=/elsewhere\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            answer(raw, &edits),
            "HTTP/1.1 302 Found\r\nLocation: http://shop.example/app/login\r\nContent-Location: /app/x\r\n\
             Set-Cookie: JSESSIONID=1.t1; Path=/app/; HttpOnly\r\nSet-Cookie: other=1; path=/elsewhere\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // A backend that got the client's Host names it; another site's URL is left alone.
        let raw = b"HTTP/1.1 302 Found\r\nLocation: https://SHOP.example/inner/a\r\nContent-Length: 0\r\n\r\n";
        assert!(answer(raw, &edits).contains("Location: https://SHOP.example/app/a\r\n"));
        let raw = b"HTTP/1.1 302 Found\r\nLocation: http://other.example/inner/a\r\nContent-Length: 0\r\n\r\n";
        assert!(answer(raw, &edits).contains("Location: http://other.example/inner/a\r\n"));
    }

    #[test]
    fn a_location_naming_the_backend_names_the_vip_and_others_are_kept() {
        let got = answer(
            b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.2:8080/login?next=/\r\nContent-Length: 0\r\n\r\n",
            &keep(),
        );
        assert_eq!(
            got,
            "HTTP/1.1 302 Found\r\nLocation: http://shop.example/login?next=/\r\nContent-Length: 0\r\n\r\n"
        );
        for other in ["https://other.example/", "http://10.0.0.2:80801/"] {
            let raw = format!("HTTP/1.1 302 Found\r\nLocation: {other}\r\nContent-Length: 0\r\n\r\n");
            assert!(answer(raw.as_bytes(), &keep()).contains(&format!("Location: {other}\r\n")));
        }
    }

    #[test]
    fn the_cookie_replaces_cache_control_and_connection_headers_are_ours() {
        let edits = ResponseEdits {
            set_cookie: Some(b"set-cookie: BALANCERID=r1.1.1.sig; Path=/\r\n"),
            via: true,
            close: true,
            ..keep()
        };
        let got = answer(
            b"HTTP/1.1 200 OK\r\nCache-Control: public\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
            &edits,
        );
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nset-cookie: BALANCERID=r1.1.1.sig; Path=/\r\n\
             cache-control: private, no-cache=\"set-cookie\"\r\nvia: 1.1 balancer\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_dechunked_response_loses_its_coding_and_a_chunked_one_its_length() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(answer(raw, &keep()), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let got = answer(raw, &ResponseEdits { dechunk: true, close: true, ..keep() });
        assert_eq!(got, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
    }
}
