//! Who may announce each address, with one protocol: the first of the two decision
//! steps (see [`super`]). It reads the API objects ([`ApiInputs`]) and runs only when
//! one of them changes. The rules shared by every protocol live here; a protocol adds
//! its own advertisements ([`Advertisements`]: MetalLB's L2Advertisement or
//! BGPAdvertisement).
//!
//! Rules, per address:
//! - The address must lie in a configured pool and at least one of the protocol's
//!   advertisements must select that pool; otherwise the protocol leaves it alone.
//! - A node is eligible for a Service using the address when it is usable (Ready, no
//!   `NetworkUnavailable`, no `node.kubernetes.io/exclude-from-external-load-balancers`
//!   label) and matches one of those advertisements (no nodeSelectors: every node;
//!   several selectors: any of them).
//! - A Service with no ready endpoint anywhere makes no node eligible. With
//!   `externalTrafficPolicy: Local`, only nodes with a ready endpoint of that Service
//!   (by the endpoint's `nodeName`) are eligible.
//! - An address shared by several Services may be announced by the union of the nodes
//!   eligible for any of them. The union (not the intersection) keeps the address
//!   reachable whenever at least one of its Services can serve; MetalLB's sharing rules
//!   already require sharing Services to agree on their endpoints when their traffic
//!   policy is Local.
//! - Addresses are tied into *groups*, the connected components of "Service uses
//!   address" (a dual-stack Service's two addresses; Services sharing an address join
//!   its group), each keyed by its lowest address ([`Eligibility::elect_on`]), for the
//!   protocols that pick one node per Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_config::Config;

use super::inputs::{ApiInputs, NodeInfo, ServiceKey, SliceReadiness};
use super::layer2::Interfaces;

/// A protocol's advertisements, as eligibility reads them.
pub trait Advertisements {
    /// What an eligible node would announce an address with (layer 2: its interfaces).
    type Detail: Clone;

    /// `None` when none of this protocol's advertisements selects `pool`. Otherwise,
    /// for a node, what it would announce the pool's addresses with if it matches one
    /// of those advertisements (`None`: it matches none).
    fn for_pool(
        &self,
        config: &Config,
        pool: &str,
    ) -> Option<impl Fn(&NodeInfo) -> Option<Self::Detail>>;
}

/// Why nobody may announce an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unannounced {
    NoConfig,
    /// In no configured pool.
    NoPool,
    /// Its pool is selected by none of the protocol's advertisements.
    NoAdvertisement,
    /// None of its Services has a ready endpoint.
    NoReadyEndpoint,
    /// Endpoints are ready but no node passes the node rules.
    NoEligibleNode,
}

impl Unannounced {
    pub fn as_str(self) -> &'static str {
        match self {
            Unannounced::NoConfig => "no configuration",
            Unannounced::NoPool => "address in no pool",
            Unannounced::NoAdvertisement => "pool selected by no L2Advertisement",
            Unannounced::NoReadyEndpoint => "no ready endpoint",
            Unannounced::NoEligibleNode => "no eligible node",
        }
    }
}

/// Who may announce one address, and with what (`D`, the protocol's detail).
///
/// The collections are sorted `Vec`s, not B-trees: a B-tree node has room for eleven
/// entries, and these usually hold one Service and a few nodes, for each of possibly
/// thousands of addresses. Node names are shared between addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eligibility<D = Interfaces> {
    /// The Services using the address, sorted, without repeats.
    pub services: Vec<ServiceKey>,
    pub pool: Option<String>,
    /// Eligible nodes, sorted by name, with what each would announce with.
    pub nodes: Vec<(Arc<str>, D)>,
    /// Set when `nodes` is empty.
    pub reason: Option<Unannounced>,
    /// The address this one's group is keyed by: the lowest address of the Services
    /// linked to it by shared addresses (see the module rules). `None` (only in values
    /// built by hand) means the address itself.
    pub elect_on: Option<IpAddr>,
}

impl<D> Default for Eligibility<D> {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            pool: None,
            nodes: Vec::new(),
            reason: None,
            elect_on: None,
        }
    }
}

impl<D> Eligibility<D> {
    /// What an eligible node would announce with; `None` when the node is not eligible.
    pub fn node(&self, name: &str) -> Option<&D> {
        self.nodes
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &self.nodes[i].1)
    }

    /// The eligible nodes' names, in order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|(n, _)| &**n)
    }
}

/// Per address in any handled Service's status: who may announce it with the protocol
/// whose advertisements are `ads`.
pub fn eligibility<A: Advertisements>(
    view: &dyn ApiInputs,
    ads: &A,
) -> BTreeMap<IpAddr, Eligibility<A::Detail>> {
    let mut by_ip: BTreeMap<IpAddr, Eligibility<A::Detail>> = BTreeMap::new();
    for (key, svc) in view.services() {
        for ip in &svc.ips {
            let services = &mut by_ip.entry(*ip).or_default().services;
            if let Err(at) = services.binary_search(key) {
                services.insert(at, key.clone());
            }
        }
    }
    let nodes: Vec<(Arc<str>, &NodeInfo)> =
        view.nodes().map(|(n, info)| (Arc::from(n), info)).collect();
    let readiness = Readiness::index(view);
    for (ip, e) in &mut by_ip {
        fill(view, *ip, e, &nodes, &readiness, ads);
    }
    for (key, members) in groups(view, &by_ip) {
        for ip in members {
            if let Some(e) = by_ip.get_mut(&ip) {
                e.elect_on = Some(key);
            }
        }
    }
    by_ip
}

/// The readiness of every EndpointSlice, sorted by Service, so that a Service's slices
/// are found together without merging them.
struct Readiness<'a>(Vec<(&'a ServiceKey, &'a SliceReadiness)>);

impl<'a> Readiness<'a> {
    fn index(view: &'a dyn ApiInputs) -> Self {
        let mut all: Vec<_> = view.endpoint_slices().collect();
        // Stable: slices come mostly in order already.
        all.sort_by(|a, b| a.0.cmp(b.0));
        Readiness(all)
    }

    /// The slices of `key`'s Service.
    fn of(&self, key: &ServiceKey) -> &[(&'a ServiceKey, &'a SliceReadiness)] {
        let start = self.0.partition_point(|(k, _)| *k < key);
        let len = self.0[start..].partition_point(|(k, _)| *k == key);
        &self.0[start..start + len]
    }
}

/// The election groups: connected components of the graph of Services and the
/// addresses in their status, keyed by their lowest address.
fn groups<D>(
    view: &dyn ApiInputs,
    by_ip: &BTreeMap<IpAddr, Eligibility<D>>,
) -> BTreeMap<IpAddr, Vec<IpAddr>> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    for start in by_ip.keys() {
        if !seen.insert(*start) {
            continue;
        }
        let mut members = vec![*start];
        let mut todo = vec![*start];
        while let Some(ip) = todo.pop() {
            let services = by_ip.get(&ip).map(|e| &e.services).into_iter().flatten();
            for other in services
                .filter_map(|k| view.service(k))
                .flat_map(|s| s.ips.iter())
            {
                if seen.insert(*other) {
                    members.push(*other);
                    todo.push(*other);
                }
            }
        }
        // `start` is already the lowest (addresses are walked in order and a
        // component is seen whole), but the minimum does not rely on that.
        let key = members.iter().min().copied().unwrap_or(*start);
        out.insert(key, members);
    }
    out
}

/// `nodes` are the view's nodes, in order, with their names to share.
fn fill<A: Advertisements>(
    view: &dyn ApiInputs,
    ip: IpAddr,
    e: &mut Eligibility<A::Detail>,
    nodes: &[(Arc<str>, &NodeInfo)],
    readiness: &Readiness<'_>,
    ads: &A,
) {
    let Some(cfg) = view.config() else {
        e.reason = Some(Unannounced::NoConfig);
        return;
    };
    let Some(pool) = cfg.pool_of(ip) else {
        e.reason = Some(Unannounced::NoPool);
        return;
    };
    e.pool = Some(pool.name.clone());
    let Some(node_detail) = ads.for_pool(cfg, &pool.name) else {
        e.reason = Some(Unannounced::NoAdvertisement);
        return;
    };
    let mut any_ready = false;
    for key in &e.services {
        let Some(svc) = view.service(key) else {
            continue;
        };
        let slices = readiness.of(key);
        if !slices.iter().any(|(_, r)| r.any_ready) {
            continue;
        }
        any_ready = true;
        for (name, node) in nodes {
            // A node another Service of the address already added comes again with
            // the same detail (it depends on the node and the pool only); the repeat
            // is dropped below, after one sort, instead of searching the list for
            // every node.
            if !node.usable() {
                continue;
            }
            if svc.local && !slices.iter().any(|(_, r)| r.on_node(name)) {
                continue;
            }
            if let Some(detail) = node_detail(node) {
                e.nodes.push((name.clone(), detail));
            }
        }
    }
    // Several Services add nodes in turn, so the order is restored once here (one
    // Service's nodes come sorted, which the stable sort checks in linear time).
    e.nodes.sort_by(|a, b| a.0.cmp(&b.0));
    e.nodes.dedup_by(|a, b| a.0 == b.0);
    if e.nodes.is_empty() {
        e.reason = Some(if any_ready {
            Unannounced::NoEligibleNode
        } else {
            Unannounced::NoReadyEndpoint
        });
    }
}
