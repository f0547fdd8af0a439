//! Commands that work on this host directly, without the daemon: bpffs pins, helper programs,
//! counters from pinned maps.

use std::path::Path;

use anyhow::{Context as _, Result};
use balancer::{
    config::XdpModeSetting,
    dataplane::{Dataplane, loader, stats::Snapshot, sync},
    lock::PinLock,
};
use balancer_common::vip::Settings;

use super::{args::HelperAction, output};

/// `balancer teardown`.
pub fn teardown(pin_dir: &Path, stop: bool) -> Result<()> {
    if let Some(pid) = PinLock::holder(pin_dir) {
        if !stop {
            anyhow::bail!(
                "a balancer daemon (PID {pid}) is running with pin_dir {}: stop it first, or run \
                 `balancer teardown --stop` to stop it and tear down",
                pin_dir.display()
            );
        }
        stop_daemon(pin_dir, pid)?;
    }
    if !pin_dir.exists() {
        println!("nothing pinned at {}", pin_dir.display());
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(pin_dir)
        .with_context(|| format!("reading {}", pin_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    std::fs::remove_dir_all(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    println!("removed {} ({})", pin_dir.display(), entries.join(", "));
    Ok(())
}

/// Sends SIGTERM to the daemon holding `pin_dir` and waits until it let go of the pin lock.
fn stop_daemon(pin_dir: &Path, pid: u32) -> Result<()> {
    let pid = i32::try_from(pid).ok().filter(|&p| p > 0).context("the pin lock names no valid PID")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("stopping the daemon (PID {pid})"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while PinLock::holder(pin_dir).is_some() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the daemon (PID {pid}) did not stop within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("stopped the daemon (PID {pid})");
    Ok(())
}

/// Attaches or detaches one of the object's helper programs with a pinned link; `settings` are
/// written to its `SETTINGS` map first.
pub fn helper(program: &'static str, command: &str, action: HelperAction, settings: Option<Settings>) -> Result<()> {
    match action {
        HelperAction::Attach { iface, pin_dir } => {
            let pin = loader::helper_link_pin(&pin_dir, program, &iface);
            let mut dp = Dataplane::load_helpers().with_context(|| format!("loading the {program} program"))?;
            if let Some(s) = settings {
                sync::write_settings(&mut dp, s).context("writing the settings")?;
            }
            dp.attach_pinned(program, &iface, XdpModeSetting::Auto, &pin)
                .with_context(|| format!("attaching the {program} program to `{iface}`"))?;
            println!("{}", pin.display());
        }
        HelperAction::Detach { iface, pin_dir } => {
            let pin = loader::helper_link_pin(&pin_dir, program, &iface);
            loader::unpin_link(&pin)
                .with_context(|| format!("was `balancer {command} attach --iface {iface}` run in this namespace?"))?;
        }
    }
    Ok(())
}

/// `balancer stats`: totals, and rates over `interval` seconds when it is positive.
pub fn stats(pin_dir: &Path, interval: f64, json: bool) -> Result<()> {
    let read = || {
        Snapshot::from_pins(pin_dir)
            .with_context(|| format!("is the daemon running with pin_dir = {}?", pin_dir.display()))
    };
    let first = read()?;
    let rates = if interval > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
        let second = read()?;
        let r = output::Rates::between(&first, &second, interval);
        Some((second, r))
    } else {
        None
    };
    let (snap, rates) = match rates {
        Some((s, r)) => (s, Some(r)),
        None => (first, None),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "totals": snap, "rates": rates }))?);
    } else {
        output::stats(&snap, rates.as_ref());
    }
    Ok(())
}
