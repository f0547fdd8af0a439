//! The Debian package (issue 15): `cargo xtask package` builds it (`cargo xtask test` builds the
//! debug one first); this installs it with `dpkg` into a root of its own with its own package
//! database, starts the daemon as the installed unit's command lines do, balances through it,
//! then removes and purges it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::Lan,
    require_root,
};

const VIP: &str = "198.51.100.10";

/// The package to test: `BALANCER_DEB`, else the newest in `target/debian/`.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("BALANCER_DEB") {
        return p.into();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no package in {}: run `cargo xtask package --debug` first", dir.display()))
}

/// An installation root with an empty package database, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bt-pkg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let admin = dir.join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(sub)).unwrap();
        }
        std::fs::write(admin.join("status"), "").unwrap();
        Self(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    /// `dpkg` on this root; the scripts run outside it (it has no shell), with `DPKG_ROOT` set.
    fn dpkg(&self, args: &[&str]) -> Output {
        Command::new("dpkg")
            .arg(format!("--instdir={}", self.0.display()))
            .arg(format!("--admindir={}", self.path("var/lib/dpkg").display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .output()
            .expect("dpkg runs")
    }

    fn status_of_package(&self) -> String {
        let out = self.dpkg(&["--status", "balancer"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("Status: ")).unwrap_or("").to_owned()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The unit's `KEY=` command line with the installed paths rewritten into `root`.
fn unit_command(unit: &str, key: &str, root: &Root) -> Vec<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in the unit"));
    line.split_whitespace()
        .map(|w| {
            if w.starts_with("/usr/sbin/") || w.starts_with("/etc/balancer/") {
                root.path(w).display().to_string()
            } else {
                w.to_owned()
            }
        })
        .collect()
}

#[test]
fn the_debian_package_installs_runs_the_unit_s_commands_and_purges_cleanly() {
    require_root!();
    let deb = deb();
    let root = Root::new();
    let fields =
        Command::new("dpkg-deb").arg("--field").arg(&deb).args(["Package", "Version", "Depends"]).output().unwrap();
    let fields = text(&fields);
    assert!(fields.contains("Package: balancer") && fields.contains("Depends: libc6 (>= "), "{fields}");

    let install = root.dpkg(&["--install", deb.to_str().unwrap()]);
    assert!(install.status.success(), "dpkg --install failed:\n{}", text(&install));
    assert_eq!(root.status_of_package(), "install ok installed");
    let conffiles = text(&root.dpkg(&["--status", "balancer"]));
    assert!(conffiles.contains(" /etc/balancer/balancer.toml "), "the config is a conffile:\n{conffiles}");

    // What an operator reaches for: the binary (its version is the package's), the pages, the
    // completions, the unit.
    let bin = root.path("/usr/sbin/balancer");
    let version = text(&Command::new(&bin).arg("--version").output().unwrap());
    assert!(
        fields.contains(&format!("Version: {}", version.trim().trim_start_matches("balancer "))),
        "{version} vs {fields}"
    );
    for page in ["man1/balancer.1.gz", "man1/balancer-run.1.gz", "man1/balancer-status.1.gz", "man5/balancer.toml.5.gz"]
    {
        assert!(root.path(&format!("/usr/share/man/{page}")).is_file(), "no {page}");
    }
    let bash = std::fs::read_to_string(root.path("/usr/share/bash-completion/completions/balancer")).unwrap();
    assert!(bash.contains("complete -F _balancer"), "bash completion");
    let unit = std::fs::read_to_string(root.path("/usr/lib/systemd/system/balancer.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/balancer run --config /etc/balancer/balancer.toml"), "{unit}");

    // The shipped example names hosts this machine cannot reach: the unit's `ExecStartPre`
    // refuses it with the configuration exit code, naming the file, and nothing starts.
    let check = unit_command(&unit, "ExecStartPre=", &root);
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let lb = &lan.hosts[1].ns;
    let argv: Vec<&str> = check.iter().map(String::as_str).collect();
    let refused = lb.output(&argv);
    assert_eq!(refused.status.code(), Some(78), "{}", text(&refused));
    assert!(text(&refused).contains("etc/balancer/balancer.toml"), "{}", text(&refused));

    // The operator's edit, then the unit's two commands as systemd runs them.
    let vip = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (2..4).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let lb = &lan.hosts[1].ns;
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
    );
    let conf = root.path("/etc/balancer/balancer.toml");
    std::fs::write(&conf, &config).unwrap();
    let checked = lb.output(&argv);
    assert!(checked.status.success(), "ExecStartPre refused the edited config:\n{}", text(&checked));
    let start = unit_command(&unit, "ExecStart=", &root);
    let daemon = Daemon::start_argv(lb, &start.iter().map(String::as_str).collect::<Vec<_>>(), &conf, &config);
    let status = lb.output(&[bin.to_str().unwrap(), "--socket", daemon.socket.to_str().unwrap(), "status"]);
    assert!(status.status.success() && text(&status).contains(VIP), "{}", text(&status));
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let served = lan.hosts[0]
        .ns
        .in_thread(|| (0..10).filter(|_| HttpConn::connect(addr).and_then(|mut c| c.get()).is_ok()).count());
    assert_eq!(served, 10, "requests through the installed daemon");
    drop(daemon);

    // Remove keeps the edited conffile; purge takes it.
    let remove = root.dpkg(&["--remove", "balancer"]);
    assert!(remove.status.success(), "{}", text(&remove));
    assert!(!bin.exists() && conf.is_file(), "remove takes the binary and keeps the edited config");
    assert_eq!(root.status_of_package(), "deinstall ok config-files");
    let purge = root.dpkg(&["--purge", "balancer"]);
    assert!(purge.status.success(), "{}", text(&purge));
    assert!(!conf.exists() && !root.path("/usr/lib/systemd/system/balancer.service").exists());
    assert_eq!(root.status_of_package(), "", "purged: dpkg knows nothing of it");
}
