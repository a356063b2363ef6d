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
//! - The interfaces come from the L2Advertisements matching the leader for the pool:
//!   their union, or every interface if one of them names none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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

/// Readiness of one EndpointSlice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceReadiness {
    /// At least one ready endpoint, with or without a node name.
    pub any_ready: bool,
    /// Nodes hosting at least one ready endpoint.
    pub ready_nodes: BTreeSet<String>,
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
    /// EndpointSlices by Service, then by slice name.
    pub slices: BTreeMap<ServiceKey, BTreeMap<String, SliceReadiness>>,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eligibility {
    pub services: BTreeSet<ServiceKey>,
    pub pool: Option<String>,
    /// Eligible nodes with the interfaces each would announce on (`None`: all).
    pub nodes: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Set when `nodes` is empty.
    pub reason: Option<Unannounced>,
}

impl World {
    /// Per address in any handled Service's status: who may announce it.
    pub fn eligibility(&self) -> BTreeMap<IpAddr, Eligibility> {
        let mut by_ip: BTreeMap<IpAddr, Eligibility> = BTreeMap::new();
        for (key, svc) in &self.services {
            for ip in &svc.ips {
                by_ip.entry(*ip).or_default().services.insert(key.clone());
            }
        }
        for (ip, e) in &mut by_ip {
            self.fill(*ip, e);
        }
        by_ip
    }

    fn fill(&self, ip: IpAddr, e: &mut Eligibility) {
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
            let slices = self.slices.get(key);
            let ready_somewhere = slices.is_some_and(|s| s.values().any(|r| r.any_ready));
            if !ready_somewhere {
                continue;
            }
            any_ready = true;
            for (name, node) in &self.nodes {
                if e.nodes.contains_key(name) || !node.usable() {
                    continue;
                }
                if svc.local
                    && !slices.is_some_and(|s| s.values().any(|r| r.ready_nodes.contains(name)))
                {
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
                e.nodes.insert(name.clone(), interfaces);
            }
        }
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

/// Elects a leader per address among its eligible, live nodes.
pub fn plan(me: &str, eligibility: &BTreeMap<IpAddr, Eligibility>, live: Liveness<'_>) -> Plan {
    let Liveness::Live(live) = live else {
        return Plan::default();
    };
    let mut out = Plan::default();
    for (ip, e) in eligibility {
        let candidates = e
            .nodes
            .keys()
            .filter(|n| live.contains(n.as_str()))
            .map(String::as_str);
        let Some(leader) = election::leader(*ip, candidates) else {
            continue;
        };
        if leader == me {
            out.mine.insert(
                *ip,
                AnnounceSpec {
                    interfaces: e.nodes.get(me).cloned().flatten(),
                    services: e.services.iter().map(ToString::to_string).collect(),
                },
            );
        }
        out.leaders.insert(*ip, leader.to_string());
    }
    out
}

#[cfg(test)]
mod tests;
