//! What one API event costs the speaker as the number of addresses grows.
//!
//! On every change of an API object the speaker recomputes, from scratch, who may
//! announce each address (`decide::eligibility`, here with the L2Advertisements) and
//! elects the leaders (`decide::layer2::election::elect`). Both are linear in the number of addresses; this bench prints
//! how long they take, so the point where an incremental version would pay off is
//! a measured one.
//!
//! `cargo bench -p ferrolb-speaker --bench decision_scale` (part of `make bench`).
//! `FERROLB_DECISION_SIZES`: comma-separated address counts (default
//! 1000,10000); `FERROLB_BENCH_RUNS`: timed rounds per size (default 20).
//! Addresses are half IPv4, half IPv6 (dual-stack Services), over 100 nodes, with
//! a third of the Services on `externalTrafficPolicy: Local`; nothing is sent
//! anywhere: the addresses are values only.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_config::Config;
use ferrolb_speaker::decide::layer2::election::elect;
use ferrolb_speaker::decide::layer2::layer2_eligibility;
use ferrolb_speaker::decide::{
    ApiSnapshot, Liveness, NodeInfo, ServiceInfo, ServiceKey, SliceReadiness,
};

const NODES: usize = 100;

fn config() -> Config {
    let yaml = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: big, namespace: metallb-system}
spec: {addresses: [198.18.0.0/15, '2001:db8:1::/64']}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
";
    let loaded = ferrolb_config::load::from_yaml(yaml).expect("bench config parses");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    Config::build(&loaded.sources).expect("bench config builds")
}

fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

/// `addresses / 2` dual-stack Services.
fn world(addresses: usize) -> ApiSnapshot {
    let mut w = ApiSnapshot {
        config: Some(config()),
        ..Default::default()
    };
    for i in 0..NODES {
        w.nodes.insert(
            node_name(i),
            NodeInfo {
                ready: true,
                ..Default::default()
            },
        );
    }
    for i in 0..addresses / 2 {
        let n = u32::try_from(i).expect("size fits u32");
        let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n);
        let v6 = Ipv6Addr::from(
            u128::from("2001:db8:1::1".parse::<Ipv6Addr>().expect("v6")) + u128::from(n),
        );
        let key = ServiceKey::new("default", format!("svc-{i}"));
        w.services.insert(
            key.clone(),
            ServiceInfo {
                ips: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
                local: i % 3 == 0,
            },
        );
        w.slices.insert(
            key,
            SliceReadiness {
                any_ready: true,
                ready_nodes: vec![node_name(i % NODES), node_name((i + 1) % NODES)],
            },
        );
    }
    w
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(label: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "  {label:<28} median {:8.3} ms  (min {:.3}, p90 {:.3}, max {:.3}; {} rounds)",
        at(0.5),
        v[0],
        at(0.9),
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FERROLB_DECISION_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("FERROLB_DECISION_SIZES: numbers"))
        .collect();
    let rounds: usize = std::env::var("FERROLB_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let live: BTreeSet<String> = (0..NODES).map(node_name).collect();
    println!("decision_scale: {NODES} nodes, all live; per API event the speaker runs both steps");
    for size in sizes {
        let w = world(size);
        let (mut elig, mut election, mut both) = (Vec::new(), Vec::new(), Vec::new());
        let mut led = 0;
        for _ in 0..rounds {
            let t0 = Instant::now();
            let e = layer2_eligibility(&w);
            let t1 = Instant::now();
            let p = elect(&node_name(0), &e, Liveness::Live(&live));
            let t2 = Instant::now();
            assert_eq!(e.len(), size / 2 * 2, "every address is considered");
            assert_eq!(p.leaders.len(), e.len(), "every address gets a leader");
            led = p.led.len();
            elig.push(ms(t1 - t0));
            election.push(ms(t2 - t1));
            both.push(ms(t2 - t0));
        }
        println!("\n== {size} addresses ({led} led by node-000) ==");
        summary("eligibility (API side)", elig);
        summary("election", election);
        summary("one API event, both", both);
    }
}
