//! `cargo xtask demo`: installs what is missing, builds, then runs the demo program
//! (`tests/src/bin/demo.rs`), which builds the namespaces and drives the real daemon.

use anyhow::{Result, bail};

use crate::{
    build_ebpf,
    toolchain::{cargo, install, is_root, root, status},
};

pub fn demo() -> Result<()> {
    if !is_root() {
        bail!("the demo makes network namespaces and loads XDP programs: run `sudo -E cargo xtask demo`");
    }
    install()?;
    build_ebpf::build()?;
    status(cargo().current_dir(root()).args(["build", "--package", "balancer"]))?;
    status(cargo().current_dir(root()).args(["run", "--quiet", "--package", "balancer-tests", "--bin", "demo"]))
}
