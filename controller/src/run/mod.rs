//! The controller's Kubernetes side: watches Services, Namespaces and the configuration,
//! feeds one [`Engine`] from a single task (so every decision sees one consistent
//! state), and writes Service status, the pool annotation, events and pool status.
//!
//! Order at start: nothing is written until every watch has listed its objects once;
//! then the configuration is built, every address already in Service status is
//! restored, and only then are Services allocated. Writes for different Services run
//! concurrently; writes for one Service stay in order.
//!
//! A standby replica (see [`leader`]) runs the same watches and keeps the same caches
//! but decides and writes nothing; when it becomes leader it starts from its caches
//! as a fresh process would, without listing again.

pub mod leader;
pub mod metrics;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrolb_config::{Config, ConfigError, ObjectRef, annotations, crd};
use ferrolb_k8s::events::{Event as KEvent, EventType, Recorder, Reporter};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::engine::{Decision, Engine, ServiceKey, ServiceView};
use ferrolb_k8s::stores::ConfigStores;
use ferrolb_k8s::watch::{ConfigEvent, config_streams, watch_stream};
use metrics::{Metrics, ReasonLabel};

/// What the controller is configured with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of the configuration (ConfigMap and CRDs).
    pub namespace: String,
    /// Name of the legacy ConfigMap.
    pub configmap: String,
    pub lb_class: Option<String>,
    pub reporter: String,
    pub instance: String,
    /// `ipMode` written into each `status.loadBalancer.ingress[]` entry.
    pub ip_mode: IpMode,
}

/// How traffic reaches an address, as `status.loadBalancer.ingress[].ipMode` tells
/// kube-proxy. `Vip` (the default) is written as no `ipMode` at all: the API server
/// defaults it to `VIP` (Kubernetes 1.30+) and clusters older than that reject nothing.
/// `Proxy` tells kube-proxy not to bind the address locally, for a load balancer that
/// forwards to the nodes instead of delivering packets with the address as destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IpMode {
    #[default]
    Vip,
    Proxy,
}

impl IpMode {
    /// The value written to the API (`None`: leave the field out).
    pub fn written(self) -> Option<&'static str> {
        match self {
            IpMode::Vip => None,
            IpMode::Proxy => Some("Proxy"),
        }
    }

    /// Whether an entry's `ipMode` as read back from the API already says this mode
    /// (an absent field means VIP, as the API server's default does).
    pub fn matches(self, read: Option<&str>) -> bool {
        match self {
            IpMode::Vip => matches!(read, None | Some("VIP")),
            IpMode::Proxy => read == Some("Proxy"),
        }
    }
}

impl std::str::FromStr for IpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vip" => Ok(IpMode::Vip),
            "proxy" => Ok(IpMode::Proxy),
            _ => Err(format!("unknown ipMode {s:?} (expected VIP or Proxy)")),
        }
    }
}

/// How `status.loadBalancer.ingress` as read differs from `want` written with `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusDiff {
    Same,
    /// The addresses are right, some `ipMode` is not.
    ModeOnly,
    Addresses,
}

fn status_diff(
    current: &[IpAddr],
    modes: &[Option<String>],
    want: &[IpAddr],
    mode: IpMode,
) -> StatusDiff {
    if current != want {
        StatusDiff::Addresses
    } else if modes.iter().all(|m| mode.matches(m.as_deref())) {
        StatusDiff::Same
    } else {
        StatusDiff::ModeOnly
    }
}

/// The `status.loadBalancer.ingress` entries for `ips`.
fn ingress_entries(ips: &[IpAddr], mode: IpMode) -> Vec<serde_json::Value> {
    ips.iter()
        .map(|ip| match mode.written() {
            None => json!({ "ip": ip.to_string() }),
            Some(m) => json!({ "ip": ip.to_string(), "ipMode": m }),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("a watch stream ended")]
    StreamEnded,
    #[error("lost the leader lease")]
    LostLease,
}

/// `/readyz`: the caches are synced and the replica either leads (and has restored and
/// started allocating) or is a standby that reaches the API and could take over.
fn readiness(synced: bool, role: leader::Role, started: bool) -> bool {
    synced
        && match role {
            leader::Role::Leader => started,
            leader::Role::Standby { healthy } => healthy,
            leader::Role::Lost => false,
        }
}

enum Input {
    Svc(WEvent<Service>),
    Ns(WEvent<Namespace>),
    Config(ConfigEvent),
}

/// A Service as the loop last saw it.
#[derive(Debug, Clone)]
struct Known {
    view: ServiceView,
    /// `ipMode` of each entry of `view.status_ips`.
    ip_modes: Vec<Option<String>>,
    uid: Option<String>,
    pool_annotation: Option<String>,
}

/// A write to one Service.
#[derive(Debug, Default)]
struct WriteJob {
    status: Option<Vec<IpAddr>>,
    pool_annotation: Option<Option<String>>,
    events: Vec<(EventType, &'static str, String)>,
}

struct Loop {
    client: Client,
    opts: Options,
    engine: Engine,
    stores: ConfigStores,
    services: BTreeMap<ServiceKey, Known>,
    svc_buffer: Option<BTreeMap<ServiceKey, Known>>,
    svc_synced: bool,
    ns_synced: bool,
    ns_buffer: Option<BTreeMap<String, BTreeMap<String, String>>>,
    started: bool,
    /// Last failure message per Service, so repeated resyncs do not repeat events.
    last_failure: BTreeMap<ServiceKey, String>,
    /// Last configuration errors reported, so they are reported once per change.
    last_config_errors: Vec<ConfigError>,
    pool_status_written: BTreeMap<String, crd::IPAddressPoolStatus>,
    pools_dirty: bool,
    inflight: BTreeMap<ServiceKey, JoinHandle<()>>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    role: leader::Role,
    /// Services whose status was rewritten for `ipMode` alone (see `status_needs_write`).
    mode_rewritten: BTreeSet<ServiceKey>,
    ip_mode_dropped_warned: bool,
}

/// Runs until `shutdown` turns true, a watch ends for good or `role` turns
/// [`Lost`](leader::Role::Lost). Decides and writes only while `role` says
/// [`Leader`](leader::Role::Leader).
pub async fn run(
    client: Client,
    opts: Options,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
    mut role: watch::Receiver<leader::Role>,
) -> Result<(), RunError> {
    let ns = opts.namespace.clone();
    let cfgw = watcher::Config::default();
    let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    inputs.push(watch_stream(
        Api::<Service>::all(client.clone()),
        cfgw.clone(),
        Input::Svc,
    ));
    inputs.push(watch_stream(
        Api::<Namespace>::all(client.clone()),
        cfgw.clone(),
        Input::Ns,
    ));
    inputs.extend(config_streams(&client, &ns, &opts.configmap, Input::Config));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: opts.reporter.clone(),
            instance: Some(opts.instance.clone()),
        },
    );
    let mut lp = Loop {
        engine: Engine::new(opts.lb_class.clone()),
        client,
        opts,
        stores: ConfigStores::default(),
        services: BTreeMap::new(),
        svc_buffer: None,
        svc_synced: false,
        ns_synced: false,
        ns_buffer: None,
        started: false,
        last_failure: BTreeMap::new(),
        last_config_errors: Vec::new(),
        pool_status_written: BTreeMap::new(),
        pools_dirty: false,
        inflight: BTreeMap::new(),
        recorder,
        metrics,
        ready,
        role: *role.borrow_and_update(),
        mode_rewritten: BTreeSet::new(),
        ip_mode_dropped_warned: false,
    };
    lp.on_role(lp.role);
    let mut role_open = true;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let result = loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break Ok(()),
            _ = tick.tick() => lp.on_tick().await,
            changed = role.changed(), if role_open => match changed {
                Ok(()) => {
                    let r = *role.borrow_and_update();
                    lp.on_role(r);
                }
                // The elector is gone: the role stays what it last was.
                Err(_) => role_open = false,
            },
            input = inputs.next() => match input {
                Some(i) => lp.on_input(i),
                None => break Err(RunError::StreamEnded),
            },
        }
        if lp.role == leader::Role::Lost {
            break Err(RunError::LostLease);
        }
        lp.update_ready();
    };
    lp.ready.store(false, Ordering::Relaxed);
    for (_, h) in std::mem::take(&mut lp.inflight) {
        if matches!(result, Err(RunError::LostLease)) {
            // Another replica may act already: write nothing more.
            h.abort();
        } else {
            // Let writes already decided reach the API before exiting (and before the
            // caller releases the lease).
            let _ = h.await;
        }
    }
    result
}

impl Loop {
    fn on_input(&mut self, input: Input) {
        self.metrics.updates.inc();
        let config_changed = match input {
            Input::Svc(ev) => {
                self.on_service(ev);
                false
            }
            Input::Ns(ev) => {
                self.on_namespace(ev);
                false
            }
            Input::Config(ev) => self.stores.apply_event(ev),
        };
        if !self.started {
            self.maybe_start();
            return;
        }
        if config_changed {
            self.reload_config();
        }
    }

    fn synced(&self) -> bool {
        self.svc_synced && self.ns_synced && self.stores.synced()
    }

    fn maybe_start(&mut self) {
        if !self.started && self.role == leader::Role::Leader && self.synced() {
            self.start();
        }
    }

    fn update_ready(&self) {
        self.ready.store(
            readiness(self.synced(), self.role, self.started),
            Ordering::Relaxed,
        );
    }

    fn on_role(&mut self, role: leader::Role) {
        if role != self.role {
            info!(?role, "leader election");
        }
        self.role = role;
        self.metrics
            .is_leader
            .set(i64::from(role == leader::Role::Leader));
        self.maybe_start();
        self.update_ready();
    }

    fn start(&mut self) {
        self.started = true;
        self.reload_config_quiet();
        let views: Vec<ServiceView> = self.services.values().map(|k| k.view.clone()).collect();
        for (key, why) in self.engine.restore(&views) {
            warn!(service = %key, reason = %why, "address in status not restored");
        }
        info!(services = views.len(), "initial state restored, allocating");
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for k in keys {
            self.sync(&k);
        }
        self.metrics.observe(&self.engine);
    }

    fn on_namespace(&mut self, ev: WEvent<Namespace>) {
        let mut changed_ns = Vec::new();
        match ev {
            WEvent::Init => self.ns_buffer = Some(BTreeMap::new()),
            WEvent::InitApply(n) => {
                self.ns_buffer
                    .get_or_insert_default()
                    .insert(n.name_any(), n.labels().clone());
            }
            WEvent::InitDone => {
                for (name, labels) in self.ns_buffer.take().unwrap_or_default() {
                    self.engine.set_namespace_labels(&name, labels);
                    changed_ns.push(name);
                }
                self.ns_synced = true;
            }
            WEvent::Apply(n) => {
                self.engine
                    .set_namespace_labels(&n.name_any(), n.labels().clone());
                changed_ns.push(n.name_any());
            }
            WEvent::Delete(n) => self.engine.remove_namespace(&n.name_any()),
        }
        if self.started {
            // Namespace selectors may now match: retry Services there that have nothing.
            let keys: Vec<ServiceKey> = self
                .services
                .keys()
                .filter(|k| changed_ns.contains(&k.namespace))
                .filter(|k| self.engine.allocator().addresses_of(k).is_empty())
                .cloned()
                .collect();
            for k in keys {
                self.sync(&k);
            }
        }
    }

    fn known(svc: &Service) -> Known {
        Known {
            view: view::view(svc),
            ip_modes: view::status_ip_modes(svc),
            uid: svc.uid(),
            pool_annotation: svc
                .annotations()
                .get(annotations::IP_ALLOCATED_FROM_POOL)
                .cloned(),
        }
    }

    fn on_service(&mut self, ev: WEvent<Service>) {
        match ev {
            WEvent::Init => self.svc_buffer = Some(BTreeMap::new()),
            WEvent::InitApply(s) => {
                self.svc_buffer
                    .get_or_insert_default()
                    .insert(view::key_of(&s), Self::known(&s));
            }
            WEvent::InitDone => {
                let new = self.svc_buffer.take().unwrap_or_default();
                let gone: Vec<ServiceKey> = self
                    .services
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect();
                self.services = new;
                self.svc_synced = true;
                if self.started {
                    for k in gone {
                        self.remove_service(&k);
                    }
                    let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
                    for k in keys {
                        self.sync(&k);
                    }
                }
            }
            WEvent::Apply(s) => {
                let key = view::key_of(&s);
                self.services.insert(key.clone(), Self::known(&s));
                if self.started {
                    self.sync(&key);
                }
            }
            WEvent::Delete(s) => {
                let key = view::key_of(&s);
                self.services.remove(&key);
                if self.started {
                    self.remove_service(&key);
                }
            }
        }
    }

    fn remove_service(&mut self, key: &ServiceKey) {
        let released = self.engine.remove(key);
        self.last_failure.remove(key);
        self.mode_rewritten.remove(key);
        if !released.is_empty() {
            info!(service = %key, ?released, "service deleted, addresses released");
            self.pools_dirty = true;
        }
    }

    fn reload_config_quiet(&mut self) {
        let (src, mut errors) = self.stores.sources(&self.opts.configmap);
        match Config::build(&src) {
            Ok(cfg) if errors.is_empty() => {
                let evicted = self.engine.set_config(cfg);
                self.report_config_errors(Vec::new());
                self.metrics.config_loaded.set(1);
                self.metrics.config_stale.set(0);
                for (key, ips) in evicted {
                    if let Some(k) = self.services.get(&key) {
                        let note = format!(
                            "current IP(s) {:?} not allowed by config, clearing",
                            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>()
                        );
                        warn!(service = %key, ?ips, "addresses left every pool, reallocating");
                        self.spawn_write(
                            &key,
                            k.uid.clone(),
                            WriteJob {
                                events: vec![(EventType::Warning, "ClearAssignment", note)],
                                ..Default::default()
                            },
                        );
                    }
                }
                self.pools_dirty = true;
            }
            Ok(_) => self.report_config_errors(errors),
            Err(e) => {
                errors.extend(e.0);
                self.report_config_errors(errors);
            }
        }
    }

    fn reload_config(&mut self) {
        self.reload_config_quiet();
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for k in keys {
            self.sync(&k);
        }
        self.metrics.observe(&self.engine);
    }

    /// Logs, counts and posts events for configuration errors; the last good
    /// configuration stays in force.
    fn report_config_errors(&mut self, mut errors: Vec<ConfigError>) {
        errors.sort();
        self.metrics
            .config_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        if errors.is_empty() {
            self.last_config_errors.clear();
            return;
        }
        self.metrics.config_stale.set(1);
        if errors == self.last_config_errors {
            return;
        }
        let in_force = self.engine.config().is_some();
        for e in &errors {
            error!(object = %e.object, field = %e.field, message = %e.message,
                   last_good_in_force = in_force, "configuration rejected");
            let reference = self.object_reference(&e.object);
            let recorder = self.recorder.clone();
            let note = format!(
                "{}: {} ({})",
                e.field,
                e.message,
                if in_force {
                    "the last valid configuration stays in force"
                } else {
                    "no valid configuration is loaded yet"
                }
            );
            tokio::spawn(async move {
                let ev = KEvent {
                    type_: EventType::Warning,
                    reason: "InvalidConfiguration".into(),
                    note: Some(truncate(note)),
                    action: "LoadConfiguration".into(),
                    secondary: None,
                };
                if let Err(err) = recorder.publish(&ev, &reference).await {
                    warn!(error = %err, "cannot post event");
                }
            });
        }
        self.last_config_errors = errors;
    }

    fn object_reference(&self, o: &ObjectRef) -> ObjectReference {
        let (api_version, kind, name) = match o {
            ObjectRef::Resource { kind, name } => {
                let v = if kind == "BGPPeer" {
                    "v1beta2"
                } else {
                    "v1beta1"
                };
                (format!("{}/{v}", crd::GROUP), kind.clone(), name.clone())
            }
            ObjectRef::Legacy { configmap, .. } | ObjectRef::ConfigMap { configmap } => (
                "v1".into(),
                "ConfigMap".into(),
                configmap
                    .rsplit('/')
                    .next()
                    .unwrap_or(configmap)
                    .to_string(),
            ),
            ObjectRef::Service { name, .. } => ("v1".into(), "Service".into(), name.clone()),
        };
        ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind),
            name: Some(name),
            namespace: Some(self.opts.namespace.clone()),
            ..Default::default()
        }
    }

    fn sync(&mut self, key: &ServiceKey) {
        let Some(known) = self.services.get(key).cloned() else {
            return;
        };
        let decision = self.engine.sync(&known.view);
        let mut job = WriteJob::default();
        match decision {
            Decision::Ignore => return,
            Decision::Clear { released } => {
                self.last_failure.remove(key);
                if !released.is_empty() {
                    self.pools_dirty = true;
                }
                if !known.view.status_ips.is_empty() && !released.is_empty() {
                    job.status = Some(vec![]);
                }
                if known.pool_annotation.is_some() {
                    job.pool_annotation = Some(None);
                }
            }
            Decision::Assign {
                ips,
                pool,
                changed,
                warnings,
            } => {
                self.last_failure.remove(key);
                if self.status_needs_write(key, &known, &ips) {
                    job.status = Some(ips.clone());
                }
                if known.pool_annotation.as_deref() != Some(pool.as_str()) {
                    job.pool_annotation = Some(Some(pool.clone()));
                }
                if changed {
                    self.pools_dirty = true;
                    info!(service = %key, ?ips, %pool, "addresses assigned");
                    let shown: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                    job.events.push((
                        EventType::Normal,
                        "IPAllocated",
                        format!("Assigned IP {shown:?}"),
                    ));
                    for w in warnings {
                        job.events.push((EventType::Warning, "DeprecatedField", w));
                    }
                }
            }
            Decision::Fail {
                reason,
                message,
                kept,
                pool,
            } => {
                use crate::engine::FailReason;
                if reason != FailReason::NoConfig && self.status_needs_write(key, &known, &kept) {
                    job.status = Some(kept.clone());
                    self.pools_dirty = true;
                }
                if reason != FailReason::NoConfig
                    && kept.is_empty()
                    && known.pool_annotation.is_some()
                {
                    job.pool_annotation = Some(None);
                } else if let Some(p) =
                    pool.filter(|p| known.pool_annotation.as_ref() != Some(p) && !kept.is_empty())
                {
                    job.pool_annotation = Some(Some(p));
                }
                if self.last_failure.get(key) != Some(&message) {
                    warn!(service = %key, reason = reason.as_str(), %message, ?kept, "allocation failed");
                    self.metrics
                        .allocation_failures
                        .get_or_create(&ReasonLabel {
                            reason: reason.as_str().into(),
                        })
                        .inc();
                    let kept_note = if kept.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; keeping {:?}",
                            kept.iter().map(|i| i.to_string()).collect::<Vec<_>>()
                        )
                    };
                    job.events.push((
                        EventType::Warning,
                        "AllocationFailed",
                        format!("Failed to allocate IP for \"{key}\": {message}{kept_note}"),
                    ));
                    self.last_failure.insert(key.clone(), message);
                }
            }
        }
        if job.status.is_some() || job.pool_annotation.is_some() || !job.events.is_empty() {
            // What we are about to write is what the next event will show; recording it
            // now keeps a quick resync from writing the same thing twice.
            if let Some(k) = self.services.get_mut(key) {
                if let Some(s) = &job.status {
                    k.view.status_ips = s.clone();
                    k.ip_modes = vec![self.opts.ip_mode.written().map(String::from); s.len()];
                }
                if let Some(a) = &job.pool_annotation {
                    k.pool_annotation = a.clone();
                }
            }
            self.spawn_write(key, known.uid, job);
        }
    }

    /// Whether the status must be written to show `want`. A rewrite for `ipMode` alone
    /// is made once per Service: an API server that drops the field (Kubernetes before
    /// 1.30, or the LoadBalancerIPMode gate off) would otherwise be written forever.
    fn status_needs_write(&mut self, key: &ServiceKey, known: &Known, want: &[IpAddr]) -> bool {
        match status_diff(
            &known.view.status_ips,
            &known.ip_modes,
            want,
            self.opts.ip_mode,
        ) {
            StatusDiff::Same => false,
            StatusDiff::Addresses => true,
            StatusDiff::ModeOnly if self.mode_rewritten.insert(key.clone()) => true,
            StatusDiff::ModeOnly => {
                if !self.ip_mode_dropped_warned {
                    self.ip_mode_dropped_warned = true;
                    warn!(service = %key, ip_mode = ?self.opts.ip_mode,
                          "status.loadBalancer.ingress[].ipMode is not kept by the API server \
                           (before Kubernetes 1.30?); not writing it again");
                }
                false
            }
        }
    }

    fn spawn_write(&mut self, key: &ServiceKey, uid: Option<String>, job: WriteJob) {
        let prev = self.inflight.remove(key);
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let metrics = self.metrics.clone();
        let key2 = key.clone();
        let ip_mode = self.opts.ip_mode;
        let h = tokio::spawn(async move {
            if let Some(p) = prev {
                let _ = p.await;
            }
            if let Err(e) = write(client, recorder, &key2, uid, job, ip_mode).await {
                metrics.update_errors.inc();
                warn!(service = %key2, error = %e, "write to the API failed");
            }
        });
        self.inflight.insert(key.clone(), h);
    }

    async fn on_tick(&mut self) {
        self.inflight.retain(|_, h| !h.is_finished());
        if !self.started || !self.pools_dirty {
            return;
        }
        self.pools_dirty = false;
        self.metrics.observe(&self.engine);
        self.write_pool_status().await;
    }

    /// IPAddressPool status: assigned/available per family, for pools defined as CRDs.
    async fn write_pool_status(&mut self) {
        let crd_pools: BTreeSet<String> =
            self.stores.pools.values().map(|p| p.name_any()).collect();
        let api: Api<crd::IPAddressPool> =
            Api::namespaced(self.client.clone(), &self.opts.namespace);
        for name in crd_pools {
            let stat = |f| self.engine.allocator().pool_stats(&name, f);
            let (Some(v4), Some(v6)) = (
                stat(crate::allocator::Family::V4),
                stat(crate::allocator::Family::V6),
            ) else {
                continue;
            };
            let sat = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
            let status = crd::IPAddressPoolStatus {
                assigned_ipv4: sat(v4.in_use),
                assigned_ipv6: sat(v6.in_use),
                available_ipv4: sat(v4.free()),
                available_ipv6: sat(v6.free()),
            };
            if self.pool_status_written.get(&name) == Some(&status) {
                continue;
            }
            let patch = json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.pool_status_written.insert(name, status);
                }
                Err(e) => {
                    self.metrics.update_errors.inc();
                    debug!(pool = %name, error = %e, "pool status not written");
                }
            }
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

async fn write(
    client: Client,
    recorder: Recorder,
    key: &ServiceKey,
    uid: Option<String>,
    job: WriteJob,
    ip_mode: IpMode,
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client, &key.namespace);
    if let Some(ips) = &job.status {
        let ingress = ingress_entries(ips, ip_mode);
        let patch = if ingress.is_empty() {
            json!({ "status": { "loadBalancer": { "ingress": null } } })
        } else {
            json!({ "status": { "loadBalancer": { "ingress": ingress } } })
        };
        api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(pool) = &job.pool_annotation {
        let patch =
            json!({ "metadata": { "annotations": { annotations::IP_ALLOCATED_FROM_POOL: pool } } });
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        uid,
        ..Default::default()
    };
    for (type_, reason, note) in job.events {
        let ev = KEvent {
            type_,
            reason: reason.into(),
            note: Some(truncate(note)),
            action: "Allocate".into(),
            secondary: None,
        };
        recorder.publish(&ev, &reference).await?;
    }
    Ok(())
}

#[cfg(test)]
mod readiness_tests {
    use super::leader::Role;
    use super::readiness;

    #[test]
    fn a_synced_healthy_standby_is_ready() {
        assert!(readiness(true, Role::Standby { healthy: true }, false));
        assert!(!readiness(true, Role::Standby { healthy: false }, false));
        assert!(!readiness(false, Role::Standby { healthy: true }, false));
    }

    #[test]
    fn a_leader_is_ready_once_it_allocates() {
        assert!(readiness(true, Role::Leader, true));
        assert!(!readiness(true, Role::Leader, false));
        assert!(!readiness(false, Role::Leader, false));
        assert!(!readiness(true, Role::Lost, true));
    }
}

#[cfg(test)]
mod ip_mode_tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn parses_the_kubernetes_spellings() {
        assert_eq!("VIP".parse::<IpMode>(), Ok(IpMode::Vip));
        assert_eq!("Proxy".parse::<IpMode>(), Ok(IpMode::Proxy));
        assert_eq!("proxy".parse::<IpMode>(), Ok(IpMode::Proxy));
        assert!("Tunnel".parse::<IpMode>().is_err());
        assert_eq!(IpMode::default(), IpMode::Vip);
    }

    #[test]
    fn entries_carry_ip_mode_only_for_proxy() {
        let a = ips(&["198.51.100.1", "2001:db8::1"]);
        assert_eq!(
            ingress_entries(&a, IpMode::Vip),
            [json!({"ip": "198.51.100.1"}), json!({"ip": "2001:db8::1"})]
        );
        assert_eq!(
            ingress_entries(&a, IpMode::Proxy),
            [
                json!({"ip": "198.51.100.1", "ipMode": "Proxy"}),
                json!({"ip": "2001:db8::1", "ipMode": "Proxy"})
            ]
        );
    }

    #[test]
    fn status_read_back_with_the_server_default_is_current() {
        let a = ips(&["198.51.100.1"]);
        let d = |m: &[Option<&str>], want: &[IpAddr], mode| {
            let m: Vec<Option<String>> = m.iter().map(|x| x.map(String::from)).collect();
            status_diff(&a, &m, want, mode)
        };
        // VIP mode writes no ipMode; the API server fills in "VIP": no rewrite either way.
        assert_eq!(d(&[None], &a, IpMode::Vip), StatusDiff::Same);
        assert_eq!(d(&[Some("VIP")], &a, IpMode::Vip), StatusDiff::Same);
        // A status written in Proxy mode is rewritten when the flag goes back to VIP.
        assert_eq!(d(&[Some("Proxy")], &a, IpMode::Vip), StatusDiff::ModeOnly);
        // After a restart with Proxy, existing VIP entries are rewritten (same
        // addresses, so nothing moves); once they say Proxy, nothing more is written.
        assert_eq!(d(&[Some("VIP")], &a, IpMode::Proxy), StatusDiff::ModeOnly);
        assert_eq!(d(&[None], &a, IpMode::Proxy), StatusDiff::ModeOnly);
        assert_eq!(d(&[Some("Proxy")], &a, IpMode::Proxy), StatusDiff::Same);
        // Different addresses are always a write, whatever the mode.
        assert_eq!(
            d(&[Some("Proxy")], &[], IpMode::Proxy),
            StatusDiff::Addresses
        );
        let b = ips(&["198.51.100.1", "2001:db8::1"]);
        assert_eq!(
            d(&[Some("Proxy")], &b, IpMode::Proxy),
            StatusDiff::Addresses
        );
        assert_eq!(status_diff(&[], &[], &[], IpMode::Proxy), StatusDiff::Same);
    }
}

#[cfg(test)]
mod loop_tests {
    use super::*;
    use ferrolb_config::load;

    /// A started leader loop with one pool; its API writes go nowhere (a closed local
    /// port), the test looks at what the loop decided to write.
    fn started_loop(ip_mode: IpMode) -> Loop {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let yaml = "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [198.51.100.10-198.51.100.12]\n";
        let l = load::from_yaml(yaml).unwrap();
        let mut engine = Engine::new(None);
        engine.set_config(Config::build(&l.sources).unwrap());
        let opts = Options {
            namespace: NS.into(),
            configmap: "config".into(),
            lb_class: None,
            reporter: "ferrolb-controller".into(),
            instance: "test".into(),
            ip_mode,
        };
        Loop {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "ferrolb-controller".into(),
                    instance: None,
                },
            ),
            client,
            opts,
            engine,
            stores: ConfigStores::default(),
            services: BTreeMap::new(),
            svc_buffer: None,
            svc_synced: true,
            ns_synced: true,
            ns_buffer: None,
            started: true,
            last_failure: BTreeMap::new(),
            last_config_errors: Vec::new(),
            pool_status_written: BTreeMap::new(),
            pools_dirty: false,
            inflight: BTreeMap::new(),
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
            role: leader::Role::Leader,
            mode_rewritten: BTreeSet::new(),
            ip_mode_dropped_warned: false,
        }
    }

    const NS: &str = "metallb-system";

    fn service(ingress: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"metallb.io/ip-allocated-from-pool": "p"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": ingress}}
        }))
        .unwrap()
    }

    /// Feeds `svc` as a watch event; true if the loop decided to write its status.
    fn status_written(lp: &mut Loop, svc: Service) -> bool {
        let key = view::key_of(&svc);
        let before = Loop::known(&svc);
        lp.on_service(WEvent::Apply(svc));
        let after = &lp.services[&key];
        after.ip_modes != before.ip_modes || after.view.status_ips != before.view.status_ips
    }

    fn restore(lp: &mut Loop, svc: &Service) {
        let known = Loop::known(svc);
        assert!(lp.engine.restore(&[known.view]).is_empty());
    }

    #[tokio::test]
    async fn vip_read_back_as_the_server_default_is_not_rewritten() {
        let mut lp = started_loop(IpMode::Vip);
        let svc = service(json!([{"ip": "198.51.100.10", "ipMode": "VIP"}]));
        restore(&mut lp, &svc);
        assert!(!status_written(&mut lp, svc.clone()));
        assert!(!status_written(&mut lp, svc));
        assert_eq!(
            lp.engine
                .allocator()
                .addresses_of(&ServiceKey::new("default", "web")),
            ["198.51.100.10".parse::<IpAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn proxy_mode_rewrites_a_restored_status_once_and_keeps_the_address() {
        let mut lp = started_loop(IpMode::Proxy);
        let vip = service(json!([{"ip": "198.51.100.10", "ipMode": "VIP"}]));
        restore(&mut lp, &vip);
        // The restart with --lb-ip-mode Proxy: the same address, now with Proxy.
        assert!(status_written(&mut lp, vip.clone()));
        let k = &lp.services[&ServiceKey::new("default", "web")];
        assert_eq!(
            k.view.status_ips,
            ["198.51.100.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(k.ip_modes, [Some("Proxy".to_string())]);
        // The API server shows it back: nothing more to write.
        let proxy = service(json!([{"ip": "198.51.100.10", "ipMode": "Proxy"}]));
        assert!(!status_written(&mut lp, proxy));
        // An API server that drops the field (before 1.30): written once, not forever.
        lp.mode_rewritten.clear();
        assert!(status_written(&mut lp, vip.clone()));
        assert!(!status_written(&mut lp, vip.clone()));
        assert!(!status_written(&mut lp, vip));
        for (_, h) in std::mem::take(&mut lp.inflight) {
            h.abort();
        }
    }
}
