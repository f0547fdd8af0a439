//! `perf record` of a process while a measurement runs, summarised for the report.

use std::fmt::Write as _;

/// `perf record` of a process while a measurement runs.
pub struct Profile {
    child: std::process::Child,
    data: std::path::PathBuf,
}

impl Profile {
    /// Samples `pid` for `secs` seconds, if `perf` works here.
    pub fn start(pid: u32, secs: u32) -> Option<Self> {
        Self::record(&format!("pid{pid}"), &["-p", &pid.to_string()], secs)
    }

    /// Samples everything CPU `cpu` runs (softirqs included) for `secs` seconds.
    pub fn cpu(cpu: usize, secs: u32) -> Option<Self> {
        Self::record(&format!("cpu{cpu}-{}", std::process::id()), &["-C", &cpu.to_string()], secs)
    }

    fn record(tag: &str, target: &[&str], secs: u32) -> Option<Self> {
        let data = std::env::temp_dir().join(format!("balancer-bench-{tag}.perf"));
        let child = std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(target)
            .args(["--", "sleep", &secs.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, data })
    }

    /// Where the samples fell: by shared object (kernel, balancer, libc…), then the heaviest
    /// symbols.
    pub fn report(mut self) -> String {
        let _ = self.child.wait();
        let run = |sort: &str, limit: &str| {
            std::process::Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "--sort",
                    sort,
                    "--percent-limit",
                    limit,
                    "-g",
                    "none",
                    "-i",
                ])
                .arg(&self.data)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let rows = |text: String, n: usize| -> String {
            text.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).take(n).fold(
                String::new(),
                |mut out, l| {
                    let _ = writeln!(out, "{}", l.split("  -  ").next().unwrap_or(l).trim_end());
                    out
                },
            )
        };
        let by_object = rows(run("dso", "1"), 8);
        let by_symbol = rows(run("dso,symbol", "0.7"), 15);
        let _ = std::fs::remove_file(&self.data);
        format!("{by_object}\n{by_symbol}")
    }
}

/// The groups a profile's samples are put in, by where they fell.
const GROUPS: [&str; 9] = [
    "kernel (sockets, TCP, syscalls, scheduling)",
    "malloc/free",
    "other libc (memcpy, …)",
    "async runtime (tokio, mio): polling, wakeups, timers",
    "HTTP/1 head parsing (httparse)",
    "HMAC-SHA-256 (cookie signing)",
    "hyper",
    "the balancer's L7 code",
    "the rest of the process's own code",
];

fn group(dso: &str, symbol: &str) -> usize {
    let has = |s: &str| symbol.contains(s);
    if dso.contains("kernel") {
        0
    } else if dso.starts_with("libc") && (has("malloc") || has("free") || has("_int_") || has("calloc")) {
        1
    } else if dso.starts_with("libc") {
        2
    } else if has("tokio::") || has("mio::") {
        3
    } else if has("httparse") {
        4
    } else if has("sha2") || has("hmac") || has("sha256") || has("digest") {
        5
    } else if has("hyper") {
        6
    } else if has("balancer::l7") {
        7
    } else {
        8
    }
}

impl Profile {
    /// The share of samples in each of `GROUPS`, in percent.
    pub fn grouped(mut self) -> Vec<f64> {
        let _ = self.child.wait();
        let text = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "0",
                "-g",
                "none",
                "-i",
            ])
            .arg(&self.data)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.data);
        let mut shares = vec![0.0; GROUPS.len()];
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(pct) = words.next().and_then(|p| p.strip_suffix('%')).and_then(|p| p.parse::<f64>().ok()) else {
                continue;
            };
            let dso = words.next().unwrap_or("");
            let _kind = words.next();
            let symbol: String = words.collect::<Vec<_>>().join(" ");
            shares[group(dso, &symbol)] += pct;
        }
        shares
    }
}

/// Two grouped profiles as one table.
pub fn side_by_side(a_name: &str, a: &[f64], b_name: &str, b: &[f64]) -> String {
    let mut t = format!("| where | {a_name} % | {b_name} % |\n|---|---:|---:|\n");
    for (i, g) in GROUPS.iter().enumerate() {
        if a[i] >= 0.05 || b[i] >= 0.05 {
            let _ = writeln!(t, "| {g} | {:.1} | {:.1} |", a[i], b[i]);
        }
    }
    t
}
