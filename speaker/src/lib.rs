//! ferrolb speaker: makes LoadBalancer addresses reachable on the LAN (layer 2).
//!
//! One speaker runs on every node (host network). The model:
//!
//! - **Eligibility** ([`decide::eligibility`]): from the API (Services with status
//!   addresses, EndpointSlice readiness per node, Nodes, the MetalLB configuration)
//!   each speaker computes, per address and announcement protocol, which nodes may
//!   announce it: nodes matching an advertisement of the address's pool (an
//!   L2Advertisement for layer 2), not excluded, Ready, with a ready local endpoint
//!   when the Service's traffic policy is Local; nobody when no endpoint is ready.
//!   Addresses shared by several Services use the union of their eligible nodes.
//! - **Liveness** ([`membership`]): the speakers check each other over authenticated
//!   UDP (key from a Secret); each has a live set, and stops announcing when it finds
//!   itself isolated. Without the key a speaker announces nothing.
//! - **Protocols** ([`decide::protocol`]): each announcement protocol decides from
//!   eligibility and liveness what this node announces. Layer 2
//!   ([`decide::layer2`]) elects, per address, one leader among eligible ∩ live by
//!   rendezvous hashing ([`election`]). Every speaker computes the same function over
//!   the same inputs, so they agree without a coordinator and without the API server
//!   on the failover path.
//! - **Announcement** ([`announce`]): the layer-2 leader answers ARP/NDP for its
//!   addresses and sends gratuitous announcements on takeover.
//! - **NodePort forwarding** ([`nat`], `--nodeport-dnat`): where kube-proxy leaves
//!   the address alone (`ipMode: Proxy`), the leader rewrites packets for the address's
//!   ports into packets for its own NodePorts, so kube-proxy carries them to a Pod.
//! - **Shell** ([`run`]): the single task that feeds the decision core ([`decide`])
//!   from the API and the membership socket, writes `nodeAssigned` events and
//!   ServiceL2Status objects, exports MetalLB's metrics and, on SIGTERM, hands its
//!   addresses over before it stops answering.

pub mod announce;
pub mod decide;
pub mod election;
pub mod membership;
pub mod nat;
pub mod packet;
pub mod run;
