//! Counter layouts: traffic per VIP and per backend, and why packets were not balanced.

use crate::pod;

/// Value of the per-CPU `VIP_STATS` and `BACKEND_STATS` arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded, as received (before any encapsulation).
    pub bytes: u64,
    /// Flows that were assigned a backend by the Maglev table rather than found in the flow table.
    pub new_flows: u64,
    /// VIPs only, the flow table's events (what tells an operator it is failing the VIP). TCP
    /// packets other than a SYN that missed the table: steered by the ring alone, they go
    /// elsewhere if the ring changed since; the best single signal of an L4 balancer.
    pub misses: u64,
    /// Flows pinned in the table.
    pub inserts: u64,
    /// Pins that took the slot of another flow (its set was full).
    pub evictions: u64,
    /// New flows not pinned because this CPU was over `flow_insert_limit` (a SYN flood): they
    /// were steered by the ring and cost no established flow its slot.
    pub guarded: u64,
}
const _: () = assert!(core::mem::size_of::<Traffic>() == 56);

impl Traffic {
    /// Adds another CPU's counters to these.
    pub fn add(&mut self, other: &Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
        self.misses += other.misses;
        self.inserts += other.inserts;
        self.evictions += other.evictions;
        self.guarded += other.guarded;
    }
}

/// What one packet did to its VIP's flow table (added to its `Traffic`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "four independent facts, each added to one counter")]
pub struct FlowEvents {
    /// A TCP packet past its SYN that the table did not hold.
    pub miss: bool,
    /// It was pinned.
    pub inserted: bool,
    /// Its pin took another flow's slot.
    pub evicted: bool,
    /// It was not pinned: the CPU was over its insert limit.
    pub guarded: bool,
}

/// Value of the per-CPU `INSERT_GUARD` array: what this CPU spent of one of its budgets
/// (`budget`) in the current window (`flow::INSERT_WINDOW_SHIFT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertWindow {
    /// `jiffies >> INSERT_WINDOW_SHIFT` of the window.
    pub window: u64,
    /// Spent in it.
    pub inserts: u64,
}
const _: () = assert!(core::mem::size_of::<InsertWindow>() == 16);

/// The per-CPU budgets of `INSERT_GUARD`, by index.
pub mod budget {
    /// Flow-table pins (`Settings::insert_limit`).
    pub const INSERTS: u32 = 0;
    /// ICMP "too big" sent to clients: at most `TOO_BIG_PER_WINDOW`, as the kernel limits the
    /// ICMP errors it sends, so large packets from forged sources do not make the balancer a
    /// reflector at line rate (those over it are dropped, counted as `too_big`).
    pub const TOO_BIG: u32 = 1;
    /// Budgets.
    pub const COUNT: u32 = 2;
    /// "Too big" messages one CPU sends per window (about a second at HZ=250).
    pub const TOO_BIG_PER_WINDOW: u64 = 1000;
}

/// Why the data path did not balance a packet: the index into the per-CPU `REASONS` array.
///
/// Every packet that is not forwarded is counted under exactly one reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4 or IPv6 (ARP, LLDP, …): passed.
    NotIp = 0,
    /// Headers end before the packet says they do: passed.
    Truncated = 1,
    /// An IPv4 fragment or an IPv6 fragment header: passed.
    Fragment = 2,
    /// IPv4 header with options: passed.
    Ipv4Options = 3,
    /// IPv6 extension header the parser does not skip: passed.
    Ipv6ExtHeader = 4,
    /// ICMP or `ICMPv6`: passed.
    Icmp = 5,
    /// Another transport (not TCP or UDP): passed.
    OtherProto = 6,
    /// Destination is not a VIP: passed.
    NoVip = 7,
    /// VIP terminated locally by the L7 proxy: passed.
    Local = 8,
    /// VIP has no usable backend: dropped, so the balancer's own stack never answers for it.
    NoBackend = 9,
    /// The packet could not be rewritten (headroom, map error): dropped.
    Rewrite = 10,
    /// The IP length field disagrees with the frame (shorter than its headers, longer than the
    /// frame, or an IPv6 jumbogram): passed.
    BadLength = 11,
    /// From a source the VIP's `allow_sources` does not hold: dropped.
    SourceFiltered = 12,
    /// A packet that would exceed the egress MTU once encapsulated and gets no "too big": IPv4
    /// without don't-fragment (XDP cannot fragment it, and the link would drop it anyway), or
    /// this CPU has sent its `budget::TOO_BIG_PER_WINDOW`. Dropped.
    TooBig = 13,
    /// A frame for a VIP (or ICMP, or IPIP) sent to another MAC than the interface's own
    /// (promiscuous mode, a bridge flooding a dead port's frames, a broadcast or multicast
    /// frame): passed for the kernel to drop. Other frames count under their own reason.
    OtherHost = 14,
    /// IP-in-IP from the balancers' prefix (`ipip_source_v4`/`v6`), an L4 tier forwarding to
    /// this host: the outer header removed and the client's packet passed to the stack.
    Decapsulated = 15,
}

impl Reason {
    /// Number of reasons, the size of the `REASONS` array.
    pub const COUNT: u32 = 16;
    /// All reasons, in index order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::NotIp,
        Reason::Truncated,
        Reason::Fragment,
        Reason::Ipv4Options,
        Reason::Ipv6ExtHeader,
        Reason::Icmp,
        Reason::OtherProto,
        Reason::NoVip,
        Reason::Local,
        Reason::NoBackend,
        Reason::Rewrite,
        Reason::BadLength,
        Reason::SourceFiltered,
        Reason::TooBig,
        Reason::OtherHost,
        Reason::Decapsulated,
    ];

    /// The name used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NotIp => "not_ip",
            Reason::Truncated => "truncated",
            Reason::Fragment => "fragment",
            Reason::Ipv4Options => "ipv4_options",
            Reason::Ipv6ExtHeader => "ipv6_ext_header",
            Reason::Icmp => "icmp",
            Reason::OtherProto => "other_proto",
            Reason::NoVip => "no_vip",
            Reason::Local => "local",
            Reason::NoBackend => "no_backend",
            Reason::Rewrite => "rewrite",
            Reason::BadLength => "bad_length",
            Reason::SourceFiltered => "source_filtered",
            Reason::TooBig => "too_big",
            Reason::OtherHost => "other_host",
            Reason::Decapsulated => "decapsulated",
        }
    }

    /// Whether packets counted under this reason are dropped rather than passed to the kernel.
    pub const fn drops(self) -> bool {
        matches!(self, Reason::NoBackend | Reason::Rewrite | Reason::SourceFiltered | Reason::TooBig)
    }
}

/// ICMP the data path handled itself: the index into the per-CPU `ICMP_STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpEvent {
    /// An ICMP error about a VIP's flow (destination unreachable, fragmentation needed, packet
    /// too big) forwarded to the flow's backend, so it learns the path MTU.
    Relayed = 0,
    /// "Fragmentation needed" or "packet too big" sent to a client whose packet would have
    /// exceeded the egress MTU once encapsulated.
    TooBigSent = 1,
    /// An echo request to a VIP address answered.
    EchoReplied = 2,
}

impl IcmpEvent {
    /// Number of events, the size of the `ICMP_STATS` array.
    pub const COUNT: u32 = 3;
    /// All events, in index order.
    pub const ALL: [IcmpEvent; Self::COUNT as usize] =
        [IcmpEvent::Relayed, IcmpEvent::TooBigSent, IcmpEvent::EchoReplied];

    /// The name used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            IcmpEvent::Relayed => "relayed",
            IcmpEvent::TooBigSent => "too_big_sent",
            IcmpEvent::EchoReplied => "echo_replied",
        }
    }
}

pod!(Traffic, InsertWindow);
