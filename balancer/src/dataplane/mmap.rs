//! An mmap-able BPF array (created with `BPF_F_MMAPABLE`) mapped into this process: the one
//! place that calls `mmap`/`munmap` on a map, for the ring tables and the flow table.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;

/// A shared mapping of the first `bytes` (rounded up to pages) of a map's values.
pub struct Mapping {
    base: NonNull<u8>,
    bytes: usize,
}

impl Mapping {
    /// Maps `bytes` of `map`, read-write or read-only.
    ///
    /// # Errors
    /// When the kernel refuses the mapping, e.g. for a map created without `BPF_F_MMAPABLE`.
    pub fn new(map: &MapData, bytes: usize, writable: bool) -> io::Result<Self> {
        let bytes = bytes.div_ceil(4096) * 4096;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of the map's fd; checked for failure below.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, bytes })
    }

    /// The start of the mapping (page-aligned), valid for as long as `self`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
