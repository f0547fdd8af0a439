//! Network namespaces for tests: a guard per namespace that deletes it on drop (also when the
//! test panics), processes started inside one and stopped by PID, and [`Lan`], a set of hosts
//! joined by veths to a bridge that lives in a namespace of its own.
//!
//! Commands enter a namespace with `nsenter --net=…` rather than `ip netns exec`, so they keep
//! the host's mounts (bpffs at /sys/fs/bpf in particular) and only change network namespace.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Prefix of every namespace the tests make; `cargo xtask test` removes leftovers whose owning
/// process is gone.
pub const PREFIX: &str = "bt-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists as long as this value does.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `bt-<tag>-<pid>-<n>`: unique per process and per call.
    ///
    /// # Panics
    /// When `ip netns add` fails.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` lists it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name)).arg("--").args(argv);
        c
    }

    /// Runs `argv` inside the namespace and returns its stdout.
    ///
    /// # Panics
    /// When it fails, with its stderr.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.output(argv);
        assert!(
            out.status.success(),
            "in netns {}: `{}` failed: {}",
            self.name,
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `argv` inside the namespace and returns whatever happened.
    pub fn output(&self, argv: &[&str]) -> Output {
        self.command(argv).output().expect("nsenter runs")
    }

    /// The HTTP status of `GET url` from this namespace by curl within 2 s (`000`: no answer).
    pub fn http_status(&self, url: &str) -> String {
        let out = self.output(&["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (at most `limit`) until no address in this namespace is still tentative (IPv6
    /// duplicate detection), so a program that watches the host's addresses sees no change.
    ///
    /// # Panics
    /// When one is still tentative after `limit`.
    pub fn wait_addresses_settled(&self, limit: Duration) {
        let start = Instant::now();
        while !self.run(&["ip", "-6", "addr", "show", "tentative"]).trim().is_empty() {
            assert!(start.elapsed() < limit, "addresses still tentative after {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` on a thread that has entered this namespace (only that thread moves), so a test
    /// can open sockets inside it without spawning a process per connection.
    pub fn in_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Starts `argv` inside the namespace, stdout and stderr captured to a file.
    pub fn spawn(&self, argv: &[&str]) -> Proc {
        let prog = argv[0].rsplit('/').next().unwrap_or("proc");
        Proc::spawn(self.command(argv), &format!("{}-{prog}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A process started in a namespace. Dropping it stops it: SIGTERM, then SIGKILL after 3 s.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    log_path: std::path::PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to a log file named after `tag`.
    pub fn spawn(mut cmd: Command, tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = std::env::temp_dir().join(format!("{tag}-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Self { child: Some(child), log_path }
    }

    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether it has exited; its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until its log contains `needle`, for at most `timeout`.
    ///
    /// # Panics
    /// When it exits first or the time runs out, with its log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!("process exited ({st}) before logging {needle:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} in the log after {timeout:?}:\n{}", self.log());
    }

    /// Sends it `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal the process");
    }

    /// Kills it with SIGKILL (no cleanup of its own runs) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (SIGTERM, SIGKILL after 3 s) and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // `nsenter` execs the command, so this PID is the process itself.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command in the current namespace.
///
/// # Panics
/// When it fails, with its stderr.
pub fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(out.status.success(), "`{}` failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One host on a [`Lan`].
#[derive(Debug)]
pub struct Host {
    /// Its namespace; its interface on the LAN is `eth0`.
    pub ns: Netns,
    /// IPv4 address of `eth0`.
    pub ip: Ipv4Addr,
    /// MAC of `eth0`.
    pub mac: [u8; 6],
    /// Name of the veth peer of `eth0` in the fabric namespace (a bridge port).
    pub port: String,
}

/// Hosts on one L2 segment: each in its own namespace with `eth0` (198.18.0.N/24, MAC
/// 02:b4:17:00:00:N for the N-th host, from 1) whose peer is a port of bridge `br0` in a
/// fabric namespace. `scripts/netns-lan.sh` builds the same for people.
///
/// Checksum offloads are off on every veth: a frame an XDP program forwards has lost the
/// metadata that would let the kernel finish a partial checksum.
#[derive(Debug)]
pub struct Lan {
    /// Hosts, in the order their names were given. Dropped before the fabric.
    pub hosts: Vec<Host>,
    /// Pinned links of `accept_xdp_frames_from`. Dropped before the namespaces.
    links: Option<crate::daemon::PinDir>,
    /// The namespace holding the bridge.
    pub fabric: Netns,
}

impl Lan {
    /// Builds the LAN with one host per name in `names` (names only label the namespaces).
    pub fn new(names: &[&str]) -> Self {
        let fabric = Netns::new("fab");
        fabric.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        fabric.run(&["ip", "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let n = i as u8 + 1;
            let ns = Netns::new(name);
            let port = format!("p{n}");
            let mac = [0x02, 0xb4, 0x17, 0, 0, n];
            let mac_s = fmt_mac(&mac);
            fabric.run(&["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
            fabric.run(&["ip", "link", "set", &port, "master", "br0", "up"]);
            fabric.run(&["ethtool", "-K", &port, "rx", "off", "tx", "off"]);
            let ip = Ipv4Addr::new(198, 18, 0, n);
            ns.run(&["ip", "link", "set", "eth0", "address", &mac_s]);
            ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.run(&["ip", "link", "set", "eth0", "up"]);
            ns.run(&["ethtool", "-K", "eth0", "rx", "off", "tx", "off"]);
            hosts.push(Host { ns, ip, mac, port });
        }
        Self { hosts, links: None, fabric }
    }

    /// Lets frames sent by XDP (`XDP_TX`, redirect) out of `host`'s `eth0` be received by its
    /// bridge port, with `balancer xdp-peer attach`: a veth takes such frames only when its peer
    /// has an XDP program (with GRO alone they wait in a queue for seconds).
    pub fn accept_xdp_frames_from(&mut self, host: usize) {
        let port = self.hosts[host].port.clone();
        self.helper(None, &["xdp-peer", "attach", "--iface", &port]);
    }

    /// Undoes `accept_xdp_frames_from`: for a contender that sends no XDP frames, the peer's
    /// program would only be a cost on its path.
    pub fn stop_accepting_xdp_frames_from(&mut self, host: usize) {
        let port = self.hosts[host].port.clone();
        self.helper(None, &["xdp-peer", "detach", "--iface", &port]);
    }

    /// Attaches the IPIP decapsulation program to `host`'s `eth0` (`balancer decap attach`).
    pub fn decap_on(&mut self, host: usize) {
        self.helper(Some(host), &["decap", "attach", "--iface", "eth0"]);
    }

    /// Detaches it again (`balancer decap detach`).
    pub fn decap_off(&mut self, host: usize) {
        self.helper(Some(host), &["decap", "detach", "--iface", "eth0"]);
    }

    /// Runs a `balancer` helper command in `host`'s namespace (the fabric's when `None`), with
    /// its pinned link in this LAN's pin directory, removed on drop.
    fn helper(&mut self, host: Option<usize>, args: &[&str]) {
        let fabric = self.fabric.name().to_owned();
        let dir = self.links.get_or_insert_with(|| crate::daemon::PinDir::new(&format!("{fabric}-links")));
        let dir = dir.0.to_str().expect("utf-8 path").to_owned();
        let bin = crate::daemon::balancer_bin();
        let mut argv = vec![bin.to_str().unwrap()];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--pin-dir", &dir]);
        let ns = host.map_or(&self.fabric, |h| &self.hosts[h].ns);
        ns.run(&argv);
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
