//! The operations soak (issue 10): long-lived and new connections through an L4 and an L7 VIP
//! while an operator adds, reweights, drains, removes, reloads (and reloads a broken file),
//! restarts the daemon (SIGTERM, `--takeover`, `kill -9`) and a backend dies and comes back.
//! Per operation it counts what a user would notice:
//! - errors on established L4 connections to backends still in service;
//! - new L4 connections that failed;
//! - idempotent L7 requests that failed even after the one retry a browser makes on a
//!   kept-alive connection the server closed;
//! - L7 sessions moved off a backend still in service;
//! - new L7 connections that failed.

use std::{
    collections::HashSet,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::{
    backend::{AppServer, HttpBackend, HttpConn},
    daemon::Daemon,
    netns::Lan,
};

const L4_VIP: &str = "198.51.100.10:80";
const L7_VIP: &str = "198.51.100.20:80";

/// What one operation cost.
#[derive(Debug, Default, Clone)]
pub struct Row {
    /// The operation.
    pub op: String,
    /// Established L4 requests, and those that failed on a backend still in service.
    pub l4_requests: u64,
    /// See above.
    pub l4_established_errors: u64,
    /// New L4 connections, and those that failed.
    pub l4_new: u64,
    /// See above.
    pub l4_new_failed: u64,
    /// Idempotent L7 requests on kept-alive sessions, and those that failed after one retry.
    pub l7_requests: u64,
    /// See above.
    pub l7_failed: u64,
    /// Sessions that moved although their backend was still in service.
    pub l7_moved: u64,
    /// New L7 connections, and those that failed.
    pub l7_new: u64,
    /// See above.
    pub l7_new_failed: u64,
}

fn config(l4_backends: &[(u8, &str)]) -> String {
    let mut c = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{L4_VIP}\"\n[vip.health]\ninterval_ms = 300\nrise = 1\nfall = 2\n"
    );
    for (host, extra) in l4_backends {
        let _ = writeln!(c, "[[vip.backend]]\naddress = \"198.18.0.{host}\"\n{extra}");
    }
    let _ = write!(
        c,
        "[[vip]]\naddress = \"{L7_VIP}\"\n[vip.l7]\nkey_file = \"@KEY@\"\n[vip.health]\ninterval_ms = 300\nrise = 1\nfall = 2\n"
    );
    for h in 3..6 {
        let _ = writeln!(c, "[[vip.backend]]\naddress = \"198.18.0.{h}\"\nport = 8080\nroute = \"r{}\"", h - 2);
    }
    c
}

/// A browser's kept-alive connection with its cookie jar.
struct Session {
    stream: Option<TcpStream>,
    jar: std::collections::BTreeMap<String, String>,
}

impl Session {
    fn once(&mut self) -> std::io::Result<String> {
        let addr: SocketAddr = L7_VIP.parse().unwrap();
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            self.stream = Some(s);
        }
        let s = self.stream.as_mut().unwrap();
        let cookie = if self.jar.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("Cookie: {}\r\n", pairs.join("; "))
        };
        s.write_all(format!("GET / HTTP/1.1\r\nHost: shop\r\n{cookie}\r\n").as_bytes())?;
        let (head, body) = read_response(s)?;
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("set-cookie")
                && let Some((k, v)) = value.trim().split(';').next().and_then(|p| p.split_once('='))
            {
                self.jar.insert(k.to_owned(), v.to_owned());
            }
        }
        if !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(head.lines().next().unwrap_or("").to_owned()));
        }
        Ok(body.split_whitespace().next().unwrap_or("").to_owned())
    }

    /// One request, retried once on a fresh connection when the kept-alive one was closed.
    fn get(&mut self) -> std::io::Result<String> {
        self.once().or_else(|_| {
            self.stream = None;
            self.once()
        })
    }
}

/// Reads one response with a Content-Length body: (head, body).
fn read_response(s: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok((text[..end].to_owned(), String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned()));
        }
    }
}

/// Shared between the operator and the clients.
struct Board {
    op: AtomicUsize,
    rows: Mutex<Vec<Row>>,
    /// Backends out of service (removed, or their server killed): failures there are expected.
    gone: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

impl Board {
    fn add(&self, f: impl FnOnce(&mut Row)) {
        let i = self.op.load(Relaxed);
        f(&mut self.rows.lock().unwrap()[i]);
    }

    fn gone(&self, name: &str) -> bool {
        self.gone.lock().unwrap().contains(name)
    }
}

/// An established L4 connection asking every 100 ms; reconnects after a failure.
fn l4_established(board: &Board) {
    let addr: SocketAddr = L4_VIP.parse().unwrap();
    let mut conn: Option<(HttpConn, String)> = None;
    while !board.stop.load(Relaxed) {
        if conn.is_none() {
            conn = HttpConn::connect(addr).ok().and_then(|mut c| c.get().ok().map(|who| (c, who)));
        }
        if let Some((c, who)) = conn.as_mut() {
            let r = c.get();
            let bad = r.as_ref().map_or(true, |got| got != who);
            let counted = bad && !board.gone(who);
            board.add(|row| {
                row.l4_requests += 1;
                row.l4_established_errors += u64::from(counted);
            });
            if bad {
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new L4 connection every 20 ms.
fn l4_new(board: &Board) {
    let addr: SocketAddr = L4_VIP.parse().unwrap();
    while !board.stop.load(Relaxed) {
        let ok = HttpConn::connect(addr).and_then(|mut c| c.get()).is_ok();
        board.add(|row| {
            row.l4_new += 1;
            row.l4_new_failed += u64::from(!ok);
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An L7 session on a kept-alive connection, asking every 100 ms.
fn l7_session(board: &Board) {
    let mut s = Session { stream: None, jar: std::collections::BTreeMap::new() };
    let mut on: Option<String> = None;
    while !board.stop.load(Relaxed) {
        let r = s.get();
        let moved = match (&r, &on) {
            (Ok(now), Some(before)) => now != before && !board.gone(before),
            _ => false,
        };
        if let Ok(now) = &r {
            on = Some(now.clone());
        }
        board.add(|row| {
            row.l7_requests += 1;
            row.l7_failed += u64::from(r.is_err());
            row.l7_moved += u64::from(moved);
        });
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new L7 connection every 20 ms.
fn l7_new(board: &Board) {
    while !board.stop.load(Relaxed) {
        let ok = Session { stream: None, jar: std::collections::BTreeMap::new() }.once().is_ok();
        board.add(|row| {
            row.l7_new += 1;
            row.l7_new_failed += u64::from(!ok);
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the soak: `rounds` passes over every operation, `settle` of traffic after each.
#[expect(clippy::too_many_lines, reason = "the rig, then the operations in the order they run")]
pub fn run(rounds: usize, settle: Duration) -> Vec<Row> {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2", "be3"]);
    let vip_ip = "198.51.100.10".parse().unwrap();
    let mut l4: Vec<Option<HttpBackend>> =
        (2..5).map(|h| Some(HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip_ip, 80))).collect();
    let mut apps: Vec<Option<AppServer>> = (2..5)
        .map(|h| Some(AppServer::start(&lan.hosts[h], &format!("be{}", h - 1), &format!("r{}", h - 1), 8080)))
        .collect();
    lan.hosts[1].ns.run(&["ip", "addr", "add", "198.51.100.20/32", "dev", "lo"]);
    for vip in ["198.51.100.10/32", "198.51.100.20/32"] {
        lan.hosts[0].ns.run(&["ip", "route", "add", vip, "via", "198.18.0.2"]);
    }
    lan.accept_xdp_frames_from(1);
    let key = std::env::temp_dir().join(format!("{}-soak.key", lan.hosts[1].ns.name()));
    std::fs::write(&key, "soak-key-0123456789abcdef").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_key = |c: String| c.replace("@KEY@", key.to_str().unwrap());
    let base = with_key(config(&[(3, ""), (4, "")]));
    let mut daemon = Daemon::start(&lan.hosts[1].ns, &base, "info");
    let lb = &lan.hosts[1].ns;
    let vip = L4_VIP;
    let ops: Vec<&str> = vec![
        "backend add",
        "reweight",
        "drain",
        "activate",
        "backend remove",
        "reload",
        "broken reload",
        "SIGTERM restart",
        "takeover restart",
        "kill -9 restart",
        "backend killed",
        "backend restored",
    ];
    let board = Board {
        op: AtomicUsize::new(0),
        rows: Mutex::new(
            (0..rounds)
                .flat_map(|r| ops.iter().map(move |o| Row { op: format!("{o} (round {})", r + 1), ..Row::default() }))
                .collect(),
        ),
        gone: Mutex::new(HashSet::new()),
        stop: AtomicBool::new(false),
    };
    let client = &lan.hosts[0].ns;
    client.in_thread(|| {
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| l4_established(&board));
            }
            scope.spawn(|| l4_new(&board));
            for _ in 0..6 {
                scope.spawn(|| l7_session(&board));
            }
            scope.spawn(|| l7_new(&board));
            std::thread::sleep(settle);
            for round in 0..rounds {
                for (i, op) in ops.iter().enumerate() {
                    board.op.store(round * ops.len() + i, Relaxed);
                    let ctl = |args: &[&str]| {
                        let out = daemon.ctl(lb, args);
                        assert!(out.status.success(), "{op}: {}", String::from_utf8_lossy(&out.stderr));
                    };
                    match *op {
                        "backend add" => ctl(&["backend", "add", vip, "198.18.0.5", "--weight", "100"]),
                        "reweight" => ctl(&["backend", "set", vip, "198.18.0.3", "--weight", "50"]),
                        "drain" => ctl(&["backend", "set", vip, "198.18.0.4", "--state", "drain"]),
                        "activate" => ctl(&["backend", "set", vip, "198.18.0.4", "--state", "active"]),
                        "backend remove" => {
                            board.gone.lock().unwrap().insert("be3".into());
                            ctl(&["backend", "del", vip, "198.18.0.5"]);
                        }
                        "reload" => {
                            ctl(&["overrides", "clear"]);
                            daemon.write_config(&base);
                            ctl(&["reload"]);
                            board.gone.lock().unwrap().remove("be3");
                        }
                        "broken reload" => {
                            daemon.write_config(&base.replace("interval_ms = 300", "interval_ms = -1"));
                            let out = daemon.ctl(lb, &["reload"]);
                            assert!(!out.status.success(), "a broken file is rejected");
                            daemon.write_config(&base);
                        }
                        "SIGTERM restart" => {
                            daemon.proc.stop();
                            daemon.restart(lb, "info");
                        }
                        "takeover restart" => {
                            let mut old = daemon.takeover(lb, "info");
                            let _ = old.stop();
                        }
                        "kill -9 restart" => {
                            daemon.proc.kill9();
                            daemon.restart(lb, "info");
                        }
                        "backend killed" => {
                            board.gone.lock().unwrap().insert("be1".into());
                            l4[0] = None;
                            apps[0] = None;
                        }
                        "backend restored" => {
                            l4[0] = Some(HttpBackend::start(&lan.hosts[2], "be1", vip_ip, 80));
                            apps[0] = Some(AppServer::start(&lan.hosts[2], "be1", "r1", 8080));
                            // Back once its checks pass; until then it stays out of service.
                            std::thread::sleep(Duration::from_millis(700));
                            board.gone.lock().unwrap().remove("be1");
                        }
                        _ => unreachable!(),
                    }
                    std::thread::sleep(settle);
                }
            }
            board.stop.store(true, Relaxed);
        });
    });
    let _ = std::fs::remove_file(&key);
    board.rows.into_inner().unwrap()
}

/// The report as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| operation | L4 established: requests / errors | L4 new: tried / failed | L7 idempotent: requests / failed | L7 sessions moved off a healthy backend | L7 new: tried / failed |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} / {} | {} / {} | {} / {} | {} | {} / {} |",
            r.op,
            r.l4_requests,
            r.l4_established_errors,
            r.l4_new,
            r.l4_new_failed,
            r.l7_requests,
            r.l7_failed,
            r.l7_moved,
            r.l7_new,
            r.l7_new_failed
        );
    }
    t
}
