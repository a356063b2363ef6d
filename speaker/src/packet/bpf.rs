//! Classic BPF program for the speaker's packet socket.
//!
//! A packet socket sees every frame on the interface; without a filter the
//! kernel would copy all of the node's traffic into the speaker. The program
//! accepts ARP (any operation) and ICMPv6 neighbor solicitations carried
//! directly in IPv6 with hop limit 255, and drops everything else in the
//! kernel. It is plain data here; the socket layer converts it to
//! `libc::sock_filter` for `SO_ATTACH_FILTER`.
//!
//! The instruction list is the same as `tcpdump -d 'arp or (ip6[6] = 58 and
//! ip6[7] = 255 and ip6[40] = 135)'` prints for an Ethernet link (checked with
//! tcpdump 4.99), apart from the accept length.

/// One classic BPF instruction, laid out like `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcode parts from linux/filter.h.
pub const BPF_LD: u16 = 0x00;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_W: u16 = 0x00;
pub const BPF_H: u16 = 0x08;
pub const BPF_B: u16 = 0x10;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_K: u16 = 0x00;

/// Bytes of an accepted frame to deliver: all of any Ethernet frame.
pub const ACCEPT_LEN: u32 = 0x0004_0000;

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

/// The filter program. Jump offsets are relative to the next instruction.
pub fn arp_and_neighbor_solicit_filter() -> Vec<SockFilter> {
    const ACCEPT: u8 = 9;
    const DROP: u8 = 10;
    vec![
        /* 0 */ stmt(BPF_LD | BPF_H | BPF_ABS, 12), // EtherType
        /* 1 */ jeq(0x0806, ACCEPT - 2, 0),
        /* 2 */ jeq(0x86dd, 0, DROP - 3),
        /* 3 */ stmt(BPF_LD | BPF_B | BPF_ABS, 20), // IPv6 next header
        /* 4 */ jeq(58, 0, DROP - 5),
        /* 5 */ stmt(BPF_LD | BPF_B | BPF_ABS, 21), // IPv6 hop limit
        /* 6 */ jeq(255, 0, DROP - 7),
        /* 7 */ stmt(BPF_LD | BPF_B | BPF_ABS, 54), // ICMPv6 type
        /* 8 */ jeq(135, 0, DROP - 9),
        /* 9 */ stmt(BPF_RET | BPF_K, ACCEPT_LEN),
        /* 10 */ stmt(BPF_RET | BPF_K, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

    /// A minimal classic BPF interpreter covering the opcodes above, with the
    /// kernel's rule that a load past the end of the packet drops it.
    fn run(prog: &[SockFilter], pkt: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let Some(i) = prog.get(pc) else {
                panic!("fell off the end of the program at {pc}");
            };
            pc += 1;
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS
                    || c == BPF_LD | BPF_H | BPF_ABS
                    || c == BPF_LD | BPF_B | BPF_ABS =>
                {
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
    }

    fn accepts(pkt: &[u8]) -> bool {
        run(&arp_and_neighbor_solicit_filter(), pkt) != 0
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x00, 0x00, 0x5e, 0x00, 0x53, 0x02,
        ];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4 header (no options) with the given protocol and a 20-byte body.
    fn ipv4(proto: u8) -> Vec<u8> {
        let mut f = eth(0x0800);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 10]);
        f.extend_from_slice(&[0; 20]);
        f
    }

    /// IPv6 header with the given next header, hop limit and first body byte.
    fn ipv6(next: u8, hops: u8, first: u8) -> Vec<u8> {
        let mut f = eth(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 24, next, hops]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.push(first);
        f.extend_from_slice(&[0; 23]);
        f
    }

    #[test]
    fn accepts_arp_and_solicitations() {
        for v in [&ARP_REQUEST[..], &ARP_REPLY, &GRATUITOUS_ARP, &NS, &DAD_NS] {
            assert_eq!(run(&arp_and_neighbor_solicit_filter(), v), ACCEPT_LEN);
        }
    }

    #[test]
    fn drops_everything_else() {
        // Advertisements are other speakers' business, not ours to answer.
        assert!(!accepts(&SOLICITED_NA));
        assert!(!accepts(&UNSOLICITED_NA));
        assert!(!accepts(&ipv4(6)), "IPv4 TCP");
        assert!(!accepts(&ipv4(17)), "IPv4 UDP");
        assert!(!accepts(&ipv6(6, 64, 0)), "IPv6 TCP");
        assert!(!accepts(&ipv6(17, 64, 0)), "IPv6 UDP");
        assert!(!accepts(&ipv6(58, 64, 128)), "ICMPv6 echo request");
        assert!(!accepts(&ipv6(58, 255, 128)), "ICMPv6 echo, hop limit 255");
        // An NS that crossed a router is not one we may answer.
        assert!(!accepts(&ipv6(58, 64, 135)), "routed NS");
        assert!(
            accepts(&ipv6(58, 255, 135)),
            "the synthetic NS itself passes"
        );
    }

    #[test]
    fn short_frames_are_dropped() {
        // IPv6 EtherType but cut before the ICMPv6 type byte.
        assert!(!accepts(&NS[..54]));
        assert!(!accepts(&NS[..13]));
        assert!(!accepts(&[]));
    }
}
