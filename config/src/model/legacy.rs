//! The legacy ConfigMap as a source of drafts: its pools (each with the L2 or BGP
//! advertisements its `protocol` implies), peers, BFD profiles and community aliases.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{ConfigError, ObjectRef, Sink};
use crate::legacy::{self, LegacyConfig};
use crate::selector::{self, Selector};

use super::bgp::{
    BgpAdvertisement, CommunityValue, LEGACY_BFD_FIELDS, aggregation_lengths, bfd_profile,
};
use super::build::{AdvDraft, Drafts, PoolDraft};
use super::peer::{
    BgpPeer, DEFAULT_BGP_PORT, Password, PeerAsn, PeerEndpoint, parse_ip, parse_router_id,
    peer_timers,
};
use super::resources::parse_ranges;
use super::types::{L2Advertisement, Pool};

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

impl Drafts {
    /// Adds everything one legacy ConfigMap (`namespace/name`) defines.
    pub(super) fn add_legacy(&mut self, cm: &str, lc: &LegacyConfig) {
        let lref = |section: &'static str, index: usize, name: Option<&str>| ObjectRef::Legacy {
            configmap: cm.to_string(),
            section,
            index,
            name: name.filter(|n| !n.is_empty()).map(str::to_string),
        };
        self.add_legacy_communities(cm, &lc.bgp_communities);
        for (i, b) in lc.bfd_profiles.iter().enumerate() {
            self.add_legacy_bfd_profile(lref("bfd-profiles", i, Some(&b.name)), b);
        }
        for (i, p) in lc.peers.iter().enumerate() {
            let object = lref("peers", i, None);
            let mut sink = Sink {
                object: object.clone(),
                errors: &mut self.errors,
            };
            if let Some(peer) = legacy_peer(i, p, &mut sink) {
                self.peers.push((object, peer));
            }
        }
        for (i, p) in lc.address_pools.iter().enumerate() {
            self.add_legacy_pool(lref("address-pools", i, Some(&p.name)), p);
        }
    }

    fn add_legacy_communities(&mut self, cm: &str, communities: &BTreeMap<String, String>) {
        for (name, value) in communities {
            let object = ObjectRef::ConfigMap {
                configmap: cm.to_string(),
            };
            match value.parse::<CommunityValue>() {
                Ok(v) => {
                    if let Some((other, _)) = self.aliases.get(name) {
                        self.errors.push(ConfigError {
                            object,
                            field: format!("bgp-communities[{name:?}]"),
                            message: format!("community alias {name:?} is also defined by {other}"),
                        });
                    } else {
                        self.aliases.insert(name.clone(), (object, v));
                    }
                }
                Err(e) => self.errors.push(ConfigError {
                    object,
                    field: format!("bgp-communities[{name:?}]"),
                    message: e,
                }),
            }
        }
    }

    fn add_legacy_bfd_profile(&mut self, object: ObjectRef, b: &legacy::BfdProfile) {
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
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
        self.bfd.push((object, p));
    }

    /// A pool and the advertisements its `protocol` implies.
    fn add_legacy_pool(&mut self, object: ObjectRef, p: &legacy::AddressPool) {
        let mut sink = Sink {
            object: object.clone(),
            errors: &mut self.errors,
        };
        if p.name.is_empty() {
            sink.push("name", "missing pool name");
        }
        let (ranges, addresses_index) = parse_ranges(&p.addresses, "addresses", &mut sink);
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
                self.l2.push(AdvDraft {
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
                    self.bgp_adv.push(AdvDraft {
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
        self.pools.push(PoolDraft {
            object,
            pool,
            addresses_index,
        });
    }
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
