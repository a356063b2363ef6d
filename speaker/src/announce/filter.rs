//! The classic BPF program attached to every announcer socket.
//!
//! It is [`crate::packet::bpf::arp_and_neighbor_solicit_filter`] with two
//! changes the announcer needs:
//!
//! * ICMPv6 neighbour *advertisements* (type 136) are accepted as well, so that
//!   another host advertising a led IPv6 address is seen and reported as a
//!   conflict. Advertisements are rare (answers to this node's own
//!   solicitations and unsolicited takeover announcements), so this lets
//!   no bulk traffic through.
//! * Frames the node itself sends (`PACKET_OUTGOING`, read through the
//!   `SKF_AD_PKTTYPE` ancillary load) are dropped in the kernel. A packet
//!   socket bound to `ETH_P_ALL` sees outgoing frames too; without this the
//!   speaker would read back its own replies and the kernel's own ARP.
//!
//! Everything else (all IP traffic, other ICMPv6, routed NDP with a hop limit
//! below 255) is dropped before it is copied to user space.

use crate::packet::bpf::{
    ACCEPT_LEN, BPF_ABS, BPF_B, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SockFilter,
};

/// `SKF_AD_OFF + SKF_AD_PKTTYPE` from `linux/filter.h`: loading from this
/// offset yields the skb's packet type instead of packet data.
pub const SKF_AD_PKTTYPE_OFFSET: u32 = (-0x1000i32) as u32 + 4;
/// `PACKET_OUTGOING` from `linux/if_packet.h`.
pub const PACKET_OUTGOING: u32 = 4;

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter {
        code: BPF_JMP | BPF_JEQ | BPF_K,
        jt,
        jf,
        k,
    }
}

/// The announcer's filter. Jump offsets are relative to the next instruction.
pub fn announcer_filter() -> Vec<SockFilter> {
    const ACCEPT: u8 = 12;
    const DROP: u8 = 13;
    vec![
        /* 0 */ stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_PKTTYPE_OFFSET),
        /* 1 */ jeq(PACKET_OUTGOING, DROP - 2, 0),
        /* 2 */ stmt(BPF_LD | BPF_H | BPF_ABS, 12), // EtherType
        /* 3 */ jeq(0x0806, ACCEPT - 4, 0),
        /* 4 */ jeq(0x86dd, 0, DROP - 5),
        /* 5 */ stmt(BPF_LD | BPF_B | BPF_ABS, 20), // IPv6 next header
        /* 6 */ jeq(58, 0, DROP - 7),
        /* 7 */ stmt(BPF_LD | BPF_B | BPF_ABS, 21), // IPv6 hop limit
        /* 8 */ jeq(255, 0, DROP - 9),
        /* 9 */ stmt(BPF_LD | BPF_B | BPF_ABS, 54), // ICMPv6 type
        /* 10 */ jeq(135, ACCEPT - 11, 0),
        /* 11 */ jeq(136, 0, DROP - 12),
        /* 12 */ stmt(BPF_RET | BPF_K, ACCEPT_LEN),
        /* 13 */ stmt(BPF_RET | BPF_K, 0),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::announce::testvectors::*;
    use crate::packet::bpf::arp_and_neighbor_solicit_filter;
    use crate::packet::{MacAddr, gratuitous_arp, unsolicited_na};

    /// `PACKET_HOST`: addressed to this host.
    pub const PACKET_HOST: u32 = 0;

    /// A classic BPF interpreter for the opcodes used here, with the kernel's
    /// rules: a load past the end of the packet drops it, and the ancillary
    /// offset yields `pkttype`.
    pub fn run(prog: &[SockFilter], pkt: &[u8], pkttype: u32) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        // Classic BPF only jumps forward, so a program runs at most len steps.
        for _ in 0..=prog.len() {
            let i = prog[pc];
            pc += 1;
            match i.code {
                c if c & 0x07 == BPF_LD && c & 0xe0 == BPF_ABS => {
                    if i.k == SKF_AD_PKTTYPE_OFFSET {
                        a = pkttype;
                        continue;
                    }
                    let size = match c & 0x18 {
                        BPF_W => 4,
                        BPF_H => 2,
                        _ => 1,
                    };
                    let at = i.k as usize;
                    let Some(bytes) = pkt.get(at..at + size) else {
                        return 0;
                    };
                    a = bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b));
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_K => return i.k,
                other => panic!("opcode {other:#x} not supported by the test interpreter"),
            }
        }
        panic!("program did not return");
    }

    fn accepts(pkt: &[u8]) -> bool {
        run(&announcer_filter(), pkt, PACKET_HOST) != 0
    }

    /// IPv4/UDP and IPv6/UDP, ICMPv6 echo: the bulk traffic that must stay out.
    fn other_traffic() -> Vec<Vec<u8>> {
        let mut v4 = ARP_REQUEST[..14].to_vec();
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        v4.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        v4.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        v4.extend_from_slice(&[0; 8]);
        let mut v6udp = NS.to_vec();
        v6udp[20] = 17;
        let mut echo = NS.to_vec();
        echo[54] = 128;
        let mut routed_ns = NS.to_vec();
        routed_ns[21] = 64;
        vec![v4, v6udp, echo, routed_ns]
    }

    #[test]
    fn accepts_arp_solicitations_and_advertisements() {
        let mac = MacAddr([0, 0, 0x5e, 0, 0x53, 2]);
        let na = unsolicited_na("2001:db8:ffff::7".parse().unwrap(), mac).encode();
        let garp = gratuitous_arp("198.51.100.7".parse().unwrap(), mac).encode();
        for f in [
            &ARP_REQUEST[..],
            &NS,
            &DAD_NS,
            &na,
            &garp,
            &SOLICITED_NA,
            &CAPTURED_KERNEL_ARP_REQUEST,
            &CAPTURED_ARPING_REQUEST,
            &CAPTURED_KERNEL_NS,
        ] {
            assert_eq!(run(&announcer_filter(), f, PACKET_HOST), ACCEPT_LEN);
        }
    }

    #[test]
    fn drops_other_traffic_and_our_own_frames() {
        for f in other_traffic() {
            assert!(!accepts(&f), "{f:02x?}");
        }
        assert_eq!(run(&announcer_filter(), &ARP_REQUEST, PACKET_OUTGOING), 0);
        assert!(!accepts(&NS[..54]), "cut before the ICMPv6 type");
        assert!(!accepts(&[]));
    }

    #[test]
    fn is_a_superset_of_the_packet_filter_for_incoming_frames() {
        let base = arp_and_neighbor_solicit_filter();
        let mut frames: Vec<Vec<u8>> = other_traffic();
        frames.extend([ARP_REQUEST.to_vec(), NS.to_vec(), DAD_NS.to_vec()]);
        for f in frames {
            if run(&base, &f, PACKET_HOST) != 0 {
                assert!(accepts(&f), "{f:02x?}");
            }
        }
    }
}
