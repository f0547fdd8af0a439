//! `cargo xtask lint`: the gate every commit passes, and `.ci/run` runs before the tests.
//!
//! - `cargo fmt --check` for the workspace and the eBPF crate (one `rustfmt.toml`);
//! - clippy with `-D warnings`: the host crates with rustup's toolchain, the eBPF crate with
//!   Debian's (the only one with `core` for the BPF target);
//! - `cargo doc` with `-D warnings`;
//! - `cargo deny`: licenses, duplicate versions, sources, and advisories when the advisory
//!   database can be fetched (it lives on GitHub, which some build machines cannot reach).

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{
    build_ebpf,
    toolchain::{cargo, install, root, status},
};

pub fn lint() -> Result<()> {
    install()?;
    let root = root();
    status(cargo().current_dir(&root).args(["fmt", "--all", "--check"]))
        .context("formatting (run `cargo fmt --all`)")?;
    status(cargo().current_dir(root.join("balancer-ebpf")).args(["fmt", "--check"]))
        .context("formatting the eBPF crate (run `cargo fmt` in balancer-ebpf)")?;
    // The daemon embeds the XDP object, so clippy on the host crates needs it built.
    build_ebpf::build()?;
    status(&mut build_ebpf::debian_cargo(&["clippy", "--release", "--", "-D", "warnings"])?)
        .context("clippy, eBPF crate")?;
    status(cargo().current_dir(&root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy, host crates")?;
    status(cargo().current_dir(&root).env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--workspace", "--no-deps"]))
        .context("cargo doc")?;
    deny(&root)
}

fn deny(root: &std::path::Path) -> Result<()> {
    // The eBPF crate has its own lock file; both trees answer to the one deny.toml.
    let config = root.join("deny.toml");
    let manifests = [root.join("Cargo.toml"), root.join("balancer-ebpf/Cargo.toml")];
    let deny = |manifest: &std::path::Path| {
        let mut cmd = Command::new("cargo-deny");
        cmd.current_dir(root).arg("--config").arg(&config).arg("--manifest-path").arg(manifest);
        cmd.args(["--all-features", "check"]);
        cmd
    };
    for m in &manifests {
        status(deny(m).args(["licenses", "bans", "sources"]))
            .with_context(|| format!("cargo deny, {}", m.display()))?;
    }
    let reachable = Command::new("git")
        .args(["ls-remote", "--exit-code", "https://github.com/rustsec/advisory-db", "HEAD"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        for m in &manifests {
            status(deny(m).arg("advisories")).with_context(|| format!("cargo deny advisories, {}", m.display()))?;
        }
        Ok(())
    } else {
        eprintln!(
            "\n*** SKIPPED: cargo deny advisories: the RustSec database (github.com/rustsec/advisory-db)\n\
             *** is not reachable from this machine. Licenses, bans and sources were checked.\n"
        );
        Ok(())
    }
}
