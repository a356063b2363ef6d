use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::nft::script;
use super::worker::NatHandle;
use super::*;

fn svc(ports: serde_json::Value) -> ServiceNat {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": ports}
    }))
    .unwrap();
    service_nat(&svc)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(i: &str, proto: Proto, port: u16, node_port: u16) -> NatEntry {
    NatEntry {
        ip: ip(i),
        proto,
        port,
        node_port,
        sources: None,
    }
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn every_port_with_a_node_port_of_every_led_service_is_forwarded() {
    let a = ServiceKey::new("default", "a");
    let b = ServiceKey::new("default", "b");
    let sa = svc(json!([
        {"port": 80, "nodePort": 30080},
        {"port": 53, "protocol": "UDP", "nodePort": 30053},
        {"port": 9, "protocol": "SCTP", "nodePort": 30009}
    ]));
    // Shares the address on another port.
    let sb = svc(json!([{"port": 443, "protocol": "TCP", "nodePort": 30443}]));
    let d = desired(
        [
            (ip("198.51.100.10"), &a, &sa),
            (ip("198.51.100.10"), &b, &sb),
            (ip("2001:db8::10"), &a, &sa),
        ],
        &[ip("192.0.2.101"), ip("2001:db8:0:2::101"), ip("192.0.2.99")],
    );
    assert_eq!(d.rules.node_v4, Some("192.0.2.101".parse().unwrap()));
    assert_eq!(d.rules.node_v6, Some("2001:db8:0:2::101".parse().unwrap()));
    let want: BTreeSet<NatEntry> = [
        entry("198.51.100.10", Proto::Tcp, 80, 30080),
        entry("198.51.100.10", Proto::Udp, 53, 30053),
        entry("198.51.100.10", Proto::Sctp, 9, 30009),
        entry("198.51.100.10", Proto::Tcp, 443, 30443),
        entry("2001:db8::10", Proto::Tcp, 80, 30080),
        entry("2001:db8::10", Proto::Udp, 53, 30053),
        entry("2001:db8::10", Proto::Sctp, 9, 30009),
    ]
    .into();
    assert_eq!(d.rules.entries, want);
    assert!(d.without_node_port.is_empty());
    assert!(d.no_node_address.is_empty());
}

#[test]
fn ports_without_node_port_are_reported_not_forwarded() {
    let a = ServiceKey::new("default", "a");
    // allocateLoadBalancerNodePorts: false leaves nodePort unset.
    let sa = svc(json!([{"port": 80}, {"port": 53, "protocol": "UDP"}]));
    let d = desired([(ip("198.51.100.10"), &a, &sa)], &[ip("192.0.2.101")]);
    assert!(d.rules.is_empty());
    assert_eq!(
        d.without_node_port,
        [(a.clone(), vec!["80/TCP".to_string(), "53/UDP".to_string()])].into()
    );
    // Reported once per Service, even when it has two addresses.
    let d = desired(
        [
            (ip("198.51.100.10"), &a, &sa),
            (ip("2001:db8::10"), &a, &sa),
        ],
        &[ip("192.0.2.101")],
    );
    assert_eq!(d.without_node_port[&a].len(), 2);
}

#[test]
fn a_family_without_node_address_is_reported() {
    let a = ServiceKey::new("default", "a");
    let sa = svc(json!([{"port": 80, "nodePort": 30080}]));
    let d = desired(
        [
            (ip("2001:db8::10"), &a, &sa),
            (ip("198.51.100.10"), &a, &sa),
        ],
        &[ip("192.0.2.101")],
    );
    assert_eq!(
        d.rules.entries,
        [entry("198.51.100.10", Proto::Tcp, 80, 30080)].into()
    );
    assert_eq!(d.no_node_address, [ip("2001:db8::10")].into());
}

#[test]
fn a_port_claimed_twice_goes_to_the_first_service_by_name() {
    let a = ServiceKey::new("default", "a");
    let b = ServiceKey::new("default", "b");
    let sa = svc(json!([{"port": 80, "nodePort": 30001}]));
    let sb = svc(json!([{"port": 80, "nodePort": 30002}]));
    for order in [[(&b, &sb), (&a, &sa)], [(&a, &sa), (&b, &sb)]] {
        let d = desired(
            order.map(|(k, s)| (ip("198.51.100.10"), k, s)),
            &[ip("192.0.2.101")],
        );
        assert_eq!(
            d.rules.entries,
            [entry("198.51.100.10", Proto::Tcp, 80, 30001)].into()
        );
    }
}

#[test]
fn script_replaces_the_table_in_one_go() {
    let rules = NatRules {
        node_v4: Some("192.0.2.101".parse().unwrap()),
        node_v6: Some("2001:db8:0:2::101".parse().unwrap()),
        entries: [
            entry("198.51.100.10", Proto::Tcp, 80, 30080),
            entry("198.51.100.11", Proto::Tcp, 8080, 31000),
            entry("198.51.100.10", Proto::Udp, 53, 30053),
            entry("2001:db8::10", Proto::Tcp, 80, 30080),
        ]
        .into(),
    };
    let want = "add table inet ferrolb_nat
delete table inet ferrolb_nat
table inet ferrolb_nat {
\tmap tcp4 {
\t\ttype ipv4_addr . inet_service : inet_service
\t\telements = { 198.51.100.10 . 80 : 30080, 198.51.100.11 . 8080 : 31000 }
\t}
\tmap udp4 {
\t\ttype ipv4_addr . inet_service : inet_service
\t\telements = { 198.51.100.10 . 53 : 30053 }
\t}
\tmap tcp6 {
\t\ttype ipv6_addr . inet_service : inet_service
\t\telements = { 2001:db8::10 . 80 : 30080 }
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\ttcp dport set ip daddr . tcp dport map @tcp4 ip daddr set 192.0.2.101
\t\tudp dport set ip daddr . udp dport map @udp4 ip daddr set 192.0.2.101
\t\ttcp dport set ip6 daddr . tcp dport map @tcp6 ip6 daddr set 2001:db8:0:2::101
\t}
\tchain output {
\t\ttype route hook output priority mangle; policy accept;
\t\ttcp dport set ip daddr . tcp dport map @tcp4 ip daddr set 192.0.2.101
\t\tudp dport set ip daddr . udp dport map @udp4 ip daddr set 192.0.2.101
\t\ttcp dport set ip6 daddr . tcp dport map @tcp6 ip6 daddr set 2001:db8:0:2::101
\t}
}
";
    assert_eq!(script(&rules), want);
}

#[test]
fn an_empty_state_is_no_table() {
    let want = "add table inet ferrolb_nat\ndelete table inet ferrolb_nat\n";
    assert_eq!(script(&NatRules::default()), want);
    // Entries of a family without node address render nothing either.
    let rules = NatRules {
        node_v4: None,
        node_v6: None,
        entries: [entry("198.51.100.10", Proto::Tcp, 80, 30080)].into(),
    };
    assert_eq!(script(&rules), want);
}

fn rules(port: u16) -> NatRules {
    NatRules {
        node_v4: Some("192.0.2.101".parse().unwrap()),
        node_v6: None,
        entries: [entry("198.51.100.10", Proto::Tcp, port, 30080)].into(),
    }
}

/// Waits (bounded) until the worker reports `want` applied.
async fn wait_applied(h: &NatHandle, want: &NatRules) {
    let mut rx = h.applied();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|a| a.as_ref() == Some(want)),
    )
    .await
    .expect("applied in time")
    .expect("worker alive");
}

#[tokio::test]
async fn worker_clears_first_applies_the_latest_and_clears_on_stop() {
    let fake = FakeTable::default();
    let h = NatHandle::start(Box::new(fake.clone()));
    wait_applied(&h, &NatRules::default()).await;
    assert_eq!(fake.calls(), [FakeCall::Clear]);
    h.set(rules(80));
    wait_applied(&h, &rules(80)).await;
    assert_eq!(fake.current(), rules(80));
    // The same state again changes nothing.
    h.set(rules(80));
    h.set(rules(81));
    wait_applied(&h, &rules(81)).await;
    assert_eq!(
        fake.calls(),
        [
            FakeCall::Clear,
            FakeCall::Apply(rules(80)),
            FakeCall::Apply(rules(81))
        ]
    );
    h.stop(Duration::from_secs(10)).await;
    assert_eq!(fake.calls().last(), Some(&FakeCall::Clear));
    assert_eq!(fake.current(), NatRules::default());
}

#[tokio::test]
async fn worker_retries_a_failed_apply() {
    let fake = FakeTable::default();
    let h = NatHandle::start(Box::new(fake.clone()));
    wait_applied(&h, &NatRules::default()).await;
    fake.failing.store(true, Ordering::SeqCst);
    h.set(rules(80));
    // Not applied while the kernel refuses...
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*h.applied().borrow(), Some(NatRules::default()));
    // ...and applied once it accepts, with no new publication.
    fake.failing.store(false, Ordering::SeqCst);
    wait_applied(&h, &rules(80)).await;
    assert_eq!(fake.current(), rules(80));
    h.stop(Duration::from_secs(10)).await;
    assert_eq!(fake.current(), NatRules::default());
}

#[test]
fn ports_of_keeps_what_a_rule_can_be_written_for() {
    let ports = svc(json!([
        {"port": 80},
        {"port": 53, "protocol": "UDP", "nodePort": 30053},
        {"port": 7, "protocol": "ICMP", "nodePort": 30007},
        {"port": 70000, "nodePort": 30070},
        {"port": 81, "nodePort": 70000}
    ]));
    let want = [
        SvcPort {
            proto: Proto::Tcp,
            port: 80,
            node_port: None,
        },
        SvcPort {
            proto: Proto::Udp,
            port: 53,
            node_port: Some(30053),
        },
        SvcPort {
            proto: Proto::Tcp,
            port: 81,
            node_port: None,
        },
    ];
    assert_eq!(
        ports.ports, want,
        "unset protocol is TCP; unknown ones and bad ports dropped"
    );
    assert!(ports.source_ranges.is_empty());
}

#[test]
fn source_ranges_are_read_as_kube_proxy_reads_them() {
    let with = |ranges: serde_json::Value| -> Vec<IpNet> {
        source_ranges_of(
            &serde_json::from_value(json!({
                "metadata": {"name": "x", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ranges}
            }))
            .unwrap(),
        )
    };
    assert_eq!(
        with(json!([
            " 203.0.113.0/24 ",
            "2001:db8:1::/48",
            "not-a-range",
            "203.0.113.9/24"
        ])),
        nets(&["203.0.113.0/24", "2001:db8:1::/48", "203.0.113.0/24"]),
        "trimmed, unparsable ones left out, host bits cleared"
    );
    assert!(source_ranges_of(&Service::default()).is_empty());
}

#[test]
fn each_family_gets_its_own_ranges_merged_or_none() {
    let v4 = ip("198.51.100.10");
    let v6 = ip("2001:db8::10");
    let r = nets(&[
        "203.0.113.0/24",
        "203.0.113.7/32",
        "192.0.2.0/25",
        "192.0.2.128/25",
    ]);
    assert_eq!(
        family_sources(&r, v4),
        Some(nets(&["192.0.2.0/24", "203.0.113.0/24"])),
        "overlapping and adjacent ranges merged"
    );
    assert_eq!(
        family_sources(&r, v6),
        None,
        "no range of the family: any source, as kube-proxy"
    );
    let with_any = nets(&["203.0.113.0/24", "0.0.0.0/0", "2001:db8:1::/48"]);
    assert_eq!(
        family_sources(&with_any, v4),
        None,
        "a zero prefix allows any"
    );
    assert_eq!(
        family_sources(&with_any, v6),
        Some(nets(&["2001:db8:1::/48"]))
    );
    assert_eq!(family_sources(&[], v4), None);
}

#[test]
fn source_ranges_follow_each_address_family() {
    let a = ServiceKey::new("default", "a");
    let mut sa = svc(json!([{"port": 80, "nodePort": 30080}]));
    sa.source_ranges = nets(&["203.0.113.0/24"]);
    let d = desired(
        [
            (ip("198.51.100.10"), &a, &sa),
            (ip("2001:db8::10"), &a, &sa),
        ],
        &[ip("192.0.2.101"), ip("2001:db8:0:2::101")],
    );
    let by_ip: BTreeMap<IpAddr, Option<Vec<IpNet>>> = d
        .rules
        .entries
        .iter()
        .map(|e| (e.ip, e.sources.clone()))
        .collect();
    assert_eq!(by_ip[&ip("198.51.100.10")], Some(nets(&["203.0.113.0/24"])));
    assert_eq!(
        by_ip[&ip("2001:db8::10")],
        None,
        "only IPv4 ranges: IPv6 open"
    );
}

#[test]
fn script_guards_addresses_with_source_ranges() {
    let mut guarded = entry("198.51.100.10", Proto::Tcp, 80, 30080);
    guarded.sources = Some(nets(&["203.0.113.0/24", "192.0.2.200/32"]));
    let mut closed = entry("198.51.100.12", Proto::Tcp, 80, 30081);
    closed.sources = Some(vec![]);
    let rules = NatRules {
        node_v4: Some("192.0.2.101".parse().unwrap()),
        node_v6: None,
        entries: [
            guarded,
            closed,
            entry("198.51.100.11", Proto::Tcp, 80, 30082),
        ]
        .into(),
    };
    let want = "add table inet ferrolb_nat
delete table inet ferrolb_nat
table inet ferrolb_nat {
\tset guard_tcp4 {
\t\ttype ipv4_addr . inet_service
\t\telements = { 198.51.100.10 . 80, 198.51.100.12 . 80 }
\t}
\tset allow_tcp4 {
\t\ttype ipv4_addr . inet_service . ipv4_addr
\t\tflags interval
\t\telements = { 198.51.100.10 . 80 . 203.0.113.0/24, 198.51.100.10 . 80 . 192.0.2.200/32 }
\t}
\tmap tcp4 {
\t\ttype ipv4_addr . inet_service : inet_service
\t\telements = { 198.51.100.10 . 80 : 30080, 198.51.100.11 . 80 : 30082, 198.51.100.12 . 80 : 30081 }
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr . tcp dport @guard_tcp4 ip daddr . tcp dport . ip saddr != @allow_tcp4 drop
\t\ttcp dport set ip daddr . tcp dport map @tcp4 ip daddr set 192.0.2.101
\t}
\tchain output {
\t\ttype route hook output priority mangle; policy accept;
\t\tip daddr . tcp dport @guard_tcp4 ip daddr . tcp dport . ip saddr != @allow_tcp4 drop
\t\ttcp dport set ip daddr . tcp dport map @tcp4 ip daddr set 192.0.2.101
\t}
}
";
    assert_eq!(script(&rules), want);
}
