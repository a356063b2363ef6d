//! Allocator benchmarks: the interval allocator against MetalLB's linear
//! scan (`LinearAllocator`) on the same scenarios.
//!
//! - `fill_v4_16`: 65,534 allocations filling 198.19.0.1-198.19.255.254
//!   (avoidBuggyIPs off), and 65,024 filling 198.19.0.0/16 with it on.
//! - `fill_v4_20`: 4,094 allocations, both implementations (the linear
//!   fill of a whole /16 takes seconds per run; `alloc_figures` has it).
//! - `one_alloc_nearly_full_v4_16`: one allocation when only the highest
//!   address of the /16 is free.
//! - `one_alloc_v6_64`: one allocation in 2001:db8::/64 with 65,534 held.
//!
//! `cargo run --release -p ferrolb-controller --example alloc_figures`
//! prints the same scenarios as median and spread for reports.

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferrolb_controller::allocator::linear::LinearAllocator;
use ferrolb_controller::allocator::{Allocator, Family, Pool};

#[path = "common/mod.rs"]
mod scenarios;
use scenarios::*;

type Fast = Allocator<String>;
type Linear = LinearAllocator<String>;

fn bench_fill<A: BenchAlloc>(c: &mut Criterion, group: &str, pool: fn() -> Pool, n: usize) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(A::NAME, |b| {
        b.iter_batched(
            || (A::with_pool(pool()), keys(n)),
            |(mut a, keys)| {
                fill(&mut a, Family::V4, keys);
                a
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn fills(c: &mut Criterion) {
    bench_fill::<Fast>(c, "fill_v4_16_65534", v4_16, 65_534);
    bench_fill::<Fast>(c, "fill_v4_16_avoid_buggy_65024", v4_16_avoid_buggy, 65_024);
    bench_fill::<Fast>(c, "fill_v4_20_4094", v4_20, 4_094);
    bench_fill::<Linear>(c, "fill_v4_20_4094", v4_20, 4_094);
}

fn bench_single<A: BenchAlloc>(c: &mut Criterion, group: &str, mut state: A, family: Family) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function(A::NAME, |b| {
        b.iter_custom(|iters| time_single_allocs(&mut state, family, iters))
    });
    g.finish();
}

fn singles(c: &mut Criterion) {
    let group = "one_alloc_nearly_full_v4_16";
    bench_single(c, group, prefilled::<Fast>(v4_16(), 65_533), Family::V4);
    bench_single(c, group, prefilled::<Linear>(v4_16(), 65_533), Family::V4);
    let group = "one_alloc_v6_64_65534_held";
    bench_single(c, group, prefilled::<Fast>(v6_64(), 65_534), Family::V6);
    bench_single(c, group, prefilled::<Linear>(v6_64(), 65_534), Family::V6);
}

criterion_group!(benches, fills, singles);
criterion_main!(benches);
