//! ICMP for VIPs, which the balancer answers for because no host in front of the backends
//! owns the VIP:
//! - errors about a VIP's flow (destination unreachable, fragmentation needed, packet too big)
//!   go to the flow's backend, found from the header they quote, so a backend behind IPIP
//!   learns the path MTU instead of resending into a black hole;
//! - a packet that would exceed the egress MTU once encapsulated is answered with
//!   "fragmentation needed" / "packet too big" quoting it, so the client sends smaller ones;
//! - echo requests to a VIP address (`answer_ping`) are answered.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_csum_diff, programs::XdpContext};
use balancer_common::{
    counters::{IcmpEvent, Reason, budget},
    family,
    flow::{FlowKey, Place},
    hash::flow_hash64,
    proto,
    vip::{EchoKey, flags, forward as fwd},
};

use crate::{
    csum,
    maps::{ECHO_ADDRS, SETTINGS},
    packet::{adjust_head, adjust_tail, ptr_at, read, write},
    parse::{self, Ip, Packet},
    stats, vip,
    wire::{ETH_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_LEN, IPV6_LEN, VLAN_ETH_LEN},
};

/// ICMP header: type, code, checksum, four bytes that depend on the type.
const ICMP_LEN: usize = 8;
const V4_ECHO_REPLY: u8 = 0;
const V4_UNREACHABLE: u8 = 3;
const V4_FRAG_NEEDED: u8 = 4;
const V4_ECHO: u8 = 8;
const V6_UNREACHABLE: u8 = 1;
const V6_TOO_BIG: u8 = 2;
const V6_ECHO: u8 = 128;
const V6_ECHO_REPLY: u8 = 129;
/// Bytes of the client's datagram a "too big" quotes: its IP header and the start of its
/// transport header, which is what the client's stack needs to find the connection and check
/// the sequence number. Short of the RFCs' "as much as fits", which would cost a checksum over
/// hundreds of bytes per message.
const QUOTE_V4: usize = 64;
const QUOTE_V6: usize = 104;
const REPLY_TTL: u8 = 64;

/// An ICMP packet (`parse` said `Reason::Icmp`): relayed, answered, or passed as before. Run by
/// a program of its own (`branch_icmp` in `main`, entered by tail call), so its stack does not
/// add to the TCP/UDP path's.
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> Result<u32, Reason> {
    let ip = parse::ip(ctx)?;
    // Read before the length checks: after them LLVM would drop this read's own bounds check as
    // implied, which the verifier does not follow.
    let ty = read::<[u8; ICMP_LEN]>(ctx, ip.l4_off)?[0];
    if ip.ip_end < ip.l4_off + ICMP_LEN || ip.ip_end > ctx.data_end() - ctx.data() {
        return Err(Reason::BadLength);
    }
    match (ip.key.family, ip.key.proto, ty) {
        (family::V4, IPPROTO_ICMP, V4_UNREACHABLE) | (family::V6, IPPROTO_ICMPV6, V6_UNREACHABLE | V6_TOO_BIG) => {
            relay(ctx, &ip)
        }
        (family::V4, IPPROTO_ICMP, V4_ECHO) => echo(ctx, &ip, V4_ECHO_REPLY),
        (family::V6, IPPROTO_ICMPV6, V6_ECHO) => echo(ctx, &ip, V6_ECHO_REPLY),
        _ => Err(Reason::Icmp),
    }
}

/// The flow an ICMP error is about, from the datagram it quotes (which a backend sent from
/// the VIP to the client): addresses and ports swapped back into the client's direction.
/// `Reason::Icmp` (passed) when the quote is not a whole TCP/UDP header from the address the
/// error was sent to.
#[inline(always)]
fn quoted_flow(ctx: &XdpContext, ip: &Ip) -> Result<FlowKey, Reason> {
    let inner = ip.l4_off + ICMP_LEN;
    let mut key = ip.key;
    let ports_off = if ip.key.family == family::V4 {
        let h = read::<[u8; IPV4_LEN]>(ctx, inner)?;
        // Ports are only in the first fragment; options would move them.
        if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return Err(Reason::Icmp);
        }
        key.proto = h[9];
        key.src = [0; 16];
        key.dst = [0; 16];
        key.src[..4].copy_from_slice(&h[16..20]);
        key.dst[..4].copy_from_slice(&h[12..16]);
        inner + IPV4_LEN
    } else {
        let h = read::<[u8; IPV6_LEN]>(ctx, inner)?;
        if h[0] >> 4 != 6 {
            return Err(Reason::Icmp);
        }
        key.proto = h[6];
        key.src.copy_from_slice(&h[24..40]);
        key.dst.copy_from_slice(&h[8..24]);
        inner + IPV6_LEN
    };
    if (key.proto != proto::TCP && key.proto != proto::UDP) || key.dst != ip.key.dst {
        return Err(Reason::Icmp);
    }
    let p = read::<[u8; 4]>(ctx, ports_off)?;
    key.sport_be = u16::from_ne_bytes([p[2], p[3]]);
    key.dport_be = u16::from_ne_bytes([p[0], p[1]]);
    Ok(key)
}

/// Forwards an ICMP error about a VIP's flow to that flow's backend, as the flow's packets go
/// (its flow-table entry, else the Maglev table; never pinned), with the VIP's forwarding mode.
/// Errors about flows of no L4 VIP are the kernel's.
#[inline(always)]
fn relay(ctx: &XdpContext, ip: &Ip) -> Result<u32, Reason> {
    let key = quoted_flow(ctx, ip)?;
    let vip = vip::lookup(&key).map_err(|_| Reason::Icmp)?;
    if vip.forward == fwd::LOCAL {
        return Err(Reason::Icmp);
    }
    if vip.flags & flags::SOURCE_FILTER != 0 && !vip::source_allowed(&key, vip.id) {
        return Err(Reason::SourceFiltered);
    }
    let settings = SETTINGS.get(0).ok_or(Reason::Rewrite)?;
    let hash = flow_hash64(&key.for_vip(vip.flags));
    let (id, backend, _) = crate::steer(&vip, hash, &Place::of(hash, settings.flow_secret), false)?;
    let len = (ctx.data_end() - ctx.data()) as u64;
    let packet = Packet { l3_off: ip.l3_off, key, len, syn: false };
    let action = crate::send(ctx, &vip, settings, &packet, backend)?;
    stats::forwarded(vip.id, id, len, None);
    stats::icmp(IcmpEvent::Relayed);
    Ok(action)
}

/// Answers an echo request to a VIP address in place: addresses and MACs swapped, the type
/// turned into a reply (checksum updated for that one word: the addresses' swap leaves the
/// `ICMPv6` pseudo-header sum as it was), out of the interface it came in by.
#[inline(always)]
fn echo(ctx: &XdpContext, ip: &Ip, reply: u8) -> Result<u32, Reason> {
    let k = EchoKey { addr: ip.key.dst, family: ip.key.family, _pad: [0; 3] };
    // SAFETY: only tested for presence; nothing is read through the value.
    if unsafe { ECHO_ADDRS.get(k) }.is_none() {
        return Err(Reason::Icmp);
    }
    let h = read::<[u8; 4]>(ctx, ip.l4_off)?;
    let check = csum::replace(
        u16::from_be_bytes([h[2], h[3]]),
        u16::from_be_bytes([h[0], h[1]]),
        u16::from_be_bytes([reply, h[1]]),
    );
    let c = check.to_be_bytes();
    write(ctx, ip.l4_off, [reply, h[1], c[0], c[1]])?;
    if ip.key.family == family::V4 {
        let mut h = read::<[u8; IPV4_LEN]>(ctx, ip.l3_off)?;
        swap_addresses::<IPV4_LEN, 12, 4>(&mut h);
        h[8] = REPLY_TTL;
        h[10] = 0;
        h[11] = 0;
        let c = csum::ipv4_header(&h).to_be_bytes();
        h[10] = c[0];
        h[11] = c[1];
        write(ctx, ip.l3_off, h)?;
    } else {
        let mut h = read::<[u8; IPV6_LEN]>(ctx, ip.l3_off)?;
        swap_addresses::<IPV6_LEN, 8, 16>(&mut h);
        h[7] = REPLY_TTL;
        write(ctx, ip.l3_off, h)?;
    }
    let m = read::<[u8; 12]>(ctx, 0)?;
    write(ctx, 0, swapped_macs(&m))?;
    stats::icmp(IcmpEvent::EchoReplied);
    Ok(xdp_action::XDP_TX)
}

/// Answers a packet that would exceed the egress MTU (`mtu`) once encapsulated: "fragmentation
/// needed" (IPv4, only when the packet has don't-fragment set; without it the packet is dropped
/// as `Reason::TooBig`, since XDP cannot fragment it) or "packet too big" (IPv6), from the VIP
/// to the client, quoting the start of the packet, out of the interface it came in by. The MTU
/// it reports leaves room for the outer header. Called as a function of its own, for the same
/// reason as `handle`.
#[inline(always)]
pub fn too_big(ctx: &XdpContext, mtu: u16) -> Result<u32, Reason> {
    let packet = parse::parse(ctx)?;
    if packet.key.family == family::V4 {
        let h = read::<[u8; 8]>(ctx, packet.l3_off)?;
        if h[6] & 0x40 == 0 {
            return Err(Reason::TooBig);
        }
    }
    if !crate::flow::under_limit(budget::TOO_BIG, budget::TOO_BIG_PER_WINDOW) {
        return Err(Reason::TooBig);
    }
    // The L2 length must be a constant for the verifier: one instance per length.
    match (packet.key.family, packet.l3_off) {
        (family::V4, VLAN_ETH_LEN) => frag_needed::<VLAN_ETH_LEN>(ctx, mtu.saturating_sub(IPV4_LEN as u16)),
        (family::V4, _) => frag_needed::<ETH_LEN>(ctx, mtu.saturating_sub(IPV4_LEN as u16)),
        (_, VLAN_ETH_LEN) => packet_too_big::<VLAN_ETH_LEN>(ctx, mtu.saturating_sub(IPV6_LEN as u16)),
        _ => packet_too_big::<ETH_LEN>(ctx, mtu.saturating_sub(IPV6_LEN as u16)),
    }?;
    stats::icmp(IcmpEvent::TooBigSent);
    Ok(xdp_action::XDP_TX)
}

/// ICMPv4 type 3 code 4 with next-hop MTU `mtu` (RFC 1191). Each of these builders is a
/// function of its own, with its own stack frame.
#[inline(never)]
fn frag_needed<const L2: usize>(ctx: &XdpContext, mtu: u16) -> Result<(), Reason> {
    let quoted = quote_sum::<QUOTE_V4>(ctx, L2)?;
    let addrs = read::<[u8; 8]>(ctx, L2 + 12)?;
    let mut ip = [0u8; IPV4_LEN];
    ip[0] = 0x45;
    ip[1] = 0xc0; // internetwork control, as hosts send their ICMP errors
    ip[2..4].copy_from_slice(&((IPV4_LEN + ICMP_LEN + QUOTE_V4) as u16).to_be_bytes());
    ip[8] = REPLY_TTL;
    ip[9] = IPPROTO_ICMP;
    ip[12..16].copy_from_slice(&addrs[4..]);
    ip[16..20].copy_from_slice(&addrs[..4]);
    let c = csum::ipv4_header(&ip).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    let m = mtu.to_be_bytes();
    let mut icmp = [V4_UNREACHABLE, V4_FRAG_NEEDED, 0, 0, 0, 0, m[0], m[1]];
    let c = csum::fold(csum::add(&icmp, quoted)).to_be_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    reply::<L2, IPV4_LEN, QUOTE_V4>(ctx, ip, icmp)
}

/// ICMPv6 type 2 with MTU `mtu` (RFC 4443 §3.2).
#[inline(never)]
fn packet_too_big<const L2: usize>(ctx: &XdpContext, mtu: u16) -> Result<(), Reason> {
    let quoted = quote_sum::<QUOTE_V6>(ctx, L2)?;
    let addrs = read::<[u8; 32]>(ctx, L2 + 8)?;
    let mut ip = [0u8; IPV6_LEN];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((ICMP_LEN + QUOTE_V6) as u16).to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = REPLY_TTL;
    ip[8..24].copy_from_slice(&addrs[16..]);
    ip[24..40].copy_from_slice(&addrs[..16]);
    let m = u32::from(mtu).to_be_bytes();
    let mut icmp = [V6_TOO_BIG, 0, 0, 0, m[0], m[1], m[2], m[3]];
    // The pseudo-header: both addresses (their sum does not depend on the order), the
    // upper-layer length and next header.
    let pseudo = csum::add(&addrs, (ICMP_LEN + QUOTE_V6) as u32 + u32::from(IPPROTO_ICMPV6));
    let c = csum::fold(csum::add(&icmp, quoted + pseudo)).to_be_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    reply::<L2, IPV6_LEN, QUOTE_V6>(ctx, ip, icmp)
}

/// The sum of the `Q` bytes at `off` as big-endian words, folded to 16 bits, computed by the
/// kernel's `bpf_csum_diff` in place (a copy to the stack would not fit beside the rest).
#[inline(always)]
fn quote_sum<const Q: usize>(ctx: &XdpContext, off: usize) -> Result<u32, Reason> {
    let p = ptr_at::<[u8; Q]>(ctx, off)?;
    // SAFETY: `ptr_at` checked the `Q` bytes lie inside the packet; the helper only reads them.
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), Q as u32, 0) };
    if s < 0 {
        return Err(Reason::Rewrite);
    }
    // The helper adds words as loaded (little-endian here): fold, then swap into wire order,
    // which a one's-complement sum allows.
    let mut x = s as u64;
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    Ok(u32::from((x as u16).swap_bytes()))
}

/// Turns the frame into `L2` (MACs swapped) + `ip` (`IP` bytes) + `icmp` + the first `Q` bytes of the
/// original datagram, which stay where they are: the frame grows by the new headers at the
/// front and is cut after the quote.
#[inline(always)]
fn reply<const L2: usize, const IP: usize, const Q: usize>(
    ctx: &XdpContext,
    ip: [u8; IP],
    icmp: [u8; ICMP_LEN],
) -> Result<(), Reason> {
    let h = IP + ICMP_LEN;
    let mut l2 = read::<[u8; L2]>(ctx, 0)?;
    let macs = swapped_macs(&read::<[u8; 12]>(ctx, 0)?);
    l2[..12].copy_from_slice(&macs);
    let len = ctx.data_end() - ctx.data();
    adjust_head(ctx, -(h as i32))?;
    write(ctx, 0, l2)?;
    write(ctx, L2, ip)?;
    write(ctx, L2 + IP, icmp)?;
    adjust_tail(ctx, (L2 + h + Q) as i32 - (len + h) as i32)
}

#[inline(always)]
fn swapped_macs(m: &[u8; 12]) -> [u8; 12] {
    [m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// Swaps the `N`-byte source (at `AT`) and destination (right after it) addresses of an IP
/// header.
#[inline(always)]
fn swap_addresses<const LEN: usize, const AT: usize, const N: usize>(h: &mut [u8; LEN]) {
    let mut i = 0;
    while i < N {
        h.swap(AT + i, AT + N + i);
        i += 1;
    }
}
