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
    backend::{AppServer, HttpBackend, HttpConn, read_response},
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

/// What an idle flood did to the L7 proxy.
#[derive(Debug)]
pub struct Flood {
    /// Idle connections the proxy held open at once.
    pub held: usize,
    /// Flood connections it refused at `max_connections`.
    pub refused: usize,
    /// Requests of the well-behaved, already connected clients, and how many failed.
    pub requests: usize,
    /// See above.
    pub failed: usize,
    /// p99 of those requests without the flood, and during it, in µs.
    pub p99_unloaded_us: u64,
    /// See above.
    pub p99_flooded_us: u64,
    /// The daemon's peak resident memory (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
}

fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() * 99 / 100).copied().unwrap_or(0)
}

/// Fills an L7 VIP with `idle` silent connections (its `max_connections`; fewer when the
/// descriptor limit cannot hold them, and the number used is returned) plus a tenth more,
/// and measures four kept-alive clients' request latency before and during the flood.
pub fn flood(idle: usize) -> (usize, Flood) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    // The daemon needs two descriptors a connection and its own 256; this process one, and
    // the tenth more that get refused.
    let idle = idle.min(usize::try_from(hard.saturating_sub(600) / 2).unwrap_or(usize::MAX) * 10 / 11);
    let s =
        crate::l7::setup(&format!("sticky = \"insert\"\nheader_timeout_ms = 60000\nmax_connections = {}", idle + 4));
    let pid = s.daemon.proc.pid();
    let (held, refused, requests, failed, before, during) = s.lan.hosts[0].ns.in_thread(|| {
        let vip: SocketAddr = format!("{}:80", crate::l7::VIP).parse().unwrap();
        let mut clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(vip).unwrap()).collect();
        let (mut requests, mut failed) = (0, 0);
        let mut round = |clients: &mut Vec<TcpStream>| -> Vec<u64> {
            let mut t = Vec::new();
            for _ in 0..100 {
                for c in clients.iter_mut() {
                    let start = std::time::Instant::now();
                    let ok = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok()
                        && read_response(c).is_ok_and(|(h, _)| h.starts_with("HTTP/1.1 200"));
                    t.push(start.elapsed().as_micros() as u64);
                    requests += 1;
                    failed += usize::from(!ok);
                }
            }
            t
        };
        for c in &clients {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let before = round(&mut clients);
        let mut silent = Vec::new();
        let mut refused = 0;
        for _ in 0..idle + idle / 10 {
            match TcpStream::connect(vip) {
                Ok(c) => silent.push(c),
                Err(_) => refused += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        // A refused one got its 503 and was closed: it reads to the end at once.
        let mut held = 0;
        for c in &mut silent {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 256];
            match c.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
                _ => refused += 1,
            }
        }
        let during = round(&mut clients);
        (held, refused, requests, failed, before, during)
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (
        idle,
        Flood {
            held,
            refused,
            requests,
            failed,
            p99_unloaded_us: p99(before),
            p99_flooded_us: p99(during),
            peak_rss_kib,
        },
    )
}
