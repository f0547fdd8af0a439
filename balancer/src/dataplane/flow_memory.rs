//! The flow table as read-only memory: `FLOWS` is an mmap-able array of 64-byte sets, so the
//! daemon's flow gauge and `balancer status` read all of it (8 MiB) without a syscall per set.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;
use balancer_common::{flow::FlowSet, maps::FLOW_SETS};

/// `FLOWS` mapped read-only into this process.
pub struct FlowMemory {
    base: NonNull<FlowSet>,
    bytes: usize,
}

impl FlowMemory {
    /// Maps the `FLOWS` array (created with `BPF_F_MMAPABLE`).
    ///
    /// # Errors
    /// When the kernel refuses the mapping, e.g. for a map pinned by a build whose flow table was
    /// another kind of map.
    pub fn map(flows: &MapData) -> io::Result<Self> {
        let bytes = FLOW_SETS as usize * size_of::<FlowSet>();
        // SAFETY: a fresh shared read-only mapping of the map's fd; checked for failure below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ, libc::MAP_SHARED, flows.fd().as_fd().as_raw_fd(), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<FlowSet>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, bytes })
    }

    /// Copies of every set, read one at a time while the data path keeps writing: a count made
    /// from them is a snapshot of a moving table, which is all a gauge needs.
    pub fn sets(&self) -> impl Iterator<Item = FlowSet> + '_ {
        // SAFETY: `i < FLOW_SETS`, inside the mapping, which lives as long as `self`; a volatile
        // read because the kernel side writes concurrently (slots are whole 64-bit words).
        (0..FLOW_SETS as usize).map(|i| unsafe { self.base.as_ptr().add(i).read_volatile() })
    }
}

impl Drop for FlowMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
