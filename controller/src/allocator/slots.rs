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
    /// holds none (e.g. `198.18.0.255-198.18.1.0` with the rule on).
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

/// Disjoint, non-adjacent inclusive intervals of free slots. Its size is
/// bounded by (ranges + allocated addresses), not by pool size.
///
/// Keyed by interval *end* (value = start): taking the lowest free slot,
/// the common case, only moves an interval's start, which is an in-place
/// update of the value instead of a remove and re-insert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeSet {
    by_end: BTreeMap<u128, u128>,
}

impl FreeSet {
    /// Adds a whole interval of slots not yet free. Merging with touching
    /// neighbours keeps the "non-adjacent" invariant when a pool is given
    /// as adjacent ranges (a-b, b+1-c).
    pub fn add_interval(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        debug_assert!(
            self.by_end
                .range(start..)
                .next()
                .is_none_or(|(_, &s)| s > end)
        );
        let mut start = start;
        if let Some(prev_end) = start.checked_sub(1)
            && let Some(prev_start) = self.by_end.remove(&prev_end)
        {
            start = prev_start;
        }
        if let Some(after) = end.checked_add(1)
            && let Some((_, next_start)) = self.by_end.range_mut(after..).next()
            && *next_start == after
        {
            *next_start = start;
            return;
        }
        self.by_end.insert(end, start);
    }

    pub fn first(&self) -> Option<u128> {
        self.by_end.first_key_value().map(|(_, &s)| s)
    }

    pub fn contains(&self, slot: u128) -> bool {
        self.by_end
            .range(slot..)
            .next()
            .is_some_and(|(_, &s)| s <= slot)
    }

    /// Marks `slot` used; false if it was not free.
    pub fn take(&mut self, slot: u128) -> bool {
        let Some((&end, start)) = self.by_end.range_mut(slot..).next() else {
            return false;
        };
        let s = *start;
        if s > slot {
            return false;
        }
        if slot < end {
            // The interval keeps its end: shrink or split in place.
            *start = slot + 1;
            if s < slot {
                self.by_end.insert(slot - 1, s);
            }
        } else {
            self.by_end.remove(&end);
            if s < slot {
                self.by_end.insert(slot - 1, s);
            }
        }
        true
    }

    /// Marks a used `slot` free again, merging with its neighbours.
    pub fn put(&mut self, slot: u128) {
        debug_assert!(!self.contains(slot));
        self.add_interval(slot, slot);
    }

    /// Number of stored intervals (memory is proportional to this).
    pub fn interval_count(&self) -> usize {
        self.by_end.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_map_round_trips_and_skips_buggy() {
        let m = SlotMap::new(true);
        // 198.18.0.254 and 198.18.1.1 must be neighbouring slots.
        let a = 0xc612_00fe;
        let b = 0xc612_0101;
        assert_eq!(m.slot(a) + 1, m.slot(b));
        for v in [0xc612_0001u128, a, b, 0xffff_fffe] {
            assert_eq!(m.addr(m.slot(v)), v);
        }
    }

    #[test]
    fn span_counts_usable_addresses() {
        let m = SlotMap::new(true);
        let count = |s, e| m.span(s, e).map_or(0, |(a, b)| b - a + 1);
        assert_eq!(count(0xc612_0000, 0xc612_00ff), 254);
        assert_eq!(count(0xc612_0000, 0xc612_ffff), 256 * 254);
        assert_eq!(count(0xc612_00ff, 0xc612_0100), 0);
        assert_eq!(count(0, 0), 0);
        assert_eq!(count(0xffff_ff00, 0xffff_ffff), 254);
        assert_eq!(count(0xc612_00fe, 0xc612_0101), 2);
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

    proptest::proptest! {
        /// Random take/put sequences against a plain set of free slots; also
        /// checks intervals stay maximal (count == number of runs).
        #[test]
        fn free_set_matches_plain_set(ops in proptest::collection::vec((proptest::bool::ANY, 0u128..40), 0..200)) {
            let mut f = FreeSet::default();
            f.add_interval(0, 9);
            f.add_interval(20, 39);
            f.add_interval(10, 14);
            let mut model: std::collections::BTreeSet<u128> = (0..15).chain(20..40).collect();
            for (take, slot) in ops {
                if take {
                    proptest::prop_assert_eq!(f.take(slot), model.remove(&slot));
                } else if !model.contains(&slot) && !(15..20).contains(&slot) {
                    f.put(slot);
                    model.insert(slot);
                }
                proptest::prop_assert_eq!(f.first(), model.first().copied());
                for x in 0..41 {
                    proptest::prop_assert_eq!(f.contains(x), model.contains(&x));
                }
                let runs = model.iter().filter(|&&x| x == 0 || !model.contains(&(x - 1))).count();
                proptest::prop_assert_eq!(f.interval_count(), runs);
            }
        }
    }
}
