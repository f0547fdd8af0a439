//! Bounds-checked access to packet memory: the only place that turns packet offsets into
//! pointers.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use balancer_common::counters::Reason;

/// A pointer to a `T` at `offset` bytes into the packet, or `Reason::Truncated` when the packet
/// is too short. The explicit comparison against `data_end` is what the verifier needs to see.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Reason::Truncated);
    }
    Ok((start + offset) as *mut T)
}

/// The `N` bytes at `offset`, in place: a header's fields read through it are loaded from the
/// packet directly, with no copy of the whole header on the stack first. Valid until the frame
/// is moved (`adjust_head`, `adjust_tail`), which the data path does only after parsing.
#[inline(always)]
pub fn at<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<&[u8; N], Reason> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that the `N` bytes lie inside the packet; `[u8; N]` has no
    // alignment, and nothing writes the packet while the reference lives (see above).
    Ok(unsafe { &*p })
}

/// Reads a `T` at `offset` (unaligned; packet headers have no alignment guarantees).
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Reason> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `p` lie inside the packet.
    Ok(unsafe { p.read_unaligned() })
}

/// Writes a `T` at `offset` (unaligned).
#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Result<(), Reason> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `p` lie inside the packet.
    unsafe { p.write_unaligned(value) };
    Ok(())
}

/// Moves the frame's start by `delta` bytes (negative grows it at the front). Every packet
/// pointer must be re-derived afterwards, which `ptr_at` does from `ctx` each time.
#[inline(always)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), Reason> {
    // SAFETY: plain helper call on our own context.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) };
    if rc != 0 { Err(Reason::Rewrite) } else { Ok(()) }
}

/// Moves the frame's end by `delta` bytes (negative shortens it).
#[inline(always)]
pub fn adjust_tail(ctx: &XdpContext, delta: i32) -> Result<(), Reason> {
    // SAFETY: plain helper call on our own context.
    let rc = unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) };
    if rc != 0 { Err(Reason::Rewrite) } else { Ok(()) }
}
