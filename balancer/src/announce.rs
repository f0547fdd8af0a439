//! Announcing this node's VIPs by BGP through BIRD, for several nodes behind an ECMP router.
//!
//! The daemon does not speak BGP: BIRD does, and is configured by the operator. The daemon
//! keeps one file of static routes per address family, holding exactly the VIP addresses it
//! can serve now, which BIRD `protocol static` blocks include (`bird_config` prints them), and
//! runs `birdc configure` when a file changes. Files rather than a kernel table: BIRD re-reads
//! them in one step with the rest of its configuration, the files say what is announced
//! without BIRD, and nothing is installed in this host's own routing table.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::config::Announce;

/// Why the announcement could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// A routes file could not be written.
    #[error("writing {}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `birdc configure` failed or BIRD refused the configuration.
    #[error("`{command}` failed: {output}")]
    Birdc {
        /// The command line.
        command: String,
        /// What it said (or why it did not run).
        output: String,
    },
}

/// How long `birdc configure` may take before it counts as failed.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// The routes file for `addrs` of one family: one `route ADDR/len blackhole;` per address
/// (BIRD's static protocol needs a destination; the kernel export filter in `bird_config`
/// keeps them out of this host's table).
pub fn routes_file(addrs: impl Iterator<Item = IpAddr>) -> String {
    let mut out = String::from("# Written by balancer: the VIPs this node can serve now.\n");
    for a in addrs {
        let len = if a.is_ipv4() { 32 } else { 128 };
        let _ = writeln!(out, "route {a}/{len} blackhole;");
    }
    out
}

/// The BIRD configuration that takes the routes: two static protocols including the files,
/// and what the BGP sessions' export filter should match.
pub fn bird_config(a: &Announce) -> String {
    format!(
        "# Include in bird.conf; the daemon rewrites the files and runs `birdc -s {sock} configure`.\n\
         protocol static balancer_vips4 {{\n    ipv4;\n    include \"{v4}\";\n}}\n\
         protocol static balancer_vips6 {{\n    ipv6;\n    include \"{v6}\";\n}}\n\
         # In each BGP session towards the ECMP router:\n\
         #     ipv4 {{ export where proto = \"balancer_vips4\"; import none; }};\n\
         #     ipv6 {{ export where proto = \"balancer_vips6\"; import none; }};\n\
         # and in `protocol kernel`, keep them out of this host's table:\n\
         #     export where proto != \"balancer_vips4\" && proto != \"balancer_vips6\";\n",
        sock = a.bird_socket.display(),
        v4 = a.file_v4.display(),
        v6 = a.file_v6.display(),
    )
}

/// Where a `birdc configure` on its thread sends how it went.
type Answer = std::sync::mpsc::Receiver<Result<(), AnnounceError>>;

/// The routes files as last written, and how the last `birdc configure` went.
///
/// `birdc configure` runs on a thread of its own: a BIRD that hangs holds that thread for up
/// to `BIRDC_TIMEOUT`, not the daemon's loop (health flips, control requests). The daemon
/// calls `poll` while one is running; a change that arrives meanwhile is written to the files
/// and configured again once the running one is done.
#[derive(Debug)]
pub struct Announcer {
    config: Announce,
    /// What BIRD was last told successfully (`None` until then, or after a failure).
    written: Option<BTreeSet<IpAddr>>,
    /// Why the last attempt failed; `None` after a success.
    pub error: Option<String>,
    /// The `birdc configure` running now, and the set it announces.
    running: Option<(Answer, BTreeSet<IpAddr>)>,
    /// A set asked for while one was running: configured after it.
    next: Option<BTreeSet<IpAddr>>,
}

impl Announcer {
    /// An announcer writing where `config` says. Files that do not exist yet are created
    /// empty, so a BIRD (re)started before the first announcement finds what it includes.
    pub fn new(config: Announce) -> Self {
        for file in [&config.file_v4, &config.file_v6] {
            if !file.exists() {
                let _ = write_atomic(file, &routes_file(std::iter::empty()));
            }
        }
        Self { config, written: None, error: None, running: None, next: None }
    }

    /// Whether the last attempt failed and nothing is running (the daemon tries again every
    /// few seconds).
    pub fn failed(&self) -> bool {
        self.error.is_some() && !self.busy()
    }

    /// Whether a `birdc configure` is running (`poll` finishes it).
    pub fn busy(&self) -> bool {
        self.running.is_some()
    }

    /// Whether it announces `settings` (the configuration changed the files or the socket).
    pub fn uses(&self, settings: &Announce) -> bool {
        self.config == *settings
    }

    /// What BIRD is being told, or was told last: the queued set, else the running one, else
    /// the last one it took.
    pub fn heading_for(&self) -> Option<&BTreeSet<IpAddr>> {
        self.next.as_ref().or(self.running.as_ref().map(|(_, set)| set)).or(self.written.as_ref())
    }

    /// What is announced (as last written successfully).
    pub fn announced(&self) -> Option<&BTreeSet<IpAddr>> {
        self.written.as_ref()
    }

    /// Makes BIRD announce exactly `addrs`: rewrites the files and starts `birdc configure`
    /// when they change (after the running one, if one is). Returns whether anything changed.
    ///
    /// # Errors
    /// When a file cannot be written; BIRD's answer comes to `poll`.
    pub fn announce(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<bool, AnnounceError> {
        if self.heading_for() == Some(addrs) {
            if !self.busy() {
                self.error = None;
            }
            return Ok(false);
        }
        if let Err(e) = self.write_files(addrs) {
            self.error = Some(e.to_string());
            // The files may hold either set now: the next call writes them again.
            self.written = None;
            return Err(e);
        }
        if self.busy() {
            self.next = Some(addrs.clone());
        } else {
            self.start(addrs.clone());
        }
        Ok(true)
    }

    /// Collects a finished `birdc configure`, and starts the one a change asked for meanwhile.
    /// Returns the result when one finished.
    pub fn poll(&mut self) -> Option<Result<(), AnnounceError>> {
        let (rx, _) = self.running.as_ref()?;
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(std::sync::mpsc::TryRecvError::Empty) => return None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(AnnounceError::Birdc {
                command: format!("{} configure", self.config.birdc.display()),
                output: "its thread ended without an answer".into(),
            }),
        };
        let (_, set) = self.running.take().expect("checked above");
        match &result {
            Ok(()) => {
                self.written = Some(set);
                self.error = None;
            }
            Err(e) => {
                self.written = None;
                self.error = Some(e.to_string());
            }
        }
        if let Some(next) = self.next.take() {
            self.start(next);
        }
        Some(result)
    }

    /// Waits up to `limit` for the running (and any queued) `birdc configure`, for a stop.
    pub fn finish(&mut self, limit: Duration) -> Option<Result<(), AnnounceError>> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while self.busy() && Instant::now() < deadline {
            match self.poll() {
                Some(r) => last = Some(r),
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        last
    }

    fn start(&mut self, addrs: BTreeSet<IpAddr>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (birdc, socket) = (self.config.birdc.clone(), self.config.bird_socket.clone());
        std::thread::spawn(move || {
            let _ = tx.send(configure(&birdc, &socket));
        });
        self.running = Some((rx, addrs));
    }

    fn write_files(&self, addrs: &BTreeSet<IpAddr>) -> Result<(), AnnounceError> {
        write_atomic(&self.config.file_v4, &routes_file(addrs.iter().copied().filter(IpAddr::is_ipv4)))?;
        write_atomic(&self.config.file_v6, &routes_file(addrs.iter().copied().filter(IpAddr::is_ipv6)))
    }
}

/// Writes `text` to `file` through a temporary file and a rename: BIRD never reads half a file.
fn write_atomic(file: &Path, text: &str) -> Result<(), AnnounceError> {
    let err = |source| AnnounceError::Write { file: file.to_owned(), source };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)
}

/// `birdc -s SOCKET configure`, within `BIRDC_TIMEOUT`; BIRD's answer must say it reconfigured.
fn configure(birdc: &Path, socket: &Path) -> Result<(), AnnounceError> {
    let command = format!("{} -s {} configure", birdc.display(), socket.display());
    let failed = |output: String| AnnounceError::Birdc { command: command.clone(), output };
    let mut child = Command::new(birdc)
        .arg("-s")
        .arg(socket)
        .arg("configure")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < BIRDC_TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no answer in {} s", BIRDC_TIMEOUT.as_secs())));
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // "Reconfigured", "Reconfiguration in progress", or nothing changed; anything else (a
    // parse error, no socket) is a failure.
    if out.status.success() && (text.contains("Reconfigur") || text.contains("econfiguration")) {
        Ok(())
    } else {
        Err(failed(text.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_each_address_once_as_a_host_route() {
        let v4: Vec<IpAddr> = vec!["198.51.100.10".parse().unwrap(), "198.51.100.11".parse().unwrap()];
        let text = routes_file(v4.into_iter());
        assert!(text.contains("route 198.51.100.10/32 blackhole;\nroute 198.51.100.11/32 blackhole;\n"), "{text}");
        assert_eq!(
            routes_file(std::iter::once("2001:db8::1".parse().unwrap())).lines().nth(1),
            Some("route 2001:db8::1/128 blackhole;")
        );
        assert_eq!(routes_file(std::iter::empty()).lines().count(), 1, "no VIP: no route");
    }

    #[test]
    fn a_failing_birdc_is_an_error_that_names_the_command_and_the_next_call_retries() {
        let dir = std::env::temp_dir().join(format!("announce-test-{}", std::process::id()));
        let config = Announce {
            file_v4: dir.join("v4.conf"),
            file_v6: dir.join("v6.conf"),
            bird_socket: dir.join("bird.ctl"),
            birdc: "/bin/false".into(),
        };
        let mut a = Announcer::new(config.clone());
        let addrs: BTreeSet<IpAddr> = ["198.51.100.10".parse().unwrap()].into();
        assert!(a.announce(&addrs).unwrap());
        let e = a.finish(Duration::from_secs(5)).unwrap().unwrap_err().to_string();
        assert!(e.contains("/bin/false -s") && e.contains("configure"), "{e}");
        assert!(std::fs::read_to_string(&config.file_v4).unwrap().contains("198.51.100.10/32"));
        assert!(a.announced().is_none() && a.failed());
        // The next call tries again.
        assert!(a.announce(&addrs).unwrap() && a.busy());
        let mut ok = Announcer::new(Announce { birdc: "/bin/echo".into(), ..config });
        // `echo` prints its arguments, not BIRD's answer: still refused.
        ok.announce(&addrs).unwrap();
        assert!(ok.finish(Duration::from_secs(5)).unwrap().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
