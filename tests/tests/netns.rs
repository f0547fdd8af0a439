//! End to end in network namespaces: the real daemon, attached in native mode to a veth, balances
//! real TCP connections from a client to HTTP backends by direct server return.
//!
//! Topology (one L2 segment, a bridge in its own namespace):
//! client 198.18.0.1 — lb 198.18.0.2 (XDP on eth0) — be1 198.18.0.3, be2 198.18.0.4;
//! the VIP 198.51.100.10:80 is routed by the client via the lb, and held on the backends' lo.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::Lan,
    require_root,
};

const VIP: &str = "198.51.100.10";

fn config() -> String {
    format!(
        r#"
interfaces = ["eth0"]
xdp_mode = "native"
[[vip]]
address = "{VIP}:80"
  [[vip.backend]]
  address = "198.18.0.3"
  [[vip.backend]]
  address = "198.18.0.4"
"#
    )
}

/// `curl` from the client to the VIP: the body (the backend's name), or the error.
fn get(lan: &Lan, local_port: u16) -> Result<String, String> {
    let out = lan.hosts[0].ns.output(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        "--local-port",
        &local_port.to_string(),
        &format!("http://{VIP}/"),
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The topology above, with both backends serving and the client routing the VIP via the lb.
fn dsr_lan() -> (Lan, [HttpBackend; 2]) {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let vip: IpAddr = VIP.parse().unwrap();
    let servers =
        [HttpBackend::start(&lan.hosts[2], "be1", vip, 80), HttpBackend::start(&lan.hosts[3], "be2", vip, 80)];
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", &lan.hosts[1].ip.to_string()]);
    lan.accept_xdp_frames_from(1);
    (lan, servers)
}

#[test]
fn daemon_attached_natively_balances_tcp_connections_by_dsr() {
    require_root!();
    let (lan, _servers) = dsr_lan();

    let lb = &lan.hosts[1].ns;
    let mut daemon = Daemon::start(lb, &config(), "info,balancer_ebpf=debug");
    let link = lb.run(&["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains("prog/xdp"), "native XDP (not xdpgeneric) on eth0:\n{link}");

    let mut answered: HashMap<String, u32> = HashMap::new();
    for port in 41_000..41_030u16 {
        let body =
            get(&lan, port).unwrap_or_else(|e| panic!("request from port {port} failed: {e}\n{}", daemon.proc.log()));
        *answered.entry(body).or_default() += 1;
    }
    assert_eq!(answered.keys().len(), 2, "both backends answered: {answered:?}");
    assert_eq!(answered.values().sum::<u32>(), 30);

    let stats = daemon.stats(lb);
    let vip_stats = &stats["vips"][0];
    assert_eq!(vip_stats["vip"], format!("{VIP}:80"));
    assert!(vip_stats["new_flows"].as_u64().unwrap() >= 30, "{stats:#}");
    assert!(vip_stats["packets"].as_u64().unwrap() >= 30 * 4, "SYN, ACK, request, FIN at least: {stats:#}");

    // aya-log: the program's debug record reached the daemon's tracing output.
    daemon.proc.wait_for_log("new flow on vip 0 to backend", Duration::from_secs(5));

    let status = daemon.proc.stop().expect("daemon was running");
    assert!(status.success(), "daemon exits cleanly on SIGTERM: {status}\n{}", daemon.proc.log());
    // The data path outlives the daemon: still attached, still balancing.
    let link = lb.run(&["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains("prog/xdp"), "the XDP program stays attached after the daemon exits:\n{link}");
    get(&lan, 41_100).expect("balanced without the daemon");
    // `balancer teardown` removes it.
    let out = Daemon::cli(lb, &["teardown", "--pin-dir", daemon.pins.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = lb.run(&["ip", "-d", "link", "show", "eth0"]);
    assert!(!link.contains("prog/xdp"), "teardown detaches the XDP program:\n{link}");
}

#[test]
fn kill_9_and_restart_drop_no_connection() {
    require_root!();
    let (lan, _servers) = dsr_lan();
    let lb = &lan.hosts[1].ns;
    let mut daemon = Daemon::start(lb, &config(), "info");
    let addr: std::net::SocketAddr = format!("{VIP}:80").parse().unwrap();
    let client = &lan.hosts[0].ns;
    client.in_thread(|| {
        let mut conns: Vec<(HttpConn, String)> = (0..8)
            .map(|_| {
                let mut c = HttpConn::connect(addr).expect("connect");
                let who = c.get().expect("first request");
                (c, who)
            })
            .collect();
        let mut ask = |when: &str| {
            for (i, (c, who)) in conns.iter_mut().enumerate() {
                let got = c.get().unwrap_or_else(|e| panic!("connection {i} broke {when}: {e}"));
                assert_eq!(&got, who, "connection {i} moved {when}");
            }
            HttpConn::connect(addr).and_then(|mut c| c.get()).unwrap_or_else(|e| panic!("new connection {when}: {e}"));
        };
        ask("before");
        daemon.proc.kill9();
        ask("while the daemon is dead");
        daemon.restart(lb, "info");
        assert!(daemon.proc.log().contains("replaced the program in the pinned link"), "{}", daemon.proc.log());
        ask("after the restart");
    });
}

#[test]
fn bad_config_exits_78_naming_file_line_and_field() {
    require_root!();
    let ns = balancer_tests::netns::Netns::new("cfg");
    let path = std::env::temp_dir().join(format!("{}.toml", ns.name()));
    std::fs::write(&path, "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"198.51.100.10:80\"\nring_size = 1000\n")
        .unwrap();
    let out = Daemon::cli(&ns, &["run", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(78), "a configuration error, not a usage error (2)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", path.display())) && err.contains("not a prime"), "{err}");
}
