//! BGP peers: the normalized [`BgpPeer`] and the checks of its two spellings (a legacy
//! `peers` entry is read in [`super::legacy`], a `BGPPeer` resource here).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kube_core::ResourceExt;

use crate::crd;
use crate::duration;
use crate::error::Sink;
use crate::selector::Selector;

use super::resources::selectors;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(u32),
    Internal,
    External,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEndpoint {
    Address(IpAddr),
    Interface(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    Inline(String),
    Secret { namespace: String, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    pub name: String,
    pub my_asn: u32,
    pub peer_asn: PeerAsn,
    pub endpoint: PeerEndpoint,
    pub source_address: Option<IpAddr>,
    pub port: u16,
    pub hold_time: Option<Duration>,
    pub keepalive_time: Option<Duration>,
    pub connect_time: Option<Duration>,
    pub router_id: Option<Ipv4Addr>,
    pub node_selectors: Vec<Selector>,
    pub password: Option<Password>,
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: bool,
    pub graceful_restart: bool,
    pub vrf: Option<String>,
    pub disable_mp: bool,
    pub dual_stack_address_family: bool,
}

/// MetalLB's default BGP port.
pub const DEFAULT_BGP_PORT: u16 = 179;

/// Timers shared by both peer spellings: returns (hold, keepalive).
pub(super) fn peer_timers(
    hold: Option<&str>,
    keepalive: Option<&str>,
    fields: (&str, &str),
    sink: &mut Sink<'_>,
) -> (Option<Duration>, Option<Duration>) {
    let mut parse = |v: Option<&str>, field: &str| {
        v.and_then(|s| {
            duration::parse(s)
                .map_err(|e| sink.push(field, e.to_string()))
                .ok()
        })
    };
    let hold_t = parse(hold, fields.0);
    let keep_t = parse(keepalive, fields.1);
    if let Some(h) = hold_t {
        // RFC 4271 4.2: zero (no keepalives) or at least three seconds.
        if !h.is_zero() && h < Duration::from_secs(3) {
            sink.push(
                fields.0,
                format!(
                    "hold time {} must be 0 or at least 3s (RFC 4271)",
                    duration::format(h)
                ),
            );
        }
    }
    if let (Some(h), Some(k)) = (hold_t, keep_t)
        && k > h
    {
        sink.push(
            fields.1,
            format!(
                "keepalive time {} is longer than hold time {}",
                duration::format(k),
                duration::format(h)
            ),
        );
    }
    (hold_t, keep_t)
}

pub(super) fn parse_ip(v: &str, field: &str, sink: &mut Sink<'_>) -> Option<IpAddr> {
    if v.is_empty() {
        return None;
    }
    v.parse()
        .map_err(|_| sink.push(field, format!("invalid IP address {v:?}")))
        .ok()
}

pub(super) fn parse_router_id(v: &str, field: &str, sink: &mut Sink<'_>) -> Option<Ipv4Addr> {
    if v.is_empty() {
        return None;
    }
    v.parse()
        .map_err(|_| {
            sink.push(
                field,
                format!("invalid router ID {v:?} (expected an IPv4 address)"),
            )
        })
        .ok()
}

pub(super) fn crd_peer(p: &crd::BGPPeer, sink: &mut Sink<'_>) -> Option<BgpPeer> {
    let s = &p.spec;
    if s.my_asn == 0 {
        sink.push("spec.myASN", "missing local ASN");
    }
    let peer_asn = match (s.peer_asn, s.dynamic_asn.as_str()) {
        (0, "") => {
            sink.push("spec.peerASN", "one of peerASN and dynamicASN is required");
            None
        }
        (n, "") => Some(PeerAsn::Fixed(n)),
        (0, "internal") => Some(PeerAsn::Internal),
        (0, "external") => Some(PeerAsn::External),
        (0, other) => {
            sink.push(
                "spec.dynamicASN",
                format!("unknown dynamicASN {other:?} (expected internal or external)"),
            );
            None
        }
        (_, _) => {
            sink.push(
                "spec.dynamicASN",
                "peerASN and dynamicASN are mutually exclusive",
            );
            None
        }
    };
    let endpoint = match (s.peer_address.as_str(), s.interface.as_str()) {
        ("", "") => {
            sink.push(
                "spec.peerAddress",
                "one of peerAddress and interface is required",
            );
            None
        }
        (a, "") => parse_ip(a, "spec.peerAddress", sink).map(PeerEndpoint::Address),
        ("", i) => Some(PeerEndpoint::Interface(i.to_string())),
        _ => {
            sink.push(
                "spec.interface",
                "peerAddress and interface are mutually exclusive",
            );
            None
        }
    };
    let source_address = parse_ip(&s.source_address, "spec.sourceAddress", sink);
    if s.peer_port == Some(0) {
        sink.push("spec.peerPort", "port 0 is not a valid BGP port");
    }
    let (hold_time, keepalive_time) = peer_timers(
        s.hold_time.as_deref(),
        s.keepalive_time.as_deref(),
        ("spec.holdTime", "spec.keepaliveTime"),
        sink,
    );
    let connect_time = s
        .connect_time
        .as_deref()
        .and_then(|c| match duration::parse(c) {
            Ok(d) if (1..=65535).contains(&d.as_secs()) && d.subsec_nanos() == 0 => Some(d),
            Ok(d) => {
                sink.push(
                    "spec.connectTime",
                    format!(
                        "connect time {} must be a whole number of seconds between 1s and 65535s",
                        duration::format(d)
                    ),
                );
                None
            }
            Err(e) => {
                sink.push("spec.connectTime", e.to_string());
                None
            }
        });
    let router_id = parse_router_id(&s.router_id, "spec.routerID", sink);
    let node_selectors = selectors(&s.node_selectors, "spec.nodeSelectors", sink);
    let secret = s
        .password_secret
        .as_ref()
        .filter(|r| r.name.as_deref().is_some_and(|n| !n.is_empty()));
    let password = match (s.password.is_empty(), secret) {
        (true, None) => None,
        (false, None) => Some(Password::Inline(s.password.clone())),
        (true, Some(r)) => Some(Password::Secret {
            namespace: r
                .namespace
                .clone()
                .or_else(|| p.metadata.namespace.clone())
                .unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
        }),
        (false, Some(_)) => {
            sink.push(
                "spec.passwordSecret",
                "password and passwordSecret are mutually exclusive",
            );
            None
        }
    };
    Some(BgpPeer {
        name: p.name_any(),
        my_asn: s.my_asn,
        peer_asn: peer_asn?,
        endpoint: endpoint?,
        source_address,
        port: s.peer_port.unwrap_or(DEFAULT_BGP_PORT),
        hold_time,
        keepalive_time,
        connect_time,
        router_id,
        node_selectors,
        password,
        bfd_profile: (!s.bfd_profile.is_empty()).then(|| s.bfd_profile.clone()),
        ebgp_multihop: s.ebgp_multi_hop,
        graceful_restart: s.enable_graceful_restart,
        vrf: (!s.vrf.is_empty()).then(|| s.vrf.clone()),
        disable_mp: s.disable_mp,
        dual_stack_address_family: s.dual_stack_address_family,
    })
}
