//! The AJP/1.3 codec (`balancer::l7::ajp`) against Debian's Tomcat 10 with an AJP connector
//! that requires a secret: CPing/CPong, a forwarded request with its session route, a second
//! request on the same connection, a wrong secret, and the `ajp-cping` health check.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use balancer::l7::ajp::{self, ForwardRequest, Message};
use balancer_tests::{backend::JavaServer, netns::Lan, require_root};

/// What the container answered to one request.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    reuse: bool,
}

/// Reads messages from `s` until `END_RESPONSE` (or the connection ends).
fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut answer = Answer::default();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((message, len)) = ajp::parse(&buf).expect("valid AJP from Tomcat") {
            match message {
                Message::SendHeaders { status, headers, .. } => {
                    answer.status = status;
                    answer.headers = headers
                        .iter()
                        .map(|(n, v)| {
                            (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned())
                        })
                        .collect();
                }
                Message::BodyChunk(b) => answer.body.push_str(&String::from_utf8_lossy(b)),
                Message::EndResponse { reuse } => {
                    answer.reuse = reuse;
                    return answer;
                }
                Message::GetBodyChunk(_) | Message::CPong => {}
            }
            buf.drain(..len);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return answer,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn request<'a>(headers: &'a [(&'a [u8], &'a [u8])], secret: &'a str) -> ForwardRequest<'a> {
    ForwardRequest {
        method: "GET",
        protocol: "HTTP/1.1",
        uri: "/index.jsp",
        query: Some("a=1"),
        remote_addr: "198.18.0.1",
        remote_port: 40000,
        server_name: "shop.example",
        server_port: 80,
        is_ssl: false,
        headers,
        route: Some("t1"),
        secret: Some(secret),
    }
}

#[test]
fn the_ajp_codec_speaks_to_tomcat_with_a_secret() {
    require_root!();
    let lan = Lan::new(&["client", "be1"]);
    let _tomcat = JavaServer::tomcat_ajp(&lan.hosts[1], "t1", 8080, 8009, "s3cret-for-ajp");
    let addr = SocketAddr::new(lan.hosts[1].ip.into(), 8009);
    let (pong, first, second, wrong) = lan.hosts[0].ns.in_thread(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("the AJP connector");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&ajp::CPING).unwrap();
        let mut pong = [0u8; 5];
        s.read_exact(&mut pong).unwrap();
        let headers: [(&[u8], &[u8]); 1] = [(b"host", b"shop.example")];
        let mut out = Vec::new();
        ajp::forward_request(&request(&headers, "s3cret-for-ajp"), &mut out).unwrap();
        s.write_all(&out).unwrap();
        let first = read_answer(&mut s);
        // The same connection again, now with the session's cookie.
        let cookie = first
            .headers
            .iter()
            .find(|(n, _)| n == "Set-Cookie")
            .map(|(_, v)| v.split(';').next().unwrap_or("").to_owned())
            .unwrap_or_default();
        let headers: [(&[u8], &[u8]); 2] = [(b"host", b"shop.example"), (b"cookie", cookie.as_bytes())];
        out.clear();
        ajp::forward_request(&request(&headers, "s3cret-for-ajp"), &mut out).unwrap();
        s.write_all(&out).unwrap();
        let second = read_answer(&mut s);
        let mut w = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        out.clear();
        ajp::forward_request(&request(&headers, "not-the-secret"), &mut out).unwrap();
        w.write_all(&out).unwrap();
        (pong, first, second, read_answer(&mut w))
    });
    assert_eq!(ajp::parse(&pong).unwrap().map(|(m, _)| m), Some(Message::CPong));
    assert_eq!(first.status, 200, "{first:?}");
    let cookie = first.headers.iter().find(|(n, _)| n == "Set-Cookie").map(|(_, v)| v.clone()).unwrap_or_default();
    let pair = cookie.split(';').next().unwrap_or("");
    assert!(pair.starts_with("JSESSIONID=") && pair.rsplit_once('.').is_some_and(|(_, r)| r == "t1"), "{first:?}");
    assert!(first.body.starts_with("t1 "), "{first:?}");
    assert!(first.reuse, "the connection is kept: {first:?}");
    let id = pair.trim_start_matches("JSESSIONID=");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(second.body.contains(id), "the session continues on the kept connection: {second:?} {id}");
    assert_eq!(wrong.status, 403, "a wrong secret is refused: {wrong:?}");

    // The health check kind `ajp-cping` (mod_jk's ping_mode): up on the AJP port, and a clear
    // reason on the HTTP one.
    let check = balancer::config::HealthCheck {
        kind: balancer::config::CheckKind::AjpCping,
        port: None,
        path: "/".into(),
        expect: (200, 399),
        interval_ms: 2000,
        timeout_ms: Some(2000),
        rise: 2,
        fall: 3,
        slowstart_s: 0,
    };
    let http = SocketAddr::new(lan.hosts[1].ip.into(), 8080);
    let (up, not_ajp) = lan.hosts[0].ns.in_thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            (balancer::health::probe::run(&check, addr).await, balancer::health::probe::run(&check, http).await)
        })
    });
    assert_eq!(up, Ok(()));
    let why = not_ajp.unwrap_err();
    assert!(why.contains("not an AJP connector") || why.contains("no answer"), "{why}");
}
