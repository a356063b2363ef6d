//! Layer 2, the first [`AnnouncementProtocol`]: per group of addresses one node, the
//! leader ([`election`]), answers ARP and NDP for them through its [`Announcer`] and
//! writes their Services' ServiceL2Status; the others stay silent.
//!
//! [`Layer2`] owns the announcer, the eligibility computed with the L2Advertisements,
//! the last election, and the rate limit of the duplicate-announcer events
//! ([`crate::decide::conflicts`]).

pub mod election;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use ferrolb_config::Config;
use ferrolb_config::model::L2Advertisement;

use super::conflicts::{self, Claim, EventLimiter};
use super::eligibility::{self, Advertisements, Eligibility};
use super::inputs::{ApiInputs, NodeInfo, ServiceKey};
use super::protocol::{
    AnnouncementChanges, AnnouncementProtocol, Announcing, Liveness, ProtocolName,
};
use crate::announce::{AddressCounters, Announcer, FrameCounts};
use election::{Election, elect};

/// The interfaces a node announces an address on (from its L2Advertisements); `None`:
/// every suitable interface.
pub type Interfaces = Option<BTreeSet<String>>;

/// The L2Advertisements, as eligibility reads them.
#[derive(Clone, Copy, Debug, Default)]
pub struct L2Advertisements;

impl Advertisements for L2Advertisements {
    type Detail = Interfaces;

    fn for_pool(
        &self,
        config: &Config,
        pool: &str,
    ) -> Option<impl Fn(&NodeInfo) -> Option<Interfaces>> {
        let advs: Vec<&L2Advertisement> = config
            .l2_advertisements
            .values()
            .filter(|a| a.pools.contains(pool))
            .collect();
        if advs.is_empty() {
            return None;
        }
        Some(move |node: &NodeInfo| {
            let matching: Vec<_> = advs
                .iter()
                .filter(|a| {
                    a.node_selectors.is_empty()
                        || a.node_selectors.iter().any(|s| s.matches(&node.labels))
                })
                .collect();
            if matching.is_empty() {
                return None;
            }
            Some(if matching.iter().any(|a| a.interfaces.is_empty()) {
                None
            } else {
                Some(
                    matching
                        .iter()
                        .flat_map(|a| a.interfaces.iter().cloned())
                        .collect(),
                )
            })
        })
    }
}

/// Who may announce each address with layer 2.
pub fn layer2_eligibility(view: &dyn ApiInputs) -> BTreeMap<IpAddr, Eligibility> {
    eligibility::eligibility(view, &L2Advertisements)
}

/// The ServiceL2Status objects this node owns: per Service, the interfaces its led
/// addresses are announced on.
pub type L2Statuses = BTreeMap<ServiceKey, BTreeSet<String>>;

/// What layer 2 saw on the network since the last look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer2Observations {
    /// The announcer's counters per address (absolute values).
    pub counters: BTreeMap<IpAddr, AddressCounters>,
    /// The announcer's frames by outcome (absolute values).
    pub frames: FrameCounts,
    /// Other hosts claiming led addresses, one per claimant ([`conflicts::group`]).
    pub claims: Vec<Claim>,
    /// The duplicate-announcer events to post now, `(Service, note)`, rate-limited.
    pub claim_events: Vec<(ServiceKey, String)>,
    /// The ServiceL2Status objects this node owns now.
    pub statuses: L2Statuses,
}

/// The layer-2 protocol of one node (see the module docs).
#[derive(Debug)]
pub struct Layer2<A> {
    announcer: A,
    eligibility: BTreeMap<IpAddr, Eligibility>,
    election: Election,
    claim_events: EventLimiter,
}

impl<A: Announcer> Layer2<A> {
    pub fn new(announcer: A) -> Self {
        Self {
            announcer,
            eligibility: BTreeMap::new(),
            election: Election::default(),
            claim_events: EventLimiter::default(),
        }
    }

    /// The ServiceL2Status objects `me` owns: one per Service of every address it
    /// leads, for the Services whose status it writes ([`Election::status_owner`]: a
    /// Service's addresses have one leader unless no node may announce them all, and
    /// even then exactly one node writes its object).
    pub fn statuses(&self, me: &str) -> L2Statuses {
        // Every address of a handled Service has an eligibility entry listing it.
        let mut ips_of: BTreeMap<&ServiceKey, Vec<IpAddr>> = BTreeMap::new();
        for (ip, e) in &self.eligibility {
            for key in &e.services {
                ips_of.entry(key).or_default().push(*ip);
            }
        }
        let mut out = L2Statuses::new();
        for ip in self.election.led.keys() {
            let Some(e) = self.eligibility.get(ip) else {
                continue;
            };
            let ifaces = self.announcer.interfaces_of(*ip);
            for key in &e.services {
                let owner = ips_of
                    .get(key)
                    .and_then(|ips| self.election.status_owner(ips));
                if owner == Some(me) {
                    out.entry(key.clone())
                        .or_default()
                        .extend(ifaces.iter().cloned());
                }
            }
        }
        out
    }

    /// What the announcer saw since the last call, and the ServiceL2Status objects
    /// `me` owns. Conflicts are taken: each is reported once.
    pub fn observe(&mut self, me: &str, now: Instant) -> Layer2Observations {
        let counters = self.announcer.counters();
        let frames = self.announcer.frame_counts();
        let claims = conflicts::group(self.announcer.take_conflicts());
        let claim_events = if claims.is_empty() {
            Vec::new()
        } else {
            conflicts::plan_events(&claims, &self.eligibility, me, &mut self.claim_events, now)
        };
        Layer2Observations {
            counters,
            frames,
            claims,
            claim_events,
            statuses: self.statuses(me),
        }
    }

    /// The announcer, for tests.
    #[cfg(test)]
    pub fn announcer(&self) -> &A {
        &self.announcer
    }

    /// The last election, for tests.
    #[cfg(test)]
    pub fn election(&self) -> &Election {
        &self.election
    }

    fn changes_to(&self, me: &str, new: &Election) -> AnnouncementChanges {
        let mut c = AnnouncementChanges::default();
        for (ip, spec) in &new.led {
            match self.election.led.get(ip) {
                None => {
                    let services = self
                        .eligibility
                        .get(ip)
                        .map(|e| e.services.clone())
                        .unwrap_or_default();
                    c.gained.insert(*ip, services);
                    if self.election.leaders.get(ip).is_some_and(|l| *l != me) {
                        c.takeovers += 1;
                    }
                }
                Some(old) if old.services != spec.services => {
                    c.services_changed.insert(*ip);
                }
                Some(_) => {}
            }
        }
        for ip in self.election.led.keys() {
            if !new.led.contains_key(ip) {
                c.lost.insert(*ip);
            }
        }
        c
    }
}

impl<A: Announcer> AnnouncementProtocol for Layer2<A> {
    fn name(&self) -> ProtocolName {
        ProtocolName::Layer2
    }

    fn api_changed(&mut self, view: &dyn ApiInputs) {
        // Emptied first: the old and the new map are never in memory together.
        self.eligibility.clear();
        self.eligibility = layer2_eligibility(view);
    }

    fn decide(&mut self, me: &str, liveness: Liveness<'_>) -> AnnouncementChanges {
        let new = elect(me, &self.eligibility, liveness);
        let changes = self.changes_to(me, &new);
        if !changes.is_empty() || new.led != self.election.led {
            self.announcer.set_leading(new.led.clone());
        }
        self.election = new;
        changes
    }

    fn withdraw_all(&mut self) -> AnnouncementChanges {
        let changes = AnnouncementChanges {
            lost: self.election.led.keys().copied().collect(),
            ..Default::default()
        };
        self.election.led.clear();
        self.announcer.set_leading(BTreeMap::new());
        changes
    }

    fn announcing(&self) -> Announcing {
        self.election
            .led
            .keys()
            .map(|ip| {
                let services = self
                    .eligibility
                    .get(ip)
                    .map(|e| e.services.clone())
                    .unwrap_or_default();
                (*ip, services)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
