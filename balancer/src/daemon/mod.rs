//! The running daemon: the loaded data path, the configuration in force, and how a new
//! configuration is applied (at start, and on SIGHUP). `lifecycle`: the handoff to a daemon
//! taking over, and the pinned data path watched under the running daemon; `overrides`: the
//! runtime overrides kept across reloads and restarts.

mod announce;
mod background;
mod lifecycle;
mod overrides;
mod requests;
mod status;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config, XdpModeSetting},
    control::{
        protocol::{Request, Response},
        server::{self, Call},
    },
    dataplane::{
        Dataplane,
        ids::{Assigned, Ids},
        loader::{self, BALANCER_PROGRAM},
        plan::{self, NextHop, Plan},
        sync,
    },
    health::scheduler::{BackendKey, Flip, Scheduler},
    netlink::{Interface, Netlink},
    overrides::Overrides,
};

/// How long to wait for a backend's MAC address before giving up on the configuration.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a reload left the running configuration in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or parsed, or breaks a rule: file, line and field.
    #[error("reload rejected, the running configuration stays: {0}")]
    File(#[from] config::ConfigError),
    /// The file with the runtime overrides applied breaks a rule.
    #[error("reload rejected, the running configuration stays: {0}")]
    Overridden(#[from] config::Invalid),
    /// The data path or the L7 proxy refused it (the cause chain, as one line).
    #[error("reload rejected, the running configuration stays: {0}")]
    Apply(String),
}

/// The daemon's state.
#[expect(clippy::struct_excessive_bools, reason = "independent facts of the running daemon, each its own flag")]
pub struct Daemon {
    dp: Dataplane,
    nl: Netlink,
    ifaces: Vec<Interface>,
    ids: Ids,
    /// Next hop of every backend address resolved so far: health flips rebuild tables from
    /// these, since a dead host would not answer ARP.
    hops: HashMap<IpAddr, NextHop>,
    health: Scheduler,
    down: HashSet<BackendKey>,
    /// Backends in a slow start: when it began and how long it lasts.
    ramps: HashMap<BackendKey, (tokio::time::Instant, Duration)>,
    l7: crate::l7::server::Runtime,
    flips: mpsc::UnboundedReceiver<Flip>,
    flips_tx: mpsc::UnboundedSender<Flip>,
    /// The ids and tables last written, for `status` and `flow`.
    last: (Assigned, Plan),
    /// Whether the maps hold exactly `last`: false at start and after a failed write.
    synced: bool,
    /// Flow-table size from the background count; `u64::MAX` until the first one.
    flow_entries: Arc<AtomicU64>,
    calls: mpsc::Receiver<Call>,
    /// The admin server's status requests.
    status_calls: mpsc::Receiver<crate::admin::StatusCall>,
    /// Uptime, reloads, health changes and counter samples, for status.
    about: status::About,
    /// The BIRD routes of the VIPs it announces (`[announce]`).
    announcer: Option<crate::announce::Announcer>,
    /// `balancer node drain`: nothing announced, forwarding goes on.
    drained: bool,
    /// When each servable VIP address became servable (`announce::settled`).
    servable_since: std::collections::BTreeMap<IpAddr, tokio::time::Instant>,
    /// When a servable VIP not yet announced has settled, if one is waiting.
    settle_at: Option<tokio::time::Instant>,
    config: Config,
    config_path: PathBuf,
    detach_on_exit: bool,
    /// What of the pinned data path has gone missing under the daemon (a `teardown`, a bpffs
    /// unmount), checked every few seconds; `None` while it is whole.
    missing: Option<String>,
    /// The control socket's accept loop (from the end of `start` on).
    control: Option<tokio::task::JoinHandle<()>>,
    /// Between a handoff's answer and the new daemon's `ready`: this daemon serves but leaves
    /// the maps and the configuration alone, since the new one is writing them.
    handing_over: bool,
    /// The admin server.
    admin: crate::admin::Admin,
    /// The configuration as the file has it; `config` is this with the overrides applied.
    file: Config,
    /// What `backend set` changed, kept across reloads and restarts in `state_file`.
    overrides: Overrides,
    lock: crate::lock::PinLock,
}

/// How `balancer run` was asked to behave, beyond the configuration file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Load this object instead of the embedded one.
    pub bpf_object: Option<PathBuf>,
    /// Override the configuration's `xdp_mode`.
    pub xdp_mode: Option<XdpModeSetting>,
    /// Most verbose aya-log level the program emits.
    pub log_level: u8,
    /// Detach the program when the daemon exits, instead of leaving the data path running.
    pub detach_on_exit: bool,
    /// Take over from the daemon running with this configuration: its pin lock and L7
    /// listening sockets, without refusing a connection (`handoff`).
    pub takeover: bool,
}

impl Daemon {
    /// Loads the data path (re-adopting maps and link pinned by an earlier run), programs
    /// `config` into it, attaches it and starts the health checks.
    ///
    /// # Errors
    /// When loading, resolving a backend, writing the maps or attaching fails.
    pub async fn start(config: Config, config_path: &Path, opts: RunOptions) -> Result<Self> {
        // Before anything is touched: a second daemon on the same pins must change nothing,
        // unless it takes over from the first, which then hands it its lock and listeners.
        let inherited = if opts.takeover { crate::handoff::take_over(&config.control_socket)? } else { None };
        let (lock, admin_socket, listeners, handoff) = if let Some(i) = inherited {
            info!(listeners = i.listeners.len(), "taking over from the running daemon");
            let lock = crate::lock::PinLock::adopt(i.lock, &config.pin_dir)?;
            (lock, Some(i.admin), i.listeners, Some(i.stream))
        } else {
            if opts.takeover {
                info!("no daemon answers on the control socket: nothing to take over, starting afresh");
            }
            let lock = crate::lock::PinLock::acquire(&config.pin_dir)?;
            server::ensure_free(&config.control_socket)
                .with_context(|| format!("the control socket {}", config.control_socket.display()))?;
            (lock, None, HashMap::new(), None)
        };
        match crate::fdlimit::raise() {
            Ok((before, after)) if before < after => info!(before, after, "raised the file descriptor limit"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read or raise the file descriptor limit"),
        }
        let mut dp = Dataplane::load(opts.bpf_object.as_deref(), Some(&config.pin_dir), opts.log_level)
            .context("loading the data path (try `--bpf-object` to load a freshly built object)")?;
        background::spawn_ebpf_logger(&mut dp);
        let nl = Netlink::new().context("opening netlink")?;
        let mut ifaces = Vec::new();
        for name in &config.interfaces {
            ifaces.push(nl.interface(name).await.with_context(|| format!("interface `{name}` from the config"))?);
        }
        // Maps pinned by an earlier run keep their ids: the flow table refers to them.
        let ids = sync::read_ids(&dp).context("reading the pinned maps")?;
        let (flips_tx, flips) = mpsc::unbounded_channel();
        let (calls_tx, calls) = mpsc::channel(64);
        let (status_tx, status_calls) = mpsc::channel(64);
        let to_daemon = crate::admin::Daemon { calls: calls_tx.clone(), status: status_tx };
        let admin = crate::admin::serve(config.metrics_address, admin_socket, to_daemon).with_context(|| {
            format!("serving /metrics and /status on {} (`metrics_address`)", config.metrics_address)
        })?;
        let mode = opts.xdp_mode.unwrap_or(config.xdp_mode);
        let file = config.clone();
        let (overrides, config) = overrides::restore(config)?;
        let mut d = Self {
            dp,
            nl,
            ifaces,
            ids,
            hops: HashMap::new(),
            health: Scheduler::default(),
            down: HashSet::new(),
            ramps: HashMap::new(),
            l7: {
                let mut l7 = crate::l7::server::Runtime::default();
                l7.inherit(listeners);
                l7
            },
            flips,
            flips_tx,
            last: (Assigned { vips: Vec::new(), backends: Vec::new() }, Plan::default()),
            synced: false,
            flow_entries: background::count_flows_in_background(config.pin_dir.clone()),
            calls,
            status_calls,
            about: status::About::new(),
            announcer: None,
            drained: overrides.drained,
            servable_since: std::collections::BTreeMap::new(),
            settle_at: None,
            config,
            config_path: config_path.to_owned(),
            detach_on_exit: opts.detach_on_exit,
            missing: None,
            control: None,
            handing_over: false,
            admin,
            file,
            overrides,
            lock,
        };
        let config = d.config.clone();
        d.program(config).await?;
        // The link is pinned: the program stays on the interface when the daemon exits or dies,
        // and the next start swaps its new program into the same link.
        for iface in &d.ifaces {
            let pin = link_pin(&d.config.pin_dir, &iface.name);
            d.dp.attach_persistent(BALANCER_PROGRAM, &iface.name, mode, &pin)
                .with_context(|| format!("attaching to `{}` (try --xdp-mode generic)", iface.name))?;
        }
        // The control socket last: the CLI reaches a daemon that runs, and during a takeover
        // it reaches the old one until this one is ready.
        d.control = Some(
            server::listen(&d.config.control_socket, calls_tx)
                .with_context(|| format!("creating the control socket {}", d.config.control_socket.display()))?,
        );
        if let Some(stream) = handoff {
            crate::handoff::ready(stream)?;
            info!("the old daemon hands over: it finishes its requests in flight and exits");
        }
        info!(vips = d.config.vips.len(), "balancer running");
        crate::notify::ready(&format!("balancing {} VIPs", d.config.vips.len()));
        Ok(d)
    }

    /// Makes `config` the one in force: resolves new backends, writes the maps, and makes the
    /// health checks match. On error the configuration in force stays.
    ///
    /// # Errors
    /// When a setting that needs a restart changed, a backend cannot be resolved, or a map write
    /// fails.
    pub async fn apply(&mut self, config: Config) -> Result<()> {
        if config.interfaces != self.config.interfaces {
            bail!("`interfaces` changed: restart the daemon to attach elsewhere");
        }
        if config.pin_dir != self.config.pin_dir {
            bail!("`pin_dir` changed: restart the daemon to move its maps");
        }
        self.program(config).await
    }

    /// Applies `config` as one transaction: everything that can fail on the host (next hops,
    /// key files, listening sockets) is gathered first, and only then does anything change.
    /// A map write that fails puts the previous configuration back.
    async fn program(&mut self, config: Config) -> Result<()> {
        let hops = background::resolve(&self.nl, &self.ifaces, &config, &self.hops).await?;
        let l7 = self.l7.prepare(&config)?;
        let previous = std::mem::replace(&mut self.config, config);
        let previous_hops = std::mem::replace(&mut self.hops, hops);
        self.l7.commit(l7);
        self.health.sync(&self.config, &self.flips_tx, &self.down);
        let health = &self.health;
        self.down.retain(|k| health.checks(k));
        self.ramps.retain(|k, _| health.checks(k));
        let written = self.write("configuration");
        if written.is_err() {
            self.config = previous;
            self.hops = previous_hops;
            if let Ok(l7) = self.l7.prepare(&self.config) {
                self.l7.commit(l7);
            }
            self.health.sync(&self.config, &self.flips_tx, &self.down);
            if let Err(e) = self.write("rollback") {
                error!("putting the previous configuration back failed too: {e:#}");
            }
        }
        written
    }

    /// Rebuilds the tables from the configuration, next hops and health in force, and writes
    /// them. The ids are kept even when a write fails, since the maps may already hold them.
    fn write(&mut self, cause: &str) -> Result<()> {
        if self.handing_over {
            // The new daemon writes the maps now; an aborted handoff rewrites them whole.
            self.synced = false;
            return Ok(());
        }
        let assigned = self.ids.assign(&self.config);
        let (down, ramps, config) = (&self.down, &self.ramps, &self.config);
        let now = tokio::time::Instant::now();
        let key = |i: usize, j: usize| BackendKey::of(&config.vips[i], &config.vips[i].backends[j]);
        let up = |i: usize, j: usize| !down.contains(&key(i, j));
        let scale = |i: usize, j: usize| {
            ramps
                .get(&key(i, j))
                .map_or(1.0, |(since, over)| now.duration_since(*since).as_secs_f64() / over.as_secs_f64())
        };
        let mut p = plan::plan(config, &self.hops, &assigned, up, scale);
        p.local_macs = plan::local_macs(self.ifaces.iter().map(|i| (i.index, i.mac)));
        let previous = self.synced.then_some(&self.last.1);
        let result = sync::apply(&mut self.dp, &p, previous);
        self.synced = result.is_ok();
        let report = result.context("programming the maps")?;
        self.last = (assigned, p);
        let health = &self.health;
        self.l7.sync(config, up, scale, |i, j| health.last_pass(&key(i, j)));
        self.announce();
        // One line per VIP whose table changed, named by its address; a health flip of one
        // backend logs the VIPs it serves, not every VIP.
        let address = |id: u32| {
            let i = self.last.0.vips.iter().position(|&v| v == id);
            i.map_or_else(|| format!("#{id}"), |i| self.config.vips[i].address.get_ref().to_string())
        };
        for (id, moved) in report.moved {
            match moved {
                Some(0) => {}
                Some(n) => info!(vip = %address(id), moved_slots = n, cause, "table rebuilt"),
                None => info!(vip = %address(id), cause, "table written"),
            }
        }
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT; SIGHUP re-reads the configuration file; SIGUSR1 reopens
    /// the access log; health flips rebuild the tables.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub async fn serve(mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
        // Slow starts raise their backends' weights once a second.
        let mut ramp_tick = tokio::time::interval(Duration::from_secs(1));
        let mut pins_tick = tokio::time::interval(Duration::from_secs(2));
        let mut sample_tick = tokio::time::interval(crate::status::history::EVERY);
        // systemd's watchdog is pinged from this loop, so a loop that hangs gets restarted.
        let dog = crate::notify::watchdog_interval();
        let mut dog_tick = tokio::time::interval(dog.unwrap_or(Duration::from_hours(1)));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    if let Err(e) = self.reload().await {
                        error!("{e}");
                    }
                }
                _ = usr1.recv() => crate::l7::access_log::reopen(),
                Some(flip) = self.flips.recv() => self.on_flip(&flip),
                _ = ramp_tick.tick(), if !self.ramps.is_empty() => self.ramp_step(),
                _ = pins_tick.tick() => {
                    self.check_pins();
                    self.refresh_interfaces().await;
                }
                _ = sample_tick.tick() => {
                    self.sample();
                    // An announcement BIRD did not take (not running yet, say) is tried again.
                    if self.announcer.as_ref().is_some_and(crate::announce::Announcer::failed) {
                        self.announce();
                    }
                }
                _ = dog_tick.tick(), if dog.is_some() => crate::notify::watchdog(),
                () = tokio::time::sleep_until(self.settle_at.unwrap_or_else(tokio::time::Instant::now)),
                    if self.settle_at.is_some() => self.announce(),
                // `birdc configure` runs on its own thread: collect its answer.
                () = tokio::time::sleep(Duration::from_millis(20)),
                    if self.announcer.as_ref().is_some_and(crate::announce::Announcer::busy) => self.poll_announce(),
                Some(reply) = self.status_calls.recv() => {
                    let _ = reply.send(self.status());
                }
                Some((request, reply)) = self.calls.recv() => match request {
                    Request::Handoff if self.handing_over => {
                        let _ = reply.send(Response::err("a handoff is already under way").into());
                    }
                    Request::Handoff => match self.handoff_fds() {
                        Ok(handed) => {
                            self.handing_over = true;
                            info!("handing over to a new daemon: serving until it is ready, maps left to it");
                            let _ = reply.send(handed);
                        }
                        Err(e) => {
                            let _ = reply.send(Response::err(format!("cannot hand over: {e}")).into());
                        }
                    },
                    Request::HandoffDone if self.handing_over => return self.exit_after_handoff().await,
                    Request::HandoffAborted if self.handing_over => {
                        self.handing_over = false;
                        warn!("the new daemon went away before it was ready: carrying on");
                        self.synced = false;
                        if let Err(e) = self.write("handoff aborted") {
                            error!("{e:#}");
                        }
                    }
                    request if self.handing_over && request.changes() => {
                        let _ = reply.send(Response::err("a handoff to a new daemon is under way: retry on it").into());
                    }
                    request => {
                        let _ = reply.send(self.handle(request).await.into());
                    }
                },
            }
        }
        crate::notify::stopping();
        // A planned stop: the router moves new connections to the other nodes first.
        self.withdraw_all("stopping");
        if let Some(c) = &self.control {
            c.abort();
        }
        let left = self.l7.drain(self.config.drain_timeout()).await;
        if left > 0 {
            warn!(connections = left, "stopping with L7 connections still open after drain_timeout_s");
        }
        let _ = std::fs::remove_file(&self.config.control_socket);
        if self.detach_on_exit {
            for iface in &self.ifaces {
                loader::unpin_link(&link_pin(&self.config.pin_dir, &iface.name))?;
            }
            info!("exiting: the XDP program is detached");
        } else {
            info!(
                pin_dir = %self.config.pin_dir.display(),
                "exiting: the XDP program stays attached and keeps balancing with the last tables \
                 (`balancer teardown` removes it)"
            );
        }
        Ok(())
    }

    fn on_flip(&mut self, flip: &Flip) {
        if !self.health.checks(&flip.key) {
            return; // a check stopped by a reload
        }
        let changed = if flip.up { self.down.remove(&flip.key) } else { self.down.insert(flip.key) };
        if changed {
            self.about.health_changed.insert(flip.key, std::time::Instant::now());
        }
        match (flip.up, self.health.slowstart(&flip.key)) {
            (true, Some(over)) if changed => {
                info!(backend = %flip.key.target, seconds = over.as_secs(), "slow start");
                self.ramps.insert(flip.key, (tokio::time::Instant::now(), over));
            }
            (false, _) => {
                self.ramps.remove(&flip.key);
            }
            _ => {}
        }
        if changed {
            let cause = if flip.up { "backend up" } else { "backend down" };
            if let Err(e) = self.write(cause) {
                error!("{e:#}");
            }
        }
    }

    /// Raises ramping backends' weights; a ramp that reached its full weight ends.
    fn ramp_step(&mut self) {
        let now = tokio::time::Instant::now();
        self.ramps.retain(|key, (since, over)| {
            let done = now.duration_since(*since) >= *over;
            if done {
                info!(backend = %key.target, "slow start done: full weight");
            }
            !done
        });
        if let Err(e) = self.write("slow start") {
            error!("{e:#}");
        }
    }

    /// Re-reads the configuration file and applies it; a bad file is rejected (the message
    /// says why) and the running configuration stays.
    ///
    /// # Errors
    /// The reason, naming file, line and field where there is one.
    pub async fn reload(&mut self) -> Result<(), ReloadError> {
        crate::notify::reloading();
        let result = self.reload_file().await;
        self.about.reloaded(result.as_ref().err().map(ToString::to_string));
        crate::notify::ready(&format!("balancing {} VIPs", self.config.vips.len()));
        result
    }

    async fn reload_file(&mut self) -> Result<(), ReloadError> {
        let file = Config::load(&self.config_path)?;
        let mut overrides = self.overrides.clone();
        let mut config = file.clone();
        let dropped = overrides.apply(&mut config);
        config.check()?;
        self.apply(config).await.map_err(|e| ReloadError::Apply(format!("{e:#}")))?;
        overrides::log_dropped(&dropped);
        self.file = file;
        self.set_overrides(overrides);
        info!(vips = self.config.vips.len(), overrides = self.overrides.backends.len(), "configuration reloaded");
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The loaded data path.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    /// The ids and tables last written.
    pub fn last_plan(&self) -> (&Assigned, &Plan) {
        (&self.last.0, &self.last.1)
    }

    /// The L7 proxy's counters for `backend` of `vip`.
    pub fn l7_live(
        &self,
        vip: std::net::SocketAddr,
        backend: std::net::SocketAddr,
    ) -> Option<&Arc<crate::l7::select::Live>> {
        self.l7.live(vip, backend)
    }

    /// The L7 proxy's connection counters for `vip`.
    pub fn l7_vip_live(&self, vip: std::net::SocketAddr) -> Option<&Arc<crate::l7::server::VipLive>> {
        self.l7.vip_live(vip)
    }

    /// The certificates in force on TLS VIP `vip`.
    pub fn l7_certificates(&self, vip: std::net::SocketAddr) -> Option<&[crate::l7::tls::CertInfo]> {
        self.l7.certificates(vip)
    }

    /// Entries in the flow table at the last background count.
    pub fn flow_table_entries(&self) -> Option<u64> {
        Some(self.flow_entries.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
    }

    /// When `backend`'s active check last passed (Unix ms), if it has one.
    pub fn last_pass_of(&self, vip: &config::Vip, backend: &config::Backend) -> Option<u64> {
        self.health.last_pass(&BackendKey::of(vip, backend)).map(|p| p.load(Ordering::Relaxed))
    }

    /// Runs `key`'s health check now; false when it has none.
    pub fn recheck(&self, key: &BackendKey) -> bool {
        self.health.recheck(key)
    }

    /// `up`, `down`, or `unchecked` (no health check configured).
    pub fn health_of(&self, vip: &config::Vip, backend: &config::Backend) -> crate::status::Health {
        use crate::status::Health;
        let key = BackendKey::of(vip, backend);
        if !self.health.checks(&key) {
            Health::Unchecked
        } else if self.down.contains(&key) {
            Health::Down
        } else {
            Health::Up
        }
    }
}

/// Where the daemon pins its XDP link on `iface`.
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    loader::helper_link_pin(pin_dir, BALANCER_PROGRAM, iface)
}
