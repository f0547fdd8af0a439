//! The daemon's side of runtime overrides: recorded on `backend set`, kept in the state file,
//! cleared on request.

use std::net::IpAddr;

use anyhow::Result;
use tracing::{error, info, warn};

use super::Daemon;
use crate::{config, overrides::Overrides};

impl Daemon {
    /// Records a `backend set` that was applied, in memory and in the state file.
    pub fn record_override(&mut self, target: &config::BackendRef, change: &crate::overrides::Change) {
        let mut o = self.overrides.clone();
        o.record(&self.file, target, change);
        self.set_overrides(o);
    }

    /// The overrides in force.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Removes overrides (of one VIP, or one backend of it) and goes back to the file's values.
    ///
    /// # Errors
    /// When the file's values cannot be applied.
    pub async fn clear_overrides(
        &mut self,
        vip: Option<std::net::SocketAddr>,
        backend: Option<IpAddr>,
    ) -> Result<usize> {
        let mut o = self.overrides.clone();
        let n = o.clear(vip, backend);
        let mut config = self.file.clone();
        o.apply(&mut config);
        self.apply(config).await?;
        self.set_overrides(o);
        Ok(n)
    }

    pub(super) fn set_overrides(&mut self, o: Overrides) {
        if o != self.overrides
            && let Err(e) = o.save(&self.file.state_file)
        {
            error!("runtime overrides will not survive a restart: {e}");
        }
        self.overrides = o;
    }
}

/// The state file's overrides, and `config` with them applied (what was restored, logged).
pub(super) fn restore(mut config: config::Config) -> Result<(Overrides, config::Config)> {
    let mut overrides = Overrides::load(&config.state_file)?;
    log_dropped(&overrides.apply(&mut config));
    let state_file = config.state_file.display();
    if !overrides.backends.is_empty() {
        info!(backends = overrides.backends.len(), %state_file, "runtime overrides restored");
    }
    if overrides.drained {
        warn!(%state_file, "this node was drained: nothing is announced until `balancer node resume`");
    }
    Ok((overrides, config))
}

pub(super) fn log_dropped(dropped: &[crate::overrides::Dropped]) {
    for d in dropped {
        info!(backend = %d.what, "runtime override dropped: {}; the file's value applies", d.why);
    }
}
