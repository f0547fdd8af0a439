//! The XDP program against generated and mutated frames (issue 10's packet suite): valid frames
//! for VIPs and others, then truncated at any offset, with header fields set to what the
//! parser must refuse (IHL, version against ethertype, data offset, fragment bits, lengths),
//! stacked and `QinQ` tags, IPv6 extension chains, tiny and jumbo frames, random bytes.
//!
//! Each frame's outcome is checked against an independent reading of the design:
//! - a frame the design does not balance passes, byte for byte untouched;
//! - a frame for a VIP goes to the backend the user-space Maglev table names for its 5-tuple,
//!   rewritten exactly as its forwarding mode says (DSR: the MACs; IPIP: the MACs and a valid
//!   outer header before the original datagram);
//! - the counters add up to the frames run.

use std::net::{IpAddr, SocketAddr};

use balancer_common::flow::FlowKey;

use crate::{
    fixture::{Fixture, backend_ip, backend_mac},
    packet::{Frame, L4, checksum},
    xdp::Verdict,
};

/// The fuzzed services: a DSR and an IPIP VIP per family, TCP and UDP.
pub const CONFIG: &str = r#"
interfaces = ["eth0"]
[[vip]]
address = "198.51.100.10:80"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  weight = 300
[[vip]]
address = "198.51.100.20:53"
protocol = "udp"
forwarding = "ipip"
ring_size = 251
  [[vip.backend]]
  address = "10.1.0.11"
  [[vip.backend]]
  address = "10.1.0.12"
[[vip]]
address = "[2001:db8::10]:443"
ring_size = 251
forwarding = "ipip"
  [[vip.backend]]
  address = "2001:db8:1::11"
  [[vip.backend]]
  address = "2001:db8:1::12"
[[vip]]
address = "[2001:db8::20]:80"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8::21"
  [[vip.backend]]
  address = "2001:db8::22"
"#;

/// The fuzzed VIPs: address, protocol number, IPIP.
const VIPS: [(&str, u8, bool); 4] = [
    ("198.51.100.10:80", 6, false),
    ("198.51.100.20:53", 17, true),
    ("[2001:db8::10]:443", 6, true),
    ("[2001:db8::20]:80", 6, false),
];

/// The most a test run hands XDP as linear data (a page, less the headroom and the shared
/// info); the rest of a longer frame is in fragments, which the program does not read, so it
/// passes such a frame to the kernel. A NIC at an MTU above this needs multi-buffer XDP.
const LINEAR_MAX: usize = 4096 - 256 - 320;

/// xorshift64*: reproducible randomness from a seed, without a dependency (the packet
/// tests' generators share it).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    /// True with probability `p` percent.
    pub fn percent(&mut self, p: u64) -> bool {
        self.bits() % 100 < p
    }
}

/// What a frame is, read the way the design reads it.
#[derive(Debug)]
struct Reading {
    l3: usize,
    ip_end: usize,
    key: FlowKey,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// The design's reading of `f`: `Some` for a TCP/UDP datagram the data path may balance (one
/// optional 802.1Q tag; IPv4 without options or fragmentation; IPv6 with at most three
/// hop-by-hop/routing/destination-options headers and a non-zero payload length; the whole
/// transport header inside both the datagram and the frame).
fn read(f: &[u8]) -> Option<Reading> {
    let (l3, l4, ip_end, mut key) = ip_header(f)?;
    if !matches!(key.proto, 6 | 17) {
        return None;
    }
    let l4_len = if key.proto == 6 { 20 } else { 8 };
    if ip_end < l4 + l4_len || ip_end > f.len() || f.len() < l4 + l4_len {
        return None;
    }
    key.sport_be = u16::from_ne_bytes([f[l4], f[l4 + 1]]);
    key.dport_be = u16::from_ne_bytes([f[l4 + 2], f[l4 + 3]]);
    Some(Reading { l3, ip_end, key })
}

/// The design's reading of `f` as an echo request it answers (`answer_ping`, on by default):
/// to the address of a VIP, its ICMP header inside both the datagram and the frame. The IP
/// header's offset, the ICMP header's, and where the datagram ends.
fn echo_request(f: &[u8]) -> Option<(usize, usize, usize)> {
    let (l3, l4, ip_end, key) = ip_header(f)?;
    let (icmp, request) = if key.family == 4 { (1, 8) } else { (58, 128) };
    let vip_address = VIPS.iter().any(|(a, _, _)| {
        let mut dst = [0u8; 16];
        match a.parse::<SocketAddr>().unwrap().ip() {
            IpAddr::V4(v4) => dst[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => dst = v6.octets(),
        }
        dst == key.dst
    });
    let whole = ip_end >= l4 + 8 && ip_end <= f.len();
    (key.proto == icmp && vip_address && whole && f[l4] == request).then_some((l3, l4, ip_end))
}

/// The IP header as the parser reads it: the IP header's and the transport's offsets, where
/// the datagram ends, addresses, protocol and family.
fn ip_header(f: &[u8]) -> Option<(usize, usize, usize, FlowKey)> {
    let mut l3 = 14;
    let mut et = be16(f, 12)?;
    if et == 0x8100 {
        et = be16(f, 16)?;
        l3 = 18;
    }
    let mut key = FlowKey::EMPTY;
    let (l4, ip_end) = match et {
        0x0800 => {
            let h = f.get(l3..l3 + 20)?;
            if h[0] != 0x45 || be16(h, 6)? & 0x3fff != 0 {
                return None;
            }
            key.proto = h[9];
            key.family = 4;
            key.src[..4].copy_from_slice(&h[12..16]);
            key.dst[..4].copy_from_slice(&h[16..20]);
            (l3 + 20, l3 + usize::from(be16(h, 2)?))
        }
        0x86dd => {
            let h = f.get(l3..l3 + 40)?;
            let payload = usize::from(be16(h, 4)?);
            if h[0] >> 4 != 6 || payload == 0 {
                return None;
            }
            key.family = 6;
            key.src.copy_from_slice(&h[8..24]);
            key.dst.copy_from_slice(&h[24..40]);
            let (mut next, mut off) = (h[6], l3 + 40);
            for _ in 0..3 {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                next = *f.get(off)?;
                off += (usize::from(*f.get(off + 1)?) + 1) * 8;
            }
            if matches!(next, 0 | 43 | 60 | 44) {
                return None;
            }
            key.proto = next;
            (off, l3 + 40 + payload)
        }
        _ => return None,
    };
    Some((l3, l4, ip_end, key))
}

/// Whether `out` is the design's answer to the echo request `f`: MACs and addresses swapped, a
/// fresh TTL (and IPv4 header checksum), the reply type, everything else as it was, and a valid
/// ICMP checksum where the request's was.
fn check_echo(f: &[u8], out: &[u8], (l3, l4, ip_end): (usize, usize, usize)) -> Result<(), String> {
    let v4 = f[l3] >> 4 == 4;
    let (alen, at) = if v4 { (4, l3 + 12) } else { (16, l3 + 8) };
    let mut want = f.to_vec();
    want[..6].copy_from_slice(&f[6..12]);
    want[6..12].copy_from_slice(&f[..6]);
    want[at..at + alen].copy_from_slice(&f[at + alen..at + 2 * alen]);
    want[at + alen..at + 2 * alen].copy_from_slice(&f[at..at + alen]);
    want[if v4 { l3 + 8 } else { l3 + 7 }] = 64;
    want[l4] = if v4 { 0 } else { 129 };
    if v4 {
        want[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&want[l3..l3 + 20], 0);
        want[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let icmp_ok = |frame: &[u8]| {
        let (s, d) = (&frame[l3 + if v4 { 12 } else { 8 }..], &frame[at + alen..]);
        let pseudo = if v4 {
            0
        } else {
            let (s, d) = (<[u8; 16]>::try_from(&s[..16]).unwrap(), <[u8; 16]>::try_from(&d[..16]).unwrap());
            crate::packet::pseudo_header_sum(IpAddr::from(s), IpAddr::from(d), 58, ip_end - l4)
        };
        checksum(&frame[l4..ip_end], pseudo) == 0
    };
    // The checksum is updated for the type alone; compare everything else byte for byte.
    let (mut a, mut b) = (out.to_vec(), want);
    a[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    b[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    if a != b {
        return Err("echo reply is not the request with addresses swapped".into());
    }
    if icmp_ok(f) && !icmp_ok(out) {
        return Err("echo reply has a bad ICMP checksum".into());
    }
    Ok(())
}

/// The VIP (index into `VIPS`) a 5-tuple is for.
fn vip_of(key: &FlowKey) -> Option<usize> {
    VIPS.iter().position(|(addr, proto, _)| {
        let a: SocketAddr = addr.parse().unwrap();
        let mut dst = [0u8; 16];
        match a.ip() {
            IpAddr::V4(v4) => dst[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => dst = v6.octets(),
        }
        key.dst == dst
            && u16::from_be(key.dport_be) == a.port()
            && key.proto == *proto
            && key.family == if a.is_ipv4() { 4 } else { 6 }
    })
}

/// A valid frame, for a VIP most of the time.
fn base(rng: &mut Rng) -> Vec<u8> {
    let v6 = rng.percent(50);
    let (vip, _, _) = VIPS[rng.below(2) + if v6 { 2 } else { 0 }];
    let mut dst: SocketAddr = vip.parse().unwrap();
    if rng.percent(15) {
        dst.set_port(rng.below(65536) as u16); // the VIP's address, another port
    }
    let src: SocketAddr = if v6 {
        format!("[2001:db8:c::{:x}]:{}", rng.below(0xffff) + 1, rng.below(65535) + 1).parse().unwrap()
    } else {
        format!("192.0.2.{}:{}", rng.below(254) + 1, rng.below(65535) + 1).parse().unwrap()
    };
    let l4 = match rng.below(10) {
        0 => L4::Udp,
        1 => L4::IcmpEcho,
        2 => L4::Other(47),
        _ if dst.port() == 53 => L4::Udp,
        _ => L4::Tcp { flags: [0x02, 0x10, 0x18, 0x11, 0x04, 0x12][rng.below(6)], seq: rng.bits() as u32 },
    };
    let mut fr = Frame::new(&src.to_string(), &dst.to_string(), l4);
    if rng.percent(25) {
        fr.vlan = Some(rng.below(4095) as u16 + 1);
    }
    if v6 && rng.percent(20) {
        for _ in 0..=rng.below(4) {
            fr.ipv6_ext.push(([0u8, 43, 60, 44, 0x99][rng.below(5)], vec![0; rng.below(3) * 8 + 6]));
        }
    }
    if !v6 && rng.percent(5) {
        fr.ipv4_options = vec![1; 4 * (rng.below(3) + 1)];
    }
    if !v6 && rng.percent(5) {
        fr.ipv4_frag = [0x2000, 0x0001, 0x4000, 0x2010][rng.below(4)];
    }
    fr.tos = rng.bits() as u8;
    let len = if rng.percent(3) { 1400 + rng.below(7600) } else { rng.below(64) };
    fr.payload = (0..len).map(|_| rng.bits() as u8).collect();
    fr.build()
}

/// Applies zero to three mutations to `f`.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    let l3 = if be16(f, 12) == Some(0x8100) { 18 } else { 14 };
    for _ in 0..rng.below(4) {
        match rng.below(12) {
            0 => f.truncate(rng.below(f.len() + 1)),
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = rng.bits() as u8;
            }
            2 if f.len() > l3 => f[l3] = (f[l3] & 0xf0) | (rng.below(16) as u8), // IHL
            3 if f.len() > l3 => f[l3] = (f[l3] & 0x0f) | ((rng.below(16) as u8) << 4), // version
            4 if f.len() > 13 => {
                let et = [0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806, rng.bits() as u16][rng.below(6)];
                f[12..14].copy_from_slice(&et.to_be_bytes());
            }
            // Another tag: QinQ (0x88a8) or a second 802.1Q tag in front.
            5 if f.len() >= 14 => {
                let tpid = if rng.percent(50) { 0x88a8u16 } else { 0x8100 };
                let tag = [(tpid >> 8) as u8, tpid as u8, 0, rng.bits() as u8];
                f.splice(12..12, tag);
            }
            6 if f.len() > l3 + 40 => {
                // TCP data offset 0 or 15 (v4 layout).
                f[l3 + 32] = if rng.percent(50) { 0 } else { 0xf0 };
            }
            7 if f.len() > l3 + 8 => f[l3 + 6] = rng.bits() as u8, // v4 flags/fragment offset, v6 next header
            8 if f.len() > l3 + 6 => {
                let v = rng.bits() as u16;
                let at = if f[l3] >> 4 == 6 { l3 + 4 } else { l3 + 2 }; // payload / total length
                f[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            9 => f.truncate(rng.below(14)),                               // tiny
            10 => f.extend((0..rng.below(64)).map(|_| rng.bits() as u8)), // trailing bytes
            _ => {}
        }
    }
}

/// What a fuzz run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames run.
    pub frames: u64,
    /// Frames forwarded (each checked against the table and its mode).
    pub forwarded: u64,
    /// Frames passed untouched.
    pub passed: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames whose outcome broke the design, with why (the first few).
    pub wrong: Vec<String>,
    /// How many broke it.
    pub misroutes: u64,
}

fn check(fx: &Fixture, f: &[u8], verdict: Verdict, out: &[u8]) -> Result<(), String> {
    if let Some(echo) = echo_request(f) {
        return match verdict {
            Verdict::Tx => check_echo(f, out, echo),
            // As below: the program sees only the linear part.
            Verdict::Pass if out == f && f.len() > LINEAR_MAX => Ok(()),
            v => Err(format!("an echo request to a VIP address got {v:?}")),
        };
    }
    let reading = read(f).and_then(|r| vip_of(&r.key).map(|v| (r, v)));
    let Some((r, vip)) = reading else {
        return match verdict {
            Verdict::Pass if out == f => Ok(()),
            Verdict::Pass => Err("passed but changed".into()),
            v => Err(format!("not balanceable by the design, but {v:?}")),
        };
    };
    if verdict == Verdict::Pass && out == f && f.len() > LINEAR_MAX {
        return Ok(()); // the program sees only the linear part; the kernel has the frame
    }
    if verdict != Verdict::Tx {
        return Err(format!("a frame for VIP {} got {verdict:?}", VIPS[vip].0));
    }
    let b = fx.table_backend(vip, &r.key);
    let mac = backend_mac(backend_ip(&b));
    // To the backend's MAC, from the MAC the frame was sent to.
    if out[..6] != mac || out[6..12] != f[..6] {
        return Err(format!("went to MAC {:02x?} from {:02x?}, the table names {mac:02x?}", &out[..6], &out[6..12]));
    }
    if !VIPS[vip].2 {
        return if out[12..] == f[12..] && out.len() == f.len() {
            Ok(())
        } else {
            Err("DSR changed more than MACs".into())
        };
    }
    // IPIP: L2 kept, an outer header, then the frame's bytes from the IP header on.
    let v4 = r.key.family == 4;
    let outer_len = if v4 { 20 } else { 40 };
    if out.len() != f.len() + outer_len || out[12..r.l3] != f[12..r.l3] || out[r.l3 + outer_len..] != f[r.l3..] {
        return Err("IPIP frame is not L2 + outer + original".into());
    }
    let o = &out[r.l3..r.l3 + outer_len];
    let inner_len = r.ip_end - r.l3;
    if v4 {
        let ok = o[0] == 0x45
            && o[9] == 4
            && usize::from(be16(o, 2).unwrap()) == inner_len + 20
            && checksum(o, 0) == 0
            && o[16..20] == b.addr[..4];
        if !ok {
            return Err(format!("bad outer IPv4 header {o:02x?}"));
        }
    } else {
        let ok = o[0] >> 4 == 6 && o[6] == 41 && usize::from(be16(o, 4).unwrap()) == inner_len && o[24..40] == b.addr;
        if !ok {
            return Err(format!("bad outer IPv6 header {o:02x?}"));
        }
    }
    Ok(())
}

/// Runs `frames` generated frames from `seed` through a fresh fixture.
pub fn run(frames: u64, seed: u64) -> Outcome {
    let fx = Fixture::new(CONFIG);
    let mut rng = Rng(seed | 1);
    let mut o = Outcome::default();
    for _ in 0..frames {
        let mut f = base(&mut rng);
        if rng.percent(70) {
            mutate(&mut rng, &mut f);
        }
        // The kernel refuses test runs on frames shorter than an Ethernet header.
        if f.len() < 14 {
            f.resize(14, 0);
        }
        let (verdict, out) = fx.run(&f);
        o.frames += 1;
        match verdict {
            Verdict::Tx => o.forwarded += 1,
            Verdict::Pass => o.passed += 1,
            Verdict::Drop => o.dropped += 1,
            _ => {}
        }
        if let Err(why) = check(&fx, &f, verdict, &out) {
            o.misroutes += 1;
            if o.wrong.len() < 12 {
                o.wrong.push(format!("{why} ({} bytes): {:02x?}…", f.len(), &f[..f.len().min(96)]));
            }
        }
    }
    // The counters: every frame is either forwarded for a VIP, passed/dropped for a reason, or
    // an echo request answered.
    let s = fx.stats();
    let counted: u64 = s.vips.iter().map(|v| v.traffic.packets).sum::<u64>()
        + s.not_balanced.iter().map(|(_, n)| n).sum::<u64>()
        + s.icmp.iter().filter(|(e, _)| *e == "echo_replied").map(|(_, n)| n).sum::<u64>();
    if counted != o.frames {
        o.wrong.push(format!("counters add up to {counted}, {} frames were run", o.frames));
        o.misroutes += 1;
    }
    o
}
