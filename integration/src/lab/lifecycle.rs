//! A lab's life: brought up fresh for a test ([`Lab::up`]), brought to the
//! state its options describe keeping what runs ([`Lab::ensure`], `lab up`),
//! found again from its state directory ([`Lab::attach`]) and torn down
//! ([`Lab::down`]). Bring-up starts the daemons in order and waits for each
//! stage to be ready.

use std::fs;
use std::time::{Duration, Instant};

use super::error::{LabError, Result};
use super::options::{read_options, write_options};
use super::paths::LabPaths;
use super::topology::{Host, Topology};
use super::{LOCK_WAIT, Lab, LabOptions, components, ferrolb, lock, process, teardown};

fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

impl Lab {
    /// A fresh lab for a test: waits (at most [`LOCK_WAIT`]) until no other
    /// process owns the machine's lab, removes any lab left over, builds a
    /// new one and returns a guard that tears it down on drop. A bring-up
    /// that fails is torn down before the error is returned.
    pub async fn up(options: LabOptions) -> Result<Lab> {
        let paths = LabPaths::from_env();
        require_root()?;
        let lock = lock::acquire(LOCK_WAIT)?;
        teardown::down(&paths)?;
        let lab = Lab {
            topology: Topology::new(options.workers, options.ip_family),
            paths,
            options,
            owned: true,
            _lock: Some(lock),
        };
        lab.bring_up().await?;
        Ok(lab)
    }

    /// Brings the lab at `paths` to the state `options` describe, keeping
    /// whatever already runs (idempotent `lab up`). The handle does not tear
    /// the lab down on drop, and the caller is in charge of the lab lock.
    pub async fn ensure(paths: LabPaths, options: LabOptions) -> Result<Lab> {
        require_root()?;
        if let Some(running) = read_options(&paths)?
            && !running.same_lab(&options)
        {
            return Err(LabError::OptionsMismatch {
                running: running.summary(),
            });
        }
        let lab = Lab {
            topology: Topology::new(options.workers, options.ip_family),
            paths,
            options,
            owned: false,
            _lock: None,
        };
        lab.bring_up().await?;
        Ok(lab)
    }

    /// A handle on the lab that is up at the default paths.
    pub fn attach() -> Result<Lab> {
        Self::attach_at(LabPaths::from_env())
    }

    /// A handle on the lab that is up at `paths`.
    pub fn attach_at(paths: LabPaths) -> Result<Lab> {
        let options = read_options(&paths)?.ok_or_else(|| LabError::NotUp(paths.state_file()))?;
        Ok(Lab {
            topology: Topology::new(options.workers, options.ip_family),
            paths,
            options,
            owned: false,
            _lock: None,
        })
    }

    /// Tears the lab down now and reports every error.
    pub fn down(mut self) -> Result<()> {
        self.owned = false;
        teardown::down(&self.paths)
    }

    /// Keeps the lab running after this handle is dropped.
    pub fn disown(&mut self) {
        self.owned = false;
    }

    async fn bring_up(&self) -> Result<()> {
        let started = Instant::now();
        let opts = &self.options;
        if !opts.topology_only {
            let harness = self.paths.harness();
            if !harness.is_file() {
                return Err(LabError::HarnessMissing(harness));
            }
            if !opts.bare && opts.require_ferrolb {
                self.controller_bin()
                    .ok_or(LabError::FerrolbMissing("ferrolb-controller"))?;
                self.speaker_bin()
                    .ok_or(LabError::FerrolbMissing("ferrolb-speaker"))?;
            }
        }
        write_options(&self.paths, opts)?;
        self.topology.ensure()?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "topology ready"
        );
        if opts.topology_only {
            return Ok(());
        }

        let paths = &self.paths;
        let cp = components::control_plane(paths, &self.topology, opts);
        process::start_if_needed(paths, &cp, &[paths.cp_ready()])?;
        self.wait_file(&paths.cp_ready(), &[&cp.name], opts.ready_timeout)
            .await?;
        self.forget_control_plane_stop()?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "control plane ready"
        );

        let fwd = components::forward(paths);
        process::start_if_needed(paths, &fwd, &[paths.kubeconfig(), paths.forward_port()])?;
        self.wait_file(
            &paths.kubeconfig(),
            &[&cp.name, &fwd.name],
            Duration::from_secs(30),
        )
        .await?;

        for node in self.topology.nodes() {
            self.start_node(node)?;
        }
        if !opts.bare {
            // What the chart installs first: ferrolb's watches then find
            // their kinds at once, and the speakers their key.
            let client = self.kube_client().await?;
            ferrolb::install(&client, &self.paths.crds(), opts.ready_timeout).await?;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "CRDs established, membership Secret present"
            );
            self.start_ferrolb()?;
        }
        self.wait_nodes_ready(opts.ready_timeout).await?;
        if !opts.bare {
            self.wait_ferrolb_ready(opts.ready_timeout).await?;
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "lab up");
        Ok(())
    }

    /// Starts node `node`'s agent and kube-proxy unless they run.
    pub(super) fn start_node(&self, node: &Host) -> Result<()> {
        let agent = components::node_agent(&self.paths, &self.topology, node);
        let dir = self.paths.node_dir(&node.name);
        fs::create_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
        process::start_if_needed(&self.paths, &agent, &[])?;
        let proxy = components::kube_proxy(&self.paths, &self.topology, node, &self.options);
        process::start_if_needed(&self.paths, &proxy, &[])?;
        Ok(())
    }
}
