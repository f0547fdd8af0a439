//! `cargo xtask test`: every test, from a fresh machine.

use anyhow::Result;

use crate::{
    build_ebpf, package,
    toolchain::{cargo, install, is_root, root, status},
};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Options {
    /// Only run tests whose name contains this (passed to the test binaries).
    filter: Option<String>,
}

pub fn test(opts: &Options) -> Result<()> {
    install()?;
    build_ebpf::build()?;
    // The integration tests run the daemon binary, and install it from its package.
    status(cargo().current_dir(root()).args(["build", "--package", "balancer"]))?;
    let deb = package::package(&package::Options { debug: true })?;
    let filter: Vec<&str> = opts.filter.as_deref().into_iter().collect();
    let mut total = Tally::default();
    let unit = run_counted(
        cargo().current_dir(root()).args(["test", "--workspace", "--exclude", "balancer-tests", "--"]).args(&filter),
        &mut total,
    );
    if let Err(e) = unit {
        total.print();
        return Err(e);
    }
    if !is_root() {
        eprintln!(
            "\n{bar}\n*** SKIPPED: the integration tests (BPF_PROG_TEST_RUN packet tests, network\n\
             *** namespaces) need root. Run `sudo -E cargo xtask test` to run them.\n{bar}\n",
            bar = "*".repeat(78)
        );
        total.print();
        return Ok(());
    }
    remove_stale_namespaces();
    let integration = run_counted(
        cargo()
            .current_dir(root())
            .env("BALANCER_DEB", &deb)
            .args(["test", "--package", "balancer-tests", "--"])
            .args(&filter),
        &mut total,
    );
    total.print();
    integration
}

/// Tests passed and failed over every test binary.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn print(&self) {
        println!("\nxtask test: {} passed, {} failed", self.passed, self.failed);
    }
}

/// Runs `cargo test`, echoing its output and adding up its `test result:` lines.
fn run_counted(cmd: &mut std::process::Command, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(word), Some(n)) = (w.next(), w.next()) else { continue };
                let Ok(n) = n.parse::<u64>() else { continue };
                match word {
                    "passed" => tally.passed += n,
                    "failed" => tally.failed += n,
                    _ => {}
                }
            }
        }
    }
    let st = child.wait()?;
    anyhow::ensure!(st.success(), "{cmd:?} failed ({st})");
    Ok(())
}

/// Deletes test namespaces (`bt-<tag>-<pid>-<n>`) whose test process no longer exists: a test
/// killed outright cannot run its cleanup.
fn remove_stale_namespaces() {
    let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("bt-") else { continue };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::process::Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
