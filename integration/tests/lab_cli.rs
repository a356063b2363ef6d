//! The `lab` command line on a topology-only lab: idempotent `up`, refused
//! option changes, `env`, `exec` exit codes, node failure shown by `status`,
//! the lab lock, and `down`.
//!
//! Needs root; fails, never skips, without it.

use std::process::{Command, Output};

use ferrolb_integration::lab::lock::{self, ENV_LOCK_HELD};
use ferrolb_integration::lab::{LOCK_WAIT, LabPaths, teardown};

/// Runs `lab ARGS` as a child of this test, which holds the lab lock.
fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env(ENV_LOCK_HELD, "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lab")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn command_line_drives_the_lab() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the lab tests need root (network namespaces); run them as root, e.g. `sudo make e2e`"
    );
    let _lock = lock::acquire(LOCK_WAIT).expect("lab lock");
    let paths = LabPaths::from_env();
    teardown::down(&paths).expect("remove a leftover lab");

    let up = lab(&["up", "--topology-only", "--workers", "1"]);
    assert!(up.status.success(), "up: {}", text(&up));
    let again = lab(&["up", "--topology-only", "--workers", "1"]);
    assert!(again.status.success(), "second up: {}", text(&again));
    let other = lab(&["up", "--topology-only", "--workers", "2"]);
    assert!(!other.status.success(), "up with other options succeeded");
    assert!(text(&other).contains("lab down"), "{}", text(&other));

    let env = lab(&["env"]);
    assert!(env.status.success());
    let env = text(&env);
    for line in [
        "export FLB_NS_CLIENT=flb-client",
        "export FLB_NS_W1_K8S=flb-w1-k8s",
        "export FLB_NODES='m-k8s w1-k8s'",
    ] {
        assert!(env.contains(line), "{line:?} not in:\n{env}");
    }

    let exit3 = lab(&["exec", "client", "--", "sh", "-c", "exit 3"]);
    assert_eq!(exit3.status.code(), Some(3), "{}", text(&exit3));
    let addr = lab(&[
        "exec", "w1-k8s", "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert!(text(&addr).contains("192.0.2.101/24"), "{}", text(&addr));
    let unknown = lab(&["exec", "w9-k8s", "--", "true"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("unknown host"),
        "{}",
        text(&unknown)
    );

    let status = lab(&["status"]);
    assert!(status.status.success(), "status: {}", text(&status));
    let fail = lab(&["node-fail", "w1-k8s"]);
    assert!(fail.status.success(), "node-fail: {}", text(&fail));
    let status = lab(&["status"]);
    assert!(
        !status.status.success(),
        "status is happy with a failed node"
    );
    assert!(text(&status).contains("DOWN"), "{}", text(&status));
    let cp = lab(&["node-fail", "m-k8s"]);
    assert!(!cp.status.success(), "the control plane was failed");
    let recover = lab(&["node-recover", "w1-k8s"]);
    assert!(recover.status.success(), "node-recover: {}", text(&recover));
    let status = lab(&["status"]);
    assert!(status.status.success(), "status: {}", text(&status));

    // Without the lock held for it, a command waits for the owner (this
    // test) and then gives up with a message naming it.
    let busy = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("down")
        .output()
        .unwrap();
    assert!(!busy.status.success(), "down ran while the lab was locked");
    assert!(
        text(&busy).contains(&std::process::id().to_string()),
        "{}",
        text(&busy)
    );

    let down = lab(&["down"]);
    assert!(down.status.success(), "down: {}", text(&down));
    let status = lab(&["status"]);
    assert!(status.status.success());
    assert!(
        text(&status).contains("nothing left over"),
        "{}",
        text(&status)
    );
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
}
