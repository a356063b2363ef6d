//! The speaker's API writes (events, ServiceL2Status) as a queue of plain values served
//! by a fixed number of worker tasks.
//!
//! Not one task per write: a spawned task holds its whole request future (the HTTP
//! client's state) from the moment it is queued, so a takeover of many Services would
//! hold one per Service at once. Queued here, a write is a few small values until a
//! worker takes it.
//!
//! Rules:
//! - At most `workers` writes run at once.
//! - ServiceL2Status writes are keyed by Service: a newer write for a Service replaces
//!   one still waiting (only the last wanted state matters), and two writes for one
//!   Service never run at once or out of order.
//! - Events are independent and run in the order queued.
//! - [`Queue::busy`] tells whether a Service's status write is waiting or running, so
//!   the caller's repair pass does not undo a write that has not landed yet.
//! - A write that panics ends alone: its Service is free again and its worker goes on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::decide::ServiceKey;

/// One unit of work for a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Work<E, S> {
    /// An event, with the Service it is about.
    Event(ServiceKey, E),
    /// The status write of one Service.
    Status(ServiceKey, S),
}

/// What carries a [`Work`] out (the API in the speaker, a recorder in tests).
pub trait Execute<E, S>: Send + Sync + 'static {
    fn run(&self, work: Work<E, S>) -> impl Future<Output = ()> + Send;
}

#[derive(Debug)]
enum Slot<E> {
    Event(ServiceKey, E),
    /// The job itself waits in `State::pending`.
    Status(ServiceKey),
}

#[derive(Debug)]
struct State<E, S> {
    order: VecDeque<Slot<E>>,
    pending: BTreeMap<ServiceKey, S>,
    running: BTreeSet<ServiceKey>,
    /// Works taken and not finished (events included).
    active: usize,
}

impl<E, S> Default for State<E, S> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            pending: BTreeMap::new(),
            running: BTreeSet::new(),
            active: 0,
        }
    }
}

impl<E, S> State<E, S> {
    /// The first queued work that may start now: a status write waits while an
    /// earlier one for the same Service runs.
    fn take(&mut self) -> Option<Work<E, S>> {
        let i = self.order.iter().position(|s| match s {
            Slot::Event(..) => true,
            Slot::Status(k) => !self.running.contains(k),
        })?;
        let work = match self.order.remove(i)? {
            Slot::Event(k, e) => Work::Event(k, e),
            Slot::Status(k) => {
                let job = self.pending.remove(&k)?;
                self.running.insert(k.clone());
                Work::Status(k, job)
            }
        };
        self.active += 1;
        Some(work)
    }
}

#[derive(Debug)]
struct Shared<E, S> {
    state: Mutex<State<E, S>>,
    /// Signalled when work is queued or a status write ends (which may unblock a later
    /// one for the same Service).
    ready: Notify,
}

impl<E, S> Shared<E, S> {
    fn lock(&self) -> MutexGuard<'_, State<E, S>> {
        // A worker never panics while holding the lock; if one did, the state is still
        // consistent enough to keep writing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The queue; clones share it.
#[derive(Debug)]
pub struct Queue<E, S> {
    shared: Arc<Shared<E, S>>,
}

impl<E, S> Clone for Queue<E, S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<E: Send + 'static, S: Send + 'static> Queue<E, S> {
    /// A queue served by `workers` tasks (at least one) running `exec`; they live as
    /// long as the runtime.
    pub fn start<X: Execute<E, S>>(workers: usize, exec: X) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        });
        let exec = Arc::new(exec);
        for _ in 0..workers.max(1) {
            let shared = shared.clone();
            let exec = exec.clone();
            tokio::spawn(async move {
                loop {
                    // Registered before looking, so a push in between is not missed.
                    let notified = shared.ready.notified();
                    let work = shared.lock().take();
                    let Some(work) = work else {
                        notified.await;
                        continue;
                    };
                    let key = match &work {
                        Work::Status(k, _) => Some(k.clone()),
                        Work::Event(..) => None,
                    };
                    // Run as a task of its own so that a panicking write ends only
                    // itself: the bookkeeping below still runs and the worker lives on.
                    let exec = exec.clone();
                    if let Err(e) = tokio::spawn(async move { exec.run(work).await }).await {
                        tracing::error!(error = %e, "API write task failed");
                    }
                    {
                        let mut st = shared.lock();
                        st.active -= 1;
                        if let Some(k) = &key {
                            st.running.remove(k);
                        }
                    }
                    if key.is_some() {
                        shared.ready.notify_one();
                    }
                }
            });
        }
        Self { shared }
    }

    /// Queues an event about `key`'s Service.
    pub fn event(&self, key: ServiceKey, ev: E) {
        self.shared.lock().order.push_back(Slot::Event(key, ev));
        self.shared.ready.notify_one();
    }

    /// Queues the status write of `key`'s Service, replacing one still waiting.
    pub fn status(&self, key: ServiceKey, job: S) {
        {
            let mut st = self.shared.lock();
            if st.pending.insert(key.clone(), job).is_none() {
                st.order.push_back(Slot::Status(key));
            }
        }
        self.shared.ready.notify_one();
    }

    /// A status write of `key`'s Service is waiting or running.
    pub fn busy(&self, key: &ServiceKey) -> bool {
        let st = self.shared.lock();
        st.pending.contains_key(key) || st.running.contains(key)
    }

    /// Nothing is waiting or running.
    pub fn is_idle(&self) -> bool {
        let st = self.shared.lock();
        st.order.is_empty() && st.active == 0
    }

    /// Waits until the queue is idle, at most `limit`; false when it was not.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let poll = async {
            while !self.is_idle() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(limit, poll).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs each work for 10 ms, recording starts, ends and the most at once.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(String, &'static str)>>,
        now: AtomicUsize,
        most: AtomicUsize,
    }

    struct Exec(Arc<Recorder>);

    impl Execute<u32, u32> for Exec {
        async fn run(&self, work: Work<u32, u32>) {
            let r = &self.0;
            let label = match &work {
                Work::Event(k, e) => format!("event {k} {e}"),
                Work::Status(k, s) => format!("status {k} {s}"),
            };
            let n = r.now.fetch_add(1, Ordering::SeqCst) + 1;
            r.most.fetch_max(n, Ordering::SeqCst);
            r.log.lock().unwrap().push((label.clone(), "start"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            r.log.lock().unwrap().push((label, "end"));
            r.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn key(n: u32) -> ServiceKey {
        ServiceKey::new("ns", format!("s{n}"))
    }

    fn starts(r: &Recorder) -> Vec<String> {
        let log = r.log.lock().unwrap();
        log.iter()
            .filter(|(_, what)| *what == "start")
            .map(|(l, _)| l.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_workers_run_at_once_and_everything_runs() {
        let r = Arc::new(Recorder::default());
        let q = Queue::start(4, Exec(r.clone()));
        let t0 = tokio::time::Instant::now();
        for i in 0..50 {
            q.status(key(i), i);
            q.event(key(i), i);
        }
        assert!(!q.is_idle());
        assert!(q.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(r.most.load(Ordering::SeqCst), 4);
        let s = starts(&r);
        assert_eq!(s.len(), 100);
        assert_eq!(s[0], "status ns/s0 0", "in the order queued");
        // 100 works of 10 ms on 4 workers: 25 rounds, on the paused clock.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(250) && took <= Duration::from_millis(270));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_status_replaces_a_waiting_one() {
        let r = Arc::new(Recorder::default());
        let q = Queue::start(1, Exec(r.clone()));
        q.status(key(1), 1);
        q.status(key(1), 2);
        q.status(key(2), 7);
        q.status(key(1), 3);
        assert!(q.busy(&key(1)) && q.busy(&key(2)) && !q.busy(&key(3)));
        assert!(q.wait_idle(Duration::from_secs(1)).await);
        assert_eq!(starts(&r), ["status ns/s1 3", "status ns/s2 7"]);
        assert!(!q.busy(&key(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_of_one_service_never_overlap_and_keep_their_order() {
        let r = Arc::new(Recorder::default());
        let q = Queue::start(4, Exec(r.clone()));
        q.status(key(1), 1);
        // Let a worker take the first write, then queue the next one behind it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(q.busy(&key(1)), "running counts as busy");
        q.status(key(1), 2);
        q.status(key(2), 9);
        assert!(q.wait_idle(Duration::from_secs(1)).await);
        let log = r.log.lock().unwrap().clone();
        let pos = |l: &str, w: &str| log.iter().position(|x| x.0 == l && x.1 == w).unwrap();
        assert!(pos("status ns/s1 1", "end") < pos("status ns/s1 2", "start"));
        // Another Service's write does not wait behind it.
        assert!(pos("status ns/s2 9", "start") < pos("status ns/s1 1", "end"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_write_frees_its_service_and_its_worker() {
        struct Panicky(Arc<Recorder>);
        impl Execute<u32, u32> for Panicky {
            async fn run(&self, work: Work<u32, u32>) {
                if work == Work::Status(key(1), 1) {
                    panic!("write 1 fails");
                }
                Exec(self.0.clone()).run(work).await;
            }
        }
        let r = Arc::new(Recorder::default());
        // One worker: if the panic took it, nothing after would run.
        let q = Queue::start(1, Panicky(r.clone()));
        q.status(key(1), 1);
        assert!(q.wait_idle(Duration::from_secs(1)).await);
        assert!(!q.busy(&key(1)), "the panicked write left its Service busy");
        q.status(key(1), 2);
        q.event(key(2), 3);
        assert!(q.wait_idle(Duration::from_secs(1)).await);
        assert_eq!(starts(&r), ["status ns/s1 2", "event ns/s2 3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_gives_up_at_its_limit() {
        struct Stuck;
        impl Execute<u32, u32> for Stuck {
            async fn run(&self, _: Work<u32, u32>) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        let q = Queue::start(1, Stuck);
        q.event(key(1), 1);
        assert!(!q.wait_idle(Duration::from_secs(3)).await);
    }
}
