//! The lab's network without Kubernetes: namespaces, the bridge, addresses
//! and routes; idempotent `up`; a node failure on the segment; and a `down`
//! that leaves nothing, also after a crash lost the lab's state.
//!
//! Needs root (network namespaces); fails, never skips, without it. Uses the
//! machine's one lab: a lab left up by hand is removed first.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use ferrolb_integration::lab::process::{self, DaemonSpec};
use ferrolb_integration::lab::{IpFamily, LOCK_WAIT, Lab, LabOptions, LabPaths, lock, teardown};

fn options() -> LabOptions {
    LabOptions {
        workers: 2,
        ip_family: IpFamily::DualStack,
        topology_only: true,
        ..LabOptions::default()
    }
}

/// Addresses, routes and links of the root namespace. The machine's own
/// uplink may itself sit in a documentation range, so the lab is checked by
/// comparing snapshots rather than by looking for lab ranges.
fn root_ns_snapshot() -> String {
    let mut snap = String::new();
    for args in [
        &["-o", "addr", "show"][..],
        &["route", "show", "table", "all"][..],
        &["-6", "route", "show", "table", "all"][..],
        &["-o", "link", "show"][..],
    ] {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        // Drop volatile parts (counters, lifetimes, link state) that change
        // on their own.
        for line in text.lines() {
            let stable: Vec<&str> = line
                .split_whitespace()
                .take_while(|w| !w.starts_with("valid_lft") && !w.starts_with("expires"))
                .filter(|w| !matches!(*w, "UP" | "DOWN" | "LOWER_UP" | "UNKNOWN"))
                .collect();
            if !line.contains("fe80::")
                && !line.starts_with("local ")
                && !line.contains(" proto kernel")
            {
                snap.push_str(&stable.join(" "));
                snap.push('\n');
            }
        }
    }
    snap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_connects_hosts_and_down_leaves_nothing() {
    let root_before = root_ns_snapshot();
    let lab = Lab::up(options())
        .await
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let topo = lab.topology().clone();
    assert_eq!(topo.nodes().count(), 3);

    for node in topo.nodes() {
        for ip in [IpAddr::from(node.ipv4), IpAddr::from(node.ipv6)] {
            assert!(
                lab.reachable("client", ip).unwrap(),
                "client does not reach {} at {ip}",
                node.name
            );
        }
        let mac = lab.neighbour_mac("client", node.ipv4.into()).unwrap();
        assert_eq!(
            mac,
            Some(lab.interface_mac(&node.name).unwrap()),
            "client's ARP entry for {} is not that node's MAC",
            node.name
        );
    }

    // Pod ranges are routed through the owning node.
    let out = lab
        .exec("w1-k8s", &["ip", "route", "show", "198.18.2.0/24"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("via 192.0.2.102"),
        "w1-k8s has no route to w2-k8s's pods: {out:?}"
    );
    // LoadBalancer pools are on-link for the client, as for a host on the
    // speakers' segment.
    for (family, pool) in [("-4", "198.51.100.0/24"), ("-6", "2001:db8:100::/64")] {
        let out = lab
            .exec("client", &["ip", family, "route", "show", pool])
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("dev eth0"),
            "client has no on-link route to pool {pool}: {out:?}"
        );
    }
    let fwd = lab
        .exec("w1-k8s", &["sysctl", "-n", "net.ipv4.ip_forward"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    assert_eq!(
        root_ns_snapshot(),
        root_before,
        "the lab changed the root namespace's addresses, routes or links"
    );

    // `up` again changes nothing and succeeds; other options are refused.
    let again = Lab::ensure(lab.paths().clone(), options())
        .await
        .expect("second up");
    let addrs = lab
        .exec("client", &["ip", "-o", "addr", "show", "eth0"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&addrs.stdout)
            .matches(" inet ")
            .count(),
        1,
        "second up duplicated an address"
    );
    drop(again);
    let other = LabOptions {
        workers: 3,
        ..options()
    };
    assert!(Lab::ensure(lab.paths().clone(), other).await.is_err());

    // A failed node drops off the segment and comes back.
    lab.node_fail("w1-k8s").unwrap();
    let w1 = IpAddr::from(topo.node("w1-k8s").unwrap().ipv4);
    assert!(
        !lab.reachable("client", w1).unwrap(),
        "failed node still answers"
    );
    assert!(
        lab.node_fail("m-k8s").is_err(),
        "the control plane must not be failed"
    );
    lab.node_recover("w1-k8s").unwrap();
    assert!(
        lab.reachable("client", w1).unwrap(),
        "recovered node does not answer"
    );

    let paths = lab.paths().clone();
    lab.down().expect("down");
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
    assert_eq!(
        root_ns_snapshot(),
        root_before,
        "down changed the root namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_cleans_up_after_a_crash() {
    let mut lab = Lab::up(options())
        .await
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let paths: LabPaths = lab.paths().clone();

    // A daemon in the root namespace with a child in its session, one in a
    // node, and a stray process in a pod-like namespace that no pid file
    // knows about.
    let root_daemon = process::spawn(
        &paths,
        &DaemonSpec {
            name: "crash-root".into(),
            netns: None,
            net_only: false,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "sleep 300 & sleep 301; :".into()],
            env: vec![],
        },
    )
    .unwrap() as i32;
    let node_daemon = process::spawn(
        &paths,
        &DaemonSpec {
            name: "crash-node".into(),
            netns: Some("flb-w2-k8s".into()),
            net_only: true,
            program: "/bin/sleep".into(),
            args: vec!["302".into()],
            env: vec![],
        },
    )
    .unwrap() as i32;
    let status = Command::new("ip")
        .args(["netns", "add", "flb-w2-k8s-p1"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stray = Command::new("ip")
        .args(["netns", "exec", "flb-w2-k8s-p1", "sleep", "303"])
        .spawn()
        .unwrap();

    // The root daemon's background child exists once the shell forked it.
    let mut session_child = None;
    for _ in 0..100 {
        session_child = process::scan()
            .into_iter()
            .find(|p| p.session == root_daemon && p.pid != root_daemon)
            .map(|p| p.pid);
        if session_child.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let session_child = session_child.expect("daemon's child never appeared");
    assert!(process::alive(node_daemon));

    // Crash: the handle is gone and the state file lost.
    lab.disown();
    drop(lab);
    let _lock = lock::acquire(LOCK_WAIT).expect("lab lock");
    std::fs::remove_file(paths.state_file()).unwrap();

    teardown::down(&paths).expect("down after crash");
    for pid in [root_daemon, session_child, node_daemon, stray.id() as i32] {
        assert!(!process::alive(pid), "process {pid} survived down");
    }
    let _ = stray.wait();
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
    // A second down on nothing is fine.
    teardown::down(&paths).expect("down on nothing");
}
