//! `cargo xtask bench`: figures as ratios to references measured in the same run.
//!
//! Part 1 — XDP cost per packet. One packet per `BPF_PROG_TEST_RUN` call, on a fresh copy (with
//! `repeat = N` the kernel reruns the program on its own output, so an encapsulating program
//! would see its own packets), a new source port where a new flow is wanted. The kernel's
//! reported duration for each call is collected; medians and p99 are compared with the
//! pass-only program's, measured the same way in the same run.
//!
//! Part 4 — control plane and memory: Maglev table build time, slot share error, slots moved
//! when a backend leaves, daemon RSS when idle, BPF map memory.
//!
//! Part 3 — the L7 sticky proxy against HAProxy and nginx, all on one namespace's loopback: two
//! nginx backends with a ~100-byte body, each proxy pinned to CPU 0 and wrk to CPU 1
//! (`wrk -t1 -c64 --latency`), median of 3 runs.
//!
//! Part 2 — end to end in namespaces: client → balancer → two backends (nginx), the same
//! topology for every contender: the balancer's XDP program (DSR, IPIP), an nftables DNAT
//! balancer in the same namespace, and the client straight to one backend. A bounded UDP flood
//! counted at the backends' interfaces, and `wrk` through the VIP.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use balancer::{
    dataplane::loader::{BALANCER_PROGRAM, PASS_PROGRAM},
    maglev::{self, Member, RingSize},
};
use balancer_tests::{
    daemon::Daemon,
    fixture::Fixture,
    netns::Lan,
    packet::{Frame, L4, tcp},
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
[[vip]]
address = "[2001:db8::10]:80"
  [[vip.backend]]
  address = "2001:db8::11"
  [[vip.backend]]
  address = "2001:db8::12"
[[vip]]
address = "198.51.100.11:80"
forwarding = "ipip"
  [[vip.backend]]
  address = "198.18.0.21"
  [[vip.backend]]
  address = "198.18.0.22"
[[vip]]
address = "[2001:db8::11]:80"
forwarding = "ipip"
  [[vip.backend]]
  address = "2001:db8::21"
  [[vip.backend]]
  address = "2001:db8::22"
[[vip]]
address = "198.51.100.12:443"
protocol = "udp"
ignore_source_port = true
  [[vip.backend]]
  address = "198.18.0.31"
  [[vip.backend]]
  address = "198.18.0.32"
"#;

/// Nanoseconds per call, sorted.
struct Sample(Vec<u64>);

impl Sample {
    fn pct(&self, p: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * p).round() as usize] as f64
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
    fn p99(&self) -> f64 {
        self.pct(0.99)
    }
    /// Mean of the fastest 99%: the kernel reports durations in steps of about 10 ns, which
    /// makes medians jump between runs; a mean averages over the steps, and dropping the
    /// slowest 1% keeps interrupts out.
    fn trimmed_mean(&self) -> f64 {
        let keep = &self.0[..(self.0.len() * 99 / 100).max(1)];
        keep.iter().sum::<u64>() as f64 / keep.len() as f64
    }
}

/// Runs `prog` once per frame `frame(i)` for `n` frames; returns the kernel-measured durations.
fn measure(prog: &Xdp, n: usize, expect: u32, mut frame: impl FnMut(usize) -> Vec<u8>) -> Sample {
    let mut out = vec![0u8; 512];
    let mut ns = Vec::with_capacity(n);
    for i in 0..n {
        let f = frame(i);
        let r = prog
            .test_run(TestRunOptions { data_in: Some(&f), data_out: Some(&mut out), ..TestRunOptions::new() })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, expect, "case took another path than the one measured (frame {i})");
        ns.push(r.duration.as_nanos() as u64);
    }
    ns.sort_unstable();
    Sample(ns)
}

/// `template` with a 5-tuple unique to `i`: the TCP/UDP source port (which follows the IP
/// header, whose source address ends `at - 8` (IPv4) or `at - 16` (IPv6) bytes before it) and,
/// beyond 64000 flows, the last byte of the client address.
fn with_port(template: &[u8], at: usize, i: usize) -> Vec<u8> {
    let mut f = template.to_vec();
    let port = 1024 + (i % 64000) as u16;
    f[at..at + 2].copy_from_slice(&port.to_be_bytes());
    let src_last = if f[12..14] == [0x08, 0x00] { at - 5 } else { at - 17 };
    f[src_last] ^= (i / 64000) as u8;
    f
}

/// Every figure that has a target, for the summary table at the top of the report.
#[derive(Default)]
struct Targets(Vec<(String, String, String, bool)>);

impl Targets {
    fn add(&mut self, figure: impl Into<String>, measured: impl Into<String>, target: impl Into<String>, met: bool) {
        self.0.push((figure.into(), measured.into(), target.into(), met));
    }

    fn table(&self) -> String {
        let mut t = String::from("| figure | measured | target | |\n|---|---:|---:|---|\n");
        for (f, m, target, met) in &self.0 {
            let verdict = if *met { "met" } else { "**missed**" };
            writeln!(t, "| {f} | {m} | {target} | {verdict} |").unwrap();
        }
        t
    }
}

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

struct Row {
    case: String,
    mean: f64,
    median: f64,
    p99: f64,
    ratio: f64,
    target: Option<f64>,
}

fn part1(n: usize, report: &mut String, targets: &mut Targets) -> Vec<Row> {
    let mut fx = Fixture::new(CONFIG);
    {
        let prog: &mut Xdp = fx.dp.ebpf_mut().program_mut("ref_swap").unwrap().try_into().unwrap();
        prog.load().expect("load ref_swap");
    }
    let ebpf = fx.dp.ebpf();
    let prog = |name: &str| -> &Xdp { ebpf.program(name).unwrap().try_into().unwrap() };
    let (lb, pass, swap) = (prog(BALANCER_PROGRAM), prog(PASS_PROGRAM), prog("ref_swap"));

    let v4 = |dst: &str, flags| Frame::tcp("192.0.2.1:40000", dst, flags).build();
    let v6 = |dst: &str, flags| Frame::tcp("[2001:db8:c::1]:40000", dst, flags).build();
    let (p4, p6) = (14 + 20, 14 + 40);
    let udp = Frame::new("192.0.2.1:5000", "198.51.100.12:443", L4::Udp).build();

    let base = measure(pass, n, XDP_PASS, |_| v4("198.51.100.10:80", tcp::ACK));
    let mut rows = Vec::new();
    let mut row = |case: &str, s: Sample, target: Option<f64>| {
        rows.push(Row {
            case: case.into(),
            mean: s.trimmed_mean(),
            median: s.median(),
            p99: s.p99(),
            ratio: s.trimmed_mean() / base.trimmed_mean(),
            target,
        });
    };
    row("pass-only (reference)", Sample(base.0.clone()), None);
    row("parse + MAC swap + XDP_TX (reference)", measure(swap, n, XDP_TX, |_| v4("198.51.100.10:80", tcp::ACK)), None);
    row("v4 non-VIP", measure(lb, n, XDP_PASS, |_| v4("198.51.100.99:80", tcp::ACK)), Some(1.3));
    row("v6 non-VIP", measure(lb, n, XDP_PASS, |_| v6("[2001:db8::99]:80", tcp::ACK)), Some(1.3));
    for (fam, vip, at) in [("v4", "198.51.100.10:80", p4), ("v6", "[2001:db8::10]:80", p6)] {
        let syn = if fam == "v4" { v4(vip, tcp::SYN) } else { v6(vip, tcp::SYN) };
        row(&format!("{fam} DSR SYN, new flow"), measure(lb, n, XDP_TX, |i| with_port(&syn, at, i)), Some(4.2));
        let ack = if fam == "v4" { v4(vip, tcp::ACK) } else { v6(vip, tcp::ACK) };
        row(&format!("{fam} DSR ACK, established"), measure(lb, n, XDP_TX, |_| ack.clone()), Some(2.3));
    }
    for (fam, vip, at) in [("v4", "198.51.100.11:80", p4), ("v6", "[2001:db8::11]:80", p6)] {
        let syn = if fam == "v4" { v4(vip, tcp::SYN) } else { v6(vip, tcp::SYN) };
        row(&format!("{fam} IPIP SYN, new flow"), measure(lb, n, XDP_TX, |i| with_port(&syn, at, 2 * n + i)), Some(4.2));
        let ack = if fam == "v4" { v4(vip, tcp::ACK) } else { v6(vip, tcp::ACK) };
        row(&format!("{fam} IPIP ACK, established"), measure(lb, n, XDP_TX, |_| ack.clone()), Some(2.3));
    }
    row("v4 UDP, source port not hashed", measure(lb, n, XDP_TX, |i| with_port(&udp, p4, i)), Some(2.3));

    writeln!(report, "### 1. XDP cost per packet (BPF_PROG_TEST_RUN, {n} packets per case, one per call)\n").unwrap();
    writeln!(report, "Ratios compare means of the fastest 99% of calls (durations come in ~10 ns steps).\n").unwrap();
    writeln!(report, "| case | mean ns | median ns | p99 ns | × pass-only | target | |").unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---|").unwrap();
    for r in &rows {
        let (t, verdict) = match r.target {
            Some(t) => {
                targets.add(format!("XDP per packet: {}", r.case), format!("{:.2}× pass-only", r.ratio), format!("≤ {t}×"), r.ratio <= t);
                (format!("≤ {t}×"), if r.ratio <= t { "met" } else { "**missed**" })
            }
            None => (String::new(), ""),
        };
        writeln!(report, "| {} | {:.1} | {:.0} | {:.0} | {:.2} | {t} | {verdict} |", r.case, r.mean, r.median, r.p99, r.ratio).unwrap();
    }
    // Where the time goes, from the differences between rows of this run (v4, DSR).
    let m = |case: &str| rows.iter().find(|r| r.case == case).map_or(0.0, |r| r.mean);
    let (pass, swap, nonvip) = (m("pass-only (reference)"), m("parse + MAC swap + XDP_TX (reference)"), m("v4 non-VIP"));
    let (est, syn, ipip) = (m("v4 DSR ACK, established"), m("v4 DSR SYN, new flow"), m("v4 IPIP ACK, established"));
    writeln!(report, "\nWhere the time goes (v4, differences between the rows above):\n").unwrap();
    writeln!(report, "- parse, MAC swap, XDP_TX (reference − pass-only): {:.0} ns", swap - pass).unwrap();
    writeln!(report, "- parse and VIP hash lookup (non-VIP − pass-only): {:.0} ns", nonvip - pass).unwrap();
    writeln!(report, "- flow hash, flow-table hit, backend lookup, rewrite, counters (established − non-VIP): {:.0} ns", est - nonvip).unwrap();
    writeln!(report, "- IPIP encapsulation over DSR (IPIP established − DSR established): {:.0} ns", ipip - est).unwrap();
    writeln!(report, "- new flow over established (ring slot, backend, flow-table insert): {:.0} ns", syn - est).unwrap();
    rows
}

fn part4(report: &mut String, targets: &mut Targets) {
    writeln!(report, "\n### 4. Control plane and memory\n").unwrap();
    writeln!(report, "| figure | value | target | |").unwrap();
    writeln!(report, "|---|---:|---:|---|").unwrap();
    let members = |n: usize| -> Vec<Member> {
        (0..n).map(|i| Member { identity: format!("10.{}.{}.1", i / 256, i % 256).into_bytes(), weight: 1 }).collect()
    };
    for n in [10, 100, 1000] {
        let ms = members(n);
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(maglev::build(&ms, RingSize::default(), maglev::DEFAULT_SEED));
                t.elapsed()
            })
            .collect();
        times.sort();
        let ms_taken = times[3].as_secs_f64() * 1e3;
        let (target, verdict) = if n == 1000 { ("< 20 ms", if ms_taken < 20.0 { "met" } else { "**missed**" }) } else { ("", "") };
        if n == 1000 {
            targets.add("Maglev build, 1000 backends", format!("{ms_taken:.2} ms"), "< 20 ms", ms_taken < 20.0);
        }
        writeln!(report, "| Maglev build, {n} backends, M=65537 (median of 7) | {ms_taken:.2} ms | {target} | {verdict} |").unwrap();
    }
    for n in [10usize, 100, 1000] {
        let ms = members(n);
        let before = maglev::build(&ms, RingSize::default(), maglev::DEFAULT_SEED).unwrap();
        let after = maglev::build(&ms[1..], RingSize::default(), maglev::DEFAULT_SEED).unwrap();
        let moved = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|&(&b, &a)| ms[b as usize].identity != ms[1 + a as usize].identity)
            .count();
        let times_ideal = moved as f64 / 65537.0 * n as f64;
        let verdict = if times_ideal <= 1.1 { "met" } else { "**missed**" };
        targets.add(format!("slots moved when 1 of {n} backends leaves"), format!("{times_ideal:.2} × 1/N"), "≤ 1.1 × 1/N", times_ideal <= 1.1);
        writeln!(report, "| slots moved when 1 of {n} leaves | {times_ideal:.3} × 1/N | ≤ 1.1 × 1/N | {verdict} |").unwrap();
    }
    let weights: Vec<u32> = (0..100).map(|i| 1 + i % 10).collect();
    let ms: Vec<Member> = members(100).into_iter().zip(&weights).map(|(m, &w)| Member { weight: w, ..m }).collect();
    let t = maglev::build(&ms, RingSize::default(), maglev::DEFAULT_SEED).unwrap();
    let total: u32 = weights.iter().sum();
    let worst = t
        .counts(100)
        .iter()
        .zip(&weights)
        .map(|(&c, &w)| {
            let want = 65537.0 * f64::from(w) / f64::from(total);
            (f64::from(c) - want).abs() / want
        })
        .fold(0.0, f64::max);
    writeln!(report, "| worst slot-share error vs weight share, 100 backends, weights 1-10 | {:.2} % | ≤ 1 % | {} |", worst * 100.0, if worst <= 0.01 { "met" } else { "**missed**" }).unwrap();
    targets.add("Maglev slot share vs weight share, 100 backends", format!("{:.2} % worst", worst * 100.0), "≤ 1 %", worst <= 0.01);

    // The daemon, idle, in a namespace of its own.
    let lan = Lan::new(&["lb"]);
    let ns = &lan.hosts[0].ns;
    let mut daemon = Daemon::start(ns, "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\n[[vip]]\naddress = \"198.18.0.1:80\"\n", "info");
    std::thread::sleep(Duration::from_secs(1));
    let pid = daemon.proc.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| -> f64 {
        status.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    writeln!(
        report,
        "| daemon RSS, idle, 1 VIP: total / private (RssAnon) | {:.1} / {:.1} MiB | | the rest is the mmap of the ring map |",
        kib("VmRSS:") / 1024.0,
        kib("RssAnon:") / 1024.0
    )
    .unwrap();
    let mut memlock = 0u64;
    let mut seen = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for e in dir.flatten() {
            let info = std::fs::read_to_string(e.path()).unwrap_or_default();
            let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()));
            if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:"))
                && seen.insert(id) {
                    memlock += bytes.parse::<u64>().unwrap_or(0);
                }
        }
    }
    writeln!(report, "| BPF map memory, default sizes (memlock of the daemon's maps) | {:.1} MiB | | |", memlock as f64 / (1 << 20) as f64).unwrap();
    daemon.proc.stop();
}

/// One wrk run (`-t1 -c64 --latency`) with the CPU list `cpus` (none: unpinned): requests/s and
/// p99 latency in ms. Fails on non-2xx answers.
fn wrk(ns: &balancer_tests::netns::Netns, cpus: Option<&str>, url: &str, secs: u32, extra: &[&str]) -> (f64, f64) {
    let d = format!("{secs}s");
    let mut argv = match cpus {
        Some(c) => vec!["taskset", "-c", c],
        None => vec![],
    };
    argv.extend_from_slice(&["wrk", "-t1", "-c64", "-d", &d, "--latency"]);
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = ns.run(&argv);
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{out}"));
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| {
            let v = v.trim();
            let (n, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = n.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "s" => n * 1000.0,
                _ => n,
            }
        })
        .unwrap_or(f64::NAN);
    let non2xx = out.lines().find(|l| l.contains("Non-2xx")).map(str::to_owned);
    assert!(non2xx.is_none(), "{url}: {non2xx:?}\n{out}");
    (rps, p99)
}

fn part3(report: &mut String, targets: &mut Targets) {
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
    let _backends = ns.spawn(&["taskset", "-c", "1", "nginx", "-c", dir.join("be.conf").to_str().unwrap(), "-g", "daemon off;"]);
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
    let _haproxy = ns.spawn(&["taskset", "-c", "0", "haproxy", "-f", dir.join("haproxy.cfg").to_str().unwrap(), "-db"]);
    let _nginx = ns.spawn(&["taskset", "-c", "0", "nginx", "-c", dir.join("px.conf").to_str().unwrap(), "-g", "daemon off;"]);
    std::thread::sleep(Duration::from_secs(1));

    let cases: [(&str, &str, Vec<&str>); 5] = [
        ("direct to one backend (upper bound)", "http://127.0.0.1:8081/", vec![]),
        ("balancer L7, insert mode", "http://127.0.0.1:8000/", vec![]),
        ("balancer L7, route-suffix, client sends the cookie", "http://127.0.0.1:8001/", vec!["-H", "Cookie: JSESSIONID=abc.r1"]),
        ("HAProxy 1 thread, cookie insert indirect nocache", "http://127.0.0.1:8010/", vec![]),
        ("nginx 1 worker, hash $cookie_route consistent", "http://127.0.0.1:8020/", vec!["-H", "Cookie: route=abc"]),
    ];
    let mut rows = Vec::new();
    let mut profile = None;
    for (i, (name, url, extra)) in cases.iter().enumerate() {
        // The balancer's insert-mode runs are profiled (the target is HAProxy's rate).
        let perf = (i == 1).then(|| Profile::start(daemon.proc.pid(), secs * 3)).flatten();
        let mut runs: Vec<(f64, f64)> = (0..3).map(|_| wrk(ns, Some("1"), url, secs, extra)).collect();
        profile = profile.or_else(|| perf.map(Profile::report));
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
    match profile {
        Some(p) => writeln!(report, "\nWhere the balancer's CPU went in insert mode (perf, cpu-clock samples, self time):\n\n```\n{p}```").unwrap(),
        None => writeln!(report, "\n(perf is not available: no profile of the L7 runs.)").unwrap(),
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `perf record` of a process while a measurement runs.
struct Profile {
    child: std::process::Child,
    data: std::path::PathBuf,
}

impl Profile {
    /// Samples `pid` for `secs` seconds, if `perf` works here.
    fn start(pid: u32, secs: u32) -> Option<Self> {
        let data = std::env::temp_dir().join(format!("balancer-bench-{pid}.perf"));
        let child = std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, data })
    }

    /// Where the samples fell: by shared object (kernel, balancer, libc…), then the heaviest
    /// symbols.
    fn report(mut self) -> String {
        let _ = self.child.wait();
        let run = |sort: &str, limit: &str| {
            std::process::Command::new("perf")
                .args(["report", "--stdio", "--no-children", "--sort", sort, "--percent-limit", limit, "-g", "none", "-i"])
                .arg(&self.data)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let rows = |text: String, n: usize| -> String {
            text.lines()
                .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
                .take(n)
                .map(|l| format!("{}\n", l.split("  -  ").next().unwrap_or(l).trim_end()))
                .collect()
        };
        let by_object = rows(run("dso", "1"), 8);
        let by_symbol = rows(run("dso,symbol", "0.7"), 15);
        let _ = std::fs::remove_file(&self.data);
        format!("{by_object}\n{by_symbol}")
    }
}

/// Packets received so far on `eth0` of `ns`.
fn rx_packets(ns: &balancer_tests::netns::Netns) -> u64 {
    let out = ns.run(&["ip", "-s", "-j", "link", "show", "eth0"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
}

/// Sends UDP datagrams from 16 sockets (16 flows) to `dst` for `secs` seconds, at most 50
/// million; returns how many were sent.
fn flood(client: &balancer_tests::netns::Netns, dst: std::net::SocketAddr, secs: u64) -> u64 {
    client.in_thread(|| {
        let socks: Vec<std::net::UdpSocket> = (0..16).map(|_| std::net::UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
        let payload = [0u8; 64];
        let end = Instant::now() + Duration::from_secs(secs);
        let mut sent = 0u64;
        while Instant::now() < end && sent < 50_000_000 {
            for s in &socks {
                if s.send_to(&payload, dst).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
}

fn part2(report: &mut String, targets: &mut Targets) {
    let secs: u64 = std::env::var("BENCH_E2E_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let vip = "198.51.100.10";
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let body = "x".repeat(100);
    let mut servers = Vec::new();
    for h in 2..4 {
        let ns = &lan.hosts[h].ns;
        ns.run(&["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"]);
        ns.run(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
        // The flood's port is dropped quietly (no ICMP back); the interface still counts it.
        ns.run(&["nft", "add table ip sink; add chain ip sink in { type filter hook input priority 0; }; add rule ip sink in udp dport 9 drop"]);
        let dir = std::env::temp_dir().join(format!("{}-web", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "worker_processes 1; pid {d}/n.pid; error_log {d}/n.err; events {{ worker_connections 4096; }}\n\
             http {{ access_log off; server {{ listen 80; location / {{ return 200 \"{body}\"; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("n.conf"), conf).unwrap();
        servers.push(ns.spawn(&["nginx", "-c", dir.join("n.conf").to_str().unwrap(), "-g", "daemon off;"]));
    }
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{vip}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    std::thread::sleep(Duration::from_millis(500));
    let measure = |lan: &Lan, target: &str| -> (f64, f64, f64, f64) {
        let client = &lan.hosts[0].ns;
        let before: u64 = (2..4).map(|h| rx_packets(&lan.hosts[h].ns)).sum();
        let sent = flood(client, format!("{target}:9").parse().unwrap(), secs);
        std::thread::sleep(Duration::from_millis(200));
        let after: u64 = (2..4).map(|h| rx_packets(&lan.hosts[h].ns)).sum();
        // Unpinned: the namespaces share both CPUs.
        let (rps, p99) = wrk(client, None, &format!("http://{target}/"), secs as u32, &[]);
        (sent as f64 / secs as f64, (after - before) as f64 / secs as f64, rps, p99)
    };
    let config = |fwd: &str| {
        format!(
            "interfaces = [\"eth0\"]\nxdp_mode = \"native\"\n\
             [[vip]]\naddress = \"{vip}:9\"\nprotocol = \"udp\"\nforwarding = \"{fwd}\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n\
             [[vip]]\naddress = \"{vip}:80\"\nforwarding = \"{fwd}\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
        )
    };
    let mut rows = Vec::new();
    rows.push(("direct to one backend (upper bound)", measure(&lan, "198.18.0.3")));
    {
        let daemon = Daemon::start(&lan.hosts[1].ns, &config("dsr"), "warn,balancer::daemon=info");
        rows.push(("balancer XDP, DSR", measure(&lan, vip)));
        lan.decap_on(2);
        lan.decap_on(3);
        daemon.write_config(&config("ipip"));
        let out = daemon.ctl(&lan.hosts[1].ns, &["reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        rows.push(("balancer XDP, IPIP", measure(&lan, vip)));
    } // the daemon stops and its pins go: the XDP program leaves the interface
    let lb = &lan.hosts[1].ns;
    lb.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lb.run(&["nft", &format!(
        "add table ip lb; \
         add chain ip lb pre {{ type nat hook prerouting priority -100; }}; \
         add chain ip lb post {{ type nat hook postrouting priority 100; }}; \
         add rule ip lb pre ip daddr {vip} udp dport 9 dnat to numgen inc mod 2 map {{ 0 : 198.18.0.3, 1 : 198.18.0.4 }}; \
         add rule ip lb pre ip daddr {vip} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 198.18.0.3, 1 : 198.18.0.4 }}; \
         add rule ip lb post ip daddr {{ 198.18.0.3, 198.18.0.4 }} masquerade"
    )]);
    rows.push(("nftables DNAT (numgen inc mod 2) + masquerade", measure(&lan, vip)));
    drop(servers);

    let nft = rows[3].1;
    writeln!(report, "\n### 2. End to end in namespaces (client → balancer → 2 backends on one veth LAN, {secs} s per measure)\n").unwrap();
    writeln!(
        report,
        "On veth, XDP and the kernel's forwarding run in the softirq of the sending CPU, so the flood's sender and the \
         forwarder share a core for every contender: the UDP figures are the sender's rate with each forwarder's cost \
         charged to it (when nothing is lost, a cheaper forwarder leaves the sender more time), not the forwarder's \
         ceiling. A multi-queue NIC or a faster generator would be needed for that.\n"
    )
    .unwrap();
    writeln!(report, "| contender | UDP sent/s | UDP received by backends/s | × nftables | HTTP requests/s | HTTP p99 ms |").unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (name, (sent, recv, rps, p99)) in &rows {
        writeln!(report, "| {name} | {sent:.0} | {recv:.0} | {:.2} | {rps:.0} | {p99:.2} |", recv / nft.1).unwrap();
    }
    for (i, what) in [(1, "DSR"), (2, "IPIP")] {
        let (_, recv, _, p99) = rows[i].1;
        let met = recv >= 2.0 * nft.1 && p99 <= nft.3;
        targets.add(
            format!("end to end, XDP {what} vs nftables: packets/s, HTTP p99"),
            format!("{:.2}×, {p99:.2} vs {:.2} ms", recv / nft.1, nft.3),
            "≥ 2×, p99 ≤ nftables'",
            met,
        );
        writeln!(
            report,
            "\nTarget, {what}: ≥ 2 × nftables' packets/s and HTTP p99 no worse: {:.2}×, p99 {p99:.2} vs {:.2} ms — {}",
            recv / nft.1,
            nft.3,
            if met { "met" } else { "**missed**" }
        )
        .unwrap();
    }
}

fn main() {
    if !balancer_tests::is_root() {
        eprintln!("the benchmarks load BPF programs and make namespaces: run as root");
        std::process::exit(1);
    }
    let n: usize = std::env::var("BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut report = String::new();
    let mut targets = Targets::default();
    part1(n, &mut report, &mut targets);
    if std::env::var("BENCH_SKIP_E2E").is_err() {
        part2(&mut report, &mut targets);
    }
    if std::env::var("BENCH_SKIP_L7").is_err() {
        part3(&mut report, &mut targets);
    }
    part4(&mut report, &mut targets);
    let report = format!("### Summary: every target\n\n{}\n{report}", targets.table());
    print!("{report}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
