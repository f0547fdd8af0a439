//! Two tiers (issue 16): two XDP L4 nodes in front of two L7 nodes, in front of three
//! application servers that set Tomcat-style `JSESSIONID=<id>.<route>` cookies.
//!
//! The client reaches the VIP over a two-way multipath route (the router of `ecmp.rs`, without
//! BGP: that part is tested there), hashed on the 5-tuple. Each L4 node forwards by DSR to the
//! L7 nodes, which hold the VIP on loopback and terminate HTTP on it, so they see the client's
//! own address (it reaches the application as `X-Forwarded-For`) and answer the client
//! directly. Every request is a new connection (curl per request), so a session's requests
//! cross both L4 nodes and both L7 nodes: stickiness must come from the cookie alone.

use std::{fmt::Write as _, os::unix::fs::PermissionsExt as _};

use balancer_tests::{
    backend::AppServer,
    daemon::Daemon,
    l7::{Browser, VIP},
    netns::{Lan, Netns},
    require_root,
};

const CLIENT: usize = 0;
const L4: [usize; 2] = [1, 2];
const L7: [usize; 2] = [3, 4];
const APPS: [usize; 3] = [5, 6, 7];
const BROWSERS: usize = 12;

struct Tiers {
    lan: Lan,
    l4: Vec<Option<Daemon>>,
    l7: Vec<Option<Daemon>>,
    apps: Vec<Option<AppServer>>,
    key: std::path::PathBuf,
}

impl Drop for Tiers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key);
    }
}

impl Tiers {
    /// The L7 nodes run `[vip.l7]` with `l7` (and one shared cookie key); the three
    /// application servers are in one domain, so a failed one's sessions have two candidates.
    /// `forwarding`: the L4 VIP's (`dsr`, or `ipip`, which the L7 nodes' own balancer
    /// program decapsulates).
    fn new(forwarding: &str, l7: &str) -> Self {
        let mut lan = Lan::new(&["client", "l4a", "l4b", "l7a", "l7b", "be1", "be2", "be3"]);
        let apps: Vec<_> = APPS
            .iter()
            .enumerate()
            .map(|(i, &h)| Some(AppServer::start(&lan.hosts[h], &format!("be{}", i + 1), &format!("r{}", i + 1), 8080)))
            .collect();
        let client = &lan.hosts[CLIENT].ns;
        client.run(&[
            "sysctl",
            "-qw",
            "net.ipv4.fib_multipath_hash_policy=3",
            "net.ipv4.fib_multipath_hash_fields=0x0037",
        ]);
        let hops: Vec<String> = L4.iter().map(|&h| lan.hosts[h].ip.to_string()).collect();
        client.run(&[
            "ip",
            "route",
            "add",
            &format!("{VIP}/32"),
            "nexthop",
            "via",
            &hops[0],
            "nexthop",
            "via",
            &hops[1],
        ]);
        let key = std::env::temp_dir().join(format!("{}-two-tier.key", lan.fabric.name()));
        std::fs::write(&key, "one-key-for-every-l7-node-0123456789").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut backends = String::new();
        for (i, &h) in APPS.iter().enumerate() {
            let _ = write!(
                backends,
                "[[vip.backend]]\naddress = \"{}\"\nport = 8080\nroute = \"r{}\"\ndomain = \"d1\"\n",
                lan.hosts[h].ip,
                i + 1
            );
        }
        let mut l7_nodes = Vec::new();
        for &h in &L7 {
            let host = &lan.hosts[h];
            host.ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
            host.ns.run(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
            let config = format!(
                "interfaces = [\"eth0\"]\nmetrics_address = \"{}:9090\"\n[[vip]]\naddress = \"{VIP}:80\"\n\
                 [vip.l7]\nkey_file = \"{}\"\n{l7}\n\
                 [vip.health]\nkind = \"tcp\"\nport = 8080\ninterval_ms = 200\nrise = 1\nfall = 1\n{backends}",
                host.ip,
                key.display()
            );
            l7_nodes.push(Some(Daemon::start(&host.ns, &config, "info")));
        }
        // The L4 tier checks each L7 node's admin port: it answers while the node's daemon runs.
        let l4_config = format!(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\nforwarding = \"{forwarding}\"\n\
             [vip.health]\nkind = \"http\"\nport = 9090\npath = \"/status.json\"\ninterval_ms = 200\nrise = 1\nfall = 1\n\
             [[vip.backend]]\naddress = \"{}\"\n[[vip.backend]]\naddress = \"{}\"\n",
            lan.hosts[L7[0]].ip, lan.hosts[L7[1]].ip
        );
        let mut l4_nodes = Vec::new();
        for &h in &L4 {
            lan.accept_xdp_frames_from(h);
            l4_nodes.push(Some(Daemon::start(&lan.hosts[h].ns, &l4_config, "info")));
        }
        let t = Self { lan, l4: l4_nodes, l7: l7_nodes, apps, key };
        // Both L7 nodes up in both L4 nodes' tables before the first request.
        for i in 0..2 {
            wait_until(|| t.l4_up(i) == 2, "both L7 nodes healthy on an L4 node");
        }
        t
    }

    fn client(&self) -> &Netns {
        &self.lan.hosts[CLIENT].ns
    }

    fn status(&self, d: &Daemon, host: usize) -> serde_json::Value {
        let out = d.ctl(&self.lan.hosts[host].ns, &["--json", "status"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// L7 nodes L4 node `i` sees up.
    fn l4_up(&self, i: usize) -> usize {
        let Some(d) = &self.l4[i] else { return 0 };
        let s = self.status(d, L4[i]);
        s["vips"][0]["backends"].as_array().unwrap().iter().filter(|b| b["health"] == "up").count()
    }

    /// Requests each L7 node has sent to the applications.
    fn l7_requests(&self) -> Vec<u64> {
        (0..2)
            .map(|i| {
                self.l7[i].as_ref().map_or(0, |d| {
                    let s = self.status(d, L7[i]);
                    s["vips"][0]["backends"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| b["l7"]["requests"].as_u64().unwrap())
                        .sum()
                })
            })
            .collect()
    }

    /// New flows each L4 node has steered.
    fn l4_flows(&self) -> Vec<u64> {
        (0..2)
            .map(|i| {
                self.l4[i].as_ref().map_or(0, |d| {
                    let s = self.status(d, L4[i]);
                    s["vips"][0]["backends"].as_array().unwrap().iter().map(|b| b["new_flows"].as_u64().unwrap()).sum()
                })
            })
            .collect()
    }
}

/// Polls `done` every 100 ms for up to 10 s.
fn wait_until(done: impl Fn() -> bool, what: &str) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "not within 10 s: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Each browser's first answer, then `again` more that must come from the same application
/// server; each answer must carry the client's own address.
fn sessions(t: &Tiers, browsers: &[Browser<'_>], first: Option<&[String]>, again: usize) -> Vec<String> {
    let client_ip = t.lan.hosts[CLIENT].ip.to_string();
    browsers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (status, head, body) = b.get("/", &[]);
            assert_eq!(status, 200, "{head}{body}");
            assert!(body.contains(&format!("xff={client_ip}")), "the client's address reaches the application: {body}");
            let who = body.split_whitespace().next().unwrap().to_owned();
            if let Some(first) = first {
                assert_eq!(who, first[i], "browser {i} moved");
            }
            for _ in 0..again {
                assert_eq!(b.who("/"), who, "browser {i}'s session stays on {who}");
            }
            who
        })
        .collect()
}

/// Insert-mode cookies signed with one key: a session keeps its application server whichever
/// L4 and L7 node each of its requests crosses, when an L4 node dies, and when an L7 node dies.
#[test]
fn a_session_keeps_its_server_across_both_tiers_and_through_an_l4_or_l7_node_failure() {
    require_root!();
    let mut t = Tiers::new("dsr", "sticky = \"insert\"");
    let browsers: Vec<Browser<'_>> =
        (0..BROWSERS).map(|i| Browser::new(&t.lan.hosts[CLIENT].ns, &format!("tt{i}"))).collect();
    let first = sessions(&t, &browsers, None, 4);
    let (l4, l7) = (t.l4_flows(), t.l7_requests());
    eprintln!("{BROWSERS} sessions × 5 requests: L4 nodes steered {l4:?} flows, L7 nodes sent {l7:?} requests");
    assert!(l4.iter().all(|&n| n > 0) && l7.iter().all(|&n| n > 0), "every node carried some: {l4:?} {l7:?}");
    let servers: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(servers.len() > 1, "the sessions went to one server: {first:?}");

    // An L4 node dies: the router's route loses it (here by hand); the other L4 node steers
    // its flows by the same table.
    t.l4[0] = None;
    t.lan.hosts[L4[0]].ns.run(&["ip", "link", "set", "eth0", "down"]);
    let hop = t.lan.hosts[L4[1]].ip.to_string();
    t.client().run(&["ip", "route", "replace", &format!("{VIP}/32"), "via", &hop]);
    sessions(&t, &browsers, Some(&first), 2);
    eprintln!("L4 node 1 gone: every session on its server");

    // An L7 node dies: the L4 node's check of its admin port fails, its flows go to the other
    // L7 node, which knows each session from its cookie.
    t.l7[0] = None;
    wait_until(|| t.l4_up(1) == 1, "the L4 node sees the L7 node down");
    let before = t.l7_requests()[1];
    sessions(&t, &browsers, Some(&first), 2);
    assert_eq!(t.l7_requests()[1] - before, BROWSERS as u64 * 3, "the other L7 node served every request");
    eprintln!("L7 node 1 gone too: every session on its server");
}

/// Route-suffix sessions (`JSESSIONID=<id>.r1`) of a server that dies fail over to the same
/// replacement on both L7 nodes: each session's next requests, spread over both, agree.
#[test]
fn a_failed_servers_sessions_move_to_the_same_replacement_on_every_l7_node() {
    require_root!();
    let mut t = Tiers::new("dsr", "sticky = \"route-suffix\"");
    let browsers: Vec<Browser<'_>> =
        (0..BROWSERS * 2).map(|i| Browser::new(&t.lan.hosts[CLIENT].ns, &format!("rs{i}"))).collect();
    let first = sessions(&t, &browsers, None, 2);
    let on_be1: Vec<usize> = (0..first.len()).filter(|&i| first[i] == "be1").collect();
    assert!(on_be1.len() >= 2, "too few sessions on be1 to show anything: {first:?}");

    t.apps[0] = None;
    wait_until(
        || {
            (0..2).all(|i| {
                let s = t.status(t.l7[i].as_ref().unwrap(), L7[i]);
                s["vips"][0]["backends"][0]["health"] == "down"
            })
        },
        "both L7 nodes see be1 down",
    );
    let before = t.l7_requests();
    let mut moved_to = std::collections::BTreeMap::<String, usize>::new();
    for &i in &on_be1 {
        let b = &browsers[i];
        let to = b.who("/");
        assert_ne!(to, "be1");
        for _ in 0..5 {
            assert_eq!(b.who("/"), to, "session {i} failed over to {to}, then elsewhere: the L7 nodes disagree");
        }
        *moved_to.entry(to).or_default() += 1;
    }
    let after = t.l7_requests();
    let per_node: Vec<u64> = (0..2).map(|i| after[i] - before[i]).collect();
    eprintln!(
        "{} sessions of be1 failed over: to {moved_to:?}, the same on both L7 nodes ({per_node:?} requests each)",
        on_be1.len()
    );
    assert!(per_node.iter().all(|&n| n > 0), "one L7 node served every failed-over request: {per_node:?}");
    // The other sessions did not move.
    let rest: Vec<usize> = (0..first.len()).filter(|i| !on_be1.contains(i)).collect();
    for &i in &rest {
        assert_eq!(browsers[i].who("/"), first[i], "session {i} of a live server moved");
    }
}

/// The same over IPIP, for L7 nodes a routed hop away: the L4 nodes encapsulate, the L7 nodes'
/// own balancer program takes the outer header off (no second program on the interface), and
/// the L7 proxy sees the client's address.
#[test]
fn over_ipip_the_l7_nodes_decapsulate_and_sessions_stay() {
    require_root!();
    let t = Tiers::new("ipip", "sticky = \"insert\"");
    let browsers: Vec<Browser<'_>> =
        (0..BROWSERS).map(|i| Browser::new(&t.lan.hosts[CLIENT].ns, &format!("ip{i}"))).collect();
    sessions(&t, &browsers, None, 4);
    let (l4, l7) = (t.l4_flows(), t.l7_requests());
    let decapsulated: Vec<u64> = (0..2)
        .map(|i| t.status(t.l7[i].as_ref().unwrap(), L7[i])["not_balanced"]["decapsulated"].as_u64().unwrap_or(0))
        .collect();
    eprintln!(
        "over IPIP: L4 nodes steered {l4:?} flows, L7 nodes decapsulated {decapsulated:?} packets and sent {l7:?} requests"
    );
    assert!(decapsulated.iter().all(|&n| n > 0) && l7.iter().all(|&n| n > 0), "{decapsulated:?} {l7:?}");
}
