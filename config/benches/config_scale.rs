//! `Config::build` at scale: 100,000 valid pools, and 100,000 pools sharing one range.
//!
//! Each case runs in a child process of its own, so that the peak memory it prints
//! (`VmHWM`) is that case's alone: the resident size of its sources, and how much the
//! builds added on top. Times are the median and spread of repeated builds.
//!
//! cargo bench -p ferrolb-config --bench config_scale [-- --runs N] [--pools N]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ferrolb_config::crd::{IPAddressPool, IPAddressPoolSpec};
use ferrolb_config::{Config, Sources};

const POOLS: usize = 100_000;
const CASES: [&str; 2] = ["valid", "overlapping"];

/// `n` pools (at most 131,072): one address each in 198.18.0.0/15, or all of
/// 198.51.100.0/24.
fn sources(case: &str, n: usize) -> Sources {
    let mut pools = Vec::with_capacity(n);
    for i in 0..n {
        let address = match case {
            "valid" => format!("198.{}.{}.{}/32", 18 + i / 65536, i / 256 % 256, i % 256),
            _ => "198.51.100.0/24".to_string(),
        };
        let mut p = IPAddressPool::new(
            &format!("pool-{i:06}"),
            IPAddressPoolSpec {
                addresses: vec![address],
                ..Default::default()
            },
        );
        p.metadata.namespace = Some("metallb-system".into());
        pools.push(p);
    }
    Sources {
        pools,
        ..Default::default()
    }
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn fmt(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Builds one case `runs` times and prints one line.
fn run_case(case: &str, n: usize, runs: usize) {
    let src = sources(case, n);
    let resident = status_kib("VmRSS");
    let mut times = Vec::with_capacity(runs);
    let mut errors = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let built = Config::build(&src);
        times.push(t.elapsed());
        errors = match &built {
            Ok(_) => 0,
            Err(e) => e.total(),
        };
        drop(std::hint::black_box(built));
    }
    let peak = status_kib("VmHWM");
    times.sort();
    println!(
        "{case:<12} pools={n} errors={errors:<7} runs={runs:<3} median={} min={} max={}  sources {} resident, peak {} (builds +{})",
        fmt(times[times.len() / 2]),
        fmt(times[0]),
        fmt(times[times.len() - 1]),
        mib(resident),
        mib(peak),
        mib(peak.saturating_sub(resident)),
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: usize| {
        value(name)
            .and_then(|r| r.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let runs = number("--runs", 5);
    let pools = number("--pools", POOLS).min(1 << 17);
    if let Some(case) = value("--case") {
        run_case(&case, pools, runs);
        return ExitCode::SUCCESS;
    }
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this benchmark's executable");
        return ExitCode::FAILURE;
    };
    for case in CASES {
        let status = Command::new(&me)
            .args(["--case", case])
            .args(["--runs", &runs.to_string(), "--pools", &pools.to_string()])
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("case {case} failed: {status:?}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
