//! What the scenarios run on: a [`Cluster`] (a Kubernetes client, a client
//! host on the segment and the [`Settings`] of what the scenarios may use)
//! and the echo workload behind their Services.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{AddressRange, ClientHost};

/// The workload behind the scenarios' Services: an HTTP server that answers
/// `path` on `port` with the pod's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoWorkload {
    /// Container image.
    pub image: String,
    /// Container arguments (none: the image's default command).
    pub args: Vec<String>,
    /// Container port the server listens on.
    pub port: u16,
    /// Path whose answer is the pod's name.
    pub path: String,
}

/// The default echo image: Kubernetes' own e2e test image, whose `netexec`
/// mode answers `/hostname` with the pod's hostname (its name). The lab's
/// node agent serves every image itself, answering any path with the pod
/// name on port 80 and on every declared container port, so the same
/// Deployment works on both.
pub const DEFAULT_ECHO_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

impl Default for EchoWorkload {
    fn default() -> Self {
        Self {
            image: DEFAULT_ECHO_IMAGE.to_owned(),
            args: vec!["netexec".to_owned(), "--http-port=8080".to_owned()],
            port: 8080,
            path: "/hostname".to_owned(),
        }
    }
}

/// What the scenarios may use on a cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of the scenarios' namespaces and configuration objects
    /// (`<prefix>-<scenario>`).
    pub prefix: String,
    /// ferrolb's namespace: where pools, L2Advertisements and the legacy
    /// ConfigMap live.
    pub config_namespace: String,
    /// Free addresses on the layer-2 segment, carved into slots of
    /// [`ADDRESSES_PER_SCENARIO`](super::ADDRESSES_PER_SCENARIO). Must not
    /// overlap any pool of the cluster.
    pub pool: AddressRange,
    /// The echo workload.
    pub echo: EchoWorkload,
    /// Name of the legacy ConfigMap ferrolb reads, when the legacy scenario
    /// may create it (it refuses to touch one that exists).
    pub legacy_configmap: Option<String>,
    /// Bound of each wait (address assigned, pods running, ...).
    pub wait: Duration,
    /// Bound of a whole scenario.
    pub scenario_limit: Duration,
}

/// A cluster with ferrolb installed, as the scenarios see it.
#[derive(Clone)]
pub struct Cluster {
    /// What it is (for messages).
    pub name: String,
    /// Kubernetes client.
    pub kube: kube::Client,
    /// A host on the cluster's layer-2 segment.
    pub host: Arc<dyn ClientHost>,
    /// What the scenarios may use.
    pub settings: Arc<Settings>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("settings", &self.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_defaults_answer_with_the_pod_name_on_8080() {
        let e = EchoWorkload::default();
        assert_eq!(e.port, 8080);
        assert_eq!(e.path, "/hostname");
        assert!(e.args.contains(&"--http-port=8080".to_owned()));
    }
}
