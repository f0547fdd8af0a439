//! The loaded XDP program and its maps: loading and attaching (`loader`), what the maps should
//! hold for a configuration (`plan`, pure), writing it (`sync`), and reading counters (`stats`).

pub mod flow_memory;
pub mod ids;
pub mod link;
pub mod loader;
pub mod mmap;
pub mod plan;
pub mod ring_memory;
pub mod ring_regions;
pub mod stats;
pub mod sync;

pub use loader::{Dataplane, LoadError};
