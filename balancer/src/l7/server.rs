//! The L7 listeners and the per-VIP state they read, kept in step with the configuration and
//! health: each change builds a new `proxy::Vip` and swaps it in, so requests never wait on a
//! lock and never see a half-updated backend list.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::{debug, error, info};

use super::{
    cookie::{KeyError, Signer},
    proxy::{self, Body, Target, Vip},
    select::{Live, Member, Pool},
};
use crate::config::{Config, L7, StickyMode};

/// Every L7 VIP's listener and state.
#[derive(Default)]
pub struct Runtime {
    vips: HashMap<SocketAddr, (Arc<ArcSwap<Vip>>, JoinHandle<()>)>,
    lives: HashMap<(SocketAddr, SocketAddr), Arc<Live>>,
    clients: HashMap<SocketAddr, (u64, Client<HttpConnector, Body>)>,
    /// Insert-mode signers of the configuration in force, read when it was prepared: health
    /// flips rebuild the VIPs without reading key files again.
    signers: HashMap<SocketAddr, Signer>,
    /// Sockets bound by `prepare` for VIPs that do not listen yet.
    pending: HashMap<SocketAddr, std::net::TcpListener>,
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
}

/// What a configuration's L7 VIPs need from the host, gathered by `Runtime::prepare` before
/// anything changes, so a configuration is either wholly applied or not at all.
pub struct Prepared {
    signers: HashMap<SocketAddr, Signer>,
    listeners: HashMap<SocketAddr, std::net::TcpListener>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for (_, task) in self.vips.values() {
            task.abort();
        }
    }
}

impl Runtime {
    /// Reads the key files and binds the new listeners `config` needs, changing nothing.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, L7Error> {
        let mut prepared = Prepared { signers: HashMap::new(), listeners: HashMap::new() };
        for v in &config.vips {
            let Some(l7) = &v.l7 else { continue };
            let vip = *v.address.get_ref();
            if let (StickyMode::Insert, Some(path)) = (l7.sticky, &l7.key_file) {
                let signer = Signer::from_key_file(path, l7.max_life_s, l7.max_idle_s)
                    .map_err(|source| L7Error::Key { vip, source })?;
                prepared.signers.insert(vip, signer);
            }
            if !self.vips.contains_key(&vip) {
                prepared.listeners.insert(vip, bind(vip)?);
            }
        }
        Ok(prepared)
    }

    /// Makes `prepared` the state that `sync` builds from.
    pub fn commit(&mut self, prepared: Prepared) {
        self.signers = prepared.signers;
        self.pending = prepared.listeners;
    }

    /// Makes the L7 VIPs match `config` (after `prepare` and `commit` of the same config), with
    /// `up(vip, backend)` from the health checks and `scale(vip, backend)` from slow starts.
    pub fn sync(&mut self, config: &Config, up: impl Fn(usize, usize) -> bool, scale: impl Fn(usize, usize) -> f64) {
        let mut wanted = Vec::new();
        for (i, v) in config.vips.iter().enumerate() {
            let Some(l7) = &v.l7 else { continue };
            let address = *v.address.get_ref();
            let signer = self.signers.get(&address).cloned();
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
                        max: b.max,
                        live,
                    }
                })
                .collect();
            let pool = Pool::new(members, l7.lbmethod, l7.nofailover, l7.sticky == StickyMode::Hash);
            let client = self.client(address, l7.connect_timeout_ms);
            let targets = pool.members().iter().map(|m| Target::new(m.addr)).collect();
            let vip = Vip { address, l7: l7.clone(), pool, signer, client, targets };
            if let Some((state, _)) = self.vips.get(&address) {
                state.store(Arc::new(vip));
            } else {
                let Some(socket) = self.pending.remove(&address) else {
                    error!(vip = %address, "L7 VIP has no listener: its configuration was not prepared");
                    continue;
                };
                let state = Arc::new(ArcSwap::from_pointee(vip));
                match listen(socket, l7, state.clone()) {
                    Ok(task) => {
                        info!(vip = %address, sticky = ?l7.sticky, "L7 VIP listening");
                        self.vips.insert(address, (state, task));
                    }
                    Err(e) => error!(vip = %address, error = %e, "L7 VIP cannot listen"),
                }
            }
            wanted.push(address);
        }
        self.vips.retain(|addr, (_, task)| {
            let keep = wanted.contains(addr);
            if !keep {
                task.abort();
                info!(vip = %addr, "L7 VIP closed");
            }
            keep
        });
        self.lives.retain(|(vip, _), _| wanted.contains(vip));
        self.clients.retain(|vip, _| wanted.contains(vip));
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

/// Binds an L7 VIP's listening socket (also what `balancer check` tries).
pub fn bind(vip: SocketAddr) -> Result<std::net::TcpListener, L7Error> {
    let socket = std::net::TcpListener::bind(vip).map_err(|source| L7Error::Listen { vip, source })?;
    socket.set_nonblocking(true).map_err(|source| L7Error::Listen { vip, source })?;
    Ok(socket)
}

fn listen(socket: std::net::TcpListener, l7: &L7, state: Arc<ArcSwap<Vip>>) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::from_std(socket)?;
    let slots = Arc::new(Semaphore::new(l7.max_connections));
    let header_timeout = Duration::from_millis(l7.header_timeout_ms);
    let max_head = l7.max_header_bytes;
    Ok(tokio::spawn(async move {
        loop {
            // At `max_connections`, new clients wait in the kernel's backlog.
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, peer)) = listener.accept().await else { continue };
            // Responses are written whole; Nagle would only hold a response's last segment
            // back until the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| proxy::handle(req, state.clone(), peer));
                // HTTP/1.1, or HTTP/2 with prior knowledge (h2c) on the same port.
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(max_head)
                    .keep_alive(true);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
                if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                    debug!(%peer, error = %e, "client connection ended");
                }
            });
        }
    }))
}
