//! ARP over Ethernet for IPv4 (RFC 826), plus the RFC 5227 announcement.

use std::net::Ipv4Addr;

use super::{ETHERNET_HEADER_LEN, ETHERTYPE_ARP, MacAddr, PacketError, be16, mac_at, take};

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const ARP_LEN: usize = 28;
/// Ethernet header plus the Ethernet/IPv4 ARP body; anything after is padding.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// An Ethernet frame carrying an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: MacAddr,
    pub eth_src: MacAddr,
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
    /// Bytes after the ARP body. Received frames carry the padding up to the
    /// 60-byte Ethernet minimum; kept so that re-encoding is exact.
    pub padding: Vec<u8>,
}

impl ArpFrame {
    pub fn decode(buf: &[u8]) -> Result<ArpFrame, PacketError> {
        let ethertype = be16(buf, 12)?;
        if ethertype != ETHERTYPE_ARP {
            return Err(PacketError::EtherType(ethertype));
        }
        let arp = take(buf, ETHERNET_HEADER_LEN, ARP_LEN)?;
        let htype = be16(arp, 0)?;
        let ptype = be16(arp, 2)?;
        let (hlen, plen) = (arp[4], arp[5]);
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || hlen != 6 || plen != 4 {
            return Err(PacketError::ArpFormat {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        let op = match be16(arp, 6)? {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => return Err(PacketError::ArpOperation(other)),
        };
        let ip = |at: usize| Ipv4Addr::new(arp[at], arp[at + 1], arp[at + 2], arp[at + 3]);
        Ok(ArpFrame {
            eth_dst: mac_at(buf, 0)?,
            eth_src: mac_at(buf, 6)?,
            op,
            sender_mac: mac_at(arp, 8)?,
            sender_ip: ip(14),
            target_mac: mac_at(arp, 18)?,
            target_ip: ip(24),
            padding: buf[ARP_FRAME_LEN..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ARP_FRAME_LEN + self.padding.len());
        out.extend_from_slice(&self.eth_dst.0);
        out.extend_from_slice(&self.eth_src.0);
        out.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        out.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        out.extend_from_slice(&PTYPE_IPV4.to_be_bytes());
        out.extend_from_slice(&[6, 4]);
        out.extend_from_slice(&self.op.code().to_be_bytes());
        out.extend_from_slice(&self.sender_mac.0);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac.0);
        out.extend_from_slice(&self.target_ip.octets());
        out.extend_from_slice(&self.padding);
        out
    }

    /// An RFC 5227 probe: a request from 0.0.0.0 checking whether an address
    /// is in use. We must still answer it for an address we own, or the
    /// prober would take our address.
    pub fn is_probe(&self) -> bool {
        self.op == ArpOp::Request && self.sender_ip.is_unspecified()
    }

    /// A gratuitous ARP (announcement or gratuitous reply): the sender states
    /// its own binding, so there is nothing to answer.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip && !self.sender_ip.is_unspecified()
    }
}

/// Our answer to `request`: `our_mac` owns the requested address. The caller
/// decides whether the address is ours to announce.
pub fn arp_reply(request: &ArpFrame, our_mac: MacAddr) -> Result<ArpFrame, PacketError> {
    if request.op != ArpOp::Request || request.is_gratuitous() {
        return Err(PacketError::NotASolicitation);
    }
    // Unicast to the requester's hardware address as stated inside ARP (RFC
    // 826); for a probe the target IP stays 0.0.0.0, as Linux answers it.
    Ok(ArpFrame {
        eth_dst: request.sender_mac,
        eth_src: our_mac,
        op: ArpOp::Reply,
        sender_mac: our_mac,
        sender_ip: request.target_ip,
        target_mac: request.sender_mac,
        target_ip: request.sender_ip,
        padding: Vec::new(),
    })
}

/// An RFC 5227 ARP announcement of `ip` at `mac`, broadcast on takeover so
/// that neighbours replace their cached entry for the address.
pub fn gratuitous_arp(ip: Ipv4Addr, mac: MacAddr) -> ArpFrame {
    ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: mac,
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: ip,
        // RFC 5227 2.3: the target hardware address is ignored and SHOULD be zero.
        target_mac: MacAddr::ZERO,
        target_ip: ip,
        padding: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

    const A: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const B: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]);
    const LB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn request_decodes_and_reencodes() {
        let f = ArpFrame::decode(&ARP_REQUEST).unwrap();
        assert_eq!(f.op, ArpOp::Request);
        assert_eq!(f.eth_dst, MacAddr::BROADCAST);
        assert_eq!((f.sender_mac, f.sender_ip), (A, NODE));
        assert_eq!((f.target_mac, f.target_ip), (MacAddr::ZERO, LB));
        assert_eq!(f.padding, vec![0; 18]);
        assert!(!f.is_probe() && !f.is_gratuitous());
        assert_eq!(f.encode(), ARP_REQUEST);
    }

    #[test]
    fn reply_and_gratuitous_reencode() {
        for v in [&ARP_REPLY[..], &GRATUITOUS_ARP[..]] {
            assert_eq!(ArpFrame::decode(v).unwrap().encode(), v);
        }
        let g = ArpFrame::decode(&GRATUITOUS_ARP).unwrap();
        assert!(g.is_gratuitous());
    }

    #[test]
    fn builders_produce_the_captured_bytes() {
        let req = ArpFrame::decode(&ARP_REQUEST).unwrap();
        assert_eq!(arp_reply(&req, B).unwrap().encode(), ARP_REPLY);
        assert_eq!(gratuitous_arp(LB, B).encode(), GRATUITOUS_ARP);
    }

    #[test]
    fn replies_only_to_requests() {
        let reply = ArpFrame::decode(&ARP_REPLY).unwrap();
        assert_eq!(arp_reply(&reply, B), Err(PacketError::NotASolicitation));
        let announce = ArpFrame::decode(&GRATUITOUS_ARP).unwrap();
        assert_eq!(arp_reply(&announce, A), Err(PacketError::NotASolicitation));
    }

    #[test]
    fn probe_is_answered_to_the_prober() {
        let mut probe = ArpFrame::decode(&ARP_REQUEST).unwrap();
        probe.sender_ip = Ipv4Addr::UNSPECIFIED;
        assert!(probe.is_probe());
        let r = arp_reply(&probe, B).unwrap();
        assert_eq!(r.eth_dst, A);
        assert_eq!(r.target_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!((r.sender_ip, r.sender_mac), (LB, B));
    }

    #[test]
    fn rejects_non_ethernet_ipv4_and_unknown_ops() {
        let mut v = ARP_REQUEST;
        v[15] = 6; // hardware type IEEE 802
        assert!(matches!(
            ArpFrame::decode(&v),
            Err(PacketError::ArpFormat { htype: 6, .. })
        ));
        let mut v = ARP_REQUEST;
        v[19] = 16; // IPv6-sized protocol address
        assert!(matches!(
            ArpFrame::decode(&v),
            Err(PacketError::ArpFormat { plen: 16, .. })
        ));
        let mut v = ARP_REQUEST;
        v[21] = 3; // RARP request
        assert_eq!(ArpFrame::decode(&v), Err(PacketError::ArpOperation(3)));
        let mut v = ARP_REQUEST;
        v[12] = 0x80;
        v[13] = 0x35; // RARP EtherType
        assert_eq!(ArpFrame::decode(&v), Err(PacketError::EtherType(0x8035)));
    }
}
