//! The balancer's XDP programs.
//!
//! `balancer` is the L4 data path. It reads top to bottom: parse, find the VIP, look up the flow,
//! pick a backend, rewrite, return. Every packet it does not forward is passed (or, for a VIP
//! with nowhere to send it, dropped) and counted under exactly one `Reason`. Three kinds of
//! packet leave that path by tail call into a program of their own (`branch_*`, in `BRANCHES`,
//! which the daemon fills): ICMP (errors about a VIP's flows go to the flow's backend, echo
//! requests to a VIP are answered), packets too big for their backend's path once
//! encapsulated (answered with ICMP "too big"), and IPIP for this host's L7 VIPs.
//!
//! `decap` runs on backends of IPIP VIPs: it strips the outer header so the local stack gets
//! the client's packet. `balancer` does the same for IPIP from the balancers' prefix to its own
//! L7 VIPs, so an L7 node behind an L4 tier needs no second program on its interface.
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
mod icmp;
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
    backend::Backend,
    counters::{FlowEvents, Reason},
    flow::Place,
    hash::{flow_hash64, maglev_hash},
    maps::branch,
    proto,
    vip::{Settings, VipMeta, flags, forward as fwd},
};

use crate::{
    maps::{BRANCH_ARGS, BRANCHES, SETTINGS},
    parse::Packet,
};

/// What `process` decided for a packet it did not refuse.
enum Next {
    /// This XDP action, the packet rewritten for it.
    Action(u32),
    /// Too big for the egress MTU (this one) once encapsulated: `branch_too_big` answers it.
    TooBig(u16),
}

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    // `process` is inlined: this is the path of nearly every packet, and a BPF-to-BPF call
    // (its return above all, with this CPU's return-stack mitigations) was a third of what a
    // packet for no VIP cost. What leaves the path goes to a branch by tail call, which starts
    // with an empty stack: the verifier adds up the stack frames of a call chain (at most 512
    // bytes), and `process`'s alone is most of it.
    match process(&ctx) {
        Ok(Next::Action(action)) => action,
        Ok(Next::TooBig(mtu)) => {
            if let Some(arg) = BRANCH_ARGS.get_ptr_mut(0) {
                // SAFETY: per-CPU slot; the branch runs next on this CPU and reads it.
                unsafe { *arg = mtu };
            }
            // Without the branch (not loaded yet), no "too big" goes out: dropped, as when
            // this CPU's budget for them is spent.
            enter(&ctx, branch::TOO_BIG, Reason::TooBig)
        }
        // Without the branch, ICMP is the kernel's, as it was before the data path read it.
        Err(Reason::Icmp) => enter(&ctx, branch::ICMP, Reason::Icmp),
        // IPIP from an L4 tier in front of this host (an L7 node) to one of its L7 VIPs: the
        // client's packet for the stack, as `decap` gives it on backends that run no balancer.
        Err(Reason::OtherProto) => enter(&ctx, branch::TUNNELLED, Reason::OtherProto),
        Err(reason) => verdict(Err(reason)),
    }
}

/// Tail-calls branch `which`; if it is not in `BRANCHES`, counts `otherwise` and passes or
/// drops by it.
#[inline(always)]
fn enter(ctx: &XdpContext, which: u32, otherwise: Reason) -> u32 {
    // SAFETY: a tail call on our own context; on success it does not return.
    unsafe { BRANCHES.tail_call(ctx, which) };
    verdict(Err(otherwise))
}

/// The XDP action for `result`: its own, else pass or drop by the reason, which is counted.
#[inline(always)]
fn verdict(result: Result<u32, Reason>) -> u32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            stats::reason(reason);
            if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
        }
    }
}

/// `branch::ICMP`: `icmp::handle` for a frame sent to this host, counted.
#[xdp]
pub fn branch_icmp(ctx: XdpContext) -> u32 {
    verdict(parse::for_this_host(&ctx).and_then(|()| icmp::handle(&ctx)))
}

/// `branch::TOO_BIG`: `icmp::too_big` with the MTU `balancer` left in `BRANCH_ARGS`, counted.
#[xdp]
pub fn branch_too_big(ctx: XdpContext) -> u32 {
    let Some(&mtu) = BRANCH_ARGS.get(0) else { return verdict(Err(Reason::TooBig)) };
    verdict(icmp::too_big(&ctx, mtu))
}

/// `branch::TUNNELLED`: a packet of another protocol than TCP/UDP/ICMP. IPIP sent to this host
/// for one of its L7 VIPs is decapsulated (`decap::decap_for_local_vip`), the rest passed.
#[xdp]
pub fn branch_tunnelled(ctx: XdpContext) -> u32 {
    let reason = match parse::for_this_host(&ctx) {
        Err(other_host) => other_host,
        Ok(()) if decap::decap_for_local_vip(&ctx) == Ok(true) => Reason::Decapsulated,
        Ok(()) => Reason::OtherProto,
    };
    verdict(Err(reason))
}

/// The TCP/UDP path.
#[inline(always)]
fn process(ctx: &XdpContext) -> Result<Next, Reason> {
    let packet = parse::parse(ctx)?;
    let vip = vip::lookup(&packet.key)?;
    // After the VIP: a frame for no VIP is passed whoever it was sent to, without the look.
    parse::for_this_host(ctx)?;
    if vip.flags & flags::SOURCE_FILTER != 0 && !vip::source_allowed(&packet.key, vip.id) {
        return Err(Reason::SourceFiltered);
    }
    if vip.forward == fwd::LOCAL {
        return Err(Reason::Local);
    }
    let settings = SETTINGS.get(0).ok_or(Reason::Rewrite)?;
    let hash = flow_hash64(&packet.key.for_vip(vip.flags));
    let place = Place::of(hash, settings.flow_secret);
    let (id, backend, found) = steer(&vip, hash, &place, packet.syn)?;
    let events = if found {
        None
    } else {
        let miss = packet.key.proto == proto::TCP && !packet.syn;
        let tabled = vip.flags & flags::NO_FLOW_TABLE == 0;
        debug!(ctx, "new flow on vip {} to backend {}", vip.id, id);
        Some(if tabled { flow::pin(&place, settings, id, miss) } else { FlowEvents::default() })
    };
    if vip.forward == fwd::IPIP && forward::too_big(&packet, backend) {
        return Ok(Next::TooBig(backend.mtu));
    }
    let action = send(ctx, &vip, settings, &packet, backend)?;
    stats::forwarded(vip.id, id, packet.len, events);
    Ok(Next::Action(action))
}

/// Where a flow of `vip` goes: the backend its flow-table entry names (`true`), unless the VIP
/// keeps none, else the one the VIP's Maglev table picks (`false`).
///
/// The backend is its `BACKENDS` entry itself, not a copy: a copy of the 32-byte entry was split
/// into byte-sized values that the compiler spilled to the stack and reloaded all the way to the
/// rewrite. Reading the entry later is no less consistent than copying it: the daemon's update
/// of an entry is not atomic either way.
#[inline(always)]
fn steer(vip: &VipMeta, hash: u64, place: &Place, syn: bool) -> Result<(u32, &'static Backend, bool), Reason> {
    let found = if vip.flags & flags::NO_FLOW_TABLE == 0 { flow::lookup(place, vip, syn) } else { None };
    match found {
        Some((id, backend)) => Ok((id, backend, true)),
        None => maglev::pick(vip, maglev_hash(hash)).map(|(id, backend)| (id, backend, false)),
    }
}

/// Sends `packet` on to `backend` with the VIP's forwarding mode.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    vip: &VipMeta,
    settings: &Settings,
    packet: &Packet,
    backend: &Backend,
) -> Result<u32, Reason> {
    match vip.forward {
        fwd::DSR => forward::dsr(ctx, backend),
        fwd::IPIP => forward::ipip(ctx, settings, packet, backend),
        _ => Err(Reason::Rewrite),
    }
}

#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    // Decapsulated or not (then unchanged), the packet is the kernel's.
    let _ = decap::decap(&ctx);
    xdp_action::XDP_PASS
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
