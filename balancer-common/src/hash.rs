//! The flow hash. It lives here, not in the XDP program, so that `balancer flow` in user space
//! computes the same backend for a 5-tuple as the data path does.

use crate::flow::FlowKey;

/// Seed of the flow hash. Every balancer node must use the same one, so that nodes behind ECMP
/// send a flow to the same backend.
pub const SEED: u32 = 0x5eed_b417;

/// MurmurHash3 (x86, 32-bit) over the 40 bytes of a flow key.
///
/// Murmur3 mixes every input bit into every output bit, costs a few instructions per word, and has
/// no table lookups, which suits the verifier and the hot path. Words are read little-endian on
/// both sides, so the value is the same on every host.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = SEED;
    let mut mix = |w: u32| {
        let mut k = w.wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    };
    for a in [&key.src, &key.dst] {
        mix(u32::from_le_bytes([a[0], a[1], a[2], a[3]]));
        mix(u32::from_le_bytes([a[4], a[5], a[6], a[7]]));
        mix(u32::from_le_bytes([a[8], a[9], a[10], a[11]]));
        mix(u32::from_le_bytes([a[12], a[13], a[14], a[15]]));
    }
    let [s0, s1] = key.sport_be.to_ne_bytes();
    let [d0, d1] = key.dport_be.to_ne_bytes();
    mix(u32::from_le_bytes([s0, s1, d0, d1]));
    mix(u32::from_le_bytes([key.proto, key.family, 0, 0]));
    h ^= 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Per-flow bits for the outer source address of IPIP packets, from the client's address and
/// port: cheap (no full hash on the flow-table hit path) and different for each connection of a
/// client, so a backend's NIC spreads the flows over its receive queues.
#[inline(always)]
pub fn encap_entropy(key: &FlowKey) -> [u8; 4] {
    // The port goes in once: IPv4 folds the two halves together, where a second copy in the
    // high half would cancel it.
    let e = u32::from_ne_bytes([key.src[0], key.src[1], key.src[2], key.src[3]])
        ^ u32::from_ne_bytes([key.src[12], key.src[13], key.src[14], key.src[15]])
        ^ u32::from(key.sport_be);
    e.to_ne_bytes()
}
