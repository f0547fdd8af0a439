//! Counter updates. Per-CPU arrays need no atomics: each CPU owns its copy.

use balancer_common::counters::{Reason, Traffic};

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

/// Counts a packet that was passed or dropped instead of balanced.
#[inline(always)]
pub fn reason(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Counts a forwarded packet for its VIP and its backend.
#[inline(always)]
pub fn forwarded(vip: u32, backend: u32, bytes: u64, new_flow: bool) {
    #[expect(clippy::manual_flatten, reason = "two plain branches; no iterator adaptor in the verifier's way")]
    for t in [VIP_STATS.get_ptr_mut(vip), BACKEND_STATS.get_ptr_mut(backend)] {
        if let Some(t) = t {
            // SAFETY: per-CPU slot, only this program on this CPU writes it.
            let t: &mut Traffic = unsafe { &mut *t };
            t.packets += 1;
            t.bytes += bytes;
            t.new_flows += new_flow as u64;
        }
    }
}
