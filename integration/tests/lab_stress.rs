//! The lab's daemon supervision under load: with every CPU kept busy, a
//! daemon on its way through `setsid` and `ip netns exec` is never taken for
//! dead, and lab bring-ups in a row never report a daemon that died.
//!
//! Before daemons were identified by their start time, the lab read their
//! command line, which a read straddling an exec returns spliced from two
//! programs: `lab up` then reported a running daemon as dead.
//!
//! `FERROLB_STRESS_SPAWNS` (default 300) and `FERROLB_STRESS_BRINGUPS`
//! (default 2) set the sizes; `make stress` runs more. Needs root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_integration::lab::process::{self, DaemonSpec};
use ferrolb_integration::lab::{Lab, LabOptions, LabPaths};
use ferrolb_integration::testkit::env_usize;

/// Keeps every CPU busy until dropped.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start() -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A network namespace of this test's own, removed on drop.
struct Netns(&'static str);

impl Netns {
    fn add(name: &'static str) -> Netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("run ip");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", self.0])
            .status();
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the lab stress tests need root (network namespaces): run them as root, e.g. `sudo make test`"
    );
}

/// A copy of `sleep` whose path puts its file name across byte 32 of its
/// command line: where a command line read in two parts (32 bytes first, as
/// std's `fs::read` does for `/proc` files) was cut.
fn daemon_program(dir: &Path) -> PathBuf {
    let base = "flb-stress-daemon";
    let pad = 32usize.saturating_sub(dir.as_os_str().len() + 1 + base.len() / 2);
    let sub = dir.join("d".repeat(pad.max(1)));
    std::fs::create_dir_all(&sub).unwrap();
    let program = sub.join(base);
    std::fs::copy("/bin/sleep", &program).expect("copy /bin/sleep");
    program
}

#[test]
fn a_daemon_on_its_way_through_the_wrappers_is_never_taken_for_dead() {
    require_root();
    let spawns = env_usize("FERROLB_STRESS_SPAWNS", 300);
    let dir = tempfile::tempdir().unwrap();
    let paths = LabPaths::new(dir.path().to_path_buf(), dir.path().join("state"));
    let program = daemon_program(dir.path());
    let netns = Netns::add("flb-stress");
    let hogs = CpuHogs::start();
    let (mut polls, mut false_deaths) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..spawns {
        let spec = DaemonSpec {
            name: format!("stress-{}", i % 4),
            netns: Some(netns.0.to_owned()),
            // Both wrappers the lab uses: `ip netns exec` and `nsenter --net`.
            net_only: i % 2 == 1,
            program: program.clone(),
            args: vec!["600".into()],
            env: Vec::new(),
        };
        process::spawn(&paths, &spec).expect("spawn");
        let pf = process::read_pid_file(&paths, &spec.name)
            .unwrap()
            .expect("pid file");
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_millis(50) {
            polls += 1;
            if !pf.is_running() {
                false_deaths += 1;
            }
        }
        process::stop(&paths, &spec.name, Duration::from_secs(5)).expect("stop");
    }
    drop(hogs);
    drop(netns);
    println!(
        "{spawns} daemons spawned through setsid + ip netns exec / nsenter with every CPU busy, \
         {polls} liveness checks in their first 50 ms: {false_deaths} false deaths ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(false_deaths, 0, "running daemons were taken for dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_bring_ups_under_load_report_no_dead_daemon() {
    require_root();
    let rounds = env_usize("FERROLB_STRESS_BRINGUPS", 2);
    let hogs = CpuHogs::start();
    let mut times = Vec::new();
    for round in 1..=rounds {
        let start = Instant::now();
        let lab = Lab::up(LabOptions {
            workers: 1,
            require_ferrolb: true,
            ..LabOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("bring-up {round} of {rounds} with every CPU busy: {e}"));
        times.push(start.elapsed().as_secs_f64());
        lab.down().expect("down");
    }
    drop(hogs);
    times.sort_by(f64::total_cmp);
    println!(
        "{rounds} lab bring-ups (2 nodes, ferrolb ready) with every CPU busy, 0 failed; \
         time to ready: median {:.1}s, {:.1}-{:.1}s",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
