//! A deterministic network simulator for [`Membership`], used by the tests
//! and by `benches/membership_scale.rs`.
//!
//! Model: one event queue ordered by simulated time carries datagram
//! deliveries and node timer wake-ups. Every datagram is independently lost
//! with probability `loss` and otherwise delayed by a uniform latency. Nodes
//! can crash (stop sending, drop everything), restart with a new boot epoch,
//! or be split into partition groups that cannot reach each other. Given the
//! same seed a run is bit-for-bit reproducible; no real clock is read except
//! one `Instant` used as the origin.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::{Config, Event, Key, Membership, MembershipError};

/// The shared key all simulated nodes use unless given another.
pub const SIM_KEY: &[u8] = b"ferrolb simulation key, 32 bytes";

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub loss: f64,
    pub latency_min: Duration,
    pub latency_max: Duration,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            loss: 0.0,
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_micros(500),
        }
    }
}

#[derive(Debug)]
pub struct SimNode {
    pub membership: Membership,
    pub up: bool,
    pub sent: u64,
    pub received: u64,
    wake: Option<Duration>,
}

/// An event some node reported, with the simulated time it happened.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Duration,
    pub node: usize,
    pub event: Event,
}

#[derive(Debug)]
enum Kind {
    Deliver { to: usize, payload: Vec<u8> },
    Wake { node: usize },
}

#[derive(Debug)]
struct Entry {
    at: Duration,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug)]
pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub names: Vec<Arc<str>>,
    pub log: Vec<Logged>,
    pub net: NetConfig,
    config: Config,
    base: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    rng: Rng,
    seed: u64,
    by_name: HashMap<Arc<str>, usize>,
    group: Vec<u8>,
}

pub fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

impl Sim {
    pub fn new(
        n: usize,
        config: Config,
        net: NetConfig,
        seed: u64,
    ) -> Result<Sim, MembershipError> {
        let names: Vec<Arc<str>> = (0..n).map(|i| Arc::from(node_name(i))).collect();
        let mut sim = Sim {
            nodes: Vec::with_capacity(n),
            by_name: names.iter().cloned().zip(0..).collect(),
            names,
            log: Vec::new(),
            net,
            config,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            seed,
            group: vec![0; n],
        };
        for i in 0..n {
            let m = sim.make_node(i, 1, Key::new(SIM_KEY)?)?;
            sim.nodes.push(SimNode {
                membership: m,
                up: true,
                sent: 0,
                received: 0,
                wake: None,
            });
            sim.reschedule(i);
        }
        Ok(sim)
    }

    fn make_node(&self, i: usize, epoch: u64, key: Key) -> Result<Membership, MembershipError> {
        let now = self.base + self.now;
        let seed = self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch;
        let mut m = Membership::new(self.config.clone(), &self.names[i], key, epoch, seed, now)?;
        m.set_peers(self.names.iter().map(|n| &**n), now)?;
        Ok(m)
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    /// Replaces node `i` with a fresh boot (state lost, `epoch` must exceed
    /// the previous one) using `key`.
    pub fn restart(&mut self, i: usize, epoch: u64, key: Key) -> Result<(), MembershipError> {
        self.nodes[i].membership = self.make_node(i, epoch, key)?;
        self.nodes[i].up = true;
        self.nodes[i].wake = None;
        self.reschedule(i);
        Ok(())
    }

    /// Node `i` leaves gracefully (see `Membership::leave`); it stays up but
    /// silent until crashed or restarted.
    pub fn leave(&mut self, i: usize) {
        let now = self.base + self.now;
        self.nodes[i].membership.leave(now);
        self.drain(i);
    }

    /// Node `i` starts rotating to `key` (see `Membership::rotate_key`).
    pub fn rotate_key(&mut self, i: usize, key: Key) {
        let now = self.base + self.now;
        self.nodes[i].membership.rotate_key(key, now);
        self.reschedule(i);
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Nodes in different groups cannot exchange datagrams.
    pub fn partition(&mut self, group: Vec<u8>) {
        assert_eq!(group.len(), self.nodes.len());
        self.group = group;
    }

    pub fn heal(&mut self) {
        self.group = vec![0; self.nodes.len()];
    }

    pub fn live_view(&self, i: usize) -> BTreeSet<String> {
        self.nodes[i]
            .membership
            .live_members()
            .map(str::to_owned)
            .collect()
    }

    fn push(&mut self, at: Duration, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse(Entry {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn reschedule(&mut self, i: usize) {
        let t = self.nodes[i]
            .membership
            .poll_timeout()
            .saturating_duration_since(self.base)
            .max(self.now);
        if self.nodes[i].wake != Some(t) {
            self.nodes[i].wake = Some(t);
            self.push(t, Kind::Wake { node: i });
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(event) = self.nodes[i].membership.poll_event() {
            self.log.push(Logged {
                at: self.now,
                node: i,
                event,
            });
        }
        while let Some(t) = self.nodes[i].membership.poll_transmit() {
            self.nodes[i].sent += 1;
            let Some(&to) = self.by_name.get(&t.to) else {
                continue;
            };
            if self.group[to] != self.group[i] || self.rng.unit() < self.net.loss {
                continue;
            }
            let span = self.net.latency_max.saturating_sub(self.net.latency_min);
            let at = self.now + self.net.latency_min + span.mul_f64(self.rng.unit());
            self.push(
                at,
                Kind::Deliver {
                    to,
                    payload: t.payload,
                },
            );
        }
        self.reschedule(i);
    }

    /// Runs every event up to and including simulated time `until`.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(e)) = self.queue.peek() {
            if e.at > until {
                break;
            }
            let Some(Reverse(e)) = self.queue.pop() else {
                break;
            };
            self.now = e.at;
            let instant = self.base + self.now;
            match e.kind {
                Kind::Deliver { to, payload } => {
                    if !self.nodes[to].up {
                        continue;
                    }
                    self.nodes[to].received += 1;
                    self.nodes[to].membership.handle_datagram(instant, &payload);
                    self.drain(to);
                }
                Kind::Wake { node } => {
                    if self.nodes[node].wake != Some(e.at) {
                        continue;
                    }
                    self.nodes[node].wake = None;
                    if !self.nodes[node].up {
                        continue;
                    }
                    self.nodes[node].membership.handle_timeout(instant);
                    self.drain(node);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Events `Down(name)` logged at or after `since`, as (time, observer).
    pub fn downs_of(&self, name: &str, since: Duration) -> Vec<(Duration, usize)> {
        self.log
            .iter()
            .filter(|l| l.at >= since && matches!(&l.event, Event::Down(n) if &**n == name))
            .map(|l| (l.at, l.node))
            .collect()
    }
}
