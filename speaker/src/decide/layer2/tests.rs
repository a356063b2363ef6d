//! Layer-2 eligibility (the shared rules with L2Advertisements) and election.

use std::collections::BTreeSet;

use ferrolb_config::Config;

use super::*;
use crate::decide::eligibility::Unannounced;
use crate::decide::inputs::{ApiSnapshot, EXCLUDE_LABEL, NodeInfo, ServiceInfo, SliceReadiness};
use crate::election;

const IP: &str = "198.51.100.10";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(yaml: &str) -> Config {
    let loaded = ferrolb_config::load::from_yaml(yaml).unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    Config::build(&loaded.sources).unwrap()
}

const POOL: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first, namespace: metallb-system}
spec: {addresses: [198.51.100.10-198.51.100.12]}
";

fn with_l2(extra: &str) -> Config {
    config(&format!("{POOL}---\n{extra}"))
}

fn all_l2() -> Config {
    with_l2(
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\n",
    )
}

fn node() -> NodeInfo {
    NodeInfo {
        ready: true,
        ..Default::default()
    }
}

fn svc(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn ready_on(nodes: &[&str]) -> SliceReadiness {
    SliceReadiness {
        any_ready: !nodes.is_empty(),
        ready_nodes: nodes.iter().map(|s| s.to_string()).collect(),
    }
}

/// Three usable nodes, the pool advertised everywhere, one Cluster-policy Service at
/// 198.51.100.10 with a ready endpoint on n1.
fn world() -> ApiSnapshot {
    let mut w = ApiSnapshot {
        config: Some(all_l2()),
        ..Default::default()
    };
    for n in ["n1", "n2", "n3"] {
        w.nodes.insert(n.into(), node());
    }
    w.services.insert(
        svc("echo"),
        ServiceInfo {
            ips: vec![ip(IP)],
            local: false,
        },
    );
    w.slices.insert(svc("echo"), ready_on(&["n1"]));
    w
}

fn eligible(w: &ApiSnapshot, addr: &str) -> Vec<String> {
    layer2_eligibility(w)
        .get(&ip(addr))
        .map(|e| e.node_names().map(String::from).collect())
        .unwrap_or_default()
}

fn reason(w: &ApiSnapshot, addr: &str) -> Option<Unannounced> {
    layer2_eligibility(w)[&ip(addr)].reason
}

#[test]
fn cluster_policy_every_usable_node_is_eligible() {
    let w = world();
    assert_eq!(eligible(&w, IP), ["n1", "n2", "n3"]);
    let e = &layer2_eligibility(&w)[&ip(IP)];
    assert_eq!(e.pool.as_deref(), Some("first"));
    assert_eq!(e.reason, None);
    assert_eq!(
        e.node("n2"),
        Some(&None),
        "no interfaces named: every interface"
    );
    assert_eq!(e.node("n4"), None, "not a node");
}

#[test]
fn no_ready_endpoint_anywhere_means_nobody() {
    let mut w = world();
    w.slices.insert(svc("echo"), ready_on(&[]));
    assert!(eligible(&w, IP).is_empty());
    assert_eq!(reason(&w, IP), Some(Unannounced::NoReadyEndpoint));
    w.slices.clear();
    assert_eq!(reason(&w, IP), Some(Unannounced::NoReadyEndpoint));
}

#[test]
fn endpoint_without_node_name_counts_for_cluster_policy_only() {
    let mut w = world();
    w.slices.insert(
        svc("echo"),
        SliceReadiness {
            any_ready: true,
            ready_nodes: Vec::new(),
        },
    );
    assert_eq!(eligible(&w, IP), ["n1", "n2", "n3"]);
    w.services.get_mut(&svc("echo")).unwrap().local = true;
    assert!(eligible(&w, IP).is_empty());
    assert_eq!(reason(&w, IP), Some(Unannounced::NoEligibleNode));
}

#[test]
fn local_policy_only_nodes_with_a_ready_local_endpoint() {
    let mut w = world();
    w.services.get_mut(&svc("echo")).unwrap().local = true;
    assert_eq!(eligible(&w, IP), ["n1"]);
    // Readiness is the union over the Service's slices.
    w.slices
        .get_mut(&svc("echo"))
        .unwrap()
        .merge(&SliceReadiness {
            any_ready: true,
            ready_nodes: vec!["n3".to_string()],
        });
    assert_eq!(eligible(&w, IP), ["n1", "n3"]);
}

#[test]
fn readiness_merges_into_a_sorted_union() {
    let mut all = SliceReadiness::default();
    for slice in [
        ready_on(&["n3", "n1"]),
        ready_on(&[]),
        ready_on(&["n2", "n1"]),
    ] {
        all.merge(&slice);
    }
    assert!(all.any_ready);
    assert_eq!(all.ready_nodes, ["n1", "n2", "n3"]);
    assert!(all.on_node("n2") && !all.on_node("n4"));
    let mut none = SliceReadiness::default();
    none.merge(&ready_on(&[]));
    assert!(!none.any_ready && none.ready_nodes.is_empty());
}

#[test]
fn excluded_not_ready_and_network_unavailable_nodes_never_announce() {
    let mut w = world();
    w.nodes
        .get_mut("n1")
        .unwrap()
        .labels
        .insert(EXCLUDE_LABEL.into(), "".into());
    w.nodes.get_mut("n2").unwrap().ready = false;
    assert_eq!(eligible(&w, IP), ["n3"]);
    w.nodes.get_mut("n3").unwrap().network_unavailable = true;
    assert!(eligible(&w, IP).is_empty());
    assert_eq!(reason(&w, IP), Some(Unannounced::NoEligibleNode));
    // Local policy with the only endpoint on an excluded node: nobody.
    let mut w = world();
    w.services.get_mut(&svc("echo")).unwrap().local = true;
    w.nodes
        .get_mut("n1")
        .unwrap()
        .labels
        .insert(EXCLUDE_LABEL.into(), "true".into());
    assert!(eligible(&w, IP).is_empty());
}

#[test]
fn node_selectors_restrict_and_are_ored() {
    let mut w = world();
    w.config = Some(with_l2(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  nodeSelectors:
  - matchLabels: {zone: a}
  - matchExpressions: [{key: edge, operator: Exists}]
",
    ));
    assert!(eligible(&w, IP).is_empty(), "no node labelled");
    assert_eq!(reason(&w, IP), Some(Unannounced::NoEligibleNode));
    w.nodes
        .get_mut("n2")
        .unwrap()
        .labels
        .insert("zone".into(), "a".into());
    w.nodes
        .get_mut("n3")
        .unwrap()
        .labels
        .insert("edge".into(), "".into());
    assert_eq!(eligible(&w, IP), ["n2", "n3"]);
}

#[test]
fn interfaces_are_the_union_of_matching_advertisements() {
    let mut w = world();
    w.config = Some(with_l2(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a, namespace: metallb-system}
spec: {interfaces: [eth1]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: b, namespace: metallb-system}
spec:
  interfaces: [eth2]
  nodeSelectors: [{matchLabels: {zone: a}}]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: c, namespace: metallb-system}
spec:
  nodeSelectors: [{matchLabels: {zone: b}}]
",
    ));
    w.nodes
        .get_mut("n2")
        .unwrap()
        .labels
        .insert("zone".into(), "a".into());
    w.nodes
        .get_mut("n3")
        .unwrap()
        .labels
        .insert("zone".into(), "b".into());
    let e = &layer2_eligibility(&w)[&ip(IP)];
    let set = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    assert_eq!(e.node("n1"), Some(&set(&["eth1"])));
    assert_eq!(e.node("n2"), Some(&set(&["eth1", "eth2"])));
    assert_eq!(
        e.node("n3"),
        Some(&None),
        "c names no interface: all of them"
    );
}

#[test]
fn address_outside_pools_or_advertisements_or_config_is_not_announced() {
    let mut w = world();
    w.services.insert(
        svc("other"),
        ServiceInfo {
            ips: vec![ip("203.0.113.5")],
            local: false,
        },
    );
    w.slices.insert(svc("other"), ready_on(&["n1"]));
    assert_eq!(reason(&w, "203.0.113.5"), Some(Unannounced::NoPool));
    w.config = Some(config(POOL));
    assert_eq!(reason(&w, IP), Some(Unannounced::NoAdvertisement));
    w.config = Some(with_l2(
        "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: second, namespace: metallb-system}
spec: {addresses: [203.0.113.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: only-second, namespace: metallb-system}
spec: {ipAddressPools: [second]}
",
    ));
    assert_eq!(reason(&w, IP), Some(Unannounced::NoAdvertisement));
    assert_eq!(eligible(&w, "203.0.113.5"), ["n1", "n2", "n3"]);
    w.config = None;
    assert_eq!(reason(&w, IP), Some(Unannounced::NoConfig));
}

#[test]
fn shared_address_uses_the_union_and_gets_one_leader() {
    let mut w = world();
    w.services.clear();
    w.slices.clear();
    for (name, on) in [("a", "n1"), ("b", "n2")] {
        w.services.insert(
            svc(name),
            ServiceInfo {
                ips: vec![ip(IP)],
                local: true,
            },
        );
        w.slices.insert(svc(name), ready_on(&[on]));
    }
    // A third sharer without endpoints adds no node but is still listed.
    w.services.insert(
        svc("c"),
        ServiceInfo {
            ips: vec![ip(IP)],
            local: false,
        },
    );
    let el = layer2_eligibility(&w);
    assert_eq!(el.len(), 1, "one entry per address");
    assert_eq!(eligible(&w, IP), ["n1", "n2"]);
    assert_eq!(el[&ip(IP)].services.len(), 3);
    let live: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leaders: Vec<usize> = ["n1", "n2", "n3"]
        .iter()
        .map(|me| elect(me, &el, Liveness::Live(&live)).led.len())
        .collect();
    assert_eq!(leaders.iter().sum::<usize>(), 1, "exactly one announcer");
    assert_eq!(leaders[2], 0, "n3 is not eligible");
    let leader = &elect("n1", &el, Liveness::Live(&live)).leaders[&ip(IP)];
    let spec = &elect(leader, &el, Liveness::Live(&live)).led[&ip(IP)];
    assert_eq!(
        spec.services,
        BTreeSet::from(["default/a".into(), "default/b".into(), "default/c".into()])
    );
}

#[test]
fn leader_is_the_rendezvous_winner_among_eligible_live_nodes() {
    let mut w = world();
    // Several addresses, so both the leader and the runner-up are exercised.
    // One Service each, so that each address is its own group.
    let addrs = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
    for (i, a) in addrs.iter().enumerate() {
        let name = format!("echo-{i}");
        w.services.insert(
            svc(&name),
            ServiceInfo {
                ips: vec![ip(a)],
                local: false,
            },
        );
        w.slices.insert(svc(&name), ready_on(&["n1"]));
    }
    w.services.remove(&svc("echo"));
    let el = layer2_eligibility(&w);
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let p = elect("n1", &el, Liveness::Live(&all));
    for a in addrs {
        let want = election::leader(ip(a), ["n1", "n2", "n3"]).unwrap();
        assert_eq!(p.leaders[&ip(a)], want);
        assert_eq!(p.led.contains_key(&ip(a)), want == "n1");
    }
    // Every node computes the same leaders; each address is led exactly once.
    let mut led = BTreeMap::new();
    for me in ["n1", "n2", "n3"] {
        let q = elect(me, &el, Liveness::Live(&all));
        assert_eq!(q.leaders, p.leaders);
        for ip in q.led.keys() {
            *led.entry(*ip).or_insert(0) += 1;
        }
    }
    assert!(led.values().all(|&c| c == 1) && led.len() == 3);
    // A dead leader's addresses go to its runner-up; the others stay.
    for a in addrs {
        let first = &p.leaders[&ip(a)];
        let live: BTreeSet<String> = all.iter().filter(|n| *n != first).cloned().collect();
        let q = elect("n1", &el, Liveness::Live(&live));
        let ranking = election::ranking(ip(a), ["n1", "n2", "n3"]);
        assert_eq!(q.leaders[&ip(a)], ranking[1]);
        for b in addrs.iter().filter(|b| p.leaders[&ip(b)] != *first) {
            assert_eq!(q.leaders[&ip(b)], p.leaders[&ip(b)], "{b} must not move");
        }
    }
}

#[test]
fn live_but_ineligible_and_eligible_but_dead_nodes_do_not_lead() {
    let mut w = world();
    w.services.get_mut(&svc("echo")).unwrap().local = true;
    let el = layer2_eligibility(&w);
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    assert_eq!(
        elect("n2", &el, Liveness::Live(&all)).leaders[&ip(IP)],
        "n1"
    );
    let without_n1: BTreeSet<String> = ["n2", "n3"].map(String::from).into();
    let p = elect("n2", &el, Liveness::Live(&without_n1));
    assert!(p.leaders.is_empty() && p.led.is_empty());
}

#[test]
fn silent_node_announces_nothing() {
    let w = world();
    let el = layer2_eligibility(&w);
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leader = elect("n1", &el, Liveness::Live(&all)).leaders[&ip(IP)].clone();
    assert_eq!(elect(&leader, &el, Liveness::Silent), Election::default());
}

#[test]
fn announce_spec_carries_the_leaders_interfaces() {
    let mut w = world();
    w.config = Some(with_l2(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a, namespace: metallb-system}
spec: {interfaces: [eth1]}
",
    ));
    let el = layer2_eligibility(&w);
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leader = elect("n1", &el, Liveness::Live(&all)).leaders[&ip(IP)].clone();
    let spec = &elect(&leader, &el, Liveness::Live(&all)).led[&ip(IP)];
    assert_eq!(spec.interfaces, Some(BTreeSet::from(["eth1".to_string()])));
    assert_eq!(spec.services, BTreeSet::from(["default/echo".to_string()]));
}

/// A pool of both families; `extra` adds documents (L2Advertisements).
fn dual_config(extra: &str) -> Config {
    config(&format!(
        "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: v4, namespace: metallb-system}}
spec: {{addresses: [198.51.100.10-198.51.100.12]}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: v6, namespace: metallb-system}}
spec: {{addresses: ['2001:db8:100::10-2001:db8:100::12']}}
---
{extra}"
    ))
}

const ALL_L2: &str = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\n";

/// Five usable nodes and `services` (name, addresses), all with a ready endpoint.
fn dual_world(cfg: Config, services: &[(&str, &[&str])]) -> ApiSnapshot {
    let mut w = ApiSnapshot {
        config: Some(cfg),
        ..Default::default()
    };
    for n in NODES5 {
        w.nodes.insert(n.into(), node());
    }
    for (name, ips) in services {
        w.services.insert(
            svc(name),
            ServiceInfo {
                ips: ips.iter().map(|a| ip(a)).collect(),
                local: false,
            },
        );
        w.slices.insert(svc(name), ready_on(&["n1"]));
    }
    w
}

const NODES5: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Every subset of the five nodes with at least one member, as live sets.
fn live_sets() -> Vec<BTreeSet<String>> {
    (1u32..32)
        .map(|m| {
            NODES5
                .iter()
                .enumerate()
                .filter(|(i, _)| m & (1 << i) != 0)
                .map(|(_, n)| n.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn a_dual_stack_service_has_one_leader_elected_on_its_lowest_address() {
    let (v4, v6) = ("198.51.100.10", "2001:db8:100::10");
    // The status lists the IPv6 address first: order must not matter.
    let w = dual_world(dual_config(ALL_L2), &[("ds", &[v6, v4])]);
    let el = layer2_eligibility(&w);
    assert_eq!(el[&ip(v4)].elect_on, Some(ip(v4)));
    assert_eq!(el[&ip(v6)].elect_on, Some(ip(v4)));
    let mut differs = 0;
    for live in live_sets() {
        let names: Vec<&str> = live.iter().map(String::as_str).collect();
        let want = election::leader(ip(v4), names.iter().copied()).unwrap();
        if election::leader(ip(v6), names.iter().copied()) != Some(want) {
            differs += 1;
        }
        let mut owners = 0;
        for me in &names {
            let p = elect(me, &el, Liveness::Live(&live));
            assert_eq!(p.leaders[&ip(v4)], want, "{live:?}");
            assert_eq!(p.leaders[&ip(v6)], want, "{live:?}");
            assert_eq!(p.led.len(), if *me == want { 2 } else { 0 });
            assert_eq!(p.status_owner(&[ip(v6), ip(v4)]), Some(want));
            owners += usize::from(!p.led.is_empty());
        }
        assert_eq!(owners, 1);
    }
    // Elected per address, the two would have split in many of these live sets.
    assert!(differs > 5, "{differs}");
}

#[test]
fn sharing_services_agree_on_one_leader_for_the_whole_group() {
    let (a4, a6, b4) = ("198.51.100.10", "2001:db8:100::10", "198.51.100.11");
    // x and y share both addresses (MetalLB's rule for dual-stack sharing); z shares
    // only the IPv6 one and brings its own IPv4 address: all one group, elected on the
    // lowest address of all, 198.51.100.10. A Service apart keeps its own election.
    let w = dual_world(
        dual_config(ALL_L2),
        &[
            ("x", &[a4, a6]),
            ("y", &[a6, a4]),
            ("z", &[a6, b4]),
            ("apart", &["198.51.100.12"]),
        ],
    );
    let el = layer2_eligibility(&w);
    for a in [a4, a6, b4] {
        assert_eq!(el[&ip(a)].elect_on, Some(ip(a4)), "{a}");
    }
    assert_eq!(el[&ip("198.51.100.12")].elect_on, Some(ip("198.51.100.12")));
    for live in live_sets() {
        let names: Vec<&str> = live.iter().map(String::as_str).collect();
        let want = election::leader(ip(a4), names.iter().copied()).unwrap();
        let p = elect("n1", &el, Liveness::Live(&live));
        for a in [a4, a6, b4] {
            assert_eq!(p.leaders[&ip(a)], want);
        }
        assert_eq!(
            p.leaders[&ip("198.51.100.12")],
            election::leader(ip("198.51.100.12"), names.iter().copied()).unwrap()
        );
        for s in ["x", "y", "z"] {
            let ips = &w.services[&svc(s)].ips;
            assert_eq!(p.status_owner(ips), Some(want));
        }
    }
}

#[test]
fn a_group_leader_must_be_eligible_for_every_address_it_can() {
    let (v4, v6) = ("198.51.100.10", "2001:db8:100::10");
    let with_sel = |v4_nodes: &str, v6_nodes: &str| {
        dual_config(&format!(
            "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: a4, namespace: metallb-system}}
spec: {{ipAddressPools: [v4], nodeSelectors: [{{matchExpressions: [{{key: n, operator: In, values: [{v4_nodes}]}}]}}]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: a6, namespace: metallb-system}}
spec: {{ipAddressPools: [v6], nodeSelectors: [{{matchExpressions: [{{key: n, operator: In, values: [{v6_nodes}]}}]}}]}}
"
        ))
    };
    let labelled = |cfg: Config| {
        let mut w = dual_world(cfg, &[("ds", &[v4, v6])]);
        for (name, n) in &mut w.nodes {
            n.labels.insert("n".into(), name.clone());
        }
        w
    };
    let all: BTreeSet<String> = NODES5.map(String::from).into();
    // Overlapping node sets: the leader comes from the overlap, for both addresses.
    let w = labelled(with_sel("n1, n2, n3", "n3, n4, n5"));
    let p = elect("n1", &layer2_eligibility(&w), Liveness::Live(&all));
    assert_eq!(p.leaders[&ip(v4)], "n3");
    assert_eq!(p.leaders[&ip(v6)], "n3");
    // Disjoint: nobody may announce both, so each address gets its own leader, ranked
    // on the group's address; exactly one node owns the ServiceL2Status.
    let w = labelled(with_sel("n1, n2", "n4, n5"));
    let el = layer2_eligibility(&w);
    let p = elect("n1", &el, Liveness::Live(&all));
    let l4 = election::leader(ip(v4), ["n1", "n2"]).unwrap();
    let l6 = election::leader(ip(v4), ["n4", "n5"]).unwrap();
    assert_eq!(p.leaders[&ip(v4)], l4);
    assert_eq!(p.leaders[&ip(v6)], l6);
    let ds = &w.services[&svc("ds")].ips;
    for me in NODES5 {
        assert_eq!(
            elect(me, &el, Liveness::Live(&all)).status_owner(ds),
            Some(l4)
        );
    }
    // An address nobody may announce (its pool has no advertisement) does not hold
    // the other back, and the group is still elected on the lowest address.
    let w = labelled(dual_config(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a6, namespace: metallb-system}
spec: {ipAddressPools: [v6]}
",
    ));
    let el = layer2_eligibility(&w);
    assert_eq!(el[&ip(v4)].reason, Some(Unannounced::NoAdvertisement));
    let p = elect("n1", &el, Liveness::Live(&all));
    assert!(!p.leaders.contains_key(&ip(v4)));
    assert_eq!(
        p.leaders[&ip(v6)],
        election::leader(ip(v4), NODES5).unwrap()
    );
    assert_eq!(
        p.status_owner(ds),
        p.leaders.get(&ip(v6)).map(String::as_str)
    );
}

#[test]
fn the_protocol_announces_what_it_elects_and_says_which_statuses_it_owns() {
    use crate::announce::FakeAnnouncer;
    let (v4, v6) = ("198.51.100.10", "2001:db8:100::10");
    let w = dual_world(dual_config(ALL_L2), &[("ds", &[v6, v4])]);
    let all: BTreeSet<String> = NODES5.map(String::from).into();
    let leader = election::leader(ip(v4), NODES5).unwrap();
    let other = NODES5.iter().find(|n| **n != leader).unwrap();
    for me in [leader, other] {
        let mut l2 = Layer2::new(FakeAnnouncer::default());
        l2.api_changed(&w);
        let changes = l2.decide(me, Liveness::Live(&all));
        let statuses = l2.statuses(me);
        if me == leader {
            let services = vec![svc("ds")];
            assert_eq!(
                changes.gained,
                Announcing::from([(ip(v4), services.clone()), (ip(v6), services.clone())])
            );
            assert_eq!(l2.announcing(), changes.gained);
            assert_eq!(l2.announcer().leading.len(), 2);
            // The fake announcer announces on eth0 when no interface is named.
            assert_eq!(
                statuses,
                L2Statuses::from([(svc("ds"), BTreeSet::from(["eth0".to_string()]))])
            );
            let gone = l2.withdraw_all();
            assert_eq!(gone.lost, BTreeSet::from([ip(v4), ip(v6)]));
            assert!(l2.announcer().leading.is_empty() && l2.statuses(me).is_empty());
        } else {
            assert!(changes.is_empty() && l2.announcing().is_empty());
            assert!(statuses.is_empty());
        }
    }
}

#[test]
fn in_a_split_group_only_the_leader_of_the_lowest_address_owns_the_status() {
    use crate::announce::FakeAnnouncer;
    let (v4, v6) = ("198.51.100.10", "2001:db8:100::10");
    // The IPv4 pool advertised from n1 and n2 only, the IPv6 pool from n4 and n5 only.
    let cfg = dual_config(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a4, namespace: metallb-system}
spec: {ipAddressPools: [v4], nodeSelectors: [{matchExpressions: [{key: n, operator: In, values: [n1, n2]}]}]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a6, namespace: metallb-system}
spec: {ipAddressPools: [v6], nodeSelectors: [{matchExpressions: [{key: n, operator: In, values: [n4, n5]}]}]}
",
    );
    let mut w = dual_world(cfg, &[("ds", &[v4, v6])]);
    for (name, n) in &mut w.nodes {
        n.labels.insert("n".into(), name.clone());
    }
    let all: BTreeSet<String> = NODES5.map(String::from).into();
    let l4 = election::leader(ip(v4), ["n1", "n2"]).unwrap();
    let l6 = election::leader(ip(v4), ["n4", "n5"]).unwrap();
    let mut owners = Vec::new();
    for me in NODES5 {
        let mut l2 = Layer2::new(FakeAnnouncer::default());
        l2.api_changed(&w);
        l2.decide(me, Liveness::Live(&all));
        let led: Vec<IpAddr> = l2.announcing().into_keys().collect();
        let want: Vec<IpAddr> = match me {
            m if m == l4 => vec![ip(v4)],
            m if m == l6 => vec![ip(v6)],
            _ => vec![],
        };
        assert_eq!(led, want, "{me}");
        if !l2.statuses(me).is_empty() {
            owners.push(me);
        }
    }
    assert_eq!(owners, [l4], "exactly the leader of the lowest address");
}
