//! Watch streams for the single-task loops of the controller and the speaker: each
//! Kubernetes kind becomes a stream of watcher events wrapped into the loop's own input
//! type, retried with kube's default back-off (errors are logged, never fatal).

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tracing::warn;

use ferrolb_config::crd;

use crate::stores::ConfigStores;

/// A watch on one kind, each event wrapped by `wrap`.
pub fn watch_stream<K, I, F>(api: Api<K>, cfg: watcher::Config, wrap: F) -> BoxStream<'static, I>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    I: Send + 'static,
    F: Fn(Event<K>) -> I + Send + 'static,
{
    let kind = K::kind(&()).to_string();
    watcher::watcher(api, cfg)
        .default_backoff()
        .filter_map(move |r| {
            let out = match r {
                Ok(ev) => Some(wrap(ev)),
                Err(e) => {
                    warn!(%kind, error = %e, "watch error, retrying");
                    None
                }
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// An event on one of the configuration kinds.
// Each event is moved once from its stream into the loop; boxing the larger kinds
// would add an allocation per event for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ConfigEvent {
    ConfigMap(Event<ConfigMap>),
    Pool(Event<crd::IPAddressPool>),
    L2(Event<crd::L2Advertisement>),
    BgpAdv(Event<crd::BGPAdvertisement>),
    Peer(Event<crd::BGPPeer>),
    Community(Event<crd::Community>),
    Bfd(Event<crd::BFDProfile>),
}

impl ConfigStores {
    /// Applies a configuration event; true when the visible configuration changed.
    pub fn apply_event(&mut self, ev: ConfigEvent) -> bool {
        match ev {
            ConfigEvent::ConfigMap(e) => self.configmaps.apply(e),
            ConfigEvent::Pool(e) => self.pools.apply(e),
            ConfigEvent::L2(e) => self.l2.apply(e),
            ConfigEvent::BgpAdv(e) => self.bgp_adv.apply(e),
            ConfigEvent::Peer(e) => self.peers.apply(e),
            ConfigEvent::Community(e) => self.communities.apply(e),
            ConfigEvent::Bfd(e) => self.bfd.apply(e),
        }
    }
}

/// Watches on every configuration kind in `namespace` (the legacy ConfigMap by name).
pub fn config_streams<I>(
    client: &Client,
    namespace: &str,
    configmap: &str,
    wrap: fn(ConfigEvent) -> I,
) -> Vec<BoxStream<'static, I>>
where
    I: Send + 'static,
{
    let all = watcher::Config::default;
    let api = || -> Api<ConfigMap> { Api::namespaced(client.clone(), namespace) };
    vec![
        watch_stream(
            api(),
            all().fields(&format!("metadata.name={configmap}")),
            move |e| wrap(ConfigEvent::ConfigMap(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::Pool(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::L2(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::BgpAdv(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::Peer(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::Community(e)),
        ),
        watch_stream(
            Api::namespaced(client.clone(), namespace),
            all(),
            move |e| wrap(ConfigEvent::Bfd(e)),
        ),
    ]
}
