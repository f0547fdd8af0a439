//! Katran's XDP program beside ours in part 1 (`BENCH_KATRAN_OBJECT=path`), so the comparison
//! the issue tracker quotes can be run again instead of trusted.
//!
//! Nothing of Katran is in this repository: the object is built from Katran's own sources
//! (`katran/lib/bpf/balancer_kern.c`, clang `-O2 -target bpf`) outside it. Two changes there
//! let aya load it: the program's section named `xdp`, and the `lru_mapping` map of maps left
//! out, so Katran takes its fallback LRU (a shared LRU hash: the same lookup as its per-CPU
//! ones, plus one counter). What this module knows of Katran is the layout of its map entries
//! (`balancer_structs.h`), filled for the two IPIP VIPs of part 1's configuration.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap},
    programs::Xdp,
};

/// Katran's ring size (`RING_SIZE`): each VIP's ring is this many slots of `ch_rings`.
const RING_SIZE: u32 = 65537;
/// `F_IPV6` in a real's flags.
const F_IPV6: u8 = 1;
/// The program's name in the object.
const PROGRAM: &str = "balancer_ingress";

/// The VIPs (address, port 80, TCP) and their reals, as in part 1's `CONFIG`.
const VIPS: [(&str, [&str; 2]); 2] =
    [("198.51.100.11", ["198.18.0.21", "198.18.0.22"]), ("2001:db8::11", ["2001:db8::21", "2001:db8::22"])];

/// A loaded Katran object, its maps filled.
pub struct Katran(Ebpf);

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
        let prog: &mut Xdp = k.program_mut(PROGRAM).expect("Katran's balancer_ingress").try_into().unwrap();
        prog.load().expect("the verifier accepts Katran's program");
        Self(k)
    }

    /// The program.
    pub fn program(&self) -> &Xdp {
        self.0.program(PROGRAM).unwrap().try_into().unwrap()
    }
}
