//! Katran's XDP program beside ours in part 1 (`BENCH_KATRAN_OBJECT=path`), so the comparison
//! the issue tracker quotes can be run again instead of trusted.
//!
//! Nothing of Katran is in this repository: the object is built from Katran's own sources
//! (`katran/lib/bpf/balancer_kern.c`, clang `-O2 -target bpf`) outside it, with the program's
//! section named `xdp` so aya loads it. What this module knows of Katran is the layout of its
//! map entries (`balancer_structs.h`), filled for the two IPIP VIPs of part 1's configuration.
//!
//! Katran's flows live in one LRU hash per CPU, reached through the map of maps `lru_mapping`
//! that Katran's own loader fills at run time. For aya to create that map, its definition in
//! `balancer_maps.h` needs the inner map declared (`__array(values, struct { LRU_HASH,
//! flow_key → real_pos_lru })`, with `-D'__array(name,val)=typeof(val) *name[]'` on the
//! command line, as Katran's headers do not define the macro). Such an object runs Katran's
//! production path: here one LRU per CPU, together as many flows as our table holds
//! (`MAX_FLOWS`, or `BENCH_KATRAN_LRU` flows: Katran's own default `LruSize` is 8,000,000), as
//! Katran splits its `LruSize` over the forwarding cores. An object built
//! with `lru_mapping` left out runs Katran's fallback LRU instead (one shared 1000-entry LRU
//! hash, small enough to stay in cache, which flatters Katran's new-flow cost); `load` says
//! which one it got.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, MapData},
    programs::Xdp,
    util::nr_cpus,
};
use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH;
use balancer_common::maps::MAX_FLOWS;

/// Katran's ring size (`RING_SIZE`): each VIP's ring is this many slots of `ch_rings`.
const RING_SIZE: u32 = 65537;
/// `F_IPV6` in a real's flags.
const F_IPV6: u8 = 1;
/// The program's name in the object.
const PROGRAM: &str = "balancer_ingress";

/// The VIPs (address, port 80, TCP) and their reals, as in part 1's `CONFIG`.
const VIPS: [(&str, [&str; 2]); 2] =
    [("198.51.100.11", ["198.18.0.21", "198.18.0.22"]), ("2001:db8::11", ["2001:db8::21", "2001:db8::22"])];

/// `sizeof(struct flow_key)` (two 16-byte addresses, ports, protocol, padded to 4 bytes).
const FLOW_KEY_SIZE: u32 = 40;
/// `sizeof(struct real_pos_lru)` (a real's index and an access time).
const REAL_POS_LRU_SIZE: u32 = 16;

/// A loaded Katran object, its maps filled, and the per-CPU LRUs `lru_mapping` holds (empty for
/// an object without it).
pub struct Katran(Ebpf, Vec<MapData>);

/// An address in Katran's 16-byte union (IPv4 in the first four bytes).
fn addr16(a: &str) -> [u8; 16] {
    let mut o = [0u8; 16];
    match a.parse().expect("an address") {
        std::net::IpAddr::V4(v) => o[..4].copy_from_slice(&v.octets()),
        std::net::IpAddr::V6(v) => o.copy_from_slice(&v.octets()),
    }
    o
}

impl Katran {
    /// Loads the object at `path`, fills its maps and verifies the program.
    ///
    /// # Panics
    /// When the object does not load or a map is not Katran's.
    pub fn load(path: &Path) -> Self {
        let mut k = EbpfLoader::new().load_file(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        let map =
            |k: &mut Ebpf, name: &str| k.take_map(name).unwrap_or_else(|| panic!("Katran's object has no {name}"));
        // `ctl_array[0]`: the MAC packets leave for (`struct ctl_value`).
        let mut ctl: Array<_, [u8; 8]> = Array::try_from(map(&mut k, "ctl_array")).unwrap();
        ctl.set(0, [2, 0, 0, 0, 0, 0xfe, 0, 0], 0).unwrap();
        let mut reals: Array<_, [u8; 20]> = Array::try_from(map(&mut k, "reals")).unwrap();
        let mut vips: HashMap<_, [u8; 20], [u8; 8]> = HashMap::try_from(map(&mut k, "vip_map")).unwrap();
        let mut rings: Array<_, u32> = Array::try_from(map(&mut k, "ch_rings")).unwrap();
        for (num, (vip, backends)) in (0u32..).zip(VIPS) {
            // `struct vip_definition`: address, port (network order), protocol; `vip_meta`:
            // flags, then the VIP's number.
            let mut key = [0u8; 20];
            key[..16].copy_from_slice(&addr16(vip));
            key[16..18].copy_from_slice(&80u16.to_be_bytes());
            key[18] = 6;
            let mut meta = [0u8; 8];
            meta[4..].copy_from_slice(&num.to_ne_bytes());
            vips.insert(key, meta, 0).unwrap();
            // `struct real_definition`: address and flags; real 0 stays unused.
            let first = 1 + 2 * num;
            for (i, b) in (first..).zip(backends) {
                let mut r = [0u8; 20];
                r[..16].copy_from_slice(&addr16(b));
                r[16] = if vip.contains(':') { F_IPV6 } else { 0 };
                reals.set(i, r, 0).unwrap();
            }
            for slot in 0..RING_SIZE {
                rings.set(num * RING_SIZE + slot, first + slot % 2, 0).unwrap();
            }
        }
        let lrus = per_cpu_lrus(&mut k);
        let prog: &mut Xdp = k.program_mut(PROGRAM).expect("Katran's balancer_ingress").try_into().unwrap();
        prog.load().expect("the verifier accepts Katran's program");
        Self(k, lrus)
    }

    /// Which of Katran's flow tables the program uses, for the report.
    pub fn lru(&self) -> String {
        if self.1.is_empty() {
            "its fallback LRU (one shared 1000-entry LRU hash: `lru_mapping` was left out of this build)".into()
        } else {
            format!("its per-CPU LRUs ({} of {} flows each)", self.1.len(), lru_size() / self.1.len() as u32)
        }
    }

    /// The program.
    pub fn program(&self) -> &Xdp {
        self.0.program(PROGRAM).unwrap().try_into().unwrap()
    }
}

/// Flows Katran's LRUs hold together: `BENCH_KATRAN_LRU`, else as many as our flow table.
fn lru_size() -> u32 {
    std::env::var("BENCH_KATRAN_LRU").ok().and_then(|v| v.parse().ok()).unwrap_or(MAX_FLOWS)
}

/// One LRU hash per possible CPU in `lru_mapping`, if the object has it, together `lru_size()`
/// flows; the maps are returned so they outlive the bench.
fn per_cpu_lrus(k: &mut Ebpf) -> Vec<MapData> {
    // Borrowed, not taken: the program is loaded after this, and must find the map still open.
    let Some(outer) = k.map_mut("lru_mapping") else { return Vec::new() };
    let mut outer: ArrayOfMaps<&mut MapData, MapData> =
        ArrayOfMaps::try_from(outer).expect("lru_mapping is a map of maps");
    let cpus = nr_cpus().expect("the number of possible CPUs") as u32;
    (0..cpus)
        .map(|cpu| {
            let def = aya_obj::Map::new_from_params(
                BPF_MAP_TYPE_LRU_HASH as u32,
                FLOW_KEY_SIZE,
                REAL_POS_LRU_SIZE,
                lru_size() / cpus,
                0,
            );
            let lru = MapData::create(def, "katran_lru", None).expect("creating a per-CPU LRU");
            outer.set(cpu, &lru, 0).expect("an LRU into lru_mapping");
            lru
        })
        .collect()
}
