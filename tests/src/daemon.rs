//! Running the real `balancer` binary in a test namespace, with a config and a bpffs pin
//! directory of its own that are removed afterwards.

use std::{path::PathBuf, time::Duration};

use crate::netns::{Netns, Proc};

/// Path of the `balancer` binary built next to the test executables.
///
/// # Panics
/// When it has not been built (`cargo xtask test` builds it first).
pub fn balancer_bin() -> PathBuf {
    // Test executables sit in target/<profile>/deps, other binaries in target/<profile>.
    let exe = std::env::current_exe().expect("executable path");
    let dirs: Vec<_> = exe.ancestors().skip(1).take(2).collect();
    dirs.iter().map(|d| d.join("balancer")).find(|b| b.is_file()).unwrap_or_else(|| {
        panic!("no `balancer` binary in {dirs:?}: run `cargo build -p balancer` (cargo xtask test does)")
    })
}

/// A bpffs directory for one test's pinned maps, removed on drop.
#[derive(Debug)]
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/<name>`, which must not exist yet.
    pub fn new(name: &str) -> Self {
        let p = PathBuf::from("/sys/fs/bpf").join(name);
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The daemon leaves its lock file in place (see `balancer::lock`); the test owns it.
        let _ = std::fs::remove_file(balancer::lock::path_for(&self.0));
    }
}

/// A running daemon with its config file and pin directory.
#[derive(Debug)]
pub struct Daemon {
    /// The process; dropping it stops the daemon.
    pub proc: Proc,
    /// Its pinned maps.
    pub pins: PinDir,
    /// Its config file.
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(state_file(&self.socket));
    }
}

/// The state file the harness gives the daemon of control socket `socket`.
fn state_file(socket: &std::path::Path) -> PathBuf {
    socket.with_extension("state.json")
}

impl Daemon {
    /// Writes `config` (with `pin_dir` set to a fresh directory) and starts `balancer run` in
    /// `ns` with `RUST_LOG=rust_log`; returns once it logs that it is running.
    ///
    /// # Panics
    /// When it exits first, with its log.
    pub fn start(ns: &Netns, config: &str, rust_log: &str) -> Self {
        Self::try_start(ns, config, rust_log).unwrap_or_else(|log| panic!("the daemon exited:\n{log}"))
    }

    /// As `start`, but returns the daemon's log when it exits instead of running.
    pub fn try_start(ns: &Netns, config: &str, rust_log: &str) -> Result<Self, String> {
        let pins = PinDir::new(ns.name());
        let path = std::env::temp_dir().join(format!("{}.toml", ns.name()));
        let socket = std::env::temp_dir().join(format!("{}.sock", ns.name()));
        std::fs::write(&path, format!("{}{config}", Self::header(&pins.0, &socket))).expect("write config");
        let proc = Self::spawn(ns, &path, rust_log)?;
        Ok(Self { proc, pins, config: path, socket })
    }

    /// The lines the harness puts before a test's configuration: its own pin directory and
    /// control socket.
    fn header(pins: &std::path::Path, socket: &std::path::Path) -> String {
        format!(
            "pin_dir = \"{}\"\ncontrol_socket = \"{}\"\nstate_file = \"{}\"\n",
            pins.display(),
            socket.display(),
            state_file(socket).display()
        )
    }

    /// Replaces the configuration file (keeping the harness's header); the daemon reads it on
    /// SIGHUP or `balancer reload`.
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, format!("{}{config}", Self::header(&self.pins.0, &self.socket)))
            .expect("write config");
    }

    /// `balancer --socket <this daemon's> <args>` in `ns`.
    pub fn ctl(&self, ns: &Netns, args: &[&str]) -> std::process::Output {
        let mut argv = vec!["--socket", self.socket.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        Self::cli(ns, &argv)
    }

    /// Starts `balancer run` again with the same configuration and pin directory (after the
    /// previous process stopped or was killed); returns once it is running.
    ///
    /// # Panics
    /// When it exits first, with its log.
    pub fn restart(&mut self, ns: &Netns, rust_log: &str) {
        self.proc = Self::spawn(ns, &self.config, rust_log).unwrap_or_else(|log| panic!("the daemon exited:\n{log}"));
    }

    /// Starts `balancer run --takeover` with the same configuration while this daemon runs;
    /// returns the old process (which exits once its in-flight requests are done) after the new
    /// one logs that it is running.
    ///
    /// # Panics
    /// When the new one exits first, with its log.
    pub fn takeover(&mut self, ns: &Netns, rust_log: &str) -> Proc {
        let new = Self::spawn_with(ns, &self.config, rust_log, &["--takeover"])
            .unwrap_or_else(|log| panic!("the new daemon exited:\n{log}"));
        std::mem::replace(&mut self.proc, new)
    }

    fn spawn(ns: &Netns, path: &std::path::Path, rust_log: &str) -> Result<Proc, String> {
        Self::spawn_with(ns, path, rust_log, &[])
    }

    /// As `start`, with `balancer run` started through `wrapper` (`setpriv …`, say).
    pub fn start_wrapped(ns: &Netns, config: &str, wrapper: &[&str]) -> Self {
        Self::start_custom(ns, config, wrapper, &[])
    }

    /// As `start`, with `args` after `balancer run --config FILE`.
    pub fn start_with_args(ns: &Netns, config: &str, args: &[&str]) -> Self {
        Self::start_custom(ns, config, &[], args)
    }

    /// Writes `config` (with the harness's header) to `path` and starts `argv`, a complete
    /// `balancer run` command line (an installed binary's, as its unit runs it); returns once it
    /// reports READY=1.
    ///
    /// # Panics
    /// When it exits first, with its log.
    pub fn start_argv(ns: &Netns, argv: &[&str], path: &std::path::Path, config: &str) -> Self {
        let pins = PinDir::new(ns.name());
        let socket = std::env::temp_dir().join(format!("{}.sock", ns.name()));
        std::fs::write(path, format!("{}{config}", Self::header(&pins.0, &socket))).expect("write config");
        let proc = Self::spawn_argv(ns, argv, "info").unwrap_or_else(|log| panic!("the daemon exited:\n{log}"));
        Self { proc, pins, config: path.to_owned(), socket }
    }

    fn start_custom(ns: &Netns, config: &str, wrapper: &[&str], args: &[&str]) -> Self {
        let pins = PinDir::new(ns.name());
        let path = std::env::temp_dir().join(format!("{}.toml", ns.name()));
        let socket = std::env::temp_dir().join(format!("{}.sock", ns.name()));
        std::fs::write(&path, format!("{}{config}", Self::header(&pins.0, &socket))).expect("write config");
        let proc = Self::spawn_full(ns, &path, "info", wrapper, args)
            .unwrap_or_else(|log| panic!("the daemon exited:\n{log}"));
        Self { proc, pins, config: path, socket }
    }

    fn spawn_with(ns: &Netns, path: &std::path::Path, rust_log: &str, extra: &[&str]) -> Result<Proc, String> {
        Self::spawn_full(ns, path, rust_log, &[], extra)
    }

    fn spawn_full(
        ns: &Netns,
        path: &std::path::Path,
        rust_log: &str,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Result<Proc, String> {
        let bin = balancer_bin();
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend_from_slice(&[bin.to_str().unwrap(), "run", "--config", path.to_str().unwrap()]);
        argv.extend_from_slice(extra);
        Self::spawn_argv(ns, &argv, rust_log)
    }

    fn spawn_argv(ns: &Netns, argv: &[&str], rust_log: &str) -> Result<Proc, String> {
        let mut cmd = ns.command(argv);
        cmd.env("RUST_LOG", rust_log);
        // Readiness as systemd learns it: READY=1 on the notify socket (Type=notify).
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket_path = std::env::temp_dir().join(format!("{}-{n}.notify", ns.name()));
        let _ = std::fs::remove_file(&socket_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        notify.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        cmd.env("NOTIFY_SOCKET", &socket_path);
        let mut proc = Proc::spawn(cmd, &format!("{}-balancer", ns.name()));
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        let ready = loop {
            if let Ok(len) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..len]).lines().any(|l| l == "READY=1")
            {
                break Ok(proc);
            }
            if proc.try_wait().is_some() {
                break Err(proc.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the daemon did not report READY=1 in 20 s:\n{}",
                proc.log()
            );
        };
        let _ = std::fs::remove_file(&socket_path);
        ready
    }

    /// `balancer <args>` as a one-shot command in `ns` (stats, check, …).
    pub fn cli(ns: &Netns, args: &[&str]) -> std::process::Output {
        let bin = balancer_bin();
        let mut argv = vec![bin.to_str().unwrap()];
        argv.extend_from_slice(args);
        ns.output(&argv)
    }

    /// `balancer stats --json` for this daemon, parsed.
    pub fn stats(&self, ns: &Netns) -> serde_json::Value {
        let out = Self::cli(ns, &["stats", "--json", "--interval", "0", "--pin-dir", self.pins.0.to_str().unwrap()]);
        assert!(out.status.success(), "balancer stats failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats --json is JSON");
        v["totals"].clone()
    }
}
