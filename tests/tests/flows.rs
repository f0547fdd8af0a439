//! The flow table: sets of eight slots that tell flows apart by fingerprint, a SYN that starts a
//! new connection on a reused 5-tuple, and what a full set gives up.

use std::collections::HashMap;

use balancer_common::{flow::Place, hash::flow_hash64};
use balancer_tests::{
    fixture::{self, Fixture},
    packet::{Frame, tcp},
    require_root,
};

const THREE: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
"#;

const BACKENDS: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];

fn packet(client: &str, port: u16, flags: u8) -> Frame {
    Frame::tcp(&format!("{client}:1"), "198.51.100.10:80", flags).sport(port)
}

fn backend_of(out: &[u8]) -> &'static str {
    fixture::backend_of(out, &BACKENDS)
}

/// `THREE` with `backend` set to `line` (e.g. `weight = 0`).
fn with(backend: &str, line: &str) -> String {
    THREE.replacen(&format!("address = \"{backend}\""), &format!("address = \"{backend}\"\n  {line}"), 1)
}

/// Nine client ports (from one of four client addresses) whose flows fall in the same set of
/// a table with secret `secret`.
fn nine_in_one_set(secret: u64) -> Vec<(String, u16)> {
    let mut sets: HashMap<u32, Vec<(String, u16)>> = HashMap::new();
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"] {
        for port in 1024..=u16::MAX {
            let key = packet(client, port, tcp::SYN).flow_key(false);
            let members = sets.entry(Place::of(flow_hash64(&key), secret).set).or_default();
            members.push((client.to_owned(), port));
            if members.len() == 9 {
                return members.clone();
            }
        }
    }
    panic!("no set got nine of 258k flows");
}

#[test]
fn eight_flows_of_one_set_each_keep_their_own_backend_and_a_ninth_evicts_one() {
    require_root!();
    let mut fx = Fixture::new(THREE);
    let flows = nine_in_one_set(fx.dp.flow_secret());
    let (eight, ninth) = flows.split_at(8);
    let first: Vec<&str> = eight.iter().map(|(c, p)| backend_of(&fx.run(&packet(c, *p, tcp::SYN).build()).1)).collect();
    assert!(first.iter().any(|b| *b != first[0]), "the eight flows use more than one backend: {first:?}");

    // Take each backend out of the ring in turn: every flow still finds its own slot (not a
    // neighbour's with another fingerprint), so every ACK stays where its SYN went.
    for gone in BACKENDS {
        fx.apply(&with(gone, "weight = 0"));
        for ((c, p), b) in eight.iter().zip(&first) {
            assert_eq!(
                backend_of(&fx.run(&packet(c, *p, tcp::ACK).build()).1),
                *b,
                "{c}:{p} with {gone} out of the ring"
            );
        }
    }
    fx.apply(THREE);

    let (c, p) = &ninth[0];
    fx.run(&packet(c, *p, tcp::SYN).build());
    let pinned = |(c, p): &(String, u16)| fx.dp.flow_entry(&packet(c, *p, tcp::SYN).flow_key(false)).unwrap().is_some();
    assert!(pinned(&ninth[0]), "the newest flow has a slot");
    let kept = eight.iter().filter(|f| pinned(f)).count();
    assert_eq!(kept, 7, "a full set gives up exactly one slot");
}

#[test]
fn a_full_set_gives_up_its_idle_flow_and_keeps_the_busy_ones() {
    require_root!();
    let mut fx = Fixture::new(THREE);
    let flows = nine_in_one_set(fx.dp.flow_secret());
    let (eight, ninth) = flows.split_at(8);
    let first: Vec<&str> = eight.iter().map(|(c, p)| backend_of(&fx.run(&packet(c, *p, tcp::SYN).build()).1)).collect();
    // Slot times count in units of 256 jiffies (2.56 s at the lowest HZ, 100): after that long,
    // the seven flows that send again are fresher than the first, which stays quiet.
    std::thread::sleep(std::time::Duration::from_millis(2700));
    for (c, p) in &eight[1..] {
        fx.run(&packet(c, *p, tcp::ACK).build());
    }
    let (c, p) = &ninth[0];
    fx.run(&packet(c, *p, tcp::SYN).build());
    let pinned = |(c, p): &(String, u16)| fx.dp.flow_entry(&packet(c, *p, tcp::SYN).flow_key(false)).unwrap().is_some();
    assert!(!pinned(&eight[0]), "the idle flow gave up its slot");
    assert!(eight[1..].iter().all(pinned), "the busy flows kept theirs");
    // And they still hold their backends across a ring change.
    for gone in BACKENDS {
        fx.apply(&with(gone, "weight = 0"));
        for ((c, p), b) in eight[1..].iter().zip(&first[1..]) {
            assert_eq!(
                backend_of(&fx.run(&packet(c, *p, tcp::ACK).build()).1),
                *b,
                "{c}:{p} with {gone} out of the ring"
            );
        }
    }
}

/// Issue 14: the set a flow fell in was the low bits of the public flow hash, so a client could
/// pick 5-tuples that share one set and evict the flows there. Now the placement is keyed with
/// each table's own secret.
#[test]
fn flows_that_share_a_set_by_the_public_hash_do_not_share_one_in_the_table() {
    require_root!();
    let fx = Fixture::new(THREE);
    let other = Fixture::new(THREE);
    assert_ne!(fx.dp.flow_secret(), other.dp.flow_secret(), "each table has its own secret");
    // What an attacker who knows the hash (it is in the source, and every node shares it) sends:
    // sixteen flows whose hashes' low bits agree, twice a set's eight ways.
    let mut by_set: HashMap<u32, Vec<(String, u16)>> = HashMap::new();
    let clients: Vec<String> = (1..=32).map(|i| format!("192.0.2.{i}")).collect();
    let attack = clients
        .iter()
        .flat_map(|c| (1024..=u16::MAX).map(move |p| (c.clone(), p)))
        .find_map(|(c, p)| {
            let key = packet(&c, p, tcp::SYN).flow_key(false);
            let set = by_set.entry(flow_hash64(&key) as u32 & (balancer_common::maps::FLOW_SETS - 1)).or_default();
            set.push((c, p));
            (set.len() == 16).then(|| set.clone())
        })
        .expect("sixteen flows of one set among two million");
    for (c, p) in &attack {
        fx.run(&packet(c, *p, tcp::SYN).build());
    }
    let flows = fx.stats().vips[0].flows;
    assert_eq!((flows.inserts, flows.evictions), (16, 0), "no flow evicted another");
    for (c, p) in &attack {
        assert!(fx.dp.flow_entry(&packet(c, *p, tcp::SYN).flow_key(false)).unwrap().is_some(), "{c}:{p} pinned");
    }
}

#[test]
fn a_syn_on_a_reused_tuple_is_a_new_connection_and_avoids_a_draining_backend() {
    require_root!();
    let mut fx = Fixture::new(THREE);
    let port = (20_000..21_000u16)
        .find(|&p| backend_of(&fx.run(&packet("192.0.2.1", p, tcp::SYN).build()).1) == BACKENDS[0])
        .expect("some flow lands on the first backend");
    fx.apply(&with(BACKENDS[0], "state = \"drain\""));

    let ack = packet("192.0.2.1", port, tcp::ACK).build();
    assert_eq!(backend_of(&fx.run(&ack).1), BACKENDS[0], "the old connection stays on its draining backend");
    // The client reuses the 5-tuple for a new connection (TIME_WAIT reuse, a NAT's port pool):
    // the SYN is steered by the ring, and the connection then sticks to where it went.
    let moved = backend_of(&fx.run(&packet("192.0.2.1", port, tcp::SYN).build()).1);
    assert_ne!(moved, BACKENDS[0], "a new connection never goes to a draining backend");
    assert_eq!(backend_of(&fx.run(&ack).1), moved, "and its packets follow it there");
}

#[test]
fn status_counts_each_backend_s_pinned_flows() {
    require_root!();
    let pins = balancer_tests::daemon::PinDir::new(&format!("bt-flowcount-{}", std::process::id()));
    let fx = Fixture::with_pins(&pins.0, THREE);
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for p in 40_000..40_300u16 {
        *seen.entry(backend_of(&fx.run(&packet("192.0.2.7", p, tcp::SYN).build()).1)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "the 300 flows use all three backends: {seen:?}");
    // What `balancer status` shows in its FLOWS column: read from the pinned table.
    let counts = balancer::dataplane::stats::flow_counts(&pins.0).expect("read the pinned flow table");
    let mut counted: Vec<u64> = counts.values().copied().collect();
    let mut expected: Vec<u64> = seen.values().copied().collect();
    counted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(counted, expected, "flows per backend");
}

#[test]
fn vips_come_and_go_while_the_others_keep_forwarding() {
    require_root!();
    // The VIP filter is rewritten with every VIP change. One load of the program keeps sending
    // to a VIP that never leaves while another adds and removes a second VIP: not one packet
    // for the first may be turned away, and the second is balanced exactly when configured.
    use balancer_tests::xdp::Verdict;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let pins = balancer_tests::daemon::PinDir::new(&format!("bt-vipfilter-{}", std::process::id()));
    let both =
        format!("{THREE}[[vip]]\naddress = \"198.51.100.77:8080\"\n  [[vip.backend]]\n  address = \"198.18.0.12\"\n");
    let mut writer = Fixture::with_pins(&pins.0, THREE);
    let second = |port| Frame::tcp("192.0.2.5:1", "198.51.100.77:8080", tcp::SYN).sport(port).build();
    let (stop, sent, turned_away) = (AtomicBool::new(false), AtomicU32::new(0), AtomicU32::new(0));
    let loaded = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Loading writes the configuration too: the writer waits for it (one writer at a time).
            let fx = Fixture::with_pins(&pins.0, THREE);
            loaded.store(true, Relaxed);
            let mut port = 1024u16;
            // Bounded: until the writer is done, at most 200k packets.
            while !stop.load(Relaxed) && sent.load(Relaxed) < 200_000 {
                port = port.wrapping_add(1).max(1024);
                let (v, _) = fx.run(&packet("192.0.2.9", port, tcp::SYN).build());
                sent.fetch_add(1, Relaxed);
                turned_away.fetch_add(u32::from(v != Verdict::Tx), Relaxed);
            }
        });
        let waited = std::time::Instant::now();
        while !loaded.load(Relaxed) && waited.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for round in 0..300u16 {
            let with_second = round % 2 == 0;
            writer.apply(if with_second { &both } else { THREE });
            let (v, out) = writer.run(&second(2000 + round));
            if with_second {
                assert_eq!(
                    (v, backend_of(&out)),
                    (Verdict::Tx, "198.18.0.12"),
                    "round {round}: the added VIP is balanced"
                );
            } else {
                assert_eq!(v, Verdict::Pass, "round {round}: the removed VIP's packets go to the kernel");
            }
        }
        stop.store(true, Relaxed);
    });
    let (sent, turned_away) = (sent.into_inner(), turned_away.into_inner());
    eprintln!("{sent} packets to the steady VIP during 300 VIP changes, {turned_away} not balanced");
    assert!(sent > 1000, "the sender ran");
    assert_eq!(turned_away, 0);
}

#[test]
fn vips_that_share_an_index_byte_are_each_found_and_lookalikes_are_not() {
    require_root!();
    use balancer_common::{family, proto, vip::index_slot};
    use balancer_tests::xdp::Verdict;
    let slot = |ip: [u8; 4], port: u16| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&ip);
        index_slot(&addr, port.to_be(), proto::TCP, family::V4)
    };
    let target = slot([198, 51, 100, 30], 80);
    // Ports whose destination lands on the same index byte as 198.51.100.30:80.
    let mut same = (1..=u16::MAX).filter(|&p| slot([198, 51, 100, 31], p) == target);
    let (shared, lookalike) = (same.next().unwrap(), same.next().unwrap());
    let alone_lookalike =
        (1..=u16::MAX).find(|&p| slot([198, 51, 100, 32], p) == slot([198, 51, 100, 10], 80)).unwrap();
    let config = format!(
        "{THREE}[[vip]]\naddress = \"198.51.100.30:80\"\n  [[vip.backend]]\n  address = \"198.18.0.11\"\n\
         [[vip]]\naddress = \"198.51.100.31:{shared}\"\n  [[vip.backend]]\n  address = \"198.18.0.12\"\n"
    );
    let fx = Fixture::new(&config);
    let send = |dst: String| fx.run(&Frame::tcp("192.0.2.1:1000", &dst, tcp::SYN).build());
    let (v, out) = send("198.51.100.30:80".into());
    assert_eq!((v, backend_of(&out)), (Verdict::Tx, "198.18.0.11"), "first VIP on a shared byte");
    let (v, out) = send(format!("198.51.100.31:{shared}"));
    assert_eq!((v, backend_of(&out)), (Verdict::Tx, "198.18.0.12"), "second VIP on a shared byte");
    assert_eq!(send(format!("198.51.100.31:{lookalike}")).0, Verdict::Pass, "no VIP, on a shared byte");
    assert_eq!(send(format!("198.51.100.32:{alone_lookalike}")).0, Verdict::Pass, "no VIP, on a VIP's own byte");
    assert_eq!(send("198.51.100.10:80".into()).0, Verdict::Tx, "the VIP on that byte");
}

/// The flow-table events of the fixture's first VIP.
fn events(fx: &Fixture) -> balancer::dataplane::stats::FlowEventsView {
    fx.stats().vips[0].flows
}

#[test]
fn the_vip_counts_misses_pins_and_evictions_of_its_flow_table() {
    require_root!();
    let mut fx = Fixture::new(THREE);
    let flows = nine_in_one_set(fx.dp.flow_secret());
    for (c, p) in &flows[..8] {
        fx.run(&packet(c, *p, tcp::SYN).build());
    }
    let e = events(&fx);
    assert_eq!((e.inserts, e.evictions, e.misses, e.guarded), (8, 0, 0, 0), "{e:?}");
    // An ACK the table holds is no miss; one of a flow it never saw is.
    fx.run(&packet(&flows[0].0, flows[0].1, tcp::ACK).build());
    fx.run(&packet("192.0.2.200", 5555, tcp::ACK).build());
    let e = events(&fx);
    assert_eq!((e.misses, e.inserts), (1, 9), "the unknown flow was a miss, and is pinned now: {e:?}");
    // The ninth flow of a full set takes one of the eight's slots.
    fx.run(&packet(&flows[8].0, flows[8].1, tcp::SYN).build());
    assert_eq!(events(&fx).evictions, 1);
    // A UDP packet of an unknown flow is not a miss: UDP has no connection start to tell.
    fx.apply(&THREE.replace("address = \"198.51.100.10:80\"", "address = \"198.51.100.10:80\"\nprotocol = \"udp\""));
    let before = events(&fx).misses;
    fx.run(&Frame::udp("192.0.2.9:4000", "198.51.100.10:80").build());
    assert_eq!(events(&fx).misses, before);
}

#[test]
fn without_a_flow_table_every_packet_follows_the_ring() {
    require_root!();
    let config = THREE.replace("address = \"198.51.100.10:80\"", "address = \"198.51.100.10:80\"\nflow_table = false");
    let mut fx = Fixture::new(&config);
    let syn = packet("192.0.2.1", 40_000, tcp::SYN);
    let first = backend_of(&fx.run(&syn.build()).1);
    assert_eq!(fx.dp.flow_entry(&syn.flow_key(false)).unwrap(), None, "nothing pinned");
    // Take the flow's backend out of the ring: its next packet goes where the ring now says
    // (with a flow table it would stay; see the test above).
    let moved = config.replacen(&format!("address = \"{first}\""), &format!("address = \"{first}\"\n  weight = 0"), 1);
    fx.apply(&moved);
    let ack = packet("192.0.2.1", 40_000, tcp::ACK);
    let now = backend_of(&fx.run(&ack.build()).1);
    assert_ne!(now, first);
    assert_eq!(fixture::backend_ip(&fx.table_backend(0, &ack.flow_key(false))).to_string(), now, "the ring's choice");
    let e = events(&fx);
    assert_eq!((e.inserts, e.misses), (0, 0), "no table, no table events: {e:?}");
}

/// The kernel's jiffies, from `/proc/timer_list`.
fn jiffies() -> u64 {
    let text = std::fs::read_to_string("/proc/timer_list").expect("/proc/timer_list");
    text.lines().find_map(|l| l.strip_prefix("jiffies:")).and_then(|v| v.trim().parse().ok()).expect("jiffies")
}

/// Waits, if need be, until the data path's insert window (`2^INSERT_WINDOW_SHIFT` jiffies) has
/// at least a third left, so a test's packets all fall in one window.
fn start_of_a_window() {
    let window = 1u64 << balancer_common::flow::INSERT_WINDOW_SHIFT;
    while jiffies() % window > window * 2 / 3 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn over_the_insert_limit_new_flows_are_steered_by_the_ring_without_evicting_established_ones() {
    require_root!();
    // The limit is per CPU: the packets must all run on one.
    let mut one = nix::sched::CpuSet::new();
    one.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
    // 4 per second is 4 per window at HZ=250 (and at least 1 per window at any rate).
    let hz = balancer::dataplane::plan::kernel_hz();
    let per_window = (4 * 256 / u64::from(hz)).max(1);
    let mut fx = Fixture::new(&format!("flow_insert_limit = 4\n{THREE}"));
    let flows = nine_in_one_set(fx.dp.flow_secret());
    start_of_a_window();
    // Established flows of one set take the window's pins (four at HZ=250).
    let n = usize::try_from(per_window).unwrap().min(4);
    let kept: Vec<&str> =
        flows[..n].iter().map(|(c, p)| backend_of(&fx.run(&packet(c, *p, tcp::SYN).build()).1)).collect();
    // A flood of SYNs into the same set: each is forwarded where the ring says, none is pinned,
    // none takes an established flow's slot.
    for port in 30_000..30_050u16 {
        let syn = packet("203.0.113.7", port, tcp::SYN);
        let went = backend_of(&fx.run(&syn.build()).1);
        assert_eq!(fixture::backend_ip(&fx.table_backend(0, &syn.flow_key(false))).to_string(), went);
    }
    for (c, p) in &flows[n..] {
        fx.run(&packet(c, *p, tcp::SYN).build());
    }
    let e = events(&fx);
    let pinned_total = per_window.min(59);
    assert_eq!((e.inserts, e.guarded, e.evictions), (pinned_total, 59 - pinned_total, 0), "HZ {hz}: {e:?}");
    let pinned = |(c, p): &(String, u16)| fx.dp.flow_entry(&packet(c, *p, tcp::SYN).flow_key(false)).unwrap().is_some();
    assert!(flows[..n].iter().all(pinned), "the established flows keep their slots");
    for gone in BACKENDS {
        fx.apply(&format!("flow_insert_limit = 4\n{}", with(gone, "weight = 0")));
        for ((c, p), b) in flows[..n].iter().zip(&kept) {
            assert_eq!(backend_of(&fx.run(&packet(c, *p, tcp::ACK).build()).1), *b, "{c}:{p} with {gone} out");
        }
    }
}

/// `THREE` with the VIP's `hash` set to `mode`.
fn hashed(mode: &str) -> String {
    THREE.replace("address = \"198.51.100.10:80\"", &format!("address = \"198.51.100.10:80\"\nhash = \"{mode}\""))
}

#[test]
fn hash_modes_choose_what_a_flow_s_backend_depends_on() {
    require_root!();
    let clients: Vec<String> = (1..=24).map(|i| format!("192.0.2.{i}")).collect();
    let spread = |fx: &Fixture, flows: &[(String, u16)]| -> std::collections::HashSet<&'static str> {
        flows.iter().map(|(c, p)| backend_of(&fx.run(&packet(c, *p, tcp::SYN).build()).1)).collect()
    };
    // The whole 5-tuple: one source port from many addresses spreads.
    let fx = Fixture::new(THREE);
    let same_port: Vec<(String, u16)> = clients.iter().map(|c| (c.clone(), 40_000)).collect();
    assert!(spread(&fx, &same_port).len() > 1);
    // Ports: the addresses do not count; another source port may go elsewhere.
    let fx = Fixture::new(&hashed("ports"));
    assert_eq!(spread(&fx, &same_port).len(), 1, "one pair of ports, one backend");
    let ports: Vec<(String, u16)> = (0..24u16).map(|i| ("192.0.2.1".to_owned(), 41_000 + i)).collect();
    assert!(spread(&fx, &ports).len() > 1, "source ports spread");
    // Destination port: every client of the port to one backend, and the table agrees with the
    // ring under the shared key definition.
    let mut fx = Fixture::new(&hashed("destination-port"));
    let everyone: Vec<(String, u16)> = clients.iter().zip(42_000..).map(|(c, p)| (c.clone(), p)).collect();
    let one = spread(&fx, &everyone);
    assert_eq!(one.len(), 1, "{one:?}");
    let key = packet("192.0.2.99", 1234, tcp::SYN).flow_key(false).for_vip(balancer_common::vip::flags::HASH_DST_PORT);
    assert_eq!(fixture::backend_ip(&fx.table_backend(0, &key)).to_string(), *one.iter().next().unwrap());
    // The entry is the port's affinity: a new connection (SYN) follows it through a ring change.
    let pinned = *one.iter().next().unwrap();
    fx.apply(&hashed("destination-port").replacen(
        &format!("address = \"{}\"", BACKENDS.iter().find(|b| **b != pinned).unwrap()),
        &format!("address = \"{}\"\n  weight = 0", BACKENDS.iter().find(|b| **b != pinned).unwrap()),
        1,
    ));
    assert_eq!(backend_of(&fx.run(&packet("198.18.99.1", 5000, tcp::SYN).build()).1), pinned);
}
