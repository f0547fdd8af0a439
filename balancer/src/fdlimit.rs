//! The daemon's file-descriptor budget. Every L7 client connection holds two descriptors (its
//! socket and the backend's); a daemon under systemd starts with a soft limit of 1024, which a
//! few hundred idle clients exhaust. The daemon raises its soft limit to the hard one at start
//! (as `HAProxy` does), and L7 `max_connections` are sized against that.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but L7 connections: maps and programs, netlink, health
/// checks, the control and admin sockets, listeners, log files.
pub const RESERVED: u64 = 256;
/// Descriptors one proxied connection holds: the client's socket and the backend's.
pub const PER_CONNECTION: u64 = 2;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
pub fn raise() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

/// The descriptors the daemon can have once it raised its limit: the hard limit.
pub fn available() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard)
}

/// How many connections L7 VIPs may hold with `limit` descriptors: each `explicit` setting is
/// kept if all of them fit; VIPs without one (`defaulted` of them) share what is left, each
/// up to `default_max`. `None` when the explicit settings do not fit.
pub fn budget(limit: u64, explicit: &[usize], defaulted: usize, default_max: usize) -> Option<usize> {
    let usable = limit.saturating_sub(RESERVED) / PER_CONNECTION;
    let asked: u64 = explicit.iter().map(|&n| n as u64).sum();
    let left = usable.checked_sub(asked)?;
    if defaulted == 0 {
        return Some(default_max);
    }
    let each = (left / defaulted as u64).min(default_max as u64) as usize;
    (each > 0).then_some(each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_limits_must_fit_and_defaults_share_the_rest() {
        // 1024 descriptors: (1024 - 256) / 2 = 384 connections in all.
        assert_eq!(budget(1024, &[], 1, 10_000), Some(384));
        assert_eq!(budget(1024, &[100], 2, 10_000), Some(142));
        assert_eq!(budget(1024, &[384], 0, 10_000), Some(10_000));
        assert_eq!(budget(1024, &[385], 0, 10_000), None);
        assert_eq!(budget(1024, &[384], 1, 10_000), None, "nothing left for the defaulted VIP");
        assert_eq!(budget(1 << 20, &[], 1, 10_000), Some(10_000));
    }
}
