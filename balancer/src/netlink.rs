//! What the data path needs from the kernel's network configuration: the attach interface's index
//! and MAC, and each backend's MAC from the neighbour table (probed when it is not there yet).

use std::{net::IpAddr, time::Duration};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        link::LinkAttribute,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute},
    },
};

/// A failure to learn an interface or neighbour, naming it.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened or a request failed.
    #[error("netlink: {0}")]
    Io(String),
    /// No interface has this name in the current network namespace.
    #[error("interface `{0}` does not exist in this network namespace")]
    NoInterface(String),
    /// The interface has no Ethernet address.
    #[error("interface `{0}` has no Ethernet (MAC) address")]
    NoMac(String),
    /// The kernel has no route to the address.
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    /// The neighbour could not be resolved.
    #[error(
        "no MAC address for {addr} on `{iface}` after probing it: is it up and on the same L2 \
         segment as the balancer?"
    )]
    Unresolved {
        /// The backend or next-hop address.
        addr: IpAddr,
        /// The interface it was looked for on.
        iface: String,
    },
}

/// An interface the XDP program is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its MTU (0 when the kernel did not say).
    pub mtu: u32,
}

/// `aa:bb:cc:dd:ee:ff`, for log lines.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A route-netlink connection.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection; its I/O runs on a tokio task.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn new() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetlinkError::Io(e.to_string()))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Index and MAC of interface `name`.
    ///
    /// # Errors
    /// `NoInterface`, `NoMac`, or `Io`.
    pub async fn interface(&self, name: &str) -> Result<Interface, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
                return Err(NetlinkError::NoInterface(name.to_owned()));
            }
            Err(e) => return Err(NetlinkError::Io(e.to_string())),
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NoMac(name.to_owned()))?;
        let mtu = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(0);
        Ok(Interface { name: name.to_owned(), index: msg.header.index, mac, mtu })
    }

    /// Where the kernel would send a packet for `addr`: the gateway of its route (or `addr`
    /// itself when it is on-link) and the output interface index, as `ip route get` shows.
    ///
    /// # Errors
    /// `NoRoute`, or `Io`.
    pub async fn next_hop(&self, addr: IpAddr) -> Result<(IpAddr, u32), NetlinkError> {
        let msg = match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().destination_prefix(a, 32).build(),
            IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().destination_prefix(a, 128).build(),
        };
        let mut routes = self.handle.route().get(msg).execute();
        let route = match routes.try_next().await {
            Ok(Some(r)) => r,
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => return Err(NetlinkError::NoRoute(addr)),
            Err(e) => return Err(NetlinkError::Io(e.to_string())),
        };
        let mut hop = addr;
        let mut oif = None;
        for a in &route.attributes {
            match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => hop = IpAddr::V4(*g),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => hop = IpAddr::V6(*g),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        Ok((hop, oif.ok_or(NetlinkError::NoRoute(addr))?))
    }

    /// The MAC of `addr` on `iface`. When the neighbour table has no usable entry, a datagram
    /// to the discard port makes the kernel resolve it, and the table is read again for up to
    /// `wait`.
    ///
    /// # Errors
    /// `Unresolved` when no entry appears in time.
    pub async fn neighbour_mac(
        &self,
        addr: IpAddr,
        iface: &Interface,
        wait: Duration,
    ) -> Result<[u8; 6], NetlinkError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut probed = false;
        loop {
            if let Some(mac) = self.lookup_neighbour(addr, iface.index).await? {
                return Ok(mac);
            }
            if !probed {
                probe(addr).await;
                probed = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NetlinkError::Unresolved { addr, iface: iface.name.clone() });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn lookup_neighbour(&self, addr: IpAddr, ifindex: u32) -> Result<Option<[u8; 6]>, NetlinkError> {
        let mut neighbours = self.handle.neighbours().get().execute();
        while let Some(msg) = neighbours.try_next().await.map_err(|e| NetlinkError::Io(e.to_string()))? {
            if msg.header.ifindex != ifindex
                || matches!(msg.header.state, NeighbourState::Incomplete | NeighbourState::Failed)
            {
                continue;
            }
            let mut dst = None;
            let mut lladdr = None;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                    NeighbourAttribute::LinkLayerAddress(b) => lladdr = <[u8; 6]>::try_from(b.as_slice()).ok(),
                    _ => {}
                }
            }
            if dst == Some(addr)
                && let Some(mac) = lladdr
            {
                return Ok(Some(mac));
            }
        }
        Ok(None)
    }
}

/// Sends one empty datagram to `addr`'s discard port, which makes the kernel resolve its MAC.
/// Errors are irrelevant here: the neighbour table is what is read afterwards.
async fn probe(addr: IpAddr) {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    if let Ok(sock) = tokio::net::UdpSocket::bind(bind).await {
        let _ = sock.send_to(&[], (addr, 9)).await;
    }
}
