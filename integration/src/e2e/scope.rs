//! One scenario's [`Scope`] on a cluster: its namespace, its addresses and
//! the configuration objects it makes in ferrolb's namespace (pools,
//! L2Advertisements, the legacy ConfigMap), all removed when it ends,
//! whatever happened ([`in_scope`]).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::{Value, json};

use super::objects::is_not_found;
use super::{CREATED_BY, ClientHost, Cluster, FIELD_MANAGER, Settings, apply, metallb};
use crate::lab::eventually;

/// Something a scenario created outside its own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    /// A `metallb.io` object in the configuration namespace.
    MetalLb { kind: String, name: String },
    /// A ConfigMap in the configuration namespace.
    ConfigMap(String),
}

/// One scenario's objects on one cluster: its namespace (`<prefix>-<name>`),
/// its addresses, and what it created elsewhere, removed by
/// [`Scope::cleanup`].
#[derive(Clone, Debug)]
pub struct Scope {
    /// The cluster.
    pub cluster: Cluster,
    /// Scenario name.
    pub name: String,
    /// The scenario's namespace.
    pub ns: String,
    /// The scenario's addresses
    /// ([`ADDRESSES_PER_SCENARIO`](super::ADDRESSES_PER_SCENARIO) of them).
    pub addrs: Vec<IpAddr>,
    created: Arc<Mutex<Vec<Created>>>,
}

/// Runs `body` in a fresh [`Scope`] (namespace created, a leftover one of an
/// earlier run removed first), bounded by [`Settings::scenario_limit`], and
/// cleans up afterwards whatever happened: error, timeout or panic.
pub async fn in_scope<F, Fut>(cluster: &Cluster, name: &str, slot: u128, body: F) -> Result<()>
where
    F: FnOnce(Scope) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let scope = Scope {
        cluster: cluster.clone(),
        name: name.to_owned(),
        ns: format!("{}-{name}", cluster.settings.prefix),
        addrs: cluster.settings.pool.slot(slot)?,
        created: Arc::new(Mutex::new(Vec::new())),
    };
    scope.create_namespace().await?;
    let limit = cluster.settings.scenario_limit;
    let task = tokio::spawn(tokio::time::timeout(limit, body(scope.clone())));
    let outcome = match task.await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(anyhow!("scenario {name} did not finish within {limit:?}")),
        Err(e) => Err(anyhow!("scenario {name} panicked: {e}")),
    };
    let cleaned = scope.cleanup().await;
    match (outcome, cleaned) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(c)) => Err(c.context(format!("cleanup of scenario {name}"))),
        (Err(e), Err(c)) => Err(e.context(format!("(cleanup failed too: {c:#})"))),
    }
}

impl Scope {
    pub(super) fn kube(&self) -> kube::Client {
        self.cluster.kube.clone()
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.cluster.settings
    }

    /// The host on the layer-2 segment.
    pub fn host(&self) -> &dyn ClientHost {
        &*self.cluster.host
    }

    /// Name of a configuration object of this scenario.
    pub fn object_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.ns)
    }

    /// Logs a step (shown with `--nocapture`).
    pub fn step(&self, what: impl fmt::Display) {
        eprintln!("[{}] {what}", self.name);
    }

    async fn create_namespace(&self) -> Result<()> {
        let nss: Api<Namespace> = Api::all(self.kube());
        if nss
            .get_opt(&self.ns)
            .await
            .with_context(|| format!("reading namespace {}", self.ns))?
            .is_some()
        {
            self.step(format!(
                "namespace {} left over from an earlier run: removing it",
                self.ns
            ));
            self.delete_namespace().await?;
        }
        apply(
            &nss,
            &self.ns,
            &json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.ns, "labels": {CREATED_BY: FIELD_MANAGER}}
            }),
        )
        .await?;
        Ok(())
    }

    async fn delete_namespace(&self) -> Result<()> {
        let nss: Api<Namespace> = Api::all(self.kube());
        match nss.delete(&self.ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {}", self.ns)),
        }
        let ns = self.ns.clone();
        Ok(eventually(
            &format!("namespace {ns} gone"),
            self.settings().wait * 2,
            || async {
                match nss.get_opt(&ns).await {
                    Ok(None) => Ok(()),
                    Ok(Some(n)) => Err(format!(
                        "phase {:?}",
                        n.status.and_then(|s| s.phase).unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?)
    }

    /// Removes the namespace (and so every workload and Service in it)
    /// first, then the configuration objects, so that no Service is left
    /// with an address its pool no longer has. Every step is tried; the
    /// first error is returned.
    pub async fn cleanup(&self) -> Result<()> {
        let mut first_err: Option<anyhow::Error> = None;
        if let Err(e) = self.delete_namespace().await {
            first_err.get_or_insert(e);
        }
        let created: Vec<Created> = std::mem::take(&mut *self.created.lock().expect("lock"));
        for c in created.iter().rev() {
            if let Err(e) = self.delete_created(c).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn delete_created(&self, c: &Created) -> Result<()> {
        let ns = &self.settings().config_namespace;
        let res = match c {
            Created::MetalLb { kind, name } => {
                let api: Api<DynamicObject> = Api::namespaced_with(self.kube(), ns, &metallb(kind));
                api.delete(name, &DeleteParams::default()).await.map(drop)
            }
            Created::ConfigMap(name) => {
                let api: Api<ConfigMap> = Api::namespaced(self.kube(), ns);
                api.delete(name, &DeleteParams::default()).await.map(drop)
            }
        };
        match res {
            Err(e) if !is_not_found(&e) => Err(e).with_context(|| format!("deleting {c:?}")),
            _ => Ok(()),
        }
    }

    fn remember(&self, c: Created) {
        let mut v = self.created.lock().expect("lock");
        if !v.contains(&c) {
            v.push(c);
        }
    }

    /// Applies a `metallb.io` object of `kind` named `name` in the
    /// configuration namespace with `spec`; removed at cleanup.
    pub async fn apply_metallb(&self, kind: &str, name: &str, spec: Value) -> Result<()> {
        let ns = &self.settings().config_namespace;
        self.remember(Created::MetalLb {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
        let api: Api<DynamicObject> = Api::namespaced_with(self.kube(), ns, &metallb(kind));
        apply(
            &api,
            name,
            &json!({
                "apiVersion": "metallb.io/v1beta1", "kind": kind,
                "metadata": {"name": name, "namespace": ns,
                             "labels": {CREATED_BY: FIELD_MANAGER}},
                "spec": spec,
            }),
        )
        .await?;
        Ok(())
    }

    /// Deletes a `metallb.io` object this scenario applied.
    pub async fn delete_metallb(&self, kind: &str, name: &str) -> Result<()> {
        let c = Created::MetalLb {
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        self.delete_created(&c).await?;
        self.created.lock().expect("lock").retain(|x| *x != c);
        Ok(())
    }

    /// An IPAddressPool `name` with `addresses`, reserved for this
    /// scenario's namespace (`serviceAllocation`), so that it never serves
    /// another Service of the cluster and other pools come after it for
    /// this namespace.
    pub async fn pool(&self, name: &str, addresses: &[String]) -> Result<()> {
        self.apply_metallb(
            "IPAddressPool",
            name,
            json!({
                "addresses": addresses,
                "serviceAllocation": {"priority": 1, "namespaces": [self.ns]},
            }),
        )
        .await
    }

    /// An L2Advertisement `name` for `pools`.
    pub async fn l2_advertisement(&self, name: &str, pools: &[&str]) -> Result<()> {
        self.apply_metallb("L2Advertisement", name, json!({"ipAddressPools": pools}))
            .await
    }

    /// Creates the legacy ConfigMap with `config` (its `config` key); fails
    /// if the provider does not allow it or it already exists (it may be
    /// the cluster's real configuration).
    pub async fn legacy_configmap(&self, config: &str) -> Result<()> {
        let name = self
            .settings()
            .legacy_configmap
            .clone()
            .context("this cluster does not allow the legacy ConfigMap scenario")?;
        let ns = &self.settings().config_namespace;
        let api: Api<ConfigMap> = Api::namespaced(self.kube(), ns);
        if api.get_opt(&name).await?.is_some() {
            bail!("ConfigMap {ns}/{name} exists: refusing to replace a configuration in use");
        }
        self.remember(Created::ConfigMap(name.clone()));
        api.create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns,
                             "labels": {CREATED_BY: FIELD_MANAGER}},
                "data": {"config": config},
            }))?,
        )
        .await
        .with_context(|| format!("creating ConfigMap {ns}/{name}"))?;
        Ok(())
    }
}
