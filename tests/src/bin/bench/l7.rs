//! Part 3: the L7 sticky proxy against `HAProxy` and nginx on one namespace's loopback.

use std::{fmt::Write as _, time::Duration};

use balancer_tests::{daemon::Daemon, netns::Lan};

use crate::{Targets, profile::Profile, wrk};

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part3(report: &mut String, targets: &mut Targets) {
    let secs: u32 = std::env::var("BENCH_L7_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let lan = Lan::new(&["l7"]);
    let ns = &lan.hosts[0].ns;
    let dir = std::env::temp_dir().join(format!("{}-l7bench", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = "x".repeat(100);
    let nginx_backends = format!(
        "worker_processes 1; pid {d}/be.pid; error_log {d}/be.err; events {{ worker_connections 4096; }}\n\
         http {{ access_log off; server {{ listen 127.0.0.1:8081; location / {{ return 200 \"{body}\"; }} }}\n\
         server {{ listen 127.0.0.1:8082; location / {{ return 200 \"{body}\"; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("be.conf"), nginx_backends).unwrap();
    let _backends =
        ns.spawn(&["taskset", "-c", "1", "nginx", "-c", dir.join("be.conf").to_str().unwrap(), "-g", "daemon off;"]);
    let nginx_proxy = format!(
        "worker_processes 1; pid {d}/px.pid; error_log {d}/px.err; events {{ worker_connections 4096; }}\n\
         http {{ access_log off; upstream be {{ hash $cookie_route consistent; server 127.0.0.1:8081; server 127.0.0.1:8082; keepalive 64; }}\n\
         server {{ listen 127.0.0.1:8020; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("px.conf"), nginx_proxy).unwrap();
    let haproxy = "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n\
                   listen vip\n  bind 127.0.0.1:8010\n  balance roundrobin\n  http-reuse always\n  cookie SRV insert indirect nocache\n\
                   server r1 127.0.0.1:8081 cookie r1\n  server r2 127.0.0.1:8082 cookie r2\n";
    std::fs::write(dir.join("haproxy.cfg"), haproxy).unwrap();
    let key = dir.join("cookie.key");
    std::fs::write(&key, "bench-cookie-key-0123456789abcdef").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let balancer_cfg = format!(
        "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nworker_threads = 1\n\
         [[vip]]\naddress = \"127.0.0.1:8000\"\n[vip.l7]\nkey_file = \"{}\"\n\
         [[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8081\nroute = \"r1\"\n[[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8082\nroute = \"r2\"\n\
         [[vip]]\naddress = \"127.0.0.1:8001\"\n[vip.l7]\nsticky = \"route-suffix\"\n\
         [[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8081\nroute = \"r1\"\n[[vip.backend]]\naddress = \"127.0.0.1\"\nport = 8082\nroute = \"r2\"\n",
        key.display()
    );
    let daemon = Daemon::start(ns, &balancer_cfg, "warn,balancer::daemon=info");
    ns.run(&["taskset", "-a", "-p", "-c", "0", &daemon.proc.pid().to_string()]);
    let haproxy = ns.spawn(&["taskset", "-c", "0", "haproxy", "-f", dir.join("haproxy.cfg").to_str().unwrap(), "-db"]);
    let _nginx =
        ns.spawn(&["taskset", "-c", "0", "nginx", "-c", dir.join("px.conf").to_str().unwrap(), "-g", "daemon off;"]);
    std::thread::sleep(Duration::from_secs(1));

    let cases: [(&str, &str, Vec<&str>); 5] = [
        ("direct to one backend (upper bound)", "http://127.0.0.1:8081/", vec![]),
        ("balancer L7, insert mode", "http://127.0.0.1:8000/", vec![]),
        (
            "balancer L7, route-suffix, client sends the cookie",
            "http://127.0.0.1:8001/",
            vec!["-H", "Cookie: JSESSIONID=abc.r1"],
        ),
        ("HAProxy 1 thread, cookie insert indirect nocache", "http://127.0.0.1:8010/", vec![]),
        ("nginx 1 worker, hash $cookie_route consistent", "http://127.0.0.1:8020/", vec!["-H", "Cookie: route=abc"]),
    ];
    let mut rows = Vec::new();
    let (mut profile, mut haproxy_profile) = (None, None);
    let mut rss_peak = (0.0, 0.0);
    for (i, (name, url, extra)) in cases.iter().enumerate() {
        // The balancer's insert-mode runs are profiled (the target is HAProxy's rate), and its
        // memory sampled meanwhile.
        let perf = match i {
            1 => Profile::start(daemon.proc.pid(), secs * 3),
            3 => Profile::start(haproxy.pid(), secs * 3),
            _ => None,
        };
        let sampling = std::sync::atomic::AtomicBool::new(i == 1);
        let mut runs: Vec<(f64, f64)> = std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                let mut peak = (0.0f64, 0.0f64);
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    let (total, private) = crate::rss_mib(daemon.proc.pid());
                    peak = (peak.0.max(total), peak.1.max(private));
                    std::thread::sleep(Duration::from_millis(200));
                }
                peak
            });
            let runs = (0..3).map(|_| wrk(ns, Some("1"), url, secs, extra)).collect();
            sampling.store(false, std::sync::atomic::Ordering::Relaxed);
            if i == 1 {
                rss_peak = sampler.join().unwrap_or_default();
            }
            runs
        });
        match i {
            1 => profile = perf.map(Profile::report),
            3 => haproxy_profile = perf.map(Profile::report),
            _ => {}
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.push((*name, runs[1].0, runs[1].1));
    }
    let haproxy_rps = rows[3].1;
    let haproxy_p99 = rows[3].2;
    writeln!(report, "\n### 3. L7 sticky proxy (loopback, wrk -t1 -c64 -d{secs}s, proxy on CPU 0, wrk and backends on CPU 1, median of 3)\n").unwrap();
    writeln!(report, "| contender | requests/s | p99 ms | × HAProxy requests/s |").unwrap();
    writeln!(report, "|---|---:|---:|---:|").unwrap();
    for (name, rps, p99) in &rows {
        writeln!(report, "| {name} | {rps:.0} | {p99:.2} | {:.2} |", rps / haproxy_rps).unwrap();
    }
    for (i, what) in [(1, "insert"), (2, "route-suffix")] {
        let (rps, p99) = (rows[i].1, rows[i].2);
        let met = rps >= 1.2 * haproxy_rps && p99 <= haproxy_p99;
        targets.add(
            format!("L7 {what} vs HAProxy: requests/s, p99"),
            format!("{:.2}×, {p99:.2} vs {haproxy_p99:.2} ms", rps / haproxy_rps),
            "≥ 1.2×, p99 ≤ HAProxy's",
            met,
        );
        writeln!(
            report,
            "\nTarget, {what}: ≥ 1.2 × HAProxy's requests/s with p99 ≤ HAProxy's: {:.2}×, p99 {p99:.2} vs {haproxy_p99:.2} ms — {}",
            rps / haproxy_rps,
            if met { "met" } else { "**missed**" }
        )
        .unwrap();
    }
    writeln!(
        report,
        "\nDaemon memory under the insert-mode load (peak of samples every 200 ms): {:.1} MiB resident, {:.1} MiB private (RssAnon).",
        rss_peak.0, rss_peak.1
    )
    .unwrap();
    match profile {
        Some(p) => writeln!(
            report,
            "\nWhere the balancer's CPU went in insert mode (perf, cpu-clock samples, self time):\n\n```\n{p}```"
        )
        .unwrap(),
        None => writeln!(report, "\n(perf is not available: no profile of the L7 runs.)").unwrap(),
    }
    if let Some(p) = haproxy_profile {
        writeln!(report, "\nHAProxy's, for comparison (same sampling):\n\n```\n{p}```").unwrap();
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
