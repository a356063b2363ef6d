//! The announcement-protocol seam: what a protocol decides from the shared inputs and
//! what it reports back. MetalLB's speaker has the same seam (its `Protocol` interface,
//! implemented by the layer-2 and the BGP controllers).
//!
//! [`super::layer2::Layer2`] is the one implementation today. See
//! [`AnnouncementProtocol`] for how BGP fits beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::inputs::{ApiInputs, ServiceKey};

/// The protocols a speaker can announce with, by their names in MetalLB's metrics
/// (`metallb_speaker_announced{protocol}`) and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolName {
    Layer2,
}

impl ProtocolName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolName::Layer2 => "layer2",
        }
    }
}

/// Which nodes the membership says are alive, from this node's point of view.
#[derive(Clone, Copy, Debug)]
pub enum Liveness<'a> {
    /// This node takes part in the membership; the set includes itself.
    Live(&'a BTreeSet<String>),
    /// This node must not announce anything: it is isolated from its peers or has no
    /// membership key.
    Silent,
}

/// The addresses one protocol announces from this node, each with the Services using
/// it (sorted).
pub type Announcing = BTreeMap<IpAddr, Vec<ServiceKey>>;

/// What one decision of one protocol changed in what this node announces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnouncementChanges {
    /// Addresses this node started announcing, with the Services using each.
    pub gained: Announcing,
    /// Addresses this node stopped announcing.
    pub lost: BTreeSet<IpAddr>,
    /// Of `gained`, addresses another node announced before (failovers).
    pub takeovers: u64,
    /// Addresses announced before and after whose Services changed (an address became
    /// shared, or unshared).
    pub services_changed: BTreeSet<IpAddr>,
}

impl AnnouncementChanges {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty() && self.services_changed.is_empty()
    }
}

/// One way of making LoadBalancer addresses reachable from outside the cluster.
///
/// The [`super::Driver`] holds one value per protocol the speaker runs and feeds each
/// the same inputs: the API objects when they change ([`Self::api_changed`]), then the
/// membership's view ([`Self::decide`]) on every API or membership change. A protocol
/// owns everything else: its eligibility (the shared rules of
/// [`super::eligibility`] with its own advertisements), its choice of what this node
/// announces, and the component that carries that out on the network, which it
/// updates inside `decide` so that a failover takes no extra step. Each address's
/// pool selects the protocols that announce it, so several protocols run side by side
/// in one speaker, each on its own pools (a pool advertised by both is announced by
/// both, as in MetalLB).
///
/// Layer 2 ([`super::layer2::Layer2`]) elects one leader per group of addresses among
/// the eligible live nodes (rendezvous hashing), and the leader answers ARP/NDP for
/// them through its [`crate::announce::Announcer`].
///
/// BGP would implement it as follows, with no election:
/// - `api_changed`: [`super::eligibility::eligibility`] with BGPAdvertisements as the
///   [`super::eligibility::Advertisements`], whose detail per node is what that node
///   advertises with (the peers the matching advertisements name, communities, local
///   preference, aggregation lengths).
/// - `decide`: every address for which this node is eligible is advertised, to those
///   peers, whatever the live set: the routers spread the traffic over the nodes that
///   advertise it and drop a dead node's routes when its session ends. It hands the
///   whole set to its sessions (the counterpart of the announcer) and reports what
///   changed; `takeovers` stays 0. Whether `Liveness::Silent` (no membership key,
///   isolated) should withdraw too is a choice of that step: MetalLB's BGP does not
///   look at the membership.
/// - `begin_leave`: withdraws everything at once, so the routers move the traffic to
///   the other nodes while this one still serves what is in flight; `withdraw_all`
///   then has nothing left to do.
///
/// The Driver would then hold a `Bgp` beside its `Layer2` and run every step over
/// both, and [`ProtocolName`] would gain `Bgp`.
pub trait AnnouncementProtocol {
    /// The protocol's name in metrics, events and logs.
    fn name(&self) -> ProtocolName;

    /// The API objects changed: recompute who may announce each address of the pools
    /// this protocol's advertisements select. Runs only when the API changes; the
    /// result is kept for the decisions until the next change.
    fn api_changed(&mut self, view: &dyn ApiInputs);

    /// Decides what this node announces now, from the eligibility and `liveness`,
    /// carries it out, and says what changed. Runs on every API or membership change,
    /// so it must be cheap when nothing changed.
    fn decide(&mut self, me: &str, liveness: Liveness<'_>) -> AnnouncementChanges;

    /// A graceful stop begins: this node leaves the membership and the others take
    /// over. What to withdraw now (nothing, by default: layer 2 keeps answering until
    /// the others have taken over).
    fn begin_leave(&mut self) -> AnnouncementChanges {
        AnnouncementChanges::default()
    }

    /// The end of a graceful stop: announce nothing any more.
    fn withdraw_all(&mut self) -> AnnouncementChanges;

    /// Everything this node announces now with this protocol.
    fn announcing(&self) -> Announcing;
}
