//! What a client can and cannot do to the L7 proxy and its backends (issue 10): a client's
//! malformed or cut-short request never counts against a backend; idle sockets are closed.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use balancer_tests::{
    l7::{Browser, VIP, setup},
    require_root,
};

/// Sends `request` on a new connection and returns what came back until the server closed (or
/// 5 s passed).
fn exchange(request: &[u8]) -> String {
    let mut c = TcpStream::connect((VIP, 80)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Defect 2: a chunked body with an invalid chunk size got 502 and left the backend out for
/// `retry_s`, so every later request got 503. It is the client's fault: 400, backend untouched.
#[test]
fn a_malformed_request_body_is_the_clients_fault_and_no_backend_is_left_out() {
    require_root!();
    let mut s = setup("sticky = \"insert\"");
    let client = &s.lan.hosts[0].ns;
    let answers: Vec<String> = client.in_thread(|| {
        (0..4)
            .map(|_| {
                exchange(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            })
            .collect()
    });
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 400"), "a malformed body is a bad request: {a:?}");
    }
    // Every new session still lands on a live backend: none is left out.
    let mut seen = std::collections::HashSet::new();
    for i in 0..8 {
        seen.insert(Browser::new(client, &format!("after{i}")).who("/"));
    }
    assert_eq!(seen, ["be1".to_owned(), "be2".to_owned()].into_iter().collect());
    let log = s.daemon.proc.log();
    assert!(!log.contains("left out"), "no backend may be blamed for a client's body:\n{log}");
    // A well-formed chunked POST still goes through.
    let ok = client.in_thread(|| {
        exchange(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    });
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("post=3"), "{ok:?}");
    s.apps.clear();
}
