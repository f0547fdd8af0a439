//! The PROXY protocol (v1 text, v2 binary): the header an L4 tier puts before a connection's
//! first byte to say which client it carries, read on VIPs with `accept_proxy` and written to
//! backends with `send_proxy`.
//!
//! Written from the protocol's description: v1 is one line of at most 107 bytes,
//! `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`; v2 is a 12-byte signature, a
//! version/command byte, a family byte, a 2-byte length and the addresses (then TLVs, which
//! are skipped). The header is peeked and then read exactly, so not a byte of what follows
//! (a TLS `ClientHello`) is taken from the socket.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::TcpStream;

use crate::config::ProxyVersion;

/// v2's signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header read (addresses and the TLVs an L4 tier adds; the format allows 64 KiB).
const V2_MAX: usize = 16 + 1024;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection carries this client, to this address.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address it connected to.
        destination: SocketAddr,
    },
    /// The sender's own connection (a health check: v2 `LOCAL`, v1 `UNKNOWN`): the socket's
    /// addresses stand.
    Local,
}

/// Why a connection's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with either version's signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// It starts like one but is not valid.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The header did not arrive whole in time, or the connection closed first.
    #[error("the PROXY protocol header did not arrive")]
    Incomplete,
}

/// Parses the header at the start of `buf`: `Ok(None)` while it may still be incomplete,
/// else the header and its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let could_be = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if buf.starts_with(&SIGNATURE) {
        return v2(buf);
    }
    if buf.starts_with(b"PROXY ") {
        return v1(buf);
    }
    if could_be(&SIGNATURE) || could_be(b"PROXY ") {
        return Ok(None);
    }
    Err(ProxyError::Missing)
}

fn v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Malformed("v1 line is not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        return Ok(Some((Header::Local, end + 2)));
    }
    let bad = ProxyError::Malformed("v1 line is not `PROXY TCP4|TCP6 src dst sport dport`");
    let mut next = || fields.next().ok_or(bad);
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(bad);
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad),
            _ => Err(ProxyError::Malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
        }
    };
    // Ports are decimal without a sign or leading zeros, as the description writes them.
    let port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        s.parse().map_err(|_| bad)
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Some((Header::Proxied { source, destination }, end + 2)))
}

fn v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version nibble is not 2"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err(ProxyError::Malformed("v2 header longer than 1 KiB"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    match command {
        0 => return Ok(Some((Header::Local, len))),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command is neither LOCAL nor PROXY")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let header = match buf[13] {
        // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes.
        0x11 if body.len() >= 12 => {
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Header::Proxied {
                source: SocketAddr::new(src.into(), port(&body[8..])),
                destination: SocketAddr::new(dst.into(), port(&body[10..])),
            }
        }
        // TCP over IPv6: 16 + 16, 2 + 2.
        0x21 if body.len() >= 36 => {
            let octets = |b: &[u8]| <[u8; 16]>::try_from(b).expect("16 bytes");
            Header::Proxied {
                source: SocketAddr::new(Ipv6Addr::from(octets(&body[..16])).into(), port(&body[32..])),
                destination: SocketAddr::new(Ipv6Addr::from(octets(&body[16..32])).into(), port(&body[34..])),
            }
        }
        // Unspecified: the sender does not say; the socket's addresses stand.
        0x00 => Header::Local,
        0x11 | 0x21 => return Err(ProxyError::Malformed("v2 length too short for its addresses")),
        _ => return Err(ProxyError::Malformed("v2 family is not TCP over IPv4 or IPv6")),
    };
    Ok(Some((header, len)))
}

/// Reads the header a connection starts with, within `timeout`, taking from the socket only
/// the header's own bytes.
pub async fn read(stream: &TcpStream, timeout: Duration) -> Result<Header, ProxyError> {
    let until = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; V2_MAX];
    loop {
        let n = tokio::time::timeout_at(until, stream.peek(&mut buf))
            .await
            .map_err(|_| ProxyError::Incomplete)?
            .map_err(|_| ProxyError::Incomplete)?;
        if n == 0 {
            return Err(ProxyError::Incomplete);
        }
        if let Some((header, len)) = parse(&buf[..n])? {
            let mut taken = 0;
            while taken < len {
                tokio::time::timeout_at(until, stream.readable()).await.map_err(|_| ProxyError::Incomplete)?.ok();
                match stream.try_read(&mut buf[taken..len]) {
                    Ok(0) => return Err(ProxyError::Incomplete),
                    Ok(k) => taken += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(ProxyError::Incomplete),
                }
            }
            return Ok(header);
        }
        // The rest of a header split across segments (rare: senders write it whole).
        if tokio::time::timeout_at(until, tokio::time::sleep(Duration::from_millis(1))).await.is_err() {
            return Err(ProxyError::Incomplete);
        }
    }
}

/// Appends the header saying that `source` connected to `destination` to `out`.
pub fn write(version: ProxyVersion, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    // A mixed pair (a v4 client of a v6 VIP) is written as v6, with the v4 address mapped.
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (source, destination),
        _ => (mapped(source), mapped(destination)),
    };
    match version {
        ProxyVersion::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
            out.extend_from_slice(line.as_bytes());
        }
        ProxyVersion::V2 => {
            out.extend_from_slice(&SIGNATURE);
            out.push(0x21);
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    let v6 = |a: IpAddr| match a {
                        IpAddr::V6(a) => a.octets(),
                        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    };
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&v6(s));
                    out.extend_from_slice(&v6(d));
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
}

fn mapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        SocketAddr::V6(_) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines_give_the_client_and_their_length() {
        let raw = b"PROXY TCP4 198.18.0.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = parse(raw).unwrap().unwrap();
        assert_eq!(h, Header::Proxied { source: sa("198.18.0.7:40000"), destination: sa("10.0.0.1:443") });
        assert_eq!(&raw[len..len + 3], b"GET");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n").unwrap().unwrap();
        assert_eq!(h, Header::Proxied { source: sa("[2001:db8::7]:40000"), destination: sa("[2001:db8::1]:443") });
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((Header::Local, 15)));
    }

    #[test]
    fn v2_headers_give_the_client_and_skip_tlvs() {
        // PROXY, TCP over IPv4, 12 address bytes and a 3-byte TLV (type 0x04, "no-op").
        let mut raw = SIGNATURE.to_vec();
        raw.extend_from_slice(&[0x21, 0x11, 0x00, 15, 198, 18, 0, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb, 0x04, 0, 0]);
        raw.extend_from_slice(b"\x16\x03\x01");
        let (h, len) = parse(&raw).unwrap().unwrap();
        assert_eq!(h, Header::Proxied { source: sa("198.18.0.7:40000"), destination: sa("10.0.0.1:443") });
        assert_eq!(len, 31);
        assert_eq!(&raw[len..], b"\x16\x03\x01");
        // LOCAL (a health check from the L4 tier).
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap(), Some((Header::Local, 16)));
    }

    #[test]
    fn what_we_write_is_what_we_read_for_both_versions_and_families() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (s, d) in [("198.18.0.7:40000", "10.0.0.1:443"), ("[2001:db8::7]:1", "[2001:db8::1]:80")] {
                let mut out = Vec::new();
                write(version, sa(s), sa(d), &mut out);
                let (h, len) = parse(&out).unwrap().unwrap();
                assert_eq!(len, out.len());
                assert_eq!(h, Header::Proxied { source: sa(s), destination: sa(d) });
            }
        }
        let mut out = Vec::new();
        write(ProxyVersion::V2, sa("198.18.0.7:40000"), sa("10.0.0.1:443"), &mut out);
        assert_eq!(
            out,
            [&SIGNATURE[..], &[0x21, 0x11, 0, 12, 198, 18, 0, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]].concat()
        );
    }

    #[test]
    fn partial_headers_wait_and_anything_else_is_refused() {
        assert_eq!(parse(b"PRO").unwrap(), None);
        assert_eq!(parse(&SIGNATURE[..5]).unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2").unwrap(), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyError::Missing));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(matches!(parse(bad), Err(ProxyError::Malformed(_))), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::Malformed(_))));
        let mut v3 = SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(matches!(parse(&v3), Err(ProxyError::Malformed(_))));
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(ProxyError::Malformed(_))));
    }
}
