//! Header sizes, EtherTypes and IP protocol numbers, as on the wire: one list for the parser,
//! the encapsulation and the decapsulation.

/// Ethernet header without a VLAN tag.
pub const ETH_LEN: usize = 14;
/// One 802.1Q tag.
pub const VLAN_LEN: usize = 4;
/// Ethernet header with one 802.1Q tag.
pub const VLAN_ETH_LEN: usize = ETH_LEN + VLAN_LEN;
/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// IPv6 fixed header.
pub const IPV6_LEN: usize = 40;
/// TCP header without options.
pub const TCP_LEN: usize = 20;
/// Offset of the flags byte in the TCP header, and the two flags that tell a connection's first
/// packet.
pub const TCP_FLAGS: usize = 13;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
/// UDP header.
pub const UDP_LEN: usize = 8;
/// ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP.
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP.
pub const IPPROTO_IPV6: u8 = 41;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 hop-by-hop options header.
pub const IPV6_HOPOPTS: u8 = 0;
/// IPv6 routing header.
pub const IPV6_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPV6_FRAGMENT: u8 = 44;
/// IPv6 destination options header.
pub const IPV6_DSTOPTS: u8 = 60;
