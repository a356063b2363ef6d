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
//! sits in one directory, and [`teardown`] removes everything named `flb-*`
//! even when that state is gone.
//!
//! [`Lab`] is both the handle the `lab` binary uses and the guard e2e tests
//! hold: a lab made with [`Lab::up`] is torn down when the guard drops, also
//! when the test panics.

pub(crate) mod cmd;
pub mod components;
pub mod error;
pub mod ferrolb;
pub mod kubeapi;
pub mod lock;
pub mod paths;
pub mod process;
pub mod teardown;
pub mod topology;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use cmd::Cmd;
pub use error::{LabError, Result, TeardownErrors};
pub use paths::{LabPaths, repo_root};
use process::DaemonSpec;
pub use topology::{Host, IpFamily, Role, Topology};

/// Environment variable that keeps a test's lab up after the test, for
/// debugging (`FERROLB_LAB_KEEP=1`).
pub const ENV_KEEP: &str = "FERROLB_LAB_KEEP";

/// How long [`Lab::up`] waits for another process's lab (another test run)
/// to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(900);

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
    fn same_lab(&self, other: &LabOptions) -> bool {
        let key = |o: &LabOptions| LabOptions {
            ready_timeout: Duration::ZERO,
            require_ferrolb: false,
            controller_bin: None,
            speaker_bin: None,
            ..o.clone()
        };
        key(self) == key(other)
    }

    fn summary(&self) -> String {
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

fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

fn read_options(paths: &LabPaths) -> Result<Option<LabOptions>> {
    let path = paths.state_file();
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LabError::State { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LabError::Io { path, source }),
    }
}

fn write_options(paths: &LabPaths, opts: &LabOptions) -> Result<()> {
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

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The curl command line for requests inside the lab (and the e2e scenarios):
/// silent but with errors, no proxy, IPv6 literals allowed, bounded.
pub fn curl_argv(url: &str, timeout: Duration) -> Vec<String> {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    [
        "curl",
        "-sS",
        "-g",
        "--noproxy",
        "*",
        "--max-time",
        &secs,
        url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The kernel's lines about killing process `pid` (the OOM killer), if any;
/// best effort, for error messages.
fn kernel_kill_lines(pid: i32) -> Option<String> {
    let out = Cmd::new("dmesg")
        .limit(Duration::from_secs(5))
        .stdout()
        .ok()?;
    let needle = format!("Killed process {pid} ");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(&needle)).collect();
    (!lines.is_empty()).then(|| lines.join(" | "))
}

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
        self.start_if_needed(&cp, &[paths.cp_ready()])?;
        self.wait_file(&paths.cp_ready(), &[&cp.name], opts.ready_timeout)
            .await?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "control plane ready"
        );

        let fwd = components::forward(paths);
        self.start_if_needed(&fwd, &[paths.kubeconfig(), paths.forward_port()])?;
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
            self.check_running(&names)?;
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

    /// Starts `spec` unless its pid file names a running process; `stale`
    /// files (readiness markers of a previous run) are removed first.
    fn start_if_needed(&self, spec: &DaemonSpec, stale: &[PathBuf]) -> Result<bool> {
        if let Some(pf) = process::read_pid_file(&self.paths, &spec.name)?
            && pf.is_running()
        {
            tracing::debug!(daemon = %spec.name, pid = pf.pid, "daemon already running");
            return Ok(false);
        }
        for f in stale {
            remove_file(f)?;
        }
        process::spawn(&self.paths, spec)?;
        Ok(true)
    }

    fn start_node(&self, node: &Host) -> Result<()> {
        let agent = components::node_agent(&self.paths, &self.topology, node);
        let dir = self.paths.node_dir(&node.name);
        fs::create_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
        self.start_if_needed(&agent, &[])?;
        let proxy = components::kube_proxy(&self.paths, &self.topology, node, &self.options);
        self.start_if_needed(&proxy, &[])?;
        Ok(())
    }

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

    /// Starts the controller and all speakers that are not running, when
    /// their binaries are built.
    fn start_ferrolb(&self) -> Result<()> {
        match self.controller_bin() {
            Some(bin) => {
                self.start_if_needed(
                    &components::controller(
                        &self.paths,
                        &self.topology,
                        &bin,
                        &self.options.controller_args,
                    ),
                    &[],
                )?;
            }
            None => tracing::warn!("ferrolb-controller not built: lab runs without controller"),
        }
        match self.speaker_bin() {
            Some(bin) => {
                for node in self.topology.nodes() {
                    self.start_if_needed(
                        &components::speaker(&self.paths, node, &bin, &self.options.speaker_args),
                        &[],
                    )?;
                }
            }
            None => tracing::warn!("ferrolb-speaker not built: lab runs without speakers"),
        }
        Ok(())
    }

    /// The first of `names` that does not run, and the pid its pid file
    /// recorded (`None`: no pid file).
    fn first_dead(&self, names: &[&str]) -> Result<Option<(String, Option<i32>)>> {
        for name in names {
            let pid_file = process::read_pid_file(&self.paths, name)?;
            if !pid_file.as_ref().is_some_and(|pf| pf.is_running()) {
                return Ok(Some(((*name).to_owned(), pid_file.map(|pf| pf.pid))));
            }
        }
        Ok(None)
    }

    /// The error for daemon `name` found dead, saying how it ended.
    fn died(&self, name: String, pid: Option<i32>) -> LabError {
        let log = self.paths.log(&name);
        let how = match pid {
            Some(pid) => {
                let ending = process::ending(pid);
                // A kill leaves nothing in the daemon's own log; the kernel's
                // says whether it was the OOM killer.
                match ending
                    .is_sigkill()
                    .then(|| kernel_kill_lines(pid))
                    .flatten()
                {
                    Some(kernel) => format!("{ending} (kernel log: {kernel})"),
                    None => ending.to_string(),
                }
            }
            None => "has no pid file".to_owned(),
        };
        LabError::DaemonDied {
            name,
            how,
            tail: process::log_tail(&log, 20),
            log,
        }
    }

    fn check_running(&self, names: &[&str]) -> Result<()> {
        match self.first_dead(names)? {
            Some((name, pid)) => Err(self.died(name, pid)),
            None => Ok(()),
        }
    }

    async fn wait_file(&self, path: &Path, watch: &[&str], limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if path.exists() {
                return Ok(());
            }
            self.check_running(watch)?;
            if start.elapsed() >= limit {
                return Err(LabError::Timeout {
                    what: path.display().to_string(),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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
            self.check_running(&watch)?;
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

    /// Runs `argv` in host `host`'s namespace, with `KUBECONFIG` pointing at
    /// the in-lab kubeconfig; returns the output whatever the exit status.
    /// Bounded to 120 s.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, host: &str, argv: &[S]) -> Result<Output> {
        self.exec_with_limit(host, argv, Duration::from_secs(120))
    }

    /// [`Lab::exec`] with an explicit bound.
    pub fn exec_with_limit<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: &str,
        argv: &[S],
        limit: Duration,
    ) -> Result<Output> {
        let h = self.topology.host(host)?;
        Cmd::in_netns(&h.netns(), argv)
            .env("KUBECONFIG", self.lab_kubeconfig_path())
            .limit(limit)
            .output()
    }

    /// Fetches `url` with curl from host `from`; the body on success.
    pub fn curl(&self, from: &str, url: &str, timeout: Duration) -> Result<String> {
        let h = self.topology.host(from)?;
        let c = Cmd::in_netns(&h.netns(), &curl_argv(url, timeout))
            .limit(timeout + Duration::from_secs(5));
        Ok(String::from_utf8_lossy(&c.run()?.stdout).into_owned())
    }

    /// Whether host `from` reaches `ip` on the segment: a TCP connection to a
    /// closed port must be refused (the peer's kernel answered) rather than
    /// time out. Works without `ping` and without any server.
    pub fn reachable(&self, from: &str, ip: std::net::IpAddr) -> Result<bool> {
        let h = self.topology.host(from)?;
        let url = match ip {
            std::net::IpAddr::V4(a) => format!("http://{a}:9/"),
            std::net::IpAddr::V6(a) => format!("http://[{a}]:9/"),
        };
        let c = Cmd::in_netns(&h.netns(), &curl_argv(&url, Duration::from_secs(2)))
            .limit(Duration::from_secs(8));
        let out = c.output()?;
        // curl exit 7 is "could not connect": refused (the peer's kernel sent
        // a RST) or unreachable; only a resolved neighbour entry tells the
        // first apart.
        Ok(out.status.code() == Some(7) && self.neighbour_mac(from, ip)?.is_some())
    }

    /// The MAC address host `host` has cached for `ip` (its ARP/NDP entry), if
    /// it has a usable one.
    pub fn neighbour_mac(&self, host: &str, ip: std::net::IpAddr) -> Result<Option<String>> {
        let h = self.topology.host(host)?;
        let out = Cmd::ip(&[
            "-n",
            &h.netns(),
            "neigh",
            "show",
            "to",
            &ip.to_string(),
            "dev",
            topology::HOST_IF,
        ])
        .stdout()?;
        Ok(parse_lladdr(&out))
    }

    /// Forgets host `host`'s ARP/NDP entry for `ip`, so that the next packet
    /// asks again (absent is fine).
    pub fn flush_neighbour(&self, host: &str, ip: std::net::IpAddr) -> Result<()> {
        let h = self.topology.host(host)?;
        Cmd::ip(&[
            "-n",
            &h.netns(),
            "neigh",
            "flush",
            "to",
            &ip.to_string(),
            "dev",
            topology::HOST_IF,
        ])
        .run()
        .map(drop)
    }

    /// The node whose `eth0` MAC host `from` has cached for `ip`: who
    /// answered ARP/NDP for a LoadBalancer address, as the client sees it.
    pub fn announcer(&self, from: &str, ip: std::net::IpAddr) -> Result<Option<String>> {
        let Some(mac) = self.neighbour_mac(from, ip)? else {
            return Ok(None);
        };
        for node in self.topology.nodes() {
            if self.interface_mac(&node.name)?.eq_ignore_ascii_case(&mac) {
                return Ok(Some(node.name.clone()));
            }
        }
        Ok(None)
    }

    /// The MAC address of host `host`'s `eth0`.
    pub fn interface_mac(&self, host: &str) -> Result<String> {
        let h = self.topology.host(host)?;
        let c = Cmd::ip(&["-n", &h.netns(), "-o", "link", "show", topology::HOST_IF]);
        let out = c.stdout()?;
        let mut words = out.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .ok_or_else(|| LabError::Command {
                command: c.display(),
                status: "no link/ether in output".to_owned(),
                stderr: out.clone(),
            })
    }

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
        Cmd::ip(&[
            "-n",
            topology::SWITCH_NS,
            "link",
            "set",
            &h.switch_port(),
            "down",
        ])
        .run()?;
        let ns = h.netns();
        let pod_prefix = format!("{ns}-");
        let mut pids = std::collections::BTreeSet::new();
        for n in topology::lab_netns()? {
            if n == ns || n.starts_with(&pod_prefix) {
                pids.extend(process::netns_pids(&n)?);
            }
        }
        let daemons = self.node_daemons(&h);
        for name in &daemons {
            if let Some(pf) = process::read_pid_file(&self.paths, name)?
                && pf.is_running()
            {
                pids.insert(pf.pid);
                pids.extend(
                    process::scan()
                        .into_iter()
                        .filter(|p| p.session == pf.pid)
                        .map(|p| p.pid),
                );
            }
        }
        process::kill_all(&pids, Signal::SIGKILL, Duration::from_secs(10))?;
        for name in &daemons {
            process::remove_pid_file(&self.paths, name)?;
        }
        tracing::info!(node = %h.name, killed = pids.len(), "node failed");
        Ok(())
    }

    fn node_daemons(&self, node: &Host) -> Vec<String> {
        vec![
            components::node_agent_name(&node.name),
            components::kube_proxy_name(&node.name),
            components::speaker_name(&node.name),
        ]
    }

    /// Undoes [`Lab::node_fail`]: switch port up, node agent, kube-proxy and
    /// (unless bare) the speaker restarted. Does not wait for Ready.
    pub fn node_recover(&self, node: &str) -> Result<()> {
        let h = self.topology.node(node)?.clone();
        Cmd::ip(&[
            "-n",
            topology::SWITCH_NS,
            "link",
            "set",
            &h.switch_port(),
            "up",
        ])
        .run()?;
        if self.options.topology_only {
            return Ok(());
        }
        self.start_node(&h)?;
        if !self.options.bare
            && let Some(bin) = self.speaker_bin()
        {
            self.start_if_needed(
                &components::speaker(&self.paths, &h, &bin, &self.options.speaker_args),
                &[],
            )?;
        }
        tracing::info!(node = %h.name, "node recovered");
        Ok(())
    }

    /// Restarts ferrolb's controller (SIGTERM, SIGKILL after 5 s, start).
    pub fn restart_controller(&self) -> Result<()> {
        let bin = self
            .controller_bin()
            .ok_or(LabError::FerrolbMissing("ferrolb-controller"))?;
        process::stop(&self.paths, components::CONTROLLER, Duration::from_secs(5))?;
        process::spawn(
            &self.paths,
            &components::controller(
                &self.paths,
                &self.topology,
                &bin,
                &self.options.controller_args,
            ),
        )?;
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
        let h = self.topology.node(node)?;
        let bin = self
            .speaker_bin()
            .ok_or(LabError::FerrolbMissing("ferrolb-speaker"))?;
        let name = components::speaker_name(&h.name);
        process::stop(&self.paths, &name, Duration::from_secs(5))?;
        process::spawn(
            &self.paths,
            &components::speaker(&self.paths, h, &bin, &self.options.speaker_args),
        )?;
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
        self.start_if_needed(
            &components::controller_on(&self.paths, h, name, &bin, args),
            &[],
        )?;
        Ok(())
    }

    /// Stops daemon `name` (SIGTERM, SIGKILL after `grace`).
    pub fn stop_daemon(&self, name: &str, grace: Duration) -> Result<()> {
        process::stop(&self.paths, name, grace)
    }

    /// Kills daemon `name` and its session at once (SIGKILL): a crash.
    pub fn kill_daemon(&self, name: &str) -> Result<()> {
        if let Some(pf) = process::read_pid_file(&self.paths, name)?
            && pf.is_running()
        {
            let session: std::collections::BTreeSet<i32> = std::iter::once(pf.pid)
                .chain(
                    process::scan()
                        .into_iter()
                        .filter(|p| p.session == pf.pid)
                        .map(|p| p.pid),
                )
                .collect();
            process::kill_all(&session, Signal::SIGKILL, Duration::from_secs(10))?;
        }
        process::remove_pid_file(&self.paths, name)
    }

    /// Whether daemon `name` runs.
    pub fn daemon_running(&self, name: &str) -> Result<bool> {
        Ok(process::read_pid_file(&self.paths, name)?.is_some_and(|pf| pf.is_running()))
    }

    /// The log file of daemon `name`.
    pub fn daemon_log(&self, name: &str) -> PathBuf {
        self.paths.log(name)
    }

    /// Shell lines to `eval` for using the lab from the root namespace.
    pub fn env_lines(&self) -> String {
        let q = |p: &Path| shell_quote(&p.to_string_lossy());
        let mut s = String::new();
        s.push_str(&format!(
            "export KUBECONFIG={}\n",
            q(&self.kubeconfig_path())
        ));
        s.push_str(&format!("export FLB_LAB_DIR={}\n", q(&self.paths.state)));
        // kubectl of the lab's Kubernetes version, built with the harness.
        if let Some(dir) = self.paths.kubectl().parent() {
            s.push_str(&format!("export PATH={}:\"$PATH\"\n", q(dir)));
        }
        s.push_str(&format!(
            "export FLB_KUBECONFIG_IN_LAB={}\n",
            q(&self.lab_kubeconfig_path())
        ));
        s.push_str(&format!("export FLB_NS_SW={}\n", topology::SWITCH_NS));
        for h in &self.topology.hosts {
            let var = h.name.to_uppercase().replace('-', "_");
            s.push_str(&format!("export FLB_NS_{var}={}\n", h.netns()));
        }
        let nodes: Vec<&str> = self.topology.nodes().map(|n| n.name.as_str()).collect();
        let ips: Vec<String> = self.topology.nodes().map(|n| n.ipv4.to_string()).collect();
        s.push_str(&format!("export FLB_NODES='{}'\n", nodes.join(" ")));
        s.push_str(&format!("export FLB_NODE_IPS='{}'\n", ips.join(" ")));
        if self.topology.family.has_v6() {
            let ips6: Vec<String> = self.topology.nodes().map(|n| n.ipv6.to_string()).collect();
            s.push_str(&format!("export FLB_NODE_IPS6='{}'\n", ips6.join(" ")));
        }
        s.push_str(&format!(
            "export FLB_CLIENT_IP={}\n",
            self.topology.client().ipv4
        ));
        s
    }

    /// What is up and running.
    pub fn status(&self) -> Status {
        let existing = topology::lab_netns().unwrap_or_default();
        let mut netns: Vec<(String, bool)> = self
            .topology
            .namespaces()
            .into_iter()
            .map(|n| {
                let up = existing.contains(&n);
                (n, up)
            })
            .collect();
        for n in &existing {
            if !netns.iter().any(|(k, _)| k == n) {
                netns.push((n.clone(), true));
            }
        }
        let daemons = process::pid_files(&self.paths)
            .unwrap_or_default()
            .into_iter()
            .map(|pf| {
                let running = pf.is_running();
                (pf.name, pf.pid, running)
            })
            .collect();
        let ports = Cmd::ip(&["-n", topology::SWITCH_NS, "-o", "link", "show"])
            .stdout()
            .unwrap_or_default();
        let links = self
            .topology
            .hosts
            .iter()
            .map(|h| {
                let port = format!("{}@", h.switch_port());
                let up = ports
                    .lines()
                    .find(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .is_some_and(|n| n.starts_with(&port))
                    })
                    .is_some_and(|l| l.contains(",UP") || l.contains("<UP"));
                (h.name.clone(), up)
            })
            .collect();
        Status {
            state: self.paths.state.clone(),
            options: self.options.clone(),
            netns,
            links,
            daemons,
            kubeconfig: self.kubeconfig_path(),
            nodes: BTreeMap::new(),
        }
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

/// Snapshot of a lab for `lab status`.
#[derive(Debug, Clone)]
pub struct Status {
    /// State directory.
    pub state: PathBuf,
    /// Options of the lab.
    pub options: LabOptions,
    /// Namespaces (expected ones and any other `flb-*`), and whether present.
    pub netns: Vec<(String, bool)>,
    /// Hosts and whether their switch port is up (down after `node-fail`).
    pub links: Vec<(String, bool)>,
    /// Daemons from pid files: name, pid, running.
    pub daemons: Vec<(String, i32, bool)>,
    /// Root-namespace kubeconfig.
    pub kubeconfig: PathBuf,
    /// Node readiness, when the caller asked the API server.
    pub nodes: BTreeMap<String, bool>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state:      {}", self.state.display())?;
        writeln!(f, "options:    {}", self.options.summary())?;
        writeln!(f, "kubeconfig: {}", self.kubeconfig.display())?;
        writeln!(f, "netns:")?;
        for (n, up) in &self.netns {
            writeln!(f, "  {n:<20} {}", if *up { "present" } else { "MISSING" })?;
        }
        writeln!(f, "switch ports:")?;
        for (h, up) in &self.links {
            let state = if *up { "up" } else { "DOWN (node-fail?)" };
            writeln!(f, "  v-{h:<18} {state}")?;
        }
        writeln!(f, "daemons:")?;
        for (name, pid, running) in &self.daemons {
            let state = if *running { "running" } else { "DEAD" };
            writeln!(f, "  {name:<24} pid {pid:<8} {state}")?;
        }
        if !self.nodes.is_empty() {
            writeln!(f, "nodes:")?;
            for (n, ready) in &self.nodes {
                writeln!(f, "  {n:<20} {}", if *ready { "Ready" } else { "NotReady" })?;
            }
        }
        Ok(())
    }
}

/// Polls `check` every 250 ms until it returns `Ok`, for at most `limit`;
/// the timeout error quotes the last reason `check` gave. For tests that wait
/// on the cluster (pods running, an address announced, ...).
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
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn parse_lladdr(neigh: &str) -> Option<String> {
    let mut words = neigh.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

    #[test]
    fn lladdr_is_parsed() {
        let line = "192.0.2.10 lladdr 2a:11:22:33:44:55 REACHABLE\n";
        assert_eq!(parse_lladdr(line).as_deref(), Some("2a:11:22:33:44:55"));
        assert_eq!(parse_lladdr("192.0.2.10 FAILED\n"), None);
        assert_eq!(parse_lladdr(""), None);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

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

    #[test]
    fn env_lines_name_every_namespace() {
        let lab = Lab {
            paths: LabPaths::new("/r".into(), "/r/.lab".into()),
            options: LabOptions::default(),
            topology: Topology::new(2, IpFamily::Ipv4),
            owned: false,
            _lock: None,
        };
        let env = lab.env_lines();
        assert!(env.contains("export KUBECONFIG='/r/.lab/kubeconfig'\n"));
        assert!(env.contains("export FLB_NS_CLIENT=flb-client\n"));
        assert!(env.contains("export FLB_NS_M_K8S=flb-m-k8s\n"));
        assert!(env.contains("export FLB_NS_W2_K8S=flb-w2-k8s\n"));
        assert!(env.contains("export FLB_NODES='m-k8s w1-k8s w2-k8s'\n"));
    }
}
