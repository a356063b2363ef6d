//! The monitor ring: live members ordered by a hash of their name, each monitored
//! by its `monitors` ring successors.

use sha2::{Digest, Sha256};

use super::{Membership, Watch};

pub(super) fn ring_key(name: &str) -> u64 {
    let d = Sha256::new()
        .chain_update(b"ferrolb-ring-v1\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

impl Membership {
    pub(super) fn rebuild_ring(&mut self) {
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
    pub(super) fn successors(&self, i: usize) -> Vec<usize> {
        let Some(pos) = self.ring_pos[i] else {
            return Vec::new();
        };
        let n = self.ring.len();
        let k = self.config.monitors.min(n - 1);
        (1..=k).map(|d| self.ring[(pos + d) % n]).collect()
    }
}
