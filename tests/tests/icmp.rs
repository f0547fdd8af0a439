//! ICMP in the data path: errors about a VIP's flow relayed to the flow's backend, "too big"
//! sent to clients whose packets would not fit once encapsulated, echo requests to VIP
//! addresses answered. Exact bytes, v4 and v6.

use balancer_tests::{
    fixture::{Fixture, backend_ip, backend_mac},
    packet::{CLIENT_MAC, Frame, L4, LB_MAC, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
ipip_source_v4 = "172.16.0.0/16"
ipip_source_v6 = "fd00:b417::/96"
interface_mtu = { eth0 = 1500 }
[[vip]]
address = "198.51.100.10:80"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "203.0.113.7"
  [[vip.backend]]
  address = "203.0.113.8"
[[vip]]
address = "[2001:db8::10]:443"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8:be::7"
  [[vip.backend]]
  address = "2001:db8:be::8"
[[vip]]
address = "198.51.100.20:80"
ring_size = 251
  [[vip.backend]]
  address = "198.51.100.31"
  [[vip.backend]]
  address = "198.51.100.32"
"#;

const CLIENT_V4: &str = "192.0.2.1:40000";
const CLIENT_V6: &str = "[2001:db8::1]:40000";

/// What a router on the return path sends when a backend's response (from `vip` to `client`,
/// `size` bytes of payload) does not fit: an ICMP error of `ty`/`code`/`rest` from `router`,
/// quoting the response's IP header and the first 28 bytes after it.
fn error_about(router: &str, vip: &str, client: &str, kind: (u8, u8, [u8; 4])) -> Frame {
    let mut response = Frame::tcp(vip, client, tcp::ACK);
    response.payload = vec![0x5a; 1400];
    response.ipv4_frag = 0x4000;
    Frame::icmp_error(router, &response, kind)
}

fn mtu_v4(m: u16) -> (u8, u8, [u8; 4]) {
    let b = m.to_be_bytes();
    (3, 4, [0, 0, b[0], b[1]])
}

fn mtu_v6(m: u32) -> (u8, u8, [u8; 4]) {
    (2, 0, m.to_be_bytes())
}

#[test]
fn fragmentation_needed_about_a_flow_goes_to_its_backend_inside_the_flows_tunnel() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let flow = Frame::tcp(CLIENT_V4, "198.51.100.10:80", tcp::ACK);
    let want = fx.table_backend(0, &flow.flow_key(false));
    let (_, forwarded) = fx.run(&flow.build());

    let input = error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, mtu_v4(1280)).build();
    let (verdict, out) = fx.run(&input);
    assert_eq!(verdict, Verdict::Tx);
    assert_eq!(out[..6], backend_mac(backend_ip(&want)), "to the flow's backend");
    assert_eq!(out[6..12], LB_MAC);
    assert_eq!(out.len(), input.len() + 20);
    assert_eq!(out[14 + 9], 4, "IPIP");
    assert_eq!(out[14 + 12..14 + 20], forwarded[14 + 12..14 + 20], "the outer addresses of the flow's own packets");
    assert_eq!(out[34..], input[14..], "the ICMP message, byte for byte");
    assert_eq!(fx.stats().icmp, [("relayed", 1), ("too_big_sent", 0), ("echo_replied", 0)]);
}

#[test]
fn packet_too_big_about_a_flow_goes_to_its_backend_inside_the_flows_tunnel() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let flow = Frame::tcp(CLIENT_V6, "[2001:db8::10]:443", tcp::ACK);
    let want = fx.table_backend(1, &flow.flow_key(false));
    let (_, forwarded) = fx.run(&flow.build());
    for (what, kind) in [("packet too big", mtu_v6(1280)), ("port unreachable", (1, 4, [0; 4]))] {
        let input = error_about("[2001:db8:ffff::1]:0", "[2001:db8::10]:443", CLIENT_V6, kind).build();
        let (verdict, out) = fx.run(&input);
        assert_eq!(verdict, Verdict::Tx, "{what}");
        assert_eq!(out[..6], backend_mac(backend_ip(&want)), "{what}");
        assert_eq!(out[14 + 6], 41, "{what}: IPv6 in IPv6");
        assert_eq!(out[14 + 8..14 + 40], forwarded[14 + 8..14 + 40], "{what}: the flow's outer addresses");
        assert_eq!(out[54..], input[14..], "{what}: the ICMPv6 message, byte for byte");
    }
}

#[test]
fn an_error_follows_the_flow_table_where_the_ring_has_moved_on() {
    require_root!();
    let mut fx = Fixture::new(CONFIG);
    let flow = Frame::tcp(CLIENT_V4, "198.51.100.10:80", tcp::SYN);
    let pinned = backend_ip(&fx.table_backend(0, &flow.flow_key(false)));
    fx.run(&flow.build());
    // The pinned backend leaves the ring: new flows go to the other, this one stays.
    fx.apply(&CONFIG.replacen(&format!("address = \"{pinned}\""), &format!("address = \"{pinned}\"\n  weight = 0"), 1));
    let (verdict, out) = fx.run(&error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, mtu_v4(1280)).build());
    assert_eq!(verdict, Verdict::Tx);
    assert_eq!(out[..6], backend_mac(pinned), "the backend that holds the connection");
}

#[test]
fn an_error_about_a_dsr_flow_reaches_the_backend_unchanged_above_l2() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let want = fx.table_backend(2, &Frame::tcp(CLIENT_V4, "198.51.100.20:80", tcp::ACK).flow_key(false));
    let input = error_about("198.18.0.254:0", "198.51.100.20:80", CLIENT_V4, mtu_v4(1280)).build();
    let (verdict, out) = fx.run(&input);
    assert_eq!(verdict, Verdict::Tx);
    assert_eq!(out[..6], backend_mac(backend_ip(&want)));
    assert_eq!(out[6..12], LB_MAC);
    assert_eq!(out[12..], input[12..]);
}

#[test]
fn icmp_that_is_not_about_a_vips_flow_is_left_to_the_kernel() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut options = error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, mtu_v4(1280));
    options.payload[0] = 0x46;
    let mut short = error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, mtu_v4(1280));
    short.payload.truncate(22);
    let mut spoofed = error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, mtu_v4(1280));
    spoofed.dst = "198.51.100.99:0".parse().unwrap();
    for (what, f) in [
        ("about a flow of no VIP", error_about("198.18.0.254:0", "198.51.100.99:80", CLIENT_V4, mtu_v4(1280))),
        (
            "about another port of the VIP's address",
            error_about("198.18.0.254:0", "198.51.100.10:81", CLIENT_V4, mtu_v4(1280)),
        ),
        ("quoting an IPv4 header with options", options),
        ("quoting no ports", short),
        ("sent to another address than the quote's source", spoofed),
        ("time exceeded", error_about("198.18.0.254:0", "198.51.100.10:80", CLIENT_V4, (11, 0, [0; 4]))),
        (
            "an echo reply",
            Frame::new("192.0.2.1:0", "198.51.100.10:0", L4::Icmp { ty: 0, code: 0, rest: [0, 1, 0, 1] }),
        ),
    ] {
        let input = f.build();
        assert_eq!(fx.run(&input), (Verdict::Pass, input.clone()), "{what}");
    }
    assert_eq!(fx.stats().icmp, [("relayed", 0), ("too_big_sent", 0), ("echo_replied", 0)]);
}

#[test]
fn echo_requests_to_a_vip_address_are_answered_in_place() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    for (client, vip, reply) in [("192.0.2.1:0", "198.51.100.10:0", 0), ("[2001:db8::1]:0", "[2001:db8::10]:0", 129)] {
        let mut request = Frame::new(client, vip, L4::IcmpEcho);
        request.payload = b"ping payload 0123456789".to_vec();
        let mut answer = Frame::new(vip, client, L4::Icmp { ty: reply, code: 0, rest: [0, 1, 0, 1] });
        answer.payload = request.payload.clone();
        (answer.dst_mac, answer.src_mac) = (CLIENT_MAC, LB_MAC);
        assert_eq!(fx.run(&request.build()), (Verdict::Tx, answer.build()), "echo to {vip}");
    }
    let other = Frame::new("192.0.2.1:0", "198.51.100.99:0", L4::IcmpEcho).build();
    assert_eq!(fx.run(&other), (Verdict::Pass, other.clone()), "not a VIP address");
    assert_eq!(fx.stats().icmp[2], ("echo_replied", 2));

    let quiet = Fixture::new(&CONFIG.replace("interface_mtu", "answer_ping = false\ninterface_mtu"));
    let request = Frame::new("192.0.2.1:0", "198.51.100.10:0", L4::IcmpEcho).build();
    assert_eq!(quiet.run(&request), (Verdict::Pass, request.clone()), "answer_ping = false");
}

/// A client packet of `payload` bytes of TCP payload to `vip`, don't-fragment set.
fn big(client: &str, vip: &str, payload: usize) -> Frame {
    let mut f = Frame::tcp(client, vip, tcp::ACK);
    f.payload = vec![0xa5; payload];
    f.ipv4_frag = 0x4000;
    f
}

#[test]
fn a_packet_that_would_not_fit_once_encapsulated_gets_fragmentation_needed() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    // 1480 bytes of IP fit a 1500-byte MTU with the outer header; 1481 do not.
    let (verdict, out) = fx.run(&big(CLIENT_V4, "198.51.100.10:80", 1440).build());
    assert_eq!((verdict, out.len()), (Verdict::Tx, 14 + 20 + 1480), "fits");
    for vlan in [None, Some(7)] {
        let mut f = big(CLIENT_V4, "198.51.100.10:80", 1441);
        f.vlan = vlan;
        let input = f.build();
        let l2 = if vlan.is_some() { 18 } else { 14 };
        let mut answer =
            Frame::new("198.51.100.10:0", "192.0.2.1:0", L4::Icmp { ty: 3, code: 4, rest: [0, 0, 0x05, 0xc8] });
        (answer.dst_mac, answer.src_mac, answer.vlan) = (CLIENT_MAC, LB_MAC, vlan);
        (answer.tos, answer.ipv4_id) = (0xc0, 0);
        answer.payload = input[l2..l2 + 64].to_vec();
        assert_eq!(
            fx.run(&input),
            (Verdict::Tx, answer.build()),
            "VLAN {vlan:?}: next-hop MTU 1480, the packet quoted"
        );
    }
    assert_eq!(fx.stats().icmp[1], ("too_big_sent", 2));
    // Without don't-fragment the client does not do path-MTU discovery: nothing to tell it,
    // and XDP cannot fragment.
    let mut f = big(CLIENT_V4, "198.51.100.10:80", 1441);
    f.ipv4_frag = 0;
    assert_eq!(fx.run(&f.build()).0, Verdict::Drop);
    assert_eq!(fx.reason("too_big"), 1);
    assert_eq!(fx.stats().icmp[1], ("too_big_sent", 2));
}

#[test]
fn an_ipv6_packet_that_would_not_fit_once_encapsulated_gets_packet_too_big() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let (verdict, out) = fx.run(&big(CLIENT_V6, "[2001:db8::10]:443", 1400).build());
    assert_eq!((verdict, out.len()), (Verdict::Tx, 14 + 40 + 1460), "fits");
    let input = big(CLIENT_V6, "[2001:db8::10]:443", 1401).build();
    let mut answer =
        Frame::new("[2001:db8::10]:0", "[2001:db8::1]:0", L4::Icmp { ty: 2, code: 0, rest: [0, 0, 0x05, 0xb4] });
    (answer.dst_mac, answer.src_mac) = (CLIENT_MAC, LB_MAC);
    answer.payload = input[14..14 + 104].to_vec();
    assert_eq!(fx.run(&input), (Verdict::Tx, answer.build()), "MTU 1460, the packet quoted");
    // A DSR VIP adds no header: nothing to check.
    let (verdict, _) = fx.run(&big(CLIENT_V4, "198.51.100.20:80", 1460).build());
    assert_eq!(verdict, Verdict::Tx);
}

/// Large packets with forged sources must not turn the balancer into an ICMP reflector: like the
/// kernel with its own ICMP errors, each CPU sends at most 1000 "too big" a window (about a
/// second) and drops the rest.
#[test]
fn too_big_messages_are_limited_per_cpu() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let input = big(CLIENT_V4, "198.51.100.10:80", 1441).build();
    let (mut sent, mut dropped) = (0, 0);
    for _ in 0..4100 {
        match fx.run(&input).0 {
            Verdict::Tx => sent += 1,
            Verdict::Drop => dropped += 1,
            v => panic!("{v:?}"),
        }
    }
    // Two CPUs, and the run may straddle a window: at most 4000 sent.
    assert!((1000..=4000).contains(&sent) && dropped >= 100, "sent {sent}, dropped {dropped}");
    assert_eq!(fx.reason("too_big"), dropped);
    assert_eq!(fx.stats().icmp[1], ("too_big_sent", sent));
}
