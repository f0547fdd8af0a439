//! The L7 VIP as an edge: WebSocket through a sticky VIP (Python's `websockets` on both
//! ends), the PROXY protocol from an L4 tier in front and to backends that ask for it, and
//! the access log.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use balancer_tests::{
    backend::{AppServer, Recorder},
    daemon::Daemon,
    netns::{Lan, Proc},
    require_root,
};

const VIP: &str = "198.51.100.10";

/// Debian's Python, which has `python3-websockets`.
const PYTHON: &str = "/usr/bin/python3";

/// A WebSocket echo server (`websockets` 10): plain GETs answer `NAME`, a WebSocket on any
/// path echoes each message as `NAME:message`.
const WS_SERVER: &str = r#"
import asyncio, http, sys, websockets
port, name, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
async def echo(ws, path):
    async for msg in ws:
        await ws.send(f"{name}:{msg}")
async def plain(path, headers):
    if headers.get("Upgrade", "").lower() != "websocket":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], f"{name}\n".encode()
async def main():
    async with websockets.serve(echo, host, port, process_request=plain, max_size=None):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client: `URL COOKIE N HOLD` sends N messages (the last one 100 KB) and prints
/// each answer's backend, then holds the connection HOLD seconds and sends one more; prints
/// `closed` when the connection was closed under it.
const WS_CLIENT: &str = r#"
import asyncio, sys, websockets
url, cookie, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
async def main():
    headers = [("Cookie", cookie)] if cookie else []
    async with websockets.connect(url, extra_headers=headers, max_size=None, ping_interval=None) as ws:
        for i in range(n):
            msg = "x" * 100_000 if i == n - 1 else f"m{i}"
            await ws.send(msg)
            got = await ws.recv()
            name, _, echoed = got.partition(":")
            print(name if echoed == msg else f"mangled:{got[:40]}", flush=True)
        if hold > 0:
            print("holding", flush=True)
            await asyncio.sleep(hold)
            try:
                await ws.send("after")
                got = await asyncio.wait_for(ws.recv(), 3)
                print("after:" + got.partition(":")[0], flush=True)
            except Exception:
                print("closed", flush=True)
asyncio.run(main())
"#;

struct WsRig {
    lan: Lan,
    _servers: Vec<Proc>,
    daemon: Daemon,
    client: PathBuf,
    key: PathBuf,
}

impl Drop for WsRig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.client);
        let _ = std::fs::remove_file(&self.key);
    }
}

fn ws_rig(l7: &str, top: &str) -> WsRig {
    let lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let server = std::env::temp_dir().join(format!("{}-ws.py", lan.hosts[1].ns.name()));
    std::fs::write(&server, WS_SERVER).unwrap();
    let servers: Vec<Proc> = (2..4)
        .map(|h| {
            let host = &lan.hosts[h];
            let name = format!("be{}", h - 1);
            host.ns.spawn(&[PYTHON, server.to_str().unwrap(), "8080", &name, &host.ip.to_string()])
        })
        .collect();
    for h in 2..4 {
        let url = format!("http://{}:8080/", lan.hosts[h].ip);
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            lan.hosts[h].ns.output(&["curl", "-sf", "--max-time", "1", &url]).status.success()
        });
        assert!(up, "the WebSocket server on be{} did not start", h - 1);
    }
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    let key = std::env::temp_dir().join(format!("{}-ws.key", lan.hosts[1].ns.name()));
    std::fs::write(&key, "k3y-for-the-websocket-tests-0123").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "interfaces = [\"eth0\"]\n{top}\n[[vip]]\naddress = \"{VIP}:80\"\n[vip.l7]\nkey_file = \"{}\"\n{l7}\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\nroute = \"r1\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\nport = 8080\nroute = \"r2\"\n",
        key.display()
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    let client = std::env::temp_dir().join(format!("{}-wsclient.py", lan.hosts[0].ns.name()));
    std::fs::write(&client, WS_CLIENT).unwrap();
    WsRig { lan, _servers: servers, daemon, client, key }
}

impl WsRig {
    /// Runs the client to the end; its lines.
    fn client(&self, cookie: &str, n: usize, hold: f64) -> Vec<String> {
        let url = format!("ws://{VIP}/chat");
        let out = self.lan.hosts[0].ns.output(&[
            PYTHON,
            self.client.to_str().unwrap(),
            &url,
            cookie,
            &n.to_string(),
            &hold.to_string(),
        ]);
        assert!(out.status.success(), "ws client: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// The session cookie a plain GET gets, and the backend that answered it.
    fn session(&self) -> (String, String) {
        let out = self.lan.hosts[0].ns.run(&["curl", "-s", "--max-time", "5", "-D", "-", &format!("http://{VIP}/")]);
        let cookie = out
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned();
        let who = out.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_owned();
        (cookie, who)
    }

    fn status(&self) -> serde_json::Value {
        let out = self.daemon.ctl(&self.lan.hosts[1].ns, &["--json", "status"]);
        serde_json::from_slice(&out.stdout).expect("status --json")
    }
}

#[test]
fn a_websocket_reaches_its_sessions_backend_and_carries_messages_both_ways() {
    require_root!();
    let rig = ws_rig("sticky = \"insert\"", "");
    for _ in 0..3 {
        let (cookie, who) = rig.session();
        let lines = rig.client(&cookie, 20, 0.0);
        assert_eq!(lines.len(), 20, "{lines:?}");
        assert!(
            lines.iter().all(|l| *l == who),
            "every message echoed whole by the session's backend {who}: {lines:?}"
        );
    }
    // Without a session the upgrade is a new session like any request.
    let lines = rig.client("", 3, 0.0);
    assert!(lines.iter().all(|l| l == "be1" || l == "be2") && lines.windows(2).all(|w| w[0] == w[1]), "{lines:?}");
    let c = &rig.status()["vips"][0]["connections"];
    assert_eq!(c["upgrades"], 4, "{c}");
    assert_eq!(c["tunnels"], 0, "{c}");
}

#[test]
fn an_open_websocket_is_counted_survives_a_reload_and_an_idle_one_is_closed_after_tunnel_timeout_s() {
    require_root!();
    let rig = ws_rig("sticky = \"insert\"\ntunnel_timeout_s = 3", "");
    let (cookie, who) = rig.session();
    let url = format!("ws://{VIP}/chat");
    // Held 2 s (inside the 3 s timeout), across a reload.
    let mut held = rig.lan.hosts[0].ns.spawn(&[PYTHON, rig.client.to_str().unwrap(), &url, &cookie, "2", "2"]);
    held.wait_for_log("holding", Duration::from_secs(5));
    let c = rig.status()["vips"][0]["connections"].clone();
    assert_eq!(c["tunnels"], 1, "an open tunnel is counted: {c}");
    let out = rig.daemon.ctl(&rig.lan.hosts[1].ns, &["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let until = Instant::now() + Duration::from_secs(10);
    while held.try_wait().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = held.log();
    assert!(log.contains(&format!("after:{who}")), "the tunnel survived the reload: {log}");
    // Idle for 5 s: closed at 3.
    let lines = rig.client(&cookie, 1, 5.0);
    assert_eq!(lines.last().map(String::as_str), Some("closed"), "{lines:?}");
    assert_eq!(rig.status()["vips"][0]["connections"]["tunnels"], 0);
}

#[test]
fn a_graceful_restart_waits_for_an_open_websocket_up_to_its_deadline_then_closes_it() {
    require_root!();
    let mut rig = ws_rig("sticky = \"insert\"", "drain_timeout_s = 2");
    let (cookie, _) = rig.session();
    let url = format!("ws://{VIP}/chat");
    let mut held = rig.lan.hosts[0].ns.spawn(&[PYTHON, rig.client.to_str().unwrap(), &url, &cookie, "1", "5"]);
    held.wait_for_log("holding", Duration::from_secs(5));
    let lb = &rig.lan.hosts[1].ns;
    let mut old = rig.daemon.takeover(lb, "info");
    let handed = Instant::now();
    let (_, who) = rig.session();
    assert!(who == "be1" || who == "be2", "the new daemon serves new clients: {who}");
    while old.try_wait().is_none() && handed.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = handed.elapsed();
    assert!(old.try_wait().is_some(), "the old daemon exits");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "it waited for the open tunnel up to drain_timeout_s (2 s), then exited: {waited:?}"
    );
    while held.try_wait().is_none() && handed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(held.log().contains("closed"), "the tunnel was closed at the deadline: {}", held.log());
}

/// A rig for PROXY protocol and the access log: one app server (be1) and one recorder (be2).
struct Rig {
    lan: Lan,
    daemon: Daemon,
    recorder: Recorder,
    _app: AppServer,
    log: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(self.log.with_extension("1"));
    }
}

/// VIP :80 (to the app, `l7`), VIP :81 (to the recorder, `send_proxy = "v1"`), an access log
/// in `format`.
fn rig(l7: &str, format: &str) -> Rig {
    let lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let app = AppServer::start(&lan.hosts[2], "be1", "-", 8080);
    let recorder = Recorder::start(&lan.hosts[3], 8080);
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    let log = std::env::temp_dir().join(format!("{}-access.log", lan.hosts[1].ns.name()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "interfaces = [\"eth0\"]\n[access_log]\npath = \"{}\"\nformat = \"{format}\"\n\
         [[vip]]\naddress = \"{VIP}:80\"\n[vip.l7]\nsticky = \"hash\"\nheader_timeout_ms = 2000\n{l7}\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\n\
         [[vip]]\naddress = \"{VIP}:81\"\n[vip.l7]\nsticky = \"hash\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\nport = 8080\nsend_proxy = \"v1\"\n",
        log.display()
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    Rig { lan, daemon, recorder, _app: app, log }
}

/// Sends `bytes` on a new connection to `port` and reads until the proxy closes (or 3 s).
fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect((VIP, port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const GET: &[u8] = b"GET /who?secret=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";

/// The access log's lines once `n` are there (the writer flushes when its queue is empty).
fn log_lines(path: &PathBuf, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > until {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_proxy_header_stands_for_the_client_and_a_connection_without_one_is_refused() {
    require_root!();
    let r = rig("accept_proxy = true", "json");
    let v2: Vec<u8> =
        [&b"\r\n\r\n\0\r\nQUIT\n"[..], &[0x21, 0x11, 0, 12, 203, 0, 113, 77, 198, 51, 100, 10, 0x1f, 0x90, 0, 80], GET]
            .concat();
    let (one, two, none, partial) = r.lan.hosts[0].ns.in_thread(|| {
        let v1 = [&b"PROXY TCP4 203.0.113.9 198.51.100.10 5555 80\r\n"[..], GET].concat();
        (exchange(80, &v1), exchange(80, &v2), exchange(80, GET), exchange(80, b"PROXY TCP4 203.0.113.9"))
    });
    assert!(one.starts_with("HTTP/1.1 200") && one.contains("xff=203.0.113.9 "), "v1: {one}");
    assert!(two.starts_with("HTTP/1.1 200") && two.contains("xff=203.0.113.77 "), "v2: {two}");
    assert_eq!(none, "", "no header: closed unanswered");
    assert_eq!(partial, "", "a header that never completes: closed after header_timeout_ms");
    let out = r.daemon.ctl(&r.lan.hosts[1].ns, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vips"][0]["connections"]["proxy_refused"], 2, "{status}");
    // The log names the client the header gave, and its port.
    let lines = log_lines(&r.log, 2);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(first["client"], "203.0.113.9", "{first}");
    assert_eq!(first["client_port"], 5555, "{first}");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["client_port"], 8080, "{second}");
}

#[test]
fn a_backend_that_asks_gets_a_proxy_header_naming_the_client_before_the_request() {
    require_root!();
    let r = rig("", "combined");
    let answer = r.lan.hosts[0].ns.in_thread(|| exchange(81, GET));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = r.recorder.take();
    assert_eq!(got.len(), 1, "{got:?}");
    let (line, request) = got[0].split_once("\r\n").unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(&fields[..4], ["PROXY", "TCP4", "198.18.0.1", VIP], "{line}");
    assert!(fields[4].parse::<u16>().unwrap() > 1024 && fields[5] == "81", "{line}");
    assert!(request.starts_with("GET /who?secret=1 HTTP/1.1\r\n"), "{request}");
    // HTTP/2 would reach this backend without the header it needs: its preface is refused.
    let h2c = r.lan.hosts[0].ns.output(&[
        "curl",
        "-s",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--http2-prior-knowledge",
        &format!("http://{VIP}:81/"),
    ]);
    assert_ne!(String::from_utf8_lossy(&h2c.stdout), "200", "no HTTP/2 where backends get a PROXY header");
    assert!(r.recorder.take().is_empty(), "nothing reached the backend without its header");
}

#[test]
fn the_access_log_writes_one_line_per_request_and_reopens_on_sigusr1() {
    require_root!();
    let r = rig("", "combined");
    let answers = r.lan.hosts[0].ns.in_thread(|| (0..3).map(|_| exchange(80, GET)).collect::<Vec<_>>());
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")), "{answers:?}");
    let bad = r.lan.hosts[0].ns.in_thread(|| exchange(80, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let lines = log_lines(&r.log, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[3].contains("\"- <BADREQ> HTTP/1.1\" 400 ") && lines[3].contains(" backend=- "), "{}", lines[3]);
    let h2 = r.lan.hosts[0].ns.run(&[
        "curl",
        "-s",
        "--max-time",
        "3",
        "--http2-prior-knowledge",
        &format!("http://{VIP}/who?q=1"),
    ]);
    assert!(h2.starts_with("be1 "), "{h2}");
    let lines = log_lines(&r.log, 5);
    assert!(
        lines[4].contains("\"GET /who HTTP/2.0\" 200 ")
            && lines[4].contains(" backend=198.18.0.3:8080 route=- chosen=new "),
        "HTTP/2 requests are logged too: {}",
        lines[4]
    );
    let line = &lines[0];
    assert!(line.starts_with("198.18.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /who HTTP/1.1\" 200 "), "the query is left out by default: {line}");
    for field in [
        &format!(" vip={VIP}:80 ")[..],
        " backend=198.18.0.3:8080 ",
        " route=- ",
        " chosen=new ",
        " retries=0 ",
        " connect_ms=",
        " first_byte_ms=",
        " total_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // logrotate moves the file, then signals: new lines go to a new file at the old path.
    let rotated = r.log.with_extension("1");
    std::fs::rename(&r.log, &rotated).unwrap();
    r.daemon.proc.signal(nix::sys::signal::Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(800));
    let _ = r.lan.hosts[0].ns.in_thread(|| exchange(80, GET));
    let fresh = log_lines(&r.log, 1);
    assert_eq!(fresh.len(), 1, "a new file after SIGUSR1: {fresh:?}");
    assert_eq!(log_lines(&rotated, 5).len(), 5, "the rotated file keeps its lines");
    let out = r.daemon.ctl(&r.lan.hosts[1].ns, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["access_log"][0], 6, "{status}");
    assert_eq!(status["access_log"][1], 0, "{status}");
}
