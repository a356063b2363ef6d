//! A control-plane outage: the control plane (etcd, API server,
//! controller-manager, scheduler: one daemon) stopped, gracefully or by a
//! crash, and started again with its data, so the cluster comes back with
//! the same objects. While it is stopped, a marker file says so and since
//! when (`lab status` shows it).

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::lab::error::{LabError, Result};
use crate::lab::{Lab, components, process};

/// How long the control plane may take to stop: its components get 10 s,
/// etcd 5 s more.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// How the control plane goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlaneStop {
    /// SIGTERM: the API server ends its watches and requests, the
    /// components stop in turn (up to 15 s; SIGKILL after 20 s).
    Graceful,
    /// SIGKILL at once: a crash. etcd's data survives (it sits in the page
    /// cache).
    Crash,
}

impl Lab {
    /// Stops the control plane, keeping its data: the API server stops
    /// answering, in the lab's namespaces and through the root namespace's
    /// forwarder alike. Everything else keeps running.
    pub fn stop_control_plane(&self, how: ControlPlaneStop) -> Result<()> {
        self.require_control_plane()?;
        let marker = self.paths.control_plane_stopped();
        if !marker.exists() {
            let dir = self.paths.faults();
            fs::create_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            fs::write(&marker, format!("{now}\n")).map_err(|source| LabError::Io {
                path: marker.clone(),
                source,
            })?;
        }
        match how {
            ControlPlaneStop::Graceful => {
                process::stop(&self.paths, components::CONTROL_PLANE, STOP_GRACE)?;
            }
            ControlPlaneStop::Crash => process::kill(&self.paths, components::CONTROL_PLANE)?,
        }
        tracing::info!(?how, "control plane stopped");
        Ok(())
    }

    /// Starts the control plane again with the data it had and waits (at
    /// most `limit`) until it is ready; a control plane that runs is left
    /// alone.
    pub async fn start_control_plane(&self, limit: Duration) -> Result<()> {
        self.require_control_plane()?;
        let paths = &self.paths;
        let cp = components::control_plane(paths, &self.topology, &self.options);
        process::start_if_needed(paths, &cp, &[paths.cp_ready()])?;
        self.wait_file(&paths.cp_ready(), &[&cp.name], limit)
            .await?;
        self.forget_control_plane_stop()?;
        tracing::info!("control plane started");
        Ok(())
    }

    /// Removes the marker of a stopped control plane, once it runs again
    /// (also when `lab up` started it).
    pub(in crate::lab) fn forget_control_plane_stop(&self) -> Result<()> {
        let marker = self.paths.control_plane_stopped();
        match fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io {
                path: marker,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Since when (unix seconds) the control plane has been stopped by
    /// [`Lab::stop_control_plane`], if it is.
    pub fn control_plane_stopped_since(&self) -> Result<Option<u64>> {
        let marker = self.paths.control_plane_stopped();
        match fs::read_to_string(&marker) {
            Ok(text) => Ok(Some(text.trim().parse().unwrap_or(0))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LabError::Io {
                path: marker,
                source,
            }),
        }
    }

    fn require_control_plane(&self) -> Result<()> {
        if self.options.topology_only {
            return Err(LabError::Refused(
                "this lab is topology-only: it has no control plane".to_owned(),
            ));
        }
        Ok(())
    }
}
