//! How a runtime change (the CLI, the status page, the state file) names a backend: its VIP,
//! the pool's `name` where entries share the VIP's address, and the backend as `IP` (when one
//! backend of the pool has it) or `IP:port` (two Tomcats on one host).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::{Config, Protocol};

/// A backend's address as a person names it: `10.0.0.2`, `10.0.0.2:8080`, `2001:db8::2` or
/// `[2001:db8::2]:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendAddr {
    /// The address.
    pub ip: IpAddr,
    /// The port, when given.
    pub port: Option<u16>,
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self { ip, port: None });
        }
        s.parse::<SocketAddr>()
            .map(|a| Self { ip: a.ip(), port: Some(a.port()) })
            .map_err(|_| format!("`{s}` is not IP or IP:port (IPv6 with a port: [2001:db8::2]:8080)"))
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// One backend of one VIP entry, as a runtime change names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    /// The VIP.
    pub vip: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// The entry's `name`, where several share the VIP's address.
    #[serde(default)]
    pub pool: Option<String>,
    /// The backend.
    pub backend: BackendAddr,
}

/// Why a runtime change's name for a VIP or backend names none, or several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(missing_docs, reason = "each field is a value its message names")]
pub enum LocateError {
    /// No entry has this address and protocol.
    #[error("no VIP {vip} ({protocol:?})")]
    NoVip { vip: SocketAddr, protocol: Protocol },
    /// Several entries share the address and no pool was named.
    #[error("{vip} has {} pools ({}); name one with --pool", .pools.len(), .pools.join(", "))]
    PoolNeeded { vip: SocketAddr, pools: Vec<String> },
    /// The named pool is not one of the address's entries.
    #[error("{vip} has no pool `{pool}` (it has: {})", .pools.join(", "))]
    NoPool { vip: SocketAddr, pool: String, pools: Vec<String> },
    /// The entry has no backend with this address.
    #[error("{backend} is not a backend of {vip}")]
    NoBackend { vip: SocketAddr, backend: BackendAddr },
    /// Several backends share the IP and no port was given.
    #[error("{} is {} backends of {vip} ({}); name one as IP:port", .backend.ip, .targets.len(), .targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Ambiguous { vip: SocketAddr, backend: BackendAddr, targets: Vec<SocketAddr> },
}

impl Config {
    /// The entry of `vip` named `pool` (or its only entry).
    ///
    /// # Errors
    /// No such VIP or pool, or several entries and no pool named: the message lists them.
    pub fn locate_vip(&self, vip: SocketAddr, protocol: Protocol, pool: Option<&str>) -> Result<usize, LocateError> {
        let at: Vec<usize> = (0..self.vips.len())
            .filter(|&i| *self.vips[i].address.get_ref() == vip && self.vips[i].protocol == protocol)
            .collect();
        let pools = || at.iter().map(|&i| self.vips[i].name.clone().unwrap_or_else(|| "-".into())).collect();
        match (pool, &at[..]) {
            (_, []) => Err(LocateError::NoVip { vip, protocol }),
            (None, [one]) => Ok(*one),
            (None, _) => Err(LocateError::PoolNeeded { vip, pools: pools() }),
            (Some(p), _) => at
                .iter()
                .copied()
                .find(|&i| self.vips[i].name.as_deref() == Some(p))
                .ok_or_else(|| LocateError::NoPool { vip, pool: p.to_owned(), pools: pools() }),
        }
    }

    /// The (entry, backend) indices `r` names.
    ///
    /// # Errors
    /// As `locate_vip`; no such backend; or an IP that two backends share, without a port.
    pub fn locate(&self, r: &BackendRef) -> Result<(usize, usize), LocateError> {
        let i = self.locate_vip(r.vip, r.protocol, r.pool.as_deref())?;
        let v = &self.vips[i];
        let port = v.address.get_ref().port();
        let found: Vec<usize> = (0..v.backends.len())
            .filter(|&j| {
                let target = v.backends[j].target(port);
                target.ip() == r.backend.ip && r.backend.port.is_none_or(|p| p == target.port())
            })
            .collect();
        match &found[..] {
            [] => Err(LocateError::NoBackend { vip: r.vip, backend: r.backend }),
            [one] => Ok((i, *one)),
            several => Err(LocateError::Ambiguous {
                vip: r.vip,
                backend: r.backend,
                targets: several.iter().map(|&j| v.backends[j].target(port)).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let text = "interfaces = [\"e\"]\n\
            [[vip]]\naddress = \"10.0.0.1:80\"\nname = \"shop\"\n[vip.l7]\nsticky = \"hash\"\n\
            [[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8081\n\
            [[vip.backend]]\naddress = \"10.0.0.3\"\nport = 8080\n\
            [[vip]]\naddress = \"10.0.0.1:80\"\nname = \"cart\"\n[vip.match]\npath = [\"/cart\"]\n[vip.l7]\nsticky = \"hash\"\n\
            [[vip.backend]]\naddress = \"10.0.0.4\"\nport = 8080\n";
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    fn at(pool: Option<&str>, backend: &str) -> Result<(usize, usize), String> {
        let vip = "10.0.0.1:80".parse().unwrap();
        config()
            .locate(&BackendRef { vip, protocol: Protocol::Tcp, pool: pool.map(Into::into), backend: backend.parse()? })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_backend_is_named_by_ip_where_unique_and_by_ip_and_port_where_not() {
        assert_eq!(at(Some("shop"), "10.0.0.3"), Ok((0, 2)));
        assert_eq!(at(Some("shop"), "10.0.0.2:8081"), Ok((0, 1)));
        let e = at(Some("shop"), "10.0.0.2").unwrap_err();
        assert!(
            e.contains("is 2 backends") && e.contains("10.0.0.2:8080, 10.0.0.2:8081") && e.contains("IP:port"),
            "{e}"
        );
        let e = at(None, "10.0.0.3").unwrap_err();
        assert!(e.contains("2 pools (shop, cart)") && e.contains("--pool"), "{e}");
        assert_eq!(at(Some("cart"), "10.0.0.4"), Ok((1, 0)));
        assert!(at(Some("nope"), "10.0.0.4").unwrap_err().contains("no pool `nope`"));
        assert!(at(Some("shop"), "10.0.0.2:9999").unwrap_err().contains("10.0.0.2:9999 is not a backend"));
        assert!(at(Some("shop"), "10.0.0.2:x").unwrap_err().contains("not IP or IP:port"));
        assert_eq!("[2001:db8::2]:8080".parse::<BackendAddr>().unwrap().to_string(), "[2001:db8::2]:8080");
    }
}
