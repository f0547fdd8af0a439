//! What `balancer check` verifies beyond parsing: the host-side checks the daemon meets when it
//! starts or reloads (interfaces, key files, listening addresses, the state file), run through the same
//! functions, so a file that `check` accepts is one that `run` and `reload` accept.

use std::{io::ErrorKind, net::SocketAddr};

use crate::{
    config::Config,
    l7::server::{self, L7Error},
};

/// A reason the daemon would refuse the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// An interface to attach to is missing.
    #[error("interfaces: `{0}` does not exist in this network namespace")]
    NoInterface(String),
    /// An L7 VIP's key or listening address.
    #[error(transparent)]
    L7(#[from] L7Error),
    /// The runtime-override state file cannot be read.
    #[error(transparent)]
    State(#[from] crate::overrides::StateError),
    /// The admin address cannot be listened on.
    #[error("metrics_address {address}: {source}")]
    Admin {
        /// The address.
        address: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Every problem the daemon would meet with `config`, in file order. `daemon_running`: a
/// daemon answers on the configuration's control socket, so addresses it listens on already
/// are not counted as taken.
pub fn check(config: &Config, daemon_running: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    for name in &config.interfaces {
        if !interface_exists(name) {
            problems.push(Problem::NoInterface(name.clone()));
        }
    }
    if let Err(e) = crate::overrides::Overrides::load(&config.state_file) {
        problems.push(e.into());
    }
    let taken_by_us = |e: &std::io::Error| daemon_running && e.kind() == ErrorKind::AddrInUse;
    match std::net::TcpListener::bind(config.metrics_address) {
        Err(source) if !taken_by_us(&source) => {
            problems.push(Problem::Admin { address: config.metrics_address, source });
        }
        _ => {}
    }
    if let Err(e) = server::connection_budget(config) {
        problems.push(e.into());
    }
    // Each VIP on its own, so one bad VIP does not hide the next.
    for vip in config.vips.iter().filter(|v| v.l7.is_some()) {
        let one = Config { vips: vec![vip.clone()], ..config.clone() };
        match server::Runtime::default().prepare(&one) {
            // The descriptor budget is counted over all VIPs above.
            Err(L7Error::Listen { source, .. }) if !taken_by_us(&source) => {
                problems.push(L7Error::Listen { source, vip: *vip.address.get_ref() }.into());
            }
            Err(e @ L7Error::Key { .. }) => problems.push(e.into()),
            _ => {}
        }
    }
    problems
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}
