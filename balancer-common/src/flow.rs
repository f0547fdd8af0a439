//! The flow table: a packet's 5-tuple, and where the table keeps the backend it was given.
//!
//! The table is set-associative, like a CPU cache: `FLOW_SETS` sets of `FLOW_WAYS` slots, one
//! 64-byte cache line per set, in an array map. A flow lives in the set its hash picks, as one
//! 64-bit word holding a 40-bit fingerprint of the hash, the backend id and a coarse last-use
//! time. The kernel's LRU hash was the alternative: it locks a bucket and an LRU list, copies a
//! 40-byte key and walks cold list nodes on every insert, which made a SYN cost about 8× an
//! empty program where this costs one cache line. Like Maglev's own connection tracking, the
//! table may forget a flow (its set is full of fresher ones), and then the flow is steered by the
//! ring again, which gives it the same backend unless the ring changed. A word is written and
//! read with single 64-bit accesses, so a CPU never sees half of another CPU's write.
//!
//! Two different flows share a fingerprint only if 40 more hash bits agree beyond the set
//! index: a packet of an unknown flow borrows another flow's backend about once in 10^11 lookups.

use crate::pod;

/// A packet's 5-tuple as it appears on the wire: what the flow hash is computed over.
/// 8-aligned (same layout as without), so the hash reads it as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address, network byte order; IPv4 uses bytes 0..4.
    pub src: [u8; 16],
    /// Destination (VIP) address, network byte order; IPv4 uses bytes 0..4.
    pub dst: [u8; 16],
    /// Source port, network byte order (zero when the VIP ignores it).
    pub sport_be: u16,
    /// Destination port, network byte order.
    pub dport_be: u16,
    /// IP protocol.
    pub proto: u8,
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key as the hash reads it: five 64-bit little-endian words, `_pad` left out. One
    /// load each on the data path, where assembling them from bytes cost about a hundred
    /// instructions.
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: `FlowKey` is `repr(C)`, 40 bytes with no implicit padding (every byte is a
        // field), and 8-aligned, as `[u64; 5]` is.
        let w: [u64; 5] = unsafe { core::mem::transmute(*self) };
        [
            u64::from_le(w[0]),
            u64::from_le(w[1]),
            u64::from_le(w[2]),
            u64::from_le(w[3]),
            u64::from_le(w[4]) & 0xffff_ffff_ffff,
        ]
    }
}

/// The insert limit's window: `2^INSERT_WINDOW_SHIFT` jiffies (1.02 s at HZ=250, 0.256 s at
/// HZ=1000); the daemon scales `Settings::insert_limit` from per second to per window.
pub const INSERT_WINDOW_SHIFT: u32 = 8;

/// Slots per set: eight 8-byte words fill one cache line.
pub const FLOW_WAYS: usize = 8;

/// One set of the flow table, the map's value type. Slot value 0 means empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSet {
    /// Encoded slots; see `Slot`.
    pub slots: [u64; FLOW_WAYS],
}
const _: () = assert!(core::mem::size_of::<FlowSet>() == 64);

pod!(FlowKey, FlowSet);

impl FlowKey {
    /// No addresses, ports or protocol: what a parser fills in.
    pub const EMPTY: FlowKey =
        FlowKey { src: [0; 16], dst: [0; 16], sport_be: 0, dport_be: 0, proto: 0, family: 0, _pad: [0; 2] };

    /// The key this packet's flow is hashed and tracked under on a VIP with `vip_flags`
    /// (`vip::flags`): the whole 5-tuple, or without the source port (`IGNORE_SRC_PORT`),
    /// only the two ports (`HASH_PORTS`), or only the destination port (`HASH_DST_PORT`).
    /// The one definition the data path, the daemon's `balancer flow` and the tests share.
    #[inline(always)]
    #[must_use]
    pub fn for_vip(&self, vip_flags: u8) -> FlowKey {
        use crate::vip::flags;
        let mut key = *self;
        if vip_flags & (flags::IGNORE_SRC_PORT | flags::HASH_DST_PORT) != 0 {
            key.sport_be = 0;
        }
        if vip_flags & (flags::HASH_DST_PORT | flags::HASH_PORTS) != 0 {
            key.src = [0; 16];
            key.dst = [0; 16];
        }
        key
    }
}

impl FlowSet {
    /// The backend id this set pins the flow at `place` to, if it holds the flow.
    pub fn find(&self, place: &Place) -> Option<u32> {
        self.slots.iter().find(|&&s| place.owns(s)).and_then(|&s| slot_backend(s))
    }

    /// The backend ids of every occupied slot.
    pub fn backends(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().filter_map(|&s| slot_backend(s))
    }
}

/// Bits of the last-use time kept in a slot. The time only ranks the slots of one set when an
/// insert must evict one, so it may wrap.
pub const AGE_BITS: u32 = 11;
const AGE_MASK: u64 = (1 << AGE_BITS) - 1;
const BACKEND_SHIFT: u32 = AGE_BITS;
/// Backend id plus one (so that an occupied slot is never 0): ids are below `MAX_BACKENDS`, 4096.
const BACKEND_BITS: u32 = 13;
const FP_SHIFT: u32 = BACKEND_SHIFT + BACKEND_BITS;
const _: () = assert!(FP_SHIFT + 40 == 64);
const _: () = assert!(crate::maps::MAX_BACKENDS < 1 << BACKEND_BITS);

/// Where a flow hash lives in the table: its set, and the fingerprint that tells it apart from
/// the other flows of that set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Index of the set in the map.
    pub set: u32,
    /// The hash's top 40 bits, as stored in a slot (already shifted into place).
    pub fingerprint: u64,
}

impl Place {
    /// The place of a flow with `flow_hash64` `hash` in the table of an instance whose secret
    /// is `secret` (`Settings::flow_secret`). The hash is public (the Maglev pick and every
    /// node share it), so it is first mixed with the secret through xxHash64's avalanche: its
    /// multiplies carry high bits into low ones, so which flows share a set cannot be told
    /// without the secret (a plain XOR would keep any two hashes' low bits equal). The set
    /// comes from the mixed value's low bits, the fingerprint from its top 40, so the two are
    /// independent (the set count is at most 2^24).
    #[inline(always)]
    pub const fn of(hash: u64, secret: u64) -> Self {
        let mut h = hash ^ secret;
        h ^= h >> 33;
        h = h.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        h ^= h >> 29;
        h = h.wrapping_mul(0x1656_67b1_9e37_79f9);
        h ^= h >> 32;
        Self { set: (h as u32) & (crate::maps::FLOW_SETS - 1), fingerprint: h >> FP_SHIFT << FP_SHIFT }
    }

    /// Whether an encoded slot belongs to this flow.
    #[inline(always)]
    pub const fn owns(&self, slot: u64) -> bool {
        slot != 0 && slot >> FP_SHIFT << FP_SHIFT == self.fingerprint
    }

    /// The slot word pinning this flow to `backend` at time `now` (see `age_now`).
    #[inline(always)]
    pub const fn slot(&self, backend: u32, now: u64) -> u64 {
        self.fingerprint | ((backend as u64 + 1) << BACKEND_SHIFT) | (now & AGE_MASK)
    }
}

/// The backend id a slot pins its flow to, or `None` for an empty slot.
#[inline(always)]
pub const fn slot_backend(slot: u64) -> Option<u32> {
    let b = (slot >> BACKEND_SHIFT) & ((1 << BACKEND_BITS) - 1);
    if slot == 0 || b == 0 { None } else { Some(b as u32 - 1) }
}

/// The last-use time of a slot, in the same units as `now` passed to `Place::slot`.
#[inline(always)]
pub const fn slot_age(slot: u64) -> u64 {
    slot & AGE_MASK
}

/// How long ago, in time units and modulo the age's range, a slot was last used.
#[inline(always)]
pub const fn slot_idle(slot: u64, now: u64) -> u64 {
    now.wrapping_sub(slot) & AGE_MASK
}

/// Jiffies per time unit of a slot's age, as a shift: 256 jiffies, a quarter second to a second
/// depending on the kernel's `HZ`.
pub const AGE_SHIFT: u32 = 8;
