//! Reading the data path's per-CPU counters, summed over CPUs, from a loaded object or from the
//! maps a running daemon pinned.

use std::{net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use balancer_common::{
    backend::{Backend, state},
    counters::{IcmpEvent, Reason, Traffic},
    maps,
    vip::{VipKey, VipMeta},
};
use serde::Serialize;

use super::plan::ip_of;

/// Counters of one VIP.
#[derive(Debug, Serialize)]
pub struct VipStats {
    /// VIP id.
    pub id: u32,
    /// `address:port`.
    pub vip: String,
    /// `tcp` or `udp`.
    pub protocol: crate::config::Protocol,
    /// Its traffic.
    #[serde(flatten)]
    pub traffic: TrafficView,
    /// Its flow-table events.
    pub flows: FlowEventsView,
}

/// A VIP's flow-table events (its `Traffic`'s), serialisable: what tells the flow table is failing it.
#[derive(Debug, Default, Serialize, serde::Deserialize, Clone, Copy, PartialEq, Eq)]
pub struct FlowEventsView {
    /// TCP packets past their SYN that the flow table did not hold.
    pub misses: u64,
    /// Flows pinned.
    pub inserts: u64,
    /// Pins that took another flow's slot.
    pub evictions: u64,
    /// New flows not pinned: the CPU was over `flow_insert_limit`.
    pub guarded: u64,
}

/// Counters of one backend.
#[derive(Debug, Serialize)]
pub struct BackendStats {
    /// Backend id.
    pub id: u32,
    /// Its address.
    pub address: IpAddr,
    /// `active`, `drain` or `stopped`.
    pub state: &'static str,
    /// Its traffic.
    #[serde(flatten)]
    pub traffic: TrafficView,
}

/// `Traffic`, serialisable.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct TrafficView {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
}

/// All counters at one moment.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Per VIP.
    pub vips: Vec<VipStats>,
    /// Per backend in use.
    pub backends: Vec<BackendStats>,
    /// Packets not balanced, by reason (a JSON object, reason → count).
    #[serde(serialize_with = "counts")]
    pub not_balanced: Vec<(&'static str, u64)>,
    /// ICMP the data path relayed or sent, by `IcmpEvent` (a JSON object, event → count).
    #[serde(serialize_with = "counts")]
    pub icmp: Vec<(&'static str, u64)>,
}

/// Named counts as one JSON object (`{"no_vip": 3, …}`, in their order), which a script reads
/// by name, rather than as a list of pairs it must search.
///
/// # Errors
/// The serializer's.
pub fn counts<K: AsRef<str>, S: serde::Serializer>(list: &[(K, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(list.len()))?;
    for (k, n) in list {
        map.serialize_entry(k.as_ref(), n)?;
    }
    map.end()
}

/// The other way, for what `counts` wrote.
///
/// # Errors
/// When the value is not an object of counts.
pub fn counts_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, u64)>, D::Error> {
    struct Counts;
    impl<'de> serde::de::Visitor<'de> for Counts {
        type Value = Vec<(String, u64)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of counts")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, n)) = m.next_entry::<String, u64>()? {
                out.push((k, n));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Counts)
}

/// A counter map that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading map {map}")]
pub struct StatsError {
    /// The map (or pin path).
    pub map: String,
    /// Why.
    pub source: MapError,
}

impl Snapshot {
    /// Reads the maps pinned under `dir` by a running daemon.
    ///
    /// # Errors
    /// When a map is not pinned there or cannot be read.
    pub fn from_pins(dir: &Path) -> Result<Self, StatsError> {
        let open = |name: &str| {
            let p = dir.join(name);
            MapData::from_pin(&p)
                .and_then(Map::from_map_data)
                .map_err(|source| StatsError { map: p.display().to_string(), source })
        };
        Self::collect(|n| open(n))
    }

    /// Reads the maps of a loaded object.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn from_ebpf(ebpf: &aya::Ebpf) -> Result<Self, StatsError> {
        Self::collect(|n| {
            let data = ebpf.map(n).expect("checked at load");
            // Re-open by id so the snapshot owns its handles.
            let info = match data {
                Map::HashMap(m) | Map::Array(m) | Map::PerCpuArray(m) => m.info(),
                _ => unreachable!("counter and table maps are hash, array or per-CPU arrays"),
            };
            info.and_then(|i| MapData::from_id(i.id()))
                .and_then(Map::from_map_data)
                .map_err(|source| StatsError { map: n.to_owned(), source })
        })
    }

    fn collect(mut open: impl FnMut(&str) -> Result<Map, StatsError>) -> Result<Self, StatsError> {
        let e = |map: &str| {
            let map = map.to_owned();
            move |source| StatsError { map, source }
        };
        let vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(open(maps::VIPS)?).map_err(e(maps::VIPS))?;
        let backends: Array<MapData, Backend> = Array::try_from(open(maps::BACKENDS)?).map_err(e(maps::BACKENDS))?;
        let vip_stats: PerCpuArray<MapData, Traffic> =
            PerCpuArray::try_from(open(maps::VIP_STATS)?).map_err(e(maps::VIP_STATS))?;
        let backend_stats: PerCpuArray<MapData, Traffic> =
            PerCpuArray::try_from(open(maps::BACKEND_STATS)?).map_err(e(maps::BACKEND_STATS))?;
        let reasons: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(open(maps::REASONS)?).map_err(e(maps::REASONS))?;

        let total = |a: &PerCpuArray<MapData, Traffic>, i: u32, name: &str| -> Result<Traffic, StatsError> {
            let mut t = Traffic::default();
            for c in a.get(&i, 0).map_err(e(name))?.iter() {
                t.add(c);
            }
            Ok(t)
        };
        let sum = |a: &PerCpuArray<MapData, Traffic>, i: u32, name: &str| -> Result<TrafficView, StatsError> {
            let t = total(a, i, name)?;
            Ok(TrafficView { packets: t.packets, bytes: t.bytes, new_flows: t.new_flows })
        };
        let flows_of = |i: u32| -> Result<FlowEventsView, StatsError> {
            let t = total(&vip_stats, i, maps::VIP_STATS)?;
            Ok(FlowEventsView { misses: t.misses, inserts: t.inserts, evictions: t.evictions, guarded: t.guarded })
        };
        let icmp: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(open(maps::ICMP_STATS)?).map_err(e(maps::ICMP_STATS))?;
        let mut out = Snapshot { vips: Vec::new(), backends: Vec::new(), not_balanced: Vec::new(), icmp: Vec::new() };
        let mut listed: Vec<(VipKey, VipMeta)> = vips.iter().filter_map(Result::ok).collect();
        listed.sort_by_key(|(_, m)| m.id);
        for (k, m) in listed {
            let ip = ip_of(&k.addr, k.family);
            let vip = std::net::SocketAddr::new(ip, u16::from_be(k.port_be)).to_string();
            let Some(protocol) = crate::config::Protocol::from_wire(k.proto) else { continue };
            out.vips.push(VipStats {
                id: m.id,
                vip,
                protocol,
                traffic: sum(&vip_stats, m.id, maps::VIP_STATS)?,
                flows: flows_of(m.id)?,
            });
        }
        for id in 0..backends.len() {
            let b = backends.get(&id, 0).map_err(e(maps::BACKENDS))?;
            let st = match b.state {
                state::ACTIVE => "active",
                state::DRAIN => "drain",
                state::STOPPED => "stopped",
                _ => continue,
            };
            out.backends.push(BackendStats {
                id,
                address: ip_of(&b.addr, b.family),
                state: st,
                traffic: sum(&backend_stats, id, maps::BACKEND_STATS)?,
            });
        }
        for r in Reason::ALL {
            let n: u64 = reasons.get(&(r as u32), 0).map_err(e(maps::REASONS))?.iter().sum();
            out.not_balanced.push((r.name(), n));
        }
        for ev in IcmpEvent::ALL {
            let n: u64 = icmp.get(&(ev as u32), 0).map_err(e(maps::ICMP_STATS))?.iter().sum();
            out.icmp.push((ev.name(), n));
        }
        Ok(out)
    }
}

/// Flow-table entries per backend id, read from the maps pinned in `dir`. Reads the whole table
/// (`MAX_FLOWS` slots, 8 MiB) through an mmap, a few milliseconds.
///
/// # Errors
/// When the map is not pinned there or cannot be mapped.
pub fn flow_counts(dir: &Path) -> Result<std::collections::HashMap<u32, u64>, StatsError> {
    let p = dir.join(maps::FLOWS);
    let e = |source| StatsError { map: p.display().to_string(), source };
    let map = MapData::from_pin(&p).map_err(e)?;
    let table = super::flow_memory::FlowMemory::map(&map)
        .map_err(|io_error| e(MapError::SyscallError(aya::sys::SyscallError { call: "mmap", io_error })))?;
    let mut counts = std::collections::HashMap::new();
    for set in table.sets() {
        for id in set.backends() {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts)
}
