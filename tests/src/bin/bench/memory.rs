//! Part 4: control plane and memory.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use balancer::maglev::{self, Member, RingSize};
use balancer_tests::{daemon::Daemon, netns::Lan};

use crate::Targets;

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part4(report: &mut String, targets: &mut Targets) {
    writeln!(report, "\n### 4. Control plane and memory\n").unwrap();
    writeln!(report, "| figure | value | target | |").unwrap();
    writeln!(report, "|---|---:|---:|---|").unwrap();
    let members = |n: usize| -> Vec<Member> {
        (0..n).map(|i| Member { identity: format!("10.{}.{}.1", i / 256, i % 256).into_bytes(), weight: 1 }).collect()
    };
    for n in [10, 100, 1000] {
        let ms = members(n);
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(maglev::build(&ms, RingSize::default(), maglev::DEFAULT_SEED));
                t.elapsed()
            })
            .collect();
        times.sort();
        let ms_taken = times[3].as_secs_f64() * 1e3;
        let (target, verdict) =
            if n == 1000 { ("< 20 ms", if ms_taken < 20.0 { "met" } else { "**missed**" }) } else { ("", "") };
        if n == 1000 {
            targets.add("Maglev build, 1000 backends", format!("{ms_taken:.2} ms"), "< 20 ms", ms_taken < 20.0);
        }
        writeln!(
            report,
            "| Maglev build, {n} backends, M=65537 (median of 7) | {ms_taken:.2} ms | {target} | {verdict} |"
        )
        .unwrap();
    }
    // One backend of N goes down (health, `stopped`, drain): the daemon's table keeps every
    // other slot (`build_stable`); the target is the issue's.
    for (n, m) in [(10usize, 65537u32), (100, 65537), (1000, 65537), (1000, 1_000_003)] {
        let ms = members(n);
        let size = RingSize::new(m).expect("a valid table size");
        let all: Vec<maglev::Now> = ms.iter().map(|m| maglev::Now { weight: m.weight, keep: 1.0 }).collect();
        let mut down = all.clone();
        down[0].weight = 0;
        let before = maglev::build_stable(&ms, &all, size, maglev::DEFAULT_SEED).unwrap();
        let after = maglev::build_stable(&ms, &down, size, maglev::DEFAULT_SEED).unwrap();
        let moved = before.slots().iter().zip(after.slots()).filter(|(b, a)| b != a).count();
        let times_ideal = moved as f64 / f64::from(m) * n as f64;
        let verdict = if times_ideal <= 1.1 { "met" } else { "**missed**" };
        targets.add(
            format!("slots moved when 1 of {n} backends goes down, M={m}"),
            format!("{times_ideal:.2} × 1/N"),
            "≤ 1.1 × 1/N",
            times_ideal <= 1.1,
        );
        writeln!(
            report,
            "| slots moved when 1 of {n} goes down, M={m} | {times_ideal:.3} × 1/N | ≤ 1.1 × 1/N | {verdict} |"
        )
        .unwrap();
    }
    // Deleted from the configuration: the table is rebuilt from the remaining weights and the
    // fill's cascade moves more, shrinking with N/M (reported, no target).
    for (n, m) in [(10usize, 65537u32), (100, 65537), (1000, 65537), (1000, 1_000_003)] {
        let ms = members(n);
        let size = RingSize::new(m).expect("a valid table size");
        let before = maglev::build(&ms, size, maglev::DEFAULT_SEED).unwrap();
        let after = maglev::build(&ms[1..], size, maglev::DEFAULT_SEED).unwrap();
        let moved = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|&(&b, &a)| ms[b as usize].identity != ms[1 + a as usize].identity)
            .count();
        let times_ideal = moved as f64 / f64::from(m) * n as f64;
        writeln!(
            report,
            "| slots moved when 1 of {n} is deleted from the config, M={m} | {times_ideal:.3} × 1/N | | |"
        )
        .unwrap();
    }
    // The trade Maglev makes: rendezvous hashing per slot (each slot to the backend with the
    // highest hash of backend and slot) moves exactly the leaving backend's slots, but each
    // backend's share is then a random sample around M/N instead of M/N to within a slot.
    for n in [100usize, 1000] {
        let mix = |mut x: u64| {
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        let keys: Vec<u64> = (0..n as u64).map(|b| mix(b.wrapping_add(0x5eed))).collect();
        let mut counts = vec![0u32; n];
        for slot in 0..65537u64 {
            let s = mix(slot);
            let best = (0..n).max_by_key(|&b| mix(keys[b] ^ s)).unwrap();
            counts[best] += 1;
        }
        let fair = 65537.0 / n as f64;
        let worst = counts.iter().map(|&c| (f64::from(c) - fair).abs() / fair).fold(0.0, f64::max);
        writeln!(
            report,
            "| reference, rendezvous per slot, {n} backends: slots moved when one leaves / worst share error | {:.3} × 1/N / {:.1} % | | |",
            f64::from(counts[0]) / fair,
            worst * 100.0
        )
        .unwrap();
    }
    let weights: Vec<u32> = (0..100).map(|i| 1 + i % 10).collect();
    let ms: Vec<Member> = members(100).into_iter().zip(&weights).map(|(m, &w)| Member { weight: w, ..m }).collect();
    let t = maglev::build(&ms, RingSize::default(), maglev::DEFAULT_SEED).unwrap();
    let total: u32 = weights.iter().sum();
    let worst = t
        .counts(100)
        .iter()
        .zip(&weights)
        .map(|(&c, &w)| {
            let want = 65537.0 * f64::from(w) / f64::from(total);
            (f64::from(c) - want).abs() / want
        })
        .fold(0.0, f64::max);
    writeln!(
        report,
        "| worst slot-share error vs weight share, 100 backends, weights 1-10 | {:.2} % | ≤ 1 % | {} |",
        worst * 100.0,
        if worst <= 0.01 { "met" } else { "**missed**" }
    )
    .unwrap();
    targets.add(
        "Maglev slot share vs weight share, 100 backends",
        format!("{:.2} % worst", worst * 100.0),
        "≤ 1 %",
        worst <= 0.01,
    );

    // The daemon, idle, in a namespace of its own.
    let lan = Lan::new(&["lb"]);
    let ns = &lan.hosts[0].ns;
    let mut daemon = Daemon::start(
        ns,
        "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"\n[[vip]]\naddress = \"198.18.0.1:80\"\n",
        "info",
    );
    std::thread::sleep(Duration::from_secs(1));
    let pid = daemon.proc.pid();
    let (total, private) = crate::rss_mib(pid);
    writeln!(
        report,
        "| daemon RSS, idle, 1 VIP: total / private (RssAnon) | {total:.1} / {private:.1} MiB | | the rest is the mmap of the ring map |"
    )
    .unwrap();
    let mut memlock = 0u64;
    let mut seen = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for e in dir.flatten() {
            let info = std::fs::read_to_string(e.path()).unwrap_or_default();
            let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()));
            if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:"))
                && seen.insert(id)
            {
                memlock += bytes.parse::<u64>().unwrap_or(0);
            }
        }
    }
    writeln!(
        report,
        "| BPF map memory, default sizes (memlock of the daemon's maps) | {:.1} MiB | | |",
        memlock as f64 / f64::from(1 << 20)
    )
    .unwrap();
    daemon.proc.stop();
}
