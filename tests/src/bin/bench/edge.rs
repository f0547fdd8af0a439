//! Part 5: the L7 edge against `HAProxy` (OpenSSL) on one namespace's loopback: TLS keep-alive
//! requests, full TLS 1.3 handshakes (ECDSA P-256 and RSA 2048, a new connection per request,
//! resumption off on both sides), and WebSocket echo messages through each proxy against
//! direct to the echo server.
//!
//! As in part 3, each proxy runs on CPU 0 alone (one L7 worker, one `HAProxy` thread); wrk, the
//! backends and the WebSocket client share CPU 1. Contenders take turns, three rounds, median.

use std::{fmt::Write as _, path::Path, time::Duration};

use balancer_tests::{daemon::Daemon, netns::Lan};

use crate::{Targets, Wrk, cpu_seconds, pin, wrk_with};

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A self-signed certificate for `bench.local` with a new key (`ec` or `rsa`): its PEM and key
/// files, and a file with both (HAProxy's `crt`).
fn certificate(ns: &balancer_tests::netns::Netns, dir: &Path, kind: &str) -> (String, String, String) {
    let (cert, key, both) =
        (dir.join(format!("{kind}.pem")), dir.join(format!("{kind}.key")), dir.join(format!("{kind}.all")));
    let key_args: &[&str] =
        if kind == "ec" { &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] } else { &["-newkey", "rsa:2048"] };
    let mut argv = vec!["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=bench.local"];
    argv.extend_from_slice(key_args);
    argv.extend_from_slice(&[
        "-addext",
        "subjectAltName=DNS:bench.local",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    ns.run(&argv);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let all = format!("{}{}", std::fs::read_to_string(&cert).unwrap(), std::fs::read_to_string(&key).unwrap());
    write_file(&both, &all);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    (s(&cert), s(&key), s(&both))
}

/// A WebSocket echo server (Debian's `python3-websockets`).
const WS_ECHO: &str = r#"
import asyncio, sys, websockets
async def echo(ws, path):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket load: `URL CONNS SECONDS`, each connection sends a 64-byte message and waits for
/// its echo, again and again; prints the messages echoed per second.
const WS_LOAD: &str = r#"
import asyncio, sys, time, websockets
url, conns, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def one(end):
    n = 0
    async with websockets.connect(url, ping_interval=None) as ws:
        while time.monotonic() < end:
            await ws.send("x" * 64)
            await ws.recv()
            n += 1
    return n
async def main():
    end = time.monotonic() + secs
    counts = await asyncio.gather(*[one(end) for _ in range(conns)])
    print(sum(counts) / secs)
asyncio.run(main())
"#;

/// One wrk run against `url` with the CPU µs per request of process `pid` over it.
fn measure(ns: &balancer_tests::netns::Netns, pid: u32, url: &str, secs: u32, extra: &[&str]) -> (Wrk, f64) {
    let before = cpu_seconds(pid);
    let w = wrk_with(ns, Some("1"), 1, 64, url, secs, extra);
    (w, (cpu_seconds(pid) - before) * 1e6 / (w.rps * f64::from(secs)).max(1.0))
}

/// The run with the median requests/s, with its CPU figure.
pub fn median(mut runs: Vec<(Wrk, f64)>) -> (Wrk, f64) {
    runs.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
    runs[runs.len() / 2]
}

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part5(report: &mut String, targets: &mut Targets) {
    let secs: u32 = std::env::var("BENCH_L7_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let lan = Lan::new(&["edge"]);
    let ns = &lan.hosts[0].ns;
    let dir = std::env::temp_dir().join(format!("{}-edgebench", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let dd = dir.display();
    let body = "x".repeat(100);
    let server = |port: u16| {
        format!(
            "server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_requests 1000000; location / {{ return 200 \"{body}\"; }} }}\n"
        )
    };
    write_file(
        &dir.join("be.conf"),
        &format!(
            "worker_processes 1; pid {dd}/be.pid; error_log {dd}/be.err; worker_rlimit_nofile 65536;\n\
             events {{ worker_connections 16384; }}\nhttp {{ access_log off; {}{}}}\n",
            server(8081),
            server(8082)
        ),
    );
    let backends = ns.spawn(&["nginx", "-c", dir.join("be.conf").to_str().unwrap(), "-g", "daemon off;"]);
    write_file(&dir.join("ws.py"), WS_ECHO);
    write_file(&dir.join("load.py"), WS_LOAD);
    let echo = ns.spawn(&["/usr/bin/python3", dir.join("ws.py").to_str().unwrap(), "8091"]);
    let (ec_cert, ec_key, ec_all) = certificate(ns, &dir, "ec");
    let (rsa_cert, rsa_key, rsa_all) = certificate(ns, &dir, "rsa");
    let key = dir.join("cookie.key");
    write_file(&key, "bench-cookie-key-0123456789abcdef");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let backends_toml = "[[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8081\nroute = \"r1\"\n\
                         [[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8082\nroute = \"r2\"\n";
    let tls_vip = |port: u16, cert: &str, key_file: &str, tls: &str| {
        format!(
            "[[vip]]\naddress = \"127.0.0.1:{port}\"\n[vip.l7]\nkey_file = \"{}\"\nmax_connections = 2000\n\
             [vip.tls]\n{tls}\n[[vip.tls.certificate]]\ncert = \"{cert}\"\nkey = \"{key_file}\"\n{backends_toml}",
            key.display()
        )
    };
    let config = format!(
        "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nworker_threads = 1\nl7_workers = 1\n{}{}{}\
         [[vip]]\naddress = \"127.0.0.1:8446\"\n[vip.l7]\nsticky = \"hash\"\n[[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8091\n",
        tls_vip(8443, &ec_cert, &ec_key, ""),
        tls_vip(8444, &ec_cert, &ec_key, "min_version = \"1.3\"\nsession_resumption = false"),
        tls_vip(8445, &rsa_cert, &rsa_key, "min_version = \"1.3\"\nsession_resumption = false"),
    );
    write_file(
        &dir.join("haproxy.cfg"),
        &format!(
            "global\n  nbthread 1\n  maxconn 4000\n  tune.ssl.cachesize 0\ndefaults\n  mode http\n  timeout connect 3s\n  \
             timeout client 60s\n  timeout server 30s\n  timeout tunnel 1h\n  timeout http-keep-alive 60s\n\
             backend be\n  balance roundrobin\n  http-reuse always\n  cookie SRV insert indirect nocache\n  \
             server r1 127.0.0.1:8081 cookie r1\n  server r2 127.0.0.1:8082 cookie r2\n\
             frontend keepalive\n  bind 127.0.0.1:8453 ssl crt {ec_all}\n  default_backend be\n\
             frontend ecdsa\n  bind 127.0.0.1:8454 ssl crt {ec_all} ssl-min-ver TLSv1.3 no-tls-tickets\n  default_backend be\n\
             frontend rsa\n  bind 127.0.0.1:8455 ssl crt {rsa_all} ssl-min-ver TLSv1.3 no-tls-tickets\n  default_backend be\n\
             listen ws\n  bind 127.0.0.1:8456\n  server e 127.0.0.1:8091\n"
        ),
    );
    let daemon = Daemon::start(ns, &config, "warn");
    let haproxy = ns.spawn(&["haproxy", "-f", dir.join("haproxy.cfg").to_str().unwrap(), "-db"]);
    std::thread::sleep(Duration::from_secs(1));
    let (ours, theirs) = (daemon.proc.pid(), haproxy.pid());
    pin(ns, ours, "0");
    pin(ns, theirs, "0");
    pin(ns, backends.pid(), "1");
    pin(ns, echo.pid(), "1");
    let haproxy_version = ns.run(&["haproxy", "-v"]).lines().next().unwrap_or("HAProxy").to_owned();

    writeln!(
        report,
        "\n### 5. L7 edge: TLS and WebSocket (loopback; each proxy on CPU 0 alone, wrk -t1 -c64 and the backends on CPU 1; \
         {secs} s runs, contenders in turn, median of 3; {haproxy_version} with OpenSSL)\n"
    )
    .unwrap();
    writeln!(report, "| case | contender | requests/s | p99 ms | CPU µs/request | × HAProxy |").unwrap();
    writeln!(report, "|---|---|---:|---:|---:|---:|").unwrap();
    let close: &[&str] = &["-H", "Connection: close"];
    let cases: [(&str, u16, u16, &[&str]); 3] = [
        ("TLS keep-alive, insert mode", 8443, 8453, &[]),
        ("full TLS 1.3 handshake per request, ECDSA P-256", 8444, 8454, close),
        ("full TLS 1.3 handshake per request, RSA 2048", 8445, 8455, close),
    ];
    for (case, our_port, their_port, extra) in cases {
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..3 {
            runs[0].push(measure(ns, ours, &format!("https://127.0.0.1:{our_port}/"), secs, extra));
            runs[1].push(measure(ns, theirs, &format!("https://127.0.0.1:{their_port}/"), secs, extra));
        }
        let [(o, o_cpu), (h, h_cpu)] = runs.map(median);
        for (name, w, cpu) in [("balancer (rustls, aws-lc-rs)", o, o_cpu), ("HAProxy (OpenSSL)", h, h_cpu)] {
            writeln!(report, "| {case} | {name} | {:.0} | {:.2} | {cpu:.1} | {:.2} |", w.rps, w.p99_ms, w.rps / h.rps)
                .unwrap();
        }
        let (target, met) = if extra.is_empty() {
            ("≥ 1.2×, p99 ≤ HAProxy's", o.rps >= 1.2 * h.rps && o.p99_ms <= h.p99_ms)
        } else {
            ("≥ HAProxy's", o.rps >= h.rps)
        };
        targets.add(
            format!("L7 {case} vs HAProxy: requests/s, p99"),
            format!("{:.2}×, {:.2} vs {:.2} ms", o.rps / h.rps, o.p99_ms, h.p99_ms),
            target,
            met,
        );
    }

    writeln!(
        report,
        "\n#### WebSocket echo (64-byte messages, 16 connections, each waiting for its echo; Python `websockets` \
         client and server on CPU 1)\n\n| path | messages/s | × direct |\n|---|---:|---:|"
    )
    .unwrap();
    let load = dir.join("load.py");
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (i, port) in [8091u16, 8446, 8456].into_iter().enumerate() {
            let url = format!("ws://127.0.0.1:{port}/");
            let out = ns.run(&[
                "taskset",
                "-c",
                "1",
                "/usr/bin/python3",
                load.to_str().unwrap(),
                &url,
                "16",
                &secs.to_string(),
            ]);
            rates[i].push(out.trim().parse::<f64>().unwrap_or(0.0));
        }
    }
    let [direct, ours_ws, theirs_ws] = rates.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[1]
    });
    for (name, r) in
        [("direct to the echo server", direct), ("through the balancer", ours_ws), ("through HAProxy", theirs_ws)]
    {
        writeln!(report, "| {name} | {r:.0} | {:.2} |", r / direct.max(1.0)).unwrap();
    }
    targets.add(
        "L7 WebSocket echo messages/s vs direct, vs HAProxy",
        format!("{:.2}× direct, {:.2}× HAProxy", ours_ws / direct.max(1.0), ours_ws / theirs_ws.max(1.0)),
        "≥ HAProxy's",
        ours_ws >= theirs_ws,
    );
    drop(daemon);
    drop(haproxy);
    drop(echo);
    drop(backends);
    let _ = std::fs::remove_dir_all(&dir);
}
