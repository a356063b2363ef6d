//! The controller's allocation rules (README, "How addresses are allocated") on the
//! lab, one case after another on one lab: `autoAssign: false`, `avoidBuggyIPs`,
//! `serviceAllocation` (priority, namespaces, namespaceSelectors, serviceSelectors) and
//! requested addresses (`metallb.io/loadBalancerIPs`, `spec.loadBalancerIP`). Each case
//! has its own pools and namespace; the pools of the previous case are removed first
//! (the controller chooses among all pools) and the test waits until the controller's
//! metrics show exactly the new pools. Every step checks what a user sees: the
//! Service's status, the `metallb.io/ip-allocated-from-pool` annotation and the events
//! (`IPAllocated`, `AllocationFailed`, `DeprecatedField`).
//!
//! Needs root, the Go harness and a built `ferrolb-controller` (`make e2e` builds both).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrolb_integration::lab::{Lab, eventually};
use ferrolb_integration::testkit::{
    self as kit, CONFIG_NS as NS, POOL_ANNOTATION, apply, apply_metallb, apply_namespace,
    controller_metrics, ingress, metallb_api, metric, services_left,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A LoadBalancer Service `ns`/`name` with `labels` and `annotations`; `spec`'s keys
/// are added to the spec.
fn lb_service(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    spec: Value,
) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let mut s = json!({
        "type": "LoadBalancer",
        "selector": {"app": name},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    });
    if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), spec) {
        s.extend(extra);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": ann},
        "spec": s,
    })
}

/// Applies [`lb_service`].
async fn create(
    client: &Client,
    (ns, name): (&str, &str),
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    spec: Value,
) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    apply(&svcs, name, lb_service(ns, name, labels, annotations, spec)).await;
}

fn pool_annotation(svc: &Service) -> Option<String> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POOL_ANNOTATION))
        .cloned()
}

/// Waits until `ns`/`name` shows exactly `want`, then checks the pool annotation
/// names `pool` and that an `IPAllocated` event names the addresses.
async fn expect_allocated(client: &Client, (ns, name): (&str, &str), want: &[&str], pool: &str) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    kit::wait_ips(&svcs, name, want, WAIT).await;
    // The annotation is written with the status, in a second request: poll it too.
    eventually(&format!("{ns}/{name} annotated {pool}"), WAIT, || async {
        let s = svcs.get(name).await.map_err(|e| e.to_string())?;
        match pool_annotation(&s) {
            Some(p) if p == pool => Ok(()),
            other => Err(format!("annotation {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    kit::wait_event(
        client,
        (ns, name),
        "IPAllocated",
        &format!("{shown:?}"),
        WAIT,
    )
    .await;
}

/// Waits for an `AllocationFailed` event on `ns`/`name` whose note contains `text`,
/// then checks the Service shows `kept` (and, with nothing kept, no pool
/// annotation); returns the note.
async fn expect_failed(
    client: &Client,
    (ns, name): (&str, &str),
    text: &str,
    kept: &[&str],
) -> String {
    let note = kit::wait_event(client, (ns, name), "AllocationFailed", text, WAIT).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let s = svcs.get(name).await.expect("get service");
    assert_eq!(ingress(&s), kept, "{ns}/{name} after {note:?}");
    if kept.is_empty() {
        assert_eq!(pool_annotation(&s), None, "{ns}/{name} after {note:?}");
        let ours: Vec<String> = kit::events_about(client, ns, name)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| e.reason)
            .filter(|r| r == "IPAllocated")
            .collect();
        assert!(ours.is_empty(), "{ns}/{name}: {ours:?} after {note:?}");
    }
    note
}

/// The pools the controller has loaded, as its metrics show them (`pool` label of
/// `metallb_allocator_addresses_total`).
fn loaded_pools(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("metallb_allocator_addresses_total{pool=\""))
        .filter_map(|l| l.split_once('"').map(|(p, _)| p.to_string()))
        .collect()
}

/// Waits until the controller has loaded exactly the pools `want`.
async fn wait_pools(lab: &Lab, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(&format!("controller loads pools {want:?}"), WAIT, || {
        let got = loaded_pools(&controller_metrics(lab));
        let want = want.clone();
        async move {
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until the controller counts `want` usable addresses in `pool`.
async fn wait_pool_total(lab: &Lab, pool: &str, want: f64) {
    let labels = format!("pool=\"{pool}\"");
    eventually(&format!("{pool} counts {want} addresses"), WAIT, || {
        let got = metric(
            &controller_metrics(lab),
            "metallb_allocator_addresses_total",
            &labels,
        );
        async move {
            if got == Some(want) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// IPAddressPool `name` with `spec`.
async fn pool(client: &Client, name: &str, spec: Value) {
    apply_metallb(client, "IPAddressPool", name, spec).await;
}

/// Deletes the Services of `namespaces` (waiting until they are gone), then the pools
/// `pools`.
async fn clean(client: &Client, namespaces: &[&str], pools: &[&str]) {
    for ns in namespaces {
        kit::delete_services(client, ns).await;
        eventually(&format!("services of {ns} deleted"), WAIT, || async {
            match services_left(client, ns).await? {
                0 => Ok(()),
                n => Err(format!("{n} left")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let api = metallb_api(client, NS, "IPAddressPool");
    for p in pools {
        api.delete(p, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete pool {p}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_applies_every_allocation_rule() {
    let (lab, client) = kit::up(kit::bare(1)).await;
    kit::install_crds(&lab, &client).await;
    for ns in [
        "rules-auto",
        "rules-buggy",
        "rules-prio",
        "rules-other",
        "rules-blue",
        "rules-svc",
        "rules-req",
    ] {
        apply_namespace(&client, ns).await;
    }

    // 1. autoAssign: false. The pool sorts first by name and has the lowest addresses,
    // yet only a Service that names it gets an address from it.
    const AUTO: &str = "rules-auto";
    pool(
        &client,
        "a-manual",
        json!({"addresses": ["198.51.100.16/30"], "autoAssign": false}),
    )
    .await;
    lab.restart_controller().expect("start controller");
    wait_pools(&lab, &["a-manual"]).await;
    create(&client, (AUTO, "plain"), &[], &[], json!({})).await;
    expect_failed(
        &client,
        (AUTO, "plain"),
        "no pool with autoAssign enabled serves this Service",
        &[],
    )
    .await;
    create(
        &client,
        (AUTO, "pinned"),
        &[],
        &[("metallb.io/address-pool", "a-manual")],
        json!({}),
    )
    .await;
    expect_allocated(&client, (AUTO, "pinned"), &["198.51.100.16"], "a-manual").await;
    pool(
        &client,
        "b-auto",
        json!({"addresses": ["198.51.100.20/30"]}),
    )
    .await;
    wait_pools(&lab, &["a-manual", "b-auto"]).await;
    // The Service that waited gets one from the new pool; so does a new one.
    expect_allocated(&client, (AUTO, "plain"), &["198.51.100.20"], "b-auto").await;
    create(&client, (AUTO, "plain2"), &[], &[], json!({})).await;
    expect_allocated(&client, (AUTO, "plain2"), &["198.51.100.21"], "b-auto").await;
    clean(&client, &[AUTO], &["a-manual", "b-auto"]).await;

    // 2. avoidBuggyIPs: .0 and .255 are skipped, automatically and on request; the
    // same pool without it hands them out.
    const BUGGY: &str = "rules-buggy";
    let buggy_spec = |avoid: bool| {
        json!({
            "addresses": ["198.51.100.0/31", "203.0.113.254-203.0.113.255"],
            "avoidBuggyIPs": avoid,
        })
    };
    pool(&client, "buggy", buggy_spec(true)).await;
    wait_pools(&lab, &["buggy"]).await;
    wait_pool_total(&lab, "buggy", 2.0).await;
    create(&client, (BUGGY, "b1"), &[], &[], json!({})).await;
    expect_allocated(&client, (BUGGY, "b1"), &["198.51.100.1"], "buggy").await;
    create(&client, (BUGGY, "b2"), &[], &[], json!({})).await;
    expect_allocated(&client, (BUGGY, "b2"), &["203.0.113.254"], "buggy").await;
    create(&client, (BUGGY, "b3"), &[], &[], json!({})).await;
    expect_failed(
        &client,
        (BUGGY, "b3"),
        "pool \"buggy\" has no free or shareable IPv4 address",
        &[],
    )
    .await;
    create(
        &client,
        (BUGGY, "b4"),
        &[],
        &[("metallb.io/loadBalancerIPs", "203.0.113.255")],
        json!({}),
    )
    .await;
    expect_failed(
        &client,
        (BUGGY, "b4"),
        "203.0.113.255 ends in .0 or .255",
        &[],
    )
    .await;
    pool(&client, "buggy", buggy_spec(false)).await;
    wait_pool_total(&lab, "buggy", 4.0).await;
    expect_allocated(&client, (BUGGY, "b3"), &["198.51.100.0"], "buggy").await;
    expect_allocated(&client, (BUGGY, "b4"), &["203.0.113.255"], "buggy").await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), BUGGY);
    kit::wait_ips(&svcs, "b1", &["198.51.100.1"], WAIT).await;
    kit::wait_ips(&svcs, "b2", &["203.0.113.254"], WAIT).await;
    clean(&client, &[BUGGY], &[]).await;

    // 3. serviceAllocation, priority and namespaces: pools whose serviceAllocation
    // matches come first, lower priority first and unset priority last, against the
    // order of their names and addresses; then the pool without serviceAllocation. A
    // Service of another namespace never gets an address from the matching pools.
    const PRIO: &str = "rules-prio";
    const OTHER: &str = "rules-other";
    let allocation = |addr: &str, priority: Option<i32>| {
        let mut a = json!({"namespaces": [PRIO]});
        if let Some(p) = priority {
            a["priority"] = json!(p);
        }
        json!({"addresses": [addr], "serviceAllocation": a})
    };
    pool(
        &client,
        "sa-0-open",
        json!({"addresses": ["198.51.100.36/30"]}),
    )
    .await;
    pool(&client, "sa-1", allocation("198.51.100.40/32", None)).await;
    pool(&client, "sa-2", allocation("198.51.100.44/32", Some(20))).await;
    pool(&client, "sa-3", allocation("198.51.100.48/32", Some(10))).await;
    clean(&client, &[], &["buggy"]).await;
    wait_pools(&lab, &["sa-0-open", "sa-1", "sa-2", "sa-3"]).await;
    create(&client, (OTHER, "outsider"), &[], &[], json!({})).await;
    expect_allocated(
        &client,
        (OTHER, "outsider"),
        &["198.51.100.36"],
        "sa-0-open",
    )
    .await;
    for (name, ip, pool) in [
        ("p1", "198.51.100.48", "sa-3"),
        ("p2", "198.51.100.44", "sa-2"),
        ("p3", "198.51.100.40", "sa-1"),
        ("p4", "198.51.100.37", "sa-0-open"),
    ] {
        create(&client, (PRIO, name), &[], &[], json!({})).await;
        expect_allocated(&client, (PRIO, name), &[ip], pool).await;
    }
    // The open pool again for the outsider's neighbour, never a pool of PRIO's.
    create(&client, (OTHER, "outsider2"), &[], &[], json!({})).await;
    expect_allocated(
        &client,
        (OTHER, "outsider2"),
        &["198.51.100.38"],
        "sa-0-open",
    )
    .await;
    clean(&client, &[PRIO, OTHER], &[]).await;

    // 4. namespaceSelectors: a Service in a namespace without the label waits (no
    // address, an event); labelling the namespace gives it one.
    const BLUE: &str = "rules-blue";
    pool(
        &client,
        "nsel",
        json!({
            "addresses": ["203.0.113.16/30"],
            "serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"team": "blue"}}]},
        }),
    )
    .await;
    clean(&client, &[], &["sa-0-open", "sa-1", "sa-2", "sa-3"]).await;
    wait_pools(&lab, &["nsel"]).await;
    create(&client, (BLUE, "waiter"), &[], &[], json!({})).await;
    expect_failed(
        &client,
        (BLUE, "waiter"),
        "no pool with autoAssign enabled serves this Service",
        &[],
    )
    .await;
    let nss: Api<Namespace> = Api::all(client.clone());
    apply(
        &nss,
        BLUE,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": BLUE, "labels": {"team": "blue"}}}),
    )
    .await;
    expect_allocated(&client, (BLUE, "waiter"), &["203.0.113.16"], "nsel").await;

    // 5. serviceSelectors (with a namespace list): only a labelled Service of the
    // listed namespace gets the selective pool; the others take the open pool and,
    // once it is full, get nothing although the selective pools have free addresses.
    const SVC: &str = "rules-svc";
    pool(
        &client,
        "ssel",
        json!({
            "addresses": ["203.0.113.24/30"],
            "serviceAllocation": {
                "namespaces": [SVC],
                "serviceSelectors": [{"matchLabels": {"tier": "gold"}}],
            },
        }),
    )
    .await;
    pool(
        &client,
        "zz-open",
        json!({"addresses": ["203.0.113.32/32"]}),
    )
    .await;
    wait_pools(&lab, &["nsel", "ssel", "zz-open"]).await;
    let gold = [("tier", "gold")];
    create(&client, (SVC, "gold"), &gold, &[], json!({})).await;
    expect_allocated(&client, (SVC, "gold"), &["203.0.113.24"], "ssel").await;
    create(&client, (SVC, "plain"), &[], &[], json!({})).await;
    expect_allocated(&client, (SVC, "plain"), &["203.0.113.32"], "zz-open").await;
    let exhausted = "pool \"zz-open\" has no free or shareable IPv4 address";
    create(&client, (SVC, "plain2"), &[], &[], json!({})).await;
    expect_failed(&client, (SVC, "plain2"), exhausted, &[]).await;
    create(&client, (OTHER, "gold-elsewhere"), &gold, &[], json!({})).await;
    expect_failed(&client, (OTHER, "gold-elsewhere"), exhausted, &[]).await;
    clean(&client, &[BLUE, SVC, OTHER], &[]).await;

    // 6. Requested addresses: the annotation, the deprecated spec field (with a
    // DeprecatedField event), both at once (refused; an address already held is
    // kept), and an address outside every pool.
    const REQ: &str = "rules-req";
    pool(&client, "req", json!({"addresses": ["203.0.113.40/29"]})).await;
    clean(&client, &[], &["nsel", "ssel", "zz-open"]).await;
    wait_pools(&lab, &["req"]).await;
    let ann = |ip: &'static str| [("metallb.io/loadBalancerIPs", ip)];
    let spec_ip = |ip: &str| json!({"loadBalancerIP": ip});
    create(
        &client,
        (REQ, "r-ann"),
        &[],
        &ann("203.0.113.45"),
        json!({}),
    )
    .await;
    expect_allocated(&client, (REQ, "r-ann"), &["203.0.113.45"], "req").await;
    create(&client, (REQ, "r-spec"), &[], &[], spec_ip("203.0.113.46")).await;
    expect_allocated(&client, (REQ, "r-spec"), &["203.0.113.46"], "req").await;
    kit::wait_event(
        &client,
        (REQ, "r-spec"),
        "DeprecatedField",
        "spec.loadBalancerIP is deprecated",
        WAIT,
    )
    .await;
    let both = "spec.loadBalancerIP and the loadBalancerIPs annotation are both set";
    create(
        &client,
        (REQ, "r-both"),
        &[],
        &ann("203.0.113.43"),
        spec_ip("203.0.113.44"),
    )
    .await;
    expect_failed(&client, (REQ, "r-both"), both, &[]).await;
    create(
        &client,
        (REQ, "r-ann"),
        &[],
        &ann("203.0.113.45"),
        spec_ip("203.0.113.47"),
    )
    .await;
    let note = expect_failed(&client, (REQ, "r-ann"), both, &["203.0.113.45"]).await;
    assert!(note.contains("keeping [\"203.0.113.45\"]"), "{note}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), REQ);
    let s = svcs.get("r-ann").await.expect("get r-ann");
    assert_eq!(pool_annotation(&s).as_deref(), Some("req"));
    create(
        &client,
        (REQ, "r-out"),
        &[],
        &ann("198.51.100.200"),
        json!({}),
    )
    .await;
    expect_failed(
        &client,
        (REQ, "r-out"),
        "address 198.51.100.200 is not in any pool",
        &[],
    )
    .await;
    create(
        &client,
        (REQ, "r-out-spec"),
        &[],
        &[],
        spec_ip("198.51.100.201"),
    )
    .await;
    expect_failed(
        &client,
        (REQ, "r-out-spec"),
        "address 198.51.100.201 is not in any pool",
        &[],
    )
    .await;
    // Nothing above took an address from the pool: the next free one is the lowest.
    create(&client, (REQ, "r-free"), &[], &[], json!({})).await;
    expect_allocated(&client, (REQ, "r-free"), &["203.0.113.40"], "req").await;

    lab.down().expect("lab down");
}
