//! Kubernetes objects as the lab tests make and read them: server-side apply,
//! `metallb.io` objects, the echo workload, node labels, the membership
//! Secret, and waits on what the controller and speakers write (Service
//! addresses, events, ServiceL2Status).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{CONFIG_NS, ECHO_IMAGE, PODS_WAIT};
use crate::lab::{eventually, ferrolb};

pub use crate::e2e::{POOL_ANNOTATION, ingress_ips, lb_ingress, metallb};

/// Server-side apply of `obj` (named `name`) through `api`, forced, as
/// [`crate::e2e::apply`] does it; panics on failure.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    crate::e2e::apply(api, name, &obj)
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e:#}"));
}

/// The `metallb.io` objects of `kind` in namespace `ns`.
pub fn metallb_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &metallb(kind))
}

/// Namespace `name`.
pub async fn apply_namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    apply(
        &nss,
        name,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

/// The `metallb.io` object `kind`/`name` in ferrolb's namespace with `spec`.
pub async fn apply_metallb(client: &Client, kind: &str, name: &str, spec: Value) {
    apply(
        &metallb_api(client, CONFIG_NS, kind),
        name,
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": kind,
            "metadata": {"name": name, "namespace": CONFIG_NS},
            "spec": spec
        }),
    )
    .await;
}

/// IPAddressPool `name` in ferrolb's namespace with `addresses`.
pub async fn apply_pool(client: &Client, name: &str, addresses: &[&str]) {
    apply_metallb(
        client,
        "IPAddressPool",
        name,
        json!({"addresses": addresses}),
    )
    .await;
}

/// L2Advertisement `name` in ferrolb's namespace with `spec`.
pub async fn apply_l2(client: &Client, name: &str, spec: Value) {
    apply_metallb(client, "L2Advertisement", name, spec).await;
}

/// `extra`'s keys (an object) added to `base` (an object).
fn merged(mut base: Value, extra: &Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// An echo Deployment `name` in `ns` ([`ECHO_IMAGE`], pods labelled
/// `app: <name>`), with `pod_spec`'s keys added to the pod spec (e.g.
/// `nodeName`, `nodeSelector`).
pub fn echo_deployment(ns: &str, name: &str, replicas: usize, pod_spec: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": merged(
                    json!({"containers": [{"name": name, "image": ECHO_IMAGE}]}),
                    pod_spec
                )
            }
        }
    })
}

/// Applies [`echo_deployment`].
pub async fn apply_echo(client: &Client, ns: &str, name: &str, replicas: usize, pod_spec: Value) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    apply(
        &deployments,
        name,
        echo_deployment(ns, name, replicas, &pod_spec),
    )
    .await;
}

/// A LoadBalancer Service: a port forwarded to the echo pods' port 80.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoService<'a> {
    /// Service name.
    pub name: &'a str,
    /// Service port.
    pub port: u16,
    /// Annotations (an object; none when empty).
    pub annotations: Value,
    /// Keys added to the spec (`ipFamilyPolicy`, `externalTrafficPolicy`,
    /// `allocateLoadBalancerNodePorts`, ...).
    pub spec: Value,
}

impl<'a> EchoService<'a> {
    /// Service `name` on port 80, no annotations, nothing more in the spec.
    pub fn new(name: &'a str) -> Self {
        Self {
            name,
            port: 80,
            annotations: json!({}),
            spec: json!({}),
        }
    }

    /// The Service in `ns`, selecting `app: <app>`.
    pub fn to_json(&self, ns: &str, app: &str) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": ns});
        if self.annotations.as_object().is_some_and(|a| !a.is_empty()) {
            metadata["annotations"] = self.annotations.clone();
        }
        let spec = json!({
            "type": "LoadBalancer", "selector": {"app": app},
            "ports": [{"port": self.port, "targetPort": 80, "protocol": "TCP"}]
        });
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": metadata,
            "spec": merged(spec, &self.spec),
        })
    }

    /// Applies the Service in `ns`, selecting `app: <app>`.
    pub async fn apply(&self, client: &Client, ns: &str, app: &str) {
        let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
        apply(&svcs, self.name, self.to_json(ns, app)).await;
    }
}

/// Sets label `key` of `node` to `value` (removes it for `None`).
pub async fn label_node(client: &Client, node: &str, key: &str, value: Option<&str>) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("label {node}: {e}"));
}

/// `len` random bytes: a membership key.
pub fn random_key(len: usize) -> Vec<u8> {
    crate::lab::ferrolb::random_key(len).expect("random key")
}

/// Creates or replaces Secret `name` in ferrolb's namespace with `data`.
pub async fn put_secret(client: &Client, name: &str, data: BTreeMap<String, Vec<u8>>) {
    crate::lab::ferrolb::put_secret(client, name, data)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
}

/// Creates or replaces membership Secret `name` with `key` (as `secretkey`).
pub async fn put_key(client: &Client, name: &str, key: &[u8]) {
    put_secret(
        client,
        name,
        [(ferrolb::MEMBERLIST_KEY.to_owned(), key.to_vec())].into(),
    )
    .await;
}

/// The addresses in a Service's status, as written (strings, in order).
pub fn ingress(svc: &Service) -> Vec<String> {
    lb_ingress(svc)
        .iter()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// The `ipMode` of each address in a Service's status.
pub fn ip_modes(svc: &Service) -> Vec<Option<String>> {
    lb_ingress(svc).iter().map(|i| i.ip_mode.clone()).collect()
}

/// Polls Service `name` until `check` accepts it, for at most `limit`;
/// what `check` returns. Panics quoting `what` and `check`'s last reason.
pub async fn wait_service<T>(
    svcs: &Api<Service>,
    name: &str,
    limit: Duration,
    what: &str,
    check: impl Fn(&Service) -> Result<T, String>,
) -> T {
    crate::e2e::wait_service(svcs, name, limit, what, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The first address in Service `name`'s status, once it has one.
pub async fn wait_ingress(svcs: &Api<Service>, name: &str, limit: Duration) -> IpAddr {
    wait_ingress_mode(svcs, name, limit).await.0
}

/// The first address in Service `name`'s status and its `ipMode`, once it
/// has one.
pub async fn wait_ingress_mode(
    svcs: &Api<Service>,
    name: &str,
    limit: Duration,
) -> (IpAddr, Option<String>) {
    let what = format!("{name} gets an address");
    wait_service(svcs, name, limit, &what, |s| {
        lb_ingress(s)
            .iter()
            .find_map(|i| {
                let ip = i.ip.as_deref()?.parse().ok()?;
                Some((ip, i.ip_mode.clone()))
            })
            .ok_or_else(|| "no ingress yet".to_owned())
    })
    .await
}

/// All addresses in Service `name`'s status, once it has `n`.
pub async fn wait_addresses(
    svcs: &Api<Service>,
    name: &str,
    n: usize,
    limit: Duration,
) -> Vec<IpAddr> {
    let what = format!("{name} gets {n} addresses");
    wait_service(svcs, name, limit, &what, |s| {
        let ips = ingress_ips(s);
        if ips.len() == n {
            Ok(ips)
        } else {
            Err(format!("ingress {ips:?}"))
        }
    })
    .await
}

/// Service `name` once the addresses in its status satisfy `ok`.
async fn wait_ingress_where(
    svcs: &Api<Service>,
    name: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Service {
    wait_service(svcs, name, limit, what, |s| {
        let got = ingress(s);
        if ok(&got) {
            Ok(s.clone())
        } else {
            Err(format!("status {got:?}"))
        }
    })
    .await
}

/// Service `name` once it has at least one address.
pub async fn wait_assigned(svcs: &Api<Service>, name: &str, limit: Duration) -> Service {
    let what = format!("{name} gets an address");
    wait_ingress_where(svcs, name, limit, &what, |got| !got.is_empty()).await
}

/// Service `name` once its status shows exactly `want`, in this order.
pub async fn wait_ips(svcs: &Api<Service>, name: &str, want: &[&str], limit: Duration) -> Service {
    let what = format!("{name} shows {want:?}");
    wait_ingress_where(svcs, name, limit, &what, |got| got == want).await
}

/// Service `name` once its status shows exactly the addresses `want`, in
/// any order.
pub async fn wait_ip_set(
    svcs: &Api<Service>,
    name: &str,
    want: &[&str],
    limit: Duration,
) -> Service {
    let set: BTreeSet<&str> = want.iter().copied().collect();
    let what = format!("{name} shows {set:?}");
    wait_ingress_where(svcs, name, limit, &what, |got| {
        got.len() == want.len() && got.iter().map(String::as_str).collect::<BTreeSet<_>>() == set
    })
    .await
}

/// Deletes every Service in `ns`.
pub async fn delete_services(client: &Client, ns: &str) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    // Retried: under load (thousands of Services) the API server has dropped this long
    // request's connection (hyper IncompleteMessage), and a dropped request may have
    // deleted part of them; deleting the rest again is harmless.
    let mut tries = 0;
    while let Err(e) = svcs
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
    {
        tries += 1;
        assert!(tries < 5, "delete services in {ns}: {e}");
        eprintln!("delete services in {ns} failed ({e}), retrying");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// How many Services are left in `ns`.
pub async fn services_left(client: &Client, ns: &str) -> Result<usize, String> {
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    Ok(svcs
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .len())
}

/// `ip` as IPv4; panics on an IPv6 address.
pub fn ipv4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        other => panic!("{other} is not IPv4"),
    }
}

/// The events (`events.k8s.io`) in `ns` about object `name`.
pub async fn events_about(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>, String> {
    crate::e2e::events_about(client, ns, name)
        .await
        .map_err(|e| e.to_string())
}

/// Waits for an event about `name` (in `ns`) with `reason` that `matches`
/// accepts; returns its note.
pub async fn wait_event_where(
    client: &Client,
    (ns, name): (&str, &str),
    reason: &str,
    limit: Duration,
    matches: impl Fn(&Event) -> bool,
) -> String {
    let matches = &matches;
    eventually(&format!("event {reason} on {name}"), limit, || async move {
        let evs = events_about(client, ns, name).await?;
        let of_reason: Vec<&Event> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        of_reason
            .iter()
            .find(|e| matches(e))
            .map(|e| e.note.clone().unwrap_or_default())
            .ok_or_else(|| {
                let notes: Vec<Option<&str>> =
                    of_reason.iter().map(|e| e.note.as_deref()).collect();
                format!("{reason} events seen: {notes:?}")
            })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for an event about `name` (in `ns`) with `reason` whose note
/// contains `text`; returns the note.
pub async fn wait_event(
    client: &Client,
    (ns, name): (&str, &str),
    reason: &str,
    text: &str,
    limit: Duration,
) -> String {
    wait_event_where(client, (ns, name), reason, limit, |e| {
        e.note.as_deref().is_some_and(|n| n.contains(text))
    })
    .await
}

/// The `status` of every ServiceL2Status in `ns` about Service `svc`.
pub async fn l2_statuses(client: &Client, ns: &str, svc: &str) -> Result<Vec<Value>, String> {
    crate::e2e::l2_statuses(client, ns, svc)
        .await
        .map_err(|e| e.to_string())
}

/// The nodes named by the ServiceL2Status objects of Service `svc` in `ns`
/// (one per object).
pub async fn l2_status_nodes(client: &Client, ns: &str, svc: &str) -> Result<Vec<String>, String> {
    Ok(l2_statuses(client, ns, svc)
        .await?
        .iter()
        .filter_map(|s| s["node"].as_str().map(String::from))
        .collect())
}

/// The nodes named by the ServiceL2Status objects of Service `svc` in `ns`,
/// with the interfaces each lists.
pub async fn l2_status(
    client: &Client,
    ns: &str,
    svc: &str,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    Ok(l2_statuses(client, ns, svc)
        .await?
        .iter()
        .filter_map(|s| {
            let node = s["node"].as_str()?.to_string();
            let ifaces = s["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str().map(String::from))
                .collect();
            Some((node, ifaces))
        })
        .collect())
}

/// Whether a pod is Running.
pub fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Whether a pod is Running, has an address and is Ready.
pub fn pod_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    pod_running(p)
        && st.and_then(|s| s.pod_ip.as_ref()).is_some()
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods labelled `app: <app>` in `ns` that `keep` accepts, and how many
/// there are in all.
pub async fn pods_where(
    client: &Client,
    ns: &str,
    app: &str,
    keep: impl Fn(&Pod) -> bool,
) -> Result<(BTreeSet<String>, usize), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    let names = list
        .items
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    Ok((names, list.items.len()))
}

/// Waits (at most [`PODS_WAIT`]) until exactly `want` pods labelled
/// `app: <app>` in `ns` are Running; their names.
pub async fn wait_running_pods(
    client: &Client,
    ns: &str,
    app: &str,
    want: usize,
) -> BTreeSet<String> {
    eventually(&format!("{want} {app} pods running"), PODS_WAIT, || async {
        let (running, _) = pods_where(client, ns, app, pod_running).await?;
        if running.len() == want {
            Ok(running)
        } else {
            Err(format!("running: {running:?}"))
        }
    })
    .await
    .expect("pods")
}
