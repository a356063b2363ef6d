//! Failure detection: probes to the monitored ring predecessors, missed acks, the
//! direct challenge, votes among a target's monitors, and the verification of
//! second-hand death claims.

use std::time::Instant;

use super::wire::{Body, Update};
use super::{Membership, Verify, Vote};

impl Membership {
    pub(super) fn probe_round(&mut self, now: Instant) {
        let targets: Vec<usize> = self.watches.iter().map(|w| w.member).collect();
        for w in &mut self.watches {
            w.probe_sent = Some(now);
        }
        for t in targets {
            self.send(t, Body::Probe, &[]);
        }
    }

    pub(super) fn check_acks(&mut self, now: Instant) {
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

    pub(super) fn check_challenges(&mut self, now: Instant) {
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

    pub(super) fn vote_against(&mut self, t: usize, now: Instant) {
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

    pub(super) fn add_vote(&mut self, target: usize, voter: usize, incarnation: u64, now: Instant) {
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
    pub(super) fn requirement(&self, target: usize) -> (usize, u32) {
        let monitors = self.successors(target).len();
        if monitors >= self.config.confirmations {
            (self.config.confirmations, self.config.suspect_after_misses)
        } else {
            (monitors.max(1), self.config.suspect_after_misses * 2)
        }
    }

    pub(super) fn on_suspect(&mut self, from: usize, target: &str, incarnation: u64, now: Instant) {
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

    pub(super) fn probe_dead(&mut self) {
        if self.dead_list.is_empty() {
            return;
        }
        let t = self.dead_list[self.rng.below(self.dead_list.len())];
        self.send(t, Body::Probe, &[]);
    }

    pub(super) fn verify(&mut self, i: usize, incarnation: u64, now: Instant) {
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

    pub(super) fn send_claim(&mut self, i: usize, incarnation: u64) {
        let claim = Update {
            node: self.members[i].name.to_string(),
            incarnation,
            dead: true,
            news: false,
        };
        self.send_with(i, Body::Probe, Some(claim), &[], false);
    }

    pub(super) fn check_verifications(&mut self, now: Instant) {
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
}
