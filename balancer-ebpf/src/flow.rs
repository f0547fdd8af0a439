//! The flow table: keeps an established connection on its backend when the ring changes.
//! Layout and encoding are `balancer_common::flow`'s; this is the lookup and the insert.

use aya_ebpf::helpers::bpf_jiffies64;
use balancer_common::{
    backend::{Backend, state},
    flow::{AGE_SHIFT, FLOW_WAYS, FlowSet, INSERT_WINDOW_SHIFT, Place, slot_age, slot_backend, slot_idle},
    vip::{Settings, VipMeta, flags},
};

use balancer_common::counters::{FlowEvents, budget};

use crate::maps::{BACKENDS, FLOWS, INSERT_GUARD};

/// The slot's time unit. `bpf_jiffies64` is inlined by the verifier into one load.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    (unsafe { bpf_jiffies64() }) >> AGE_SHIFT
}

#[inline(always)]
fn set(place: &Place) -> Option<*mut FlowSet> {
    FLOWS.get_ptr_mut(place.set)
}

/// Reads a slot with one 64-bit load: another CPU may be writing the set.
#[inline(always)]
fn load(set: *mut FlowSet, way: usize) -> u64 {
    // SAFETY: `set` is a valid map value and `way < FLOW_WAYS`; the read is a plain aligned load.
    unsafe { core::ptr::read_volatile(&raw const (*set).slots[way]) }
}

/// Writes a slot with one 64-bit store.
#[inline(always)]
fn store(set: *mut FlowSet, way: usize, slot: u64) {
    // SAFETY: as in `load`.
    unsafe { core::ptr::write_volatile(&raw mut (*set).slots[way], slot) }
}

/// The backend this flow is pinned to, if any and if that backend may still carry it: `active`
/// or `drain`, and still a backend of this VIP (ids are reused once freed). Anything else is a
/// miss, so the flow is re-steered by the ring and its slot overwritten. A hit refreshes the
/// slot's time (a store only when the time unit changed, so the line stays clean between).
///
/// A TCP SYN starts a connection, so it skips the table (as Katran does): an entry for its
/// 5-tuple is a previous connection's, and a draining backend must not get it. Where the key is
/// not the whole 5-tuple (`flags::AFFINITY`) the entry is an affinity rather than a connection,
/// so SYNs use it.
#[inline(always)]
pub fn lookup(place: &Place, vip: &VipMeta, syn: bool) -> Option<(u32, &'static Backend)> {
    if syn && vip.flags & flags::AFFINITY == 0 {
        return None;
    }
    let set = set(place)?;
    for way in 0..FLOW_WAYS {
        let slot = load(set, way);
        if place.owns(slot) {
            let id = slot_backend(slot)?;
            let backend = BACKENDS.get(id)?;
            if !(state::keeps_flows(backend.state) && u32::from(backend.vip) == vip.id) {
                return None;
            }
            let now = now();
            if slot_age(slot) != slot_age(now) {
                store(set, way, place.slot(id, now));
            }
            return Some((id, backend));
        }
    }
    None
}

/// Whether this CPU may spend one more of budget `which` (`counters::budget`) in the current
/// window of `2^INSERT_WINDOW_SHIFT` jiffies (`limit` a window; 0 is no limit), counting it if
/// so.
#[inline(always)]
pub fn under_limit(which: u32, limit: u64) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(w) = INSERT_GUARD.get_ptr_mut(which) else { return true };
    // SAFETY: per-CPU slot, only this program on this CPU writes it.
    let w = unsafe { &mut *w };
    // SAFETY: a helper without arguments or side effects. Jiffies, which the verifier inlines
    // into one load: a clock helper call cost new flows 200 ns more (bench, part 1).
    let window = (unsafe { bpf_jiffies64() }) >> INSERT_WINDOW_SHIFT;
    if w.window != window {
        w.window = window;
        w.inserts = 0;
    }
    if w.inserts >= limit {
        return false;
    }
    w.inserts += 1;
    true
}

/// Pins a flow the table did not hold (`miss`: a TCP packet past its SYN, which it should have)
/// to `backend`, unless this CPU is over its insert limit; what happened goes to the VIP's
/// counters with the packet's traffic.
#[inline(always)]
pub fn pin(place: &Place, settings: &Settings, backend: u32, miss: bool) -> FlowEvents {
    if !under_limit(budget::INSERTS, u64::from(settings.insert_limit)) {
        return FlowEvents { miss, guarded: true, ..FlowEvents::default() };
    }
    FlowEvents { miss, inserted: true, evicted: insert(place, backend), guarded: false }
}

/// Pins a flow to a backend: into the flow's own slot if it has one (re-steered), else an empty
/// slot, else the set's least recently used one. True when that took another flow's slot.
#[inline(always)]
fn insert(place: &Place, backend: u32) -> bool {
    let Some(set) = set(place) else { return false };
    let now = now();
    let mut victim = 0;
    let mut victim_rank = 0u64;
    let mut victim_slot = 0u64;
    for way in 0..FLOW_WAYS {
        let slot = load(set, way);
        // Own slot first, then empty, then the longest idle: ranks that cannot tie across kinds.
        let rank = if place.owns(slot) {
            u64::MAX
        } else if slot == 0 {
            u64::MAX - 1
        } else {
            slot_idle(slot, now)
        };
        if rank > victim_rank || way == 0 {
            victim = way;
            victim_rank = rank;
            victim_slot = slot;
        }
    }
    store(set, victim, place.slot(backend, now));
    victim_slot != 0 && !place.owns(victim_slot)
}
