use super::*;

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

fn ready_on(nodes: &[&str]) -> BTreeMap<String, SliceReadiness> {
    BTreeMap::from([(
        "s1".to_string(),
        SliceReadiness {
            any_ready: !nodes.is_empty(),
            ready_nodes: nodes.iter().map(|s| s.to_string()).collect(),
        },
    )])
}

/// Three usable nodes, the pool advertised everywhere, one Cluster-policy Service at
/// 198.51.100.10 with a ready endpoint on n1.
fn world() -> World {
    let mut w = World {
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

fn eligible(w: &World, addr: &str) -> Vec<String> {
    w.eligibility()
        .get(&ip(addr))
        .map(|e| e.nodes.keys().cloned().collect())
        .unwrap_or_default()
}

fn reason(w: &World, addr: &str) -> Option<Unannounced> {
    w.eligibility()[&ip(addr)].reason
}

#[test]
fn cluster_policy_every_usable_node_is_eligible() {
    let w = world();
    assert_eq!(eligible(&w, IP), ["n1", "n2", "n3"]);
    let e = &w.eligibility()[&ip(IP)];
    assert_eq!(e.pool.as_deref(), Some("first"));
    assert_eq!(e.reason, None);
    assert_eq!(e.nodes["n2"], None, "no interfaces named: every interface");
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
        BTreeMap::from([(
            "s1".into(),
            SliceReadiness {
                any_ready: true,
                ready_nodes: BTreeSet::new(),
            },
        )]),
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
    w.slices.get_mut(&svc("echo")).unwrap().insert(
        "s2".into(),
        SliceReadiness {
            any_ready: true,
            ready_nodes: BTreeSet::from(["n3".to_string()]),
        },
    );
    assert_eq!(eligible(&w, IP), ["n1", "n3"]);
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
    let e = &w.eligibility()[&ip(IP)];
    let set = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    assert_eq!(e.nodes["n1"], set(&["eth1"]));
    assert_eq!(e.nodes["n2"], set(&["eth1", "eth2"]));
    assert_eq!(e.nodes["n3"], None, "c names no interface: all of them");
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
    let el = w.eligibility();
    assert_eq!(el.len(), 1, "one entry per address");
    assert_eq!(eligible(&w, IP), ["n1", "n2"]);
    assert_eq!(el[&ip(IP)].services.len(), 3);
    let live: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leaders: Vec<usize> = ["n1", "n2", "n3"]
        .iter()
        .map(|me| plan(me, &el, Liveness::Live(&live)).mine.len())
        .collect();
    assert_eq!(leaders.iter().sum::<usize>(), 1, "exactly one announcer");
    assert_eq!(leaders[2], 0, "n3 is not eligible");
    let leader = &plan("n1", &el, Liveness::Live(&live)).leaders[&ip(IP)];
    let spec = &plan(leader, &el, Liveness::Live(&live)).mine[&ip(IP)];
    assert_eq!(
        spec.services,
        BTreeSet::from(["default/a".into(), "default/b".into(), "default/c".into()])
    );
}

#[test]
fn leader_is_the_rendezvous_winner_among_eligible_live_nodes() {
    let mut w = world();
    // Several addresses, so both the leader and the runner-up are exercised.
    let addrs = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
    w.services.get_mut(&svc("echo")).unwrap().ips = addrs.iter().map(|a| ip(a)).collect();
    let el = w.eligibility();
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let p = plan("n1", &el, Liveness::Live(&all));
    for a in addrs {
        let want = election::leader(ip(a), ["n1", "n2", "n3"]).unwrap();
        assert_eq!(p.leaders[&ip(a)], want);
        assert_eq!(p.mine.contains_key(&ip(a)), want == "n1");
    }
    // Every node computes the same leaders; each address is led exactly once.
    let mut led = BTreeMap::new();
    for me in ["n1", "n2", "n3"] {
        let q = plan(me, &el, Liveness::Live(&all));
        assert_eq!(q.leaders, p.leaders);
        for ip in q.mine.keys() {
            *led.entry(*ip).or_insert(0) += 1;
        }
    }
    assert!(led.values().all(|&c| c == 1) && led.len() == 3);
    // A dead leader's addresses go to its runner-up; the others stay.
    for a in addrs {
        let first = &p.leaders[&ip(a)];
        let live: BTreeSet<String> = all.iter().filter(|n| *n != first).cloned().collect();
        let q = plan("n1", &el, Liveness::Live(&live));
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
    let el = w.eligibility();
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    assert_eq!(plan("n2", &el, Liveness::Live(&all)).leaders[&ip(IP)], "n1");
    let without_n1: BTreeSet<String> = ["n2", "n3"].map(String::from).into();
    let p = plan("n2", &el, Liveness::Live(&without_n1));
    assert!(p.leaders.is_empty() && p.mine.is_empty());
}

#[test]
fn silent_node_announces_nothing() {
    let w = world();
    let el = w.eligibility();
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leader = plan("n1", &el, Liveness::Live(&all)).leaders[&ip(IP)].clone();
    assert_eq!(plan(&leader, &el, Liveness::Silent), Plan::default());
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
    let el = w.eligibility();
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let leader = plan("n1", &el, Liveness::Live(&all)).leaders[&ip(IP)].clone();
    let spec = &plan(&leader, &el, Liveness::Live(&all)).mine[&ip(IP)];
    assert_eq!(spec.interfaces, Some(BTreeSet::from(["eth1".to_string()])));
    assert_eq!(spec.services, BTreeSet::from(["default/echo".to_string()]));
}
