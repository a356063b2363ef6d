//! The lab's daemons by name: which ferrolb binaries the lab runs, starting
//! ferrolb (and an extra controller replica), stopping a daemon, and
//! whether one runs, its pid and its log. The supervision itself is
//! [`process`](super::process).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{LabError, Result};
use super::process::DaemonSpec;
use super::topology::Host;
use super::{Lab, components, process};

impl Lab {
    /// The ferrolb controller this lab runs, if any is built.
    pub fn controller_bin(&self) -> Option<PathBuf> {
        self.options
            .controller_bin
            .clone()
            .or_else(|| self.paths.controller())
    }

    /// The ferrolb speaker this lab runs, if any is built.
    pub fn speaker_bin(&self) -> Option<PathBuf> {
        self.options
            .speaker_bin
            .clone()
            .or_else(|| self.paths.speaker())
    }

    /// The lab's controller running `bin` with the lab's arguments.
    pub(super) fn controller_spec(&self, bin: &Path) -> DaemonSpec {
        components::controller(
            &self.paths,
            &self.topology,
            bin,
            &self.options.controller_args,
        )
    }

    /// The lab's speaker on `node` running `bin` with the lab's arguments.
    pub(super) fn speaker_spec(&self, node: &Host, bin: &Path) -> DaemonSpec {
        components::speaker(&self.paths, node, bin, &self.options.speaker_args)
    }

    /// Starts the controller and all speakers that are not running, when
    /// their binaries are built.
    pub(super) fn start_ferrolb(&self) -> Result<()> {
        match self.controller_bin() {
            Some(bin) => {
                process::start_if_needed(&self.paths, &self.controller_spec(&bin), &[])?;
            }
            None => tracing::warn!("ferrolb-controller not built: lab runs without controller"),
        }
        match self.speaker_bin() {
            Some(bin) => {
                for node in self.topology.nodes() {
                    process::start_if_needed(&self.paths, &self.speaker_spec(node, &bin), &[])?;
                }
            }
            None => tracing::warn!("ferrolb-speaker not built: lab runs without speakers"),
        }
        Ok(())
    }

    /// Starts another ferrolb controller, daemon `name`, in `node`'s
    /// namespace with `args`: a second replica for leader-election tests.
    /// Teardown stops it with the rest of the lab.
    pub fn spawn_controller(&self, name: &str, node: &str, args: &[String]) -> Result<()> {
        let h = self.topology.node(node)?;
        let bin = self
            .controller_bin()
            .ok_or(LabError::FerrolbMissing("ferrolb-controller"))?;
        process::start_if_needed(
            &self.paths,
            &components::controller_on(&self.paths, h, name, &bin, args),
            &[],
        )?;
        Ok(())
    }

    /// Stops daemon `name` (SIGTERM, SIGKILL after `grace`).
    pub fn stop_daemon(&self, name: &str, grace: Duration) -> Result<()> {
        process::stop(&self.paths, name, grace)
    }

    /// Whether daemon `name` runs.
    pub fn daemon_running(&self, name: &str) -> Result<bool> {
        Ok(self.daemon_pid(name)?.is_some())
    }

    /// The pid of daemon `name`, if it runs.
    pub fn daemon_pid(&self, name: &str) -> Result<Option<i32>> {
        Ok(process::running_pid_file(&self.paths, name)?.map(|pf| pf.pid))
    }

    /// The log file of daemon `name`.
    pub fn daemon_log(&self, name: &str) -> PathBuf {
        self.paths.log(name)
    }
}
