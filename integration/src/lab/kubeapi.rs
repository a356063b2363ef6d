//! The few Kubernetes API calls the lab itself needs: a client from the
//! root namespace's kubeconfig and node readiness.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::{LabError, Result};

/// A client for the API server described by `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let err = |source| LabError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(err)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    Ok(Client::try_from(config)?)
}

/// Whether a Node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Readiness of every registered node, by name.
pub async fn node_readiness(client: &Client) -> Result<BTreeMap<String, bool>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), is_ready(n)))
        .collect())
}
