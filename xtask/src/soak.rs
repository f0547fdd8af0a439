//! `cargo xtask soak`: the long runs of the hostile-input suites, too long for every commit.
//!
//! - The XDP program against 1,000,000 generated and mutated frames per seed (three seeds),
//!   each outcome checked against the design (`tests/src/fuzz.rs`).
//! - The operations soak (`tests/src/soak.rs`) over three rounds of every operation, its table
//!   written to `target/soak-report.md`, and an idle flood of 9000 connections (or what the
//!   descriptor limit allows) with connected clients' p99, in `target/flood-report.txt`.

use anyhow::Result;

use crate::{
    build_ebpf,
    toolchain::{cargo, install, is_root, root, status},
};

/// Seeds of the long packet runs; `cargo xtask test` runs 100,000 frames of the first.
const SEEDS: [u64; 3] = [0x5eed_f00d, 0xdead_beef, 0x0123_4567];

pub fn soak() -> Result<()> {
    anyhow::ensure!(is_root(), "the soak loads BPF programs: run `sudo -E cargo xtask soak`");
    install()?;
    build_ebpf::build()?;
    for seed in SEEDS {
        status(
            cargo()
                .current_dir(root())
                .env("BALANCER_FUZZ_FRAMES", "1000000")
                .env("BALANCER_FUZZ_SEED", seed.to_string())
                .args(["test", "--release", "--package", "balancer-tests", "--test", "fuzz", "--", "--nocapture"]),
        )?;
    }
    let report = root().join("target/soak-report.md");
    status(
        cargo()
            .current_dir(root())
            .env("BALANCER_SOAK_ROUNDS", "3")
            .env("BALANCER_SOAK_REPORT", &report)
            .env("BALANCER_FLOOD", "9000")
            .env("BALANCER_FLOOD_REPORT", root().join("target/flood-report.txt"))
            .args(["test", "--package", "balancer-tests", "--test", "soak", "--", "--nocapture"]),
    )?;
    println!("operations soak: {}", report.display());
    Ok(())
}
