//! A restarted daemon re-adopts the maps an earlier run pinned, with their ids: established
//! flows stay on their backends even when the new configuration lists backends and VIPs in
//! another order, which would otherwise renumber them.

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
