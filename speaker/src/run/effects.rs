//! What follows a decision or an observation of the core, off the failover path: logs,
//! metrics, `nodeAssigned` events, the NodePort DNAT table, duplicate-announcer
//! reports, and the API writes they queue ([`super::writes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_k8s::events::{Event, EventType, Recorder};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use tracing::{info, warn};

use super::l2_status::{L2StatusWrite, write_l2_status};
use super::metrics::{AnnouncedLabel, IpLabel, Metrics};
use super::{Speaker, writes};
use crate::announce::Announcer;
use crate::decide::conflicts::{DUPLICATE_ANNOUNCER_ACTION, DUPLICATE_ANNOUNCER_REASON};
use crate::decide::{Observations, ServiceKey, Transition};
use crate::nat;

/// Reason of the Warning event on a led Service whose ports have no nodePort while
/// `--nodeport-dnat` is on.
pub const NO_NODE_PORT_REASON: &str = "NoNodePortForDNAT";

/// An event to publish and the object it is about.
pub struct EventJob {
    event: Event,
    reference: ObjectReference,
}

pub type Writes = writes::Queue<Box<EventJob>, L2StatusWrite>;

/// Carries out the queued API writes ([`writes`]).
pub struct ApiWriter {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub node: String,
}

impl writes::Execute<Box<EventJob>, L2StatusWrite> for ApiWriter {
    async fn run(&self, work: writes::Work<Box<EventJob>, L2StatusWrite>) {
        match work {
            writes::Work::Event(key, job) => {
                if let Err(e) = self.recorder.publish(&job.event, &job.reference).await {
                    self.metrics.update_errors.inc();
                    warn!(service = %key, error = %e, "cannot post event");
                }
            }
            writes::Work::Status(key, job) => {
                if let Err(e) = write_l2_status(self.client.clone(), &self.node, &key, job).await {
                    self.metrics.update_errors.inc();
                    warn!(service = %key, error = %e, "ServiceL2Status write failed");
                }
            }
        }
    }
}

/// The note of the [`NO_NODE_PORT_REASON`] event.
pub fn no_node_port_note(key: &ServiceKey, ports: &[String], node: &str) -> String {
    format!(
        "Service {key} has no nodePort on port(s) {} (spec.allocateLoadBalancerNodePorts is false): \
         node {node:?} leads its address with --nodeport-dnat and cannot forward traffic for \
         these ports; set spec.allocateLoadBalancerNodePorts to true (or remove it)",
        ports.join(", ")
    )
}

impl<A: Announcer + 'static> Speaker<A> {
    /// Everything that follows a driver call: datagrams out, then (off the failover
    /// path) logs, metrics, events, the NodePort DNAT and ServiceL2Status.
    pub(super) fn carry_out(&mut self, t: Transition) {
        self.flush_transmits();
        if t.is_empty() {
            return;
        }
        for c in t.changes.values() {
            for (ip, services) in &c.gained {
                let services: BTreeSet<String> = services.iter().map(ToString::to_string).collect();
                info!(%ip, ?services, "announcing");
            }
        }
        for c in t.changes.values() {
            for ip in &c.lost {
                info!(%ip, "stopped announcing");
            }
        }
        for c in t.changes.values() {
            self.metrics.takeovers.inc_by(c.takeovers);
        }
        self.post_assigned_events(&t);
        if let Some(a) = t.announcing {
            self.announcing = a;
        }
        self.refresh_announced();
        self.sync_nat();
        if let Some(owned) = t.l2_statuses {
            self.l2_owned = owned;
        }
        self.sync_l2_status();
    }

    /// MetalLB's `metallb_speaker_announced` and ferrolb's leading count.
    fn refresh_announced(&self) {
        self.metrics.announced.clear();
        let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
        for (protocol, announcing) in &self.announcing {
            for (ip, services) in announcing {
                addresses.insert(*ip);
                for svc in services {
                    self.metrics
                        .announced
                        .get_or_create(&AnnouncedLabel {
                            ip: ip.to_string(),
                            node: self.opts.node_name.clone(),
                            protocol: protocol.as_str().into(),
                            service: svc.to_string(),
                        })
                        .set(1);
                }
            }
        }
        self.metrics
            .leading
            .set(i64::try_from(addresses.len()).unwrap_or(i64::MAX));
    }

    /// A `nodeAssigned` event on every Service of an address this node started
    /// announcing.
    fn post_assigned_events(&self, t: &Transition) {
        for (protocol, c) in &t.changes {
            let keys: BTreeSet<&ServiceKey> = c.gained.values().flatten().collect();
            for key in keys {
                let note = format!(
                    "announcing from node {:?} with protocol \"{}\"",
                    self.opts.node_name,
                    protocol.as_str()
                );
                self.post_event(
                    key,
                    Event {
                        type_: EventType::Normal,
                        reason: "nodeAssigned".into(),
                        note: Some(note),
                        action: "Announce".into(),
                        secondary: None,
                    },
                );
            }
        }
    }

    /// Queues an event about `key`'s Service.
    pub(super) fn post_event(&self, key: &ServiceKey, event: Event) {
        let uid = self
            .api
            .services
            .objects
            .get(key)
            .and_then(|s| s.uid.clone());
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            uid,
            ..Default::default()
        };
        self.writes
            .event(key.clone(), Box::new(EventJob { event, reference }));
    }

    /// Publishes the NodePort DNAT table for what this node announces now (applied off
    /// the loop), and warns once per announced Service whose ports have no nodePort.
    pub(super) fn sync_nat(&mut self) {
        let Some(handle) = &self.nat else { return };
        let own = self
            .api
            .node(&self.opts.node_name)
            .map(|n| n.internal_ips.clone())
            .unwrap_or_default();
        let mut led: BTreeMap<(IpAddr, &ServiceKey), &nat::ServiceNat> = BTreeMap::new();
        for announcing in self.announcing.values() {
            for (ip, services) in announcing {
                for key in services {
                    if let Some(svc) = self.api.services.objects.get(key) {
                        led.insert((*ip, key), &svc.nat);
                    }
                }
            }
        }
        let d = nat::desired(led.into_iter().map(|((ip, k), n)| (ip, k, n)), &own);
        handle.set(d.rules);
        for ip in d.no_node_address.difference(&self.nat_no_address) {
            warn!(%ip, node = %self.opts.node_name,
                  "this node has no InternalIP of the address's family: its NodePort DNAT is not installed");
        }
        self.nat_no_address = d.no_node_address;
        for (key, ports) in &d.without_node_port {
            if self.nat_warned.contains(key) {
                continue;
            }
            let note = no_node_port_note(key, ports, &self.opts.node_name);
            warn!(service = %key, "{note}");
            self.post_event(
                key,
                Event {
                    type_: EventType::Warning,
                    reason: NO_NODE_PORT_REASON.into(),
                    note: Some(note),
                    action: "Forward".into(),
                    secondary: None,
                },
            );
        }
        self.nat_warned = d.without_node_port.into_keys().collect();
    }

    /// Metrics, duplicate-announcer reports and the ServiceL2Status repair from one
    /// look at the core ([`crate::decide::Driver::observe`]).
    pub(super) fn report(&mut self, o: Observations) {
        match &o.membership {
            Some(m) => {
                let fresh = std::mem::take(&mut self.membership_restarted);
                self.metrics.observe_membership(&m.stats, fresh);
                self.metrics
                    .live_members
                    .set(i64::try_from(m.live_members).unwrap_or(i64::MAX));
                self.metrics.isolated.set(i64::from(m.isolated));
            }
            None => {
                self.metrics.live_members.set(0);
            }
        }
        let l2 = o.layer2;
        self.metrics.observe_addresses(&l2.counters);
        self.metrics.observe_frames(&l2.frames);
        // Every frame counted, one log line per claimant, and (rate-limited by the
        // core) a Warning event on the address's Services. The announcer has already
        // re-asserted the address; this only reports.
        for c in &l2.claims {
            warn!(ip = %c.ip, interface = %c.interface, other_mac = %c.other_mac,
                  frames = c.frames,
                  "another host answers for an address this node announces; re-asserting it");
            self.metrics
                .conflicts
                .get_or_create(&IpLabel {
                    ip: c.ip.to_string(),
                })
                .inc_by(c.frames);
        }
        for (key, note) in l2.claim_events {
            self.post_event(
                &key,
                Event {
                    type_: EventType::Warning,
                    reason: DUPLICATE_ANNOUNCER_REASON.into(),
                    note: Some(note),
                    action: DUPLICATE_ANNOUNCER_ACTION.into(),
                    secondary: None,
                },
            );
        }
        self.repair_l2_status(l2.statuses);
    }
}
