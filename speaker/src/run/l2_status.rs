//! ServiceL2Status: one object per Service (in the Service's namespace, MetalLB's
//! labels), written by the node that leads the Service's address. A node taking over
//! rewrites it with its own name, so a failed node leaves nothing stale; a node that
//! stops leading deletes it only while it still names that node.
//!
//! The core says which objects this node owns and on which interfaces
//! ([`L2Statuses`]); this part writes what changed since the last write, deletes what
//! it no longer owns, and repairs what the watch shows differing.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_config::crd::{InterfaceInfo, MetalLBServiceL2Status, ServiceL2Status};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{FIELD_MANAGER, Speaker};
use crate::announce::Announcer;
use crate::decide::{L2Statuses, ServiceKey};

/// Labels on ServiceL2Status objects (MetalLB's names).
pub const L2_NODE_LABEL: &str = "metallb.io/node";
pub const L2_SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
pub const L2_SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// A write of one Service's ServiceL2Status.
#[derive(Clone, Debug, PartialEq)]
pub enum L2StatusWrite {
    /// Create or update it with this status.
    Write(MetalLBServiceL2Status),
    /// Delete it, if it still names this node.
    Delete,
}

/// Name of a Service's ServiceL2Status. One object per Service, whoever leads it: a
/// node taking an address over rewrites the object with its own name, so a failed
/// node leaves nothing stale behind; a node that stops leading deletes the object only
/// while it still names that node.
pub fn l2_status_name(svc: &ServiceKey) -> String {
    let mut h = Sha256::new();
    for part in [&svc.namespace, &svc.name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("l2-{hex}")
}

/// The objects' contents for the statuses `node` owns.
fn desired(node: &str, owned: &L2Statuses) -> BTreeMap<ServiceKey, MetalLBServiceL2Status> {
    owned
        .iter()
        .map(|(key, interfaces)| {
            let status = MetalLBServiceL2Status {
                node: node.to_string(),
                service_name: key.name.clone(),
                service_namespace: key.namespace.clone(),
                interfaces: interfaces
                    .iter()
                    .map(|name| InterfaceInfo { name: name.clone() })
                    .collect(),
            };
            (key.clone(), status)
        })
        .collect()
}

impl<A: Announcer + 'static> Speaker<A> {
    /// Brings this node's ServiceL2Status objects in line with what it owns: writes
    /// what changed since the last write, deletes what it no longer owns (also objects
    /// left by an earlier run, seen through the watch).
    pub(super) fn sync_l2_status(&mut self) {
        let desired = desired(&self.opts.node_name, &self.l2_owned);
        let mut jobs: BTreeMap<ServiceKey, L2StatusWrite> = BTreeMap::new();
        for (key, st) in &desired {
            if self.l2_sent.get(key) != Some(st) {
                jobs.insert(key.clone(), L2StatusWrite::Write(st.clone()));
            }
        }
        for key in self.l2_sent.keys() {
            if !desired.contains_key(key) {
                jobs.insert(key.clone(), L2StatusWrite::Delete);
            }
        }
        for st in self.api.l2_statuses.objects.values() {
            let key = ServiceKey::new(st.service_namespace.clone(), st.service_name.clone());
            if !desired.contains_key(&key)
                && !self.l2_sent.contains_key(&key)
                && !self.writes.busy(&key)
            {
                jobs.insert(key, L2StatusWrite::Delete);
            }
        }
        for (key, job) in jobs {
            match &job {
                L2StatusWrite::Write(st) => self.l2_sent.insert(key.clone(), st.clone()),
                L2StatusWrite::Delete => self.l2_sent.remove(&key),
            };
            self.writes.status(key, job);
        }
    }

    /// Repairs failed writes: forgets having written objects the watch shows differing
    /// from what this node owns (or missing), then syncs.
    pub(super) fn repair_l2_status(&mut self, owned: L2Statuses) {
        self.l2_owned = owned;
        let desired = desired(&self.opts.node_name, &self.l2_owned);
        let mut present: BTreeSet<ServiceKey> = BTreeSet::new();
        for st in self.api.l2_statuses.objects.values() {
            let key = ServiceKey::new(st.service_namespace.clone(), st.service_name.clone());
            if desired.get(&key) != Some(st) && !self.writes.busy(&key) {
                self.l2_sent.remove(&key);
            }
            present.insert(key);
        }
        for key in desired.keys() {
            if !present.contains(key) && self.api.l2_statuses.synced && !self.writes.busy(key) {
                self.l2_sent.remove(key);
            }
        }
        self.sync_l2_status();
    }

    /// Deletes every object this node wrote (a graceful stop).
    pub(super) fn release_l2_status(&mut self) {
        for key in std::mem::take(&mut self.l2_sent).into_keys() {
            self.writes.status(key, L2StatusWrite::Delete);
        }
    }
}

/// Carries out one write for `node`.
pub async fn write_l2_status(
    client: Client,
    node: &str,
    key: &ServiceKey,
    job: L2StatusWrite,
) -> Result<(), kube::Error> {
    let api: Api<ServiceL2Status> = Api::namespaced(client, &key.namespace);
    let name = l2_status_name(key);
    let L2StatusWrite::Write(status) = job else {
        // Only our own: the new leader may already have rewritten it.
        let Some(cur) = api.get_opt(&name).await? else {
            return Ok(());
        };
        // A node taking over relabels the object before it writes the status; either
        // naming another node means the object is no longer ours.
        let labelled = cur.labels().get(L2_NODE_LABEL).map(String::as_str);
        if cur.status.as_ref().is_some_and(|s| s.node != node)
            || labelled.is_some_and(|l| l != node)
        {
            return Ok(());
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: cur.resource_version(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        return match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            // Gone, or changed since we read it (another node took over).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let obj = json!({
        "apiVersion": "metallb.io/v1beta1",
        "kind": "ServiceL2Status",
        "metadata": {
            "name": name,
            "namespace": key.namespace,
            "labels": {
                L2_NODE_LABEL: node,
                L2_SERVICE_NAME_LABEL: key.name,
                L2_SERVICE_NAMESPACE_LABEL: key.namespace,
            }
        },
        "spec": {}
    });
    api.patch(&name, &pp, &Patch::Apply(&obj)).await?;
    let st = json!({
        "apiVersion": "metallb.io/v1beta1",
        "kind": "ServiceL2Status",
        "metadata": {"name": name, "namespace": key.namespace},
        "status": status,
    });
    api.patch_status(&name, &pp, &Patch::Apply(&st)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_status_names_are_stable_valid_and_distinct() {
        let a = l2_status_name(&ServiceKey::new("default", "echo"));
        assert_eq!(a, l2_status_name(&ServiceKey::new("default", "echo")));
        assert_ne!(a, l2_status_name(&ServiceKey::new("default", "echo2")));
        // No ambiguity between (ns "a", name "bc") and (ns "ab", name "c").
        assert_ne!(
            l2_status_name(&ServiceKey::new("a", "bc")),
            l2_status_name(&ServiceKey::new("ab", "c"))
        );
        assert_eq!(a.len(), 3 + 16);
        assert!(ferrolb_config::selector::dns1123_subdomain_error(&a).is_none());
    }
}
