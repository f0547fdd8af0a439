//! Stable ids for VIPs and backends across configuration changes.
//!
//! The flow table stores backend ids and the counters are indexed by id, so an id must keep
//! meaning the same (VIP, backend) for as long as it exists: a reload that renumbered backends
//! would move established connections to other servers. New entries take the next free id after
//! the last one handed out (round-robin), so an id freed by a removed backend is not given to a
//! new one while flows may still point at it.

use std::{collections::HashMap, net::SocketAddr};

use balancer_common::maps::{MAX_BACKENDS, MAX_VIPS};

use crate::config::{Config, Protocol};

/// Identity of a VIP in the configuration.
pub type VipIdentity = (SocketAddr, Protocol);

/// Ids in use, and where the round-robin search for a free one resumes.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    vips: HashMap<VipIdentity, u32>,
    backends: HashMap<(u32, SocketAddr), u32>,
    next_vip: u32,
    next_backend: u32,
}

/// Ids of one configuration: `vips[i]` for `config.vips[i]`, `backends[i][j]` for its j-th
/// backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Per VIP, in config order.
    pub vips: Vec<u32>,
    /// Per VIP, per backend, in config order.
    pub backends: Vec<Vec<u32>>,
}

impl Ids {
    /// The ids found in maps a previous run left pinned, so a restarted daemon keeps them (the
    /// flow table refers to them). Cursors resume after the highest id seen.
    pub fn adopt(
        vips: impl IntoIterator<Item = (VipIdentity, u32)>,
        backends: impl IntoIterator<Item = ((u32, SocketAddr), u32)>,
    ) -> Self {
        let vips: HashMap<_, _> = vips.into_iter().collect();
        let backends: HashMap<_, _> = backends.into_iter().collect();
        let next_vip = vips.values().max().map_or(0, |m| (m + 1) % MAX_VIPS);
        let next_backend = backends.values().max().map_or(0, |m| (m + 1) % MAX_BACKENDS);
        Self { vips, backends, next_vip, next_backend }
    }

    /// Gives every VIP and backend of `config` an id: the one it had, or a new one. Entries no
    /// longer in `config` release theirs.
    ///
    /// # Panics
    /// If `config` has more VIPs or backends than the maps hold; `Config::parse` rejects that.
    pub fn assign(&mut self, config: &Config) -> Assigned {
        let mut vips_now = HashMap::new();
        let mut backends_now = HashMap::new();
        let mut out = Assigned { vips: Vec::new(), backends: Vec::new() };
        // Keep the ids of entries that stay before handing out new ones.
        let keys: Vec<VipIdentity> = config.vips.iter().map(|v| (*v.address.get_ref(), v.protocol)).collect();
        for k in &keys {
            if let Some(&id) = self.vips.get(k) {
                vips_now.insert(*k, id);
            }
        }
        for k in &keys {
            let id = if let Some(&id) = vips_now.get(k) {
                id
            } else {
                let id = next_free(&mut self.next_vip, MAX_VIPS, |i| vips_now.values().any(|&v| v == i));
                vips_now.insert(*k, id);
                id
            };
            out.vips.push(id);
        }
        for (vip, &vid) in config.vips.iter().zip(&out.vips) {
            for b in &vip.backends {
                let key = (vid, b.target(vip.address.get_ref().port()));
                if let Some(&id) = self.backends.get(&key) {
                    backends_now.insert(key, id);
                }
            }
        }
        for (vip, &vid) in config.vips.iter().zip(&out.vips) {
            let mut ids = Vec::new();
            for b in &vip.backends {
                let key = (vid, b.target(vip.address.get_ref().port()));
                let id = if let Some(&id) = backends_now.get(&key) {
                    id
                } else {
                    let id =
                        next_free(&mut self.next_backend, MAX_BACKENDS, |i| backends_now.values().any(|&v| v == i));
                    backends_now.insert(key, id);
                    id
                };
                ids.push(id);
            }
            out.backends.push(ids);
        }
        self.vips = vips_now;
        self.backends = backends_now;
        out
    }
}

fn next_free(cursor: &mut u32, max: u32, used: impl Fn(u32) -> bool) -> u32 {
    for step in 0..max {
        let id = (*cursor + step) % max;
        if !used(id) {
            *cursor = (id + 1) % max;
            return id;
        }
    }
    panic!("no free id below {max}: the config check limits entries to the map size");
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, path::Path};

    use super::*;

    fn config(backends: &[&str]) -> Config {
        let mut t = String::from("interfaces=[\"e\"]\n[[vip]]\naddress=\"10.0.0.1:80\"\n");
        for b in backends {
            writeln!(t, "[[vip.backend]]\naddress=\"{b}\"").unwrap();
        }
        Config::parse(&t, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_backend_keeps_its_id_when_others_come_and_go() {
        let mut ids = Ids::default();
        let a = ids.assign(&config(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]));
        assert_eq!(a.backends[0], [0, 1, 2]);
        // Remove the first, add one in front: the survivors keep 1 and 2.
        let b = ids.assign(&config(&["10.0.0.9", "10.0.0.3", "10.0.0.4"]));
        assert_eq!(b.backends[0][1..], [1, 2]);
        assert_eq!(b.backends[0][0], 3, "a new backend does not take the id just freed");
        assert_eq!(a.vips, b.vips);
    }

    #[test]
    fn adopted_ids_survive_a_reordered_config() {
        let c = config(&["10.0.0.2", "10.0.0.3"]);
        let before = Ids::default().assign(&c);
        let key = (*c.vips[0].address.get_ref(), c.vips[0].protocol);
        let mut ids = Ids::adopt(
            [(key, before.vips[0])],
            [
                ((before.vips[0], "10.0.0.2:80".parse().unwrap()), 0),
                ((before.vips[0], "10.0.0.3:80".parse().unwrap()), 1),
            ],
        );
        let after = ids.assign(&config(&["10.0.0.3", "10.0.0.2", "10.0.0.4"]));
        assert_eq!(after.backends[0], [1, 0, 2]);
    }

    #[test]
    fn the_same_address_under_two_vips_has_two_ids() {
        let t = "interfaces=[\"e\"]\n[[vip]]\naddress=\"10.0.0.1:80\"\n[[vip.backend]]\naddress=\"10.0.0.2\"\n\
                 [[vip]]\naddress=\"10.0.0.1:443\"\n[[vip.backend]]\naddress=\"10.0.0.2\"\n";
        let a = Ids::default().assign(&Config::parse(t, Path::new("t.toml")).unwrap());
        assert_ne!(a.backends[0][0], a.backends[1][0]);
    }
}
