//! The controller as a user runs it beyond one replica: two replicas with a leader
//! Lease (crash and graceful handover, no address moved), `--lb-class` with
//! `--lb-ip-mode`, and dual-stack Services with traffic from the client host. Each test
//! is one lab configuration; each step checks what a user sees (Service status, the
//! Lease, /readyz, metrics, events, IPAddressPool status, answers from the pods).
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`
//! (`make e2e` builds them). `--nocapture` shows the measured handover times.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{IpFamily, Lab, LabOptions, eventually};
use ferrolb_integration::testkit::{
    self as kit, APP_NS, CONFIG_NS as NS, CONTROLLER_PORT, apply, apply_pool, curl_in,
    daemon_log as log_of, ingress, ip_modes, metallb_api,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

const LEASE: &str = "ferrolb-controller";
/// The lab's controller: daemon `controller` in `m-k8s`, POD_NAME `controller-m-k8s`.
const MAIN: &str = "controller";
const MAIN_ID: &str = "controller-m-k8s";
const WAIT: Duration = Duration::from_secs(30);
/// Lease duration (15 s) plus a few renewal periods.
const TAKEOVER: Duration = Duration::from_secs(40);

/// A LoadBalancer Service selecting `app: echo`; `spec` is merged into the spec.
fn lb_service(name: &str, annotations: &[(&str, &str)], spec: Value) -> Value {
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let mut s = json!({
        "type": "LoadBalancer",
        "selector": {"app": "echo"},
        "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
    });
    if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), spec) {
        s.extend(extra);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": APP_NS, "annotations": ann},
        "spec": s,
    })
}

/// Waits until Service `name` has at least one address; returns the Service.
async fn wait_assigned(svcs: &Api<Service>, name: &str) -> Service {
    kit::wait_assigned(svcs, name, WAIT).await
}

/// Waits until Service `name` shows exactly the addresses `want`, in any order.
async fn wait_ip_set(svcs: &Api<Service>, name: &str, want: &[&str]) -> Service {
    kit::wait_ip_set(svcs, name, want, WAIT).await
}

/// Addresses of the Services `names`, as they are now.
async fn addresses(svcs: &Api<Service>, names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for n in names {
        let s = svcs.get(n).await.unwrap_or_else(|e| panic!("get {n}: {e}"));
        out.insert(n.clone(), ingress(&s));
    }
    out
}

/// How many Services of `before` show other addresses in `after`.
fn moved(before: &BTreeMap<String, Vec<String>>, after: &BTreeMap<String, Vec<String>>) -> usize {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .count()
}

async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    leases
        .get_opt(LEASE)
        .await
        .expect("read the lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_holder(client: &Client, want: &str, limit: Duration) {
    eventually(&format!("lease held by {want}"), limit, || async {
        match lease_holder(client).await {
            Some(h) if h == want => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The HTTP status of the controller's /readyz in `node` (0: no answer).
fn readyz(lab: &Lab, node: &str) -> u16 {
    kit::readyz(lab, node, CONTROLLER_PORT)
}

/// The controller's `ferrolb_controller_is_leader` in `node`, if it answers.
fn is_leader(lab: &Lab, node: &str) -> Option<i64> {
    curl_in(
        lab,
        node,
        &[&format!("http://127.0.0.1:{CONTROLLER_PORT}/metrics")],
    )
    .lines()
    .find_map(|l| l.strip_prefix("ferrolb_controller_is_leader "))
    .and_then(|v| v.trim().parse().ok())
}

/// Waits until the controller in `node` is ready and says whether it leads.
async fn wait_ready(lab: &Lab, node: &str, leader: bool) {
    let want = i64::from(leader);
    eventually(
        &format!("controller in {node} ready, is_leader {want}"),
        WAIT,
        || async {
            match (readyz(lab, node), is_leader(lab, node)) {
                (200, Some(l)) if l == want => Ok(()),
                other => Err(format!("(/readyz, is_leader) {other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Events about Service `name` posted by ferrolb's controller: (reason, instance).
async fn ferrolb_events(client: &Client, name: &str) -> Vec<(String, String)> {
    kit::events_about(client, APP_NS, name)
        .await
        .expect("list events")
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("ferrolb-controller"))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for the IPAllocated event of `name` and returns the instance that posted it.
async fn allocated_by(client: &Client, name: &str) -> String {
    eventually(&format!("IPAllocated event on {name}"), WAIT, || async {
        ferrolb_events(client, name)
            .await
            .into_iter()
            .find(|(r, _)| r == "IPAllocated")
            .map(|(_, i)| i)
            .ok_or_else(|| "none yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_without_moving_an_address() {
    let (lab, client) = kit::up(kit::bare(1)).await;
    kit::install_crds(&lab, &client).await;
    apply_pool(&client, "ha", &["198.51.100.0/28"]).await;

    // Replica A (the lab's controller in m-k8s) first, so that it leads; then replica B
    // in w1-k8s, as a Deployment's second pod on another node.
    lab.restart_controller().expect("start controller A");
    wait_holder(&client, MAIN_ID, WAIT).await;
    const B: &str = "controller-b";
    const B_ID: &str = "controller-b-w1-k8s";
    lab.spawn_controller(B, "w1-k8s", &[])
        .expect("start controller B");
    // What `kubectl get pods` shows with /readyz as readiness probe: both Ready.
    wait_ready(&lab, "m-k8s", true).await;
    wait_ready(&lab, "w1-k8s", false).await;

    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let mut names: Vec<String> = (1..=5).map(|i| format!("s{i}")).collect();
    for n in &names {
        apply(&svcs, n, lb_service(n, &[], json!({}))).await;
    }
    for n in &names {
        wait_assigned(&svcs, n).await;
    }
    // Only the leader acted.
    assert_eq!(allocated_by(&client, "s1").await, MAIN_ID);
    let before = addresses(&svcs, &names).await;

    // Crash of the leader: nobody acts until the lease expires.
    lab.kill_daemon(MAIN).expect("kill A");
    let killed = Instant::now();
    apply(&svcs, "orphan", lb_service("orphan", &[], json!({}))).await;
    assert_eq!(
        lease_holder(&client).await.as_deref(),
        Some(MAIN_ID),
        "the lease changed hands at once after a crash"
    );
    assert!(
        ingress(&svcs.get("orphan").await.unwrap()).is_empty(),
        "an address was assigned with no live leader"
    );
    wait_holder(&client, B_ID, TAKEOVER).await;
    println!(
        "figure: takeover after a crash: {:.1} s (lease 15 s)",
        killed.elapsed().as_secs_f64()
    );
    // The Service created without a leader gets its address from the new leader, and so
    // does a new one; nothing that had an address moved.
    wait_assigned(&svcs, "orphan").await;
    assert_eq!(allocated_by(&client, "orphan").await, B_ID);
    apply(&svcs, "s6", lb_service("s6", &[], json!({}))).await;
    wait_assigned(&svcs, "s6").await;
    wait_ready(&lab, "w1-k8s", true).await;
    let after = addresses(&svcs, &names).await;
    assert_eq!(moved(&before, &after), 0, "{before:?} -> {after:?}");
    assert!(
        !log_of(&lab, B).contains("not restored"),
        "B dropped an address at takeover"
    );

    // A comes back as standby (ready, not leader), then B stops gracefully: it hands the
    // lease back on its way out, so A need not wait for expiry.
    lab.restart_controller().expect("restart A");
    wait_ready(&lab, "m-k8s", false).await;
    names.extend(["orphan".to_string(), "s6".to_string()]);
    let before = addresses(&svcs, &names).await;
    let stopped = Instant::now();
    lab.stop_daemon(B, Duration::from_secs(10)).expect("stop B");
    assert!(
        log_of(&lab, B).contains("released the leader lease"),
        "B did not release the lease on SIGTERM"
    );
    assert_ne!(
        lease_holder(&client).await.as_deref(),
        Some(B_ID),
        "the stopped replica still holds the lease"
    );
    wait_holder(&client, MAIN_ID, WAIT).await;
    println!(
        "figure: handover after SIGTERM: {:.1} s (renewal period 2 s)",
        stopped.elapsed().as_secs_f64()
    );
    wait_ready(&lab, "m-k8s", true).await;
    apply(&svcs, "s7", lb_service("s7", &[], json!({}))).await;
    wait_assigned(&svcs, "s7").await;
    assert_eq!(allocated_by(&client, "s7").await, MAIN_ID);
    let after = addresses(&svcs, &names).await;
    assert_eq!(moved(&before, &after), 0, "{before:?} -> {after:?}");
    // Every Service has its own address.
    names.push("s7".into());
    let all: Vec<String> = addresses(&svcs, &names)
        .await
        .into_values()
        .flatten()
        .collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), names.len());
    assert_eq!(distinct.len(), all.len(), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_class_selects_services_and_ip_mode_is_written() {
    const CLASS: &str = "example.com/ferrolb";
    let (lab, client) = kit::up(LabOptions {
        controller_args: vec![
            "--lb-class".into(),
            CLASS.into(),
            "--lb-ip-mode".into(),
            "Proxy".into(),
        ],
        ..kit::bare(1)
    })
    .await;
    kit::install_crds(&lab, &client).await;
    apply_pool(&client, "p", &["203.0.113.0/29"]).await;
    lab.restart_controller().expect("start controller");
    wait_ready(&lab, "m-k8s", true).await;

    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    // Created first, so that the controller has seen both when the classed one (made
    // after them, on the same watch) has its address.
    apply(&svcs, "plain", lb_service("plain", &[], json!({}))).await;
    apply(
        &svcs,
        "other",
        lb_service(
            "other",
            &[],
            json!({"loadBalancerClass": "other.example/lb"}),
        ),
    )
    .await;
    apply(
        &svcs,
        "classed",
        lb_service("classed", &[], json!({"loadBalancerClass": CLASS})),
    )
    .await;
    let classed = wait_ip_set(&svcs, "classed", &["203.0.113.0"]).await;
    assert_eq!(ip_modes(&classed), [Some("Proxy".to_string())]);
    allocated_by(&client, "classed").await;
    for n in ["plain", "other"] {
        let s = svcs.get(n).await.unwrap();
        assert!(ingress(&s).is_empty(), "{n} got {:?}", ingress(&s));
        assert_eq!(ferrolb_events(&client, n).await, [], "events on {n}");
    }

    // Back to the default ipMode: the same address, now VIP (written as no ipMode, read
    // back as the API server's default), and written once: no write loop.
    lab.stop_daemon(MAIN, Duration::from_secs(10))
        .expect("stop controller");
    lab.spawn_controller(
        "controller-vip",
        "m-k8s",
        &["--lb-class".into(), CLASS.into()],
    )
    .expect("start the VIP controller");
    let classed = eventually("classed back to VIP", WAIT, || async {
        let s = svcs.get("classed").await.map_err(|e| e.to_string())?;
        match ip_modes(&s).as_slice() {
            [m] if m.as_deref() != Some("Proxy") => Ok(s),
            m => Err(format!("ipMode {m:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ingress(&classed), ["203.0.113.0"]);
    assert!(
        matches!(ip_modes(&classed)[0].as_deref(), None | Some("VIP")),
        "{:?}",
        ip_modes(&classed)
    );
    let rv = classed.metadata.resource_version.clone();
    // A Service made afterwards gets its address: the controller has gone through its
    // queue, and the first one was not written again.
    apply(
        &svcs,
        "classed2",
        lb_service("classed2", &[], json!({"loadBalancerClass": CLASS})),
    )
    .await;
    let c2 = wait_ip_set(&svcs, "classed2", &["203.0.113.1"]).await;
    assert!(matches!(ip_modes(&c2)[0].as_deref(), None | Some("VIP")));
    let classed = svcs.get("classed").await.unwrap();
    assert_eq!(
        classed.metadata.resource_version, rv,
        "classed written again"
    );
    for n in ["plain", "other"] {
        assert!(ingress(&svcs.get(n).await.unwrap()).is_empty(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_services_get_both_families_and_answer() {
    let (lab, client) = kit::up(LabOptions {
        ip_family: IpFamily::DualStack,
        ..kit::bare(2)
    })
    .await;
    kit::install_crds(&lab, &client).await;

    // Echo pods, the membership key, an L2Advertisement for every node; then the
    // controller and the speakers.
    kit::apply_echo(&client, APP_NS, "echo", 2, json!({})).await;
    kit::put_key(&client, kit::MEMBERLIST_SECRET, &kit::random_key(32)).await;
    kit::apply_l2(&client, "l2", json!({})).await;
    apply_pool(
        &client,
        "ds",
        &[
            "198.51.100.20-198.51.100.29",
            "2001:db8:100::20-2001:db8:100::2f",
        ],
    )
    .await;
    apply_pool(&client, "v4only", &["203.0.113.10-203.0.113.19"]).await;
    kit::start_ferrolb(&lab);
    wait_ready(&lab, "m-k8s", true).await;

    // One at a time, so that each takes the lowest free address of each family.
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let ds = [("metallb.io/address-pool", "ds")];
    apply(
        &svcs,
        "v6",
        lb_service(
            "v6",
            &ds,
            json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
        ),
    )
    .await;
    wait_ip_set(&svcs, "v6", &["2001:db8:100::20"]).await;
    apply(
        &svcs,
        "prefer",
        lb_service("prefer", &ds, json!({"ipFamilyPolicy": "PreferDualStack"})),
    )
    .await;
    wait_ip_set(&svcs, "prefer", &["198.51.100.20", "2001:db8:100::21"]).await;
    apply(
        &svcs,
        "require",
        lb_service(
            "require",
            &ds,
            json!({"ipFamilyPolicy": "RequireDualStack"}),
        ),
    )
    .await;
    wait_ip_set(&svcs, "require", &["198.51.100.21", "2001:db8:100::22"]).await;

    // PreferDualStack on a pool with IPv4 only: IPv4 only; when the pool gains an IPv6
    // range, the Service keeps its IPv4 address and gains an IPv6 one.
    apply(
        &svcs,
        "grow",
        lb_service(
            "grow",
            &[("metallb.io/address-pool", "v4only")],
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        ),
    )
    .await;
    wait_ip_set(&svcs, "grow", &["203.0.113.10"]).await;
    apply_pool(
        &client,
        "v4only",
        &[
            "203.0.113.10-203.0.113.19",
            "2001:db8:100::100-2001:db8:100::10f",
        ],
    )
    .await;
    wait_ip_set(&svcs, "grow", &["203.0.113.10", "2001:db8:100::100"]).await;

    // Pool status per family.
    let pools = metallb_api(&client, NS, "IPAddressPool");
    for (pool, want) in [("ds", [2, 8, 3, 13]), ("v4only", [1, 9, 1, 15])] {
        eventually(&format!("IPAddressPool/{pool} status"), WAIT, || async {
            let p = pools.get(pool).await.map_err(|e| e.to_string())?;
            let st = p.data.get("status").cloned().unwrap_or_default();
            let got = [
                "assignedIPv4",
                "availableIPv4",
                "assignedIPv6",
                "availableIPv6",
            ]
            .map(|k| st.get(k).and_then(Value::as_i64).unwrap_or(-1));
            if got == want {
                Ok(())
            } else {
                Err(format!("status {st}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    // Traffic from the client host to each family's address reaches an echo pod.
    let t = Instant::now();
    let pods = kit::wait_running_pods(&client, APP_NS, "echo", 2).await;
    println!(
        "figure: echo pods running after {:.1} s more",
        t.elapsed().as_secs_f64()
    );
    for url in [
        "http://198.51.100.20/",
        "http://[2001:db8:100::21]/",
        "http://[2001:db8:100::20]/",
    ] {
        let t = Instant::now();
        eventually(
            &format!("{url} answers from the client"),
            Duration::from_secs(60),
            || async {
                let body = lab
                    .curl("client", url, Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                if pods.iter().any(|p| body.contains(p.as_str())) {
                    Ok(())
                } else {
                    Err(format!("body {body:?}"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "figure: {url} answered after {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}
