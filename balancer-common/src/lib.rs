//! Everything the XDP program and the daemon must agree on, defined once.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding and no `bool`, and has a
//! compile-time size check, so a layout change shows up as a build error on both sides rather than
//! as garbage read from a map. Addresses and ports are kept in network byte order, as they appear
//! in the packet, so the data path never swaps bytes on the hot path.
#![no_std]
#![deny(missing_docs)]
#![expect(clippy::inline_always, reason = "shared with the XDP program, where the verifier needs every helper inlined")]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit `#[repr(C)]` padding, public so both sides can build the value"
)]

pub mod backend;
pub mod counters;
pub mod flow;
pub mod hash;
pub mod maps;
pub mod vip;

/// Address family tag stored next to 16-byte addresses: IPv4 uses the first four bytes.
pub mod family {
    /// IPv4: the address occupies bytes 0..4, the rest are zero.
    pub const V4: u8 = 4;
    /// IPv6: all sixteen bytes.
    pub const V6: u8 = 6;
}

/// IP protocol numbers the data path handles.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// Implements `aya::Pod` for map types when building the daemon.
macro_rules! pod {
    ($($t:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: every type listed is `#[repr(C)]`, `Copy`, built only from integers and
            // byte arrays, with all padding spelled out as fields, so any bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )+
    };
}
pub(crate) use pod;
