//! The scenarios' addresses: an [`AddressRange`] of free addresses on the
//! cluster's segment, carved into one slot of [`ADDRESSES_PER_SCENARIO`]
//! per scenario.

use std::fmt;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, ensure};

/// Addresses each scenario gets from [`Settings::pool`](super::Settings::pool).
pub const ADDRESSES_PER_SCENARIO: u128 = 4;

/// A contiguous range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

impl AddressRange {
    /// Parses `first-last`, `address/prefix` (the whole network) or a
    /// single address.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let ip = |t: &str| -> Result<IpAddr> {
            t.trim()
                .parse()
                .with_context(|| format!("{t:?} is not an IP address"))
        };
        let r = if let Some((a, b)) = s.split_once('-') {
            Self {
                first: ip(a)?,
                last: ip(b)?,
            }
        } else if let Some((a, len)) = s.split_once('/') {
            let a = ip(a)?;
            let bits = if a.is_ipv4() { 32 } else { 128 };
            let len: u32 = len
                .trim()
                .parse()
                .with_context(|| format!("{len:?} is not a prefix length"))?;
            ensure!(len <= bits, "prefix length {len} too long in {s:?}");
            let host_bits = bits - len;
            let mask = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let base = to_u128(a) & !mask;
            Self {
                first: from_u128(a, base),
                last: from_u128(a, base | mask),
            }
        } else {
            let a = ip(s)?;
            Self { first: a, last: a }
        };
        ensure!(
            r.first.is_ipv4() == r.last.is_ipv4(),
            "{s:?} mixes address families"
        );
        ensure!(
            to_u128(r.first) <= to_u128(r.last),
            "{s:?} is reversed: its start is after its end"
        );
        Ok(r)
    }

    /// Number of addresses.
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// Never empty (a range has at least one address); for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th address, if the range has it.
    pub fn nth(&self, i: u128) -> Option<IpAddr> {
        (i < self.len()).then(|| from_u128(self.first, to_u128(self.first) + i))
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(ip))
    }

    /// The range's family: true for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }

    /// The addresses of scenario slot `slot` ([`ADDRESSES_PER_SCENARIO`]
    /// of them).
    pub fn slot(&self, slot: u128) -> Result<Vec<IpAddr>> {
        (0..ADDRESSES_PER_SCENARIO)
            .map(|i| {
                self.nth(slot * ADDRESSES_PER_SCENARIO + i).ok_or_else(|| {
                    anyhow!(
                        "the address range {self} has {} addresses, scenario slot {slot} needs {}",
                        self.len(),
                        (slot + 1) * ADDRESSES_PER_SCENARIO
                    )
                })
            })
            .collect()
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_every_form() {
        let r = AddressRange::parse("198.51.100.100-198.51.100.139").unwrap();
        assert_eq!(r.len(), 40);
        assert_eq!(r.to_string(), "198.51.100.100-198.51.100.139");
        assert_eq!(r.nth(39), Some("198.51.100.139".parse().unwrap()));
        assert_eq!(r.nth(40), None);
        assert!(r.contains("198.51.100.120".parse().unwrap()));
        assert!(!r.contains("198.51.100.140".parse().unwrap()));
        assert!(!r.contains("2001:db8::1".parse().unwrap()));

        let c = AddressRange::parse("203.0.113.17/28").unwrap();
        assert_eq!(c.to_string(), "203.0.113.16-203.0.113.31");
        assert_eq!(c.len(), 16);
        let one = AddressRange::parse(" 198.51.100.7 ").unwrap();
        assert_eq!(one.len(), 1);
        let v6 = AddressRange::parse("2001:db8:100::/120").unwrap();
        assert_eq!(v6.len(), 256);
        assert_eq!(v6.nth(255), Some("2001:db8:100::ff".parse().unwrap()));
        assert!(!v6.is_ipv4());
        let all6 = AddressRange::parse("::/0").unwrap();
        assert_eq!(all6.len(), u128::MAX);

        for bad in [
            "198.51.100.9-198.51.100.1",
            "198.51.100.1-2001:db8::1",
            "198.51.100.1/33",
            "pool",
            "",
        ] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_do_not_overlap_and_stay_inside() {
        let r = AddressRange::parse("198.51.100.100-198.51.100.119").unwrap();
        let a = r.slot(0).unwrap();
        let b = r.slot(4).unwrap();
        assert_eq!(a[0], "198.51.100.100".parse::<IpAddr>().unwrap());
        assert_eq!(b[3], "198.51.100.119".parse::<IpAddr>().unwrap());
        assert!(a.iter().all(|x| !b.contains(x)));
        let err = r.slot(5).unwrap_err().to_string();
        assert!(err.contains("has 20 addresses"), "{err}");
    }
}
