//! `cargo xtask build-ebpf`: the XDP object, built reproducibly with Debian's Rust.
//!
//! Debian's rustc-web is built on the system LLVM and ships a prebuilt `core` for
//! `bpfel-unknown-none`, so no nightly and no `-Z build-std` are needed; `RUSTC_BOOTSTRAP=1`
//! lets it accept the unstable flags the BPF target uses.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::toolchain::{clear_cargo_env, root, status};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";

/// Path of the built object (what `balancer/build.rs` embeds).
pub fn object() -> PathBuf {
    root().join("balancer-ebpf/target/bpfel-unknown-none/release/balancer-ebpf")
}

/// Checks the toolchain, then builds the object.
pub fn build() -> Result<()> {
    status(&mut debian_cargo(&["build", "--release"])?)?;
    println!("XDP object: {}", object().display());
    Ok(())
}

/// Debian's cargo in the eBPF crate, for the BPF target, running `args` (`build`, `clippy`).
/// Debian's own tools come first on PATH, so `cargo clippy` finds Debian's clippy (built on the
/// same LLVM and `core`) rather than rustup's.
pub fn debian_cargo(args: &[&str]) -> Result<Command> {
    let fix = "run `sudo scripts/install-toolchain.sh` (or `cargo xtask test`, which runs it)";
    for (path, what) in [
        (DEBIAN_CARGO, "Debian's cargo (cargo-web)"),
        (DEBIAN_RUSTC, "Debian's rustc (rustc-web)"),
        (BPF_CORE, "core for bpfel-unknown-none (libstd-rust-web-dev-bpf)"),
    ] {
        if !std::path::Path::new(path).exists() {
            bail!("{what} is missing ({path} not found): {fix}");
        }
    }
    let linker = which("bpf-linker");
    let Some(linker) = linker else {
        bail!("bpf-linker is not on PATH (nor in ~/.cargo/bin): {fix}");
    };
    let mut cmd = Command::new(DEBIAN_CARGO);
    let (sub, rest) = args.split_first().expect("a cargo subcommand");
    cmd.current_dir(root().join("balancer-ebpf")).arg(sub).args(["--target", "bpfel-unknown-none"]).args(rest);
    clear_cargo_env(&mut cmd);
    let path = format!("/usr/bin:{}:{}", linker.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path).env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    Ok(cmd)
}

fn which(bin: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}
