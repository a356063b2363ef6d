//! One speaker without Kubernetes or sockets: the API view ([`World`]), the membership
//! state machine and the [`Announcer`], tied together so that every change reaches
//! `set_leading` at once.
//!
//! The runner in [`super`] owns the socket, the clock and the API; it feeds this type
//! and carries out the side effects it reports ([`Transition`]). Tests drive several of
//! them over an in-memory network with a simulated clock.
//!
//! Safety rules enforced here rather than by the caller: without a membership key this
//! node announces nothing (an unauthenticated cluster could be made to elect anyone),
//! and while the membership reports it isolated it announces nothing either.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::state::{self, Eligibility, Liveness, Plan, World};
use crate::announce::{AnnounceSpec, Announcer};
use crate::membership::{self, Event, Key, Membership, MembershipError};

/// What changed in this node's led set, for the side effects that follow
/// `set_leading` (events, ServiceL2Status, metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// Addresses this node started leading.
    pub gained: BTreeMap<IpAddr, AnnounceSpec>,
    /// Addresses this node stopped leading.
    pub lost: BTreeSet<IpAddr>,
    /// Addresses taken over from another node that led them in the previous round.
    pub takeovers: u64,
    /// The Services of a led address changed (an address became shared, or unshared).
    pub respec: BTreeSet<IpAddr>,
}

impl Transition {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty() && self.respec.is_empty()
    }
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
    mcfg: membership::Config,
    world: World,
    eligibility: BTreeMap<IpAddr, Eligibility>,
    membership: Option<Membership>,
    announcer: A,
    plan: Plan,
    leaving: bool,
    /// The peer list last given to the membership; it is only replaced when it
    /// changes, not on every Service or EndpointSlice event.
    peers: Vec<String>,
}

impl<A: Announcer> Driver<A> {
    /// `port` is the membership port every speaker listens on.
    pub fn new(me: &str, port: u16, mcfg: membership::Config, announcer: A) -> Self {
        Self {
            me: me.to_string(),
            port,
            mcfg,
            world: World::default(),
            eligibility: BTreeMap::new(),
            membership: None,
            announcer,
            plan: Plan::default(),
            leaving: false,
            peers: Vec::new(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Changes the API view; call [`Driver::api_changed`] afterwards.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    pub fn eligibility(&self) -> &BTreeMap<IpAddr, Eligibility> {
        &self.eligibility
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn announcer(&self) -> &A {
        &self.announcer
    }

    pub fn announcer_mut(&mut self) -> &mut A {
        &mut self.announcer
    }

    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// This node's InternalIP as the API reports it.
    pub fn own_address(&self) -> Option<IpAddr> {
        self.world.nodes.get(&self.me).and_then(|n| n.internal_ip)
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
                let mut m = Membership::new(self.mcfg.clone(), &self.me, k, epoch, seed, now)?;
                self.peers = self.peer_names();
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

    fn peer_names(&self) -> Vec<String> {
        self.world
            .nodes
            .iter()
            .filter(|(n, i)| **n != self.me && i.internal_ip.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The API view changed: recomputes eligibility and the peer list, then elects.
    pub fn api_changed(&mut self, now: Instant) -> Transition {
        // Emptied first: the old and the new map are never in memory together.
        self.eligibility.clear();
        self.eligibility = self.world.eligibility();
        let peers = self.peer_names();
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
            if let Some(ip) = self.world.nodes.get(&*t.to).and_then(|n| n.internal_ip) {
                return Some((SocketAddr::new(ip, self.port), t.payload));
            }
        }
        None
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

    /// Elects and applies the result to the announcer when this node's share changed.
    pub fn reelect(&mut self) -> Transition {
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
        let new = state::plan(&self.me, &self.eligibility, liveness);
        let t = self.transition_to(&new);
        if !t.is_empty() || new.mine != self.plan.mine {
            self.announcer.set_leading(new.mine.clone());
        }
        self.plan = new;
        t
    }

    fn transition_to(&self, new: &Plan) -> Transition {
        let mut t = Transition::default();
        for (ip, spec) in &new.mine {
            match self.plan.mine.get(ip) {
                None => {
                    t.gained.insert(*ip, spec.clone());
                    if self.plan.leaders.get(ip).is_some_and(|l| *l != self.me) {
                        t.takeovers += 1;
                    }
                }
                Some(old) if old.services != spec.services => {
                    t.respec.insert(*ip);
                }
                Some(_) => {}
            }
        }
        for ip in self.plan.mine.keys() {
            if !new.mine.contains_key(ip) {
                t.lost.insert(*ip);
            }
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
    pub fn begin_leave(&mut self) {
        if !self.leaving {
            info!(
                leading = self.plan.mine.len(),
                "leaving the membership, still answering"
            );
            if let Some(m) = &mut self.membership {
                m.leave(Instant::now());
            }
            self.leaving = true;
        }
    }

    /// Last step of a graceful stop: stops answering for everything.
    pub fn finish_leave(&mut self) -> Transition {
        let t = Transition {
            lost: self.plan.mine.keys().copied().collect(),
            ..Default::default()
        };
        self.plan.mine.clear();
        self.announcer.set_leading(BTreeMap::new());
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
