//! Real servers behind a VIP, as the data path sees them.

use crate::pod;

/// Administrative and health state of a backend, as one byte in `Backend::state`.
pub mod state {
    /// The slot holds no backend; flows pointing at it are re-steered.
    pub const EMPTY: u8 = 0;
    /// Takes new and existing flows.
    pub const ACTIVE: u8 = 1;
    /// No new flows (it has no ring slots), existing flows stay.
    pub const DRAIN: u8 = 2;
    /// No traffic at all; flows pointing at it are re-steered.
    pub const STOPPED: u8 = 3;

    /// Whether a flow already pinned to a backend in this state may stay on it.
    #[inline(always)]
    pub const fn keeps_flows(state: u8) -> bool {
        state == ACTIVE || state == DRAIN
    }
}

/// Value of the `BACKENDS` array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Backend address, network byte order; IPv4 uses bytes 0..4. Outer destination for IPIP.
    pub addr: [u8; 16],
    /// Next-hop MAC: the backend's own for DSR, the gateway's when it is routed.
    pub mac: [u8; 6],
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// One of the `state` constants.
    pub state: u8,
    /// Interface to send on; 0 means the one the packet arrived on (`XDP_TX`).
    pub ifindex: u32,
    /// Id of the VIP this backend serves (below `maps::MAX_VIPS`): the data path checks a flow's
    /// or a slot's backend still belongs to the packet's VIP (ids are reused), and it makes the
    /// map self-describing for `balancer stats` and for re-adopting pinned maps after a restart.
    pub vip: u16,
    /// MTU of the interface packets to this backend leave by (0: unknown, never checked). An
    /// IPIP packet whose outer datagram would exceed it is answered with ICMP "too big".
    pub mtu: u16,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 32);
const _: () = assert!(crate::maps::MAX_VIPS <= u16::MAX as u32);

impl Backend {
    /// An unused slot.
    pub const EMPTY: Backend =
        Backend { addr: [0; 16], mac: [0; 6], family: 0, state: state::EMPTY, ifindex: 0, vip: 0, mtu: 0 };
}

pod!(Backend);
