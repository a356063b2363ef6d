//! MetalLB's custom resources (`metallb.io`), field for field, so that manifests written
//! for MetalLB apply unchanged. These are the wire types only: everything they say is
//! checked and normalized by [`crate::Config::build`], the one validation path.
//!
//! The CRD YAML under `deploy/crds/` is generated from these types ([`all_crds`]).

// Several `printcolumn(...)` entries repeat keys such as `type_`; clippy reads them as
// duplicated attributes, but each is a separate column.
#![allow(clippy::duplicated_attributes)]

mod bgp;
mod l2;
mod pool;

pub use bgp::*;
pub use l2::*;
pub use pool::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

/// API group shared with MetalLB.
pub const GROUP: &str = "metallb.io";

/// Every CRD ferrolb serves, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ServiceL2Status::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
        Community::crd(),
        BFDProfile::crd(),
    ]
}
