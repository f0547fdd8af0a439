//! Part 6: AJP/1.3 against HTTP to the same Tomcat: one Tomcat 10 with an HTTP connector and
//! an AJP connector (with a secret), the balancer in front of each on its own VIP, and wrk
//! straight to the HTTP connector as the floor. The page is a JSP without a session that
//! reads no body (`hello.jsp`, 9 bytes; a page that reads the body of a GET costs an AJP round
//! trip more, `GET_BODY_CHUNK`, as behind `mod_jk`).
//!
//! The balancer runs on CPU 0 alone (one L7 worker); Tomcat and wrk share CPU 1. Each path is
//! warmed first (Tomcat's JIT), then the three take turns, three rounds, median.

use std::fmt::Write as _;

use balancer_tests::{backend::JavaServer, daemon::Daemon, netns::Lan};

use crate::{Targets, cpu_seconds, edge::median, pin, wrk_with};

pub fn part6(report: &mut String, targets: &mut Targets) {
    let secs: u32 = std::env::var("BENCH_L7_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let lan = Lan::new(&["ajp"]);
    let host = &lan.hosts[0];
    let ns = &host.ns;
    let secret = "bench-ajp-secret";
    let tomcat = JavaServer::tomcat_ajp(host, "t1", 8080, 8009, secret);
    let ip = host.ip;
    let config = format!(
        "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nworker_threads = 1\nl7_workers = 1\n\
         [[vip]]\naddress = \"127.0.0.1:8480\"\n[vip.l7]\nsticky = \"hash\"\nmax_connections = 2000\n\
         [[vip.backend]]\naddress = \"{ip}\"\nport = 8080\n\
         [[vip]]\naddress = \"127.0.0.1:8481\"\n[vip.l7]\nsticky = \"hash\"\nmax_connections = 2000\n\
         backend_protocol = \"ajp13\"\najp_secret = \"{secret}\"\n[[vip.backend]]\naddress = \"{ip}\"\nport = 8009\n"
    );
    let daemon = Daemon::start(ns, &config, "warn");
    let ours = daemon.proc.pid();
    pin(ns, ours, "0");
    pin(ns, tomcat.proc.pid(), "1");
    let paths = [
        ("wrk → Tomcat HTTP connector (no proxy)", format!("http://{ip}:8080/hello.jsp"), None),
        ("balancer → Tomcat over HTTP/1.1", "http://127.0.0.1:8480/hello.jsp".to_owned(), Some(ours)),
        ("balancer → Tomcat over AJP/1.3", "http://127.0.0.1:8481/hello.jsp".to_owned(), Some(ours)),
    ];
    // Tomcat compiles the JSP and its JIT warms on each path.
    for (_, url, _) in &paths {
        let _ = wrk_with(ns, Some("1"), 1, 32, url, 5, &[]);
    }
    let mut runs = [Vec::new(), Vec::new(), Vec::new()];
    let mut tomcat_cpu = [Vec::new(), Vec::new(), Vec::new()];
    let java = tomcat.proc.pid();
    for _ in 0..3 {
        for (i, (_, url, pid)) in paths.iter().enumerate() {
            let before = pid.map(cpu_seconds);
            let java_before = cpu_seconds(java);
            let w = wrk_with(ns, Some("1"), 1, 32, url, secs, &[]);
            let requests = (w.rps * f64::from(secs)).max(1.0);
            let cpu = match (pid, before) {
                (Some(p), Some(b)) => (cpu_seconds(*p) - b) * 1e6 / requests,
                _ => f64::NAN,
            };
            tomcat_cpu[i].push((cpu_seconds(java) - java_before) * 1e6 / requests);
            runs[i].push((w, cpu));
        }
    }
    let tomcat_cpu = tomcat_cpu.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[1]
    });
    let [direct, http, ajp] = runs.map(median);
    writeln!(
        report,
        "\n### 6. AJP/1.3 vs HTTP to the same Tomcat 10 (one namespace; the balancer on CPU 0 alone, Tomcat and \
         wrk -t1 -c32 on CPU 1; `hello.jsp`, no session; {secs} s runs after a 5 s warm-up each, in turn, median of 3)\n"
    )
    .unwrap();
    writeln!(
        report,
        "| path | requests/s | p99 ms | balancer CPU µs/request | Tomcat CPU µs/request | × HTTP through the balancer |"
    )
    .unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (((name, _, _), (w, cpu)), java) in paths.iter().zip([direct, http, ajp]).zip(tomcat_cpu) {
        let cpu = if cpu.is_nan() { "-".to_owned() } else { format!("{cpu:.1}") };
        writeln!(report, "| {name} | {:.0} | {:.2} | {cpu} | {java:.1} | {:.2} |", w.rps, w.p99_ms, w.rps / http.0.rps)
            .unwrap();
    }
    targets.add(
        "L7 AJP/1.3 vs HTTP/1.1 to the same Tomcat: requests/s, balancer CPU per request",
        format!("{:.2}×, {:.1} vs {:.1} µs", ajp.0.rps / http.0.rps, ajp.1, http.1),
        "≥ 0.95× HTTP's requests/s",
        ajp.0.rps >= 0.95 * http.0.rps,
    );
    drop(daemon);
    drop(tomcat);
}
