//! Part 3: the L7 sticky proxy against `HAProxy` and nginx on one namespace's loopback.
//!
//! Each contender runs on CPU 0 alone (the balancer with one L7 worker, `HAProxy` with one
//! thread, nginx with one worker); wrk and the nginx backends share CPU 1. Contenders take turns
//! within each round, five rounds for small responses and three for the rest, and the median counts. Besides requests/s and p99,
//! each contender's own CPU time per request is reported: the proxy's core is saturated while
//! the client's is not, so CPU per request is the fair figure of cost.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    time::Duration,
};

use balancer_tests::{daemon::Daemon, netns::Lan};

use crate::{Targets, Wrk, cpu_seconds, pin, profile::Profile, rss_mib, wrk_with};

/// One contender's address and what it is.
struct Contender {
    name: &'static str,
    pid: u32,
    url: &'static str,
    extra: &'static [&'static str],
}

/// The median (by requests/s) of a case's rounds, with its CPU µs per request.
#[derive(Clone, Copy, Default)]
struct Measured {
    w: Wrk,
    cpu_us: f64,
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.w.rps.total_cmp(&b.w.rps));
    runs[runs.len() / 2]
}

/// One run of wrk against `c`, with the contender's CPU time over it.
fn measure(
    ns: &balancer_tests::netns::Netns,
    c: &Contender,
    threads: u32,
    conns: u32,
    path: &str,
    secs: u32,
) -> Measured {
    let url = format!("{}{path}", c.url);
    let before = cpu_seconds(c.pid);
    let w = wrk_with(ns, Some("1"), threads, conns, &url, secs, c.extra);
    let used = cpu_seconds(c.pid) - before;
    Measured { w, cpu_us: used * 1e6 / (w.rps * f64::from(secs)).max(1.0) }
}

fn write_file(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part3(report: &mut String, targets: &mut Targets) {
    let secs: u32 = std::env::var("BENCH_L7_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let lan = Lan::new(&["l7"]);
    let ns = &lan.hosts[0].ns;
    let dir = std::env::temp_dir().join(format!("{}-l7bench", ns.name()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    write_file(&dir.join("www/16k"), &"x".repeat(16 * 1024));
    write_file(&dir.join("www/1m"), &"x".repeat(1024 * 1024));
    let body = "x".repeat(100);
    let dd = dir.display();
    let backend_server = |port: u16| {
        format!(
            "server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_requests 1000000; \
             location / {{ return 200 \"{body}\"; }} location /b/ {{ alias {dd}/www/; }} }}\n"
        )
    };
    write_file(
        &dir.join("be.conf"),
        &format!(
            "worker_processes 1; pid {dd}/be.pid; error_log {dd}/be.err; worker_rlimit_nofile 65536;\n\
             events {{ worker_connections 16384; }}\nhttp {{ access_log off; {}{}}}\n",
            backend_server(8081),
            backend_server(8082)
        ),
    );
    let backends = ns.spawn(&["nginx", "-c", dir.join("be.conf").to_str().unwrap(), "-g", "daemon off;"]);
    write_file(
        &dir.join("px.conf"),
        &format!(
            "worker_processes 1; pid {dd}/px.pid; error_log {dd}/px.err; worker_rlimit_nofile 65536;\n\
             events {{ worker_connections 16384; }}\n\
             http {{ access_log off; upstream be {{ hash $cookie_route consistent; server 127.0.0.1:8081; server 127.0.0.1:8082; keepalive 512; }}\n\
             server {{ listen 127.0.0.1:8020 backlog=4096; keepalive_requests 1000000; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
        ),
    );
    // The idle-connection measurement wants 10,000 connections; each may need two descriptors
    // (client and backend) in a proxy, and the hard limit here may be lower than that needs.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
    let idle = usize::try_from(hard.saturating_sub(1536 + 2 * 600) / 2).unwrap_or(0).min(10_000);
    let max_connections = idle + 100;
    write_file(
        &dir.join("haproxy.cfg"),
        &format!(
            "global\n  nbthread 1\n  maxconn {max_connections}\ndefaults\n  mode http\n  timeout connect 3s\n  timeout client 60s\n  timeout server 30s\n  \
         timeout http-keep-alive 60s\nlisten vip\n  bind 127.0.0.1:8010\n  balance roundrobin\n  http-reuse always\n  \
         cookie SRV insert indirect nocache\n  server r1 127.0.0.1:8081 cookie r1\n  server r2 127.0.0.1:8082 cookie r2\n"
        ),
    );
    let key = dir.join("cookie.key");
    write_file(&key, "bench-cookie-key-0123456789abcdef");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let backends_toml = "[[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8081\nroute = \"r1\"\n\
                         [[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8082\nroute = \"r2\"\n";
    let balancer_cfg = |workers: usize| {
        format!(
            "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nworker_threads = 1\nl7_workers = {workers}\n\
             [[vip]]\naddress = \"127.0.0.1:8000\"\n[vip.l7]\nkey_file = \"{}\"\nmax_connections = {max_connections}\nheader_timeout_ms = 60000\n{backends_toml}\
             [[vip]]\naddress = \"127.0.0.1:8001\"\n[vip.l7]\nsticky = \"route-suffix\"\nmax_connections = 600\n{backends_toml}",
            key.display()
        )
    };
    let daemon = Daemon::start(ns, &balancer_cfg(1), "warn,balancer::daemon=info");
    let haproxy = ns.spawn(&["haproxy", "-f", dir.join("haproxy.cfg").to_str().unwrap(), "-db"]);
    let nginx = ns.spawn(&["nginx", "-c", dir.join("px.conf").to_str().unwrap(), "-g", "daemon off;"]);
    std::thread::sleep(Duration::from_secs(1));
    for pid in [daemon.proc.pid(), haproxy.pid(), nginx.pid()] {
        pin(ns, pid, "0");
    }
    pin(ns, backends.pid(), "1");

    // 3 (measured first, while every process is fresh: no pool warmed by the load runs).
    let mut idle_report = String::new();
    #[expect(non_snake_case, reason = "reads as the constant it is in the report")]
    let IDLE = idle;
    writeln!(
        idle_report,
        "\n#### {IDLE} idle keep-alive connections (each served one request, then left open; memory of the proxy process)\n"
    )
    .unwrap();
    writeln!(
        idle_report,
        "| contender | RSS before MiB | with them MiB | KiB per connection | 5 s after they closed MiB |"
    )
    .unwrap();
    writeln!(idle_report, "|---|---:|---:|---:|---:|").unwrap();
    let mut per_conn = Vec::new();
    for (name, pid, port) in
        [("balancer, insert", daemon.proc.pid(), 8000u16), ("HAProxy 1 thread", haproxy.pid(), 8010)]
    {
        let before = rss_mib(pid).0;
        let (with, opened) = ns.in_thread(|| {
            let mut held = Vec::with_capacity(IDLE);
            for _ in 0..IDLE {
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { break };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                    break;
                }
                let mut buf = [0u8; 2048];
                if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    break;
                }
                held.push(s);
            }
            std::thread::sleep(Duration::from_secs(1));
            (rss_mib(pid).0, held.len())
        });
        std::thread::sleep(Duration::from_secs(6));
        let after = rss_mib(pid).0;
        let kib = (with - before) * 1024.0 / opened.max(1) as f64;
        per_conn.push((kib, before, with, after, opened));
        writeln!(idle_report, "| {name} | {before:.1} | {with:.1} ({opened} open) | {kib:.2} | {after:.1} |").unwrap();
    }
    let (ours, theirs) = (per_conn[0], per_conn[1]);
    let returned = ours.3 - ours.1 <= 0.25 * (ours.2 - ours.1).max(0.1);
    targets.add(
        format!("L7 {IDLE} idle connections: memory per connection vs HAProxy, returned after close"),
        format!(
            "{:.2} vs {:.2} KiB, {:.0}% of it returned",
            ours.0,
            theirs.0,
            100.0 * (ours.2 - ours.3) / (ours.2 - ours.1).max(0.1)
        ),
        "≤ HAProxy's, ≥ 75% returned",
        ours.4 == IDLE && ours.0 <= theirs.0 && returned,
    );
    let ours_insert =
        Contender { name: "balancer, insert", pid: daemon.proc.pid(), url: "http://127.0.0.1:8000", extra: &[] };
    let ours_suffix = Contender {
        name: "balancer, route-suffix, client sends JSESSIONID",
        pid: daemon.proc.pid(),
        url: "http://127.0.0.1:8001",
        extra: &["-H", "Cookie: JSESSIONID=abc.r1"],
    };
    let ha = Contender {
        name: "HAProxy 1 thread, cookie insert indirect nocache",
        pid: haproxy.pid(),
        url: "http://127.0.0.1:8010",
        extra: &[],
    };
    let ngx = Contender {
        name: "nginx 1 worker, hash $cookie_route consistent",
        pid: nginx.pid(),
        url: "http://127.0.0.1:8020",
        extra: &["-H", "Cookie: route=abc"],
    };
    let direct = Contender {
        name: "direct to one backend (upper bound)",
        pid: backends.pid(),
        url: "http://127.0.0.1:8081",
        extra: &[],
    };

    // 1. Small responses at 64 and 512 connections.
    let contenders = [&direct, &ours_insert, &ours_suffix, &ha, &ngx];
    let mut small: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); contenders.len()]; 2];
    let (mut ours_profile, mut ha_profile) = (None, None);
    for round in 0..5 {
        for (level, conns) in [64u32, 512].into_iter().enumerate() {
            for (i, c) in contenders.iter().enumerate() {
                let profiled = round == 2 && level == 0 && (i == 1 || i == 3);
                let perf = if profiled { Profile::start(c.pid, secs) } else { None };
                small[level][i].push(measure(ns, c, 1, conns, "/", secs));
                match (perf, i) {
                    (Some(p), 1) => ours_profile = Some(p.grouped()),
                    (Some(p), _) => ha_profile = Some(p.grouped()),
                    (None, _) => {}
                }
            }
        }
    }
    let mut cpu_at_64 = (0.0, 0.0);
    writeln!(
        report,
        "\n### 3. L7 sticky proxy (loopback; each proxy on CPU 0 alone, wrk -t1 and the nginx backends on CPU 1; \
         100-byte responses; {secs} s runs, contenders in turn, median of 5 rounds)\n"
    )
    .unwrap();
    writeln!(report, "| contender | conns | requests/s | p99 ms | CPU µs/request | × HAProxy req/s | × HAProxy CPU |")
        .unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (level, conns) in [64u32, 512].into_iter().enumerate() {
        let m: Vec<Measured> = small[level].iter().cloned().map(median).collect();
        let h = m[3];
        if level == 0 {
            cpu_at_64 = (m[1].cpu_us, h.cpu_us);
        }
        for (i, c) in contenders.iter().enumerate() {
            let x = m[i];
            let cpu = if i == 0 { "—".to_owned() } else { format!("{:.1}", x.cpu_us) };
            let cpu_ratio = if i == 0 { "—".to_owned() } else { format!("{:.2}", x.cpu_us / h.cpu_us) };
            writeln!(
                report,
                "| {} | {conns} | {:.0} | {:.2} | {cpu} | {:.2} | {cpu_ratio} |",
                c.name,
                x.w.rps,
                x.w.p99_ms,
                x.w.rps / h.w.rps
            )
            .unwrap();
        }
        for (i, what) in [(1, "insert"), (2, "route-suffix")] {
            let x = m[i];
            let met = x.w.rps >= 1.2 * h.w.rps && x.w.p99_ms <= h.w.p99_ms && x.cpu_us <= 0.8 * h.cpu_us;
            targets.add(
                format!("L7 {what}, {conns} conns vs HAProxy: requests/s, p99, CPU/request"),
                format!(
                    "{:.2}×, {:.2} vs {:.2} ms, {:.2}×",
                    x.w.rps / h.w.rps,
                    x.w.p99_ms,
                    h.w.p99_ms,
                    x.cpu_us / h.cpu_us
                ),
                "≥ 1.2×, p99 ≤ HAProxy's, ≤ 0.8×",
                met,
            );
        }
    }
    writeln!(
        report,
        "\nWhere each proxy's CPU went at 64 connections (perf, cpu-clock samples of the process, grouped):\n"
    )
    .unwrap();
    match (ours_profile, ha_profile) {
        (Some(o), Some(h)) => {
            report.push_str(&crate::profile::side_by_side("balancer, insert", &o, "HAProxy", &h));
            // The kernel's share times CPU per request: what each spends in the kernel and in
            // its own code for one request.
            let (ours, theirs) = cpu_at_64;
            writeln!(
                report,
                "\nPer request: kernel {:.1} µs (balancer) vs {:.1} µs (HAProxy); user space {:.1} vs {:.1} µs.",
                ours * o[0] / 100.0,
                theirs * h[0] / 100.0,
                ours * (100.0 - o[0]) / 100.0,
                theirs * (100.0 - h[0]) / 100.0
            )
            .unwrap();
        }
        _ => writeln!(report, "(perf is not available here: no profile.)").unwrap(),
    }

    // 2. Large responses.
    writeln!(report, "\n#### Large responses (insert mode against HAProxy, 64 connections, same pinning)\n").unwrap();
    writeln!(report, "| body | contender | MB/s | p99 ms | CPU µs/request | × HAProxy MB/s |").unwrap();
    writeln!(report, "|---|---|---:|---:|---:|---:|").unwrap();
    for (path, label) in [("/b/16k", "16 KiB"), ("/b/1m", "1 MiB")] {
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..3 {
            for (i, c) in [&ours_insert, &ha].iter().enumerate() {
                runs[i].push(measure(ns, c, 1, 64, path, secs));
            }
        }
        let [o, h] = runs.map(median);
        for (name, x) in [(ours_insert.name, o), (ha.name, h)] {
            writeln!(
                report,
                "| {label} | {name} | {:.0} | {:.2} | {:.1} | {:.2} |",
                x.w.mb_s,
                x.w.p99_ms,
                x.cpu_us,
                x.w.mb_s / h.w.mb_s
            )
            .unwrap();
        }
        targets.add(
            format!("L7 {label} responses vs HAProxy: MB/s, p99"),
            format!("{:.2}×, {:.2} vs {:.2} ms", o.w.mb_s / h.w.mb_s, o.w.p99_ms, h.w.p99_ms),
            "≥ 1×, p99 ≤ HAProxy's",
            o.w.mb_s >= h.w.mb_s && o.w.p99_ms <= h.w.p99_ms,
        );
    }

    report.push_str(&idle_report);
    drop(daemon);
    drop(haproxy);
    drop(nginx);

    // 4. Two workers on two cores against one on one: the load generator and the backends
    // share the cores with the proxy in both, in the same proportion (one wrk thread, one
    // backend worker and one proxy worker per core).
    write_file(
        &dir.join("be2.conf"),
        &format!(
            "worker_processes 2; pid {dd}/be2.pid; error_log {dd}/be2.err; worker_rlimit_nofile 65536;\n\
             events {{ worker_connections 16384; }}\nhttp {{ access_log off; {}{}}}\n",
            backend_server(8091),
            backend_server(8092)
        ),
    );
    drop(backends);
    let backends2 = ns.spawn(&["nginx", "-c", dir.join("be2.conf").to_str().unwrap(), "-g", "daemon off;"]);
    let scaled_cfg = |workers: usize| balancer_cfg(workers).replace("8081", "8091").replace("8082", "8092");
    let mut rates = Vec::new();
    for (workers, cpus, threads, conns) in [(1usize, "0", 1u32, 64u32), (2, "0,1", 2, 128)] {
        let daemon = Daemon::start(ns, &scaled_cfg(workers), "warn");
        std::thread::sleep(Duration::from_millis(500));
        pin(ns, daemon.proc.pid(), cpus);
        pin(ns, backends2.pid(), cpus);
        let runs: Vec<Measured> = (0..3)
            .map(|_| {
                let w = wrk_with(ns, Some(cpus), threads, conns, "http://127.0.0.1:8000/", secs, &[]);
                Measured { w, cpu_us: 0.0 }
            })
            .collect();
        rates.push(median(runs).w);
    }
    drop(backends2);
    let scale = rates[1].rps / rates[0].rps;
    writeln!(
        report,
        "\n#### Scaling: insert mode, 1 L7 worker on CPU 0 (with wrk -t1 -c64 and 2 backend workers there too) against \
         2 workers on CPUs 0-1 (wrk -t2 -c128, the same backends on both), median of 3\n\n\
         | setup | requests/s | p99 ms |\n|---|---:|---:|\n| 1 worker, 1 core | {:.0} | {:.2} |\n| 2 workers, 2 cores | {:.0} | {:.2} |\n\n\
         Scaling: {scale:.2}×.",
        rates[0].rps, rates[0].p99_ms, rates[1].rps, rates[1].p99_ms
    )
    .unwrap();
    targets.add(
        "L7 two workers on two cores vs one on one: requests/s",
        format!("{scale:.2}×"),
        "≥ 1.7×",
        scale >= 1.7,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
