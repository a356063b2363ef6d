//! Applies the latest desired [`NatRules`] off the speaker's loop: the loop only
//! publishes what it wants ([`NatHandle::set`], never blocks); a task clears the table
//! left by an earlier run, then applies each new state (intermediate ones are skipped),
//! retries every second after a failure, and clears the table when stopped.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{NatError, NatRules, NatTable};

/// Delay before an apply that failed is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct NatHandle {
    tx: Option<watch::Sender<NatRules>>,
    applied: watch::Receiver<Option<NatRules>>,
    task: Option<JoinHandle<()>>,
}

impl NatHandle {
    /// Starts the task: it clears `table` first, then follows [`NatHandle::set`].
    pub fn start(table: Box<dyn NatTable>) -> NatHandle {
        let (tx, rx) = watch::channel(NatRules::default());
        let (applied_tx, applied) = watch::channel(None);
        let task = tokio::spawn(run(table, rx, applied_tx));
        NatHandle {
            tx: Some(tx),
            applied,
            task: Some(task),
        }
    }

    /// Publishes the desired state (a no-op when it is the one already published).
    pub fn set(&self, rules: NatRules) {
        if let Some(tx) = &self.tx {
            tx.send_if_modified(|cur| {
                if *cur == rules {
                    false
                } else {
                    *cur = rules;
                    true
                }
            });
        }
    }

    /// The state last applied successfully (`None` before the first).
    pub fn applied(&self) -> watch::Receiver<Option<NatRules>> {
        self.applied.clone()
    }

    /// Stops the task, which removes the table; waits at most `limit`.
    pub async fn stop(mut self, limit: Duration) {
        self.tx = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(limit, task).await.is_err()
        {
            warn!("NodePort DNAT table clean-up did not finish in time");
        }
    }
}

async fn blocking<F>(table: Box<dyn NatTable>, f: F) -> (Box<dyn NatTable>, Result<(), NatError>)
where
    F: FnOnce(&mut dyn NatTable) -> Result<(), NatError> + Send + 'static,
{
    let res = tokio::task::spawn_blocking(move || {
        let mut table = table;
        let r = f(table.as_mut());
        (table, r)
    })
    .await;
    match res {
        Ok(x) => x,
        // The closure cannot panic short of a bug in the table; re-raise it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn run(
    table: Box<dyn NatTable>,
    mut rx: watch::Receiver<NatRules>,
    applied_tx: watch::Sender<Option<NatRules>>,
) {
    // A crashed run leaves its table: start from none.
    let (mut table, r) = blocking(table, |t| t.clear()).await;
    let mut current: Option<NatRules> = match r {
        Ok(()) => Some(NatRules::default()),
        Err(e) => {
            warn!(error = %e, "cannot remove the NodePort DNAT table left by an earlier run");
            None
        }
    };
    if let Some(c) = &current {
        applied_tx.send_replace(Some(c.clone()));
    }
    let mut open = true;
    while open {
        let want = rx.borrow_and_update().clone();
        let mut failed = false;
        if current.as_ref() != Some(&want) {
            let w = want.clone();
            let (t, r) = blocking(table, move |t| t.apply(&w)).await;
            table = t;
            match r {
                Ok(()) => {
                    info!(entries = want.entries.len(), "NodePort DNAT table applied");
                    applied_tx.send_replace(Some(want.clone()));
                    current = Some(want);
                }
                Err(e) => {
                    warn!(error = %e, "cannot apply the NodePort DNAT table, retrying");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::select! {
                r = rx.changed() => open = r.is_ok(),
                _ = tokio::time::sleep(RETRY) => {}
            }
        } else {
            open = rx.changed().await.is_ok();
        }
    }
    let (_, r) = blocking(table, |t| t.clear()).await;
    match r {
        Ok(()) => {
            info!("NodePort DNAT table removed");
            applied_tx.send_replace(Some(NatRules::default()));
        }
        Err(e) => warn!(error = %e, "cannot remove the NodePort DNAT table"),
    }
}
