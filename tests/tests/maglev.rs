//! The program and user space agree: for any 5-tuple, the XDP program sends a new flow to exactly
//! the backend the user-space Maglev table names; and the per-VIP source-port flag works.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

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

/// Issue 14: tables beyond 65537 slots, in regions of the ring map that other VIPs' tables do
/// not use, through resizes and a restart that re-adopts the pinned maps.
#[test]
fn large_tables_pick_what_user_space_names_through_resizes_and_a_restart() {
    require_root!();
    let config = |big: u32| {
        let mut c = String::from("interfaces = [\"eth0\"]\n");
        for (vip, size) in [("198.51.100.20", big), ("198.51.100.21", 65537), ("198.51.100.22", big)] {
            writeln!(c, "[[vip]]\naddress = \"{vip}:80\"\nring_size = {size}").unwrap();
            for b in 1..=5 {
                writeln!(c, "[[vip.backend]]\naddress = \"198.18.{}.{b}\"", vip.rsplit('.').next().unwrap()).unwrap();
            }
        }
        c
    };
    let check = |fx: &Fixture, what: &str| {
        let mut rng = Rng(0xb16);
        for i in 0..3000 {
            let vip = i % 3;
            let f = Frame::tcp(
                &format!("{}:{}", Ipv4Addr::from(rng.bits() as u32), 1024 + rng.bits() % 60000),
                &format!("198.51.100.{}:80", 20 + vip),
                tcp::SYN,
            );
            let (verdict, out) = fx.run(&f.build());
            let want = fx.table_backend(vip, &f.flow_key(false));
            assert_eq!(verdict, Verdict::Tx, "{what}");
            assert_eq!(out[..6], backend_mac(backend_ip(&want)), "{what}: flow {i} to VIP {vip}");
        }
    };
    let pins = balancer_tests::daemon::PinDir::new(&format!("bt-bigring-{}", std::process::id()));
    let mut fx = Fixture::with_pins(&pins.0, &config(1_000_003));
    check(&fx, "two tables of 1000003 beside one of 65537");
    fx.apply(&config(262_147));
    check(&fx, "resized to 262147");
    drop(fx);
    // A restarted daemon reads the regions back from the pinned VIP entries.
    let mut fx = Fixture::with_pins(&pins.0, &config(262_147));
    check(&fx, "after a restart");
    fx.apply(&config(1_000_003));
    check(&fx, "resized back to 1000003 after the restart");
    fx.apply(&config(4093));
    check(&fx, "small again");

    let too_many = (0..5).fold(String::new(), |mut c, i| {
        writeln!(c, "[[vip]]\naddress = \"198.51.100.{}:80\"\nring_size = 1000003", 30 + i).unwrap();
        c
    });
    let e = balancer::config::Config::parse(
        &format!("interfaces = [\"eth0\"]\n{too_many}"),
        std::path::Path::new("big.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("vip[4].ring_size") && e.contains("80 of the 64 units"), "{e}");
}
