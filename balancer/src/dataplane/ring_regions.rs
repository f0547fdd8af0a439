//! Where each VIP's Maglev tables live in `RINGS`: a region of `ring_units` consecutive
//! `RING_UNIT`s, whose two halves hold the live and the staging table. A table of the default
//! 65537 slots takes one unit, so with default tables every VIP id has its own unit, as before
//! tables could be larger; a larger table borrows units that other VIPs do not use.
//!
//! Nothing is kept outside the maps: a VIP's region is read back from its `VipMeta`
//! (`ring_base`, `ring_gen`, `ring_units`), so a restarted daemon that re-adopts pinned maps
//! knows which units are taken.

use balancer_common::{
    maps::{MAX_VIPS, RING_UNIT, ring_half},
    vip::VipMeta,
};

/// One VIP's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First unit.
    pub unit: u32,
    /// Units.
    pub units: u32,
}

impl Region {
    /// The region a VIP entry's tables are in, if it has one.
    pub fn of(meta: &VipMeta) -> Option<Self> {
        let units = u32::from(meta.ring_units);
        if units == 0 {
            return None;
        }
        let start = meta.ring_base.checked_sub(ring_half(0, units, meta.ring_gen))?;
        Some(Self { unit: start / RING_UNIT, units })
    }

    /// Index of the first slot of half `ring_gen`.
    pub fn half(self, ring_gen: u8) -> u32 {
        ring_half(self.unit, self.units, ring_gen)
    }

    fn overlaps(self, other: Self) -> bool {
        self.unit < other.unit + other.units && other.unit < self.unit + self.units
    }
}

/// The regions in use, from which new ones are claimed.
#[derive(Debug, Default)]
pub struct Regions(Vec<Region>);

impl Regions {
    /// Regions `held` are taken.
    pub fn new(held: impl IntoIterator<Item = Region>) -> Self {
        Self(held.into_iter().collect())
    }

    /// A free region of `units` units, taken: from unit `prefer` when it is free there (a VIP's
    /// own id, so default-sized tables keep the layout they always had), else the first that
    /// fits. `None` when no run of free units is long enough.
    pub fn claim(&mut self, units: u32, prefer: u32) -> Option<Region> {
        let fits = |r: Region| r.unit + r.units <= MAX_VIPS && !self.0.iter().any(|&h| h.overlaps(r));
        let region =
            std::iter::once(prefer).chain(0..MAX_VIPS).map(|unit| Region { unit, units }).find(|&r| fits(r))?;
        self.0.push(region);
        Some(region)
    }

    /// Units not in any region.
    pub fn free(&self) -> u32 {
        MAX_VIPS - self.0.iter().map(|r| r.units).sum::<u32>().min(MAX_VIPS)
    }
}

#[cfg(test)]
mod tests {
    use balancer_common::maps::ring_units;

    use super::*;

    fn meta(region: Region, ring_gen: u8) -> VipMeta {
        VipMeta {
            id: 0,
            ring_size: 7,
            ring_base: region.half(ring_gen),
            forward: 0,
            flags: 0,
            ring_gen,
            ring_units: region.units as u8,
        }
    }

    #[test]
    fn a_region_is_read_back_from_either_half() {
        let r = Region { unit: 5, units: 16 };
        assert_eq!(Region::of(&meta(r, 0)), Some(r));
        assert_eq!(Region::of(&meta(r, 1)), Some(r));
        assert_eq!(r.half(1) - r.half(0), 16 * 65537, "halves do not overlap for any size up to the region's");
        assert_eq!(Region::of(&VipMeta { ring_units: 0, ..meta(r, 0) }), None);
    }

    #[test]
    fn default_tables_keep_their_id_s_unit_and_large_ones_take_free_runs() {
        assert_eq!((ring_units(65537), ring_units(1_000_003), ring_units(251)), (1, 16, 1));
        let mut regions = Regions::new([Region { unit: 0, units: 1 }, Region { unit: 3, units: 1 }]);
        assert_eq!(regions.claim(1, 2), Some(Region { unit: 2, units: 1 }), "its own id's unit");
        assert_eq!(regions.claim(1, 3), Some(Region { unit: 1, units: 1 }), "taken: the first free");
        assert_eq!(regions.claim(16, 4), Some(Region { unit: 4, units: 16 }));
        assert_eq!(regions.claim(16, 5), Some(Region { unit: 20, units: 16 }), "around the taken run");
        assert_eq!(regions.free(), 64 - 4 - 32);
        assert_eq!(regions.claim(30, 0), None, "no run of 30 free units");
    }
}
