//! The L7 sticky layer end to end: a client, the balancer terminating HTTP on the VIP, and
//! application servers that set Tomcat-style session cookies.

use std::time::Duration;

use balancer_tests::{
    daemon::Daemon,
    l7::{Browser, VIP, setup, setup_with},
    netns::Lan,
    require_root,
};

#[test]
fn insert_mode_keeps_a_cookie_jar_on_one_backend_and_hides_the_cookie_from_it() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    let b = Browser::new(&s.lan.hosts[0].ns, "one");
    let (status, head, body) = b.get("/", &[]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.to_ascii_lowercase().contains("set-cookie: balancerid="), "{head}");
    assert!(head.to_ascii_lowercase().contains("cache-control: private"), "nocache: {head}");
    assert!(body.contains("xff=198.18.0.1"), "X-Forwarded-For: {body}");
    assert!(body.contains(&format!("host={VIP}")), "the client's Host is kept: {body}");
    let first = body.split_whitespace().next().unwrap().to_owned();
    for i in 0..50 {
        let (_, head, body) = b.get("/", &[]);
        assert!(body.starts_with(&first), "request {i} went elsewhere: {body}");
        assert!(!body.contains("BALANCERID"), "indirect: the backend must not see our cookie: {body}");
        assert!(
            !head.to_ascii_lowercase().contains("set-cookie: balancerid="),
            "no new cookie on a sticky hit: {head}"
        );
    }
    // Other clients spread over the two backends of the nearest group.
    let mut seen = std::collections::HashSet::new();
    for i in 0..10 {
        seen.insert(Browser::new(&s.lan.hosts[0].ns, &format!("c{i}")).who("/"));
    }
    assert_eq!(seen, ["be1".to_owned(), "be2".to_owned()].into_iter().collect());
}

#[test]
fn a_forged_cookie_is_ignored_and_replaced() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    for (i, forged) in
        ["r3.1.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "r3", "r1.9999999999.9999999999.x"].iter().enumerate()
    {
        let b = Browser::new(&s.lan.hosts[0].ns, &format!("forger{i}"));
        let (status, head, body) = b.get("/", &["-H", &format!("Cookie: BALANCERID={forged}")]);
        assert_eq!(status, 200);
        assert!(!body.starts_with("be3"), "a forged cookie must not steer: {body}");
        assert!(head.to_ascii_lowercase().contains("set-cookie: balancerid="), "a fresh assignment: {head}");
    }
}

#[test]
fn failover_moves_the_session_inside_its_domain_with_a_new_cookie() {
    require_root!();
    let mut s = setup("sticky = \"insert\"");
    let b = Browser::new(&s.lan.hosts[0].ns, "fo");
    let first = b.who("/");
    let other = if first == "be1" { "be2" } else { "be1" };
    s.apps[usize::from(first != "be1")] = None; // its server dies
    let (status, head, body) = b.get("/", &[]);
    assert_eq!(status, 200, "the next request succeeds: {head}{body}");
    assert!(body.starts_with(other), "same domain first: {body}");
    assert!(head.to_ascii_lowercase().contains("set-cookie: balancerid="), "a new cookie: {head}");
    for _ in 0..5 {
        assert_eq!(b.who("/"), other, "and the session stays there");
    }
}

#[test]
fn nofailover_answers_503_when_the_session_backend_is_gone() {
    require_root!();
    let mut s = setup("sticky = \"insert\"\nnofailover = true");
    let b = Browser::new(&s.lan.hosts[0].ns, "nf");
    let first = b.who("/");
    s.apps[usize::from(first != "be1")] = None;
    let (status, _, body) = b.get("/", &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("session"), "{body}");
    assert_eq!(Browser::new(&s.lan.hosts[0].ns, "fresh").get("/", &[]).0, 200, "new sessions still work");
}

#[test]
fn route_suffix_follows_the_applications_jsessionid_and_path_parameter() {
    require_root!();
    let s = setup("sticky = \"route-suffix\"");
    let b = Browser::new(&s.lan.hosts[0].ns, "rs");
    let first = b.who("/");
    for _ in 0..20 {
        assert_eq!(b.who("/"), first, "JSESSIONID=….route keeps the session");
    }
    let nojar = Browser::new(&s.lan.hosts[0].ns, "url");
    for (route, name) in [("r1", "be1"), ("r2", "be2"), ("r3", "be3")] {
        assert_eq!(nojar.who(&format!("/cart;jsessionid=ABC123.{route}?x=1")), name, "URL rewriting without cookies");
    }
}

#[test]
fn a_drained_backend_keeps_its_sessions_but_gets_no_new_ones() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    let b = Browser::new(&s.lan.hosts[0].ns, "dr");
    let first = b.who("/");
    let ip = if first == "be1" { "198.18.0.3" } else { "198.18.0.4" };
    let out = s.daemon.ctl(&s.lan.hosts[1].ns, &["backend", "set", &format!("{VIP}:80"), ip, "--state", "drain"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..5 {
        assert_eq!(b.who("/"), first, "the drained backend keeps its session");
    }
    for i in 0..10 {
        assert_ne!(
            Browser::new(&s.lan.hosts[0].ns, &format!("n{i}")).who("/"),
            first,
            "no new session on a drained backend"
        );
    }
}

#[test]
fn a_get_whose_backend_refuses_is_retried_on_another() {
    require_root!();
    let mut s = setup("sticky = \"insert\"\nmax_attempts = 2");
    s.apps[0] = None; // be1 is down, and nothing has noticed yet
    for i in 0..10 {
        let (status, _, body) = Browser::new(&s.lan.hosts[0].ns, &format!("r{i}")).get("/", &[]);
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.starts_with("be2"), "{body}");
    }
}

#[test]
fn a_slowloris_client_is_cut_off_while_others_are_served() {
    require_root!();
    let s = setup("sticky = \"insert\"\nheader_timeout_ms = 1000");
    let client = &s.lan.hosts[0].ns;
    let (cut_after, served) = client.in_thread(|| {
        use std::io::{Read as _, Write as _};
        let mut slow = std::net::TcpStream::connect((VIP, 80)).expect("connect");
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = std::time::Instant::now();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        // Others are served meanwhile.
        let mut served = 0;
        for _ in 0..5 {
            let mut c = std::net::TcpStream::connect((VIP, 80)).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut r = String::new();
            c.read_to_string(&mut r).unwrap();
            served += usize::from(r.starts_with("HTTP/1.1 200"));
            let _ = slow.write_all(b"X-Slow: 1\r\n");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        (start.elapsed(), served)
    });
    assert_eq!(served, 5);
    assert!(cut_after < Duration::from_secs(3), "cut off after {cut_after:?}");
}

#[test]
fn route_suffix_works_against_real_tomcat_and_jetty() {
    require_root!();
    use balancer_tests::backend::JavaServer;
    let lan = Lan::new(&["client", "lb", "tc1", "tc2", "jt1"]);
    let mut servers = [
        Some(JavaServer::tomcat(&lan.hosts[2], "tomcat1", 8080)),
        Some(JavaServer::tomcat(&lan.hosts[3], "tomcat2", 8080)),
        Some(JavaServer::jetty(&lan.hosts[4], "jetty1", 8080)),
    ];
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[vip.l7]\nsticky = \"route-suffix\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\nroute = \"tomcat1\"\ndomain = \"tomcats\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\nport = 8080\nroute = \"tomcat2\"\ndomain = \"tomcats\"\n\
         [[vip.backend]]\naddress = \"198.18.0.5\"\nport = 8080\nroute = \"jetty1\"\n"
    );
    let _daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    let client = &lan.hosts[0].ns;

    // Each client's session, set by the container itself, keeps it on that container.
    let mut seen = std::collections::HashSet::new();
    for i in 0..6 {
        let b = Browser::new(client, &format!("s{i}"));
        let first = b.who("/");
        for _ in 0..10 {
            assert_eq!(b.who("/"), first, "client {i}: JSESSIONID=….{first} keeps the session");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "sessions spread: {seen:?}");
    // Cookieless clients with the session in the URL (Tomcat's and Jetty's encodeURL).
    let nojar = Browser::new(client, "url");
    for route in ["tomcat1", "tomcat2", "jetty1"] {
        assert_eq!(nojar.who(&format!("/;jsessionid=0123ABCD.{route}")), route);
    }
    // The container holding a session dies: the next request lands on the other Tomcat, its
    // replication partner, which opens a session of its own.
    let b = Browser::new(client, "fo");
    // New sessions go round the three servers: within three tries one is on a Tomcat.
    let on = (0..3)
        .find_map(|_| {
            std::fs::remove_file(&b.jar).ok();
            Some(b.who("/")).filter(|w| w.starts_with("tomcat"))
        })
        .expect("a session on a Tomcat");
    servers[usize::from(on != "tomcat1")] = None;
    let other = if on == "tomcat1" { "tomcat2" } else { "tomcat1" };
    let (status, head, body) = b.get("/", &[]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.starts_with(other), "same domain: {body}");
    assert!(
        head.contains(&format!(".{other};")) || head.contains(&format!(".{other} ")),
        "a new session from {other}: {head}"
    );
    for _ in 0..5 {
        assert_eq!(b.who("/"), other);
    }
}

#[test]
fn the_status_page_and_its_json_show_sessions_requests_and_health() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    for i in 0..4 {
        let b = Browser::new(&s.lan.hosts[0].ns, &format!("st{i}"));
        for _ in 0..3 {
            b.who("/");
        }
    }
    let lb = &s.lan.hosts[1].ns;
    let json: serde_json::Value =
        serde_json::from_str(&lb.run(&["curl", "-sf", "--max-time", "3", "http://127.0.0.1:9090/status.json"]))
            .unwrap();
    let backends = json["vips"][0]["backends"].as_array().unwrap();
    let total = |k: &str| backends.iter().map(|b| b["l7"][k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(json["vips"][0]["sticky"], "insert");
    assert_eq!(total("sessions"), 4, "four clients, four sessions: {json:#}");
    assert_eq!(total("requests"), 12, "{json:#}");
    assert_eq!(total("errors"), 0);
    // Each answer is "beN cookie=… xff=198.18.0.1\n", at least 27 bytes of body.
    assert!(total("bytes") >= 12 * 27, "streamed body bytes are counted: {json:#}");
    let html = lb.run(&["curl", "-sf", "--max-time", "3", "http://127.0.0.1:9090/status"]);
    for needle in ["<title>balancer status</title>", "198.18.0.3:8080", "L7, sticky insert", "<td>r2</td>"] {
        assert!(html.contains(needle), "{needle} missing from the page:\n{html}");
    }
}

#[test]
fn a_backup_serves_only_once_every_primary_is_down() {
    require_root!();
    let mut s = setup_with("sticky = \"insert\"\nmax_attempts = 3", "backup = true");
    for i in 0..6 {
        assert_ne!(Browser::new(&s.lan.hosts[0].ns, &format!("p{i}")).who("/"), "be3", "primaries are up");
    }
    s.apps[0] = None;
    s.apps[1] = None;
    // The first request finds both primaries refusing and is retried on the backup.
    for i in 0..6 {
        assert_eq!(Browser::new(&s.lan.hosts[0].ns, &format!("b{i}")).who("/"), "be3");
    }
}

#[test]
fn an_oversized_request_head_gets_431() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    let big = format!("X-Big: {}", "a".repeat(20_000));
    let (status, _, _) = Browser::new(&s.lan.hosts[0].ns, "big").get("/", &["-H", &big]);
    assert_eq!(status, 431);
    assert_eq!(Browser::new(&s.lan.hosts[0].ns, "small").get("/", &[]).0, 200, "others unaffected");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    require_root!();
    let s = setup("sticky = \"insert\"\nheader_timeout_ms = 1000");
    let (first, closed_after) = s.lan.hosts[0].ns.in_thread(|| {
        use std::io::Write as _;
        let mut c = std::net::TcpStream::connect((VIP, 80)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = balancer_tests::backend::read_some(&mut c, &mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200");
        let idle = std::time::Instant::now();
        // Nothing more is sent: the server must hang up by itself.
        while balancer_tests::backend::read_some(&mut c, &mut buf).is_ok_and(|n| n > 0) {}
        (first, idle.elapsed())
    });
    assert!(first);
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
}

#[test]
fn without_preserve_host_the_backend_gets_its_own_address_as_host() {
    require_root!();
    let s = setup("sticky = \"insert\"\npreserve_host = false");
    let (_, _, body) = Browser::new(&s.lan.hosts[0].ns, "h").get("/", &[]);
    assert!(body.contains("host=198.18.0.3:8080") || body.contains("host=198.18.0.4:8080"), "{body}");
}

#[test]
fn http2_clients_with_prior_knowledge_keep_their_session() {
    require_root!();
    let s = setup("sticky = \"insert\"");
    let b = Browser::new(&s.lan.hosts[0].ns, "h2");
    let (status, head, body) = b.get("/", &["--http2-prior-knowledge"]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.starts_with("HTTP/2"), "answered over HTTP/2: {head}");
    assert!(body.contains(&format!("host={VIP}")), "the backend gets the :authority as Host: {body}");
    let first = body.split_whitespace().next().unwrap().to_owned();
    for _ in 0..10 {
        let (_, _, body) = b.get("/", &["--http2-prior-knowledge"]);
        assert!(body.starts_with(&first), "{body}");
    }
}

/// Large responses arrive byte for byte, through the proxy's buffer and through a pipe
/// (`splice = true`), with a length or chunked, and the connection serves on after them.
#[test]
fn large_responses_arrive_whole_through_the_buffer_and_through_a_pipe() {
    require_root!();
    let want: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for splice in [false, true] {
        let mut s = setup(&format!("sticky = \"insert\"\nsplice = {splice}"));
        for path in ["/big", "/big-chunked"] {
            let url = format!("http://{VIP}{path}");
            let again = format!("http://{VIP}/");
            // Two requests on one connection: the second proves the first ended where it should.
            let out = s.lan.hosts[0].ns.output(&["curl", "-s", "--max-time", "10", &url, &again]);
            let got = out.stdout;
            assert!(got.len() > want.len(), "splice={splice} {path}: {} bytes", got.len());
            assert!(got[..want.len()] == want[..], "splice={splice} {path}: the body differs");
            let rest = String::from_utf8_lossy(&got[want.len()..]);
            assert!(rest.starts_with("be"), "splice={splice} {path}: then {rest:?}");
        }
        s.apps.clear();
    }
}
