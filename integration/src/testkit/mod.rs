//! Helpers for the tests and benchmarks that drive the lab
//! (`integration/tests/e2e_*.rs`, `deploy_helm.rs`, `lab_cluster.rs`,
//! `lab_faults.rs`, `integration/benches/*.rs`): they fail nodes, break the
//! network and the control plane, restart speakers, read logs
//! and raw frames, and panic with a message on failure, as an assertion
//! would. Where the lab ([`crate::lab`]: kubectl, CRD installation,
//! starting ferrolb, who announces an address, [`eventually`]) or the
//! scenario library ([`crate::e2e`]: server-side apply, Service status,
//! events, ServiceL2Status) has the piece, the helper is a thin panicking
//! wrapper over it. Helpers returning `Result<_, String>` are meant for
//! polling inside [`eventually`].
//!
//! [`eventually`]: crate::lab::eventually
//!
//! - [`api`]: Kubernetes objects: server-side apply, `metallb.io` pools and
//!   L2Advertisements, the echo Deployment and LoadBalancer Services, node
//!   labels, the membership Secret, waiting for Service addresses, pods,
//!   events and ServiceL2Status.
//! - [`node`]: the lab side: bringing a lab up, kubectl, installing the
//!   CRDs, starting ferrolb, a daemon's HTTP endpoints (`/metrics`,
//!   `/readyz`), logs and memory, who announces an address as the client
//!   sees it.
//! - [`setup`]: the speaker tests' common cluster set-up ([`SpeakerSetup`]).
//! - [`frames`]: raw ARP frames sent and received inside lab namespaces only
//!   (a thread enters the namespace; nothing leaves the lab), and the `ip`
//!   command.
//! - [`faults`]: the lab's faults (a stopped control plane, dropped, lost or
//!   delayed packets, a node cut off the API server) and UDP datagrams that
//!   show whether a port passes, and how fast.
//! - [`arp_watch`]: who answers ARP for a set of addresses, round after
//!   round from the client, while a test breaks the lab.
//! - [`stats`]: percentiles and figures for the benchmarks.

pub mod api;
pub mod arp_watch;
pub mod faults;
pub mod frames;
pub mod node;
pub mod setup;
pub mod stats;

use std::net::Ipv4Addr;
use std::time::Duration;

pub use api::*;
pub use arp_watch::{AddressRecord, ArpRecord, ArpWatch};
pub use faults::{
    MEMBERSHIP_PORT, active_faults, add_fault, cut_from_api, dropped_by, membership_fault,
    remove_fault, start_control_plane, stop_control_plane, udp_datagrams_through,
    udp_transit_times,
};
pub use frames::{PacketSock, arp_answerers, arp_ask, arp_request, ip, mac_of, node_of_mac};
pub use node::*;
pub use setup::{EchoService, SpeakerSetup};
pub use stats::{env_usize, percentile};

/// ferrolb's namespace on the lab (pools, L2Advertisements, the Secret).
pub const CONFIG_NS: &str = crate::lab::ferrolb::NAMESPACE;
/// Where the tests' workloads and Services live.
pub const APP_NS: &str = "default";
/// The echo workload's name (Deployment, `app` label, Service).
pub const APP: &str = "echo-hname";
/// The echo image: answers any path with the pod's name (the lab's node
/// agent serves it itself).
pub const ECHO_IMAGE: &str = "sysnet4admin/echo-hname";
/// The membership Secret the speakers read.
pub const MEMBERLIST_SECRET: &str = crate::lab::ferrolb::MEMBERLIST_SECRET;
/// The worker nodes of a 3-worker lab.
pub const WORKERS: [&str; 3] = ["w1-k8s", "w2-k8s", "w3-k8s"];
/// Label the tests put on the nodes that may announce (the L2Advertisement
/// of [`SpeakerSetup`] selects it, so the control-plane node, which cannot
/// be failed, never announces).
pub const ANNOUNCE_LABEL: &str = "e2e.ferrolb.io/announce";
/// Kubernetes' label that takes a node out of load balancing.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The lab's client host (see [`crate::lab::topology::CLIENT`]).
pub const CLIENT: &str = crate::lab::topology::CLIENT;
/// The client host's network namespace.
pub const CLIENT_NS: &str = "flb-client";
/// The client host's IPv4 address on the lab's segment.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
pub use crate::lab::ferrolb::{CONTROLLER_PORT, SPEAKER_PORT};
/// How long the echo pods may take to run.
pub const PODS_WAIT: Duration = Duration::from_secs(120);
