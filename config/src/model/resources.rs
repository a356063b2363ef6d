//! Custom resources (`metallb.io`) as sources of drafts, and the field checks that both
//! spellings share (object names, address ranges, selectors).

use std::collections::BTreeSet;

use kube_core::ResourceExt;

use crate::addr::IpRange;
use crate::crd;
use crate::error::{ObjectRef, Sink};
use crate::selector::{self, Selector, dns1123_label_error, dns1123_subdomain_error};

use super::bgp::{
    BgpAdvertisement, CRD_BFD_FIELDS, CommunityValue, aggregation_lengths, bfd_profile,
};
use super::build::{AdvDraft, Drafts, PoolDraft};
use super::peer::crd_peer;
use super::types::{L2Advertisement, Pool, ServiceAllocation};

impl Drafts {
    /// Adds every custom resource, in the order their references are resolved later.
    pub(super) fn add_resources(&mut self, src: &super::Sources) {
        src.pools.iter().for_each(|p| self.add_pool(p));
        src.l2_advertisements
            .iter()
            .for_each(|a| self.add_l2_advertisement(a));
        src.communities.iter().for_each(|c| self.add_community(c));
        src.bfd_profiles
            .iter()
            .for_each(|b| self.add_bfd_profile(b));
        src.bgp_peers.iter().for_each(|p| self.add_bgp_peer(p));
        src.bgp_advertisements
            .iter()
            .for_each(|a| self.add_bgp_advertisement(a));
    }

    fn add_pool(&mut self, p: &crd::IPAddressPool) {
        let object = ObjectRef::resource("IPAddressPool", &p.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
        };
        check_object_name(&p.name_any(), &mut sink);
        let (ranges, addresses_index) =
            parse_ranges(&p.spec.addresses, "spec.addresses", &mut sink);
        let allocation = p
            .spec
            .service_allocation
            .as_ref()
            .map(|a| service_allocation(a, &mut sink));
        self.pools.push(PoolDraft {
            object,
            addresses_index,
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

    fn add_l2_advertisement(&mut self, a: &crd::L2Advertisement) {
        let object = ObjectRef::resource("L2Advertisement", &a.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
        };
        check_object_name(&a.name_any(), &mut sink);
        let pool_selectors = selectors(
            &a.spec.ip_address_pool_selectors,
            "spec.ipAddressPoolSelectors",
            &mut sink,
        );
        let node_selectors = selectors(&a.spec.node_selectors, "spec.nodeSelectors", &mut sink);
        let interfaces = interfaces(&a.spec.interfaces, &mut sink);
        self.l2.push(AdvDraft {
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

    fn add_community(&mut self, c: &crd::Community) {
        let object = ObjectRef::resource("Community", &c.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
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
                    if let Some((other, _)) = self.aliases.get(&alias.name) {
                        sink.push(
                            format!("{f}.name"),
                            format!(
                                "community alias {:?} is also defined by {other}",
                                alias.name
                            ),
                        );
                    } else {
                        self.aliases.insert(alias.name.clone(), (object.clone(), v));
                    }
                }
            }
        }
    }

    fn add_bfd_profile(&mut self, b: &crd::BFDProfile) {
        let object = ObjectRef::resource("BFDProfile", &b.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
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
        self.bfd.push((object, p));
    }

    fn add_bgp_peer(&mut self, p: &crd::BGPPeer) {
        let object = ObjectRef::resource("BGPPeer", &p.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
        };
        check_object_name(&p.name_any(), &mut sink);
        if let Some(peer) = crd_peer(p, &mut sink) {
            self.peers.push((object, peer));
        }
    }

    fn add_bgp_advertisement(&mut self, a: &crd::BGPAdvertisement) {
        let object = ObjectRef::resource("BGPAdvertisement", &a.name_any());
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
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
        self.bgp_adv.push(AdvDraft {
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
}

pub(super) fn check_object_name(name: &str, sink: &mut Sink<'_>) {
    if let Some(e) = dns1123_subdomain_error(name) {
        sink.push("metadata.name", format!("invalid name {name:?}: {e}"));
    }
}

/// A pool's ranges, sorted, each with its index in `addresses` (errors name the range
/// as the user wrote it).
pub(super) fn parse_ranges(
    addresses: &[String],
    field: &str,
    sink: &mut Sink<'_>,
) -> (Vec<IpRange>, Vec<usize>) {
    if addresses.is_empty() {
        sink.push(field, "a pool needs at least one address range");
    }
    let mut out: Vec<(IpRange, usize)> = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        match a.parse::<IpRange>() {
            Ok(r) => out.push((r, i)),
            Err(e) => sink.push(format!("{field}[{i}]"), e.to_string()),
        }
    }
    out.sort();
    out.into_iter().unzip()
}

pub(super) fn selectors(
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    field: &str,
    sink: &mut Sink<'_>,
) -> Vec<Selector> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| selector::parse(s, &format!("{field}[{i}]"), sink))
        .collect()
}

pub(super) fn service_allocation(
    a: &crd::ServiceAllocation,
    sink: &mut Sink<'_>,
) -> ServiceAllocation {
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

pub(super) fn interfaces(list: &[String], sink: &mut Sink<'_>) -> BTreeSet<String> {
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
