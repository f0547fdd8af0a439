//! Header parsing: Ethernet (one 802.1Q tag), IPv4, IPv6, TCP and UDP into a 5-tuple, or the
//! reason the packet is left to the kernel.

use aya_ebpf::programs::XdpContext;
use balancer_common::{counters::Reason, family, flow::FlowKey, proto};

use crate::{
    packet::{at, read},
    wire::*,
};

/// Extension headers skipped before giving up; real traffic rarely carries more than one.
const IPV6_MAX_EXT: usize = 3;

/// What the rest of the data path needs to know about a packet it may balance.
pub struct Packet {
    /// Offset of the IP header (after Ethernet and any VLAN tag).
    pub l3_off: usize,
    /// The 5-tuple, addresses and ports as on the wire.
    pub key: FlowKey,
    /// Bytes in the frame, for the traffic counters.
    pub len: u64,
    /// A TCP SYN without ACK: the first packet of a connection, which no flow entry can be for.
    pub syn: bool,
}

/// Where a frame's IP header and its payload are, with the addresses, IP protocol (as on the
/// wire) and family in `key` (ports zero).
pub struct Ip {
    /// Offset of the IP header (after Ethernet and any VLAN tag).
    pub l3_off: usize,
    /// Offset of the transport (or ICMP) header.
    pub l4_off: usize,
    /// Where the datagram ends by its own length field; may be past the frame's end.
    pub ip_end: usize,
    /// Addresses, protocol and family.
    pub key: FlowKey,
}

/// Parses the headers the balancer acts on. Anything else is an `Err` with the reason the packet
/// is passed to the kernel untouched (`Reason::Icmp` for ICMP, which `icmp` looks at again).
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Reason> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let Ip { l3_off, l4_off, ip_end, mut key } = ip(ctx)?;
    transport(key.proto, if key.family == family::V4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 })?;
    // The datagram, by its own length field, must hold its transport header and fit in the
    // frame (which may be longer: Ethernet pads short frames). Otherwise the ports would be
    // read from padding.
    let l4_len = if key.proto == proto::TCP { TCP_LEN } else { UDP_LEN };
    if ip_end < l4_off + l4_len || ip_end > len as usize {
        return Err(Reason::BadLength);
    }
    let syn = ports(ctx, l4_off, &mut key)?;
    Ok(Packet { l3_off, key, len, syn })
}

/// Passes frames addressed to another MAC than the receiving interface's (`LOCAL_MACS`): in
/// promiscuous mode, or behind a bridge that floods a dead port's frames, a node sees frames
/// meant for another node, and balancing them too would duplicate the traffic. An interface
/// the table does not name is not checked. Asked of frames the program would act on (for a
/// VIP, ICMP, IPIP): the rest are passed anyway, under their own reason.
#[inline(always)]
pub fn for_this_host(ctx: &XdpContext) -> Result<(), Reason> {
    let Some(local) = crate::maps::LOCAL_MACS.get(0) else { return Ok(()) };
    if local.count == 0 {
        return Ok(());
    }
    let dst = mac48(at::<6>(ctx, 0)?);
    let ifindex = ctx.ingress_ifindex() as u32;
    for k in 0..balancer_common::vip::MAX_LOCAL_MACS {
        if k as u32 >= local.count {
            break;
        }
        if local.ifindex[k] == ifindex {
            let m = &local.mac[k];
            // As integers: a slice comparison is a call to `memcmp`, a loop a byte at a time.
            return if mac48(&[m[0], m[1], m[2], m[3], m[4], m[5]]) == dst { Ok(()) } else { Err(Reason::OtherHost) };
        }
    }
    Ok(())
}

/// A MAC address as one integer, for comparing.
#[inline(always)]
fn mac48(m: &[u8; 6]) -> u64 {
    u64::from(u32::from_ne_bytes([m[0], m[1], m[2], m[3]])) | (u64::from(u16::from_ne_bytes([m[4], m[5]])) << 32)
}

/// Parses Ethernet with at most one 802.1Q tag: the ethertype inside, and where the L3 header
/// starts. The one Ethernet parser of the programs (the balancer's and `decap`'s).
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Result<(u16, usize), Reason> {
    let ethertype = u16::from_be_bytes(read::<[u8; 2]>(ctx, 12)?);
    if ethertype == ETH_P_8021Q {
        return Ok((u16::from_be_bytes(read::<[u8; 2]>(ctx, ETH_LEN + 2)?), ETH_LEN + VLAN_LEN));
    }
    Ok((ethertype, ETH_LEN))
}

/// The TCP/UDP 5-tuple of the IPv4 (`v4`) or IPv6 packet at `off`, by the rules the outer
/// header is parsed by: for a packet inside a tunnel (`decap`).
#[inline(always)]
pub fn tuple_at(ctx: &XdpContext, off: usize, v4: bool) -> Result<FlowKey, Reason> {
    let mut key = FlowKey::EMPTY;
    let (l4_off, _) = if v4 { ipv4(ctx, off, &mut key)? } else { ipv6(ctx, off, &mut key)? };
    transport(key.proto, if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 })?;
    ports(ctx, l4_off, &mut key)?;
    Ok(key)
}

/// Parses Ethernet (one 802.1Q tag) and the IP header, IPv6 extension headers skipped.
#[inline(always)]
pub fn ip(ctx: &XdpContext) -> Result<Ip, Reason> {
    let (ethertype, l3_off) = ethernet(ctx)?;
    let mut key = FlowKey::EMPTY;
    let (l4_off, ip_end) = match ethertype {
        ETH_P_IP => ipv4(ctx, l3_off, &mut key)?,
        ETH_P_IPV6 => ipv6(ctx, l3_off, &mut key)?,
        _ => return Err(Reason::NotIp),
    };
    Ok(Ip { l3_off, l4_off, ip_end, key })
}

/// Fills addresses and protocol from an IPv4 header; returns the transport header's offset and
/// where the datagram ends according to its total length.
#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize, key: &mut FlowKey) -> Result<(usize, usize), Reason> {
    let h = at::<IPV4_LEN>(ctx, off)?;
    if h[0] >> 4 != 4 {
        return Err(Reason::NotIp);
    }
    if h[0] & 0x0f != 5 {
        return Err(Reason::Ipv4Options);
    }
    // More-fragments flag or a non-zero offset: only the first fragment has ports, so none of
    // them can be balanced consistently.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    key.proto = h[9];
    key.family = family::V4;
    key.src[..4].copy_from_slice(&h[12..16]);
    key.dst[..4].copy_from_slice(&h[16..20]);
    Ok((off + IPV4_LEN, off + usize::from(u16::from_be_bytes([h[2], h[3]]))))
}

/// Fills addresses and protocol from an IPv6 header, skipping up to `IPV6_MAX_EXT` hop-by-hop,
/// routing and destination-options headers; returns the transport header's offset and where the
/// datagram ends according to its payload length.
#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize, key: &mut FlowKey) -> Result<(usize, usize), Reason> {
    let h = at::<IPV6_LEN>(ctx, off)?;
    if h[0] >> 4 != 6 {
        return Err(Reason::NotIp);
    }
    let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if payload == 0 {
        // A jumbogram (hop-by-hop jumbo option) or garbage: not for us.
        return Err(Reason::BadLength);
    }
    key.family = family::V6;
    key.src.copy_from_slice(&h[8..24]);
    key.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut l4_off = off + IPV6_LEN;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let ext = read::<[u8; 2]>(ctx, l4_off)?;
                next = ext[0];
                l4_off += (ext[1] as usize + 1) * 8;
            }
            _ => break,
        }
    }
    key.proto = match next {
        IPV6_FRAGMENT => return Err(Reason::Fragment),
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => return Err(Reason::Ipv6ExtHeader),
        p => p,
    };
    Ok((l4_off, off + IPV6_LEN + payload))
}

/// Accepts TCP and UDP; sorts everything else into a pass reason.
#[inline(always)]
fn transport(p: u8, icmp: u8) -> Result<(), Reason> {
    match p {
        proto::TCP | proto::UDP => Ok(()),
        p if p == icmp => Err(Reason::Icmp),
        _ => Err(Reason::OtherProto),
    }
}

/// Reads the ports, after checking the whole transport header is present; returns whether the
/// packet is a TCP SYN (without ACK).
#[inline(always)]
fn ports(ctx: &XdpContext, off: usize, key: &mut FlowKey) -> Result<bool, Reason> {
    let (p, syn) = if key.proto == proto::TCP {
        let h = at::<TCP_LEN>(ctx, off)?;
        ([h[0], h[1], h[2], h[3]], h[TCP_FLAGS] & (TCP_SYN | TCP_ACK) == TCP_SYN)
    } else {
        (at::<UDP_LEN>(ctx, off).map(|h| [h[0], h[1], h[2], h[3]])?, false)
    };
    key.sport_be = u16::from_ne_bytes([p[0], p[1]]);
    key.dport_be = u16::from_ne_bytes([p[2], p[3]]);
    Ok(syn)
}
