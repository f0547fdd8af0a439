//! The check loops: one task per checked backend, reporting only state flips.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use super::probe::Check;
use super::{Tracker, probe};
use crate::config::{BackendProtocol, Config, Protocol};

/// A backend as health checks know it: its VIP (address, protocol) and where it is reached.
/// Stable across reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// The VIP's address and port.
    pub vip: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// The backend's address and port.
    pub target: SocketAddr,
}

impl BackendKey {
    /// The key of `backend` of `vip`: the one rule every map of checks, health and ramps uses.
    pub fn of(vip: &crate::config::Vip, backend: &crate::config::Backend) -> Self {
        let addr = *vip.address.get_ref();
        Self { vip: addr, protocol: vip.protocol, target: backend.target(addr.port()) }
    }
}

/// A change of a backend's health.
#[derive(Debug)]
pub struct Flip {
    /// Which backend.
    pub key: BackendKey,
    /// Its new state.
    pub up: bool,
}

/// One running check: what it checks, its loop, when it last passed, and the bell that runs
/// it at once.
struct Task {
    check: Check,
    handle: JoinHandle<()>,
    passed: Arc<AtomicU64>,
    now: Arc<tokio::sync::Notify>,
}

/// Running checks, keyed by backend, with the check each runs.
#[derive(Default)]
pub struct Scheduler {
    tasks: HashMap<BackendKey, Task>,
}

impl Scheduler {
    /// Makes the running checks match `config`: starts new ones, stops removed or changed ones.
    /// A new check starts with its backend up, unless it is in `down` (a changed check of a
    /// backend the old one took down): it then goes on from down, so the backend comes back
    /// after `rise` passes of the new check. Flips go to `tx`.
    pub fn sync(&mut self, config: &Config, tx: &mpsc::UnboundedSender<Flip>, down: &HashSet<BackendKey>) {
        let mut wanted = HashMap::new();
        for vip in &config.vips {
            let vaddr = *vip.address.get_ref();
            for b in &vip.backends {
                if let Some(check) = b.check(vip) {
                    let mut health = check.clone();
                    health.port = health.port.or(b.port);
                    let ajp = vip
                        .l7
                        .as_ref()
                        .filter(|l7| b.protocol(l7) == BackendProtocol::Ajp13)
                        .map(|l7| crate::l7::ajp::Connector { secret: b.ajp_secret(l7).map(Into::into) });
                    let tunnel = match (health.kind, vaddr) {
                        (crate::config::CheckKind::Tunnel, SocketAddr::V4(v)) => Some(super::tunnel::Tunnel {
                            vip: std::net::SocketAddrV4::new(*v.ip(), health.port.unwrap_or(v.port())),
                            outer_prefix: config.ipip_source_v4,
                        }),
                        _ => None,
                    };
                    wanted.insert(BackendKey::of(vip, b), Check { health, ajp, tunnel });
                }
            }
        }
        self.tasks.retain(|key, t| {
            let keep = wanted.get(key) == Some(&t.check);
            if !keep {
                t.handle.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let passed = Arc::new(AtomicU64::new(0));
            let now = Arc::new(tokio::sync::Notify::new());
            let up = !down.contains(&key);
            let handle = tokio::spawn(run(key, check.clone(), up, tx.clone(), (passed.clone(), now.clone())));
            self.tasks.insert(key, Task { check, handle, passed, now });
        }
    }

    /// The slow-start ramp of `key`'s check, if it has one.
    pub fn slowstart(&self, key: &BackendKey) -> Option<Duration> {
        self.tasks.get(key).map(|t| t.check.health.slowstart_s).filter(|&s| s > 0).map(Duration::from_secs)
    }

    /// When `key`'s check last passed (Unix ms, 0 before the first pass), if it has one.
    pub fn last_pass(&self, key: &BackendKey) -> Option<Arc<AtomicU64>> {
        self.tasks.get(key).map(|t| t.passed.clone())
    }

    /// Runs `key`'s check now (its result counts as any other); false when it has none.
    pub fn recheck(&self, key: &BackendKey) -> bool {
        self.tasks.get(key).map(|t| t.now.notify_one()).is_some()
    }

    /// Whether `key` has a running check (else it counts as up).
    pub fn checks(&self, key: &BackendKey) -> bool {
        self.tasks.contains_key(key)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

async fn run(
    key: BackendKey,
    check: Check,
    up: bool,
    tx: mpsc::UnboundedSender<Flip>,
    (passed, now): (Arc<AtomicU64>, Arc<tokio::sync::Notify>),
) {
    let BackendKey { vip, target, .. } = key;
    let addr = SocketAddr::new(target.ip(), check.health.port.unwrap_or(target.port()));
    let mut tracker = Tracker::starting(up, check.health.rise, check.health.fall);
    let mut tick = tokio::time::interval(Duration::from_millis(check.health.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = now.notified() => {}
        }
        let result = probe::run(&check, addr).await;
        if result.is_ok() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            passed.store(now.as_millis() as u64, Ordering::Relaxed);
        }
        if let Some(up) = tracker.record(result.is_ok()) {
            match &result {
                Ok(()) => info!(backend = %addr, %vip, "backend up: {} checks passed", check.health.rise),
                Err(why) => {
                    warn!(backend = %addr, %vip, "backend down after {} failed checks: {why}", check.health.fall);
                }
            }
            if tx.send(Flip { key, up }).is_err() {
                return;
            }
        }
    }
}
