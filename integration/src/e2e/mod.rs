//! The end-to-end scenarios, written once and run against any cluster.
//!
//! A [`Cluster`] is what a scenario needs: a Kubernetes client (from any
//! kubeconfig), a [`ClientHost`] on the cluster's layer-2 segment (to send
//! requests and read which MAC answered ARP/NDP for an address) and
//! [`Settings`] (which addresses the scenarios may use, which echo image,
//! ...). Two providers build one:
//!
//! - [`lab_provider::LabProvider`]: the lab of this repository (network
//!   namespaces, ferrolb run as processes), the client host being the lab's
//!   `client` namespace. `make test` runs the scenarios this way.
//! - [`env::from_env`]: any cluster where ferrolb is installed (kind in CI,
//!   see `integration/kind/run.sh suite`), described by `FERROLB_E2E_*`
//!   environment variables.
//!
//! Each scenario in [`scenarios`] creates its own namespace, pools and
//! workload, checks what a user sees, and removes everything it created
//! also when it fails (see [`Scope`]). Scenarios discover nodes through the
//! API and never assume names.
//!
//! The parts: [`addresses`] (the scenarios' address slots), [`cluster`]
//! (what a scenario runs on), [`objects`] (apply, `metallb.io`, Service
//! status, events), [`scope`] (a scenario's namespace and configuration,
//! cleaned up), [`workload`] (echo Deployment, Services) and [`checks`]
//! (what a user sees).

pub mod addresses;
pub mod checks;
pub mod cluster;
pub mod env;
pub mod host;
pub mod lab_provider;
pub mod objects;
pub mod scenarios;
pub mod scope;
pub mod workload;

pub use addresses::{ADDRESSES_PER_SCENARIO, AddressRange};
pub use cluster::{Cluster, DEFAULT_ECHO_IMAGE, EchoWorkload, Settings};
pub use host::{ClientHost, CommandHost};
pub use objects::{
    CREATED_BY, FIELD_MANAGER, POOL_ANNOTATION, apply, events_about, ingress_ips, l2_statuses,
    lb_ingress, metallb, wait_service,
};
pub use scope::{Scope, in_scope};
