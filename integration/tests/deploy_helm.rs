//! The Helm chart (`deploy/helm/ferrolb`) and the plain manifest, with helm
//! built from its Go module (`integration/helmtool/build.sh`, or
//! `FERROLB_HELM`).
//!
//! Without a cluster: `helm lint --strict` and `helm template` with every
//! value set of `deploy/helm/ferrolb/ci/` (defaults, CRDs disabled, inline
//! legacy ConfigMap, metallb.io objects, loadBalancerClass, Prometheus
//! monitors) and values the chart must refuse; `deploy/render.sh --check`
//! (the plain manifest and the chart's CRD templates are current).
//!
//! On the lab (root; a bare lab: Kubernetes only, no ferrolb processes):
//! `helm install`, `upgrade` and `uninstall` against the lab's real API
//! server, which validates every object (RBAC, workloads, CRDs and the
//! metallb.io objects against the CRDs' schemas). Checked: every object of
//! the release exists, the CRDs are Established, each component's RBAC
//! allows what it needs and refuses what it does not (SubjectAccessReview),
//! the DaemonSet is scheduled on every node (control-plane included), the
//! membership Secret survives `helm upgrade` unchanged, metallb.io objects
//! given as values appear once their CRDs are served, ferrolb's real
//! controller and speakers (run as processes, one speaker per node's
//! namespace, with tokens of the chart's ServiceAccounts) allocate and
//! announce a LoadBalancer address without any request refused, and `helm uninstall`
//! removes every object of the release except the CRDs, which the chart
//! keeps on purpose (`crds.keep`, `helm.sh/resource-policy: keep`: deleting
//! a CRD deletes every pool in the cluster). A reinstall with
//! `crds.enabled=false` (MetalLB's CRDs already there) is checked too.
//!
//! The lab's node agent does not run container images, so this test checks
//! API objects and what the control plane does with them (scheduling,
//! RBAC decisions), and runs the binaries as processes, not the chart's pods
//! (probes, images, security contexts are not exercised); the kind workflow
//! (`integration/kind/run.sh`) runs the images. The binaries are
//! `FERROLB_CONTROLLER`/`FERROLB_SPEAKER` or target/debug (built when
//! missing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ferrolb_integration::lab::{Lab, eventually};
use ferrolb_integration::testkit as kit;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
    PostParams,
};
use kube::discovery::{Scope, pinned_kind};

const NS: &str = "metallb-system";
const RELEASE: &str = "ferrolb";

fn repo() -> PathBuf {
    ferrolb_integration::lab::repo_root()
}

fn chart() -> String {
    repo().join("deploy/helm/ferrolb").display().to_string()
}

fn ci_values(name: &str) -> String {
    repo()
        .join("deploy/helm/ferrolb/ci")
        .join(format!("{name}-values.yaml"))
        .display()
        .to_string()
}

/// helm (see `LabPaths::helm`), built when missing.
fn helm_bin() -> PathBuf {
    let bin = ferrolb_integration::lab::LabPaths::from_env().helm();
    if !bin.exists() {
        let status = Command::new(repo().join("integration/helmtool/build.sh"))
            .status()
            .expect("run integration/helmtool/build.sh");
        assert!(status.success(), "building helm failed");
    }
    bin
}

/// helm with its own config/cache/data directories (nothing of the user's
/// helm set-up is read or written) and, for the lab, its kubeconfig.
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    fn new(kubeconfig: Option<PathBuf>) -> Helm {
        Helm {
            bin: helm_bin(),
            home: tempfile::tempdir().expect("temp dir"),
            kubeconfig,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_DATA_HOME", self.home.path().join("data"));
        match &self.kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            // No cluster: an empty kubeconfig, never the user's.
            None => cmd.env("KUBECONFIG", self.home.path().join("no-kubeconfig")),
        };
        cmd.output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// Runs helm, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs helm, which must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "helm {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn template(&self, extra: &[&str]) -> Vec<Obj> {
        let c = chart();
        let mut args = vec!["template", RELEASE, &c, "--namespace", NS];
        args.extend_from_slice(extra);
        objects(&self.ok(&args))
    }
}

/// One object of a rendered manifest, located by its top-level lines.
#[derive(Debug, Clone)]
struct Obj {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    text: String,
}

/// Splits helm's output (documents separated by `---` lines, keys at
/// column 0, `metadata` fields indented by two) into objects.
fn objects(yaml: &str) -> Vec<Obj> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---\n") {
        let doc = doc.trim_start_matches("---\n");
        let top = |key: &str| {
            doc.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        let Some(kind) = top("kind: ") else { continue };
        let meta_field = |key: &str| {
            doc.lines()
                .skip_while(|l| *l != "metadata:")
                .skip(1)
                .take_while(|l| l.starts_with(' ') || l.is_empty())
                .find_map(|l| l.strip_prefix(&format!("  {key}: ")))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        out.push(Obj {
            api_version: top("apiVersion: ").unwrap_or_default(),
            name: meta_field("name").unwrap_or_else(|| panic!("{kind} without a name:\n{doc}")),
            namespace: meta_field("namespace"),
            kind,
            text: doc.to_owned(),
        });
    }
    out
}

fn count(objs: &[Obj]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in objs {
        *m.entry(o.kind.clone()).or_default() += 1;
    }
    m
}

fn find<'a>(objs: &'a [Obj], kind: &str, name: &str) -> &'a Obj {
    objs.iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", count(objs)))
}

/// The CRD names, from the generated files in deploy/crds.
fn crd_names() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("deploy/crds"))
        .expect("read deploy/crds")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect()
}

#[test]
fn chart_lints_and_renders_with_every_value_set() {
    let helm = Helm::new(None);
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

    // Defaults: both components, per-component RBAC, the membership Secret
    // and the CRDs; no configuration, no monitors, no Namespace.
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

    // The plain-manifest variant: Namespace with the privileged Pod Security
    // level, no generated Secret.
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

    // Values that cannot work are refused with a reason.
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

#[test]
fn plain_manifest_and_chart_crds_are_current() {
    let out = Command::new(repo().join("deploy/render.sh"))
        .arg("--check")
        .env("FERROLB_HELM", helm_bin())
        .output()
        .expect("run deploy/render.sh --check");
    assert!(
        out.status.success(),
        "deploy/render.sh --check:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

/// A child process killed when dropped.
struct Proc {
    name: &'static str,
    child: std::sync::Mutex<std::process::Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log");
        cmd.stdout(file.try_clone().expect("clone log"))
            .stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name,
            child: std::sync::Mutex::new(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running, and no request refused by the API server.
    fn healthy(&self) -> Result<(), String> {
        let exited = self.child.lock().expect("child lock").try_wait();
        if let Ok(Some(status)) = exited {
            return Err(format!("{} exited ({status}):\n{}", self.name, self.log()));
        }
        let log = self.log();
        if log.contains("Forbidden") || log.contains("forbidden") {
            return Err(format!("{} was refused by RBAC:\n{log}", self.name));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A ferrolb binary: `FERROLB_CONTROLLER`/`FERROLB_SPEAKER`, else cargo's
/// build of it (see `LabPaths::cargo_bin`), built when missing.
fn ferrolb_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let paths = ferrolb_integration::lab::LabPaths::from_env();
    let bin = paths.cargo_bin(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--bin", name];
        if paths.profile(name) == "release" {
            args.push("--release");
        }
        let status = Command::new(cargo)
            .args(&args)
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    bin
}

/// A kubeconfig like `base` (same server and CA) authenticating as
/// ServiceAccount `sa` of the release namespace, written as JSON.
async fn sa_kubeconfig(client: &kube::Client, base: &Path, sa: &str, out: &Path) {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap_or_else(|e| panic!("token for {sa}: {e}"))
        .status
        .expect("token status")
        .token;
    let kc = kube::config::Kubeconfig::read_from(base).expect("read kubeconfig");
    let mut json = serde_json::to_value(&kc).expect("kubeconfig as JSON");
    let users = json["users"].as_array_mut().expect("users");
    assert!(!users.is_empty(), "kubeconfig without users");
    for u in users.iter_mut() {
        u["user"] = serde_json::json!({ "token": token });
    }
    std::fs::write(out, serde_json::to_vec_pretty(&json).expect("JSON")).expect("write kubeconfig");
}

async fn run_binaries_with_chart_rbac(lab: &Lab, client: &kube::Client) {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let dir = tempfile::tempdir().expect("temp dir");
    let limit = Duration::from_secs(60);

    // Controller, from the root namespace (API via the lab's forwarder).
    let ctl_kc = dir.path().join("controller.kubeconfig");
    sa_kubeconfig(
        client,
        &lab.kubeconfig_path(),
        "ferrolb-controller",
        &ctl_kc,
    )
    .await;
    let mut cmd = Command::new(ferrolb_bin("ferrolb-controller", "FERROLB_CONTROLLER"));
    cmd.args([
        "--namespace",
        NS,
        "--metrics-addr",
        "127.0.0.1:0",
        "--leader-elect",
        "true",
        "--lease-name",
        "ferrolb-controller",
    ])
    .env("KUBECONFIG", &ctl_kc)
    .env("POD_NAME", "chart-rbac-controller")
    .env("RUST_LOG", "info");
    let controller = Proc::spawn("controller", cmd, dir.path());

    // A speaker in every node's namespace (API via the in-lab address):
    // a lone speaker is isolated from its peers and announces nothing.
    let spk_kc = dir.path().join("speaker.kubeconfig");
    sa_kubeconfig(
        client,
        &lab.lab_kubeconfig_path(),
        "ferrolb-speaker",
        &spk_kc,
    )
    .await;
    let speaker_bin = ferrolb_bin("ferrolb-speaker", "FERROLB_SPEAKER");
    let nodes: Vec<String> = lab.topology().nodes().map(|n| n.name.clone()).collect();
    let speakers: Vec<Proc> = lab
        .topology()
        .nodes()
        .map(|node| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &node.netns()])
                .arg(&speaker_bin)
                .args([
                    "--node-name",
                    &node.name,
                    "--namespace",
                    NS,
                    "--metrics-addr",
                    "127.0.0.1:0",
                    "--announcer",
                    "none",
                ])
                .env("KUBECONFIG", &spk_kc)
                .env("RUST_LOG", "info");
            Proc::spawn(leak(format!("speaker-{}", node.name)), cmd, dir.path())
        })
        .collect();
    let speaker_logs = || {
        speakers
            .iter()
            .map(|p| format!("--- {}\n{}", p.name, p.log()))
            .collect::<String>()
    };
    let all_healthy = |ctl: &Proc, spk: &[Proc]| -> Result<(), String> {
        ctl.healthy()?;
        spk.iter().try_for_each(Proc::healthy)
    };

    // A LoadBalancer Service gets an address from the configured pools.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "chart-rbac"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
    }))
    .expect("Service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    // Speakers announce only Services with a ready endpoint: one, by hand
    // (the Service has no selector; no traffic is sent to it).
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "chart-rbac", "labels": {
            "kubernetes.io/service-name": "chart-rbac",
            "endpointslice.kubernetes.io/managed-by": "deploy-helm-test",
        }},
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [lab.topology().nodes().next().expect("a node").ipv4.to_string()],
            "conditions": {"ready": true},
            "nodeName": nodes[0],
        }],
        "ports": [{"port": 80, "protocol": "TCP"}]
    }))
    .expect("EndpointSlice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create EndpointSlice");
    let (ctl, spk, svcs) = (&controller, speakers.as_slice(), &services);
    let ip = eventually(
        "address allocated by the controller",
        limit,
        || async move {
            all_healthy(ctl, spk)?;
            let s = svcs.get("chart-rbac").await.map_err(|e| e.to_string())?;
            s.status
                .and_then(|st| st.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().next())
                .and_then(|i| i.ip)
                .ok_or_else(|| "no ingress yet".to_owned())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller log:\n{}", controller.log()));
    assert!(ip.starts_with("198.51.100."), "unexpected address {ip}");

    // The controller holds the Lease under its identity.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let holder = leases
        .get("ferrolb-controller")
        .await
        .expect("Lease ferrolb-controller")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("chart-rbac-controller"));

    // The speaker, the only one, announces the address and records it in a
    // ServiceL2Status next to the Service.
    let l2 = kit::metallb_api(client, "default", "ServiceL2Status");
    // Exactly one ServiceL2Status, naming one of the nodes.
    let (l2, nodes) = (&l2, &nodes);
    let announcer = eventually(
        "ServiceL2Status written by a speaker",
        limit,
        || async move {
            all_healthy(ctl, spk)?;
            let list = l2
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let announcers: Vec<String> = list
                .items
                .iter()
                .filter_map(|o| o.data["status"]["node"].as_str().map(str::to_owned))
                .collect();
            match announcers.as_slice() {
                [n] if nodes.contains(n) => Ok(n.clone()),
                _ => Err(format!(
                    "{} objects, announced by {announcers:?}",
                    list.items.len()
                )),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nspeaker logs:\n{}", speaker_logs()));
    all_healthy(&controller, &speakers).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("chart RBAC: {ip} allocated by the controller, announced by {announcer}");

    services
        .delete("chart-rbac", &DeleteParams::default())
        .await
        .expect("delete Service");
    slices
        .delete("chart-rbac", &DeleteParams::default())
        .await
        .expect("delete EndpointSlice");
    drop(speakers);
    drop(controller);
}

/// A `&'static str` for a process name (a handful per test run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Whether `user` may do `verb` on `group/resource[/sub]` (in `ns`, named
/// `name`), as the API server's RBAC authorizer decides.
async fn allowed(
    sars: &Api<SubjectAccessReview>,
    sa: &str,
    (group, resource, sub, verb, ns, name): (&str, &str, &str, &str, &str, &str),
) -> bool {
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
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource: opt(sub),
                verb: Some(verb.to_owned()),
                namespace: opt(ns),
                name: opt(name),
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

type Access<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

async fn check_rbac(client: &kube::Client) {
    let sars: Api<SubjectAccessReview> = Api::all(client.clone());
    let d = "default";
    let controller_may: &[Access] = &[
        ("", "services", "", "list", "", ""),
        ("", "services", "", "watch", "", ""),
        ("", "services", "", "get", d, "web"),
        ("", "services", "", "patch", d, "web"),
        ("", "services", "status", "patch", d, "web"),
        ("", "namespaces", "", "list", "", ""),
        ("", "namespaces", "", "watch", "", ""),
        ("", "configmaps", "", "watch", NS, ""),
        ("", "configmaps", "", "get", NS, "config"),
        ("metallb.io", "ipaddresspools", "", "list", NS, ""),
        ("metallb.io", "l2advertisements", "", "watch", NS, ""),
        ("metallb.io", "bgppeers", "", "list", NS, ""),
        ("metallb.io", "ipaddresspools", "status", "patch", NS, "p"),
        (
            "coordination.k8s.io",
            "leases",
            "",
            "get",
            NS,
            "ferrolb-controller",
        ),
        ("coordination.k8s.io", "leases", "", "create", NS, ""),
        (
            "coordination.k8s.io",
            "leases",
            "",
            "update",
            NS,
            "ferrolb-controller",
        ),
        ("", "events", "", "create", d, ""),
        ("events.k8s.io", "events", "", "create", d, ""),
        ("events.k8s.io", "events", "", "patch", d, "e"),
    ];
    let controller_may_not: &[Access] = &[
        ("", "secrets", "", "get", NS, "ferrolb-memberlist"),
        ("", "services", "", "delete", d, "web"),
        ("", "services", "", "create", d, ""),
        ("", "configmaps", "", "get", d, "config"),
        ("", "nodes", "", "list", "", ""),
        ("", "pods", "", "list", "", ""),
        ("metallb.io", "ipaddresspools", "", "create", NS, ""),
        ("metallb.io", "ipaddresspools", "", "list", d, ""),
        ("metallb.io", "servicel2statuses", "", "create", NS, ""),
        ("coordination.k8s.io", "leases", "", "update", d, "x"),
        (
            "coordination.k8s.io",
            "leases",
            "",
            "delete",
            NS,
            "ferrolb-controller",
        ),
    ];
    let speaker_may: &[Access] = &[
        ("", "services", "", "list", "", ""),
        ("", "services", "", "watch", "", ""),
        ("", "nodes", "", "list", "", ""),
        ("", "nodes", "", "watch", "", ""),
        ("discovery.k8s.io", "endpointslices", "", "list", "", ""),
        ("discovery.k8s.io", "endpointslices", "", "watch", "", ""),
        ("", "configmaps", "", "watch", NS, "config"),
        ("", "configmaps", "", "get", NS, "config"),
        ("metallb.io", "ipaddresspools", "", "watch", NS, ""),
        ("metallb.io", "l2advertisements", "", "get", NS, "l2"),
        // ServiceL2Status objects live next to their Service.
        ("metallb.io", "servicel2statuses", "", "watch", "", ""),
        ("metallb.io", "servicel2statuses", "", "create", d, ""),
        ("metallb.io", "servicel2statuses", "", "patch", d, "s"),
        ("metallb.io", "servicel2statuses", "", "delete", d, "s"),
        ("metallb.io", "servicel2statuses", "status", "patch", d, "s"),
        // The membership Secret, watched by name.
        ("", "secrets", "", "get", NS, "ferrolb-memberlist"),
        ("", "secrets", "", "list", NS, "ferrolb-memberlist"),
        ("", "secrets", "", "watch", NS, "ferrolb-memberlist"),
        ("", "events", "", "create", d, ""),
        ("events.k8s.io", "events", "", "patch", d, "e"),
    ];
    let speaker_may_not: &[Access] = &[
        ("", "secrets", "", "get", NS, "other"),
        ("", "secrets", "", "list", NS, ""),
        ("", "secrets", "", "watch", NS, ""),
        ("", "secrets", "", "get", d, "ferrolb-memberlist"),
        ("", "services", "", "patch", d, "web"),
        ("", "services", "status", "patch", d, "web"),
        ("", "nodes", "", "patch", "", "n"),
        ("", "namespaces", "", "list", "", ""),
        ("", "pods", "", "list", "", ""),
        ("", "configmaps", "", "get", d, "config"),
        ("metallb.io", "ipaddresspools", "", "create", NS, ""),
        ("metallb.io", "ipaddresspools", "status", "patch", NS, "p"),
        ("metallb.io", "l2advertisements", "", "list", d, ""),
        (
            "coordination.k8s.io",
            "leases",
            "",
            "update",
            NS,
            "ferrolb-controller",
        ),
    ];
    let mut wrong = Vec::new();
    for (sa, may, may_not) in [
        ("ferrolb-controller", controller_may, controller_may_not),
        ("ferrolb-speaker", speaker_may, speaker_may_not),
    ] {
        for a in may {
            if !allowed(&sars, sa, *a).await {
                wrong.push(format!("{sa} may not {a:?} but needs to"));
            }
        }
        for a in may_not {
            if allowed(&sars, sa, *a).await {
                wrong.push(format!("{sa} may {a:?} but should not"));
            }
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));
}

fn dynamic_api(
    client: &kube::Client,
    ar: &ApiResource,
    scope: &Scope,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (scope, ns) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), ar),
        (Scope::Cluster, _) => Api::all_with(client.clone(), ar),
    }
}

/// For each object of `objs`, whether it exists in the cluster.
async fn existing(client: &kube::Client, objs: &[Obj]) -> Result<Vec<(Obj, bool)>, String> {
    let mut out = Vec::new();
    for o in objs {
        let (group, version) = match o.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &o.kind);
        let (ar, caps) = pinned_kind(client, &gvk)
            .await
            .map_err(|e| format!("discover {gvk:?}: {e}"))?;
        let api = dynamic_api(client, &ar, &caps.scope, o.namespace.as_deref());
        let got = api
            .get_opt(&o.name)
            .await
            .map_err(|e| format!("get {} {}: {e}", o.kind, o.name))?;
        out.push((o.clone(), got.is_some()));
    }
    Ok(out)
}

fn ipaddresspools(client: &kube::Client) -> Api<DynamicObject> {
    kit::metallb_api(client, NS, "IPAddressPool")
}

fn l2advertisements(client: &kube::Client) -> Api<DynamicObject> {
    kit::metallb_api(client, NS, "L2Advertisement")
}

async fn names(api: &Api<DynamicObject>) -> BTreeSet<String> {
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

async fn member_key(secrets: &Api<Secret>) -> Vec<u8> {
    let s = secrets
        .get("ferrolb-memberlist")
        .await
        .expect("membership Secret");
    s.data
        .and_then(|d| d.get("secretkey").cloned())
        .expect("secretkey in ferrolb-memberlist")
        .0
}

async fn crds_established(client: &kube::Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crd_names() {
        let crd = crds
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} missing"))?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            return Err(format!("{name} not Established"));
        }
    }
    Ok(())
}

/// After an uninstall: every object of `objs` gone, except CRDs.
async fn all_gone_but_crds(client: &kube::Client, objs: &[Obj]) -> Result<(), String> {
    let left: Vec<String> = existing(client, objs)
        .await?
        .into_iter()
        .filter(|(o, exists)| *exists && o.kind != "CustomResourceDefinition")
        .map(|(o, _)| format!("{} {}", o.kind, o.name))
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still there: {left:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_upgrades_and_uninstalls_on_the_lab() {
    let (lab, client) = kit::up(kit::bare(2)).await;
    let helm = Helm::new(Some(lab.kubeconfig_path()));
    let c = chart();
    let limit = Duration::from_secs(60);

    // The namespace as docs/install.md creates it: privileged Pod Security.
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

    // Why the chart skips metallb.io objects until their CRDs are served: a
    // copy of the chart that always renders them cannot be installed on a
    // cluster without the CRDs (Helm maps every object to an API resource
    // before it creates any).
    let ungated = tempfile::tempdir().expect("temp dir");
    let ungated_chart = ungated.path().join("ferrolb");
    copy_dir(Path::new(&c), &ungated_chart);
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

    // Install: CRDs, both components, the legacy ConfigMap; the metallb.io
    // objects cannot be part of the first release (their CRDs are not served
    // yet) and NOTES.txt says so.
    let values = [
        "-f",
        &ci_values("config-inline"),
        "-f",
        &ci_values("crd-objects"),
    ];
    let mut args = vec!["install", RELEASE, &c, "-n", NS, "--timeout", "2m"];
    args.extend_from_slice(&values);
    let notes = helm.ok(&args);
    assert!(
        notes.contains("WARNING: ipAddressPools / l2Advertisements were NOT created"),
        "{notes}"
    );
    let manifest = objects(&helm.ok(&["get", "manifest", RELEASE, "-n", NS]));
    let missing: Vec<String> = existing(&client, &manifest)
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
    eventually("CRDs Established", limit, || crds_established(&client))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(names(&ipaddresspools(&client)).await.is_empty());

    // What the API server stored.
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

    // The DaemonSet controller places a speaker on every node, the
    // control-plane node included.
    let nodes = lab.topology().nodes().count() as i32;
    eventually("speaker scheduled on every node", limit, || async {
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

    check_rbac(&client).await;

    // Upgrade: the metallb.io objects appear (accepted by the CRDs'
    // schemas) and the membership key stays.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let key = member_key(&secrets).await;
    assert!(key.len() >= 32, "membership key of {} bytes", key.len());
    let mut args = vec!["upgrade", RELEASE, &c, "-n", NS, "--timeout", "2m"];
    args.extend_from_slice(&values);
    let notes = helm.ok(&args);
    assert!(!notes.contains("WARNING"), "{notes}");
    assert_eq!(
        names(&ipaddresspools(&client)).await,
        BTreeSet::from(["first-pool".to_owned(), "second-pool".to_owned()])
    );
    assert_eq!(
        names(&l2advertisements(&client)).await,
        BTreeSet::from(["everything".to_owned(), "l2".to_owned()])
    );
    assert_eq!(
        member_key(&secrets).await,
        key,
        "helm upgrade changed the membership key"
    );

    // The real binaries under the chart's ServiceAccounts: ferrolb's
    // controller and one speaker run as processes with a token of their
    // ServiceAccount, so any permission the chart lacks shows up as an
    // error. (The lab's node agent does not run images, hence processes.)
    run_binaries_with_chart_rbac(&lab, &client).await;

    // A second upgrade changing a value, keeping the others.
    helm.ok(&[
        "upgrade",
        RELEASE,
        &c,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "loadBalancerClass=example.com/ferrolb",
    ]);
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
    assert_eq!(
        member_key(&secrets).await,
        key,
        "helm upgrade changed the membership key"
    );
    assert_eq!(names(&ipaddresspools(&client)).await.len(), 2);
    let manifest = objects(&helm.ok(&["get", "manifest", RELEASE, "-n", NS]));

    // Uninstall: everything goes but the CRDs (kept by design).
    helm.ok(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "2m"]);
    eventually("release objects deleted", limit, || {
        all_gone_but_crds(&client, &manifest)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    crds_established(&client)
        .await
        .unwrap_or_else(|e| panic!("CRDs are kept on uninstall: {e}"));

    // Reinstall as on a cluster where MetalLB's CRDs already exist:
    // crds.enabled=false, and the metallb.io objects come with the first
    // release since their kinds are served.
    let notes = helm.ok(&[
        "install",
        RELEASE,
        &c,
        "-n",
        NS,
        "--set",
        "crds.enabled=false",
        "-f",
        &ci_values("crd-objects"),
    ]);
    assert!(!notes.contains("WARNING"), "{notes}");
    let manifest = objects(&helm.ok(&["get", "manifest", RELEASE, "-n", NS]));
    assert!(
        !manifest
            .iter()
            .any(|o| o.kind == "CustomResourceDefinition")
    );
    assert_eq!(names(&ipaddresspools(&client)).await.len(), 2);
    assert!(member_key(&secrets).await.len() >= 32);
    helm.ok(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "2m"]);
    eventually("release objects deleted", limit, || {
        all_gone_but_crds(&client, &manifest)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let out = helm.run(&["status", RELEASE, "-n", NS]);
    assert!(!out.status.success(), "the release is still known to helm");

    // Removing ferrolb for good (docs/install.md): delete the CRDs.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crd_names() {
        crds.delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete CRD {name}: {e}"));
    }
    eventually("CRDs deleted", limit, || async {
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

    lab.down().expect("lab down");
}
