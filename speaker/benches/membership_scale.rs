//! Prints detection time, traffic and false positives of the membership
//! protocol for growing clusters, from the deterministic simulator.
//!
//! `cargo bench -p ferrolb-speaker --bench membership_scale` (part of `make bench`).
//! `FERROLB_SIM_SIZES` is a comma-separated list of cluster sizes (default
//! 10,100,1000), `FERROLB_SIM_SEED` the first seed (default 1). Each figure
//! is over repeated trials: min, median, p90, p99, max and spread.
//!
//! All times are simulated: one-way latency is uniform in 0.1-0.5 ms and
//! each datagram is lost independently with the stated probability. The
//! figures are for the protocol logic, not for a kernel's UDP path.

use std::time::Duration;

use ferrolb_speaker::membership::Config;
use ferrolb_speaker::membership::Event;
use ferrolb_speaker::membership::sim::{NetConfig, SIM_KEY, Sim, node_name};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("    {label:<34} n=0");
        return;
    }
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    println!(
        "    {label:<34} n={:<3} min {:6.1}  median {:6.1}  p90 {:6.1}  p99 {:6.1}  max {:6.1}  sd {:5.1}",
        v.len(),
        v[0],
        pct(&v, 50.0),
        pct(&v, 90.0),
        pct(&v, 99.0),
        v[v.len() - 1],
        sd
    );
}

fn net(loss: f64) -> NetConfig {
    NetConfig {
        loss,
        ..NetConfig::default()
    }
}

/// When each node learned of a death (`Sim::downs_of`), in ms after `since`, sorted.
fn learned_ms(downs: &[(Duration, usize)], since: Duration) -> Vec<f64> {
    let mut v: Vec<f64> = downs.iter().map(|d| ms(d.0 - since)).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Restarts crashed `node` with a new boot epoch for `trial` and lets it rejoin for
/// 1.5 s (simulated), advancing `t`.
fn rejoin(sim: &mut Sim, node: usize, trial: usize, t: &mut Duration) {
    sim.restart(
        node,
        2 + trial as u64,
        ferrolb_speaker::membership::Key::new(SIM_KEY).expect("key"),
    )
    .expect("restart");
    *t += Duration::from_millis(1500);
    sim.run_until(*t);
}

/// Crash one node per trial, measure, restart it, let it rejoin.
fn detection(n: usize, loss: f64, trials: usize, seed: u64) {
    let mut sim = Sim::new(n, Config::default(), net(loss), seed).expect("sim");
    let mut t = Duration::from_secs(2);
    sim.run_until(t);
    let (mut first, mut typical, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut incomplete = 0;
    let mut wrong = 0;
    for trial in 0..trials {
        let victim = (trial * 7919 + seed as usize) % n;
        let crash_at = sim.now();
        sim.crash(victim);
        t += Duration::from_millis(1500);
        sim.run_until(t);
        let name = node_name(victim);
        let downs = sim.downs_of(&name, crash_at);
        let observers: std::collections::BTreeSet<usize> = downs.iter().map(|d| d.1).collect();
        let learned = learned_ms(&downs, crash_at);
        if let Some(f) = learned.first() {
            first.push(*f);
            typical.push(pct(&learned, 50.0));
        }
        if observers.len() == n - 1 {
            let last = downs.iter().map(|d| d.0).max().expect("non-empty");
            all.push(ms(last - crash_at));
        } else {
            incomplete += 1;
        }
        wrong += sim
            .log
            .iter()
            .filter(|l| l.at >= crash_at && matches!(&l.event, Event::Down(x) if **x != *name))
            .count();
        rejoin(&mut sim, victim, trial, &mut t);
    }
    println!(
        "  crash detection, {:.0}% loss, {trials} trials (ms after the crash):",
        loss * 100.0
    );
    summary("first node declares it dead", first);
    // What one address's failover waits for: its runner-up learning.
    summary("median node knows", typical);
    summary("every live node knows", all);
    println!(
        "    trials where some node never learned: {incomplete}; other nodes wrongly declared dead: {wrong}"
    );
}

/// Planned shutdown: one node calls `leave` per trial, then restarts.
fn leave(n: usize, loss: f64, trials: usize, seed: u64) {
    let mut sim = Sim::new(n, Config::default(), net(loss), seed).expect("sim");
    let mut t = Duration::from_secs(2);
    sim.run_until(t);
    let (mut typical, mut all) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let node = (trial * 7919 + seed as usize) % n;
        let at = sim.now();
        sim.leave(node);
        t += Duration::from_millis(1000);
        sim.run_until(t);
        let learned = learned_ms(&sim.downs_of(&node_name(node), at), at);
        if learned.len() == n - 1 {
            typical.push(pct(&learned, 50.0));
            all.push(learned[learned.len() - 1]);
        }
        sim.crash(node);
        rejoin(&mut sim, node, trial, &mut t);
    }
    println!(
        "  graceful leave, {:.0}% loss, {trials} trials (ms after leave()):",
        loss * 100.0
    );
    summary("median node knows", typical);
    summary("every live node knows", all);
}

/// Steady-state traffic and false positives over a long lossy run.
fn steady(n: usize, loss: f64, secs: u64, seed: u64) {
    let mut sim = Sim::new(n, Config::default(), net(loss), seed).expect("sim");
    let warm = Duration::from_secs(2);
    sim.run_until(warm);
    let sent0: Vec<u64> = sim.nodes.iter().map(|x| x.sent).collect();
    let recv0: Vec<u64> = sim.nodes.iter().map(|x| x.received).collect();
    sim.run_until(warm + Duration::from_secs(secs));
    let per_s = |now: &[u64], before: &[u64]| -> Vec<f64> {
        now.iter()
            .zip(before)
            .map(|(a, b)| (a - b) as f64 / secs as f64)
            .collect()
    };
    let sent = per_s(
        &sim.nodes.iter().map(|x| x.sent).collect::<Vec<_>>(),
        &sent0,
    );
    let recv = per_s(
        &sim.nodes.iter().map(|x| x.received).collect::<Vec<_>>(),
        &recv0,
    );
    let fp = sim
        .log
        .iter()
        .filter(|l| matches!(l.event, Event::Down(_)))
        .count();
    let isolated = sim
        .log
        .iter()
        .filter(|l| matches!(l.event, Event::Isolated))
        .count();
    let stat = |f: fn(&ferrolb_speaker::membership::Stats) -> u64| -> u64 {
        sim.nodes.iter().map(|x| f(x.membership.stats())).sum()
    };
    println!(
        "  steady state, {:.0}% loss, {secs} s simulated:",
        loss * 100.0
    );
    summary("datagrams sent per node per s", sent);
    summary("datagrams received per node per s", recv);
    println!(
        "    false positives (Down events): {fp}; isolation events: {isolated}; suspicions {} refuted {} (of {} node-seconds)",
        stat(|s| s.suspicions),
        stat(|s| s.refutations),
        n as u64 * secs
    );
}

/// Split into two sides, heal, and time convergence to one view.
fn partition(n: usize, seed: u64) {
    let mut sim = Sim::new(n, Config::default(), net(0.05), seed).expect("sim");
    sim.run_until(Duration::from_secs(1));
    let group: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
    sim.partition(group);
    sim.run_until(Duration::from_secs(6));
    let healed = sim.now();
    sim.heal();
    let full: std::collections::BTreeSet<String> = (0..n).map(node_name).collect();
    let mut converged = None;
    let mut t = healed;
    while t < healed + Duration::from_secs(10) {
        t += Duration::from_millis(10);
        sim.run_until(t);
        if (0..n).all(|i| sim.live_view(i) == full) {
            converged = Some(t - healed);
            break;
        }
    }
    sim.run_until(healed + Duration::from_secs(10));
    let downs_after = sim
        .log
        .iter()
        .filter(|l| l.at >= healed && matches!(l.event, Event::Down(_)))
        .count();
    match converged {
        Some(c) => println!(
            "  partition 1/3 vs 2/3 for 5 s at 5% loss, then heal: all views equal after {:.0} ms; Down events after heal: {downs_after}",
            ms(c)
        ),
        None => println!("  partition heal: views did NOT converge within 10 s"),
    }
}

fn main() {
    // Settings come from the environment: `cargo bench` passes its own
    // arguments (`--bench`) to a bench without the test harness.
    let sizes: Vec<usize> = std::env::var("FERROLB_SIM_SIZES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("FERROLB_SIM_SIZES: sizes"))
        .collect();
    let seed: u64 = std::env::var("FERROLB_SIM_SEED")
        .map(|s| s.parse().expect("FERROLB_SIM_SEED: a number"))
        .unwrap_or(1);
    let c = Config::default();
    println!(
        "membership_scale: probe every {:?}, ack timeout {:?}, suspect after {} misses, k={} monitors, {} confirmations, fanout {}",
        c.probe_interval,
        c.ack_timeout,
        c.suspect_after_misses,
        c.monitors,
        c.confirmations,
        c.gossip_fanout
    );
    for n in sizes {
        let started = std::time::Instant::now();
        println!("\n== {n} nodes ==");
        let trials = if n >= 1000 { 20 } else { 30 };
        detection(n, 0.0, trials, seed);
        detection(n, 0.05, trials, seed + 1);
        leave(n, 0.05, trials / 2, seed + 5);
        let secs = if n >= 1000 {
            20
        } else if n >= 100 {
            60
        } else {
            300
        };
        steady(n, 0.0, 5, seed + 2);
        steady(n, 0.05, secs, seed + 3);
        if n <= 100 {
            partition(n, seed + 4);
        }
        println!("  (wall time {:.1} s)", started.elapsed().as_secs_f64());
    }
}
