//! VIP lookup: is this packet for a service we balance?

use balancer_common::{
    counters::Reason,
    flow::FlowKey,
    vip::{VipKey, VipMeta, filter_bit},
};

use crate::maps::{VIP_FILTER, VIPS};

/// The VIP a packet is addressed to, or `Reason::NoVip`. The filter answers most packets for no
/// VIP with one inlined array read; the rest take the hash lookup.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Result<VipMeta, Reason> {
    let bit = filter_bit(&key.dst, key.dport_be, key.proto, key.family);
    let word = VIP_FILTER.get(0).and_then(|f| f.words.get((bit / 64) as usize)).ok_or(Reason::NoVip)?;
    if word >> (bit % 64) & 1 == 0 {
        return Err(Reason::NoVip);
    }
    let vip = VipKey { addr: key.dst, port_be: key.dport_be, proto: key.proto, family: key.family };
    // SAFETY: the value is copied out before any other map operation can free it.
    unsafe { VIPS.get(&vip) }.copied().ok_or(Reason::NoVip)
}
