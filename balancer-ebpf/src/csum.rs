//! Checksums the data path computes: the Internet checksum (RFC 1071) over fixed-size byte
//! arrays, and its incremental update (RFC 1624).

/// Adds the big-endian 16-bit words of `bytes` (an even count) to `sum`.
#[inline(always)]
pub fn add<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// Folds a sum of words into the one's-complement checksum.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The IPv4 header checksum of a 20-byte header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    fold(add(h, 0))
}

/// The checksum of an IPv4 header given as five 32-bit words in packet byte order (checksum
/// field zero), in the same byte order: the one's-complement sum does not depend on the order
/// of the bytes in its words (RFC 1071 §2), so the words are added as they are.
#[inline(always)]
pub fn ipv4_header_words(h: &[u32; 5]) -> u16 {
    let mut sum = h.iter().map(|&w| u64::from(w)).sum::<u64>();
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32)
}

/// `check` after one 16-bit word it covers changed from `old` to `new` (RFC 1624, eqn. 3).
#[inline(always)]
pub fn replace(check: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}
