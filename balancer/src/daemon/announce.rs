//! Which VIPs this node announces (through BIRD, `crate::announce`): those it can serve now —
//! data path attached, table written, a backend that takes new flows — unless the node is
//! drained or stopping.

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
        let wanted = if self.drained { BTreeSet::new() } else { wanted };
        let Some(a) = &mut self.announcer else { return };
        match a.announce(&wanted) {
            Ok(true) => info!(announced = ?wanted, "BGP announcement changed"),
            Ok(false) => {}
            Err(e) => error!("announcing the VIPs: {e}"),
        }
    }

    /// Withdraws every route (before a stop, or when the announce settings change).
    pub(super) fn withdraw_all(&mut self, why: &str) {
        let Some(a) = &mut self.announcer else { return };
        if a.announced().is_some_and(BTreeSet::is_empty) {
            return;
        }
        match a.announce(&BTreeSet::new()) {
            Ok(_) => info!(why, "BGP routes withdrawn"),
            Err(e) => error!(why, "withdrawing the VIPs: {e}"),
        }
    }

    /// `balancer node drain` (`true`) or `resume`: withdraw every VIP while forwarding on, so
    /// the router moves traffic to the other nodes; or announce again.
    pub(super) fn set_drained(&mut self, drained: bool) -> Result<&'static str, DrainError> {
        if self.config.announce.is_none() {
            return Err(DrainError::NotAnnouncing);
        }
        self.drained = drained;
        self.announce();
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

/// Why `node drain` or `node resume` did not take effect.
#[derive(Debug, thiserror::Error)]
pub(super) enum DrainError {
    #[error("this node announces nothing: add an [announce] section (see `balancer bgp config`)")]
    NotAnnouncing,
    /// The state is recorded (the announcer retries), but BIRD has not taken it yet.
    #[error("{0}")]
    Announce(String),
}
