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
    /// Id of the VIP this backend serves: not read by the data path, it makes the map
    /// self-describing for `balancer stats` and for re-adopting pinned maps after a restart.
    pub vip: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 32);

impl Backend {
    /// An unused slot.
    pub const EMPTY: Backend =
        Backend { addr: [0; 16], mac: [0; 6], family: 0, state: state::EMPTY, ifindex: 0, vip: 0 };
}

pod!(Backend);
