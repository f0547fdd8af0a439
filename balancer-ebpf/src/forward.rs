//! Sending a balanced packet on to its backend: direct server return, or IP-in-IP.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use balancer_common::{backend::Backend, counters::Reason, family, hash::encap_entropy, vip::Settings};

use crate::{
    csum,
    packet::{adjust_head, ptr_at, read, write},
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
///
/// The outer header is built as 32-bit words in packet byte order (byte 0 of the header in the
/// low byte of word 0) and stored a word at a time: built byte by byte, the compiler kept each
/// byte in a register of its own and spilled them, and that cost more than the rest of the
/// encapsulation.
#[inline(always)]
pub fn ipip(ctx: &XdpContext, settings: &Settings, packet: &Packet, backend: &Backend) -> Result<u32, Reason> {
    let e = u32::from_le_bytes(encap_entropy(&packet.key));
    let inner = read::<[u32; 2]>(ctx, packet.l3_off)?.map(u32::from_le);
    if packet.key.family == family::V4 {
        push_outer(ctx, packet.l3_off, backend, outer_v4(inner, settings, backend, e))?;
    } else {
        push_outer(ctx, packet.l3_off, backend, outer_v6(inner, settings, backend, e))?;
    }
    Ok(transmit(ctx, backend.ifindex))
}

/// The outer IPv4 header for a client packet whose first 8 header bytes are `inner`. TOS/ECN,
/// identification and don't-fragment come from the client's packet (RFC 2003 §3.1), so path-MTU
/// discovery and ECN keep working through the tunnel; the source's low half is the flow's
/// entropy (`e`'s two halves folded).
#[inline(always)]
fn outer_v4(inner: [u32; 2], settings: &Settings, backend: &Backend, e: u32) -> [u32; 5] {
    // The parser checked the inner total length against the frame, so this cannot wrap.
    let total = ((inner[0] >> 16) as u16).swap_bytes().wrapping_add(IPV4_LEN as u16).swap_bytes();
    let s = &settings.ipip_src_v4;
    let mut h = [
        0x45 | (inner[0] & 0xff00) | (u32::from(total) << 16),
        // Identification, and of the flags only don't-fragment; no fragment offset.
        inner[1] & 0x0040_ffff,
        u32::from(OUTER_TTL) | (u32::from(IPPROTO_IPIP) << 8),
        u32::from(u16::from_le_bytes([s[0], s[1]])) | ((e ^ (e >> 16)) << 16),
        word(&backend.addr, 0),
    ];
    h[2] |= u32::from(csum::ipv4_header_words(&h)) << 16;
    h
}

/// The outer IPv6 header for a client packet whose first 8 header bytes are `inner`: traffic
/// class from the client's packet, the flow label and the source's last 32 bits from the flow's
/// entropy `e` (for ECMP and the backend's RSS).
#[inline(always)]
fn outer_v6(inner: [u32; 2], settings: &Settings, backend: &Backend, e: u32) -> [u32; 10] {
    let length = ((inner[1] & 0xffff) as u16).swap_bytes().wrapping_add(IPV6_LEN as u16).swap_bytes();
    let s = &settings.ipip_src_v6;
    [
        0x60 | (inner[0] & 0xf00f) | ((e & 0x0f) << 8) | ((e & 0x00ff_ff00) << 8),
        u32::from(length) | (u32::from(IPPROTO_IPV6) << 16) | (u32::from(OUTER_TTL) << 24),
        word(s, 0),
        word(s, 4),
        word(s, 8),
        e,
        word(&backend.addr, 0),
        word(&backend.addr, 4),
        word(&backend.addr, 8),
        word(&backend.addr, 12),
    ]
}

/// The four bytes at `at` of `bytes` as a word in packet byte order.
#[inline(always)]
fn word(bytes: &[u8; 16], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Grows the frame at the front by the outer header's length, writes the L2 header (14 bytes,
/// or 18 with a VLAN tag) at the new front with rewritten MACs, and `outer` right after it.
#[inline(always)]
fn push_outer<const W: usize>(
    ctx: &XdpContext,
    l3_off: usize,
    backend: &Backend,
    outer: [u32; W],
) -> Result<(), Reason> {
    // The L2 length must be a constant for the verifier: one instance per length.
    if l3_off == VLAN_ETH_LEN {
        push_outer_after::<VLAN_ETH_LEN, W>(ctx, backend, outer)
    } else {
        push_outer_after::<ETH_LEN, W>(ctx, backend, outer)
    }
}

/// The front of a frame once grown for the outer header: the L2 header, then `W` words.
#[repr(C)]
#[derive(Clone, Copy)]
struct Front<const L2: usize, const W: usize> {
    l2: [u8; L2],
    outer: [[u8; 4]; W],
}

#[inline(always)]
fn push_outer_after<const L2: usize, const W: usize>(
    ctx: &XdpContext,
    backend: &Backend,
    outer: [u32; W],
) -> Result<(), Reason> {
    let grow = 4 * W;
    adjust_head(ctx, -(grow as i32))?;
    // One bounds check for all of it: the old L2 header now starts at `grow`, past the new one
    // (`grow` ≥ 20 > 18) and inside what the outer header will cover, so what it keeps is read
    // first. Loads and stores of whole words, as for the outer header.
    let f = ptr_at::<Front<L2, W>>(ctx, 0)?.cast::<u8>();
    let m = &backend.mac;
    // SAFETY: `ptr_at` checked that `L2 + 4 * W` bytes from `f` lie inside the packet; every
    // access below ends within them (`grow + L2` = `L2 + 4 * W`).
    unsafe {
        let ours = (f.add(grow).cast::<u32>().read_unaligned(), f.add(grow + 4).cast::<u16>().read_unaligned());
        let ethertype = f.add(grow + 12).cast::<u16>().read_unaligned();
        if L2 == VLAN_ETH_LEN {
            let tag = f.add(grow + 14).cast::<u32>().read_unaligned();
            f.add(14).cast::<u32>().write_unaligned(tag);
        }
        f.cast::<u32>().write_unaligned(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]));
        f.add(4).cast::<u16>().write_unaligned(u16::from_ne_bytes([m[4], m[5]]));
        f.add(6).cast::<u32>().write_unaligned(ours.0);
        f.add(10).cast::<u16>().write_unaligned(ours.1);
        f.add(12).cast::<u16>().write_unaligned(ethertype);
        let mut i = 0;
        while i < W {
            f.add(L2 + 4 * i).cast::<u32>().write_unaligned(outer[i].to_le());
            i += 1;
        }
    }
    Ok(())
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
