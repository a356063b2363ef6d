//! The Helm chart (`deploy/helm/ferrolb`) and the plain manifest, with helm
//! built from its Go module (`integration/helmtool/build.sh`, or
//! `FERROLB_HELM`).
//!
//! - [`chart`]: without a cluster, `helm lint` and `helm template` with
//!   every value set of `deploy/helm/ferrolb/ci/`, and values the chart must
//!   refuse.
//! - [`plain_manifest`]: `deploy/render.sh --check` (the plain manifest and
//!   the chart's CRD templates are current).
//! - [`lab_install`]: on the lab (root), `helm install`, `upgrade` and
//!   `uninstall` against a real API server, with the chart's RBAC
//!   ([`rbac`]) and ferrolb's binaries under its ServiceAccounts
//!   ([`binaries`]).
//!
//! The lab's node agent does not run container images, so the lab part
//! checks API objects and what the control plane does with them
//! (scheduling, RBAC decisions), and runs the binaries as processes, not
//! the chart's pods (probes, images, security contexts are not exercised);
//! the kind workflow (`integration/kind/run.sh`) runs the images. The
//! binaries are `FERROLB_CONTROLLER`/`FERROLB_SPEAKER` or cargo's build
//! (built when missing).
//!
//! Support: [`helm`] (running helm, the chart's paths), [`rendered`]
//! (objects of a rendered manifest), [`release`] (the release's objects in
//! the cluster).

// The modules live in deploy_helm/ next to this file, which stays the test
// target's root (the docs name it).
#[path = "deploy_helm/binaries.rs"]
mod binaries;
#[path = "deploy_helm/chart.rs"]
mod chart;
#[path = "deploy_helm/helm.rs"]
mod helm;
#[path = "deploy_helm/lab_install.rs"]
mod lab_install;
#[path = "deploy_helm/plain_manifest.rs"]
mod plain_manifest;
#[path = "deploy_helm/rbac.rs"]
mod rbac;
#[path = "deploy_helm/release.rs"]
mod release;
#[path = "deploy_helm/rendered.rs"]
mod rendered;
