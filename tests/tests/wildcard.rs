//! A VIP on port 0 takes every port of its address (and protocol) that no VIP of its own
//! names; its flows are still told apart by port.

use balancer_tests::{
    fixture::{self, Fixture},
    packet::{Frame, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.40:0"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.41"
  [[vip.backend]]
  address = "198.18.0.42"
[[vip]]
address = "198.51.100.40:443"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.43"
[[vip]]
address = "[2001:db8::40]:0"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8:be::41"
"#;

#[test]
fn every_port_of_the_address_goes_to_the_wildcard_vip_unless_a_vip_names_it() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut seen = std::collections::HashSet::new();
    for port in [1, 22, 80, 8080, 65535] {
        for sport in 40_000..40_016 {
            let f = Frame::tcp("192.0.2.1:1", &format!("198.51.100.40:{port}"), tcp::SYN).sport(sport);
            let (verdict, out) = fx.run(&f.build());
            assert_eq!(verdict, Verdict::Tx, "port {port}");
            let want = fixture::backend_ip(&fx.table_backend(0, &f.flow_key(false))).to_string();
            let got = fixture::backend_of(&out, &["198.18.0.41", "198.18.0.42", "198.18.0.43"]);
            assert_eq!(got, want, "port {port}: the wildcard VIP's table, keyed with the packet's own port");
            seen.insert(got);
        }
    }
    assert_eq!(seen.len(), 2, "flows spread over the wildcard VIP's backends: {seen:?}");
    let (_, out) = fx.run(&Frame::tcp("192.0.2.1:40000", "198.51.100.40:443", tcp::SYN).build());
    assert_eq!(
        fixture::backend_of(&out, &["198.18.0.41", "198.18.0.42", "198.18.0.43"]),
        "198.18.0.43",
        "the port's own VIP"
    );
    let (verdict, out) = fx.run(&Frame::tcp("[2001:db8::1]:40000", "[2001:db8::40]:5432", tcp::SYN).build());
    assert_eq!((verdict, out[14 + 6]), (Verdict::Tx, 41), "IPv6, encapsulated");

    // Another protocol or another address is not the wildcard's.
    for f in
        [Frame::udp("192.0.2.1:40000", "198.51.100.40:53"), Frame::tcp("192.0.2.1:40000", "198.51.100.41:80", tcp::SYN)]
    {
        let input = f.build();
        assert_eq!(fx.run(&input), (Verdict::Pass, input.clone()));
    }
    assert_eq!(fx.reason("no_vip"), 2);
}
