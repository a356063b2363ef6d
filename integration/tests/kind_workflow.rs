//! The kind workflow cannot run here (no docker), so its shape is checked:
//! the YAML parses, every step runs something, every `integration/kind/run.sh`
//! step it calls exists in the script, the suite it runs is a real test target,
//! and the script is valid shell. actionlint runs too when it has been built
//! into `target/tools` (see `.github/workflows/e2e-kind.yml`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_norway::Value;

fn repo() -> PathBuf {
    ferrolb_integration::lab::repo_root()
}

/// The step names `run.sh` accepts, from its `case` line.
fn script_steps(script: &str) -> BTreeSet<String> {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("images|"))
        .expect("run.sh has a case line listing its steps");
    let names = line.split(')').next().unwrap_or_default();
    names.split('|').map(str::to_owned).collect()
}

#[test]
fn kind_workflow_names_real_steps() {
    let root = repo();
    let text = std::fs::read_to_string(root.join(".github/workflows/e2e-kind.yml")).unwrap();
    let wf: Value = serde_norway::from_str(&text).expect("e2e-kind.yml is valid YAML");
    let script = std::fs::read_to_string(root.join("integration/kind/run.sh")).unwrap();
    let known = script_steps(&script);
    assert!(
        known.contains("suite") && known.contains("install"),
        "{known:?}"
    );

    let jobs = wf["jobs"].as_mapping().expect("jobs");
    assert!(!jobs.is_empty());
    let mut called = BTreeSet::new();
    for (job, body) in jobs {
        let steps = body["steps"].as_sequence().expect("steps");
        assert!(!steps.is_empty(), "job {job:?} has no steps");
        for step in steps {
            let name = step["name"].as_str().unwrap_or("<unnamed>");
            let run = step["run"].as_str();
            let uses = step["uses"].as_str();
            assert!(
                run.is_some() != uses.is_some(),
                "step {name:?}: exactly one of run/uses"
            );
            if let Some(uses) = uses {
                assert!(
                    uses.split_once('@')
                        .is_some_and(|(a, r)| a.contains('/') && !r.is_empty()),
                    "step {name:?}: uses {uses:?} is not owner/repo@ref"
                );
            }
            for line in run.unwrap_or_default().lines() {
                let mut words = line.split_whitespace();
                while let Some(w) = words.next() {
                    if w == "integration/kind/run.sh" {
                        for arg in words
                            .by_ref()
                            .take_while(|a| !a.starts_with(['|', '&', ';']))
                        {
                            assert!(
                                known.contains(arg),
                                "step {name:?} calls run.sh {arg:?}, which run.sh does not have"
                            );
                            called.insert(arg.to_owned());
                        }
                    }
                }
            }
        }
    }
    for needed in ["images", "cluster", "install", "client", "suite", "down"] {
        assert!(called.contains(needed), "the workflow never runs {needed}");
    }

    // The suite the script runs by default is a test target of this crate.
    let suite = script
        .lines()
        .find_map(|l| l.strip_prefix("suite=\"${FERROLB_E2E_SUITE-"))
        .and_then(|r| r.strip_suffix("}\""))
        .expect("run.sh sets suite from FERROLB_E2E_SUITE");
    assert!(
        root.join(format!("integration/tests/{suite}.rs")).exists(),
        "run.sh runs missing suite {suite}"
    );

    let syntax = Command::new("bash")
        .args(["-n"])
        .arg(root.join("integration/kind/run.sh"))
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    let actionlint = ferrolb_integration::lab::LabPaths::from_env()
        .tools()
        .join("actionlint");
    if actionlint.exists() {
        let out = Command::new(&actionlint)
            .arg(root.join(".github/workflows/e2e-kind.yml"))
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "actionlint: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("actionlint not built (target/tools/actionlint): YAML and step checks only");
    }
}
