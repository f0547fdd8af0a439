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
