//! Liveness between speakers: ferrolb's own membership protocol over UDP.
//!
//! Model. The peer list comes from the API (the caller passes it in; new
//! peers start alive so that a fresh cluster agrees at once); this module
//! decides which of those peers are alive. [`Membership`] is a pure state
//! machine: the caller feeds it datagrams and the current time and drains
//! datagrams to send ([`Transmit`], addressed by node name) and [`Event`]s.
//! A runner owns the socket and the clock.
//!
//! Detection (a monitor ring). Live members are ordered on a ring by a hash
//! of their name. Each node *monitors* its `monitors` (k) ring predecessors:
//! every `probe_interval` it sends each a `Probe` and expects an `Ack` within
//! `ack_timeout`. After `suspect_after_misses` consecutive misses it
//! *challenges* the target directly (a `Suspect` the target refutes by
//! raising its incarnation) and only if nothing arrives within
//! `confirm_timeout` does it *vote*, telling the target's other monitors.
//! When `confirmations` distinct monitors vote against the same incarnation
//! within `vote_ttl`, whoever holds the votes declares the node dead. A
//! crashed node is missed by all its monitors at once, so this costs one
//! challenge timeout; a false positive needs two monitors to each lose
//! several probes and a challenge at the same time. Each node sends 2k
//! datagrams per interval plus rare suspicion and gossip traffic, whatever
//! the cluster size.
//!
//! Dissemination. Updates order by (incarnation, dead over alive); only a
//! node itself raises its incarnation. Updates are flagged *news* when fresh
//! (a declaration, a revival, a refuted death): news is pushed at once to
//! `gossip_fanout` random live members, each of which forwards it once if it
//! changed their view (O(log n) hops), and piggybacked on the next probes and
//! acks. Every probe also carries one rotating dead entry (anti-entropy).
//! A death that is not news is a claim that may be stale, so the receiver
//! first probes its subject with the claim attached, `verify_attempts`
//! times; a live subject refutes it. A node that sends us an outdated state
//! gets ours back (a correction).
//!
//! Partitions. Each side declares the other dead and keeps probing one
//! random dead member every `dead_probe_interval`, with the dead entry
//! attached, so after the heal the probed node refutes and both sides revive
//! each other. Death claims from a node we consider dead are ignored, and a
//! readmitted node's news of deaths is only verified during `readmit_grace`,
//! since the other side may still be pushing deaths it declared just before
//! the heal. Every view then converges to the same live set without anyone
//! going down again, and the election gives one announcer per address. A
//! node that hears from nobody while it has at least two live peers is
//! *isolated* and must stop announcing: the others, not it, hold the quorum.
//!
//! Security. Every datagram carries an HMAC-SHA256 tag under a shared key
//! (from a Kubernetes Secret) and a boot epoch + sequence number checked per
//! peer, so forged, unknown-sender and replayed datagrams are dropped and
//! counted in [`Stats`]. The key authenticates the cluster, not individual
//! nodes: any key holder can speak for any name. A new key is rolled in with
//! [`Membership::rotate_key`]: accepted at once, signing only after
//! `key_rotation_delay`, so speakers that see the new Secret at different
//! times never stop understanding each other. A peer that already signs with
//! the pending key (a speaker restarted during the rotation knows only the new
//! one) is answered under it, and a monitored peer that misses probes gets
//! each message under both keys, so such a speaker is not cut off until the
//! others switch, and one that has not seen the Secret yet still understands.
//!
//! Parts: this file holds the state and the inputs ([`Membership::handle_datagram`],
//! [`Membership::handle_timeout`], [`Membership::leave`]); `ring` the monitor ring,
//! `detection` probes, challenges, votes and verification, `dissemination` updates,
//! news and datagram encoding, `peers` the peer list, `keys` key rotation, [`wire`]
//! the datagram format, `replay` the replay window, `sim` (feature `testing`) a
//! simulated network.

mod config;
mod detection;
mod dissemination;
mod keys;
mod peers;
mod replay;
mod ring;
mod rng;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::Config;
use replay::ReplayWindow;
use ring::ring_key;
use rng::Rng;
pub use wire::Key;
use wire::{Body, MAX_NAME_LEN, Update, WireError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid membership configuration: {0}")]
    Config(&'static str),
    #[error("node name {0:?} is empty or longer than 255 bytes")]
    Name(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A change in the live set, or in this node's own standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Down(Arc<str>),
    Up(Arc<str>),
    /// Nothing heard from any peer for `isolation_timeout`: stop announcing.
    Isolated,
    Reconnected,
}

/// A datagram for the runner to send to the named peer's address.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub to: Arc<str>,
    pub payload: Vec<u8>,
}

/// Counters for metrics. Every dropped datagram is counted in exactly one
/// of `malformed`, `bad_mac`, `unknown_sender`, `replayed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub sent: u64,
    pub received: u64,
    pub accepted: u64,
    pub malformed: u64,
    pub bad_mac: u64,
    pub unknown_sender: u64,
    pub replayed: u64,
    pub suspicions: u64,
    pub declared_dead: u64,
    pub refutations: u64,
}

#[derive(Debug)]
struct Member {
    name: Arc<str>,
    ring_key: u64,
    incarnation: u64,
    dead: bool,
    replay: ReplayWindow,
    last_heard: Option<Instant>,
    /// When we last readmitted it after believing it dead.
    revived_at: Option<Instant>,
    /// Its last datagram was signed with our pending `next_key`: it already
    /// uses that key (perhaps only that one), so we sign for it with it too.
    uses_next_key: bool,
}

/// Monitoring state for one ring predecessor.
#[derive(Debug, Clone)]
struct Watch {
    member: usize,
    misses: u32,
    probe_sent: Option<Instant>,
    /// When we challenged it after too many misses.
    challenged: Option<Instant>,
    /// The challenge went unanswered; we are voting against it.
    voting: bool,
}

#[derive(Debug, Clone)]
struct Vote {
    voter: usize,
    incarnation: u64,
    at: Instant,
}

/// A second-hand death claim being checked by probing its subject.
#[derive(Debug, Clone)]
struct Verify {
    member: usize,
    incarnation: u64,
    tries: u32,
    probe_sent: Instant,
}

#[derive(Debug, Clone)]
struct Rumor {
    member: usize,
    left: u32,
}

fn check_name(name: &str) -> Result<(), MembershipError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(MembershipError::Name(name.to_owned()));
    }
    Ok(())
}

/// The membership state machine of one speaker.
#[derive(Debug)]
pub struct Membership {
    config: Config,
    key: Key,
    /// A rotated-in key, accepted now, signing from the given time.
    next_key: Option<(Key, Instant)>,
    /// The rotated-out key, accepted until the given time.
    old_key: Option<(Key, Instant)>,
    me: usize,
    members: Vec<Member>,
    index: HashMap<Arc<str>, usize>,
    /// Live members including us, in ring order.
    ring: Vec<usize>,
    ring_pos: Vec<Option<usize>>,
    ring_dirty: bool,
    dead_list: Vec<usize>,
    anti_entropy: usize,
    watches: Vec<Watch>,
    votes: HashMap<usize, Vec<Vote>>,
    rumors: VecDeque<Rumor>,
    /// News learned since the last push.
    fresh: Vec<usize>,
    verifying: Vec<Verify>,
    epoch: u64,
    seq: u64,
    rng: Rng,
    next_probe: Instant,
    next_check: Option<Instant>,
    next_dead_probe: Instant,
    last_rx: Instant,
    isolated: bool,
    /// Set by `leave`: this instance is shutting down and stays silent.
    left: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Membership {
    /// `epoch` must grow across restarts of this node (wall-clock
    /// milliseconds at start do); `seed` drives probe phase and gossip
    /// target choice.
    pub fn new(
        config: Config,
        name: &str,
        key: Key,
        epoch: u64,
        seed: u64,
        now: Instant,
    ) -> Result<Membership, MembershipError> {
        config.validate()?;
        check_name(name)?;
        let mut rng = Rng::new(seed);
        // Random phase, so that nodes started together do not probe in lockstep.
        let phase = config.probe_interval.mul_f64(rng.unit());
        let name: Arc<str> = Arc::from(name);
        let mut m = Membership {
            next_probe: now + phase,
            next_check: None,
            next_dead_probe: now + config.dead_probe_interval.mul_f64(1.0 + rng.unit()),
            config,
            key,
            next_key: None,
            old_key: None,
            me: 0,
            members: Vec::new(),
            index: HashMap::new(),
            ring: Vec::new(),
            ring_pos: Vec::new(),
            ring_dirty: true,
            dead_list: Vec::new(),
            anti_entropy: 0,
            watches: Vec::new(),
            votes: HashMap::new(),
            rumors: VecDeque::new(),
            fresh: Vec::new(),
            verifying: Vec::new(),
            epoch,
            seq: 0,
            rng,
            last_rx: now,
            isolated: false,
            left: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        m.members.push(Member {
            ring_key: ring_key(&name),
            name: name.clone(),
            incarnation: 0,
            dead: false,
            replay: ReplayWindow::default(),
            last_heard: None,
            revived_at: None,
            uses_next_key: false,
        });
        m.index.insert(name, 0);
        m.rebuild_ring();
        Ok(m)
    }

    pub fn name(&self) -> &str {
        &self.members[self.me].name
    }

    pub fn incarnation(&self) -> u64 {
        self.members[self.me].incarnation
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live members, this node included, in no particular order. Feed this
    /// to `election` (unless `is_isolated`).
    pub fn live_members(&self) -> impl Iterator<Item = &str> {
        self.ring.iter().map(|&i| &*self.members[i].name)
    }

    pub fn is_alive(&self, name: &str) -> bool {
        self.index.get(name).is_some_and(|&i| !self.members[i].dead)
    }

    /// True while this node has heard from no peer for `isolation_timeout`;
    /// the others will have declared it dead, so it must not announce.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_probe.min(self.next_dead_probe);
        if let Some(c) = self.next_check {
            t = t.min(c);
        }
        for v in &self.verifying {
            t = t.min(v.probe_sent + self.config.ack_timeout);
        }
        for w in &self.watches {
            if let (Some(c), false) = (w.challenged, w.voting) {
                t = t.min(c + self.config.confirm_timeout);
            }
        }
        for (_, at) in self.next_key.iter().chain(self.old_key.iter()) {
            t = t.min(*at);
        }
        t
    }

    /// Planned shutdown: tells the monitors and a random fan-out that this
    /// node is dead at its current incarnation, as news, so the cluster fails
    /// over at once instead of after the detection time. From then on this
    /// instance is silent (it answers, refutes and sends nothing), so peers
    /// that missed the news confirm it by getting no answer. A restart
    /// rejoins with a new epoch by refuting the death as usual.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let me = self.me;
        let mut to = self.successors(me);
        to.extend(self.watches.iter().map(|w| w.member));
        let peers = self.ring.len() - 1;
        let mut tries = 0;
        while tries < self.config.gossip_fanout * 8
            && to.len() < peers.min(2 * self.config.monitors + self.config.gossip_fanout)
        {
            tries += 1;
            let c = self.ring[self.rng.below(self.ring.len())];
            if c != me && !to.contains(&c) {
                to.push(c);
            }
        }
        to.sort_unstable();
        to.dedup();
        for t in to {
            let last_words = Update {
                node: self.members[me].name.to_string(),
                incarnation: self.members[me].incarnation,
                dead: true,
                news: true,
            };
            self.send_with(t, Body::Gossip, Some(last_words), &[], false);
        }
        self.left = true;
        // Nothing is due any more; keep `poll_timeout` from firing in a loop.
        let idle = now + Duration::from_secs(24 * 3600);
        self.next_probe = idle;
        self.next_dead_probe = idle;
        self.next_check = None;
        self.verifying.clear();
        for w in &mut self.watches {
            w.challenged = None;
        }
    }

    /// True once `leave` has been called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.advance_keys(now);
        if self.next_check.is_some_and(|c| now >= c) {
            self.next_check = None;
            self.check_acks(now);
        }
        self.check_challenges(now);
        if now >= self.next_probe {
            self.probe_round(now);
            self.next_probe += self.config.probe_interval;
            if self.next_probe <= now {
                // The runner fell behind; skip missed rounds rather than burst.
                self.next_probe = now + self.config.probe_interval;
            }
            self.next_check = Some(now + self.config.ack_timeout);
        }
        if self
            .verifying
            .iter()
            .any(|v| now >= v.probe_sent + self.config.ack_timeout)
        {
            self.check_verifications(now);
        }
        if now >= self.next_dead_probe {
            self.probe_dead();
            let jitter = self
                .config
                .dead_probe_interval
                .mul_f64(self.rng.unit() * 0.5);
            self.next_dead_probe = now + self.config.dead_probe_interval + jitter;
        }
        self.finish(now);
    }

    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.received += 1;
        if self.left {
            return;
        }
        let (msg, next_key) = match self.decode(datagram) {
            Ok(m) => m,
            Err(WireError::BadMac) => {
                self.stats.bad_mac += 1;
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let sender = match self.index.get(msg.sender.as_str()) {
            Some(&i) if i != self.me => i,
            // Our own name from outside is a reflection or a forgery.
            _ => {
                self.stats.unknown_sender += 1;
                return;
            }
        };
        if !self.members[sender].replay.accept(msg.epoch, msg.seq) {
            self.stats.replayed += 1;
            return;
        }
        self.stats.accepted += 1;
        self.members[sender].uses_next_key = next_key;
        self.last_rx = now;
        self.observe(sender, msg.incarnation, &msg.body, now);
        let settled = self.members[sender]
            .revived_at
            .is_none_or(|t| now >= t + self.config.readmit_grace);
        // A sender we consider dead has a view that diverged from ours (it
        // was on the other side of a partition): its death claims about
        // others are stale until it is readmitted. Revivals stay safe to take
        // from anyone, since only a node itself raises its incarnation.
        let trusted = !self.members[sender].dead;
        let mut corrections = Vec::new();
        for u in &msg.updates {
            if (trusted || !u.dead || u.node == self.name())
                && let Some(c) = self.apply_update(u, sender, settled && u.news, now)
            {
                corrections.push(c);
            }
        }
        for chunk in corrections.chunks(32) {
            self.send(sender, Body::Gossip, chunk);
        }
        match msg.body {
            Body::Probe => self.send(sender, Body::Ack, &[]),
            Body::Suspect {
                target,
                incarnation,
            } => self.on_suspect(sender, &target, incarnation, now),
            Body::Ack | Body::Gossip => {}
        }
        self.finish(now);
    }
}

#[cfg(test)]
mod tests;
