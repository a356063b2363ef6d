//! Waiting: [`eventually`], the one poll-until-true of the crate (the lab,
//! the scenarios and the tests all use it), and the lab's own waits for its
//! daemons, nodes and ferrolb to be ready, which fail at once when a daemon
//! they wait for dies.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{LabError, Result};
use super::{Lab, components, ferrolb, kubeapi, process};

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(250);

/// Polls `check` every 250 ms until it returns `Ok`, for at most `limit`;
/// the timeout error quotes the last reason `check` gave. For whatever
/// waits on a cluster (pods running, an address announced, ...).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(why) if start.elapsed() >= limit => {
                return Err(LabError::Timeout {
                    what: format!("{what} (last: {why})"),
                    after: limit,
                });
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

impl Lab {
    /// Waits (at most `limit`) until the controller and every speaker that
    /// the lab runs answer `/readyz` with 200; one that dies meanwhile fails
    /// the wait.
    pub async fn wait_ferrolb_ready(&self, limit: Duration) -> Result<()> {
        let mut pending: Vec<(String, String, u16)> = Vec::new();
        if self.daemon_running(components::CONTROLLER)? {
            let m = self.topology.control_plane();
            pending.push((
                components::CONTROLLER.to_owned(),
                m.netns(),
                ferrolb::CONTROLLER_PORT,
            ));
        }
        for node in self.topology.nodes() {
            let name = components::speaker_name(&node.name);
            if self.daemon_running(&name)? {
                pending.push((name, node.netns(), ferrolb::SPEAKER_PORT));
            }
        }
        let start = Instant::now();
        while !pending.is_empty() {
            let names: Vec<&str> = pending.iter().map(|(n, _, _)| n.as_str()).collect();
            process::check_running(&self.paths, &names)?;
            pending.retain(|(_, netns, port)| ferrolb::readyz(netns, *port) != 200);
            if pending.is_empty() {
                break;
            }
            if start.elapsed() >= limit {
                let names: Vec<&str> = pending.iter().map(|(n, _, _)| n.as_str()).collect();
                return Err(LabError::Timeout {
                    what: format!("/readyz of {}", names.join(", ")),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits (at most `limit`) until `path` exists; one of the daemons
    /// `watch` that dies meanwhile fails the wait.
    pub(super) async fn wait_file(
        &self,
        path: &Path,
        watch: &[&str],
        limit: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if path.exists() {
                return Ok(());
            }
            process::check_running(&self.paths, watch)?;
            if start.elapsed() >= limit {
                return Err(LabError::Timeout {
                    what: path.display().to_string(),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemons of the Kubernetes cluster itself.
    fn kube_daemons(&self) -> Vec<String> {
        let mut names = vec![
            components::CONTROL_PLANE.to_owned(),
            components::FORWARD.to_owned(),
        ];
        for n in self.topology.nodes() {
            names.push(components::node_agent_name(&n.name));
            names.push(components::kube_proxy_name(&n.name));
        }
        names
    }

    /// Waits until every node of the lab is registered and Ready; a daemon of
    /// the cluster that dies meanwhile fails the wait.
    pub async fn wait_nodes_ready(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let watch = self.kube_daemons();
        let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
        let mut last = String::from("no answer yet");
        let mut client = None;
        loop {
            process::check_running(&self.paths, &watch)?;
            if client.is_none() {
                match self.kube_client().await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(c) = &client {
                match kubeapi::node_readiness(c).await {
                    Ok(ready) => {
                        let missing: Vec<&str> = self
                            .topology
                            .nodes()
                            .map(|n| n.name.as_str())
                            .filter(|n| ready.get(*n) != Some(&true))
                            .collect();
                        if missing.is_empty() {
                            return Ok(());
                        }
                        last = format!("not Ready: {}", missing.join(", "));
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if start.elapsed() >= limit {
                return Err(LabError::Timeout {
                    what: format!("all nodes Ready ({last})"),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until node `node` has the given readiness.
    pub async fn wait_node_ready(&self, node: &str, ready: bool, limit: Duration) -> Result<()> {
        let node = self.topology.node(node)?.name.clone();
        let client = self.kube_client().await?;
        let start = Instant::now();
        loop {
            let last = match kubeapi::node_readiness(&client).await {
                Ok(states) if states.get(&node) == Some(&ready) => return Ok(()),
                Ok(states) => format!("Ready={:?}", states.get(&node)),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= limit {
                return Err(LabError::Timeout {
                    what: format!("node {node} Ready={ready} (last: {last})"),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_retries_then_times_out() {
        let mut n = 0;
        let v = eventually("third try", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("try {n}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = eventually("never", Duration::from_millis(300), || async {
            Err::<(), _>("still no".to_owned())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("still no"), "{err}");
    }
}
