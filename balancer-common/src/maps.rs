//! Map names and sizes. The XDP program names its statics after these constants; the daemon opens
//! maps by these names, and a test checks that the built object has every one of them.

/// VIP table: `VipKey` → `VipMeta` (hash). Written by the daemon.
pub const VIPS: &str = "VIPS";
/// Maglev tables: `u32` index (`VipMeta::ring_base` + slot) → backend id (array). Written by the
/// daemon.
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

/// The MACs of the interfaces the balancer is attached to: `LocalMacs` (array of one).
/// Written by the daemon.
pub const LOCAL_MACS: &str = "LOCAL_MACS";

/// The balancer's branches off its TCP/UDP path (program array, indexed by `branch`), entered
/// by tail call. Filled by the daemon when it loads the object.
pub const BRANCHES: &str = "BRANCHES";

/// What `branch::TOO_BIG` is entered with, the egress MTU (per-CPU array of one `u16`): written
/// just before the tail call, on the same CPU, read by the branch.
pub const BRANCH_ARGS: &str = "BRANCH_ARGS";

/// The programs in `BRANCHES`, by index. Each is an XDP program of the object that handles a
/// packet the TCP/UDP path hands over: a tail call starts with an empty stack, so a branch's
/// frames are not added to that path's in the verifier's 512-byte sum, and the path needs no
/// call of its own (a BPF-to-BPF call and its return cost the common packet ~10 ns).
pub mod branch {
    /// ICMP for this host: errors about a VIP's flows relayed, echo requests answered.
    pub const ICMP: u32 = 0;
    /// A packet too big for its backend's path once encapsulated: answered with ICMP "too
    /// big" (the MTU in `BRANCH_ARGS`).
    pub const TOO_BIG: u32 = 1;
    /// Another protocol than TCP/UDP/ICMP: IPIP for this host's L7 VIPs decapsulated.
    pub const TUNNELLED: u32 = 2;
    /// Entries of `BRANCHES`.
    pub const COUNT: u32 = 3;
    /// The program of each entry, in index order.
    pub const PROGRAMS: [&str; COUNT as usize] = ["branch_icmp", "branch_too_big", "branch_tunnelled"];
}

/// Every map the balancer program defines.
pub const ALL: [&str; 17] = [
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
    LOCAL_MACS,
    BRANCHES,
    BRANCH_ARGS,
];

/// Most VIPs one balancer serves.
pub const MAX_VIPS: u32 = 64;
/// Most backends across all VIPs; backend ids are `0..MAX_BACKENDS`.
pub const MAX_BACKENDS: u32 = 4096;
/// VIP addresses that answer echo requests.
pub const MAX_ECHO_ADDRS: u32 = MAX_VIPS;
/// Allowed source prefixes, all VIPs together.
pub const MAX_SOURCES: u32 = 16384;
/// Largest Maglev table per VIP, a prime: at 1000 backends, removing one moves about 1.0/N of
/// the slots, where the default 65537 moves 6.9/N.
pub const MAX_RING_SIZE: u32 = 1_000_003;
/// Flows the flow table can hold (all CPUs together): `FLOW_SETS` sets of `FLOW_WAYS`.
pub const MAX_FLOWS: u32 = 1 << 20;
/// Sets in the flow table; a power of two, so a set index is the hash's low bits.
pub const FLOW_SETS: u32 = MAX_FLOWS / crate::flow::FLOW_WAYS as u32;
const _: () = assert!(FLOW_SETS.is_power_of_two() && FLOW_SETS <= 1 << 24);
/// `RINGS` is allotted in units of this many entries: the two halves (live and staging) of a
/// table of the default 65537 slots. A VIP's region is `ring_units` consecutive units, whose
/// first and second halves hold its two generations.
pub const RING_UNIT: u32 = 2 * 65537;
/// Ring entries: one unit per VIP, which larger tables borrow from (a 1,000,003-slot table
/// takes 16 units, 16 MiB, since the kernel stores each 4-byte slot in 8 bytes).
pub const RING_ENTRIES: u32 = MAX_VIPS * RING_UNIT;

/// Units a table of `size` slots takes: room for two halves of `size`.
#[inline(always)]
pub const fn ring_units(size: u32) -> u32 {
    (2 * size).div_ceil(RING_UNIT)
}

/// Index in `RINGS` of the first slot of half `ring_gen` (its parity) of the region of
/// `units` units from unit `unit`.
#[inline(always)]
pub const fn ring_half(unit: u32, units: u32, ring_gen: u8) -> u32 {
    unit * RING_UNIT + (ring_gen as u32 & 1) * units * (RING_UNIT / 2)
}
