//! The speaker's Kubernetes and network side: watches Services, EndpointSlices, Nodes,
//! the configuration and the membership Secret; runs the membership over UDP on the
//! node's InternalIP; feeds a [`Driver`] from a single task so that every election sees
//! one consistent state; and carries out what follows a change in the led set
//! (`nodeAssigned` events, ServiceL2Status objects, metrics), and reports other hosts
//! claiming a led address ([`conflicts`]: log, metric, `DuplicateAnnouncer` events).
//!
//! The failover path is datagram or timer -> membership -> election -> `set_leading`,
//! all inside this task with no API round trip; the API writes are queued after it
//! ([`writes`]).
//!
//! ServiceL2Status: one object per Service (in the Service's namespace, MetalLB's
//! labels), written by the node that leads the Service's address. A node taking over
//! rewrites it with its own name, so a failed node leaves nothing stale; a node that
//! stops leading deletes it only while it still names that node.
//!
//! Without the membership Secret (or with no `secretkey` in it) the speaker logs an
//! error, reports not ready on `/readyz` and announces nothing: without a key anyone on
//! the network could take part in the election.

pub mod logonly;
pub mod metrics;
pub mod view;
pub mod writes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrolb_config::crd::{InterfaceInfo, MetalLBServiceL2Status, ServiceL2Status};
use ferrolb_config::{Config, ConfigError};
use ferrolb_k8s::events::{Event as KEvent, EventType, Recorder, Reporter};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::announce::Announcer;
use crate::decide::driver::{self, Driver, KeyChange, Transition};
use crate::decide::{conflicts, pace, state};
use crate::membership::{self, Key};
use crate::nat::{self, NatTable, worker::NatHandle};
use ferrolb_k8s::stores::ConfigStores;
use ferrolb_k8s::watch::{ConfigEvent, config_streams, watch_stream};
use metrics::{AnnouncedLabel, IpLabel, Metrics};
use state::ServiceKey;

/// Key of the membership key in the Secret (MetalLB's name).
pub const SECRET_KEY: &str = "secretkey";
/// Labels on ServiceL2Status objects (MetalLB's names).
pub const L2_NODE_LABEL: &str = "metallb.io/node";
pub const L2_SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
pub const L2_SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";
const FIELD_MANAGER: &str = "ferrolb-speaker";
/// How long a stopping speaker waits for its NodePort DNAT table to be removed.
const NAT_STOP_WAIT: Duration = Duration::from_secs(3);
/// Reason of the Warning event on a led Service whose ports have no nodePort while
/// `--nodeport-dnat` is on.
pub const NO_NODE_PORT_REASON: &str = "NoNodePortForDNAT";

/// What the speaker is configured with.
#[derive(Clone, Debug)]
pub struct Options {
    pub node_name: String,
    /// Namespace of the configuration and of the membership Secret.
    pub namespace: String,
    /// Name of the legacy ConfigMap.
    pub configmap: String,
    pub memberlist_secret: String,
    pub memberlist_port: u16,
    pub lb_class: Option<String>,
    pub membership: membership::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("a watch stream ended")]
    StreamEnded,
}

// One event moves through the loop at a time; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Input {
    Svc(WEvent<Service>),
    Slice(WEvent<EndpointSlice>),
    Node(WEvent<Node>),
    Secret(WEvent<Secret>),
    L2Status(WEvent<ServiceL2Status>),
    Config(ConfigEvent),
}

/// Objects of a namespaced kind by `namespace/name`, each kept only as the compact
/// projection `P` the speaker reads (see [`view`]: no managedFields, annotations or
/// fields it never looks at; objects it does not handle are not kept at all), replaced
/// whole on every re-list. With 1,000 Services and their EndpointSlices, whole objects
/// were most of the speaker's memory.
#[derive(Debug)]
struct NsStore<P> {
    objects: BTreeMap<(String, String), P>,
    buffer: Option<BTreeMap<(String, String), P>>,
    synced: bool,
}

impl<P> Default for NsStore<P> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            buffer: None,
            synced: false,
        }
    }
}

impl<P: PartialEq> NsStore<P> {
    fn id<K: ResourceExt>(o: &K) -> (String, String) {
        (o.namespace().unwrap_or_default(), o.name_any())
    }

    /// Applies one watcher event, keeping `project(object)` (nothing when `None`); true
    /// when the visible contents changed (an update touching nothing projected, such as
    /// a Node heartbeat, changes nothing).
    fn apply<K: ResourceExt>(&mut self, ev: WEvent<K>, project: impl Fn(&K) -> Option<P>) -> bool {
        match ev {
            WEvent::Init => {
                self.buffer = Some(BTreeMap::new());
                false
            }
            WEvent::InitApply(o) => {
                if let Some(p) = project(&o) {
                    self.buffer.get_or_insert_default().insert(Self::id(&o), p);
                }
                false
            }
            WEvent::InitDone => {
                let new = self.buffer.take().unwrap_or_default();
                let changed = !self.synced || new != self.objects;
                self.objects = new;
                self.synced = true;
                changed
            }
            WEvent::Apply(o) => match project(&o) {
                Some(p) => {
                    let id = Self::id(&o);
                    if self.objects.get(&id) == Some(&p) {
                        return false;
                    }
                    self.objects.insert(id, p);
                    true
                }
                None => self.objects.remove(&Self::id(&o)).is_some(),
            },
            WEvent::Delete(o) => self.objects.remove(&Self::id(&o)).is_some(),
        }
    }
}

/// What API inputs not acted on yet changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Changes {
    /// Anything eligibility reads (Services, EndpointSlices, Nodes).
    world: bool,
    /// A configuration object.
    config: bool,
    /// A Node (peers and the membership socket's address).
    nodes: bool,
    /// The membership Secret.
    key: bool,
}

impl std::ops::BitOrAssign for Changes {
    fn bitor_assign(&mut self, o: Self) {
        self.world |= o.world;
        self.config |= o.config;
        self.nodes |= o.nodes;
        self.key |= o.key;
    }
}

/// Why the membership Secret gives no key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyProblem {
    /// No Secret, or no non-empty `secretkey` in it.
    Missing,
    /// The bytes are not a usable key (the error says why).
    Unusable(String),
}

/// A ServiceL2Status this node wants to exist (Some) or not (None).
type L2Job = Option<MetalLBServiceL2Status>;

/// An event to publish and the object it is about.
struct EventJob {
    event: KEvent,
    reference: ObjectReference,
}

type Writes = writes::Queue<Box<EventJob>, L2Job>;

/// Carries out the queued API writes ([`writes`]).
struct ApiWriter {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    node: String,
}

impl writes::Execute<Box<EventJob>, L2Job> for ApiWriter {
    async fn run(&self, work: writes::Work<Box<EventJob>, L2Job>) {
        match work {
            writes::Work::Event(key, job) => {
                if let Err(e) = self.recorder.publish(&job.event, &job.reference).await {
                    self.metrics.update_errors.inc();
                    warn!(service = %key, error = %e, "cannot post event");
                }
            }
            writes::Work::Status(key, job) => {
                if let Err(e) = write_l2_status(self.client.clone(), &self.node, &key, job).await {
                    self.metrics.update_errors.inc();
                    warn!(service = %key, error = %e, "ServiceL2Status write failed");
                }
            }
        }
    }
}

struct Loop<A> {
    opts: Options,
    driver: Driver<A>,
    stores: ConfigStores,
    /// Handled Services only, as [`view::compact_service`].
    services: NsStore<view::SvcEntry>,
    slices: NsStore<(ServiceKey, state::SliceReadiness)>,
    nodes: NsStore<view::NodeEntry>,
    /// The membership key bytes of the Secret (`None`: no `secretkey` in it).
    secrets: NsStore<Option<Vec<u8>>>,
    /// This node's ServiceL2Status objects' status.
    l2_status: NsStore<MetalLBServiceL2Status>,
    started: bool,
    /// The key bytes in force, so that a resync of the same Secret keeps the membership.
    key_bytes: Option<Vec<u8>>,
    /// The Secret's key bytes last handled (usable or not), so that a resync of the
    /// same Secret does nothing.
    key_seen: Option<Option<Vec<u8>>>,
    /// Why no key is in force, as last logged.
    key_problem: Option<KeyProblem>,
    socket: Option<Arc<UdpSocket>>,
    bound_to: Option<SocketAddr>,
    last_config_errors: Vec<ConfigError>,
    /// ServiceL2Status contents last sent per Service, so unchanged ones are not rewritten.
    l2_sent: BTreeMap<ServiceKey, MetalLBServiceL2Status>,
    /// Events and ServiceL2Status writes, off the loop and bounded (see [`writes`]).
    writes: Writes,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    /// `--nodeport-dnat`: the table of this node's led addresses.
    nat: Option<NatHandle>,
    /// Led Services already warned about ports without a nodePort.
    nat_warned: BTreeSet<ServiceKey>,
    /// Led addresses already logged as of a family this node has no address of.
    nat_no_address: BTreeSet<std::net::IpAddr>,
    /// Rate limit of the duplicate-announcer events.
    conflict_events: conflicts::EventLimiter,
}

/// Objects per page when a watch lists Services, EndpointSlices and Nodes.
const LIST_PAGE_SIZE: u32 = 100;
/// API writes in flight at once (see [`writes`]): taking over hundreds of addresses at
/// once would otherwise open a connection per concurrent request, each with its TLS
/// buffers.
const API_WRITES_IN_FLIGHT: usize = 4;

/// Runs until `shutdown` turns true (then hands over gracefully) or a watch ends for
/// good. With `nat` (`--nodeport-dnat`), the led addresses' ports are forwarded to this
/// node's NodePorts (see [`crate::nat`]); the table is cleared at start and at the end.
pub async fn run<A: Announcer + 'static>(
    client: Client,
    opts: Options,
    announcer: A,
    nat: Option<Box<dyn NatTable>>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let ns = opts.namespace.clone();
    // Smaller pages than kube's 500 for the two kinds that scale with the number of
    // Services: a re-list holds one page of whole objects (and its JSON) at a time.
    let cfgw = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    inputs.push(watch_stream(
        Api::<Service>::all(client.clone()),
        cfgw.clone(),
        Input::Svc,
    ));
    inputs.push(watch_stream(
        Api::<EndpointSlice>::all(client.clone()),
        cfgw.clone(),
        Input::Slice,
    ));
    inputs.push(watch_stream(
        Api::<Node>::all(client.clone()),
        cfgw.clone(),
        Input::Node,
    ));
    inputs.push(watch_stream(
        Api::<Secret>::namespaced(client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={}", opts.memberlist_secret)),
        Input::Secret,
    ));
    inputs.push(watch_stream(
        Api::<ServiceL2Status>::all(client.clone()),
        watcher::Config::default().labels(&format!("{L2_NODE_LABEL}={}", opts.node_name)),
        Input::L2Status,
    ));
    inputs.extend(config_streams(&client, &ns, &opts.configmap, Input::Config));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(opts.node_name.clone()),
        },
    );
    let driver = Driver::new(
        &opts.node_name,
        opts.memberlist_port,
        opts.membership.clone(),
        announcer,
    );
    let writes = writes::Queue::start(
        API_WRITES_IN_FLIGHT,
        ApiWriter {
            client: client.clone(),
            recorder,
            metrics: metrics.clone(),
            node: opts.node_name.clone(),
        },
    );
    let mut lp = Loop {
        driver,
        opts,
        stores: ConfigStores::default(),
        services: NsStore::default(),
        slices: NsStore::default(),
        nodes: NsStore::default(),
        secrets: NsStore::default(),
        l2_status: NsStore::default(),
        started: false,
        key_bytes: None,
        key_seen: None,
        key_problem: None,
        socket: None,
        bound_to: None,
        last_config_errors: Vec::new(),
        l2_sent: BTreeMap::new(),
        writes,
        metrics,
        ready,
        nat: nat.map(NatHandle::start),
        nat_warned: BTreeSet::new(),
        nat_no_address: BTreeSet::new(),
        conflict_events: conflicts::EventLimiter::default(),
    };
    // API changes not acted on yet, and when they will be (see [`pace`]).
    let mut pending = Changes::default();
    let mut pace = pace::Pace::new(tokio::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = lp.driver.poll_timeout().map(tokio::time::Instant::from_std);
        let socket = lp.socket.clone();
        // Not biased: a flood of datagrams (forged ones included) must not starve the
        // membership timer or the API inputs.
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = recv(socket.as_deref(), &mut buf) => match r {
                Ok(n) => {
                    let t = lp.driver.handle_datagram(std::time::Instant::now(), &buf[..n]);
                    lp.after(t);
                }
                Err(e) => {
                    warn!(error = %e, "membership socket receive failed, rebinding");
                    lp.socket = None;
                    lp.bound_to = None;
                }
            },
            _ = sleep_until(deadline) => {
                let t = lp.driver.handle_timeout(std::time::Instant::now());
                lp.after(t);
            }
            input = inputs.next() => match input {
                Some(i) => {
                    pending |= lp.take_input(i);
                    if !lp.started {
                        // Starts as soon as every store has synced.
                        lp.react(std::mem::take(&mut pending)).await;
                    } else if pending != Changes::default() {
                        pace.changed(tokio::time::Instant::now());
                    }
                }
                None => {
                    if let Some(n) = lp.nat.take() {
                        n.stop(NAT_STOP_WAIT).await;
                    }
                    return Err(RunError::StreamEnded);
                }
            },
            _ = sleep_until(pace.due()) => {
                let began = tokio::time::Instant::now();
                lp.react(std::mem::take(&mut pending)).await;
                let end = tokio::time::Instant::now();
                pace.done(end, end - began);
            }
            _ = tick.tick() => lp.on_tick().await,
        }
    }
    lp.shutdown().await;
    Ok(())
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match socket {
        Some(s) => s.recv_from(buf).await.map(|(n, _)| n),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

impl<A: Announcer + 'static> Loop<A> {
    /// Applies one API input to the stores; what it changed.
    fn take_input(&mut self, input: Input) -> Changes {
        self.metrics.updates.inc();
        let mut c = Changes::default();
        match input {
            Input::Svc(ev) => {
                let lb_class = self.opts.lb_class.as_deref();
                c.world = self
                    .services
                    .apply(ev, |s| view::compact_service(s, lb_class));
            }
            Input::Slice(ev) => c.world = self.slices.apply(ev, view::slice),
            Input::Node(ev) => {
                c.nodes = self.nodes.apply(ev, |n| Some(view::compact_node(n)));
                c.world = c.nodes;
            }
            Input::Secret(ev) => {
                let key_bytes = |s: &Secret| {
                    Some(
                        s.data
                            .as_ref()
                            .and_then(|d| d.get(SECRET_KEY))
                            .map(|b| b.0.clone()),
                    )
                };
                c.key = self.secrets.apply(ev, key_bytes);
            }
            Input::L2Status(ev) => {
                self.l2_status.apply(ev, |o| o.status.clone());
            }
            Input::Config(ev) => c.config = self.stores.apply_event(ev),
        }
        c
    }

    /// Acts on the changes of the inputs taken since the last call: the decisions are
    /// recomputed once for all of them ([`pace`]).
    async fn react(&mut self, c: Changes) {
        let now = std::time::Instant::now();
        let Changes {
            mut world,
            config,
            nodes,
            key,
        } = c;
        if !self.started {
            if self.services.synced
                && self.slices.synced
                && self.nodes.synced
                && self.secrets.synced
                && self.stores.synced()
            {
                self.start(now).await;
            }
            return;
        }
        if config {
            world |= self.reload_config();
        }
        if nodes {
            self.ensure_socket().await;
        }
        if world {
            self.rebuild_world();
            let t = self.driver.api_changed(now);
            self.after(t);
            // Ports, nodePorts or this node's addresses may have changed without any
            // change in what it leads.
            self.sync_nat();
        }
        // The key last, as at start: a membership it creates gets the current peers.
        if key {
            self.reload_key(now);
        }
    }

    async fn start(&mut self, now: std::time::Instant) {
        self.started = true;
        self.reload_config();
        self.rebuild_world();
        self.ensure_socket().await;
        // The key last: the membership starts with the full peer list.
        let t = self.driver.api_changed(now);
        self.after(t);
        self.reload_key(now);
        info!(
            services = self.driver.world().services.len(),
            nodes = self.driver.world().nodes.len(),
            "initial state loaded"
        );
        self.update_ready();
    }

    fn update_ready(&self) {
        let ok = self.started && self.key_bytes.is_some() && self.socket.is_some();
        self.ready.store(ok, Ordering::Relaxed);
    }

    /// Each map is emptied before it is refilled, so that the old and the new contents
    /// are never in memory together.
    fn rebuild_world(&mut self) {
        let w = self.driver.world_mut();
        w.services.clear();
        w.services.extend(
            self.services
                .objects
                .iter()
                .map(|((ns, name), s)| (ServiceKey::new(ns.clone(), name.clone()), s.info.clone())),
        );
        w.slices.clear();
        for (key, r) in self.slices.objects.values() {
            match w.slices.get_mut(key) {
                Some(all) => all.merge(r),
                None => {
                    w.slices.insert(key.clone(), r.clone());
                }
            }
        }
        w.nodes.clear();
        w.nodes.extend(
            self.nodes
                .objects
                .iter()
                .map(|((_, name), n)| (name.clone(), n.info.clone())),
        );
    }

    /// Builds the configuration; an invalid one is logged and the last good one stays.
    /// True when the configuration in force changed.
    fn reload_config(&mut self) -> bool {
        let (src, mut errors) = self.stores.sources(&self.opts.configmap);
        match Config::build(&src) {
            Ok(cfg) if errors.is_empty() => {
                self.last_config_errors.clear();
                self.metrics.config_loaded.set(1);
                self.metrics.config_stale.set(0);
                let w = self.driver.world_mut();
                let changed = w.config.as_ref() != Some(&cfg);
                w.config = Some(cfg);
                changed
            }
            Ok(_) => {
                self.report_config_errors(errors);
                false
            }
            Err(e) => {
                errors.extend(e.0);
                self.report_config_errors(errors);
                false
            }
        }
    }

    fn report_config_errors(&mut self, mut errors: Vec<ConfigError>) {
        errors.sort();
        self.metrics.config_stale.set(1);
        if errors == self.last_config_errors {
            return;
        }
        let in_force = self.driver.world().config.is_some();
        for e in &errors {
            error!(object = %e.object, field = %e.field, message = %e.message,
                   last_good_in_force = in_force, "configuration rejected");
        }
        self.last_config_errors = errors;
    }

    /// Starts, rotates or stops the membership key to follow the Secret.
    fn reload_key(&mut self, now: std::time::Instant) {
        let bytes = self
            .secrets
            .objects
            .iter()
            .find(|((_, name), _)| *name == self.opts.memberlist_secret)
            .and_then(|(_, b)| b.clone())
            .filter(|b| !b.is_empty());
        if self.key_seen.as_ref() == Some(&bytes) {
            return;
        }
        self.key_seen = Some(bytes.clone());
        let (key, problem) = match bytes.as_deref().map(Key::new) {
            None => (None, Some(KeyProblem::Missing)),
            Some(Ok(k)) => (Some(k), None),
            Some(Err(e)) => (None, Some(KeyProblem::Unusable(e.to_string()))),
        };
        // One line per change of reason: a missing key after an unusable one (both
        // leave no key in force) is logged too, a resync of the same state is not.
        if problem != self.key_problem {
            match &problem {
                Some(KeyProblem::Missing) => {
                    error!(secret = %self.opts.memberlist_secret, namespace = %self.opts.namespace,
                           key = SECRET_KEY,
                           "membership secret missing: not announcing (an unauthenticated cluster is not allowed)");
                }
                Some(KeyProblem::Unusable(e)) => {
                    error!(secret = %self.opts.memberlist_secret, error = %e,
                           "membership key unusable: not announcing");
                }
                None => {}
            }
            self.key_problem = problem;
        }
        let usable = key.is_some();
        // A key already in force is rotated, not restarted: the membership keeps its
        // view, so nobody goes down and no address moves while the speakers see the
        // new Secret at different moments.
        match self.driver.apply_key(key, epoch_now(), now) {
            Ok((change, t)) => {
                self.key_bytes = if usable { bytes } else { None };
                match change {
                    KeyChange::Started => {
                        info!(secret = %self.opts.memberlist_secret, "membership key loaded");
                        if let Some(m) = self.driver.membership() {
                            self.metrics.observe_membership(m.stats(), true);
                        }
                    }
                    KeyChange::Rotated => {
                        let delay = self.opts.membership.key_rotation_delay;
                        info!(secret = %self.opts.memberlist_secret,
                              signing_in_s = delay.as_secs(),
                              old_key_accepted_for_s = (delay * 2).as_secs(),
                              "membership key changed: rotating (the new key is accepted now)");
                    }
                    KeyChange::Stopped => {}
                }
                self.after(t);
            }
            Err(e) => {
                error!(error = %e, "membership cannot start: not announcing");
                self.key_bytes = None;
                // Tried again at the next Secret event, even with the same bytes.
                self.key_seen = None;
                if let Ok(t) = self.driver.set_key(None, epoch_now(), now) {
                    self.after(t);
                }
            }
        }
        self.update_ready();
    }

    /// Binds the membership socket on this node's InternalIP once it is known (and
    /// again if it changes).
    async fn ensure_socket(&mut self) {
        let Some(ip) = self.driver.own_address() else {
            if self.socket.is_none() {
                warn!(node = %self.opts.node_name, "own node has no InternalIP yet");
            }
            return;
        };
        let addr = SocketAddr::new(ip, self.opts.memberlist_port);
        if self.bound_to == Some(addr) && self.socket.is_some() {
            return;
        }
        match UdpSocket::bind(addr).await {
            Ok(s) => {
                info!(%addr, "membership socket bound");
                self.socket = Some(Arc::new(s));
                self.bound_to = Some(addr);
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot bind the membership socket, retrying");
                self.socket = None;
                self.bound_to = None;
            }
        }
        self.update_ready();
    }

    /// Everything that follows a driver call: datagrams out, then (off the failover
    /// path) metrics, events and ServiceL2Status.
    fn after(&mut self, t: Transition) {
        self.flush_transmits();
        if t.is_empty() {
            return;
        }
        for (ip, spec) in &t.gained {
            info!(%ip, services = ?spec.services, "announcing");
        }
        for ip in &t.lost {
            info!(%ip, "stopped announcing");
        }
        self.metrics.takeovers.inc_by(t.takeovers);
        self.refresh_announced();
        self.post_events(&t);
        self.sync_nat();
        self.sync_l2_status();
    }

    /// Publishes the NodePort DNAT table for what this node leads now (applied off the
    /// loop), and warns once per led Service whose ports have no nodePort.
    fn sync_nat(&mut self) {
        let Some(handle) = &self.nat else { return };
        let own = self
            .nodes
            .objects
            .get(&(String::new(), self.opts.node_name.clone()))
            .map(|n| n.internal_ips.clone())
            .unwrap_or_default();
        let mut led = Vec::new();
        for ip in self.driver.plan().mine.keys() {
            let Some(e) = self.driver.eligibility().get(ip) else {
                continue;
            };
            for key in &e.services {
                if let Some(svc) = self
                    .services
                    .objects
                    .get(&(key.namespace.clone(), key.name.clone()))
                {
                    led.push((*ip, key, &svc.nat));
                }
            }
        }
        let d = nat::desired(led, &own);
        handle.set(d.rules);
        for ip in d.no_node_address.difference(&self.nat_no_address) {
            warn!(%ip, node = %self.opts.node_name,
                  "this node has no InternalIP of the address's family: its NodePort DNAT is not installed");
        }
        self.nat_no_address = d.no_node_address;
        for (key, ports) in &d.without_node_port {
            if self.nat_warned.contains(key) {
                continue;
            }
            let note = no_node_port_note(key, ports, &self.opts.node_name);
            warn!(service = %key, "{note}");
            self.post_event(
                key,
                KEvent {
                    type_: EventType::Warning,
                    reason: NO_NODE_PORT_REASON.into(),
                    note: Some(note),
                    action: "Forward".into(),
                    secondary: None,
                },
            );
        }
        self.nat_warned = d.without_node_port.into_keys().collect();
    }

    fn flush_transmits(&mut self) {
        while let Some((to, payload)) = self.driver.poll_transmit() {
            let Some(s) = &self.socket else { continue };
            // Non-blocking: the loop never waits on the network; a full buffer is loss,
            // which the membership tolerates.
            if let Err(e) = s.try_send_to(&payload, to) {
                debug!(%to, error = %e, "membership datagram not sent");
            }
        }
    }

    fn refresh_announced(&self) {
        let mine = &self.driver.plan().mine;
        self.metrics.announced.clear();
        for (ip, spec) in mine {
            for svc in &spec.services {
                self.metrics
                    .announced
                    .get_or_create(&AnnouncedLabel {
                        ip: ip.to_string(),
                        node: self.opts.node_name.clone(),
                        protocol: "layer2".into(),
                        service: svc.clone(),
                    })
                    .set(1);
            }
        }
        self.metrics
            .leading
            .set(i64::try_from(mine.len()).unwrap_or(i64::MAX));
    }

    fn service_reference(&self, key: &ServiceKey) -> ObjectReference {
        let uid = self
            .services
            .objects
            .get(&(key.namespace.clone(), key.name.clone()))
            .and_then(|s| s.uid.clone());
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            uid,
            ..Default::default()
        }
    }

    fn post_events(&self, t: &Transition) {
        let mut keys: BTreeSet<ServiceKey> = BTreeSet::new();
        for ip in t.gained.keys() {
            if let Some(e) = self.driver.eligibility().get(ip) {
                keys.extend(e.services.iter().cloned());
            }
        }
        for key in keys {
            let note = format!(
                "announcing from node {:?} with protocol \"layer2\"",
                self.opts.node_name
            );
            self.post_event(
                &key,
                KEvent {
                    type_: EventType::Normal,
                    reason: "nodeAssigned".into(),
                    note: Some(note),
                    action: "Announce".into(),
                    secondary: None,
                },
            );
        }
    }

    /// Queues an event about `key`'s Service.
    fn post_event(&self, key: &ServiceKey, event: KEvent) {
        let reference = self.service_reference(key);
        self.writes
            .event(key.clone(), Box::new(EventJob { event, reference }));
    }

    /// What this node's ServiceL2Status objects should say: one per Service of every
    /// address it leads, for the Services whose status it owns ([`state::Plan::status_owner`]:
    /// a Service's addresses have one leader unless no node may announce them all, and
    /// even then exactly one node writes its object).
    fn desired_l2(&self) -> BTreeMap<ServiceKey, MetalLBServiceL2Status> {
        let mut out: BTreeMap<ServiceKey, MetalLBServiceL2Status> = BTreeMap::new();
        let plan = self.driver.plan();
        let world = self.driver.world();
        for ip in plan.mine.keys() {
            let Some(e) = self.driver.eligibility().get(ip) else {
                continue;
            };
            let ifaces = self.driver.announcer().interfaces_of(*ip);
            for key in &e.services {
                let owner = world
                    .services
                    .get(key)
                    .and_then(|s| plan.status_owner(&s.ips));
                if owner != Some(self.opts.node_name.as_str()) {
                    continue;
                }
                let st = out
                    .entry(key.clone())
                    .or_insert_with(|| MetalLBServiceL2Status {
                        node: self.opts.node_name.clone(),
                        service_name: key.name.clone(),
                        service_namespace: key.namespace.clone(),
                        interfaces: Vec::new(),
                    });
                for i in &ifaces {
                    if !st.interfaces.iter().any(|x| x.name == *i) {
                        st.interfaces.push(InterfaceInfo { name: i.clone() });
                    }
                }
            }
        }
        for st in out.values_mut() {
            st.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }

    /// Brings this node's ServiceL2Status objects in line with what it leads: writes
    /// what changed since the last write, deletes what it no longer leads (also objects
    /// left by an earlier run, seen through the watch).
    fn sync_l2_status(&mut self) {
        let desired = self.desired_l2();
        let mut jobs: BTreeMap<ServiceKey, L2Job> = BTreeMap::new();
        for (key, st) in &desired {
            if self.l2_sent.get(key) != Some(st) {
                jobs.insert(key.clone(), Some(st.clone()));
            }
        }
        for key in self.l2_sent.keys() {
            if !desired.contains_key(key) {
                jobs.insert(key.clone(), None);
            }
        }
        for st in self.l2_status.objects.values() {
            let key = ServiceKey::new(st.service_namespace.clone(), st.service_name.clone());
            if !desired.contains_key(&key)
                && !self.l2_sent.contains_key(&key)
                && !self.writes.busy(&key)
            {
                jobs.insert(key, None);
            }
        }
        for (key, job) in jobs {
            match &job {
                Some(st) => self.l2_sent.insert(key.clone(), st.clone()),
                None => self.l2_sent.remove(&key),
            };
            self.writes.status(key, job);
        }
    }

    async fn on_tick(&mut self) {
        if !self.started {
            return;
        }
        if self.socket.is_none() {
            self.ensure_socket().await;
        }
        if let Some(m) = self.driver.membership() {
            self.metrics.observe_membership(m.stats(), false);
            self.metrics
                .live_members
                .set(i64::try_from(m.live_members().count()).unwrap_or(i64::MAX));
            self.metrics.isolated.set(i64::from(m.is_isolated()));
        } else {
            self.metrics.live_members.set(0);
        }
        self.metrics
            .observe_addresses(&self.driver.announcer().counters());
        self.metrics
            .observe_frames(&self.driver.announcer().frame_counts());
        self.report_conflicts(std::time::Instant::now());
        // Repairs failed writes: objects the watch shows differing from what we want.
        let desired = self.desired_l2();
        let mut present: BTreeSet<ServiceKey> = BTreeSet::new();
        for st in self.l2_status.objects.values() {
            let key = ServiceKey::new(st.service_namespace.clone(), st.service_name.clone());
            if desired.get(&key) != Some(st) && !self.writes.busy(&key) {
                self.l2_sent.remove(&key);
            }
            present.insert(key);
        }
        for key in desired.keys() {
            if !present.contains(key) && self.l2_status.synced && !self.writes.busy(key) {
                self.l2_sent.remove(key);
            }
        }
        self.sync_l2_status();
    }

    /// Duplicate announcers seen since the last tick (see [`conflicts`]): every frame
    /// counted, one log line per claimant, and a Warning event on the address's
    /// Services at most once a minute per address. The announcer has already
    /// re-asserted the address (rate-limited); this only reports.
    fn report_conflicts(&mut self, now: std::time::Instant) {
        let claims = conflicts::group(self.driver.announcer_mut().take_conflicts());
        if claims.is_empty() {
            return;
        }
        for c in &claims {
            warn!(ip = %c.ip, interface = %c.interface, other_mac = %c.other_mac,
                  frames = c.frames,
                  "another host answers for an address this node announces; re-asserting it");
            self.metrics
                .conflicts
                .get_or_create(&IpLabel {
                    ip: c.ip.to_string(),
                })
                .inc_by(c.frames);
        }
        let events = conflicts::plan_events(
            &claims,
            self.driver.eligibility(),
            &self.opts.node_name,
            &mut self.conflict_events,
            now,
        );
        for (key, note) in events {
            self.post_event(
                &key,
                KEvent {
                    type_: EventType::Warning,
                    reason: conflicts::DUPLICATE_ANNOUNCER_REASON.into(),
                    note: Some(note),
                    action: conflicts::DUPLICATE_ANNOUNCER_ACTION.into(),
                    secondary: None,
                },
            );
        }
    }

    /// Graceful stop: silent in the membership, still answering until the runners-up
    /// have taken over, then silent on the network; own ServiceL2Status removed.
    async fn shutdown(&mut self) {
        let wait = driver::handover_wait(&self.opts.membership);
        info!(
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "handing over"
        );
        self.driver.begin_leave();
        self.flush_transmits();
        tokio::time::sleep(wait).await;
        let t = self.driver.finish_leave();
        self.metrics.announced.clear();
        self.metrics.leading.set(0);
        info!(released = t.lost.len(), "stopped announcing");
        if let Some(n) = self.nat.take() {
            n.stop(NAT_STOP_WAIT).await;
        }
        for key in std::mem::take(&mut self.l2_sent).into_keys() {
            self.writes.status(key, None);
        }
        if !self.writes.wait_idle(Duration::from_secs(3)).await {
            warn!("ServiceL2Status clean-up did not finish in time");
        }
    }
}

/// The note of the [`NO_NODE_PORT_REASON`] event.
pub fn no_node_port_note(key: &ServiceKey, ports: &[String], node: &str) -> String {
    format!(
        "Service {key} has no nodePort on port(s) {} (spec.allocateLoadBalancerNodePorts is false): \
         node {node:?} leads its address with --nodeport-dnat and cannot forward traffic for \
         these ports; set spec.allocateLoadBalancerNodePorts to true (or remove it)",
        ports.join(", ")
    )
}

async fn write_l2_status(
    client: Client,
    node: &str,
    key: &ServiceKey,
    job: L2Job,
) -> Result<(), kube::Error> {
    let api: Api<ServiceL2Status> = Api::namespaced(client, &key.namespace);
    let name = l2_status_name(key);
    let Some(status) = job else {
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
