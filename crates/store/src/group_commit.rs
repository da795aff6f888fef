//! Group commit: many requests each make one small write (a quote-history row), and each must
//! not answer before its row is committed. Committing them one by one costs a transaction, a
//! WAL flush and (for history) a foreign-key lock on the same `users` row per request; here the
//! requests queue their item and one task writes whatever has queued up as one batch, then tells
//! each waiter. Under light load a batch is one item and nothing waits longer than before; under
//! heavy load batches grow by themselves while the previous ones are being written.
//!
//! A failed batch is written again item by item, so one bad row (say, its user was deleted a
//! moment ago) fails only its own request.

use crate::StoreError;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The queue in front of a batch writer. Cheap to clone; the writer task ends when the last
/// clone is dropped, after writing what was queued.
#[derive(Debug)]
pub struct GroupCommit<T> {
    queue: mpsc::Sender<(T, Reply)>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Items per batch at most.
    pub max_batch: usize,
    /// Batches being written at once: more than one keeps the database busy while the next
    /// batch fills, and spreads batches over pool connections.
    pub max_in_flight: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_in_flight: 4,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> GroupCommit<T> {
    /// Starts the writer task (needs a Tokio runtime). `write` stores one batch atomically.
    pub fn spawn<W, F>(limits: BatchLimits, write: W) -> Self
    where
        W: Fn(Arc<[T]>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let limits = BatchLimits {
            max_batch: limits.max_batch.max(1),
            max_in_flight: limits.max_in_flight.max(1),
        };
        let (queue, rx) = mpsc::channel(limits.max_batch * limits.max_in_flight);
        tokio::spawn(run(rx, Arc::new(write), limits));
        Self { queue }
    }

    /// Queues `item` and waits until the batch holding it is committed.
    pub async fn submit(&self, item: T) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the batch writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the batch writer stopped before answering".into())
        })?
    }
}

async fn run<T, W, F>(mut rx: mpsc::Receiver<(T, Reply)>, write: Arc<W>, limits: BatchLimits)
where
    T: Clone + Send + Sync + 'static,
    W: Fn(Arc<[T]>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let mut in_flight = JoinSet::new();
    loop {
        // While every slot is busy, items pile up in the channel: the next batch is bigger.
        while in_flight.len() >= limits.max_in_flight {
            in_flight.join_next().await;
        }
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(first) => first,
                None => break,
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
        };
        let mut items = Vec::with_capacity(limits.max_batch.min(64));
        let mut replies = Vec::with_capacity(items.capacity());
        items.push(first.0);
        replies.push(first.1);
        while items.len() < limits.max_batch {
            match rx.try_recv() {
                Ok((item, reply)) => {
                    items.push(item);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        in_flight.spawn(commit(Arc::clone(&write), items.into(), replies));
    }
    while in_flight.join_next().await.is_some() {}
}

/// Writes one batch and answers its waiters; on failure, retries item by item.
async fn commit<T, W, F>(write: Arc<W>, items: Arc<[T]>, replies: Vec<Reply>)
where
    T: Clone,
    W: Fn(Arc<[T]>) -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let outcome = write(Arc::clone(&items)).await;
    match outcome {
        Ok(()) => {
            for reply in replies {
                // The request may have been cancelled meanwhile; its row is written anyway.
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if items.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, items = items.len(), "batch write failed; writing its items one by one");
            for (item, reply) in items.iter().zip(replies) {
                let one: Arc<[T]> = Arc::from(vec![item.clone()]);
                let _ = reply.send(write(one).await);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Batches = Arc<Mutex<Vec<Vec<i32>>>>;
    type Outcome = futures::future::BoxFuture<'static, Result<(), StoreError>>;

    /// Records the batches it is given; fails any batch holding a negative number.
    fn recorder() -> (Batches, impl Fn(Arc<[i32]>) -> Outcome) {
        let seen: Batches = Arc::default();
        let log = Arc::clone(&seen);
        let write = move |batch: Arc<[i32]>| {
            let log = Arc::clone(&log);
            let fut: Outcome = Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                if batch.iter().any(|n| *n < 0) {
                    return Err(StoreError::Corrupt("negative".into()));
                }
                log.lock()
                    .map_err(|_| StoreError::Corrupt("poisoned".into()))?
                    .push(batch.to_vec());
                Ok(())
            });
            fut
        };
        (seen, write)
    }

    #[tokio::test]
    async fn concurrent_items_share_batches_and_all_are_written_once() {
        let (seen, write) = recorder();
        let writer = GroupCommit::spawn(
            BatchLimits {
                max_batch: 16,
                max_in_flight: 1,
            },
            write,
        );
        let mut tasks = JoinSet::new();
        for n in 0..100 {
            let writer = writer.clone();
            tasks.spawn(async move { writer.submit(n).await });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(done.expect("task").is_ok());
        }
        let batches = seen.lock().expect("lock").clone();
        let mut all: Vec<i32> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 16));
        assert!(
            batches.len() < 100,
            "waiting items must be batched: {} batches",
            batches.len()
        );
    }

    #[tokio::test]
    async fn a_bad_item_fails_alone() {
        let (seen, write) = recorder();
        let writer = GroupCommit::spawn(
            BatchLimits {
                max_batch: 64,
                max_in_flight: 1,
            },
            write,
        );
        // Hold the single slot so the next items queue up and share one batch.
        let first = {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(1000).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let mut tasks = Vec::new();
        for n in [1, 2, -3, 4] {
            let w = writer.clone();
            tasks.push((n, tokio::spawn(async move { w.submit(n).await })));
        }
        assert!(first.await.expect("task").is_ok());
        for (n, task) in tasks {
            let outcome = task.await.expect("task");
            assert_eq!(outcome.is_ok(), n >= 0, "item {n}: {outcome:?}");
        }
        let mut written: Vec<i32> = seen
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .copied()
            .collect();
        written.sort_unstable();
        assert_eq!(written, vec![1, 2, 4, 1000]);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_writes_what_was_queued() {
        let (seen, write) = recorder();
        let writer = GroupCommit::spawn(BatchLimits::default(), write);
        let pending = {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(7).await })
        };
        drop(writer);
        assert!(pending.await.expect("task").is_ok());
        assert_eq!(seen.lock().expect("lock").concat(), vec![7]);
    }
}
