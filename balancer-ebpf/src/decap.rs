//! The backend half of IPIP forwarding: strips the outer header the balancer added, so the
//! local stack sees the client's packet to the VIP (which the backend holds on loopback). Needed
//! because kernels without the ipip module would otherwise drop these packets.

use aya_ebpf::programs::XdpContext;
use balancer_common::counters::Reason;

use crate::{
    maps::SETTINGS,
    packet::{adjust_head, read, write},
    wire::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_LEN, IPV6_LEN, VLAN_ETH_LEN},
};

/// Decapsulates IPv4-in-IPv4 and IPv6-in-IPv6 packets whose outer source is in the balancers'
/// prefix (`SETTINGS`, written by `balancer decap attach` or the daemon); anything else is left
/// untouched, so this opens no tunnel for other senders (whose inner source would then skip any
/// filtering). `Ok(true)`: the outer header is gone. The packet is the stack's either way.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Result<bool, Reason> {
    let settings = SETTINGS.get(0).ok_or(Reason::Rewrite)?;
    let (ethertype, l3_off) = crate::parse::ethernet(ctx)?;
    let outer_len = match ethertype {
        ETH_P_IP => {
            let h = read::<[u8; IPV4_LEN]>(ctx, l3_off)?;
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if h[0] != 0x45 || h[9] != IPPROTO_IPIP || fragment || h[12..14] != settings.ipip_src_v4[..2] {
                return Ok(false);
            }
            IPV4_LEN
        }
        ETH_P_IPV6 => {
            let h = read::<[u8; IPV6_LEN]>(ctx, l3_off)?;
            if h[0] >> 4 != 6 || h[6] != IPPROTO_IPV6 || h[8..20] != settings.ipip_src_v6[..12] {
                return Ok(false);
            }
            IPV6_LEN
        }
        _ => return Ok(false),
    };
    // The inner packet must be there, of the same family, before anything is changed.
    let inner_version = read::<u8>(ctx, l3_off + outer_len)? >> 4;
    if (ethertype == ETH_P_IP && inner_version != 4) || (ethertype == ETH_P_IPV6 && inner_version != 6) {
        return Ok(false);
    }
    if l3_off == VLAN_ETH_LEN {
        let l2 = read::<[u8; VLAN_ETH_LEN]>(ctx, 0)?;
        adjust_head(ctx, outer_len as i32)?;
        write(ctx, 0, l2)?;
    } else {
        let l2 = read::<[u8; ETH_LEN]>(ctx, 0)?;
        adjust_head(ctx, outer_len as i32)?;
        write(ctx, 0, l2)?;
    }
    Ok(true)
}
