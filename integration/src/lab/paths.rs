//! Where the lab keeps its state, and where every built artefact is.
//!
//! STATE (default `<repo>/.lab`, or `FERROLB_LAB_DIR`) holds the options
//! the lab was brought up with, the control plane's data and kubeconfigs,
//! one log and one pid file per daemon, and what the faults keep outside the
//! kernel (a stopped control plane's marker, the delay relays' readiness). Built artefacts follow the rules of
//! `scripts/paths.sh`, the shell's copy of these rules (a test checks that
//! both agree): cargo's outputs in `$CARGO_TARGET_DIR` or `<repo>/target`,
//! from the profile `$FERROLB_PROFILE` or else the newer build; the Go-built
//! harness and tools under `<repo>/target`.

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
/// Overrides the path of helm.
pub const ENV_HELM: &str = "FERROLB_HELM";
/// The cargo profile (`debug`, `release`) whose binaries are used.
pub const ENV_PROFILE: &str = "FERROLB_PROFILE";

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
    "faults",
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
    /// Records of the faults the lab made that live outside the kernel.
    pub fn faults(&self) -> PathBuf {
        self.state.join("faults")
    }
    /// Present while the control plane is stopped on purpose; holds since
    /// when (unix seconds).
    pub fn control_plane_stopped(&self) -> PathBuf {
        self.faults().join("control-plane-stopped")
    }
    /// State directory of node agent `node`.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state.join("nodes").join(node)
    }

    /// ferrolb's CRD manifests (generated, committed).
    pub fn crds(&self) -> PathBuf {
        self.repo.join("deploy/crds")
    }

    /// The Go harness.
    pub fn harness(&self) -> PathBuf {
        env_path(ENV_HARNESS).unwrap_or_else(|| self.repo.join("target/harness/k8s-harness"))
    }

    /// kubectl of the lab's Kubernetes version, built with the harness.
    pub fn kubectl(&self) -> PathBuf {
        let harness = self.harness();
        harness
            .parent()
            .map(|d| d.join("kubectl"))
            .unwrap_or_else(|| PathBuf::from("kubectl"))
    }

    /// Tools built from Go modules (helm, actionlint).
    pub fn tools(&self) -> PathBuf {
        self.repo.join("target/tools")
    }

    /// helm.
    pub fn helm(&self) -> PathBuf {
        env_path(ENV_HELM).unwrap_or_else(|| self.tools().join("helm"))
    }

    /// Cargo's target directory.
    pub fn target_dir(&self) -> PathBuf {
        env_path("CARGO_TARGET_DIR").unwrap_or_else(|| self.repo.join("target"))
    }

    /// The cargo profile to take `binary` from: `FERROLB_PROFILE`, else the
    /// one holding the newer build of it (debug when neither or both are as
    /// new).
    pub fn profile(&self, binary: &str) -> String {
        if let Some(p) = std::env::var_os(ENV_PROFILE).filter(|v| !v.is_empty()) {
            return p.to_string_lossy().into_owned();
        }
        let target = self.target_dir();
        let modified = |profile: &str| {
            std::fs::metadata(target.join(profile).join(binary))
                .and_then(|m| m.modified())
                .ok()
        };
        match (modified("release"), modified("debug")) {
            (Some(r), Some(d)) if r > d => "release".to_owned(),
            (Some(_), None) => "release".to_owned(),
            _ => "debug".to_owned(),
        }
    }

    /// Where cargo puts `binary` of [`Self::profile`].
    pub fn cargo_bin(&self, binary: &str) -> PathBuf {
        self.target_dir().join(self.profile(binary)).join(binary)
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
        env_path(env).or_else(|| Some(self.cargo_bin(name)).filter(|p| p.is_file()))
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(|p| absolute(PathBuf::from(p)))
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
