//! The chart on the lab (root; a bare lab: Kubernetes only, no ferrolb
//! processes): `helm install`, `upgrade` and `uninstall` against the lab's
//! real API server, which validates every object (RBAC, workloads, CRDs and
//! the metallb.io objects against the CRDs' schemas).
//!
//! Checked: every object of the release exists, the CRDs are Established,
//! each component's RBAC allows what it needs and refuses what it does not,
//! the DaemonSet is scheduled on every node (control-plane included), the
//! membership Secret survives `helm upgrade` unchanged, metallb.io objects
//! given as values appear once their CRDs are served, ferrolb's real
//! binaries work under the chart's ServiceAccounts, and `helm uninstall`
//! removes every object of the release except the CRDs, which the chart
//! keeps on purpose (`crds.keep`, `helm.sh/resource-policy: keep`: deleting
//! a CRD deletes every pool in the cluster). A reinstall with
//! `crds.enabled=false` (MetalLB's CRDs already there) is checked too.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ferrolb_integration::lab::eventually;
use ferrolb_integration::testkit as kit;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use super::binaries::run_binaries_with_chart_rbac;
use super::helm::{Helm, NS, RELEASE, chart, ci_values};
use super::rbac::check_rbac;
use super::release::{
    all_gone_but_crds, crds_established, existing, ipaddresspools, l2advertisements, member_key,
    names,
};
use super::rendered::crd_names;

/// Bound of each wait.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_upgrades_and_uninstalls_on_the_lab() {
    let (lab, client) = kit::up(kit::bare(2)).await;
    let helm = Helm::new(Some(lab.kubeconfig_path()));
    create_namespace(&client).await;
    ungated_metallb_objects_cannot_install(&helm, &client).await;

    // Install: CRDs, both components, the legacy ConfigMap; the metallb.io
    // objects cannot be part of the first release (their CRDs are not served
    // yet) and NOTES.txt says so.
    let values = [
        "-f",
        &ci_values("config-inline"),
        "-f",
        &ci_values("crd-objects"),
    ];
    install(&helm, &client, &values).await;
    stored_as_rendered(&client).await;
    let nodes = lab.topology().nodes().count() as i32;
    speaker_scheduled_on_every_node(&client, nodes).await;
    check_rbac(&client).await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let key = member_key(&secrets).await;
    assert!(key.len() >= 32, "membership key of {} bytes", key.len());
    upgrade_adds_metallb_objects(&helm, &client, &values, &key).await;

    // The real binaries under the chart's ServiceAccounts.
    run_binaries_with_chart_rbac(&lab, &client).await;

    upgrade_with_reused_values(&helm, &client, &key).await;
    let manifest = helm.manifest();

    // Uninstall: everything goes but the CRDs (kept by design).
    helm.ok(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "2m"]);
    eventually("release objects deleted", LIMIT, || {
        all_gone_but_crds(&client, &manifest)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    crds_established(&client)
        .await
        .unwrap_or_else(|e| panic!("CRDs are kept on uninstall: {e}"));

    reinstall_without_crds(&helm, &client, &secrets).await;
    delete_crds(&client).await;

    lab.down().expect("lab down");
}

/// The namespace as docs/install.md creates it: privileged Pod Security.
async fn create_namespace(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "privileged".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Why the chart skips metallb.io objects until their CRDs are served: a
/// copy of the chart that always renders them cannot be installed on a
/// cluster without the CRDs (Helm maps every object to an API resource
/// before it creates any), and leaves no CRD behind.
async fn ungated_metallb_objects_cannot_install(helm: &Helm, client: &kube::Client) {
    let ungated = tempfile::tempdir().expect("temp dir");
    let ungated_chart = ungated.path().join("ferrolb");
    copy_dir(Path::new(&chart()), &ungated_chart);
    let helpers = ungated_chart.join("templates/_helpers.tpl");
    let text = std::fs::read_to_string(&helpers).expect("read _helpers.tpl");
    let gate = r#"(.Capabilities.APIVersions.Has "metallb.io/v1beta1")"#;
    assert!(text.contains(gate), "the gate moved: update this test");
    std::fs::write(&helpers, text.replace(gate, "true")).expect("write _helpers.tpl");
    let err = helm.fails(&[
        "install",
        RELEASE,
        &ungated_chart.display().to_string(),
        "-n",
        NS,
        "-f",
        &ci_values("crd-objects"),
    ]);
    assert!(
        err.contains("ensure CRDs are installed first") || err.contains("no matches for kind"),
        "{err}"
    );
    let _ = helm.run(&["uninstall", RELEASE, "-n", NS]);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crd_names() {
        assert!(
            crds.get_opt(&name).await.expect("get CRD").is_none(),
            "{name} left by the failed install"
        );
    }
}

/// The first install with `values`: every object of the release is in the
/// cluster, the CRDs are Established, no metallb.io object yet.
async fn install(helm: &Helm, client: &kube::Client, values: &[&str]) {
    let c = chart();
    let mut args = vec!["install", RELEASE, &c, "-n", NS, "--timeout", "2m"];
    args.extend_from_slice(values);
    let notes = helm.ok(&args);
    assert!(
        notes.contains("WARNING: ipAddressPools / l2Advertisements were NOT created"),
        "{notes}"
    );
    let manifest = helm.manifest();
    let missing: Vec<String> = existing(client, &manifest)
        .await
        .expect("look up the release's objects")
        .into_iter()
        .filter(|(_, exists)| !exists)
        .map(|(o, _)| format!("{} {}", o.kind, o.name))
        .collect();
    assert!(missing.is_empty(), "not in the cluster: {missing:?}");
    assert!(
        manifest
            .iter()
            .any(|o| o.kind == "ConfigMap" && o.name == "config"),
        "no ConfigMap in the release"
    );
    eventually("CRDs Established", LIMIT, || crds_established(client))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(names(&ipaddresspools(client)).await.is_empty());
}

/// What the API server stored: the controller's Deployment, the speakers'
/// DaemonSet and the legacy ConfigMap as the chart renders them.
async fn stored_as_rendered(client: &kube::Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deploy = deployments
        .get("ferrolb-controller")
        .await
        .expect("Deployment");
    let spec = &deploy.spec;
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.as_ref().expect("pod spec").containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert!(args.contains(&"--leader-elect=true".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--lease-name=ferrolb-controller".to_owned()),
        "{args:?}"
    );
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let ds = daemonsets.get("ferrolb-speaker").await.expect("DaemonSet");
    let pod = ds.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.termination_grace_period_seconds, Some(10));
    let caps = pod.containers[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .expect("capabilities");
    assert_eq!(
        caps.add,
        Some(vec!["NET_RAW".to_owned(), "NET_ADMIN".to_owned()])
    );
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm = configmaps.get("config").await.expect("ConfigMap config");
    let text = cm
        .data
        .and_then(|d| d.get("config").cloned())
        .unwrap_or_default();
    assert!(text.contains("198.51.100.100-198.51.100.120"), "{text}");
}

/// The DaemonSet controller places a speaker on each of the `nodes` nodes,
/// the control-plane node included.
async fn speaker_scheduled_on_every_node(client: &kube::Client, nodes: i32) {
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    eventually("speaker scheduled on every node", LIMIT, || async {
        let ds = daemonsets
            .get("ferrolb-speaker")
            .await
            .map_err(|e| e.to_string())?;
        let desired = ds.status.map(|s| s.desired_number_scheduled).unwrap_or(0);
        if desired == nodes {
            Ok(())
        } else {
            Err(format!("{desired} of {nodes} nodes"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Upgrade with the same `values`: the metallb.io objects appear (accepted
/// by the CRDs' schemas) and the membership key stays `key`.
async fn upgrade_adds_metallb_objects(
    helm: &Helm,
    client: &kube::Client,
    values: &[&str],
    key: &[u8],
) {
    let c = chart();
    let mut args = vec!["upgrade", RELEASE, &c, "-n", NS, "--timeout", "2m"];
    args.extend_from_slice(values);
    let notes = helm.ok(&args);
    assert!(!notes.contains("WARNING"), "{notes}");
    assert_eq!(
        names(&ipaddresspools(client)).await,
        BTreeSet::from(["first-pool".to_owned(), "second-pool".to_owned()])
    );
    assert_eq!(
        names(&l2advertisements(client)).await,
        BTreeSet::from(["everything".to_owned(), "l2".to_owned()])
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        member_key(&secrets).await,
        key,
        "helm upgrade changed the membership key"
    );
}

/// A second upgrade changing a value, keeping the others (and the key).
async fn upgrade_with_reused_values(helm: &Helm, client: &kube::Client, key: &[u8]) {
    helm.ok(&[
        "upgrade",
        RELEASE,
        &chart(),
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "loadBalancerClass=example.com/ferrolb",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deploy = deployments
        .get("ferrolb-controller")
        .await
        .expect("Deployment");
    let args = deploy.spec.template.spec.expect("pod spec").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.contains(&"--lb-class=example.com/ferrolb".to_owned()),
        "{args:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        member_key(&secrets).await,
        key,
        "helm upgrade changed the membership key"
    );
    assert_eq!(names(&ipaddresspools(client)).await.len(), 2);
}

/// Reinstall as on a cluster where MetalLB's CRDs already exist:
/// crds.enabled=false, and the metallb.io objects come with the first
/// release since their kinds are served; then uninstall for good.
async fn reinstall_without_crds(helm: &Helm, client: &kube::Client, secrets: &Api<Secret>) {
    let notes = helm.ok(&[
        "install",
        RELEASE,
        &chart(),
        "-n",
        NS,
        "--set",
        "crds.enabled=false",
        "-f",
        &ci_values("crd-objects"),
    ]);
    assert!(!notes.contains("WARNING"), "{notes}");
    let manifest = helm.manifest();
    assert!(
        !manifest
            .iter()
            .any(|o| o.kind == "CustomResourceDefinition")
    );
    assert_eq!(names(&ipaddresspools(client)).await.len(), 2);
    assert!(member_key(secrets).await.len() >= 32);
    helm.ok(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "2m"]);
    eventually("release objects deleted", LIMIT, || {
        all_gone_but_crds(client, &manifest)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let out = helm.run(&["status", RELEASE, "-n", NS]);
    assert!(!out.status.success(), "the release is still known to helm");
}

/// Removing ferrolb for good (docs/install.md): delete the CRDs.
async fn delete_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crd_names() {
        crds.delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete CRD {name}: {e}"));
    }
    eventually("CRDs deleted", LIMIT, || async {
        let left: Vec<String> = crds
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| n.ends_with(".metallb.io"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
