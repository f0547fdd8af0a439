//! What the daemon does for each control request. Changes edit a copy of the configuration in
//! force, which is checked like a file and applied the same way; nothing is persisted (a
//! `reload` goes back to the file, as with `HAProxy`'s runtime API).

use std::net::SocketAddr;

use balancer_common::{flow::FlowKey, hash::flow_hash, proto};
use toml::Spanned;

use std::sync::atomic::Ordering::Relaxed;

use super::protocol::{BackendStatus, FlowAnswer, L7BackendStatus, L7VipStatus, Request, Response, Status, VipStatus};
use crate::{
    config::{self, Config, Protocol},
    daemon::Daemon,
    dataplane::{plan, stats::Snapshot},
};

impl Daemon {
    /// Carries out one control request.
    pub async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => self.status().map_or_else(Response::err, Response::ok),
            Request::Flow { src, dst, protocol } => {
                self.flow(src, dst, protocol).map_or_else(Response::err, Response::ok)
            }
            Request::Reload => match self.reload().await {
                Ok(()) => Response::ok("configuration reloaded"),
                Err(e) => Response::err(e),
            },
            Request::Overrides => Response::ok(self.overrides()),
            Request::BackendCheck { target } => match self.config().locate(&target) {
                Ok((i, j)) => {
                    let v = &self.config().vips[i];
                    if self.recheck(&crate::health::scheduler::BackendKey::of(v, &v.backends[j])) {
                        Response::ok("health check started")
                    } else {
                        Response::err(format!("{} has no health check", target.backend))
                    }
                }
                Err(e) => Response::err(e),
            },
            Request::Handoff | Request::HandoffDone | Request::HandoffAborted => {
                Response::err("a handoff is answered by the daemon's main loop")
            }
            Request::OverridesClear { vip, backend } => match self.clear_overrides(vip, backend).await {
                Ok(n) => Response::ok(format!("{n} overrides cleared; the file's values apply")),
                Err(e) => Response::err(format!("{e:#}")),
            },
            change => {
                let set = match &change {
                    Request::BackendSet { target, weight, state, backup, route } => Some((
                        target.clone(),
                        crate::overrides::Change {
                            weight: *weight,
                            state: *state,
                            backup: *backup,
                            route: route.clone(),
                        },
                    )),
                    _ => None,
                };
                let added = matches!(change, Request::BackendAdd { .. });
                let mut config = self.config().clone();
                if let Err(e) = edit(&mut config, change) {
                    return Response::err(e);
                }
                if let Err(e) = config.check() {
                    // The new backend is the last entry: its fields are the command's flags.
                    return Response::err(if added { as_flags(&e) } else { e });
                }
                match self.apply(config).await {
                    Ok(()) => {
                        // A `backend set` outlives reloads and restarts; adds and removals
                        // last until the next reload.
                        if let Some((target, change)) = set {
                            self.record_override(&target, &change);
                        }
                        Response::ok("done")
                    }
                    Err(e) => Response::err(format!("{e:#}")),
                }
            }
        }
    }

    /// A TLS VIP's handshake counters and certificates.
    fn tls_status(&self, vip: SocketAddr, live: &crate::l7::tls::TlsLive) -> super::protocol::TlsStatus {
        use crate::l7::tls::{self, Failure};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let count = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        super::protocol::TlsStatus {
            handshakes: count(&live.handshakes),
            failures: Failure::ALL.iter().zip(&live.failures).map(|(f, n)| (f.name().to_owned(), count(n))).collect(),
            versions: tls::VERSIONS.iter().zip(&live.versions).map(|(v, n)| ((*v).to_owned(), count(n))).collect(),
            alpn: tls::ALPN.iter().zip(&live.alpn).map(|(p, n)| ((*p).to_owned(), count(n))).collect(),
            certificates: self
                .l7_certificates(vip)
                .unwrap_or_default()
                .iter()
                .map(|c| super::protocol::CertificateStatus {
                    file: c.file.clone(),
                    names: c.names.clone(),
                    days_left: c.days_left(now),
                })
                .collect(),
        }
    }

    fn status(&self) -> Result<Status, String> {
        let snap = Snapshot::from_ebpf(self.dataplane().ebpf()).map_err(|e| e.to_string())?;
        let (assigned, last) = self.last_plan();
        let mut vips = Vec::new();
        for (i, v) in self.config().vips.iter().enumerate() {
            let vid = assigned.vips[i];
            let ring = last.vips.iter().find(|p| p.meta.id == vid).map_or(&[][..], |p| p.ring.as_slice());
            let traffic = snap.vips.iter().find(|s| s.id == vid).map(|s| s.traffic).unwrap_or_default();
            let flows = (v.l7.is_none() && v.flow_table)
                .then(|| snap.vips.iter().find(|s| s.id == vid).map(|s| s.flows).unwrap_or_default());
            let mut backends = Vec::new();
            for (j, b) in v.backends.iter().enumerate() {
                let id = assigned.backends[i][j];
                let slots = ring.iter().filter(|&&s| s == id).count() as u32;
                let t = snap.backends.iter().find(|s| s.id == id).map(|s| s.traffic).unwrap_or_default();
                backends.push(BackendStatus {
                    address: *b.address.get_ref(),
                    id,
                    weight: b.weight,
                    state: b.state,
                    backup: b.backup,
                    distance: b.distance,
                    health: self.health_of(v, b).into(),
                    route: b.route.clone(),
                    domain: b.domain.clone(),
                    slots,
                    share: if ring.is_empty() { 0.0 } else { 100.0 * f64::from(slots) / ring.len() as f64 },
                    packets: t.packets,
                    bytes: t.bytes,
                    new_flows: t.new_flows,
                    flows: None,
                    l7: v.l7.as_ref().and_then(|_| {
                        let target = b.target(v.address.get_ref().port());
                        let live = self.l7_live(*v.address.get_ref(), target)?;
                        let requests = live.requests();
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64;
                        Some(L7BackendStatus {
                            target,
                            sessions: live.sessions(),
                            requests,
                            errors: live.errors(),
                            inflight: live.inflight(),
                            bytes: live.bytes(),
                            mean_latency_ms: if requests == 0 {
                                0.0
                            } else {
                                live.latency_us() as f64 / requests as f64 / 1000.0
                            },
                            retrying: live.retrying(now_ms, self.last_pass_of(v, b)),
                        })
                    }),
                });
            }
            // Passive failures seen by the proxy show as health, beside the active checks.
            for b in &mut backends {
                if b.l7.as_ref().is_some_and(|l| l.retrying) && b.health != "down" {
                    b.health = "retrying".into();
                }
            }
            vips.push(VipStatus {
                address: *v.address.get_ref(),
                protocol: v.protocol,
                forwarding: v.forwarding,
                ring_size: if v.l7.is_some() { 0 } else { v.ring_size.get() },
                sticky: v.l7.as_ref().map(|l| l.sticky),
                name: v.name.clone(),
                takes: v.matches.as_ref().map(describe_match),
                flows,
                packets: traffic.packets,
                bytes: traffic.bytes,
                new_flows: traffic.new_flows,
                connections: self.l7_vip_live(*v.address.get_ref()).map(|l| L7VipStatus {
                    open: l.open.load(Relaxed),
                    refused: l.refused.load(Relaxed),
                    accept_errors: l.accept_errors.load(Relaxed),
                    head_timeouts: l.head_timeouts.load(Relaxed),
                    proxy_refused: l.proxy_refused.load(Relaxed),
                    tunnels: l.tunnels.load(Relaxed),
                    upgrades: l.upgrades.load(Relaxed),
                    tls: v.tls.as_ref().map(|_| self.tls_status(*v.address.get_ref(), &l.tls)),
                }),
                backends,
            });
        }
        let not_balanced = snap.not_balanced.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
        let icmp = snap.icmp.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
        Ok(Status {
            pin_dir: self.config().pin_dir.clone(),
            vips,
            flow_table_entries: self.flow_table_entries(),
            not_balanced,
            icmp,
            problems: self.problems(),
            access_log: (crate::l7::access_log::WRITTEN.load(Relaxed), crate::l7::access_log::DROPPED.load(Relaxed)),
            admin: self.config().admin,
        })
    }

    fn flow(&self, src: SocketAddr, dst: SocketAddr, protocol: Protocol) -> Result<FlowAnswer, String> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err("source and destination must be of one IP family".into());
        }
        let (i, vip) = self
            .config()
            .vips
            .iter()
            .enumerate()
            .find(|(_, v)| *v.address.get_ref() == dst && v.protocol == protocol)
            .ok_or_else(|| format!("{dst} ({protocol:?}) is not a VIP"))?;
        let (assigned, last) = self.last_plan();
        let vid = assigned.vips[i];
        let (saddr, fam) = plan::addr_bytes(src.ip());
        let (daddr, _) = plan::addr_bytes(dst.ip());
        let key = FlowKey {
            src: saddr,
            dst: daddr,
            sport_be: src.port().to_be(),
            dport_be: dst.port().to_be(),
            proto: if protocol == Protocol::Udp { proto::UDP } else { proto::TCP },
            family: fam,
            _pad: [0; 2],
        }
        .for_vip(plan::vip_flags(vip));
        let by_id = |id: u32| last.backends.iter().find(|(b, _)| *b == id).map(|(_, b)| plan::ip_of(&b.addr, b.family));
        let table_backend = last
            .vips
            .iter()
            .find(|p| p.meta.id == vid && !p.ring.is_empty())
            .and_then(|p| by_id(p.ring[(flow_hash(&key) % p.meta.ring_size) as usize]));
        let pinned_backend = self.dataplane().flow_entry(&key).map_err(|e| e.to_string())?.and_then(by_id);
        Ok(FlowAnswer { table_backend, pinned_backend })
    }
}

/// A configuration check's message about a backend (`vip[0].backend[3].route: …`) as the
/// `backend add` flag it is about (`--route: …`).
fn as_flags(message: &str) -> String {
    let Some(at) = message.find("].backend[") else { return message.to_owned() };
    let rest = &message[at + "].backend[".len()..];
    let Some((_, field)) = rest.split_once("].") else { return message.to_owned() };
    let (name, tail) = field.split_once(':').unwrap_or((field, ""));
    let flag = if name == "address" { "ADDRESS".to_owned() } else { format!("--{name}") };
    format!("{flag}:{tail}")
}

/// Applies a change request to `config`.
fn edit(config: &mut Config, change: Request) -> Result<(), String> {
    let find = |config: &Config, vip: SocketAddr, protocol: Protocol| {
        config
            .vips
            .iter()
            .position(|v| *v.address.get_ref() == vip && v.protocol == protocol)
            .ok_or_else(|| format!("no VIP {vip} ({protocol:?})"))
    };
    match change {
        Request::VipAdd { address, protocol, forwarding, ring_size, ignore_source_port } => {
            if find(config, address, protocol).is_ok() {
                return Err(format!("VIP {address} ({protocol:?}) already exists"));
            }
            let ring_size = match ring_size {
                Some(n) => crate::maglev::RingSize::new(n).map_err(|e| e.to_string())?,
                None => crate::maglev::RingSize::default(),
            };
            config.vips.push(config::Vip {
                address: Spanned::new(0..0, address),
                protocol,
                forwarding,
                ring_size,
                ignore_source_port,
                health: None,
                l7: None,
                tls: None,
                name: None,
                matches: None,
                flow_table: true,
                allow_sources: Vec::new(),
                hash: config::HashMode::default(),
                backends: Vec::new(),
            });
        }
        Request::VipDel { address, protocol } => {
            let i = find(config, address, protocol)?;
            config.vips.remove(i);
        }
        Request::BackendAdd { vip, protocol, address, weight, state, backup, distance, more, pool } => {
            let i = config.locate_vip(vip, protocol, pool.as_deref())?;
            let v = &mut config.vips[i];
            let target = SocketAddr::new(address, more.port.unwrap_or(vip.port()));
            if v.backends.iter().any(|b| b.target(vip.port()) == target) {
                return Err(format!("{target} is already a backend of {vip}"));
            }
            v.backends.push(config::Backend {
                address: Spanned::new(0..0, address),
                port: more.port,
                route: more.route,
                domain: more.domain,
                weight,
                state,
                backup,
                distance,
                health: None,
                redirect: more.redirect,
                max: more.max,
                send_proxy: None,
                protocol: more.protocol,
                secret: more.secret,
            });
        }
        Request::BackendDel { target } => {
            let (i, j) = config.locate(&target)?;
            config.vips[i].backends.remove(j);
        }
        Request::BackendSet { target, weight, state, backup, route } => {
            let (i, j) = config.locate(&target)?;
            let b = &mut config.vips[i].backends[j];
            if let Some(w) = weight {
                b.weight = w;
            }
            if let Some(s) = state {
                b.state = s;
            }
            if let Some(x) = backup {
                b.backup = x;
            }
            if let Some(r) = route {
                b.route = Some(r);
            }
        }
        Request::Status
        | Request::Reload
        | Request::Flow { .. }
        | Request::Overrides
        | Request::BackendCheck { .. }
        | Request::Handoff
        | Request::HandoffDone
        | Request::HandoffAborted
        | Request::OverridesClear { .. } => unreachable!("not a change"),
    }
    Ok(())
}

/// `[vip.match]` in one line: `host a,b path /x,/*.jsp exclude /x/s rewrite /`.
fn describe_match(m: &config::Match) -> String {
    let mut parts = Vec::new();
    for (word, list) in [("host", &m.host), ("path", &m.path), ("exclude", &m.exclude)] {
        if !list.is_empty() {
            parts.push(format!("{word} {}", list.join(",")));
        }
    }
    if let Some(r) = &m.rewrite {
        parts.push(format!("rewrite {r}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l7_config() -> Config {
        Config::parse(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"route-suffix\"\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080\nroute = \"t1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    fn add(address: &str, more: super::super::protocol::NewBackend) -> Request {
        Request::BackendAdd {
            vip: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            address: address.parse().unwrap(),
            weight: 100,
            state: config::BackendState::Active,
            backup: false,
            distance: 0,
            more,
            pool: None,
        }
    }

    /// Issue 13: a second Tomcat on the same host (its own port and route) can be added at run
    /// time, and a wrong value is named by its flag.
    #[test]
    fn backend_add_takes_every_field_and_names_flags_in_errors() {
        let mut c = l7_config();
        let more = |port, route: &str| super::super::protocol::NewBackend {
            port: Some(port),
            route: Some(route.into()),
            domain: Some("d1".into()),
            redirect: Some("t1".into()),
            max: Some(50),
            ..Default::default()
        };
        edit(&mut c, add("10.0.0.2", more(8081, "t2"))).unwrap();
        c.check().unwrap();
        let b = &c.vips[0].backends[1];
        assert_eq!(
            (b.port, b.route.as_deref(), b.domain.as_deref(), b.max),
            (Some(8081), Some("t2"), Some("d1"), Some(50))
        );
        assert_eq!(
            edit(&mut c, add("10.0.0.2", more(8081, "t3"))),
            Err("10.0.0.2:8081 is already a backend of 10.0.0.1:80".into())
        );
        edit(&mut c, add("10.0.0.3", more(8080, "t2"))).unwrap();
        let e = c.check().unwrap_err();
        assert!(as_flags(&e).starts_with("--route: `t2` is used twice"), "{e}");
    }
}
