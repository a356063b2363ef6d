//! Rule-by-rule tests of the allocator.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(a: &str, b: &str) -> IpRange {
    IpRange::new(ip(a), ip(b)).unwrap()
}

fn cidr(s: &str) -> IpRange {
    s.parse().unwrap()
}

fn alloc(pools: Vec<Pool>) -> Allocator<String> {
    Allocator::new(pools).unwrap()
}

fn k(s: &str) -> String {
    s.to_string()
}

fn tcp(ports: &[u16]) -> Vec<(Proto, u16)> {
    ports.iter().map(|&p| (Proto::Tcp, p)).collect()
}

#[test]
fn allocates_lowest_first_across_ranges() {
    // Ranges listed out of order: the lowest address still comes first.
    let mut a = alloc(vec![Pool::new(
        "p",
        vec![
            range("198.18.1.0", "198.18.1.1"),
            range("198.18.0.5", "198.18.0.6"),
        ],
        false,
    )]);
    let got: Vec<IpAddr> = (0..4)
        .map(|i| a.allocate_next("p", Family::V4, format!("s{i}"), Sharing::exclusive()))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        ["198.18.0.5", "198.18.0.6", "198.18.1.0", "198.18.1.1"]
            .map(ip)
            .to_vec()
    );
}

#[test]
fn released_hole_is_reused_first() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/29")], false)]);
    for i in 0..4 {
        a.allocate_next("p", Family::V4, format!("s{i}"), Sharing::exclusive())
            .unwrap();
    }
    assert_eq!(a.release(&k("s1")), vec![ip("198.18.0.1")]);
    assert_eq!(
        a.allocate_next("p", Family::V4, k("new"), Sharing::exclusive()),
        Ok(ip("198.18.0.1"))
    );
}

#[test]
fn exhausted_pool_is_an_error() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/31")], false)]);
    a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive())
        .unwrap();
    a.allocate_next("p", Family::V4, k("b"), Sharing::exclusive())
        .unwrap();
    let err = a
        .allocate_next("p", Family::V4, k("c"), Sharing::exclusive())
        .unwrap_err();
    assert_eq!(
        err,
        AllocError::Exhausted {
            pool: k("p"),
            family: Family::V4
        }
    );
    assert!(a.addresses_of(&k("c")).is_empty());
}

#[test]
fn unknown_pool_and_missing_family() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/30")], false)]);
    assert_eq!(
        a.allocate_next("q", Family::V4, k("a"), Sharing::exclusive()),
        Err(AllocError::UnknownPool(k("q")))
    );
    assert_eq!(
        a.allocate_next("p", Family::V6, k("a"), Sharing::exclusive()),
        Err(AllocError::NoFamily {
            pool: k("p"),
            family: Family::V6
        })
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut a = alloc(vec![Pool::new(
        "p",
        vec![range("198.18.0.254", "198.18.1.1")],
        true,
    )]);
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().total, 2);
    let first = a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive());
    let second = a.allocate_next("p", Family::V4, k("b"), Sharing::exclusive());
    assert_eq!(
        (first, second),
        (Ok(ip("198.18.0.254")), Ok(ip("198.18.1.1")))
    );
    assert!(matches!(
        a.allocate_next("p", Family::V4, k("c"), Sharing::exclusive()),
        Err(AllocError::Exhausted { .. })
    ));
    // Requesting one is refused with the reason, though it is in the pool.
    assert_eq!(a.pool_of(ip("198.18.0.255")), Some("p"));
    let err = a
        .assign(None, ip("198.18.1.0"), k("c"), Sharing::exclusive())
        .unwrap_err();
    assert_eq!(
        err,
        AllocError::Buggy {
            ip: ip("198.18.1.0"),
            pool: k("p")
        }
    );
}

#[test]
fn avoid_buggy_ips_is_ipv4_only_and_off_by_default_hands_out_all() {
    let mut a = alloc(vec![
        Pool::new("v6", vec![range("2001:db8::ff", "2001:db8::100")], true),
        Pool::new("v4", vec![cidr("198.18.0.0/31")], false),
    ]);
    assert_eq!(a.pool_stats("v6", Family::V6).unwrap().total, 2);
    assert_eq!(
        a.allocate_next("v6", Family::V6, k("a"), Sharing::exclusive()),
        Ok(ip("2001:db8::ff"))
    );
    assert_eq!(
        a.allocate_next("v4", Family::V4, k("a"), Sharing::exclusive()),
        Ok(ip("198.18.0.0"))
    );
}

#[test]
fn avoid_buggy_totals_are_per_slash_24() {
    let a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/16")], true)]);
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().total, 256 * 254);
    let b = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/16")], false)]);
    assert_eq!(b.pool_stats("p", Family::V4).unwrap().total, 65_536);
}

#[test]
fn requested_ip_outside_pools_or_wrong_pool() {
    let mut a = alloc(vec![
        Pool::new("p", vec![cidr("198.18.0.0/30")], false),
        Pool::new("q", vec![cidr("198.18.1.0/30")], false),
    ]);
    let err = a
        .assign(None, ip("198.18.2.1"), k("a"), Sharing::exclusive())
        .unwrap_err();
    assert_eq!(err.to_string(), "address 198.18.2.1 is not in any pool");
    assert_eq!(
        a.assign(Some("p"), ip("198.18.1.1"), k("a"), Sharing::exclusive()),
        Err(AllocError::WrongPool {
            ip: ip("198.18.1.1"),
            requested: k("p"),
            actual: k("q")
        })
    );
    // IPv4 and IPv6 never alias: ::a00:1 is not 198.18.0.1.
    assert_eq!(a.pool_of(ip("::a00:1")), None);
    assert_eq!(a.pool_of(ip("198.18.0.1")), Some("p"));
    a.assign(Some("q"), ip("198.18.1.1"), k("a"), Sharing::exclusive())
        .unwrap();
    assert_eq!(a.holders(ip("198.18.1.1")).count(), 1);
}

#[test]
fn requested_ip_in_use_by_exclusive_holder() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.51.100.0/24")], false)]);
    a.assign(None, ip("198.51.100.5"), k("ns/svc"), Sharing::exclusive())
        .unwrap();
    let err = a
        .assign(
            None,
            ip("198.51.100.5"),
            k("ns/other"),
            Sharing::shared("x", tcp(&[80]), ""),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 198.51.100.5 is in use by ns/svc and they do not share (it does not allow sharing)"
    );
}

#[test]
fn sharing_with_same_key_disjoint_ports_succeeds_and_allocates_the_shared_ip() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/24")], false)]);
    a.allocate_next("p", Family::V4, k("first"), Sharing::exclusive())
        .unwrap();
    let web = a
        .allocate_next(
            "p",
            Family::V4,
            k("web"),
            Sharing::shared("k", tcp(&[80]), "c"),
        )
        .unwrap();
    assert_eq!(web, ip("198.18.0.1"));
    // Free the lower address: allocation takes the lowest free-or-shareable
    // address, which is now the free .0, not the shareable .1.
    a.release(&k("first"));
    let dns = a
        .allocate_next(
            "p",
            Family::V4,
            k("dns"),
            Sharing::shared("k", [(Proto::Udp, 53)], "c"),
        )
        .unwrap();
    assert_eq!(dns, ip("198.18.0.0"));
    a.release(&k("dns"));
    a.assign(None, ip("198.18.0.0"), k("first"), Sharing::exclusive())
        .unwrap();
    let dns = a
        .allocate_next(
            "p",
            Family::V4,
            k("dns"),
            Sharing::shared("k", [(Proto::Udp, 53), (Proto::Tcp, 53)], "c"),
        )
        .unwrap();
    assert_eq!(dns, ip("198.18.0.1"));
    assert_eq!(a.holders(web).count(), 2);
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().in_use, 2);
}

#[test]
fn sharing_port_clash_names_the_port() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.51.100.0/24")], false)]);
    a.assign(
        None,
        ip("198.51.100.5"),
        k("ns/svc"),
        Sharing::shared("k", tcp(&[80, 443]), "c"),
    )
    .unwrap();
    let err = a
        .assign(
            None,
            ip("198.51.100.5"),
            k("ns/b"),
            Sharing::shared("k", tcp(&[443, 8443]), "c"),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 198.51.100.5 is in use by ns/svc and they do not share (both use TCP/443)"
    );
    // Same port number over another protocol does not clash.
    a.assign(
        None,
        ip("198.51.100.5"),
        k("ns/b"),
        Sharing::shared("k", [(Proto::Udp, 443)], "c"),
    )
    .unwrap();
}

#[test]
fn sharing_refused_for_different_key_compat_or_exclusive_request() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.51.100.0/24")], false)]);
    let addr = ip("198.51.100.5");
    a.assign(
        None,
        addr,
        k("ns/svc"),
        Sharing::shared("k", tcp(&[80]), "c"),
    )
    .unwrap();
    let reason = |a: &mut Allocator<String>, s: Sharing| match a.assign(None, addr, k("ns/b"), s) {
        Err(AllocError::InUse { reason, holder, .. }) => {
            assert_eq!(holder, "ns/svc");
            reason
        }
        other => panic!("expected InUse, got {other:?}"),
    };
    let r = reason(&mut a, Sharing::shared("other", tcp(&[81]), "c"));
    assert!(matches!(r, ShareConflict::DifferentKey { .. }));
    assert!(r.to_string().starts_with("different sharing key"));
    let r = reason(&mut a, Sharing::shared("k", tcp(&[81]), "d"));
    assert_eq!(r, ShareConflict::DifferentCompat);
    let r = reason(&mut a, Sharing::exclusive());
    assert_eq!(r, ShareConflict::RequestExclusive);
    // allocate_next with an incompatible sharing skips the shared address.
    let next = a
        .allocate_next(
            "p",
            Family::V4,
            k("ns/c"),
            Sharing::shared("k", tcp(&[81]), "d"),
        )
        .unwrap();
    assert_eq!(next, ip("198.51.100.0"));
}

#[test]
fn shared_address_is_freed_by_last_holder_only() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/31")], false)]);
    let s1 = Sharing::shared("k", tcp(&[80]), "");
    let s2 = Sharing::shared("k", tcp(&[81]), "");
    a.assign(None, ip("198.18.0.0"), k("a"), s1).unwrap();
    a.assign(None, ip("198.18.0.0"), k("b"), s2).unwrap();
    a.release(&k("a"));
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().in_use, 1);
    assert_eq!(
        a.allocate_next("p", Family::V4, k("c"), Sharing::exclusive()),
        Ok(ip("198.18.0.1"))
    );
    a.release(&k("b"));
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().in_use, 1);
    assert_eq!(
        a.allocate_next("p", Family::V4, k("d"), Sharing::exclusive()),
        Ok(ip("198.18.0.0"))
    );
}

#[test]
fn allocate_next_is_idempotent_per_key_pool_family() {
    let mut a = alloc(vec![Pool::new(
        "p",
        vec![cidr("198.18.0.0/30"), cidr("2001:db8::/126")],
        false,
    )]);
    let v4 = a
        .allocate_next("p", Family::V4, k("a"), Sharing::exclusive())
        .unwrap();
    let v6 = a
        .allocate_next("p", Family::V6, k("a"), Sharing::exclusive())
        .unwrap();
    assert_eq!(
        a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive()),
        Ok(v4)
    );
    assert_eq!(a.addresses_of(&k("a")), vec![v4, v6]);
    assert!(a.release_ip(&k("a"), v4));
    assert!(!a.release_ip(&k("a"), v4));
    assert_eq!(a.addresses_of(&k("a")), vec![v6]);
    assert_eq!(a.release(&k("a")), vec![v6]);
    assert_eq!(a.family_stats(Family::V6).in_use, 0);
}

#[test]
fn release_of_unknown_key_is_a_no_op() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/30")], false)]);
    a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive())
        .unwrap();
    assert!(a.release(&k("zzz")).is_empty());
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().in_use, 1);
}

#[test]
fn set_pools_keeps_addresses_still_in_a_pool_and_evicts_the_rest() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/24")], false)]);
    for (key, addr) in [
        ("keep", "198.18.0.7"),
        ("move", "198.18.0.200"),
        ("gone", "198.18.0.100"),
    ] {
        a.assign(None, ip(addr), k(key), Sharing::exclusive())
            .unwrap();
    }
    a.assign(None, ip("198.18.0.255"), k("buggy"), Sharing::exclusive())
        .unwrap();
    let evicted = a
        .set_pools(vec![
            Pool::new("p", vec![cidr("198.18.0.0/26")], false),
            // .255 is still inside a range but avoidBuggyIPs now forbids it.
            Pool::new("q", vec![cidr("198.18.0.192/26")], true),
        ])
        .unwrap();
    assert_eq!(
        evicted.into_iter().collect::<Vec<_>>(),
        vec![
            (k("buggy"), vec![ip("198.18.0.255")]),
            (k("gone"), vec![ip("198.18.0.100")]),
        ]
    );
    assert_eq!(a.addresses_of(&k("keep")), vec![ip("198.18.0.7")]);
    assert_eq!(a.addresses_of(&k("move")), vec![ip("198.18.0.200")]);
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().in_use, 1);
    assert_eq!(a.pool_stats("q", Family::V4).unwrap().in_use, 1);
    // The moved address is not handed out again by its new pool.
    // q holds .192-.254 (63 usable), one of them already held.
    for i in 0..62 {
        let got = a
            .allocate_next("q", Family::V4, format!("n{i}"), Sharing::exclusive())
            .unwrap();
        assert_ne!(got, ip("198.18.0.200"));
    }
    assert!(matches!(
        a.allocate_next("q", Family::V4, k("full"), Sharing::exclusive()),
        Err(AllocError::Exhausted { .. })
    ));
}

#[test]
fn set_pools_evicts_only_the_lost_family_of_a_dual_stack_key() {
    let mut a = alloc(vec![Pool::new(
        "p",
        vec![cidr("198.18.0.0/30"), cidr("2001:db8::/126")],
        false,
    )]);
    a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive())
        .unwrap();
    a.allocate_next("p", Family::V6, k("a"), Sharing::exclusive())
        .unwrap();
    let evicted = a
        .set_pools(vec![Pool::new("p", vec![cidr("198.18.0.0/30")], false)])
        .unwrap();
    assert_eq!(evicted.get(&k("a")), Some(&vec![ip("2001:db8::")]));
    assert_eq!(a.addresses_of(&k("a")), vec![ip("198.18.0.0")]);
}

#[test]
fn set_pools_rejects_overlap_and_leaves_state_alone() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("198.18.0.0/30")], false)]);
    a.allocate_next("p", Family::V4, k("a"), Sharing::exclusive())
        .unwrap();
    let err = a
        .set_pools(vec![
            Pool::new("p", vec![cidr("198.18.0.0/24")], false),
            Pool::new("q", vec![range("198.18.0.255", "198.18.1.3")], false),
        ])
        .unwrap_err();
    assert!(matches!(err, PoolSetError::Overlap { .. }), "{err}");
    let err = a
        .set_pools(vec![
            Pool::new("p", vec![], false),
            Pool::new("p", vec![], false),
        ])
        .unwrap_err();
    assert_eq!(err, PoolSetError::DuplicatePool(k("p")));
    assert_eq!(a.addresses_of(&k("a")), vec![ip("198.18.0.0")]);
    assert_eq!(a.pool_stats("p", Family::V4).unwrap().total, 4);
}

#[test]
fn cidr_with_host_bits_is_its_whole_network() {
    assert_eq!(cidr("198.19.2.3/16"), range("198.19.0.0", "198.19.255.255"));
}

#[test]
fn exact_totals_for_v6_64_and_48() {
    let a = alloc(vec![
        Pool::new("a", vec![cidr("2001:db8:0:1::/64")], true),
        Pool::new("b", vec![cidr("2001:db9::/48")], false),
    ]);
    assert_eq!(a.pool_stats("a", Family::V6).unwrap().total, 1u128 << 64);
    assert_eq!(a.pool_stats("b", Family::V6).unwrap().total, 1u128 << 80);
    assert_eq!(
        a.family_stats(Family::V6).total,
        (1u128 << 64) + (1u128 << 80)
    );
    assert_eq!(a.family_stats(Family::V4).total, 0);
}

#[test]
fn whole_ipv6_space_saturates_total() {
    let mut a = alloc(vec![Pool::new("all", vec![cidr("::/0")], false)]);
    assert_eq!(a.pool_stats("all", Family::V6).unwrap().total, u128::MAX);
    assert_eq!(
        a.assign(
            None,
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            k("top"),
            Sharing::exclusive()
        ),
        Ok(())
    );
    assert_eq!(
        a.allocate_next("all", Family::V6, k("low"), Sharing::exclusive()),
        Ok(ip("::"))
    );
}

#[test]
fn memory_tracks_held_addresses_not_pool_size() {
    let mut a = alloc(vec![Pool::new("p", vec![cidr("2001:db8::/48")], false)]);
    assert_eq!(a.free_interval_count(), 1);
    for i in 0..1000u32 {
        // Every other address, so each allocation splits an interval.
        let addr = IpAddr::from(std::net::Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | (u128::from(i) * 2),
        ));
        a.assign(None, addr, format!("s{i}"), Sharing::exclusive())
            .unwrap();
    }
    assert_eq!(a.free_interval_count(), 1000);
    for i in 0..1000u32 {
        a.release(&format!("s{i}"));
    }
    assert_eq!(a.free_interval_count(), 1);
    assert_eq!(a.family_stats(Family::V6).in_use, 0);
}

#[test]
fn stats_display() {
    let s = Stats {
        total: 10,
        in_use: 3,
    };
    assert_eq!(s.to_string(), "3 of 10 in use");
    assert_eq!(s.free(), 7);
}
