//! helm for the tests: built from its Go module when missing
//! (`integration/helmtool/build.sh`, or `FERROLB_HELM`), run with its own
//! configuration directories, never the user's; and where the chart and its
//! CI value sets are.

use std::path::PathBuf;
use std::process::{Command, Output};

use ferrolb_integration::lab::{LabPaths, repo_root};

use super::rendered::{Obj, objects};

/// The release's namespace.
pub const NS: &str = "metallb-system";
/// The release's name.
pub const RELEASE: &str = "ferrolb";

/// The chart's directory.
pub fn chart() -> String {
    repo_root()
        .join("deploy/helm/ferrolb")
        .display()
        .to_string()
}

/// The CI value set `name` (`deploy/helm/ferrolb/ci/<name>-values.yaml`).
pub fn ci_values(name: &str) -> String {
    repo_root()
        .join("deploy/helm/ferrolb/ci")
        .join(format!("{name}-values.yaml"))
        .display()
        .to_string()
}

/// helm (see `LabPaths::helm`), built when missing.
pub fn helm_bin() -> PathBuf {
    let bin = LabPaths::from_env().helm();
    if !bin.exists() {
        let status = Command::new(repo_root().join("integration/helmtool/build.sh"))
            .status()
            .expect("run integration/helmtool/build.sh");
        assert!(status.success(), "building helm failed");
    }
    bin
}

/// helm with its own config/cache/data directories (nothing of the user's
/// helm set-up is read or written) and, for the lab, its kubeconfig.
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// helm against the cluster of `kubeconfig`; `None`: no cluster.
    pub fn new(kubeconfig: Option<PathBuf>) -> Helm {
        Helm {
            bin: helm_bin(),
            home: tempfile::tempdir().expect("temp dir"),
            kubeconfig,
        }
    }

    /// Runs helm; its output whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Output {
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
    pub fn ok(&self, args: &[&str]) -> String {
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
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "helm {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `helm template` of the chart with `extra` arguments: its objects.
    pub fn template(&self, extra: &[&str]) -> Vec<Obj> {
        let c = chart();
        let mut args = vec!["template", RELEASE, &c, "--namespace", NS];
        args.extend_from_slice(extra);
        objects(&self.ok(&args))
    }

    /// `helm get manifest` of the release: its objects.
    pub fn manifest(&self) -> Vec<Obj> {
        objects(&self.ok(&["get", "manifest", RELEASE, "-n", NS]))
    }
}
