//! Value types shared by the fast allocator and the linear reference one:
//! address families, pool configuration, sharing descriptors and errors.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family. IPv4 and IPv6 live in separate numeric spaces so that an
/// IPv4 address is never confused with the IPv6 address of the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn index(self) -> usize {
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

/// An address as (family, value). Ordering is family first, so IPv4 sorts
/// before IPv6 and each family is contiguous in ordered maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Addr {
    pub family: Family,
    pub value: u128,
}

impl Addr {
    pub fn new(family: Family, value: u128) -> Addr {
        Addr { family, value }
    }

    pub fn ip(self) -> IpAddr {
        match self.family {
            // Values of the V4 family are always built from a u32, so the
            // truncation cannot lose bits.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.value)),
        }
    }

    /// MetalLB's avoidBuggyIPs rule: some old client stacks drop traffic to
    /// IPv4 addresses ending in .0 or .255 even inside larger prefixes.
    pub fn is_buggy(self) -> bool {
        self.family == Family::V4 && matches!(self.value & 0xff, 0 | 0xff)
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::new(Family::V4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => Addr::new(Family::V6, u128::from(v6)),
        }
    }
}

/// An inclusive range of addresses of one family, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    /// The inclusive range `start..=end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<IpRange, ConfigError> {
        if Family::of(start) != Family::of(end) {
            return Err(ConfigError::MixedFamilies { start, end });
        }
        if Addr::from(start) > Addr::from(end) {
            return Err(ConfigError::StartAfterEnd { start, end });
        }
        Ok(IpRange { start, end })
    }

    /// Every address of the prefix `ip/prefix_len`, network and broadcast
    /// addresses included (MetalLB hands those out too unless avoidBuggyIPs).
    pub fn cidr(ip: IpAddr, prefix_len: u8) -> Result<IpRange, ConfigError> {
        let bits: u32 = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if u32::from(prefix_len) > bits {
            return Err(ConfigError::PrefixTooLong { ip, prefix_len });
        }
        let host_bits = bits - u32::from(prefix_len);
        // checked_shl: a /0 has 128 host bits, which a plain shift rejects.
        let host_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |v| v - 1);
        let family = Family::of(ip);
        let base = Addr::from(ip).value & !host_mask;
        let last = base | host_mask;
        Ok(IpRange {
            start: Addr::new(family, base).ip(),
            end: Addr::new(family, last).ip(),
        })
    }

    pub fn start(&self) -> IpAddr {
        self.start
    }

    pub fn end(&self) -> IpAddr {
        self.end
    }

    pub fn family(&self) -> Family {
        Family::of(self.start)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let a = Addr::from(ip);
        Addr::from(self.start) <= a && a <= Addr::from(self.end)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One address pool as the allocator sees it. `autoAssign` and the
/// namespace/service selectors are policy for the caller, not bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub ranges: Vec<IpRange>,
    pub avoid_buggy_ips: bool,
}

impl Pool {
    pub fn new(name: impl Into<String>, ranges: Vec<IpRange>, avoid_buggy_ips: bool) -> Pool {
        Pool {
            name: name.into(),
            ranges,
            avoid_buggy_ips,
        }
    }
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

/// How a service is willing to share its address (MetalLB's
/// `allow-shared-ip`). Two holders may share one address only if both carry
/// the same `key`, the same `compat` and no common `(protocol, port)`.
///
/// `compat` is opaque here: the caller derives it from what must agree
/// between co-located services (externalTrafficPolicy and, for `Local`,
/// the pod selector), so the allocator needs no Kubernetes types.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sharing {
    pub key: Option<String>,
    pub ports: BTreeSet<(Proto, u16)>,
    pub compat: String,
}

impl Sharing {
    /// A service that does not share its address.
    pub fn exclusive() -> Sharing {
        Sharing::default()
    }

    /// A service that shares under `key`.
    pub fn shared(
        key: impl Into<String>,
        ports: impl IntoIterator<Item = (Proto, u16)>,
        compat: impl Into<String>,
    ) -> Sharing {
        Sharing {
            key: Some(key.into()),
            ports: ports.into_iter().collect(),
            compat: compat.into(),
        }
    }

    /// Whether a service described by `self` may join one holding the
    /// address under `existing`.
    pub fn check_compatible(&self, existing: &Sharing) -> Result<(), ShareConflict> {
        let theirs = existing
            .key
            .as_ref()
            .ok_or(ShareConflict::HolderExclusive)?;
        let ours = self.key.as_ref().ok_or(ShareConflict::RequestExclusive)?;
        if ours != theirs {
            return Err(ShareConflict::DifferentKey {
                ours: ours.clone(),
                theirs: theirs.clone(),
            });
        }
        if self.compat != existing.compat {
            return Err(ShareConflict::DifferentCompat);
        }
        // Both sets are sorted, so the first common element is found in a
        // merge-like walk without allocating.
        if let Some(&(proto, port)) = self.ports.intersection(&existing.ports).next() {
            return Err(ShareConflict::PortClash { proto, port });
        }
        Ok(())
    }
}

/// Why two services cannot hold the same address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareConflict {
    #[error("it does not allow sharing")]
    HolderExclusive,
    #[error("this service does not allow sharing")]
    RequestExclusive,
    #[error("different sharing key: {ours:?} vs {theirs:?}")]
    DifferentKey { ours: String, theirs: String },
    #[error("incompatible externalTrafficPolicy or selector")]
    DifferentCompat,
    #[error("both use {proto}/{port}")]
    PortClash { proto: Proto, port: u16 },
}

/// A pool configuration the allocator refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("range {start}-{end} mixes IPv4 and IPv6")]
    MixedFamilies { start: IpAddr, end: IpAddr },
    #[error("range {start}-{end} starts after it ends")]
    StartAfterEnd { start: IpAddr, end: IpAddr },
    #[error("prefix length {prefix_len} is too long for {ip}")]
    PrefixTooLong { ip: IpAddr, prefix_len: u8 },
    #[error("pool name {0:?} is used twice")]
    DuplicatePool(String),
    #[error("range {a} of pool {pool_a:?} overlaps range {b} of pool {pool_b:?}")]
    Overlap {
        pool_a: String,
        a: IpRange,
        pool_b: String,
        b: IpRange,
    },
}

/// Why an allocation or assignment failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} has no {family} addresses")]
    NoFamily { pool: String, family: Family },
    #[error("pool {pool:?} has no free or shareable {family} address")]
    Exhausted { pool: String, family: Family },
    #[error("address {0} is not in any pool")]
    NotInAnyPool(IpAddr),
    #[error("address {ip} is in pool {actual:?}, not in the requested pool {requested:?}")]
    WrongPool {
        ip: IpAddr,
        requested: String,
        actual: String,
    },
    #[error("address {ip} ends in .0 or .255 and pool {pool:?} avoids such addresses")]
    Buggy { ip: IpAddr, pool: String },
    #[error("address {ip} is in use by {holder} and they do not share ({reason})")]
    InUse {
        ip: IpAddr,
        holder: String,
        reason: ShareConflict,
    },
}
