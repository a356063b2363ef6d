//! When gratuitous ARP / unsolicited NA frames are sent after a takeover.
//!
//! The first frame is sent by `set_leading` itself, synchronously, so that
//! neighbours learn the new MAC as early as possible (the failover target is
//! under one second). [`follow_up`] then sends `count - 1` more frames
//! `spacing` apart, because a single broadcast can be lost, and optionally
//! keeps refreshing every `refresh` while the address stays led.
//!
//! Default: 3 frames 200 ms apart (0, 200, 400 ms). Linux accepts a
//! gratuitous ARP as an override even within its one-second `locktime`, so
//! close spacing does not lose updates there; the burst ends well inside the
//! failover budget. MetalLB instead repeats every 1.1 s for 5 s, for devices
//! that ignore updates closer than a second; `refresh` (off by default)
//! serves such networks, and also re-teaches caches that dropped the entry.
//!
//! Every send first asks `still_led`, so a burst stops as soon as the address
//! is given up (or taken again, which starts a new burst of its own).

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurstConfig {
    /// Frames per takeover, the immediate one included; 0 disables bursts.
    pub count: u32,
    pub spacing: Duration,
    /// Period of re-announcement after the burst while still led.
    pub refresh: Option<Duration>,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            count: 3,
            spacing: Duration::from_millis(200),
            refresh: None,
        }
    }
}

/// Sends the frames after the first one; returns when the burst is done (and
/// with `refresh`, only when the address is no longer led).
pub async fn follow_up(
    cfg: BurstConfig,
    mut still_led: impl FnMut() -> bool,
    mut send: impl FnMut(),
) {
    for _ in 1..cfg.count {
        tokio::time::sleep(cfg.spacing).await;
        if !still_led() {
            return;
        }
        send();
    }
    let Some(every) = cfg.refresh else {
        return;
    };
    // A zero period would spin; one millisecond is already far below sense.
    let every = every.max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        if !still_led() {
            return;
        }
        send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    /// Runs `follow_up` and records the offset of each send from the start.
    fn recorder() -> (Arc<Mutex<Vec<Duration>>>, impl FnMut(), Instant) {
        let start = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, move || l.lock().unwrap().push(start.elapsed()), start)
    }

    #[tokio::test(start_paused = true)]
    async fn default_burst_sends_two_more_200ms_apart() {
        let (log, send, _) = recorder();
        follow_up(BurstConfig::default(), || true, send).await;
        assert_eq!(
            *log.lock().unwrap(),
            [Duration::from_millis(200), Duration::from_millis(400)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_stops_when_no_longer_led() {
        let led = Arc::new(AtomicBool::new(true));
        let (log, send, _) = recorder();
        let l = led.clone();
        let task = tokio::spawn(follow_up(
            BurstConfig {
                count: 5,
                ..BurstConfig::default()
            },
            move || l.load(Ordering::SeqCst),
            send,
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        led.store(false, Ordering::SeqCst);
        task.await.unwrap();
        assert_eq!(*log.lock().unwrap(), [Duration::from_millis(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_continues_until_released() {
        let led = Arc::new(AtomicBool::new(true));
        let (log, send, _) = recorder();
        let l = led.clone();
        let task = tokio::spawn(follow_up(
            BurstConfig {
                count: 2,
                spacing: Duration::from_millis(100),
                refresh: Some(Duration::from_secs(30)),
            },
            move || l.load(Ordering::SeqCst),
            send,
        ));
        tokio::time::sleep(Duration::from_secs(61)).await;
        led.store(false, Ordering::SeqCst);
        task.await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                Duration::from_millis(100),
                Duration::from_millis(30_100),
                Duration::from_millis(60_100)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn count_one_or_zero_sends_nothing_more() {
        for count in [0, 1] {
            let (log, send, start) = recorder();
            follow_up(
                BurstConfig {
                    count,
                    ..BurstConfig::default()
                },
                || true,
                send,
            )
            .await;
            assert!(log.lock().unwrap().is_empty());
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }
}
