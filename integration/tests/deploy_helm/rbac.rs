//! The chart's RBAC as the API server decides it (SubjectAccessReview): each
//! component's ServiceAccount may make the requests it needs and none of
//! those it must not (docs/install.md lists both).

use std::fmt;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::helm::NS;

/// The namespace of the Services in the requests.
const D: &str = "default";
// API groups.
const METALLB: &str = "metallb.io";
const LEASES: &str = "coordination.k8s.io";
const EVENTS: &str = "events.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
/// The controller's leader-election Lease.
const LEASE: &str = "ferrolb-controller";
/// The membership Secret.
const SECRET: &str = "ferrolb-memberlist";

/// One request: `verb` on `resource` (and `subresource`) of API `group`, in
/// `namespace` (empty: all namespaces, or a cluster-scoped resource), on
/// object `name` (empty: any).
#[derive(Debug, Clone, Copy)]
struct Access {
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verb: &'static str,
    namespace: &'static str,
    name: &'static str,
}

/// `verb` on `resource` of the core API group, cluster-wide.
const fn core(verb: &'static str, resource: &'static str) -> Access {
    of("", verb, resource)
}

/// `verb` on `resource` of API group `group`, cluster-wide.
const fn of(group: &'static str, verb: &'static str, resource: &'static str) -> Access {
    Access {
        group,
        resource,
        subresource: "",
        verb,
        namespace: "",
        name: "",
    }
}

impl Access {
    /// On `subresource` of the resource.
    const fn sub(self, subresource: &'static str) -> Access {
        Access {
            subresource,
            ..self
        }
    }

    /// In `namespace`, on any object.
    const fn in_ns(self, namespace: &'static str) -> Access {
        Access { namespace, ..self }
    }

    /// In `namespace`, on object `name`.
    const fn at(self, namespace: &'static str, name: &'static str) -> Access {
        Access {
            namespace,
            name,
            ..self
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.verb)?;
        if !self.group.is_empty() {
            write!(f, "{}/", self.group)?;
        }
        write!(f, "{}", self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        match (self.namespace, self.name) {
            ("", "") => Ok(()),
            ("", name) => write!(f, " {name}"),
            (ns, "") => write!(f, " in {ns}"),
            (ns, name) => write!(f, " {ns}/{name}"),
        }
    }
}

const CONTROLLER_MAY: &[Access] = &[
    core("list", "services"),
    core("watch", "services"),
    core("get", "services").at(D, "web"),
    core("patch", "services").at(D, "web"),
    core("patch", "services").sub("status").at(D, "web"),
    core("list", "namespaces"),
    core("watch", "namespaces"),
    core("watch", "configmaps").in_ns(NS),
    core("get", "configmaps").at(NS, "config"),
    of(METALLB, "list", "ipaddresspools").in_ns(NS),
    of(METALLB, "watch", "l2advertisements").in_ns(NS),
    of(METALLB, "list", "bgppeers").in_ns(NS),
    of(METALLB, "patch", "ipaddresspools")
        .sub("status")
        .at(NS, "p"),
    of(LEASES, "get", "leases").at(NS, LEASE),
    of(LEASES, "create", "leases").in_ns(NS),
    of(LEASES, "update", "leases").at(NS, LEASE),
    core("create", "events").in_ns(D),
    of(EVENTS, "create", "events").in_ns(D),
    of(EVENTS, "patch", "events").at(D, "e"),
];

const CONTROLLER_MAY_NOT: &[Access] = &[
    core("get", "secrets").at(NS, SECRET),
    core("delete", "services").at(D, "web"),
    core("create", "services").in_ns(D),
    core("get", "configmaps").at(D, "config"),
    core("list", "nodes"),
    core("list", "pods"),
    of(METALLB, "create", "ipaddresspools").in_ns(NS),
    of(METALLB, "list", "ipaddresspools").in_ns(D),
    of(METALLB, "create", "servicel2statuses").in_ns(NS),
    of(LEASES, "update", "leases").at(D, "x"),
    of(LEASES, "delete", "leases").at(NS, LEASE),
];

const SPEAKER_MAY: &[Access] = &[
    core("list", "services"),
    core("watch", "services"),
    core("list", "nodes"),
    core("watch", "nodes"),
    of(DISCOVERY, "list", "endpointslices"),
    of(DISCOVERY, "watch", "endpointslices"),
    core("watch", "configmaps").at(NS, "config"),
    core("get", "configmaps").at(NS, "config"),
    of(METALLB, "watch", "ipaddresspools").in_ns(NS),
    of(METALLB, "get", "l2advertisements").at(NS, "l2"),
    // ServiceL2Status objects live next to their Service.
    of(METALLB, "watch", "servicel2statuses"),
    of(METALLB, "create", "servicel2statuses").in_ns(D),
    of(METALLB, "patch", "servicel2statuses").at(D, "s"),
    of(METALLB, "delete", "servicel2statuses").at(D, "s"),
    of(METALLB, "patch", "servicel2statuses")
        .sub("status")
        .at(D, "s"),
    // The membership Secret, watched by name.
    core("get", "secrets").at(NS, SECRET),
    core("list", "secrets").at(NS, SECRET),
    core("watch", "secrets").at(NS, SECRET),
    core("create", "events").in_ns(D),
    of(EVENTS, "patch", "events").at(D, "e"),
];

const SPEAKER_MAY_NOT: &[Access] = &[
    core("get", "secrets").at(NS, "other"),
    core("list", "secrets").in_ns(NS),
    core("watch", "secrets").in_ns(NS),
    core("get", "secrets").at(D, SECRET),
    core("patch", "services").at(D, "web"),
    core("patch", "services").sub("status").at(D, "web"),
    core("patch", "nodes").at("", "n"),
    core("list", "namespaces"),
    core("list", "pods"),
    core("get", "configmaps").at(D, "config"),
    of(METALLB, "create", "ipaddresspools").in_ns(NS),
    of(METALLB, "patch", "ipaddresspools")
        .sub("status")
        .at(NS, "p"),
    of(METALLB, "list", "l2advertisements").in_ns(D),
    of(LEASES, "update", "leases").at(NS, LEASE),
];

/// Whether ServiceAccount `sa` of the release namespace may make request
/// `access`, as the API server's RBAC authorizer decides.
async fn allowed(sars: &Api<SubjectAccessReview>, sa: &str, access: &Access) -> bool {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{NS}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{NS}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(access.group.to_owned()),
                resource: Some(access.resource.to_owned()),
                subresource: opt(access.subresource),
                verb: Some(access.verb.to_owned()),
                namespace: opt(access.namespace),
                name: opt(access.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = sars
        .create(&PostParams::default(), &sar)
        .await
        .expect("create SubjectAccessReview");
    got.status.is_some_and(|s| s.allowed)
}

/// Checks both components' ServiceAccounts against what they may and may
/// not do; panics listing every wrong decision.
pub async fn check_rbac(client: &kube::Client) {
    let sars: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut wrong = Vec::new();
    for (sa, may, may_not) in [
        ("ferrolb-controller", CONTROLLER_MAY, CONTROLLER_MAY_NOT),
        ("ferrolb-speaker", SPEAKER_MAY, SPEAKER_MAY_NOT),
    ] {
        for a in may {
            if !allowed(&sars, sa, a).await {
                wrong.push(format!("{sa} may not {a} but needs to"));
            }
        }
        for a in may_not {
            if allowed(&sars, sa, a).await {
                wrong.push(format!("{sa} may {a} but should not"));
            }
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));
}
