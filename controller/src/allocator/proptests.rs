//! Property tests: random operation sequences run on [`Allocator`] and on the
//! linear reference model must give identical results and identical state.
//!
//! The pools are tiny and straddle .0/.255 boundaries so that exhaustion,
//! avoidBuggyIPs, sharing and reconfiguration all happen often.

use std::net::IpAddr;

use proptest::prelude::*;

use super::linear::LinearAllocator;
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn r(a: &str, b: &str) -> IpRange {
    IpRange::new(ip(a), ip(b)).unwrap()
}

const POOL_NAMES: [&str; 3] = ["p0", "p1", "p2"];

/// Alternative configurations that `SetPools` switches between; they keep,
/// move and drop each other's addresses.
fn configs() -> Vec<Vec<Pool>> {
    vec![
        vec![
            Pool::new(
                "p0",
                vec![
                    r("198.18.0.250", "198.18.1.4"),
                    r("2001:db8::fe", "2001:db8::103"),
                ],
                true,
            ),
            Pool::new(
                "p1",
                vec![
                    r("198.18.2.0", "198.18.2.3"),
                    r("198.18.1.10", "198.18.1.12"),
                ],
                false,
            ),
        ],
        vec![
            Pool::new("p0", vec![r("198.18.0.252", "198.18.1.2")], false),
            Pool::new(
                "p1",
                vec![
                    r("198.18.1.3", "198.18.1.12"),
                    r("2001:db8::100", "2001:db8::104"),
                ],
                true,
            ),
        ],
        vec![Pool::new("p2", vec![r("198.18.0.250", "198.18.2.3")], true)],
        vec![
            Pool::new("p1", vec![r("2001:db8::fc", "2001:db8::106")], false),
            Pool::new("p2", vec![r("198.18.2.0", "198.18.2.1")], false),
        ],
    ]
}

/// Every address any configuration mentions, plus a margin outside them.
fn candidates() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0xc612_00f8u32..=0xc612_0205)
        .map(|x| IpAddr::from(x.to_be_bytes()))
        .collect();
    let base: u128 = "2001:db8::".parse::<std::net::Ipv6Addr>().unwrap().into();
    v.extend((0xfau128..=0x108).map(|x| IpAddr::from(std::net::Ipv6Addr::from(base + x))));
    v
}

fn sharings() -> Vec<Sharing> {
    vec![
        Sharing::exclusive(),
        Sharing::shared("a", [(Proto::Tcp, 80)], "x"),
        Sharing::shared("a", [(Proto::Tcp, 443)], "x"),
        Sharing::shared("a", [(Proto::Tcp, 80), (Proto::Udp, 53)], "x"),
        Sharing::shared("a", [(Proto::Udp, 53)], "y"),
        Sharing::shared("b", [(Proto::Tcp, 8080)], "x"),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        pool: usize,
        v6: bool,
        key: u8,
        sharing: usize,
    },
    Assign {
        pool: Option<usize>,
        addr: usize,
        key: u8,
        sharing: usize,
    },
    Release {
        key: u8,
    },
    ReleaseIp {
        key: u8,
        addr: usize,
    },
    SetPools {
        config: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let n_addr = candidates().len();
    let n_share = sharings().len();
    let n_cfg = configs().len();
    prop_oneof![
        6 => (0..POOL_NAMES.len(), any::<bool>(), 0u8..8, 0..n_share).prop_map(
            |(pool, v6, key, sharing)| Op::Allocate { pool, v6, key, sharing }
        ),
        4 => (proptest::option::of(0..POOL_NAMES.len()), 0..n_addr, 0u8..8, 0..n_share).prop_map(
            |(pool, addr, key, sharing)| Op::Assign { pool, addr, key, sharing }
        ),
        3 => (0u8..8).prop_map(|key| Op::Release { key }),
        1 => (0u8..8, 0..n_addr).prop_map(|(key, addr)| Op::ReleaseIp { key, addr }),
        1 => (0..n_cfg).prop_map(|config| Op::SetPools { config }),
    ]
}

fn key(k: u8) -> String {
    format!("ns/s{k}")
}

fn assert_same_state(
    fast: &Allocator<String>,
    slow: &LinearAllocator<String>,
    addrs: &[IpAddr],
) -> Result<(), TestCaseError> {
    for k in 0..8 {
        prop_assert_eq!(fast.addresses_of(&key(k)), slow.addresses_of(&key(k)));
    }
    for &a in addrs {
        prop_assert_eq!(fast.pool_of(a), slow.pool_of(a), "pool_of {}", a);
        let h1: Vec<_> = fast.holders(a).collect();
        let h2: Vec<_> = slow.holders(a).collect();
        prop_assert_eq!(h1, h2, "holders of {}", a);
    }
    for name in POOL_NAMES {
        for family in [Family::V4, Family::V6] {
            prop_assert_eq!(
                fast.pool_stats(name, family),
                slow.pool_stats(name, family),
                "stats {} {}",
                name,
                family
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn matches_linear_reference(start in 0..4usize, ops in proptest::collection::vec(op(), 1..80)) {
        let cfgs = configs();
        let addrs = candidates();
        let shares = sharings();
        let mut fast: Allocator<String> = Allocator::new(cfgs[start].clone()).unwrap();
        let mut slow: LinearAllocator<String> = LinearAllocator::new(cfgs[start].clone()).unwrap();
        for op in ops {
            match op {
                Op::Allocate { pool, v6, key: k, sharing } => {
                    let family = if v6 { Family::V6 } else { Family::V4 };
                    let s = shares[sharing].clone();
                    let a = fast.allocate_next(POOL_NAMES[pool], family, key(k), s.clone());
                    let b = slow.allocate_next(POOL_NAMES[pool], family, key(k), s);
                    prop_assert_eq!(a, b);
                }
                Op::Assign { pool, addr, key: k, sharing } => {
                    let p = pool.map(|i| POOL_NAMES[i]);
                    let s = shares[sharing].clone();
                    let a = fast.assign(p, addrs[addr], key(k), s.clone());
                    let b = slow.assign(p, addrs[addr], key(k), s);
                    prop_assert_eq!(a, b);
                }
                Op::Release { key: k } => {
                    prop_assert_eq!(fast.release(&key(k)), slow.release(&key(k)));
                }
                Op::ReleaseIp { key: k, addr } => {
                    prop_assert_eq!(
                        fast.release_ip(&key(k), addrs[addr]),
                        slow.release_ip(&key(k), addrs[addr])
                    );
                }
                Op::SetPools { config } => {
                    let a = fast.set_pools(cfgs[config].clone()).unwrap();
                    let b = slow.set_pools(cfgs[config].clone()).unwrap();
                    prop_assert_eq!(a, b);
                }
            }
            assert_same_state(&fast, &slow, &addrs)?;
        }
    }
}
