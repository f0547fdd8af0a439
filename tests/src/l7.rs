//! The L7 rig: a client, the balancer terminating HTTP on a VIP, and three application servers
//! that set Tomcat-style session cookies; and a browser with its own cookie jar.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use crate::{
    backend::AppServer,
    daemon::Daemon,
    netns::{Lan, Netns},
};

/// The L7 VIP of the rig.
pub const VIP: &str = "198.51.100.10";

/// A client, the balancer and three application servers, with the balancer running.
pub struct Setup {
    /// The hosts: client, lb, be1, be2, be3.
    pub lan: Lan,
    /// The application servers of be1..be3; `None` once a test stopped one.
    pub apps: Vec<Option<AppServer>>,
    /// The balancer.
    pub daemon: Daemon,
    /// The insert-mode key file.
    pub key: PathBuf,
    /// The configuration it runs (without the harness's header).
    pub config: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key);
    }
}

/// be1 (route r1) and be2 (r2) in domain d1; be3 (r3) in domain d2 at distance 1, so new
/// sessions go to be1 and be2 only.
pub fn setup(l7: &str) -> Setup {
    setup_with(l7, "distance = 1")
}

/// As `setup`, with `be3_extra` as be3's last line instead of its distance.
pub fn setup_with(l7: &str, be3_extra: &str) -> Setup {
    setup_on(80, l7, "", be3_extra)
}

/// As `setup_with`, the VIP on `port`, with `vip_extra` (TOML tables of the VIP such as
/// `[vip.tls]`) after its `[vip.l7]` lines.
pub fn setup_on(port: u16, l7: &str, vip_extra: &str, be3_extra: &str) -> Setup {
    let lan = Lan::new(&["client", "lb", "be1", "be2", "be3"]);
    let apps = (2..5)
        .map(|h| Some(AppServer::start(&lan.hosts[h], &format!("be{}", h - 1), &format!("r{}", h - 1), 8080)))
        .collect();
    vip_on_lb(&lan);
    let key = std::env::temp_dir().join(format!("{}-cookie.key", lan.hosts[1].ns.name()));
    std::fs::write(&key, "k3y-for-the-l7-tests-0123456789").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:{port}\"\n[vip.l7]\nkey_file = \"{}\"\n{l7}\n{vip_extra}\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\nroute = \"r1\"\ndomain = \"d1\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\nport = 8080\nroute = \"r2\"\ndomain = \"d1\"\n\
         [[vip.backend]]\naddress = \"198.18.0.5\"\nport = 8080\nroute = \"r3\"\ndomain = \"d2\"\n{be3_extra}\n",
        key.display()
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    Setup { lan, apps, daemon, key, config }
}

/// Puts `VIP` on the lb host (`lan.hosts[1]`, 198.18.0.2) and routes the client
/// (`lan.hosts[0]`) to it there.
pub fn vip_on_lb(lan: &Lan) {
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
}

/// `browsers` new clients in `ns` (jars named `name0`, `name1`, …), each asking `/` once and
/// then `again` more times: every answer must come from the backend of its first (the session
/// stays). Returns the backends the sessions went to.
pub fn sessions_stay(ns: &Netns, name: &str, browsers: usize, again: usize) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    for i in 0..browsers {
        let b = Browser::new(ns, &format!("{name}{i}"));
        let first = b.who("/");
        for _ in 0..again {
            assert_eq!(b.who("/"), first, "browser {name}{i} keeps its session on {first}");
        }
        seen.insert(first);
    }
    seen
}

/// A client with its own cookie jar.
pub struct Browser<'a> {
    ns: &'a Netns,
    /// Its cookie jar (curl's format).
    pub jar: PathBuf,
}

impl<'a> Browser<'a> {
    /// A browser in `ns` with a fresh jar named `name`.
    pub fn new(ns: &'a Netns, name: &str) -> Self {
        let jar = std::env::temp_dir().join(format!("{}-{name}.jar", ns.name()));
        let _ = std::fs::remove_file(&jar);
        Self { ns, jar }
    }

    /// GET `path` with the jar; returns (status, headers, body).
    pub fn get(&self, path: &str, extra: &[&str]) -> (u16, String, String) {
        let url = format!("http://{VIP}{path}");
        let jar = self.jar.to_str().unwrap();
        let mut argv = vec!["curl", "-s", "--max-time", "5", "-D", "-", "-c", jar, "-b", jar];
        argv.extend_from_slice(extra);
        argv.push(&url);
        let out = self.ns.output(&argv);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    /// The backend that answered.
    pub fn who(&self, path: &str) -> String {
        let (status, head, body) = self.get(path, &[]);
        assert_eq!(status, 200, "{head}\n{body}");
        body.split_whitespace().next().unwrap_or("").to_owned()
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jar);
    }
}
