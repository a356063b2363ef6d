//! The configuration objects as last seen, per kind, replaced whole on every re-list so
//! that objects deleted while a watch was down do not linger.

use std::collections::BTreeMap;

use ferrolb_config::crd;
use ferrolb_config::legacy;
use ferrolb_config::{ConfigError, Sources};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

/// One kind's objects by name.
#[derive(Debug)]
pub struct Store<K> {
    objects: BTreeMap<String, K>,
    /// Objects received since the last `Init`, swapped in at `InitDone`.
    buffer: Option<BTreeMap<String, K>>,
    pub synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            buffer: None,
            synced: false,
        }
    }
}

impl<K: ResourceExt> Store<K> {
    /// Applies one watcher event; true when the visible contents changed.
    pub fn apply(&mut self, ev: kube::runtime::watcher::Event<K>) -> bool {
        use kube::runtime::watcher::Event;
        match ev {
            Event::Init => {
                self.buffer = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                self.buffer.get_or_insert_default().insert(o.name_any(), o);
                false
            }
            Event::InitDone => {
                self.objects = self.buffer.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(o) => {
                self.objects.insert(o.name_any(), o);
                true
            }
            Event::Delete(o) => self.objects.remove(&o.name_any()).is_some(),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &K> {
        self.objects.values()
    }
}

/// Every configuration kind ferrolb reads.
#[derive(Debug, Default)]
pub struct ConfigStores {
    pub configmaps: Store<ConfigMap>,
    pub pools: Store<crd::IPAddressPool>,
    pub l2: Store<crd::L2Advertisement>,
    pub bgp_adv: Store<crd::BGPAdvertisement>,
    pub peers: Store<crd::BGPPeer>,
    pub communities: Store<crd::Community>,
    pub bfd: Store<crd::BFDProfile>,
}

impl ConfigStores {
    pub fn synced(&self) -> bool {
        self.configmaps.synced
            && self.pools.synced
            && self.l2.synced
            && self.bgp_adv.synced
            && self.peers.synced
            && self.communities.synced
            && self.bfd.synced
    }

    /// The sources to build a configuration from; errors in the legacy ConfigMap's text
    /// are returned beside them so that they are reported with the rest.
    pub fn sources(&self, configmap_name: &str) -> (Sources, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut src = Sources::default();
        for cm in self
            .configmaps
            .values()
            .filter(|c| c.name_any() == configmap_name)
        {
            let id = format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any());
            match cm.data.as_ref().and_then(|d| d.get(legacy::DATA_KEY)) {
                None => {}
                Some(text) => match ferrolb_config::load::parse_legacy(text) {
                    Ok(lc) => src.legacy.push((id, lc)),
                    Err((field, message)) => errors.push(ConfigError {
                        object: ferrolb_config::ObjectRef::ConfigMap { configmap: id },
                        field,
                        message,
                    }),
                },
            }
        }
        src.pools = self.pools.values().cloned().collect();
        src.l2_advertisements = self.l2.values().cloned().collect();
        src.bgp_advertisements = self.bgp_adv.values().cloned().collect();
        src.bgp_peers = self.peers.values().cloned().collect();
        src.communities = self.communities.values().cloned().collect();
        src.bfd_profiles = self.bfd.values().cloned().collect();
        (src, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn cm(name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn relist_replaces_contents() {
        let mut s: Store<ConfigMap> = Store::default();
        assert!(!s.apply(Event::Init));
        s.apply(Event::InitApply(cm("a")));
        s.apply(Event::InitApply(cm("b")));
        assert!(!s.synced);
        assert!(s.apply(Event::InitDone));
        assert_eq!(s.values().count(), 2);
        // A re-list that no longer has "a" drops it.
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("b")));
        assert_eq!(
            s.values().count(),
            2,
            "old contents stay visible until InitDone"
        );
        s.apply(Event::InitDone);
        assert_eq!(s.values().map(|c| c.name_any()).collect::<Vec<_>>(), ["b"]);
        assert!(s.apply(Event::Delete(cm("b"))));
        assert!(!s.apply(Event::Delete(cm("b"))));
    }
}
