//! Two balancer nodes behind an ECMP router (issue 16), built by `balancer_tests::cluster`.
//!
//! Long-lived keep-alive connections are watched through each case (a request on each every
//! few milliseconds): a connection whose backend is healthy must never break or change backend,
//! whichever node its packets reach. Each case prints its figures: connections broken out of
//! N, backend changes, how long until the router's route changed, and the longest time a
//! connection waited for an answer.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    backend::HttpConn,
    bird,
    cluster::{CONNS, Cluster, NODES, VIP},
    require_root,
};

/// What one watched connection saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Backends that answered it (one, unless it moved).
    backends: BTreeSet<String>,
    /// Answers.
    answers: u64,
    /// Longest wait for an answer.
    stall: Duration,
    /// Why it broke, if it did.
    broken: Option<String>,
}

/// Requests on every connection, each from its own thread, until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Vec<Arc<Mutex<Seen>>>,
    threads: Vec<std::thread::JoinHandle<HttpConn>>,
}

impl Watch {
    fn start(conns: Vec<HttpConn>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut seen = Vec::new();
        let mut threads = Vec::new();
        for mut c in conns {
            let s = Arc::new(Mutex::new(Seen::default()));
            seen.push(s.clone());
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let answer = c.get();
                    let waited = asked.elapsed();
                    let mut s = s.lock().unwrap();
                    s.stall = s.stall.max(waited);
                    match answer {
                        Ok(body) => {
                            s.answers += 1;
                            s.backends.insert(body);
                        }
                        Err(e) => {
                            s.broken = Some(e.to_string());
                            break;
                        }
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(5));
                }
                c
            }));
        }
        Self { stop, seen, threads }
    }

    /// Stops the threads; the connections and what each saw.
    fn finish(self) -> (Vec<HttpConn>, Vec<Seen>) {
        self.stop.store(true, Ordering::Relaxed);
        let conns = self.threads.into_iter().map(|t| t.join().expect("watch thread")).collect();
        (conns, self.seen.iter().map(|s| s.lock().unwrap().clone()).collect())
    }
}

/// Figures of one case, printed; `healthy`: the connections whose backend stayed up.
struct Figures {
    broken: usize,
    changed: usize,
    stall: Duration,
}

///
/// # Panics
/// When a connection got no answer at all, with each node's health changes.
fn report(
    c: &Cluster,
    case: &str,
    route_change: Option<Duration>,
    seen: &[Seen],
    healthy: impl Fn(&Seen) -> bool,
) -> Figures {
    assert!(
        seen.iter().all(|s| s.answers > 0),
        "{case}: a connection got no answer at all: {seen:?}\nhealth changes:\n{}",
        c.health_changes()
    );
    let kept: Vec<&Seen> = seen.iter().filter(|s| healthy(s)).collect();
    let f = Figures {
        broken: kept.iter().filter(|s| s.broken.is_some()).count(),
        changed: kept.iter().filter(|s| s.backends.len() > 1).count(),
        stall: kept.iter().map(|s| s.stall).max().unwrap_or_default(),
    };
    let route = route_change.map_or_else(|| "no change".to_owned(), |d| format!("{} ms", d.as_millis()));
    eprintln!(
        "{case}: {} of {} connections broken, {} changed backend, route changed after {route}, longest stall {} ms \
         ({} answers)",
        f.broken,
        kept.len(),
        f.changed,
        f.stall.as_millis(),
        kept.iter().map(|s| s.answers).sum::<u64>()
    );
    for s in kept.iter().filter(|s| s.broken.is_some() || s.backends.len() > 1) {
        eprintln!("  {s:?}");
    }
    f
}

/// Runs `case` while every connection is watched; `until` waits for the route change the case
/// causes (and returns how long it took) before a second of traffic on the new path.
fn watched(
    conns: Vec<HttpConn>,
    case: impl FnOnce() -> Option<Duration>,
) -> (Vec<HttpConn>, Vec<Seen>, Option<Duration>) {
    let watch = Watch::start(conns);
    std::thread::sleep(Duration::from_millis(300));
    let took = case();
    std::thread::sleep(Duration::from_secs(1));
    let (conns, seen) = watch.finish();
    (conns, seen, took)
}

fn assert_held(name: &str, f: &Figures) {
    assert_eq!((f.broken, f.changed), (0, 0), "{name}: connections with a healthy backend must survive unchanged");
}

/// Both nodes pick the same backend for every tuple, connections spread over them, a drain
/// moves traffic without a stall, a node that comes back takes its share again, and when a
/// backend dies only its own connections are lost.
#[test]
fn two_nodes_agree_spread_drain_and_return_without_breaking_a_connection() {
    require_root!();
    let c = Cluster::new("agree", false);

    // Same table on both nodes: the digest, and `balancer flow` for 100 tuples.
    let digest = |i: usize| -> String {
        let out = c.daemons[i].ctl(c.node(i), &["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["vips"][0]["table_digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(digest(0), digest(1), "the two nodes' tables differ");
    let mut per_backend = std::collections::BTreeMap::<String, usize>::new();
    for port in 0..100u16 {
        let src = format!("203.0.113.{}:{}", 1 + port % 50, 10_000 + port * 7);
        let dst = format!("{VIP}:80");
        let answer = |i: usize| -> serde_json::Value {
            let out = c.daemons[i].ctl(c.node(i), &["--json", "flow", &src, &dst]);
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
        };
        let (a, b) = (answer(0), answer(1));
        assert_eq!(a["table_backend"], b["table_backend"], "nodes disagree on {src}");
        *per_backend.entry(a["table_backend"].to_string()).or_default() += 1;
    }
    eprintln!("100 tuples: the same backend on both nodes for all; per backend {per_backend:?}");

    let conns = c.connect();
    let on: Vec<Option<usize>> = conns.iter().map(|k| c.node_of(k.local_addr())).collect();
    let per_node = [0, 1].map(|i| on.iter().filter(|&&n| n == Some(i)).count());
    eprintln!("spread: {CONNS} connections, {} through node 1 and {} through node 2", per_node[0], per_node[1]);
    assert!(per_node.iter().all(|&n| n > 0), "ECMP sent every connection to one node: {per_node:?}");

    // The longest wait with nothing happening: what the backends (Python) and this 2-core
    // machine cost on their own, which the drain's figure is compared with.
    let (conns, seen, _) = watched(conns, || None);
    let quiet = report(&c, "nothing happens", None, &seen, |_| true);
    assert_held("quiet", &quiet);

    // Drain node 1: withdrawn, its connections move to node 2, which steers them by the same
    // table. The drained node forwards on, so the route change itself stalls nothing.
    let (conns, seen, took) = watched(conns, || {
        let out = c.daemons[0].ctl(c.node(0), &["node", "drain"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()[1..]))
    });
    let f = report(&c, "node 1 drains", took, &seen, |_| true);
    assert_held("drain", &f);
    assert!(
        f.stall <= quiet.stall + Duration::from_millis(50),
        "drain stalled a connection for {:?} (with nothing happening: {:?})",
        f.stall,
        quiet.stall
    );

    // It comes back: the router rehashes about half of the connections onto it again.
    let (conns, seen, took) = watched(conns, || {
        assert!(c.daemons[0].ctl(c.node(0), &["node", "resume"]).status.success());
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()))
    });
    assert_held("resume", &report(&c, "node 1 resumes", took, &seen, |_| true));

    // A node's link goes down (no BFD: the 3 s hold time), and comes back.
    let (conns, seen, took) = watched(conns, || {
        c.node(1).run(&["ip", "link", "set", "eth0", "down"]);
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()[..1]))
    });
    assert_held("link down", &report(&c, "node 2's link down, BFD off", took, &seen, |_| true));
    let (conns, seen, took) = watched(conns, || {
        c.node(1).run(&["ip", "link", "set", "eth0", "up"]);
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()))
    });
    assert_held("link up", &report(&c, "node 2's link up again", took, &seen, |_| true));

    // A backend dies while the connections are spread over both nodes: its own connections
    // are lost; nothing else moves.
    let mut c = c;
    let dead = "be1".to_owned();
    let (_conns, seen, _) = watched(conns, || {
        c.backends[0] = None;
        None
    });
    let f = report(&c, &format!("backend {dead} dies"), None, &seen, |s| !s.backends.contains(&dead));
    assert_held("backend dies", &f);
    assert!(seen.iter().any(|s| s.backends.contains(&dead)), "no connection was on {dead}: the case proves nothing");
    eprintln!("health changes:\n{}", c.health_changes());
}

/// With BFD: a node whose daemon is killed keeps forwarding (the data path is pinned) and
/// announcing; a node whose BIRD dies is routed around in a fraction of a second; a node
/// whose link goes down likewise. No connection is lost in any of them.
#[test]
fn a_node_that_fails_loses_no_connection_with_bfd() {
    require_root!();
    let mut c = Cluster::new("bfd", true);
    let conns = c.connect();

    let (conns, seen, _) = watched(conns, || {
        c.daemons[0].proc.kill9();
        None
    });
    assert_held("daemon killed", &report(&c, "node 1's daemon killed", None, &seen, |_| true));
    assert_eq!(bird::next_hops(c.router(), VIP).len(), 2, "a node without its daemon still serves and announces");
    c.daemons[0].restart(&c.lan.hosts[NODES[0]].ns, "info");

    let (conns, seen, took) = watched(conns, || {
        c.birds[0].proc.kill9();
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()[1..]))
    });
    assert_held("BIRD killed", &report(&c, "node 1's BIRD killed, BFD on", took, &seen, |_| true));
    let (conns, seen, took) = watched(conns, || {
        c.birds[0].restart(&c.lan.hosts[NODES[0]].ns);
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()))
    });
    assert_held("BIRD back", &report(&c, "node 1's BIRD back", took, &seen, |_| true));

    let (_conns, seen, took) = watched(conns, || {
        c.node(1).run(&["ip", "link", "set", "eth0", "down"]);
        Some(bird::wait_next_hops(c.router(), VIP, &c.node_ips()[..1]))
    });
    let f = report(&c, "node 2's link down, BFD on", took, &seen, |_| true);
    assert_held("link down, BFD", &f);
    assert!(took.unwrap() < Duration::from_secs(2), "BFD should have cut the route in well under the hold time");
    eprintln!("health changes:\n{}", c.health_changes());
}
