//! The balancer's XDP programs.
//!
//! `balancer` is the L4 data path. It reads top to bottom: parse, find the VIP, look up the flow,
//! pick a backend, rewrite, return. Every packet it does not forward is passed (or, for a VIP
//! with nowhere to send it, dropped) and counted under exactly one `Reason`.
//!
//! `decap` runs on backends of IPIP VIPs: it strips the outer header so the local stack gets
//! the client's packet.
//!
//! `ref_swap` is a benchmark reference only.
//!
//! `pass` returns `XDP_PASS` and nothing else: it is attached to veth peers, which only accept
//! `XDP_TX`/redirected frames when they have an XDP program, and it is the reference that
//! benchmarks subtract.
#![no_std]
#![no_main]

mod csum;
mod decap;
mod flow;
mod forward;
mod maglev;
mod maps;
mod packet;
mod parse;
mod stats;
mod vip;
mod wire;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use balancer_common::{
    counters::{FlowEvents, Reason},
    hash::{flow_hash64, maglev_hash},
    proto,
    vip::{flags, forward as fwd},
};

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    match process(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::reason(reason);
            if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
        }
    }
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Result<u32, Reason> {
    let packet = parse::parse(ctx)?;
    let vip = vip::lookup(&packet.key)?;
    if vip.flags & flags::SOURCE_FILTER != 0 && !vip::source_allowed(&packet.key, vip.id) {
        return Err(Reason::SourceFiltered);
    }
    if vip.forward == fwd::LOCAL {
        return Err(Reason::Local);
    }
    let key = packet.key.for_vip(vip.flags);
    let hash = flow_hash64(&key);
    let tabled = vip.flags & flags::NO_FLOW_TABLE == 0;
    let found = if tabled { flow::lookup(hash, &vip, packet.syn) } else { None };
    let (id, backend, events) = match found {
        Some((id, backend)) => (id, backend, None),
        None => {
            let (id, backend) = maglev::pick(&vip, maglev_hash(hash))?;
            let miss = packet.key.proto == proto::TCP && !packet.syn;
            let events = if tabled { flow::pin(hash, id, miss) } else { FlowEvents::default() };
            debug!(ctx, "new flow on vip {} to backend {}", vip.id, id);
            (id, backend, Some(events))
        }
    };
    let action = match vip.forward {
        fwd::DSR => forward::dsr(ctx, &backend)?,
        fwd::IPIP => forward::ipip(ctx, &packet, &backend)?,
        _ => return Err(Reason::Rewrite),
    };
    stats::forwarded(vip.id, id, packet.len, events);
    Ok(action)
}

#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    // A packet that cannot be decapsulated is left to the kernel, unchanged.
    decap::decap(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark reference, not attached by the daemon: the floor every XDP L4 forwarder pays
/// (parse the same headers, swap the MACs, `XDP_TX`), so `cargo xtask bench` can show what the
/// VIP lookup, flow table and Maglev add on top.
#[xdp]
pub fn ref_swap(ctx: XdpContext) -> u32 {
    if parse::parse(&ctx).is_err() {
        return xdp_action::XDP_PASS;
    }
    match packet::read::<[u8; 12]>(&ctx, 0) {
        Ok(m) => {
            let swapped = [m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5]];
            if packet::write(&ctx, 0, swapped).is_ok() { xdp_action::XDP_TX } else { xdp_action::XDP_PASS }
        }
        Err(_) => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never called.
    loop {}
}

/// The kernel reads this to decide which helpers the program may call; "Dual MIT/GPL" is its
/// name for the crate's `MIT OR GPL-2.0` (Cargo.toml).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
