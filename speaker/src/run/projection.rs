//! Kubernetes objects to the compact values the speaker keeps of them: the plain
//! values the decisions read ([`crate::decide::inputs`]) and what the shell needs
//! besides (uids for events, ports for the NodePort DNAT). Everything else
//! (managedFields, annotations, labels, selectors, cluster IPs...) is dropped on
//! arrival.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::decide::{NodeInfo, ServiceInfo, ServiceKey, SliceReadiness};
use crate::nat::{ServiceNat, service_nat};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service as the speaker sees it, or `None` when the speaker does not handle it:
/// not of type LoadBalancer, another load balancer class, or no address in status.
pub fn service_info(svc: &Service, lb_class: Option<&str>) -> Option<ServiceInfo> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref() != lb_class
    {
        return None;
    }
    let ips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect();
    if ips.is_empty() {
        return None;
    }
    Some(ServiceInfo {
        ips,
        local: spec.external_traffic_policy.as_deref() == Some("Local"),
    })
}

/// What the speaker keeps of a Service it handles: the uid (for events), what
/// [`service_info`] reads, and the ports and source ranges (for the NodePort DNAT). A
/// plain struct rather than a trimmed `Service`, whose k8s-openapi type carries
/// hundreds of bytes of empty optional fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub uid: Option<String>,
    pub info: ServiceInfo,
    pub nat: ServiceNat,
}

/// The [`ServiceEntry`] of a Service the speaker handles (`None` for the others, see
/// [`service_info`]).
pub fn service_entry(svc: &Service, lb_class: Option<&str>) -> Option<ServiceEntry> {
    Some(ServiceEntry {
        info: service_info(svc, lb_class)?,
        uid: svc.metadata.uid.clone(),
        nat: service_nat(svc),
    })
}

/// What the speaker keeps of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    pub info: NodeInfo,
    /// Every InternalIP ([`internal_ips`]).
    pub internal_ips: Vec<IpAddr>,
}

pub fn node_entry(n: &Node) -> NodeEntry {
    NodeEntry {
        info: node_info(n),
        internal_ips: internal_ips(n),
    }
}

/// The Service an EndpointSlice belongs to, with its readiness.
pub fn slice_readiness(es: &EndpointSlice) -> Option<(ServiceKey, SliceReadiness)> {
    let svc = es.labels().get(SERVICE_NAME_LABEL)?;
    let key = ServiceKey::new(es.namespace().unwrap_or_default(), svc.clone());
    let mut r = SliceReadiness::default();
    for ep in es.endpoints.iter().flatten() {
        // An unset `ready` means unknown, which consumers are told to treat as ready.
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready || ep.addresses.is_empty() {
            continue;
        }
        r.any_ready = true;
        if let Some(n) = &ep.node_name {
            r.add_node(n);
        }
    }
    Some((key, r))
}

pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let condition = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == t)
            .is_some_and(|c| c.status == "True")
    };
    // The first InternalIP is the node's primary address (kubelet lists it first); all
    // speakers pick the same way, so they agree on the membership family.
    let internal_ip = status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok());
    NodeInfo {
        labels: n.labels().clone(),
        ready: condition("Ready"),
        network_unavailable: condition("NetworkUnavailable"),
        internal_ip,
    }
}

/// Every InternalIP of a Node, in the order the API lists them (for the NodePort
/// DNAT, which needs this node's address of each family).
pub fn internal_ips(n: &Node) -> Vec<IpAddr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Proto, SvcPort};
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn services_outside_the_speakers_remit_are_ignored() {
        let base = json!({
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}, {"hostname": "x"}]}}
        });
        let info = service_info(&svc(base.clone()), None).unwrap();
        assert_eq!(info.ips, ["198.51.100.10".parse::<IpAddr>().unwrap()]);
        assert!(info.local);
        assert!(service_info(&svc(base.clone()), Some("ferrolb")).is_none());
        let mut classed = base.clone();
        classed["spec"]["loadBalancerClass"] = json!("ferrolb");
        assert!(service_info(&svc(classed.clone()), None).is_none());
        assert!(service_info(&svc(classed), Some("ferrolb")).is_some());
        let mut cluster_ip = base.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        assert!(service_info(&svc(cluster_ip), None).is_none());
        let mut pending = base;
        pending["status"] = json!({});
        assert!(service_info(&svc(pending), None).is_none());
    }

    #[test]
    fn compact_services_keep_what_the_speaker_reads_and_nothing_else() {
        let full = svc(json!({
            "metadata": {"name": "echo", "namespace": "default", "uid": "u1",
                         "annotations": {"a": "b"}, "labels": {"app": "echo"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "selector": {"app": "echo"}, "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "protocol": "TCP", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.10", "ipMode": "VIP"},
                                                    {"hostname": "x"}]}}
        }));
        let c = service_entry(&full, None).unwrap();
        assert_eq!(Some(&c.info), service_info(&full, None).as_ref());
        assert_eq!(c.uid.as_deref(), Some("u1"));
        assert_eq!(
            c.nat.ports,
            [SvcPort {
                proto: Proto::Tcp,
                port: 80,
                node_port: Some(30080)
            }]
        );
        // A Service the speaker does not handle is not kept.
        assert!(service_entry(&full, Some("other")).is_none());
    }

    #[test]
    fn slice_readiness_by_node() {
        let es: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "echo-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.0.1"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["198.18.0.2"], "conditions": {"ready": false}, "nodeName": "n2"},
                {"addresses": ["198.18.0.3"], "nodeName": "n3"},
                {"addresses": ["198.18.0.4"], "conditions": {"ready": true}}
            ]
        }))
        .unwrap();
        let (key, r) = slice_readiness(&es).unwrap();
        assert_eq!(key, ServiceKey::new("default", "echo"));
        assert!(r.any_ready);
        assert_eq!(
            r.ready_nodes.into_iter().collect::<Vec<_>>(),
            ["n1", "n3"],
            "unknown readiness counts as ready"
        );
        let mut orphan = es.clone();
        orphan.metadata.labels = None;
        assert!(slice_readiness(&orphan).is_none());
    }

    #[test]
    fn node_conditions_labels_and_address() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "NetworkUnavailable", "status": "False"}
                ],
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "192.0.2.11"},
                    {"type": "InternalIP", "address": "2001:db8::11"}
                ]
            }
        }))
        .unwrap();
        let i = node_info(&n);
        assert!(i.ready && !i.network_unavailable && !i.excluded());
        assert_eq!(i.internal_ip, Some("192.0.2.11".parse().unwrap()));
        assert_eq!(i.labels["zone"], "a");
        let unknown: Node = serde_json::from_value(json!({
            "metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"},
                                      {"type": "NetworkUnavailable", "status": "True"}]}
        }))
        .unwrap();
        let i = node_info(&unknown);
        assert!(!i.ready && i.network_unavailable && i.internal_ip.is_none());
        assert!(
            !node_info(&Node::default()).ready,
            "no Ready condition: not ready"
        );
    }
}
