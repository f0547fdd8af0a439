//! Part 1: XDP cost per packet, one `BPF_PROG_TEST_RUN` call per packet on a fresh copy.

use std::fmt::Write as _;

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use balancer::dataplane::loader::{BALANCER_PROGRAM, PASS_PROGRAM};
use balancer_tests::{
    fixture::Fixture,
    packet::{Frame, L4, tcp},
};

use crate::Targets;

pub const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
[[vip]]
address = "[2001:db8::10]:80"
  [[vip.backend]]
  address = "2001:db8::11"
  [[vip.backend]]
  address = "2001:db8::12"
[[vip]]
address = "198.51.100.11:80"
forwarding = "ipip"
  [[vip.backend]]
  address = "198.18.0.21"
  [[vip.backend]]
  address = "198.18.0.22"
[[vip]]
address = "[2001:db8::11]:80"
forwarding = "ipip"
  [[vip.backend]]
  address = "2001:db8::21"
  [[vip.backend]]
  address = "2001:db8::22"
[[vip]]
address = "198.51.100.12:443"
protocol = "udp"
ignore_source_port = true
  [[vip.backend]]
  address = "198.18.0.31"
  [[vip.backend]]
  address = "198.18.0.32"
"#;

/// Nanoseconds per call, sorted.
struct Sample(Vec<u64>);

impl Sample {
    fn pct(&self, p: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * p).round() as usize] as f64
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
    fn p99(&self) -> f64 {
        self.pct(0.99)
    }
    /// Mean of the fastest 99%: the kernel reports durations in steps of about 10 ns, which
    /// makes medians jump between runs; a mean averages over the steps, and dropping the
    /// slowest 1% keeps interrupts out.
    fn trimmed_mean(&self) -> f64 {
        let keep = &self.0[..(self.0.len() * 99 / 100).max(1)];
        keep.iter().sum::<u64>() as f64 / keep.len() as f64
    }
}

/// Runs `prog` once per frame `frame(i)` for each `i` in `range`, adding the kernel-measured
/// durations to `ns`.
fn measure(
    prog: &Xdp,
    range: std::ops::Range<usize>,
    expect: u32,
    frame: &dyn Fn(usize) -> Vec<u8>,
    ns: &mut Vec<u64>,
) {
    let mut out = vec![0u8; 512];
    for i in range {
        let f = frame(i);
        let r = prog
            .test_run(TestRunOptions { data_in: Some(&f), data_out: Some(&mut out), ..TestRunOptions::new() })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, expect, "case took another path than the one measured (frame {i})");
        ns.push(r.duration.as_nanos() as u64);
    }
}

/// One measured case.
struct Case<'a> {
    name: String,
    prog: &'a Xdp,
    expect: u32,
    frame: Box<dyn Fn(usize) -> Vec<u8>>,
    target: Option<f64>,
}

/// Case `name` of `cases` again, on `prog`, as "`label`: `name`": the same `n` frames, made
/// once here, so the two programs see the same packets.
fn again<'a>(cases: &[Case<'a>], name: &str, n: usize, prog: &'a Xdp, label: &str) -> Case<'a> {
    let a = cases.iter().find(|c| c.name == name).expect("case");
    let frames: Vec<Vec<u8>> = (0..n).map(|i| (a.frame)(i)).collect();
    Case {
        name: format!("{label}: {name}"),
        prog,
        expect: a.expect,
        frame: Box::new(move |i: usize| frames[i].clone()),
        target: a.target,
    }
}

/// Rounds the cases are interleaved in: each case runs `n / ROUNDS` packets per round, so a
/// burst of noise from the host lands on every case (the reference included) rather than on
/// whichever one was running.
const ROUNDS: usize = 10;

/// `template` with a 5-tuple unique to `i`: the TCP/UDP source port (which follows the IP
/// header, whose source address ends `at - 8` (IPv4) or `at - 16` (IPv6) bytes before it) and,
/// beyond 64000 flows, the last byte of the client address.
fn with_port(template: &[u8], at: usize, i: usize) -> Vec<u8> {
    let mut f = template.to_vec();
    let port = 1024 + (i % 64000) as u16;
    f[at..at + 2].copy_from_slice(&port.to_be_bytes());
    let src_last = if f[12..14] == [0x08, 0x00] { at - 5 } else { at - 17 };
    f[src_last] ^= (i / 64000) as u8;
    f
}

/// The cases Katran's program runs too (it forwards by IPIP only).
const KATRAN_CASES: [&str; 6] = [
    "v4 non-VIP",
    "v6 non-VIP",
    "v4 IPIP ACK, established",
    "v6 IPIP ACK, established",
    "v4 IPIP SYN, new flow",
    "v6 IPIP SYN, new flow",
];

/// Our net ns beside Katran's for each of `KATRAN_CASES` (`base`: pass-only's mean).
fn beside_katran(report: &mut String, rows: &[Row], base: f64, lru: &str) {
    let net = |case: &str| rows.iter().find(|r| r.case == case).map(|r| r.mean - base);
    writeln!(
        report,
        "\nBeside Katran's program in the same rounds (`BENCH_KATRAN_OBJECT`; `katran.rs` says how it is built), on {lru}:\n"
    )
    .unwrap();
    writeln!(report, "| case | ours, net ns | Katran's, net ns | ours ÷ Katran's |").unwrap();
    writeln!(report, "|---|---:|---:|---:|").unwrap();
    for case in KATRAN_CASES {
        if let (Some(o), Some(k)) = (net(case), net(&format!("Katran: {case}"))) {
            writeln!(report, "| {case} | {o:.0} | {k:.0} | {:.2} |", o / k).unwrap();
        }
    }
}

/// Packets per chunk of `steady`.
const CHUNK: usize = 20_000;

/// Runs case `name` (and its "B: " and "Katran: " twins, when loaded, and pass-only) in
/// alternating chunks of `CHUNK` packets for `BENCH_PROFILE_SECS` seconds (default 12), then
/// prints each one's median chunk mean, net of pass-only's. For two uses: a steady load to
/// sample with `perf` (`scripts/xdp-profile.py` maps the samples to source lines), and an A/B
/// in which both builds run in the same alternation, less exposed than the table's rounds to
/// which of them runs first.
fn steady(cases: &[Case], name: &str, n: usize) {
    let names = [name.to_owned(), format!("B: {name}"), format!("Katran: {name}"), "pass-only (reference)".to_owned()];
    let picked: Vec<&Case> = names.iter().filter_map(|w| cases.iter().find(|c| &c.name == w)).collect();
    assert!(picked.first().is_some_and(|c| c.name == name), "no case named {name:?} in part 1");
    let secs = std::env::var("BENCH_PROFILE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); picked.len()];
    let mut start = 0;
    while std::time::Instant::now() < until {
        let range = start..(start + CHUNK).min(n);
        for (c, m) in picked.iter().zip(&mut means) {
            let mut ns = Vec::with_capacity(CHUNK);
            measure(c.prog, range.clone(), c.expect, &*c.frame, &mut ns);
            ns.sort_unstable();
            m.push(Sample(ns).trimmed_mean());
        }
        start = range.end % n;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(means.last_mut().expect("pass-only is a case"));
    for (c, m) in picked.iter().zip(&mut means) {
        let chunks = m.len();
        println!("{}: {:.1} ns net (median of {chunks} chunk means)", c.name, median(m) - base);
    }
}

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

struct Row {
    case: String,
    mean: f64,
    median: f64,
    p99: f64,
    ratio: f64,
    target: Option<f64>,
}

/// The test run's interface (loopback, where `BPF_PROG_TEST_RUN` delivers) with the MAC the
/// frames are addressed to.
fn local_macs() -> [(u32, [u8; 6]); 1] {
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").expect("lo exists");
    [(lo.trim().parse().expect("an index"), balancer_tests::packet::LB_MAC)]
}

#[expect(clippy::too_many_lines, reason = "one report section, read top to bottom")]
pub fn part1(n: usize, report: &mut String, targets: &mut Targets) {
    let mut fx = Fixture::new(CONFIG);
    // As the daemon does: the MAC check (`LOCAL_MACS`) is on every packet's path.
    fx.set_local_macs(&local_macs());
    {
        let prog: &mut Xdp = fx.dp.ebpf_mut().program_mut("ref_swap").unwrap().try_into().unwrap();
        prog.load().expect("load ref_swap");
    }
    let ebpf = fx.dp.ebpf();
    let prog = |name: &str| -> &Xdp { ebpf.program(name).unwrap().try_into().unwrap() };
    let (lb, pass, swap) = (prog(BALANCER_PROGRAM), prog(PASS_PROGRAM), prog("ref_swap"));
    // A second instance whose insert limit (1 per second) every SYN but the first is over.
    let mut guarded_fx =
        Fixture::new(&CONFIG.replacen("interfaces = [\"eth0\"]", "interfaces = [\"eth0\"]\nflow_insert_limit = 1", 1));
    guarded_fx.set_local_macs(&local_macs());
    let guarded: &Xdp = guarded_fx.dp.ebpf().program(BALANCER_PROGRAM).unwrap().try_into().unwrap();

    let v4 = |dst: &str, flags| Frame::tcp("192.0.2.1:40000", dst, flags).build();
    let v6 = |dst: &str, flags| Frame::tcp("[2001:db8:c::1]:40000", dst, flags).build();
    let (p4, p6) = (14 + 20, 14 + 40);
    let udp = Frame::new("192.0.2.1:5000", "198.51.100.12:443", L4::Udp).build();

    let mut cases: Vec<Case> = Vec::new();
    let mut case = |name: &str, prog, expect, frame: Box<dyn Fn(usize) -> Vec<u8>>, target| {
        cases.push(Case { name: name.into(), prog, expect, frame, target });
    };
    let ack4 = v4("198.51.100.10:80", tcp::ACK);
    case("pass-only (reference)", pass, XDP_PASS, Box::new(move |_| ack4.clone()), None);
    let ack4 = v4("198.51.100.10:80", tcp::ACK);
    case("parse + MAC swap + XDP_TX (reference)", swap, XDP_TX, Box::new(move |_| ack4.clone()), None);
    let other4 = v4("198.51.100.99:80", tcp::ACK);
    case("v4 non-VIP", lb, XDP_PASS, Box::new(move |_| other4.clone()), Some(1.3));
    let other6 = v6("[2001:db8::99]:80", tcp::ACK);
    case("v6 non-VIP", lb, XDP_PASS, Box::new(move |_| other6.clone()), Some(1.3));
    for (mode, offset, vips) in [
        ("DSR", 0, [("v4", "198.51.100.10:80", p4), ("v6", "[2001:db8::10]:80", p6)]),
        ("IPIP", 2 * n, [("v4", "198.51.100.11:80", p4), ("v6", "[2001:db8::11]:80", p6)]),
    ] {
        for (fam, vip, at) in vips {
            let syn = if fam == "v4" { v4(vip, tcp::SYN) } else { v6(vip, tcp::SYN) };
            case(
                &format!("{fam} {mode} SYN, new flow"),
                lb,
                XDP_TX,
                Box::new(move |i| with_port(&syn, at, offset + i)),
                Some(4.2),
            );
            let ack = if fam == "v4" { v4(vip, tcp::ACK) } else { v6(vip, tcp::ACK) };
            case(&format!("{fam} {mode} ACK, established"), lb, XDP_TX, Box::new(move |_| ack.clone()), Some(2.3));
        }
    }
    case("v4 UDP, source port not hashed", lb, XDP_TX, Box::new(move |i| with_port(&udp, p4, i)), Some(2.3));
    let syn = v4("198.51.100.10:80", tcp::SYN);
    case(
        "v4 DSR SYN, over the insert limit (not pinned)",
        guarded,
        XDP_TX,
        Box::new(move |i| with_port(&syn, p4, 4 * n + i)),
        Some(4.2),
    );
    for (fam, router, vip, client, kind) in [
        ("v4", "198.18.0.254:0", "198.51.100.11:80", "192.0.2.1:40000", (3, 4, [0, 0, 0x05, 0x00])),
        ("v6", "[2001:db8:ff::1]:0", "[2001:db8::11]:80", "[2001:db8:c::1]:40000", (2, 0, [0, 0, 0x05, 0x00])),
    ] {
        let icmp = Frame::icmp_error(router, &Frame::tcp(vip, client, tcp::ACK), kind).build();
        case(
            &format!("{fam} ICMP too-big relayed to the flow's backend (IPIP)"),
            lb,
            XDP_TX,
            Box::new(move |_| icmp.clone()),
            Some(4.2),
        );
    }

    // `BENCH_BPF_OBJECT_B`: another build of the program, measured in the same rounds on the
    // balancer's own cases (rows "B: …"), for an A/B comparison that run-to-run drift cannot
    // blur.
    let fx_b = std::env::var_os("BENCH_BPF_OBJECT_B").map(|p| {
        let mut f = Fixture::with_object(std::path::Path::new(&p), CONFIG);
        f.set_local_macs(&local_macs());
        f
    });
    if let Some(fx_b) = &fx_b {
        let b: &Xdp = fx_b.dp.ebpf().program(BALANCER_PROGRAM).unwrap().try_into().unwrap();
        let mine: Vec<String> = cases.iter().filter(|c| std::ptr::eq(c.prog, lb)).map(|c| c.name.clone()).collect();
        for name in mine {
            let again = again(&cases, &name, n, b, "B");
            cases.push(again);
        }
    }
    // `BENCH_KATRAN_OBJECT`: Katran's program (`katran`) on the IPIP cases, rows "Katran: …".
    let katran = std::env::var_os("BENCH_KATRAN_OBJECT").map(|p| crate::katran::Katran::load(std::path::Path::new(&p)));
    if let Some(k) = &katran {
        for name in KATRAN_CASES {
            let again = Case { target: None, ..again(&cases, name, n, k.program(), "Katran") };
            cases.push(again);
        }
    }
    // `BENCH_PROFILE_CASE`: one case, steadily, instead of the table (`steady`).
    if let Ok(name) = std::env::var("BENCH_PROFILE_CASE") {
        steady(&cases, &name, n);
        return;
    }
    let per_round = n / ROUNDS;
    let mut samples: Vec<Vec<u64>> = cases.iter().map(|_| Vec::with_capacity(n)).collect();
    for round in 0..ROUNDS {
        for (c, ns) in cases.iter().zip(&mut samples) {
            measure(c.prog, round * per_round..(round + 1) * per_round, c.expect, &*c.frame, ns);
        }
    }
    let samples: Vec<Sample> = samples
        .into_iter()
        .map(|mut ns| {
            ns.sort_unstable();
            Sample(ns)
        })
        .collect();
    let base = samples[0].trimmed_mean();
    let rows: Vec<Row> = cases
        .iter()
        .zip(&samples)
        .map(|(c, s)| Row {
            case: c.name.clone(),
            mean: s.trimmed_mean(),
            median: s.median(),
            p99: s.p99(),
            ratio: s.trimmed_mean() / base,
            target: c.target,
        })
        .collect();

    writeln!(report, "### 1. XDP cost per packet (BPF_PROG_TEST_RUN, {n} packets per case, one per call, cases interleaved in {ROUNDS} rounds)\n").unwrap();
    writeln!(report, "Ratios compare means of the fastest 99% of calls (durations come in ~10 ns steps).\n").unwrap();
    writeln!(report, "Net ns is the mean less pass-only's: what the program itself costs, which moves less between runs and machines than the ratio (the test run's own overhead is in pass-only).\n").unwrap();
    writeln!(report, "| case | mean ns | net ns | median ns | p99 ns | × pass-only | target | |").unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---|").unwrap();
    for r in &rows {
        let (t, verdict) = match r.target {
            Some(t) => {
                targets.add(
                    format!("XDP per packet: {}", r.case),
                    format!("{:.2}× pass-only", r.ratio),
                    format!("≤ {t}×"),
                    r.ratio <= t,
                );
                (format!("≤ {t}×"), if r.ratio <= t { "met" } else { "**missed**" })
            }
            None => (String::new(), ""),
        };
        writeln!(
            report,
            "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {t} | {verdict} |",
            r.case,
            r.mean,
            r.mean - base,
            r.median,
            r.p99,
            r.ratio
        )
        .unwrap();
    }
    if let Some(k) = &katran {
        beside_katran(report, &rows, base, &k.lru());
    }
    // Where the time goes, from the differences between rows of this run (v4, DSR).
    let m = |case: &str| rows.iter().find(|r| r.case == case).map_or(0.0, |r| r.mean);
    let (pass, swap, nonvip) =
        (m("pass-only (reference)"), m("parse + MAC swap + XDP_TX (reference)"), m("v4 non-VIP"));
    let (est, syn, ipip) = (m("v4 DSR ACK, established"), m("v4 DSR SYN, new flow"), m("v4 IPIP ACK, established"));
    writeln!(report, "\nWhere the time goes (v4, differences between the rows above):\n").unwrap();
    writeln!(report, "- parse, MAC swap, XDP_TX (reference − pass-only): {:.0} ns", swap - pass).unwrap();
    writeln!(report, "- parse and VIP hash lookup (non-VIP − pass-only): {:.0} ns", nonvip - pass).unwrap();
    writeln!(
        report,
        "- flow hash, flow-table hit, backend lookup, rewrite, counters (established − non-VIP): {:.0} ns",
        est - nonvip
    )
    .unwrap();
    writeln!(report, "- IPIP encapsulation over DSR (IPIP established − DSR established): {:.0} ns", ipip - est)
        .unwrap();
    writeln!(report, "- new flow over established (ring slot, backend, flow-table insert): {:.0} ns", syn - est)
        .unwrap();
}
