//! The end-to-end scenarios, written once and run against any cluster.
//!
//! A [`Cluster`] is what a scenario needs: a Kubernetes client (from any
//! kubeconfig), a [`ClientHost`] on the cluster's layer-2 segment (to send
//! requests and read which MAC answered ARP/NDP for an address) and
//! [`Settings`] (which addresses the scenarios may use, which echo image,
//! ...). Two providers build one:
//!
//! - [`lab::LabProvider`]: the lab of this repository (network namespaces,
//!   ferrolb run as processes), the client host being the lab's `client`
//!   namespace. `make test` runs the scenarios this way.
//! - [`env::from_env`]: any cluster where ferrolb is installed (kind in CI,
//!   see `integration/kind/run.sh suite`), described by `FERROLB_E2E_*`
//!   environment variables.
//!
//! Each scenario in [`scenarios`] creates its own namespace, pools and
//! workload, checks what a user sees, and removes everything it created
//! also when it fails (see [`Scope`]). Scenarios discover nodes through the
//! API and never assume names.

pub mod env;
pub mod host;
pub mod lab;
pub mod scenarios;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, LoadBalancerIngress, Namespace, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

pub use host::{ClientHost, CommandHost};

use crate::lab::eventually;

/// Field manager of every object the scenarios apply.
pub const FIELD_MANAGER: &str = "ferrolb-e2e";
/// Label on the namespaces the scenarios create.
pub const CREATED_BY: &str = "app.kubernetes.io/created-by";
/// The annotation in which the controller names the pool of a Service's
/// address.
pub const POOL_ANNOTATION: &str = "metallb.io/ip-allocated-from-pool";
/// Addresses each scenario gets from [`Settings::pool`].
pub const ADDRESSES_PER_SCENARIO: u128 = 4;

/// A contiguous range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

impl AddressRange {
    /// Parses `first-last`, `address/prefix` (the whole network) or a
    /// single address.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let ip = |t: &str| -> Result<IpAddr> {
            t.trim()
                .parse()
                .with_context(|| format!("{t:?} is not an IP address"))
        };
        let r = if let Some((a, b)) = s.split_once('-') {
            Self {
                first: ip(a)?,
                last: ip(b)?,
            }
        } else if let Some((a, len)) = s.split_once('/') {
            let a = ip(a)?;
            let bits = if a.is_ipv4() { 32 } else { 128 };
            let len: u32 = len
                .trim()
                .parse()
                .with_context(|| format!("{len:?} is not a prefix length"))?;
            ensure!(len <= bits, "prefix length {len} too long in {s:?}");
            let host_bits = bits - len;
            let mask = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let base = to_u128(a) & !mask;
            Self {
                first: from_u128(a, base),
                last: from_u128(a, base | mask),
            }
        } else {
            let a = ip(s)?;
            Self { first: a, last: a }
        };
        ensure!(
            r.first.is_ipv4() == r.last.is_ipv4(),
            "{s:?} mixes address families"
        );
        ensure!(
            to_u128(r.first) <= to_u128(r.last),
            "{s:?} is reversed: its start is after its end"
        );
        Ok(r)
    }

    /// Number of addresses.
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// Never empty (a range has at least one address); for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th address, if the range has it.
    pub fn nth(&self, i: u128) -> Option<IpAddr> {
        (i < self.len()).then(|| from_u128(self.first, to_u128(self.first) + i))
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(ip))
    }

    /// The range's family: true for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }

    /// The addresses of scenario slot `slot` ([`ADDRESSES_PER_SCENARIO`]
    /// of them).
    pub fn slot(&self, slot: u128) -> Result<Vec<IpAddr>> {
        (0..ADDRESSES_PER_SCENARIO)
            .map(|i| {
                self.nth(slot * ADDRESSES_PER_SCENARIO + i).ok_or_else(|| {
                    anyhow!(
                        "the address range {self} has {} addresses, scenario slot {slot} needs {}",
                        self.len(),
                        (slot + 1) * ADDRESSES_PER_SCENARIO
                    )
                })
            })
            .collect()
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The workload behind the scenarios' Services: an HTTP server that answers
/// `path` on `port` with the pod's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoWorkload {
    /// Container image.
    pub image: String,
    /// Container arguments (none: the image's default command).
    pub args: Vec<String>,
    /// Container port the server listens on.
    pub port: u16,
    /// Path whose answer is the pod's name.
    pub path: String,
}

/// The default echo image: Kubernetes' own e2e test image, whose `netexec`
/// mode answers `/hostname` with the pod's hostname (its name). The lab's
/// node agent serves every image itself, answering any path with the pod
/// name on port 80 and on every declared container port, so the same
/// Deployment works on both.
pub const DEFAULT_ECHO_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

impl Default for EchoWorkload {
    fn default() -> Self {
        Self {
            image: DEFAULT_ECHO_IMAGE.to_owned(),
            args: vec!["netexec".to_owned(), "--http-port=8080".to_owned()],
            port: 8080,
            path: "/hostname".to_owned(),
        }
    }
}

/// What the scenarios may use on a cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of the scenarios' namespaces and configuration objects
    /// (`<prefix>-<scenario>`).
    pub prefix: String,
    /// ferrolb's namespace: where pools, L2Advertisements and the legacy
    /// ConfigMap live.
    pub config_namespace: String,
    /// Free addresses on the layer-2 segment, carved into slots of
    /// [`ADDRESSES_PER_SCENARIO`]. Must not overlap any pool of the cluster.
    pub pool: AddressRange,
    /// The echo workload.
    pub echo: EchoWorkload,
    /// Name of the legacy ConfigMap ferrolb reads, when the legacy scenario
    /// may create it (it refuses to touch one that exists).
    pub legacy_configmap: Option<String>,
    /// Bound of each wait (address assigned, pods running, ...).
    pub wait: Duration,
    /// Bound of a whole scenario.
    pub scenario_limit: Duration,
}

/// A cluster with ferrolb installed, as the scenarios see it.
#[derive(Clone)]
pub struct Cluster {
    /// What it is (for messages).
    pub name: String,
    /// Kubernetes client.
    pub kube: kube::Client,
    /// A host on the cluster's layer-2 segment.
    pub host: Arc<dyn ClientHost>,
    /// What the scenarios may use.
    pub settings: Arc<Settings>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("settings", &self.settings)
            .finish()
    }
}

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

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

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
    /// The scenario's addresses ([`ADDRESSES_PER_SCENARIO`] of them).
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
    fn kube(&self) -> kube::Client {
        self.cluster.kube.clone()
    }

    fn settings(&self) -> &Settings {
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

    /// The echo Deployment `name` with `replicas` pods; waits until they
    /// all run and are ready and returns their names.
    pub async fn echo(&self, name: &str, replicas: usize) -> Result<BTreeSet<String>> {
        let echo = &self.settings().echo;
        let mut container = json!({
            "name": "echo",
            "image": echo.image,
            "ports": [{"containerPort": echo.port, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": echo.path, "port": echo.port},
                               "periodSeconds": 2},
        });
        if !echo.args.is_empty() {
            container["args"] = json!(echo.args);
        }
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.kube(), &self.ns);
        apply(
            &api,
            name,
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [container]}
                    }
                }
            }),
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(self.kube(), &self.ns);
        let lp = ListParams::default().labels(&format!("app={name}"));
        Ok(eventually(
            &format!("{replicas} {name} pods ready"),
            self.settings().wait * 2,
            || async {
                let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
                let ready: BTreeSet<String> = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                if ready.len() == replicas {
                    Ok(ready)
                } else {
                    Err(format!("ready: {ready:?}"))
                }
            },
        )
        .await?)
    }

    /// A LoadBalancer Service `name` selecting the pods of `app`, with
    /// `ports` (each forwarded to the echo port) and `annotations`.
    pub async fn service(
        &self,
        name: &str,
        app: &str,
        ports: &[u16],
        annotations: &[(&str, String)],
    ) -> Result<()> {
        let ann: BTreeMap<&str, &str> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let port = self.settings().echo.port;
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        apply(
            &api,
            name,
            &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": self.ns, "annotations": ann},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": app},
                    "ports": ports.iter().map(|p| json!({
                        "name": format!("p{p}"), "port": p, "targetPort": port, "protocol": "TCP"
                    })).collect::<Vec<_>>(),
                }
            }),
        )
        .await?;
        Ok(())
    }

    /// Deletes Service `name` and waits until it is gone.
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        match api.delete(name, &DeleteParams::default()).await {
            Err(e) if !is_not_found(&e) => return Err(e).context(format!("deleting {name}")),
            _ => {}
        }
        Ok(eventually(
            &format!("Service {name} gone"),
            self.settings().wait,
            || async {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err("still there".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?)
    }

    /// Service `name` as it is now.
    pub async fn get_service(&self, name: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        api.get(name)
            .await
            .with_context(|| format!("reading Service {name}"))
    }

    /// Waits until Service `name` has an address in its status and returns
    /// the Service.
    pub async fn wait_ingress(&self, name: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        Ok(eventually(
            &format!("an address for Service {}/{name}", self.ns),
            self.settings().wait,
            || async {
                let s = api.get(name).await.map_err(|e| e.to_string())?;
                if ingress_ips(&s).is_empty() {
                    Err("no ingress yet".to_owned())
                } else {
                    Ok(s)
                }
            },
        )
        .await?)
    }

    /// Waits until Service `name` has an address and the annotation
    /// `metallb.io/ip-allocated-from-pool` names `pool` (the controller
    /// writes the status and the annotation in two requests), and returns
    /// the Service.
    pub async fn wait_allocated_from(&self, name: &str, pool: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        Ok(eventually(
            &format!("an address from pool {pool} for Service {}/{name}", self.ns),
            self.settings().wait,
            || async {
                let s = api.get(name).await.map_err(|e| e.to_string())?;
                let from = s
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(POOL_ANNOTATION));
                if ingress_ips(&s).is_empty() || from.map(String::as_str) != Some(pool) {
                    Err(format!(
                        "ingress {:?}, {POOL_ANNOTATION} {from:?}",
                        ingress_ips(&s)
                    ))
                } else {
                    Ok(s)
                }
            },
        )
        .await?)
    }

    /// Waits for an event about object `name` (in namespace `ns`) with
    /// `reason` whose note contains `text`; returns the note.
    pub async fn wait_event(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        text: &str,
    ) -> Result<String> {
        let events: Api<Event> = Api::namespaced(self.kube(), ns);
        Ok(eventually(
            &format!("event {reason} about {ns}/{name} mentioning {text:?}"),
            self.settings().wait,
            || async {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let notes: Vec<String> = list
                    .items
                    .iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                    .filter(|e| e.reason.as_deref() == Some(reason))
                    .filter_map(|e| e.note.clone())
                    .collect();
                notes
                    .iter()
                    .find(|n| n.contains(text))
                    .cloned()
                    .ok_or_else(|| format!("{reason} events seen: {notes:?}"))
            },
        )
        .await?)
    }

    /// The nodes named by the ServiceL2Status objects of Service `svc`.
    pub async fn l2_status_nodes(&self, svc: &str) -> Result<Vec<String>> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.kube(), &self.ns, &metallb("ServiceL2Status"));
        let list = api
            .list(&ListParams::default())
            .await
            .context("listing ServiceL2Status")?;
        Ok(list
            .items
            .iter()
            .filter(|o| o.data["status"]["serviceName"] == svc)
            .filter_map(|o| o.data["status"]["node"].as_str().map(str::to_owned))
            .collect())
    }

    /// Every node's address of `ip`'s family (InternalIP first, then
    /// ExternalIP), by node name, from the API.
    pub async fn node_addresses(&self, ip: IpAddr) -> Result<BTreeMap<String, IpAddr>> {
        let nodes: Api<Node> = Api::all(self.kube());
        let list = nodes
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        let mut out = BTreeMap::new();
        for n in list.items {
            let name = n.metadata.name.clone().unwrap_or_default();
            let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
            let pick = ["InternalIP", "ExternalIP"].iter().find_map(|t| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == *t)
                    .filter_map(|a| a.address.parse::<IpAddr>().ok())
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
            });
            if let Some(a) = pick {
                out.insert(name, a);
            }
        }
        ensure!(!out.is_empty(), "no node has an address of {ip}'s family");
        Ok(out)
    }

    /// URL of the echo server behind `ip`:`port`.
    pub fn url(&self, ip: IpAddr, port: u16) -> String {
        format!(
            "http://{}:{port}{}",
            host::url_host(ip),
            self.settings().echo.path
        )
    }

    /// One request to `ip`:`port` from the client host; the pod name that
    /// answered (trimmed), which must be one of `pods`.
    pub fn request(&self, ip: IpAddr, port: u16, pods: &BTreeSet<String>) -> Result<String> {
        let body = self
            .host()
            .curl(&self.url(ip, port), Duration::from_secs(3))?;
        let name = body.trim().to_owned();
        ensure!(
            pods.contains(&name),
            "{} answered {name:?}, not one of the pods {pods:?}",
            self.url(ip, port)
        );
        Ok(name)
    }

    /// Waits until `ip` is announced as the Service's ServiceL2Status says:
    /// the client host, asking afresh (neighbour entry flushed), gets the
    /// MAC of the node named in the ServiceL2Status of every Service in
    /// `services` (one node, the same for all) and its request on `port` is
    /// answered by one of `pods`. Returns the node.
    pub async fn wait_announced(
        &self,
        ip: IpAddr,
        port: u16,
        services: &[&str],
        pods: &BTreeSet<String>,
    ) -> Result<String> {
        let node_ips = self.node_addresses(ip).await?;
        Ok(eventually(
            &format!("{ip} announced by the node its ServiceL2Status names"),
            self.settings().wait,
            || async {
                let host = self.host();
                host.flush_neighbour(ip).map_err(|e| format!("{e:#}"))?;
                let answered = self.request(ip, port, pods).map_err(|e| format!("{e:#}"))?;
                let mac = host
                    .neighbour_mac(ip)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or("no neighbour entry after a request")?;
                let mut nodes = BTreeSet::new();
                for s in services {
                    let on = self.l2_status_nodes(s).await.map_err(|e| format!("{e:#}"))?;
                    if on.len() != 1 {
                        return Err(format!("ServiceL2Status of {s} names {on:?}"));
                    }
                    nodes.extend(on);
                }
                if nodes.len() != 1 {
                    return Err(format!("ServiceL2Status nodes differ: {nodes:?}"));
                }
                let node = nodes.into_iter().next().unwrap_or_default();
                let node_ip = node_ips
                    .get(&node)
                    .ok_or_else(|| format!("node {node} has no address of {ip}'s family"))?;
                let node_mac = host
                    .resolve_mac(*node_ip)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| format!("node {node} ({node_ip}) does not answer ARP/NDP"))?;
                if node_mac != mac {
                    return Err(format!(
                        "{ip} is at {mac} but ServiceL2Status names {node} ({node_ip}, at {node_mac})"
                    ));
                }
                self.step(format!(
                    "{ip} announced by {node} ({node_mac}); answered by pod {answered}"
                ));
                Ok(node)
            },
        )
        .await?)
    }

    /// Sends requests to `ip`:`port` until at least `want` different pods
    /// of `pods` have answered (at most 40 requests); every answer must be
    /// one of `pods`. Returns the pods seen.
    pub async fn spread(
        &self,
        ip: IpAddr,
        port: u16,
        pods: &BTreeSet<String>,
        want: usize,
    ) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            seen.insert(self.request(ip, port, pods)?);
            if seen.len() >= want {
                return Ok(seen);
            }
        }
        bail!(
            "40 requests to {} reached only {seen:?} of {pods:?}",
            self.url(ip, port)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_every_form() {
        let r = AddressRange::parse("198.51.100.100-198.51.100.139").unwrap();
        assert_eq!(r.len(), 40);
        assert_eq!(r.to_string(), "198.51.100.100-198.51.100.139");
        assert_eq!(r.nth(39), Some("198.51.100.139".parse().unwrap()));
        assert_eq!(r.nth(40), None);
        assert!(r.contains("198.51.100.120".parse().unwrap()));
        assert!(!r.contains("198.51.100.140".parse().unwrap()));
        assert!(!r.contains("2001:db8::1".parse().unwrap()));

        let c = AddressRange::parse("203.0.113.17/28").unwrap();
        assert_eq!(c.to_string(), "203.0.113.16-203.0.113.31");
        assert_eq!(c.len(), 16);
        let one = AddressRange::parse(" 198.51.100.7 ").unwrap();
        assert_eq!(one.len(), 1);
        let v6 = AddressRange::parse("2001:db8:100::/120").unwrap();
        assert_eq!(v6.len(), 256);
        assert_eq!(v6.nth(255), Some("2001:db8:100::ff".parse().unwrap()));
        assert!(!v6.is_ipv4());
        let all6 = AddressRange::parse("::/0").unwrap();
        assert_eq!(all6.len(), u128::MAX);

        for bad in [
            "198.51.100.9-198.51.100.1",
            "198.51.100.1-2001:db8::1",
            "198.51.100.1/33",
            "pool",
            "",
        ] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_do_not_overlap_and_stay_inside() {
        let r = AddressRange::parse("198.51.100.100-198.51.100.119").unwrap();
        let a = r.slot(0).unwrap();
        let b = r.slot(4).unwrap();
        assert_eq!(a[0], "198.51.100.100".parse::<IpAddr>().unwrap());
        assert_eq!(b[3], "198.51.100.119".parse::<IpAddr>().unwrap());
        assert!(a.iter().all(|x| !b.contains(x)));
        let err = r.slot(5).unwrap_err().to_string();
        assert!(err.contains("has 20 addresses"), "{err}");
    }

    #[test]
    fn echo_defaults_answer_with_the_pod_name_on_8080() {
        let e = EchoWorkload::default();
        assert_eq!(e.port, 8080);
        assert_eq!(e.path, "/hostname");
        assert!(e.args.contains(&"--http-port=8080".to_owned()));
    }
}
