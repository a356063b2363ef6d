//! Kubernetes objects as the scenarios (and the lab tests' [`testkit`]) make
//! and read them: server-side apply, the `metallb.io` resources, a
//! Service's ingress, events about an object, ServiceL2Status, and waiting
//! on a Service.
//!
//! [`testkit`]: crate::testkit

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use crate::lab::{self, eventually};

/// Field manager of every object the scenarios apply.
pub const FIELD_MANAGER: &str = "ferrolb-e2e";
/// Label on the namespaces the scenarios create.
pub const CREATED_BY: &str = "app.kubernetes.io/created-by";
/// The annotation in which the controller names the pool of a Service's
/// address.
pub const POOL_ANNOTATION: &str = "metallb.io/ip-allocated-from-pool";

/// The `metallb.io` resource of `kind`.
pub fn metallb(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", "v1beta1", kind))
}

/// Server-side apply of `obj` (named `name`) through `api`.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {name}"))
}

/// The entries of a Service's `status.loadBalancer.ingress`.
pub fn lb_ingress(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_deref())
        .unwrap_or_default()
}

/// The addresses in a Service's `status.loadBalancer.ingress` (what
/// `kubectl get service` shows as EXTERNAL-IP).
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    lb_ingress(svc)
        .iter()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

pub(super) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Polls Service `name` through `svcs` until `check` accepts it, for at
/// most `limit`; what `check` returns. The timeout names `what` and
/// `check`'s last reason.
pub async fn wait_service<T>(
    svcs: &Api<Service>,
    name: &str,
    limit: Duration,
    what: &str,
    check: impl Fn(&Service) -> std::result::Result<T, String>,
) -> lab::Result<T> {
    let check = &check;
    eventually(what, limit, || async move {
        let s = svcs.get(name).await.map_err(|e| e.to_string())?;
        check(&s)
    })
    .await
}

/// The events (`events.k8s.io`) in `ns` about object `name`.
pub async fn events_about(client: &kube::Client, ns: &str, name: &str) -> kube::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

/// The `status` of every ServiceL2Status in `ns` about Service `svc`.
pub async fn l2_statuses(client: &kube::Client, ns: &str, svc: &str) -> kube::Result<Vec<Value>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &metallb("ServiceL2Status"));
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| o.data["status"].clone())
        .filter(|s| s["serviceName"] == svc)
        .collect())
}
