//! Benchmark scenarios shared by `benches/allocator.rs` (criterion) and
//! `examples/alloc_figures.rs` (plain median/spread report), so both measure
//! the same thing on the interval allocator and on the linear baseline.

#![allow(dead_code)] // each includer uses a different subset

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_controller::allocator::linear::LinearAllocator;
use ferrolb_controller::allocator::{AllocError, Allocator, Family, IpRange, Pool, Sharing};

pub const POOL: &str = "bench";

/// 198.19.0.1-198.19.255.254, avoidBuggyIPs off: the /16 without its network
/// and broadcast addresses, 65,534 addresses.
pub fn v4_16() -> Pool {
    let start = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let end = IpAddr::V4(Ipv4Addr::new(10, 1, 255, 254));
    Pool::new(POOL, vec![IpRange::new(start, end).unwrap()], false)
}

/// 198.19.0.0/16 with avoidBuggyIPs on: 256 * 254 = 65,024 addresses.
pub fn v4_16_avoid_buggy() -> Pool {
    Pool::new(POOL, vec!["10.1.0.0/16".parse().unwrap()], true)
}

/// 198.19.0.1-198.19.15.254: a /20 minus network and broadcast, 4,094
/// addresses; small enough for the quadratic linear fill.
pub fn v4_20() -> Pool {
    let start = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let end = IpAddr::V4(Ipv4Addr::new(10, 1, 15, 254));
    Pool::new(POOL, vec![IpRange::new(start, end).unwrap()], false)
}

/// 2001:db8::/64.
pub fn v6_64() -> Pool {
    Pool::new(POOL, vec!["2001:db8::/64".parse().unwrap()], false)
}

pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench/svc-{i:06}")).collect()
}

/// The operations the scenarios need, over both implementations.
pub trait BenchAlloc: Sized {
    const NAME: &'static str;
    fn with_pool(pool: Pool) -> Self;
    fn next(&mut self, family: Family, key: String) -> Result<IpAddr, AllocError>;
    fn take(&mut self, ip: IpAddr, key: String);
    // &String, not &str: both allocators are keyed by String and take &K.
    #[allow(clippy::ptr_arg)]
    fn free(&mut self, key: &String);
}

impl BenchAlloc for Allocator<String> {
    const NAME: &'static str = "interval";
    fn with_pool(pool: Pool) -> Self {
        Allocator::new(vec![pool]).unwrap()
    }
    fn next(&mut self, family: Family, key: String) -> Result<IpAddr, AllocError> {
        self.allocate_next(POOL, family, key, Sharing::exclusive())
    }
    fn take(&mut self, ip: IpAddr, key: String) {
        self.assign(None, ip, key, Sharing::exclusive()).unwrap();
    }
    fn free(&mut self, key: &String) {
        self.release(key);
    }
}

impl BenchAlloc for LinearAllocator<String> {
    const NAME: &'static str = "linear";
    fn with_pool(pool: Pool) -> Self {
        LinearAllocator::new(vec![pool]).unwrap()
    }
    fn next(&mut self, family: Family, key: String) -> Result<IpAddr, AllocError> {
        self.allocate_next(POOL, family, key, Sharing::exclusive())
    }
    fn take(&mut self, ip: IpAddr, key: String) {
        self.assign(None, ip, key, Sharing::exclusive()).unwrap();
    }
    fn free(&mut self, key: &String) {
        self.release(key);
    }
}

/// Allocates one address per key, in order; panics unless every allocation
/// succeeds, so a benchmark can never time a run of errors.
pub fn fill<A: BenchAlloc>(alloc: &mut A, family: Family, keys: Vec<String>) {
    for key in keys {
        alloc.next(family, key).expect("pool is large enough");
    }
}

/// A pool with its lowest `held` addresses taken. Uses `assign`, not
/// allocation, so that building the linear baseline's state is not itself
/// quadratic; only pools without avoidBuggyIPs, as it counts addresses.
pub fn prefilled<A: BenchAlloc>(pool: Pool, held: usize) -> A {
    let start = pool.ranges[0].start();
    let mut a = A::with_pool(pool);
    for (i, key) in keys(held).into_iter().enumerate() {
        let ip = match start {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) + i as u32)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) + i as u128)),
        };
        a.take(ip, key);
    }
    a
}

/// Times `iters` single allocations on `alloc`, releasing each one outside
/// the timed section so the state is the same for every allocation.
pub fn time_single_allocs<A: BenchAlloc>(alloc: &mut A, family: Family, iters: u64) -> Duration {
    let key = "bench/probe".to_string();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let k = key.clone();
        let t = Instant::now();
        let got = alloc.next(family, k);
        total += t.elapsed();
        std::hint::black_box(got.expect("one address is free"));
        alloc.free(&key);
    }
    total
}
