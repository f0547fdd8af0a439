//! `cargo xtask`: the project's build and test entry points.
//!
//! - `build-ebpf`: builds the XDP object with Debian's toolchain.
//! - `lint`: formatting, clippy, docs and `cargo deny`: the gate before every commit.
//! - `test`: installs what is missing, builds, runs unit tests, then the root-only integration
//!   tests.
//! - `demo`: installs what is missing, builds, and balances HTTP in network namespaces.
//! - `soak`: the long runs of the hostile-input suites (1,000,000 fuzzed frames per seed).
//! - `package`: the Debian package (`target/debian/balancer_VERSION_ARCH.deb`).
//! - `bench`: runs the benchmarks and writes BENCHMARKS.md.
//! - `run`: builds and runs the daemon with a config (root).

mod bench;
mod build_ebpf;
mod demo;
mod lint;
mod package;
mod run;
mod soak;
mod test;
mod toolchain;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "balancer's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP object (balancer-ebpf) with Debian's cargo and bpf-linker.
    BuildEbpf,
    /// fmt --check, clippy -D warnings (host and eBPF), doc without warnings, cargo deny.
    Lint,
    /// Install what is missing, build everything, run every test.
    Test(test::Options),
    /// Install what is missing, build, and show the balancer at work in network namespaces.
    Demo,
    /// Build the Debian package into target/debian/.
    Package(package::Options),
    /// Run the benchmarks (root) and write BENCHMARKS.md.
    Bench,
    /// The long hostile-input runs (root): 1,000,000 fuzzed frames per seed through the XDP program.
    Soak,
    /// Build and run the daemon: `cargo xtask run -- --config FILE`.
    Run(run::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf => build_ebpf::build(),
        Command::Lint => lint::lint(),
        Command::Test(opts) => test::test(&opts),
        Command::Demo => demo::demo(),
        Command::Package(opts) => package::package(&opts).map(drop),
        Command::Bench => bench::bench(),
        Command::Soak => soak::soak(),
        Command::Run(opts) => run::run(&opts),
    }
}
