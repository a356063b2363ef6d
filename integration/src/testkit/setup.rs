//! The speaker tests' cluster: what the chart installs (namespace, CRDs, the
//! membership Secret), a pool, an L2Advertisement, the echo Deployment and
//! its LoadBalancer Services, then ferrolb's controller and speakers.

use std::collections::BTreeSet;

use kube::Client;
use serde_json::{Value, json};

pub use super::api::EchoService;
use super::{
    ANNOUNCE_LABEL, APP, APP_NS, MEMBERLIST_SECRET, WORKERS, apply_echo, apply_l2, apply_pool,
    install_crds, label_node, put_key, random_key, start_ferrolb, wait_running_pods,
};
use crate::lab::Lab;

/// What [`SpeakerSetup::run`] makes. The default: pool `pool` with
/// 198.51.100.10-12, an L2Advertisement `l2` for the nodes labelled
/// [`ANNOUNCE_LABEL`] (the [`WORKERS`]), 3 echo pods, Service [`APP`] on
/// port 80 and a random membership key.
#[derive(Debug, Clone)]
pub struct SpeakerSetup<'a> {
    /// The IPAddressPool's name.
    pub pool_name: &'a str,
    /// Its addresses.
    pub pool: Vec<&'a str>,
    /// The spec of L2Advertisement `l2`.
    pub l2: Value,
    /// Nodes labelled [`ANNOUNCE_LABEL`]`=yes`.
    pub announce_nodes: Vec<&'a str>,
    /// Echo pods ([`APP`] in [`APP_NS`]).
    pub replicas: usize,
    /// LoadBalancer Services selecting them.
    pub services: Vec<EchoService<'a>>,
    /// The membership key (Secret [`MEMBERLIST_SECRET`]); `None`: no Secret.
    pub key: Option<Vec<u8>>,
}

impl Default for SpeakerSetup<'_> {
    fn default() -> Self {
        Self {
            pool_name: "pool",
            pool: vec!["198.51.100.10-198.51.100.12"],
            l2: workers_only(),
            announce_nodes: WORKERS.to_vec(),
            replicas: 3,
            services: vec![EchoService::new(APP)],
            key: Some(random_key(32)),
        }
    }
}

/// An L2Advertisement spec selecting the nodes labelled [`ANNOUNCE_LABEL`].
pub fn workers_only() -> Value {
    json!({"nodeSelectors": [{"matchLabels": {ANNOUNCE_LABEL: "yes"}}]})
}

impl SpeakerSetup<'_> {
    /// Namespace and CRDs, the membership Secret, the node labels, pool,
    /// L2Advertisement, the echo Deployment and the Services; once the pods
    /// run, the controller and the speakers (the lab is bare, so that they
    /// start with the CRDs in place). Returns the running pods' names.
    pub async fn run(&self, lab: &Lab, client: &Client) -> BTreeSet<String> {
        install_crds(lab, client).await;
        if let Some(key) = &self.key {
            put_key(client, MEMBERLIST_SECRET, key).await;
        }
        for n in &self.announce_nodes {
            label_node(client, n, ANNOUNCE_LABEL, Some("yes")).await;
        }
        apply_pool(client, self.pool_name, &self.pool).await;
        apply_l2(client, "l2", self.l2.clone()).await;
        apply_echo(client, APP_NS, APP, self.replicas, json!({})).await;
        for s in &self.services {
            s.apply(client, APP_NS, APP).await;
        }
        let pods = wait_running_pods(client, APP_NS, APP, self.replicas).await;
        start_ferrolb(lab);
        pods
    }
}
