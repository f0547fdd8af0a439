//! Sending a balanced packet on to its backend.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use balancer_common::{backend::Backend, counters::Reason};

use crate::packet::{read, write};

/// Direct server return: the frame goes to the backend's MAC unchanged above L2, and leaves from
/// our MAC (the one it was addressed to), so switches learn nothing odd.
#[inline(always)]
pub fn dsr(ctx: &XdpContext, backend: &Backend) -> Result<u32, Reason> {
    let macs = read::<[u8; 12]>(ctx, 0)?;
    let mut out = [0u8; 12];
    out[..6].copy_from_slice(&backend.mac);
    out[6..].copy_from_slice(&macs[..6]);
    write(ctx, 0, out)?;
    Ok(transmit(ctx, backend.ifindex))
}

/// `XDP_TX` back out of the ingress interface, or a redirect to the backend's interface.
#[inline(always)]
fn transmit(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == 0 || ifindex as usize == ctx.ingress_ifindex() {
        return xdp_action::XDP_TX;
    }
    // SAFETY: plain helper call; it only records the target for the driver.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}
