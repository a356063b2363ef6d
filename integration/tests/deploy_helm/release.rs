//! The release's objects as the lab's API server has them: whether each
//! object of a manifest exists, the metallb.io objects, the membership key,
//! and the CRDs.

use std::collections::BTreeSet;

use ferrolb_integration::lab::ferrolb;
use ferrolb_integration::testkit as kit;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::{Scope, pinned_kind};

use super::helm::NS;
use super::rendered::{Obj, crd_names};

fn dynamic_api(
    client: &kube::Client,
    ar: &ApiResource,
    scope: &Scope,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (scope, ns) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), ar),
        (Scope::Cluster, _) => Api::all_with(client.clone(), ar),
    }
}

/// For each object of `objs`, whether it exists in the cluster.
pub async fn existing(client: &kube::Client, objs: &[Obj]) -> Result<Vec<(Obj, bool)>, String> {
    let mut out = Vec::new();
    for o in objs {
        let (group, version) = match o.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &o.kind);
        let (ar, caps) = pinned_kind(client, &gvk)
            .await
            .map_err(|e| format!("discover {gvk:?}: {e}"))?;
        let api = dynamic_api(client, &ar, &caps.scope, o.namespace.as_deref());
        let got = api
            .get_opt(&o.name)
            .await
            .map_err(|e| format!("get {} {}: {e}", o.kind, o.name))?;
        out.push((o.clone(), got.is_some()));
    }
    Ok(out)
}

/// After an uninstall: every object of `objs` gone, except CRDs.
pub async fn all_gone_but_crds(client: &kube::Client, objs: &[Obj]) -> Result<(), String> {
    let left: Vec<String> = existing(client, objs)
        .await?
        .into_iter()
        .filter(|(o, exists)| *exists && o.kind != "CustomResourceDefinition")
        .map(|(o, _)| format!("{} {}", o.kind, o.name))
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still there: {left:?}"))
    }
}

/// The release's IPAddressPools.
pub fn ipaddresspools(client: &kube::Client) -> Api<DynamicObject> {
    kit::metallb_api(client, NS, "IPAddressPool")
}

/// The release's L2Advertisements.
pub fn l2advertisements(client: &kube::Client) -> Api<DynamicObject> {
    kit::metallb_api(client, NS, "L2Advertisement")
}

/// The names of the objects of `api`.
pub async fn names(api: &Api<DynamicObject>) -> BTreeSet<String> {
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

/// The membership key in the chart's Secret.
pub async fn member_key(secrets: &Api<Secret>) -> Vec<u8> {
    let s = secrets
        .get(ferrolb::MEMBERLIST_SECRET)
        .await
        .expect("membership Secret");
    s.data
        .and_then(|d| d.get(ferrolb::MEMBERLIST_KEY).cloned())
        .expect("secretkey in ferrolb-memberlist")
        .0
}

/// Every CRD of deploy/crds is there and Established.
pub async fn crds_established(client: &kube::Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crd_names() {
        let crd = crds
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} missing"))?;
        if !ferrolb::is_established(&crd) {
            return Err(format!("{name} not Established"));
        }
    }
    Ok(())
}
