//! The chart without a cluster: `helm lint --strict` with every value set
//! of `deploy/helm/ferrolb/ci/`, and `helm template` with the defaults and
//! with each value set (CRDs disabled, inline legacy ConfigMap, metallb.io
//! objects, loadBalancerClass, ipMode Proxy, Prometheus monitors, the plain
//! manifest's variant); values the chart must refuse are refused with a
//! reason.

use std::collections::{BTreeMap, BTreeSet};

use super::helm::{Helm, NS, RELEASE, chart, ci_values};
use super::rendered::{count, crd_names, find};

#[test]
fn chart_lints_and_renders_with_every_value_set() {
    let helm = Helm::new(None);
    lints_with_every_value_set(&helm);
    defaults_render_both_components(&helm);
    value_sets_render_what_they_set(&helm);
    plain_manifest_variant_renders(&helm);
    bad_values_are_refused(&helm);
}

fn lints_with_every_value_set(helm: &Helm) {
    let c = chart();
    let sets = [
        "crds-disabled",
        "config-inline",
        "crd-objects",
        "lb-class",
        "ip-mode-proxy",
        "monitors",
    ];
    helm.ok(&["lint", "--strict", &c]);
    for set in sets {
        helm.ok(&["lint", "--strict", &c, "-f", &ci_values(set)]);
    }
}

/// Defaults: both components, per-component RBAC, the membership Secret
/// and the CRDs; no configuration, no monitors, no Namespace.
fn defaults_render_both_components(helm: &Helm) {
    let objs = helm.template(&[]);
    let kinds = count(&objs);
    let want: BTreeMap<String, usize> = [
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("CustomResourceDefinition", crd_names().len()),
        ("DaemonSet", 1),
        ("Deployment", 1),
        ("PodDisruptionBudget", 1),
        ("Role", 2),
        ("RoleBinding", 2),
        ("Secret", 1),
        ("ServiceAccount", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds, want);
    let crds: BTreeSet<String> = objs
        .iter()
        .filter(|o| o.kind == "CustomResourceDefinition")
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(crds, crd_names());
    for o in &objs {
        let cluster_scoped = matches!(
            o.kind.as_str(),
            "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
        );
        assert_eq!(
            o.namespace.as_deref(),
            if cluster_scoped { None } else { Some(NS) },
            "{} {} namespace",
            o.kind,
            o.name
        );
    }
    let deploy = find(&objs, "Deployment", "ferrolb-controller");
    for want in [
        "replicas: 2",
        "- --namespace=metallb-system",
        "- --config=config",
        "- --metrics-addr=0.0.0.0:7472",
        "- --leader-elect=true",
        "- --lease-name=ferrolb-controller",
        "- --lb-ip-mode=VIP",
        "- --log-json",
        "fieldPath: metadata.name",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "path: /healthz",
    ] {
        assert!(deploy.text.contains(want), "controller lacks {want:?}");
    }
    assert!(!deploy.text.contains("--lb-class"));
    let ds = find(&objs, "DaemonSet", "ferrolb-speaker");
    for want in [
        "hostNetwork: true",
        "- --node-name=$(NODE_NAME)",
        "fieldPath: spec.nodeName",
        "- --memberlist-secret=ferrolb-memberlist",
        "- --memberlist-port=7946",
        "- --metrics-addr=0.0.0.0:7473",
        "containerPort: 7946\n          protocol: UDP",
        "drop: [ALL]",
        "add: [NET_RAW, NET_ADMIN]",
        "allowPrivilegeEscalation: false",
        "terminationGracePeriodSeconds: 10",
        "key: node-role.kubernetes.io/control-plane",
        "path: /readyz",
    ] {
        assert!(ds.text.contains(want), "speaker lacks {want:?}");
    }
    assert!(!ds.text.contains("privileged: true"));
    let secret = find(&objs, "Secret", "ferrolb-memberlist");
    assert!(secret.text.contains("secretkey: "), "{}", secret.text);
    // A fresh random key on each render (no cluster to look it up in).
    let again = helm.template(&[]);
    assert_ne!(
        find(&again, "Secret", "ferrolb-memberlist").text,
        secret.text,
        "the membership key is not random"
    );
    for o in objs.iter().filter(|o| o.kind == "CustomResourceDefinition") {
        assert!(
            o.text.contains("helm.sh/resource-policy: keep"),
            "{} not kept",
            o.name
        );
    }
}

/// Each value set renders what it sets.
fn value_sets_render_what_they_set(helm: &Helm) {
    // CRDs disabled.
    let objs = helm.template(&["-f", &ci_values("crds-disabled")]);
    assert!(!count(&objs).contains_key("CustomResourceDefinition"));
    assert!(count(&objs).contains_key("DaemonSet"));

    // Legacy ConfigMap.
    let objs = helm.template(&["-f", &ci_values("config-inline")]);
    let cm = find(&objs, "ConfigMap", "config");
    assert!(cm.text.contains("  config: |"), "{}", cm.text);
    assert!(
        cm.text.contains("- 198.51.100.100-198.51.100.120"),
        "{}",
        cm.text
    );
    assert!(cm.text.contains("protocol: layer2"), "{}", cm.text);

    // metallb.io objects: rendered when the API serves metallb.io (here told
    // with --api-versions), skipped otherwise.
    let objs = helm.template(&[
        "-f",
        &ci_values("crd-objects"),
        "--api-versions",
        "metallb.io/v1beta1",
    ]);
    assert_eq!(count(&objs).get("IPAddressPool"), Some(&2));
    assert_eq!(count(&objs).get("L2Advertisement"), Some(&2));
    // An advertisement without spec is sent with an empty one (every pool).
    let every = find(&objs, "L2Advertisement", "everything");
    assert!(every.text.contains("spec:\n  {}"), "{}", every.text);
    let second = find(&objs, "IPAddressPool", "second-pool");
    assert!(second.text.contains("autoAssign: false"), "{}", second.text);
    assert!(second.text.contains("tier: internal"), "{}", second.text);
    let objs = helm.template(&["-f", &ci_values("crd-objects")]);
    assert!(!count(&objs).contains_key("IPAddressPool"));

    // loadBalancerClass reaches both components.
    let objs = helm.template(&["-f", &ci_values("lb-class")]);
    for (kind, name) in [
        ("Deployment", "ferrolb-controller"),
        ("DaemonSet", "ferrolb-speaker"),
    ] {
        assert!(
            find(&objs, kind, name)
                .text
                .contains("- --lb-class=example.com/ferrolb"),
            "{name} without --lb-class"
        );
    }

    // ipMode Proxy reaches the controller, NodePort DNAT the speakers; by
    // default the speakers leave nftables alone.
    let objs = helm.template(&[]);
    assert!(
        !find(&objs, "DaemonSet", "ferrolb-speaker")
            .text
            .contains("--nodeport-dnat")
    );
    let objs = helm.template(&["-f", &ci_values("ip-mode-proxy")]);
    assert!(
        find(&objs, "Deployment", "ferrolb-controller")
            .text
            .contains("- --lb-ip-mode=Proxy")
    );
    assert!(
        find(&objs, "DaemonSet", "ferrolb-speaker")
            .text
            .contains("- --nodeport-dnat")
    );

    // Monitors: a ServiceMonitor (with its Service) and a PodMonitor per
    // component.
    let objs = helm.template(&["-f", &ci_values("monitors")]);
    let kinds = count(&objs);
    assert_eq!(kinds.get("ServiceMonitor"), Some(&2));
    assert_eq!(kinds.get("PodMonitor"), Some(&2));
    assert_eq!(kinds.get("Service"), Some(&2));
    let sm = find(&objs, "ServiceMonitor", "ferrolb-speaker");
    assert!(sm.text.contains("release: prometheus"), "{}", sm.text);
    assert!(sm.text.contains("interval: 30s"), "{}", sm.text);
    assert!(
        find(&objs, "DaemonSet", "ferrolb-speaker")
            .text
            .contains("prometheus.io/port: \"7473\"")
    );
}

/// The plain-manifest variant: Namespace with the privileged Pod Security
/// level, no generated Secret.
fn plain_manifest_variant_renders(helm: &Helm) {
    let objs = helm.template(&[
        "--set",
        "namespace.create=true",
        "--set",
        "speaker.memberlist.generateSecret=false",
    ]);
    let ns = find(&objs, "Namespace", NS);
    assert!(
        ns.text
            .contains("pod-security.kubernetes.io/enforce: privileged")
    );
    assert!(!count(&objs).contains_key("Secret"));
}

/// Values that cannot work are refused with a reason.
fn bad_values_are_refused(helm: &Helm) {
    let c = chart();
    let err = helm.fails(&["template", RELEASE, &c, "--set", "speaker.frr.enabled=true"]);
    assert!(err.contains("no FRR/BGP speaker"), "{err}");
    let err = helm.fails(&["template", RELEASE, &c, "--set", "controller.logLevel=loud"]);
    assert!(err.contains("logLevel"), "{err}");
    // values.schema.json: types and required fields.
    let err = helm.fails(&["template", RELEASE, &c, "--set", "controller.replicas=two"]);
    assert!(err.contains("/controller/replicas"), "{err}");
    let err = helm.fails(&[
        "template",
        RELEASE,
        &c,
        "--set",
        "ipAddressPools[0].spec.autoAssign=false",
    ]);
    assert!(err.contains("missing property 'name'"), "{err}");
    let err = helm.fails(&[
        "template",
        RELEASE,
        &c,
        "--set",
        "existingConfigMap=mine",
        "--set",
        "configInline.peers=x",
    ]);
    assert!(err.contains("mutually exclusive"), "{err}");
}
