//! Which backend serves a request: the session's own when it can, else a failover target in a
//! fixed order, else a new choice by the VIP's `lbmethod`.
//!
//! A backend can keep a session when it is `active` or `drain`, passes its health check, is not
//! inside its `retry` window after a failed connection, and is under its `max`. It can take a
//! new session only when `active` with weight, in the group that new sessions go to: the
//! non-backup backends with the lowest distance among those available, or, when none is, the
//! backups with the lowest distance.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
};

use crate::config::{BackendState, LbMethod};

/// Counter shards per backend: one per L7 worker (workers beyond share), and one for every
/// other thread. A request's counters are written on its worker's own cache line, so workers
/// never contend for them; readers add the shards up.
const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard: set by the L7 workers, the last one elsewhere.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(SHARDS - 1) };
}

/// Makes this thread L7 worker `i` for the counters it writes.
pub fn set_worker(i: usize) {
    SHARD.set(i % (SHARDS - 1));
}

fn shard() -> usize {
    SHARD.get()
}

/// One worker's counters of one backend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Requests in flight (signed: a request may end on another thread than it began).
    pub inflight: AtomicI64,
    /// Bytes transferred (both ways), for `bytraffic`.
    pub bytes: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Failed connections and broken responses.
    pub errors: AtomicU64,
    /// Sessions assigned to it (new ones and those moved to it by failover).
    pub sessions: AtomicU64,
    /// Sum of response times (to the response headers), microseconds.
    pub latency_us: AtomicU64,
    /// Response times by `LATENCY_BOUNDS_MS` bucket (each counted once, in the first bucket
    /// that holds it; the last counts those above every bound).
    pub latency_buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    /// Responses the client got for requests sent to it, by class (1xx to 5xx; a 502 or 504
    /// the proxy answered for it counts as 5xx).
    pub classes: [AtomicU64; 5],
    /// Requests that failed on it and went to another backend.
    pub retries: AtomicU64,
    /// Requests of sessions held by another backend that could not take them (failover).
    pub failovers: AtomicU64,
}

/// Upper bounds of the response-time histogram, ms (Prometheus' default buckets, from 1 ms).
pub const LATENCY_BOUNDS_MS: [f64; 13] =
    [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

impl Counters {
    /// A response head arrived (or the wait ended) `took` after the request was sent.
    pub fn answered(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.fetch_add(us, Relaxed);
        let ms = us as f64 / 1000.0;
        let bucket = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
    }

    /// The client got a response with `status` for a request sent to this backend.
    pub fn responded(&self, status: u16) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.classes[usize::from(class)].fetch_add(1, Relaxed);
        }
    }
}

/// Counters of one backend that outlive configuration changes.
#[derive(Debug, Default)]
pub struct Live {
    shards: [Counters; SHARDS],
    /// Left out of selection until this time (Unix ms) after a failure; 0 when not.
    pub failed_until_ms: AtomicU64,
    /// When the last failure happened (Unix ms).
    pub failed_at_ms: AtomicU64,
}

impl Live {
    /// This thread's counters, to write.
    pub fn here(&self) -> &Counters {
        &self.shards[shard()]
    }

    fn sum(&self, field: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| field(s).load(Relaxed)).sum()
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u32 {
        let n: i64 = self.shards.iter().map(|s| s.inflight.load(Relaxed)).sum();
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }

    /// Bytes transferred.
    pub fn bytes(&self) -> u64 {
        self.sum(|s| &s.bytes)
    }

    /// Requests sent.
    pub fn requests(&self) -> u64 {
        self.sum(|s| &s.requests)
    }

    /// Failed connections and broken responses.
    pub fn errors(&self) -> u64 {
        self.sum(|s| &s.errors)
    }

    /// Sessions assigned.
    pub fn sessions(&self) -> u64 {
        self.sum(|s| &s.sessions)
    }

    /// Sum of response times, µs.
    pub fn latency_us(&self) -> u64 {
        self.sum(|s| &s.latency_us)
    }

    /// Response times per `LATENCY_BOUNDS_MS` bucket (not cumulative; the last is above all).
    pub fn latency_buckets(&self) -> [u64; LATENCY_BOUNDS_MS.len() + 1] {
        std::array::from_fn(|k| self.sum(|s| &s.latency_buckets[k]))
    }

    /// Responses by class, 1xx to 5xx.
    pub fn classes(&self) -> [u64; 5] {
        std::array::from_fn(|k| self.sum(|s| &s.classes[k]))
    }

    /// Requests retried on another backend after failing on this one.
    pub fn retries(&self) -> u64 {
        self.sum(|s| &s.retries)
    }

    /// Requests it took over from the backend holding their session.
    pub fn failovers(&self) -> u64 {
        self.sum(|s| &s.failovers)
    }

    /// A passive failure at `now_ms` (refused, reset, timed out by the backend): left out of
    /// selection for `retry_ms`, or until an active check passes.
    pub fn fail(&self, now_ms: u64, retry_ms: u64) {
        self.failed_at_ms.store(now_ms, Relaxed);
        self.failed_until_ms.store(now_ms + retry_ms, Relaxed);
    }

    /// Whether it is inside a retry window that no passing active check (`last_pass_ms`, Unix
    /// ms) has ended since: a check that passes after the failure proves the backend is back.
    pub fn retrying(&self, now_ms: u64, last_pass_ms: Option<u64>) -> bool {
        self.failed_until_ms.load(Relaxed) > now_ms
            && last_pass_ms.is_none_or(|pass| pass <= self.failed_at_ms.load(Relaxed))
    }
}

/// One backend as selection sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Its route (jvmRoute).
    pub route: Option<String>,
    /// Its replication domain.
    pub domain: Option<String>,
    /// The route to try first when it fails.
    pub redirect: Option<String>,
    /// Weight (lbfactor).
    pub weight: u32,
    /// Administrative state.
    pub state: BackendState,
    /// Backup flag.
    pub backup: bool,
    /// Distance group.
    pub distance: u32,
    /// Health-check result.
    pub up: bool,
    /// When its active health check last passed (Unix ms), if it has one.
    pub passed: Option<Arc<AtomicU64>>,
    /// Most requests in flight.
    pub max: Option<u32>,
    /// The PROXY protocol header its connections start with, if any.
    pub send_proxy: Option<crate::config::ProxyVersion>,
    /// Set when it speaks AJP/1.3 instead of HTTP: its connector's secret, if any.
    pub ajp: Option<crate::l7::ajp::Connector>,
    /// Counters.
    pub live: Arc<Live>,
}

impl Member {
    fn retrying(&self, now_ms: u64) -> bool {
        self.live.retrying(now_ms, self.passed.as_ref().map(|p| p.load(Relaxed)))
    }
}

/// What `choose` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The session's own backend.
    Sticky(usize),
    /// Another backend, because the session's is unavailable: the session moves.
    Failover(usize),
    /// A new session.
    New(usize),
}

impl Choice {
    /// The chosen member.
    pub fn index(self) -> usize {
        match self {
            Choice::Sticky(i) | Choice::Failover(i) | Choice::New(i) => i,
        }
    }
}

/// Why no backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The session's backend is unavailable and the VIP has `nofailover`.
    NoFailover,
    /// No backend can take the request.
    NoBackend,
    /// Backends could take it, but every one is at its `max` requests in flight.
    Full,
}

/// The backends of one L7 VIP.
#[derive(Debug)]
pub struct Pool {
    members: Vec<Member>,
    method: LbMethod,
    nofailover: bool,
    /// Smooth weighted round-robin state, per member, one copy per counter shard: each worker
    /// runs its own rotation (exact shares each), without a lock or a contended line.
    rr: Box<[Rotation]>,
    /// Hash mode: a Maglev table of member indices.
    table: Option<Vec<u32>>,
    /// Each member's identity for rendezvous hashing: the hash of its address, the same on
    /// every node and after every restart.
    idents: Box<[u64]>,
}

impl Pool {
    /// A pool; `hash` builds the consistent-hash table from the members' weights.
    pub fn new(members: Vec<Member>, method: LbMethod, nofailover: bool, hash: bool) -> Self {
        let table = hash
            .then(|| {
                let ms: Vec<crate::maglev::Member> = members
                    .iter()
                    .map(|m| crate::maglev::Member {
                        identity: m.addr.to_string().into_bytes(),
                        weight: if m.state == BackendState::Active { m.weight } else { 0 },
                    })
                    .collect();
                crate::maglev::build(
                    &ms,
                    crate::maglev::RingSize::new(4093).expect("prime"),
                    crate::maglev::DEFAULT_SEED,
                )
                .map(|t| t.slots().to_vec())
            })
            .flatten();
        let rr = (0..SHARDS).map(|k| Rotation::new(members.len(), k)).collect();
        let idents = members.iter().map(|m| super::session::fnv1a(m.addr.to_string().as_bytes())).collect();
        Self { members, method, nofailover, rr, table, idents }
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn available(&self, i: usize, now_ms: u64) -> bool {
        let m = &self.members[i];
        m.up && !m.retrying(now_ms) && m.max.is_none_or(|max| m.live.inflight() < max)
    }

    fn keeps_sessions(&self, i: usize, now_ms: u64) -> bool {
        matches!(self.members[i].state, BackendState::Active | BackendState::Drain) && self.available(i, now_ms)
    }

    fn takes_new(&self, i: usize, now_ms: u64) -> bool {
        let m = &self.members[i];
        m.state == BackendState::Active && m.weight > 0 && self.available(i, now_ms)
    }

    /// Why the backend of a session's `route` did not take its request (the access log's
    /// failover reason).
    pub fn why_moved(&self, route: &str, exclude: &[usize], now_ms: u64) -> &'static str {
        let Some(i) = self.by_route(route) else { return "unknown_route" };
        let m = &self.members[i];
        let passed = m.passed.as_ref().map(|p| p.load(Relaxed));
        if exclude.contains(&i) {
            "failed"
        } else if m.state == BackendState::Stopped {
            "stopped"
        } else if !m.up {
            "down"
        } else if m.live.retrying(now_ms, passed) {
            "retrying"
        } else if m.max.is_some_and(|max| m.live.inflight() >= max) {
            "full"
        } else {
            "unavailable"
        }
    }

    fn by_route(&self, route: &str) -> Option<usize> {
        self.members.iter().position(|m| m.route.as_deref() == Some(route))
    }

    /// Picks the backend for a request whose session names `route` (if any), whose hash key is
    /// `hash` (hash mode), leaving out `exclude` (backends this request already failed on).
    ///
    /// # Errors
    /// `NoFailover` when the session's backend is unavailable and failover is off; `NoBackend`
    /// when nothing can take it.
    pub fn choose(
        &self,
        route: Option<&str>,
        hash: Option<u64>,
        exclude: &[usize],
        now_ms: u64,
    ) -> Result<Choice, Unavailable> {
        let ok = |i: usize| !exclude.contains(&i);
        if let Some(i) = route.and_then(|r| self.by_route(r)) {
            if ok(i) && self.keeps_sessions(i, now_ms) {
                return Ok(Choice::Sticky(i));
            }
            if self.nofailover {
                return Err(Unavailable::NoFailover);
            }
            // 1. The failed backend's designated replacement.
            if let Some(j) = self.members[i].redirect.as_deref().and_then(|r| self.by_route(r))
                && ok(j)
                && self.keeps_sessions(j, now_ms)
            {
                return Ok(Choice::Failover(j));
            }
            // 2. A backend of the same replication domain, which has the session too.
            if let Some(domain) = self.members[i].domain.as_deref() {
                let same = (0..self.members.len()).filter(|&j| {
                    j != i && ok(j) && self.members[j].domain.as_deref() == Some(domain) && self.takes_new(j, now_ms)
                });
                if let Some(j) = self.pick(same, hash) {
                    return Ok(Choice::Failover(j));
                }
            }
            // 3. Any backend, as for a new session.
            return self.new_session(hash, exclude, now_ms).map(|c| Choice::Failover(c.index()));
        }
        self.new_session(hash, exclude, now_ms)
    }

    fn new_session(&self, hash: Option<u64>, exclude: &[usize], now_ms: u64) -> Result<Choice, Unavailable> {
        if let (Some(h), Some(table)) = (hash, &self.table) {
            let i = table[(h % table.len() as u64) as usize] as usize;
            if !exclude.contains(&i) && self.takes_new(i, now_ms) {
                return Ok(Choice::New(i));
            }
        }
        let candidates = || (0..self.members.len()).filter(|&i| !exclude.contains(&i) && self.takes_new(i, now_ms));
        let group =
            crate::config::new_flow_group(candidates().map(|i| (self.members[i].backup, self.members[i].distance)));
        let Some((backup, distance)) = group else {
            let full = (0..self.members.len()).any(|i| {
                let m = &self.members[i];
                !exclude.contains(&i)
                    && m.state == BackendState::Active
                    && m.up
                    && !m.retrying(now_ms)
                    && m.max.is_some_and(|max| m.live.inflight() >= max)
            });
            return Err(if full { Unavailable::Full } else { Unavailable::NoBackend });
        };
        let in_group =
            candidates().filter(|&i| self.members[i].backup == backup && self.members[i].distance == distance);
        self.pick(in_group, hash).map(Choice::New).ok_or(Unavailable::NoBackend)
    }

    /// Among `candidates`: with a session `key`, the one rendezvous hashing gives it (weighted:
    /// every node, and every restart, picks the same one for the same key and candidates, and
    /// a candidate leaving moves only its own keys); without one, by the VIP's `lbmethod`.
    fn pick(&self, candidates: impl Iterator<Item = usize> + Clone, key: Option<u64>) -> Option<usize> {
        let Some(key) = key else { return self.by_method(candidates) };
        let score = |i: usize| {
            // splitmix64 of the pair: a uniform draw in (0, 1) per key and member.
            let mut z = (key ^ self.idents[i]).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -f64::from(self.members[i].weight.max(1)) / u.ln()
        };
        candidates.max_by(|&a, &b| score(a).total_cmp(&score(b)))
    }

    /// The VIP's `lbmethod` over `candidates`.
    fn by_method(&self, candidates: impl Iterator<Item = usize> + Clone) -> Option<usize> {
        let weight = |i: usize| f64::from(self.members[i].weight.max(1));
        match self.method {
            LbMethod::Byrequests => {
                // Smooth weighted round robin (nginx's): every candidate gains its weight, the
                // richest is picked and pays the total back.
                let rr = &self.rr[shard()].0;
                let total: i64 = candidates.clone().map(|i| i64::from(self.members[i].weight)).sum();
                let mut best: Option<(usize, i64)> = None;
                for i in candidates {
                    let credit = rr[i].load(Relaxed) + i64::from(self.members[i].weight);
                    rr[i].store(credit, Relaxed);
                    if best.is_none_or(|(_, c)| credit > c) {
                        best = Some((i, credit));
                    }
                }
                let (b, credit) = best?;
                rr[b].store(credit - total, Relaxed);
                Some(b)
            }
            LbMethod::Bybusyness => candidates.min_by(|&a, &b| {
                let load = |i: usize| f64::from(self.members[i].live.inflight() + 1) / weight(i);
                load(a).total_cmp(&load(b))
            }),
            LbMethod::Bytraffic => candidates.min_by(|&a, &b| {
                let load = |i: usize| self.members[i].live.bytes() as f64 / weight(i);
                load(a).total_cmp(&load(b))
            }),
        }
    }
}

/// One shard's smooth round-robin credits, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Rotation(Box<[AtomicI64]>);

impl Rotation {
    /// Shard `k`'s credits: in worker `k`'s shard member `k` (of `members`) starts one credit
    /// ahead, so each worker's first new session goes to another backend (all starting level,
    /// every worker's first sessions went to the first backend). The head start never changes
    /// the shares. Worker 0's shard and the shard of other threads start level.
    fn new(members: usize, k: usize) -> Self {
        // At least a cache line's worth, so two shards' credits never share one.
        let ahead = (k < SHARDS - 1).then(|| k % members.max(1));
        Self((0..members.max(16)).map(|i| AtomicI64::new(i64::from(ahead == Some(i)))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u8, route: &str, weight: u32) -> Member {
        Member {
            addr: SocketAddr::from(([10, 0, 0, n], 8080)),
            route: Some(route.into()),
            domain: None,
            redirect: None,
            weight,
            state: BackendState::Active,
            backup: false,
            distance: 0,
            up: true,
            passed: None,
            max: None,
            send_proxy: None,
            ajp: None,
            live: Arc::new(Live::default()),
        }
    }

    /// Issue 10, defect 7: a backend whose check passed again waited out the whole window.
    /// Issue 13: a route-suffix session whose backend is gone gets the same replacement from
    /// every node and after every restart (rendezvous hashing of its id), spread by weight, and
    /// a second backend leaving moves only its own sessions.
    #[test]
    fn failover_of_a_session_is_the_same_on_every_node_and_moves_only_what_it_must() {
        let members = || {
            let mut ms = vec![m(1, "a", 100), m(2, "b", 100), m(3, "c", 100), m(4, "d", 200)];
            for x in &mut ms {
                x.domain = Some("d1".into());
            }
            ms[0].up = false;
            ms
        };
        let key = |n: u32| crate::l7::session::fnv1a(format!("{n:08X}.a").as_bytes());
        let (node1, node2) = (
            Pool::new(members(), LbMethod::Byrequests, false, false),
            Pool::new(members(), LbMethod::Byrequests, false, false),
        );
        let picks: Vec<usize> =
            (0..4000).map(|n| node1.choose(Some("a"), Some(key(n)), &[], 0).unwrap().index()).collect();
        let mut again: Vec<usize> =
            (0..4000).rev().map(|n| node2.choose(Some("a"), Some(key(n)), &[], 0).unwrap().index()).collect();
        again.reverse();
        let differ = picks.iter().zip(&again).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "another node (and another order of requests) picks the same");
        let mut share = [0usize; 4];
        for &i in &picks {
            share[i] += 1;
        }
        assert_eq!(share[0], 0);
        assert!(
            (800..1200).contains(&share[1]) && (800..1200).contains(&share[2]) && (1800..2200).contains(&share[3]),
            "{share:?}"
        );
        // c leaves as well: only the sessions that were on c move.
        let mut fewer = members();
        fewer[2].up = false;
        let node3 = Pool::new(fewer, LbMethod::Byrequests, false, false);
        for (n, &before) in picks.iter().enumerate() {
            let after = node3.choose(Some("a"), Some(key(n as u32)), &[], 0).unwrap().index();
            if before != 2 {
                assert_eq!(after, before, "session {n} moved though its backend stayed");
            }
        }
    }

    /// Found while writing the demo: two clients whose connections went to different workers
    /// both got the first backend, because every worker's rotation started level.
    #[test]
    fn each_workers_first_new_session_goes_to_another_backend() {
        let pool =
            Pool::new(vec![m(1, "r1", 100), m(2, "r2", 100), m(3, "r3", 100)], LbMethod::Byrequests, false, false);
        let first: Vec<usize> = (0..3)
            .map(|w| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        set_worker(w);
                        pool.choose(None, None, &[], 0).unwrap().index()
                    })
                    .join()
                    .unwrap()
                })
            })
            .collect();
        assert_eq!(first, vec![0, 1, 2]);
        // And each worker's shares stay exact.
        std::thread::scope(|s| {
            s.spawn(|| {
                set_worker(1);
                let mut n = [0; 3];
                for _ in 0..299 {
                    n[pool.choose(None, None, &[], 0).unwrap().index()] += 1;
                }
                assert!(n.iter().all(|c| (99..=100).contains(c)), "{n:?}");
            });
        });
    }

    #[test]
    fn an_active_check_that_passes_after_a_failure_ends_the_retry_window() {
        let passed = Arc::new(AtomicU64::new(0));
        let mut a = m(1, "a", 1);
        a.passed = Some(passed.clone());
        let pool = Pool::new(vec![a, m(2, "b", 1)], LbMethod::Byrequests, false, false);
        pool.members()[0].live.fail(1_000, 60_000);
        passed.store(900, Relaxed);
        assert_eq!(pool.choose(Some("a"), None, &[], 2_000), Ok(Choice::Failover(1)), "a pass before the failure");
        passed.store(1_500, Relaxed);
        assert_eq!(pool.choose(Some("a"), None, &[], 2_000), Ok(Choice::Sticky(0)), "a pass after it");
    }

    fn counts(pool: &Pool, n: usize) -> Vec<usize> {
        let mut c = vec![0; pool.members().len()];
        for _ in 0..n {
            c[pool.choose(None, None, &[], 0).unwrap().index()] += 1;
        }
        c
    }

    #[test]
    fn byrequests_gives_exact_weighted_shares_and_interleaves() {
        let pool = Pool::new(vec![m(1, "a", 1), m(2, "b", 2), m(3, "c", 3)], LbMethod::Byrequests, false, false);
        assert_eq!(counts(&pool, 600), [100, 200, 300]);
        let seq: Vec<usize> = (0..6).map(|_| pool.choose(None, None, &[], 0).unwrap().index()).collect();
        assert_eq!(seq, [2, 1, 0, 2, 1, 2], "smooth: no long runs on one backend");
    }

    #[test]
    fn bybusyness_prefers_the_least_loaded_relative_to_weight() {
        let pool = Pool::new(vec![m(1, "a", 1), m(2, "b", 2)], LbMethod::Bybusyness, false, false);
        pool.members()[0].live.here().inflight.store(1, Relaxed);
        pool.members()[1].live.here().inflight.store(2, Relaxed);
        // a: (1+1)/1 = 2, b: (2+1)/2 = 1.5
        assert_eq!(pool.choose(None, None, &[], 0), Ok(Choice::New(1)));
    }

    #[test]
    fn bytraffic_prefers_the_backend_that_moved_fewest_bytes_per_weight() {
        let pool = Pool::new(vec![m(1, "a", 1), m(2, "b", 1)], LbMethod::Bytraffic, false, false);
        pool.members()[0].live.here().bytes.store(5000, Relaxed);
        assert_eq!(pool.choose(None, None, &[], 0), Ok(Choice::New(1)));
    }

    #[test]
    fn a_drained_backend_keeps_its_sessions_but_gets_no_new_ones() {
        let mut a = m(1, "a", 1);
        a.state = BackendState::Drain;
        let pool = Pool::new(vec![a, m(2, "b", 1)], LbMethod::Byrequests, false, false);
        assert_eq!(pool.choose(Some("a"), None, &[], 0), Ok(Choice::Sticky(0)));
        assert_eq!(counts(&pool, 10), [0, 10]);
    }

    #[test]
    fn failover_goes_to_redirect_then_domain_then_anyone() {
        let mut a = m(1, "a", 1);
        a.domain = Some("d1".into());
        a.redirect = Some("c".into());
        a.up = false;
        let mut b = m(2, "b", 1);
        b.domain = Some("d1".into());
        let c = m(3, "c", 1);
        let d = m(4, "d", 1);
        let pool = Pool::new(vec![a, b, c, d], LbMethod::Byrequests, false, false);
        assert_eq!(pool.choose(Some("a"), None, &[], 0), Ok(Choice::Failover(2)), "redirect first");
        assert_eq!(pool.choose(Some("a"), None, &[2], 0), Ok(Choice::Failover(1)), "then the same domain");
        assert_eq!(pool.choose(Some("a"), None, &[1, 2], 0), Ok(Choice::Failover(3)), "then anyone");
        assert_eq!(pool.choose(Some("a"), None, &[1, 2, 3], 0), Err(Unavailable::NoBackend));
    }

    #[test]
    fn nofailover_answers_unavailable_instead_of_moving_the_session() {
        let mut a = m(1, "a", 1);
        a.up = false;
        let pool = Pool::new(vec![a, m(2, "b", 1)], LbMethod::Byrequests, true, false);
        assert_eq!(pool.choose(Some("a"), None, &[], 0), Err(Unavailable::NoFailover));
        assert_eq!(pool.choose(None, None, &[], 0), Ok(Choice::New(1)), "new sessions still work");
    }

    #[test]
    fn an_unknown_route_is_a_new_session() {
        let pool = Pool::new(vec![m(1, "a", 1)], LbMethod::Byrequests, true, false);
        assert_eq!(pool.choose(Some("zz"), None, &[], 0), Ok(Choice::New(0)));
    }

    #[test]
    fn backups_take_new_sessions_only_when_no_primary_is_available() {
        let mut bk = m(3, "c", 1);
        bk.backup = true;
        let pool = Pool::new(vec![m(1, "a", 1), m(2, "b", 1), bk], LbMethod::Byrequests, false, false);
        assert_eq!(counts(&pool, 10)[2], 0);
        let now = 1_000;
        for i in 0..2 {
            pool.members()[i].live.fail(now, 60_000);
        }
        assert_eq!(pool.choose(None, None, &[], now), Ok(Choice::New(2)), "primaries in their retry window");
        assert_eq!(pool.choose(None, None, &[], now + 60_000), Ok(Choice::New(0)), "retry window over");
    }

    #[test]
    fn lowest_distance_group_first_and_max_caps_a_backend() {
        let mut far = m(2, "b", 1);
        far.distance = 1;
        let mut near = m(1, "a", 1);
        near.max = Some(1);
        let pool = Pool::new(vec![near, far], LbMethod::Byrequests, false, false);
        assert_eq!(pool.choose(None, None, &[], 0), Ok(Choice::New(0)));
        pool.members()[0].live.here().inflight.store(1, Relaxed);
        assert_eq!(pool.choose(None, None, &[], 0), Ok(Choice::New(1)), "at its max: the next group");
        pool.members()[1].live.here().inflight.store(0, Relaxed);
        let capped = Pool::new(vec![pool.members()[0].clone()], LbMethod::Byrequests, false, false);
        assert_eq!(capped.choose(None, None, &[], 0), Err(Unavailable::Full), "all at their max");
    }

    #[test]
    fn hash_mode_is_consistent_for_a_key() {
        let pool = Pool::new(vec![m(1, "a", 1), m(2, "b", 1), m(3, "c", 1)], LbMethod::Byrequests, false, true);
        for key in [1u64, 99, 12345, u64::MAX] {
            let first = pool.choose(None, Some(key), &[], 0).unwrap();
            for _ in 0..5 {
                assert_eq!(pool.choose(None, Some(key), &[], 0).unwrap(), first);
            }
        }
        let spread: std::collections::HashSet<usize> =
            (0..300u64).map(|k| pool.choose(None, Some(k * 7919), &[], 0).unwrap().index()).collect();
        assert_eq!(spread.len(), 3);
    }
}
