//! Legacy ConfigMap to MetalLB CRDs, for `ferrolb config convert`.
//!
//! A layer2 pool becomes an IPAddressPool and an L2Advertisement, a bgp pool an
//! IPAddressPool and one BGPAdvertisement per `bgp-advertisements` entry (one with
//! defaults when there are none), peers become BGPPeers (`peer-1`, `peer-2`, ...),
//! `bgp-communities` one Community, `bfd-profiles` BFDProfiles. Names that are not valid
//! object names are rewritten and the renames reported, because Services that name a
//! pool in an annotation must then be updated.
//!
//! Building a [`crate::Config`] from the output gives the same `Config` as building it
//! from the input (after the reported renames); the tests check this.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::crd::{self, CommunityAlias};
use crate::legacy::LegacyConfig;
use crate::model::{legacy_advertisement_name, legacy_peer_name};
use crate::selector::dns1123_subdomain_error;

/// The converted objects and what a person must know about them.
#[derive(Debug, Default)]
pub struct Conversion {
    /// Objects in apply order (profiles and communities before what refers to them).
    pub objects: Vec<Value>,
    /// Pool and BFD profile names that had to change: old -> new.
    pub renamed: BTreeMap<String, String>,
}

impl Conversion {
    /// Multi-document YAML.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_norway::to_string(o).expect("JSON values serialize to YAML"));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// A valid object name (DNS-1123 subdomain) made from any string: lower-case; each
/// dot-separated label keeps its letters and digits, other runs become `-`; empty labels
/// are dropped.
pub fn object_name(s: &str) -> String {
    let labels: Vec<String> = s
        .split('.')
        .map(|label| {
            let mut out = String::new();
            for c in label.chars().map(|c| c.to_ascii_lowercase()) {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    out.push(c);
                } else if !out.ends_with('-') {
                    out.push('-');
                }
            }
            let trimmed: String = out.trim_matches('-').chars().take(63).collect();
            trimmed.trim_end_matches('-').to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let mut name = String::new();
    for l in labels {
        if name.len() + 1 + l.len() > 253 {
            break;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&l);
    }
    if name.is_empty() {
        "unnamed".into()
    } else {
        name
    }
}

/// Gives each of `names` a unique valid object name, recording changes in `renamed`.
fn rename_all<'a>(
    names: impl Iterator<Item = &'a str>,
    renamed: &mut BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let names: Vec<&str> = names.collect();
    // Valid names keep their spelling; they are claimed first so a rewritten name never
    // takes one of them.
    let mut taken: BTreeSet<String> = names
        .iter()
        .filter(|n| dns1123_subdomain_error(n).is_none())
        .map(|n| n.to_string())
        .collect();
    let mut map = BTreeMap::new();
    for n in names {
        if dns1123_subdomain_error(n).is_none() {
            map.insert(n.to_string(), n.to_string());
            continue;
        }
        let base = object_name(n);
        let mut candidate = base.clone();
        let mut i = 2;
        while taken.contains(&candidate) {
            candidate = format!("{base}-{i}");
            i += 1;
        }
        taken.insert(candidate.clone());
        renamed.insert(n.to_string(), candidate.clone());
        map.insert(n.to_string(), candidate);
    }
    map
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

fn to_value<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).expect("CRD types serialize")
}

/// Converts one legacy configuration; objects go to `namespace`.
pub fn convert(lc: &LegacyConfig, namespace: &str) -> Conversion {
    let mut c = Conversion::default();
    let pool_names = rename_all(
        lc.address_pools.iter().map(|p| p.name.as_str()),
        &mut c.renamed,
    );
    let bfd_names = rename_all(
        lc.bfd_profiles.iter().map(|p| p.name.as_str()),
        &mut c.renamed,
    );

    for b in &lc.bfd_profiles {
        let spec = crd::BFDProfileSpec {
            receive_interval: b.receive_interval,
            transmit_interval: b.transmit_interval,
            detect_multiplier: b.detect_multiplier,
            echo_interval: b.echo_interval,
            echo_mode: b.echo_mode,
            passive_mode: b.passive_mode,
            minimum_ttl: b.minimum_ttl,
        };
        let mut o = crd::BFDProfile::new(&bfd_names[&b.name], spec);
        o.metadata = meta(&bfd_names[&b.name], namespace);
        c.objects.push(to_value(&o));
    }
    if !lc.bgp_communities.is_empty() {
        let spec = crd::CommunitySpec {
            communities: lc
                .bgp_communities
                .iter()
                .map(|(name, value)| CommunityAlias {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let mut o = crd::Community::new("communities", spec);
        o.metadata = meta("communities", namespace);
        c.objects.push(to_value(&o));
    }
    for (i, p) in lc.peers.iter().enumerate() {
        let name = legacy_peer_name(i);
        let spec = crd::BGPPeerSpec {
            my_asn: p.my_asn,
            peer_asn: p.peer_asn,
            peer_address: p.peer_address.clone(),
            source_address: p.source_address.clone(),
            peer_port: p.peer_port,
            hold_time: p.hold_time.clone(),
            keepalive_time: p.keepalive_time.clone(),
            router_id: p.router_id.clone(),
            node_selectors: p
                .node_selectors
                .iter()
                .map(|s| s.to_label_selector())
                .collect(),
            password: p.password.clone(),
            bfd_profile: bfd_names
                .get(&p.bfd_profile)
                .cloned()
                .unwrap_or_else(|| p.bfd_profile.clone()),
            ebgp_multi_hop: p.ebgp_multihop.unwrap_or(false),
            ..Default::default()
        };
        let mut o = crd::BGPPeer::new(&name, spec);
        o.metadata = meta(&name, namespace);
        c.objects.push(to_value(&o));
    }
    for p in &lc.address_pools {
        let name = &pool_names[&p.name];
        let spec = crd::IPAddressPoolSpec {
            addresses: p.addresses.clone(),
            auto_assign: p.auto_assign,
            avoid_buggy_ips: p.avoid_buggy_ips.unwrap_or(false),
            service_allocation: None,
        };
        let mut o = crd::IPAddressPool::new(name, spec);
        o.metadata = meta(name, namespace);
        c.objects.push(to_value(&o));
        match p.protocol.as_str() {
            "bgp" => {
                let default = [crate::legacy::BgpAdvertisement::default()];
                let advs = if p.bgp_advertisements.is_empty() {
                    &default[..]
                } else {
                    &p.bgp_advertisements[..]
                };
                for (j, a) in advs.iter().enumerate() {
                    let adv_name = legacy_advertisement_name(name, j, advs.len());
                    let spec = crd::BGPAdvertisementSpec {
                        aggregation_length: a.aggregation_length,
                        aggregation_length_v6: a.aggregation_length_v6,
                        local_pref: a.localpref,
                        communities: a.communities.clone(),
                        ip_address_pools: vec![name.clone()],
                        ..Default::default()
                    };
                    let mut o = crd::BGPAdvertisement::new(&adv_name, spec);
                    o.metadata = meta(&adv_name, namespace);
                    c.objects.push(to_value(&o));
                }
            }
            // layer2, and anything else: validation of the input reports a bad protocol;
            // converting it as layer2 keeps the addresses visible in the output.
            _ => {
                let adv_name = legacy_advertisement_name(name, 0, 1);
                let spec = crd::L2AdvertisementSpec {
                    ip_address_pools: vec![name.clone()],
                    ..Default::default()
                };
                let mut o = crd::L2Advertisement::new(&adv_name, spec);
                o.metadata = meta(&adv_name, namespace);
                c.objects.push(to_value(&o));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;
    use crate::model::{Config, Sources};

    fn build_legacy(text: &str) -> Config {
        let lc = load::parse_legacy(text).unwrap();
        Config::build(&Sources {
            legacy: vec![("metallb-system/config".into(), lc)],
            ..Default::default()
        })
        .unwrap()
    }

    fn build_converted(text: &str) -> (Config, BTreeMap<String, String>) {
        let lc = load::parse_legacy(text).unwrap();
        let conv = convert(&lc, "metallb-system");
        let loaded = load::from_yaml(&conv.to_yaml()).unwrap();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        (Config::build(&loaded.sources).unwrap(), conv.renamed)
    }

    const FULL: &str = r#"
peers:
- peer-address: 192.0.2.1
  peer-asn: 64501
  my-asn: 64500
  hold-time: 90s
  keepalive-time: 30s
  router-id: 192.0.2.10
  node-selectors:
  - match-labels: {rack: frontend}
    match-expressions:
    - {key: network-speed, operator: NotIn, values: [slow]}
  bfd-profile: fast
  ebgp-multihop: true
- peer-address: 2001:db8::1
  peer-asn: 64502
  my-asn: 64500
  peer-port: 1179
  password: secret
bgp-communities:
  no-advertise: 65535:65282
bfd-profiles:
- name: fast
  receive-interval: 100
  transmit-interval: 100
  detect-multiplier: 5
  echo-mode: true
address-pools:
- name: l2
  protocol: layer2
  addresses: [198.51.100.10-198.51.100.20, 2001:db8:1::/120]
  avoid-buggy-ips: true
- name: bgp
  protocol: bgp
  auto-assign: false
  addresses: [203.0.113.0/24]
  bgp-advertisements:
  - aggregation-length: 32
    localpref: 100
    communities: [no-advertise, "65535:65281"]
  - aggregation-length: 24
- name: bgp-default
  protocol: bgp
  addresses: [203.0.114.0/28]
"#;

    #[test]
    fn converted_config_equals_legacy_config() {
        let (converted, renamed) = build_converted(FULL);
        assert!(renamed.is_empty());
        assert_eq!(converted, build_legacy(FULL));
        assert_eq!(converted.bgp_advertisements.len(), 3);
        assert_eq!(converted.bgp_peers.len(), 2);
    }

    #[test]
    fn invalid_names_are_rewritten_and_reported() {
        let text = "address-pools:\n- name: My_Pool\n  protocol: layer2\n  addresses: [198.51.100.0/30]\n- name: my-pool\n  protocol: layer2\n  addresses: [198.51.100.4/30]\n";
        let (cfg, renamed) = build_converted(text);
        assert_eq!(
            renamed,
            BTreeMap::from([("My_Pool".into(), "my-pool-2".into())])
        );
        assert_eq!(
            cfg.pools["my-pool-2"].ranges,
            build_legacy(text).pools["My_Pool"].ranges
        );
        assert!(
            cfg.l2_advertisements["my-pool-2"]
                .pools
                .contains("my-pool-2")
        );
    }

    #[test]
    fn object_names() {
        assert_eq!(object_name("My_Pool"), "my-pool");
        assert_eq!(object_name("__x__"), "x");
        assert_eq!(object_name("***"), "unnamed");
        assert_eq!(object_name("A...0"), "a.0");
        assert_eq!(object_name("a..b.-c"), "a.b.c");
        assert!(dns1123_subdomain_error(&object_name(&"x".repeat(300))).is_none());
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::legacy::{AddressPool, BgpAdvertisement, LegacyConfig};
    use crate::model::{Config, Sources};
    use proptest::prelude::*;

    fn pool_strategy() -> impl Strategy<Value = AddressPool> {
        (
            any::<bool>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::collection::vec(
                (
                    proptest::option::of(28i32..=32),
                    proptest::option::of(0u32..500),
                ),
                0..3,
            ),
            "[a-zA-Z_][a-zA-Z0-9_.-]{0,10}",
        )
            .prop_map(|(bgp, auto, buggy, advs, name)| AddressPool {
                name,
                protocol: if bgp { "bgp" } else { "layer2" }.into(),
                addresses: vec![],
                auto_assign: auto,
                avoid_buggy_ips: buggy,
                bgp_advertisements: if bgp {
                    advs.into_iter()
                        .map(|(agg, lp)| BgpAdvertisement {
                            aggregation_length: agg,
                            localpref: lp,
                            ..Default::default()
                        })
                        .collect()
                } else {
                    vec![]
                },
            })
    }

    fn config_strategy() -> impl Strategy<Value = LegacyConfig> {
        proptest::collection::vec(pool_strategy(), 1..6).prop_map(|pools| LegacyConfig {
            address_pools: pools
                .into_iter()
                .enumerate()
                .map(|(i, mut p)| {
                    // Distinct names and /28s per pool keep the configuration valid.
                    p.name = format!("{}{i}", p.name);
                    p.addresses = vec![
                        format!("198.51.100.{}/28", i * 16),
                        format!("2001:db8:{i}::/120"),
                    ];
                    p
                })
                .collect(),
            ..Default::default()
        })
    }

    proptest! {
        #[test]
        fn object_names_are_always_valid(s in ".{0,300}") {
            let n = object_name(&s);
            prop_assert!(dns1123_subdomain_error(&n).is_none(), "{s:?} -> {n:?}");
        }

        #[test]
        fn convert_then_build_equals_build(lc in config_strategy()) {
            let direct = Config::build(&Sources {
                legacy: vec![("metallb-system/config".into(), lc.clone())],
                ..Default::default()
            })
            .unwrap();
            let conv = convert(&lc, "metallb-system");
            let loaded = crate::load::from_yaml(&conv.to_yaml()).unwrap();
            prop_assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
            let via = Config::build(&loaded.sources).unwrap();
            prop_assert_eq!(via.pools.len(), direct.pools.len());
            for (name, p) in &direct.pools {
                let new = conv.renamed.get(name).unwrap_or(name);
                let q = &via.pools[new];
                prop_assert_eq!(&q.ranges, &p.ranges);
                prop_assert_eq!(q.auto_assign, p.auto_assign);
                prop_assert_eq!(q.avoid_buggy_ips, p.avoid_buggy_ips);
            }
            // With no renames the two must be equal in every respect.
            if conv.renamed.is_empty() {
                prop_assert_eq!(via, direct);
            }
        }
    }
}
