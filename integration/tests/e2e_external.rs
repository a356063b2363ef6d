//! The shared e2e scenarios (`ferrolb_integration::e2e::scenarios`) against a
//! cluster.
//!
//! - With `FERROLB_E2E_KUBECONFIG` set: the cluster it names, through the
//!   generic provider (`FERROLB_E2E_*`, see `ferrolb_integration::e2e::env`);
//!   this is what CI runs on kind (`integration/kind/run.sh suite`).
//! - Without: a lab brought up here (needs root, the Go harness and built
//!   `ferrolb-controller` and `ferrolb-speaker`, as `make e2e` provides), so
//!   that `make test` runs the same scenario code.
//!
//! `FERROLB_E2E_SCENARIOS=l2,release` runs a subset. Every scenario runs even
//! when an earlier one failed; the test fails if any did. Run with
//! `--nocapture` to see each step.

use ferrolb_integration::e2e::lab_provider::LabProvider;
use ferrolb_integration::e2e::scenarios::{self, Outcome};
use ferrolb_integration::e2e::{Cluster, env};

async fn run_all(cluster: &Cluster) -> Vec<(&'static str, Result<Outcome, String>)> {
    let get = |k: &str| std::env::var(k).ok();
    let names = env::selected(&get, &scenarios::ALL).expect("FERROLB_E2E_SCENARIOS");
    assert!(!names.is_empty(), "no scenario selected");
    eprintln!(
        "e2e: {} scenario(s) on {}: {names:?}",
        names.len(),
        cluster.name
    );
    let mut results = Vec::new();
    for name in names {
        eprintln!("e2e: scenario {name}: start");
        let r = scenarios::run(cluster, name)
            .await
            .map_err(|e| format!("{e:#}"));
        eprintln!("e2e: scenario {name}: {r:?}");
        results.push((name, r));
    }
    results
}

fn verdict(results: &[(&'static str, Result<Outcome, String>)]) {
    let mut failed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(Outcome::Passed) => eprintln!("PASS {name}"),
            Ok(Outcome::Skipped(why)) => eprintln!("SKIP {name}: {why}"),
            Err(e) => {
                eprintln!("FAIL {name}: {e}");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_scenarios() {
    if let Some(cluster) = env::from_env().await.expect("FERROLB_E2E_* settings") {
        let results = run_all(&cluster).await;
        verdict(&results);
        return;
    }
    eprintln!(
        "e2e: {} is not set: running the scenarios on the lab",
        env::KUBECONFIG
    );
    let provider = LabProvider::up().await.expect("lab provider");
    let mut results = run_all(provider.cluster()).await;
    // Once more through the generic client host, as kind drives it (a
    // command prefix), so that its command lines run here too.
    let generic = provider.generic_host_cluster();
    eprintln!("e2e: scenario l2 on {}: start", generic.name);
    let r = scenarios::run(&generic, "l2")
        .await
        .map_err(|e| format!("{e:#}"));
    eprintln!("e2e: scenario l2 (generic client host): {r:?}");
    results.push(("l2 (generic client host)", r));
    let lab_provider_checks = results
        .iter()
        .all(|(_, r)| !matches!(r, Ok(Outcome::Skipped(_))));
    if results.iter().any(|(_, r)| r.is_err()) {
        provider.print_ferrolb_warnings(20);
    }
    provider.down().expect("lab down");
    // The lab allows every scenario: none may be skipped there.
    assert!(lab_provider_checks, "a scenario was skipped on the lab");
    verdict(&results);
}
