//! The L7 listeners and the per-VIP state they read, kept in step with the configuration and
//! health: each change builds a new `proxy::Vip` and swaps it in, so requests never wait on a
//! lock and never see a half-updated backend list.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::{error, info, warn};

use super::{
    access_log,
    cookie::{KeyError, Signer},
    h1,
    proxy::{Body, Site, Target, Vip},
    proxy_header, redirect,
    router::{Router, Rule},
    select::{Live, Member, Pool},
    tls::{self, CertInfo, Certs, TlsError, TlsLive},
};
use crate::{
    config::{BackendProtocol, Config, DEFAULT_MAX_CONNECTIONS, StickyMode},
    fdlimit,
};

/// Every L7 VIP's listener and state.
#[derive(Default)]
pub struct Runtime {
    /// Each VIP's state and its accept loop on every worker.
    vips: HashMap<SocketAddr, Listening>,
    /// The L7 worker threads, started with the first L7 VIP.
    workers: Option<Workers>,
    lives: HashMap<(SocketAddr, SocketAddr), Arc<Live>>,
    clients: HashMap<SocketAddr, (u64, Client<HttpConnector, Body>)>,
    /// Insert-mode signers of the configuration in force, read when it was prepared: health
    /// flips rebuild the VIPs without reading key files again.
    signers: HashMap<(SocketAddr, Option<String>), Signer>,
    /// Sockets bound by `prepare` for VIPs that do not listen yet.
    pending: HashMap<SocketAddr, std::net::TcpListener>,
    /// Connections each VIP may hold, as `prepare` sized them.
    max_connections: HashMap<SocketAddr, usize>,
    /// Each VIP's connection counters.
    vip_lives: HashMap<SocketAddr, Arc<VipLive>>,
    /// Listening sockets a daemon handed over, used by `prepare` instead of binding anew.
    inherited: HashMap<SocketAddr, std::net::TcpListener>,
    /// A descriptor of each VIP's listening socket, to hand over on a seamless restart.
    sockets: HashMap<SocketAddr, std::os::fd::OwnedFd>,
    /// Set when the daemon stops: connections finish their request and close.
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    /// TLS VIPs' certificates in force, read when their configuration was prepared.
    tls: HashMap<SocketAddr, Certs>,
    /// TLS VIPs' redirect ports that listen (the VIP, its port and accept loop).
    redirects: HashMap<SocketAddr, (u16, JoinHandle<()>)>,
    /// Redirect ports bound by `prepare` that do not listen yet.
    pending_redirects: HashMap<SocketAddr, (u16, std::net::TcpListener)>,
}

/// Why a configuration's L7 VIPs cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum L7Error {
    /// The insert-mode key.
    #[error("VIP {vip}: {source}")]
    Key {
        /// The VIP.
        vip: SocketAddr,
        /// What is wrong with its key.
        source: KeyError,
    },
    /// The VIP's address cannot be listened on.
    #[error(
        "cannot listen on VIP {vip}: {source} (an L7 VIP must be an address of this host: `ip addr add {}/32 dev lo`)",
        vip.ip()
    )]
    Listen {
        /// The VIP.
        vip: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// A certificate or key.
    #[error("VIP {vip}: {source}")]
    Tls {
        /// The VIP.
        vip: SocketAddr,
        /// What is wrong with its certificates.
        source: TlsError,
    },
    /// The access log's file.
    #[error(transparent)]
    AccessLog(#[from] access_log::LogError),
    /// The VIPs' `max_connections` need more descriptors than the daemon may open.
    #[error(
        "max_connections: the L7 VIPs ask for {asked} connections, {} file descriptors with the daemon's \
         own {}, but the limit is {limit} (raise LimitNOFILE= or `ulimit -Hn`, or lower max_connections)",
        asked * fdlimit::PER_CONNECTION + fdlimit::RESERVED, fdlimit::RESERVED
    )]
    Descriptors {
        /// Connections asked for in all.
        asked: u64,
        /// The hard descriptor limit.
        limit: u64,
    },
}

/// What a configuration's L7 VIPs need from the host, gathered by `Runtime::prepare` before
/// anything changes, so a configuration is either wholly applied or not at all.
pub struct Prepared {
    signers: HashMap<(SocketAddr, Option<String>), Signer>,
    listeners: HashMap<SocketAddr, std::net::TcpListener>,
    max_connections: HashMap<SocketAddr, usize>,
    tls: HashMap<SocketAddr, Certs>,
    redirects: HashMap<SocketAddr, (u16, std::net::TcpListener)>,
    access_log: Option<crate::config::AccessLog>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for (_, tasks) in self.vips.values() {
            tasks.iter().for_each(JoinHandle::abort);
        }
        for (_, task) in self.redirects.values() {
            task.abort();
        }
    }
}

/// A VIP's state, and its accept loop on every worker.
type Listening = (Arc<ArcSwap<Site>>, Vec<JoinHandle<()>>);

/// The L7 worker threads. Each runs a single-threaded runtime: a connection's task never moves
/// between threads, so its worker's backend connections and buffers need no lock, and nothing
/// is shared between requests but the VIP's state and counters.
struct Workers {
    handles: Vec<Worker>,
    /// Dropped to stop the workers (their runtimes then cancel what is left).
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// An L7 worker as the accept loops see it.
#[derive(Clone)]
struct Worker {
    handle: tokio::runtime::Handle,
    /// Client connections it serves now.
    load: Arc<AtomicU64>,
}

/// The worker a new connection goes to: the one serving fewest, `me` (which accepted it, and
/// where it is cheapest to serve) on a tie. A keep-alive load opens its connections at once and
/// keeps them, and whichever worker woke first would otherwise take most of them.
fn least_loaded(workers: &[Worker], me: usize) -> usize {
    let mine = workers[me].load.load(Relaxed);
    workers
        .iter()
        .enumerate()
        .min_by_key(|(_, w)| w.load.load(Relaxed))
        .map_or(me, |(i, w)| if w.load.load(Relaxed) < mine { i } else { me })
}

impl Workers {
    fn start(n: usize) -> std::io::Result<Self> {
        let (mut handles, mut stop) = (Vec::new(), Vec::new());
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            handles.push(Worker { handle: runtime.handle().clone(), load: Arc::default() });
            stop.push(tx);
            std::thread::Builder::new().name(format!("l7-worker-{i}")).spawn(move || {
                super::select::set_worker(i);
                runtime.block_on(async {
                    // Idle backend connections are dropped after their time even when no
                    // request comes to take one.
                    let sweep = tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            h1::upstream::sweep();
                            if i == 0 {
                                trim_after_crowd();
                            }
                        }
                    });
                    let _ = rx.await;
                    sweep.abort();
                });
            })?;
        }
        Ok(Self { handles, _stop: stop })
    }
}

impl Runtime {
    /// Reads the key files, certificates and the access log's file, and binds the new
    /// listeners `config` needs, changing nothing.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, L7Error> {
        let mut prepared = Prepared {
            signers: HashMap::new(),
            listeners: HashMap::new(),
            max_connections: connection_budget(config)?,
            tls: HashMap::new(),
            redirects: HashMap::new(),
            access_log: config.access_log.clone(),
        };
        if let Some(log) = &config.access_log {
            access_log::check(log)?;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        for v in &config.vips {
            let (Some(tls), Some(l7)) = (&v.tls, &v.l7) else { continue };
            let vip = *v.address.get_ref();
            // The HTTP/2 path cannot send a PROXY header or speak AJP, for any entry of the address.
            let _ = l7;
            let h2 = config.vips.iter().filter(|o| *o.address.get_ref() == vip).all(|o| {
                o.l7.as_ref().is_none_or(|l7| {
                    l7.send_proxy.is_none()
                        && o.backends.iter().all(|b| b.send_proxy.is_none() && b.protocol(l7) == BackendProtocol::Http)
                })
            });
            let certs = Certs::load(tls, h2, now).map_err(|source| L7Error::Tls { vip, source })?;
            prepared.tls.insert(vip, certs);
        }
        for v in &config.vips {
            let Some(l7) = &v.l7 else { continue };
            let vip = *v.address.get_ref();
            if let (StickyMode::Insert, Some(path)) = (l7.sticky, &l7.key_file) {
                let signer = Signer::from_key_file(path, l7.max_life_s, l7.max_idle_s)
                    .map_err(|source| L7Error::Key { vip, source })?;
                prepared.signers.insert((vip, v.name.clone()), signer);
            }
            if !self.vips.contains_key(&vip) && !prepared.listeners.contains_key(&vip) {
                let socket = match self.inherited.get(&vip) {
                    Some(s) => s.try_clone().map_err(|source| L7Error::Listen { vip, source })?,
                    None => bind(vip)?,
                };
                prepared.listeners.insert(vip, socket);
            }
        }
        for v in config.vips.iter().filter(|v| v.l7.is_some()) {
            let vip = *v.address.get_ref();
            if let Some(port) = v.tls.as_ref().and_then(|t| t.redirect_http)
                && self.redirects.get(&vip).is_none_or(|(p, _)| *p != port)
            {
                prepared.redirects.insert(vip, (port, bind(redirect::address(vip, port))?));
            }
        }
        Ok(prepared)
    }

    /// Listening sockets handed over by the daemon this one replaces.
    pub fn inherit(&mut self, listeners: HashMap<SocketAddr, std::net::TcpListener>) {
        self.inherited = listeners;
    }

    /// Descriptors of every L7 listening socket, for the daemon taking over.
    pub fn listener_fds(&self) -> std::io::Result<Vec<(SocketAddr, std::os::fd::OwnedFd)>> {
        self.sockets.iter().map(|(a, fd)| Ok((*a, fd.try_clone()?))).collect()
    }

    /// Stops accepting on every VIP, asks open connections to finish their request and close
    /// (idle keep-alive ones at once), and waits for them up to `deadline`; returns how many
    /// were still open then.
    pub async fn drain(&mut self, deadline: Duration) -> u64 {
        for (_, tasks) in self.vips.values() {
            tasks.iter().for_each(JoinHandle::abort);
        }
        if let Some(tx) = &self.shutdown {
            let _ = tx.send(true);
        }
        let open = || self.vip_lives.values().map(|l| l.open.load(Relaxed)).sum::<u64>();
        let until = Instant::now() + deadline;
        while open() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        open()
    }

    /// Makes `prepared` the state that `sync` builds from.
    pub fn commit(&mut self, prepared: Prepared) {
        self.signers = prepared.signers;
        self.pending = prepared.listeners;
        self.max_connections = prepared.max_connections;
        self.tls = prepared.tls;
        self.pending_redirects = prepared.redirects;
        if let Err(e) = access_log::install(prepared.access_log.as_ref()) {
            error!(error = %e, "the access log cannot be written");
        }
    }

    /// Each TLS VIP's certificates in force (status and metrics).
    pub fn certificates(&self, vip: SocketAddr) -> Option<&[CertInfo]> {
        self.tls.get(&vip).map(|c| &c.info[..])
    }

    /// Makes the L7 VIPs match `config` (after `prepare` and `commit` of the same config), with
    /// `up(vip, backend)` from the health checks, `scale(vip, backend)` from slow starts and
    /// `passed(vip, backend)`, the time of the last passing check.
    pub fn sync(
        &mut self,
        config: &Config,
        up: impl Fn(usize, usize) -> bool,
        scale: impl Fn(usize, usize) -> f64,
        passed: impl Fn(usize, usize) -> Option<Arc<AtomicU64>>,
    ) {
        // Each address's entries, in order, with their match rules.
        let mut sites: Vec<(SocketAddr, Vec<Vip>, Vec<Rule>, &crate::config::L7)> = Vec::new();
        for (i, v) in config.vips.iter().enumerate() {
            let Some(l7) = &v.l7 else { continue };
            let address = *v.address.get_ref();
            let vip = self.entry(i, v, l7, (&up, &scale, &passed));
            let rule = match Rule::new(v.matches.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    error!(vip = %address, error = %e, "L7 entry not routable (the configuration check should have said)");
                    continue;
                }
            };
            match sites.iter_mut().find(|(a, ..)| *a == address) {
                Some((_, vips, rules, _)) => {
                    vips.push(vip);
                    rules.push(rule);
                }
                None => sites.push((address, vec![vip], vec![rule], l7)),
            }
        }
        let mut wanted = Vec::new();
        for (address, vips, rules, l7) in sites {
            let site = Site::new(vips, Router::new(rules));
            if let Some((state, _)) = self.vips.get(&address) {
                state.store(Arc::new(site));
            } else {
                let Some(socket) = self.pending.remove(&address) else {
                    error!(vip = %address, "L7 VIP has no listener: its configuration was not prepared");
                    continue;
                };
                let state = Arc::new(ArcSwap::from_pointee(site));
                let limits = Limits {
                    max_connections: self.max_connections.get(&address).copied().unwrap_or(DEFAULT_MAX_CONNECTIONS),
                    header_timeout: Duration::from_millis(l7.header_timeout_ms),
                    max_head: l7.max_header_bytes,
                };
                let live = self.vip_lives.entry(address).or_default().clone();
                match socket.try_clone() {
                    Ok(dup) => {
                        self.sockets.insert(address, dup.into());
                    }
                    Err(e) => warn!(vip = %address, error = %e, "the listener cannot be handed over on a restart"),
                }
                let shutdown = self.shutdown.get_or_insert_with(|| tokio::sync::watch::channel(false).0).subscribe();
                if self.workers.is_none() {
                    let n = config
                        .l7_workers
                        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
                    match Workers::start(n) {
                        Ok(w) => self.workers = Some(w),
                        Err(e) => {
                            error!(error = %e, "cannot start the L7 worker threads");
                            continue;
                        }
                    }
                }
                let workers = self.workers.as_ref().map_or(&[][..], |w| &w.handles[..]);
                match listen(&socket, workers, limits, &state, &live, &shutdown) {
                    Ok(tasks) => {
                        info!(vip = %address, sticky = ?l7.sticky, workers = tasks.len(), "L7 VIP listening");
                        self.vips.insert(address, (state, tasks));
                    }
                    Err(e) => error!(vip = %address, error = %e, "L7 VIP cannot listen"),
                }
            }
            wanted.push(address);
        }
        self.sync_redirects(config);
        self.vips.retain(|addr, (_, tasks)| {
            let keep = wanted.contains(addr);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
                info!(vip = %addr, "L7 VIP closed");
            }
            keep
        });
        self.lives.retain(|(vip, _), _| wanted.contains(vip));
        self.vip_lives.retain(|vip, _| wanted.contains(vip));
        self.sockets.retain(|vip, _| wanted.contains(vip));
        self.inherited.clear();
        self.clients.retain(|vip, _| wanted.contains(vip));
    }

    /// The state of L7 entry `i` of the configuration (`v`, its `l7`), with health, slow-start
    /// scale and last passing check per backend.
    fn entry(
        &mut self,
        i: usize,
        v: &crate::config::Vip,
        l7: &crate::config::L7,
        (up, scale, passed): (
            &impl Fn(usize, usize) -> bool,
            &impl Fn(usize, usize) -> f64,
            &impl Fn(usize, usize) -> Option<Arc<AtomicU64>>,
        ),
    ) -> Vip {
        let address = *v.address.get_ref();
        let signer = self.signers.get(&(address, v.name.clone())).cloned();
        let members = v
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let addr = b.target(address.port());
                let live = self.lives.entry((address, addr)).or_default().clone();
                Member {
                    addr,
                    route: b.route.clone(),
                    domain: b.domain.clone(),
                    redirect: b.redirect.clone(),
                    weight: crate::dataplane::plan::scaled(b.weight, scale(i, j)),
                    state: b.state,
                    backup: b.backup,
                    distance: b.distance,
                    up: up(i, j),
                    passed: passed(i, j),
                    max: b.max,
                    send_proxy: b.send_proxy.or(l7.send_proxy),
                    ajp: (b.protocol(l7) == BackendProtocol::Ajp13)
                        .then(|| crate::l7::ajp::Connector { secret: b.ajp_secret(l7).map(Into::into) }),
                    live,
                }
            })
            .collect();
        let pool = Pool::new(members, l7.lbmethod, l7.nofailover, l7.sticky == StickyMode::Hash);
        let client = self.client(address, l7.connect_timeout_ms);
        let targets = pool.members().iter().map(|m| Target::new(m.addr)).collect();
        let id = NEXT_VIP_ID.fetch_add(1, Relaxed);
        let tls = self.tls.get(&address).map(|c| c.config.clone());
        let mut settings = l7.clone();
        // A cookie set over HTTPS goes back over HTTPS only.
        settings.secure |= tls.is_some();
        Vip { id, address, name: v.name.clone(), l7: settings, pool, signer, client, targets, tls }
    }

    /// Starts the redirect ports `prepare` bound and stops those the configuration dropped.
    fn sync_redirects(&mut self, config: &Config) {
        let wanted: HashMap<SocketAddr, (u16, u64)> = config
            .vips
            .iter()
            .filter_map(|v| {
                let port = v.tls.as_ref()?.redirect_http?;
                Some((*v.address.get_ref(), (port, v.l7.as_ref()?.header_timeout_ms)))
            })
            .collect();
        self.redirects.retain(|vip, (port, task)| {
            let keep = wanted.get(vip).is_some_and(|(p, _)| p == port) && !self.pending_redirects.contains_key(vip);
            if !keep {
                task.abort();
            }
            keep
        });
        let Some(worker) = self.workers.as_ref().and_then(|w| w.handles.first()) else { return };
        for (vip, (port, socket)) in self.pending_redirects.drain() {
            let Some(&(_, header_timeout_ms)) = wanted.get(&vip) else { continue };
            let timeout = Duration::from_millis(header_timeout_ms);
            let task = worker.handle.spawn(async move {
                match TcpListener::from_std(socket) {
                    Ok(l) => redirect::serve(l, vip.port(), timeout).await,
                    Err(e) => error!(%vip, error = %e, "the redirect port cannot listen"),
                }
            });
            info!(%vip, port, "redirecting cleartext HTTP to the TLS VIP");
            self.redirects.insert(vip, (port, task));
        }
    }

    /// The connection counters of L7 VIP `vip`.
    pub fn vip_live(&self, vip: SocketAddr) -> Option<&Arc<VipLive>> {
        self.vip_lives.get(&vip)
    }

    /// The counters of backend `backend` of L7 VIP `vip`.
    pub fn live(&self, vip: SocketAddr, backend: SocketAddr) -> Option<&Arc<Live>> {
        self.lives.get(&(vip, backend))
    }

    /// The VIP's pooled client, kept across changes unless its connect timeout changed.
    fn client(&mut self, vip: SocketAddr, connect_timeout_ms: u64) -> Client<HttpConnector, Body> {
        if let Some((t, c)) = self.clients.get(&vip)
            && *t == connect_timeout_ms
        {
            return c.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_mins(1)).build(connector);
        self.clients.insert(vip, (connect_timeout_ms, client.clone()));
        client
    }
}

/// The connections each L7 VIP of `config` may hold within the daemon's descriptor limit.
pub fn connection_budget(config: &Config) -> Result<HashMap<SocketAddr, usize>, L7Error> {
    let l7s = || config.vips.iter().filter_map(|v| Some((*v.address.get_ref(), v.l7.as_ref()?)));
    let explicit: Vec<usize> = l7s().filter_map(|(_, l7)| l7.max_connections).collect();
    let defaulted = l7s().filter(|(_, l7)| l7.max_connections.is_none()).count();
    let limit = fdlimit::available();
    let each = fdlimit::budget(limit, &explicit, defaulted, DEFAULT_MAX_CONNECTIONS)
        .ok_or(L7Error::Descriptors { asked: explicit.iter().map(|&n| n as u64).sum(), limit })?;
    Ok(l7s().map(|(vip, l7)| (vip, l7.max_connections.unwrap_or(each))).collect())
}

/// Binds an L7 VIP's listening socket (also what `balancer check` tries).
pub fn bind(vip: SocketAddr) -> Result<std::net::TcpListener, L7Error> {
    let socket = std::net::TcpListener::bind(vip).map_err(|source| L7Error::Listen { vip, source })?;
    socket.set_nonblocking(true).map_err(|source| L7Error::Listen { vip, source })?;
    Ok(socket)
}

/// A VIP's connection counters (status and metrics).
#[derive(Debug, Default)]
pub struct VipLive {
    /// Client connections open now.
    pub open: AtomicU64,
    /// Connections refused at `max_connections`.
    pub refused: AtomicU64,
    /// Accepts that failed (out of file descriptors, mostly).
    pub accept_errors: AtomicU64,
    /// Connections closed because no complete request head arrived in `header_timeout_ms`.
    pub head_timeouts: AtomicU64,
    /// Connections closed for want of a valid PROXY protocol header (`accept_proxy`).
    pub proxy_refused: AtomicU64,
    /// Upgraded connections (WebSocket) open now.
    pub tunnels: AtomicU64,
    /// Upgrades since the VIP started.
    pub upgrades: AtomicU64,
    /// TLS handshakes.
    pub tls: TlsLive,
}

/// What a client at the connection limit gets before the proxy closes: a clear answer
/// rather than a connection that hangs in the backlog.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n\
Content-Length: 46\r\nRetry-After: 1\r\n\r\nthe balancer is at its connection limit; retry\n";

/// A warning at most every 10 s, carrying the number of events since the last one.
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { last: None, since: 0 }
    }

    /// Counts one event; `Some(count)` when it is time to log.
    fn hit(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Settings a listener reads once, when it starts.
#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    max_head: usize,
}

/// Client connections open on every L7 VIP, for giving memory back once a crowd has left.
static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// The most client connections open at once since memory was last trimmed.
static PEAK: AtomicU64 = AtomicU64::new(0);

/// Returns freed heap to the system once the client connections have fallen to half of their
/// peak (at least 1000 fewer): the allocator keeps what thousands of connections freed in
/// small pieces, and a daemon that once held a flood of idle sockets would stay that size.
fn trim_after_crowd() {
    let open = CLIENTS.load(Relaxed);
    let peak = PEAK.load(Relaxed);
    if peak >= open + 1000 && open <= peak / 2 {
        // SAFETY: malloc_trim only walks and releases the allocator's free memory.
        unsafe { libc::malloc_trim(0) };
        PEAK.store(open, Relaxed);
    }
}

/// Numbers each build of a VIP's state.
static NEXT_VIP_ID: AtomicU64 = AtomicU64::new(1);

/// Starts `socket`'s accept loop on every worker (each on its own descriptor of the one
/// listening socket; the kernel wakes the workers in turn, and a busy one accepts less).
fn listen(
    socket: &std::net::TcpListener,
    workers: &[Worker],
    limits: Limits,
    state: &Arc<ArcSwap<Site>>,
    live: &Arc<VipLive>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let vip = socket.local_addr()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let all: Arc<[Worker]> = workers.into();
    let mut tasks = Vec::new();
    for (me, worker) in workers.iter().enumerate() {
        let socket = socket.try_clone()?;
        let (state, live, shutdown, slots) = (state.clone(), live.clone(), shutdown.clone(), slots.clone());
        let shared = Shared { vip, limits, state, live, shutdown };
        let all = all.clone();
        tasks.push(worker.handle.spawn(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => accept(listener, &shared, slots, &all, me).await,
                Err(e) => error!(%vip, error = %e, "an L7 worker cannot listen"),
            }
        }));
    }
    Ok(tasks)
}

/// What every connection of a VIP shares.
#[derive(Clone)]
struct Shared {
    vip: SocketAddr,
    limits: Limits,
    state: Arc<ArcSwap<Site>>,
    live: Arc<VipLive>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Serves `stream` on this worker (`load` is its count).
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
    load: Arc<AtomicU64>,
) {
    serve_client(stream, peer, &shared).await;
    drop(permit);
    load.fetch_sub(1, Relaxed);
    shared.live.open.fetch_sub(1, Relaxed);
    CLIENTS.fetch_sub(1, Relaxed);
}

/// Reads the PROXY header where the VIP expects one, completes the TLS handshake on a TLS VIP,
/// and serves the connection's requests.
async fn serve_client(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Shared) {
    let (accept_proxy, tls, h2c) = {
        let site = shared.state.load();
        let vip = site.first();
        (vip.l7.accept_proxy, vip.tls.clone(), site.h2c)
    };
    let limits = h1::Limits { header_timeout: shared.limits.header_timeout, max_head: shared.limits.max_head };
    let mut addr = peer;
    if accept_proxy {
        // Boxed (as the handshake below): a VIP without it carries none of its state.
        match Box::pin(proxy_header::read(&stream, limits.header_timeout)).await {
            Ok(proxy_header::Header::Proxied { source, .. }) => addr = source,
            Ok(proxy_header::Header::Local) => {}
            Err(e) => {
                shared.live.proxy_refused.fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "connection refused");
                return;
            }
        }
    }
    let (state, shutdown) = (shared.state.clone(), shared.shutdown.clone());
    match tls {
        None => {
            let client = h1::Client { addr, tls: None, h2: false, h2c };
            drop(h1::serve(stream, client, state, limits, &shared.live, shutdown).await);
        }
        Some(config) => Box::pin(serve_tls(stream, addr, config, shared, limits)).await,
    }
}

async fn serve_tls(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    shared: &Shared,
    limits: h1::Limits,
) {
    let live = &shared.live;
    let accepted = tokio::time::timeout(limits.header_timeout, tokio_rustls::TlsAcceptor::from(config).accept(stream));
    let stream = match accepted.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = tls::Failure::of(&e);
            live.tls.failed(why);
            tracing::debug!(client = %addr, reason = why.name(), error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            live.tls.failed(tls::Failure::Timeout);
            return;
        }
    };
    let conn = stream.get_ref().1;
    live.tls.done(conn);
    let h2 = conn.alpn_protocol() == Some(tls::H2);
    let client = h1::Client { addr, tls: Some(Box::new(tls::Session::of(conn))), h2, h2c: false };
    let served = h1::serve(stream, client, shared.state.clone(), limits, live, shared.shutdown.clone()).await;
    if let Some(mut stream) = served {
        // TLS ends with close_notify, so the client can tell the end from a cut.
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncWriteExt::shutdown(&mut stream)).await;
    }
}

async fn accept(listener: TcpListener, shared: &Shared, slots: Arc<Semaphore>, workers: &[Worker], me: usize) {
    let (vip, live) = (shared.vip, &shared.live);
    let (mut full, mut failing) = (Throttled::new(), Throttled::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                live.accept_errors.fetch_add(1, Relaxed);
                if let Some(n) = failing.hit() {
                    warn!(%vip, error = %e, failures = n, "cannot accept connections (file descriptors?)");
                }
                // The connection stays in the backlog; retrying at once would spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            live.refused.fetch_add(1, Relaxed);
            let _ = stream.try_write(FULL);
            if let Some(n) = full.hit() {
                let max_connections = shared.limits.max_connections;
                warn!(%vip, max_connections, refused = n, "at the connection limit: refusing new clients");
            }
            continue;
        };
        // Responses are written whole; Nagle would only hold a response's last segment
        // back until the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        live.open.fetch_add(1, Relaxed);
        PEAK.fetch_max(CLIENTS.fetch_add(1, Relaxed) + 1, Relaxed);
        let to = least_loaded(workers, me);
        let load = workers[to].load.clone();
        load.fetch_add(1, Relaxed);
        let shared = shared.clone();
        if to == me {
            tokio::spawn(connection(stream, peer, shared, permit, load));
            continue;
        }
        // To another worker: out of this one's reactor and into that one's.
        match stream.into_std() {
            Ok(std) => {
                workers[to].handle.spawn(async move {
                    match tokio::net::TcpStream::from_std(std) {
                        Ok(stream) => connection(stream, peer, shared, permit, load).await,
                        Err(e) => {
                            warn!(%vip, error = %e, "a connection could not move to its worker");
                            load.fetch_sub(1, Relaxed);
                            shared.live.open.fetch_sub(1, Relaxed);
                            CLIENTS.fetch_sub(1, Relaxed);
                        }
                    }
                });
            }
            Err(e) => {
                warn!(%vip, error = %e, "a connection could not leave its worker");
                load.fetch_sub(1, Relaxed);
                live.open.fetch_sub(1, Relaxed);
                CLIENTS.fetch_sub(1, Relaxed);
            }
        }
    }
}

/// Resolves once the daemon stops (never, if the runtime that would say so is gone).
pub(super) async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
