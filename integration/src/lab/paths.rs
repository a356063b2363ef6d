//! Where the lab keeps its state and finds its binaries.
//!
//! STATE (default `<repo>/.lab`, or `FERROLB_LAB_DIR`) holds the options
//! the lab was brought up with, the control plane's data and kubeconfigs,
//! one log and one pid file per daemon. Binaries come from the repository's
//! build outputs unless an environment variable names them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Overrides the state directory.
pub const ENV_LAB_DIR: &str = "FERROLB_LAB_DIR";
/// Overrides the path of the Go harness.
pub const ENV_HARNESS: &str = "FERROLB_HARNESS";
/// Overrides the path of the ferrolb controller binary.
pub const ENV_CONTROLLER: &str = "FERROLB_CONTROLLER";
/// Overrides the path of the ferrolb speaker binary.
pub const ENV_SPEAKER: &str = "FERROLB_SPEAKER";

/// File names directly under STATE; teardown refuses to delete a directory
/// holding anything else, so a mistyped `FERROLB_LAB_DIR` cannot wipe data.
pub(crate) const STATE_ENTRIES: &[&str] = &[
    "lab.json",
    "cp",
    "logs",
    "pids",
    "nodes",
    "kubeconfig",
    "forward.port",
];

/// Paths of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPaths {
    /// Repository root.
    pub repo: PathBuf,
    /// State directory.
    pub state: PathBuf,
}

impl LabPaths {
    /// Paths from the environment, with the repository's defaults.
    pub fn from_env() -> Self {
        let repo = repo_root();
        let state = std::env::var_os(ENV_LAB_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".lab"));
        Self::new(repo, absolute(state))
    }

    /// Paths with an explicit state directory.
    pub fn new(repo: PathBuf, state: PathBuf) -> Self {
        Self { repo, state }
    }

    /// Options of the running lab.
    pub fn state_file(&self) -> PathBuf {
        self.state.join("lab.json")
    }
    /// Control-plane data directory.
    pub fn cp_dir(&self) -> PathBuf {
        self.state.join("cp")
    }
    /// Kubeconfig for use inside the lab (server 192.0.2.10:6443).
    pub fn cp_kubeconfig(&self) -> PathBuf {
        self.cp_dir().join("kubeconfig")
    }
    /// Written by the control plane once `/readyz` is ok.
    pub fn cp_ready(&self) -> PathBuf {
        self.cp_dir().join("ready")
    }
    /// Unix socket forwarding to the API server.
    pub fn cp_socket(&self) -> PathBuf {
        self.cp_dir().join("apiserver.sock")
    }
    /// Kubeconfig for the root namespace (server 127.0.0.1:PORT).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }
    /// Port the loopback forwarder listens on.
    pub fn forward_port(&self) -> PathBuf {
        self.state.join("forward.port")
    }
    /// Daemon logs.
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    /// Daemon pid files.
    pub fn pids(&self) -> PathBuf {
        self.state.join("pids")
    }
    /// Log of daemon `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// Pid file of daemon `name`.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.pids().join(format!("{name}.pid"))
    }
    /// State directory of node agent `node`.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state.join("nodes").join(node)
    }

    /// The Go harness.
    pub fn harness(&self) -> PathBuf {
        std::env::var_os(ENV_HARNESS)
            .filter(|v| !v.is_empty())
            .map(|p| absolute(PathBuf::from(p)))
            .unwrap_or_else(|| self.repo.join("target/harness/k8s-harness"))
    }

    /// Cargo's target directory.
    pub fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(|p| absolute(PathBuf::from(p)))
            .unwrap_or_else(|| self.repo.join("target"))
    }

    /// The ferrolb controller binary, if built.
    pub fn controller(&self) -> Option<PathBuf> {
        self.ferrolb_binary(ENV_CONTROLLER, "ferrolb-controller")
    }

    /// The ferrolb speaker binary, if built.
    pub fn speaker(&self) -> Option<PathBuf> {
        self.ferrolb_binary(ENV_SPEAKER, "ferrolb-speaker")
    }

    fn ferrolb_binary(&self, env: &str, name: &str) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
            return Some(absolute(PathBuf::from(p)));
        }
        // The newer of release and debug: whichever the developer built last.
        let target = self.target_dir();
        ["release", "debug"]
            .iter()
            .map(|profile| target.join(profile).join(name))
            .filter_map(|p| {
                let modified = std::fs::metadata(&p).ok()?.modified().ok()?;
                Some((modified, p))
            })
            .max_by_key(|(m, _)| *m)
            .map(|(_, p)| p)
    }
}

/// The repository root (the parent of this crate's directory).
/// Read at run time when it can be (the `integration/lab` script sets
/// `FERROLB_REPO`; cargo sets `CARGO_MANIFEST_DIR` for tests, benches and `cargo run`):
/// a target directory shared between two checkouts keeps binaries built in the other
/// one, and their compile-time path points there.
pub fn repo_root() -> PathBuf {
    if let Some(r) = std::env::var_os("FERROLB_REPO").filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(r));
    }
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// File name of a path, for matching process command lines.
pub(crate) fn file_name(p: &Path) -> &str {
    p.file_name().and_then(OsStr::to_str).unwrap_or_default()
}
