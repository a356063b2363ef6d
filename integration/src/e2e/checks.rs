//! What a user sees, checked from a [`Scope`]: a Service's address and pool,
//! events, ServiceL2Status, requests from the client host answered by the
//! pods, and which node the client's neighbour entry names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams};

use super::objects::{events_about, l2_statuses, wait_service};
use super::{POOL_ANNOTATION, Scope, host, ingress_ips};
use crate::lab::eventually;

impl Scope {
    /// Waits until Service `name` has an address in its status and returns
    /// the Service.
    pub async fn wait_ingress(&self, name: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        let what = format!("an address for Service {}/{name}", self.ns);
        Ok(wait_service(&api, name, self.settings().wait, &what, |s| {
            if ingress_ips(s).is_empty() {
                Err("no ingress yet".to_owned())
            } else {
                Ok(s.clone())
            }
        })
        .await?)
    }

    /// Waits until Service `name` has an address and the annotation
    /// `metallb.io/ip-allocated-from-pool` names `pool` (the controller
    /// writes the status and the annotation in two requests), and returns
    /// the Service.
    pub async fn wait_allocated_from(&self, name: &str, pool: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        let what = format!("an address from pool {pool} for Service {}/{name}", self.ns);
        Ok(wait_service(&api, name, self.settings().wait, &what, |s| {
            let from = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POOL_ANNOTATION));
            if ingress_ips(s).is_empty() || from.map(String::as_str) != Some(pool) {
                Err(format!(
                    "ingress {:?}, {POOL_ANNOTATION} {from:?}",
                    ingress_ips(s)
                ))
            } else {
                Ok(s.clone())
            }
        })
        .await?)
    }

    /// Waits for an event about object `name` (in namespace `ns`) with
    /// `reason` whose note contains `text`; returns the note.
    pub async fn wait_event(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        text: &str,
    ) -> Result<String> {
        let kube = self.kube();
        Ok(eventually(
            &format!("event {reason} about {ns}/{name} mentioning {text:?}"),
            self.settings().wait,
            || async {
                let about = events_about(&kube, ns, name)
                    .await
                    .map_err(|e| e.to_string())?;
                let notes: Vec<String> = about
                    .iter()
                    .filter(|e| e.reason.as_deref() == Some(reason))
                    .filter_map(|e| e.note.clone())
                    .collect();
                notes
                    .iter()
                    .find(|n| n.contains(text))
                    .cloned()
                    .ok_or_else(|| format!("{reason} events seen: {notes:?}"))
            },
        )
        .await?)
    }

    /// The nodes named by the ServiceL2Status objects of Service `svc`.
    pub async fn l2_status_nodes(&self, svc: &str) -> Result<Vec<String>> {
        let statuses = l2_statuses(&self.kube(), &self.ns, svc)
            .await
            .context("listing ServiceL2Status")?;
        Ok(statuses
            .iter()
            .filter_map(|s| s["node"].as_str().map(str::to_owned))
            .collect())
    }

    /// Every node's address of `ip`'s family (InternalIP first, then
    /// ExternalIP), by node name, from the API.
    pub async fn node_addresses(&self, ip: IpAddr) -> Result<BTreeMap<String, IpAddr>> {
        let nodes: Api<Node> = Api::all(self.kube());
        let list = nodes
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        let mut out = BTreeMap::new();
        for n in list.items {
            let name = n.metadata.name.clone().unwrap_or_default();
            let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
            let pick = ["InternalIP", "ExternalIP"].iter().find_map(|t| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == *t)
                    .filter_map(|a| a.address.parse::<IpAddr>().ok())
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
            });
            if let Some(a) = pick {
                out.insert(name, a);
            }
        }
        ensure!(!out.is_empty(), "no node has an address of {ip}'s family");
        Ok(out)
    }

    /// URL of the echo server behind `ip`:`port`.
    pub fn url(&self, ip: IpAddr, port: u16) -> String {
        format!(
            "http://{}:{port}{}",
            host::url_host(ip),
            self.settings().echo.path
        )
    }

    /// One request to `ip`:`port` from the client host; the pod name that
    /// answered (trimmed), which must be one of `pods`.
    pub fn request(&self, ip: IpAddr, port: u16, pods: &BTreeSet<String>) -> Result<String> {
        let body = self
            .host()
            .curl(&self.url(ip, port), Duration::from_secs(3))?;
        let name = body.trim().to_owned();
        ensure!(
            pods.contains(&name),
            "{} answered {name:?}, not one of the pods {pods:?}",
            self.url(ip, port)
        );
        Ok(name)
    }

    /// Waits until `ip` is announced as the Service's ServiceL2Status says:
    /// the client host, asking afresh (neighbour entry flushed), gets the
    /// MAC of the node named in the ServiceL2Status of every Service in
    /// `services` (one node, the same for all) and its request on `port` is
    /// answered by one of `pods`. Returns the node.
    pub async fn wait_announced(
        &self,
        ip: IpAddr,
        port: u16,
        services: &[&str],
        pods: &BTreeSet<String>,
    ) -> Result<String> {
        let node_ips = self.node_addresses(ip).await?;
        Ok(eventually(
            &format!("{ip} announced by the node its ServiceL2Status names"),
            self.settings().wait,
            || async {
                let host = self.host();
                host.flush_neighbour(ip).map_err(|e| format!("{e:#}"))?;
                let answered = self.request(ip, port, pods).map_err(|e| format!("{e:#}"))?;
                let mac = host
                    .neighbour_mac(ip)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or("no neighbour entry after a request")?;
                let mut nodes = BTreeSet::new();
                for s in services {
                    let on = self.l2_status_nodes(s).await.map_err(|e| format!("{e:#}"))?;
                    if on.len() != 1 {
                        return Err(format!("ServiceL2Status of {s} names {on:?}"));
                    }
                    nodes.extend(on);
                }
                if nodes.len() != 1 {
                    return Err(format!("ServiceL2Status nodes differ: {nodes:?}"));
                }
                let node = nodes.into_iter().next().unwrap_or_default();
                let node_ip = node_ips
                    .get(&node)
                    .ok_or_else(|| format!("node {node} has no address of {ip}'s family"))?;
                let node_mac = host
                    .resolve_mac(*node_ip)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| format!("node {node} ({node_ip}) does not answer ARP/NDP"))?;
                if node_mac != mac {
                    return Err(format!(
                        "{ip} is at {mac} but ServiceL2Status names {node} ({node_ip}, at {node_mac})"
                    ));
                }
                self.step(format!(
                    "{ip} announced by {node} ({node_mac}); answered by pod {answered}"
                ));
                Ok(node)
            },
        )
        .await?)
    }

    /// Sends requests to `ip`:`port` until at least `want` different pods
    /// of `pods` have answered (at most 40 requests); every answer must be
    /// one of `pods`. Returns the pods seen.
    pub async fn spread(
        &self,
        ip: IpAddr,
        port: u16,
        pods: &BTreeSet<String>,
        want: usize,
    ) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            seen.insert(self.request(ip, port, pods)?);
            if seen.len() >= want {
                return Ok(seen);
            }
        }
        bail!(
            "40 requests to {} reached only {seen:?} of {pods:?}",
            self.url(ip, port)
        )
    }
}
