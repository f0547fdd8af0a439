//! Every map of the balancer program. Names, sizes and layouts come from `balancer_common`; the
//! statics are named after `balancer_common::maps` so the daemon finds them.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, ProgramArray},
};
use balancer_common::{
    backend::Backend,
    counters::{IcmpEvent, InsertWindow, Reason, Traffic, budget},
    flow::FlowSet,
    maps::{FLOW_SETS, MAX_BACKENDS, MAX_ECHO_ADDRS, MAX_SOURCES, MAX_VIPS, RING_ENTRIES, branch},
    vip::{EchoKey, LocalMacs, Settings, SourceKey, VipEntry, VipIndex, VipKey, VipMeta},
};

/// VIP (address, port, protocol) → its id, ring generation and forwarding mode, for the VIPs
/// whose `VIP_INDEX` byte they share with another. Daemon-written.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS, 0);

/// One byte per hashed (address, port, protocol), at index 0: which `VIP_SLOTS` entry holds the
/// VIP there. Daemon-written.
#[map]
pub static VIP_INDEX: Array<VipIndex> = Array::with_max_entries(1, 0);

/// VIPs as `VIP_INDEX` names them, two entries per VIP id. Daemon-written.
#[map]
pub static VIP_SLOTS: Array<VipEntry> = Array::with_max_entries(2 * MAX_VIPS, 0);

/// Two Maglev tables per VIP (live and staging) in its region: `VipMeta::ring_base` + slot →
/// backend id. Daemon-written, through an mmap of the array; a table goes live when the VIP's
/// `ring_base` moves to it.
#[map]
pub static RINGS: Array<u32> = Array::with_max_entries(RING_ENTRIES, BPF_F_MMAPABLE);

/// Backend id → address, next-hop MAC, state. Daemon-written.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Flow hash → backend, so established connections stay put when the ring changes. Written
/// here; see `balancer_common::flow` for the set-associative layout.
///
/// One table shared by all CPUs, not per-CPU: a flow's packets do reach several CPUs (veth, RSS
/// changes, ECMP rehash onto another queue), and each must find the flow's entry. Mmap-able so
/// the daemon reads it as memory (and so sets start cache-line aligned).
#[map]
pub static FLOWS: Array<FlowSet> = Array::with_max_entries(FLOW_SETS, BPF_F_MMAPABLE);

/// Traffic and flow-table events per VIP id. Written here.
#[map]
pub static VIP_STATS: PerCpuArray<Traffic> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Traffic per backend id. Written here.
#[map]
pub static BACKEND_STATS: PerCpuArray<Traffic> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Packets not balanced, per `Reason`. Written here.
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Balancer-wide settings (IPIP outer source prefixes, the insert limit), at index 0.
/// Daemon-written.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// This CPU's budgets in the current window (`counters::budget`). Written here.
#[map]
pub static INSERT_GUARD: PerCpuArray<InsertWindow> = PerCpuArray::with_max_entries(budget::COUNT, 0);

/// Allowed source prefixes per VIP (`SourceKey`), for VIPs with `flags::SOURCE_FILTER`.
/// Daemon-written.
#[map]
pub static SOURCES: LpmTrie<SourceKey, u8> = LpmTrie::with_max_entries(MAX_SOURCES, 0);

/// VIP addresses whose echo requests are answered here (`answer_ping`). Daemon-written.
#[map]
pub static ECHO_ADDRS: HashMap<EchoKey, u8> = HashMap::with_max_entries(MAX_ECHO_ADDRS, 0);

/// ICMP relayed or sent, per `IcmpEvent`. Written here.
#[map]
pub static ICMP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(IcmpEvent::COUNT, 0);

/// The MACs of the interfaces the program is attached to. Daemon-written.
#[map]
pub static LOCAL_MACS: Array<LocalMacs> = Array::with_max_entries(1, 0);

/// The branches off the TCP/UDP path, by `balancer_common::maps::branch` index. Daemon-written.
#[map]
pub static BRANCHES: ProgramArray = ProgramArray::with_max_entries(branch::COUNT, 0);

/// The MTU `branch::TOO_BIG` answers with, written just before the tail call. Written here.
#[map]
pub static BRANCH_ARGS: PerCpuArray<u16> = PerCpuArray::with_max_entries(1, 0);
