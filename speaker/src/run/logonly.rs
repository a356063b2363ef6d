//! An [`Announcer`] that only logs: for running the speaker without root (tests,
//! dry runs). Nothing on the network changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tracing::info;

use crate::announce::{AddressCounters, AnnounceSpec, Announcer, Conflict};

#[derive(Debug, Default)]
pub struct LogAnnouncer {
    leading: BTreeMap<IpAddr, AnnounceSpec>,
}

impl Announcer for LogAnnouncer {
    fn set_leading(&mut self, leading: BTreeMap<IpAddr, AnnounceSpec>) {
        let old: BTreeSet<IpAddr> = self.leading.keys().copied().collect();
        for ip in leading.keys().filter(|ip| !old.contains(ip)) {
            info!(%ip, "would announce (log-only announcer)");
        }
        for ip in old.iter().filter(|ip| !leading.contains_key(ip)) {
            info!(%ip, "would stop announcing (log-only announcer)");
        }
        self.leading = leading;
    }

    fn interfaces_of(&self, ip: IpAddr) -> Vec<String> {
        self.leading
            .get(&ip)
            .and_then(|s| s.interfaces.clone())
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    fn take_conflicts(&mut self) -> Vec<Conflict> {
        Vec::new()
    }

    fn counters(&self) -> BTreeMap<IpAddr, AddressCounters> {
        BTreeMap::new()
    }
}
