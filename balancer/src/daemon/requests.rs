//! What the daemon does for each control request (the control module only carries them).
//! Changes edit a copy of the configuration in force, which is checked like a file and applied
//! the same way; nothing is persisted (a `reload` goes back to the file, as with `HAProxy`'s
//! runtime API).

use std::net::SocketAddr;

use balancer_common::{flow::FlowKey, hash::flow_hash};
use toml::Spanned;

use super::Daemon;
use crate::{
    config::{self, Config, LocateError, Protocol},
    control::protocol::{FlowAnswer, Request, Response},
    dataplane::plan,
    maglev::RingSizeError,
};

/// Why a change request was refused before its configuration was checked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum EditError {
    /// The VIP or backend it names is not there, or is ambiguous.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// `vip add` of an address and protocol that have an entry.
    #[error("VIP {vip} ({protocol:?}) already exists")]
    VipExists { vip: SocketAddr, protocol: Protocol },
    /// `backend add` of an address and port the entry has.
    #[error("{target} is already a backend of {vip}")]
    BackendExists { vip: SocketAddr, target: SocketAddr },
    /// `vip add --ring-size` that is not a usable Maglev size.
    #[error(transparent)]
    RingSize(#[from] RingSizeError),
}

/// Why `balancer flow` has no answer.
#[derive(Debug, thiserror::Error)]
enum FlowError {
    #[error("source and destination must be of one IP family")]
    MixedFamilies,
    #[error("{dst} ({protocol:?}) is not a VIP")]
    NotAVip { dst: SocketAddr, protocol: Protocol },
    #[error("reading the flow table: {0}")]
    Map(#[from] aya::maps::MapError),
}

impl Daemon {
    /// Carries out one control request.
    pub async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => self.status().map_or_else(|e| Response::err(e.to_string()), Response::ok),
            Request::Flow { src, dst, protocol } => {
                self.flow(src, dst, protocol).map_or_else(|e| Response::err(e.to_string()), Response::ok)
            }
            Request::Reload => match self.reload().await {
                Ok(()) => Response::ok("configuration reloaded"),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Overrides => Response::ok(self.overrides()),
            Request::NodeDrain => self.set_drained(true).map_or_else(|e| Response::err(e.to_string()), Response::ok),
            Request::NodeResume => self.set_drained(false).map_or_else(|e| Response::err(e.to_string()), Response::ok),
            Request::BackendCheck { target } => match self.config().locate(&target) {
                Ok((i, j)) => {
                    let v = &self.config().vips[i];
                    if self.recheck(&crate::health::scheduler::BackendKey::of(v, &v.backends[j])) {
                        Response::ok("health check started")
                    } else {
                        Response::err(format!("{} has no health check", target.backend))
                    }
                }
                Err(e) => Response::err(e.to_string()),
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
                    return Response::err(e.to_string());
                }
                if let Err(e) = config.check() {
                    // The new backend is the last entry: its fields are the command's flags.
                    return Response::err(if added { as_flags(&e.message) } else { e.message });
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

    fn flow(&self, src: SocketAddr, dst: SocketAddr, protocol: Protocol) -> Result<FlowAnswer, FlowError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(FlowError::MixedFamilies);
        }
        let (i, vip) = self
            .config()
            .vips
            .iter()
            .enumerate()
            .find(|(_, v)| *v.address.get_ref() == dst && v.protocol == protocol)
            .ok_or(FlowError::NotAVip { dst, protocol })?;
        let (assigned, last) = self.last_plan();
        let vid = assigned.vips[i];
        let (saddr, fam) = plan::addr_bytes(src.ip());
        let (daddr, _) = plan::addr_bytes(dst.ip());
        let key = FlowKey {
            src: saddr,
            dst: daddr,
            sport_be: src.port().to_be(),
            dport_be: dst.port().to_be(),
            proto: protocol.wire(),
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
        let pinned_backend = self.dataplane().flow_entry(&key)?.and_then(by_id);
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
fn edit(config: &mut Config, change: Request) -> Result<(), EditError> {
    let find = |config: &Config, vip: SocketAddr, protocol: Protocol| {
        config
            .vips
            .iter()
            .position(|v| *v.address.get_ref() == vip && v.protocol == protocol)
            .ok_or(LocateError::NoVip { vip, protocol })
    };
    match change {
        Request::VipAdd { address, protocol, forwarding, ring_size, ignore_source_port } => {
            if find(config, address, protocol).is_ok() {
                return Err(EditError::VipExists { vip: address, protocol });
            }
            let ring_size = match ring_size {
                Some(n) => crate::maglev::RingSize::new(n)?,
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
                return Err(EditError::BackendExists { vip, target });
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
        | Request::OverridesClear { .. }
        | Request::NodeDrain
        | Request::NodeResume => unreachable!("not a change"),
    }
    Ok(())
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

    fn add(address: &str, more: crate::control::protocol::NewBackend) -> Request {
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
        let more = |port, route: &str| crate::control::protocol::NewBackend {
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
            Err(EditError::BackendExists {
                vip: "10.0.0.1:80".parse().unwrap(),
                target: "10.0.0.2:8081".parse().unwrap()
            })
        );
        edit(&mut c, add("10.0.0.3", more(8080, "t2"))).unwrap();
        let e = c.check().unwrap_err().message;
        assert!(as_flags(&e).starts_with("--route: `t2` is used twice"), "{e}");
    }
}
