//! Map names and sizes. The XDP program names its statics after these constants; the daemon opens
//! maps by these names, and a test checks that the built object has every one of them.

/// VIP table: `VipKey` → `VipMeta` (hash). Written by the daemon.
pub const VIPS: &str = "VIPS";
/// Maglev tables: `u32` index (`ring_index`) → backend id (array). Written by the daemon.
pub const RINGS: &str = "RINGS";
/// Backends: backend id → `Backend` (array). Written by the daemon.
pub const BACKENDS: &str = "BACKENDS";
/// Flow table: set index → `FlowSet` (mmap-able array; see `flow`). Written by the data path.
pub const FLOWS: &str = "FLOWS";
/// Traffic and flow-table events per VIP id (per-CPU array of `Traffic`). Written by the data
/// path.
pub const VIP_STATS: &str = "VIP_STATS";
/// Traffic per backend id (per-CPU array of `Traffic`). Written by the data path.
pub const BACKEND_STATS: &str = "BACKEND_STATS";
/// Packets not balanced, per `Reason` (per-CPU array of `u64`). Written by the data path.
pub const REASONS: &str = "REASONS";

/// VIP index: index 0 → `VipIndex` (array of one). Written by the daemon.
pub const VIP_INDEX: &str = "VIP_INDEX";
/// VIPs for the index: `VipEntry::slot_of(id, ring_gen)` → `VipEntry` (array). Written by the
/// daemon.
pub const VIP_SLOTS: &str = "VIP_SLOTS";

/// Balancer-wide settings: index 0 → `Settings` (array of one). Written by the daemon.
pub const SETTINGS: &str = "SETTINGS";
/// Each CPU's pins in the current window (per-CPU array of one `InsertWindow`). Written by the
/// data path.
pub const INSERT_GUARD: &str = "INSERT_GUARD";

/// Allowed source prefixes of VIPs with a source filter: `SourceKey` → 1 (LPM trie). Written
/// by the daemon.
pub const SOURCES: &str = "SOURCES";

/// VIP addresses whose ICMP echo requests the data path answers: `EchoKey` → 1 (hash).
/// Written by the daemon.
pub const ECHO_ADDRS: &str = "ECHO_ADDRS";
/// ICMP the data path relayed or sent, per `IcmpEvent` (per-CPU array of `u64`). Written by
/// the data path.
pub const ICMP_STATS: &str = "ICMP_STATS";

/// Every map the balancer program defines.
pub const ALL: [&str; 14] = [
    VIPS,
    VIP_INDEX,
    VIP_SLOTS,
    RINGS,
    BACKENDS,
    FLOWS,
    VIP_STATS,
    BACKEND_STATS,
    REASONS,
    SETTINGS,
    INSERT_GUARD,
    SOURCES,
    ECHO_ADDRS,
    ICMP_STATS,
];

/// Most VIPs one balancer serves.
pub const MAX_VIPS: u32 = 64;
/// Most backends across all VIPs; backend ids are `0..MAX_BACKENDS`.
pub const MAX_BACKENDS: u32 = 4096;
/// VIP addresses that answer echo requests.
pub const MAX_ECHO_ADDRS: u32 = MAX_VIPS;
/// Allowed source prefixes, all VIPs together.
pub const MAX_SOURCES: u32 = 16384;
/// Largest Maglev table per VIP (the Maglev paper's 65537, a prime).
pub const MAX_RING_SIZE: u32 = 65537;
/// Flows the flow table can hold (all CPUs together): `FLOW_SETS` sets of `FLOW_WAYS`.
pub const MAX_FLOWS: u32 = 1 << 20;
/// Sets in the flow table; a power of two, so a set index is the hash's low bits.
pub const FLOW_SETS: u32 = MAX_FLOWS / crate::flow::FLOW_WAYS as u32;
const _: () = assert!(FLOW_SETS.is_power_of_two() && FLOW_SETS <= 1 << 24);
/// Ring entries: two halves (live and staging) of `MAX_RING_SIZE` slots for every VIP.
pub const RING_ENTRIES: u32 = MAX_VIPS * 2 * MAX_RING_SIZE;

/// Index in `RINGS` of `slot` in generation `ring_gen` of VIP `vip_id`.
#[inline(always)]
pub const fn ring_index(vip_id: u32, ring_gen: u32, slot: u32) -> u32 {
    (vip_id * 2 + (ring_gen & 1)) * MAX_RING_SIZE + slot
}
