//! Services the engine could not serve, and when to try them again.
//!
//! A Service whose last decision was a failure waits here, with the pools it
//! considered. Capacity appears when addresses are released in a pool (a Service
//! deleted, turned into another type or class, moved to other addresses, or
//! sharing them differently), when the configuration changes, or when a
//! namespace's labels change. [`Waiting::take_due`] returns the waiting Services
//! that such a change may serve, oldest first; Services waiting on other pools
//! are not tried again.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_config::ServiceKey;

use super::FailReason;

/// Which changes may serve a waiting Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Considered {
    /// Capacity in these pools (a configuration change always counts).
    Pools(BTreeSet<String>),
    /// Only a configuration change (or a change of the Service itself).
    ConfigOnly,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Creation time, for the oldest-first order.
    created: String,
    considered: Considered,
    /// Why it failed; `None` for a Service that is served but lacks a family it
    /// prefers (PreferDualStack): it is tried again, but it does not wait.
    reason: Option<FailReason>,
    /// Generation of the last attempt: changes after it make the entry due.
    tried: u64,
}

/// The waiting Services and the capacity changes since each was last tried.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    entries: BTreeMap<ServiceKey, Entry>,
    /// Counts changes; each trigger below records the generation it happened at.
    generation: u64,
    config_changed: u64,
    pools_freed: BTreeMap<String, u64>,
    namespaces_changed: BTreeMap<String, u64>,
}

impl Waiting {
    /// Records a failed attempt for `key` (`reason`), or one that served it with
    /// less than it prefers (`None`).
    pub(super) fn wait(
        &mut self,
        key: ServiceKey,
        created: String,
        considered: Considered,
        reason: Option<FailReason>,
    ) {
        let tried = self.generation;
        self.entries.insert(
            key,
            Entry {
                created,
                considered,
                reason,
                tried,
            },
        );
    }

    /// `key` is served (or gone, or not ours): it waits no more.
    pub(super) fn done(&mut self, key: &ServiceKey) {
        self.entries.remove(key);
        if self.entries.is_empty() {
            self.pools_freed.clear();
            self.namespaces_changed.clear();
        }
    }

    fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Addresses were released in `pool`, or became shareable differently.
    pub(super) fn pool_freed(&mut self, pool: &str) {
        if self.entries.is_empty() {
            return;
        }
        let g = self.bump();
        self.pools_freed.insert(pool.to_owned(), g);
    }

    /// A new configuration is in force.
    pub(super) fn config_changed(&mut self) {
        self.config_changed = self.bump();
    }

    /// The labels of namespace `ns` changed.
    pub(super) fn namespace_changed(&mut self, ns: &str) {
        if self.entries.is_empty() {
            return;
        }
        let g = self.bump();
        self.namespaces_changed.insert(ns.to_owned(), g);
    }

    fn is_due(&self, key: &ServiceKey, e: &Entry) -> bool {
        if self.config_changed > e.tried {
            return true;
        }
        if self
            .namespaces_changed
            .get(&key.namespace)
            .is_some_and(|g| *g > e.tried)
        {
            return true;
        }
        match &e.considered {
            Considered::Pools(pools) => pools
                .iter()
                .any(|p| self.pools_freed.get(p).is_some_and(|g| *g > e.tried)),
            Considered::ConfigOnly => false,
        }
    }

    /// The waiting Services that a change since their last attempt may serve,
    /// oldest first. Each stays due until it is tried again ([`Self::wait`]) or
    /// served ([`Self::done`]).
    pub(super) fn take_due(&self) -> Vec<ServiceKey> {
        let mut due: Vec<(&String, &ServiceKey)> = self
            .entries
            .iter()
            .filter(|(k, e)| self.is_due(k, e))
            .map(|(k, e)| (&e.created, k))
            .collect();
        due.sort();
        due.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// How many Services wait, by the reason of their last failure.
    pub(super) fn count_by_reason(&self) -> BTreeMap<FailReason, usize> {
        let mut out = BTreeMap::new();
        for reason in self.entries.values().filter_map(|e| e.reason) {
            *out.entry(reason).or_default() += 1;
        }
        out
    }

    /// Whether `key` waits (a served Service that lacks a family does not).
    pub(super) fn contains(&self, key: &ServiceKey) -> bool {
        self.entries.get(key).is_some_and(|e| e.reason.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> ServiceKey {
        ServiceKey::new("ns", name)
    }

    fn pools(p: &[&str]) -> Considered {
        Considered::Pools(p.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn only_services_waiting_on_a_freed_pool_are_due_oldest_first() {
        let mut w = Waiting::default();
        w.wait(
            k("young"),
            "2".into(),
            pools(&["a"]),
            Some(FailReason::Exhausted),
        );
        w.wait(
            k("old"),
            "1".into(),
            pools(&["a", "b"]),
            Some(FailReason::Exhausted),
        );
        w.wait(
            k("other"),
            "0".into(),
            pools(&["c"]),
            Some(FailReason::Exhausted),
        );
        assert!(w.take_due().is_empty());
        w.pool_freed("a");
        assert_eq!(w.take_due(), [k("old"), k("young")]);
        // Tried again and still failing: not due until the next change.
        w.wait(
            k("old"),
            "1".into(),
            pools(&["a", "b"]),
            Some(FailReason::Exhausted),
        );
        w.done(&k("young"));
        assert!(w.take_due().is_empty());
        w.config_changed();
        assert_eq!(w.take_due(), [k("other"), k("old")]);
    }

    #[test]
    fn namespace_changes_concern_their_namespace() {
        let mut w = Waiting::default();
        w.wait(
            k("a"),
            "1".into(),
            Considered::ConfigOnly,
            Some(FailReason::NoPool),
        );
        w.wait(
            ServiceKey::new("elsewhere", "b"),
            "2".into(),
            Considered::ConfigOnly,
            Some(FailReason::NoPool),
        );
        w.pool_freed("p");
        assert!(w.take_due().is_empty());
        w.namespace_changed("ns");
        assert_eq!(w.take_due(), [k("a")]);
        assert_eq!(w.count_by_reason()[&FailReason::NoPool], 2);
        w.wait(
            k("a"),
            "1".into(),
            Considered::ConfigOnly,
            Some(FailReason::NoPool),
        );
        // A served Service tried again for a family it lacks does not count.
        w.wait(k("c"), "3".into(), pools(&["p"]), None);
        assert_eq!(w.count_by_reason()[&FailReason::NoPool], 2);
        assert!(!w.contains(&k("c")));
        w.pool_freed("p");
        assert_eq!(w.take_due(), [k("c")]);
    }
}
