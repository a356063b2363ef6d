//! [`Config::build`]: every source becomes drafts (pools and advertisements whose
//! references are still names), then the drafts are checked against each other and
//! resolved into a [`Config`], in this order: pools, BFD profiles, peers, advertisements.

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::Family;
use crate::error::{ConfigError, ConfigErrors, ErrorList, ObjectRef, Sink};
use crate::selector::Selector;

use super::bgp::{BfdProfile, BgpAdvertisement, CommunityValue};
use super::overlap::check_overlaps;
use super::peer::{BgpPeer, PeerEndpoint};
use super::types::{Config, L2Advertisement, Pool, Sources};

/// A pool as the builder sees it before names are checked for uniqueness.
#[derive(Debug)]
pub(super) struct PoolDraft {
    pub object: ObjectRef,
    pub pool: Pool,
    /// For each of `pool.ranges` (sorted), its index in the object's list of addresses.
    pub addresses_index: Vec<usize>,
}

/// An advertisement before its pool names and selectors are resolved.
pub(super) struct AdvDraft<T> {
    pub object: ObjectRef,
    /// Where the advertisement's fields live: `spec.` or `bgp-advertisements[N].`.
    pub field_prefix: String,
    pub pool_names: Vec<String>,
    pub pool_selectors: Vec<Selector>,
    pub all_pools_if_empty: bool,
    pub value: T,
}

/// A BGP advertisement with its communities as written (alias names or values), resolved
/// once every alias is known.
pub(super) type BgpAdvDraft = AdvDraft<(BgpAdvertisement, Vec<String>)>;

/// What the sources define, filled by the steps of [`Config::build`] in source order
/// (which decides, e.g., which of two definitions of a community alias wins).
#[derive(Default)]
pub(super) struct Drafts {
    pub errors: ErrorList,
    pub pools: Vec<PoolDraft>,
    pub l2: Vec<AdvDraft<L2Advertisement>>,
    pub bgp_adv: Vec<BgpAdvDraft>,
    pub peers: Vec<(ObjectRef, BgpPeer)>,
    pub bfd: Vec<(ObjectRef, BfdProfile)>,
    /// Community aliases: name -> (defining object, value).
    pub aliases: BTreeMap<String, (ObjectRef, CommunityValue)>,
}

impl Config {
    /// Validates and normalizes every source together. All errors are returned, sorted
    /// and summarised past [`MAX_REPORTED_ERRORS`](crate::error::MAX_REPORTED_ERRORS).
    pub fn build(src: &Sources) -> Result<Config, ConfigErrors> {
        let mut drafts = Drafts::default();
        drafts.pools.reserve_exact(
            src.pools.len()
                + src
                    .legacy
                    .iter()
                    .map(|(_, lc)| lc.address_pools.len())
                    .sum::<usize>(),
        );
        for (cm, lc) in &src.legacy {
            drafts.add_legacy(cm, lc);
        }
        drafts.add_resources(src);
        drafts.resolve()
    }
}

impl Drafts {
    fn resolve(self) -> Result<Config, ConfigErrors> {
        let Drafts {
            mut errors,
            pools,
            l2,
            bgp_adv,
            peers,
            bfd,
            aliases,
        } = self;
        let mut cfg = Config::default();
        check_overlaps(&pools, &mut errors);
        insert_pools(&mut cfg, pools, &mut errors);
        insert_bfd_profiles(&mut cfg, bfd, &mut errors);
        insert_peers(&mut cfg, peers, &mut errors);
        insert_l2_advertisements(&mut cfg, l2, &mut errors);
        insert_bgp_advertisements(&mut cfg, bgp_adv, &aliases, &mut errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors.into_errors())
        }
    }
}

/// Pools with unique names; a later duplicate is refused. The drafts' pools move into
/// `cfg` (not copies: with 100,000 pools, a copy is tens of MB).
fn insert_pools(cfg: &mut Config, pools: Vec<PoolDraft>, errors: &mut ErrorList) {
    let mut defined_by: BTreeMap<&str, &ObjectRef> = BTreeMap::new();
    let mut first = Vec::with_capacity(pools.len());
    for d in &pools {
        let name = d.pool.name.as_str();
        let is_first = match defined_by.get(name) {
            Some(other) => {
                errors.push(ConfigError {
                    object: d.object.clone(),
                    field: field_of(&d.object, "name", "metadata.name").into(),
                    message: format!("duplicate pool name {name:?} (also defined by {other})"),
                });
                false
            }
            None => {
                defined_by.insert(name, &d.object);
                true
            }
        };
        first.push(is_first);
    }
    drop(defined_by);
    for (d, first) in pools.into_iter().zip(first) {
        if first {
            cfg.pools.insert(d.pool.name.clone(), d.pool);
        }
    }
}

fn insert_bfd_profiles(
    cfg: &mut Config,
    bfd: Vec<(ObjectRef, BfdProfile)>,
    errors: &mut ErrorList,
) {
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
}

/// Peers, unique by name and by address (or interface) within a VRF.
fn insert_peers(cfg: &mut Config, peers: Vec<(ObjectRef, BgpPeer)>, errors: &mut ErrorList) {
    let mut peer_keys: BTreeMap<(String, Option<String>), ObjectRef> = BTreeMap::new();
    for (object, p) in peers {
        let mut sink = Sink {
            object: object.clone(),
            errors,
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
}

fn insert_l2_advertisements(
    cfg: &mut Config,
    l2: Vec<AdvDraft<L2Advertisement>>,
    errors: &mut ErrorList,
) {
    for mut d in l2 {
        let mut sink = Sink {
            object: d.object.clone(),
            errors,
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
}

/// BGP advertisements: pools, community aliases and peers resolved, aggregation lengths
/// checked against the pools' prefixes.
fn insert_bgp_advertisements(
    cfg: &mut Config,
    bgp_adv: Vec<BgpAdvDraft>,
    aliases: &BTreeMap<String, (ObjectRef, CommunityValue)>,
    errors: &mut ErrorList,
) {
    for d in bgp_adv {
        let legacy = matches!(d.object, ObjectRef::Legacy { .. });
        let mut sink = Sink {
            object: d.object.clone(),
            errors,
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
}

/// A field's spelling in the legacy ConfigMap or in a custom resource.
pub(super) fn field_of(
    object: &ObjectRef,
    legacy: &'static str,
    crd: &'static str,
) -> &'static str {
    match object {
        ObjectRef::Legacy { .. } | ObjectRef::ConfigMap { .. } => legacy,
        _ => crd,
    }
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
    if !sels.is_empty() {
        for p in pools.values() {
            if sels.iter().any(|s| s.matches(&p.labels)) {
                out.insert(p.name.clone());
            }
        }
    }
    if names.is_empty() && sels.is_empty() && all_if_empty {
        out.extend(pools.keys().cloned());
    }
    out
}
