//! The normalized configuration and the one path that builds it.
//!
//! [`Config::build`] takes every source at once (legacy ConfigMaps and custom resources,
//! in any mix), checks everything, and either returns a [`Config`] in which every
//! reference is resolved and every default is applied, or every error it found. Nothing
//! of a rejected configuration is used: callers keep their last good `Config`.
//!
//! A `Config` does not remember where its parts came from, so a legacy ConfigMap and the
//! CRDs that `ferrolb config convert` makes of it build equal `Config`s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kube_core::ResourceExt;

use crate::addr::{Family, IpRange, non_buggy_count};
use crate::crd;
use crate::duration;
use crate::error::{ConfigError, ConfigErrors, ObjectRef, Sink};
use crate::legacy::{self, LegacyConfig};
use crate::selector::{self, Selector, dns1123_label_error, dns1123_subdomain_error};

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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommunityValue {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl std::fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommunityValue::Standard(a, b) => write!(f, "{a}:{b}"),
            CommunityValue::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

impl std::str::FromStr for CommunityValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid BGP community {s:?} (expected \"AA:NN\" with 16-bit numbers or \"large:A:B:C\" with 32-bit numbers)"
            )
        };
        if let Some(rest) = s.strip_prefix("large:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let [a, b, c] = parts.as_slice() else {
                return Err(bad());
            };
            let p = |x: &str| x.parse::<u32>().map_err(|_| bad());
            return Ok(CommunityValue::Large(p(a)?, p(b)?, p(c)?));
        }
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let p = |x: &str| x.parse::<u16>().map_err(|_| bad());
        Ok(CommunityValue::Standard(p(a)?, p(b)?))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub pools: BTreeSet<String>,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub local_pref: Option<u32>,
    pub communities: BTreeSet<CommunityValue>,
    pub node_selectors: Vec<Selector>,
    /// Empty means every peer.
    pub peers: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(u32),
    Internal,
    External,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEndpoint {
    Address(IpAddr),
    Interface(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    Inline(String),
    Secret { namespace: String, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    pub name: String,
    pub my_asn: u32,
    pub peer_asn: PeerAsn,
    pub endpoint: PeerEndpoint,
    pub source_address: Option<IpAddr>,
    pub port: u16,
    pub hold_time: Option<Duration>,
    pub keepalive_time: Option<Duration>,
    pub connect_time: Option<Duration>,
    pub router_id: Option<Ipv4Addr>,
    pub node_selectors: Vec<Selector>,
    pub password: Option<Password>,
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: bool,
    pub graceful_restart: bool,
    pub vrf: Option<String>,
    pub disable_mp: bool,
    pub dual_stack_address_family: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval_ms: u32,
    pub transmit_interval_ms: u32,
    pub detect_multiplier: u32,
    pub echo_interval_ms: u32,
    pub echo_mode: bool,
    pub passive_mode: bool,
    pub minimum_ttl: u32,
}

/// MetalLB's default BGP port.
pub const DEFAULT_BGP_PORT: u16 = 179;

/// Name given to the L2/BGP advertisement made for a legacy pool. Shared with
/// [`crate::convert`] so that both paths build the same `Config`.
pub fn legacy_advertisement_name(pool: &str, index: usize, count: usize) -> String {
    if count <= 1 {
        pool.to_string()
    } else {
        format!("{pool}-{}", index + 1)
    }
}

/// Name given to the `index`th legacy peer (legacy peers have none).
pub fn legacy_peer_name(index: usize) -> String {
    format!("peer-{}", index + 1)
}

/// A pool, advertisement or profile as the builder sees it before references are resolved.
struct PoolDraft {
    object: ObjectRef,
    pool: Pool,
}

struct AdvDraft<T> {
    object: ObjectRef,
    /// Where the advertisement's fields live: `spec.` or `bgp-advertisements[N].`.
    field_prefix: String,
    pool_names: Vec<String>,
    pool_selectors: Vec<Selector>,
    all_pools_if_empty: bool,
    value: T,
}

impl Config {
    /// Validates and normalizes every source together. All errors are returned, sorted.
    pub fn build(src: &Sources) -> Result<Config, ConfigErrors> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut pools: Vec<PoolDraft> = Vec::new();
        let mut l2: Vec<AdvDraft<L2Advertisement>> = Vec::new();
        let mut bgp_adv: Vec<AdvDraft<(BgpAdvertisement, Vec<String>)>> = Vec::new();
        let mut peers: Vec<(ObjectRef, BgpPeer)> = Vec::new();
        let mut bfd: Vec<(ObjectRef, BfdProfile)> = Vec::new();
        // Community aliases: name -> (defining object, value).
        let mut aliases: BTreeMap<String, (ObjectRef, CommunityValue)> = BTreeMap::new();

        for (cm, lc) in &src.legacy {
            legacy_sources(
                cm,
                lc,
                &mut errors,
                &mut pools,
                &mut l2,
                &mut bgp_adv,
                &mut peers,
                &mut bfd,
                &mut aliases,
            );
        }
        for p in &src.pools {
            let object = ObjectRef::resource("IPAddressPool", &p.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&p.name_any(), &mut sink);
            let ranges = parse_ranges(&p.spec.addresses, "spec.addresses", &mut sink);
            let allocation = p
                .spec
                .service_allocation
                .as_ref()
                .map(|a| service_allocation(a, &mut sink));
            pools.push(PoolDraft {
                object,
                pool: Pool {
                    name: p.name_any(),
                    ranges,
                    auto_assign: p.spec.auto_assign.unwrap_or(true),
                    avoid_buggy_ips: p.spec.avoid_buggy_ips,
                    allocation,
                    labels: p.labels().clone(),
                },
            });
        }
        for a in &src.l2_advertisements {
            let object = ObjectRef::resource("L2Advertisement", &a.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&a.name_any(), &mut sink);
            let pool_selectors = selectors(
                &a.spec.ip_address_pool_selectors,
                "spec.ipAddressPoolSelectors",
                &mut sink,
            );
            let node_selectors = selectors(&a.spec.node_selectors, "spec.nodeSelectors", &mut sink);
            let interfaces = interfaces(&a.spec.interfaces, &mut sink);
            l2.push(AdvDraft {
                object,
                field_prefix: "spec.".into(),
                pool_names: a.spec.ip_address_pools.clone(),
                pool_selectors,
                all_pools_if_empty: true,
                value: L2Advertisement {
                    name: a.name_any(),
                    pools: BTreeSet::new(),
                    node_selectors,
                    interfaces,
                },
            });
        }
        for c in &src.communities {
            let object = ObjectRef::resource("Community", &c.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&c.name_any(), &mut sink);
            for (i, alias) in c.spec.communities.iter().enumerate() {
                let f = format!("spec.communities[{i}]");
                if alias.name.is_empty() {
                    sink.push(format!("{f}.name"), "must not be empty");
                }
                match alias.value.parse::<CommunityValue>() {
                    Err(e) => sink.push(format!("{f}.value"), e),
                    Ok(v) => {
                        if let Some((other, _)) = aliases.get(&alias.name) {
                            sink.push(
                                format!("{f}.name"),
                                format!(
                                    "community alias {:?} is also defined by {other}",
                                    alias.name
                                ),
                            );
                        } else {
                            aliases.insert(alias.name.clone(), (object.clone(), v));
                        }
                    }
                }
            }
        }
        for b in &src.bfd_profiles {
            let object = ObjectRef::resource("BFDProfile", &b.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&b.name_any(), &mut sink);
            let s = &b.spec;
            let p = bfd_profile(
                &b.name_any(),
                [
                    s.receive_interval,
                    s.transmit_interval,
                    s.detect_multiplier,
                    s.echo_interval,
                    s.minimum_ttl,
                ],
                s.echo_mode,
                s.passive_mode,
                CRD_BFD_FIELDS,
                &mut sink,
            );
            bfd.push((object, p));
        }
        for p in &src.bgp_peers {
            let object = ObjectRef::resource("BGPPeer", &p.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&p.name_any(), &mut sink);
            if let Some(peer) = crd_peer(p, &mut sink) {
                peers.push((object, peer));
            }
        }
        for a in &src.bgp_advertisements {
            let object = ObjectRef::resource("BGPAdvertisement", &a.name_any());
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            check_object_name(&a.name_any(), &mut sink);
            let s = &a.spec;
            let pool_selectors = selectors(
                &s.ip_address_pool_selectors,
                "spec.ipAddressPoolSelectors",
                &mut sink,
            );
            let node_selectors = selectors(&s.node_selectors, "spec.nodeSelectors", &mut sink);
            let (v4, v6) = aggregation_lengths(
                s.aggregation_length,
                s.aggregation_length_v6,
                ("spec.aggregationLength", "spec.aggregationLengthV6"),
                &mut sink,
            );
            bgp_adv.push(AdvDraft {
                object,
                field_prefix: "spec.".into(),
                pool_names: s.ip_address_pools.clone(),
                pool_selectors,
                all_pools_if_empty: true,
                value: (
                    BgpAdvertisement {
                        name: a.name_any(),
                        pools: BTreeSet::new(),
                        aggregation_length: v4,
                        aggregation_length_v6: v6,
                        local_pref: s.local_pref,
                        communities: BTreeSet::new(),
                        node_selectors,
                        peers: s.peers.iter().cloned().collect(),
                    },
                    s.communities.clone(),
                ),
            });
        }

        let mut cfg = Config::default();

        // Pools: unique names, no overlap anywhere.
        let mut seen_ranges: Vec<(IpRange, &ObjectRef, usize)> = Vec::new();
        for d in &pools {
            if let Some(prev) = cfg.pools.get(&d.pool.name) {
                let other = pools
                    .iter()
                    .find(|p| p.pool.name == prev.name)
                    .map(|p| p.object.to_string())
                    .unwrap_or_default();
                errors.push(ConfigError {
                    object: d.object.clone(),
                    field: field_of(&d.object, "name", "metadata.name").into(),
                    message: format!(
                        "duplicate pool name {:?} (also defined by {other})",
                        d.pool.name
                    ),
                });
                continue;
            }
            cfg.pools.insert(d.pool.name.clone(), d.pool.clone());
        }
        for d in &pools {
            for (i, r) in d.pool.ranges.iter().enumerate() {
                for (other, obj, j) in &seen_ranges {
                    if r.overlaps(other) {
                        let field = format!(
                            "{}[{i}]",
                            field_of(&d.object, "addresses", "spec.addresses")
                        );
                        if *obj == &d.object {
                            errors.push(ConfigError {
                                object: d.object.clone(),
                                field,
                                message: format!(
                                    "range {r} overlaps range {other} (addresses[{j}]) of the same pool"
                                ),
                            });
                        } else {
                            // Both objects are reported: either may be the one to fix,
                            // and each shows up in its own `kubectl describe`.
                            errors.push(ConfigError {
                                object: d.object.clone(),
                                field,
                                message: format!("range {r} overlaps range {other} of {obj}"),
                            });
                            errors.push(ConfigError {
                                object: (*obj).clone(),
                                field: format!(
                                    "{}[{j}]",
                                    field_of(obj, "addresses", "spec.addresses")
                                ),
                                message: format!(
                                    "range {other} overlaps range {r} of {}",
                                    d.object
                                ),
                            });
                        }
                    }
                }
                seen_ranges.push((*r, &d.object, i));
            }
        }

        // BFD profiles, communities, peers.
        for (object, p) in bfd {
            if cfg.bfd_profiles.contains_key(&p.name) {
                errors.push(ConfigError {
                    field: field_of(&object, "name", "metadata.name").into(),
                    object,
                    message: format!("duplicate BFD profile name {:?}", p.name),
                });
                continue;
            }
            cfg.bfd_profiles.insert(p.name.clone(), p);
        }
        let mut peer_keys: BTreeMap<(String, Option<String>), ObjectRef> = BTreeMap::new();
        for (object, p) in peers {
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut errors,
            };
            if let Some(b) = p
                .bfd_profile
                .as_ref()
                .filter(|b| !cfg.bfd_profiles.contains_key(*b))
            {
                sink.push(
                    field_of(&object, "bfd-profile", "spec.bfdProfile"),
                    format!("references BFD profile {b:?}, which does not exist"),
                );
            }
            let key = match &p.endpoint {
                PeerEndpoint::Address(a) => a.to_string(),
                PeerEndpoint::Interface(i) => format!("interface {i}"),
            };
            let key = (key, p.vrf.clone());
            if let Some(other) = peer_keys.get(&key) {
                sink.push(
                    field_of(&object, "peer-address", "spec.peerAddress"),
                    format!("duplicate BGP peer {} (also defined by {other})", key.0),
                );
                continue;
            }
            if cfg.bgp_peers.contains_key(&p.name) {
                sink.push(
                    field_of(&object, "name", "metadata.name"),
                    format!("duplicate BGP peer name {:?}", p.name),
                );
                continue;
            }
            peer_keys.insert(key, object);
            cfg.bgp_peers.insert(p.name.clone(), p);
        }

        // Advertisements: resolve pools, communities, peers.
        for mut d in l2 {
            let mut sink = Sink {
                object: d.object.clone(),
                errors: &mut errors,
            };
            d.value.pools = resolve_pools(
                &cfg.pools,
                &d.pool_names,
                &d.pool_selectors,
                d.all_pools_if_empty,
                &mut sink,
            );
            if cfg.l2_advertisements.contains_key(&d.value.name) {
                sink.push(
                    field_of(&d.object, "name", "metadata.name"),
                    format!("duplicate L2Advertisement name {:?}", d.value.name),
                );
                continue;
            }
            cfg.l2_advertisements.insert(d.value.name.clone(), d.value);
        }
        for d in bgp_adv {
            let legacy = matches!(d.object, ObjectRef::Legacy { .. });
            let mut sink = Sink {
                object: d.object.clone(),
                errors: &mut errors,
            };
            let (mut adv, communities) = d.value;
            adv.pools = resolve_pools(
                &cfg.pools,
                &d.pool_names,
                &d.pool_selectors,
                d.all_pools_if_empty,
                &mut sink,
            );
            for (i, c) in communities.iter().enumerate() {
                let field = format!("{}communities[{i}]", d.field_prefix);
                match aliases.get(c) {
                    Some((_, v)) => {
                        adv.communities.insert(v.clone());
                    }
                    None => match c.parse::<CommunityValue>() {
                        Ok(v) => {
                            adv.communities.insert(v);
                        }
                        Err(e) => sink.push(
                            field,
                            format!("{e}, and no community alias of that name exists"),
                        ),
                    },
                }
            }
            for p in &adv.peers {
                if !cfg.bgp_peers.contains_key(p) {
                    sink.push(
                        format!("{}peers", d.field_prefix),
                        format!("references BGP peer {p:?}, which does not exist"),
                    );
                }
            }
            // MetalLB's rule: a prefix more specific than the aggregation length cannot be aggregated.
            for pool in adv.pools.iter().filter_map(|n| cfg.pools.get(n)) {
                for r in &pool.ranges {
                    let agg = match r.family() {
                        Family::V4 => adv.aggregation_length,
                        Family::V6 => adv.aggregation_length_v6,
                    };
                    if let Some(net) = r.to_cidrs().iter().find(|n| n.prefix_len() > agg) {
                        let field = match (legacy, r.family()) {
                            (true, Family::V4) => "aggregation-length",
                            (true, Family::V6) => "aggregation-length-v6",
                            (false, Family::V4) => "aggregationLength",
                            (false, Family::V6) => "aggregationLengthV6",
                        };
                        let field = format!("{}{field}", d.field_prefix);
                        sink.push(field, format!("aggregation length {agg} is shorter than prefix {net} of pool {:?}: the prefix cannot be aggregated to it", pool.name));
                    }
                }
            }
            if cfg.bgp_advertisements.contains_key(&adv.name) {
                sink.push(
                    field_of(&d.object, "name", "metadata.name"),
                    format!("duplicate BGPAdvertisement name {:?}", adv.name),
                );
                continue;
            }
            cfg.bgp_advertisements.insert(adv.name.clone(), adv);
        }

        if errors.is_empty() {
            Ok(cfg)
        } else {
            errors.sort();
            errors.dedup();
            Err(ConfigErrors(errors))
        }
    }

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

#[allow(clippy::too_many_arguments)]
fn legacy_sources(
    cm: &str,
    lc: &LegacyConfig,
    errors: &mut Vec<ConfigError>,
    pools: &mut Vec<PoolDraft>,
    l2: &mut Vec<AdvDraft<L2Advertisement>>,
    bgp_adv: &mut Vec<AdvDraft<(BgpAdvertisement, Vec<String>)>>,
    peers: &mut Vec<(ObjectRef, BgpPeer)>,
    bfd: &mut Vec<(ObjectRef, BfdProfile)>,
    aliases: &mut BTreeMap<String, (ObjectRef, CommunityValue)>,
) {
    let lref = |section: &'static str, index: usize, name: Option<&str>| ObjectRef::Legacy {
        configmap: cm.to_string(),
        section,
        index,
        name: name.filter(|n| !n.is_empty()).map(str::to_string),
    };
    for (name, value) in &lc.bgp_communities {
        let object = ObjectRef::ConfigMap {
            configmap: cm.to_string(),
        };
        match value.parse::<CommunityValue>() {
            Ok(v) => {
                if let Some((other, _)) = aliases.get(name) {
                    errors.push(ConfigError {
                        object,
                        field: format!("bgp-communities[{name:?}]"),
                        message: format!("community alias {name:?} is also defined by {other}"),
                    });
                } else {
                    aliases.insert(name.clone(), (object, v));
                }
            }
            Err(e) => errors.push(ConfigError {
                object,
                field: format!("bgp-communities[{name:?}]"),
                message: e,
            }),
        }
    }
    for (i, b) in lc.bfd_profiles.iter().enumerate() {
        let object = lref("bfd-profiles", i, Some(&b.name));
        let mut sink = Sink {
            object: object.clone(),
            errors,
        };
        if b.name.is_empty() {
            sink.push("name", "missing BFD profile name");
        }
        let p = bfd_profile(
            &b.name,
            [
                b.receive_interval,
                b.transmit_interval,
                b.detect_multiplier,
                b.echo_interval,
                b.minimum_ttl,
            ],
            b.echo_mode,
            b.passive_mode,
            LEGACY_BFD_FIELDS,
            &mut sink,
        );
        bfd.push((object, p));
    }
    for (i, p) in lc.peers.iter().enumerate() {
        let object = lref("peers", i, None);
        let mut sink = Sink {
            object: object.clone(),
            errors,
        };
        if let Some(peer) = legacy_peer(i, p, &mut sink) {
            peers.push((object, peer));
        }
    }
    for (i, p) in lc.address_pools.iter().enumerate() {
        let object = lref("address-pools", i, Some(&p.name));
        let mut sink = Sink {
            object: object.clone(),
            errors,
        };
        if p.name.is_empty() {
            sink.push("name", "missing pool name");
        }
        let ranges = parse_ranges(&p.addresses, "addresses", &mut sink);
        let pool = Pool {
            name: p.name.clone(),
            ranges,
            auto_assign: p.auto_assign.unwrap_or(true),
            avoid_buggy_ips: p.avoid_buggy_ips.unwrap_or(false),
            allocation: None,
            labels: BTreeMap::new(),
        };
        match p.protocol.as_str() {
            "layer2" => {
                if !p.bgp_advertisements.is_empty() {
                    sink.push(
                        "bgp-advertisements",
                        "only valid with protocol bgp, this pool is layer2",
                    );
                }
                l2.push(AdvDraft {
                    object: object.clone(),
                    field_prefix: String::new(),
                    pool_names: vec![p.name.clone()],
                    pool_selectors: vec![],
                    all_pools_if_empty: false,
                    value: L2Advertisement {
                        name: legacy_advertisement_name(&p.name, 0, 1),
                        pools: BTreeSet::new(),
                        node_selectors: vec![],
                        interfaces: BTreeSet::new(),
                    },
                });
            }
            "bgp" => {
                let default = [legacy::BgpAdvertisement::default()];
                let advs: &[legacy::BgpAdvertisement] = if p.bgp_advertisements.is_empty() {
                    &default
                } else {
                    &p.bgp_advertisements
                };
                for (j, a) in advs.iter().enumerate() {
                    let f = |x: &str| format!("bgp-advertisements[{j}].{x}");
                    let (f4, f6) = (f("aggregation-length"), f("aggregation-length-v6"));
                    let (v4, v6) = aggregation_lengths(
                        a.aggregation_length,
                        a.aggregation_length_v6,
                        (&f4, &f6),
                        &mut sink,
                    );
                    bgp_adv.push(AdvDraft {
                        object: object.clone(),
                        field_prefix: format!("bgp-advertisements[{j}]."),
                        pool_names: vec![p.name.clone()],
                        pool_selectors: vec![],
                        all_pools_if_empty: false,
                        value: (
                            BgpAdvertisement {
                                name: legacy_advertisement_name(&p.name, j, advs.len()),
                                pools: BTreeSet::new(),
                                aggregation_length: v4,
                                aggregation_length_v6: v6,
                                local_pref: a.localpref,
                                communities: BTreeSet::new(),
                                node_selectors: vec![],
                                peers: BTreeSet::new(),
                            },
                            a.communities.clone(),
                        ),
                    });
                }
            }
            "" => sink.push("protocol", "missing protocol (expected layer2 or bgp)"),
            other => sink.push(
                "protocol",
                format!("unknown protocol {other:?} (expected layer2 or bgp)"),
            ),
        }
        pools.push(PoolDraft { object, pool });
    }
}

/// A field's spelling in the legacy ConfigMap or in a custom resource.
fn field_of(object: &ObjectRef, legacy: &'static str, crd: &'static str) -> &'static str {
    match object {
        ObjectRef::Legacy { .. } | ObjectRef::ConfigMap { .. } => legacy,
        _ => crd,
    }
}

fn check_object_name(name: &str, sink: &mut Sink<'_>) {
    if let Some(e) = dns1123_subdomain_error(name) {
        sink.push("metadata.name", format!("invalid name {name:?}: {e}"));
    }
}

fn parse_ranges(addresses: &[String], field: &str, sink: &mut Sink<'_>) -> Vec<IpRange> {
    if addresses.is_empty() {
        sink.push(field, "a pool needs at least one address range");
    }
    let mut out: Vec<IpRange> = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        match a.parse::<IpRange>() {
            Ok(r) => out.push(r),
            Err(e) => sink.push(format!("{field}[{i}]"), e.to_string()),
        }
    }
    out.sort();
    out
}

fn selectors(
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    field: &str,
    sink: &mut Sink<'_>,
) -> Vec<Selector> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| selector::parse(s, &format!("{field}[{i}]"), sink))
        .collect()
}

fn service_allocation(a: &crd::ServiceAllocation, sink: &mut Sink<'_>) -> ServiceAllocation {
    if let Some(p) = a.priority.filter(|p| *p < 0) {
        sink.push(
            "spec.serviceAllocation.priority",
            format!("priority {p} is negative (0 is the highest priority)"),
        );
    }
    for (i, ns) in a.namespaces.iter().enumerate() {
        if let Some(e) = dns1123_label_error(ns) {
            sink.push(
                format!("spec.serviceAllocation.namespaces[{i}]"),
                format!("invalid namespace {ns:?}: {e}"),
            );
        }
    }
    ServiceAllocation {
        priority: a.priority,
        namespaces: a.namespaces.iter().cloned().collect(),
        namespace_selectors: selectors(
            &a.namespace_selectors,
            "spec.serviceAllocation.namespaceSelectors",
            sink,
        ),
        service_selectors: selectors(
            &a.service_selectors,
            "spec.serviceAllocation.serviceSelectors",
            sink,
        ),
    }
}

fn interfaces(list: &[String], sink: &mut Sink<'_>) -> BTreeSet<String> {
    for (i, name) in list.iter().enumerate() {
        // Linux interface names: 1..=15 bytes, no '/', no whitespace.
        if name.is_empty()
            || name.len() > 15
            || name.contains('/')
            || name.chars().any(char::is_whitespace)
            || name == "."
            || name == ".."
        {
            sink.push(
                format!("spec.interfaces[{i}]"),
                format!("invalid interface name {name:?} (1 to 15 characters, no '/' or spaces)"),
            );
        }
    }
    list.iter().cloned().collect()
}

fn aggregation_lengths(
    v4: Option<i32>,
    v6: Option<i32>,
    fields: (&str, &str),
    sink: &mut Sink<'_>,
) -> (u8, u8) {
    let mut check = |v: Option<i32>, max: i32, field: &str| -> u8 {
        match v {
            None => max as u8,
            Some(n) if (0..=max).contains(&n) => n as u8,
            Some(n) => {
                sink.push(
                    field,
                    format!("aggregation length {n} is out of range 0..={max}"),
                );
                max as u8
            }
        }
    };
    (check(v4, 32, fields.0), check(v6, 128, fields.1))
}

fn resolve_pools(
    pools: &BTreeMap<String, Pool>,
    names: &[String],
    sels: &[Selector],
    all_if_empty: bool,
    sink: &mut Sink<'_>,
) -> BTreeSet<String> {
    let legacy = matches!(sink.object, ObjectRef::Legacy { .. });
    let mut out = BTreeSet::new();
    for (i, n) in names.iter().enumerate() {
        if pools.contains_key(n) {
            out.insert(n.clone());
        } else if !legacy {
            sink.push(
                format!("spec.ipAddressPools[{i}]"),
                format!("references IPAddressPool {n:?}, which does not exist"),
            );
        }
    }
    for p in pools.values() {
        if sels.iter().any(|s| s.matches(&p.labels)) {
            out.insert(p.name.clone());
        }
    }
    if names.is_empty() && sels.is_empty() && all_if_empty {
        out.extend(pools.keys().cloned());
    }
    out
}

const CRD_BFD_FIELDS: [&str; 5] = [
    "spec.receiveInterval",
    "spec.transmitInterval",
    "spec.detectMultiplier",
    "spec.echoInterval",
    "spec.minimumTtl",
];
const LEGACY_BFD_FIELDS: [&str; 5] = [
    "receive-interval",
    "transmit-interval",
    "detect-multiplier",
    "echo-interval",
    "minimum-ttl",
];

fn bfd_profile(
    name: &str,
    v: [Option<u32>; 5],
    echo_mode: Option<bool>,
    passive_mode: Option<bool>,
    fields: [&str; 5],
    sink: &mut Sink<'_>,
) -> BfdProfile {
    // (default, min, max) per MetalLB's CRD.
    const LIMITS: [(u32, u32, u32); 5] = [
        (300, 10, 60000),
        (300, 10, 60000),
        (3, 2, 255),
        (50, 10, 60000),
        (254, 1, 254),
    ];
    let mut out = [0u32; 5];
    for i in 0..5 {
        let (def, min, max) = LIMITS[i];
        out[i] = match v[i] {
            None => def,
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                sink.push(fields[i], format!("{n} is out of range {min}..={max}"));
                def
            }
        };
    }
    BfdProfile {
        name: name.to_string(),
        receive_interval_ms: out[0],
        transmit_interval_ms: out[1],
        detect_multiplier: out[2],
        echo_interval_ms: out[3],
        minimum_ttl: out[4],
        echo_mode: echo_mode.unwrap_or(false),
        passive_mode: passive_mode.unwrap_or(false),
    }
}

/// Timers shared by both peer spellings: returns (hold, keepalive).
fn peer_timers(
    hold: Option<&str>,
    keepalive: Option<&str>,
    fields: (&str, &str),
    sink: &mut Sink<'_>,
) -> (Option<Duration>, Option<Duration>) {
    let mut parse = |v: Option<&str>, field: &str| {
        v.and_then(|s| {
            duration::parse(s)
                .map_err(|e| sink.push(field, e.to_string()))
                .ok()
        })
    };
    let hold_t = parse(hold, fields.0);
    let keep_t = parse(keepalive, fields.1);
    if let Some(h) = hold_t {
        // RFC 4271 4.2: zero (no keepalives) or at least three seconds.
        if !h.is_zero() && h < Duration::from_secs(3) {
            sink.push(
                fields.0,
                format!(
                    "hold time {} must be 0 or at least 3s (RFC 4271)",
                    duration::format(h)
                ),
            );
        }
    }
    if let (Some(h), Some(k)) = (hold_t, keep_t)
        && k > h
    {
        sink.push(
            fields.1,
            format!(
                "keepalive time {} is longer than hold time {}",
                duration::format(k),
                duration::format(h)
            ),
        );
    }
    (hold_t, keep_t)
}

fn parse_ip(v: &str, field: &str, sink: &mut Sink<'_>) -> Option<IpAddr> {
    if v.is_empty() {
        return None;
    }
    v.parse()
        .map_err(|_| sink.push(field, format!("invalid IP address {v:?}")))
        .ok()
}

fn parse_router_id(v: &str, field: &str, sink: &mut Sink<'_>) -> Option<Ipv4Addr> {
    if v.is_empty() {
        return None;
    }
    v.parse()
        .map_err(|_| {
            sink.push(
                field,
                format!("invalid router ID {v:?} (expected an IPv4 address)"),
            )
        })
        .ok()
}

fn legacy_peer(i: usize, p: &legacy::Peer, sink: &mut Sink<'_>) -> Option<BgpPeer> {
    if p.my_asn == 0 {
        sink.push("my-asn", "missing local ASN (my-asn)");
    }
    if p.peer_asn == 0 {
        sink.push("peer-asn", "missing peer ASN (peer-asn)");
    }
    let address = if p.peer_address.is_empty() {
        sink.push("peer-address", "missing peer address");
        None
    } else {
        parse_ip(&p.peer_address, "peer-address", sink)
    };
    let source_address = parse_ip(&p.source_address, "source-address", sink);
    if p.peer_port == Some(0) {
        sink.push("peer-port", "port 0 is not a valid BGP port");
    }
    let (hold_time, keepalive_time) = peer_timers(
        p.hold_time.as_deref(),
        p.keepalive_time.as_deref(),
        ("hold-time", "keepalive-time"),
        sink,
    );
    let router_id = parse_router_id(&p.router_id, "router-id", sink);
    let node_selectors: Vec<Selector> = p
        .node_selectors
        .iter()
        .enumerate()
        .filter_map(|(j, s)| {
            selector::parse(
                &s.to_label_selector(),
                &format!("node-selectors[{j}]"),
                sink,
            )
        })
        .collect();
    Some(BgpPeer {
        name: legacy_peer_name(i),
        my_asn: p.my_asn,
        peer_asn: PeerAsn::Fixed(p.peer_asn),
        endpoint: PeerEndpoint::Address(address?),
        source_address,
        port: p.peer_port.unwrap_or(DEFAULT_BGP_PORT),
        hold_time,
        keepalive_time,
        connect_time: None,
        router_id,
        node_selectors,
        password: (!p.password.is_empty()).then(|| Password::Inline(p.password.clone())),
        bfd_profile: (!p.bfd_profile.is_empty()).then(|| p.bfd_profile.clone()),
        ebgp_multihop: p.ebgp_multihop.unwrap_or(false),
        graceful_restart: false,
        vrf: None,
        disable_mp: false,
        dual_stack_address_family: false,
    })
}

fn crd_peer(p: &crd::BGPPeer, sink: &mut Sink<'_>) -> Option<BgpPeer> {
    let s = &p.spec;
    if s.my_asn == 0 {
        sink.push("spec.myASN", "missing local ASN");
    }
    let peer_asn = match (s.peer_asn, s.dynamic_asn.as_str()) {
        (0, "") => {
            sink.push("spec.peerASN", "one of peerASN and dynamicASN is required");
            None
        }
        (n, "") => Some(PeerAsn::Fixed(n)),
        (0, "internal") => Some(PeerAsn::Internal),
        (0, "external") => Some(PeerAsn::External),
        (0, other) => {
            sink.push(
                "spec.dynamicASN",
                format!("unknown dynamicASN {other:?} (expected internal or external)"),
            );
            None
        }
        (_, _) => {
            sink.push(
                "spec.dynamicASN",
                "peerASN and dynamicASN are mutually exclusive",
            );
            None
        }
    };
    let endpoint = match (s.peer_address.as_str(), s.interface.as_str()) {
        ("", "") => {
            sink.push(
                "spec.peerAddress",
                "one of peerAddress and interface is required",
            );
            None
        }
        (a, "") => parse_ip(a, "spec.peerAddress", sink).map(PeerEndpoint::Address),
        ("", i) => Some(PeerEndpoint::Interface(i.to_string())),
        _ => {
            sink.push(
                "spec.interface",
                "peerAddress and interface are mutually exclusive",
            );
            None
        }
    };
    let source_address = parse_ip(&s.source_address, "spec.sourceAddress", sink);
    if s.peer_port == Some(0) {
        sink.push("spec.peerPort", "port 0 is not a valid BGP port");
    }
    let (hold_time, keepalive_time) = peer_timers(
        s.hold_time.as_deref(),
        s.keepalive_time.as_deref(),
        ("spec.holdTime", "spec.keepaliveTime"),
        sink,
    );
    let connect_time = s
        .connect_time
        .as_deref()
        .and_then(|c| match duration::parse(c) {
            Ok(d) if (1..=65535).contains(&d.as_secs()) && d.subsec_nanos() == 0 => Some(d),
            Ok(d) => {
                sink.push(
                    "spec.connectTime",
                    format!(
                        "connect time {} must be a whole number of seconds between 1s and 65535s",
                        duration::format(d)
                    ),
                );
                None
            }
            Err(e) => {
                sink.push("spec.connectTime", e.to_string());
                None
            }
        });
    let router_id = parse_router_id(&s.router_id, "spec.routerID", sink);
    let node_selectors = selectors(&s.node_selectors, "spec.nodeSelectors", sink);
    let secret = s
        .password_secret
        .as_ref()
        .filter(|r| r.name.as_deref().is_some_and(|n| !n.is_empty()));
    let password = match (s.password.is_empty(), secret) {
        (true, None) => None,
        (false, None) => Some(Password::Inline(s.password.clone())),
        (true, Some(r)) => Some(Password::Secret {
            namespace: r
                .namespace
                .clone()
                .or_else(|| p.metadata.namespace.clone())
                .unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
        }),
        (false, Some(_)) => {
            sink.push(
                "spec.passwordSecret",
                "password and passwordSecret are mutually exclusive",
            );
            None
        }
    };
    Some(BgpPeer {
        name: p.name_any(),
        my_asn: s.my_asn,
        peer_asn: peer_asn?,
        endpoint: endpoint?,
        source_address,
        port: s.peer_port.unwrap_or(DEFAULT_BGP_PORT),
        hold_time,
        keepalive_time,
        connect_time,
        router_id,
        node_selectors,
        password,
        bfd_profile: (!s.bfd_profile.is_empty()).then(|| s.bfd_profile.clone()),
        ebgp_multihop: s.ebgp_multi_hop,
        graceful_restart: s.enable_graceful_restart,
        vrf: (!s.vrf.is_empty()).then(|| s.vrf.clone()),
        disable_mp: s.disable_mp,
        dual_stack_address_family: s.dual_stack_address_family,
    })
}
