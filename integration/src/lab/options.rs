//! What lab to build ([`LabOptions`]), and the state file that records the
//! options of the running lab, so that later commands find the same lab and
//! `up` refuses to turn it into another.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{LabError, Result};
use super::paths::LabPaths;
use super::topology::IpFamily;

/// kube-proxy's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// iptables rules.
    #[default]
    Iptables,
    /// nftables rules.
    Nftables,
}

impl ProxyMode {
    /// The value of kube-proxy's `--mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// What lab to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabOptions {
    /// Number of worker nodes (besides the control-plane node `m-k8s`).
    pub workers: u8,
    /// Address families.
    pub ip_family: IpFamily,
    /// Kubernetes only: no ferrolb controller and speakers.
    pub bare: bool,
    /// Namespaces and links only: no Kubernetes at all.
    pub topology_only: bool,
    /// kube-proxy's backend.
    pub proxy_mode: ProxyMode,
    /// How long the node-lifecycle controller waits before a silent node
    /// becomes NotReady.
    pub node_monitor_grace_period: Duration,
    /// Bound on each wait of `up` (control plane ready, nodes Ready).
    #[serde(skip, default = "default_ready_timeout")]
    pub ready_timeout: Duration,
    /// Fail `up` when ferrolb's binaries are not built, instead of running
    /// without them (for tests of ferrolb itself). Ignored when `bare`.
    #[serde(skip)]
    pub require_ferrolb: bool,
    /// ferrolb controller to run instead of the one found in the build
    /// outputs (or `FERROLB_CONTROLLER`).
    #[serde(default)]
    pub controller_bin: Option<PathBuf>,
    /// ferrolb speaker to run instead of the one found in the build outputs
    /// (or `FERROLB_SPEAKER`).
    #[serde(default)]
    pub speaker_bin: Option<PathBuf>,
    /// Extra command-line arguments of the controller (e.g. `--lb-class`).
    #[serde(default)]
    pub controller_args: Vec<String>,
    /// Extra command-line arguments of every speaker.
    #[serde(default)]
    pub speaker_args: Vec<String>,
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(180)
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            workers: 3,
            ip_family: IpFamily::Ipv4,
            bare: false,
            topology_only: false,
            proxy_mode: ProxyMode::Iptables,
            node_monitor_grace_period: Duration::from_secs(20),
            ready_timeout: default_ready_timeout(),
            require_ferrolb: false,
            controller_bin: None,
            speaker_bin: None,
            controller_args: Vec::new(),
            speaker_args: Vec::new(),
        }
    }
}

impl LabOptions {
    /// Whether a lab built with `other` is the lab these options ask for.
    pub(super) fn same_lab(&self, other: &LabOptions) -> bool {
        let key = |o: &LabOptions| LabOptions {
            ready_timeout: Duration::ZERO,
            require_ferrolb: false,
            controller_bin: None,
            speaker_bin: None,
            ..o.clone()
        };
        key(self) == key(other)
    }

    /// One line for messages and `lab status`.
    pub(super) fn summary(&self) -> String {
        format!(
            "workers={} family={:?} bare={} topology_only={} proxy={} grace={}s controller_args={:?} speaker_args={:?}",
            self.workers,
            self.ip_family,
            self.bare,
            self.topology_only,
            self.proxy_mode.as_str(),
            self.node_monitor_grace_period.as_secs(),
            self.controller_args,
            self.speaker_args,
        )
    }
}

/// The options of the lab whose state is at `paths`, if one is up.
pub(super) fn read_options(paths: &LabPaths) -> Result<Option<LabOptions>> {
    let path = paths.state_file();
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LabError::State { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LabError::Io { path, source }),
    }
}

/// Records `opts` as the options of the lab at `paths`.
pub(super) fn write_options(paths: &LabPaths, opts: &LabOptions) -> Result<()> {
    fs::create_dir_all(&paths.state).map_err(|source| LabError::Io {
        path: paths.state.clone(),
        source,
    })?;
    let path = paths.state_file();
    let json = serde_json::to_vec_pretty(opts).map_err(|source| LabError::State {
        path: path.clone(),
        source,
    })?;
    fs::write(&path, json).map_err(|source| LabError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_equality_ignores_timeouts() {
        let a = LabOptions::default();
        let b = LabOptions {
            ready_timeout: Duration::from_secs(1),
            ..LabOptions::default()
        };
        assert!(a.same_lab(&b));
        let c = LabOptions {
            workers: 2,
            ..LabOptions::default()
        };
        assert!(!a.same_lab(&c));
        let json = serde_json::to_string(&a).unwrap();
        let back: LabOptions = serde_json::from_str(&json).unwrap();
        assert!(back.same_lab(&a));
    }
}
