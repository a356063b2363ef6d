//! What to do with one received frame: the announcer's decision logic, pure.
//!
//! [`respond`] maps (frame bytes, interface, our MAC, the led table) to an
//! [`Action`]: a reply to send at once, a conflict to report, or a reason to
//! ignore the frame. The receive loop only performs the action and counts it,
//! so every protocol rule is tested here on captured bytes.
//!
//! Rules:
//! * An ARP request (including an RFC 5227 probe from 0.0.0.0) whose target is
//!   led on this interface gets an ARP reply unicast to the requester.
//! * A neighbour solicitation whose target is led on this interface gets a
//!   solicited, override advertisement unicast to the solicitor; a DAD probe
//!   (source `::`) gets an unsolicited advertisement to all-nodes (RFC 4861
//!   7.2.4), which also defends the address against the prober.
//! * A frame in which another MAC claims a led address is a [`Action::Conflict`]:
//!   an ARP packet whose sender IP is led (replies, gratuitous ARP in request or
//!   reply form), a neighbour advertisement for a led target, or a
//!   solicitation sent *from* a led address.
//! * Everything else is ignored, in particular requests for addresses that are
//!   not led (or led only on another interface): the kernel or the real owner
//!   answers those.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::packet::{
    ArpFrame, ArpOp, Frame, MacAddr, NdpFrame, NdpMessage, NdpOption, PacketError, arp_reply,
    neighbor_advertisement,
};

/// One led address: the interfaces it is announced on, and a generation
/// number that changes each time the address is (re)taken, so that a burst
/// started for an earlier takeover can tell it is stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedEntry {
    pub interfaces: BTreeSet<String>,
    pub epoch: u64,
}

/// The addresses this node leads, as the receive loops see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedTable {
    by_ip: HashMap<IpAddr, LedEntry>,
}

impl LedTable {
    pub fn insert(&mut self, ip: IpAddr, entry: LedEntry) {
        self.by_ip.insert(ip, entry);
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&LedEntry> {
        self.by_ip.get(ip)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &LedEntry)> {
        self.by_ip.iter()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// True when `ip` is led and announced on `iface`.
    pub fn answers(&self, ip: IpAddr, iface: &str) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|e| e.interfaces.contains(iface))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `frame` on the interface; counts as a request and a response for `ip`.
    Reply {
        ip: IpAddr,
        frame: Vec<u8>,
    },
    /// Another host claims `ip`, which we lead on this interface.
    Conflict {
        ip: IpAddr,
        other_mac: MacAddr,
    },
    Ignore(Ignored),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    Malformed(PacketError),
    /// The frame concerns an address not led on this interface.
    NotLed,
    /// Sent by this interface (looped back); never a conflict with ourselves.
    OwnFrame,
    /// A valid frame with nothing to answer (a reply, an advertisement of our
    /// own MAC, a request from a multicast sender).
    NothingToAnswer,
}

/// Decides what to do with `frame`, received on `iface` whose MAC is `our_mac`.
pub fn respond(frame: &[u8], iface: &str, our_mac: MacAddr, led: &LedTable) -> Action {
    match Frame::decode(frame) {
        Err(e) => Action::Ignore(Ignored::Malformed(e)),
        Ok(_) if frame.get(6..12) == Some(&our_mac.0[..]) => Action::Ignore(Ignored::OwnFrame),
        Ok(Frame::Arp(a)) => respond_arp(&a, iface, our_mac, led),
        Ok(Frame::Ndp(n)) => respond_ndp(&n, iface, our_mac, led),
    }
}

fn respond_arp(a: &ArpFrame, iface: &str, our_mac: MacAddr, led: &LedTable) -> Action {
    let sender = IpAddr::V4(a.sender_ip);
    // Someone states that a led address is at their MAC. A probe (sender
    // 0.0.0.0) claims nothing and is answered below instead.
    if !a.sender_ip.is_unspecified() && led.answers(sender, iface) && a.sender_mac != our_mac {
        return Action::Conflict {
            ip: sender,
            other_mac: a.sender_mac,
        };
    }
    let target = IpAddr::V4(a.target_ip);
    if a.op != ArpOp::Request || a.is_gratuitous() {
        return Action::Ignore(Ignored::NothingToAnswer);
    }
    if !led.answers(target, iface) {
        return Action::Ignore(Ignored::NotLed);
    }
    if a.sender_mac.is_multicast() {
        // A unicast reply to a group address would be a storm amplifier.
        return Action::Ignore(Ignored::NothingToAnswer);
    }
    match arp_reply(a, our_mac) {
        Ok(r) => Action::Reply {
            ip: target,
            frame: r.encode(),
        },
        Err(_) => Action::Ignore(Ignored::NothingToAnswer),
    }
}

fn respond_ndp(n: &NdpFrame, iface: &str, our_mac: MacAddr, led: &LedTable) -> Action {
    let target = IpAddr::V6(n.target());
    match &n.message {
        NdpMessage::Advert(adv) => {
            if !led.answers(target, iface) {
                return Action::Ignore(Ignored::NotLed);
            }
            // The target link-layer option is what neighbours will cache; an
            // advertisement without one names the Ethernet sender.
            let claimed = adv
                .options
                .iter()
                .find_map(|o| match o {
                    NdpOption::TargetLinkLayer(m) => Some(*m),
                    _ => None,
                })
                .unwrap_or(n.eth_src);
            if claimed == our_mac {
                Action::Ignore(Ignored::NothingToAnswer)
            } else {
                Action::Conflict {
                    ip: target,
                    other_mac: claimed,
                }
            }
        }
        NdpMessage::Solicit(_) => {
            let src = IpAddr::V6(n.src);
            if !n.is_dad() && led.answers(src, iface) {
                let other = n.source_link_layer().unwrap_or(n.eth_src);
                if other != our_mac {
                    return Action::Conflict {
                        ip: src,
                        other_mac: other,
                    };
                }
            }
            if !led.answers(target, iface) {
                return Action::Ignore(Ignored::NotLed);
            }
            if !n.is_dad() && n.source_link_layer().unwrap_or(n.eth_src).is_multicast() {
                return Action::Ignore(Ignored::NothingToAnswer);
            }
            match neighbor_advertisement(n, our_mac, true) {
                Ok(na) => Action::Reply {
                    ip: target,
                    frame: na.encode(),
                },
                Err(_) => Action::Ignore(Ignored::NothingToAnswer),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::testvectors::*;
    use crate::packet::{gratuitous_arp, unsolicited_na};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const B: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]);
    const LB4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xa);

    fn led(ips: &[IpAddr], iface: &str) -> LedTable {
        let mut t = LedTable::default();
        for ip in ips {
            t.insert(
                *ip,
                LedEntry {
                    interfaces: [iface.to_string()].into(),
                    epoch: 1,
                },
            );
        }
        t
    }

    fn both() -> LedTable {
        led(&[LB4.into(), LB6.into()], "eth0")
    }

    #[test]
    fn arp_request_for_led_address_gets_the_captured_reply() {
        assert_eq!(
            respond(&ARP_REQUEST, "eth0", B, &both()),
            Action::Reply {
                ip: LB4.into(),
                frame: ARP_REPLY.to_vec()
            }
        );
    }

    #[test]
    fn ns_for_led_address_gets_the_captured_advertisement() {
        assert_eq!(
            respond(&NS, "eth0", B, &both()),
            Action::Reply {
                ip: LB6.into(),
                frame: SOLICITED_NA.to_vec()
            }
        );
    }

    #[test]
    fn captured_linux_and_arping_requests_are_answered() {
        let lb4: Ipv4Addr = "198.51.100.7".parse().unwrap();
        let lb6: Ipv6Addr = "2001:db8:ffff::7".parse().unwrap();
        let t = led(&[lb4.into(), lb6.into()], "lan0");
        for req in [&CAPTURED_KERNEL_ARP_REQUEST[..], &CAPTURED_ARPING_REQUEST] {
            let Action::Reply { ip, frame } = respond(req, "lan0", B, &t) else {
                panic!("not answered: {req:02x?}");
            };
            assert_eq!(ip, IpAddr::V4(lb4));
            let r = ArpFrame::decode(&frame).unwrap();
            assert_eq!((r.eth_dst, r.eth_src, r.op), (A, B, ArpOp::Reply));
            assert_eq!((r.sender_mac, r.sender_ip), (B, lb4));
            assert_eq!(
                (r.target_mac, r.target_ip),
                (A, "198.51.100.3".parse::<Ipv4Addr>().unwrap())
            );
        }
        let Action::Reply { ip, frame } = respond(&CAPTURED_KERNEL_NS, "lan0", B, &t) else {
            panic!("NS not answered");
        };
        assert_eq!(ip, IpAddr::V6(lb6));
        // Decoding verifies the checksum, hop limit and option layout.
        let na = NdpFrame::decode(&frame).unwrap();
        assert_eq!((na.eth_dst, na.eth_src), (A, B));
        assert_eq!(na.dst, "2001:db8:ffff::3".parse::<Ipv6Addr>().unwrap());
        let NdpMessage::Advert(adv) = na.message else {
            panic!("not an advertisement")
        };
        assert!(adv.solicited && adv.override_flag && !adv.router);
        assert_eq!(adv.target, lb6);
        assert_eq!(adv.options, vec![NdpOption::TargetLinkLayer(B)]);
        // Not led here: the same captured frames get no answer.
        let elsewhere = led(&[lb4.into(), lb6.into()], "eth1");
        for f in [&CAPTURED_KERNEL_ARP_REQUEST[..], &CAPTURED_KERNEL_NS] {
            assert_eq!(
                respond(f, "lan0", B, &elsewhere),
                Action::Ignore(Ignored::NotLed)
            );
        }
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes() {
        let Action::Reply { ip, frame } = respond(&DAD_NS, "eth0", B, &both()) else {
            panic!("DAD not answered");
        };
        assert_eq!(ip, IpAddr::V6(LB6));
        // Same bytes as our takeover announcement: all-nodes, S clear, O set.
        assert_eq!(frame, unsolicited_na(LB6, B).encode());
    }

    #[test]
    fn not_led_or_led_elsewhere_is_not_answered() {
        let empty = LedTable::default();
        let other_if = led(&[LB4.into(), LB6.into()], "eth1");
        for table in [&empty, &other_if] {
            for f in [&ARP_REQUEST[..], &NS, &DAD_NS] {
                assert_eq!(
                    respond(f, "eth0", B, table),
                    Action::Ignore(Ignored::NotLed)
                );
            }
        }
        // Leading the IPv6 address does not answer ARP for a different one.
        let v6only = led(&[LB6.into()], "eth0");
        assert_eq!(
            respond(&ARP_REQUEST, "eth0", B, &v6only),
            Action::Ignore(Ignored::NotLed)
        );
    }

    #[test]
    fn arp_probe_is_answered_not_a_conflict() {
        let mut probe = ArpFrame::decode(&ARP_REQUEST).unwrap();
        probe.sender_ip = Ipv4Addr::UNSPECIFIED;
        let Action::Reply { frame, .. } = respond(&probe.encode(), "eth0", B, &both()) else {
            panic!("probe not answered");
        };
        let r = ArpFrame::decode(&frame).unwrap();
        assert_eq!((r.op, r.sender_mac, r.sender_ip), (ArpOp::Reply, B, LB4));
        assert_eq!(r.eth_dst, A);
    }

    #[test]
    fn another_mac_claiming_a_led_address_is_a_conflict() {
        // We are A; the captured frames were sent by B for the same addresses.
        let t = both();
        let conflict4 = Action::Conflict {
            ip: LB4.into(),
            other_mac: B,
        };
        assert_eq!(respond(&ARP_REPLY, "eth0", A, &t), conflict4);
        assert_eq!(
            respond(&gratuitous_arp(LB4, B).encode(), "eth0", A, &t),
            conflict4
        );
        let mut garp_reply = gratuitous_arp(LB4, B);
        garp_reply.op = ArpOp::Reply;
        assert_eq!(respond(&garp_reply.encode(), "eth0", A, &t), conflict4);
        let conflict6 = Action::Conflict {
            ip: LB6.into(),
            other_mac: B,
        };
        assert_eq!(respond(&SOLICITED_NA, "eth0", A, &t), conflict6);
        assert_eq!(
            respond(&unsolicited_na(LB6, B).encode(), "eth0", A, &t),
            conflict6
        );
        // A solicitation sourced from the led address: the sender uses it.
        let mut ns = NdpFrame::decode(&NS).unwrap();
        ns.src = LB6;
        ns.eth_src = B;
        ns.message = match ns.message {
            NdpMessage::Solicit(mut s) => {
                s.target = "2001:db8::1".parse().unwrap();
                s.options = vec![NdpOption::SourceLinkLayer(B)];
                NdpMessage::Solicit(s)
            }
            m => m,
        };
        assert_eq!(respond(&ns.encode(), "eth0", A, &t), conflict6);
    }

    #[test]
    fn claims_not_about_led_addresses_are_ignored() {
        let t = LedTable::default();
        assert_eq!(
            respond(&ARP_REPLY, "eth0", A, &t),
            Action::Ignore(Ignored::NothingToAnswer)
        );
        assert_eq!(
            respond(&SOLICITED_NA, "eth0", A, &t),
            Action::Ignore(Ignored::NotLed)
        );
    }

    #[test]
    fn our_own_frames_are_ignored() {
        // A GARP we sent, looped back: same MAC, not a conflict.
        let garp = gratuitous_arp(LB4, B).encode();
        assert_eq!(
            respond(&garp, "eth0", B, &both()),
            Action::Ignore(Ignored::OwnFrame)
        );
        assert_eq!(
            respond(&unsolicited_na(LB6, B).encode(), "eth0", B, &both()),
            Action::Ignore(Ignored::OwnFrame)
        );
    }

    #[test]
    fn advertisement_of_our_mac_by_a_proxy_is_not_a_conflict() {
        // Another sender (A) relaying our binding (B) is not claiming the address.
        let mut na = NdpFrame::decode(&SOLICITED_NA).unwrap();
        na.eth_src = A;
        assert_eq!(
            respond(&na.encode(), "eth0", B, &both()),
            Action::Ignore(Ignored::NothingToAnswer)
        );
    }

    #[test]
    fn request_from_multicast_sender_is_not_answered() {
        let mut req = ArpFrame::decode(&ARP_REQUEST).unwrap();
        req.sender_mac = MacAddr::BROADCAST;
        req.eth_src = MacAddr([0x02, 0, 0, 0, 0, 9]);
        assert_eq!(
            respond(&req.encode(), "eth0", B, &both()),
            Action::Ignore(Ignored::NothingToAnswer)
        );
    }

    #[test]
    fn malformed_frames_are_ignored() {
        assert!(matches!(
            respond(&ARP_REQUEST[..30], "eth0", B, &both()),
            Action::Ignore(Ignored::Malformed(_))
        ));
        let mut bad = NS;
        bad[57] ^= 1; // checksum
        assert!(matches!(
            respond(&bad, "eth0", B, &both()),
            Action::Ignore(Ignored::Malformed(_))
        ));
    }

    /// Deterministic xorshift, so that the storm is reproducible.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn malformed_storm_does_not_panic_and_never_answers_unled() {
        let t = led(
            &[
                LB4.into(),
                LB6.into(),
                "198.51.100.7".parse::<IpAddr>().unwrap(),
                "2001:db8:ffff::7".parse::<IpAddr>().unwrap(),
            ],
            "eth0",
        );
        let bases: [&[u8]; 6] = [
            &ARP_REQUEST,
            &NS,
            &DAD_NS,
            &SOLICITED_NA,
            &CAPTURED_ARPING_REQUEST,
            &CAPTURED_KERNEL_NS,
        ];
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut replies = 0;
        for i in 0..200_000 {
            let base = bases[i % bases.len()];
            let mut f = base.to_vec();
            // Corrupt 1-4 bytes, sometimes truncate or extend.
            for _ in 0..=(xorshift(&mut s) % 4) {
                let at = (xorshift(&mut s) as usize) % f.len();
                f[at] = xorshift(&mut s) as u8;
            }
            match xorshift(&mut s) % 4 {
                0 => f.truncate((xorshift(&mut s) as usize) % (f.len() + 1)),
                1 => f.extend((0..xorshift(&mut s) % 40).map(|_| xorshift(&mut s) as u8)),
                _ => {}
            }
            if let Action::Reply { ip, frame } = respond(&f, "eth0", B, &t) {
                replies += 1;
                assert!(t.answers(ip, "eth0"), "answered for {ip}");
                // Whatever we send must itself be a valid frame.
                assert!(Frame::decode(&frame).is_ok());
            }
        }
        // Corruptions of padding or reserved bits keep frames valid; a storm
        // that never produced a reply would not exercise the reply path.
        assert!(replies > 0);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = respond(&bytes, "eth0", B, &both());
        }
    }
}
