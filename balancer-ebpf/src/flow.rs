//! The flow table: keeps an established connection on its backend when the ring changes.

use balancer_common::{
    backend::{Backend, state},
    flow::{FlowKey, FlowValue},
    vip::{VipMeta, flags},
};

use crate::maps::{BACKENDS, FLOWS};

/// The key a packet's flow is tracked and hashed under: the source port is left out when the VIP
/// asks for it, so every packet of a client lands on the same backend.
#[inline(always)]
pub fn key_for(packet_key: &FlowKey, vip: &VipMeta) -> FlowKey {
    let mut key = *packet_key;
    if vip.flags & flags::IGNORE_SRC_PORT != 0 {
        key.sport_be = 0;
    }
    key
}

/// The backend this flow is pinned to, if any and if that backend may still carry it: `active`
/// or `drain`, and still a backend of this VIP (ids are reused once freed). Anything else is a
/// miss, so the flow is re-steered by the ring and its entry overwritten.
#[inline(always)]
pub fn lookup(key: &FlowKey, vip: &VipMeta) -> Option<(u32, Backend)> {
    // SAFETY: the value is copied out before any other map operation can free it.
    let id = unsafe { FLOWS.get(key) }?.backend;
    let backend = *BACKENDS.get(id)?;
    (state::keeps_flows(backend.state) && backend.vip == vip.id).then_some((id, backend))
}

/// Pins a flow to a backend. A failed insert needs no handling: the next packet of the flow
/// misses again and the ring gives it the same backend as long as the ring has not changed.
#[inline(always)]
pub fn insert(key: &FlowKey, backend: u32) {
    let _ = FLOWS.insert(key, &FlowValue { backend, _pad: 0 }, 0);
}
