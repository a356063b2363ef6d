//! Prints allocator timings as median and spread (min/max and IQR) over
//! repeated runs, for the interval allocator and the linear baseline.
//!
//! cargo run --release -p ferrolb-controller --example alloc_figures -- \
//!     [--runs N] [--linear-fill-16]
//!
//! `--linear-fill-16` adds the linear baseline filling the whole /16: it is
//! quadratic (about 2 * 10^9 address probes, minutes), so it runs once.

use std::time::{Duration, Instant};

use ferrolb_controller::allocator::linear::LinearAllocator;
use ferrolb_controller::allocator::{Allocator, Family, Pool};

#[path = "../benches/common/mod.rs"]
mod scenarios;
use scenarios::*;

type Fast = Allocator<String>;
type Linear = LinearAllocator<String>;

/// Median, quartiles and extremes of `samples` (sorted in place).
struct Summary {
    median: Duration,
    p25: Duration,
    p75: Duration,
    min: Duration,
    max: Duration,
    runs: usize,
}

fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort();
    // Nearest-rank quantile; with 21 runs the quartiles are samples 5 and 15.
    let q = |f: f64| samples[((samples.len() - 1) as f64 * f).round() as usize];
    Summary {
        median: q(0.5),
        p25: q(0.25),
        p75: q(0.75),
        min: samples[0],
        max: samples[samples.len() - 1],
        runs: samples.len(),
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 1_000_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else if ns >= 1_000 {
        format!("{:.2} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{ns} ns")
    }
}

fn report(scenario: &str, imp: &str, s: &Summary) {
    println!(
        "{scenario:<44} {imp:<9} runs={:<3} median={:>10}  IQR={:>10} ..{:>10}  min={:>10} max={:>10}",
        s.runs,
        fmt(s.median),
        fmt(s.p25),
        fmt(s.p75),
        fmt(s.min),
        fmt(s.max)
    );
}

fn fill_runs<A: BenchAlloc>(pool: fn() -> Pool, n: usize, runs: usize) -> Summary {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut a = A::with_pool(pool());
            let keys = keys(n);
            let t = Instant::now();
            fill(&mut a, Family::V4, keys);
            let d = t.elapsed();
            std::hint::black_box(a);
            d
        })
        .collect();
    summarize(&mut samples)
}

/// Per-allocation time: each run is the mean over `batch` allocations.
fn single_runs<A: BenchAlloc>(state: &mut A, family: Family, batch: u64, runs: usize) -> Summary {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| time_single_allocs(state, family, batch) / batch as u32)
        .collect();
    summarize(&mut samples)
}

fn ratio(scenario: &str, fast: &Summary, slow: &Summary) {
    let r = slow.median.as_secs_f64() / fast.median.as_secs_f64();
    println!("{scenario:<44} linear/interval median ratio = {r:.0}x");
}

fn main() {
    let mut runs = 21usize;
    let mut linear_fill_16 = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs needs a positive number");
            }
            "--linear-fill-16" => linear_fill_16 = true,
            other => panic!("unknown argument {other:?}"),
        }
    }

    let s = "fill 198.19.0.1-198.19.255.254 (65,534 allocs)";
    let fast = fill_runs::<Fast>(v4_16, 65_534, runs);
    report(s, Fast::NAME, &fast);
    if linear_fill_16 {
        let slow = fill_runs::<Linear>(v4_16, 65_534, 1);
        report(s, Linear::NAME, &slow);
        ratio(s, &fast, &slow);
    }

    let s = "fill 198.19.0.0/16 avoidBuggyIPs (65,024 allocs)";
    report(
        s,
        Fast::NAME,
        &fill_runs::<Fast>(v4_16_avoid_buggy, 65_024, runs),
    );

    let s = "fill 198.19.0.1-198.19.15.254 (4,094 allocs)";
    let fast = fill_runs::<Fast>(v4_20, 4_094, runs);
    let slow = fill_runs::<Linear>(v4_20, 4_094, runs);
    report(s, Fast::NAME, &fast);
    report(s, Linear::NAME, &slow);
    ratio(s, &fast, &slow);

    let s = "one alloc, /16 with 65,533 of 65,534 held";
    let fast = single_runs(
        &mut prefilled::<Fast>(v4_16(), 65_533),
        Family::V4,
        1000,
        runs,
    );
    let slow = single_runs(
        &mut prefilled::<Linear>(v4_16(), 65_533),
        Family::V4,
        20,
        runs,
    );
    report(s, Fast::NAME, &fast);
    report(s, Linear::NAME, &slow);
    ratio(s, &fast, &slow);

    let s = "one alloc, 2001:db8::/64 with 65,534 held";
    let fast = single_runs(
        &mut prefilled::<Fast>(v6_64(), 65_534),
        Family::V6,
        1000,
        runs,
    );
    let slow = single_runs(
        &mut prefilled::<Linear>(v6_64(), 65_534),
        Family::V6,
        20,
        runs,
    );
    report(s, Fast::NAME, &fast);
    report(s, Linear::NAME, &slow);
    ratio(s, &fast, &slow);
}
