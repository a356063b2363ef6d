//! Kubernetes Service to the engine's [`ServiceView`].

use std::net::IpAddr;

use ferrolb_config::Family;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::allocator::Proto;
use crate::engine::{FamilyPolicy, ServiceKey, ServiceView};

pub fn key_of(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

pub fn view(svc: &Service) -> ServiceView {
    let spec = svc.spec.clone().unwrap_or_default();
    let ip_families = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .collect();
    let family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        _ => FamilyPolicy::SingleStack,
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                "SCTP" => Proto::Sctp,
                _ => return None,
            };
            u16::try_from(p.port).ok().map(|port| (proto, port))
        })
        .collect();
    ServiceView {
        key: key_of(svc),
        is_load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
        load_balancer_class: spec.load_balancer_class.clone(),
        labels: svc.labels().clone(),
        annotations: svc.annotations().clone(),
        spec_load_balancer_ip: spec.load_balancer_ip.clone(),
        ip_families,
        family_policy,
        ports,
        external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.clone().unwrap_or_default(),
        status_ips: status_ips(svc),
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    }
}

/// Addresses in `status.loadBalancer.ingress`, in order.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    status_entries(svc).map(|(ip, _)| ip).collect()
}

/// `ipMode` of each entry [`status_ips`] returns, in the same order.
pub fn status_ip_modes(svc: &Service) -> Vec<Option<String>> {
    status_entries(svc).map(|(_, m)| m).collect()
}

fn status_entries(svc: &Service) -> impl Iterator<Item = (IpAddr, Option<String>)> + '_ {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let ip = i.ip.as_deref()?.parse().ok()?;
            Some((ip, i.ip_mode.clone()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_the_engine_needs() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-01-02T03:04:05Z",
                         "annotations": {"metallb.io/address-pool": "prod"}},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                     "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8::5", "ipMode": "Proxy"}, {"hostname": "x"}]}}
        }))
        .unwrap();
        let v = view(&svc);
        assert_eq!(status_ip_modes(&svc), [Some("Proxy".to_string())]);
        assert_eq!(v.key.to_string(), "shop/web");
        assert!(v.is_load_balancer && v.external_traffic_local);
        assert_eq!(v.ip_families, [Family::V6, Family::V4]);
        assert_eq!(v.family_policy, FamilyPolicy::PreferDualStack);
        assert_eq!(v.ports.len(), 2);
        assert_eq!(v.status_ips, ["2001:db8::5".parse::<IpAddr>().unwrap()]);
        assert!(v.created.starts_with("2026-01-02"));
    }
}
