//! The demo behind `cargo xtask demo`: a client, the balancer and three HTTP backends in network
//! namespaces; the real daemon with `examples/demo.toml`; requests through the VIP, each
//! printed with the backend that answered; a drain through the CLI; `balancer status`; then
//! two nodes behind an ECMP router, one of which dies. Everything is torn down (also on
//! Ctrl-C).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
};

use balancer_tests::{backend::HttpBackend, daemon::Daemon, netns::Lan};

const VIP: &str = "198.51.100.10";
const L7_VIP: &str = "198.51.100.20";
const KEY: &str = "/tmp/balancer-demo-cookie.key";
const REQUESTS: u16 = 40;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[expect(clippy::too_many_lines, reason = "the demo's steps, read top to bottom")]
fn main() {
    if !balancer_tests::is_root() {
        eprintln!("the demo needs root: sudo -E cargo xtask demo");
        std::process::exit(1);
    }
    // Ctrl-C ends the demo early; the guards below then remove every namespace and process.
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    println!("== Building the demo LAN: client 198.18.0.1, lb 198.18.0.2, be1-3 198.18.0.3-5");
    let mut lan = Lan::new(&["client", "lb", "be1", "be2", "be3"]);
    let vip: IpAddr = VIP.parse().unwrap();
    let _backends: Vec<HttpBackend> =
        (1..=3).map(|i| HttpBackend::start(&lan.hosts[i + 1], &format!("be{i}"), vip, 80)).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", &lan.hosts[1].ip.to_string()]);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{L7_VIP}/32"), "via", &lan.hosts[1].ip.to_string()]);
    lan.hosts[1].ns.run(&["ip", "addr", "add", &format!("{L7_VIP}/32"), "dev", "lo"]);
    lan.accept_xdp_frames_from(1);
    std::fs::write(KEY, "demo-only-cookie-key-0123456789abcdef").expect("write the cookie key");
    std::fs::set_permissions(KEY, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod the key");
    let pki = balancer_tests::tls::Pki::new("balancer-demo");
    pki.leaf("shop", &["shop.example"], (-1, 90));
    if INTERRUPTED.load(Ordering::SeqCst) {
        return;
    }

    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml"))
        .expect("examples/demo.toml");
    println!("== Starting `balancer run` in the lb namespace with examples/demo.toml:\n");
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
        println!("     {line}");
    }
    let lb = &lan.hosts[1].ns;
    let mut daemon = Daemon::start(lb, &config, "info");
    let link = lb.run(&["ip", "-d", "link", "show", "eth0"]);
    let mode = if link.contains("prog/xdp ") { "native" } else { "generic" };
    println!("\n== XDP program attached to lb:eth0 in {mode} mode");

    println!(
        "== {REQUESTS} HTTP requests from the client to http://{VIP}/ (a new connection each,\n   from client port P; the XDP program hashes the 5-tuple onto the Maglev table):\n"
    );
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..REQUESTS {
        if INTERRUPTED.load(Ordering::SeqCst) {
            println!("interrupted");
            return;
        }
        let port = 45_000 + i;
        let out = lan.hosts[0].ns.output(&[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "--local-port",
            &port.to_string(),
            &format!("http://{VIP}/"),
        ]);
        let who = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            format!("FAILED: {}", String::from_utf8_lossy(&out.stderr).trim())
        };
        print!("  {:>2}. :{port} -> {who:<4}", i + 1);
        if (i + 1) % 5 == 0 {
            println!();
        }
        *answered.entry(who).or_default() += 1;
    }
    println!("\n== Answers per backend (weights 2:1:1): {answered:?}");

    println!("\n== `balancer backend set {VIP}:80 198.18.0.3 --state drain`, then 20 more requests:");
    let out = daemon.ctl(lb, &["backend", "set", &format!("{VIP}:80"), "198.18.0.3", "--state", "drain"]);
    print!("   {}", String::from_utf8_lossy(&out.stdout));
    let mut after: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..20u16 {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return;
        }
        let out = lan.hosts[0].ns.output(&[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "--local-port",
            &(46_000 + i).to_string(),
            &format!("http://{VIP}/"),
        ]);
        let who = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        *after.entry(if who.is_empty() { "failed".into() } else { who }).or_default() += 1;
    }
    println!("   answers: {after:?} (be1 is drained: it keeps its connections, takes no new ones)");

    println!("\n== `ping -c 3 {VIP}` from the client: no host owns the VIP, the XDP program answers (answer_ping):");
    let out = lan.hosts[0].ns.output(&["ping", "-c", "3", "-i", "0.2", "-W", "1", VIP]);
    for line in
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("bytes from") || l.contains("packet loss"))
    {
        println!("   {line}");
    }

    println!("\n== L7 VIP http://{L7_VIP}/ (insert mode): two clients with cookie jars, 8 requests each:");
    for client in ["A", "B"] {
        let jar = format!("/tmp/balancer-demo-{client}.jar");
        let _ = std::fs::remove_file(&jar);
        let answers: Vec<String> = (0..8)
            .map(|_| {
                let out = lan.hosts[0].ns.output(&[
                    "curl",
                    "-s",
                    "--max-time",
                    "3",
                    "-c",
                    &jar,
                    "-b",
                    &jar,
                    &format!("http://{L7_VIP}/"),
                ]);
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            })
            .collect();
        println!("   client {client}: {}", answers.join(" "));
        let _ = std::fs::remove_file(&jar);
    }
    println!("   (each keeps the backend its first response's signed BALANCERID cookie names)");

    println!("\n== Routing by path on the same address: http://{L7_VIP}/static/ goes to the `static` pool (be3's /):");
    let statics: Vec<String> = (0..4)
        .map(|_| {
            let out = lan.hosts[0].ns.output(&["curl", "-s", "--max-time", "3", &format!("http://{L7_VIP}/static/")]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    println!("   {}", statics.join(" "));

    println!(
        "\n== `balancer import httpd` of an Apache mod_proxy_balancer site (tests/fixtures/import/seed004-httpd.conf):\n"
    );
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/import/seed004-httpd.conf");
    let out = lan.hosts[1].ns.output(&[
        balancer_tests::daemon::balancer_bin().to_str().unwrap_or("balancer"),
        "import",
        "httpd",
        fixture,
    ]);
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).take(14) {
        println!("     {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("   {line}");
    }

    println!("\n== The same over HTTPS, https://shop.example/ on {L7_VIP}:443 (curl --http2, the demo's CA):");
    let jar = "/tmp/balancer-demo-tls.jar";
    let _ = std::fs::remove_file(jar);
    let resolve = format!("shop.example:443:{L7_VIP}");
    let ca = pki.ca_file.to_str().unwrap_or_default();
    let mut lines = Vec::new();
    for _ in 0..4 {
        let out = lan.hosts[0].ns.output(&[
            "curl",
            "-s",
            "--max-time",
            "3",
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-c",
            jar,
            "-b",
            jar,
            "-w",
            " (%{http_version}, %{scheme})",
            "https://shop.example/",
        ]);
        lines.push(String::from_utf8_lossy(&out.stdout).trim().replace('\n', " "));
    }
    println!("   {}", lines.join(" | "));
    let _ = std::fs::remove_file(jar);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let log = std::fs::read_to_string("/tmp/balancer-demo-access.log").unwrap_or_default();
    println!("\n== The access log's last line (examples/demo.toml [access_log]):");
    println!("   {}", log.lines().last().unwrap_or("(empty)"));

    println!("\n== `balancer status`:\n");
    print!("{}", String::from_utf8_lossy(&daemon.ctl(lb, &["status"]).stdout));

    daemon.proc.stop();
    let _ = std::fs::remove_file(KEY);
    let _ = std::fs::remove_file("/tmp/balancer-demo-access.log");
    drop(daemon);
    drop(lan);
    if !INTERRUPTED.load(Ordering::SeqCst) {
        two_nodes();
    }
    println!("\n== Done: stopping the daemons and BIRDs, removing pinned programs and maps, and the namespaces.");
}

/// Two nodes with the same configuration behind a router that learns the VIP from both over
/// BGP: kept-alive connections spread over them; one node's link goes down, and each
/// connection goes on through the other node to the backend it had.
fn two_nodes() {
    use balancer_tests::{
        bird,
        cluster::{Cluster, VIP as CLUSTER_VIP},
    };
    println!(
        "\n== Two balancer nodes (198.18.0.2, .3) behind a router (198.18.0.1, also the client), two backends:\n   \
         BIRD on each node announces the VIP while the node can serve it (`[announce]`, `balancer bgp config`);\n   \
         the router's BIRD installs both as next hops, hashed on the 5-tuple; BFD on every session."
    );
    let c = Cluster::new("demo", true);
    let route = c.router().run(&["ip", "route", "show", &format!("{CLUSTER_VIP}/32")]);
    println!("   router: {}", route.split_whitespace().collect::<Vec<_>>().join(" "));
    let mut conns = c.connect();
    conns.truncate(8);
    println!("\n== 8 kept-alive connections from the router to http://{CLUSTER_VIP}/:");
    let mut before = Vec::new();
    for k in &mut conns {
        let node = c.node_of(k.local_addr()).map_or("?".into(), |n| format!("node {}", n + 1));
        let who = k.get().unwrap_or_else(|e| format!("FAILED: {e}"));
        println!("   :{} -> {node} -> {who}", k.local_addr().port());
        before.push(who);
    }
    println!("\n== Node 2's link goes down (`ip link set eth0 down` in its namespace):");
    c.node(1).run(&["ip", "link", "set", "eth0", "down"]);
    let took = bird::wait_next_hops(c.router(), CLUSTER_VIP, &c.node_ips()[..1]);
    println!("   BFD noticed, the router's route lost node 2 after {} ms", took.as_millis());
    let mut kept = 0;
    for (k, was) in conns.iter_mut().zip(&before) {
        let who = k.get().unwrap_or_else(|e| format!("FAILED: {e}"));
        let same = if &who == was { "same backend" } else { "CHANGED" };
        kept += usize::from(&who == was);
        println!("   :{} -> node 1 -> {who} ({same})", k.local_addr().port());
    }
    println!(
        "   {kept} of {} connections kept their backend: node 1 has no flow entry for node 2's, but the same\n   \
         Maglev table gives each the backend it had (README: Running several nodes).",
        conns.len()
    );
}
