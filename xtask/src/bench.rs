//! `cargo xtask bench`: builds in release mode, runs the benchmark program
//! (`tests/src/bin/bench.rs`) as root, and writes its table to BENCHMARKS.md with the date, the
//! commit and the machine's core count.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{
    build_ebpf,
    toolchain::{cargo, install_with, is_root, root, status},
};

pub fn bench() -> Result<()> {
    if !is_root() {
        bail!("the benchmarks load BPF programs and make network namespaces: run `sudo -E cargo xtask bench`");
    }
    install_with(&["--bench"])?;
    build_ebpf::build()?;
    status(cargo().current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "balancer",
        "--package",
        "balancer-tests",
        "--bin",
        "balancer",
        "--bin",
        "bench",
    ]))?;
    let table = std::env::temp_dir().join(format!("balancer-bench-{}.md", std::process::id()));
    status(Command::new(root().join("target/release/bench")).env("BENCH_REPORT", &table))?;
    let body = std::fs::read_to_string(&table).context("reading the benchmark table")?;
    let _ = std::fs::remove_file(&table);
    let out = |cmd: &mut Command| {
        cmd.output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
    };
    let commit = out(Command::new("git").current_dir(root()).args(["rev-parse", "--short", "HEAD"]));
    let date = out(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = out(Command::new("uname").arg("-r"));
    let doc = format!(
        "# Benchmarks\n\nProduced by `sudo -E cargo xtask bench` on {date}, commit {commit}, {cores} cores, \
         kernel {kernel}. Every figure that has a target is a ratio to a reference measured in the same \
         run: absolute numbers on a shared VM drift by 30% from run to run.\n\n{body}"
    );
    std::fs::write(root().join("BENCHMARKS.md"), doc).context("writing BENCHMARKS.md")?;
    println!("wrote BENCHMARKS.md");
    Ok(())
}
