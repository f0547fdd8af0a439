//! What the data path leaves to the kernel: every frame it does not balance comes out untouched,
//! with `XDP_PASS`, counted under its reason. A table, one row per case.

use balancer_tests::{
    fixture::Fixture,
    packet::{Frame, L4, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.11"
[[vip]]
address = "[2001:db8::10]:80"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8::11"
"#;

fn to_vip(f: impl FnOnce(&mut Frame)) -> Vec<u8> {
    let mut fr = Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN);
    f(&mut fr);
    fr.build()
}

/// `frame` with the big-endian u16 at `at` set to `v` (checksums are not the parser's concern).
fn set_u16(mut frame: Vec<u8>, at: usize, v: u16) -> Vec<u8> {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
    frame
}

fn to_vip6(f: impl FnOnce(&mut Frame)) -> Vec<u8> {
    let mut fr = Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:80", tcp::SYN);
    f(&mut fr);
    fr.build()
}

#[test]
fn frames_the_balancer_does_not_handle_pass_untouched_and_are_counted() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut arp = Frame::tcp("192.0.2.1:1", "198.51.100.10:80", 0).build();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp.truncate(14 + 28);
    let mut truncated = to_vip(|_| {});
    truncated.truncate(14 + 20 + 10);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("ARP", arp, "not_ip"),
        (
            "IPv4 header cut short",
            {
                let mut f = to_vip(|_| {});
                f.truncate(14 + 12);
                f
            },
            "truncated",
        ),
        ("frame ends inside the TCP header, before its IP length says", truncated, "bad_length"),
        ("IPv4 with options", to_vip(|f| f.ipv4_options = vec![1, 1, 1, 0]), "ipv4_options"),
        ("IPv4 first fragment", to_vip(|f| f.ipv4_frag = 0x2000), "fragment"),
        ("IPv4 later fragment", to_vip(|f| f.ipv4_frag = 0x0010), "fragment"),
        // (Echo requests to a VIP address are answered: tests/icmp.rs.)
        (
            "ICMP echo reply to the VIP address",
            to_vip(|f| f.l4 = L4::Icmp { ty: 0, code: 0, rest: [0, 1, 0, 1] }),
            "icmp",
        ),
        ("GRE to the VIP address", to_vip(|f| f.l4 = L4::Other(47)), "other_proto"),
        ("TCP to another address", to_vip(|f| f.dst = "198.51.100.99:80".parse().unwrap()), "no_vip"),
        ("TCP to the VIP address, another port", to_vip(|f| f.dst.set_port(81)), "no_vip"),
        ("UDP to a TCP VIP", to_vip(|f| f.l4 = L4::Udp), "no_vip"),
        ("IPv6 fragment header", to_vip6(|f| f.ipv6_ext = vec![(44, vec![0; 6])]), "fragment"),
        ("IPv4 total length shorter than its TCP header", set_u16(to_vip(|_| {}), 14 + 2, 20 + 10), "bad_length"),
        ("IPv4 total length beyond the frame", set_u16(to_vip(|_| {}), 14 + 2, 1400), "bad_length"),
        ("IPv6 payload length 0 (jumbogram)", set_u16(to_vip6(|_| {}), 14 + 4, 0), "bad_length"),
        ("IPv6 payload length beyond the frame", set_u16(to_vip6(|_| {}), 14 + 4, 1400), "bad_length"),
        (
            "ICMPv6 echo reply to the VIP address",
            to_vip6(|f| f.l4 = L4::Icmp { ty: 129, code: 0, rest: [0, 1, 0, 1] }),
            "icmp",
        ),
        (
            "IPv6 with more extension headers than are skipped",
            to_vip6(|f| f.ipv6_ext = vec![(0, vec![]), (60, vec![]), (60, vec![]), (60, vec![])]),
            "ipv6_ext_header",
        ),
    ];
    for (what, frame, reason) in cases {
        let before = fx.reason(reason);
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, Verdict::Pass, "{what}");
        assert_eq!(out, frame, "{what}: the frame must come out unchanged");
        assert_eq!(fx.reason(reason), before + 1, "{what}: counted as {reason}");
    }
    let s = fx.stats();
    assert_eq!(s.vips.iter().map(|v| v.traffic.packets).sum::<u64>(), 0, "nothing was forwarded");
}

#[test]
fn pass_program_passes_everything_untouched() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let frame = to_vip(|_| {});
    assert_eq!(fx.run_pass(&frame), (Verdict::Pass, frame));
}
