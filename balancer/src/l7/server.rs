//! The L7 listeners and the per-VIP state they read, kept in step with the configuration and
//! health: each change builds a new `proxy::Vip` and swaps it in, so requests never wait on a
//! lock and never see a half-updated backend list.

use std::{collections::HashMap, net::SocketAddr, os::unix::fs::PermissionsExt as _, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::{debug, info};

use super::{
    cookie::Signer,
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
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for (_, task) in self.vips.values() {
            task.abort();
        }
    }
}

impl Runtime {
    /// Makes the L7 VIPs match `config`, with `up(vip, backend)` from the health checks and
    /// `scale(vip, backend)` from slow starts.
    ///
    /// # Errors
    /// A message naming the VIP: a key file that cannot be used, or an address that cannot be
    /// listened on. VIPs before the failing one are already updated.
    pub fn sync(
        &mut self,
        config: &Config,
        up: impl Fn(usize, usize) -> bool,
        scale: impl Fn(usize, usize) -> f64,
    ) -> Result<(), String> {
        let mut wanted = Vec::new();
        for (i, v) in config.vips.iter().enumerate() {
            let Some(l7) = &v.l7 else { continue };
            let address = *v.address.get_ref();
            let signer = match (l7.sticky, &l7.key_file) {
                (StickyMode::Insert, Some(path)) => Some(signer(path, l7).map_err(|e| format!("VIP {address}: {e}"))?),
                _ => None,
            };
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
                let state = Arc::new(ArcSwap::from_pointee(vip));
                let task = listen(address, l7, state.clone())?;
                info!(vip = %address, sticky = ?l7.sticky, "L7 VIP listening");
                self.vips.insert(address, (state, task));
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
        Ok(())
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

/// Reads the insert-mode key: the file must not be readable by others (mode 0600).
fn signer(path: &std::path::Path, l7: &L7) -> Result<Signer, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("key_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("key_file {} is mode {mode:o}; make it 0600 (it signs session cookies)", path.display()));
    }
    let key = std::fs::read(path).map_err(|e| format!("key_file {}: {e}", path.display()))?;
    let key: Vec<u8> = key.trim_ascii().to_vec();
    Signer::new(key, l7.max_life_s, l7.max_idle_s).map_err(|e| format!("key_file {}: {e}", path.display()))
}

fn listen(address: SocketAddr, l7: &L7, state: Arc<ArcSwap<Vip>>) -> Result<JoinHandle<()>, String> {
    let std_listener = std::net::TcpListener::bind(address).map_err(|e| {
        format!("cannot listen on VIP {address}: {e} (an L7 VIP must be an address of this host: `ip addr add {}/32 dev lo`)", address.ip())
    })?;
    std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
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
