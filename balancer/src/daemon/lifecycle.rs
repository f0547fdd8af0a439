//! The daemon's lifecycle beyond start and serve: handing over to a daemon that takes over
//! (`handoff`), and noticing when the pinned data path vanishes under it.

use anyhow::Result;
use tracing::{error, info, warn};

use super::{Daemon, link_pin};
use crate::control::{
    protocol::{HandoffAnswer, Response},
    server::Reply,
};

impl Daemon {
    /// The pin lock and L7 listening sockets, for the daemon taking over.
    pub(super) fn handoff_fds(&self) -> std::io::Result<Reply> {
        let listeners = self.l7.listener_fds()?;
        let mut fds = vec![self.lock.share()?, self.admin.socket.try_clone()?];
        let addresses = listeners.iter().map(|(a, _)| *a).collect();
        fds.extend(listeners.into_iter().map(|(_, fd)| fd));
        Ok(Reply::handoff(Response::ok(HandoffAnswer { listeners: addresses }), fds))
    }

    /// After a handoff: stop answering control requests and accepting connections (the new
    /// daemon holds the listening sockets now), let in-flight requests finish, and exit,
    /// leaving the data path and the control socket's path to the new daemon.
    pub(super) async fn exit_after_handoff(mut self) -> Result<()> {
        if let Some(c) = &self.control {
            c.abort();
        }
        self.admin.task.abort();
        // No STOPPING=1 to systemd: the new process is the service's main process now.
        info!("handed over to the new daemon: finishing in-flight requests");
        let left = self.l7.drain(self.config.drain_timeout()).await;
        if left > 0 {
            warn!(connections = left, "exiting with L7 connections still open after drain_timeout_s");
        }
        info!("exiting after the handoff: the new daemon runs the data path");
        Ok(())
    }

    /// Notices when the pinned program link or maps vanish under the running daemon: it then
    /// no longer balances, and says so (once in the log, and in `status` until it is back).
    pub(super) fn check_pins(&mut self) {
        let dir = &self.config.pin_dir;
        let mut gone: Vec<String> = Vec::new();
        if !dir.join(balancer_common::maps::FLOWS).exists() {
            gone.push(format!("the maps in {}", dir.display()));
        }
        for iface in &self.ifaces {
            if !link_pin(dir, &iface.name).exists() {
                gone.push(format!("the XDP link on {}", iface.name));
            }
        }
        let now = (!gone.is_empty()).then(|| {
            format!(
                "{} removed under the running daemon (`balancer teardown`?): L4 VIPs are not balanced; \
                 restart the daemon to load and attach again",
                gone.join(" and ")
            )
        });
        if now != self.missing {
            if let Some(m) = &now {
                error!("{m}");
            } else {
                info!("the pinned data path is back");
            }
            self.missing = now;
        }
    }

    /// Reads the attached interfaces' MACs again; when one changed (`ip link set … address`,
    /// a bonding failover), rewrites `LOCAL_MACS`, so the data path does not take the
    /// interface's new address for another host's and pass its frames.
    pub(super) async fn refresh_interfaces(&mut self) {
        let mut changed = false;
        for i in 0..self.ifaces.len() {
            let Ok(now) = self.nl.interface(&self.ifaces[i].name).await else { continue };
            let was = &self.ifaces[i];
            if (now.index, now.mac) != (was.index, was.mac) {
                info!(
                    interface = %now.name,
                    mac = %crate::netlink::fmt_mac(&now.mac),
                    was = %crate::netlink::fmt_mac(&was.mac),
                    "the interface's MAC changed: the data path takes frames for the new one"
                );
                self.ifaces[i] = now;
                changed = true;
            }
        }
        if changed && let Err(e) = self.write("interface MAC changed") {
            error!("{e:#}");
        }
    }

    /// What is wrong with the data path under the daemon, if anything.
    pub fn problems(&self) -> Vec<String> {
        self.missing.iter().cloned().collect()
    }
}
