use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::sim::{NetConfig, SIM_KEY, Sim, node_name};
use super::wire::{Body, Message, Update};
use super::*;
use crate::election;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn key() -> Key {
    Key::new(SIM_KEY).unwrap()
}

fn lossy(loss: f64) -> NetConfig {
    NetConfig {
        loss,
        ..NetConfig::default()
    }
}

fn all_names(n: usize) -> BTreeSet<String> {
    (0..n).map(node_name).collect()
}

/// Two bare state machines "a" and "b" for message-level tests.
fn pair(now: Instant) -> (Membership, Membership) {
    let mut a = Membership::new(Config::default(), "a", key(), 1, 1, now).unwrap();
    let mut b = Membership::new(Config::default(), "b", key(), 1, 2, now).unwrap();
    a.set_peers(["a", "b", "c"], now).unwrap();
    b.set_peers(["a", "b", "c"], now).unwrap();
    (a, b)
}

fn msg(sender: &str, seq: u64, body: Body, updates: Vec<Update>) -> Vec<u8> {
    Message {
        sender: sender.into(),
        epoch: 1,
        seq,
        incarnation: 0,
        body,
        updates,
    }
    .encode(&key())
    .unwrap()
}

#[test]
fn probe_is_acked_and_replay_is_dropped() {
    let now = Instant::now();
    let (_, mut b) = pair(now);
    let probe = msg("a", 1, Body::Probe, vec![]);
    b.handle_datagram(now, &probe);
    let t = b.poll_transmit().expect("an ack");
    assert_eq!(&*t.to, "a");
    let ack = Message::decode(&t.payload, &key()).unwrap();
    assert_eq!(ack.body, Body::Ack);
    assert_eq!(ack.sender, "b");

    b.handle_datagram(now, &probe);
    assert!(b.poll_transmit().is_none(), "replayed probe answered");
    assert_eq!(b.stats().replayed, 1);
    assert_eq!(b.stats().accepted, 1);
}

#[test]
fn forged_unknown_and_malformed_datagrams_are_counted() {
    let now = Instant::now();
    let (_, mut b) = pair(now);
    let other = Key::new(b"a key that is not the cluster's!").unwrap();
    let forged = Message {
        sender: "a".into(),
        epoch: 1,
        seq: 1,
        incarnation: 0,
        body: Body::Probe,
        updates: vec![],
    }
    .encode(&other)
    .unwrap();
    b.handle_datagram(now, &forged);
    b.handle_datagram(now, &msg("mallory", 1, Body::Probe, vec![]));
    b.handle_datagram(now, &msg("b", 1, Body::Probe, vec![]));
    b.handle_datagram(now, &[1, 2, 3]);
    let s = b.stats();
    assert_eq!(
        (s.bad_mac, s.unknown_sender, s.malformed, s.accepted),
        (1, 2, 1, 0),
        "{s:?}"
    );
    assert!(b.poll_transmit().is_none());
}

#[test]
fn suspicion_is_refuted_with_a_higher_incarnation() {
    let now = Instant::now();
    let (_, mut b) = pair(now);
    let suspect = Body::Suspect {
        target: "b".into(),
        incarnation: 0,
    };
    b.handle_datagram(now, &msg("a", 1, suspect, vec![]));
    assert_eq!(b.incarnation(), 1);
    assert_eq!(b.stats().refutations, 1);
    let to_a: Vec<Message> = std::iter::from_fn(|| b.poll_transmit())
        .filter(|t| &*t.to == "a")
        .map(|t| Message::decode(&t.payload, &key()).unwrap())
        .collect();
    assert!(to_a.iter().any(|m| m.incarnation == 1), "{to_a:?}");
}

#[test]
fn being_declared_dead_is_refuted_and_the_refutation_revives() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    let dead_b = Update {
        node: "b".into(),
        incarnation: 0,
        dead: true,
        news: true,
    };
    a.handle_datagram(now, &msg("c", 1, Body::Gossip, vec![dead_b.clone()]));
    assert!(!a.is_alive("b"));
    assert_eq!(a.poll_event(), Some(Event::Down("b".into())));

    b.handle_datagram(now, &msg("c", 1, Body::Gossip, vec![dead_b]));
    assert_eq!(b.incarnation(), 1);
    // Whatever b sends now carries incarnation 1 and revives it at a.
    while let Some(t) = b.poll_transmit() {
        a.handle_datagram(now, &t.payload);
    }
    assert!(a.is_alive("b"));
    assert_eq!(a.poll_event(), Some(Event::Up("b".into())));
}

#[test]
fn stale_death_does_not_override_newer_incarnation() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    let alive2 = Update {
        node: "c".into(),
        incarnation: 2,
        dead: false,
        news: true,
    };
    let dead1 = Update {
        node: "c".into(),
        incarnation: 1,
        dead: true,
        news: true,
    };
    a.handle_datagram(now, &msg("b", 1, Body::Gossip, vec![alive2, dead1]));
    assert!(a.is_alive("c"));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn bad_config_and_names_are_refused() {
    let now = Instant::now();
    let cfg = Config {
        confirmations: 4,
        ..Config::default()
    };
    assert!(matches!(
        Membership::new(cfg, "a", key(), 1, 1, now),
        Err(MembershipError::Config(_))
    ));
    let mut a = Membership::new(Config::default(), "a", key(), 1, 1, now).unwrap();
    assert!(matches!(
        a.set_peers(["", "b"], now),
        Err(MembershipError::Name(_))
    ));
}

#[test]
fn removed_peer_is_reported_down_and_forgotten() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    a.set_peers(["a", "b"], now).unwrap();
    assert_eq!(a.poll_event(), Some(Event::Down("c".into())));
    let live: BTreeSet<&str> = a.live_members().collect();
    assert_eq!(live, BTreeSet::from(["a", "b"]));
}

#[test]
fn crashed_node_is_detected_by_everyone_quickly() {
    let n = 30;
    let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 7).unwrap();
    sim.run_until(ms(2000));
    let crash_at = sim.now();
    sim.crash(11);
    sim.run_until(ms(4000));
    let victim = node_name(11);
    let downs = sim.downs_of(&victim, crash_at);
    let observers: BTreeSet<usize> = downs.iter().map(|d| d.1).collect();
    let expected: BTreeSet<usize> = (0..n).filter(|&i| i != 11).collect();
    assert_eq!(observers, expected);
    let last = downs.iter().map(|d| d.0).max().unwrap() - crash_at;
    // The target is sub-second failover; simulated time, so not flaky.
    assert!(last < ms(600), "last node learned after {last:?}");
    // Nobody else was declared dead.
    let others = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Down(x) if **x != *victim))
        .count();
    assert_eq!(others, 0);
    let mut expect = all_names(n);
    expect.remove(&victim);
    for i in (0..n).filter(|&i| i != 11) {
        assert_eq!(sim.live_view(i), expect, "node {i}");
    }
}

#[test]
fn no_false_positives_under_five_percent_loss() {
    let n = 40;
    let mut sim = Sim::new(n, Config::default(), lossy(0.05), 11).unwrap();
    sim.run_until(ms(60_000));
    let downs: Vec<_> = sim
        .log
        .iter()
        .filter(|l| matches!(l.event, Event::Down(_) | Event::Isolated))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    // The loss did cause suspicions, which were refuted: the mechanism was
    // exercised, not merely never triggered.
    let suspicions: u64 = sim
        .nodes
        .iter()
        .map(|x| x.membership.stats().suspicions)
        .sum();
    let refutations: u64 = sim
        .nodes
        .iter()
        .map(|x| x.membership.stats().refutations)
        .sum();
    assert!(
        suspicions > 0 && refutations > 0,
        "{suspicions} {refutations}"
    );
}

#[test]
fn crash_detected_under_loss_too() {
    let n = 40;
    let mut sim = Sim::new(n, Config::default(), lossy(0.05), 5).unwrap();
    sim.run_until(ms(2000));
    sim.crash(3);
    sim.run_until(ms(4000));
    let observers: BTreeSet<usize> = sim
        .downs_of(&node_name(3), ms(2000))
        .iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(observers.len(), n - 1);
}

#[test]
fn restarted_node_is_readmitted() {
    let n = 12;
    let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 3).unwrap();
    sim.run_until(ms(1000));
    sim.crash(4);
    sim.run_until(ms(2000));
    assert!(!sim.live_view(0).contains(&node_name(4)));
    // New boot: new epoch, incarnation back to 0, sequence numbers from 1.
    sim.restart(4, 2, key()).unwrap();
    sim.run_until(ms(4000));
    for i in 0..n {
        assert_eq!(sim.live_view(i), all_names(n), "node {i}");
    }
}

fn leaders(sim: &Sim, i: usize, addrs: &[IpAddr]) -> Vec<String> {
    let view = sim.live_view(i);
    let nodes: Vec<&str> = view.iter().map(String::as_str).collect();
    addrs
        .iter()
        .map(|a| {
            election::leader(*a, nodes.iter().copied())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn partition_heals_to_one_view_without_flapping() {
    let n = 30;
    let mut sim = Sim::new(n, Config::default(), lossy(0.05), 21).unwrap();
    sim.run_until(ms(1000));
    let group: Vec<u8> = (0..n).map(|i| u8::from(i.is_multiple_of(3))).collect();
    sim.partition(group.clone());
    sim.run_until(ms(8000));
    // Each side has written off the other side entirely.
    for i in 0..n {
        let side: BTreeSet<String> = (0..n)
            .filter(|&j| group[j] == group[i])
            .map(node_name)
            .collect();
        assert_eq!(sim.live_view(i), side, "node {i} during the partition");
    }
    let healed_at = sim.now();
    sim.heal();
    sim.run_until(ms(12_000));
    let converged = sim.now();
    for i in 0..n {
        assert_eq!(sim.live_view(i), all_names(n), "node {i} after heal");
    }
    // Without flapping: after the heal nobody declares anyone dead, and each
    // node sees each other node come back at most once.
    let after: Vec<_> = sim.log.iter().filter(|l| l.at >= healed_at).collect();
    assert!(
        !after.iter().any(|l| matches!(l.event, Event::Down(_))),
        "a node went down after the heal"
    );
    let mut ups = std::collections::HashMap::new();
    for l in &after {
        if let Event::Up(x) = &l.event {
            *ups.entry((l.node, x.clone())).or_insert(0) += 1;
        }
    }
    assert!(ups.values().all(|&c| c == 1));
    // And the views stay put: run on and require no further events.
    let events_before = sim.log.len();
    sim.run_until(converged + ms(10_000));
    assert_eq!(sim.log.len(), events_before);
    // One announcer per address: every node computes the same leaders.
    let addrs: Vec<IpAddr> = (1..=50u8)
        .map(|h| IpAddr::from([198, 51, 100, h]))
        .collect();
    let reference = leaders(&sim, 0, &addrs);
    for i in 1..n {
        assert_eq!(leaders(&sim, i, &addrs), reference, "node {i}");
    }
}

#[test]
fn isolated_node_stops_and_is_written_off() {
    let n = 10;
    let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 9).unwrap();
    sim.run_until(ms(1000));
    let mut group = vec![0u8; n];
    group[6] = 1;
    sim.partition(group);
    sim.run_until(ms(3000));
    assert!(sim.nodes[6].membership.is_isolated());
    for i in (0..n).filter(|&i| i != 6) {
        assert!(!sim.live_view(i).contains(&node_name(6)));
        assert!(!sim.nodes[i].membership.is_isolated());
    }
    // Alone, it cannot reach a quorum, so it wrote nobody off.
    assert_eq!(sim.live_view(6), all_names(n));
    sim.heal();
    sim.run_until(ms(6000));
    assert!(!sim.nodes[6].membership.is_isolated());
    for i in 0..n {
        assert_eq!(sim.live_view(i), all_names(n), "node {i}");
    }
}

#[test]
fn node_with_wrong_key_is_never_admitted() {
    let n = 10;
    let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 13).unwrap();
    let wrong = Key::new(b"this is not the cluster key.....").unwrap();
    sim.restart(2, 1, wrong).unwrap();
    sim.run_until(ms(5000));
    let intruder = node_name(2);
    for i in (0..n).filter(|&i| i != 2) {
        assert!(!sim.live_view(i).contains(&intruder), "node {i}");
    }
    let ups = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Up(x) if **x == *intruder))
        .count();
    assert_eq!(ups, 0);
    let bad: u64 = sim.nodes.iter().map(|x| x.membership.stats().bad_mac).sum();
    assert!(bad > 0);
    assert_eq!(sim.nodes[2].membership.stats().accepted, 0);
    assert!(sim.nodes[2].membership.is_isolated());
    // The others are unaffected.
    let mut rest = all_names(n);
    rest.remove(&intruder);
    for i in (0..n).filter(|&i| i != 2) {
        assert_eq!(sim.live_view(i), rest);
    }
}

#[test]
fn two_node_cluster_detects_crash() {
    let mut sim = Sim::new(2, Config::default(), NetConfig::default(), 1).unwrap();
    sim.run_until(ms(1000));
    sim.crash(1);
    sim.run_until(ms(3000));
    assert_eq!(sim.downs_of(&node_name(1), ms(1000)).len(), 1);
    assert!(!sim.nodes[0].membership.is_isolated());
}

#[test]
fn traffic_per_node_does_not_grow_with_cluster_size() {
    let rate = |n: usize| {
        let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 17).unwrap();
        sim.run_until(ms(5000));
        let sent: u64 = sim.nodes.iter().map(|x| x.sent).sum();
        sent as f64 / n as f64 / 5.0
    };
    let (small, large) = (rate(10), rate(200));
    // 2k datagrams per probe interval: k probes and k acks.
    assert!((55.0..=65.0).contains(&small), "{small}");
    assert!((55.0..=65.0).contains(&large), "{large}");
}

/// The same property over several seeds and split shapes, checked more
/// coarsely: sides split cleanly, views converge within 3 s of the heal,
/// nobody is declared dead after it, and nothing changes after convergence.
#[test]
fn partitions_heal_cleanly_across_seeds() {
    for seed in 1..=8u64 {
        let n = 24 + 2 * seed as usize;
        let mut sim = Sim::new(n, Config::default(), lossy(0.05), seed).unwrap();
        sim.run_until(ms(1000));
        let group: Vec<u8> = (0..n)
            .map(|i| u8::from((i as u64 * 7 + seed).is_multiple_of(2 + seed % 3)))
            .collect();
        sim.partition(group.clone());
        sim.run_until(ms(6000));
        for i in 0..n {
            let side = group.iter().filter(|&&g| g == group[i]).count();
            assert_eq!(sim.live_view(i).len(), side, "seed {seed} node {i}");
        }
        sim.heal();
        sim.run_until(ms(9000));
        for i in 0..n {
            assert_eq!(sim.live_view(i), all_names(n), "seed {seed} node {i}");
        }
        let late = sim.log.iter().filter(|l| {
            (l.at >= ms(6000) && matches!(l.event, Event::Down(_))) || l.at >= ms(8000)
        });
        assert_eq!(late.count(), 0, "seed {seed}");
    }
}

fn upd(node: &str, incarnation: u64, dead: bool, news: bool) -> Update {
    Update {
        node: node.into(),
        incarnation,
        dead,
        news,
    }
}

/// Drains `m`'s datagrams, decoded, with their destination.
fn sent(m: &mut Membership) -> Vec<(String, Message)> {
    std::iter::from_fn(|| m.poll_transmit())
        .map(|t| {
            (
                t.to.to_string(),
                Message::decode(&t.payload, &key()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn second_hand_death_is_checked_with_its_subject_first() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    // Anti-entropy (not news) says b is dead: a must not believe it yet.
    a.handle_datagram(
        now,
        &msg("c", 1, Body::Gossip, vec![upd("b", 0, true, false)]),
    );
    assert!(a.is_alive("b"));
    let out = sent(&mut a);
    let (_, probe) = out
        .iter()
        .find(|(to, m)| to == "b" && m.body == Body::Probe)
        .expect("a probes b");
    assert!(probe.updates.iter().any(|u| u.node == "b" && u.dead));

    // b refutes the claim it was shown, and its ack clears b at a.
    let probe = probe.clone().encode(&key()).unwrap();
    b.handle_datagram(now, &probe);
    assert_eq!(b.incarnation(), 1);
    for (to, m) in sent(&mut b) {
        if to == "a" {
            a.handle_datagram(now, &m.encode(&key()).unwrap());
        }
    }
    a.handle_timeout(now + Duration::from_secs(1));
    assert!(a.is_alive("b"));
    let downs = std::iter::from_fn(|| a.poll_event())
        .filter(|e| matches!(e, Event::Down(_)))
        .count();
    assert_eq!(downs, 0);
}

#[test]
fn second_hand_death_of_a_silent_node_is_believed_after_the_checks() {
    let start = Instant::now();
    let (mut a, _) = pair(start);
    a.handle_datagram(
        start,
        &msg("c", 1, Body::Gossip, vec![upd("b", 0, true, false)]),
    );
    let cfg = Config::default();
    let mut probes = 0;
    let mut now = start;
    while a.is_alive("b") && now < start + Duration::from_secs(1) {
        probes += sent(&mut a)
            .iter()
            .filter(|(to, m)| {
                to == "b" && m.body == Body::Probe && m.updates.iter().any(|u| u.dead)
            })
            .count();
        now = a.poll_timeout().max(now);
        a.handle_timeout(now);
    }
    assert!(!a.is_alive("b"));
    assert_eq!(probes as u32, cfg.verify_attempts);
    assert!(now - start >= cfg.ack_timeout * cfg.verify_attempts);
}

#[test]
fn news_of_a_death_is_believed_and_forwarded_at_once() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    a.handle_datagram(
        now,
        &msg("c", 1, Body::Gossip, vec![upd("b", 0, true, true)]),
    );
    assert!(!a.is_alive("b"));
    let out = sent(&mut a);
    // Forwarded as news to the only other live member.
    assert!(out.iter().any(|(to, m)| to == "c"
        && m.updates.iter().any(|u| u.node == "b" && u.dead && u.news)));
}

#[test]
fn a_dead_senders_death_claims_are_ignored_but_revivals_are_not() {
    let now = Instant::now();
    let mut a = Membership::new(Config::default(), "a", key(), 1, 1, now).unwrap();
    a.set_peers(["a", "b", "c", "d"], now).unwrap();
    a.handle_datagram(
        now,
        &msg("b", 1, Body::Gossip, vec![upd("c", 0, true, true)]),
    );
    assert!(!a.is_alive("c"));
    a.poll_event();
    // c (dead to a) pushes news that d is dead: a stale view, ignored.
    a.handle_datagram(
        now,
        &msg("c", 1, Body::Gossip, vec![upd("d", 0, true, true)]),
    );
    assert!(a.is_alive("d"));
    // c is told it is dead so that it can refute.
    let told = sent(&mut a)
        .into_iter()
        .any(|(to, m)| to == "c" && m.updates.iter().any(|u| u.node == "c" && u.dead));
    assert!(told);
    // A revival relayed by c is still taken: only b can raise b's incarnation.
    a.handle_datagram(
        now,
        &msg("b", 2, Body::Gossip, vec![upd("d", 0, true, true)]),
    );
    assert!(!a.is_alive("d"));
    a.handle_datagram(
        now,
        &msg("c", 2, Body::Gossip, vec![upd("d", 1, false, true)]),
    );
    assert!(a.is_alive("d"));
}

#[test]
fn stale_death_claim_is_answered_with_a_correction() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    a.handle_datagram(
        now,
        &msg("c", 1, Body::Gossip, vec![upd("b", 2, false, false)]),
    );
    sent(&mut a);
    a.handle_datagram(
        now,
        &msg("c", 2, Body::Gossip, vec![upd("b", 1, true, false)]),
    );
    assert!(a.is_alive("b"));
    let fixed = sent(&mut a).into_iter().any(|(to, m)| {
        to == "c"
            && m.updates
                .iter()
                .any(|u| u.node == "b" && !u.dead && u.incarnation == 2)
    });
    assert!(fixed);
}

#[test]
fn monitor_challenges_before_it_votes() {
    // Three nodes: a monitors both others. Nobody answers a's probes.
    let start = Instant::now();
    let mut a = Membership::new(Config::default(), "a", key(), 1, 1, start).unwrap();
    a.set_peers(["a", "b", "c"], start).unwrap();
    let cfg = Config::default();
    let mut now = start;
    let mut challenge_at = None;
    let mut vote_at = None;
    while now < start + Duration::from_secs(2) && vote_at.is_none() {
        for (to, m) in sent(&mut a) {
            if let Body::Suspect { target, .. } = &m.body {
                if to == *target && challenge_at.is_none() {
                    challenge_at = Some(now);
                } else if to != *target {
                    vote_at = Some(now);
                }
            }
        }
        now = a.poll_timeout().max(now);
        a.handle_timeout(now);
    }
    let (c, v) = (challenge_at.unwrap(), vote_at.unwrap());
    assert!(
        v - c >= cfg.confirm_timeout,
        "voted {:?} after challenging",
        v - c
    );
    // Votes go to the target's other monitor, never before the challenge.
    assert!(c - start >= cfg.probe_interval * (cfg.suspect_after_misses - 1));
}

#[test]
fn graceful_leave_is_known_everywhere_at_once() {
    let n = 60;
    let mut sim = Sim::new(n, Config::default(), lossy(0.05), 23).unwrap();
    sim.run_until(ms(2000));
    let left_at = sim.now();
    sim.leave(8);
    sim.run_until(ms(4000));
    let downs = sim.downs_of(&node_name(8), left_at);
    let observers: BTreeSet<usize> = downs.iter().map(|d| d.1).collect();
    assert_eq!(observers.len(), n - 1);
    // Most peers hear the news within milliseconds; the few it missed
    // confirm by getting no answer, well inside a normal detection time.
    let mut t: Vec<Duration> = downs.iter().map(|d| d.0 - left_at).collect();
    t.sort();
    assert!(t[t.len() / 2] < ms(10), "median {:?}", t[t.len() / 2]);
    assert!(t[t.len() - 1] < ms(300), "last {:?}", t[t.len() - 1]);
    // It never came back: leaving is not refuted.
    let ups = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Up(x) if **x == *node_name(8)))
        .count();
    assert_eq!(ups, 0);
    assert_eq!(sim.nodes[8].membership.stats().refutations, 0);
    // Leaving was not mistaken for anything else.
    let others = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Down(x) if **x != *node_name(8)))
        .count();
    assert_eq!(others, 0);
}

#[test]
fn key_rotation_without_a_flag_day() {
    let n = 20;
    let cfg = Config {
        key_rotation_delay: ms(5000),
        ..Config::default()
    };
    let mut sim = Sim::new(n, cfg, lossy(0.05), 29).unwrap();
    sim.run_until(ms(1000));
    let new = || Key::new(b"the rotated cluster key, 32 byte").unwrap();
    // Speakers see the new Secret at different times, over 3 s.
    for i in 0..n {
        sim.run_until(ms(1000 + 150 * i as u64));
        sim.rotate_key(i, new());
    }
    sim.run_until(ms(20_000));
    let downs = sim
        .log
        .iter()
        .filter(|l| matches!(l.event, Event::Down(_) | Event::Isolated))
        .count();
    assert_eq!(downs, 0);
    for i in 0..n {
        assert_eq!(sim.live_view(i), all_names(n));
    }
    // The old key has been retired everywhere: a node still using it is
    // rejected, and is written off.
    sim.restart(3, 2, key()).unwrap();
    sim.run_until(ms(25_000));
    assert!(!sim.live_view(0).contains(&node_name(3)));
    let rejected: u64 = sim
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, x)| x.membership.stats().bad_mac)
        .sum();
    assert!(rejected > 0);
}

#[test]
fn abrupt_key_change_would_split_the_cluster() {
    // The contrast to the test above: switching keys with no overlap makes
    // speakers that have not switched yet write off those that have.
    let n = 20;
    let mut sim = Sim::new(n, Config::default(), NetConfig::default(), 29).unwrap();
    sim.run_until(ms(1000));
    let new = || Key::new(b"the rotated cluster key, 32 byte").unwrap();
    for i in 0..n {
        sim.run_until(ms(1000 + 150 * i as u64));
        sim.restart(i, 2, new()).unwrap();
    }
    let downs = sim
        .log
        .iter()
        .filter(|l| matches!(l.event, Event::Down(_)))
        .count();
    assert!(downs > 0);
}

#[test]
fn a_speaker_restarted_during_a_rotation_is_not_cut_off() {
    // Every speaker has seen the new Secret and still signs with the old key
    // (the switch is 20 s away); one restarts and knows only the new key. The
    // others answer it under the new key, so it stays in for the whole wait.
    let n = 10;
    let cfg = Config {
        key_rotation_delay: ms(20_000),
        ..Config::default()
    };
    let mut sim = Sim::new(n, cfg, lossy(0.05), 31).unwrap();
    sim.run_until(ms(1000));
    let new = || Key::new(b"the rotated cluster key, 32 byte").unwrap();
    for i in 0..n {
        sim.run_until(ms(1000 + 100 * i as u64));
        sim.rotate_key(i, new());
    }
    sim.run_until(ms(3000));
    sim.restart(3, 2, new()).unwrap();
    sim.run_until(ms(18_000));
    let isolated = sim
        .log
        .iter()
        .filter(|l| l.node == 3 && matches!(l.event, Event::Isolated | Event::Down(_)))
        .count();
    assert_eq!(isolated, 0, "the restarted speaker lost its peers");
    assert_eq!(sim.live_view(3), all_names(n));
    let downs = sim.downs_of(&node_name(3), ms(3000));
    assert!(downs.is_empty(), "{downs:?}");
    for i in 0..n {
        assert_eq!(sim.live_view(i), all_names(n), "view of {i}");
    }
    // And through the switch and the old key's retirement.
    sim.run_until(ms(50_000));
    let downs = sim
        .log
        .iter()
        .filter(|l| l.at > ms(3000) && matches!(l.event, Event::Down(_) | Event::Isolated))
        .count();
    assert_eq!(downs, 0);
}

#[test]
fn a_speaker_seeing_the_secret_late_is_not_written_off() {
    // The converse of the test above: one speaker sees the new Secret 25 s after
    // the others, near the end of their wait. Whatever the others send it while it
    // misses probes must still be readable under the key it knows: at 10 % loss,
    // sending it probes under the pending key alone wrote it off in 9 of these
    // 20 runs.
    let cfg = Config {
        key_rotation_delay: ms(30_000),
        ..Config::default()
    };
    let new = || Key::new(b"the rotated cluster key, 32 byte").unwrap();
    for seed in 0..20 {
        let n = 10;
        let mut sim = Sim::new(n, cfg.clone(), lossy(0.10), 40 + seed).unwrap();
        sim.run_until(ms(1000));
        for i in 0..n - 1 {
            sim.rotate_key(i, new());
        }
        sim.run_until(ms(26_000));
        sim.rotate_key(n - 1, new());
        sim.run_until(ms(70_000));
        let downs = sim
            .log
            .iter()
            .filter(|l| matches!(l.event, Event::Down(_) | Event::Isolated))
            .count();
        assert_eq!(downs, 0, "seed {seed}");
    }
}
