//! BIRD instances in test namespaces: one per namespace with its own control socket, in the
//! foreground so the test owns its PID, with timers short enough that a session notices a dead
//! peer in seconds rather than minutes.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::netns::{Netns, Proc};

/// BGP session timers for tests: BIRD's defaults (hold 240 s, connect retry 120 s) make a
/// recovery take minutes.
pub const TIMERS: &str =
    "hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2; connect delay time 1;";

/// A BFD protocol for every session on `eth0`: 100 ms × 3, so a dead peer is noticed in
/// about 0.3 s instead of the 3 s hold time.
pub const BFD: &str =
    "protocol bfd { interface \"eth0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\n";

/// A BIRD in `ns`, its files in `dir` under `name`.
#[derive(Debug)]
pub struct Bird {
    /// The process.
    pub proc: Proc,
    /// Its control socket (`birdc -s`).
    pub socket: PathBuf,
    conf: PathBuf,
    pid: PathBuf,
}

impl Bird {
    /// Writes `config` and starts BIRD on it.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, config).expect("write BIRD config");
        let socket = dir.join(format!("{name}.ctl"));
        let pid = dir.join(format!("{name}.pid"));
        let proc = Self::spawn(ns, &conf, &socket, &pid);
        Self { proc, socket, conf, pid }
    }

    fn spawn(ns: &Netns, conf: &Path, socket: &Path, pid: &Path) -> Proc {
        ns.spawn(&[
            "bird",
            "-f",
            "-c",
            conf.to_str().expect("utf-8 path"),
            "-s",
            socket.to_str().expect("utf-8 path"),
            "-P",
            pid.to_str().expect("utf-8 path"),
        ])
    }

    /// Starts it again on the same files (after it was killed).
    pub fn restart(&mut self, ns: &Netns) {
        self.proc = Self::spawn(ns, &self.conf, &self.socket, &self.pid);
    }
}

/// The next hops of `ns`'s BIRD-learnt route to `addr`/32, in the order the kernel lists them
/// (empty when there is none).
pub fn next_hops(ns: &Netns, addr: Ipv4Addr) -> Vec<Ipv4Addr> {
    let routes = ns.run(&["ip", "-4", "route", "show", &format!("{addr}/32"), "proto", "bird"]);
    let words: Vec<&str> = routes.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect()
}

/// Waits (20 s at most, polling every 10 ms) until `ns`'s route to `addr` has exactly the next
/// hops `want` (in any order); how long that took.
///
/// # Panics
/// When it does not happen in time, with the route as it is.
pub fn wait_next_hops(ns: &Netns, addr: Ipv4Addr, want: &[Ipv4Addr]) -> Duration {
    let start = Instant::now();
    let mut want = want.to_vec();
    want.sort_unstable();
    loop {
        let mut got = next_hops(ns, addr);
        got.sort_unstable();
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "route to {addr}: next hops {got:?}, not {want:?} in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}
