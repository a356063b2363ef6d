//! One test per validation rule: each feeds YAML as a user would write it and checks
//! that the error names the object and the field, and that every error is reported.

use std::fs;

use ferrolb_config::error::MAX_REPORTED_ERRORS;
use ferrolb_config::{Config, Family, load};

/// Loads YAML and builds it; returns the `Config` or every error as text.
fn build(yaml: &str) -> Result<Config, Vec<String>> {
    let loaded = load::from_yaml(yaml).expect("test YAML is well-formed");
    let mut errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    match Config::build(&loaded.sources) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.extend(e.iter().map(|e| e.to_string()));
            Err(errors)
        }
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match build(yaml) {
        Ok(c) => panic!("expected errors, got a valid config: {c:?}"),
        Err(e) => e,
    }
}

/// Asserts that exactly one error contains every one of `parts`.
fn has(errs: &[String], parts: &[&str]) {
    let n = errs
        .iter()
        .filter(|e| parts.iter().all(|p| e.contains(p)))
        .count();
    assert_eq!(
        n, 1,
        "expected one error containing {parts:?}, got:\n{errs:#?}"
    );
}

fn pool(name: &str, addrs: &str) -> String {
    format!(
        "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:\n  addresses: {addrs}\n"
    )
}

fn legacy(config: &str) -> String {
    let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config, namespace: metallb-system}}\ndata:\n  config: |\n{indented}"
    )
}

/// Read at run time (cargo sets it for tests): a target directory shared between
/// checkouts keeps test binaries built in another one.
fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/fixtures")
}

#[test]
fn documented_examples_validate() {
    let dir = fixtures().join("valid");
    let mut n = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        if let Err(e) = build(&text) {
            panic!("{} should be valid: {e:#?}", path.display());
        }
        n += 1;
    }
    assert!(n >= 4, "fixtures missing");
}

#[test]
fn tutorial_pool_is_three_layer2_addresses() {
    let text = fs::read_to_string(fixtures().join("valid/tutorial-configmap.yaml")).unwrap();
    let cfg = build(&text).unwrap();
    let p = &cfg.pools["metallb-ip-range"];
    assert_eq!(p.size(Family::V4), 3);
    assert!(p.auto_assign);
    assert!(
        cfg.l2_advertisements["metallb-ip-range"]
            .pools
            .contains("metallb-ip-range")
    );
}

#[test]
fn malformed_addresses_each_reported_with_index() {
    let e = errors(&pool(
        "p",
        "[198.51.100.300, 198.51.100.0/33, 198.51.100.9-198.51.100.1, 198.51.100.1-2001:db8::1, '']",
    ));
    assert_eq!(e.len(), 5, "{e:#?}");
    has(
        &e,
        &["IPAddressPool/p", "spec.addresses[0]", "invalid IP address"],
    );
    has(
        &e,
        &["IPAddressPool/p", "spec.addresses[1]", "invalid CIDR"],
    );
    has(&e, &["spec.addresses[2]", "reversed"]);
    has(&e, &["spec.addresses[3]", "mixes IPv4 and IPv6"]);
    has(&e, &["spec.addresses[4]", "empty address range"]);
}

#[test]
fn pool_without_addresses() {
    let e = errors(&pool("p", "[]"));
    has(&e, &["IPAddressPool/p", "spec.addresses", "at least one"]);
}

#[test]
fn overlaps_within_a_pool_and_across_sources() {
    let e = errors(&pool("p", "[198.51.100.0/24, 198.51.100.128/25]"));
    has(&e, &["IPAddressPool/p", "overlaps", "same pool"]);

    let text = legacy(
        "address-pools:\n- name: old\n  protocol: layer2\n  addresses: [198.51.100.10-198.51.100.20]\n",
    ) + &pool("new", "[198.51.100.16/28]");
    let e = errors(&text);
    // Reported on both objects, each naming the other.
    assert_eq!(e.len(), 2, "{e:#?}");
    has(
        &e,
        &[
            "IPAddressPool/new: spec.addresses[0]: range 198.51.100.16/28 overlaps",
            "of ConfigMap metallb-system/config: address-pools[0]",
        ],
    );
    has(
        &e,
        &[
            "ConfigMap metallb-system/config: address-pools[0] (\"old\"): addresses[0]:",
            "overlaps range 198.51.100.16/28 of IPAddressPool/new",
        ],
    );
}

#[test]
fn a_range_in_a_thousand_pools_gives_one_error_per_pool_capped() {
    let text: String = (0..1000)
        .map(|i| pool(&format!("p{i:04}"), "[198.51.100.0/24]"))
        .collect();
    let loaded = load::from_yaml(&text).unwrap();
    let e = Config::build(&loaded.sources).unwrap_err();
    assert_eq!(e.total(), 1000);
    assert_eq!(e.0.len(), MAX_REPORTED_ERRORS);
    for (i, err) in e.iter().enumerate() {
        assert_eq!(err.object.to_string(), format!("IPAddressPool/p{i:04}"));
        assert_eq!(err.field, "spec.addresses[0]");
        assert!(
            err.message.starts_with(
                "range 198.51.100.0/24 overlaps range 198.51.100.0/24 of IPAddressPool/p"
            ) && err
                .message
                .contains("(and 998 more overlaps with other pools)"),
            "{err}"
        );
    }
    assert!(
        e.0.last()
            .unwrap()
            .message
            .ends_with("(and 900 more errors not shown)")
    );
    assert!(e.to_string().starts_with("1000 configuration error(s)\n"));
}

#[test]
fn overlap_errors_name_the_range_as_written() {
    let text = pool("a", "[198.51.100.0/24]")
        + &pool("b", "[198.51.100.128/25, 198.51.100.0/26]")
        + &pool("c", "[203.0.113.64/26, 203.0.113.0/24]");
    let e = errors(&text);
    has(
        &e,
        &[
            "IPAddressPool/b: spec.addresses[0]: range 198.51.100.128/25 overlaps range 198.51.100.0/24 of IPAddressPool/a (and 1 more overlaps with other pools)",
        ],
    );
    has(
        &e,
        &[
            "IPAddressPool/c: spec.addresses[0]: range 203.0.113.64/26 overlaps range 203.0.113.0/24 (addresses[1]) of the same pool",
        ],
    );
}

#[test]
fn duplicate_names_within_and_across_sources() {
    let text = legacy(
        "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [198.51.100.1/32]\n- name: a\n  protocol: layer2\n  addresses: [198.51.100.2/32]\n",
    ) + &pool("a", "[198.51.100.3/32]");
    let e = errors(&text);
    assert_eq!(
        e.iter()
            .filter(|e| e.contains("duplicate pool name \"a\""))
            .count(),
        2,
        "{e:#?}"
    );
    has(
        &e,
        &["IPAddressPool/a", "metadata.name", "duplicate pool name"],
    );
}

#[test]
fn protocol_rules() {
    let e = errors(&legacy(
        "address-pools:\n- name: a\n  protocol: layer3\n  addresses: [198.51.100.1/32]\n- name: b\n  addresses: [198.51.100.2/32]\n- name: c\n  protocol: layer2\n  addresses: [198.51.100.3/32]\n  bgp-advertisements: [{aggregation-length: 32}]\n",
    ));
    has(
        &e,
        &[
            "address-pools[0] (\"a\")",
            "protocol",
            "unknown protocol \"layer3\"",
        ],
    );
    has(
        &e,
        &["address-pools[1] (\"b\")", "protocol", "missing protocol"],
    );
    has(
        &e,
        &[
            "address-pools[2] (\"c\")",
            "bgp-advertisements",
            "only valid with protocol bgp",
        ],
    );
}

#[test]
fn references_to_missing_objects() {
    let text = pool("p", "[198.51.100.0/24]")
        + "---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec:\n  ipAddressPools: [p, ghost]\n"
        + "---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec:\n  ipAddressPools: [p]\n  communities: [NO_SUCH]\n  peers: [nobody]\n"
        + "---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: peer}\nspec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1, bfdProfile: missing}\n";
    let e = errors(&text);
    has(
        &e,
        &[
            "L2Advertisement/l2",
            "spec.ipAddressPools[1]",
            "\"ghost\", which does not exist",
        ],
    );
    has(
        &e,
        &["BGPAdvertisement/b", "spec.communities[0]", "NO_SUCH"],
    );
    has(&e, &["BGPAdvertisement/b", "spec.peers", "\"nobody\""]);
    has(
        &e,
        &[
            "BGPPeer/peer",
            "spec.bfdProfile",
            "\"missing\", which does not exist",
        ],
    );
}

#[test]
fn invalid_label_selectors() {
    let text = pool("p", "[198.51.100.0/24]")
        + "---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec:\n  nodeSelectors:\n  - matchLabels: {\"bad key\": x}\n  - matchExpressions: [{key: zone, operator: Maybe, values: [a]}]\n";
    let e = errors(&text);
    has(
        &e,
        &[
            "L2Advertisement/l2",
            "spec.nodeSelectors[0].matchLabels",
            "invalid label key",
        ],
    );
    has(
        &e,
        &[
            "L2Advertisement/l2",
            "spec.nodeSelectors[1].matchExpressions[0].operator",
            "Maybe",
        ],
    );
    let e = errors(&legacy(
        "peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 192.0.2.1, node-selectors: [{match-expressions: [{key: a, operator: In}]}]}\n",
    ));
    has(
        &e,
        &[
            "peers[0]",
            "node-selectors[0].matchExpressions[0].values",
            "at least one value",
        ],
    );
}

#[test]
fn out_of_range_numbers() {
    let text = legacy(
        "peers:\n- {my-asn: 0, peer-asn: 64501, peer-address: 192.0.2.1, hold-time: 2s, peer-port: 0}\n- {my-asn: 64500, peer-asn: 64501, peer-address: 192.0.2.2, hold-time: 30s, keepalive-time: 60s}\nbfd-profiles:\n- {name: f, receive-interval: 5, detect-multiplier: 300, minimum-ttl: 255}\naddress-pools:\n- name: b\n  protocol: bgp\n  addresses: [203.0.113.0/24, 2001:db8:5::/64]\n  bgp-advertisements:\n  - {aggregation-length: 33, aggregation-length-v6: 129}\n  - {aggregation-length: 16}\n  - {aggregation-length-v6: 48}\n",
    );
    let e = errors(&text);
    has(&e, &["peers[0]", "my-asn", "missing local ASN"]);
    has(&e, &["peers[0]", "hold-time", "at least 3s"]);
    has(&e, &["peers[0]", "peer-port", "port 0"]);
    has(&e, &["peers[1]", "keepalive-time", "longer than hold time"]);
    has(
        &e,
        &[
            "bfd-profiles[0] (\"f\")",
            "receive-interval",
            "5 is out of range 10..=60000",
        ],
    );
    has(
        &e,
        &[
            "bfd-profiles[0]",
            "detect-multiplier",
            "out of range 2..=255",
        ],
    );
    has(
        &e,
        &["bfd-profiles[0]", "minimum-ttl", "out of range 1..=254"],
    );
    has(
        &e,
        &[
            "address-pools[0]",
            "bgp-advertisements[0].aggregation-length",
            "33 is out of range 0..=32",
        ],
    );
    has(
        &e,
        &[
            "address-pools[0]",
            "bgp-advertisements[0].aggregation-length-v6",
            "129 is out of range",
        ],
    );
    // MetalLB's rule: a pool prefix longer than the aggregation length cannot be
    // aggregated to it (a /24 pool announced as /16 would claim addresses it does not own).
    has(
        &e,
        &[
            "bgp-advertisements[1].aggregation-length",
            "aggregation length 16 is shorter than prefix 203.0.113.0/24",
        ],
    );
    has(
        &e,
        &[
            "bgp-advertisements[2].aggregation-length-v6",
            "aggregation length 48 is shorter than prefix 2001:db8:5::/64",
        ],
    );
    assert_eq!(e.len(), 11, "{e:#?}");

    let e = errors(&legacy(
        "address-pools:\n- name: b\n  protocol: bgp\n  addresses: [203.0.113.0/24]\n  bgp-advertisements: [{aggregation-length: 20}]\n",
    ));
    has(
        &e,
        &[
            "aggregation-length",
            "aggregation length 20 is shorter than prefix 203.0.113.0/24",
        ],
    );

    // Values that do not fit the field's type at all are reported while reading.
    let e = errors(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: big}\nspec: {myASN: 4294967296, peerASN: 1, peerAddress: 192.0.2.1}\n",
    );
    has(&e, &["BGPPeer/big", "spec.myASN", "4294967296"]);

    let e = errors(&format!(
        "{}  serviceAllocation:\n    priority: -1\n    namespaces: [Bad_NS]\n",
        pool("p", "[198.51.100.0/24]")
    ));
    has(
        &e,
        &[
            "IPAddressPool/p",
            "spec.serviceAllocation.priority",
            "negative",
        ],
    );
    has(
        &e,
        &[
            "IPAddressPool/p",
            "spec.serviceAllocation.namespaces[0]",
            "Bad_NS",
        ],
    );
}

#[test]
fn peer_rules_for_crds() {
    let e = errors(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: a}\nspec: {myASN: 1, peerASN: 2, dynamicASN: internal, peerAddress: 192.0.2.1, interface: eth0, routerID: nope, connectTime: 1500ms, password: x, passwordSecret: {name: s}}\n",
    );
    has(&e, &["BGPPeer/a", "spec.dynamicASN", "mutually exclusive"]);
    has(&e, &["BGPPeer/a", "spec.interface", "mutually exclusive"]);
    has(&e, &["BGPPeer/a", "spec.routerID", "invalid router ID"]);
    has(
        &e,
        &["BGPPeer/a", "spec.connectTime", "whole number of seconds"],
    );
    has(
        &e,
        &["BGPPeer/a", "spec.passwordSecret", "mutually exclusive"],
    );
}

#[test]
fn community_values() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: c}\nspec:\n  communities:\n  - {name: a, value: '65536:1'}\n  - {name: b, value: 'large:1:2'}\n  - {name: '', value: '1:2'}\n",
    );
    has(&e, &["Community/c", "spec.communities[0].value", "65536:1"]);
    has(
        &e,
        &["Community/c", "spec.communities[1].value", "large:1:2"],
    );
    has(
        &e,
        &[
            "Community/c",
            "spec.communities[2].name",
            "must not be empty",
        ],
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = pool("a", "[nope]") + &pool("b", "[also-bad]") + &pool("C_", "[198.51.100.0/24]");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    has(&e, &["IPAddressPool/C_", "metadata.name", "invalid name"]);
}

#[test]
fn exact_sizes_for_large_ipv6_pools() {
    let cfg = build(&pool("v6", "[2001:db8:1::/64, 2001:db8:2::/48]")).unwrap();
    assert_eq!(
        cfg.pools["v6"].size(Family::V6),
        (1u128 << 64) + (1u128 << 80)
    );
    let cfg = build(&pool("all", "['::/0']")).unwrap();
    assert_eq!(cfg.pools["all"].size(Family::V6), u128::MAX);
}

#[test]
fn advertisements_resolve_pools_by_name_selector_and_default() {
    let text = format!(
        "{}{}{}",
        pool("a", "[198.51.100.0/28]"),
        "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b, labels: {tier: edge}}\nspec: {addresses: [198.51.100.16/28]}\n",
        "---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: edge}\nspec:\n  ipAddressPoolSelectors: [{matchLabels: {tier: edge}}]\n",
    );
    let cfg = build(&text).unwrap();
    assert_eq!(cfg.l2_advertisements["all"].pools.len(), 2);
    assert_eq!(
        cfg.l2_advertisements["edge"]
            .pools
            .iter()
            .collect::<Vec<_>>(),
        ["b"]
    );
}

#[test]
fn priority_order_is_deterministic() {
    let text = format!(
        "{}{}{}",
        pool("z", "[198.51.100.0/28]"),
        pool("y", "[198.51.100.16/28]") + "  serviceAllocation: {priority: 10}\n",
        pool("x", "[198.51.100.32/28]") + "  serviceAllocation: {priority: 5}\n",
    );
    let cfg = build(&text).unwrap();
    let order: Vec<&str> = cfg
        .pools_in_priority_order()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(order, ["x", "y", "z"]);
}
