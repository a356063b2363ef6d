//! Layer-2 frames the speaker reads and writes: ARP (IPv4) and NDP (IPv6).
//!
//! Model: every frame is decoded from a byte slice into a plain typed struct
//! (`ArpFrame`, `NdpFrame`) and encoded back into a fresh `Vec<u8>`; nothing
//! here touches a socket. Decoding validates what RFC 826 / RFC 4861 require
//! of a frame we would act on and returns a [`PacketError`] otherwise, so the
//! announcer never answers a frame the kernel itself would have dropped.
//! Decoding then encoding a valid captured frame yields the same bytes,
//! including Ethernet padding and reserved bits, which is what the tests check.
//!
//! [`bpf`] holds the classic BPF program that keeps the rest of the node's
//! traffic out of the speaker's packet socket.

mod arp;
pub mod bpf;
mod checksum;
mod ndp;
#[cfg(test)]
pub(crate) mod vectors;

use std::fmt;

pub use arp::{ArpFrame, ArpOp, arp_reply, gratuitous_arp};
pub use checksum::icmpv6_checksum;
pub use ndp::{
    NdpFrame, NdpMessage, NdpOption, NeighborAdvert, NeighborSolicit, neighbor_advertisement,
    unsolicited_na,
};

/// Ethernet II header length: destination, source, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A 48-bit Ethernet (EUI-48) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The Ethernet group address an IPv6 multicast address maps to
    /// (RFC 2464 section 7: 33:33 followed by the low 32 bits).
    pub fn for_ipv6_multicast(ip: &std::net::Ipv6Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a frame was not accepted. Every variant is a frame we ignore; none of
/// them is a bug in the speaker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("frame truncated: {needed} bytes needed, {have} available")]
    Truncated { needed: usize, have: usize },
    #[error("EtherType {0:#06x} is not the one expected")]
    EtherType(u16),
    #[error(
        "ARP for hardware type {htype}, protocol {ptype:#06x} ({hlen}/{plen}-byte addresses) is not Ethernet/IPv4"
    )]
    ArpFormat {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    #[error("ARP operation {0} is neither request nor reply")]
    ArpOperation(u16),
    #[error("IP version {0} in an IPv6 EtherType frame")]
    IpVersion(u8),
    #[error("IPv6 next header {0} is not ICMPv6 (extension headers are not accepted for NDP)")]
    NextHeader(u8),
    #[error("IPv6 payload length {payload} exceeds the {available} bytes in the frame")]
    PayloadLength { payload: usize, available: usize },
    #[error("NDP hop limit {0} is not 255, so the sender may be off-link (RFC 4861 7.1)")]
    HopLimit(u8),
    #[error("ICMPv6 checksum {found:#06x} does not match the computed {expected:#06x}")]
    Checksum { found: u16, expected: u16 },
    #[error("ICMPv6 type {0} is not a neighbor solicitation or advertisement")]
    IcmpType(u8),
    #[error("ICMPv6 code {0} is not 0")]
    IcmpCode(u8),
    #[error("NDP option at offset {offset} has length zero")]
    ZeroLengthOption { offset: usize },
    #[error("NDP option at offset {offset} claims {len} bytes, past the end of the message")]
    OptionOverrun { offset: usize, len: usize },
    #[error("link-layer address option of {0} units; Ethernet needs exactly 1")]
    LinkLayerOptionLength(u8),
    #[error("NDP target address is multicast")]
    MulticastTarget,
    #[error(
        "duplicate address detection solicitation breaks RFC 4861 7.1.1 (destination or source link-layer option)"
    )]
    InvalidDad,
    #[error("solicited neighbor advertisement sent to a multicast address")]
    SolicitedToMulticast,
    #[error("frame is not a request/solicitation, so there is nothing to answer")]
    NotASolicitation,
}

/// Bounds-checked slice access; the one place decoders learn a frame is short.
pub(crate) fn take(buf: &[u8], start: usize, len: usize) -> Result<&[u8], PacketError> {
    let end = start.checked_add(len).ok_or(PacketError::Truncated {
        needed: usize::MAX,
        have: buf.len(),
    })?;
    buf.get(start..end).ok_or(PacketError::Truncated {
        needed: end,
        have: buf.len(),
    })
}

pub(crate) fn be16(buf: &[u8], at: usize) -> Result<u16, PacketError> {
    let b = take(buf, at, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

pub(crate) fn be32(buf: &[u8], at: usize) -> Result<u32, PacketError> {
    let b = take(buf, at, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn mac_at(buf: &[u8], at: usize) -> Result<MacAddr, PacketError> {
    let b = take(buf, at, 6)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(b);
    Ok(MacAddr(m))
}

/// Either kind of frame the speaker's socket delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Arp(ArpFrame),
    Ndp(NdpFrame),
}

impl Frame {
    /// Dispatches on the EtherType.
    pub fn decode(buf: &[u8]) -> Result<Frame, PacketError> {
        match be16(buf, 12)? {
            ETHERTYPE_ARP => ArpFrame::decode(buf).map(Frame::Arp),
            ETHERTYPE_IPV6 => NdpFrame::decode(buf).map(Frame::Ndp),
            other => Err(PacketError::EtherType(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Arp(a) => a.encode(),
            Frame::Ndp(n) => n.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Any byte string either decodes or yields an error; it never panics.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes);
            let _ = ArpFrame::decode(&bytes);
            let _ = NdpFrame::decode(&bytes);
        }

        // Random bytes behind a valid header reach the deeper parsers (options,
        // checksums), which pure random input almost never would.
        #[test]
        fn random_ndp_bodies_never_panic(
            base in prop::sample::select(vectors::NDP_VECTORS.to_vec()),
            at in 54usize..86,
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..100,
        ) {
            let mut frame = base.to_vec();
            frame.truncate(at);
            frame.extend_from_slice(&tail);
            frame.truncate(cut.max(1).min(frame.len()));
            if let Ok(f) = Frame::decode(&frame) {
                // Anything accepted must re-encode to exactly what was read.
                prop_assert_eq!(f.encode(), frame);
            }
        }

        // Flipping any single byte of a valid frame is either still a valid
        // frame that re-encodes identically, or an error.
        #[test]
        fn single_byte_corruption(
            base in prop::sample::select(vectors::ALL_VECTORS.to_vec()),
            pos in 0usize..86,
            xor in 1u8..=255,
        ) {
            let mut frame = base.to_vec();
            let pos = pos % frame.len();
            frame[pos] ^= xor;
            if let Ok(f) = Frame::decode(&frame) {
                prop_assert_eq!(f.encode(), frame);
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for v in vectors::ALL_VECTORS {
            // ARP frames may lose their padding and stay valid; 42 is the floor.
            let min = if be16(v, 12).unwrap() == ETHERTYPE_ARP {
                42
            } else {
                v.len()
            };
            for len in 0..min {
                assert!(Frame::decode(&v[..len]).is_err(), "len {len} accepted");
            }
        }
    }

    #[test]
    fn ipv6_multicast_mac() {
        let ip: std::net::Ipv6Addr = "ff02::1:ff00:a".parse().unwrap();
        assert_eq!(
            MacAddr::for_ipv6_multicast(&ip).to_string(),
            "33:33:ff:00:00:0a"
        );
    }
}
