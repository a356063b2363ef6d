//! The lab's fault primitives, each shown to take effect and to go away:
//! dropped, lost and delayed UDP datagrams between chosen hosts (nftables
//! and a relay in their namespaces), a control plane stopped and started again with the same
//! objects, a node cut off the API server while the segment and its UDP
//! traffic stay, and the `lab fault` command line. Every lab is removed with
//! a fault still in force, and nothing may be left over, in particular no
//! fault table in the root namespace.
//!
//! Needs root and the Go harness; fails, never skips, without them. Uses the machine's one lab.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferrolb_integration::lab::lock::{self, ENV_LOCK_HELD};
use ferrolb_integration::lab::{
    ActiveFault, ControlPlaneStop, Direction, Effect, IpFamily, LOCK_WAIT, Lab, LabOptions,
    LabPaths, TrafficFault, Transport, teardown, topology,
};
use ferrolb_integration::testkit::{
    self as kit, MEMBERSHIP_PORT, active_faults, add_fault, dropped_by, remove_fault,
    udp_datagrams_through, udp_transit_times,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Datagrams per probe of a port that must pass (or must not).
const PROBE: u32 = 20;

fn root_has_fault_tables() -> bool {
    // Read-only: the root namespace's ruleset is listed, never changed.
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).contains("flb_fault")
}

/// Tears `lab` down (with its faults in force) and checks that nothing is
/// left, neither of the lab nor of its faults.
fn down_leaves_nothing(lab: Lab) {
    let paths = lab.paths().clone();
    lab.down().expect("lab down");
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
    assert!(
        !root_has_fault_tables(),
        "a fault table is in the root namespace"
    );
}

fn membership_drop_on(host: &str) -> TrafficFault {
    TrafficFault {
        name: "cut-w1".into(),
        hosts: vec![host.into()],
        peers: vec!["all".into()],
        transport: Transport::Udp,
        port: MEMBERSHIP_PORT,
        effect: Effect::Drop,
        direction: Direction::Both,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_dropped_lost_and_delayed_between_chosen_hosts_until_removed() {
    assert!(
        !root_has_fault_tables(),
        "fault tables in the root namespace before the test"
    );
    let lab = Lab::up(LabOptions {
        workers: 2,
        ip_family: IpFamily::DualStack,
        topology_only: true,
        ..LabOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("lab up: {e}"));
    let through =
        |from: &str, to: &str, port: u16| udp_datagrams_through(&lab, from, to, port, PROBE);
    assert_eq!(through("w1-k8s", "w2-k8s", MEMBERSHIP_PORT), PROBE);
    assert_eq!(through("w2-k8s", "w1-k8s", MEMBERSHIP_PORT), PROBE);
    assert!(active_faults(&lab).is_empty());

    // w1 cut from every node on UDP 7946, both ways.
    add_fault(&lab, &membership_drop_on("w1-k8s"));
    assert_eq!(
        through("w1-k8s", "w2-k8s", MEMBERSHIP_PORT),
        0,
        "w1 -> w2 passed"
    );
    assert_eq!(
        through("w2-k8s", "w1-k8s", MEMBERSHIP_PORT),
        0,
        "w2 -> w1 passed"
    );
    assert_eq!(
        through("m-k8s", "w1-k8s", MEMBERSHIP_PORT),
        0,
        "m -> w1 passed"
    );
    // Other pairs, other ports and other hosts are untouched.
    assert_eq!(through("w2-k8s", "m-k8s", MEMBERSHIP_PORT), PROBE);
    assert_eq!(through("w1-k8s", "w2-k8s", MEMBERSHIP_PORT + 1), PROBE);
    assert_eq!(through("client", "w2-k8s", MEMBERSHIP_PORT), PROBE);
    let faults = active_faults(&lab);
    match faults.as_slice() {
        [
            ActiveFault::Traffic {
                name, on, dropped, ..
            },
        ] => {
            assert_eq!(name, "cut-w1");
            assert_eq!(on.len(), 1, "{on:?}");
            assert_eq!(on[0].0, "w1-k8s");
            assert!(on[0].1.contains("udp/7946"), "{on:?}");
            assert!(*dropped >= u64::from(3 * PROBE), "dropped {dropped}");
        }
        other => panic!("faults in force: {other:?}"),
    }
    assert!(
        lab.status().to_string().contains("cut-w1: matched"),
        "{}",
        lab.status()
    );
    let again = lab.add_traffic_fault(&membership_drop_on("w2-k8s"));
    assert!(again.is_err(), "a second fault of the same name was added");

    remove_fault(&lab, "cut-w1");
    assert!(active_faults(&lab).is_empty());
    assert_eq!(through("w1-k8s", "w2-k8s", MEMBERSHIP_PORT), PROBE);
    assert_eq!(through("w2-k8s", "w1-k8s", MEMBERSHIP_PORT), PROBE);
    assert!(!lab.remove_fault("cut-w1").unwrap(), "removed twice");

    // 50 % loss of what every node sends: each datagram is lost once at
    // most, so about half of 400 arrive (6 standard deviations either way).
    add_fault(
        &lab,
        &kit::membership_fault("half-lost", Effect::Loss(50.0), Direction::Out),
    );
    let got = udp_datagrams_through(&lab, "w1-k8s", "w2-k8s", MEMBERSHIP_PORT, 400);
    eprintln!("figure: 50% loss: {got} of 400 datagrams arrived");
    assert!((140..=260).contains(&got), "{got} of 400 arrived");
    let dropped = dropped_by(&lab, "half-lost").expect("half-lost in force");
    assert_eq!(u64::from(400 - got), dropped, "the counters disagree");
    assert_eq!(lab.remove_traffic_faults().unwrap(), 1);
    assert_eq!(through("w1-k8s", "w2-k8s", MEMBERSHIP_PORT), PROBE);

    // 50 ms more for what w1 sends on the port, through the relay.
    let median = |mut t: Vec<Duration>| {
        t.sort();
        t[t.len() / 2]
    };
    let transit = |from: &str, to: &str| udp_transit_times(&lab, from, to, MEMBERSHIP_PORT, 50);
    let before = transit("w1-k8s", "w2-k8s");
    assert_eq!(before.len(), 50);
    let slow = TrafficFault {
        name: "slow-w1".into(),
        effect: Effect::Delay(Duration::from_millis(50)),
        direction: Direction::Out,
        ..membership_drop_on("w1-k8s")
    };
    add_fault(&lab, &slow);
    let delayed = transit("w1-k8s", "w2-k8s");
    let back = transit("w2-k8s", "w1-k8s");
    eprintln!(
        "figure: 50 ms delay: one-way median {:?} before, {:?} with the delay (min {:?}, max {:?}); the other way {:?}",
        median(before.clone()),
        median(delayed.clone()),
        delayed.iter().min(),
        delayed.iter().max(),
        median(back.clone()),
    );
    assert_eq!(delayed.len(), 50, "datagrams lost through the relay");
    assert!(
        delayed.iter().all(|d| *d >= Duration::from_millis(50)),
        "{delayed:?}"
    );
    assert!(median(delayed) < Duration::from_millis(80));
    assert!(
        median(back) < Duration::from_millis(20),
        "the other way is slow"
    );
    assert!(lab.daemon_running("delay-w1-k8s").unwrap());
    let second = TrafficFault {
        name: "slower-w1".into(),
        ..slow.clone()
    };
    assert!(lab.add_traffic_fault(&second).is_err(), "two delays on w1");
    remove_fault(&lab, "slow-w1");
    assert!(!lab.daemon_running("delay-w1-k8s").unwrap(), "relay left");
    let device = Command::new("ip")
        .args(["-n", "flb-w1-k8s", "link", "show", "flb-delay"])
        .output()
        .unwrap();
    assert!(!device.status.success(), "the relay's device is left");
    assert!(median(transit("w1-k8s", "w2-k8s")) < Duration::from_millis(20));

    // Torn down with faults in force, a relay among them.
    add_fault(&lab, &membership_drop_on("w1-k8s"));
    add_fault(
        &lab,
        &TrafficFault {
            hosts: vec!["w2-k8s".into()],
            ..slow
        },
    );
    down_leaves_nothing(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_control_plane_comes_back_with_its_objects() {
    let (lab, client) = kit::up(kit::bare(1)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let readyz = |node: &str| {
        kit::try_curl_in(&lab, node, &["-k", "https://192.0.2.10:6443/readyz"]).unwrap_or_default()
    };
    for (round, how) in [ControlPlaneStop::Graceful, ControlPlaneStop::Crash]
        .into_iter()
        .enumerate()
    {
        let name = format!("fault-probe-{round}");
        let probe: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name},
            "data": {"written": "before the outage"}
        }))
        .unwrap();
        let made = cms.create(&PostParams::default(), &probe).await.unwrap();

        let t0 = Instant::now();
        kit::stop_control_plane(&lab, how);
        eprintln!(
            "figure: control plane stopped ({how:?}) in {:?}",
            t0.elapsed()
        );
        assert!(
            matches!(
                active_faults(&lab).as_slice(),
                [ActiveFault::ControlPlaneStopped { .. }]
            ),
            "{:?}",
            active_faults(&lab)
        );
        assert!(lab.status().to_string().contains("control-plane: stopped"));
        // Neither the root namespace (through the forwarder) nor a node gets
        // an answer.
        let asked = tokio::time::timeout(Duration::from_secs(10), cms.get(&name)).await;
        assert!(
            !matches!(asked, Ok(Ok(_))),
            "the API server answered while stopped"
        );
        assert_ne!(readyz("w1-k8s"), "ok", "the API server answered w1");
        tokio::time::sleep(Duration::from_secs(3)).await;

        let t1 = Instant::now();
        kit::start_control_plane(&lab).await;
        eprintln!("figure: control plane ready again in {:?}", t1.elapsed());
        assert!(active_faults(&lab).is_empty(), "{:?}", active_faults(&lab));
        let back = cms.get(&name).await.expect("the object after the outage");
        assert_eq!(back.metadata.uid, made.metadata.uid);
        assert_eq!(
            back.metadata.resource_version,
            made.metadata.resource_version
        );
        assert_eq!(back.data, made.data);
        assert_eq!(readyz("w1-k8s"), "ok");
        lab.wait_nodes_ready(Duration::from_secs(60))
            .await
            .expect("nodes Ready after the outage");
    }

    // `lab up` starts a stopped control plane, and then it is no fault.
    kit::stop_control_plane(&lab, ControlPlaneStop::Crash);
    Lab::ensure(lab.paths().clone(), lab.options().clone())
        .await
        .expect("lab up on a stopped control plane");
    assert!(active_faults(&lab).is_empty(), "{:?}", active_faults(&lab));
    assert_eq!(readyz("w1-k8s"), "ok");

    // Torn down while stopped: the marker goes with the state directory.
    kit::stop_control_plane(&lab, ControlPlaneStop::Crash);
    down_leaves_nothing(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_the_api_server_keeps_the_segment_and_its_udp() {
    let (lab, _client) = kit::up(kit::bare(2)).await;
    let api = lab.topology().control_plane().ipv4;
    let readyz = |node: &str| {
        kit::try_curl_in(&lab, node, &["-k", &format!("https://{api}:6443/readyz")])
            .unwrap_or_default()
    };
    assert_eq!(readyz("w1-k8s"), "ok");
    assert!(
        lab.cut_from_api(topology::CONTROL_PLANE).is_err(),
        "m-k8s was cut"
    );

    let name = kit::cut_from_api(&lab, "w1-k8s");
    assert_eq!(name, "api-cut-w1-k8s");
    assert_ne!(readyz("w1-k8s"), "ok", "w1 still reaches the API server");
    assert_eq!(readyz("w2-k8s"), "ok", "w2 lost the API server too");
    assert!(
        lab.reachable("w1-k8s", api.into()).unwrap(),
        "w1 lost m-k8s on the segment"
    );
    assert_eq!(
        udp_datagrams_through(&lab, "w1-k8s", "m-k8s", MEMBERSHIP_PORT, PROBE),
        PROBE
    );
    assert_eq!(
        udp_datagrams_through(&lab, "m-k8s", "w1-k8s", MEMBERSHIP_PORT, PROBE),
        PROBE
    );
    // Its node agent cannot renew the node's Lease: the cluster sees the node
    // go NotReady after the grace period (20 s on the lab).
    let t0 = Instant::now();
    lab.wait_node_ready("w1-k8s", false, Duration::from_secs(90))
        .await
        .expect("w1 NotReady while cut off");
    eprintln!("figure: w1 NotReady {:?} after the cut", t0.elapsed());

    remove_fault(&lab, &name);
    assert_eq!(readyz("w1-k8s"), "ok");
    lab.wait_node_ready("w1-k8s", true, Duration::from_secs(90))
        .await
        .expect("w1 Ready once reconnected");

    kit::cut_from_api(&lab, "w2-k8s");
    down_leaves_nothing(lab);
}

/// Runs `lab ARGS` as a child of this test, which holds the lab lock.
fn lab_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env(ENV_LOCK_HELD, "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lab")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_command_line_adds_lists_and_removes_faults() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the lab tests need root (network namespaces); run them as root, e.g. `sudo make e2e`"
    );
    let _lock = lock::acquire(LOCK_WAIT).expect("lab lock");
    let paths = LabPaths::from_env();
    teardown::down(&paths).expect("remove a leftover lab");
    let ok = |args: &[&str]| {
        let out = lab_cmd(args);
        assert!(out.status.success(), "lab {args:?}: {}", text(&out));
        text(&out)
    };
    let fails = |args: &[&str]| {
        let out = lab_cmd(args);
        assert!(
            !out.status.success(),
            "lab {args:?} succeeded: {}",
            text(&out)
        );
        text(&out)
    };

    ok(&["up", "--topology-only", "--workers", "2"]);
    assert!(ok(&["fault", "list"]).contains("no faults in force"));
    ok(&[
        "fault", "traffic", "w1-udp", "--on", "w1-k8s", "--udp", "7946", "--drop",
    ]);
    ok(&[
        "fault",
        "traffic",
        "lossy",
        "--on",
        "all",
        "--udp",
        "7946",
        "--loss",
        "10",
        "--direction",
        "out",
    ]);
    let list = ok(&["fault", "list"]);
    assert!(list.contains("w1-udp: matched"), "{list}");
    assert!(
        list.contains("10% loss of udp/7946 w2-k8s -> m-k8s,w1-k8s"),
        "{list}"
    );
    let status = ok(&["status"]);
    assert!(
        status.contains("faults:") && status.contains("lossy:"),
        "{status}"
    );
    ok(&[
        "fault",
        "traffic",
        "slow",
        "--on",
        "w2-k8s",
        "--udp",
        "7946",
        "--delay",
        "50ms",
        "--direction",
        "out",
    ]);
    let list = ok(&["fault", "list"]);
    assert!(
        list.contains("50 ms delay of udp/7946 w2-k8s -> m-k8s,w1-k8s"),
        "{list}"
    );
    assert!(
        ok(&["status"]).contains("delay-w2-k8s"),
        "the relay is not listed"
    );
    fails(&[
        "fault", "traffic", "bad", "--on", "w1-k8s", "--udp", "1", "--delay", "50ms",
    ]);
    fails(&[
        "fault", "traffic", "bad", "--on", "w1-k8s", "--udp", "1", "--loss", "100",
    ]);
    fails(&[
        "fault", "traffic", "Bad", "--on", "w1-k8s", "--udp", "1", "--drop",
    ]);
    assert!(fails(&["fault", "stop-control-plane"]).contains("topology-only"));
    assert!(fails(&["fault", "cut-api", "m-k8s"]).contains("API server"));

    ok(&["fault", "remove", "w1-udp"]);
    assert!(fails(&["fault", "remove", "w1-udp"]).contains("no traffic fault named"));
    let list = ok(&["fault", "list"]);
    assert!(!list.contains("w1-udp") && list.contains("lossy"), "{list}");

    ok(&["fault", "remove", "slow"]);
    assert!(
        !ok(&["status"]).contains("delay-w2-k8s"),
        "the relay is left"
    );

    // Down with "lossy" in force.
    ok(&["down"]);
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
    assert!(!root_has_fault_tables());
}
