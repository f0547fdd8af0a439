//! ICMP end to end, in namespaces with real stacks.
//!
//! Path MTU through the balancer: a backend behind IPIP answers a client whose last hop has a
//! smaller MTU than the backend's link. The router before that hop sends "fragmentation
//! needed" to the VIP, which only the balancer receives; it must reach the backend, or the
//! backend resends full-size segments until the client gives up.
//!
//! `ping VIP`: no host owns an L4 VIP, so the data path answers.

use std::time::Duration;

use balancer_tests::{backend::HttpBackend, daemon::Daemon, netns::Lan, require_root};

const VIP: &str = "198.51.100.10";

#[test]
fn a_backend_behind_ipip_learns_a_smaller_path_mtu_from_the_relayed_icmp() {
    require_root!();
    let mut lan = Lan::new(&["lb", "be", "router"]);
    let (lb, be, router) = (0, 1, 2);
    let server = HttpBackend::start(&lan.hosts[be], "be", VIP.parse().unwrap(), 80);
    let www = std::env::temp_dir().join(format!("{}-www", lan.hosts[be].ns.name()));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big.bin"), &body).expect("write the file");
    lan.decap_on(be);
    lan.accept_xdp_frames_from(lb);

    // The client sits behind the router; the router's side of that link has MTU 1300, the
    // client's 1500, so the client announces an MSS the path cannot carry.
    let client = balancer_tests::netns::Netns::new("client");
    let r = &lan.hosts[router].ns;
    r.run(&["ip", "link", "add", "tail", "type", "veth", "peer", "name", "eth0", "netns", client.name()]);
    r.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "tail"]);
    r.run(&["ip", "link", "set", "tail", "mtu", "1300", "up"]);
    r.run(&["ethtool", "-K", "tail", "rx", "off", "tx", "off"]);
    r.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    r.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", &lan.hosts[lb].ip.to_string()]);
    client.run(&["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    client.run(&["ip", "link", "set", "eth0", "up"]);
    client.run(&["ethtool", "-K", "eth0", "rx", "off", "tx", "off"]);
    client.run(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
    lan.hosts[be].ns.run(&["ip", "route", "add", "192.0.2.0/24", "via", &lan.hosts[router].ip.to_string()]);
    // The backend's segments leave with don't-fragment (path-MTU discovery), as Linux's do.
    lan.hosts[be].ns.run(&["sysctl", "-qw", "net.ipv4.ip_no_pmtu_disc=0"]);

    let mut args: Vec<String> = Vec::new();
    if let Some(object) = std::env::var_os("BALANCER_BPF_OBJECT") {
        args = vec!["--bpf-object".into(), object.to_string_lossy().into_owned()];
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with_args(
        &lan.hosts[lb].ns,
        &format!(
            "interfaces = [\"eth0\"]\nxdp_mode = \"native\"\n[[vip]]\naddress = \"{VIP}:80\"\nforwarding = \"ipip\"\n\
             [[vip.backend]]\naddress = \"{}\"\n",
            lan.hosts[be].ip
        ),
        &args,
    );

    let url = format!("http://{VIP}/big.bin");
    let out = client.output(&["curl", "-s", "--max-time", "10", "-o", "-", &url]);
    assert!(
        out.status.success() && out.stdout == body,
        "the 300 KB response arrived whole: curl {:?}, {} bytes (backend: {})",
        out.status,
        out.stdout.len(),
        server.proc.log()
    );
    let cache = lan.hosts[be].ns.run(&["ip", "route", "get", "192.0.2.2", "from", VIP]);
    assert!(cache.contains("mtu 1300"), "the backend learned the path MTU: {cache}");
    let stats = daemon.stats(&lan.hosts[lb].ns);
    assert!(stats["icmp"]["relayed"].as_u64().is_some_and(|n| n >= 1), "counted as relayed: {stats}");
    drop(client);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn ping_to_an_l4_vip_is_answered_by_the_data_path() {
    require_root!();
    let mut lan = Lan::new(&["client", "lb", "be"]);
    let _server = HttpBackend::start(&lan.hosts[2], "be", VIP.parse().unwrap(), 80);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", &lan.hosts[1].ip.to_string()]);
    lan.accept_xdp_frames_from(1);
    let config = |answer: bool| {
        format!(
            "interfaces = [\"eth0\"]\nxdp_mode = \"native\"\nanswer_ping = {answer}\n[[vip]]\naddress = \"{VIP}:80\"\n\
             [[vip.backend]]\naddress = \"{}\"\n",
            lan.hosts[2].ip
        )
    };
    let daemon = Daemon::start(&lan.hosts[1].ns, &config(true), "info");
    let out = lan.hosts[0].ns.output(&["ping", "-c", "3", "-i", "0.2", "-W", "1", VIP]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("3 received"), "ping answered: {text}");
    let stats = daemon.stats(&lan.hosts[1].ns);
    assert_eq!(stats["icmp"]["echo_replied"].as_u64(), Some(3), "counted: {stats}");

    daemon.write_config(&config(false));
    let out = daemon.ctl(&lan.hosts[1].ns, &["reload"]);
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let out = lan.hosts[0].ns.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VIP]);
    assert!(!out.status.success(), "answer_ping = false: nobody answers ({})", String::from_utf8_lossy(&out.stdout));
}
