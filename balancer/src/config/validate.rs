//! Checks that span several fields. Each failure returns the byte offset of the entry at fault
//! and a message that names the field.

use std::collections::HashSet;

use balancer_common::maps::{MAX_BACKENDS, MAX_VIPS, ring_units};

use super::{Config, MAX_WEIGHT};

/// A configuration that parsed but breaks a rule spanning fields: where in the file the entry
/// at fault starts (0 for a whole-file rule, or a configuration built at run time) and a
/// message that names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Byte offset of the entry at fault in the file's text.
    pub offset: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Invalid {
    fn at(offset: usize, message: String) -> Self {
        Self { offset, message }
    }
}

pub(super) fn check(config: &Config) -> Result<(), Invalid> {
    globals(config)?;
    if config.vips.len() > MAX_VIPS as usize {
        let at = config.vips[MAX_VIPS as usize].address.span().start;
        return Err(Invalid::at(at, format!("too many [[vip]] entries: at most {MAX_VIPS}")));
    }
    vips_check(config)
}

/// The top-level settings.
fn globals(config: &Config) -> Result<(), Invalid> {
    if config.interfaces.is_empty() {
        return Err(Invalid::at(0, "`interfaces` is empty: name at least one interface to attach to".into()));
    }
    if config.interfaces.len() > balancer_common::vip::MAX_LOCAL_MACS {
        return Err(Invalid::at(
            0,
            format!(
                "`interfaces` names {}: at most {} (the data path checks each one's MAC)",
                config.interfaces.len(),
                balancer_common::vip::MAX_LOCAL_MACS
            ),
        ));
    }
    if config.worker_threads == Some(0) {
        return Err(Invalid::at(0, "`worker_threads`: at least 1".into()));
    }
    if config.l7_workers == Some(0) {
        return Err(Invalid::at(0, "`l7_workers`: at least 1".into()));
    }
    if config.access_log.as_ref().is_some_and(|a| a.buffer == 0) {
        return Err(Invalid::at(0, "`access_log.buffer`: at least 1 line".into()));
    }
    for (name, &mtu) in &config.interface_mtu {
        if !config.interfaces.contains(name) {
            return Err(Invalid::at(0, format!("`interface_mtu.{name}`: {name} is not one of `interfaces`")));
        }
        if mtu < 576 {
            return Err(Invalid::at(
                0,
                format!("`interface_mtu.{name}`: {mtu} is below 576, the smallest datagram IPv4 hosts accept"),
            ));
        }
    }
    Ok(())
}

/// A VIP on port 0 takes every port of its address (`vip::WILDCARD_PORT`): L4 only, and its
/// health checks need a port of their own.
fn wildcard_check(i: usize, vip: &super::Vip) -> Result<(), Invalid> {
    let at = vip.address.span().start;
    let addr = vip.address.get_ref();
    if vip.l7.is_some() {
        return Err(Invalid::at(
            at,
            format!("vip[{i}].address: {addr}: port 0 (every port) is for L4 VIPs; an L7 VIP listens on one port"),
        ));
    }
    let unported = std::iter::once(("health".to_owned(), &vip.health))
        .chain(vip.backends.iter().enumerate().map(|(j, b)| (format!("backend[{j}].health"), &b.health)))
        .find(|(_, h)| h.as_ref().is_some_and(|h| h.port.is_none()));
    if let Some((field, _)) = unported {
        return Err(Invalid::at(
            at,
            format!("vip[{i}].{field}.port: the VIP takes every port (port 0), so its health check needs a port"),
        ));
    }
    Ok(())
}

fn vips_check(config: &Config) -> Result<(), Invalid> {
    let mut seen = HashSet::new();
    let mut backends = 0usize;
    for (i, vip) in config.vips.iter().enumerate() {
        let addr = *vip.address.get_ref();
        if addr.port() == 0 {
            wildcard_check(i, vip)?;
        }
        if let Some(why) = unusable(addr.ip()) {
            return Err(Invalid::at(vip.address.span().start, format!("vip[{i}].address: {}: {why}", addr.ip())));
        }
        if !seen.insert((addr, vip.protocol)) && vip.l7.is_none() {
            return Err(Invalid::at(
                vip.address.span().start,
                format!("vip[{i}].address: {addr} ({:?}) is already defined", vip.protocol),
            ));
        }
        for (j, check) in std::iter::once((None, &vip.health))
            .chain(vip.backends.iter().enumerate().map(|(j, b)| (Some(j), &b.health)))
        {
            let Some(c) = check else { continue };
            let at = j.map_or(vip.address.span().start, |j| vip.backends[j].address.span().start);
            let field = j.map_or(format!("vip[{i}].health"), |j| format!("vip[{i}].backend[{j}].health"));
            if c.interval_ms == 0 || c.timeout_ms() == 0 || c.timeout_ms() > c.interval_ms {
                return Err(Invalid::at(at, format!("{field}: need 0 < timeout_ms <= interval_ms")));
            }
            if c.rise == 0 || c.fall == 0 {
                return Err(Invalid::at(at, format!("{field}: rise and fall must be at least 1")));
            }
            let tunnelled = vip.l7.is_none() && vip.forwarding == super::Forwarding::Ipip && addr.is_ipv4();
            if c.kind == super::CheckKind::Tunnel && !tunnelled {
                return Err(Invalid::at(
                    at,
                    format!(
                        "{field}.kind: \"tunnel\" checks through the IPIP tunnel of an IPv4 L4 VIP with forwarding = \"ipip\""
                    ),
                ));
            }
        }
        let mut mine = HashSet::new();
        for (j, b) in vip.backends.iter().enumerate() {
            let ip = *b.address.get_ref();
            if let Some(why) = unusable(ip) {
                return Err(Invalid::at(b.address.span().start, format!("vip[{i}].backend[{j}].address: {ip}: {why}")));
            }
            if b.port == Some(0) {
                return Err(Invalid::at(
                    b.address.span().start,
                    format!("vip[{i}].backend[{j}].port: port 0 is not a port to connect to"),
                ));
            }
            if b.weight > MAX_WEIGHT {
                return Err(Invalid::at(
                    b.address.span().start,
                    format!("vip[{i}].backend[{j}].weight: {} is above the largest weight, {MAX_WEIGHT}", b.weight),
                ));
            }
            if vip.l7.is_none() && b.port.is_some_and(|p| p != addr.port()) {
                return Err(Invalid::at(
                    b.address.span().start,
                    format!(
                        "vip[{i}].backend[{j}].port: {:?} forwarding sends packets to the VIP's port {}; \
                         a backend cannot listen elsewhere",
                        vip.forwarding,
                        addr.port()
                    ),
                ));
            }
            if ip.is_ipv4() != addr.is_ipv4() {
                return Err(Invalid::at(
                    b.address.span().start,
                    format!(
                        "vip[{i}].backend[{j}].address: {ip} is not of the same IP family as the \
                         VIP {addr}"
                    ),
                ));
            }
            let target = b.target(addr.port());
            if !mine.insert(target) {
                return Err(Invalid::at(
                    b.address.span().start,
                    format!("vip[{i}].backend[{j}].address: {target} is listed twice for this VIP"),
                ));
            }
        }
        sources_check(i, vip)?;
        if let Some(l7) = &vip.l7 {
            l7_check(i, vip, l7)?;
        }
        tls_check(i, vip)?;
        backends += vip.backends.len();
        if backends > MAX_BACKENDS as usize {
            return Err(Invalid::at(
                vip.address.span().start,
                format!("too many backends in total: at most {MAX_BACKENDS}"),
            ));
        }
    }
    ring_memory_check(config)?;
    sites_check(config)
}

/// The L4 VIPs' Maglev tables fit the ring map's `MAX_VIPS` units.
fn ring_memory_check(config: &Config) -> Result<(), Invalid> {
    let mut units = 0u32;
    for (i, vip) in config.vips.iter().enumerate().filter(|(_, v)| v.l7.is_none()) {
        units += ring_units(vip.ring_size.get());
        if units > MAX_VIPS {
            return Err(Invalid::at(
                vip.address.span().start,
                format!(
                    "vip[{i}].ring_size: the L4 VIPs' Maglev tables up to this one need {units} of the {MAX_VIPS} \
                     units of ring memory (a table of up to 65537 slots takes one, of 1000003 sixteen): \
                     make some ring_size smaller"
                ),
            ));
        }
    }
    Ok(())
}

/// The entries that share an address: all L7, named, with one set of connection settings (the
/// first entry's), and match rules that leave each entry something to take.
fn sites_check(config: &Config) -> Result<(), Invalid> {
    use crate::l7::router::{Rule, conflicts};
    for (i, vip) in config.vips.iter().enumerate() {
        let at = vip.address.span().start;
        if vip.matches.is_some() && vip.l7.is_none() {
            return Err(Invalid::at(
                at,
                format!("vip[{i}].match: routing by path and host is done by the L7 proxy; add [vip.l7]"),
            ));
        }
        if let Some(name) = &vip.name
            && (name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            return Err(Invalid::at(at, format!("vip[{i}].name: `{name}` must be non-empty, without spaces or `/`")));
        }
        if let Err(e) = Rule::new(vip.matches.as_ref()) {
            return Err(Invalid::at(at, format!("vip[{i}].match: {e}")));
        }
    }
    let mut done = HashSet::new();
    for (first, vip) in config.vips.iter().enumerate() {
        let addr = (*vip.address.get_ref(), vip.protocol);
        if !done.insert(addr) {
            continue;
        }
        let group: Vec<usize> = (first..config.vips.len())
            .filter(|&k| (*config.vips[k].address.get_ref(), config.vips[k].protocol) == addr)
            .collect();
        if group.len() == 1 {
            continue;
        }
        let Some(head) = vip.l7.as_ref() else {
            let k = group[1];
            let at = config.vips[k].address.span().start;
            return Err(Invalid::at(at, format!("vip[{k}].address: {} ({:?}) is already defined", addr.0, addr.1)));
        };
        let mut names = HashSet::new();
        for &k in &group {
            let v = &config.vips[k];
            let at = v.address.span().start;
            let Some(l7) = &v.l7 else {
                return Err(Invalid::at(
                    at,
                    format!("vip[{k}].address: {} is also an L7 entry (vip[{first}]); add [vip.l7]", addr.0),
                ));
            };
            let Some(name) = &v.name else {
                return Err(Invalid::at(at, format!("vip[{k}].name: entries sharing {} need a name each", addr.0)));
            };
            if !names.insert(name) {
                return Err(Invalid::at(at, format!("vip[{k}].name: `{name}` is used twice at {}", addr.0)));
            }
            if k != first && !v.allow_sources.is_empty() {
                return Err(Invalid::at(
                    at,
                    format!(
                        "vip[{k}].allow_sources: the first entry of {} (vip[{first}]) holds the address's source filter",
                        addr.0
                    ),
                ));
            }
            if k != first && v.tls.is_some() {
                return Err(Invalid::at(
                    at,
                    format!("vip[{k}].tls: the first entry of {} (vip[{first}]) holds its TLS settings", addr.0),
                ));
            }
            let differs = [
                ("accept_proxy", l7.accept_proxy != head.accept_proxy),
                ("header_timeout_ms", l7.header_timeout_ms != head.header_timeout_ms),
                ("max_header_bytes", l7.max_header_bytes != head.max_header_bytes),
                ("max_connections", l7.max_connections != head.max_connections),
            ];
            if let Some((field, _)) = differs.iter().find(|(_, d)| *d) {
                return Err(Invalid::at(
                    at,
                    format!(
                        "vip[{k}].l7.{field}: a setting of the connection, which the address's first entry (vip[{first}]) sets"
                    ),
                ));
            }
        }
        let rules: Vec<_> = group
            .iter()
            .map(|&k| {
                (config.vips[k].matches.as_ref(), Rule::new(config.vips[k].matches.as_ref()).expect("checked above"))
            })
            .collect();
        if let Some((a, b, why)) = conflicts(&rules) {
            let (a, b) = (group[a], group[b]);
            let at = config.vips[b].address.span().start;
            let field = if a == b { format!("vip[{b}].match") } else { format!("vip[{b}].match (against vip[{a}])") };
            return Err(Invalid::at(at, format!("{field}: {why}")));
        }
    }
    Ok(())
}

/// A VIP's allowed sources: of its family, at most 1024.
fn sources_check(i: usize, vip: &super::Vip) -> Result<(), Invalid> {
    let (at, addr) = (vip.address.span().start, vip.address.get_ref());
    if let Some(c) = vip.allow_sources.iter().find(|c| c.addr.is_ipv4() != addr.is_ipv4()) {
        return Err(Invalid::at(at, format!("vip[{i}].allow_sources: {c} is not of the VIP's IP family")));
    }
    if vip.allow_sources.len() > 1024 {
        return Err(Invalid::at(at, format!("vip[{i}].allow_sources: at most 1024 prefixes per VIP")));
    }
    Ok(())
}

fn tls_check(i: usize, vip: &super::Vip) -> Result<(), Invalid> {
    let Some(tls) = &vip.tls else { return Ok(()) };
    let at = vip.address.span().start;
    if vip.l7.is_none() {
        return Err(Invalid::at(
            at,
            format!("vip[{i}].tls: TLS is terminated by the L7 proxy; add a [vip.l7] section"),
        ));
    }
    if tls.certificates.is_empty() {
        return Err(Invalid::at(at, format!("vip[{i}].tls.certificate: name at least one `cert` and `key`")));
    }
    if tls.redirect_http.is_some_and(|p| p == 0 || p == vip.address.get_ref().port()) {
        return Err(Invalid::at(at, format!("vip[{i}].tls.redirect_http: a port other than 0 and the VIP's own")));
    }
    Ok(())
}

/// Why `ip` cannot be a VIP or a backend: the unspecified address, multicast, broadcast.
fn unusable(ip: std::net::IpAddr) -> Option<&'static str> {
    match ip {
        _ if ip.is_unspecified() => Some("the unspecified address names no host"),
        _ if ip.is_multicast() => Some("a multicast address is not one host"),
        std::net::IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address is not one host"),
        _ => None,
    }
}

fn l7_check(i: usize, vip: &super::Vip, l7: &super::L7) -> Result<(), Invalid> {
    use super::StickyMode;
    let at = vip.address.span().start;
    if vip.protocol != super::Protocol::Tcp {
        return Err(Invalid::at(at, format!("vip[{i}].l7: HTTP needs protocol = \"tcp\"")));
    }
    if !vip.flow_table {
        return Err(Invalid::at(
            at,
            format!(
                "vip[{i}].flow_table: an L7 VIP's packets go to the local stack; the flow table is the L4 data path's"
            ),
        ));
    }
    if l7.sticky == StickyMode::Insert && l7.key_file.is_none() {
        return Err(Invalid::at(
            at,
            format!("vip[{i}].l7.key_file: insert mode signs its cookie; name a 0600 file with a random key"),
        ));
    }
    if l7.sticky == StickyMode::Hash
        && l7.hash_on != "client"
        && !(l7.hash_on.starts_with("cookie:") || l7.hash_on.starts_with("header:"))
    {
        return Err(Invalid::at(
            at,
            format!("vip[{i}].l7.hash_on: `{}` is not `client`, `cookie:NAME` or `header:NAME`", l7.hash_on),
        ));
    }
    if l7.max_attempts == 0 {
        return Err(Invalid::at(at, format!("vip[{i}].l7.max_attempts: at least 1")));
    }
    if l7.max_header_bytes < 8192 {
        return Err(Invalid::at(at, format!("vip[{i}].l7.max_header_bytes: at least 8192")));
    }
    if l7.max_connections == Some(0)
        || l7.header_timeout_ms == 0
        || l7.connect_timeout_ms == 0
        || l7.response_timeout_ms == 0
        || l7.tunnel_timeout_s == 0
    {
        return Err(Invalid::at(at, format!("vip[{i}].l7: limits and timeouts must be above 0")));
    }
    let mut routes = HashSet::new();
    for (j, b) in vip.backends.iter().enumerate() {
        let bat = b.address.span().start;
        match &b.route {
            Some(r) if r.is_empty() || r.contains([';', ',', ' ', '"', '=']) => {
                return Err(Invalid::at(
                    bat,
                    format!("vip[{i}].backend[{j}].route: `{r}` must be non-empty, without ; , = \" or spaces"),
                ));
            }
            // Our cookie's fields are separated by dots.
            Some(r) if r.contains('.') && l7.sticky == StickyMode::Insert => {
                return Err(Invalid::at(
                    bat,
                    format!(
                        "vip[{i}].backend[{j}].route: `{r}`: insert mode's routes have no dot (route-suffix ones may)"
                    ),
                ));
            }
            Some(r) if !routes.insert(r.clone()) => {
                return Err(Invalid::at(bat, format!("vip[{i}].backend[{j}].route: `{r}` is used twice in this VIP")));
            }
            None if l7.sticky != StickyMode::Hash => {
                return Err(Invalid::at(
                    bat,
                    format!(
                        "vip[{i}].backend[{j}].route: sticky sessions need a route per backend (Tomcat's jvmRoute)"
                    ),
                ));
            }
            _ => {}
        }
    }
    for (j, b) in vip.backends.iter().enumerate() {
        if let Some(r) = &b.redirect
            && !routes.contains(r)
        {
            return Err(Invalid::at(
                b.address.span().start,
                format!("vip[{i}].backend[{j}].redirect: no backend has route `{r}`"),
            ));
        }
        ajp_check(i, j, b, l7)?;
    }
    Ok(())
}

/// An AJP backend's settings: a secret only where AJP is spoken, no PROXY header (the AJP
/// connector does not read one), a secret that fits an AJP string.
fn ajp_check(i: usize, j: usize, b: &super::Backend, l7: &super::L7) -> Result<(), Invalid> {
    let at = b.address.span().start;
    let field = format!("vip[{i}].backend[{j}]");
    if b.protocol(l7) != super::BackendProtocol::Ajp13 {
        if b.secret.is_some() {
            return Err(Invalid::at(
                at,
                format!("{field}.secret: an AJP connector's secret; this backend speaks HTTP"),
            ));
        }
        return Ok(());
    }
    if b.send_proxy.or(l7.send_proxy).is_some() {
        return Err(Invalid::at(at, format!("{field}: an AJP connector reads no PROXY header; remove `send_proxy`")));
    }
    if let Some(s) = b.ajp_secret(l7)
        && (s.is_empty() || s.len() > 1024 || s.contains('\0'))
    {
        return Err(Invalid::at(at, format!("{field}.secret: 1 to 1024 bytes, without NUL")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("b.toml")).unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let e = err("interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\nweight = 3\n");
        assert!(e.starts_with("b.toml:4:"), "{e}");
        assert!(e.contains("unknown field `weight`"), "{e}");
    }

    #[test]
    fn ring_size_that_is_not_prime_is_rejected_on_its_line() {
        let e = err("interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\nring_size = 1000\n");
        assert!(e.starts_with("b.toml:4:"), "{e}");
        assert!(e.contains("not a prime"), "{e}");
    }

    #[test]
    fn a_backend_may_be_a_host_name_resolved_when_the_file_is_read() {
        let base = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"127.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n";
        let ok = format!("{base}[[vip.backend]]\naddress = \"localhost\"\nport = 8080\n");
        let c = Config::parse(&ok, Path::new("b.toml")).unwrap();
        assert_eq!(c.vips[0].backends[0].address.get_ref().to_string(), "127.0.0.1");
        let e = err(&format!("{base}[[vip.backend]]\naddress = \"no-such-host.invalid\"\n"));
        assert!(e.starts_with("b.toml:7:") && e.contains("host name `no-such-host.invalid` does not resolve"), "{e}");
        let e = err(&format!("{base}[[vip.backend]]\naddress = \"10.0.0.2:8080\"\n"));
        assert!(e.contains("neither an IP address nor a host name"), "{e}");
    }

    #[test]
    fn duplicate_vip_points_at_the_second_one() {
        let e =
            err("interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[[vip]]\naddress = \"10.0.0.1:80\"\n");
        assert!(e.starts_with("b.toml:5:"), "{e}");
        assert!(e.contains("vip[1].address"), "{e}");
    }

    #[test]
    fn backend_of_the_wrong_family_is_named() {
        let e = err(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[[vip.backend]]\naddress = \"fd00::2\"\n",
        );
        assert!(e.starts_with("b.toml:5:"), "{e}");
        assert!(e.contains("vip[0].backend[0].address"), "{e}");
    }

    #[test]
    fn unknown_state_lists_the_valid_ones() {
        let e = err(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nstate = \"paused\"\n",
        );
        assert!(e.starts_with("b.toml:6:"), "{e}");
        assert!(e.contains("active") && e.contains("drain"), "{e}");
    }

    #[test]
    fn health_check_timeout_longer_than_interval_is_rejected() {
        let e = err(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.health]\ninterval_ms = 100\ntimeout_ms = 200\n",
        );
        assert!(e.contains("vip[0].health") && e.contains("timeout_ms <= interval_ms"), "{e}");
    }

    #[test]
    fn bad_status_range_is_named() {
        let e = err(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.health]\nkind = \"http\"\nexpect = \"2xx\"\n",
        );
        assert!(e.starts_with("b.toml:6:") && e.contains("`2xx`"), "{e}");
    }

    #[test]
    fn an_l4_backend_on_another_port_is_refused() {
        let e = err(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080\n",
        );
        assert!(e.starts_with("b.toml:5:") && e.contains("vip[0].backend[0].port"), "{e}");
    }

    #[test]
    fn l7_vips_need_routes_and_a_key_for_insert_mode() {
        let base = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n";
        let e = err(&format!("{base}[vip.l7]\nsticky = \"insert\"\n"));
        assert!(e.contains("vip[0].l7.key_file"), "{e}");
        let e = err(&format!("{base}[vip.l7]\nsticky = \"route-suffix\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n"));
        assert!(e.contains("vip[0].backend[0].route") && e.starts_with("b.toml:7:"), "{e}");
        let e = err(&format!(
            "{base}[vip.l7]\nsticky = \"route-suffix\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nroute = \"t1\"\nredirect = \"t9\"\n"
        ));
        assert!(e.contains("redirect: no backend has route `t9`"), "{e}");
    }

    #[test]
    fn entries_sharing_an_address_are_named_l7_and_reachable() {
        let vip = |name: &str, extra: &str| {
            format!(
                "[[vip]]\naddress = \"10.0.0.1:80\"\nname = \"{name}\"\n{extra}[vip.l7]\nsticky = \"hash\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n"
            )
        };
        let base = "interfaces = [\"eth0\"]\n";
        let ok = format!("{base}{}{}", vip("shop", ""), vip("cart", "[vip.match]\npath = [\"/cart\"]\n"));
        Config::parse(&ok, Path::new("b.toml")).unwrap();
        let e = err(&format!("{base}{}{}", vip("shop", ""), vip("shop", "[vip.match]\npath = [\"/cart\"]\n")));
        assert!(e.contains("vip[1].name: `shop` is used twice"), "{e}");
        let e = err(&format!("{base}{}{}", vip("shop", ""), vip("all", "")));
        assert!(e.contains("vip[1].match (against vip[0])") && e.contains("unreachable"), "{e}");
        let e = err(&format!("{base}{}{}", vip("shop", ""), vip("cart", "[vip.match]\npath = [\"cart\"]\n")));
        assert!(e.contains("vip[1].match: `cart`: a path pattern starts with `/`"), "{e}");
        let e = err(&format!(
            "{base}{}{}",
            vip("shop", ""),
            vip("cart", "[vip.match]\npath = [\"/cart\"]\n")
                .replace("sticky = \"hash\"\n", "sticky = \"hash\"\naccept_proxy = true\n")
        ));
        assert!(e.contains("vip[1].l7.accept_proxy"), "{e}");
        let l4 = format!("{base}{}[[vip]]\naddress = \"10.0.0.1:80\"\n", vip("shop", ""));
        assert!(err(&l4).contains("already defined"), "{}", err(&l4));
    }

    #[test]
    fn ajp_settings_are_checked_where_they_apply() {
        let base = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n";
        let ok = format!(
            "{base}backend_protocol = \"ajp13\"\najp_secret = \"s\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8009\n"
        );
        Config::parse(&ok, Path::new("b.toml")).unwrap();
        let e = err(&format!("{base}[[vip.backend]]\naddress = \"10.0.0.2\"\nsecret = \"s\"\n"));
        assert!(e.contains("vip[0].backend[0].secret") && e.contains("speaks HTTP"), "{e}");
        let e =
            err(&format!("{base}send_proxy = \"v1\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nprotocol = \"ajp13\"\n"));
        assert!(e.contains("reads no PROXY header"), "{e}");
        let e = err(&format!("{base}[[vip.backend]]\naddress = \"10.0.0.2\"\nprotocol = \"ajp14\"\n"));
        assert!(e.contains("ajp13"), "{e}");
    }

    #[test]
    fn two_l7_backends_may_share_a_host_on_different_ports() {
        let ok = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n\
                  [[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8081\n";
        Config::parse(ok, Path::new("b.toml")).unwrap();
        let e = err(&ok.replace("8081", "8080"));
        assert!(e.contains("10.0.0.2:8080 is listed twice"), "{e}");
    }

    #[test]
    fn interface_mtu_names_an_attached_interface_and_a_usable_size() {
        let e = err("interfaces = [\"eth0\"]\ninterface_mtu = { eth1 = 1500 }\n");
        assert!(e.contains("interface_mtu.eth1") && e.contains("not one of `interfaces`"), "{e}");
        let e = err("interfaces = [\"eth0\"]\ninterface_mtu = { eth0 = 100 }\n");
        assert!(e.contains("interface_mtu.eth0") && e.contains("576"), "{e}");
    }

    /// Issue 10, defect 7: each of these was accepted and failed later, or never.
    #[test]
    fn addresses_ports_ring_sizes_and_weights_out_of_range_are_named() {
        let vip = |addr: &str, backend: &str| {
            format!(
                "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{addr}\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n{backend}"
            )
        };
        // Port 0 is every port (a wildcard VIP), which has no port to health-check or to listen on.
        let e = err(&vip("10.0.0.1:0", "[vip.backend.health]\n"));
        assert!(
            e.starts_with("b.toml:3:") && e.contains("vip[0].backend[0].health.port") && e.contains("port 0"),
            "{e}"
        );
        let e = err("interfaces = [\"eth0\"]\n[[vip]]\naddress = \"127.0.0.1:0\"\n[vip.l7]\nsticky = \"hash\"\n");
        assert!(e.contains("vip[0].address") && e.contains("L4"), "{e}");
        Config::parse(&vip("10.0.0.1:0", "[vip.backend.health]\nport = 22\n"), std::path::Path::new("b.toml"))
            .expect("a wildcard VIP with a health-check port");
        let e = err(&vip("0.0.0.0:80", ""));
        assert!(e.contains("vip[0].address") && e.contains("0.0.0.0"), "{e}");
        let e = err(&vip("[::]:80", "").replace("10.0.0.2", "::2"));
        assert!(e.contains("vip[0].address"), "{e}");
        let e = err("interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n\
                     [[vip.backend]]\naddress = \"10.0.0.2\"\nport = 0\n");
        assert!(e.contains("vip[0].backend[0].port") && e.contains("port 0"), "{e}");
        let e = err(&vip("10.0.0.1:80", "").replace("address = \"10.0.0.2\"", "address = \"0.0.0.0\""));
        assert!(e.contains("vip[0].backend[0].address") && e.contains("0.0.0.0"), "{e}");
        let e = err(&vip("10.0.0.1:80", "").replace("[[vip.backend]]", "ring_size = 2\n[[vip.backend]]"));
        assert!(e.contains("ring size 2") && e.contains("at least"), "{e}");
        let e = err(&vip("10.0.0.1:80", "weight = 70000\n"));
        assert!(e.contains("vip[0].backend[0].weight") && e.contains("65535"), "{e}");
    }

    #[test]
    fn samesite_takes_only_the_three_values_browsers_know() {
        let base = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n";
        let e = err(&format!("{base}samesite = \"Lox\"\n"));
        assert!(e.starts_with("b.toml:6:") && e.contains("Strict") && e.contains("Lax"), "{e}");
        Config::parse(&format!("{base}samesite = \"Lax\"\n"), Path::new("b.toml")).unwrap();
    }

    #[test]
    fn every_example_config_is_valid() {
        for (name, text) in [
            ("demo.toml", include_str!("../../../examples/demo.toml")),
            ("ipip.toml", include_str!("../../../examples/ipip.toml")),
            ("l7.toml", include_str!("../../../examples/l7.toml")),
            ("l7-tls.toml", include_str!("../../../examples/l7-tls.toml")),
        ] {
            Config::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn tls_needs_an_l7_vip_a_certificate_and_its_own_redirect_port() {
        let base = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:443\"\n";
        let cert = "[[vip.tls.certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
        let e = err(&format!("{base}[vip.tls]\n{cert}"));
        assert!(e.contains("vip[0].tls: TLS is terminated by the L7 proxy"), "{e}");
        let l7 = "[vip.l7]\nsticky = \"hash\"\n";
        let e = err(&format!("{base}{l7}[vip.tls]\ncertificate = []\n"));
        assert!(e.contains("vip[0].tls.certificate: name at least one"), "{e}");
        let e = err(&format!("{base}{l7}[vip.tls]\nredirect_http = 443\n{cert}"));
        assert!(e.contains("vip[0].tls.redirect_http"), "{e}");
        let e = err(&format!("{base}{l7}[vip.tls]\nmin_version = \"1.1\"\n{cert}"));
        assert!(e.contains("1.2") && e.contains("1.3"), "{e}");
        let e = err(&format!("{base}{l7}send_proxy = \"v3\"\n"));
        assert!(e.contains("v1") && e.contains("v2"), "{e}");
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../../examples/balancer.toml");
        let c = Config::parse(text, Path::new("examples/balancer.toml")).unwrap();
        assert!(!c.vips.is_empty());
    }
}
