//! The flow table as read-only memory: `FLOWS` is an mmap-able array of 64-byte sets, so the
//! daemon's flow gauge and `balancer status` read all of it (8 MiB) without a syscall per set.

use std::io;

use aya::maps::MapData;
use balancer_common::{flow::FlowSet, maps::FLOW_SETS};

use super::mmap::Mapping;

/// `FLOWS` mapped read-only into this process.
pub struct FlowMemory(Mapping);

impl FlowMemory {
    /// Maps the `FLOWS` array (created with `BPF_F_MMAPABLE`).
    ///
    /// # Errors
    /// When the kernel refuses the mapping, e.g. for a map pinned by a build whose flow table was
    /// another kind of map.
    pub fn map(flows: &MapData) -> io::Result<Self> {
        Mapping::new(flows, FLOW_SETS as usize * size_of::<FlowSet>(), false).map(Self)
    }

    /// Copies of every set, read one at a time while the data path keeps writing: a count made
    /// from them is a snapshot of a moving table, which is all a gauge needs.
    pub fn sets(&self) -> impl Iterator<Item = FlowSet> + '_ {
        #[expect(clippy::cast_ptr_alignment, reason = "the kernel maps array maps page-aligned")]
        let base = self.0.as_ptr().cast::<FlowSet>();
        // SAFETY: `i < FLOW_SETS`, inside the mapping, which lives as long as `self`; a volatile
        // read because the kernel side writes concurrently (slots are whole 64-bit words).
        (0..FLOW_SETS as usize).map(move |i| unsafe { base.add(i).read_volatile() })
    }
}
