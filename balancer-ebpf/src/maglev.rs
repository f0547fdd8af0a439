//! Backend choice for a new flow: one slot of the VIP's live Maglev table.

use balancer_common::{
    backend::{Backend, state},
    counters::Reason,
    maps::MAX_RING_SIZE,
    vip::VipMeta,
};

use crate::maps::{BACKENDS, RINGS};

/// `table[hash % M]` (`hash` is the flow's `maglev_hash`), if that backend is active and belongs to this VIP.
#[inline(always)]
pub fn pick(vip: &VipMeta, hash: u32) -> Result<(u32, &'static Backend), Reason> {
    let size = vip.ring_size;
    if size == 0 || size > MAX_RING_SIZE {
        return Err(Reason::NoBackend);
    }
    let slot = hash % size;
    let id = *RINGS.get(vip.ring_base + slot).ok_or(Reason::NoBackend)?;
    let backend = BACKENDS.get(id).ok_or(Reason::NoBackend)?;
    if backend.state != state::ACTIVE || u32::from(backend.vip) != vip.id {
        return Err(Reason::NoBackend);
    }
    Ok((id, backend))
}
