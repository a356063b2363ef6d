//! The peer list from the API: members added, kept or forgotten, and the indices
//! of every piece of state remapped to the new list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::replay::ReplayWindow;
use super::{Event, Member, Membership, MembershipError, check_name, ring_key};

impl Membership {
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
}
