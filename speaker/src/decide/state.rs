//! The speaker's decisions as pure functions of what it has seen.
//!
//! Two steps, so that the failover path stays short:
//!
//! 1. [`World::eligibility`] turns the API objects (Services with status addresses,
//!    EndpointSlice readiness, Nodes, the configuration) into, per address, the nodes
//!    allowed to announce it and how. It runs only when an API object changes.
//! 2. [`plan`] intersects that with the membership's live set and elects one leader per
//!    address with rendezvous hashing. It runs on every membership change and needs
//!    nothing from the API, so a dead node's addresses move as fast as the membership
//!    notices.
//!
//! Rules, per address:
//! - The address must lie in a configured pool and at least one L2Advertisement must
//!   select that pool; otherwise nobody announces it (it may be a BGP-only pool).
//! - A node is eligible for a Service using the address when it is usable (Ready, no
//!   `NetworkUnavailable`, no `node.kubernetes.io/exclude-from-external-load-balancers`
//!   label) and matches one of those L2Advertisements (no nodeSelectors: every node;
//!   several selectors: any of them).
//! - A Service with no ready endpoint anywhere makes no node eligible. With
//!   `externalTrafficPolicy: Local`, only nodes with a ready endpoint of that Service
//!   (by the endpoint's `nodeName`) are eligible.
//! - An address shared by several Services is announced by one node, chosen among the
//!   union of the nodes eligible for any of them. The union (not the intersection) keeps
//!   the address reachable whenever at least one of its Services can serve; MetalLB's
//!   sharing rules already require sharing Services to agree on their endpoints when
//!   their traffic policy is Local.
//! - **One leader per Service, not per address** (MetalLB elects once per Service, on
//!   its first address, so a dual-stack Service is announced by one node, and its one
//!   ServiceL2Status names that node). Addresses are elected in *groups*: the
//!   connected components of "Service uses address" (a dual-stack Service's two
//!   addresses are one group; Services sharing an address join its group, and MetalLB
//!   requires sharing Services to hold the same set of addresses, so a group is normally
//!   one Service or one set of sharing Services). A group is elected on its **lowest
//!   address** (`IpAddr` order, so IPv4 before IPv6): the rendezvous weight is taken on
//!   that address whatever Service lists it first, so every node, whatever order it saw
//!   the objects in, elects the same node. A single-address group is elected on its
//!   own address, exactly as before groups existed.
//! - In a group, the leader is the highest-weight live node eligible for **every**
//!   address of the group that has a live eligible node at all (an address nobody may
//!   announce, say one in a BGP-only pool, does not hold the others back). Only when no
//!   node is eligible for all of them (addresses from pools advertised to disjoint
//!   nodes) is each address given its own leader, still ranked on the group's address,
//!   since nothing else can announce it. The ServiceL2Status of a Service is then
//!   written by the leader of the Service's lowest led address alone
//!   ([`Plan::status_owner`]), so two nodes never write the same object.
//! - The interfaces come from the L2Advertisements matching the leader for the pool:
//!   their union, or every interface if one of them names none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_config::Config;

use crate::announce::AnnounceSpec;
use crate::election;

/// Nodes with this label never announce (the upstream convention MetalLB follows).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub use ferrolb_config::ServiceKey;

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

/// Everything the speaker has seen in the API.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// Endpoint readiness by Service: the union over its EndpointSlices.
    pub slices: BTreeMap<ServiceKey, SliceReadiness>,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The last valid configuration (an invalid one never replaces it).
    pub config: Option<Config>,
}

/// Why nobody may announce an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unannounced {
    NoConfig,
    /// In no configured pool.
    NoPool,
    /// Its pool is selected by no L2Advertisement.
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

/// Who may announce one address.
///
/// The collections are sorted `Vec`s, not B-trees: a B-tree node has room for eleven
/// entries, and these usually hold one Service and a few nodes, for each of possibly
/// thousands of addresses. Node names are shared between addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eligibility {
    /// The Services using the address, sorted, without repeats.
    pub services: Vec<ServiceKey>,
    pub pool: Option<String>,
    /// Eligible nodes, sorted by name, with the interfaces each would announce on
    /// (`None`: all).
    pub nodes: Vec<(Arc<str>, Option<BTreeSet<String>>)>,
    /// Set when `nodes` is empty.
    pub reason: Option<Unannounced>,
    /// The address this one's group is elected on: the lowest address of the Services
    /// linked to it by shared addresses (see the module rules). `None` (only in values
    /// built by hand) means the address itself.
    pub elect_on: Option<IpAddr>,
}

impl Eligibility {
    /// The interfaces of an eligible node (`Some(None)`: all of them); `None` when the
    /// node is not eligible.
    pub fn node(&self, name: &str) -> Option<&Option<BTreeSet<String>>> {
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

impl World {
    /// Per address in any handled Service's status: who may announce it.
    pub fn eligibility(&self) -> BTreeMap<IpAddr, Eligibility> {
        let mut by_ip: BTreeMap<IpAddr, Eligibility> = BTreeMap::new();
        for (key, svc) in &self.services {
            for ip in &svc.ips {
                let services = &mut by_ip.entry(*ip).or_default().services;
                if let Err(at) = services.binary_search(key) {
                    services.insert(at, key.clone());
                }
            }
        }
        let names: Vec<Arc<str>> = self.nodes.keys().map(|n| Arc::from(n.as_str())).collect();
        for (ip, e) in &mut by_ip {
            self.fill(*ip, e, &names);
        }
        for (key, members) in self.groups(&by_ip) {
            for ip in members {
                if let Some(e) = by_ip.get_mut(&ip) {
                    e.elect_on = Some(key);
                }
            }
        }
        by_ip
    }

    /// The election groups: connected components of the graph of Services and the
    /// addresses in their status, keyed by their lowest address.
    fn groups(&self, by_ip: &BTreeMap<IpAddr, Eligibility>) -> BTreeMap<IpAddr, Vec<IpAddr>> {
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
                    .filter_map(|k| self.services.get(k))
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

    /// `names` are `self.nodes`' names, in order, to share.
    fn fill(&self, ip: IpAddr, e: &mut Eligibility, names: &[Arc<str>]) {
        let Some(cfg) = &self.config else {
            e.reason = Some(Unannounced::NoConfig);
            return;
        };
        let Some(pool) = cfg.pool_of(ip) else {
            e.reason = Some(Unannounced::NoPool);
            return;
        };
        e.pool = Some(pool.name.clone());
        let advs: Vec<_> = cfg
            .l2_advertisements
            .values()
            .filter(|a| a.pools.contains(&pool.name))
            .collect();
        if advs.is_empty() {
            e.reason = Some(Unannounced::NoAdvertisement);
            return;
        }
        let mut any_ready = false;
        for key in &e.services {
            let Some(svc) = self.services.get(key) else {
                continue;
            };
            let ready = self.slices.get(key);
            let ready_somewhere = ready.is_some_and(|r| r.any_ready);
            if !ready_somewhere {
                continue;
            }
            any_ready = true;
            for ((name, node), shared) in self.nodes.iter().zip(names) {
                // A node another Service of the address already added comes again
                // with the same interfaces (they depend on the node and the pool
                // only); the repeat is dropped below, after one sort, instead of
                // searching the list for every node.
                if !node.usable() {
                    continue;
                }
                if svc.local && !ready.is_some_and(|r| r.on_node(name)) {
                    continue;
                }
                let matching: Vec<_> = advs
                    .iter()
                    .filter(|a| {
                        a.node_selectors.is_empty()
                            || a.node_selectors.iter().any(|s| s.matches(&node.labels))
                    })
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                let interfaces = if matching.iter().any(|a| a.interfaces.is_empty()) {
                    None
                } else {
                    Some(
                        matching
                            .iter()
                            .flat_map(|a| a.interfaces.iter().cloned())
                            .collect(),
                    )
                };
                e.nodes.push((shared.clone(), interfaces));
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
}

/// Which nodes the membership says are alive, from this node's point of view.
#[derive(Clone, Copy, Debug)]
pub enum Liveness<'a> {
    /// This node takes part in the membership; the set includes itself.
    Live(&'a BTreeSet<String>),
    /// This node must not announce anything: it is isolated from its peers, has no
    /// membership key, or is leaving.
    Silent,
}

/// The outcome of one election round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Leader per address, for every address that has one.
    pub leaders: BTreeMap<IpAddr, String>,
    /// The addresses this node leads and how to announce them.
    pub mine: BTreeMap<IpAddr, AnnounceSpec>,
}

impl Plan {
    /// The node that writes the ServiceL2Status of a Service with addresses `ips`: the
    /// leader of its lowest address that has one. With one leader per group (the rule
    /// whenever some node may announce all of them) that is the Service's only leader;
    /// in a split group it is still exactly one node.
    pub fn status_owner(&self, ips: &[IpAddr]) -> Option<&str> {
        ips.iter()
            .filter_map(|ip| self.leaders.get(ip).map(|l| (ip, l)))
            .min()
            .map(|(_, l)| l.as_str())
    }
}

/// Elects one leader per group of addresses (see the module rules) among its
/// eligible, live nodes.
pub fn plan(me: &str, eligibility: &BTreeMap<IpAddr, Eligibility>, live: Liveness<'_>) -> Plan {
    let Liveness::Live(live) = live else {
        return Plan::default();
    };
    let mut groups: BTreeMap<IpAddr, Vec<(IpAddr, &Eligibility)>> = BTreeMap::new();
    for (ip, e) in eligibility {
        groups
            .entry(e.elect_on.unwrap_or(*ip))
            .or_default()
            .push((*ip, e));
    }
    let mut out = Plan::default();
    for (key, members) in groups {
        // Per address, its live eligible nodes; addresses without any are left out.
        let candidates: Vec<(IpAddr, &Eligibility, Vec<&str>)> = members
            .into_iter()
            .map(|(ip, e)| {
                let c: Vec<&str> = e.node_names().filter(|n| live.contains(*n)).collect();
                (ip, e, c)
            })
            .filter(|(_, _, c)| !c.is_empty())
            .collect();
        let Some((_, _, first)) = candidates.first() else {
            continue;
        };
        // The candidate lists are sorted (eligible nodes are): binary search keeps a
        // group's cost near-linear in its nodes.
        let common = first.iter().copied().filter(|n| {
            candidates
                .iter()
                .all(|(_, _, c)| c.binary_search(n).is_ok())
        });
        let shared = election::leader(key, common);
        for (ip, e, c) in &candidates {
            // Split only when no node may announce every address of the group.
            let Some(leader) = shared.or_else(|| election::leader(key, c.iter().copied())) else {
                continue;
            };
            if leader == me {
                out.mine.insert(
                    *ip,
                    AnnounceSpec {
                        interfaces: e.node(me).cloned().flatten(),
                        services: e.services.iter().map(ToString::to_string).collect(),
                    },
                );
            }
            out.leaders.insert(*ip, leader.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests;
