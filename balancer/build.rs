//! Embeds the XDP object built by `cargo xtask build-ebpf`, so the daemon is one file to install.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=BALANCER_EBPF_OBJECT");
    let path = match env::var_os("BALANCER_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../balancer-ebpf/target/bpfel-unknown-none/release/balancer-ebpf"),
    };
    assert!(
        path.is_file(),
        "the XDP object {} does not exist: run `cargo xtask build-ebpf` first \
         (or set BALANCER_EBPF_OBJECT to a built object)",
        path.display()
    );
    let path = path.canonicalize().unwrap();
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=BALANCER_EBPF_OBJECT_PATH={}", path.display());
}
