//! Virtual services: what the data path matches a packet's destination against.

use crate::pod;

/// Key of the `VIPS` map: a packet's destination as it appears on the wire. Port 0 is a
/// wildcard: the VIP takes every port of its address and protocol that no VIP of its own names
/// (`WILDCARD_PORT`).
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

/// `VipKey::port_be` of a VIP that takes every port of its address.
pub const WILDCARD_PORT: u16 = 0;

/// Key of the `ECHO_ADDRS` map: a VIP address whose ICMP echo requests the data path answers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EchoKey {
    /// The address, network byte order; IPv4 uses bytes 0..4.
    pub addr: [u8; 16],
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<EchoKey>() == 20);

/// Most interfaces whose MAC `LocalMacs` holds.
pub const MAX_LOCAL_MACS: usize = 8;

/// `LOCAL_MACS[0]`: the MAC of each interface the balancer is attached to. A frame arriving on
/// one of them for another MAC (promiscuous mode, a flooding bridge) is passed, not balanced:
/// another node may be balancing the same frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMacs {
    /// Entries in use; 0: no check (the daemon always writes them).
    pub count: u32,
    /// Interface indexes.
    pub ifindex: [u32; MAX_LOCAL_MACS],
    /// Their MACs, each in the first six bytes.
    pub mac: [[u8; 8]; MAX_LOCAL_MACS],
}
const _: () = assert!(core::mem::size_of::<LocalMacs>() == 4 + 32 + 64);

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
    /// No flow table: every packet is steered by the Maglev table alone (Katran's
    /// `F_LRU_BYPASS`), for services whose backends change rarely and whose flows are too many.
    pub const NO_FLOW_TABLE: u8 = 1 << 1;
    /// Only sources in the VIP's `SOURCES` prefixes are served; others are dropped
    /// (`Reason::SourceFiltered`), as Cilium's `loadBalancerSourceRanges`.
    pub const SOURCE_FILTER: u8 = 1 << 2;
    /// Hash on the destination port alone (Katran's `F_HASH_DPORT_ONLY`): every client of a
    /// port goes to one backend.
    pub const HASH_DST_PORT: u8 = 1 << 3;
    /// Hash on the source and destination ports, not the addresses (Katran's
    /// `F_HASH_SRC_DST_PORT`).
    pub const HASH_PORTS: u8 = 1 << 4;
    /// The flags under which a flow entry is an affinity rather than one connection: a SYN then
    /// uses it (another connection of the same key belongs where the last one went).
    pub const AFFINITY: u8 = IGNORE_SRC_PORT | HASH_DST_PORT | HASH_PORTS;
}

/// Value of the `VIPS` map.
///
/// The whole value is replaced in one map update (a hash-map update is atomic for readers), which
/// is how a new Maglev table goes live: it is written into the half of the VIP's ring region
/// that is not live, then a new `VipMeta` points `ring_base` at it and flips `ring_gen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Index of this VIP in `VIP_STATS`.
    pub id: u32,
    /// Number of live slots in the VIP's Maglev table (a prime, at most `maps::MAX_RING_SIZE`).
    pub ring_size: u32,
    /// Index in `RINGS` of slot 0 of the live table (`maps::ring_half`): the data path reads
    /// `RINGS[ring_base + hash % ring_size]`.
    pub ring_base: u32,
    /// One of the `forward` constants.
    pub forward: u8,
    /// `flags::*` bits.
    pub flags: u8,
    /// Which half of the VIP's ring region is live (its parity). Daemon bookkeeping, with
    /// `ring_units`: they locate the region when a restarted daemon re-adopts the maps.
    pub ring_gen: u8,
    /// Size of the VIP's ring region in `maps::RING_UNIT`s; 0 for a VIP without one (L7).
    pub ring_units: u8,
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
    /// Most flows one CPU pins in the flow table per window (`flow::INSERT_WINDOW_SHIFT`
    /// jiffies); beyond it new flows are steered by the ring without a pin, so a SYN flood cannot
    /// evict established flows. 0: no limit.
    pub insert_limit: u32,
    /// This instance's secret in the flow table's placement (`flow::Place::of`), so a client
    /// cannot compute which flows share a set and fill one to evict the others. Chosen at random
    /// when the flow table is created and kept with it (a restart that re-adopts the pinned table
    /// reads it back); the Maglev hash does not use it, so nodes still agree on backends.
    pub flow_secret: u64,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 32);

/// Value of the one-entry `VIP_INDEX` array: for each hash of (address, port, protocol), which
/// `VIP_SLOTS` entry holds the VIP there. The data path reads one byte and one array entry (array
/// reads are inlined by the verifier) instead of calling the hash-map lookup, which cost about
/// 30 ns, a fifth of an established flow's packet; most packets for no VIP stop at the byte.
///
/// Byte values: `NO_VIP`; `SHARED` when two VIPs hash to the same byte (then the `VIPS` hash
/// map decides); otherwise one plus the `VIP_SLOTS` index. A byte is written whole, so a reader
/// sees the old or the new value even while the daemon rewrites the array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipIndex {
    /// `INDEX_SLOTS` bytes, indexed by `index_slot`.
    pub slots: [u8; INDEX_SLOTS as usize],
    /// Non-zero when some VIP is on `WILDCARD_PORT`: only then does a packet whose port has no
    /// VIP take a second look, for its address's wildcard, so the others pay one load.
    pub wildcards: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<VipIndex>() == 4104);

/// Bytes in `VipIndex`; a power of two (`index_slot` takes the top 12 bits of a 32-bit product).
pub const INDEX_SLOTS: u32 = 4096;
/// `VipIndex` byte: no VIP hashes here.
pub const NO_VIP: u8 = 0;
/// `VipIndex` byte: several VIPs hash here; look in `VIPS`.
pub const SHARED: u8 = 0xff;
const _: () = assert!(2 * crate::maps::MAX_VIPS < SHARED as u32);

impl VipIndex {
    /// No VIP anywhere.
    pub const EMPTY: Self = Self { slots: [NO_VIP; INDEX_SLOTS as usize], wildcards: 0, _pad: [0; 7] };

    /// Points the slot of `key` at `VIP_SLOTS` entry `entry`, or marks it `SHARED` if another
    /// VIP is there already.
    pub fn insert(&mut self, key: &VipKey, entry: u32) {
        let s = &mut self.slots[index_slot(&key.addr, key.port_be, key.proto, key.family) as usize];
        *s = if *s == NO_VIP { entry as u8 + 1 } else { SHARED };
        if key.port_be == WILDCARD_PORT {
            self.wildcards = 1;
        }
    }
}

/// The `VipIndex` slot of a destination: the address folded to 32 bits (IPv4's zero bytes fold
/// away), mixed with port, protocol and family, then a multiplicative hash's top 12 bits.
#[inline(always)]
pub fn index_slot(addr: &[u8; 16], port_be: u16, proto: u8, family: u8) -> u32 {
    let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let x = w(0) ^ w(4) ^ w(8) ^ w(12) ^ (u32::from(port_be) << 16) ^ (u32::from(proto) << 8) ^ u32::from(family);
    x.wrapping_mul(0x9e37_79b1) >> (32 - INDEX_SLOTS.trailing_zeros())
}

/// Value of `VIP_SLOTS`: a VIP as the index finds it. Two entries per VIP id (`slot_of`), one per
/// parity of `ring_gen`: the daemon writes the entry the new generation uses while readers may
/// still hold the other, then repoints the index, as it does with the two halves of a ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipEntry {
    /// The VIP, compared whole: an index byte only says "maybe".
    pub key: VipKey,
    /// Its data path settings.
    pub meta: VipMeta,
}
const _: () = assert!(core::mem::size_of::<VipEntry>() == 36);

impl VipEntry {
    /// The `VIP_SLOTS` index of VIP `id` at generation `ring_gen`.
    #[inline(always)]
    pub const fn slot_of(id: u32, ring_gen: u8) -> u32 {
        id * 2 + (ring_gen as u32 & 1)
    }
}

/// The data of a `SOURCES` key (an LPM trie): the VIP id, big-endian so it is the first 32 bits
/// a prefix matches, then the source address (IPv4 in bytes 0..4). An allowed prefix of `n` bits
/// is stored with prefix length `32 + n`; a packet is looked up with all 160 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// The VIP id, big-endian.
    pub vip_be: [u8; 4],
    /// The source address, network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);

/// The prefix length a packet's source is looked up with: VIP id and the whole address.
pub const SOURCE_KEY_BITS: u32 = 32 + 128;

pod!(VipKey, VipMeta, Settings, VipIndex, VipEntry, SourceKey, EchoKey, LocalMacs);
