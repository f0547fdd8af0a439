//! Counter updates. Per-CPU arrays need no atomics: each CPU owns its copy.

use balancer_common::counters::{FlowEvents, IcmpEvent, Reason, Traffic};

use crate::maps::{BACKEND_STATS, ICMP_STATS, REASONS, VIP_STATS};

/// Counts a packet that was passed or dropped instead of balanced.
#[inline(always)]
pub fn reason(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Counts an ICMP message the data path relayed or sent.
#[inline(always)]
pub fn icmp(event: IcmpEvent) {
    if let Some(c) = ICMP_STATS.get_ptr_mut(event as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Counts a forwarded packet for its VIP and its backend; `new_flow`: the flow-table events of a
/// flow the ring steered (the VIP's counters only), none for one the table held.
#[inline(always)]
pub fn forwarded(vip: u32, backend: u32, bytes: u64, new_flow: Option<FlowEvents>) {
    // `new_flows` only for a new flow: adding 0 would still load and store it on every packet.
    let add = |t: &mut Traffic| {
        t.packets += 1;
        t.bytes += bytes;
        if new_flow.is_some() {
            t.new_flows += 1;
        }
    };
    if let Some(t) = VIP_STATS.get_ptr_mut(vip) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        let t: &mut Traffic = unsafe { &mut *t };
        add(t);
        if let Some(e) = new_flow {
            t.misses += u64::from(e.miss);
            t.inserts += u64::from(e.inserted);
            t.evictions += u64::from(e.evicted);
            t.guarded += u64::from(e.guarded);
        }
    }
    if let Some(t) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: as above.
        add(unsafe { &mut *t });
    }
}
