//! MetalLB's algorithm, kept deliberately naive: to allocate, walk every
//! address of the pool in order and take the first one that is unused or
//! shareable. Same observable behaviour as [`Allocator`](super::Allocator),
//! with cost linear in pool size.
//!
//! It exists as the reference model for the property tests (written
//! independently of the interval bookkeeping, sharing only the value types
//! and the pairwise sharing rule) and as the baseline the benchmarks compare
//! against. Its counts enumerate addresses, so use it on small pools only
//! except for allocation itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::IpAddr;

use super::types::Addr;
use super::{AllocError, Family, Pool, PoolSetError, ShareConflict, Sharing, Stats, validate};

/// Naive allocator; see the module docs.
#[derive(Debug, Clone)]
pub struct LinearAllocator<K> {
    pools: Vec<Pool>,
    /// Address -> holders; a hash map as MetalLB's Go map.
    held: HashMap<Addr, Vec<(K, Sharing)>>,
    by_key: BTreeMap<K, Vec<Addr>>,
}

impl<K: Ord + Clone + Display> LinearAllocator<K> {
    pub fn new(pools: Vec<Pool>) -> Result<LinearAllocator<K>, PoolSetError> {
        validate(&pools)?;
        Ok(LinearAllocator {
            pools,
            held: HashMap::new(),
            by_key: BTreeMap::new(),
        })
    }

    pub fn set_pools(
        &mut self,
        pools: Vec<Pool>,
    ) -> Result<BTreeMap<K, Vec<IpAddr>>, PoolSetError> {
        validate(&pools)?;
        self.pools = pools;
        let mut gone: Vec<Addr> = self
            .held
            .keys()
            .copied()
            .filter(|&a| !self.usable(a))
            .collect();
        gone.sort();
        let mut evicted: BTreeMap<K, Vec<IpAddr>> = BTreeMap::new();
        for addr in gone {
            for (key, _) in self.held.remove(&addr).unwrap_or_default() {
                self.forget(&key, addr);
                evicted.entry(key).or_default().push(addr.ip());
            }
        }
        Ok(evicted)
    }

    pub fn allocate_next(
        &mut self,
        pool: &str,
        family: Family,
        key: K,
        sharing: Sharing,
    ) -> Result<IpAddr, AllocError> {
        let pool_idx = self
            .pools
            .iter()
            .position(|p| p.name == pool)
            .ok_or_else(|| AllocError::UnknownPool(pool.to_string()))?;
        let p = &self.pools[pool_idx];
        let mut ranges: Vec<(u128, u128)> = p
            .ranges
            .iter()
            .filter(|r| r.family() == family)
            .map(|r| (Addr::from(r.start()).value, Addr::from(r.end()).value))
            .collect();
        ranges.sort();
        let avoid = p.avoid_buggy_ips;
        let usable = |v: u128| !(avoid && Addr::new(family, v).is_buggy());
        if !ranges.iter().any(|&(s, e)| (s..=e).any(usable)) {
            return Err(AllocError::NoFamily {
                pool: pool.to_string(),
                family,
            });
        }
        let mine = self.by_key.get(&key).and_then(|addrs| {
            addrs
                .iter()
                .copied()
                .filter(|a| a.family == family && self.pool_index(*a) == Some(pool_idx))
                .min()
        });
        if let Some(addr) = mine {
            self.assign(None, addr.ip(), key, sharing)?;
            return Ok(addr.ip());
        }
        for (s, e) in ranges {
            for v in s..=e {
                if !usable(v) {
                    continue;
                }
                let addr = Addr::new(family, v);
                if self.blocker(addr, &key, &sharing).is_none() {
                    self.add_holder(addr, key, sharing);
                    return Ok(addr.ip());
                }
            }
        }
        Err(AllocError::Exhausted {
            pool: pool.to_string(),
            family,
        })
    }

    pub fn assign(
        &mut self,
        pool: Option<&str>,
        ip: IpAddr,
        key: K,
        sharing: Sharing,
    ) -> Result<(), AllocError> {
        let addr = Addr::from(ip);
        let idx = self.pool_index(addr).ok_or(AllocError::NotInAnyPool(ip))?;
        let p = &self.pools[idx];
        if let Some(requested) = pool
            && requested != p.name
        {
            return Err(AllocError::WrongPool {
                ip,
                requested: requested.to_string(),
                actual: p.name.clone(),
            });
        }
        if p.avoid_buggy_ips && addr.is_buggy() {
            return Err(AllocError::Buggy {
                ip,
                pool: p.name.clone(),
            });
        }
        if let Some((holder, reason)) = self.blocker(addr, &key, &sharing) {
            return Err(AllocError::InUse {
                ip,
                holder: holder.to_string(),
                reason,
            });
        }
        self.add_holder(addr, key, sharing);
        Ok(())
    }

    pub fn release(&mut self, key: &K) -> Vec<IpAddr> {
        let mut addrs = self.by_key.remove(key).unwrap_or_default();
        addrs.sort();
        for addr in &addrs {
            self.remove_holder(*addr, key);
        }
        addrs.into_iter().map(Addr::ip).collect()
    }

    pub fn release_ip(&mut self, key: &K, ip: IpAddr) -> bool {
        let addr = Addr::from(ip);
        let held = self.by_key.get(key).is_some_and(|v| v.contains(&addr));
        if held {
            self.forget(key, addr);
            self.remove_holder(addr, key);
        }
        held
    }

    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        self.pool_index(Addr::from(ip))
            .map(|i| self.pools[i].name.as_str())
    }

    pub fn addresses_of(&self, key: &K) -> Vec<IpAddr> {
        let mut v = self.by_key.get(key).cloned().unwrap_or_default();
        v.sort();
        v.into_iter().map(Addr::ip).collect()
    }

    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = (&K, &Sharing)> {
        self.held
            .get(&Addr::from(ip))
            .into_iter()
            .flat_map(|v| v.iter().map(|(k, s)| (k, s)))
    }

    /// Enumerates every address of the pool: small pools only.
    pub fn pool_stats(&self, pool: &str, family: Family) -> Option<Stats> {
        let idx = self.pools.iter().position(|p| p.name == pool)?;
        let p = &self.pools[idx];
        let mut stats = Stats::default();
        for r in p.ranges.iter().filter(|r| r.family() == family) {
            for v in Addr::from(r.start()).value..=Addr::from(r.end()).value {
                let addr = Addr::new(family, v);
                if p.avoid_buggy_ips && addr.is_buggy() {
                    continue;
                }
                stats.total += 1;
                if self.held.contains_key(&addr) {
                    stats.in_use += 1;
                }
            }
        }
        Some(stats)
    }

    fn pool_index(&self, addr: Addr) -> Option<usize> {
        self.pools.iter().position(|p| {
            p.ranges
                .iter()
                .any(|r| Addr::from(r.start()) <= addr && addr <= Addr::from(r.end()))
        })
    }

    fn usable(&self, addr: Addr) -> bool {
        self.pool_index(addr)
            .is_some_and(|i| !(self.pools[i].avoid_buggy_ips && addr.is_buggy()))
    }

    /// The first holder of `addr` that refuses `key` with `sharing`. Kept
    /// free of allocation, as the scan calls it once per address probed.
    fn blocker(&self, addr: Addr, key: &K, sharing: &Sharing) -> Option<(&K, ShareConflict)> {
        self.held.get(&addr)?.iter().find_map(|(k, s)| {
            if k == key {
                return None;
            }
            sharing.check_compatible(s).err().map(|reason| (k, reason))
        })
    }

    fn add_holder(&mut self, addr: Addr, key: K, sharing: Sharing) {
        let holders = self.held.entry(addr).or_default();
        match holders.iter_mut().find(|(k, _)| *k == key) {
            Some(h) => h.1 = sharing,
            None => {
                holders.push((key.clone(), sharing));
                self.by_key.entry(key).or_default().push(addr);
            }
        }
    }

    fn remove_holder(&mut self, addr: Addr, key: &K) {
        if let Some(holders) = self.held.get_mut(&addr) {
            holders.retain(|(k, _)| k != key);
            if holders.is_empty() {
                self.held.remove(&addr);
            }
        }
    }

    fn forget(&mut self, key: &K, addr: Addr) {
        if let Some(v) = self.by_key.get_mut(key) {
            v.retain(|a| *a != addr);
            if v.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}
