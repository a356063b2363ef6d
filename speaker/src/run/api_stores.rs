//! The watched API objects, each kept once as the compact projection the speaker reads
//! ([`super::projection`]); the decisions read them from here ([`ApiInputs`]).
//!
//! A store is replaced whole on every re-list, so objects deleted while a watch was
//! down do not linger, and it reports whether an event changed what it keeps: an
//! update touching nothing projected (a Node heartbeat) changes nothing.

use std::collections::BTreeMap;

use ferrolb_config::Config;
use ferrolb_config::crd::{MetalLBServiceL2Status, ServiceL2Status};
use ferrolb_k8s::stores::ConfigStores;
use ferrolb_k8s::watch::{ConfigEvent, config_streams, watch_stream};
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};

use super::l2_status::L2_NODE_LABEL;
use super::projection::{self, NodeEntry, ServiceEntry};
use super::{Options, SECRET_KEY};
use crate::decide::{ApiInputs, NodeInfo, ServiceInfo, ServiceKey, SliceReadiness};

/// An object's namespace and name (an empty namespace for cluster-scoped kinds).
pub type ObjectKey = ServiceKey;

/// One watch event.
// One event moves through the loop at a time; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Service(WatchEvent<Service>),
    Slice(WatchEvent<EndpointSlice>),
    Node(WatchEvent<Node>),
    Secret(WatchEvent<Secret>),
    L2Status(WatchEvent<ServiceL2Status>),
    Config(ConfigEvent),
}

/// Objects of one kind by [`ObjectKey`], each kept only as the projection `P` the
/// speaker reads (objects it does not handle are not kept at all).
#[derive(Debug)]
pub struct ProjectedStore<P> {
    pub objects: BTreeMap<ObjectKey, P>,
    buffer: Option<BTreeMap<ObjectKey, P>>,
    pub synced: bool,
}

impl<P> Default for ProjectedStore<P> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            buffer: None,
            synced: false,
        }
    }
}

impl<P: PartialEq> ProjectedStore<P> {
    fn key<K: ResourceExt>(o: &K) -> ObjectKey {
        ObjectKey::new(o.namespace().unwrap_or_default(), o.name_any())
    }

    /// Applies one watcher event, keeping `project(object)` (nothing when `None`); true
    /// when the visible contents changed.
    pub fn apply<K: ResourceExt>(
        &mut self,
        ev: WatchEvent<K>,
        project: impl Fn(&K) -> Option<P>,
    ) -> bool {
        match ev {
            WatchEvent::Init => {
                self.buffer = Some(BTreeMap::new());
                false
            }
            WatchEvent::InitApply(o) => {
                if let Some(p) = project(&o) {
                    self.buffer.get_or_insert_default().insert(Self::key(&o), p);
                }
                false
            }
            WatchEvent::InitDone => {
                let new = self.buffer.take().unwrap_or_default();
                let changed = !self.synced || new != self.objects;
                self.objects = new;
                self.synced = true;
                changed
            }
            WatchEvent::Apply(o) => match project(&o) {
                Some(p) => {
                    let key = Self::key(&o);
                    if self.objects.get(&key) == Some(&p) {
                        return false;
                    }
                    self.objects.insert(key, p);
                    true
                }
                None => self.objects.remove(&Self::key(&o)).is_some(),
            },
            WatchEvent::Delete(o) => self.objects.remove(&Self::key(&o)).is_some(),
        }
    }
}

/// What API inputs not acted on yet changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingChanges {
    /// Anything eligibility reads (Services, EndpointSlices, Nodes).
    pub decision_inputs: bool,
    /// A configuration object.
    pub config: bool,
    /// A Node (peers and the membership socket's address).
    pub nodes: bool,
    /// The membership Secret.
    pub key: bool,
}

impl std::ops::BitOrAssign for PendingChanges {
    fn bitor_assign(&mut self, o: Self) {
        self.decision_inputs |= o.decision_inputs;
        self.config |= o.config;
        self.nodes |= o.nodes;
        self.key |= o.key;
    }
}

/// Every watched kind.
#[derive(Debug, Default)]
pub struct ApiStores {
    /// Handled Services only ([`projection::service_entry`]).
    pub services: ProjectedStore<ServiceEntry>,
    /// Every EndpointSlice with the Service it belongs to.
    pub slices: ProjectedStore<(ServiceKey, SliceReadiness)>,
    pub nodes: ProjectedStore<NodeEntry>,
    /// The membership key bytes of the Secret (`None`: no `secretkey` in it).
    pub secrets: ProjectedStore<Option<Vec<u8>>>,
    /// This node's ServiceL2Status objects' status.
    pub l2_statuses: ProjectedStore<MetalLBServiceL2Status>,
    /// The configuration objects as they are.
    pub config_sources: ConfigStores,
    /// The last valid configuration built from them.
    pub config: Option<Config>,
}

impl ApiStores {
    /// Applies one watch event; what it changed. Services of another load balancer
    /// class than `lb_class` are not kept.
    pub fn apply(&mut self, input: Input, lb_class: Option<&str>) -> PendingChanges {
        let mut c = PendingChanges::default();
        match input {
            Input::Service(ev) => {
                c.decision_inputs = self
                    .services
                    .apply(ev, |s| projection::service_entry(s, lb_class));
            }
            Input::Slice(ev) => {
                c.decision_inputs = self.slices.apply(ev, projection::slice_readiness);
            }
            Input::Node(ev) => {
                c.nodes = self.nodes.apply(ev, |n| Some(projection::node_entry(n)));
                c.decision_inputs = c.nodes;
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
                self.l2_statuses.apply(ev, |o| o.status.clone());
            }
            Input::Config(ev) => c.config = self.config_sources.apply_event(ev),
        }
        c
    }

    /// Every store the decisions need has seen its first full list.
    pub fn synced(&self) -> bool {
        self.services.synced
            && self.slices.synced
            && self.nodes.synced
            && self.secrets.synced
            && self.config_sources.synced()
    }

    /// A Node's entry.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.objects.get(&ObjectKey::new("", name))
    }
}

impl ApiInputs for ApiStores {
    fn services(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &ServiceInfo)> + '_> {
        Box::new(self.services.objects.iter().map(|(k, s)| (k, &s.info)))
    }

    fn service(&self, key: &ServiceKey) -> Option<&ServiceInfo> {
        self.services.objects.get(key).map(|s| &s.info)
    }

    fn endpoint_slices(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &SliceReadiness)> + '_> {
        Box::new(self.slices.objects.values().map(|(k, r)| (k, r)))
    }

    fn nodes(&self) -> Box<dyn Iterator<Item = (&str, &NodeInfo)> + '_> {
        Box::new(
            self.nodes
                .objects
                .iter()
                .map(|(k, n)| (k.name.as_str(), &n.info)),
        )
    }

    fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }
}

/// Objects per page when a watch lists Services, EndpointSlices and Nodes.
const LIST_PAGE_SIZE: u32 = 100;

/// The watches, as one stream of [`Input`]s.
pub fn watches(client: &Client, opts: &Options) -> SelectAll<BoxStream<'static, Input>> {
    let ns = &opts.namespace;
    // Smaller pages than kube's 500 for the kinds that scale with the number of
    // Services: a re-list holds one page of whole objects (and its JSON) at a time.
    let paged = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    inputs.push(watch_stream(
        Api::<Service>::all(client.clone()),
        paged.clone(),
        Input::Service,
    ));
    inputs.push(watch_stream(
        Api::<EndpointSlice>::all(client.clone()),
        paged.clone(),
        Input::Slice,
    ));
    inputs.push(watch_stream(
        Api::<Node>::all(client.clone()),
        paged,
        Input::Node,
    ));
    inputs.push(watch_stream(
        Api::<Secret>::namespaced(client.clone(), ns),
        watcher::Config::default().fields(&format!("metadata.name={}", opts.memberlist_secret)),
        Input::Secret,
    ));
    inputs.push(watch_stream(
        Api::<ServiceL2Status>::all(client.clone()),
        watcher::Config::default().labels(&format!("{L2_NODE_LABEL}={}", opts.node_name)),
        Input::L2Status,
    ));
    inputs.extend(config_streams(client, ns, &opts.configmap, Input::Config));
    inputs
}
