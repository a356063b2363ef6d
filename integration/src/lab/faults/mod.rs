//! What the tests do to the lab on purpose: fail a node and recover it,
//! crash a daemon, restart ferrolb's controller and speakers (here); stop
//! the control plane for a while ([`control_plane`]); drop, lose or delay
//! packets of one port between hosts, or cut a node off the API server
//! ([`traffic`], with the nftables text in [`rules`] and the relay of a
//! delay in [`delay`]). [`ActiveFault`] is
//! what `lab status` lists.

mod control_plane;
mod delay;
pub mod rules;
mod traffic;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cmd::Cmd;
use super::error::{LabError, Result};
use super::topology::{self, Host, Role};
use super::{Lab, components, process};
pub use control_plane::ControlPlaneStop;
pub use traffic::{API_PORT, api_cut_name};

/// A fault in force on the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveFault {
    /// The control plane was stopped ([`Lab::stop_control_plane`]).
    ControlPlaneStopped {
        /// When, in unix seconds.
        since_unix: u64,
    },
    /// A traffic fault ([`Lab::add_traffic_fault`], [`Lab::cut_from_api`]).
    Traffic {
        /// Its name.
        name: String,
        /// The hosts that have it, each with what it does there.
        on: Vec<(String, String)>,
        /// Packets it matched, on all hosts.
        matched: u64,
        /// Packets it dropped, on all hosts.
        dropped: u64,
    },
}

impl ActiveFault {
    /// The name to remove it by (`control-plane` for a stopped control
    /// plane).
    pub fn name(&self) -> &str {
        match self {
            ActiveFault::ControlPlaneStopped { .. } => "control-plane",
            ActiveFault::Traffic { name, .. } => name,
        }
    }
}

impl fmt::Display for ActiveFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActiveFault::ControlPlaneStopped { since_unix } => write!(
                f,
                "control-plane: stopped since unix {since_unix} (`lab fault start-control-plane` starts it)"
            ),
            ActiveFault::Traffic {
                name,
                on,
                matched,
                dropped,
            } => {
                write!(f, "{name}: matched {matched} packets, dropped {dropped}")?;
                for (_, what) in on {
                    write!(f, "\n    {what}")?;
                }
                Ok(())
            }
        }
    }
}

impl Lab {
    /// Simulates a node failure: its switch port goes down and every process
    /// of its namespace and of its pods' namespaces is killed (SIGKILL), so
    /// heartbeats stop and nothing answers for it any more. The control-plane
    /// node cannot fail: the whole cluster would go with it.
    pub fn node_fail(&self, node: &str) -> Result<()> {
        let h = self.topology.node(node)?.clone();
        if h.role == Role::ControlPlane {
            return Err(LabError::Refused(format!(
                "node-fail {}: it runs the control plane, the whole cluster would stop; fail a worker",
                h.name
            )));
        }
        set_switch_port(&h, "down")?;
        let ns = h.netns();
        let pod_prefix = format!("{ns}-");
        let mut pids = BTreeSet::new();
        for n in topology::lab_netns()? {
            if n == ns || n.starts_with(&pod_prefix) {
                pids.extend(process::netns_pids(&n)?);
            }
        }
        let daemons = node_daemons(&h);
        for name in &daemons {
            if let Some(pf) = process::running_pid_file(&self.paths, name)? {
                pids.extend(process::session_of(pf.pid));
            }
        }
        process::kill_all(&pids, Signal::SIGKILL, Duration::from_secs(10))?;
        for name in &daemons {
            process::remove_pid_file(&self.paths, name)?;
        }
        tracing::info!(node = %h.name, killed = pids.len(), "node failed");
        Ok(())
    }

    /// Undoes [`Lab::node_fail`]: switch port up, node agent, kube-proxy and
    /// (unless bare) the speaker restarted. Does not wait for Ready.
    pub fn node_recover(&self, node: &str) -> Result<()> {
        let h = self.topology.node(node)?.clone();
        set_switch_port(&h, "up")?;
        if self.options.topology_only {
            return Ok(());
        }
        self.start_node(&h)?;
        if !self.options.bare
            && let Some(bin) = self.speaker_bin()
        {
            process::start_if_needed(&self.paths, &self.speaker_spec(&h, &bin), &[])?;
        }
        tracing::info!(node = %h.name, "node recovered");
        Ok(())
    }

    /// Kills daemon `name` and its session at once (SIGKILL): a crash.
    pub fn kill_daemon(&self, name: &str) -> Result<()> {
        process::kill(&self.paths, name)
    }

    /// Restarts ferrolb's controller (SIGTERM, SIGKILL after 5 s, start).
    pub fn restart_controller(&self) -> Result<()> {
        let bin = self
            .controller_bin()
            .ok_or(LabError::FerrolbMissing("ferrolb-controller"))?;
        process::stop(&self.paths, components::CONTROLLER, Duration::from_secs(5))?;
        process::spawn(&self.paths, &self.controller_spec(&bin))?;
        Ok(())
    }

    /// Restarts ferrolb's controller, then every node's speaker.
    pub fn restart_ferrolb(&self) -> Result<()> {
        self.restart_controller()?;
        for node in self.topology.nodes() {
            self.restart_speaker(&node.name)?;
        }
        Ok(())
    }

    /// Restarts ferrolb's speaker on `node`.
    pub fn restart_speaker(&self, node: &str) -> Result<()> {
        self.restart_speaker_with(node, &self.options.speaker_args)
    }

    /// Restarts ferrolb's speaker on `node` with `args` instead of the
    /// lab's speaker arguments (e.g. another `--memberlist-secret`).
    pub fn restart_speaker_with(&self, node: &str, args: &[String]) -> Result<()> {
        let h = self.topology.node(node)?;
        let bin = self
            .speaker_bin()
            .ok_or(LabError::FerrolbMissing("ferrolb-speaker"))?;
        let name = components::speaker_name(&h.name);
        process::stop(&self.paths, &name, Duration::from_secs(5))?;
        process::spawn(
            &self.paths,
            &components::speaker(&self.paths, h, &bin, args),
        )?;
        Ok(())
    }
}

/// The daemons that run in node `node`'s namespace.
fn node_daemons(node: &Host) -> Vec<String> {
    vec![
        components::node_agent_name(&node.name),
        components::kube_proxy_name(&node.name),
        components::speaker_name(&node.name),
    ]
}

/// Sets `host`'s port on the switch `up` or `down`.
fn set_switch_port(host: &Host, state: &str) -> Result<()> {
    Cmd::ip(&[
        "-n",
        topology::SWITCH_NS,
        "link",
        "set",
        &host.switch_port(),
        state,
    ])
    .run()
    .map(drop)
}
