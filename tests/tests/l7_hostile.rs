//! Hostile HTTP against the L7 proxy (issue 10's suite): each request-smuggling class, and what
//! the client gets and the exact bytes the backend receives. The rule for every case: a request
//! the proxy cannot frame one way only is refused with 400, and what reaches the backend is one
//! request, framed one way (never `Content-Length` beside `Transfer-Encoding`, never a second
//! request hidden in a body).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use balancer_tests::{backend::Recorder, daemon::Daemon, netns::Lan, require_root};

const VIP: &str = "198.51.100.10";

struct Rig {
    lan: Lan,
    recorder: Recorder,
    _daemon: Daemon,
}

fn rig() -> Rig {
    let lan = Lan::new(&["client", "lb", "be1"]);
    let recorder = Recorder::start(&lan.hosts[2], 8080);
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[vip.l7]\nsticky = \"hash\"\n\
         header_timeout_ms = 2000\n[[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\n"
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    Rig { lan, recorder, _daemon: daemon }
}

/// Sends `request` on its own connection; what came back until the proxy closed (or 3 s).
fn send(request: &[u8]) -> String {
    let mut c = TcpStream::connect((VIP, 80)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(request).unwrap();
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes in `answer`, in order (one per response the proxy wrote).
fn statuses(answer: &str) -> Vec<u16> {
    answer.match_indices("HTTP/1.1 ").filter_map(|(i, _)| answer[i + 9..].get(..3)?.parse().ok()).collect()
}

/// What the backend receives for a plain request through this rig, after `line` and the
/// request's `host`: the proxy's canonical head (lowercase names, forwarded-for headers).
fn forwarded(line: &str, host: &str, rest: &str) -> String {
    format!(
        "{line}\r\nhost: {host}\r\n{rest}x-forwarded-for: 198.18.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: {host}\r\n\r\n"
    )
}

/// What must reach the backend.
enum Backend {
    /// Nothing: no request head reaches it (an opened, empty connection is allowed).
    Nothing,
    /// Exactly these requests, byte for byte.
    Exactly(Vec<String>),
    /// At most one request, starting with this, and nothing smuggled after it: the client's
    /// body fails while the proxy forwards, so whether the head got out first is a race.
    AtMostOneStartingWith(&'static str),
}

#[test]
fn every_smuggling_class_is_refused_or_framed_one_way() {
    require_root!();
    let r = rig();
    let post = |rest: &str, body: &str| format!("{}{body}", forwarded("POST / HTTP/1.1", "x", rest));
    let cases: Vec<(&str, &[u8], Vec<u16>, Backend)> = vec![
        // Content-Length beside Transfer-Encoding: chunked wins, the length is dropped, and the
        // connection closes after the answer, so the "GET /smuggled" after the body is never read.
        ("CL then TE", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![200], Backend::Exactly(vec![post("transfer-encoding: chunked\r\n", "0\r\n\r\n")])),
        ("TE then CL", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![200], Backend::Exactly(vec![post("transfer-encoding: chunked\r\n", "0\r\n\r\n")])),
        ("two differing CL", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", vec![400], Backend::Nothing),
        ("two equal CL", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            vec![200], Backend::Exactly(vec![post("content-length: 3\r\n", "abc")])),
        ("CL list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", vec![400], Backend::Nothing),
        ("CL +3", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", vec![400], Backend::Nothing),
        ("CL -1", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc", vec![400], Backend::Nothing),
        ("CL 0x3", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc", vec![400], Backend::Nothing),
        ("CL overflow", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc", vec![400], Backend::Nothing),
        ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", vec![501], Backend::Nothing),
        ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", vec![400], Backend::Nothing),
        ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n", vec![200], Backend::Exactly(vec![forwarded("GET / HTTP/1.1", "x", "")])),
        ("bare CR", b"GET / HTTP/1.1\rHost: x\r\n\r\n", vec![400], Backend::Nothing),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", vec![400], Backend::Nothing),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", vec![400], Backend::Nothing),
        ("chunk size zz", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n", vec![400], Backend::Nothing),
        ("chunk line bare LF", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", vec![400], Backend::Nothing),
        // Chunk extensions are dropped: the backend gets the body re-chunked, no extension.
        ("chunk extension", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\n\r\n",
            vec![200], Backend::Exactly(vec![post("transfer-encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n")])),
        // The absolute-form target names the host; Host is ignored (RFC 9112 §3.2.2).
        ("absolute-form target", b"GET http://other.example/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![200], Backend::Exactly(vec![forwarded("GET /p?q=1 HTTP/1.1", "other.example", "")])),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", vec![400], Backend::Nothing),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", vec![400], Backend::Nothing),
        ("pipelined", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![200, 200], Backend::Exactly(vec![forwarded("GET /1 HTTP/1.1", "x", ""), forwarded("GET /2 HTTP/1.1", "x", "")])),
        // A body shorter than its length: the client's fault (400); what it sent is one body.
        ("body shorter than CL", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            vec![400], Backend::AtMostOneStartingWith("GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 30\r\n")),
    ];
    let mut wrong = Vec::new();
    for (name, request, want, backend) in cases {
        let answer = r.lan.hosts[0].ns.in_thread(|| send(request));
        std::thread::sleep(Duration::from_millis(250));
        let got = r.recorder.take();
        let heads: Vec<&String> = got.iter().filter(|g| !g.is_empty()).collect();
        let backend_ok = match &backend {
            Backend::Nothing => heads.is_empty(),
            Backend::Exactly(want) => got == *want,
            Backend::AtMostOneStartingWith(prefix) => {
                heads.len() == 1 && heads[0].starts_with(prefix) && heads[0].matches("HTTP/1.1").count() == 2
            }
        };
        if statuses(&answer) != want || !backend_ok {
            wrong.push(format!("{name}: client got {:?} (want {want:?}), backend got {got:?}", statuses(&answer)));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
