//! Where things are, and the installer.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root, found when xtask runs, not when it was built: a copied tree must build,
/// test and bench its own sources. `cargo run` (which `cargo xtask` is) sets
/// `CARGO_MANIFEST_DIR` to xtask's directory in this tree; run any other way, the root is the
/// nearest directory above the current one whose `Cargo.toml` has a `[workspace]`.
pub fn root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
            && let Some(parent) = Path::new(&dir).parent()
            && is_workspace(parent)
        {
            return parent.to_owned();
        }
        let cwd = std::env::current_dir().expect("the current directory is readable");
        cwd.ancestors().find(|d| is_workspace(d)).map_or(cwd.clone(), Path::to_owned)
    })
    .clone()
}

fn is_workspace(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        && dir.join("xtask").is_dir()
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
        if k.starts_with("CARGO")
            || k.starts_with("RUSTUP")
            || k.starts_with("RUSTC")
            || k == "RUSTDOC"
            || k == "RUSTFLAGS"
        {
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
