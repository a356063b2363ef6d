//! The API objects the decisions read, as plain values: what the speaker keeps of a
//! Service, of an EndpointSlice and of a Node, and the configuration in force.
//!
//! The shell holds these values once, projected from the objects as they arrive, and
//! lends them to the core through [`ApiInputs`] whenever it asks for a recomputation;
//! the core keeps no copy. `ApiSnapshot` (feature `testing`) is a plain
//! implementation for tests and benchmarks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::Config;

pub use ferrolb_config::ServiceKey;

/// Nodes with this label never announce (the upstream convention MetalLB follows).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the speaker needs of a LoadBalancer Service it handles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Addresses in `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
}

/// Readiness of one EndpointSlice, or of all a Service's slices together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceReadiness {
    /// At least one ready endpoint, with or without a node name.
    pub any_ready: bool,
    /// Nodes hosting at least one ready endpoint, sorted, without repeats (a `Vec`:
    /// one B-tree node would take room for eleven names per slice).
    pub ready_nodes: Vec<String>,
}

impl SliceReadiness {
    /// Adds `other`'s endpoints: a Service's readiness is the union over its slices.
    pub fn merge(&mut self, other: &SliceReadiness) {
        self.any_ready |= other.any_ready;
        for n in &other.ready_nodes {
            self.add_node(n);
        }
    }

    /// Records a ready endpoint on node `n`.
    pub fn add_node(&mut self, n: &str) {
        if let Err(at) = self.ready_nodes.binary_search_by(|x| x.as_str().cmp(n)) {
            self.ready_nodes.insert(at, n.to_string());
        }
    }

    /// A ready endpoint runs on node `n`.
    pub fn on_node(&self, n: &str) -> bool {
        self.ready_nodes
            .binary_search_by(|x| x.as_str().cmp(n))
            .is_ok()
    }
}

/// What the speaker needs of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub labels: BTreeMap<String, String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// The NetworkUnavailable condition is True.
    pub network_unavailable: bool,
    /// The InternalIP the node's speaker listens on for membership.
    pub internal_ip: Option<IpAddr>,
}

impl NodeInfo {
    pub fn excluded(&self) -> bool {
        self.labels.contains_key(EXCLUDE_LABEL)
    }

    /// May announce at all (before configuration and endpoints are considered).
    pub fn usable(&self) -> bool {
        self.ready && !self.network_unavailable && !self.excluded()
    }
}

/// The API objects the decisions read, lent by whoever holds them.
pub trait ApiInputs {
    /// The Services the speaker handles (of type LoadBalancer, of its class, with an
    /// address in status).
    fn services(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &ServiceInfo)> + '_>;

    /// One handled Service.
    fn service(&self, key: &ServiceKey) -> Option<&ServiceInfo>;

    /// The readiness of every EndpointSlice, with the Service it belongs to (a Service
    /// may have several slices; its readiness is their union).
    fn endpoint_slices(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &SliceReadiness)> + '_>;

    /// The Nodes by name, in name order.
    fn nodes(&self) -> Box<dyn Iterator<Item = (&str, &NodeInfo)> + '_>;

    /// The last valid configuration (an invalid one never replaces it).
    fn config(&self) -> Option<&Config>;
}

/// [`ApiInputs`] as plain maps, one readiness value per Service: for tests and
/// benchmarks.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, Default)]
pub struct ApiSnapshot {
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// Endpoint readiness by Service: the union over its EndpointSlices.
    pub slices: BTreeMap<ServiceKey, SliceReadiness>,
    pub nodes: BTreeMap<String, NodeInfo>,
    pub config: Option<Config>,
}

#[cfg(any(test, feature = "testing"))]
impl ApiInputs for ApiSnapshot {
    fn services(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &ServiceInfo)> + '_> {
        Box::new(self.services.iter())
    }

    fn service(&self, key: &ServiceKey) -> Option<&ServiceInfo> {
        self.services.get(key)
    }

    fn endpoint_slices(&self) -> Box<dyn Iterator<Item = (&ServiceKey, &SliceReadiness)> + '_> {
        Box::new(self.slices.iter())
    }

    fn nodes(&self) -> Box<dyn Iterator<Item = (&str, &NodeInfo)> + '_> {
        Box::new(self.nodes.iter().map(|(n, i)| (n.as_str(), i)))
    }

    fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }
}
