//! VIP lookup: is this packet for a service we balance?

use balancer_common::{counters::Reason, flow::FlowKey, vip::{VipKey, VipMeta}};

use crate::maps::VIPS;

/// The VIP a packet is addressed to, or `Reason::NoVip`.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Result<VipMeta, Reason> {
    let vip = VipKey { addr: key.dst, port_be: key.dport_be, proto: key.proto, family: key.family };
    // SAFETY: the value is copied out before any other map operation can free it.
    unsafe { VIPS.get(&vip) }.copied().ok_or(Reason::NoVip)
}
