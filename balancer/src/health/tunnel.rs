//! The tunnel check (`kind = "tunnel"`): a TCP SYN to the VIP, inside an IPIP header to the
//! backend as the data path sends a client's packets, answered with SYN-ACK only when the
//! backend still decapsulates (`balancer decap attach`), holds the VIP and listens on the port.
//! A check of the backend's own address passes on a backend that lost either, which then
//! silently drops its share of the VIP's new flows.
//!
//! The SYN's inner source is this host's address towards the backend, so the SYN-ACK comes
//! back here unencapsulated and is read from a raw socket (the kernel, which has no such
//! connection, answers it with a reset, which also clears the backend's half-open entry). The
//! outer source is in `ipip_source_v4`, which the decap program requires. IPv4 only.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

/// Where the check sends: the VIP (inner destination) and the outer source prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// The VIP and the port to check.
    pub vip: SocketAddrV4,
    /// `ipip_source_v4`: the /16 the decap program accepts outer sources from.
    pub outer_prefix: Ipv4Addr,
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Why a tunnelled check failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelFailed {
    /// The kernel has no route (so no source address) towards the backend.
    #[error("no route to {backend}: {source}")]
    NoRoute {
        /// The backend.
        backend: Ipv4Addr,
        /// Why.
        source: io::Error,
    },
    /// A raw socket could not be made, filtered, written or read (`CAP_NET_RAW`).
    #[error("{what}: {source}")]
    Socket {
        /// Which step.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Nothing answered for the VIP in time.
    #[error(
        "no SYN-ACK from {vip} through the tunnel within {} ms: the backend has lost the VIP on its loopback, its \
         decap program, or answers by another route (its rp_filter must allow sources routed elsewhere: 0 or 2)",
        .limit.as_millis()
    )]
    NoAnswer {
        /// The VIP the SYN was for.
        vip: SocketAddrV4,
        /// How long it waited.
        limit: Duration,
    },
    /// The backend has the VIP but nothing listens on its port.
    #[error("{0} answered the tunnelled SYN with a reset: nothing listens there")]
    Reset(SocketAddrV4),
}

fn socket(what: &'static str) -> impl FnOnce(io::Error) -> TunnelFailed {
    move |source| TunnelFailed::Socket { what, source }
}

/// Sends the SYN to `backend` and waits up to `limit` for the VIP's answer.
///
/// # Errors
/// What went wrong, for the log line of a flip: a reset, no answer, or a socket error.
pub fn probe(tunnel: Tunnel, backend: Ipv4Addr, limit: Duration) -> Result<(), TunnelFailed> {
    let local = source_towards(backend).map_err(|source| TunnelFailed::NoRoute { backend, source })?;
    let recv = raw_socket(libc::IPPROTO_TCP).map_err(socket("raw socket"))?;
    only_from(&recv, *tunnel.vip.ip()).map_err(socket("socket filter"))?;
    let send = raw_socket(libc::IPPROTO_RAW).map_err(socket("raw socket"))?;
    let r = rand_bytes();
    let sport = 32768 + u16::from_ne_bytes([r[0], r[1]]) % 28000;
    let seq = u32::from_ne_bytes(rand_bytes());
    let packet = syn_in_ipip(tunnel, backend, SocketAddrV4::new(local, sport), seq);
    send_to(&send, &packet, backend).map_err(socket("send"))?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 128];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TunnelFailed::NoAnswer { vip: tunnel.vip, limit });
        }
        let Some(n) = recv_within(&recv, &mut buf, left).map_err(socket("receive"))? else { continue };
        match answer(&buf[..n], tunnel.vip, SocketAddrV4::new(local, sport), seq) {
            Some(flags) if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK => return Ok(()),
            Some(flags) if flags & TCP_RST != 0 => {
                return Err(TunnelFailed::Reset(tunnel.vip));
            }
            _ => {}
        }
    }
}

/// The address this host sends from towards `to` (the kernel's route choice).
fn source_towards(to: Ipv4Addr) -> io::Result<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(SocketAddr::new(IpAddr::V4(to), 9))?;
    match s.local_addr()?.ip() {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(io::Error::other("an IPv6 source for an IPv4 backend")),
    }
}

/// The outer IPv4 header, the inner IPv4 header and a TCP SYN, checksums filled in.
pub fn syn_in_ipip(tunnel: Tunnel, backend: Ipv4Addr, from: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&tunnel.vip.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_SYN;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&from.ip().octets());
    pseudo[4..8].copy_from_slice(&tunnel.vip.ip().octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let inner = ipv4_header(*from.ip(), *tunnel.vip.ip(), 6, 20 + 20);
    let p = tunnel.outer_prefix.octets();
    let outer = ipv4_header(Ipv4Addr::new(p[0], p[1], 0xff, 0xfe), backend, 4, 20 + 40);
    [&outer[..], &inner[..], &tcp[..]].concat()
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// The Internet checksum over `parts`, each of even length.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 =
        parts.iter().flat_map(|p| p.chunks(2)).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP flags of `packet` (an IPv4 datagram as a raw socket reads it) when it is the VIP's
/// answer to our SYN: from `vip` to `us`, acknowledging `seq + 1` (a reset to a SYN carries
/// that acknowledgement too).
pub fn answer(packet: &[u8], vip: SocketAddrV4, us: SocketAddrV4, seq: u32) -> Option<u8> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    let tcp = packet.get(ihl..ihl + 20)?;
    let ok = packet[9] == 6
        && packet[12..16] == vip.ip().octets()
        && packet[16..20] == us.ip().octets()
        && tcp[0..2] == vip.port().to_be_bytes()
        && tcp[2..4] == us.port().to_be_bytes()
        && tcp[8..12] == seq.wrapping_add(1).to_be_bytes();
    ok.then_some(tcp[13])
}

fn rand_bytes() -> [u8; 4] {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    b
}

fn raw_socket(proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A classic BPF filter so the raw socket copies only packets from `vip`, not every TCP
/// packet the host receives while the check waits.
fn only_from(fd: &OwnedFd, vip: Ipv4Addr) -> io::Result<()> {
    let mut code = [
        libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 12 }, // ld [12]: the source address
        libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: u32::from(vip) }, // jeq vip
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0xffff }, // ret: keep
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 },  // ret: drop
    ];
    let prog = libc::sock_fprog { len: code.len() as u16, filter: code.as_mut_ptr() };
    // SAFETY: `prog` points at `code`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn send_to(fd: &OwnedFd, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `addr` are valid for the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One datagram, or `None` when none came within `wait`.
fn recv_within(fd: &OwnedFd, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(wait.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        return Ok(None);
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    Ok(Some(n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syn_is_an_ipip_datagram_from_the_prefix_with_valid_checksums() {
        let t = Tunnel { vip: "198.51.100.10:80".parse().unwrap(), outer_prefix: Ipv4Addr::new(172, 16, 0, 0) };
        let p = syn_in_ipip(t, Ipv4Addr::new(198, 18, 0, 3), "198.18.0.1:40000".parse().unwrap(), 7);
        assert_eq!(p.len(), 60);
        assert_eq!(
            (p[9], &p[12..14], &p[16..20]),
            (4, &[172u8, 16][..], &[198u8, 18, 0, 3][..]),
            "outer: IPIP from the prefix"
        );
        assert_eq!(checksum(&[&p[..20]]), 0);
        assert_eq!(
            (p[29], &p[32..36], &p[36..40]),
            (6, &[198u8, 18, 0, 1][..], &[198u8, 51, 100, 10][..]),
            "inner: us to the VIP"
        );
        assert_eq!(checksum(&[&p[20..40]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&p[32..36]);
        pseudo[4..8].copy_from_slice(&p[36..40]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(&[&pseudo, &p[40..]]), 0, "TCP checksum");
        assert_eq!(p[53], TCP_SYN);
    }

    #[test]
    fn only_the_vips_answer_to_this_syn_counts() {
        let vip: SocketAddrV4 = "198.51.100.10:80".parse().unwrap();
        let us: SocketAddrV4 = "198.18.0.1:40000".parse().unwrap();
        let reply = |from: [u8; 4], sport: u16, ack: u32, flags: u8| {
            let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
            p.extend_from_slice(&from);
            p.extend_from_slice(&us.ip().octets());
            p.extend_from_slice(&sport.to_be_bytes());
            p.extend_from_slice(&us.port().to_be_bytes());
            p.extend_from_slice(&[0; 4]);
            p.extend_from_slice(&ack.to_be_bytes());
            p.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
            p
        };
        assert_eq!(answer(&reply([198, 51, 100, 10], 80, 8, 0x12), vip, us, 7), Some(0x12));
        assert_eq!(answer(&reply([198, 51, 100, 10], 80, 8, 0x14), vip, us, 7), Some(0x14));
        assert_eq!(answer(&reply([198, 51, 100, 10], 80, 9, 0x12), vip, us, 7), None, "another SYN's");
        assert_eq!(answer(&reply([198, 51, 100, 11], 80, 8, 0x12), vip, us, 7), None, "another address");
        assert_eq!(answer(&reply([198, 51, 100, 10], 81, 8, 0x12), vip, us, 7), None, "another port");
        assert_eq!(answer(&[0x45, 0, 0], vip, us, 7), None, "truncated");
    }
}
