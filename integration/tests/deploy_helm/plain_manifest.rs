//! The plain manifest and the chart's CRD templates are generated: `deploy/
//! render.sh --check` fails when either differs from what the chart and
//! `deploy/crds` produce.

use std::process::Command;

use ferrolb_integration::lab::repo_root;

use super::helm::helm_bin;

#[test]
fn plain_manifest_and_chart_crds_are_current() {
    let out = Command::new(repo_root().join("deploy/render.sh"))
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
