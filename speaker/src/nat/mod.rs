//! NodePort forwarding for led addresses that kube-proxy does not handle
//! (`--nodeport-dnat`).
//!
//! kube-proxy installs rules for a LoadBalancer address only when the Service's
//! `status.loadBalancer.ingress[].ipMode` is `VIP` (or unset). With `ipMode: Proxy`
//! (Kubernetes 1.32 and later) it leaves the address to the load balancer, and a packet
//! for it reaching the leader node would find nothing. In this mode the leader rewrites
//! such packets into packets for its own NodePort, so kube-proxy's NodePort handling
//! carries them to a Pod.
//!
//! How, and why not a plain `dnat`: at one netfilter hook, once a NAT chain gives a new
//! connection a binding, the other NAT base chains of that hook are skipped. A `dnat to
//! node:NodePort` of ours would thus stop kube-proxy's NodePort DNAT from running, and
//! the packet would be delivered to the node itself, where nothing listens on the
//! NodePort. So the rewrite is stateless and placed between conntrack and NAT
//! (prerouting, priority `mangle`, -150): conntrack has already recorded the connection
//! as `client -> LB:port`; the header then says `node:NodePort`, which kube-proxy's NAT
//! rules (priority `dstnat`, -100) match as any NodePort packet and DNAT to a Pod. Since
//! the conntrack entry's original tuple still holds `LB:port`, the replies get `LB:port`
//! back as their source from conntrack's own reverse NAT: no reply rule, no mark, no
//! state of ours. Packets of established connections are rewritten too, then NAT puts
//! the Pod's address in whatever the header says. Direct NodePort clients never match.
//! The leader's own connections to the address take the same rules on the output hook,
//! in a `route` chain so that the rewritten packet is routed again (to the node
//! itself, where kube-proxy's OUTPUT NAT rules handle NodePorts).
//!
//! `loadBalancerSourceRanges` are enforced in the same chain, with kube-proxy's rules
//! ([`family_sources`]), since kube-proxy, which enforces them for `VIP` addresses,
//! sees these packets as NodePort packets: before the rewrite, a packet for a guarded
//! `address:port` from a source outside its ranges is dropped.
//!
//! The kernel is behind [`NatTable`] (the whole desired state in, the whole table
//! replaced atomically); [`nft::NftTable`] drives the `nft` binary, `FakeTable`
//! (feature `testing`) records calls for tests, and [`worker::NatHandle`] applies the
//! latest desired state off the speaker's loop.

pub mod nft;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
#[cfg(any(test, feature = "testing"))]
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use k8s_openapi::api::core::v1::Service;

use ferrolb_config::ServiceKey;

/// Transport protocols a Service port may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// From a Service port's `protocol` (unset means TCP).
    pub fn from_k8s(p: Option<&str>) -> Option<Proto> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// nft's name of the protocol.
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    fn k8s(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
}

/// A Service port as the NodePort DNAT reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcPort {
    pub proto: Proto,
    pub port: u16,
    /// `None`: no nodePort (`allocateLoadBalancerNodePorts: false`).
    pub node_port: Option<u16>,
}

/// What the NodePort DNAT reads of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceNat {
    pub ports: Vec<SvcPort>,
    /// `spec.loadBalancerSourceRanges`, both families (see [`family_sources`]).
    pub source_ranges: Vec<IpNet>,
}

/// A Service's ports ([`ports_of`]) and source ranges ([`source_ranges_of`]).
pub fn service_nat(svc: &Service) -> ServiceNat {
    ServiceNat {
        ports: ports_of(svc),
        source_ranges: source_ranges_of(svc),
    }
}

/// `spec.loadBalancerSourceRanges` as kube-proxy reads it: trimmed, and a range that
/// does not parse left out (the API server validates them).
pub fn source_ranges_of(svc: &Service) -> Vec<IpNet> {
    svc.spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect()
}

/// The sources allowed to reach an address of `ip`'s family, `None` for any, with
/// kube-proxy's rules so that a Service behaves the same whichever of the two carries
/// its address: only the ranges of that family count; none (say a dual-stack Service
/// with IPv4 ranges only, for its IPv6 address) or a zero-length prefix means any. The
/// ranges are merged ([`IpNet::aggregate`]) since the kernel's interval sets refuse
/// overlapping elements.
pub fn family_sources(ranges: &[IpNet], ip: IpAddr) -> Option<Vec<IpNet>> {
    let own: Vec<IpNet> = ranges
        .iter()
        .filter(|n| n.addr().is_ipv4() == ip.is_ipv4())
        .copied()
        .collect();
    if own.is_empty() || own.iter().any(|n| n.prefix_len() == 0) {
        return None;
    }
    Some(IpNet::aggregate(&own))
}

/// A Service's ports, less those no rule can be written for (a protocol other than
/// TCP, UDP and SCTP, a port number out of range).
pub fn ports_of(svc: &Service) -> Vec<SvcPort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(SvcPort {
                proto: Proto::from_k8s(p.protocol.as_deref())?,
                port: u16::try_from(p.port).ok()?,
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            })
        })
        .collect()
}

/// Packets for `ip`, `proto`, `port` go to this node's `node_port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatEntry {
    pub ip: IpAddr,
    pub proto: Proto,
    pub port: u16,
    pub node_port: u16,
    /// Only packets from these sources (of `ip`'s family) pass; the others are
    /// dropped. `None`: any source.
    pub sources: Option<Vec<IpNet>>,
}

/// The whole desired state of this node's table. Empty: no table at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRules {
    /// This node's address the IPv4 entries are rewritten to.
    pub node_v4: Option<Ipv4Addr>,
    /// This node's address the IPv6 entries are rewritten to.
    pub node_v6: Option<Ipv6Addr>,
    /// Only entries of a family with a node address.
    pub entries: BTreeSet<NatEntry>,
}

impl NatRules {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// This node's forwarding table in the kernel.
pub trait NatTable: Send + fmt::Debug + 'static {
    /// Makes the table say exactly `desired` (removing it when `desired` is empty), in
    /// one transaction: packets see the old table or the new one, never a mix.
    fn apply(&mut self, desired: &NatRules) -> Result<(), NatError>;
    /// Removes the table, whatever it holds (also a table a crashed run left).
    fn clear(&mut self) -> Result<(), NatError>;
}

/// A call a [`FakeTable`] received.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeCall {
    Apply(NatRules),
    Clear,
}

/// A [`NatTable`] that records its calls and can be told to fail, for tests without root.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, Default)]
pub struct FakeTable {
    pub calls: Arc<Mutex<Vec<FakeCall>>>,
    /// While set, every call fails (and is still recorded).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(any(test, feature = "testing"))]
impl FakeTable {
    /// What the kernel would hold now: the last successful call's state.
    pub fn current(&self) -> NatRules {
        match self.calls.lock().expect("fake").last() {
            Some(FakeCall::Apply(r)) => r.clone(),
            _ => NatRules::default(),
        }
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls.lock().expect("fake").clone()
    }

    fn result(&self) -> Result<(), NatError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(NatError::Failed {
                program: "fake".into(),
                status: "1".into(),
                stderr: "told to fail".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl NatTable for FakeTable {
    fn apply(&mut self, desired: &NatRules) -> Result<(), NatError> {
        let r = self.result();
        if r.is_ok() {
            self.calls
                .lock()
                .expect("fake")
                .push(FakeCall::Apply(desired.clone()));
        }
        r
    }

    fn clear(&mut self) -> Result<(), NatError> {
        let r = self.result();
        if r.is_ok() {
            self.calls.lock().expect("fake").push(FakeCall::Clear);
        }
        r
    }
}

/// What [`desired`] found besides the rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub rules: NatRules,
    /// Led Services with ports that have no nodePort (`allocateLoadBalancerNodePorts:
    /// false`), with those ports as `80/TCP`.
    pub without_node_port: BTreeMap<ServiceKey, Vec<String>>,
    /// Led addresses of a family this node has no InternalIP of.
    pub no_node_address: BTreeSet<IpAddr>,
}

/// The rules for the addresses this node leads: for each led address and each Service
/// using it, every port with a nodePort. `node_ips` are this node's InternalIPs (the
/// first of each family is used). When two Services sharing an address claim the same
/// port (MetalLB's sharing rules forbid it), the first by namespace/name wins.
pub fn desired<'a>(
    led: impl IntoIterator<Item = (IpAddr, &'a ServiceKey, &'a ServiceNat)>,
    node_ips: &[IpAddr],
) -> Desired {
    let node_v4 = node_ips.iter().find_map(|ip| match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let node_v6 = node_ips.iter().find_map(|ip| match ip {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let mut out = Desired {
        rules: NatRules {
            node_v4,
            node_v6,
            entries: BTreeSet::new(),
        },
        ..Desired::default()
    };
    let mut led: Vec<(IpAddr, &ServiceKey, &ServiceNat)> = led.into_iter().collect();
    led.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut claimed: BTreeSet<(IpAddr, Proto, u16)> = BTreeSet::new();
    for (ip, key, svc) in led {
        let has_family = match ip {
            IpAddr::V4(_) => node_v4.is_some(),
            IpAddr::V6(_) => node_v6.is_some(),
        };
        let sources = family_sources(&svc.source_ranges, ip);
        for &SvcPort {
            proto,
            port,
            node_port,
        } in &svc.ports
        {
            let Some(node_port) = node_port else {
                let ports = out.without_node_port.entry(key.clone()).or_default();
                let text = format!("{port}/{}", proto.k8s());
                if !ports.contains(&text) {
                    ports.push(text);
                }
                continue;
            };
            if !has_family {
                out.no_node_address.insert(ip);
                continue;
            }
            if claimed.insert((ip, proto, port)) {
                out.rules.entries.insert(NatEntry {
                    ip,
                    proto,
                    port,
                    node_port,
                    sources: sources.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
