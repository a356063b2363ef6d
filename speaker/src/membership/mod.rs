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

mod replay;
mod rng;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use replay::ReplayWindow;
use rng::Rng;
pub use wire::Key;
use wire::{Body, MAX_NAME_LEN, Message, Update, WireError};

/// Datagrams stay below the IPv6 minimum MTU after UDP/IP headers, so they
/// are never fragmented.
const MAX_DATAGRAM: usize = 1200;

#[derive(Debug, Clone)]
pub struct Config {
    pub probe_interval: Duration,
    /// How long after a probe its ack counts as missed. Must be below
    /// `probe_interval`.
    pub ack_timeout: Duration,
    pub suspect_after_misses: u32,
    /// After the misses, the monitor challenges the target directly (a
    /// `Suspect` it refutes if alive) and votes only if nothing arrives from
    /// it within this time.
    pub confirm_timeout: Duration,
    /// Monitors per node (k).
    pub monitors: usize,
    /// Distinct monitor votes needed to declare a node dead.
    pub confirmations: usize,
    pub vote_ttl: Duration,
    pub gossip_fanout: usize,
    /// Updates piggybacked per probe/ack at most.
    pub piggyback_max: usize,
    pub rumor_retransmits: u32,
    /// Direct probes (each `ack_timeout` apart) a second-hand death must go
    /// unanswered before we believe it.
    pub verify_attempts: u32,
    pub dead_probe_interval: Duration,
    pub isolation_timeout: Duration,
    /// After `rotate_key`, how long the old key keeps signing (while the new
    /// one is already accepted), and then how long it is still accepted.
    /// Longer than it takes every speaker to see the new Secret, so no two
    /// speakers ever lack a key in common.
    pub key_rotation_delay: Duration,
    /// How long after readmitting a node its pushed death news is only
    /// verified, not believed: right after a partition heals, the other side
    /// may still be pushing deaths it declared just before the heal.
    pub readmit_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            probe_interval: Duration::from_millis(100),
            ack_timeout: Duration::from_millis(50),
            suspect_after_misses: 3,
            confirm_timeout: Duration::from_millis(30),
            monitors: 3,
            confirmations: 2,
            vote_ttl: Duration::from_millis(300),
            gossip_fanout: 4,
            piggyback_max: 8,
            rumor_retransmits: 6,
            verify_attempts: 4,
            dead_probe_interval: Duration::from_millis(500),
            isolation_timeout: Duration::from_millis(300),
            readmit_grace: Duration::from_secs(1),
            key_rotation_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid membership configuration: {0}")]
    Config(&'static str),
    #[error("node name {0:?} is empty or longer than 255 bytes")]
    Name(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Config {
    fn validate(&self) -> Result<(), MembershipError> {
        let bad = |m| Err(MembershipError::Config(m));
        if self.monitors == 0 || self.confirmations == 0 {
            return bad("monitors and confirmations must be at least 1");
        }
        if self.confirmations > self.monitors {
            return bad("confirmations cannot exceed monitors");
        }
        if self.ack_timeout >= self.probe_interval || self.probe_interval.is_zero() {
            return bad("ack_timeout must be shorter than a non-zero probe_interval");
        }
        if self.confirm_timeout.is_zero() {
            return bad("confirm_timeout must be non-zero");
        }
        if self.suspect_after_misses == 0 {
            return bad("suspect_after_misses must be at least 1");
        }
        if self.piggyback_max > 200 {
            return bad("piggyback_max must be at most 200");
        }
        Ok(())
    }
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

fn ring_key(name: &str) -> u64 {
    let d = Sha256::new()
        .chain_update(b"ferrolb-ring-v1\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
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

    /// Replaces the peer list (as discovered through the API). New peers
    /// start alive; peers no longer listed are forgotten, and reported
    /// `Down` if they were alive.
    pub fn set_peers<S: AsRef<str>>(
        &mut self,
        peers: impl IntoIterator<Item = S>,
        now: Instant,
    ) -> Result<(), MembershipError> {
        let mut wanted: Vec<Arc<str>> = Vec::new();
        for p in peers {
            let p = p.as_ref();
            check_name(p)?;
            if p != &*self.members[self.me].name {
                wanted.push(Arc::from(p));
            }
        }
        wanted.sort();
        wanted.dedup();
        let mut old: Vec<Option<Member>> = std::mem::take(&mut self.members)
            .into_iter()
            .map(Some)
            .collect();
        let old_index = std::mem::take(&mut self.index);
        let me = old[self.me].take().expect("self is always a member");
        let mut remap: HashMap<usize, usize> = HashMap::new();
        remap.insert(self.me, 0);
        self.members.push(me);
        for name in wanted {
            let idx = self.members.len();
            match old_index.get(&name) {
                Some(&i) if old[i].is_some() => {
                    remap.insert(i, idx);
                    self.members.push(old[i].take().expect("checked"));
                }
                _ => self.members.push(Member {
                    ring_key: ring_key(&name),
                    name,
                    incarnation: 0,
                    dead: false,
                    replay: ReplayWindow::default(),
                    // A new peer gets a full detection period before it can
                    // be suspected.
                    last_heard: Some(now),
                    revived_at: None,
                    uses_next_key: false,
                }),
            }
        }
        for gone in old.into_iter().flatten() {
            if !gone.dead {
                self.events.push_back(Event::Down(gone.name));
            }
        }
        self.me = 0;
        self.index = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let map = |i: &usize| remap.get(i).copied();
        self.watches.retain_mut(|w| match map(&w.member) {
            Some(n) => {
                w.member = n;
                true
            }
            None => false,
        });
        self.votes = std::mem::take(&mut self.votes)
            .into_iter()
            .filter_map(|(k, v)| {
                let k = map(&k)?;
                let v = v
                    .into_iter()
                    .filter_map(|mut vote| {
                        vote.voter = map(&vote.voter)?;
                        Some(vote)
                    })
                    .collect();
                Some((k, v))
            })
            .collect();
        self.rumors.retain_mut(|r| match map(&r.member) {
            Some(n) => {
                r.member = n;
                true
            }
            None => false,
        });
        self.fresh = self.fresh.iter().filter_map(map).collect();
        self.verifying.retain_mut(|v| match map(&v.member) {
            Some(n) => {
                v.member = n;
                true
            }
            None => false,
        });
        self.rebuild_ring();
        Ok(())
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

    /// Starts using `key` (the Secret changed) without a flag day: the new
    /// key is accepted at once but signs only after `key_rotation_delay`, by
    /// when every speaker accepts it; the old key is then accepted for one
    /// more delay. Calling again before the switch replaces the pending key.
    pub fn rotate_key(&mut self, key: Key, now: Instant) {
        self.next_key = Some((key, now + self.config.key_rotation_delay));
        // Peers seen using the replaced pending key have not shown they know this one.
        for m in &mut self.members {
            m.uses_next_key = false;
        }
    }

    fn advance_keys(&mut self, now: Instant) {
        if let Some((_, at)) = &self.next_key
            && now >= *at
            && let Some((next, _)) = self.next_key.take()
        {
            let old = std::mem::replace(&mut self.key, next);
            self.old_key = Some((old, now + self.config.key_rotation_delay));
            // Everyone is now signed for with what was the pending key.
            for m in &mut self.members {
                m.uses_next_key = false;
            }
        }
        if self
            .old_key
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.old_key = None;
        }
    }

    /// The message, and whether it was signed with the pending `next_key`.
    fn decode(&self, datagram: &[u8]) -> Result<(Message, bool), WireError> {
        let first = Message::decode(datagram, &self.key);
        if !matches!(first, Err(WireError::BadMac)) {
            return first.map(|m| (m, false));
        }
        if let Some((k, _)) = &self.next_key {
            let r = Message::decode(datagram, k);
            if !matches!(r, Err(WireError::BadMac)) {
                return r.map(|m| (m, true));
            }
        }
        if let Some((k, _)) = &self.old_key {
            let r = Message::decode(datagram, k);
            if !matches!(r, Err(WireError::BadMac)) {
                return r.map(|m| (m, false));
            }
        }
        first.map(|m| (m, false))
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

    /// Anything authenticated from `s` shows it alive at `incarnation`.
    fn observe(&mut self, s: usize, incarnation: u64, body: &Body, now: Instant) {
        self.members[s].last_heard = Some(now);
        if let Some(w) = self.watches.iter_mut().find(|w| w.member == s) {
            w.misses = 0;
            w.challenged = None;
            w.voting = false;
        }
        let m = &mut self.members[s];
        if m.dead {
            if incarnation > m.incarnation {
                self.set_state(s, incarnation, false);
                self.members[s].revived_at = Some(now);
            } else if !matches!(body, Body::Probe) {
                // It has not heard that it was declared dead; tell it so it
                // can refute. A probe gets the news in the ack instead.
                self.send(s, Body::Gossip, &[]);
            }
        } else if incarnation > m.incarnation {
            m.incarnation = incarnation;
            self.votes.remove(&s);
        }
    }

    /// Merges `u`; returns a member whose newer state the sender should be
    /// told because it sent us an outdated one.
    fn apply_update(
        &mut self,
        u: &Update,
        from: usize,
        spread: bool,
        now: Instant,
    ) -> Option<usize> {
        let Some(&i) = self.index.get(u.node.as_str()) else {
            // Not in our peer list (yet); the API is the authority on who exists.
            return None;
        };
        if i == self.me {
            let mine = self.members[i].incarnation;
            if u.dead && u.incarnation >= mine {
                self.refute(u.incarnation);
                // A death must be undone everywhere it may have spread.
                self.fresh.push(self.me);
                self.send_news(from, Body::Gossip, &[self.me]);
            } else if !u.dead && u.incarnation > mine {
                // We restarted and lost our old incarnation; continue from it.
                self.members[i].incarnation = u.incarnation;
            }
            return None;
        }
        let m = &self.members[i];
        if (u.incarnation, u.dead) <= (m.incarnation, m.dead) {
            // The sender missed a change of state (typically a revival it
            // was not pushed); this is how its view catches up.
            return (u.dead != m.dead).then_some(i);
        }
        if u.dead == m.dead {
            // A newer incarnation of a node in the same state: a refutation.
            // Monitors holding votes were told directly; forward it only if
            // it is news meant for everyone (a refuted death).
            self.members[i].incarnation = u.incarnation;
            self.votes.remove(&i);
            if spread {
                self.fresh.push(i);
            }
        } else if !u.dead || spread {
            // Revivals are safe to believe (only the node itself can raise
            // its incarnation) and pushed deaths come from the confirming
            // quorum through live nodes.
            self.set_state(i, u.incarnation, u.dead);
            if !u.dead {
                self.members[i].revived_at = Some(now);
            }
        } else {
            // A death that is not news (an anti-entropy repeat, or news from
            // a node readmitted moments ago) may be a stale view from across
            // a healed partition. Ask the node itself, with the claim
            // attached so that it can refute.
            self.verify(i, u.incarnation, now);
        }
        None
    }

    fn verify(&mut self, i: usize, incarnation: u64, now: Instant) {
        if self.verifying.iter().any(|v| v.member == i) {
            return;
        }
        self.verifying.push(Verify {
            member: i,
            incarnation,
            tries: 1,
            probe_sent: now,
        });
        self.send_claim(i, incarnation);
    }

    fn send_claim(&mut self, i: usize, incarnation: u64) {
        let claim = Update {
            node: self.members[i].name.to_string(),
            incarnation,
            dead: true,
            news: false,
        };
        self.send_with(i, Body::Probe, Some(claim), &[], false);
    }

    fn check_verifications(&mut self, now: Instant) {
        let timeout = self.config.ack_timeout;
        let mut pending = std::mem::take(&mut self.verifying);
        let mut confirmed = Vec::new();
        pending.retain_mut(|v| {
            if now < v.probe_sent + timeout {
                return true;
            }
            let m = &self.members[v.member];
            // Strictly after: nothing received at the instant of sending answers it.
            let answered = m.last_heard.is_some_and(|h| h > v.probe_sent);
            if answered || m.dead || m.incarnation > v.incarnation {
                return false;
            }
            if v.tries >= self.config.verify_attempts {
                confirmed.push((v.member, v.incarnation));
                return false;
            }
            v.tries += 1;
            v.probe_sent = now;
            true
        });
        let retry: Vec<(usize, u64)> = pending
            .iter()
            .filter(|v| v.probe_sent == now)
            .map(|v| (v.member, v.incarnation))
            .collect();
        self.verifying = pending;
        for (i, inc) in retry {
            self.send_claim(i, inc);
        }
        for (i, inc) in confirmed {
            self.set_state(i, inc, true);
        }
    }

    fn refute(&mut self, seen: u64) {
        let me = &mut self.members[self.me];
        me.incarnation = me.incarnation.max(seen) + 1;
        self.stats.refutations += 1;
    }

    fn set_state(&mut self, i: usize, incarnation: u64, dead: bool) {
        let m = &mut self.members[i];
        m.incarnation = incarnation;
        m.dead = dead;
        let name = m.name.clone();
        self.events.push_back(if dead {
            Event::Down(name)
        } else {
            Event::Up(name)
        });
        self.votes.remove(&i);
        self.ring_dirty = true;
        self.fresh.push(i);
        self.rumors.retain(|r| r.member != i);
        self.rumors.push_back(Rumor {
            member: i,
            left: self.config.rumor_retransmits,
        });
    }

    fn on_suspect(&mut self, from: usize, target: &str, incarnation: u64, now: Instant) {
        let Some(&t) = self.index.get(target) else {
            return;
        };
        if t == self.me {
            if incarnation >= self.members[t].incarnation {
                self.refute(incarnation);
            }
            // Tell the suspecter and our monitors, who hold the votes.
            let mut to = self.successors(self.me);
            to.push(from);
            to.sort_unstable();
            to.dedup();
            for p in to {
                self.send(p, Body::Gossip, &[self.me]);
            }
            return;
        }
        let m = &self.members[t];
        if m.dead || incarnation != m.incarnation {
            return;
        }
        self.add_vote(t, from, incarnation, now);
    }

    fn add_vote(&mut self, target: usize, voter: usize, incarnation: u64, now: Instant) {
        let ttl = self.config.vote_ttl;
        let votes = self.votes.entry(target).or_default();
        votes.retain(|v| v.voter != voter && v.at + ttl > now && v.incarnation == incarnation);
        votes.push(Vote {
            voter,
            incarnation,
            at: now,
        });
        let (needed, _) = self.requirement(target);
        if self.votes[&target].len() >= needed {
            self.stats.declared_dead += 1;
            self.set_state(target, incarnation, true);
        }
    }

    /// Votes and, for our own suspicion, consecutive misses needed against
    /// `target`. With fewer monitors than `confirmations` (tiny clusters) one
    /// vote must do, so that monitor waits twice as many misses instead.
    fn requirement(&self, target: usize) -> (usize, u32) {
        let monitors = self.successors(target).len();
        if monitors >= self.config.confirmations {
            (self.config.confirmations, self.config.suspect_after_misses)
        } else {
            (monitors.max(1), self.config.suspect_after_misses * 2)
        }
    }

    fn probe_round(&mut self, now: Instant) {
        let targets: Vec<usize> = self.watches.iter().map(|w| w.member).collect();
        for w in &mut self.watches {
            w.probe_sent = Some(now);
        }
        for t in targets {
            self.send(t, Body::Probe, &[]);
        }
    }

    fn check_acks(&mut self, now: Instant) {
        let mut suspects = Vec::new();
        for w in &mut self.watches {
            let Some(sent) = w.probe_sent else { continue };
            let heard = self.members[w.member].last_heard.is_some_and(|h| h > sent);
            if !heard {
                w.misses += 1;
                suspects.push((w.member, w.misses));
            }
        }
        for (t, misses) in suspects {
            let (_, needed) = self.requirement(t);
            if misses < needed {
                continue;
            }
            let Some(w) = self.watches.iter_mut().find(|w| w.member == t) else {
                continue;
            };
            if w.voting {
                // Still silent: keep our vote fresh and re-tell the others.
                self.vote_against(t, now);
            } else if w.challenged.is_none() {
                // Misses alone are often just loss; give the target one
                // direct chance to answer before involving anyone else.
                w.challenged = Some(now);
                let body = Body::Suspect {
                    target: self.members[t].name.to_string(),
                    incarnation: self.members[t].incarnation,
                };
                self.send(t, body, &[]);
            }
        }
    }

    fn check_challenges(&mut self, now: Instant) {
        let timeout = self.config.confirm_timeout;
        let mut due = Vec::new();
        for w in &mut self.watches {
            if let (Some(c), false) = (w.challenged, w.voting)
                && now >= c + timeout
            {
                w.voting = true;
                due.push(w.member);
            }
        }
        for t in due {
            self.vote_against(t, now);
        }
    }

    fn vote_against(&mut self, t: usize, now: Instant) {
        self.stats.suspicions += 1;
        let incarnation = self.members[t].incarnation;
        let body = Body::Suspect {
            target: self.members[t].name.to_string(),
            incarnation,
        };
        let mut to = self.successors(t);
        to.retain(|&p| p != self.me);
        to.push(t);
        for p in to {
            self.send(p, body.clone(), &[]);
        }
        self.add_vote(t, self.me, incarnation, now);
    }

    fn probe_dead(&mut self) {
        if self.dead_list.is_empty() {
            return;
        }
        let t = self.dead_list[self.rng.below(self.dead_list.len())];
        self.send(t, Body::Probe, &[]);
    }

    /// End of every input: apply ring changes, push fresh changes, update
    /// isolation.
    fn finish(&mut self, now: Instant) {
        if self.ring_dirty {
            self.rebuild_ring();
        }
        if !self.fresh.is_empty() {
            let mut fresh = std::mem::take(&mut self.fresh);
            fresh.sort_unstable();
            fresh.dedup();
            let peers = self.ring.len() - 1;
            let fanout = self.config.gossip_fanout.min(peers);
            let mut targets = Vec::with_capacity(fanout);
            let mut tries = 0;
            while targets.len() < fanout && tries < fanout * 8 {
                tries += 1;
                let c = self.ring[self.rng.below(self.ring.len())];
                if c != self.me && !targets.contains(&c) {
                    targets.push(c);
                }
            }
            for t in targets {
                for chunk in fresh.chunks(32) {
                    self.send_news(t, Body::Gossip, chunk);
                }
            }
        }
        let live_peers = self.ring.len() - 1;
        let silent = now.saturating_duration_since(self.last_rx) > self.config.isolation_timeout;
        let isolated = live_peers >= 2 && silent;
        if isolated != self.isolated {
            self.isolated = isolated;
            self.events.push_back(if isolated {
                Event::Isolated
            } else {
                Event::Reconnected
            });
        }
    }

    fn rebuild_ring(&mut self) {
        self.ring_dirty = false;
        let mut ring: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.members[i].dead)
            .collect();
        ring.sort_unstable_by(|&a, &b| {
            let (ma, mb) = (&self.members[a], &self.members[b]);
            (ma.ring_key, &ma.name).cmp(&(mb.ring_key, &mb.name))
        });
        self.ring_pos = vec![None; self.members.len()];
        for (pos, &i) in ring.iter().enumerate() {
            self.ring_pos[i] = Some(pos);
        }
        self.ring = ring;
        self.dead_list = (0..self.members.len())
            .filter(|&i| self.members[i].dead)
            .collect();
        let n = self.ring.len();
        let k = self.config.monitors.min(n - 1);
        let pos = self.ring_pos[self.me].expect("self is always live");
        let preds: Vec<usize> = (1..=k).map(|d| self.ring[(pos + n - d) % n]).collect();
        let old = std::mem::take(&mut self.watches);
        self.watches = preds
            .into_iter()
            .map(|p| {
                old.iter()
                    .find(|w| w.member == p)
                    .cloned()
                    .unwrap_or(Watch {
                        member: p,
                        misses: 0,
                        probe_sent: None,
                        challenged: None,
                        voting: false,
                    })
            })
            .collect();
    }

    /// The monitors of `i`: its k ring successors, in our view.
    fn successors(&self, i: usize) -> Vec<usize> {
        let Some(pos) = self.ring_pos[i] else {
            return Vec::new();
        };
        let n = self.ring.len();
        let k = self.config.monitors.min(n - 1);
        (1..=k).map(|d| self.ring[(pos + d) % n]).collect()
    }

    fn update_for(&self, i: usize) -> Update {
        let m = &self.members[i];
        Update {
            node: m.name.to_string(),
            incarnation: m.incarnation,
            dead: m.dead,
            news: false,
        }
    }

    /// Sends `body` to member `to` with `forced` updates first, then, space
    /// permitting, queued rumors and one rotating dead entry.
    fn send(&mut self, to: usize, body: Body, forced: &[usize]) {
        self.send_with(to, body, None, forced, false);
    }

    /// Like `send`, with `forced` marked as news for the receiver to act on
    /// and forward.
    fn send_news(&mut self, to: usize, body: Body, forced: &[usize]) {
        self.send_with(to, body, None, forced, true);
    }

    fn send_with(
        &mut self,
        to: usize,
        body: Body,
        first: Option<Update>,
        forced: &[usize],
        forced_news: bool,
    ) {
        let me = self.me;
        let mut budget = MAX_DATAGRAM
            .saturating_sub(64 + wire::TAG_LEN + self.members[me].name.len() + MAX_NAME_LEN);
        let mut updates: Vec<Update> = Vec::new();
        let mut push = |u: Update, updates: &mut Vec<Update>| {
            let len = wire::update_len(&u.node);
            if len <= budget && updates.len() < 255 && !updates.iter().any(|x| x.node == u.node) {
                budget -= len;
                updates.push(u);
            }
        };
        if let Some(u) = first {
            push(u, &mut updates);
        }
        // A peer we think dead hears it from us first, so it can refute.
        if self.members[to].dead {
            push(self.update_for(to), &mut updates);
        }
        for &f in forced {
            let mut u = self.update_for(f);
            u.news = forced_news;
            push(u, &mut updates);
        }
        let mut carried = 0;
        for r in self.rumors.iter_mut() {
            if carried >= self.config.piggyback_max {
                break;
            }
            let u = {
                let m = &self.members[r.member];
                Update {
                    node: m.name.to_string(),
                    incarnation: m.incarnation,
                    dead: m.dead,
                    news: true,
                }
            };
            let before = updates.len();
            push(u, &mut updates);
            if updates.len() > before {
                r.left = r.left.saturating_sub(1);
                carried += 1;
            }
        }
        self.rumors.retain(|r| r.left > 0);
        if !self.dead_list.is_empty() {
            self.anti_entropy = (self.anti_entropy + 1) % self.dead_list.len();
            let d = self.dead_list[self.anti_entropy];
            push(self.update_for(d), &mut updates);
        }
        self.seq += 1;
        let msg = Message {
            sender: self.members[me].name.to_string(),
            epoch: self.epoch,
            seq: self.seq,
            incarnation: self.members[me].incarnation,
            body,
            updates,
        };
        let next = self.next_key.as_ref().map(|(k, _)| k);
        let (key, copy) = match next {
            Some(k) if self.members[to].uses_next_key => (k, None),
            // During a rotation, a peer we monitor that is missing probes may know
            // only the pending key (restarted since it changed, before it has sent
            // us anything), or only the current one (it has not seen the Secret
            // yet): it gets both, each copy readable by one of them.
            Some(k) if self.watches.iter().any(|w| w.member == to && w.misses > 0) => {
                (&self.key, Some(k))
            }
            _ => (&self.key, None),
        };
        // Names were checked when added, so encoding cannot fail.
        for k in std::iter::once(key).chain(copy) {
            if let Ok(payload) = msg.encode(k) {
                self.stats.sent += 1;
                self.transmits.push_back(Transmit {
                    to: self.members[to].name.clone(),
                    payload,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
