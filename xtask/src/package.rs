//! `cargo xtask package`: the Debian package, staged from the build and the repository's files
//! and assembled by `dpkg-deb` (no cargo-deb to install: the tree is small and fixed).
//!
//! Contents: `/usr/sbin/balancer`, the systemd unit, `/etc/balancer/balancer.toml` (the example,
//! a conffile), man pages for every subcommand and `balancer.toml(5)`, bash/zsh/fish
//! completions, README, changelog and copyright. The scripts only reload systemd (and stop the
//! service on removal); nothing starts until the operator has edited the config.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build_ebpf,
    toolchain::{cargo, root, status},
};

/// Options of `cargo xtask package`.
#[derive(clap::Args)]
pub struct Options {
    /// Package the debug build (what the tests install) instead of a release build.
    #[arg(long)]
    pub debug: bool,
}

/// The package's name.
const NAME: &str = "balancer";

/// Builds the package into `target/debian/` and returns its path.
pub fn package(opts: &Options) -> Result<PathBuf> {
    build_ebpf::build()?;
    let profile = if opts.debug { "debug" } else { "release" };
    let mut build = cargo();
    build.current_dir(root()).args(["build", "--package", NAME]);
    if !opts.debug {
        build.arg("--release");
    }
    status(&mut build)?;
    let bin = root().join("target").join(profile).join(NAME);
    let version = version_of(&bin)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out_dir = root().join("target/debian");
    let stage = out_dir.join(format!("{NAME}-{profile}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    stage_files(&stage, &bin)?;
    write_control(&stage, &version, &arch, &bin)?;
    let deb = out_dir.join(format!("{NAME}_{version}_{arch}.deb"));
    // The debug build is for the tests: compress it fast.
    let compress: &[&str] = if opts.debug { &["-Zgzip", "-z1"] } else { &["-Zxz"] };
    status(Command::new("dpkg-deb").arg("--root-owner-group").args(compress).arg("--build").arg(&stage).arg(&deb))?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// The version the binary reports (`balancer 0.1.0`), so the package cannot disagree with it.
fn version_of(bin: &Path) -> Result<String> {
    let text = output(Command::new(bin).arg("--version"))?;
    text.strip_prefix("balancer ").map(str::to_owned).with_context(|| format!("unexpected --version output {text:?}"))
}

fn stage_files(stage: &Path, bin: &Path) -> Result<()> {
    let repo = root();
    let sbin = stage.join("usr/sbin");
    fs::create_dir_all(&sbin)?;
    status(Command::new("strip").arg("--strip-debug").arg("-o").arg(sbin.join(NAME)).arg(bin))?;
    install(&repo.join("packaging/balancer.service"), &stage.join("usr/lib/systemd/system/balancer.service"))?;
    // BIRD includes the announce files; they exist from boot on, before the daemon writes them.
    write(
        &stage.join("usr/lib/tmpfiles.d/balancer.conf"),
        b"# The routes files BIRD includes (`balancer bgp config`): empty until the daemon writes them.\n\
          d /run/balancer 0755 root root -\n\
          f /run/balancer/bird-vips4.conf 0644 root root -\n\
          f /run/balancer/bird-vips6.conf 0644 root root -\n",
    )?;
    install(&repo.join("examples/balancer.toml"), &stage.join("etc/balancer/balancer.toml"))?;
    let doc = stage.join("usr/share/doc").join(NAME);
    install(&repo.join("README.md"), &doc.join("README.md"))?;
    install(&repo.join("packaging/grafana-dashboard.json"), &doc.join("grafana-dashboard.json"))?;
    gzip_into(&fs::read(repo.join("CHANGELOG.md"))?, &doc.join("changelog.gz"))?;
    fs::write(doc.join("copyright"), copyright(&repo)?)?;

    // Man pages: what `balancer man` writes, section by file name, compressed as Debian ships them.
    let pages = stage.join("man-pages");
    fs::create_dir_all(&pages)?;
    status(Command::new(bin).arg("man").arg("--dir").arg(&pages).stdout(std::process::Stdio::null()))?;
    for entry in fs::read_dir(&pages)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).context("a man page's name")?.to_owned();
        let section = name.rsplit('.').next().context("a man page's section")?;
        gzip_into(&fs::read(&path)?, &stage.join(format!("usr/share/man/man{section}/{name}.gz")))?;
    }
    fs::remove_dir_all(&pages)?;

    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/balancer"),
        ("zsh", "usr/share/zsh/vendor-completions/_balancer"),
        ("fish", "usr/share/fish/vendor_completions.d/balancer.fish"),
    ] {
        let script = Command::new(bin).args(["completions", shell]).output()?;
        if !script.status.success() {
            bail!("balancer completions {shell} failed");
        }
        write(&stage.join(path), &script.stdout)?;
    }
    Ok(())
}

fn write_control(stage: &Path, version: &str, arch: &str, bin: &Path) -> Result<()> {
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = disk_usage_kib(stage)?;
    let control = format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: balancer developers <balancer@localhost>\n\
         Section: net\n\
         Priority: optional\n\
         Installed-Size: {size_kib}\n\
         Depends: {depends}\n\
         Recommends: iproute2, ethtool\n\
         Suggests: bird2\n\
         Description: XDP L4 load balancer and L7 session-affinity proxy\n \
         An XDP program steers L4 connections with weighted Maglev hashing and a flow\n \
         table, forwarding by DSR or IPIP; the daemon loads it, checks backend health\n \
         and terminates HTTP (with TLS) on VIPs that need JSESSIONID session affinity.\n",
        depends = depends(bin)?,
    );
    fs::write(debian.join("control"), control)?;
    fs::write(debian.join("conffiles"), "/etc/balancer/balancer.toml\n")?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = debian.join(name);
        fs::write(&path, text)?;
        set_mode(&path, 0o755)?;
    }
    Ok(())
}

/// After install or upgrade: systemd re-reads the unit. Not when installing into another root.
const POSTINST: &str = "#!/bin/sh\nset -e\n\
if [ \"$1\" = configure ] && [ -d /run/systemd/system ] && [ -z \"${DPKG_ROOT:-}\" ]; then\n\
    systemctl --system daemon-reload >/dev/null || true\n\
fi\n";

/// Before removal: stop the daemon. Its XDP program stays attached and balancing with the last
/// tables; `balancer teardown` (before removing) detaches it.
const PRERM: &str = "#!/bin/sh\nset -e\n\
if [ \"$1\" = remove ] && [ -d /run/systemd/system ] && [ -z \"${DPKG_ROOT:-}\" ]; then\n\
    systemctl stop balancer.service >/dev/null 2>&1 || true\n\
fi\n";

/// After removal: systemd forgets the unit; a purge also removes the daemon's state file.
const POSTRM: &str = "#!/bin/sh\nset -e\n\
if [ \"$1\" = purge ]; then\n\
    rm -rf \"${DPKG_ROOT:-}/var/lib/balancer\"\n\
fi\n\
if [ -d /run/systemd/system ] && [ -z \"${DPKG_ROOT:-}\" ]; then\n\
    systemctl --system daemon-reload >/dev/null || true\n\
fi\n";

/// The libraries the binary links, with the newest glibc symbol version it uses.
fn depends(bin: &Path) -> Result<String> {
    let symbols = output(Command::new("objdump").arg("-T").arg(bin))?;
    let newest = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(str::parse::<u32>);
            Some((parts.next()?.ok()?, parts.next().and_then(Result::ok).unwrap_or(0)))
        })
        .max()
        .context("no glibc symbol versions in the binary")?;
    Ok(format!("libc6 (>= {}.{}), libgcc-s1", newest.0, newest.1))
}

/// Debian's machine-readable copyright file, with both license texts.
fn copyright(repo: &Path) -> Result<String> {
    let indent = |text: String| -> String {
        text.lines().map(|l| if l.trim().is_empty() { " .\n".to_owned() } else { format!(" {l}\n") }).collect()
    };
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {NAME}\n\n\
         Files: *\n\
         Copyright: balancer developers\n\
         License: MIT or Apache-2.0\n\n\
         License: MIT\n{}\n\
         License: Apache-2.0\n{}",
        indent(fs::read_to_string(repo.join("LICENSE-MIT"))?),
        indent(fs::read_to_string(repo.join("LICENSE-APACHE"))?),
    ))
}

fn install(from: &Path, to: &Path) -> Result<()> {
    write(to, &fs::read(from).with_context(|| format!("reading {}", from.display()))?)
}

fn write(to: &Path, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(to.parent().context("a parent directory")?)?;
    fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, 0o644)
}

/// `gzip -9n` (no name or time stamp: the same input gives the same bytes), from a file so no
/// pipe fills up.
fn gzip_into(bytes: &[u8], to: &Path) -> Result<()> {
    let plain = to.with_extension("plain");
    write(&plain, bytes)?;
    let out = Command::new("gzip").args(["-9n", "-c"]).stdin(fs::File::open(&plain)?).output()?;
    fs::remove_file(&plain)?;
    if !out.status.success() {
        bail!("gzip failed on {}", to.display());
    }
    write(to, &out.stdout)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

fn disk_usage_kib(dir: &Path) -> Result<u64> {
    let text = output(Command::new("du").args(["-sk", "--apparent-size"]).arg(dir))?;
    text.split_whitespace().next().and_then(|n| n.parse().ok()).context("du's output")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
