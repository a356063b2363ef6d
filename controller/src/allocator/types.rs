//! Value types shared by the fast allocator and the linear reference one:
//! addresses as numbers, sharing descriptors and errors. Families, ranges and
//! pools are `ferrolb_config`'s.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_config::addr::to_u128;
use ferrolb_config::{Family, IpRange};

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
        Addr::new(Family::of(&ip), to_u128(ip))
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

/// A set of pools the allocator refuses: it relies on unique names and disjoint
/// ranges, which `Config::build` guarantees for a configuration but a caller
/// building pools by hand may not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolSetError {
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
