//! The normalized configuration that [`Config::build`] produces, and the [`Sources`] it
//! is built from. BGP types live in `bgp` and `peer`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::addr::{Family, IpRange, non_buggy_count};
use crate::crd;
use crate::legacy::LegacyConfig;
use crate::selector::Selector;

use super::bgp::{BfdProfile, BgpAdvertisement};
use super::peer::BgpPeer;

/// Everything a configuration can be made of.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Legacy ConfigMaps, each with its `namespace/name`.
    pub legacy: Vec<(String, LegacyConfig)>,
    pub pools: Vec<crd::IPAddressPool>,
    pub l2_advertisements: Vec<crd::L2Advertisement>,
    pub bgp_advertisements: Vec<crd::BGPAdvertisement>,
    pub bgp_peers: Vec<crd::BGPPeer>,
    pub communities: Vec<crd::Community>,
    pub bfd_profiles: Vec<crd::BFDProfile>,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.legacy.is_empty()
            && self.pools.is_empty()
            && self.l2_advertisements.is_empty()
            && self.bgp_advertisements.is_empty()
            && self.bgp_peers.is_empty()
            && self.communities.is_empty()
            && self.bfd_profiles.is_empty()
    }

    pub fn extend(&mut self, other: Sources) {
        self.legacy.extend(other.legacy);
        self.pools.extend(other.pools);
        self.l2_advertisements.extend(other.l2_advertisements);
        self.bgp_advertisements.extend(other.bgp_advertisements);
        self.bgp_peers.extend(other.bgp_peers);
        self.communities.extend(other.communities);
        self.bfd_profiles.extend(other.bfd_profiles);
    }
}

/// A validated configuration: all references resolved, all defaults applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub pools: BTreeMap<String, Pool>,
    pub l2_advertisements: BTreeMap<String, L2Advertisement>,
    pub bgp_advertisements: BTreeMap<String, BgpAdvertisement>,
    pub bgp_peers: BTreeMap<String, BgpPeer>,
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// Sorted, non-overlapping.
    pub ranges: Vec<IpRange>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub allocation: Option<ServiceAllocation>,
    pub labels: BTreeMap<String, String>,
}

impl Pool {
    /// A pool with the defaults of an `IPAddressPool` that sets only its addresses (and
    /// `avoidBuggyIPs`): auto-assigned, no service allocation, no labels. The ranges are
    /// sorted here; that they do not overlap is checked by whoever builds pools
    /// ([`Config::build`], the controller's allocator).
    pub fn new(name: impl Into<String>, mut ranges: Vec<IpRange>, avoid_buggy_ips: bool) -> Pool {
        ranges.sort();
        Pool {
            name: name.into(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips,
            allocation: None,
            labels: BTreeMap::new(),
        }
    }

    pub fn families(&self) -> BTreeSet<Family> {
        self.ranges.iter().map(IpRange::family).collect()
    }

    /// Addresses the pool can hand out in a family (exact; `avoid_buggy_ips` applied).
    pub fn size(&self, family: Family) -> u128 {
        self.ranges
            .iter()
            .filter(|r| r.family() == family)
            .map(|r| {
                if self.avoid_buggy_ips {
                    non_buggy_count(r)
                } else {
                    r.size()
                }
            })
            .fold(0u128, u128::saturating_add)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    pub priority: Option<i32>,
    pub namespaces: BTreeSet<String>,
    pub namespace_selectors: Vec<Selector>,
    pub service_selectors: Vec<Selector>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Advertisement {
    pub name: String,
    /// Names of the pools it announces (resolved from names and selectors).
    pub pools: BTreeSet<String>,
    /// Empty means every node.
    pub node_selectors: Vec<Selector>,
    /// Empty means every suitable interface.
    pub interfaces: BTreeSet<String>,
}

impl Config {
    /// Pools whose addresses may be handed out in this family, in allocation order:
    /// by `serviceAllocation.priority` (lower first, unset last), then by name.
    pub fn pools_in_priority_order(&self) -> Vec<&Pool> {
        let mut v: Vec<&Pool> = self.pools.values().collect();
        v.sort_by_key(|p| {
            (
                p.allocation
                    .as_ref()
                    .and_then(|a| a.priority)
                    .map_or((1, 0), |n| (0, n)),
                p.name.clone(),
            )
        });
        v
    }

    /// The pool holding an address.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }
}
