//! Harnesses shared by the integration tests.
//!
//! - [`packet`]: builds Ethernet/VLAN/IPv4/IPv6/TCP/UDP frames with correct checksums.
//! - [`xdp`]: runs the loaded XDP program on a frame through `BPF_PROG_TEST_RUN` and returns the
//!   verdict and the bytes that came out.
//! - [`fuzz`]: generated and mutated frames through the program, checked against the design.
//! - [`netns`]: network namespaces joined by veths and a bridge, torn down on drop (even when the
//!   test panics), and processes started inside them, stopped by PID.
//!
//! Tests that need root call [`require_root!`] first, which skips the test loudly otherwise.

pub mod backend;
pub mod bird;
pub mod browser;
pub mod cluster;
pub mod daemon;
pub mod fixture;
pub mod fuzz;
pub mod l7;
pub mod netns;
pub mod packet;
pub mod soak;
pub mod tls;
pub mod xdp;

/// Whether this process can do what the integration tests need (load BPF, make namespaces).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns from the test with a loud message when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "\n*** SKIPPED {}: needs root (BPF and network namespaces); run `sudo cargo xtask test` ***\n",
                module_path!()
            );
            return;
        }
    };
}
