//! The data path on a shared segment (issue 16): a frame that reaches the balancer but is not
//! addressed to its interface's MAC — promiscuous mode, a bridge flooding a dead port's
//! frames — is passed for the kernel to drop, not balanced, so two nodes that see the same
//! frame do not both forward it.

use balancer_tests::{
    fixture::Fixture,
    packet::{Frame, L4, LB_MAC, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\nring_size = 251\n\
                      [[vip.backend]]\naddress = \"10.0.0.2\"\n";

/// `BPF_PROG_TEST_RUN` receives its frames on the loopback device of the test's namespace.
fn loopback_index() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex").expect("lo exists").trim().parse().expect("an index")
}

#[test]
fn frames_for_another_mac_are_passed_and_counted_not_balanced() {
    require_root!();
    let mut f = Fixture::new(CONFIG);
    let frame = |dst_mac: [u8; 6]| Frame { dst_mac, ..Frame::tcp("192.0.2.7:40000", "10.0.0.1:80", tcp::SYN) }.build();
    // Without the table (an interface the daemon did not name) nothing is checked.
    assert_eq!(f.run(&frame([2, 0, 0, 0, 0, 0x99])).0, Verdict::Tx);
    f.set_local_macs(&[(loopback_index(), LB_MAC)]);
    let ours = f.run(&frame(LB_MAC));
    assert_eq!(ours.0, Verdict::Tx, "addressed to us: balanced");
    for other in [[2, 0, 0, 0, 0, 0x99], [0xff; 6], [0x33, 0x33, 0, 0, 0, 1]] {
        let before = f.reason("other_host");
        let (verdict, out) = f.run(&frame(other));
        assert_eq!(verdict, Verdict::Pass, "{other:02x?}: passed to the kernel, which drops it");
        assert_eq!(out, frame(other), "untouched");
        assert_eq!(f.reason("other_host"), before + 1);
    }
    // Another interface's entry does not make this one's frames foreign.
    f.set_local_macs(&[(loopback_index() + 1000, [2, 0, 0, 0, 0, 0x99])]);
    assert_eq!(f.run(&frame(LB_MAC)).0, Verdict::Tx);
}

/// The MAC is looked at only for frames the program would act on: an echo request to a VIP
/// sent to another MAC is passed unanswered as `other_host`, while a frame for no VIP is passed
/// as `no_vip` whoever it was sent to (it is the kernel's either way, and the look would cost
/// every such frame a table lookup).
#[test]
fn the_mac_is_checked_for_frames_the_balancer_would_act_on() {
    require_root!();
    let mut f = Fixture::new(&format!("answer_ping = true\n{CONFIG}"));
    f.set_local_macs(&[(loopback_index(), LB_MAC)]);
    let other = [2, 0, 0, 0, 0, 0x99];
    let echo = |dst_mac: [u8; 6]| Frame { dst_mac, ..Frame::new("192.0.2.7:0", "10.0.0.1:0", L4::IcmpEcho) }.build();
    assert_eq!(f.run(&echo(LB_MAC)).0, Verdict::Tx, "an echo request to us is answered");
    let (host, no_vip) = (f.reason("other_host"), f.reason("no_vip"));
    assert_eq!(f.run(&echo(other)), (Verdict::Pass, echo(other)), "to another MAC: not answered");
    assert_eq!(f.stats().icmp[2], ("echo_replied", 1));
    assert_eq!(f.reason("other_host"), host + 1);
    let not_vip = Frame { dst_mac: other, ..Frame::tcp("192.0.2.7:40000", "10.0.0.9:80", tcp::SYN) }.build();
    assert_eq!(f.run(&not_vip), (Verdict::Pass, not_vip.clone()));
    assert_eq!((f.reason("other_host"), f.reason("no_vip")), (host + 1, no_vip + 1), "counted as for no VIP");
}

/// A client whose neighbour entry for the balancer names a MAC nobody holds: the bridge floods
/// its frames to every port, the balancer's among them. They used to be balanced (the
/// backend answered by DSR and the connection worked, as it would have on every node seeing
/// the flood); now the balancer passes them, the kernel drops them, and `other_host` counts
/// them. With the right MAC the same client is served.
#[test]
fn a_flooded_frame_for_another_node_is_not_balanced() {
    require_root!();
    let (lan, _server, daemon) = served_lan();
    let (client, lb) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
    let get = || client.http_status(&format!("http://{VIP}/"));
    let neighbour = |mac: &str| {
        client.run(&["ip", "neigh", "replace", "198.18.0.2", "lladdr", mac, "dev", "eth0", "nud", "permanent"]);
    };
    let other_host = || {
        let s: serde_json::Value = serde_json::from_slice(&daemon.ctl(lb, &["--json", "status"]).stdout).unwrap();
        s["not_balanced"]["other_host"].as_u64().unwrap_or(0)
    };
    neighbour("02:b4:17:00:00:99");
    // IPv6 off, so no neighbour discovery's multicast counts as other_host meanwhile.
    for ns in [client, lb] {
        ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    let before = other_host();
    let flooded = get();
    assert_ne!(flooded, "200", "a frame for another MAC was balanced");
    // curl's SYN and its retransmission within 2 s both reached the balancer and were passed.
    assert!(other_host() >= before + 2, "the flooded SYNs counted as other_host: {before} -> {}", other_host());
    neighbour("02:b4:17:00:00:02");
    let served = get();
    assert_eq!(served, "200", "served once its frames carry the balancer's MAC");
}

/// The balancer's interface gets a new MAC while it runs (`ip link set … address`, a bond
/// failing over): its frames used to count as `other_host` from then on, until a restart; the
/// daemon now reads the MACs again (every 2 s) and serves the new one.
#[test]
fn a_new_mac_on_the_interface_is_served_without_a_restart() {
    use std::time::{Duration, Instant};

    require_root!();
    let (lan, _server, _daemon) = served_lan();
    let (client, lb) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
    let get = || client.http_status(&format!("http://{VIP}/"));
    assert_eq!(get(), "200");
    let new_mac = "02:b4:17:00:00:77";
    lb.run(&["ip", "link", "set", "eth0", "address", new_mac]);
    client.run(&["ip", "neigh", "replace", "198.18.0.2", "lladdr", new_mac, "dev", "eth0", "nud", "permanent"]);
    let start = Instant::now();
    let mut last = get();
    while last != "200" && start.elapsed() < Duration::from_secs(8) {
        last = get();
    }
    assert_eq!(last, "200", "frames for the interface's new MAC are balanced");
    eprintln!("served at the new MAC after {:?}", start.elapsed());
}

const VIP: &str = "198.51.100.10";

/// A client routed to `VIP` through the balancer (198.18.0.2), which forwards it by DSR to one
/// HTTP backend.
fn served_lan() -> (balancer_tests::netns::Lan, balancer_tests::backend::HttpBackend, balancer_tests::daemon::Daemon) {
    use balancer_tests::{backend::HttpBackend, daemon::Daemon, netns::Lan};
    let mut lan = Lan::new(&["client", "lb", "be1"]);
    let server = HttpBackend::start(&lan.hosts[2], "be1", VIP.parse().unwrap(), 80);
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n"
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    (lan, server, daemon)
}
