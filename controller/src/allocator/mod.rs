//! Pure address allocator: which service key holds which pool address.
//!
//! Model: a [`Pool`] (the configuration's own) is a name plus disjoint
//! inclusive address ranges of either family; with `avoid_buggy_ips`, IPv4
//! addresses ending in .0/.255 are never handed out. Its policy fields
//! (`auto_assign`, `allocation`) are for the caller, not bookkeeping.
//! Services are identified by an opaque key `K` (e.g. `namespace/name`). An
//! address is held by one key, or by several keys that agree to share it
//! (see [`Sharing`]); it is free again when the last holder releases it. Allocation is deterministic: the lowest address that
//! is free or shareable wins, as in MetalLB.
//!
//! Cost: per pool and family, the free addresses are kept as a set of
//! intervals over a dense "slot" numbering (see `slots`), so allocate,
//! assign and release are O(log n) in the number of held addresses and
//! memory is proportional to what is held, whatever the pool size; totals
//! are exact u128 counts (a /48 holds 2^80). The only pool-size-independent
//! but not logarithmic step is the search for a shareable address, which
//! walks the addresses already carrying the same sharing key.
//!
//! [`linear::LinearAllocator`] has the same behaviour with MetalLB's
//! scan-every-address algorithm: it is the property-test reference and the
//! benchmark baseline.

mod slots;
mod types;

pub mod linear;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::fmt::{self, Display};
use std::net::IpAddr;

pub use ferrolb_config::model::Pool;
pub use ferrolb_config::{Family, IpRange};
use slots::{FreeSet, SlotMap};
use types::Addr;
pub use types::{AllocError, PoolSetError, Proto, ShareConflict, Sharing};

/// Exact address counts of a pool (or of all pools) in one family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Addresses that may be handed out (avoidBuggyIPs already applied).
    /// Saturates at `u128::MAX`, which only the whole IPv6 space reaches.
    pub total: u128,
    /// Distinct addresses held; a shared address counts once.
    pub in_use: u128,
}

impl Stats {
    pub fn free(&self) -> u128 {
        self.total - self.in_use
    }
}

#[derive(Debug, Clone)]
struct FamilyState {
    slots: SlotMap,
    free: FreeSet,
    total: u128,
    in_use: u128,
}

#[derive(Debug, Clone)]
struct PoolState {
    pool: Pool,
    families: [FamilyState; 2],
}

/// The validated, empty shape of a configuration: pools with all their
/// addresses free, plus the lookup from address to pool.
#[derive(Debug, Clone)]
struct Layout {
    pools: Vec<PoolState>,
    by_name: BTreeMap<String, usize>,
    /// Range start -> (range end value, pool index).
    ranges: BTreeMap<Addr, (u128, usize)>,
}

impl Layout {
    fn build(pools: Vec<Pool>) -> Result<Layout, PoolSetError> {
        validate(&pools)?;
        let mut by_name = BTreeMap::new();
        let mut ranges = BTreeMap::new();
        let mut states = Vec::with_capacity(pools.len());
        for (idx, pool) in pools.into_iter().enumerate() {
            by_name.insert(pool.name.clone(), idx);
            let families = [Family::V4, Family::V6].map(|family| {
                let slots = SlotMap::new(pool.avoid_buggy_ips && family == Family::V4);
                let mut free = FreeSet::default();
                let mut total = 0u128;
                for r in pool.ranges.iter().filter(|r| r.family() == family) {
                    let (s, e) = (Addr::from(r.start()).value, Addr::from(r.end()).value);
                    if let Some((a, b)) = slots.span(s, e) {
                        free.add_interval(a, b);
                        // b - a + 1 overflows only for the whole IPv6 space.
                        total = total.saturating_add((b - a).saturating_add(1));
                    }
                }
                FamilyState {
                    slots,
                    free,
                    total,
                    in_use: 0,
                }
            });
            for r in &pool.ranges {
                ranges.insert(Addr::from(r.start()), (Addr::from(r.end()).value, idx));
            }
            states.push(PoolState { pool, families });
        }
        Ok(Layout {
            pools: states,
            by_name,
            ranges,
        })
    }

    fn pool_index_of(&self, addr: Addr) -> Option<usize> {
        self.ranges
            .range(..=addr)
            .next_back()
            .filter(|(start, (end, _))| start.family == addr.family && *end >= addr.value)
            .map(|(_, &(_, idx))| idx)
    }

    /// The pool that may hand out `addr`: none if outside every range or an
    /// address the pool's avoidBuggyIPs rule excludes.
    fn usable_pool_of(&self, addr: Addr) -> Option<usize> {
        self.pool_index_of(addr)
            .filter(|&idx| !(self.pools[idx].pool.avoid_buggy_ips && addr.is_buggy()))
    }
}

/// Checks what the allocator relies on: unique pool names and disjoint ranges
/// across all pools. `ferrolb-config` validates the same rules for users; this
/// re-check keeps the allocator's invariants local.
pub(crate) fn validate(pools: &[Pool]) -> Result<(), PoolSetError> {
    let mut names = BTreeSet::new();
    let mut all: Vec<(Addr, Addr, &str, IpRange)> = Vec::new();
    for pool in pools {
        if !names.insert(pool.name.as_str()) {
            return Err(PoolSetError::DuplicatePool(pool.name.clone()));
        }
        for r in &pool.ranges {
            all.push((Addr::from(r.start()), Addr::from(r.end()), &pool.name, *r));
        }
    }
    all.sort();
    for pair in all.windows(2) {
        let (_, end_a, pool_a, a) = &pair[0];
        let (start_b, _, pool_b, b) = &pair[1];
        if start_b <= end_a {
            return Err(PoolSetError::Overlap {
                pool_a: pool_a.to_string(),
                a: *a,
                pool_b: pool_b.to_string(),
                b: *b,
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Entry<K> {
    pool: usize,
    /// Non-empty; all holders carry the same sharing key and compat and
    /// pairwise disjoint ports (each was checked against all others).
    holders: Vec<(K, Sharing)>,
}

impl<K> Entry<K> {
    fn share_key(&self) -> Option<&String> {
        self.holders.first().and_then(|(_, s)| s.key.as_ref())
    }
}

/// Address bookkeeping for all pools. See the module docs for the model.
#[derive(Debug, Clone)]
pub struct Allocator<K> {
    layout: Layout,
    held: BTreeMap<Addr, Entry<K>>,
    /// Sorted addresses per key. A key holds one address per family at
    /// most in practice, so a Vec is smaller and faster than a tree node.
    by_key: BTreeMap<K, Vec<Addr>>,
    /// Addresses whose holders share under a given key: the only candidates
    /// for sharing, so finding one never scans the pool.
    by_share_key: BTreeMap<String, BTreeSet<Addr>>,
}

impl<K: Ord + Clone + Display> Allocator<K> {
    /// An allocator over `pools` with nothing held.
    pub fn new(pools: Vec<Pool>) -> Result<Allocator<K>, PoolSetError> {
        Ok(Allocator {
            layout: Layout::build(pools)?,
            held: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_share_key: BTreeMap::new(),
        })
    }

    /// Replaces the pool configuration. Every held address that is still
    /// usable in some pool stays with its holders (possibly now counted in
    /// another pool); the others are released and returned per key, and the
    /// caller must clear them from those services. On error nothing changes.
    pub fn set_pools(
        &mut self,
        pools: Vec<Pool>,
    ) -> Result<BTreeMap<K, Vec<IpAddr>>, PoolSetError> {
        let mut layout = Layout::build(pools)?;
        let mut evicted: BTreeMap<K, Vec<IpAddr>> = BTreeMap::new();
        let held = std::mem::take(&mut self.held);
        for (addr, mut entry) in held {
            match layout.usable_pool_of(addr) {
                Some(idx) => {
                    let fam = &mut layout.pools[idx].families[addr.family.index()];
                    let taken = fam.free.take(fam.slots.slot(addr.value));
                    debug_assert!(taken, "held addresses are unique");
                    fam.in_use += 1;
                    entry.pool = idx;
                    self.held.insert(addr, entry);
                }
                None => {
                    if let Some(sk) = entry.share_key() {
                        remove_from_index(&mut self.by_share_key, sk, addr);
                    }
                    for (key, _) in entry.holders {
                        remove_key_addr(&mut self.by_key, &key, addr);
                        evicted.entry(key).or_default().push(addr.ip());
                    }
                }
            }
        }
        self.layout = layout;
        Ok(evicted)
    }

    /// Gives `key` the lowest address of `family` in `pool` that is free or
    /// that its current holders agree to share with `sharing`.
    ///
    /// If `key` already holds an address of that family in that pool, that
    /// address is kept (with `sharing` re-checked against its co-holders),
    /// so repeating a call is idempotent. Addresses `key` holds in other
    /// pools are left alone: moving a service is release, then allocate.
    pub fn allocate_next(
        &mut self,
        pool: &str,
        family: Family,
        key: K,
        sharing: Sharing,
    ) -> Result<IpAddr, AllocError> {
        let idx = *self
            .layout
            .by_name
            .get(pool)
            .ok_or_else(|| AllocError::UnknownPool(pool.to_string()))?;
        let fam = &self.layout.pools[idx].families[family.index()];
        if fam.total == 0 {
            return Err(AllocError::NoFamily {
                pool: pool.to_string(),
                family,
            });
        }
        // One `by_key` search for a new key: its vacant entry stays open
        // while the address is picked from the other (disjoint) fields.
        let vacant = match self.by_key.entry(key) {
            btree_map::Entry::Vacant(vacant) => vacant,
            btree_map::Entry::Occupied(occupied) => {
                let key = occupied.key().clone();
                if let Some(addr) = self.held_in(&key, idx, family) {
                    self.check_share(addr, &key, &sharing)?;
                    self.hold(addr, idx, key, sharing);
                    return Ok(addr.ip());
                }
                let addr = pick(
                    &self.layout,
                    &self.held,
                    &self.by_share_key,
                    idx,
                    family,
                    &key,
                    &sharing,
                )?;
                self.hold(addr, idx, key, sharing);
                return Ok(addr.ip());
            }
        };
        let addr = pick(
            &self.layout,
            &self.held,
            &self.by_share_key,
            idx,
            family,
            vacant.key(),
            &sharing,
        )?;
        let key = vacant.key().clone();
        vacant.insert(vec![addr]);
        hold_addr(
            &mut self.layout,
            &mut self.held,
            &mut self.by_share_key,
            addr,
            idx,
            key,
            sharing,
        );
        Ok(addr.ip())
    }

    /// Gives `key` the requested address `ip`. With `pool`, the address must
    /// belong to that pool. Fails if the address is outside every pool,
    /// excluded by avoidBuggyIPs, or held by a key it cannot share with.
    /// Re-assigning an address `key` already holds updates its sharing.
    pub fn assign(
        &mut self,
        pool: Option<&str>,
        ip: IpAddr,
        key: K,
        sharing: Sharing,
    ) -> Result<(), AllocError> {
        let addr = Addr::from(ip);
        let idx = self
            .layout
            .pool_index_of(addr)
            .ok_or(AllocError::NotInAnyPool(ip))?;
        let state = &self.layout.pools[idx];
        if let Some(requested) = pool
            && requested != state.pool.name
        {
            return Err(AllocError::WrongPool {
                ip,
                requested: requested.to_string(),
                actual: state.pool.name.clone(),
            });
        }
        if state.pool.avoid_buggy_ips && addr.is_buggy() {
            return Err(AllocError::Buggy {
                ip,
                pool: state.pool.name.clone(),
            });
        }
        self.check_share(addr, &key, &sharing)?;
        self.hold(addr, idx, key, sharing);
        Ok(())
    }

    /// Whether `key` may hold `ip` with `sharing` beside its other holders
    /// (true for an address nobody else holds, inside a pool or not).
    pub fn can_hold(&self, ip: IpAddr, key: &K, sharing: &Sharing) -> bool {
        self.check_share(Addr::from(ip), key, sharing).is_ok()
    }

    /// Releases every address `key` holds; returns them in ascending order.
    pub fn release(&mut self, key: &K) -> Vec<IpAddr> {
        let addrs = self.by_key.remove(key).unwrap_or_default();
        for &addr in &addrs {
            self.drop_holder(addr, key);
        }
        addrs.into_iter().map(Addr::ip).collect()
    }

    /// Releases one address of `key` (e.g. when a service drops a family);
    /// false if `key` did not hold it.
    pub fn release_ip(&mut self, key: &K, ip: IpAddr) -> bool {
        let addr = Addr::from(ip);
        let Some(set) = self.by_key.get_mut(key) else {
            return false;
        };
        let Ok(pos) = set.binary_search(&addr) else {
            return false;
        };
        set.remove(pos);
        if set.is_empty() {
            self.by_key.remove(key);
        }
        self.drop_holder(addr, key);
        true
    }

    /// Name of the pool whose ranges contain `ip` (even an address that
    /// avoidBuggyIPs keeps from being handed out).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        self.layout
            .pool_index_of(Addr::from(ip))
            .map(|idx| self.layout.pools[idx].pool.name.as_str())
    }

    /// Addresses held by `key`, ascending (IPv4 first).
    pub fn addresses_of(&self, key: &K) -> Vec<IpAddr> {
        self.by_key
            .get(key)
            .map(|set| set.iter().map(|a| a.ip()).collect())
            .unwrap_or_default()
    }

    /// Keys holding `ip` with their sharing, in the order they joined.
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = (&K, &Sharing)> {
        self.held
            .get(&Addr::from(ip))
            .into_iter()
            .flat_map(|e| e.holders.iter().map(|(k, s)| (k, s)))
    }

    /// Counts of one pool in one family; `None` for an unknown pool.
    pub fn pool_stats(&self, pool: &str, family: Family) -> Option<Stats> {
        let idx = *self.layout.by_name.get(pool)?;
        let fam = &self.layout.pools[idx].families[family.index()];
        Some(Stats {
            total: fam.total,
            in_use: fam.in_use,
        })
    }

    /// Counts over all pools in one family.
    pub fn family_stats(&self, family: Family) -> Stats {
        self.layout
            .pools
            .iter()
            .map(|p| &p.families[family.index()])
            .fold(Stats::default(), |acc, f| Stats {
                total: acc.total.saturating_add(f.total),
                in_use: acc.in_use + f.in_use,
            })
    }

    /// Pool names in configuration order.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.layout.pools.iter().map(|p| p.pool.name.as_str())
    }

    /// Number of free intervals stored across all pools: the memory the
    /// free sets use, exposed so tests can check it tracks held addresses.
    pub fn free_interval_count(&self) -> usize {
        self.layout
            .pools
            .iter()
            .flat_map(|p| p.families.iter())
            .map(|f| f.free.interval_count())
            .sum()
    }

    fn held_in(&self, key: &K, pool: usize, family: Family) -> Option<Addr> {
        let set = self.by_key.get(key)?;
        set.iter()
            .copied()
            .find(|a| a.family == family && self.held.get(a).is_some_and(|e| e.pool == pool))
    }

    fn check_share(&self, addr: Addr, key: &K, sharing: &Sharing) -> Result<(), AllocError> {
        match self.held.get(&addr).and_then(|e| conflict(e, key, sharing)) {
            None => Ok(()),
            Some((holder, reason)) => Err(AllocError::InUse {
                ip: addr.ip(),
                holder: holder.to_string(),
                reason,
            }),
        }
    }

    /// Records `key` as a holder of `addr` (already checked compatible).
    fn hold(&mut self, addr: Addr, pool: usize, key: K, sharing: Sharing) {
        let mine = self.by_key.entry(key.clone()).or_default();
        if let Err(pos) = mine.binary_search(&addr) {
            mine.insert(pos, addr);
        }
        hold_addr(
            &mut self.layout,
            &mut self.held,
            &mut self.by_share_key,
            addr,
            pool,
            key,
            sharing,
        );
    }

    /// Removes `key` from `addr`'s holders, freeing it if none remain. The
    /// caller has already updated `by_key`.
    fn drop_holder(&mut self, addr: Addr, key: &K) {
        let Some(entry) = self.held.get_mut(&addr) else {
            return;
        };
        let Some(pos) = entry.holders.iter().position(|(k, _)| k == key) else {
            return;
        };
        let (_, sharing) = entry.holders.remove(pos);
        if !entry.holders.is_empty() {
            return;
        }
        let pool = entry.pool;
        self.held.remove(&addr);
        // All holders share one sharing key, so the last one's key is the
        // one the address was indexed under.
        if let Some(sk) = sharing.key {
            remove_from_index(&mut self.by_share_key, &sk, addr);
        }
        let fam = &mut self.layout.pools[pool].families[addr.family.index()];
        fam.free.put(fam.slots.slot(addr.value));
        fam.in_use -= 1;
    }
}

/// Lowest address of (`pool`, `family`) that is free or whose holders all
/// accept `sharing`. Takes the fields it reads rather than `&Allocator` so
/// that a caller can keep an entry of `by_key` open meanwhile.
fn pick<K: PartialEq>(
    layout: &Layout,
    held: &BTreeMap<Addr, Entry<K>>,
    by_share_key: &BTreeMap<String, BTreeSet<Addr>>,
    pool: usize,
    family: Family,
    key: &K,
    sharing: &Sharing,
) -> Result<Addr, AllocError> {
    let fam = &layout.pools[pool].families[family.index()];
    let lowest_free = fam
        .free
        .first()
        .map(|slot| Addr::new(family, fam.slots.addr(slot)));
    // Only addresses already under the same sharing key can be shared, and
    // only those below the lowest free one matter.
    let upper = lowest_free.unwrap_or(Addr::new(family, u128::MAX));
    let shareable = sharing.key.as_ref().and_then(|sk| {
        by_share_key
            .get(sk)?
            .range(Addr::new(family, 0)..=upper)
            .copied()
            .find(|addr| {
                let entry = &held[addr];
                entry.pool == pool && conflict(entry, key, sharing).is_none()
            })
    });
    match (lowest_free, shareable) {
        (Some(f), Some(s)) => Ok(f.min(s)),
        (f, s) => f.or(s).ok_or_else(|| AllocError::Exhausted {
            pool: layout.pools[pool].pool.name.clone(),
            family,
        }),
    }
}

/// Records `key` as a holder of `addr` (already checked compatible) in
/// everything but `by_key`, which the caller updates.
fn hold_addr<K: PartialEq>(
    layout: &mut Layout,
    held: &mut BTreeMap<Addr, Entry<K>>,
    by_share_key: &mut BTreeMap<String, BTreeSet<Addr>>,
    addr: Addr,
    pool: usize,
    key: K,
    sharing: Sharing,
) {
    match held.entry(addr) {
        btree_map::Entry::Occupied(mut occupied) => {
            let entry = occupied.get_mut();
            let old_share_key = entry.share_key().cloned();
            let new_share_key = sharing.key.clone();
            match entry.holders.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = sharing,
                None => entry.holders.push((key, sharing)),
            }
            // Only a sole holder can change the key: co-holders would
            // have refused a different one.
            if old_share_key != new_share_key {
                if let Some(old) = old_share_key {
                    remove_from_index(by_share_key, &old, addr);
                }
                if let Some(new) = new_share_key {
                    by_share_key.entry(new).or_default().insert(addr);
                }
            }
        }
        btree_map::Entry::Vacant(vacant) => {
            let fam = &mut layout.pools[pool].families[addr.family.index()];
            let taken = fam.free.take(fam.slots.slot(addr.value));
            debug_assert!(taken, "an address not held is free");
            fam.in_use += 1;
            if let Some(new) = &sharing.key {
                by_share_key.entry(new.clone()).or_default().insert(addr);
            }
            vacant.insert(Entry {
                pool,
                holders: vec![(key, sharing)],
            });
        }
    }
}

/// First holder of `entry` other than `key` that refuses `sharing`.
fn conflict<'a, K: PartialEq>(
    entry: &'a Entry<K>,
    key: &K,
    sharing: &Sharing,
) -> Option<(&'a K, ShareConflict)> {
    entry
        .holders
        .iter()
        .filter(|(k, _)| k != key)
        .find_map(|(k, s)| sharing.check_compatible(s).err().map(|c| (k, c)))
}

fn remove_key_addr<K: Ord>(by_key: &mut BTreeMap<K, Vec<Addr>>, key: &K, addr: Addr) {
    if let Some(v) = by_key.get_mut(key) {
        v.retain(|a| *a != addr);
        if v.is_empty() {
            by_key.remove(key);
        }
    }
}

fn remove_from_index<I, Q>(index: &mut BTreeMap<I, BTreeSet<Addr>>, key: &Q, addr: Addr)
where
    I: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(&addr);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} in use", self.in_use, self.total)
    }
}
