//! L4 balancing end to end, in DSR and in IPIP mode: a client, the balancer (native XDP) and
//! real HTTP backends in network namespaces. Thousands of connections spread by weight, and a
//! long-lived connection keeps working while a backend is added and another removed.

use std::{collections::HashMap, fmt::Write as _, net::SocketAddr, time::Duration};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::Lan,
    require_root,
};

const VIP: &str = "198.51.100.10";
const CONNECTIONS: usize = 3000;

/// Backends are hosts 2.. (198.18.0.3 ..); `(host, weight)`.
fn config(forwarding: &str, backends: &[(u8, u32)]) -> String {
    let mut c = format!(
        "interfaces = [\"eth0\"]\nxdp_mode = \"native\"\n[[vip]]\naddress = \"{VIP}:80\"\nforwarding = \"{forwarding}\"\n"
    );
    for (host, weight) in backends {
        writeln!(c, "[[vip.backend]]\naddress = \"198.18.0.{}\"\nweight = {weight}", host + 1).unwrap();
    }
    c
}

fn balance(forwarding: &str) {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2", "be3", "be4"]);
    let vip = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (2..6).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    if forwarding == "ipip" {
        for h in 2..6 {
            lan.decap_on(h);
        }
    }
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", &lan.hosts[1].ip.to_string()]);
    lan.accept_xdp_frames_from(1);
    let lb = &lan.hosts[1].ns;
    let mut daemon = Daemon::start(lb, &config(forwarding, &[(2, 100), (3, 200), (4, 300)]), "info");
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();

    // Thousands of connections, one request each: shares follow the weights 1:2:3.
    let counts: HashMap<String, usize> = lan.hosts[0].ns.in_thread(|| {
        let mut counts = HashMap::new();
        for i in 0..CONNECTIONS {
            let body =
                HttpConn::connect(addr).and_then(|mut c| c.get()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            *counts.entry(body).or_default() += 1;
        }
        counts
    });
    eprintln!("{forwarding}: {CONNECTIONS} connections, weights 1:2:3 -> {counts:?}");
    for (name, weight) in [("be1", 1.0), ("be2", 2.0), ("be3", 3.0)] {
        let share = counts.get(name).copied().unwrap_or(0) as f64 / CONNECTIONS as f64;
        assert!(
            (share - weight / 6.0).abs() < 0.05,
            "{name}: share {share:.3}, weight share {:.3}: {counts:?}",
            weight / 6.0
        );
    }

    // A long-lived connection, then a reload that adds be4 and removes a backend it is not on.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (report_tx, report_rx) = std::sync::mpsc::channel::<String>();
    let client = &lan.hosts[0].ns;
    std::thread::scope(|s| {
        let long = s.spawn(move || {
            client.in_thread(move || {
                let mut conn = HttpConn::connect(addr).expect("long-lived connection");
                let first = conn.get().expect("first request");
                report_tx.send(first.clone()).unwrap();
                let mut served = 1;
                // Keep asking until told to stop (bounded: at most 200 requests, 20 s).
                for _ in 0..200 {
                    if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                        break;
                    }
                    let body = conn
                        .get()
                        .unwrap_or_else(|e| panic!("long-lived connection broke after {served} requests: {e}"));
                    assert_eq!(body, first, "the long-lived connection moved to another backend");
                    served += 1;
                }
                (first, served)
            })
        });
        let on = report_rx.recv_timeout(Duration::from_secs(5)).expect("long-lived connection started");
        let removed = ["be1", "be2", "be3"].into_iter().find(|b| *b != on).unwrap();
        let keep: Vec<(u8, u32)> = [(2u8, 100u32), (3, 200), (4, 300), (5, 300)]
            .into_iter()
            .filter(|(h, _)| format!("be{}", h - 1) != removed)
            .collect();
        daemon.write_config(&config(forwarding, &keep));
        daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
        daemon.proc.wait_for_log("configuration reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        // New connections now use the new set.
        let after: HashMap<String, usize> = lan.hosts[0].ns.in_thread(|| {
            let mut counts = HashMap::new();
            for _ in 0..300 {
                let body = HttpConn::connect(addr).and_then(|mut c| c.get()).expect("connection after reload");
                *counts.entry(body).or_default() += 1;
            }
            counts
        });
        assert!(after.contains_key("be4"), "the added backend takes new connections: {after:?}");
        assert!(!after.contains_key(removed), "the removed backend takes none: {after:?}");
        tx.send(()).unwrap();
        let (first, served) = long.join().unwrap();
        eprintln!(
            "{forwarding}: long-lived connection on {first} served {served} requests across the reload (removed {removed}, added be4)"
        );
        assert!(served >= 5);
    });
}

#[test]
fn dsr_spreads_connections_by_weight_and_keeps_a_connection_across_a_reload() {
    require_root!();
    balance("dsr");
}

#[test]
fn ipip_spreads_connections_by_weight_and_keeps_a_connection_across_a_reload() {
    require_root!();
    balance("ipip");
}

/// A backend that is not on the balancer's segment: the balancer's route to 203.0.113.7 goes via
/// 198.18.0.3, the gateway host, which here also holds 203.0.113.7 and serves the VIP.
fn routed_backend(forwarding: &str) -> (Lan, HttpBackend, Result<Daemon, String>) {
    let mut lan = Lan::new(&["client", "lb", "gw"]);
    let server = HttpBackend::start(&lan.hosts[2], "behind-gw", VIP.parse().unwrap(), 80);
    lan.hosts[2].ns.run(&["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]);
    lan.decap_on(2);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.hosts[1].ns.run(&["ip", "route", "add", "203.0.113.7/32", "via", "198.18.0.3"]);
    lan.accept_xdp_frames_from(1);
    let cfg = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\nforwarding = \"{forwarding}\"\n[[vip.backend]]\naddress = \"203.0.113.7\"\n"
    );
    let daemon = Daemon::try_start(&lan.hosts[1].ns, &cfg, "info");
    (lan, server, daemon)
}

#[test]
fn ipip_reaches_a_routed_backend_through_its_gateway() {
    require_root!();
    let (lan, _server, daemon) = routed_backend("ipip");
    let daemon = daemon.unwrap_or_else(|log| panic!("daemon did not start:\n{log}"));
    assert!(daemon.proc.log().contains("gateway=198.18.0.3"), "{}", daemon.proc.log());
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let body = lan.hosts[0].ns.in_thread(|| HttpConn::connect(addr).and_then(|mut c| c.get()));
    assert_eq!(body.expect("request through the gateway"), "behind-gw");
}

#[test]
fn dsr_refuses_a_routed_backend_and_says_to_use_ipip() {
    require_root!();
    let (_lan, _server, daemon) = routed_backend("dsr");
    let log = daemon.expect_err("a routed DSR backend cannot work");
    assert!(log.contains("203.0.113.7") && log.contains("use forwarding = \"ipip\""), "{log}");
}
