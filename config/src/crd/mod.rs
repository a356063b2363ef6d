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
    let mut crds = vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ServiceL2Status::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
        Community::crd(),
        BFDProfile::crd(),
    ];
    // IPAddressPool and BGPPeer have required fields inside their spec, so an empty
    // default would not validate: their spec stays required, as in MetalLB.
    for c in crds
        .iter_mut()
        .filter(|c| !matches!(c.spec.names.kind.as_str(), "IPAddressPool" | "BGPPeer"))
    {
        optional_spec(c);
    }
    crds
}

/// MetalLB lets these objects omit `spec` (an L2Advertisement without one advertises
/// every pool). The derived schema requires it; instead the API server is told to
/// default it to `{}`, so that clients, ours included, always see a spec.
fn optional_spec(crd: &mut CustomResourceDefinition) {
    for v in &mut crd.spec.versions {
        let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(req) = schema.required.as_mut() {
            req.retain(|r| r != "spec");
        }
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({}),
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_optional_where_it_has_no_required_fields() {
        for c in all_crds() {
            let schema = c.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            let required = schema
                .required
                .as_ref()
                .is_some_and(|r| r.iter().any(|f| f == "spec"));
            let kind = c.spec.names.kind.as_str();
            assert_eq!(
                required,
                matches!(kind, "IPAddressPool" | "BGPPeer"),
                "{kind}"
            );
        }
    }
}
