//! Where things are, and the installer.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

/// Runs `scripts/install-toolchain.sh` (a no-op when everything is installed).
pub fn install() -> Result<()> {
    install_with(&[])
}

/// `install`, with the script's options (`--bench`).
pub fn install_with(args: &[&str]) -> Result<()> {
    let script = root().join("scripts/install-toolchain.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).args(args);
    clear_cargo_env(&mut cmd);
    status(&mut cmd).context("installing the toolchain")
}

/// Removes the variables the outer cargo and rustup set, so a nested cargo picks its own
/// toolchain (as aya's template xtask does).
pub fn clear_cargo_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO") || k.starts_with("RUSTUP") || k.starts_with("RUSTC") || k == "RUSTDOC" || k == "RUSTFLAGS" {
            cmd.env_remove(&*k);
        }
    }
}

/// Runs `cmd`, failing with its command line when it fails.
pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// `cargo` of the workspace's (rustup) toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
