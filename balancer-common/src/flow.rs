//! Connection tracking entries: the 5-tuple and the backend it was given.

use crate::pod;

/// Key of the LRU flow table: a packet's 5-tuple as it appears on the wire.
#[repr(C)]
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

/// Value of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend id the flow is pinned to.
    pub backend: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 8);

pod!(FlowKey, FlowValue);
