//! L2 direct server return: a frame for a VIP leaves towards its backend's MAC, from the MAC it
//! was addressed to, with every other byte unchanged; established flows stay on their backend.

use balancer_tests::{
    fixture::{self, Fixture, backend_mac},
    packet::{CLIENT_MAC, Frame, LB_MAC, tcp},
    require_root,
    xdp::Verdict,
};

const ONE_BACKEND: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.11"
[[vip]]
address = "198.51.100.10:53"
protocol = "udp"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.12"
[[vip]]
address = "[2001:db8::10]:443"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8::11"
[[vip]]
address = "198.51.100.20:80"
"#;

/// `frame` as it must leave: to `backend`'s MAC, from the balancer's.
fn expected(frame: &[u8], backend: &str) -> Vec<u8> {
    let mut e = frame.to_vec();
    e[..6].copy_from_slice(&backend_mac(backend.parse().unwrap()));
    e[6..12].copy_from_slice(&LB_MAC);
    e
}

#[test]
fn frames_for_a_vip_leave_for_the_backend_mac_with_every_other_byte_unchanged() {
    require_root!();
    let fx = Fixture::new(ONE_BACKEND);
    let mut vlan = Frame::tcp("192.0.2.1:40001", "198.51.100.10:80", tcp::SYN);
    vlan.vlan = Some(42);
    let mut v6_hbh = Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:443", tcp::SYN);
    v6_hbh.ipv6_ext = vec![(0, vec![1, 4, 0, 0, 0, 0])];
    let mut padded = Frame::tcp("192.0.2.1:40002", "198.51.100.10:80", tcp::ACK);
    padded.payload.clear();
    let mut padded = padded.build();
    padded.resize(60, 0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("IPv4 TCP ACK padded to the 60-byte Ethernet minimum", padded, "198.18.0.11"),
        ("IPv4 TCP SYN", Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::SYN).build(), "198.18.0.11"),
        ("IPv4 TCP ACK", Frame::tcp("192.0.2.1:40000", "198.51.100.10:80", tcp::ACK).build(), "198.18.0.11"),
        ("802.1Q-tagged IPv4 TCP SYN", vlan.build(), "198.18.0.11"),
        ("IPv4 UDP", Frame::udp("192.0.2.1:5353", "198.51.100.10:53").build(), "198.18.0.12"),
        ("IPv6 TCP SYN", Frame::tcp("[2001:db8::1]:40000", "[2001:db8::10]:443", tcp::SYN).build(), "2001:db8::11"),
        ("IPv6 TCP SYN after a hop-by-hop header", v6_hbh.build(), "2001:db8::11"),
    ];
    for (what, frame, backend) in cases {
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, Verdict::Tx, "{what}");
        assert_eq!(out, expected(&frame, backend), "{what}");
        assert_ne!(out[6..12], CLIENT_MAC, "{what}: source MAC is the balancer's");
    }
    let s = fx.stats();
    assert_eq!(s.vips[0].traffic.packets, 4);
    assert_eq!(s.vips[0].traffic.new_flows, 3, "the ACK belongs to the first SYN's flow");
}

#[test]
fn a_vip_without_backends_drops_rather_than_answering_itself() {
    require_root!();
    let fx = Fixture::new(ONE_BACKEND);
    let frame = Frame::tcp("192.0.2.1:40000", "198.51.100.20:80", tcp::SYN).build();
    let (verdict, _) = fx.run(&frame);
    assert_eq!(verdict, Verdict::Drop);
    assert_eq!(fx.reason("no_backend"), 1);
}

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

fn backend_of(out: &[u8], candidates: &[&str]) -> String {
    fixture::backend_of(out, candidates).to_owned()
}

fn flow(port: u16) -> Vec<u8> {
    Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::SYN).sport(port).build()
}

const BACKENDS: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];

#[test]
fn established_flows_survive_drain_and_move_off_a_stopped_backend() {
    require_root!();
    let mut fx = Fixture::new(THREE);
    // Find a flow on backend 0 (198.18.0.11).
    let port = (20_000..21_000u16)
        .find(|&p| backend_of(&fx.run(&flow(p)).1, &BACKENDS) == BACKENDS[0])
        .expect("some flow lands on the first backend");
    let ack = Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::ACK).sport(port).build();

    fx.apply(&THREE.replacen("address = \"198.18.0.11\"", "address = \"198.18.0.11\"\n  state = \"drain\"", 1));
    assert_eq!(backend_of(&fx.run(&ack).1, &BACKENDS), BACKENDS[0], "a drained backend keeps its flow");
    for p in 30_000..30_100u16 {
        assert_ne!(backend_of(&fx.run(&flow(p)).1, &BACKENDS), BACKENDS[0], "no new flow goes to a drained backend");
    }

    fx.apply(&THREE.replacen("address = \"198.18.0.11\"", "address = \"198.18.0.11\"\n  state = \"stopped\"", 1));
    let moved = backend_of(&fx.run(&ack).1, &BACKENDS);
    assert_ne!(moved, BACKENDS[0], "a stopped backend's flow is re-steered");
    assert_eq!(backend_of(&fx.run(&ack).1, &BACKENDS), moved, "and then stays where it went");
}

/// Runs `f` on a thread pinned to `cpu`: `BPF_PROG_TEST_RUN` runs the program on the caller's CPU.
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).expect("cpu index");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin thread");
            f()
        })
        .join()
        .expect("pinned thread")
    })
}

#[test]
fn a_flow_pinned_on_one_cpu_keeps_its_backend_on_another() {
    require_root!();
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        eprintln!("*** SKIPPED: needs two CPUs ***");
        return;
    }
    let mut fx = Fixture::new(THREE);
    // A flow that does not start on backend id 0, so a zeroed value would show.
    let (port, first) = on_cpu(0, || {
        (50_000..51_000u16)
            .map(|p| (p, backend_of(&fx.run(&flow(p)).1, &BACKENDS)))
            .find(|(_, b)| b != BACKENDS[0])
            .expect("some flow starts elsewhere")
    });
    // Take a different backend out of the ring, so the table may now map this flow elsewhere;
    // only the flow table keeps it where it is.
    let other = BACKENDS.iter().position(|b| *b != first).unwrap();
    fx.apply(&THREE.replacen(
        &format!("address = \"{}\"", BACKENDS[other]),
        &format!("address = \"{}\"\n  weight = 0", BACKENDS[other]),
        1,
    ));
    let ack = Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::ACK).sport(port).build();
    for cpu in [1, 0, 1] {
        assert_eq!(on_cpu(cpu, || backend_of(&fx.run(&ack).1, &BACKENDS)), first, "ACK on CPU {cpu}");
    }
}

#[test]
fn a_mid_stream_packet_without_a_flow_entry_gets_the_table_choice_and_then_sticks() {
    require_root!();
    // After a flow-table flush, a restart, or an ECMP change that moves a connection to another
    // balancer, its next packet is an ACK with no entry. The answer is the table's choice: the
    // same on every node with this configuration, so the connection carries on.
    let mut fx = Fixture::new(THREE);
    let other_node = Fixture::new(THREE);
    let ack = |p: u16| Frame::tcp("192.0.2.1:1", "198.51.100.10:80", tcp::ACK).sport(p).build();
    let first: Vec<String> = (60_000..60_050u16).map(|p| backend_of(&fx.run(&ack(p)).1, &BACKENDS)).collect();
    for (i, p) in (60_000..60_050u16).enumerate() {
        assert_eq!(
            first[i],
            backend_of(&other_node.run(&flow(p)).1, &BACKENDS),
            "port {p}: the node that saw the SYN agrees"
        );
    }
    assert_eq!(fx.stats().vips[0].traffic.new_flows, 50, "each was counted as a new flow");
    // Now pinned: a table change does not move them.
    fx.apply(&THREE.replacen("address = \"198.18.0.12\"", "address = \"198.18.0.12\"\n  weight = 0", 1));
    for (i, p) in (60_000..60_050u16).enumerate() {
        assert_eq!(backend_of(&fx.run(&ack(p)).1, &BACKENDS), first[i], "port {p} stays");
    }
}

#[test]
fn draining_a_backend_never_drops_new_flows_while_tables_are_rewritten() {
    require_root!();
    // Two loads of the program share pinned maps: one keeps switching a backend between drain
    // and active (each switch rewrites the 65537-slot table), the other opens new flows
    // meanwhile. No new flow may find the backend drained while the live table still names it.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let pins = balancer_tests::daemon::PinDir::new(&format!("bt-drain-{}", std::process::id()));
    let drained = THREE.replacen("address = \"198.18.0.11\"", "address = \"198.18.0.11\"\n  state = \"drain\"", 1);
    let mut writer = Fixture::with_pins(&pins.0, THREE);
    let (stop, sent, dropped) = (AtomicBool::new(false), AtomicU32::new(0), AtomicU32::new(0));
    let loaded = AtomicBool::new(false);
    let rewrites = std::thread::scope(|s| {
        s.spawn(|| {
            // Loading writes the configuration too: the writer waits for it, so there is one
            // writer at a time, as with the daemon.
            let fx = Fixture::with_pins(&pins.0, THREE);
            loaded.store(true, Relaxed);
            let mut port = 1024u16;
            while !stop.load(Relaxed) {
                port = port.wrapping_add(1).max(1024);
                let (v, _) = fx.run(&Frame::tcp("192.0.2.9:1", "198.51.100.10:80", tcp::SYN).sport(port).build());
                sent.fetch_add(1, Relaxed);
                dropped.fetch_add(u32::from(v == Verdict::Drop), Relaxed);
            }
        });
        let waited = std::time::Instant::now();
        while !loaded.load(Relaxed) && waited.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut rewrites = 0;
        // Bounded: until the reader sent 100k packets, or 5000 rewrites.
        while sent.load(Relaxed) < 100_000 && rewrites < 5000 {
            writer.apply(if rewrites % 2 == 0 { &drained } else { THREE });
            rewrites += 1;
        }
        stop.store(true, Relaxed);
        rewrites
    });
    let (sent, dropped) = (sent.into_inner(), dropped.into_inner());
    eprintln!("{sent} new flows during {rewrites} table rewrites, {dropped} dropped");
    assert!(sent > 10_000 && rewrites > 10, "both sides ran");
    assert_eq!(dropped, 0);
}
