//! The Maglev tables as memory: `RINGS` is an mmap-able array, so a new table is written with
//! plain stores (65537 slots in well under a millisecond) instead of a syscall per slot, which
//! matters when a backend dies and its slots must move now.

use std::{io, sync::atomic::AtomicU64};

use aya::maps::MapData;
use balancer_common::maps::RING_ENTRIES;

use super::mmap::Mapping;

/// Bytes per element: the kernel rounds array values up to 8 bytes, so each `u32` slot is the
/// low half (little-endian) of a 64-bit element.
const STRIDE: usize = 8;

/// `RINGS` mapped into this process.
pub struct RingMemory(Mapping);

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for RingMemory {}
// SAFETY: as above; `&RingMemory` only hands out `&[AtomicU64]`.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Maps the `RINGS` array (created with `BPF_F_MMAPABLE`).
    ///
    /// # Errors
    /// When the kernel refuses the mapping, e.g. for a map pinned by a build without the flag.
    pub fn map(rings: &MapData) -> io::Result<Self> {
        Mapping::new(rings, RING_ENTRIES as usize * STRIDE, true).map(Self)
    }

    /// The `len` slots from index `start` (a table's half, `maps::ring_half`), one 64-bit
    /// element each whose value is the backend id (the upper half is padding, stored as zero).
    ///
    /// # Panics
    /// If they are not inside the map.
    pub fn slots(&self, start: u32, len: usize) -> &[AtomicU64] {
        let start = start as usize;
        assert!(start + len <= RING_ENTRIES as usize, "ring slots {start}+{len} out of range");
        // SAFETY: in bounds of the mapping (checked above), which lives as long as `self`;
        // AtomicU64 has the size and alignment of one 8-byte array element.
        #[expect(clippy::cast_ptr_alignment, reason = "the kernel maps array maps page-aligned")]
        let base = self.0.as_ptr().cast::<AtomicU64>();
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(base.add(start), len) }
    }
}
