//! The flow hash. It lives here, not in the XDP program, so that `balancer flow` in user space
//! computes the same backend for a 5-tuple as the data path does.

use crate::flow::FlowKey;

/// Seed of the flow hash. Every balancer node must use the same one, so that nodes behind ECMP
/// send a flow to the same backend.
pub const SEED: u32 = 0x5eed_b417;

/// The 64-bit flow hash: xxHash64's 8-byte round over the key's five words, then its avalanche.
///
/// One hash serves both uses on the hot path: its low bits and top 40 bits place a flow in the
/// flow table (`flow::Place`), its top 32 bits pick the Maglev slot (`flow_hash`). A 64-bit
/// multiply is one BPF instruction, so five rounds cost less than a 32-bit hash over ten words.
/// Words are read little-endian on both sides, so the value is the same on every host; they
/// are the key's own five aligned words (`FlowKey::words`), not forty bytes shifted together.
#[inline(always)]
pub fn flow_hash64(key: &FlowKey) -> u64 {
    const P1: u64 = 0x9e37_79b1_85eb_ca87;
    const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const P3: u64 = 0x1656_67b1_9e37_79f9;
    const P4: u64 = 0x85eb_ca77_c2b2_ae63;
    const P5: u64 = 0x27d4_eb2f_1656_67c5;
    let words = key.words();
    let mut h = u64::from(SEED).wrapping_add(P5).wrapping_add(40);
    for w in words {
        h ^= w.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// The Maglev hash of a flow: the top half of `flow_hash64`.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    maglev_hash(flow_hash64(key))
}

/// The Maglev hash from an already computed `flow_hash64`.
#[inline(always)]
pub const fn maglev_hash(hash64: u64) -> u32 {
    (hash64 >> 32) as u32
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The flow hash is part of the wire contract between nodes: two nodes behind one ECMP
    /// router, one upgraded and one not, must still pick the same backend for a flow. These
    /// values were computed by the byte-wise implementation; any rewrite must keep them.
    #[test]
    fn the_flow_hash_keeps_its_values_across_implementations() {
        let mut v4 = FlowKey {
            src: [0; 16],
            dst: [0; 16],
            sport_be: 40000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        v4.src[..4].copy_from_slice(&[192, 0, 2, 1]);
        v4.dst[..4].copy_from_slice(&[198, 51, 100, 10]);
        let mut v6 = FlowKey { sport_be: 443u16.to_be(), dport_be: 51000u16.to_be(), proto: 17, family: 6, ..v4 };
        v6.src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        v6.dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x10];
        assert_eq!([flow_hash64(&v4), flow_hash64(&v6)], [1_011_003_827_838_757_052, 6_195_183_607_982_036_778]);
        // `_pad` is not part of the flow.
        assert_eq!(flow_hash64(&FlowKey { _pad: [7, 7], ..v4 }), flow_hash64(&v4));
    }
}
