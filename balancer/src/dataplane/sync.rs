//! Writing a `Plan` into the maps, so that no lookup ever sees a half-written table.
//!
//! Order matters:
//! 1. backends that become more available (new, or active again), so a ring never points at an
//!    unwritten or unusable backend;
//! 2. each VIP's table into the half of its ring region that is not live (`ring_regions`; a new
//!    region when its size changed), then the VIP entry that points `ring_base` at it and flips
//!    `ring_gen` (one hash-map update, atomic for readers);
//! 3. backends that become less available (drain, stopped), now that no live table sends new
//!    flows to them: written earlier, the old table would still pick them and the data path
//!    would drop those packets;
//! 4. removals: VIPs, then backend slots no longer used.
//!
//! In step 2 each VIP's `VIP_SLOTS` entry for its new generation is written with its `VIPS`
//! entry, and `VIP_INDEX` is repointed at them all at once before step 3: until then, readers
//! that go through the index keep the other entry, and with it the previous table, which stays
//! whole. VIPs removed in step 4 are already gone from the index.

use aya::maps::{
    Array, HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use balancer_common::{
    backend::{Backend, state},
    maps::{self, MAX_BACKENDS, MAX_VIPS},
    vip::{EchoKey, LocalMacs, Settings, SourceKey, VipEntry, VipIndex, VipKey, VipMeta},
};
use std::sync::atomic::Ordering;

use tracing::debug;

use super::{
    Dataplane,
    ids::Ids,
    plan::{self, Plan},
    ring_regions::{Region, Regions},
};

/// Why a plan could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A map write failed.
    #[error("writing map {map}")]
    Write {
        /// The map.
        map: &'static str,
        /// The kernel's answer.
        source: MapError,
    },
    /// No run of free ring units is long enough for a VIP's tables (a larger `ring_size` while
    /// other VIPs hold the units around its own).
    #[error(
        "VIP {vip}'s Maglev tables need {units} consecutive ring units and no run that long is free \
         ({free} of {MAX_VIPS} free): make other VIPs' ring_size smaller, or remove the VIP and add it again"
    )]
    RingMemory {
        /// The VIP.
        vip: String,
        /// Units it needs.
        units: u32,
        /// Units free in all.
        free: u32,
    },
}

fn err(map: &'static str) -> impl FnOnce(MapError) -> SyncError {
    move |source| SyncError::Write { map, source }
}

/// What one `apply` did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    /// Per VIP id: slots that now name another backend than in the previous live table
    /// (`None` for a VIP without one).
    pub moved: Vec<(u32, Option<usize>)>,
}

/// Writes `plan`, replacing whatever the maps held before.
///
/// # Errors
/// The first failed write. Earlier writes stay; the VIP whose write failed keeps its old table.
///
/// `previous` is the plan the last successful `apply` wrote, when the caller knows the maps
/// still hold it: then only backend entries that changed are written and only ids that left are
/// cleared. Without it (at start, or after a failed write) the backend array is read back
/// instead, one syscall per slot.
pub fn apply(dp: &mut Dataplane, plan: &Plan, previous: Option<&Plan>) -> Result<Report, SyncError> {
    let mut report = Report::default();
    let flow_secret = dp.flow_secret();
    let (ebpf, memory) = dp.maps_and_rings();
    let [vips, backends, settings, index, entries, sources, echo, local_macs] = ebpf
        .maps_disjoint_mut([
            maps::VIPS,
            maps::BACKENDS,
            maps::SETTINGS,
            maps::VIP_INDEX,
            maps::VIP_SLOTS,
            maps::SOURCES,
            maps::ECHO_ADDRS,
            maps::LOCAL_MACS,
        ])
        .map(|m| m.expect("checked at load"));
    write_echo(echo, &plan.echo)?;
    Array::<&mut MapData, LocalMacs>::try_from(local_macs)
        .and_then(|mut m| m.set(0, plan.local_macs, 0))
        .map_err(err(maps::LOCAL_MACS))?;
    // Source prefixes go in before a VIP's filter flag turns on (below), and leave after it is
    // off (at the end): a reader never sees the flag without its prefixes.
    let mut sources: LpmTrie<&mut MapData, SourceKey, u8> = LpmTrie::try_from(sources).map_err(err(maps::SOURCES))?;
    let wanted: Vec<Key<SourceKey>> =
        plan.vips.iter().flat_map(|v| v.sources.iter().map(|(len, k)| Key::new(*len, *k))).collect();
    for k in &wanted {
        sources.insert(k, 1, 0).map_err(err(maps::SOURCES))?;
    }
    Array::<&mut MapData, Settings>::try_from(settings)
        .and_then(|mut s| s.set(0, Settings { flow_secret, ..plan.settings }, 0))
        .map_err(err(maps::SETTINGS))?;
    let mut index_map: Array<&mut MapData, VipIndex> = Array::try_from(index).map_err(err(maps::VIP_INDEX))?;
    let mut entries: Array<&mut MapData, VipEntry> = Array::try_from(entries).map_err(err(maps::VIP_SLOTS))?;
    let mut index = VipIndex::EMPTY;
    let mut vips: HashMap<&mut MapData, VipKey, VipMeta> = HashMap::try_from(vips).map_err(err(maps::VIPS))?;
    let mut backends: Array<&mut MapData, Backend> = Array::try_from(backends).map_err(err(maps::BACKENDS))?;

    let known: Option<std::collections::HashMap<u32, Backend>> = previous.map(|p| p.backends.iter().copied().collect());
    let mut used = vec![false; MAX_BACKENDS as usize];
    let mut later = Vec::new();
    for (id, b) in &plan.backends {
        used[*id as usize] = true;
        let old = match &known {
            Some(k) => k.get(id).copied().unwrap_or(Backend::EMPTY),
            None => backends.get(id, 0).map_err(err(maps::BACKENDS))?,
        };
        if known.is_some() && old == *b {
            continue;
        }
        let same = old.vip == b.vip && old.addr == b.addr && old.family == b.family;
        if same && less_available(old.state, b.state) {
            later.push((*id, *b));
        } else {
            backends.set(*id, b, 0).map_err(err(maps::BACKENDS))?;
        }
    }
    // Every region the maps hold is taken, those of VIPs about to leave included: their live
    // tables are read until step 4 removes them.
    let mut regions = Regions::new(vips.iter().filter_map(Result::ok).filter_map(|(_, m)| Region::of(&m)));
    for vip in &plan.vips {
        let old = vips.get(&vip.key, 0).ok().filter(|m| m.id == vip.meta.id);
        let (meta, moved) = stage_table(vip, old, &mut regions, memory)?;
        let ring_gen = meta.ring_gen;
        // The map update below is a syscall, which orders the table's stores before the flip.
        let entry = VipEntry::slot_of(vip.meta.id, ring_gen);
        entries.set(entry, VipEntry { key: vip.key, meta }, 0).map_err(err(maps::VIP_SLOTS))?;
        vips.insert(vip.key, meta, 0).map_err(err(maps::VIPS))?;
        index.insert(&vip.key, entry);
        report.moved.push((vip.meta.id, moved));
        debug!(vip = vip.meta.id, slots = vip.ring.len(), ring_gen, "vip table live");
    }
    index_map.set(0, index, 0).map_err(err(maps::VIP_INDEX))?;
    for (id, b) in later {
        backends.set(id, b, 0).map_err(err(maps::BACKENDS))?;
    }
    let stale: Vec<VipKey> =
        vips.keys().filter_map(Result::ok).filter(|k| !plan.vips.iter().any(|v| v.key == *k)).collect();
    for k in stale {
        vips.remove(&k).map_err(err(maps::VIPS))?;
        debug!(?k, "vip removed");
    }
    let held: Vec<Key<SourceKey>> = sources.keys().filter_map(Result::ok).collect();
    for k in held.iter().filter(|k| !wanted.iter().any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())) {
        sources.remove(k).map_err(err(maps::SOURCES))?;
    }
    // Clear the slots of backends that left (or, state unknown, any left by an earlier run), so
    // their flows are re-steered.
    match &known {
        Some(k) => {
            for &id in k.keys().filter(|&&id| !used[id as usize]) {
                backends.set(id, Backend::EMPTY, 0).map_err(err(maps::BACKENDS))?;
            }
        }
        None => {
            for id in 0..MAX_BACKENDS {
                if !used[id as usize] && backends.get(&id, 0).map_err(err(maps::BACKENDS))?.state != state::EMPTY {
                    backends.set(id, Backend::EMPTY, 0).map_err(err(maps::BACKENDS))?;
                }
            }
        }
    }
    Ok(report)
}

/// Step 2's first half for one VIP: writes its new table into the half of its ring region that
/// `old` (its entry in the maps, if any) does not use, claiming a region when it has none of
/// the right size; returns the entry that makes the table live, and how many slots now name
/// another backend than the live table did.
fn stage_table(
    vip: &plan::VipPlan,
    old: Option<VipMeta>,
    regions: &mut Regions,
    memory: &super::ring_memory::RingMemory,
) -> Result<(VipMeta, Option<usize>), SyncError> {
    let ring_gen = old.map_or(0, |m| m.ring_gen ^ 1);
    let units = u32::from(vip.meta.ring_units);
    let region = match old.and_then(|m| Region::of(&m)).filter(|r| r.units == units) {
        Some(r) => Some(r),
        None if units == 0 => None,
        None => Some(regions.claim(units, vip.meta.id).ok_or_else(|| SyncError::RingMemory {
            vip: plan::vip_identity(&vip.key).map_or_else(|| format!("id {}", vip.meta.id), |(a, _)| a.to_string()),
            units,
            free: regions.free(),
        })?),
    };
    let ring_base = region.map_or(0, |r| r.half(ring_gen));
    let moved = old.filter(|m| m.ring_units > 0 && m.ring_size as usize == vip.ring.len()).map(|m| {
        let live = memory.slots(m.ring_base, vip.ring.len());
        vip.ring.iter().zip(live).filter(|(new, cur)| u64::from(**new) != cur.load(Ordering::Relaxed)).count()
    });
    if region.is_some() {
        for (slot, id) in memory.slots(ring_base, vip.ring.len()).iter().zip(&vip.ring) {
            slot.store(u64::from(*id), Ordering::Relaxed);
        }
    }
    Ok((VipMeta { ring_base, ring_gen, ..vip.meta }, moved))
}

/// Makes `ECHO_ADDRS` hold exactly `wanted`.
fn write_echo(map: &mut aya::maps::Map, wanted: &[EchoKey]) -> Result<(), SyncError> {
    let mut echo: HashMap<&mut MapData, EchoKey, u8> = HashMap::try_from(map).map_err(err(maps::ECHO_ADDRS))?;
    for k in wanted {
        echo.insert(k, 1, 0).map_err(err(maps::ECHO_ADDRS))?;
    }
    let stale: Vec<EchoKey> = echo.keys().filter_map(Result::ok).filter(|k| !wanted.contains(k)).collect();
    for k in stale {
        echo.remove(&k).map_err(err(maps::ECHO_ADDRS))?;
    }
    Ok(())
}

/// Writes only `SETTINGS` (for `balancer decap attach`, whose program reads the IPIP source
/// prefixes and nothing else).
///
/// # Errors
/// When the write fails.
pub fn write_settings(dp: &mut Dataplane, settings: Settings) -> Result<(), SyncError> {
    let map = dp.ebpf_mut().map_mut(maps::SETTINGS).expect("checked at load");
    Array::<&mut MapData, Settings>::try_from(map).and_then(|mut s| s.set(0, settings, 0)).map_err(err(maps::SETTINGS))
}

/// Whether going from `old` to `new` takes traffic away: active → drain/stopped, drain → stopped.
fn less_available(old: u8, new: u8) -> bool {
    (old == state::ACTIVE && new != state::ACTIVE) || (old == state::DRAIN && new == state::STOPPED)
}

/// The VIP and backend ids held in the maps, for a daemon that re-adopts maps pinned by an
/// earlier run.
///
/// # Errors
/// When a map cannot be read.
pub fn read_ids(dp: &Dataplane) -> Result<Ids, SyncError> {
    let ebpf = dp.ebpf();
    let vips: HashMap<&MapData, VipKey, VipMeta> =
        HashMap::try_from(ebpf.map(maps::VIPS).expect("checked at load")).map_err(err(maps::VIPS))?;
    let backends: Array<&MapData, Backend> =
        Array::try_from(ebpf.map(maps::BACKENDS).expect("checked at load")).map_err(err(maps::BACKENDS))?;
    let mut v = Vec::new();
    let mut port_of = std::collections::HashMap::new();
    for entry in &vips {
        let (k, m) = entry.map_err(err(maps::VIPS))?;
        if let Some(identity) = plan::vip_identity(&k) {
            port_of.insert(m.id, identity.0.port());
            v.push((identity, m.id));
        }
    }
    // L4 backends listen on their VIP's port (the data path cannot change it).
    let mut b = Vec::new();
    for id in 0..MAX_BACKENDS {
        let e = backends.get(&id, 0).map_err(err(maps::BACKENDS))?;
        if let (true, Some(&port)) = (e.state != state::EMPTY, port_of.get(&u32::from(e.vip))) {
            b.push(((u32::from(e.vip), std::net::SocketAddr::new(plan::ip_of(&e.addr, e.family), port)), id));
        }
    }
    Ok(Ids::adopt(v, b))
}
