//! The backend half of IPIP forwarding: strips the outer header the balancer added, so the
//! local stack sees the client's packet to the VIP (which the backend holds on loopback). Needed
//! because kernels without the ipip module would otherwise drop these packets.

use aya_ebpf::programs::XdpContext;
use balancer_common::{counters::Reason, vip::forward as fwd};

use crate::{
    maps::SETTINGS,
    packet::{adjust_head, at, read, write},
    wire::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_LEN, IPV6_LEN, VLAN_ETH_LEN},
};

/// Decapsulates IPv4-in-IPv4 and IPv6-in-IPv6 packets whose outer source is in the balancers'
/// prefix (`SETTINGS`, written by `balancer decap attach` or the daemon); anything else is left
/// untouched, so this opens no tunnel for other senders (whose inner source would then skip any
/// filtering). `Ok(true)`: the outer header is gone. The packet is the stack's either way.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Result<bool, Reason> {
    match outer(ctx)? {
        Some(t) => strip(ctx, t).map(|()| true),
        None => Ok(false),
    }
}

/// As `decap`, for the balancer program: only a packet for a VIP this host terminates (an L7
/// VIP, `forward::LOCAL`) is decapsulated, so a node that terminates none opens no tunnel at
/// all, and one that does opens it to its own VIPs only.
#[inline(always)]
pub fn decap_for_local_vip(ctx: &XdpContext) -> Result<bool, Reason> {
    let Some(t) = outer(ctx)? else { return Ok(false) };
    if !for_local_vip(ctx, t)? {
        return Ok(false);
    }
    strip(ctx, t).map(|()| true)
}

/// Where a tunnelled packet's outer header is: L3 offset, its length, and the family.
#[derive(Clone, Copy)]
struct Tunnel {
    l3_off: usize,
    outer_len: usize,
    v4: bool,
}

/// The outer header, if this is IPIP from the balancers' prefix with an inner packet of the
/// same family.
#[inline(always)]
fn outer(ctx: &XdpContext) -> Result<Option<Tunnel>, Reason> {
    let settings = SETTINGS.get(0).ok_or(Reason::Rewrite)?;
    let (ethertype, l3_off) = crate::parse::ethernet(ctx)?;
    let outer_len = match ethertype {
        ETH_P_IP => {
            let h = at::<IPV4_LEN>(ctx, l3_off)?;
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if h[0] != 0x45 || h[9] != IPPROTO_IPIP || fragment || h[12..14] != settings.ipip_src_v4[..2] {
                return Ok(None);
            }
            IPV4_LEN
        }
        ETH_P_IPV6 => {
            let h = at::<IPV6_LEN>(ctx, l3_off)?;
            if h[0] >> 4 != 6 || h[6] != IPPROTO_IPV6 || h[8..20] != settings.ipip_src_v6[..12] {
                return Ok(None);
            }
            IPV6_LEN
        }
        _ => return Ok(None),
    };
    // The inner packet must be there, of the same family, before anything is changed.
    let v4 = ethertype == ETH_P_IP;
    let inner_version = read::<u8>(ctx, l3_off + outer_len)? >> 4;
    if inner_version != if v4 { 4 } else { 6 } {
        return Ok(None);
    }
    Ok(Some(Tunnel { l3_off, outer_len, v4 }))
}

/// Whether the inner packet is TCP or UDP to a VIP of `forward::LOCAL`.
#[inline(always)]
fn for_local_vip(ctx: &XdpContext, t: Tunnel) -> Result<bool, Reason> {
    let key = crate::parse::tuple_at(ctx, t.l3_off + t.outer_len, t.v4)?;
    Ok(crate::vip::lookup(&key).is_ok_and(|v| v.forward == fwd::LOCAL))
}

/// Removes the outer header, keeping the L2 header (with its VLAN tag) in front.
#[inline(always)]
fn strip(ctx: &XdpContext, t: Tunnel) -> Result<(), Reason> {
    if t.l3_off == VLAN_ETH_LEN {
        let l2 = read::<[u8; VLAN_ETH_LEN]>(ctx, 0)?;
        adjust_head(ctx, t.outer_len as i32)?;
        write(ctx, 0, l2)
    } else {
        let l2 = read::<[u8; ETH_LEN]>(ctx, 0)?;
        adjust_head(ctx, t.outer_len as i32)?;
        write(ctx, 0, l2)
    }
}
