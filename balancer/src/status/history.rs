//! A ring of counter samples, so status can show rates (not only lifetime totals) and the
//! status page small charts of the last minutes, without a time-series store. The daemon
//! records its status every `EVERY`; rates are the difference of the last two samples.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::Instant,
};

use super::{Rate, Status, VipStatus};
use crate::config::Protocol;

/// How often the daemon samples.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Samples kept: ten minutes' worth.
pub const KEPT: usize = 120;

/// What identifies a VIP entry (entries sharing an address differ by name) or one of its
/// backends across samples, however the configuration's order changes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Vip(SocketAddr, Protocol, Option<String>),
    Backend(SocketAddr, Protocol, Option<String>, SocketAddr),
}

/// The counters a rate is taken of.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    requests: u64,
    errors: u64,
}

struct Sample {
    at: Instant,
    counts: HashMap<Key, Counts>,
}

/// The samples, oldest first.
#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

fn vip_key(v: &VipStatus) -> Key {
    Key::Vip(v.address, v.protocol, v.name.clone())
}

/// Every VIP's and backend's counters in `status`.
fn counts_of(status: &Status) -> impl Iterator<Item = (Key, Counts)> + '_ {
    status.vips.iter().flat_map(|v| {
        let backends = v.backends.iter().map(move |b| {
            let l7 = b.l7.as_ref();
            let target = l7.map_or(SocketAddr::new(b.address, v.address.port()), |l| l.target);
            let counts = Counts {
                packets: b.packets,
                bytes: b.bytes + l7.map_or(0, |l| l.bytes),
                requests: l7.map_or(0, |l| l.requests),
                errors: l7.map_or(0, |l| l.errors),
            };
            (Key::Backend(v.address, v.protocol, v.name.clone(), target), counts)
        });
        let total = v.backends.iter().filter_map(|b| b.l7.as_ref()).fold(
            Counts { packets: v.packets, bytes: v.bytes, ..Counts::default() },
            |mut c, l| {
                c.requests += l.requests;
                c.errors += l.errors;
                c.bytes += l.bytes;
                c
            },
        );
        std::iter::once((vip_key(v), total)).chain(backends)
    })
}

/// Per-second rates from `a` to `b`, `secs` apart (a counter that went back, after a restart
/// of the data path, counts from zero).
fn rate(a: Counts, b: Counts, secs: f64) -> Rate {
    let per_s = |x: u64, y: u64| (if y >= x { y - x } else { y }) as f64 / secs;
    Rate {
        packets: per_s(a.packets, b.packets),
        bits: 8.0 * per_s(a.bytes, b.bytes),
        requests: per_s(a.requests, b.requests),
        errors: per_s(a.errors, b.errors),
    }
}

impl History {
    /// Records `status`'s counters as of `at`, dropping the oldest beyond `KEPT`.
    pub fn record(&mut self, status: &Status, at: Instant) {
        self.samples.push_back(Sample { at, counts: counts_of(status).collect() });
        while self.samples.len() > KEPT {
            self.samples.pop_front();
        }
    }

    /// Fills in each VIP's and backend's `rate` (over the last interval) and `trend` (its main
    /// rate, requests/s for an L7 VIP and packets/s for an L4 one, per interval, oldest first).
    pub fn fill(&self, status: &mut Status) {
        status.sample_every_s = u32::try_from(EVERY.as_secs()).unwrap_or(u32::MAX);
        let pairs: Vec<(&Sample, &Sample, f64)> = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| (a, b, b.at.duration_since(a.at).as_secs_f64().max(0.001)))
            .collect();
        let series = |key: &Key, l7: bool| -> (Option<Rate>, Vec<f64>) {
            let rates: Vec<Rate> = pairs
                .iter()
                .filter_map(|(a, b, secs)| Some(rate(*a.counts.get(key)?, *b.counts.get(key)?, *secs)))
                .collect();
            let trend = rates.iter().map(|r| if l7 { r.requests } else { r.packets }).collect();
            (rates.last().copied(), trend)
        };
        for v in &mut status.vips {
            let l7 = v.kind.is_l7();
            (v.rate, v.trend) = series(&vip_key(v), l7);
            let (address, protocol, name) = (v.address, v.protocol, v.name.clone());
            for b in &mut v.backends {
                let target = b.l7.as_ref().map_or(SocketAddr::new(b.address, address.port()), |l| l.target);
                (b.rate, b.trend) = series(&Key::Backend(address, protocol, name.clone(), target), l7);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendStatus, Health, VipKind};

    fn status(packets: u64, backend_packets: u64) -> Status {
        let backend = BackendStatus {
            address: "10.0.0.2".parse().unwrap(),
            id: 0,
            weight: 100,
            state: crate::config::BackendState::Active,
            backup: false,
            distance: 0,
            health: Health::Up,
            health_since_s: None,
            last_pass_s: None,
            route: None,
            domain: None,
            slots: 0,
            share: 0.0,
            packets: backend_packets,
            bytes: 100 * backend_packets,
            new_flows: 0,
            flows: None,
            l7: None,
            rate: None,
            trend: Vec::new(),
        };
        let vip = VipStatus {
            address: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            kind: VipKind::L4 { forwarding: crate::config::Forwarding::Dsr, ring_size: 251 },
            name: None,
            takes: None,
            flows: None,
            packets,
            bytes: 0,
            new_flows: 0,
            connections: None,
            backends: vec![backend],
            table_digest: None,
            announced: None,
            rate: None,
            trend: Vec::new(),
        };
        Status { vips: vec![vip], ..Status::empty("/x".into()) }
    }

    #[test]
    fn rates_are_the_last_interval_s_and_the_trend_every_interval_s() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.record(&status(0, 0), t0);
        let mut s = status(0, 0);
        h.fill(&mut s);
        assert!(s.vips[0].rate.is_none() && s.vips[0].trend.is_empty(), "one sample: no rate yet");
        h.record(&status(500, 200), t0 + EVERY);
        h.record(&status(1500, 700), t0 + 2 * EVERY);
        h.fill(&mut s);
        assert_eq!(s.vips[0].trend, [100.0, 200.0]);
        assert!((s.vips[0].rate.unwrap().packets - 200.0).abs() < 1e-9);
        let b = s.vips[0].backends[0].rate.unwrap();
        assert_eq!((b.packets, b.bits), (100.0, 100.0 * 100.0 * 8.0));
        // A counter that went back (the data path was reloaded) counts from zero, not negative.
        h.record(&status(50, 10), t0 + 3 * EVERY);
        h.fill(&mut s);
        assert!((s.vips[0].rate.unwrap().packets - 10.0).abs() < 1e-9);
        for k in 0..2 * KEPT as u32 {
            h.record(&status(0, 0), t0 + (4 + k) * EVERY);
        }
        h.fill(&mut s);
        assert_eq!(s.vips[0].trend.len(), KEPT - 1, "at most KEPT samples");
    }
}
