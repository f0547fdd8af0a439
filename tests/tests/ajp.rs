//! The AJP/1.3 codec (`balancer::l7::ajp`) against Debian's Tomcat 10 with an AJP connector
//! that requires a secret: CPing/CPong, a forwarded request with its session route, a second
//! request on the same connection, a wrong secret, and the `ajp-cping` health check.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use balancer::l7::ajp::{self, ForwardRequest, Message};
use balancer_tests::{
    backend::JavaServer,
    daemon::Daemon,
    l7::{Browser, VIP, sessions_stay, vip_on_lb},
    netns::Lan,
    require_root,
};

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
        match balancer_tests::backend::read_some(s, &mut chunk) {
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
    let health = balancer::config::HealthCheck {
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
    let check = balancer::health::probe::Check { health, ajp: None, tunnel: None };
    let http = SocketAddr::new(lan.hosts[1].ip.into(), 8080);
    let (up, not_ajp) = lan.hosts[0].ns.in_thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            (balancer::health::probe::run(&check, addr).await, balancer::health::probe::run(&check, http).await)
        })
    });
    assert!(up.is_ok(), "{up:?}");
    let why = not_ajp.unwrap_err().to_string();
    assert!(why.contains("not an AJP connector") || why.contains("no answer"), "{why}");
}

/// The balancer in front of two Tomcats over AJP/1.3 on `lan` (client, lb, tc1, tc2), with
/// `secret` as the VIP's `ajp_secret` and the `http` health check sent over AJP.
fn ajp_vip(lan: &Lan, secret: &str) -> Daemon {
    vip_on_lb(lan);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[vip.l7]\nsticky = \"route-suffix\"\n\
         backend_protocol = \"ajp13\"\najp_secret = \"{secret}\"\n\
         [vip.health]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 500\nrise = 1\nfall = 2\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8009\nroute = \"t1\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\nport = 8009\nroute = \"t2\"\n"
    );
    Daemon::start(&lan.hosts[1].ns, &config, "info")
}

/// One field (`name=value`) of what `echo.jsp` printed.
fn field<'a>(echo: &'a str, name: &str) -> &'a str {
    echo.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} in {echo}"))
}

#[test]
fn ajp13_backends_keep_sessions_carry_bodies_both_ways_and_fail_over() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "tc1", "tc2"]);
    let secret = "s3cret-for-ajp";
    let mut tomcats = [
        Some(JavaServer::tomcat_ajp(&lan.hosts[2], "t1", 8080, 8009, secret)),
        Some(JavaServer::tomcat_ajp(&lan.hosts[3], "t2", 8080, 8009, secret)),
    ];
    let daemon = ajp_vip(&lan, secret);
    let client = &lan.hosts[0].ns;

    // Sessions the containers open stay on them (JSESSIONID=<id>.<jvmRoute>), over AJP.
    let seen = sessions_stay(client, "a", 4, 5);
    assert_eq!(seen.len(), 2, "new sessions go to both: {seen:?}");

    // What the container sees of the request: the client's address and port, the host asked
    // for, the VIP's port, the query; no TLS.
    let url = format!("http://{VIP}/echo.jsp?x=1&y=2");
    let echo = client.run(&["curl", "-sf", "--max-time", "5", "-H", "Host: shop.example", &url]);
    assert_eq!(field(&echo, "remote"), "198.18.0.1", "{echo}");
    assert!(field(&echo, "port").parse::<u16>().is_ok_and(|p| p > 0), "the client's port: {echo}");
    assert_eq!(field(&echo, "secure"), "false", "{echo}");
    assert_eq!(field(&echo, "server"), "shop.example:80", "{echo}");
    assert_eq!((field(&echo, "uri"), field(&echo, "query")), ("/echo.jsp", "x=1&y=2"), "{echo}");
    assert_eq!(field(&echo, "len"), "0", "{echo}");

    // Request bodies larger than one AJP packet, with a length (curl asks 100-continue) and
    // chunked: every byte arrives, in order.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let file = std::env::temp_dir().join(format!("{}-body", client.name()));
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let want = JavaServer::body_digest(&body).to_string();
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut argv = vec!["curl", "-sf", "--max-time", "10", "--data-binary", &data];
        argv.extend_from_slice(extra);
        argv.push(&url);
        let echo = client.run(&argv);
        assert_eq!((field(&echo, "method"), field(&echo, "len")), ("POST", "300000"), "{extra:?}: {echo}");
        assert_eq!(field(&echo, "sum"), want, "{extra:?}: the body arrived intact");
    }
    let _ = std::fs::remove_file(&file);

    // A response of many body chunks and no length reaches the client chunked, whole; HEAD
    // gets the head alone; two requests share the client's connection.
    let big = client.run(&["curl", "-sf", "--max-time", "10", &format!("http://{VIP}/big.jsp?n=300000")]);
    let expected: String = (0..300_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert!(big == expected, "300000 bytes of a-z, got {} bytes", big.len());
    let head = client.run(&["curl", "-sf", "--max-time", "5", "-I", &format!("http://{VIP}/")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let two = client.run(&["curl", "-sf", "--max-time", "5", "-w", " [%{num_connects}]\n", &url, &url]);
    assert_eq!(two.matches("remote=198.18.0.1").count(), 2, "{two}");
    assert!(two.contains("[1]") && two.contains("[0]"), "the second request reused the connection: {two}");

    // A response the application flushes as it goes reaches the client as it goes.
    let timed = client.run(&[
        "curl",
        "-sf",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{time_starttransfer} %{time_total} %{size_download}",
        &format!("http://{VIP}/slow.jsp"),
    ]);
    let t: Vec<f64> = timed.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    assert!(
        t.len() == 3 && t[0] < 1.0 && t[1] >= 1.4 && (t[2] - 13.0).abs() < 0.5,
        "first byte before the pause: {timed}"
    );

    // The container holding a session stops: the session moves to the other one, which opens
    // a session of its own; a connect failure is not the client's error.
    let b = Browser::new(client, "moving");
    let on = b.who("/");
    tomcats[usize::from(on == "t2")] = None;
    let other = if on == "t1" { "t2" } else { "t1" };
    let (status, head, body) = b.get("/", &[]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.starts_with(other), "failed over: {body}");
    assert!(head.contains(&format!(".{other}")), "a new session from {other}: {head}");
    assert_eq!(b.who("/"), other);
    drop(daemon);
}

#[test]
fn a_wrong_ajp_secret_takes_the_backend_down_with_the_reason_and_never_hangs() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "tc1", "tc2"]);
    let _t1 = JavaServer::tomcat_ajp(&lan.hosts[2], "t1", 8080, 8009, "the-real-secret");
    let _t2 = JavaServer::tomcat_ajp(&lan.hosts[3], "t2", 8080, 8009, "the-real-secret");
    let mut daemon = ajp_vip(&lan, "not-the-secret");
    daemon.proc.wait_for_log("is `secret` the connector's?", Duration::from_secs(15));
    let started = std::time::Instant::now();
    let out = lan.hosts[0].ns.output(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{VIP}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503", "no backend is up");
    assert!(started.elapsed() < Duration::from_secs(3), "answered at once");
    let status = daemon.ctl(&lan.hosts[1].ns, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches("down").count(), 2, "both backends down: {text}");
}
