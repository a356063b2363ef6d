//! The Internet checksum (RFC 1071) as ICMPv6 uses it: over a pseudo-header
//! of source, destination, upper-layer length and next header (RFC 8200 8.1,
//! RFC 4443 2.3) followed by the message with its checksum field as zero.

use std::net::Ipv6Addr;

const NEXT_HEADER_ICMPV6: u8 = 58;

/// Checksum of `message` (an ICMPv6 message whose bytes 2..4, the checksum
/// field, are ignored) sent from `src` to `dst`.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    // Upper-layer length is 32 bits; messages are far below 4 GiB, but do not
    // silently wrap if one ever were not.
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    add(&len.to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message.get(..2).unwrap_or(message));
    add(message.get(4..).unwrap_or(&[]));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071's worked example sums 00 01 f2 03 f4 f5 f6 f7 to 0xddf2; placing
    // those bytes after a zero pseudo-header (all-zero addresses, length 10
    // counted below) lets the RFC's arithmetic be checked through our API.
    #[test]
    fn matches_rfc1071_example_arithmetic() {
        let zero = Ipv6Addr::UNSPECIFIED;
        // Message: two bytes, two ignored checksum bytes, then the rest.
        let msg = [0x00, 0x01, 0xaa, 0xbb, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        // Pseudo-header contributes length 10 and next header 58.
        let expected_sum: u32 = 0xddf2 + 10 + 58;
        let folded = (expected_sum & 0xffff) + (expected_sum >> 16);
        assert_eq!(icmpv6_checksum(&zero, &zero, &msg), !(folded as u16));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        let zero = Ipv6Addr::UNSPECIFIED;
        let a = icmpv6_checksum(&zero, &zero, &[1, 2, 0, 0, 3]);
        let b = icmpv6_checksum(&zero, &zero, &[1, 2, 0, 0, 3, 0]);
        // The length in the pseudo-header differs by one.
        assert_eq!(a.wrapping_sub(b), 1);
    }
}
