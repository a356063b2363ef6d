//! The shell's and Rust's rules for where built artefacts are
//! (`scripts/paths.sh` and `lab paths`, i.e. `LabPaths`) give the same
//! answers, with and without the environment variables that move them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use ferrolb_integration::lab::repo_root;

const KINDS: [&str; 5] = ["target", "harness", "kubectl", "tools", "helm"];
const VARS: [&str; 5] = [
    "CARGO_TARGET_DIR",
    "FERROLB_HARNESS",
    "FERROLB_HELM",
    "FERROLB_PROFILE",
    "FERROLB_REPO",
];

fn ask(program: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> String {
    let mut c = Command::new(program);
    c.args(args).current_dir(cwd);
    for v in VARS {
        c.env_remove(v);
    }
    // The lab binary finds the repository from here, as the wrapper tells it.
    c.env("FERROLB_REPO", repo_root());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{program:?}: {e}"));
    assert!(out.status.success(), "{program:?} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn agree(env: &[(&str, &str)], cwd: &Path, binaries: &[&str]) {
    let shell = repo_root().join("scripts/paths.sh");
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let mut questions: Vec<Vec<&str>> = KINDS.iter().map(|k| vec![*k]).collect();
    for b in binaries {
        questions.push(vec!["profile", b]);
        questions.push(vec!["bin", b]);
    }
    for q in questions {
        let mut lab_args = vec!["paths"];
        lab_args.extend(&q);
        let from_shell = ask(&shell, &q, env, cwd);
        let from_rust = ask(lab, &lab_args, env, cwd);
        assert_eq!(from_shell, from_rust, "{q:?} with {env:?} in {cwd:?}");
    }
}

fn touch(path: &Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn shell_and_rust_find_the_same_artefacts() {
    let repo = repo_root();
    agree(&[], &repo, &["ferrolb-speaker"]);
    agree(
        &[
            ("FERROLB_HARNESS", "/opt/h/k8s-harness"),
            ("FERROLB_HELM", "/opt/helm"),
        ],
        &repo,
        &[],
    );

    // A target directory of our own, relative to the working directory, with
    // builds of different ages in each profile.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    touch(&target.join("release/only-release"), Duration::ZERO);
    touch(&target.join("debug/only-debug"), Duration::ZERO);
    touch(&target.join("release/newer-release"), Duration::ZERO);
    touch(&target.join("debug/newer-release"), Duration::from_secs(60));
    touch(&target.join("release/newer-debug"), Duration::from_secs(60));
    touch(&target.join("debug/newer-debug"), Duration::ZERO);
    let binaries = [
        "only-release",
        "only-debug",
        "newer-release",
        "newer-debug",
        "missing",
    ];
    agree(&[("CARGO_TARGET_DIR", "t")], dir.path(), &binaries);
    agree(
        &[("CARGO_TARGET_DIR", "t"), ("FERROLB_PROFILE", "release")],
        dir.path(),
        &binaries,
    );
    // And the rules are the ones the scripts document.
    let shell = repo.join("scripts/paths.sh");
    let env = [("CARGO_TARGET_DIR", "t")];
    assert_eq!(
        ask(&shell, &["profile", "newer-release"], &env, dir.path()),
        "release"
    );
    assert_eq!(
        ask(&shell, &["profile", "newer-debug"], &env, dir.path()),
        "debug"
    );
    assert_eq!(
        ask(&shell, &["profile", "missing"], &env, dir.path()),
        "debug"
    );
    assert_eq!(
        ask(&shell, &["bin", "only-release"], &env, dir.path()),
        target.join("release/only-release").display().to_string()
    );
}
