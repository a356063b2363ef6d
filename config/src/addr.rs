//! Address ranges as MetalLB writes them: a CIDR (`198.51.100.0/24`), an explicit
//! `start-end` range, or (ferrolb extension) a single address.
//!
//! Every range is kept as an inclusive pair of addresses of one family. Arithmetic is
//! done on `u128`, so sizes are exact even for an IPv6 `/0`: `2^128` does not fit a
//! `u128`, so [`IpRange::size`] saturates only for that one degenerate range and
//! [`IpRange::size_minus_one`] is always exact.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Number of bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// 0 for IPv4, 1 for IPv6: the index of this family in per-family arrays.
    pub fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Address as an unsigned integer; IPv4 addresses occupy `0..2^32`. Callers never mix
/// families, so the two spaces overlapping numerically is harmless.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_u128`]. Panics if an IPv4 value does not fit 32 bits, which would be a
/// bug in the caller's arithmetic, not bad input.
pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(n).expect("IPv4 arithmetic stayed within 32 bits"),
        )),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

/// Why a range string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("empty address range")]
    Empty,
    #[error("invalid CIDR {0:?}: {1}")]
    BadCidr(String, String),
    #[error("invalid IP address {0:?}")]
    BadAddress(String),
    #[error("range {0:?} mixes IPv4 and IPv6")]
    MixedFamilies(String),
    #[error("range {0:?} is reversed: its start is after its end")]
    Reversed(String),
}

impl IpRange {
    /// A range from `start` to `end` inclusive; both of one family, `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, RangeError> {
        if Family::of(&start) != Family::of(&end) {
            return Err(RangeError::MixedFamilies(format!("{start}-{end}")));
        }
        if to_u128(start) > to_u128(end) {
            return Err(RangeError::Reversed(format!("{start}-{end}")));
        }
        Ok(Self { start, end })
    }

    pub fn from_net(net: IpNet) -> Self {
        let net = net.trunc();
        Self {
            start: net.network(),
            end: net.broadcast(),
        }
    }

    pub fn single(ip: IpAddr) -> Self {
        Self { start: ip, end: ip }
    }

    pub fn start(&self) -> IpAddr {
        self.start
    }

    pub fn end(&self) -> IpAddr {
        self.end
    }

    pub fn family(&self) -> Family {
        Family::of(&self.start)
    }

    /// Number of addresses minus one: exact for every range.
    pub fn size_minus_one(&self) -> u128 {
        to_u128(self.end) - to_u128(self.start)
    }

    /// Number of addresses, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn size(&self) -> u128 {
        self.size_minus_one().saturating_add(1)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(&ip) == self.family()
            && to_u128(self.start) <= to_u128(ip)
            && to_u128(ip) <= to_u128(self.end)
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family() == other.family()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// The smallest set of CIDRs covering exactly this range, in address order.
    pub fn to_cidrs(&self) -> Vec<IpNet> {
        let family = self.family();
        let bits = u32::from(family.bits());
        let mut out = Vec::new();
        let mut cur = to_u128(self.start);
        let end = to_u128(self.end);
        loop {
            // Largest block aligned at `cur` that ends at or before `end`. An aligned block
            // cannot overflow: `cur` is a multiple of its size.
            let mut k = if cur == 0 {
                bits
            } else {
                cur.trailing_zeros().min(bits)
            };
            let last_of = |k: u32| {
                if k == 128 {
                    u128::MAX
                } else {
                    cur + ((1u128 << k) - 1)
                }
            };
            while last_of(k) > end {
                k -= 1;
            }
            let prefix = u8::try_from(bits - k).expect("prefix fits u8");
            out.push(
                IpNet::new(from_u128(family, cur), prefix).expect("prefix within family bits"),
            );
            let last = last_of(k);
            if last >= end {
                return out;
            }
            cur = last + 1;
        }
    }

    /// If the range is exactly one CIDR, that CIDR.
    pub fn as_cidr(&self) -> Option<IpNet> {
        match self.to_cidrs().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

impl FromStr for IpRange {
    type Err = RangeError;

    /// Accepts `a.b.c.d/len`, `a-b` (spaces around `-` allowed, as MetalLB does) and a bare
    /// address. A CIDR with host bits set means its whole network, as in MetalLB.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RangeError::Empty);
        }
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|e: ipnet::AddrParseError| RangeError::BadCidr(s.into(), e.to_string()))?;
            return Ok(Self::from_net(net));
        }
        if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (a.trim(), b.trim());
            let start: IpAddr = a.parse().map_err(|_| RangeError::BadAddress(a.into()))?;
            let end: IpAddr = b.parse().map_err(|_| RangeError::BadAddress(b.into()))?;
            return Self::new(start, end).map_err(|e| match e {
                RangeError::MixedFamilies(_) => RangeError::MixedFamilies(s.into()),
                RangeError::Reversed(_) => RangeError::Reversed(s.into()),
                other => other,
            });
        }
        let ip: IpAddr = s.parse().map_err(|_| RangeError::BadAddress(s.into()))?;
        Ok(Self::single(ip))
    }
}

impl fmt::Display for IpRange {
    /// A CIDR when the range is one, `start-end` otherwise, so that output parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_cidr() {
            Some(net) => write!(f, "{net}"),
            None => write!(f, "{}-{}", self.start, self.end),
        }
    }
}

/// Whether an IPv4 address ends in `.0` or `.255`: some old client stacks treat those as
/// broadcast addresses, which is why MetalLB's `avoidBuggyIPs` skips them.
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Number of addresses of a range that are not [`is_buggy`], computed without iterating.
pub fn non_buggy_count(range: &IpRange) -> u128 {
    if range.family() == Family::V6 {
        return range.size();
    }
    let (s, e) = (to_u128(range.start), to_u128(range.end));
    // Count of buggy addresses in [0, n]: two per full /24 below, plus the partial one.
    let buggy_upto = |n: u128| -> u128 {
        let full = n / 256;
        let rem = n % 256;
        full * 2 + 1 + u128::from(rem == 255)
    };
    let buggy = buggy_upto(e) - if s == 0 { 0 } else { buggy_upto(s - 1) };
    range.size() - buggy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> IpRange {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidr_range_and_single() {
        assert_eq!(r("198.51.100.0/30").size(), 4);
        assert_eq!(r("198.51.100.5/30").start().to_string(), "198.51.100.4");
        assert_eq!(r("198.51.100.10 - 198.51.100.12").size(), 3);
        assert_eq!(r("198.51.100.10").size(), 1);
        assert_eq!(r("2001:db8::/64").size(), 1u128 << 64);
        assert_eq!(r("::/0").size_minus_one(), u128::MAX);
        assert_eq!(r("::/0").size(), u128::MAX);
    }

    #[test]
    fn refuses_bad_ranges() {
        assert_eq!("".parse::<IpRange>(), Err(RangeError::Empty));
        assert!(matches!(
            "198.51.100.0/33".parse::<IpRange>(),
            Err(RangeError::BadCidr(..))
        ));
        assert!(matches!(
            "198.51.100.300".parse::<IpRange>(),
            Err(RangeError::BadAddress(_))
        ));
        assert!(matches!(
            "198.51.100.9-198.51.100.1".parse::<IpRange>(),
            Err(RangeError::Reversed(_))
        ));
        assert!(matches!(
            "198.51.100.1-2001:db8::1".parse::<IpRange>(),
            Err(RangeError::MixedFamilies(_))
        ));
    }

    #[test]
    fn new_refuses_mixed_families_and_reversed_ends() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(matches!(
            IpRange::new(ip("198.18.0.1"), ip("::1")),
            Err(RangeError::MixedFamilies(_))
        ));
        assert!(matches!(
            IpRange::new(ip("198.18.0.2"), ip("198.18.0.1")),
            Err(RangeError::Reversed(_))
        ));
        assert_eq!(
            IpRange::new(ip("198.18.0.1"), ip("198.18.0.1")),
            Ok(IpRange::single(ip("198.18.0.1")))
        );
    }

    #[test]
    fn cidr_cover_of_unaligned_range() {
        let cidrs: Vec<String> = r("198.51.100.1-198.51.100.6")
            .to_cidrs()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            cidrs,
            [
                "198.51.100.1/32",
                "198.51.100.2/31",
                "198.51.100.4/31",
                "198.51.100.6/32"
            ]
        );
        assert_eq!(r("0.0.0.0/0").to_cidrs().len(), 1);
        assert_eq!(r("::/0").to_cidrs().len(), 1);
        assert_eq!(r("198.51.100.0/24").to_string(), "198.51.100.0/24");
        assert_eq!(
            r("198.51.100.1-198.51.100.6").to_string(),
            "198.51.100.1-198.51.100.6"
        );
    }

    #[test]
    fn buggy_counts() {
        assert_eq!(non_buggy_count(&r("198.51.100.0/24")), 254);
        assert_eq!(non_buggy_count(&r("198.51.0.0/16")), 65536 - 512);
        assert_eq!(non_buggy_count(&r("198.51.100.255-198.51.101.0")), 0);
        assert_eq!(
            non_buggy_count(&r("0.0.0.0/0")),
            (1u128 << 32) - 2 * (1 << 24)
        );
        assert_eq!(non_buggy_count(&r("2001:db8::/120")), 256);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn v4_range() -> impl Strategy<Value = IpRange> {
            (any::<u32>(), 0u32..5000).prop_map(|(a, len)| {
                let b = a.saturating_add(len);
                IpRange::new(Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()).unwrap()
            })
        }

        fn v6_range() -> impl Strategy<Value = IpRange> {
            (any::<u128>(), any::<u128>()).prop_map(|(a, b)| {
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                IpRange::new(Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into()).unwrap()
            })
        }

        proptest! {
            #[test]
            fn display_parses_back(range in prop_oneof![v4_range(), v6_range()]) {
                prop_assert_eq!(range.to_string().parse::<IpRange>().unwrap(), range);
            }

            #[test]
            fn cidrs_cover_exactly(range in prop_oneof![v4_range(), v6_range()]) {
                let cidrs = range.to_cidrs();
                let mut next = to_u128(range.start());
                let mut total_minus_one: u128 = 0;
                for (i, net) in cidrs.iter().enumerate() {
                    let piece = IpRange::from_net(*net);
                    prop_assert_eq!(to_u128(piece.start()), next);
                    if i > 0 { total_minus_one += 1; }
                    total_minus_one += piece.size_minus_one();
                    next = to_u128(piece.end()).wrapping_add(1);
                }
                prop_assert_eq!(total_minus_one, range.size_minus_one());
                prop_assert!(cidrs.len() <= 2 * usize::from(range.family().bits()));
            }

            #[test]
            fn buggy_count_matches_iteration(range in v4_range()) {
                let brute = (to_u128(range.start())..=to_u128(range.end()))
                    .filter(|n| !is_buggy(from_u128(Family::V4, *n)))
                    .count() as u128;
                prop_assert_eq!(non_buggy_count(&range), brute);
            }

            #[test]
            fn overlap_is_symmetric_and_matches_contains(a in v4_range(), b in v4_range()) {
                prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
                let expect = a.contains(b.start()) || b.contains(a.start());
                prop_assert_eq!(a.overlaps(&b), expect);
            }
        }
    }
}
