//! VIP lookup: is this packet for a service we balance?

use balancer_common::{
    counters::Reason,
    flow::FlowKey,
    vip::{NO_VIP, SHARED, VipKey, VipMeta, index_slot},
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

/// The VIP a packet is addressed to, or `Reason::NoVip`. One byte of the index answers most
/// packets for no VIP; a VIP alone on its byte is one array entry away; VIPs that share a byte
/// take the hash lookup.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Result<VipMeta, Reason> {
    let slot = index_slot(&key.dst, key.dport_be, key.proto, key.family);
    let entry = *VIP_INDEX.get(0).and_then(|i| i.slots.get(slot as usize)).ok_or(Reason::NoVip)?;
    let vip = VipKey { addr: key.dst, port_be: key.dport_be, proto: key.proto, family: key.family };
    match entry {
        NO_VIP => Err(Reason::NoVip),
        // SAFETY: the value is copied out before any other map operation can free it.
        SHARED => unsafe { VIPS.get(vip) }.copied().ok_or(Reason::NoVip),
        e => match VIP_SLOTS.get(u32::from(e) - 1) {
            Some(v) if v.key == vip => Ok(v.meta),
            _ => Err(Reason::NoVip),
        },
    }
}
