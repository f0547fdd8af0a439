//! IP-in-IP forwarding: the balancer adds an outer header to the backend and keeps every byte
//! of the client's packet; the decap program on the backend gives that packet back.

use balancer_common::hash::encap_entropy;
use balancer_tests::{
    fixture::{Fixture, backend_mac},
    packet::{Frame, LB_MAC, checksum, ipv4_header_ok, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
ipip_source_v4 = "172.16.0.0/16"
ipip_source_v6 = "fd00:b417::/96"
[[vip]]
address = "198.51.100.10:80"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "203.0.113.7"
[[vip]]
address = "[2001:db8::10]:443"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8:be::7"
"#;

#[test]
fn ipv4_in_ipv4_keeps_the_client_packet_and_adds_a_valid_outer_header() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    for (what, mut fr) in [
        ("untagged", Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN)),
        ("802.1Q-tagged", Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN)),
    ] {
        if what != "untagged" {
            fr.vlan = Some(7);
        }
        fr.tos = 0xb8; // EF with ECT(0) bits clear
        fr.ipv4_frag = 0x4000; // don't fragment
        let input = fr.build();
        let l2 = if fr.vlan.is_some() { 18 } else { 14 };
        let (verdict, out) = fx.run(&input);
        assert_eq!(verdict, Verdict::Tx, "{what}");
        assert_eq!(out.len(), input.len() + 20, "{what}");
        assert_eq!(out[..6], backend_mac("203.0.113.7".parse().unwrap()), "{what}: to the backend's next hop");
        assert_eq!(out[6..12], LB_MAC, "{what}: from the balancer");
        assert_eq!(out[12..l2], input[12..l2], "{what}: VLAN tag and ethertype kept");
        let o = &out[l2..l2 + 20];
        assert_eq!(o[0], 0x45);
        assert_eq!(o[1], 0xb8, "{what}: TOS/ECN copied from the client's packet");
        assert_eq!(o[4..6], [0x12, 0x34], "{what}: identification copied");
        assert_eq!(o[6..8], [0x40, 0], "{what}: don't-fragment copied, no fragment offset");
        assert_eq!(u16::from_be_bytes([o[2], o[3]]) as usize, input.len() - l2 + 20, "{what}: outer total length");
        assert_eq!((o[8], o[9]), (64, 4), "{what}: TTL 64, protocol IPIP");
        assert!(ipv4_header_ok(&out, l2), "{what}: outer checksum");
        let e = encap_entropy(&fr.flow_key(false));
        assert_eq!(o[12..16], [172, 16, e[0] ^ e[2], e[1] ^ e[3]], "{what}: outer source");
        assert_eq!(o[16..20], [203, 0, 113, 7], "{what}: outer destination");
        assert_eq!(out[l2 + 20..], input[l2..], "{what}: the client's packet, byte for byte");
    }
}

#[test]
fn outer_source_differs_between_connections_of_one_client() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let srcs: std::collections::HashSet<[u8; 4]> = (40_000..40_064u16)
        .map(|p| fx.run(&Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::SYN).sport(p).build()).1)
        .map(|out| out[26..30].try_into().unwrap())
        .collect();
    assert_eq!(srcs.len(), 64, "one outer source per connection");
}

#[test]
fn ipv6_in_ipv6_keeps_the_client_packet_and_adds_a_valid_outer_header() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut fr = Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:443", tcp::SYN);
    fr.tos = 0xb8;
    let input = fr.build();
    let (verdict, out) = fx.run(&input);
    assert_eq!(verdict, Verdict::Tx);
    assert_eq!(out.len(), input.len() + 40);
    let e = encap_entropy(&fr.flow_key(false));
    assert_eq!(out[14..18], [0x6b, 0x80 | (e[0] & 0x0f), e[1], e[2]], "traffic class copied, flow label from the flow");
    assert_eq!(out[..6], backend_mac("2001:db8:be::7".parse().unwrap()));
    assert_eq!(out[6..12], LB_MAC);
    assert_eq!(out[12..14], [0x86, 0xdd]);
    let o = &out[14..54];
    assert_eq!(o[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([o[4], o[5]]) as usize, input.len() - 14, "payload length is the inner packet");
    assert_eq!((o[6], o[7]), (41, 64), "next header IPv6, hop limit 64");
    let want_src: std::net::Ipv6Addr = "fd00:b417::".parse().unwrap();
    assert_eq!(o[8..20], want_src.octets()[..12]);
    assert_eq!(o[20..24], e);
    assert_eq!(o[24..40], "2001:db8:be::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    assert_eq!(out[54..], input[14..], "the client's packet, byte for byte");
}

#[test]
fn decap_returns_the_client_packet_the_balancer_encapsulated() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut tagged = Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK);
    tagged.vlan = Some(7);
    for fr in [
        Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN),
        tagged,
        Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:443", tcp::SYN),
    ] {
        let input = fr.build();
        let (_, encapsulated) = fx.run(&input);
        let (verdict, out) = fx.run_decap(&encapsulated);
        assert_eq!(verdict, Verdict::Pass, "handed to the backend's stack");
        assert_eq!(out[..12], encapsulated[..12], "MACs as received");
        assert_eq!(out[12..], input[12..], "exactly the client's packet");
        // The inner TCP checksum still holds.
        let l3 = if fr.vlan.is_some() { 18 } else { 14 };
        if fr.src.is_ipv4() {
            let seg = &out[l3 + 20..];
            let p = balancer_tests::packet::pseudo_header_sum(fr.src.ip(), fr.dst.ip(), 6, seg.len());
            assert_eq!(checksum(seg, p), 0);
        }
    }
}

#[test]
fn decap_passes_everything_else_untouched() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let plain = Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN).build();
    let mut gre = Frame::new("192.0.2.1:1", "198.51.100.10:1", balancer_tests::packet::L4::Other(47));
    gre.payload = vec![0x45; 40];
    let mut v6_in_v4 = Frame::new("192.0.2.1:1", "198.51.100.10:1", balancer_tests::packet::L4::Other(4));
    v6_in_v4.payload = vec![0x60; 40];
    let mut truncated = Frame::new("192.0.2.1:1", "198.51.100.10:1", balancer_tests::packet::L4::Other(4));
    truncated.payload = vec![];
    // IPIP from a sender outside the balancers' source prefix is not a tunnel into this host.
    let (_, mut foreign) = fx.run(&Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN).build());
    foreign[14 + 12..14 + 14].copy_from_slice(&[10, 9]);
    for (what, f) in [
        ("IPIP from a foreign source", foreign),
        ("plain TCP", plain),
        ("GRE", gre.build()),
        ("IPIP carrying IPv6", v6_in_v4.build()),
        ("IPIP without an inner packet", truncated.build()),
    ] {
        assert_eq!(fx.run_decap(&f), (Verdict::Pass, f.clone()), "{what}");
    }
}

/// Issue 16, two tiers: IPIP from the balancers' prefix to an L7 VIP of the node that gets it
/// (an L7 node behind an L4 tier) is decapsulated by the balancer program itself, as the
/// `decap` program does on plain backends, and counted. Not for any other destination (the
/// node opens no tunnel to what it does not terminate), and not from another prefix.
#[test]
fn the_balancer_decapsulates_what_an_l4_tier_sends_its_l7_vips_and_nothing_else() {
    require_root!();
    let l4 = Fixture::new(CONFIG);
    // The same addresses as L7 VIPs, on the node behind.
    let l7 = Fixture::new(
        r#"
interfaces = ["eth0"]
ipip_source_v4 = "172.16.0.0/16"
ipip_source_v6 = "fd00:b417::/96"
[[vip]]
address = "198.51.100.10:80"
[vip.l7]
sticky = "hash"
  [[vip.backend]]
  address = "10.9.0.1"
  port = 8080
[[vip]]
address = "[2001:db8::10]:443"
[vip.l7]
sticky = "hash"
  [[vip.backend]]
  address = "2001:db8:9::1"
  port = 8443
"#,
    );
    for fr in [
        Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK),
        Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:443", tcp::ACK),
    ] {
        let input = fr.build();
        let (_, encapsulated) = l4.run(&input);
        let before = l7.reason("decapsulated");
        let (verdict, out) = l7.run(&encapsulated);
        assert_eq!(verdict, Verdict::Pass, "for this host's stack");
        assert_eq!(out[12..], input[12..], "exactly the client's packet");
        assert_eq!(out, l7.run_decap(&encapsulated).1, "what the decap program gives");
        assert_eq!(l7.reason("decapsulated"), before + 1);
        // On the L4 node, where the inner destination is no L7 VIP: left alone.
        assert_eq!(l4.run(&encapsulated), (Verdict::Pass, encapsulated.clone()));
    }
    // Another port of the L7 VIP's address, and an outer source outside the prefix: untouched.
    let (_, other_port) = l4.run(&Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK).build());
    let mut other_port = other_port;
    other_port[14 + 20 + 22] = 0x51; // inner destination port 81 (checksums do not matter here)
    let mut foreign = l4.run(&Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK).build()).1;
    foreign[14 + 12] = 10; // outer source 10.16.x.x
    for frame in [other_port, foreign] {
        let decapsulated = l7.reason("decapsulated");
        assert_eq!(l7.run(&frame), (Verdict::Pass, frame.clone()));
        assert_eq!(l7.reason("decapsulated"), decapsulated);
    }
}
