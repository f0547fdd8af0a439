//! Source allow-lists per VIP (`allow_sources`, Cilium's `loadBalancerSourceRanges`): sources in
//! a VIP's prefixes are served, others dropped and counted, IPv4 and IPv6; a VIP without a list
//! serves everyone; a reload that changes or removes a list takes effect at once.

use balancer_tests::{
    fixture::Fixture,
    packet::{Frame, tcp},
    require_root,
    xdp::Verdict,
};

fn config(v4_sources: &str) -> String {
    format!(
        r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
{v4_sources}
  [[vip.backend]]
  address = "198.18.0.11"
[[vip]]
address = "[2001:db8:ffff::10]:80"
allow_sources = ["2001:db8:1::/48", "2001:db8:2:3::7/128"]
  [[vip.backend]]
  address = "2001:db8:ff::11"
[[vip]]
address = "198.51.100.11:80"
  [[vip.backend]]
  address = "198.18.0.12"
"#
    )
}

fn verdict(fx: &Fixture, src: &str, dst: &str) -> Verdict {
    fx.run(&Frame::tcp(src, dst, tcp::SYN).build()).0
}

#[test]
fn only_allowed_sources_reach_a_filtered_vip_and_the_rest_are_dropped_and_counted() {
    require_root!();
    let mut fx = Fixture::new(&config(r#"allow_sources = ["192.0.2.0/24", "203.0.113.128/25"]"#));
    let v4 = "198.51.100.10:80";
    for allowed in ["192.0.2.1:1000", "192.0.2.255:1000", "203.0.113.200:1000"] {
        assert_eq!(verdict(&fx, allowed, v4), Verdict::Tx, "{allowed}");
    }
    for other in ["192.0.3.1:1000", "203.0.113.127:1000", "10.0.0.1:1000"] {
        assert_eq!(verdict(&fx, other, v4), Verdict::Drop, "{other}");
    }
    let v6 = "[2001:db8:ffff::10]:80";
    assert_eq!(verdict(&fx, "[2001:db8:1:9::5]:1000", v6), Verdict::Tx);
    assert_eq!(verdict(&fx, "[2001:db8:2:3::7]:1000", v6), Verdict::Tx, "a /128");
    assert_eq!(verdict(&fx, "[2001:db8:2:3::8]:1000", v6), Verdict::Drop);
    assert_eq!(verdict(&fx, "[2001:db8:3::5]:1000", v6), Verdict::Drop);
    assert_eq!(fx.reason("source_filtered"), 5);
    // A VIP without a list serves everyone, those sources included.
    assert_eq!(verdict(&fx, "10.0.0.1:1000", "198.51.100.11:80"), Verdict::Tx);

    // A reload that changes the list: the old prefix is gone, the new one served.
    fx.apply(&config(r#"allow_sources = ["10.0.0.0/8"]"#));
    assert_eq!(verdict(&fx, "10.0.0.1:1000", v4), Verdict::Tx);
    assert_eq!(verdict(&fx, "192.0.2.1:1000", v4), Verdict::Drop);
    // And one that removes it: everyone is served again.
    fx.apply(&config(""));
    assert_eq!(verdict(&fx, "192.0.3.1:1000", v4), Verdict::Tx);
    assert_eq!(verdict(&fx, "[2001:db8:3::5]:1000", v6), Verdict::Drop, "the other VIP keeps its own");
}

#[test]
fn a_bad_prefix_is_named_with_its_line() {
    let parse = |line: &str| {
        balancer::config::Config::parse(&config(line), std::path::Path::new("s.toml")).unwrap_err().to_string()
    };
    let e = parse(r#"allow_sources = ["192.0.2.1/24"]"#);
    assert!(e.starts_with("s.toml:5:") && e.contains("host bits"), "{e}");
    let e = parse(r#"allow_sources = ["192.0.2.0/33"]"#);
    assert!(e.contains("not a length 0-32"), "{e}");
    let e = parse(r#"allow_sources = ["2001:db8::/32"]"#);
    assert!(e.contains("vip[0].allow_sources") && e.contains("IP family"), "{e}");
}
