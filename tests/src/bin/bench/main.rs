//! `cargo xtask bench`: figures as ratios to references measured in the same run.
//!
//! Part 1 — XDP cost per packet. One packet per `BPF_PROG_TEST_RUN` call, on a fresh copy (with
//! `repeat = N` the kernel reruns the program on its own output, so an encapsulating program
//! would see its own packets), a new source port where a new flow is wanted. The kernel's
//! reported duration for each call is collected; medians and p99 are compared with the
//! pass-only program's, measured the same way in the same run. `BENCH_BPF_OBJECT_B` adds
//! another build of our program to the same rounds (an A/B); `BENCH_KATRAN_OBJECT` adds
//! Katran's program on the IPIP cases (`katran.rs`). `BENCH_PROFILE_CASE=<case>` (with
//! `BENCH_PARTS=1`) runs that one case instead, steadily, for `perf` and
//! `scripts/xdp-profile.py`, and prints its net cost beside its "B: "/"Katran: " twins.
//!
//! Part 4 — control plane and memory: Maglev table build time, slot share error, slots moved
//! when a backend leaves, daemon RSS when idle, BPF map memory.
//!
//! Part 3 — the L7 sticky proxy against `HAProxy` and nginx, all on one namespace's loopback: two
//! nginx backends, each proxy alone on CPU 0, wrk and the backends on CPU 1; 100-byte responses
//! at 64 and 512 connections (median of 5 interleaved rounds, with each proxy's CPU time per
//! request), 16 KiB and 1 MiB responses, idle keep-alive connections' memory, and one worker on
//! one core against two on two (`l7.rs` says how).
//!
//! Part 5 — the L7 edge (TLS, WebSocket) against `HAProxy`; part 6 — AJP/1.3 against HTTP/1.1
//! to the same Tomcat (`ajp.rs`).
//!
//! Part 2 — end to end in namespaces: client → balancer → two backends (nginx), the same
//! topology for every contender: the balancer's XDP program (DSR, IPIP), an nftables DNAT
//! balancer in the same namespace, and the client straight to one backend. A bounded UDP flood
//! counted at the backends' interfaces, and `wrk` through the VIP.

mod ajp;
mod e2e;
mod edge;
mod katran;
mod l7;
mod memory;
mod profile;
mod xdp;

use std::fmt::Write as _;

/// Every figure that has a target, for the summary table at the top of the report.
#[derive(Default)]
pub struct Targets(Vec<(String, String, String, bool)>);

impl Targets {
    pub fn add(
        &mut self,
        figure: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
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

/// One wrk run (`-t1 -c64 --latency`) with the CPU list `cpus` (none: unpinned): requests/s and
/// p99 latency in ms. Fails on non-2xx answers.
pub fn wrk(ns: &balancer_tests::netns::Netns, cpus: Option<&str>, url: &str, secs: u32, extra: &[&str]) -> (f64, f64) {
    let w = wrk_with(ns, cpus, 1, 64, url, secs, extra);
    (w.rps, w.p99_ms)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Bytes per second received, in MB/s (10^6).
    pub mb_s: f64,
}

/// One wrk run with `threads` threads and `conns` connections.
pub fn wrk_with(
    ns: &balancer_tests::netns::Netns,
    cpus: Option<&str>,
    threads: u32,
    conns: u32,
    url: &str,
    secs: u32,
    extra: &[&str],
) -> Wrk {
    let (duration, threads, conns) = (format!("{secs}s"), format!("-t{threads}"), format!("-c{conns}"));
    let mut argv = match cpus {
        Some(c) => vec!["taskset", "-c", c],
        None => vec![],
    };
    argv.extend_from_slice(&["wrk", &threads, &conns, "-d", &duration, "--latency"]);
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = ns.run(&argv);
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{out}"));
    let with_unit = |v: &str| {
        let v = v.trim();
        let at = v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len());
        let (n, unit) = v.split_at(at);
        (n.parse::<f64>().unwrap_or(f64::NAN), unit.to_owned())
    };
    let p99_ms = out.lines().find_map(|l| l.trim().strip_prefix("99%")).map_or(f64::NAN, |v| {
        let (n, unit) = with_unit(v);
        match unit.as_str() {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    });
    let mb_s = out.lines().find_map(|l| l.strip_prefix("Transfer/sec:")).map_or(f64::NAN, |v| {
        let (n, unit) = with_unit(v);
        let scale = match unit.as_str() {
            "GB" => 1024.0 * 1024.0 * 1024.0,
            "MB" => 1024.0 * 1024.0,
            "KB" => 1024.0,
            _ => 1.0,
        };
        n * scale / 1e6
    });
    let non2xx = out.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")).map(str::to_owned);
    assert!(non2xx.is_none(), "{url}: {non2xx:?}\n{out}");
    Wrk { rps, p99_ms, mb_s }
}

/// CPU time (user + system) process `pid` and its children have used, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `) S`.
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let total: u64 = ticks(pid) + children.split_whitespace().filter_map(|c| c.parse().ok()).map(ticks).sum::<u64>();
    // The kernel reports in USER_HZ, 100 on every Linux build that matters here.
    total as f64 / 100.0
}

/// Pins process `pid`, its threads and its children to `cpus`.
pub fn pin(ns: &balancer_tests::netns::Netns, pid: u32, cpus: &str) {
    ns.run(&["taskset", "-a", "-p", "-c", cpus, &pid.to_string()]);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for c in children.split_whitespace() {
        ns.run(&["taskset", "-a", "-p", "-c", cpus, c]);
    }
}

/// Resident and private (`RssAnon`) memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("RssAnon:") / 1024.0)
}

fn main() {
    if !balancer_tests::is_root() {
        eprintln!("the benchmarks load BPF programs and make namespaces: run as root");
        std::process::exit(1);
    }
    // The idle-connection measurement holds 10,000 sockets here and twice that in each
    // contender, which inherit this limit.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    let n: usize = std::env::var("BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut report = String::new();
    let mut targets = Targets::default();
    // `BENCH_PARTS=13` runs parts 1 and 3 only (all six by default).
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "123456".into());
    if parts.contains('1') {
        xdp::part1(n, &mut report, &mut targets);
    }
    if parts.contains('2') {
        e2e::part2(&mut report, &mut targets);
    }
    if parts.contains('3') {
        l7::part3(&mut report, &mut targets);
    }
    if parts.contains('4') {
        memory::part4(&mut report, &mut targets);
    }
    if parts.contains('5') {
        edge::part5(&mut report, &mut targets);
    }
    if parts.contains('6') {
        ajp::part6(&mut report, &mut targets);
    }
    let report = format!("### Summary: every target\n\n{}\n{report}", targets.table());
    print!("{report}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
