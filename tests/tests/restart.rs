//! A restarted daemon re-adopts the maps an earlier run pinned, with their ids: established
//! flows stay on their backends even when the new configuration lists backends and VIPs in
//! another order, which would otherwise renumber them.

use balancer_common::maps;
use balancer_tests::{
    daemon::PinDir,
    fixture::{self, Fixture},
    packet::{Frame, tcp},
    require_root,
};

const BEFORE: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.20:80"
  [[vip.backend]]
  address = "198.18.0.21"
[[vip]]
address = "198.51.100.10:80"
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
"#;

/// The same services, listed in another order.
const AFTER: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
  [[vip.backend]]
  address = "198.18.0.13"
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
[[vip]]
address = "198.51.100.20:80"
  [[vip.backend]]
  address = "198.18.0.21"
"#;

fn backend(out: &[u8]) -> &'static str {
    fixture::backend_of(out, &["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.21"])
}

#[test]
fn established_flows_keep_their_backends_across_a_restart_with_a_reordered_config() {
    require_root!();
    let pins = PinDir::new(&format!("bt-restart-{}", std::process::id()));
    let syn = |p: u16| Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::SYN).sport(p).build();
    let ack = |p: u16| Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::ACK).sport(p).build();
    let before: Vec<&str> = {
        let fx = Fixture::with_pins(&pins.0, BEFORE);
        (40_000..40_100u16).map(|p| backend(&fx.run(&syn(p)).1)).collect()
    };
    // The old process is gone; its maps are still pinned.
    let mut fx = Fixture::with_pins(&pins.0, AFTER);
    // Make the table disagree with the old one, so only the flow table can keep the flows.
    fx.apply(&AFTER.replacen("address = \"198.18.0.13\"", "address = \"198.18.0.13\"\n  weight = 1", 1));
    for (i, p) in (40_000..40_100u16).enumerate() {
        assert_eq!(backend(&fx.run(&ack(p)).1), before[i], "source port {p}");
    }
    let other = Frame::tcp("192.0.2.1:7", "198.51.100.20:80", tcp::SYN).build();
    assert_eq!(backend(&fx.run(&other).1), "198.18.0.21", "the other VIP still goes to its own backend");
}

#[test]
fn maps_pinned_by_another_version_are_refused_with_what_to_do() {
    require_root!();
    // A flow table as an earlier build pinned it: an LRU hash keyed by the 40-byte 5-tuple.
    let pins = PinDir::new(&format!("bt-oldpins-{}", std::process::id()));
    std::fs::create_dir_all(&pins.0).unwrap();
    let flows = pins.0.join("FLOWS");
    balancer_tests::netns::sh(&[
        "bpftool",
        "map",
        "create",
        flows.to_str().unwrap(),
        "type",
        "lru_hash",
        "key",
        "40",
        "value",
        "8",
        "entries",
        "1024",
        "name",
        "FLOWS",
    ]);
    let err = balancer::dataplane::Dataplane::load(None, Some(&pins.0), 0).err().expect("the old map is refused");
    let msg = err.to_string();
    assert!(msg.contains("map FLOWS pinned there has 40-byte keys"), "{msg}");
    assert!(msg.contains(&format!("balancer teardown --pin-dir {}", pins.0.display())), "{msg}");
    assert!(flows.exists(), "nothing was removed on the operator's behalf");
}

/// ICMP and "too big" leave the TCP/UDP path by tail call through `BRANCHES`, which is pinned
/// like every other map: a restart that re-adopts it must put its own branch programs there
/// (the kernel accepts them into an array an earlier run's programs owned), and they answer.
#[test]
fn the_branches_answer_after_a_restart_that_re_adopts_the_pinned_maps() {
    require_root!();
    branches_answer_across_a_restart("bt-restart-branches", &[]);
}

/// An upgrade from a version before the branches (2c7d83a): its pin directory holds every
/// other map, whose shapes have not changed, and neither `BRANCHES` nor `BRANCH_ARGS`. The
/// new run adopts the old maps, creates the two beside them, and the branches answer.
#[test]
fn pins_of_a_version_without_the_branches_are_adopted_and_the_branches_answer() {
    require_root!();
    branches_answer_across_a_restart("bt-upgrade-branches", &[maps::BRANCHES, maps::BRANCH_ARGS]);
}

/// Runs twice on one pin directory, with `missing` unpinned in between (what an older version
/// leaves), and checks each time that echo requests and packets too big for the tunnel are
/// answered, the second time by the counters' second count (the counters were adopted).
fn branches_answer_across_a_restart(name: &str, missing: &[&str]) {
    use balancer_tests::{
        packet::{CLIENT_MAC, L4, LB_MAC},
        xdp::Verdict,
    };
    let config = r#"
interfaces = ["eth0"]
ipip_source_v4 = "172.16.0.0/16"
interface_mtu = { eth0 = 1500 }
[[vip]]
address = "198.51.100.10:80"
forwarding = "ipip"
  [[vip.backend]]
  address = "203.0.113.7"
"#;
    let pins = PinDir::new(&format!("{name}-{}", std::process::id()));
    let mut request = Frame::new("192.0.2.1:0", "198.51.100.10:0", L4::IcmpEcho);
    request.payload = b"across a restart".to_vec();
    let mut answer = Frame::new("198.51.100.10:0", "192.0.2.1:0", L4::Icmp { ty: 0, code: 0, rest: [0, 1, 0, 1] });
    answer.payload.clone_from(&request.payload);
    (answer.dst_mac, answer.src_mac) = (CLIENT_MAC, LB_MAC);
    let mut big = Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK);
    (big.payload, big.ipv4_frag) = (vec![0xa5; 1441], 0x4000);
    for run in ["first run", "after the restart"] {
        if run != "first run" {
            for m in missing {
                std::fs::remove_file(pins.0.join(m)).expect("the map was pinned");
            }
        }
        let fx = Fixture::with_pins(&pins.0, config);
        assert_eq!(fx.run(&request.build()), (Verdict::Tx, answer.build()), "echo answered, {run}");
        let (verdict, out) = fx.run(&big.build());
        assert_eq!((verdict, &out[14 + 20..14 + 22]), (Verdict::Tx, &[3u8, 4][..]), "fragmentation needed, {run}");
        assert_eq!(fx.stats().icmp[1], ("too_big_sent", if run == "first run" { 1 } else { 2 }), "{run}");
    }
    for m in missing {
        assert!(pins.0.join(m).exists(), "{m} pinned by the new run");
    }
}
