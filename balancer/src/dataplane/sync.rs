//! Writing a `Plan` into the maps, so that no lookup ever sees a half-written table.
//!
//! Order matters: backends first (a ring never points at an unwritten backend), then each VIP's
//! table into the half its `ring_gen` does not point at, then the VIP entry that flips
//! `ring_gen` (one hash-map update, atomic for readers), then removals.

use aya::maps::{Array, HashMap, MapData, MapError};
use balancer_common::{
    backend::{Backend, state},
    maps::{self, MAX_BACKENDS, ring_index},
    vip::{Settings, VipKey, VipMeta},
};
use tracing::{debug, info};

use super::{Dataplane, plan::Plan};

/// A failed map write, naming the map.
#[derive(Debug, thiserror::Error)]
#[error("writing map {map}")]
pub struct SyncError {
    /// The map.
    pub map: &'static str,
    /// The kernel's answer.
    pub source: MapError,
}

fn err(map: &'static str) -> impl FnOnce(MapError) -> SyncError {
    move |source| SyncError { map, source }
}

/// Writes `plan`, replacing whatever the maps held before.
///
/// # Errors
/// The first failed write. Earlier writes stay; the VIP whose write failed keeps its old table.
pub fn apply(dp: &mut Dataplane, plan: &Plan) -> Result<(), SyncError> {
    let ebpf = dp.ebpf_mut();
    let [vips, rings, backends, settings] =
        ebpf.maps_disjoint_mut([maps::VIPS, maps::RINGS, maps::BACKENDS, maps::SETTINGS]).map(|m| m.expect("checked at load"));
    let mut settings: Array<&mut MapData, Settings> = Array::try_from(settings).map_err(err(maps::SETTINGS))?;
    settings.set(0, plan.settings, 0).map_err(err(maps::SETTINGS))?;
    let mut vips: HashMap<&mut MapData, VipKey, VipMeta> = HashMap::try_from(vips).map_err(err(maps::VIPS))?;
    let mut rings: Array<&mut MapData, u32> = Array::try_from(rings).map_err(err(maps::RINGS))?;
    let mut backends: Array<&mut MapData, Backend> = Array::try_from(backends).map_err(err(maps::BACKENDS))?;

    let mut used = vec![false; MAX_BACKENDS as usize];
    for (id, b) in &plan.backends {
        backends.set(*id, b, 0).map_err(err(maps::BACKENDS))?;
        used[*id as usize] = true;
    }
    for vip in &plan.vips {
        let old_gen = vips.get(&vip.key, 0).map(|m| m.ring_gen).ok();
        let ring_gen = old_gen.map_or(0, |g| g ^ 1);
        for (slot, id) in vip.ring.iter().enumerate() {
            rings.set(ring_index(vip.meta.id, ring_gen, slot as u32), id, 0).map_err(err(maps::RINGS))?;
        }
        let meta = VipMeta { ring_gen, ..vip.meta };
        vips.insert(vip.key, meta, 0).map_err(err(maps::VIPS))?;
        info!(vip = vip.meta.id, slots = vip.ring.len(), ring_gen, "vip table live");
    }
    let stale: Vec<VipKey> = vips.keys().filter_map(Result::ok).filter(|k| !plan.vips.iter().any(|v| v.key == *k)).collect();
    for k in stale {
        vips.remove(&k).map_err(err(maps::VIPS))?;
        debug!(?k, "vip removed");
    }
    // Clear backend slots left by an earlier run, so their flows are re-steered.
    for id in 0..MAX_BACKENDS {
        if !used[id as usize] && backends.get(&id, 0).map_err(err(maps::BACKENDS))?.state != state::EMPTY {
            backends.set(id, Backend::EMPTY, 0).map_err(err(maps::BACKENDS))?;
        }
    }
    Ok(())
}
