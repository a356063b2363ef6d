//! The controller against the lab's real API server, one rule after another, bad input
//! included: every step checks what a user would see (Service status, the pool
//! annotation, events, metrics) and that nothing already allocated is lost.
//!
//! Needs root, the Go harness and a built `ferrolb-controller` (`make e2e` builds both).

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_integration::lab::eventually;
use ferrolb_integration::testkit::{
    self as kit, APP_NS, CONFIG_NS as NS, apply, controller_metrics as metrics, ingress,
    metallb_api, metric,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn lb_service(name: &str, ports: &[u16], annotations: &[(&str, &str)]) -> Value {
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": APP_NS, "annotations": ann},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": ports.iter().map(|p| json!({"name": format!("p{p}"), "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        }
    })
}

async fn wait_ips(svcs: &Api<Service>, name: &str, want: &[&str]) -> Service {
    kit::wait_ips(svcs, name, want, WAIT).await
}

/// Waits for an event on object `name` (in `ns`) whose reason is `reason` and whose
/// note contains `text`; returns the note.
async fn wait_event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    text: &str,
) -> String {
    kit::wait_event(client, (ns, name), reason, text, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_follows_metallb_rules_and_never_loses_an_address() {
    let (lab, client) = kit::up(kit::bare(1)).await;

    // The configuration namespace and the CRDs, as the chart installs them.
    kit::install_crds(&lab, &client).await;

    // The tutorial's legacy pool: three layer-2 addresses in ConfigMap metallb-system/config.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    apply(&cms, "config", json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": NS},
        "data": {"config": "address-pools:\n- name: legacy-l2\n  protocol: layer2\n  addresses:\n  - 198.51.100.10-198.51.100.12\n"}
    })).await;
    lab.restart_controller().expect("start controller");

    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);

    // Lowest free address first; the pool annotation and the event say where it came from.
    apply(&svcs, "web", lb_service("web", &[80], &[])).await;
    let web = wait_ips(&svcs, "web", &["198.51.100.10"]).await;
    assert_eq!(
        web.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("metallb.io/ip-allocated-from-pool"))
            .map(String::as_str),
        Some("legacy-l2")
    );
    wait_event(&client, APP_NS, "web", "IPAllocated", "198.51.100.10").await;
    apply(&svcs, "web2", lb_service("web2", &[80], &[])).await;
    apply(&svcs, "web3", lb_service("web3", &[80], &[])).await;
    wait_ips(&svcs, "web2", &["198.51.100.11"]).await;
    wait_ips(&svcs, "web3", &["198.51.100.12"]).await;

    // Exhausted pool: an event with the reason, no address.
    apply(&svcs, "web4", lb_service("web4", &[80], &[])).await;
    wait_event(
        &client,
        APP_NS,
        "web4",
        "AllocationFailed",
        "no free or shareable IPv4 address",
    )
    .await;

    // A CRD pool added beside the ConfigMap: the waiting Service gets an address.
    let pools = metallb_api(&client, NS, "IPAddressPool");
    apply(
        &pools,
        "extra",
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "extra", "namespace": NS},
            "spec": {"addresses": ["203.0.113.0/29"]}
        }),
    )
    .await;
    wait_ips(&svcs, "web4", &["203.0.113.0"]).await;

    // Pool status, written by the controller.
    eventually("IPAddressPool/extra status", WAIT, || async {
        let p = pools.get("extra").await.map_err(|e| e.to_string())?;
        let st = p.data.get("status").cloned().unwrap_or_default();
        if st.get("assignedIPv4") == Some(&json!(1)) && st.get("availableIPv4") == Some(&json!(7)) {
            Ok(())
        } else {
            Err(format!("status {st}"))
        }
    })
    .await
    .unwrap();

    // Invalid pool (overlaps "extra"): rejected with an event naming object and field,
    // the last good configuration stays in force and still allocates.
    apply(
        &pools,
        "bad",
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "bad", "namespace": NS},
            "spec": {"addresses": ["203.0.113.6/31"]}
        }),
    )
    .await;
    let note = wait_event(&client, NS, "bad", "InvalidConfiguration", "overlaps").await;
    assert!(
        note.contains("spec.addresses[0]") && note.contains("stays in force"),
        "{note}"
    );
    apply(&svcs, "web5", lb_service("web5", &[80], &[])).await;
    wait_ips(&svcs, "web5", &["203.0.113.1"]).await;
    wait_ips(&svcs, "web4", &["203.0.113.0"]).await;
    assert!(metrics(&lab).contains("metallb_k8s_client_config_stale_bool 1"));
    pools.delete("bad", &DeleteParams::default()).await.unwrap();
    eventually("config no longer stale", WAIT, || async {
        if metrics(&lab).contains("metallb_k8s_client_config_stale_bool 0") {
            Ok(())
        } else {
            Err("stale".into())
        }
    })
    .await
    .unwrap();

    // Two Services asking for one address without a sharing key: the second is refused.
    apply(
        &svcs,
        "req1",
        lb_service(
            "req1",
            &[80],
            &[("metallb.io/loadBalancerIPs", "203.0.113.2")],
        ),
    )
    .await;
    wait_ips(&svcs, "req1", &["203.0.113.2"]).await;
    apply(
        &svcs,
        "req2",
        lb_service(
            "req2",
            &[80],
            &[("metallb.io/loadBalancerIPs", "203.0.113.2")],
        ),
    )
    .await;
    wait_event(
        &client,
        APP_NS,
        "req2",
        "AllocationFailed",
        "in use by default/req1",
    )
    .await;
    wait_ips(&svcs, "req1", &["203.0.113.2"]).await;

    // With a sharing key and different ports they share.
    let shared = [
        ("metallb.io/loadBalancerIPs", "203.0.113.3"),
        ("metallb.io/allow-shared-ip", "k"),
    ];
    apply(&svcs, "sh1", lb_service("sh1", &[80], &shared)).await;
    apply(&svcs, "sh2", lb_service("sh2", &[443], &shared)).await;
    wait_ips(&svcs, "sh1", &["203.0.113.3"]).await;
    wait_ips(&svcs, "sh2", &["203.0.113.3"]).await;

    // Unknown pool name.
    apply(
        &svcs,
        "ghost",
        lb_service("ghost", &[80], &[("metallb.io/address-pool", "nowhere")]),
    )
    .await;
    wait_event(
        &client,
        APP_NS,
        "ghost",
        "AllocationFailed",
        "pool \"nowhere\" does not exist",
    )
    .await;

    // A malformed annotation on a Service that has an address: an event, the address stays.
    apply(
        &svcs,
        "web",
        lb_service("web", &[80], &[("metallb.io/loadBalancerIPs", "not-an-ip")]),
    )
    .await;
    let note = wait_event(
        &client,
        APP_NS,
        "web",
        "AllocationFailed",
        "not an IP address",
    )
    .await;
    assert!(note.contains("keeping [\"198.51.100.10\"]"), "{note}");
    wait_ips(&svcs, "web", &["198.51.100.10"]).await;

    // A Service of another loadBalancerClass is left alone.
    let mut other = lb_service("other-class", &[80], &[]);
    other["spec"]["loadBalancerClass"] = json!("example.org/other");
    apply(&svcs, "other-class", other).await;

    // Release on delete and on type change.
    svcs.delete("web2", &DeleteParams::default()).await.unwrap();
    svcs.delete("web3", &DeleteParams::default()).await.unwrap();
    let mut web_cluster = lb_service("web", &[80], &[]);
    web_cluster["spec"]["type"] = json!("ClusterIP");
    apply(&svcs, "web", web_cluster).await;
    wait_ips(&svcs, "web", &[]).await;

    // A configuration update removes a pool in use: its Services are cleared (event) and
    // reallocated from what remains; requested addresses that left every pool fail.
    pools
        .delete("extra", &DeleteParams::default())
        .await
        .unwrap();
    wait_event(&client, APP_NS, "web4", "ClearAssignment", "203.0.113.0").await;
    wait_ips(&svcs, "web4", &["198.51.100.10"]).await;
    wait_ips(&svcs, "web5", &["198.51.100.11"]).await;
    wait_event(
        &client,
        APP_NS,
        "req1",
        "AllocationFailed",
        "not in any pool",
    )
    .await;
    wait_ips(&svcs, "req1", &[]).await;
    // The shared address 203.0.113.3 was in "extra" too: both Services lose it. Waited
    // for here, so that the snapshot below does not race the clearing.
    wait_ips(&svcs, "sh1", &[]).await;
    wait_ips(&svcs, "sh2", &[]).await;
    let other_svc = svcs.get("other-class").await.unwrap();
    assert!(ingress(&other_svc).is_empty(), "other class was touched");

    // Restart: every address stays where it is, then allocation goes on.
    let before: BTreeMap<String, Vec<String>> = svcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress(s)))
        .collect();
    lab.restart_controller().expect("restart controller");
    apply(&svcs, "after", lb_service("after", &[80], &[])).await;
    wait_ips(&svcs, "after", &["198.51.100.12"]).await;
    let after: BTreeMap<String, Vec<String>> = svcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("after"))
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress(s)))
        .collect();
    assert_eq!(before, after, "a restart moved addresses");

    // Pool gauges are refreshed on the controller's next tick after an
    // allocation, not with the status write the test just saw.
    eventually(
        "pool metrics count the restored and new addresses",
        WAIT,
        || {
            let m = metrics(&lab);
            let pool = "pool=\"legacy-l2\"";
            let ok = metric(&m, "metallb_allocator_addresses_in_use_total", pool) == Some(3.0)
                && metric(&m, "metallb_allocator_addresses_total", pool) == Some(3.0)
                && metric(&m, "metallb_k8s_client_config_loaded_bool", "") == Some(1.0);
            async move { if ok { Ok(()) } else { Err(m) } }
        },
    )
    .await
    .expect("controller metrics");

    lab.down().expect("lab down");
}
