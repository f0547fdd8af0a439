//! A small frame builder. Every checksum is computed, so the kernel and the backends accept what
//! it builds, and tests can compare a program's output with an expected frame byte for byte.

use std::net::{IpAddr, SocketAddr};

/// Transport of a built frame.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP with these flags (`SYN`, `ACK`, …) and sequence number.
    Tcp { flags: u8, seq: u32 },
    /// UDP.
    Udp,
    /// ICMP echo request (`ICMPv6` for v6).
    IcmpEcho,
    /// Any ICMP (`ICMPv6` for v6) message: type, code and the header's last four bytes; the
    /// payload follows (for an error, the datagram it quotes).
    Icmp { ty: u8, code: u8, rest: [u8; 4] },
    /// Another IP protocol, with the payload as its header.
    Other(u8),
}

/// TCP flag bits.
pub mod tcp {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// PSH.
    pub const PSH: u8 = 0x08;
}

/// A frame to build.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Transport.
    pub l4: L4,
    /// IPv4 options (a multiple of 4 bytes), making the header longer than 20 bytes.
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment field (flags and offset), e.g. `0x2000` for more-fragments.
    pub ipv4_frag: u16,
    /// IPv4 identification. Default `0x1234`.
    pub ipv4_id: u16,
    /// IPv4 type of service / IPv6 traffic class.
    pub tos: u8,
    /// IPv6 extension headers to insert before the transport: (type, body). Bodies are padded to
    /// a multiple of 8 bytes including the two-byte header.
    pub ipv6_ext: Vec<(u8, Vec<u8>)>,
    /// Bytes after the transport header.
    pub payload: Vec<u8>,
}

/// MAC the test frames are addressed to (the balancer's).
pub const LB_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// MAC the test frames come from (the client or router).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xc1];

impl Frame {
    /// A TCP frame with `flags` from `src` to `dst`.
    pub fn tcp(src: &str, dst: &str, flags: u8) -> Self {
        Self::new(src, dst, L4::Tcp { flags, seq: 1000 })
    }

    /// A UDP frame from `src` to `dst`.
    pub fn udp(src: &str, dst: &str) -> Self {
        Self::new(src, dst, L4::Udp)
    }

    /// A frame with transport `l4`; addresses are `ip:port` (`[v6]:port`).
    pub fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            dst_mac: LB_MAC,
            src_mac: CLIENT_MAC,
            vlan: None,
            src: src.parse().expect("src is ip:port"),
            dst: dst.parse().expect("dst is ip:port"),
            l4,
            ipv4_options: Vec::new(),
            ipv4_frag: 0,
            ipv4_id: 0x1234,
            tos: 0,
            ipv6_ext: Vec::new(),
            payload: b"balancer".to_vec(),
        }
    }

    /// What a router sends about `response` (a packet it could not forward): an ICMP error of
    /// `ty`/`code`/`rest` (the header's last four bytes) from `router` to the response's source,
    /// quoting its IP header and the 28 bytes after it.
    pub fn icmp_error(router: &str, response: &Frame, (ty, code, rest): (u8, u8, [u8; 4])) -> Self {
        let r = response.build();
        let ip_len = if response.src.is_ipv4() { 20 } else { 40 };
        let to = SocketAddr::new(response.src.ip(), 0).to_string();
        let mut f = Frame::new(router, &to, L4::Icmp { ty, code, rest });
        f.payload = r[14..14 + ip_len + 28].to_vec();
        f
    }

    /// The same frame with a different source port.
    #[must_use]
    pub fn sport(mut self, port: u16) -> Self {
        self.src.set_port(port);
        self
    }

    /// The 5-tuple the data path tracks this frame under (the source port left out when the
    /// VIP ignores it), to compute with the user-space copy of the flow hash.
    pub fn flow_key(&self, ignore_source_port: bool) -> balancer_common::flow::FlowKey {
        let mut k = balancer_common::flow::FlowKey {
            src: [0; 16],
            dst: [0; 16],
            sport_be: if ignore_source_port { 0 } else { self.src.port().to_be() },
            dport_be: self.dst.port().to_be(),
            proto: self.proto(),
            family: 4,
            _pad: [0; 2],
        };
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                k.src[..4].copy_from_slice(&s.octets());
                k.dst[..4].copy_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                k.src = s.octets();
                k.dst = d.octets();
                k.family = 6;
            }
            _ => panic!("src and dst must be of one family"),
        }
        k
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        if let Some(id) = self.vlan {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 5 + self.ipv4_options.len() / 4;
                let total = ihl * 4 + l4.len();
                let mut h = vec![(4 << 4) | ihl as u8, self.tos];
                h.extend_from_slice(&(total as u16).to_be_bytes());
                h.extend_from_slice(&self.ipv4_id.to_be_bytes());
                h.extend_from_slice(&self.ipv4_frag.to_be_bytes());
                h.extend_from_slice(&[64, self.proto(), 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&self.ipv4_options);
                let c = checksum(&h, 0);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let mut chain: Vec<u8> = self.ipv6_ext.iter().map(|(t, _)| *t).collect();
                chain.push(self.proto());
                for (i, (_, body)) in self.ipv6_ext.iter().enumerate() {
                    let mut e = vec![chain[i + 1], 0];
                    e.extend_from_slice(body);
                    while e.len() % 8 != 0 {
                        e.push(0);
                    }
                    e[1] = (e.len() / 8 - 1) as u8;
                    ext.extend_from_slice(&e);
                }
                out.extend_from_slice(&[0x60 | (self.tos >> 4), self.tos << 4, 0, 0]);
                out.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                out.extend_from_slice(&[chain[0], 64]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                out.extend_from_slice(&ext);
            }
            _ => panic!("src and dst must be of one family"),
        }
        out.extend_from_slice(&l4);
        out
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp => 17,
            L4::IcmpEcho | L4::Icmp { .. } if self.src.is_ipv4() => 1,
            L4::IcmpEcho | L4::Icmp { .. } => 58,
            L4::Other(p) => p,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let (sp, dp) = (self.src.port().to_be_bytes(), self.dst.port().to_be_bytes());
        let mut h = match self.l4 {
            L4::Tcp { flags, seq } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sp);
                h.extend_from_slice(&dp);
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&0u32.to_be_bytes());
                h.extend_from_slice(&[5 << 4, flags]);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                h
            }
            L4::Udp => {
                let mut h = Vec::new();
                h.extend_from_slice(&sp);
                h.extend_from_slice(&dp);
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h
            }
            L4::IcmpEcho => {
                let t = if self.src.is_ipv4() { 8 } else { 128 };
                vec![t, 0, 0, 0, 0, 1, 0, 1]
            }
            L4::Icmp { ty, code, rest } => vec![ty, code, 0, 0, rest[0], rest[1], rest[2], rest[3]],
            L4::Other(_) => Vec::new(),
        };
        h.extend_from_slice(&self.payload);
        let csum_at = match self.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp => Some(6),
            L4::IcmpEcho | L4::Icmp { .. } => Some(2),
            L4::Other(_) => None,
        };
        if let Some(at) = csum_at {
            let pseudo = if matches!(self.l4, L4::IcmpEcho | L4::Icmp { .. }) && self.src.is_ipv4() {
                0
            } else {
                pseudo_header_sum(self.src.ip(), self.dst.ip(), self.proto(), h.len())
            };
            let mut c = checksum(&h, pseudo);
            if c == 0 && matches!(self.l4, L4::Udp) {
                c = 0xffff;
            }
            h[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        h
    }
}

/// Sum of the TCP/UDP pseudo header, to feed `checksum`.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut b = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&[0, proto]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    words(&b)
}

fn words(b: &[u8]) -> u32 {
    b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

/// The Internet checksum of `data` with `initial` (a pseudo-header sum) folded in.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial + words(data);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether the IPv4 header at `off` in `frame` has a valid checksum.
pub fn ipv4_header_ok(frame: &[u8], off: usize) -> bool {
    let ihl = usize::from(frame[off] & 0x0f) * 4;
    checksum(&frame[off..off + ihl], 0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ipv4_tcp_frame_has_valid_checksums() {
        let f = Frame::tcp("198.18.0.1:40000", "198.18.0.100:80", tcp::SYN).build();
        assert_eq!(f.len(), 14 + 20 + 20 + 8);
        assert!(ipv4_header_ok(&f, 14));
        let seg = &f[34..];
        let p = pseudo_header_sum("198.18.0.1".parse().unwrap(), "198.18.0.100".parse().unwrap(), 6, seg.len());
        assert_eq!(checksum(seg, p), 0);
    }

    #[test]
    fn ipv6_extension_headers_chain_to_the_transport() {
        let mut fr = Frame::udp("[2001:db8::1]:5000", "[2001:db8::100]:53");
        fr.ipv6_ext = vec![(0, vec![1, 2, 3])];
        let f = fr.build();
        assert_eq!(f[14 + 6], 0, "first next-header is hop-by-hop");
        assert_eq!(f[14 + 40], 17, "hop-by-hop chains to UDP");
        assert_eq!(f[14 + 41], 0, "8 bytes long");
    }
}
