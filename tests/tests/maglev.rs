//! The program and user space agree: for any 5-tuple, the XDP program sends a new flow to exactly
//! the backend the user-space Maglev table names; and the per-VIP source-port flag works.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use balancer_common::vip::flags;
use balancer_tests::{
    fixture::{Fixture, backend_ip, backend_mac},
    fuzz::Rng,
    packet::{Frame, L4, tcp},
    require_root,
    xdp::Verdict,
};

const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
ring_size = 4093
  [[vip.backend]]
  address = "198.18.0.11"
  weight = 10
  [[vip.backend]]
  address = "198.18.0.12"
  weight = 20
  [[vip.backend]]
  address = "198.18.0.13"
  weight = 30
  [[vip.backend]]
  address = "198.18.0.14"
  weight = 0
[[vip]]
address = "[2001:db8::10]:443"
protocol = "udp"
  [[vip.backend]]
  address = "2001:db8::11"
  [[vip.backend]]
  address = "2001:db8::12"
  [[vip.backend]]
  address = "2001:db8::13"
  state = "drain"
  [[vip.backend]]
  address = "2001:db8::14"
"#;

#[test]
fn the_program_picks_exactly_the_backend_the_user_space_table_names() {
    require_root!();
    let fx = Fixture::new(CONFIG);
    let mut rng = Rng(0x5eed);
    let mut seen = std::collections::HashMap::<IpAddr, u32>::new();
    for i in 0..4000 {
        let v6 = i % 2 == 1;
        let sport = 1024 + (rng.bits() % 64000) as u16;
        let (src, dst, frame) = if v6 {
            let s = SocketAddr::new(Ipv6Addr::from(u128::from(rng.bits()) | 0x2001_0db8 << 96).into(), sport);
            let d: SocketAddr = "[2001:db8::10]:443".parse().unwrap();
            (s, d, Frame::new(&s.to_string(), &d.to_string(), L4::Udp))
        } else {
            let s = SocketAddr::new(Ipv4Addr::from(rng.bits() as u32).into(), sport);
            let d: SocketAddr = "198.51.100.10:80".parse().unwrap();
            (s, d, Frame::new(&s.to_string(), &d.to_string(), L4::Tcp { flags: tcp::SYN, seq: 1 }))
        };
        let want = backend_ip(&fx.table_backend(usize::from(v6), &frame.flow_key(false)));
        let (verdict, out) = fx.run(&frame.build());
        assert_eq!(verdict, Verdict::Tx, "{src} -> {dst}");
        assert_eq!(out[..6], backend_mac(want), "{src} -> {dst}: the table says {want}");
        *seen.entry(want).or_default() += 1;
    }
    for never in ["198.18.0.14", "2001:db8::13"] {
        assert!(!seen.contains_key(&never.parse().unwrap()), "weight 0 / drain get no new flows: {seen:?}");
    }
    // Weights 10:20:30 over 2000 flows.
    let share = |a: &str| f64::from(seen[&a.parse::<IpAddr>().unwrap()]) / 2000.0;
    assert!((share("198.18.0.13") - 0.5).abs() < 0.05 && (share("198.18.0.11") - 1.0 / 6.0).abs() < 0.05, "{seen:?}");
}

fn udp_config(ignore: bool) -> String {
    format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"198.51.100.10:443\"\nprotocol = \"udp\"\n\
         ignore_source_port = {ignore}\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\
         [[vip.backend]]\naddress = \"198.18.0.12\"\n[[vip.backend]]\naddress = \"198.18.0.13\"\n"
    )
}

#[test]
fn udp_with_source_port_hashing_off_keeps_a_client_on_one_backend() {
    require_root!();
    let fx = Fixture::new(&udp_config(true));
    assert_eq!(fx.plan.vips[0].meta.flags, flags::IGNORE_SRC_PORT);
    let macs: std::collections::HashSet<Vec<u8>> = (5000..5100u16)
        .map(|p| fx.run(&Frame::udp("192.0.2.1:1", "198.51.100.10:443").sport(p).build()).1[..6].to_vec())
        .collect();
    assert_eq!(macs.len(), 1, "every source port of one client goes to one backend");
    let other_clients: std::collections::HashSet<Vec<u8>> = (1..=60u8)
        .map(|c| fx.run(&Frame::udp(&format!("192.0.2.{c}:5000"), "198.51.100.10:443").build()).1[..6].to_vec())
        .collect();
    assert!(other_clients.len() > 1, "different clients still spread");
}

#[test]
fn udp_with_source_port_hashing_on_spreads_one_client() {
    require_root!();
    let fx = Fixture::new(&udp_config(false));
    let macs: std::collections::HashSet<Vec<u8>> = (5000..5100u16)
        .map(|p| fx.run(&Frame::udp("192.0.2.1:1", "198.51.100.10:443").sport(p).build()).1[..6].to_vec())
        .collect();
    assert_eq!(macs.len(), 3, "one client's ports spread over all backends");
}
