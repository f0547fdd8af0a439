//! `cargo xtask run`: build, then run the daemon (as root).

use anyhow::Result;

use crate::{
    build_ebpf,
    toolchain::{cargo, root, status},
};

/// Options of `cargo xtask run`.
#[derive(clap::Args)]
pub struct Options {
    /// Arguments for `balancer run`, e.g. `-- --config examples/balancer.toml`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    build_ebpf::build()?;
    status(
        cargo().current_dir(root()).args(["run", "--release", "--package", "balancer", "--", "run"]).args(&opts.args),
    )
}
