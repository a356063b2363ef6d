//! Overlapping address ranges, within a pool or between two, found by sorting instead of
//! comparing every pair: O(n log n) in the number of ranges. Each pool gets at most one
//! error for overlaps with other pools and one for overlaps within itself, naming one
//! overlapping range and counting the others, so a range shared by thousands of pools
//! costs neither quadratic time nor a quadratic list of errors.
//!
//! Drafts that name the same object (two files defining `IPAddressPool/a`) count as one
//! pool here, as they do in the error they get.

use crate::addr::{Family, to_u128};
use crate::error::{ConfigError, ErrorList};

use super::build::{PoolDraft, field_of};

/// One range of one pool, as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    family: Family,
    start: u128,
    end: u128,
    /// The pool's object, numbered (see `owners`).
    owner: usize,
    draft: usize,
    /// Position of the range in its draft's (sorted) ranges.
    range: usize,
}

/// What the sweep found about one span; `Span`s and `Found`s share their index.
#[derive(Clone, Copy, Debug, Default)]
struct Found {
    /// Overlapping ranges of other pools, and one of them.
    others: usize,
    other_example: Option<usize>,
    /// Ranges of the same pool that overlap it and sort before it, and one of them.
    earlier_siblings: usize,
    sibling_example: Option<usize>,
}

/// Adds the overlap errors of `pools` to `errors`.
pub(super) fn check_overlaps(pools: &[PoolDraft], errors: &mut ErrorList) {
    let (spans, found) = find(pools);
    report(pools, &spans, &found, errors);
}

/// Every range of `pools` and what overlaps it.
fn find(pools: &[PoolDraft]) -> (Vec<Span>, Vec<Found>) {
    let spans = spans(pools);
    let mut found = vec![Found::default(); spans.len()];
    for (lo, hi) in runs(&spans, |s| s.family) {
        sweep(&spans[lo..hi], lo, &mut found[lo..hi]);
    }
    // The same sweep per pool finds the siblings; its counts are also what the
    // whole-family counts above included and must not count as other pools.
    let mut by_owner: Vec<usize> = (0..spans.len()).collect();
    by_owner.sort_by_key(|&i| (spans[i].owner, i));
    for (lo, hi) in runs(&by_owner, |&i| (spans[i].owner, spans[i].family)) {
        let ids = &by_owner[lo..hi];
        let own: Vec<Span> = ids.iter().map(|&i| spans[i]).collect();
        let mut own_found = vec![Found::default(); own.len()];
        let same = sweep(&own, 0, &mut own_found);
        for (k, &i) in ids.iter().enumerate() {
            found[i].others -= same[k];
            found[i].earlier_siblings = own_found[k].earlier_siblings;
            found[i].sibling_example = own_found[k].sibling_example.map(|j| ids[j]);
        }
    }
    (spans, found)
}

/// Every range of every draft, sorted by family, then address.
fn spans(pools: &[PoolDraft]) -> Vec<Span> {
    let owners = owners(pools);
    let mut spans = Vec::with_capacity(pools.iter().map(|d| d.pool.ranges.len()).sum());
    for (draft, d) in pools.iter().enumerate() {
        let owner = owners[draft];
        for (range, r) in d.pool.ranges.iter().enumerate() {
            spans.push(Span {
                family: r.family(),
                start: to_u128(r.start()),
                end: to_u128(r.end()),
                owner,
                draft,
                range,
            });
        }
    }
    spans.sort_unstable();
    spans
}

/// For each draft, a number for its object, the same for equal objects: the position of
/// the first of them in object order.
fn owners(pools: &[PoolDraft]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pools.len()).collect();
    order.sort_by(|&a, &b| pools[a].object.cmp(&pools[b].object));
    let mut owners = vec![0; pools.len()];
    for (lo, hi) in runs(&order, |&d| &pools[d].object) {
        for &d in &order[lo..hi] {
            owners[d] = lo;
        }
    }
    owners
}

/// `(start, end)` of each run of consecutive items with the same key.
fn runs<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut lo = 0;
    for i in 1..=items.len() {
        if i == items.len() || key(&items[i]) != key(&items[lo]) {
            out.push((lo, i));
            lo = i;
        }
    }
    out
}

/// For spans of one family sorted by start: how many other spans overlap each one
/// (returned, and stored in `others` with an example of another owner), and how many
/// spans of the same owner overlap it from before (`earlier_siblings`, with the one
/// that reaches furthest as example). Examples are indices plus `offset`.
fn sweep(spans: &[Span], offset: usize, found: &mut [Found]) -> Vec<usize> {
    let mut ends: Vec<u128> = spans.iter().map(|s| s.end).collect();
    ends.sort_unstable();
    // For each span, the next one of another owner: the later span of another owner
    // that starts first.
    let mut next_other = vec![None; spans.len()];
    for i in (0..spans.len().saturating_sub(1)).rev() {
        next_other[i] = if spans[i + 1].owner != spans[i].owner {
            Some(i + 1)
        } else {
            next_other[i + 1]
        };
    }
    // The earlier span that ends last, and the one that ends last among the owners
    // other than the first one's: whatever a span's owner, one of them is the earlier
    // span of another owner most likely to reach it.
    let mut furthest: Option<usize> = None;
    let mut furthest_other: Option<usize> = None;
    let mut overlapping = Vec::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        // Spans starting at or before this one's end, less those ending before its start
        // (which all start before it too), less itself.
        let starting = spans.partition_point(|t| t.start <= s.end);
        let ended = ends.partition_point(|&e| e < s.start);
        overlapping.push(starting - ended - 1);
        let before = [furthest, furthest_other]
            .into_iter()
            .flatten()
            .find(|&j| spans[j].owner != s.owner)
            .filter(|&j| spans[j].end >= s.start);
        let after = next_other[i].filter(|&j| spans[j].start <= s.end);
        found[i].others = starting - ended - 1;
        found[i].other_example = before.or(after).map(|j| j + offset);
        // Siblings: the same counts when every span has one owner (the per-pool sweep).
        let reach = furthest.filter(|&j| spans[j].end >= s.start);
        found[i].sibling_example = reach.map(|j| j + offset);
        found[i].earlier_siblings = i - ended.min(i);
        // Keep the two furthest-reaching spans of distinct owners.
        match furthest {
            Some(f) if spans[f].end >= s.end => {
                if spans[f].owner != s.owner && furthest_other.is_none_or(|o| spans[o].end < s.end)
                {
                    furthest_other = Some(i);
                }
            }
            Some(f) => {
                if spans[f].owner != s.owner {
                    furthest_other = Some(f);
                }
                furthest = Some(i);
            }
            None => furthest = Some(i),
        }
    }
    overlapping
}

/// One error per pool for overlaps with other pools and one for overlaps within it.
fn report(pools: &[PoolDraft], spans: &[Span], found: &[Found], errors: &mut ErrorList) {
    /// Per owner: (span shown, count) for other pools and for siblings.
    #[derive(Default)]
    struct Summary {
        other: Option<(usize, usize)>,
        sibling: Option<(usize, usize)>,
    }
    // The span shown is the pool's first range, as the user listed them, that overlaps.
    let position = |k: usize| {
        let s = spans[k];
        (s.draft, pools[s.draft].addresses_index[s.range])
    };
    let first = |cur: Option<(usize, usize)>, i: usize, n: usize| match cur {
        None => Some((i, n)),
        Some((j, m)) => Some((if position(i) < position(j) { i } else { j }, m + n)),
    };
    let mut owners: Vec<Summary> = Vec::new();
    owners.resize_with(pools.len(), Summary::default);
    for (i, f) in found.iter().enumerate() {
        let s = &mut owners[spans[i].owner];
        if f.others > 0 {
            s.other = first(s.other, i, f.others);
        }
        if f.earlier_siblings > 0 {
            s.sibling = first(s.sibling, i, f.earlier_siblings);
        }
    }
    let range_of = |i: usize| {
        let d = &pools[spans[i].draft];
        (
            d,
            d.pool.ranges[spans[i].range],
            d.addresses_index[spans[i].range],
        )
    };
    let more = |n: usize, what: &str| match n {
        0 | 1 => String::new(),
        n => format!(" (and {} more overlaps {what})", n - 1),
    };
    for s in &owners {
        if let Some((i, n)) = s.other
            && let Some(j) = found[i].other_example
        {
            let (d, r, index) = range_of(i);
            let (other, o, _) = range_of(j);
            errors.push(ConfigError {
                object: d.object.clone(),
                field: format!(
                    "{}[{index}]",
                    field_of(&d.object, "addresses", "spec.addresses")
                ),
                message: format!(
                    "range {r} overlaps range {o} of {}{}",
                    other.object,
                    more(n, "with other pools")
                ),
            });
        }
        if let Some((i, n)) = s.sibling
            && let Some(j) = found[i].sibling_example
        {
            let (d, r, index) = range_of(i);
            let (_, o, other_index) = range_of(j);
            errors.push(ConfigError {
                object: d.object.clone(),
                field: format!(
                    "{}[{index}]",
                    field_of(&d.object, "addresses", "spec.addresses")
                ),
                message: format!(
                    "range {r} overlaps range {o} (addresses[{other_index}]) of the same pool{}",
                    more(n, "within the pool")
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use std::collections::BTreeMap;

    use super::*;
    use crate::addr::IpRange;
    use crate::error::ObjectRef;
    use crate::model::Pool;

    fn overlaps(a: &Span, b: &Span) -> bool {
        a.family == b.family && a.start <= b.end && b.start <= a.end
    }

    /// Drafts named from a small set (so that some share an object), each with a few
    /// ranges in a small space of either family (so that overlaps are common).
    fn drafts() -> impl Strategy<Value = Vec<PoolDraft>> {
        let range = (any::<bool>(), 0u32..40, 0u32..6).prop_map(|(v6, a, len)| {
            let ip = |n: u32| -> IpAddr {
                if v6 {
                    Ipv6Addr::from(u128::from(n)).into()
                } else {
                    Ipv4Addr::from(n).into()
                }
            };
            IpRange::new(ip(a), ip(a + len)).unwrap()
        });
        let draft = (0u8..5, proptest::collection::vec(range, 1..5));
        proptest::collection::vec(draft, 0..12).prop_map(|ds| {
            ds.into_iter()
                .map(|(name, ranges)| {
                    let n = ranges.len();
                    let pool = Pool::new(format!("p{name}"), ranges, false);
                    PoolDraft {
                        object: ObjectRef::resource("IPAddressPool", &pool.name),
                        addresses_index: (0..n).rev().collect(),
                        pool,
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// The sweep finds what comparing every pair finds.
        #[test]
        fn sweep_matches_every_pair(pools in drafts()) {
            let (spans, found) = find(&pools);
            prop_assert_eq!(spans.len(), pools.iter().map(|d| d.pool.ranges.len()).sum::<usize>());
            for (i, s) in spans.iter().enumerate() {
                let f = found[i];
                let others = spans
                    .iter()
                    .filter(|t| t.owner != s.owner && overlaps(s, t))
                    .count();
                prop_assert_eq!(f.others, others);
                match f.other_example {
                    None => prop_assert_eq!(others, 0),
                    Some(j) => {
                        prop_assert!(spans[j].owner != s.owner && overlaps(s, &spans[j]));
                    }
                }
                let earlier = (0..i)
                    .filter(|&j| spans[j].owner == s.owner && overlaps(s, &spans[j]))
                    .count();
                prop_assert_eq!(f.earlier_siblings, earlier);
                match f.sibling_example {
                    None => prop_assert_eq!(earlier, 0),
                    Some(j) => {
                        prop_assert!(j < i && spans[j].owner == s.owner && overlaps(s, &spans[j]));
                    }
                }
            }
        }

        /// At most two errors per pool, and one of each kind exactly for the pools that
        /// have such overlaps.
        #[test]
        fn one_error_of_each_kind_per_pool(pools in drafts()) {
            let (spans, found) = find(&pools);
            let mut list = ErrorList::default();
            report(&pools, &spans, &found, &mut list);
            let errors = list.found();
            let owners: BTreeMap<usize, &ObjectRef> =
                spans.iter().map(|s| (s.owner, &pools[s.draft].object)).collect();
            for (owner, object) in owners {
                let mine: Vec<usize> =
                    (0..spans.len()).filter(|&i| spans[i].owner == owner).collect();
                let with_others = mine.iter().any(|&i| found[i].others > 0);
                let within = mine.iter().any(|&i| found[i].earlier_siblings > 0);
                let of = |same: bool| {
                    errors
                        .iter()
                        .filter(|e| &e.object == object && e.message.contains("of the same pool") == same)
                        .count()
                };
                prop_assert_eq!(of(false), usize::from(with_others));
                prop_assert_eq!(of(true), usize::from(within));
            }
        }
    }

    #[test]
    fn names_the_range_as_written_and_counts_the_others() {
        let r = |s: &str| s.parse::<IpRange>().unwrap();
        let draft = |name: &str, addresses: &[&str]| {
            let mut indexed: Vec<(IpRange, usize)> = addresses
                .iter()
                .enumerate()
                .map(|(i, a)| (r(a), i))
                .collect();
            indexed.sort();
            let (ranges, addresses_index): (Vec<_>, Vec<_>) = indexed.into_iter().unzip();
            PoolDraft {
                object: ObjectRef::resource("IPAddressPool", name),
                pool: Pool::new(name, ranges, false),
                addresses_index,
            }
        };
        let pools = [
            draft(
                "a",
                &["198.51.100.128/25", "198.51.100.0/30", "198.51.100.2/31"],
            ),
            draft("b", &["198.51.100.0/24"]),
            draft("c", &["198.51.100.200"]),
        ];
        let mut errors = ErrorList::default();
        check_overlaps(&pools, &mut errors);
        let text: Vec<String> = errors.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "IPAddressPool/a: spec.addresses[0]: range 198.51.100.128/25 overlaps range 198.51.100.0/24 of IPAddressPool/b (and 3 more overlaps with other pools)",
                "IPAddressPool/a: spec.addresses[2]: range 198.51.100.2/31 overlaps range 198.51.100.0/30 (addresses[1]) of the same pool",
                "IPAddressPool/b: spec.addresses[0]: range 198.51.100.0/24 overlaps range 198.51.100.0/30 of IPAddressPool/a (and 3 more overlaps with other pools)",
                "IPAddressPool/c: spec.addresses[0]: range 198.51.100.200/32 overlaps range 198.51.100.0/24 of IPAddressPool/b (and 1 more overlaps with other pools)",
            ],
            "{text:#?}"
        );
    }
}
