//! Which VIPs this node announces (through BIRD, `crate::announce`): those it can serve now —
//! data path attached, table written, a backend that takes new flows — unless the node is
//! drained or stopping.
//!
//! A VIP that becomes servable is announced only once its health checks have settled: every
//! checked backend has had `interval × rise` plus a timeout to come up. A node whose link
//! comes back sees its backends rise one check apart; announcing at the first would give it,
//! for a moment, a table without the others, and the connections the router moves to it
//! would reach the wrong backend and be reset (the ECMP test caught exactly that). A VIP
//! that is announced stays announced while it is servable.

use std::{collections::BTreeSet, net::IpAddr};

use tracing::{error, info};

use super::Daemon;
use crate::{announce::Announcer, health::scheduler::BackendKey};

impl Daemon {
    /// The VIP addresses this node can serve: an L4 VIP whose table has a backend, an L7 VIP
    /// with an active backend that is not down.
    fn servable(&self) -> BTreeSet<IpAddr> {
        let (assigned, plan) = (&self.last.0, &self.last.1);
        let mut out = BTreeSet::new();
        for (i, v) in self.config.vips.iter().enumerate() {
            let serves = if v.l7.is_some() {
                v.backends.iter().any(|b| {
                    b.state == crate::config::BackendState::Active && !self.down.contains(&BackendKey::of(v, b))
                })
            } else {
                let id = assigned.vips.get(i).copied();
                plan.vips.iter().any(|p| Some(p.meta.id) == id && !p.ring.is_empty())
            };
            if serves {
                out.insert(v.address.get_ref().ip());
            }
        }
        out
    }

    /// Brings BIRD's routes up to date with what this node can serve (nothing while drained).
    pub(super) fn announce(&mut self) {
        let wanted = match self.config.announce.clone() {
            Some(settings) if self.announcer.as_ref().is_none_or(|a| !a.uses(&settings)) => {
                self.withdraw_all("the announce settings changed");
                self.announcer = Some(Announcer::new(settings));
                self.servable()
            }
            Some(_) => self.servable(),
            None => {
                self.withdraw_all("no [announce] section any more");
                self.announcer = None;
                return;
            }
        };
        let wanted = self.settled(wanted);
        let wanted = if self.drained { BTreeSet::new() } else { wanted };
        let Some(a) = &mut self.announcer else { return };
        if let Err(e) = a.announce(&wanted) {
            error!("announcing the VIPs: {e}");
        }
    }

    /// Collects a finished `birdc configure` (the loop calls this while one runs).
    pub(super) fn poll_announce(&mut self) {
        let Some(a) = &mut self.announcer else { return };
        match a.poll() {
            Some(Ok(())) => info!(announced = ?a.announced(), "BGP announcement changed"),
            Some(Err(e)) => error!("announcing the VIPs: {e}"),
            None => {}
        }
    }

    /// Of the servable addresses, those announced already and those whose checks have
    /// settled; schedules the next look at the others (`settle_at`).
    fn settled(&mut self, servable: BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
        let now = tokio::time::Instant::now();
        let announced = self.announcer.as_ref().and_then(|a| a.heading_for().cloned()).unwrap_or_default();
        self.servable_since.retain(|addr, _| servable.contains(addr));
        self.settle_at = None;
        let mut out = BTreeSet::new();
        for addr in servable {
            let since = *self.servable_since.entry(addr).or_insert(now);
            let ready = since + settle_time(&self.config, addr);
            if announced.contains(&addr) || now >= ready {
                out.insert(addr);
            } else {
                self.settle_at = Some(self.settle_at.map_or(ready, |at| at.min(ready)));
            }
        }
        out
    }

    /// Withdraws every route (before a stop, or when the announce settings change).
    pub(super) fn withdraw_all(&mut self, why: &str) {
        let Some(a) = &mut self.announcer else { return };
        if a.heading_for().is_some_and(BTreeSet::is_empty) && !a.busy() {
            return;
        }
        // A stop or a change of settings waits for BIRD's answer (at most its time limit).
        let done = a.announce(&BTreeSet::new()).map(|_| a.finish(WAIT_FOR_BIRD));
        match done {
            Ok(None | Some(Ok(()))) => info!(why, "BGP routes withdrawn"),
            Ok(Some(Err(e))) | Err(e) => error!(why, "withdrawing the VIPs: {e}"),
        }
    }

    /// `balancer node drain` (`true`) or `resume`: withdraw every VIP while forwarding on, so
    /// the router moves traffic to the other nodes; or announce again.
    pub(super) fn set_drained(&mut self, drained: bool) -> Result<&'static str, DrainError> {
        if self.config.announce.is_none() {
            return Err(DrainError::NotAnnouncing);
        }
        self.drained = drained;
        let mut o = self.overrides.clone();
        o.drained = drained;
        self.set_overrides(o);
        self.announce();
        // The operator asked: wait for BIRD's answer, to say whether it took the change.
        if let Some(a) = &mut self.announcer {
            a.finish(WAIT_FOR_BIRD);
        }
        if let Some(e) = self.announcer.as_ref().and_then(|a| a.error.clone()) {
            return Err(DrainError::Announce(e));
        }
        Ok(if drained {
            "drained: every VIP withdrawn; the data path forwards on while the router moves traffic away"
        } else {
            "resumed: the VIPs this node can serve are announced"
        })
    }
}

/// How long a stop, a change of settings or `node drain` waits for `birdc configure` (its own
/// limit is 5 s; a queued second one may follow).
const WAIT_FOR_BIRD: std::time::Duration = std::time::Duration::from_secs(11);

/// How long the checks of the VIPs on `addr` take to bring every backend up: the slowest
/// backend's `interval_ms × rise + timeout_ms` (nothing for unchecked backends).
fn settle_time(config: &crate::config::Config, addr: IpAddr) -> std::time::Duration {
    let ms = config
        .vips
        .iter()
        .filter(|v| v.address.get_ref().ip() == addr)
        .flat_map(|v| v.backends.iter().filter_map(|b| b.check(v)))
        .map(|h| h.interval_ms * u64::from(h.rise) + h.timeout_ms())
        .max()
        .unwrap_or(0);
    std::time::Duration::from_millis(ms)
}

/// Why `node drain` or `node resume` did not take effect.
#[derive(Debug, thiserror::Error)]
pub(super) enum DrainError {
    #[error("this node announces nothing: add an [announce] section (see `balancer bgp config`)")]
    NotAnnouncing,
    /// The state is recorded (the announcer retries), but BIRD has not taken it yet.
    #[error("{0}")]
    Announce(String),
}
