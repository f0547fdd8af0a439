//! Part 2: end to end in namespaces, the balancer's XDP program against an nftables DNAT
//! balancer on the same topology.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use balancer_tests::{daemon::Daemon, netns::Lan};

use crate::{Targets, profile::Profile, wrk};

/// Packets received so far on `eth0` of `ns`.
fn rx_packets(ns: &balancer_tests::netns::Netns) -> u64 {
    let out = ns.run(&["ip", "-s", "-j", "link", "show", "eth0"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
}

/// The CPU the generator runs on; the other one (`FORWARDING_CPU`) does all the forwarding.
const SENDER_CPU: usize = 0;
/// Receives every frame the client sends (receive packet steering on the client's bridge port),
/// so the bridge, the contender and the backends' drop all run there, and the generator's own
/// cost is on the other CPU.
const FORWARDING_CPU: usize = 1;

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only read and
    // write that local value.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set), 0, "pin to CPU {cpu}");
    }
}

/// Floods `frames` (cycled) out of the client's `eth0` through a raw packet socket, 64 per
/// `sendmmsg`, from `SENDER_CPU`, for `secs` seconds and at most 100 million frames; returns
/// how many the kernel took. A blocking socket waits when the forwarding CPU falls behind
/// instead of failing (trafgen gives up on the first EAGAIN).
fn flood(client: &balancer_tests::netns::Netns, frames: &[Vec<u8>], secs: u64) -> u64 {
    client.in_thread(|| {
        pin_to(SENDER_CPU);
        // SAFETY: plain socket calls on values owned here; every pointer handed to the kernel
        // (address, iovecs, message headers) outlives the call that uses it.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            let bound = libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_ll>() as u32);
            assert_eq!(bound, 0, "bind to eth0: {}", std::io::Error::last_os_error());
            let mut iovs: Vec<libc::iovec> =
                frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
            let mut msgs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    let mut m: libc::mmsghdr = std::mem::zeroed();
                    m.msg_hdr.msg_iov = iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let batch = 64.min(msgs.len());
            let end = Instant::now() + Duration::from_secs(secs);
            let (mut sent, mut at) = (0u64, 0usize);
            while sent < 100_000_000 && Instant::now() < end {
                let n = libc::sendmmsg(fd, msgs[at..].as_mut_ptr(), batch.min(msgs.len() - at) as u32, 0);
                if n > 0 {
                    sent += n as u64;
                    at = (at + n as usize) % msgs.len();
                }
            }
            libc::close(fd);
            sent
        }
    })
}

/// 256 UDP flows (client ports 1024…1279) from the client to `dst:9`, as frames for the
/// next hop `mac`, 60 bytes each (the Ethernet minimum).
fn flows(dst: std::net::Ipv4Addr, mac: [u8; 6], client_mac: [u8; 6]) -> Vec<Vec<u8>> {
    (1024..1280u16)
        .map(|port| {
            let mut f = balancer_tests::packet::Frame::udp(&format!("198.18.0.1:{port}"), &format!("{dst}:9"));
            f.payload = vec![0; 18];
            let mut f = f.build();
            f[..6].copy_from_slice(&mac);
            f[6..12].copy_from_slice(&client_mac);
            f
        })
        .collect()
}

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part2(report: &mut String, targets: &mut Targets) {
    let secs: u64 = std::env::var("BENCH_E2E_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let vip = "198.51.100.10";
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let body = "x".repeat(100);
    let mut servers = Vec::new();
    for h in 2..4 {
        let ns = &lan.hosts[h].ns;
        ns.run(&["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"]);
        ns.run(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
        // The flood is counted by the interface, then dropped at ingress, before the IP stack:
        // the same small cost behind every contender.
        ns.run(&["nft", "add table netdev sink; add chain netdev sink in { type filter hook ingress device eth0 priority 0; }; add rule netdev sink in udp dport 9 drop"]);
        let dir = std::env::temp_dir().join(format!("{}-web", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "worker_processes 1; pid {d}/n.pid; error_log {d}/n.err; events {{ worker_connections 4096; }}\n\
             http {{ access_log off; server {{ listen 80; location / {{ return 200 \"{body}\"; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("n.conf"), conf).unwrap();
        servers.push(ns.spawn(&["nginx", "-c", dir.join("n.conf").to_str().unwrap(), "-g", "daemon off;"]));
    }
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{vip}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    // Everything the client sends is processed on FORWARDING_CPU. The bridge passes frames
    // without calling netfilter (if br_netfilter is loaded at all), so only the nftables
    // contender pays for it.
    let fabric = lan.fabric.name().to_owned();
    let in_fabric = |cmd: &str| balancer_tests::netns::sh(&["ip", "netns", "exec", &fabric, "sh", "-c", cmd]);
    in_fabric(&format!("echo {:x} > /sys/class/net/{}/queues/rx-0/rps_cpus", 1 << FORWARDING_CPU, lan.hosts[0].port));
    in_fabric(
        "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true",
    );
    std::thread::sleep(Duration::from_millis(500));
    let measure = |lan: &Lan, target: &str, profile: Option<&mut Option<String>>| -> (f64, f64, f64, f64) {
        let client = &lan.hosts[0].ns;
        let ip: std::net::Ipv4Addr = target.parse().unwrap();
        // The VIP's next hop is the balancer; a backend's address is reached directly.
        let hop = if target == vip { lan.hosts[1].mac } else { lan.hosts[usize::from(ip.octets()[3]) - 1].mac };
        let frames = flows(ip, hop, lan.hosts[0].mac);
        let before: u64 = (2..4).map(|h| rx_packets(&lan.hosts[h].ns)).sum();
        let perf = profile.as_ref().and_then(|_| Profile::cpu(FORWARDING_CPU, secs as u32 - 1));
        let sent = flood(client, &frames, secs);
        if let (Some(p), Some(out)) = (perf, profile) {
            *out = Some(p.report());
        }
        std::thread::sleep(Duration::from_millis(200));
        let after: u64 = (2..4).map(|h| rx_packets(&lan.hosts[h].ns)).sum();
        // Unpinned: the namespaces share both CPUs. The median of three runs for each figure:
        // single p99s on this VM vary by 2×.
        let runs: Vec<(f64, f64)> =
            (0..3).map(|_| wrk(client, None, &format!("http://{target}/"), secs as u32, &[])).collect();
        let median = |f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[1]
        };
        let (rps, p99) = (median(|r| r.0), median(|r| r.1));
        (sent as f64 / secs as f64, (after - before) as f64 / secs as f64, rps, p99)
    };
    let config = |fwd: &str| {
        format!(
            "interfaces = [\"eth0\"]\nxdp_mode = \"native\"\n\
             [[vip]]\naddress = \"{vip}:9\"\nprotocol = \"udp\"\nforwarding = \"{fwd}\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n\
             [[vip]]\naddress = \"{vip}:80\"\nforwarding = \"{fwd}\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
        )
    };
    let (mut dsr_profile, mut nft_profile) = (None, None);
    let mut rows = Vec::new();
    rows.push(("direct to one backend (upper bound)", measure(&lan, "198.18.0.3", None)));
    {
        let daemon = Daemon::start(&lan.hosts[1].ns, &config("dsr"), "warn,balancer::daemon=info");
        rows.push(("balancer XDP, DSR", measure(&lan, vip, Some(&mut dsr_profile))));
        lan.decap_on(2);
        lan.decap_on(3);
        daemon.write_config(&config("ipip"));
        let out = daemon.ctl(&lan.hosts[1].ns, &["reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        rows.push(("balancer XDP, IPIP", measure(&lan, vip, None)));
    } // the daemon stops and its pins go: the XDP program leaves the interface
    lan.stop_accepting_xdp_frames_from(1);
    let lb = &lan.hosts[1].ns;
    lb.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lb.run(&["nft", &format!(
        "add table ip lb; \
         add chain ip lb pre {{ type nat hook prerouting priority -100; }}; \
         add chain ip lb post {{ type nat hook postrouting priority 100; }}; \
         add rule ip lb pre ip daddr {vip} udp dport 9 dnat to numgen inc mod 2 map {{ 0 : 198.18.0.3, 1 : 198.18.0.4 }}; \
         add rule ip lb pre ip daddr {vip} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 198.18.0.3, 1 : 198.18.0.4 }}; \
         add rule ip lb post ip daddr {{ 198.18.0.3, 198.18.0.4 }} masquerade"
    )]);
    rows.push(("nftables DNAT (numgen inc mod 2) + masquerade", measure(&lan, vip, Some(&mut nft_profile))));
    drop(servers);

    let nft = rows[3].1;
    writeln!(
        report,
        "\n### 2. End to end in namespaces (client → balancer → 2 backends on one veth LAN, {secs} s per measure)\n"
    )
    .unwrap();
    writeln!(
        report,
        "UDP: 256 flows of 60-byte frames from a raw packet socket (`sendmmsg`) on CPU {SENDER_CPU}. Receive packet \
         steering sends every frame to CPU {FORWARDING_CPU}, where the bridge, the contender and the backends' \
         ingress drop all run, so that CPU is the one core each contender gets; frames it cannot keep up with are \
         dropped at its backlog, and what the backends count is the contender's ceiling on that core (plus the \
         bridge's and the drop's cost, the same for all). HTTP: `wrk` unpinned.\n"
    )
    .unwrap();
    writeln!(
        report,
        "| contender | UDP sent/s | UDP received by backends/s | × nftables | HTTP requests/s | HTTP p99 ms |"
    )
    .unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (name, (sent, recv, rps, p99)) in &rows {
        writeln!(report, "| {name} | {sent:.0} | {recv:.0} | {:.2} | {rps:.0} | {p99:.2} |", recv / nft.1).unwrap();
    }
    for (i, what) in [(1, "DSR"), (2, "IPIP")] {
        let (_, recv, _, p99) = rows[i].1;
        let met = recv >= 2.0 * nft.1 && p99 <= nft.3;
        targets.add(
            format!("end to end, XDP {what} vs nftables: packets/s, HTTP p99"),
            format!("{:.2}×, {p99:.2} vs {:.2} ms", recv / nft.1, nft.3),
            "≥ 2×, p99 ≤ nftables'",
            met,
        );
        writeln!(
            report,
            "\nTarget, {what}: ≥ 2 × nftables' packets/s and HTTP p99 no worse: {:.2}×, p99 {p99:.2} vs {:.2} ms — {}",
            recv / nft.1,
            nft.3,
            if met { "met" } else { "**missed**" }
        )
        .unwrap();
    }
    // What each contender adds per packet on the forwarding CPU over delivering straight to a
    // backend: the plumbing both share (bridge, veth, the backends' drop) cancels out.
    let direct = rows[0].1.1;
    let over = |recv: f64| 1e9 / recv - 1e9 / direct;
    writeln!(
        report,
        "\nNanoseconds each contender adds per packet on CPU {FORWARDING_CPU} over delivery straight to a backend \
         (1/rate − 1/direct rate; a second pass through the bridge included): XDP DSR {:.0} ns, XDP IPIP {:.0} ns, \
         nftables {:.0} ns, so nftables costs {:.2}× (DSR) and {:.2}× (IPIP) what the XDP program and its veth plumbing cost.",
        over(rows[1].1.1),
        over(rows[2].1.1),
        over(nft.1),
        over(nft.1) / over(rows[1].1.1),
        over(nft.1) / over(rows[2].1.1),
    )
    .unwrap();
    for (what, p) in [("XDP DSR", dsr_profile), ("nftables", nft_profile)] {
        if let Some(p) = p {
            writeln!(report, "\nWhere CPU {FORWARDING_CPU} went during the {what} flood (perf, cpu-clock samples, self time):\n\n```\n{p}```").unwrap();
        }
    }
}
