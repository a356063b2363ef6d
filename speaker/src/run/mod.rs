//! The speaker's shell: watches Services, EndpointSlices, Nodes, the configuration and
//! the membership Secret (`api_stores`); runs the membership over UDP on the node's
//! InternalIP; feeds the core ([`crate::decide::Driver`]) from a single task so that
//! every decision sees one consistent state; and carries out what the core returns
//! (`effects`, `l2_status`, `membership_io`).
//!
//! The failover path is datagram or timer -> membership -> protocols -> announcer, all
//! inside the core's call with no API round trip; the API writes are queued after it
//! ([`writes`]).

mod api_stores;
mod effects;
mod l2_status;
pub mod logonly;
mod membership_io;
pub mod metrics;
pub mod projection;
pub mod writes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrolb_config::crd::MetalLBServiceL2Status;
use ferrolb_config::{Config, ConfigError};
use ferrolb_k8s::events::{Recorder, Reporter};
use futures::StreamExt;
use kube::Client;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::announce::Announcer;
use crate::decide::pace::Pace;
use crate::decide::{Announcing, Driver, L2Statuses, ProtocolName, ServiceKey, handover_wait};
use crate::membership;
use crate::nat::{NatTable, worker::NatHandle};
use api_stores::{ApiStores, PendingChanges, watches};
use effects::{ApiWriter, Writes};
use membership_io::KeyState;
use metrics::Metrics;

pub use effects::{NO_NODE_PORT_REASON, no_node_port_note};
pub use l2_status::{
    L2_NODE_LABEL, L2_SERVICE_NAME_LABEL, L2_SERVICE_NAMESPACE_LABEL, l2_status_name,
};

/// Key of the membership key in the Secret (MetalLB's name).
pub const SECRET_KEY: &str = "secretkey";
const FIELD_MANAGER: &str = "ferrolb-speaker";
/// How long a stopping speaker waits for its NodePort DNAT table to be removed.
const NAT_STOP_WAIT: Duration = Duration::from_secs(3);
/// API writes in flight at once (see [`writes`]): taking over hundreds of addresses at
/// once would otherwise open a connection per concurrent request, each with its TLS
/// buffers.
const API_WRITES_IN_FLIGHT: usize = 4;

/// What the speaker is configured with.
#[derive(Clone, Debug)]
pub struct Options {
    pub node_name: String,
    /// Namespace of the configuration and of the membership Secret.
    pub namespace: String,
    /// Name of the legacy ConfigMap.
    pub configmap: String,
    pub memberlist_secret: String,
    pub memberlist_port: u16,
    pub lb_class: Option<String>,
    pub membership: membership::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("a watch stream ended")]
    StreamEnded,
}

/// The running speaker: the core and everything around it.
struct Speaker<A> {
    opts: Options,
    driver: Driver<A>,
    api: ApiStores,
    started: bool,
    key: KeyState,
    /// Set when a new membership started: its counters start again at zero.
    membership_restarted: bool,
    socket: Option<Arc<UdpSocket>>,
    bound_to: Option<SocketAddr>,
    last_config_errors: Vec<ConfigError>,
    /// What this node announces, per protocol, as the core last reported it.
    announcing: BTreeMap<ProtocolName, Announcing>,
    /// The ServiceL2Status objects this node owns, as the core last reported them.
    l2_owned: L2Statuses,
    /// ServiceL2Status contents last sent per Service, so unchanged ones are not rewritten.
    l2_sent: BTreeMap<ServiceKey, MetalLBServiceL2Status>,
    /// Events and ServiceL2Status writes, off the loop and bounded (see [`writes`]).
    writes: Writes,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    /// `--nodeport-dnat`: the table of this node's led addresses.
    nat: Option<NatHandle>,
    /// Led Services already warned about ports without a nodePort.
    nat_warned: BTreeSet<ServiceKey>,
    /// Led addresses already logged as of a family this node has no address of.
    nat_no_address: BTreeSet<std::net::IpAddr>,
}

/// Runs until `shutdown` turns true (then hands over gracefully) or a watch ends for
/// good. With `nat` (`--nodeport-dnat`), the led addresses' ports are forwarded to this
/// node's NodePorts (see [`crate::nat`]); the table is cleared at start and at the end.
pub async fn run<A: Announcer + 'static>(
    client: Client,
    opts: Options,
    announcer: A,
    nat: Option<Box<dyn NatTable>>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut inputs = watches(&client, &opts);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(opts.node_name.clone()),
        },
    );
    let driver = Driver::new(
        &opts.node_name,
        opts.memberlist_port,
        opts.membership.clone(),
        announcer,
    );
    let writes = writes::Queue::start(
        API_WRITES_IN_FLIGHT,
        ApiWriter {
            client: client.clone(),
            recorder,
            metrics: metrics.clone(),
            node: opts.node_name.clone(),
        },
    );
    let mut speaker = Speaker {
        driver,
        opts,
        api: ApiStores::default(),
        started: false,
        key: KeyState::default(),
        membership_restarted: false,
        socket: None,
        bound_to: None,
        last_config_errors: Vec::new(),
        announcing: BTreeMap::new(),
        l2_owned: L2Statuses::new(),
        l2_sent: BTreeMap::new(),
        writes,
        metrics,
        ready,
        nat: nat.map(NatHandle::start),
        nat_warned: BTreeSet::new(),
        nat_no_address: BTreeSet::new(),
    };
    // API changes not acted on yet, and when they will be (see [`Pace`]).
    let mut pending = PendingChanges::default();
    let mut pace = Pace::new(tokio::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = speaker
            .driver
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        let socket = speaker.socket.clone();
        // Not biased: a flood of datagrams (forged ones included) must not starve the
        // membership timer or the API inputs.
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = recv(socket.as_deref(), &mut buf) => match r {
                Ok(n) => {
                    let t = speaker.driver.handle_datagram(std::time::Instant::now(), &buf[..n]);
                    speaker.carry_out(t);
                }
                Err(e) => {
                    warn!(error = %e, "membership socket receive failed, rebinding");
                    speaker.socket = None;
                    speaker.bound_to = None;
                }
            },
            _ = sleep_until(deadline) => {
                let t = speaker.driver.handle_timeout(std::time::Instant::now());
                speaker.carry_out(t);
            }
            input = inputs.next() => match input {
                Some(i) => {
                    speaker.metrics.updates.inc();
                    pending |= speaker.api.apply(i, speaker.opts.lb_class.as_deref());
                    if !speaker.started {
                        // Starts as soon as every store has synced.
                        speaker.react(std::mem::take(&mut pending)).await;
                    } else if pending != PendingChanges::default() {
                        pace.changed(tokio::time::Instant::now());
                    }
                }
                None => {
                    if let Some(n) = speaker.nat.take() {
                        n.stop(NAT_STOP_WAIT).await;
                    }
                    return Err(RunError::StreamEnded);
                }
            },
            _ = sleep_until(pace.due()) => {
                let began = tokio::time::Instant::now();
                speaker.react(std::mem::take(&mut pending)).await;
                let end = tokio::time::Instant::now();
                pace.done(end, end - began);
            }
            _ = tick.tick() => speaker.on_tick().await,
        }
    }
    speaker.shutdown().await;
    Ok(())
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match socket {
        Some(s) => s.recv_from(buf).await.map(|(n, _)| n),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl<A: Announcer + 'static> Speaker<A> {
    /// Acts on the changes of the inputs taken since the last call: the decisions are
    /// recomputed once for all of them ([`Pace`]).
    async fn react(&mut self, c: PendingChanges) {
        let now = std::time::Instant::now();
        let PendingChanges {
            mut decision_inputs,
            config,
            nodes,
            key,
        } = c;
        if !self.started {
            if self.api.synced() {
                self.start(now).await;
            }
            return;
        }
        if config {
            decision_inputs |= self.reload_config();
        }
        if nodes {
            self.ensure_socket().await;
        }
        if decision_inputs {
            let t = self.driver.api_changed(&self.api, now);
            self.carry_out(t);
            // Ports, nodePorts or this node's addresses may have changed without any
            // change in what it leads.
            self.sync_nat();
        }
        // The key last, as at start: a membership it creates gets the current peers.
        if key {
            self.reload_key(now);
        }
    }

    async fn start(&mut self, now: std::time::Instant) {
        self.started = true;
        self.reload_config();
        let t = self.driver.api_changed(&self.api, now);
        self.carry_out(t);
        self.ensure_socket().await;
        // The key last: the membership starts with the full peer list.
        self.reload_key(now);
        info!(
            services = self.api.services.objects.len(),
            nodes = self.api.nodes.objects.len(),
            "initial state loaded"
        );
        self.update_ready();
    }

    fn update_ready(&self) {
        let ok = self.started && self.key.in_force.is_some() && self.socket.is_some();
        self.ready.store(ok, Ordering::Relaxed);
    }

    /// Builds the configuration; an invalid one is logged and the last good one stays.
    /// True when the configuration in force changed.
    fn reload_config(&mut self) -> bool {
        let (src, mut errors) = self.api.config_sources.sources(&self.opts.configmap);
        match Config::build(&src) {
            Ok(cfg) if errors.is_empty() => {
                self.last_config_errors.clear();
                self.metrics.config_loaded.set(1);
                self.metrics.config_stale.set(0);
                let changed = self.api.config.as_ref() != Some(&cfg);
                self.api.config = Some(cfg);
                changed
            }
            Ok(_) => {
                self.report_config_errors(errors);
                false
            }
            Err(e) => {
                errors.extend(e.0);
                self.report_config_errors(errors);
                false
            }
        }
    }

    fn report_config_errors(&mut self, mut errors: Vec<ConfigError>) {
        errors.sort();
        self.metrics.config_stale.set(1);
        if errors == self.last_config_errors {
            return;
        }
        let in_force = self.api.config.is_some();
        for e in &errors {
            error!(object = %e.object, field = %e.field, message = %e.message,
                   last_good_in_force = in_force, "configuration rejected");
        }
        self.last_config_errors = errors;
    }

    async fn on_tick(&mut self) {
        if !self.started {
            return;
        }
        if self.socket.is_none() {
            self.ensure_socket().await;
        }
        let o = self.driver.observe(std::time::Instant::now());
        self.report(o);
    }

    /// Graceful stop: silent in the membership, still answering until the runners-up
    /// have taken over, then silent on the network; own ServiceL2Status removed.
    async fn shutdown(&mut self) {
        let wait = handover_wait(&self.opts.membership);
        info!(
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "handing over"
        );
        let t = self.driver.begin_leave();
        self.carry_out(t);
        tokio::time::sleep(wait).await;
        let t = self.driver.finish_leave();
        self.metrics.announced.clear();
        self.metrics.leading.set(0);
        info!(
            released = t.of(ProtocolName::Layer2).lost.len(),
            "stopped announcing"
        );
        if let Some(n) = self.nat.take() {
            n.stop(NAT_STOP_WAIT).await;
        }
        self.release_l2_status();
        if !self.writes.wait_idle(Duration::from_secs(3)).await {
            warn!("ServiceL2Status clean-up did not finish in time");
        }
    }
}
