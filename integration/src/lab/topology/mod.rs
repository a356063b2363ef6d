//! The lab's layer-2 segment and its hosts, made with `ip` commands.
//!
//! One namespace `flb-sw` holds the bridge `br0`; every host (control-plane
//! node, workers, client) is a namespace `flb-<host>` whose `eth0` is a veth
//! whose peer `v-<host>` is a port of `br0`. Both ends are created directly in
//! their namespaces, so the root namespace never sees a lab link, address or
//! route. Every step is idempotent: `ensure` can run on a half-built or
//! running lab and only adds what is missing.
//!
//! This module holds the model (names, addresses, ranges); [`netns`] makes
//! it with `ip`.

mod netns;

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::{LabError, Result};
pub use netns::{lab_netns, list_netns};

/// Prefix of every namespace, link-side name and state the lab makes.
pub const PREFIX: &str = "flb-";
/// Namespaces of standalone privileged tests (e.g. the speaker's announcer test): they
/// carry the project prefix but are not part of a lab, so `down` leaves them to their
/// own guards instead of killing them mid-run.
pub const TEST_PREFIX: &str = "flb-t-";
/// Namespace of the switch.
pub const SWITCH_NS: &str = "flb-sw";
/// Bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// Interface name of every host's link to the switch.
pub const HOST_IF: &str = "eth0";
/// Name of the host outside the cluster.
pub const CLIENT: &str = "client";
/// Name of the control-plane node.
pub const CONTROL_PLANE: &str = "m-k8s";
/// Most workers a lab may have (addresses and names are sized for it).
pub const MAX_WORKERS: u8 = 20;

/// Service ClusterIP range (IPv4).
pub const SERVICE_CIDR_V4: &str = "198.19.0.0/16";
/// Service ClusterIP range (IPv6).
pub const SERVICE_CIDR_V6: &str = "2001:db8:19::/112";
/// Pod range of the whole cluster (IPv4).
pub const CLUSTER_CIDR_V4: &str = "198.18.0.0/16";
/// Pod range of the whole cluster (IPv6).
pub const CLUSTER_CIDR_V6: &str = "2001:db8:18::/56";
/// LoadBalancer pool ranges; the client reaches them on-link, as a host on
/// the same segment as the speakers does with MetalLB's layer-2 mode.
pub const LB_POOLS_V4: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
/// IPv6 LoadBalancer pool range (the contract names none; tests use
/// `2001:db8:100::/112` inside it).
pub const LB_POOLS_V6: [&str; 1] = ["2001:db8:100::/64"];

/// Address families of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IpFamily {
    /// IPv4 only.
    #[default]
    Ipv4,
    /// IPv6 is the Kubernetes family; hosts keep their IPv4 address for the
    /// lab's own plumbing.
    Ipv6,
    /// Both families everywhere, IPv4 first.
    DualStack,
}

impl IpFamily {
    /// Whether IPv4 is a Kubernetes family.
    pub fn has_v4(self) -> bool {
        !matches!(self, IpFamily::Ipv6)
    }

    /// Whether IPv6 is configured.
    pub fn has_v6(self) -> bool {
        !matches!(self, IpFamily::Ipv4)
    }
}

/// What a host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node running the control plane (and also workloads).
    ControlPlane,
    /// A worker node.
    Worker,
    /// A host outside the cluster on the same segment.
    Client,
}

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Short name (`m-k8s`, `w1-k8s`, `client`); also the Kubernetes node name.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Node index: 0 for the control plane, K for `wK-k8s`.
    pub index: u8,
    /// Address on the segment.
    pub ipv4: Ipv4Addr,
    /// IPv6 address on the segment (configured only when IPv6 is on).
    pub ipv6: Ipv6Addr,
}

impl Host {
    /// The host's network namespace.
    pub fn netns(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    /// Name of the switch-side end of its veth (at most 15 characters).
    pub fn switch_port(&self) -> String {
        format!("v-{}", self.name)
    }

    /// Whether this host is a Kubernetes node.
    pub fn is_node(&self) -> bool {
        self.role != Role::Client
    }

    /// Pod range of this node (IPv4).
    pub fn pod_cidr_v4(&self) -> String {
        format!("198.18.{}.0/24", self.index)
    }

    /// Pod range of this node (IPv6).
    pub fn pod_cidr_v6(&self) -> String {
        if self.index == 0 {
            "2001:db8:18::/64".to_owned()
        } else {
            format!("2001:db8:18:{}::/64", self.index)
        }
    }
}

/// All hosts of a lab of a given shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Address families.
    pub family: IpFamily,
    /// Control plane, workers in order, then the client.
    pub hosts: Vec<Host>,
}

impl Topology {
    /// The hosts of a lab with `workers` worker nodes.
    pub fn new(workers: u8, family: IpFamily) -> Self {
        let node = |name: String, role, index: u8, last: u16| Host {
            name,
            role,
            index,
            ipv4: Ipv4Addr::new(192, 0, 2, last as u8),
            // The host part is written in decimal digits inside a hex
            // group so that `::101` reads like `.101`.
            ipv6: format!("2001:db8:2::{last}")
                .parse()
                .expect("literal IPv6 address"),
        };
        let mut hosts = vec![node(CONTROL_PLANE.to_owned(), Role::ControlPlane, 0, 10)];
        for k in 1..=workers.min(MAX_WORKERS) {
            hosts.push(node(
                format!("w{k}-k8s"),
                Role::Worker,
                k,
                100 + u16::from(k),
            ));
        }
        hosts.push(node(CLIENT.to_owned(), Role::Client, 0, 200));
        Self { family, hosts }
    }

    /// Kubernetes nodes (control plane first).
    pub fn nodes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.is_node())
    }

    /// The control-plane node (`m-k8s`).
    pub fn control_plane(&self) -> &Host {
        self.nodes()
            .next()
            .expect("a topology always has a control plane")
    }

    /// The host named `name` (`m-k8s`, `w2-k8s`, `client`; a `flb-` prefix is
    /// accepted too).
    pub fn host(&self, name: &str) -> Result<&Host> {
        let short = name.strip_prefix(PREFIX).unwrap_or(name);
        self.hosts
            .iter()
            .find(|h| h.name == short)
            .ok_or_else(|| LabError::UnknownHost {
                name: name.to_owned(),
                known: self
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The node named `name`; the client is refused.
    pub fn node(&self, name: &str) -> Result<&Host> {
        let h = self.host(name)?;
        if h.is_node() {
            Ok(h)
        } else {
            Err(LabError::UnknownHost {
                name: name.to_owned(),
                known: self
                    .nodes()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    /// The client host.
    pub fn client(&self) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == Role::Client)
            .expect("a topology always has a client")
    }

    /// The node IPs as Kubernetes sees them (`--node-ip`).
    pub fn node_ips(&self, h: &Host) -> String {
        match self.family {
            IpFamily::Ipv4 => h.ipv4.to_string(),
            IpFamily::Ipv6 => h.ipv6.to_string(),
            IpFamily::DualStack => format!("{},{}", h.ipv4, h.ipv6),
        }
    }

    /// The node's pod ranges as Kubernetes sees them (`--pod-cidr`).
    pub fn pod_cidrs(&self, h: &Host) -> String {
        match self.family {
            IpFamily::Ipv4 => h.pod_cidr_v4(),
            IpFamily::Ipv6 => h.pod_cidr_v6(),
            IpFamily::DualStack => format!("{},{}", h.pod_cidr_v4(), h.pod_cidr_v6()),
        }
    }

    /// `--service-cidr` of the control plane.
    pub fn service_cidrs(&self) -> String {
        match self.family {
            IpFamily::Ipv4 => SERVICE_CIDR_V4.to_owned(),
            IpFamily::Ipv6 => SERVICE_CIDR_V6.to_owned(),
            IpFamily::DualStack => format!("{SERVICE_CIDR_V4},{SERVICE_CIDR_V6}"),
        }
    }

    /// `--cluster-cidr` of the control plane and kube-proxy.
    pub fn cluster_cidrs(&self) -> String {
        match self.family {
            IpFamily::Ipv4 => CLUSTER_CIDR_V4.to_owned(),
            IpFamily::Ipv6 => CLUSTER_CIDR_V6.to_owned(),
            IpFamily::DualStack => format!("{CLUSTER_CIDR_V4},{CLUSTER_CIDR_V6}"),
        }
    }

    /// Every namespace name the topology itself creates.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(SWITCH_NS.to_owned())
            .chain(self.hosts.iter().map(Host::netns))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_contract() {
        let t = Topology::new(3, IpFamily::DualStack);
        let names: Vec<_> = t.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["m-k8s", "w1-k8s", "w2-k8s", "w3-k8s", "client"]);
        let w2 = t.node("w2-k8s").unwrap();
        assert_eq!(w2.ipv4, Ipv4Addr::new(192, 0, 2, 102));
        assert_eq!(w2.ipv6.to_string(), "2001:db8:2::102");
        assert_eq!(w2.pod_cidr_v4(), "198.18.2.0/24");
        assert_eq!(w2.pod_cidr_v6(), "2001:db8:18:2::/64");
        assert_eq!(t.pod_cidrs(w2), "198.18.2.0/24,2001:db8:18:2::/64");
        let m = t.node("flb-m-k8s").unwrap();
        assert_eq!(m.ipv4, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(m.pod_cidr_v4(), "198.18.0.0/24");
        assert_eq!(t.client().ipv4, Ipv4Addr::new(192, 0, 2, 200));
        assert_eq!(t.client().ipv6.to_string(), "2001:db8:2::200");
        assert!(t.node("client").is_err());
        assert!(t.host("w4-k8s").is_err());
    }

    #[test]
    fn names_fit_interface_limits() {
        let t = Topology::new(MAX_WORKERS, IpFamily::Ipv4);
        for h in &t.hosts {
            assert!(h.switch_port().len() <= 15, "{}", h.switch_port());
            assert!(h.netns().starts_with(PREFIX));
        }
        assert_eq!(t.nodes().count(), usize::from(MAX_WORKERS) + 1);
    }

    #[test]
    fn families_select_kubernetes_ranges() {
        let v4 = Topology::new(1, IpFamily::Ipv4);
        assert_eq!(v4.service_cidrs(), "198.19.0.0/16");
        assert_eq!(v4.node_ips(v4.node("w1-k8s").unwrap()), "192.0.2.101");
        let v6 = Topology::new(1, IpFamily::Ipv6);
        assert_eq!(v6.cluster_cidrs(), "2001:db8:18::/56");
        assert_eq!(v6.node_ips(v6.node("w1-k8s").unwrap()), "2001:db8:2::101");
        let ds = Topology::new(1, IpFamily::DualStack);
        assert_eq!(ds.service_cidrs(), "198.19.0.0/16,2001:db8:19::/112");
    }
}
