//! Dissemination: what a received datagram tells about its sender and the updates
//! it carries, state changes and the news pushed about them, and the encoding of
//! every outgoing datagram with its piggybacked updates.

use std::time::Instant;

use super::wire::{self, Body, MAX_NAME_LEN, Message, Update};
use super::{Event, Membership, Rumor, Transmit};

/// Datagrams stay below the IPv6 minimum MTU after UDP/IP headers, so they
/// are never fragmented.
const MAX_DATAGRAM: usize = 1200;

impl Membership {
    /// Anything authenticated from `s` shows it alive at `incarnation`.
    pub(super) fn observe(&mut self, s: usize, incarnation: u64, body: &Body, now: Instant) {
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
    pub(super) fn apply_update(
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

    pub(super) fn refute(&mut self, seen: u64) {
        let me = &mut self.members[self.me];
        me.incarnation = me.incarnation.max(seen) + 1;
        self.stats.refutations += 1;
    }

    pub(super) fn set_state(&mut self, i: usize, incarnation: u64, dead: bool) {
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

    /// End of every input: apply ring changes, push fresh changes, update
    /// isolation.
    pub(super) fn finish(&mut self, now: Instant) {
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

    pub(super) fn update_for(&self, i: usize) -> Update {
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
    pub(super) fn send(&mut self, to: usize, body: Body, forced: &[usize]) {
        self.send_with(to, body, None, forced, false);
    }

    /// Like `send`, with `forced` marked as news for the receiver to act on
    /// and forward.
    pub(super) fn send_news(&mut self, to: usize, body: Body, forced: &[usize]) {
        self.send_with(to, body, None, forced, true);
    }

    pub(super) fn send_with(
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
