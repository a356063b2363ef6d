//! The layer-2 election: per group of addresses, one leader among the eligible live
//! nodes, by rendezvous hashing ([`crate::election`]). It needs nothing from the API
//! but the eligibility, so it runs on every membership change and a dead node's
//! addresses move as fast as the membership notices.
//!
//! Rules:
//! - **One leader per Service, not per address** (MetalLB elects once per Service, on
//!   its first address, so a dual-stack Service is announced by one node, and its one
//!   ServiceL2Status names that node). Addresses are elected in the groups of
//!   [`crate::decide::eligibility`] (a dual-stack Service's two addresses are one group;
//!   Services sharing an address join its group, and MetalLB requires sharing Services
//!   to hold the same set of addresses, so a group is normally one Service or one set
//!   of sharing Services). A group is elected on its **lowest address** (`IpAddr`
//!   order, so IPv4 before IPv6): the rendezvous weight is taken on that address
//!   whatever Service lists it first, so every node, whatever order it saw the objects
//!   in, elects the same node. A single-address group is elected on its own address.
//! - In a group, the leader is the highest-weight live node eligible for **every**
//!   address of the group that has a live eligible node at all (an address nobody may
//!   announce, say one in a BGP-only pool, does not hold the others back). Only when no
//!   node is eligible for all of them (addresses from pools advertised to disjoint
//!   nodes) is each address given its own leader, still ranked on the group's address,
//!   since nothing else can announce it. The ServiceL2Status of a Service is then
//!   written by the leader of the Service's lowest led address alone
//!   ([`Election::status_owner`]), so two nodes never write the same object.
//! - The interfaces come from the L2Advertisements matching the leader for the pool:
//!   their union, or every interface if one of them names none.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::announce::AnnounceSpec;
use crate::decide::eligibility::Eligibility;
use crate::decide::protocol::Liveness;
use crate::election;

/// The outcome of one election round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Election {
    /// Leader per address, for every address that has one.
    pub leaders: BTreeMap<IpAddr, String>,
    /// The addresses this node leads and how to announce them.
    pub led: BTreeMap<IpAddr, AnnounceSpec>,
}

impl Election {
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
/// eligible, live nodes, from the point of view of node `me`.
pub fn elect(
    me: &str,
    eligibility: &BTreeMap<IpAddr, Eligibility>,
    live: Liveness<'_>,
) -> Election {
    let Liveness::Live(live) = live else {
        return Election::default();
    };
    let mut groups: BTreeMap<IpAddr, Vec<(IpAddr, &Eligibility)>> = BTreeMap::new();
    for (ip, e) in eligibility {
        groups
            .entry(e.elect_on.unwrap_or(*ip))
            .or_default()
            .push((*ip, e));
    }
    let mut out = Election::default();
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
                out.led.insert(
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
