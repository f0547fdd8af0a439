//! Two balancer nodes behind an ECMP router, in namespaces (issue 16), for `tests/ecmp.rs`
//! and the demo. The router's namespace is also the client: its BIRD learns the VIP from both
//! nodes' BIRDs over eBGP and installs one route with two next hops, hashed on the 5-tuple
//! (`fib_multipath_hash_policy=3`, fields 0x37), so its connections spread over the nodes as a
//! real router's would. Both nodes have the same configuration and Maglev seed, and return
//! traffic goes straight from the backends (DSR).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::{
    backend::{HttpBackend, HttpConn},
    bird::{self, BFD, Bird, TIMERS},
    daemon::Daemon,
    netns::{Lan, Netns},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Hosts on the LAN, in order: 198.18.0.1 …
pub const ROUTER: usize = 0;
pub const NODES: [usize; 2] = [1, 2];
pub const BACKENDS: [usize; 2] = [3, 4];
/// Connections `connect` opens.
pub const CONNS: usize = 24;

/// The router, two nodes (BIRD and daemon each) and two backends on one segment.
pub struct Cluster {
    /// Router, nodes, backends: `ROUTER`, `NODES`, `BACKENDS`.
    pub lan: Lan,
    dir: PathBuf,
    _router: Bird,
    /// The nodes' BIRDs.
    pub birds: Vec<Bird>,
    /// The nodes' daemons.
    pub daemons: Vec<Daemon>,
    /// The backends' servers (`None` once stopped).
    pub backends: Vec<Option<HttpBackend>>,
}

/// The address of `host` on the LAN.
pub fn ip(lan: &Lan, host: usize) -> Ipv4Addr {
    lan.hosts[host].ip
}

impl Cluster {
    /// Builds it and waits until the router has both next hops; `bfd`: sessions with BFD.
    ///
    /// # Panics
    /// When a namespace, BIRD or a daemon cannot be set up.
    pub fn new(tag: &str, bfd: bool) -> Self {
        let mut lan = Lan::new(&["router", "lb1", "lb2", "be1", "be2"]);
        let dir = std::env::temp_dir().join(format!("bt-ecmp-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let backends: Vec<_> = BACKENDS
            .iter()
            .enumerate()
            .map(|(i, &h)| Some(HttpBackend::start(&lan.hosts[h], &format!("be{}", i + 1), VIP.into(), 80)))
            .collect();
        for n in NODES {
            lan.accept_xdp_frames_from(n);
        }
        let router_ns = &lan.hosts[ROUTER].ns;
        router_ns.run(&[
            "sysctl",
            "-qw",
            "net.ipv4.fib_multipath_hash_policy=3",
            "net.ipv4.fib_multipath_hash_fields=0x0037",
        ]);
        let bfd_on = if bfd { "bfd on;" } else { "" };
        let mut sessions = String::new();
        for n in NODES {
            let _ = write!(
                sessions,
                "protocol bgp node{n} {{ local {} as 65000; neighbor {} as 65001; {TIMERS} {bfd_on}\n\
                     ipv4 {{ import all; export none; }}; }}\n",
                ip(&lan, ROUTER),
                ip(&lan, n)
            );
        }
        let router = Bird::start(
            router_ns,
            &dir,
            "router",
            &format!(
                "router id {};\nprotocol device {{ scan time 1; }}\n\
                 protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n{}{sessions}",
                ip(&lan, ROUTER),
                if bfd { BFD } else { "" }
            ),
        );
        let mut birds = Vec::new();
        let mut daemons = Vec::new();
        for n in NODES {
            let ns = &lan.hosts[n].ns;
            let config = node_config(&lan, &dir, n);
            let for_bgp = dir.join(format!("node{n}-for-bgp-config.toml"));
            std::fs::write(&for_bgp, &config).unwrap();
            // As the package's tmpfiles.d entry does: BIRD refuses a missing include.
            for f in ["vips4", "vips6"] {
                std::fs::write(dir.join(format!("node{n}-{f}.conf")), "").unwrap();
            }
            let bin = crate::daemon::balancer_bin();
            let printed = ns.run(&[bin.to_str().unwrap(), "bgp", "config", "-c", for_bgp.to_str().unwrap()]);
            let mut snippet = String::new();
            for l in printed.lines().filter(|l| !l.starts_with('#')) {
                let _ = writeln!(snippet, "{l}");
            }
            birds.push(Bird::start(
                ns,
                &dir,
                &format!("node{n}"),
                &format!(
                    "router id {me};\nprotocol device {{ scan time 1; }}\n{snippet}{}\
                     protocol bgp to_router {{ local {me} as 65001; neighbor {} as 65000; {TIMERS} {bfd_on}\n\
                     ipv4 {{ import none; export where proto = \"balancer_vips4\"; }}; }}\n",
                    if bfd { BFD } else { "" },
                    ip(&lan, ROUTER),
                    me = ip(&lan, n),
                ),
            ));
            daemons.push(Daemon::start(ns, &config, "info"));
        }
        let c = Self { lan, dir, _router: router, birds, daemons, backends };
        let both = c.node_ips();
        let took = bird::wait_next_hops(c.router(), VIP, &both);
        eprintln!("both nodes announced: a route with two next hops after {took:?}");
        c
    }

    /// The router's (and client's) namespace.
    pub fn router(&self) -> &Netns {
        &self.lan.hosts[ROUTER].ns
    }

    /// Node `i`'s namespace (0 or 1).
    pub fn node(&self, i: usize) -> &Netns {
        &self.lan.hosts[NODES[i]].ns
    }

    /// The nodes' addresses, the router's next hops.
    pub fn node_ips(&self) -> Vec<Ipv4Addr> {
        NODES.iter().map(|&n| ip(&self.lan, n)).collect()
    }

    /// The node (index) the router sends the packets of the connection from `local` to now.
    pub fn node_of(&self, local: SocketAddr) -> Option<usize> {
        let out = self.router().run(&[
            "ip",
            "route",
            "get",
            &VIP.to_string(),
            "from",
            &local.ip().to_string(),
            "ipproto",
            "tcp",
            "sport",
            &local.port().to_string(),
            "dport",
            "80",
        ]);
        let via: Ipv4Addr = out.split_whitespace().skip_while(|w| *w != "via").nth(1)?.parse().ok()?;
        self.node_ips().iter().position(|&n| n == via)
    }

    /// Every backend up/down change each node's daemon logged so far, a line each.
    pub fn health_changes(&self) -> String {
        let mut out = String::new();
        for (i, d) in self.daemons.iter().enumerate() {
            for l in d.proc.log().lines().filter(|l| l.contains("backend down") || l.contains("backend up")) {
                let _ = writeln!(out, "node {}: {l}", i + 1);
            }
        }
        out
    }

    /// Opens `CONNS` keep-alive connections from the router to the VIP (the router's hash
    /// spreads them over the nodes), each waiting up to 15 s for an answer.
    ///
    /// # Panics
    /// When one cannot connect.
    pub fn connect(&self) -> Vec<HttpConn> {
        self.router().in_thread(|| {
            (0..CONNS)
                .map(|_| {
                    let c = HttpConn::connect(SocketAddr::new(VIP.into(), 80)).expect("connect to the VIP");
                    // Through a failover TCP retransmits (200 ms, 400 ms, …): wait it out.
                    c.set_read_timeout(Duration::from_secs(15)).unwrap();
                    c
                })
                .collect()
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.daemons.clear();
        self.birds.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node's configuration: the VIP on both backends, health checked every 200 ms (down after
/// two failed checks: one check late on a loaded 2-core machine is not a dead backend),
/// announced through its own BIRD. The first backend needs ten passed checks to count as up again, the
/// second one: a node whose checks all failed (its link was down) sees the second backend
/// back two seconds before the first, which is when announcing too early would show.
fn node_config(lan: &Lan, dir: &std::path::Path, n: usize) -> String {
    format!(
        "interfaces = [\"eth0\"]\n[announce]\nfile_v4 = \"{d}/node{n}-vips4.conf\"\nfile_v6 = \"{d}/node{n}-vips6.conf\"\n\
         bird_socket = \"{d}/node{n}.ctl\"\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [vip.health]\nkind = \"tcp\"\ninterval_ms = 200\nrise = 1\nfall = 2\n\
         [[vip.backend]]\naddress = \"{}\"\n\
         [vip.backend.health]\nkind = \"tcp\"\ninterval_ms = 200\nrise = 10\nfall = 2\n\
         [[vip.backend]]\naddress = \"{}\"\n",
        ip(lan, BACKENDS[0]),
        ip(lan, BACKENDS[1]),
        d = dir.display(),
    )
}
