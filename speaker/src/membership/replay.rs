//! Replay protection per peer: a boot epoch plus a sliding window over
//! per-datagram sequence numbers, as IPsec does (RFC 4303 3.4.3).
//!
//! A sender numbers its datagrams 1, 2, 3... within one boot and stamps the
//! boot's epoch (wall-clock milliseconds at start, so a restarted peer has a
//! larger one). A receiver accepts a higher epoch as a restart, rejects a
//! lower one, and within an epoch accepts each sequence number once, allowing
//! reordering up to `WINDOW` datagrams. Only authenticated datagrams reach
//! this check, so an attacker cannot advance the window.

const WINDOW: u64 = 64;

#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// `None` until the first datagram from the peer.
    epoch: Option<u64>,
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Records `(epoch, seq)` and returns whether it is fresh.
    pub fn accept(&mut self, epoch: u64, seq: u64) -> bool {
        match self.epoch {
            Some(e) if epoch < e => false,
            Some(e) if epoch == e => self.accept_seq(seq),
            _ => {
                self.epoch = Some(epoch);
                self.highest = seq;
                self.seen = 1;
                true
            }
        }
    }

    fn accept_seq(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let age = self.highest - seq;
        if age >= WINDOW {
            return false;
        }
        let bit = 1u64 << age;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_number_once() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5, 1));
        assert!(!w.accept(5, 1));
        assert!(w.accept(5, 3));
        assert!(w.accept(5, 2), "reordered but fresh");
        assert!(!w.accept(5, 2));
        assert!(!w.accept(5, 3));
    }

    #[test]
    fn too_old_is_rejected() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1, 100));
        assert!(w.accept(1, 100 - 63));
        assert!(!w.accept(1, 100 - 64));
        assert!(w.accept(1, 1000));
        assert!(!w.accept(1, 999 - 64));
    }

    #[test]
    fn restart_with_higher_epoch_is_accepted_older_epoch_is_not() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10, 500));
        assert!(w.accept(11, 1), "restarted peer counts from 1 again");
        assert!(!w.accept(10, 501), "datagram from before the restart");
        assert!(w.accept(11, 2));
    }

    #[test]
    fn matches_a_set_model() {
        // Compare against a plain set of everything seen, on a fixed
        // pseudo-random order that includes repeats and reorderings.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest = 0u64;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = (highest + 4).saturating_sub(x % 80).max(1);
            let fresh = !seen.contains(&seq) && seq + WINDOW > highest;
            assert_eq!(w.accept(7, seq), fresh, "seq {seq} highest {highest}");
            if fresh {
                seen.insert(seq);
                highest = highest.max(seq);
            }
        }
    }
}
