//! Dense "slot" numbering of a pool's usable addresses and the free-interval
//! set built on it.
//!
//! With avoidBuggyIPs, an IPv4 /24 holds 254 usable addresses (.1 to .254).
//! Numbering only those, slot = (addr >> 8) * 254 + (addr & 0xff) - 1, makes
//! the usable addresses of a range one contiguous run of slots. The free set
//! then never contains an unusable address and never has to skip one, so the
//! rule costs arithmetic instead of a scan. Without the rule, slot = address.

use std::collections::BTreeMap;

/// Usable addresses per /24 when .0 and .255 are skipped.
const PER_24: u128 = 254;

/// Bijection between a pool's usable addresses (of one family) and slots.
/// Strictly increasing, so "lowest slot" is "lowest address".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotMap {
    skip_buggy: bool,
}

impl SlotMap {
    pub fn new(skip_buggy: bool) -> SlotMap {
        SlotMap { skip_buggy }
    }

    /// Slot of a usable address; the caller has already rejected .0/.255
    /// when they are skipped.
    pub fn slot(self, value: u128) -> u128 {
        if self.skip_buggy {
            debug_assert!(!matches!(value & 0xff, 0 | 0xff));
            (value >> 8) * PER_24 + (value & 0xff) - 1
        } else {
            value
        }
    }

    pub fn addr(self, slot: u128) -> u128 {
        if self.skip_buggy {
            ((slot / PER_24) << 8) | (slot % PER_24 + 1)
        } else {
            slot
        }
    }

    /// Slots of the usable addresses in `start..=end`, or `None` if the range
    /// holds none (e.g. `10.0.0.255-10.0.1.0` with the rule on).
    pub fn span(self, start: u128, end: u128) -> Option<(u128, u128)> {
        if !self.skip_buggy {
            return Some((start, end));
        }
        // First usable >= start and one past the last usable <= end, both as
        // slots; an exclusive bound keeps `end` in .0 from underflowing.
        let first = match start & 0xff {
            0 => (start >> 8) * PER_24,
            0xff => ((start >> 8) + 1) * PER_24,
            b => (start >> 8) * PER_24 + b - 1,
        };
        let past_last = match end & 0xff {
            0 => (end >> 8) * PER_24,
            0xff => (end >> 8) * PER_24 + PER_24,
            b => (end >> 8) * PER_24 + b,
        };
        (first < past_last).then(|| (first, past_last - 1))
    }
}

/// Disjoint, non-adjacent inclusive intervals of free slots, keyed by start.
/// Its size is bounded by (ranges + allocated addresses), not by pool size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeSet {
    intervals: BTreeMap<u128, u128>,
}

impl FreeSet {
    /// Adds a whole interval; it must not touch anything already free
    /// (pool ranges are disjoint, which the configuration check ensures).
    pub fn add_interval(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        self.intervals.insert(start, end);
        // Pools given as adjacent ranges (a-b, b+1-c) would otherwise leave
        // two touching intervals; merging keeps the "non-adjacent" invariant
        // that `put` relies on.
        self.merge_around(start);
    }

    pub fn first(&self) -> Option<u128> {
        self.intervals.first_key_value().map(|(&s, _)| s)
    }

    pub fn contains(&self, slot: u128) -> bool {
        self.containing(slot).is_some()
    }

    fn containing(&self, slot: u128) -> Option<(u128, u128)> {
        self.intervals
            .range(..=slot)
            .next_back()
            .filter(|&(_, &e)| e >= slot)
            .map(|(&s, &e)| (s, e))
    }

    /// Marks `slot` used; false if it was not free.
    pub fn take(&mut self, slot: u128) -> bool {
        let Some((s, e)) = self.containing(slot) else {
            return false;
        };
        self.intervals.remove(&s);
        if s < slot {
            self.intervals.insert(s, slot - 1);
        }
        if slot < e {
            self.intervals.insert(slot + 1, e);
        }
        true
    }

    /// Marks a used `slot` free again, merging with its neighbours.
    pub fn put(&mut self, slot: u128) {
        debug_assert!(!self.contains(slot));
        self.intervals.insert(slot, slot);
        self.merge_around(slot);
    }

    /// Merges the interval starting at `start` with touching neighbours.
    fn merge_around(&mut self, start: u128) {
        let mut s = start;
        let mut e = self.intervals[&start];
        if let Some(after) = e.checked_add(1)
            && let Some(next_end) = self.intervals.remove(&after)
        {
            e = next_end;
            self.intervals.insert(s, e);
        }
        if let Some((&ps, &pe)) = self.intervals.range(..s).next_back()
            && pe.checked_add(1) == Some(s)
        {
            self.intervals.remove(&s);
            s = ps;
            self.intervals.insert(s, e);
        }
    }

    /// Number of stored intervals (memory is proportional to this).
    pub fn interval_count(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_map_round_trips_and_skips_buggy() {
        let m = SlotMap::new(true);
        // 10.0.0.254 and 10.0.1.1 must be neighbouring slots.
        let a = 0x0a00_00fe;
        let b = 0x0a00_0101;
        assert_eq!(m.slot(a) + 1, m.slot(b));
        for v in [0x0a00_0001u128, a, b, 0xffff_fffe] {
            assert_eq!(m.addr(m.slot(v)), v);
        }
    }

    #[test]
    fn span_counts_usable_addresses() {
        let m = SlotMap::new(true);
        let count = |s, e| m.span(s, e).map_or(0, |(a, b)| b - a + 1);
        assert_eq!(count(0x0a00_0000, 0x0a00_00ff), 254);
        assert_eq!(count(0x0a00_0000, 0x0a00_ffff), 256 * 254);
        assert_eq!(count(0x0a00_00ff, 0x0a00_0100), 0);
        assert_eq!(count(0, 0), 0);
        assert_eq!(count(0xffff_ff00, 0xffff_ffff), 254);
        assert_eq!(count(0x0a00_00fe, 0x0a00_0101), 2);
        assert_eq!(SlotMap::new(false).span(0, u128::MAX), Some((0, u128::MAX)));
    }

    #[test]
    fn free_set_take_put_merges() {
        let mut f = FreeSet::default();
        f.add_interval(10, 20);
        assert!(f.take(10));
        assert!(!f.take(10));
        assert!(f.take(15));
        assert_eq!(f.first(), Some(11));
        assert_eq!(f.interval_count(), 2);
        f.put(15);
        assert_eq!(f.interval_count(), 1);
        f.put(10);
        assert_eq!(f.interval_count(), 1);
        assert_eq!(f.first(), Some(10));
        assert!(f.contains(20) && !f.contains(21));
    }

    #[test]
    fn free_set_handles_extremes_and_adjacent_ranges() {
        let mut f = FreeSet::default();
        f.add_interval(u128::MAX - 1, u128::MAX);
        f.add_interval(0, 1);
        f.add_interval(2, 3);
        assert_eq!(f.interval_count(), 2);
        assert!(f.take(u128::MAX));
        f.put(u128::MAX);
        assert!(f.take(0));
        f.put(0);
        assert_eq!(f.interval_count(), 2);
    }
}
