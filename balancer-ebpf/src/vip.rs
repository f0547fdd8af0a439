//! VIP lookup: is this packet for a service we balance?

use balancer_common::{
    counters::Reason,
    flow::FlowKey,
    vip::{NO_VIP, SHARED, VipIndex, VipKey, VipMeta, WILDCARD_PORT, index_slot},
};

use aya_ebpf::maps::lpm_trie::Key;
use balancer_common::vip::{SOURCE_KEY_BITS, SourceKey};

use crate::maps::{SOURCES, VIP_INDEX, VIP_SLOTS, VIPS};

/// Whether `key`'s source is in the allowed prefixes of VIP `vip` (`flags::SOURCE_FILTER`).
#[inline(always)]
pub fn source_allowed(key: &FlowKey, vip: u32) -> bool {
    let k = Key::new(SOURCE_KEY_BITS, SourceKey { vip_be: vip.to_be_bytes(), addr: key.src });
    SOURCES.get(&k).is_some()
}

/// The VIP a packet is addressed to, or `Reason::NoVip`: the VIP of its port, else the
/// address's wildcard VIP (`WILDCARD_PORT`), if any.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Result<VipMeta, Reason> {
    let index = VIP_INDEX.get(0).ok_or(Reason::NoVip)?;
    if let Some(meta) = find(index, &key.dst, key.dport_be, key.proto, key.family) {
        return Ok(meta);
    }
    if index.wildcards == 0 {
        return Err(Reason::NoVip);
    }
    find(index, &key.dst, WILDCARD_PORT, key.proto, key.family).ok_or(Reason::NoVip)
}

/// The VIP at (address, port, protocol). One byte of the index answers most packets for no
/// VIP; a VIP alone on its byte is one array entry away; VIPs that share a byte take the hash
/// lookup.
#[inline(always)]
fn find(index: &VipIndex, addr: &[u8; 16], port_be: u16, proto: u8, family: u8) -> Option<VipMeta> {
    let entry = *index.slots.get(index_slot(addr, port_be, proto, family) as usize)?;
    let vip = VipKey { addr: *addr, port_be, proto, family };
    match entry {
        NO_VIP => None,
        // SAFETY: the value is copied out before any other map operation can free it.
        SHARED => unsafe { VIPS.get(vip) }.copied(),
        e => match VIP_SLOTS.get(u32::from(e) - 1) {
            Some(v) if v.key == vip => Some(v.meta),
            _ => None,
        },
    }
}
