//! One speaker's decisions without Kubernetes or sockets: the membership state machine
//! and the announcement protocols, tied together so that every change reaches the
//! network at once.
//!
//! The shell ([`crate::run`]) owns the socket, the clock and the API objects; it feeds
//! this type and carries out what each call returns ([`Transition`],
//! [`Observations`]). Tests drive several of them over an in-memory network with a
//! simulated clock.
//!
//! Safety rules enforced here rather than by the caller: without a membership key this
//! node announces nothing (an unauthenticated cluster could be made to elect anyone),
//! and while the membership reports it isolated it announces nothing either.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::inputs::ApiInputs;
use super::layer2::{L2Statuses, Layer2, Layer2Observations};
use super::protocol::{
    AnnouncementChanges, AnnouncementProtocol, Announcing, Liveness, ProtocolName,
};
use crate::announce::Announcer;
use crate::membership::{self, Event, Key, Membership, MembershipError, Stats};

/// What one call changed in what this node announces, and what the shell needs to
/// follow it (events, metrics, the NodePort DNAT, ServiceL2Status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// What changed, per protocol that changed anything.
    pub changes: BTreeMap<ProtocolName, AnnouncementChanges>,
    /// When anything changed: everything this node announces now, per protocol.
    pub announcing: Option<BTreeMap<ProtocolName, Announcing>>,
    /// When anything changed: the ServiceL2Status objects this node owns now.
    pub l2_statuses: Option<L2Statuses>,
}

impl Transition {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// What `protocol` changed (nothing when it is not listed).
    pub fn of(&self, protocol: ProtocolName) -> &AnnouncementChanges {
        static NOTHING: AnnouncementChanges = AnnouncementChanges {
            gained: BTreeMap::new(),
            lost: BTreeSet::new(),
            takeovers: 0,
            services_changed: BTreeSet::new(),
        };
        self.changes.get(&protocol).unwrap_or(&NOTHING)
    }
}

/// What the membership reports about itself, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipHealth {
    pub stats: Stats,
    /// Live members, this node included.
    pub live_members: usize,
    pub isolated: bool,
}

/// What the speaker observed since the last call to [`Driver::observe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// `None` while no membership runs (no key).
    pub membership: Option<MembershipHealth>,
    pub layer2: Layer2Observations,
}

/// What [`Driver::apply_key`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// A fresh membership under the key (there was none).
    Started,
    /// The key is rolled into the running membership.
    Rotated,
    /// No key: the membership and every announcement stopped.
    Stopped,
}

/// How long a leaving node keeps answering after it went silent: long enough for the
/// others to declare it dead and for the runner-up to send its gratuitous burst, so
/// the address is never unanswered. That is the membership's detection time: the
/// missed probes and the last ack wait, plus a probe interval each for the direct
/// challenge, the votes and the news to spread (the simulator's detection stays inside
/// it; the tests check the handover has no gap).
pub fn handover_wait(cfg: &membership::Config) -> Duration {
    cfg.probe_interval * (cfg.suspect_after_misses + 3) + cfg.ack_timeout
}

#[derive(Debug)]
pub struct Driver<A> {
    me: String,
    port: u16,
    membership_config: membership::Config,
    membership: Option<Membership>,
    layer2: Layer2<A>,
    leaving: bool,
    /// The peer list last given to the membership; it is only replaced when it
    /// changes, not on every Service or EndpointSlice event.
    peers: Vec<String>,
    /// The other nodes' InternalIPs as of the last [`Driver::api_changed`]: where
    /// their datagrams go.
    peer_addresses: BTreeMap<String, IpAddr>,
    /// This node's InternalIP as of the last [`Driver::api_changed`].
    own_address: Option<IpAddr>,
}

impl<A: Announcer> Driver<A> {
    /// `port` is the membership port every speaker listens on.
    pub fn new(me: &str, port: u16, membership_config: membership::Config, announcer: A) -> Self {
        Self {
            me: me.to_string(),
            port,
            membership_config,
            membership: None,
            layer2: Layer2::new(announcer),
            leaving: false,
            peers: Vec::new(),
            peer_addresses: BTreeMap::new(),
            own_address: None,
        }
    }

    /// The layer-2 protocol, for tests.
    #[cfg(test)]
    pub fn layer2(&self) -> &Layer2<A> {
        &self.layer2
    }

    /// The membership, for tests.
    #[cfg(test)]
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// This node's InternalIP as the API reported it at the last
    /// [`Driver::api_changed`].
    pub fn own_address(&self) -> Option<IpAddr> {
        self.own_address
    }

    /// Replaces the membership key. `None` (the Secret is missing or has no key)
    /// stops the membership and every announcement. A new key starts a fresh
    /// membership; `epoch` must grow across calls and restarts.
    pub fn set_key(
        &mut self,
        key: Option<Key>,
        epoch: u64,
        now: Instant,
    ) -> Result<Transition, MembershipError> {
        self.membership = match key {
            None => None,
            Some(k) => {
                let seed = epoch ^ crate::election::weight(&self.me, IpAddr::from([0, 0, 0, 0]));
                let mut m = Membership::new(
                    self.membership_config.clone(),
                    &self.me,
                    k,
                    epoch,
                    seed,
                    now,
                )?;
                self.peers = self.peer_addresses.keys().cloned().collect();
                m.set_peers(&self.peers, now)?;
                Some(m)
            }
        };
        Ok(self.reelect())
    }

    /// Follows the membership Secret: `None` stops the membership (as
    /// [`Driver::set_key`]); a key while none is in force starts one; a new key while
    /// one is in force is rotated in ([`Membership::rotate_key`]): accepted at once,
    /// signing only after `key_rotation_delay`, the old key accepted for one more
    /// delay. The membership keeps its view, so no member goes down and no address
    /// moves while the speakers see the new Secret at different moments (up to the
    /// delay apart). The caller only calls it when the key bytes changed.
    pub fn apply_key(
        &mut self,
        key: Option<Key>,
        epoch: u64,
        now: Instant,
    ) -> Result<(KeyChange, Transition), MembershipError> {
        match (key, &mut self.membership) {
            (Some(k), Some(m)) => {
                m.rotate_key(k, now);
                Ok((KeyChange::Rotated, Transition::default()))
            }
            (key, _) => {
                let change = if key.is_some() {
                    KeyChange::Started
                } else {
                    KeyChange::Stopped
                };
                self.set_key(key, epoch, now).map(|t| (change, t))
            }
        }
    }

    /// The API objects changed: every protocol recomputes its eligibility, the peer
    /// list follows the Nodes, then every protocol decides again.
    pub fn api_changed(&mut self, view: &dyn ApiInputs, now: Instant) -> Transition {
        let protocols: [&mut dyn AnnouncementProtocol; 1] = [&mut self.layer2];
        for p in protocols {
            p.api_changed(view);
        }
        self.own_address = None;
        self.peer_addresses.clear();
        for (name, node) in view.nodes() {
            if name == self.me {
                self.own_address = node.internal_ip;
            } else if let Some(ip) = node.internal_ip {
                self.peer_addresses.insert(name.to_string(), ip);
            }
        }
        let peers: Vec<String> = self.peer_addresses.keys().cloned().collect();
        if peers != self.peers
            && let Some(m) = &mut self.membership
        {
            match m.set_peers(&peers, now) {
                Ok(()) => self.peers = peers,
                Err(e) => warn!(error = %e, "peer list rejected by the membership"),
            }
        }
        self.drain_events();
        self.reelect()
    }

    /// A membership datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Transition {
        if self.leaving {
            return Transition::default();
        }
        let Some(m) = &mut self.membership else {
            return Transition::default();
        };
        m.handle_datagram(now, datagram);
        if self.drain_events() {
            self.reelect()
        } else {
            Transition::default()
        }
    }

    /// The membership's timer fired (or any later time).
    pub fn handle_timeout(&mut self, now: Instant) -> Transition {
        if self.leaving {
            return Transition::default();
        }
        let Some(m) = &mut self.membership else {
            return Transition::default();
        };
        m.handle_timeout(now);
        if self.drain_events() {
            self.reelect()
        } else {
            Transition::default()
        }
    }

    /// When [`Driver::handle_timeout`] must next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.leaving {
            return None;
        }
        self.membership.as_ref().map(Membership::poll_timeout)
    }

    /// The next datagram to send, with the peer's address (InternalIP and the
    /// membership port). Datagrams for peers without a known address are dropped.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        // While leaving nothing is handled any more, so the only datagrams left are the
        // "last words" that `begin_leave` queued.
        let m = self.membership.as_mut()?;
        while let Some(t) = m.poll_transmit() {
            if let Some(ip) = self.peer_addresses.get(&*t.to) {
                return Some((SocketAddr::new(*ip, self.port), t.payload));
            }
        }
        None
    }

    /// What the membership and the protocols observed since the last call, for
    /// metrics, logs and events, and the ServiceL2Status objects this node owns.
    pub fn observe(&mut self, now: Instant) -> Observations {
        let membership = self.membership.as_ref().map(|m| MembershipHealth {
            stats: m.stats().clone(),
            live_members: m.live_members().count(),
            isolated: m.is_isolated(),
        });
        Observations {
            membership,
            layer2: self.layer2.observe(&self.me, now),
        }
    }

    /// True when an event changed the live set or this node's standing.
    fn drain_events(&mut self) -> bool {
        let Some(m) = &mut self.membership else {
            return false;
        };
        let mut any = false;
        while let Some(ev) = m.poll_event() {
            any = true;
            match ev {
                Event::Down(n) => info!(node = %n, "member down"),
                Event::Up(n) => info!(node = %n, "member up"),
                Event::Isolated => warn!("isolated from every peer, announcing nothing"),
                Event::Reconnected => info!("reconnected to peers"),
            }
        }
        any
    }

    /// Every protocol decides again over the current live set.
    fn reelect(&mut self) -> Transition {
        if self.leaving {
            // Frozen: keep answering what we led until the handover ends.
            return Transition::default();
        }
        let live: BTreeSet<String>;
        let liveness = match &self.membership {
            Some(m) if !m.is_isolated() => {
                live = m.live_members().map(String::from).collect();
                Liveness::Live(&live)
            }
            _ => Liveness::Silent,
        };
        let mut t = Transition::default();
        let protocols: [&mut dyn AnnouncementProtocol; 1] = [&mut self.layer2];
        for p in protocols {
            let c = p.decide(&self.me, liveness);
            if !c.is_empty() {
                t.changes.insert(p.name(), c);
            }
        }
        self.complete(t)
    }

    /// Adds what the shell needs to follow a change.
    fn complete(&self, mut t: Transition) -> Transition {
        if !t.is_empty() {
            let protocols: [&dyn AnnouncementProtocol; 1] = [&self.layer2];
            t.announcing = Some(
                protocols
                    .iter()
                    .map(|p| (p.name(), p.announcing()))
                    .collect(),
            );
            t.l2_statuses = Some(self.layer2.statuses(&self.me));
        }
        t
    }

    /// First step of a graceful stop: this node goes silent in the membership (no
    /// more datagrams sent or handled) but keeps answering for what it leads, so the
    /// peers declare it dead and the runners-up take over while it still answers.
    /// Wait [`handover_wait`], then call [`Driver::finish_leave`].
    ///
    /// The membership also queues "last words" (this node declared dead, as news) for
    /// its monitors and a few others: the caller sends them with [`Driver::poll_transmit`]
    /// at once, so the runners-up take over within milliseconds instead of after the
    /// detection time; the wait stays the full detection time in case they are lost.
    pub fn begin_leave(&mut self) -> Transition {
        if self.leaving {
            return Transition::default();
        }
        info!(
            leading = self.layer2.announcing().len(),
            "leaving the membership, still answering"
        );
        if let Some(m) = &mut self.membership {
            m.leave(Instant::now());
        }
        self.leaving = true;
        let mut t = Transition::default();
        let protocols: [&mut dyn AnnouncementProtocol; 1] = [&mut self.layer2];
        for p in protocols {
            let c = p.begin_leave();
            if !c.is_empty() {
                t.changes.insert(p.name(), c);
            }
        }
        self.complete(t)
    }

    /// Last step of a graceful stop: stops announcing everything.
    pub fn finish_leave(&mut self) -> Transition {
        let mut t = Transition::default();
        let protocols: [&mut dyn AnnouncementProtocol; 1] = [&mut self.layer2];
        for p in protocols {
            let c = p.withdraw_all();
            if !c.is_empty() {
                t.changes.insert(p.name(), c);
            }
        }
        t
    }
}

/// The whole graceful stop: silent in the membership, still answering for
/// `wait`, then silent on the network.
pub async fn leave<A: Announcer>(driver: &mut Driver<A>, wait: Duration) -> Transition {
    driver.begin_leave();
    tokio::time::sleep(wait).await;
    driver.finish_leave()
}

#[cfg(test)]
mod tests;
