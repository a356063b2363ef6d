//! IPv6 Neighbor Discovery (RFC 4861) frames: Ethernet + IPv6 + ICMPv6
//! Neighbor Solicitation / Advertisement with their options.
//!
//! Only the two message types the announcer handles are decoded. Extension
//! headers are refused rather than skipped: NDP is never sent with them in
//! practice, and a frame that needs them is one we have no reason to answer.

use std::net::Ipv6Addr;

use super::{
    ETHERNET_HEADER_LEN, ETHERTYPE_IPV6, MacAddr, PacketError, be16, be32, icmpv6_checksum, mac_at,
    take,
};

const IPV6_HEADER_LEN: usize = 40;
const ICMPV6_AT: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// RFC 4861 7.1: a hop limit of 255 proves the sender is on-link.
const NDP_HOP_LIMIT: u8 = 255;
const TYPE_NS: u8 = 135;
const TYPE_NA: u8 = 136;
/// Type, code, checksum, 32-bit reserved/flags word, 128-bit target.
const NDP_FIXED_LEN: usize = 24;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const FLAG_ROUTER: u32 = 1 << 31;
const FLAG_SOLICITED: u32 = 1 << 30;
const FLAG_OVERRIDE: u32 = 1 << 29;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An NDP option. Options other than the link-layer addresses (for example
/// the RFC 7527 nonce in Linux's DAD probes) are carried opaquely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdpOption {
    SourceLinkLayer(MacAddr),
    TargetLinkLayer(MacAddr),
    /// `data` is the option body after the type and length bytes; on encode it
    /// is zero-padded to a multiple of 8 bytes with its header.
    Other {
        kind: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSolicit {
    /// Must be sent as zero and ignored (RFC 4861 4.3); kept for exact re-encoding.
    pub reserved: u32,
    pub target: Ipv6Addr,
    pub options: Vec<NdpOption>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborAdvert {
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    /// The 29 reserved bits after the flags, kept for exact re-encoding.
    pub reserved: u32,
    pub target: Ipv6Addr,
    pub options: Vec<NdpOption>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdpMessage {
    Solicit(NeighborSolicit),
    Advert(NeighborAdvert),
}

/// An Ethernet frame carrying an IPv6 neighbor solicitation or advertisement.
/// The hop limit is always 255 (anything else is rejected), the checksum is
/// recomputed on encode and verified on decode, so neither is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdpFrame {
    pub eth_dst: MacAddr,
    pub eth_src: MacAddr,
    /// The 8-bit traffic class and 20-bit flow label, as the low 28 bits.
    pub traffic_class_flow: u32,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub message: NdpMessage,
    /// Bytes after the IPv6 payload (Ethernet padding), kept for exact re-encoding.
    pub padding: Vec<u8>,
}

fn ipv6_at(buf: &[u8], at: usize) -> Result<Ipv6Addr, PacketError> {
    let b = take(buf, at, 16)?;
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ok(Ipv6Addr::from(o))
}

/// ff02::1:ffXX:XXXX, the group a solicitation for an address is sent to.
fn is_solicited_node_multicast(ip: &Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..11] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0] && o[11] == 1 && o[12] == 0xff
}

fn decode_options(opts: &[u8], base: usize) -> Result<Vec<NdpOption>, PacketError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < opts.len() {
        let header = take(opts, at, 2).map_err(|_| PacketError::OptionOverrun {
            offset: base + at,
            len: 2,
        })?;
        let (kind, units) = (header[0], header[1]);
        if units == 0 {
            // RFC 4861 4.6: a zero length would make the parser loop forever;
            // the whole packet must be discarded.
            return Err(PacketError::ZeroLengthOption { offset: base + at });
        }
        let len = usize::from(units) * 8;
        let body = take(opts, at, len).map_err(|_| PacketError::OptionOverrun {
            offset: base + at,
            len,
        })?;
        out.push(match kind {
            OPT_SOURCE_LL | OPT_TARGET_LL => {
                if units != 1 {
                    return Err(PacketError::LinkLayerOptionLength(units));
                }
                let mac = mac_at(body, 2)?;
                if kind == OPT_SOURCE_LL {
                    NdpOption::SourceLinkLayer(mac)
                } else {
                    NdpOption::TargetLinkLayer(mac)
                }
            }
            _ => NdpOption::Other {
                kind,
                data: body[2..].to_vec(),
            },
        });
        at += len;
    }
    Ok(out)
}

fn encode_options(options: &[NdpOption], out: &mut Vec<u8>) {
    for o in options {
        let (kind, data): (u8, &[u8]) = match o {
            NdpOption::SourceLinkLayer(m) => (OPT_SOURCE_LL, &m.0),
            NdpOption::TargetLinkLayer(m) => (OPT_TARGET_LL, &m.0),
            NdpOption::Other { kind, data } => (*kind, data),
        };
        let len = (data.len() + 2).div_ceil(8) * 8;
        out.push(kind);
        // An over-long opaque option cannot be expressed; clamp rather than
        // wrap so the frame stays parseable.
        out.push(u8::try_from(len / 8).unwrap_or(u8::MAX));
        out.extend_from_slice(data);
        out.resize(out.len() + len - 2 - data.len(), 0);
    }
}

impl NdpFrame {
    pub fn decode(buf: &[u8]) -> Result<NdpFrame, PacketError> {
        let ethertype = be16(buf, 12)?;
        if ethertype != ETHERTYPE_IPV6 {
            return Err(PacketError::EtherType(ethertype));
        }
        let ip = take(buf, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN)?;
        let word0 = be32(ip, 0)?;
        let version = (word0 >> 28) as u8;
        if version != 6 {
            return Err(PacketError::IpVersion(version));
        }
        let payload_len = usize::from(be16(ip, 4)?);
        let (next_header, hop_limit) = (ip[6], ip[7]);
        if next_header != NEXT_HEADER_ICMPV6 {
            return Err(PacketError::NextHeader(next_header));
        }
        let src = ipv6_at(ip, 8)?;
        let dst = ipv6_at(ip, 24)?;
        let available = buf.len() - ICMPV6_AT;
        if payload_len > available {
            return Err(PacketError::PayloadLength {
                payload: payload_len,
                available,
            });
        }
        let icmp = &buf[ICMPV6_AT..ICMPV6_AT + payload_len];
        let fixed = take(icmp, 0, NDP_FIXED_LEN)?;
        let (kind, code) = (fixed[0], fixed[1]);
        if kind != TYPE_NS && kind != TYPE_NA {
            return Err(PacketError::IcmpType(kind));
        }
        if hop_limit != NDP_HOP_LIMIT {
            return Err(PacketError::HopLimit(hop_limit));
        }
        let found = be16(fixed, 2)?;
        let expected = icmpv6_checksum(&src, &dst, icmp);
        if found != expected {
            return Err(PacketError::Checksum { found, expected });
        }
        if code != 0 {
            return Err(PacketError::IcmpCode(code));
        }
        let word = be32(fixed, 4)?;
        let target = ipv6_at(fixed, 8)?;
        if target.is_multicast() {
            return Err(PacketError::MulticastTarget);
        }
        let options = decode_options(&icmp[NDP_FIXED_LEN..], ICMPV6_AT + NDP_FIXED_LEN)?;
        let message = if kind == TYPE_NS {
            let has_sll = options
                .iter()
                .any(|o| matches!(o, NdpOption::SourceLinkLayer(_)));
            if src.is_unspecified() && (!is_solicited_node_multicast(&dst) || has_sll) {
                return Err(PacketError::InvalidDad);
            }
            NdpMessage::Solicit(NeighborSolicit {
                reserved: word,
                target,
                options,
            })
        } else {
            let solicited = word & FLAG_SOLICITED != 0;
            if solicited && dst.is_multicast() {
                return Err(PacketError::SolicitedToMulticast);
            }
            NdpMessage::Advert(NeighborAdvert {
                router: word & FLAG_ROUTER != 0,
                solicited,
                override_flag: word & FLAG_OVERRIDE != 0,
                reserved: word & !(FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE),
                target,
                options,
            })
        };
        Ok(NdpFrame {
            eth_dst: mac_at(buf, 0)?,
            eth_src: mac_at(buf, 6)?,
            traffic_class_flow: word0 & 0x0fff_ffff,
            src,
            dst,
            message,
            padding: buf[ICMPV6_AT + payload_len..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut icmp = Vec::with_capacity(NDP_FIXED_LEN + 8);
        let (kind, word, target, options) = match &self.message {
            NdpMessage::Solicit(s) => (TYPE_NS, s.reserved, s.target, &s.options),
            NdpMessage::Advert(a) => {
                let mut w = a.reserved & !(FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE);
                for (set, flag) in [
                    (a.router, FLAG_ROUTER),
                    (a.solicited, FLAG_SOLICITED),
                    (a.override_flag, FLAG_OVERRIDE),
                ] {
                    if set {
                        w |= flag;
                    }
                }
                (TYPE_NA, w, a.target, &a.options)
            }
        };
        icmp.extend_from_slice(&[kind, 0, 0, 0]);
        icmp.extend_from_slice(&word.to_be_bytes());
        icmp.extend_from_slice(&target.octets());
        encode_options(options, &mut icmp);
        let sum = icmpv6_checksum(&self.src, &self.dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());

        let mut out = Vec::with_capacity(ICMPV6_AT + icmp.len() + self.padding.len());
        out.extend_from_slice(&self.eth_dst.0);
        out.extend_from_slice(&self.eth_src.0);
        out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        out.extend_from_slice(&((6 << 28) | (self.traffic_class_flow & 0x0fff_ffff)).to_be_bytes());
        // NDP messages are a few dozen bytes; u16 cannot overflow for any
        // options list this crate builds or accepts.
        out.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&[NEXT_HEADER_ICMPV6, NDP_HOP_LIMIT]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&icmp);
        out.extend_from_slice(&self.padding);
        out
    }

    /// The address the message is about.
    pub fn target(&self) -> Ipv6Addr {
        match &self.message {
            NdpMessage::Solicit(s) => s.target,
            NdpMessage::Advert(a) => a.target,
        }
    }

    fn options(&self) -> &[NdpOption] {
        match &self.message {
            NdpMessage::Solicit(s) => &s.options,
            NdpMessage::Advert(a) => &a.options,
        }
    }

    /// The sender's link-layer address from its source link-layer option.
    pub fn source_link_layer(&self) -> Option<MacAddr> {
        self.options().iter().find_map(|o| match o {
            NdpOption::SourceLinkLayer(m) => Some(*m),
            _ => None,
        })
    }

    /// True for a duplicate address detection probe (source ::).
    pub fn is_dad(&self) -> bool {
        matches!(self.message, NdpMessage::Solicit(_)) && self.src.is_unspecified()
    }
}

fn advert(
    eth_dst: MacAddr,
    our_mac: MacAddr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    solicited: bool,
) -> NdpFrame {
    NdpFrame {
        eth_dst,
        eth_src: our_mac,
        traffic_class_flow: 0,
        // The announced address is assigned-as-if on this node, so it is a
        // valid source (RFC 4861 7.2.4) and needs no link-local lookup.
        src: target,
        dst,
        message: NdpMessage::Advert(NeighborAdvert {
            router: false,
            solicited,
            // Set so that a takeover replaces the previous leader's MAC in
            // neighbours' caches.
            override_flag: true,
            reserved: 0,
            target,
            options: vec![NdpOption::TargetLinkLayer(our_mac)],
        }),
        padding: Vec::new(),
    }
}

/// Our advertisement answering `solicit` for its target, at `our_mac`.
///
/// A DAD solicitation (from ::) has no unicast address to answer, so RFC 4861
/// 7.2.4 sends the answer to all-nodes with the solicited flag clear,
/// whatever `solicited` says.
pub fn neighbor_advertisement(
    solicit: &NdpFrame,
    our_mac: MacAddr,
    solicited: bool,
) -> Result<NdpFrame, PacketError> {
    let NdpMessage::Solicit(ns) = &solicit.message else {
        return Err(PacketError::NotASolicitation);
    };
    if solicit.is_dad() {
        return Ok(advert(
            MacAddr::for_ipv6_multicast(&ALL_NODES),
            our_mac,
            ALL_NODES,
            ns.target,
            false,
        ));
    }
    // Prefer the link-layer address the solicitor asked us to use.
    let eth_dst = solicit.source_link_layer().unwrap_or(solicit.eth_src);
    Ok(advert(eth_dst, our_mac, solicit.src, ns.target, solicited))
}

/// An unsolicited advertisement of `ip` at `mac` to all-nodes with the
/// override flag set, sent on takeover (RFC 4861 7.2.6).
pub fn unsolicited_na(ip: Ipv6Addr, mac: MacAddr) -> NdpFrame {
    advert(
        MacAddr::for_ipv6_multicast(&ALL_NODES),
        mac,
        ALL_NODES,
        ip,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

    const A: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const B: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]);
    const LB: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xa);

    /// Rewrites the checksum so that a test can break one other rule at a time.
    fn fix_checksum(frame: &mut [u8]) {
        let src = ipv6_at(frame, 22).unwrap();
        let dst = ipv6_at(frame, 38).unwrap();
        let sum = icmpv6_checksum(&src, &dst, &frame[ICMPV6_AT..]);
        frame[56..58].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn vectors_decode_and_reencode_identically() {
        for v in NDP_VECTORS {
            let f = NdpFrame::decode(v).unwrap();
            assert_eq!(f.encode(), v, "{f:?}");
        }
    }

    #[test]
    fn solicitation_fields() {
        let f = NdpFrame::decode(&NS).unwrap();
        assert_eq!(f.src, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(f.target(), LB);
        assert_eq!(f.source_link_layer(), Some(A));
        assert!(!f.is_dad());
    }

    #[test]
    fn dad_solicitation_keeps_nonce_option() {
        let f = NdpFrame::decode(&DAD_NS).unwrap();
        assert!(f.is_dad());
        let NdpMessage::Solicit(ns) = &f.message else {
            panic!("not a solicitation")
        };
        assert_eq!(
            ns.options,
            vec![NdpOption::Other {
                kind: 14,
                data: vec![0x5a, 0x3c, 0x91, 0xe0, 0x7b, 0x24]
            }]
        );
    }

    #[test]
    fn advert_flags() {
        let NdpMessage::Advert(s) = NdpFrame::decode(&SOLICITED_NA).unwrap().message else {
            panic!("not an advert")
        };
        assert!(s.solicited && s.override_flag && !s.router);
        assert_eq!(s.options, vec![NdpOption::TargetLinkLayer(B)]);
        let NdpMessage::Advert(u) = NdpFrame::decode(&UNSOLICITED_NA).unwrap().message else {
            panic!("not an advert")
        };
        assert!(!u.solicited && u.override_flag);
    }

    #[test]
    fn builders_produce_the_captured_bytes() {
        let ns = NdpFrame::decode(&NS).unwrap();
        assert_eq!(
            neighbor_advertisement(&ns, B, true).unwrap().encode(),
            SOLICITED_NA
        );
        assert_eq!(unsolicited_na(LB, B).encode(), UNSOLICITED_NA);
    }

    #[test]
    fn dad_is_answered_to_all_nodes_unsolicited() {
        let dad = NdpFrame::decode(&DAD_NS).unwrap();
        let na = neighbor_advertisement(&dad, B, true).unwrap();
        assert_eq!(na.dst, ALL_NODES);
        assert_eq!(na.eth_dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        // Same bytes as the takeover announcement: S must be clear.
        assert_eq!(na.encode(), UNSOLICITED_NA);
    }

    #[test]
    fn answering_without_source_option_uses_ethernet_source() {
        let mut ns = NdpFrame::decode(&NS).unwrap();
        if let NdpMessage::Solicit(s) = &mut ns.message {
            s.options.clear();
        }
        ns.eth_src = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x03]);
        let na = neighbor_advertisement(&ns, B, true).unwrap();
        assert_eq!(na.eth_dst, ns.eth_src);
        // Re-decoding our own output must succeed.
        assert_eq!(NdpFrame::decode(&na.encode()).unwrap(), na);
    }

    #[test]
    fn advert_is_not_answered() {
        let na = NdpFrame::decode(&SOLICITED_NA).unwrap();
        assert_eq!(
            neighbor_advertisement(&na, A, true),
            Err(PacketError::NotASolicitation)
        );
    }

    #[test]
    fn hop_limit_must_be_255() {
        let mut v = NS;
        v[21] = 64; // hop limit is not covered by the ICMPv6 checksum
        assert_eq!(NdpFrame::decode(&v), Err(PacketError::HopLimit(64)));
    }

    #[test]
    fn bad_checksum_is_rejected() {
        let mut v = NS;
        v[57] ^= 1;
        assert!(matches!(
            NdpFrame::decode(&v),
            Err(PacketError::Checksum { .. })
        ));
    }

    #[test]
    fn zero_length_option_is_rejected() {
        let mut v = NS;
        v[79] = 0;
        fix_checksum(&mut v);
        assert_eq!(
            NdpFrame::decode(&v),
            Err(PacketError::ZeroLengthOption { offset: 78 })
        );
    }

    #[test]
    fn overlong_option_is_rejected() {
        let mut v = NS;
        v[79] = 2; // 16 bytes claimed, 8 present
        fix_checksum(&mut v);
        assert_eq!(
            NdpFrame::decode(&v),
            Err(PacketError::OptionOverrun {
                offset: 78,
                len: 16
            })
        );
    }

    #[test]
    fn link_layer_option_must_be_one_unit() {
        // Append 8 bytes and declare a 2-unit source link-layer option.
        let mut v = NS.to_vec();
        v.extend_from_slice(&[0; 8]);
        v[19] = 40; // payload length 32 -> 40
        v[79] = 2;
        fix_checksum(&mut v);
        assert_eq!(
            NdpFrame::decode(&v),
            Err(PacketError::LinkLayerOptionLength(2))
        );
    }

    #[test]
    fn truncated_option_header_is_rejected() {
        // Payload grows by one byte: a lone option type with no length byte.
        let mut v = NS.to_vec();
        v.push(1);
        v[19] = 33;
        fix_checksum(&mut v);
        assert_eq!(
            NdpFrame::decode(&v),
            Err(PacketError::OptionOverrun { offset: 86, len: 2 })
        );
    }

    #[test]
    fn payload_length_beyond_frame_is_rejected() {
        let mut v = NS;
        v[19] = 33;
        assert_eq!(
            NdpFrame::decode(&v),
            Err(PacketError::PayloadLength {
                payload: 33,
                available: 32
            })
        );
    }

    #[test]
    fn protocol_rules() {
        // DAD probe must not carry a source link-layer option.
        let mut dad = NS;
        dad[22..38].fill(0);
        fix_checksum(&mut dad);
        assert_eq!(NdpFrame::decode(&dad), Err(PacketError::InvalidDad));

        // Solicited advertisement to a multicast destination.
        let mut na = UNSOLICITED_NA;
        na[58] |= 0x40;
        fix_checksum(&mut na);
        assert_eq!(
            NdpFrame::decode(&na),
            Err(PacketError::SolicitedToMulticast)
        );

        // Multicast target.
        let mut ns = NS;
        ns[62] = 0xff;
        fix_checksum(&mut ns);
        assert_eq!(NdpFrame::decode(&ns), Err(PacketError::MulticastTarget));

        // Non-zero code.
        let mut ns = NS;
        ns[55] = 1;
        fix_checksum(&mut ns);
        assert_eq!(NdpFrame::decode(&ns), Err(PacketError::IcmpCode(1)));

        // ICMPv6 echo request is not NDP.
        let mut echo = NS;
        echo[54] = 128;
        fix_checksum(&mut echo);
        assert_eq!(NdpFrame::decode(&echo), Err(PacketError::IcmpType(128)));

        // Hop-by-hop options header in front of ICMPv6.
        let mut hbh = NS;
        hbh[20] = 0;
        assert_eq!(NdpFrame::decode(&hbh), Err(PacketError::NextHeader(0)));
    }

    #[test]
    fn reserved_bits_and_flow_label_survive() {
        let mut v = SOLICITED_NA;
        v[15] = 0x0a; // traffic class / flow label bits
        v[61] = 0x01; // a reserved flag bit
        fix_checksum(&mut v);
        let f = NdpFrame::decode(&v).unwrap();
        assert_eq!(f.traffic_class_flow, 0x000a_0000);
        assert_eq!(f.encode(), v);
    }
}
