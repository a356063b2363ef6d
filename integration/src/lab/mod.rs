//! The lab: a Kubernetes cluster whose nodes are network namespaces on one
//! layer-2 segment, plus a client host outside the cluster.
//!
//! Model: [`topology`] builds namespaces and links with `ip`; the Go
//! harness provides Kubernetes (control plane in `flb-m-k8s`, a node agent
//! and kube-proxy per node) and a forwarder that makes the API server
//! reachable from the root namespace through a unix socket, so the root
//! namespace never gets a lab address or route; ferrolb's controller and
//! speakers run as plain processes in the node namespaces. Daemons are
//! detached ([`process`]), so a lab outlives the `lab up` command; all state
//! sits in one directory ([`paths`]), and [`teardown`] removes everything
//! named `flb-*` even when that state is gone.
//!
//! [`Lab`] is both the handle the `lab` binary uses and the guard e2e tests
//! hold: a lab made with [`Lab::up`] is torn down when the guard drops, also
//! when the test panics. Its methods are grouped by topic: `lifecycle` (up,
//! ensure, attach, down), `daemons` (ferrolb's binaries, starting and
//! stopping by name), `faults` (node failure and recovery, crashes,
//! restarts; a stopped control plane; packets dropped or lost between hosts,
//! a node cut off the API server; the faults in force), `probes` (exec,
//! curl, neighbour entries, who announces an address), `wait` (readiness,
//! and [`eventually`]) and `status` (`lab status`, `lab env`).

pub(crate) mod cmd;
pub mod components;
mod daemons;
pub mod error;
mod faults;
pub mod ferrolb;
pub mod kubeapi;
mod lifecycle;
pub mod lock;
mod options;
pub mod paths;
mod probes;
pub mod process;
mod status;
pub mod teardown;
pub mod topology;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{LabError, Result, TeardownErrors};
pub use faults::rules::{Direction, Effect, TrafficFault, Transport};
pub use faults::{API_PORT, ActiveFault, ControlPlaneStop, api_cut_name};
pub use options::{LabOptions, ProxyMode};
pub use paths::{LabPaths, repo_root};
pub use probes::{curl_argv, url_host};
pub use status::Status;
pub use topology::{Host, IpFamily, Role, Topology};
pub use wait::eventually;

/// Environment variable that keeps a test's lab up after the test, for
/// debugging (`FERROLB_LAB_KEEP=1`).
pub const ENV_KEEP: &str = "FERROLB_LAB_KEEP";

/// How long [`Lab::up`] waits for another process's lab (another test run)
/// to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(900);

/// A lab, and for tests the guard that removes it.
#[derive(Debug)]
pub struct Lab {
    paths: LabPaths,
    options: LabOptions,
    topology: Topology,
    /// Tear down on drop (labs made by [`Lab::up`]).
    owned: bool,
    /// The machine's lab lock, for labs made by [`Lab::up`]; released after
    /// teardown (fields drop after `Drop::drop`).
    _lock: Option<lock::LabLock>,
}

impl Lab {
    /// The lab's paths.
    pub fn paths(&self) -> &LabPaths {
        &self.paths
    }

    /// The options the lab was built with.
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// The lab's hosts.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Kubeconfig usable in the root namespace (via the forwarder).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.paths.kubeconfig()
    }

    /// Kubeconfig usable inside the lab's namespaces.
    pub fn lab_kubeconfig_path(&self) -> PathBuf {
        self.paths.cp_kubeconfig()
    }

    /// A Kubernetes client from the root namespace's kubeconfig.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        kubeapi::client(&self.kubeconfig_path()).await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if std::env::var_os(ENV_KEEP).is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!(
                "lab: {ENV_KEEP} is set: leaving the lab up (state {}); remove it with `integration/lab down`",
                self.paths.state.display()
            );
            return;
        }
        if let Err(e) = teardown::down(&self.paths) {
            eprintln!("lab: teardown: {e}");
        }
    }
}
