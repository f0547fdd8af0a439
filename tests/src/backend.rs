//! Real servers for end-to-end tests: a host that holds the VIP on loopback (as a DSR backend
//! does) and runs Python's HTTP server, answering with its own name.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use crate::netns::{Host, Proc};

/// An HTTP server in a backend namespace; stops on drop.
#[derive(Debug)]
pub struct HttpBackend {
    /// The server process.
    pub proc: Proc,
    root: PathBuf,
}

impl HttpBackend {
    /// Puts `vip` on `host`'s loopback (not answering ARP for it, like an LVS-DR real server)
    /// and serves `GET /` with body `name` on port `port`.
    pub fn start(host: &Host, name: &str, vip: IpAddr, port: u16) -> Self {
        let ns = &host.ns;
        let plen = if vip.is_ipv4() { 32 } else { 128 };
        ns.run(&["ip", "addr", "add", &format!("{vip}/{plen}"), "dev", "lo"]);
        ns.run(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
        let root = std::env::temp_dir().join(format!("{}-www", ns.name()));
        std::fs::create_dir_all(&root).expect("web root");
        std::fs::write(root.join("index.html"), name).expect("index.html");
        let bind = if vip.is_ipv4() { "0.0.0.0" } else { "::" };
        let proc = ns.spawn(&[
            "python3", "-m", "http.server", &port.to_string(), "--bind", bind, "--directory", root.to_str().unwrap(),
        ]);
        let b = Self { proc, root };
        // Ready when it answers locally.
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..100 {
            if ns.output(&["curl", "-sf", "--max-time", "1", &url]).status.success() {
                return b;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("HTTP backend {name} did not start:\n{}", b.proc.log());
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
