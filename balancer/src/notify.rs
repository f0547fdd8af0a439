//! What the daemon tells systemd (`Type=notify`, `NotifyAccess=all`): ready once it serves,
//! reloading around a reload, stopping on the way out, and a watchdog ping from its main loop,
//! so a loop that hangs is restarted. With no `NOTIFY_SOCKET` (not under systemd) each call
//! does nothing; a failed send is logged and changes nothing else.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

/// The daemon serves. It names its PID: after a takeover the new process is the service's
/// main process.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::MainPid(std::process::id()), NotifyState::Status(status)]);
}

/// A reload begins; `ready` ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The daemon is on its way out.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog (half its timeout), when systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// The main loop is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
