//! Virtual services: what the data path matches a packet's destination against.

use crate::pod;

/// Key of the `VIPS` map: a packet's destination as it appears on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Destination address, network byte order; IPv4 uses bytes 0..4 and zeroes the rest.
    pub addr: [u8; 16],
    /// Destination port, network byte order.
    pub port_be: u16,
    /// IP protocol (`proto::TCP` or `proto::UDP`).
    pub proto: u8,
    /// `family::V4` or `family::V6`.
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

/// How packets for a VIP leave the balancer.
pub mod forward {
    /// L2 direct server return: rewrite MACs and transmit; the backend holds the VIP itself.
    pub const DSR: u8 = 0;
    /// IP-in-IP encapsulation towards the backend (IPv4-in-IPv4, IPv6-in-IPv6).
    pub const IPIP: u8 = 1;
    /// Hand the packet to the local stack, where the daemon's L7 proxy terminates it.
    pub const LOCAL: u8 = 2;
}

/// Per-VIP flags (`VipMeta::flags`).
pub mod flags {
    /// Leave the source port out of the flow hash, so every packet of a client (UDP/QUIC) sticks.
    pub const IGNORE_SRC_PORT: u8 = 1 << 0;
}

/// Value of the `VIPS` map.
///
/// The whole value is replaced in one map update (a hash-map update is atomic for readers), which
/// is how a new Maglev table goes live: it is written into the half of the VIP's ring area that
/// `ring_gen` does not point at, then a new `VipMeta` flips `ring_gen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Index of this VIP in `VIP_STATS` and in the ring area (`maps::ring_index`).
    pub id: u32,
    /// Number of live slots in the VIP's Maglev table (a prime, at most `maps::MAX_RING_SIZE`).
    pub ring_size: u32,
    /// Which of the VIP's two ring halves is live: 0 or 1.
    pub ring_gen: u32,
    /// One of the `forward` constants.
    pub forward: u8,
    /// `flags::*` bits.
    pub flags: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<VipMeta>() == 16);

/// Value of the one-entry `SETTINGS` array: balancer-wide data-path settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Outer IPv4 source of IPIP packets: bytes 0..2 are the /16 prefix, the data path fills
    /// bytes 2..4 from the flow, so backends' NICs spread flows over their queues (RSS).
    pub ipip_src_v4: [u8; 4],
    /// Outer IPv6 source of IPIP packets: bytes 0..12 are the /96 prefix, the data path fills
    /// bytes 12..16 from the flow.
    pub ipip_src_v6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Settings>() == 20);

/// Value of the one-entry `VIP_FILTER` array: a bit per hash of (address, port, protocol) that
/// some VIP sets, so the data path turns away most packets for no VIP with one array read
/// (which the verifier inlines) instead of a hash-map lookup.
///
/// A set bit only says "look in `VIPS`"; 4096 bits for at most 64 VIPs means about 1.6% of
/// non-VIP packets still take the hash lookup. The daemon writes the union of the old and new
/// bits before it changes `VIPS`, and the new bits after, so a VIP's bit is set whenever its
/// entry exists, even while the 512-byte value is being copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipFilter {
    /// `FILTER_BITS` bits, bit `b` at `words[b / 64] >> (b % 64)`.
    pub words: [u64; (FILTER_BITS / 64) as usize],
}
const _: () = assert!(core::mem::size_of::<VipFilter>() == 512);

/// Bits in `VipFilter`; a power of two (`filter_bit` takes the top 12 bits of a 32-bit product).
pub const FILTER_BITS: u32 = 4096;

impl VipFilter {
    /// No bit set: every packet is turned away.
    pub const EMPTY: Self = Self { words: [0; (FILTER_BITS / 64) as usize] };

    /// Sets the bit of `key`.
    pub fn insert(&mut self, key: &VipKey) {
        let b = filter_bit(&key.addr, key.port_be, key.proto, key.family);
        self.words[(b / 64) as usize] |= 1 << (b % 64);
    }

    /// Every bit set in either.
    pub fn union(&self, other: &Self) -> Self {
        let mut u = *self;
        for (w, o) in u.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        u
    }
}

/// The filter bit of a destination: the address folded to 32 bits (IPv4's zero bytes fold away),
/// mixed with port, protocol and family, then a multiplicative hash's top 12 bits.
#[inline(always)]
pub fn filter_bit(addr: &[u8; 16], port_be: u16, proto: u8, family: u8) -> u32 {
    let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let x = w(0) ^ w(4) ^ w(8) ^ w(12) ^ (u32::from(port_be) << 16) ^ (u32::from(proto) << 8) ^ u32::from(family);
    x.wrapping_mul(0x9e37_79b1) >> (32 - FILTER_BITS.trailing_zeros())
}

pod!(VipKey, VipMeta, Settings, VipFilter);
