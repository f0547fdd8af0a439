//! Sending a balanced packet on to its backend: direct server return, or IP-in-IP.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use balancer_common::{backend::Backend, counters::Reason, family, hash::encap_entropy, vip::Settings};

use crate::{
    csum,
    packet::{adjust_head, read, write},
    parse::Packet,
    wire::{ETH_LEN, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_LEN, IPV6_LEN, VLAN_ETH_LEN},
};

const OUTER_TTL: u8 = 64;

/// Direct server return: the frame goes to the backend's MAC unchanged above L2, and leaves from
/// our MAC (the one it was addressed to), so switches learn nothing odd.
#[inline(always)]
pub fn dsr(ctx: &XdpContext, backend: &Backend) -> Result<u32, Reason> {
    let mut macs = read::<[u8; 12]>(ctx, 0)?;
    rewrite_macs(&mut macs, backend);
    write(ctx, 0, macs)?;
    Ok(transmit(ctx, backend.ifindex))
}

/// IP-in-IP (IPv4 in IPv4, IPv6 in IPv6, like Katran): an outer header to the backend goes
/// between the L2 header (kept, VLAN tag included) and the packet. The outer source varies with
/// the client's address and port, so the backend's NIC spreads flows over its queues.
#[inline(always)]
pub fn ipip(ctx: &XdpContext, settings: &Settings, packet: &Packet, backend: &Backend) -> Result<u32, Reason> {
    let e = encap_entropy(&packet.key);
    if packet.key.family == family::V4 {
        // The parser checked the inner total length against the frame, so this cannot wrap.
        let inner = read::<[u8; 8]>(ctx, packet.l3_off)?;
        let total = u16::from_be_bytes([inner[2], inner[3]]) + IPV4_LEN as u16;
        let mut h = [0u8; IPV4_LEN];
        h[0] = 0x45;
        // TOS/ECN, identification and don't-fragment come from the client's packet (RFC 2003
        // §3.1), so path-MTU discovery and ECN keep working through the tunnel.
        h[1] = inner[1];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4] = inner[4];
        h[5] = inner[5];
        h[6] = inner[6] & 0x40;
        h[8] = OUTER_TTL;
        h[9] = IPPROTO_IPIP;
        h[12] = settings.ipip_src_v4[0];
        h[13] = settings.ipip_src_v4[1];
        h[14] = e[0] ^ e[2];
        h[15] = e[1] ^ e[3];
        h[16..20].copy_from_slice(&backend.addr[..4]);
        let c = csum::ipv4_header(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        push_outer(ctx, packet.l3_off, backend, h)?;
    } else {
        let inner = read::<[u8; 6]>(ctx, packet.l3_off)?;
        let inner_len = usize::from(u16::from_be_bytes([inner[4], inner[5]])) + IPV6_LEN;
        let mut h = [0u8; IPV6_LEN];
        // Traffic class from the client's packet; the flow label from the flow, for ECMP.
        h[0] = 0x60 | (inner[0] & 0x0f);
        h[1] = (inner[1] & 0xf0) | (e[0] & 0x0f);
        h[2] = e[1];
        h[3] = e[2];
        h[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
        h[6] = IPPROTO_IPV6;
        h[7] = OUTER_TTL;
        h[8..20].copy_from_slice(&settings.ipip_src_v6[..12]);
        h[20..24].copy_from_slice(&e);
        h[24..40].copy_from_slice(&backend.addr);
        push_outer(ctx, packet.l3_off, backend, h)?;
    }
    Ok(transmit(ctx, backend.ifindex))
}

/// Grows the frame at the front by `N` bytes, moves the L2 header (14 bytes, or 18 with a VLAN
/// tag) to the new front with rewritten MACs, and writes `outer` right after it.
#[inline(always)]
fn push_outer<const N: usize>(
    ctx: &XdpContext,
    l3_off: usize,
    backend: &Backend,
    outer: [u8; N],
) -> Result<(), Reason> {
    // The L2 length must be a constant for the verifier: one instance per length.
    if l3_off == VLAN_ETH_LEN {
        push_outer_after::<VLAN_ETH_LEN, N>(ctx, backend, outer)
    } else {
        push_outer_after::<ETH_LEN, N>(ctx, backend, outer)
    }
}

#[inline(always)]
fn push_outer_after<const L2: usize, const N: usize>(
    ctx: &XdpContext,
    backend: &Backend,
    outer: [u8; N],
) -> Result<(), Reason> {
    let mut l2 = read::<[u8; L2]>(ctx, 0)?;
    rewrite_macs(&mut l2, backend);
    adjust_head(ctx, -(N as i32))?;
    write(ctx, 0, l2)?;
    write(ctx, L2, outer)
}

/// Whether `packet`, encapsulated for `backend`, would exceed the MTU of the interface it
/// leaves by (one compare on the hot path; `mtu` 0 is unknown).
#[inline(always)]
pub fn too_big(packet: &Packet, backend: &Backend) -> bool {
    let outer = if packet.key.family == family::V4 { IPV4_LEN } else { IPV6_LEN };
    backend.mtu != 0 && packet.len as usize - packet.l3_off + outer > usize::from(backend.mtu)
}

/// The MACs at the front of `l2`: destination the backend's next hop, source the MAC the
/// frame was sent to (ours). In place, without a temporary header.
#[inline(always)]
fn rewrite_macs(l2: &mut [u8], backend: &Backend) {
    let ours = [l2[0], l2[1], l2[2], l2[3], l2[4], l2[5]];
    l2[6..12].copy_from_slice(&ours);
    l2[..6].copy_from_slice(&backend.mac);
}

/// `XDP_TX` back out of the ingress interface, or a redirect to the backend's interface.
#[inline(always)]
fn transmit(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == 0 || ifindex as usize == ctx.ingress_ifindex() {
        return xdp_action::XDP_TX;
    }
    // SAFETY: plain helper call; it only records the target for the driver.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}
