//! A micro-cache for the hottest reads (`GET /stocks`, `GET /stocks/{id}`).
//!
//! Entries live for a few tens of milliseconds. That bounds staleness well under the promise that "any
//! replica shows a committed price within 100 ms" (ticks may be committed by another replica, so
//! local invalidation alone could not promise that) while turning thousands of identical reads
//! per second into a handful of queries.
//!
//! Stocks by id are kept in a [`moka`] cache bounded by bytes (`BOURSE_STOCK_CACHE_BYTES`):
//! requests for random ids evict the least useful entries, never the whole cache, and concurrent
//! misses of one id share one query.

use crate::ApiError;
use bourse_store::feed::{StockDetail, StockRow};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

type Entry<T> = (Instant, Arc<T>);

type Detail = Arc<Option<StockDetail>>;

pub struct StockCache {
    ttl: Duration,
    /// `None` when the TTL is zero (no cache).
    details: Option<moka::future::Cache<Uuid, Detail>>,
    list: Slot<Vec<StockRow>>,
    /// The list with each stock's analysis (`GET /stocks?include=technical_analysis`).
    detailed_list: Slot<Vec<StockDetail>>,
}

/// One cached value with its age.
struct Slot<T>(RwLock<Option<Entry<T>>>);

impl<T> Slot<T> {
    fn new() -> Slot<T> {
        Slot(RwLock::new(None))
    }

    fn get(&self, ttl: Duration) -> Option<Arc<T>> {
        let slot = self.0.read().ok()?;
        slot.as_ref()
            .filter(|e| e.0.elapsed() < ttl)
            .map(|e| e.1.clone())
    }

    fn put(&self, ttl: Duration, value: T) -> Arc<T> {
        let value = Arc::new(value);
        if !ttl.is_zero() {
            if let Ok(mut slot) = self.0.write() {
                *slot = Some((Instant::now(), value.clone()));
            }
        }
        value
    }

    fn clear(&self) {
        if let Ok(mut slot) = self.0.write() {
            *slot = None;
        }
    }
}

impl StockCache {
    pub fn new(ttl: Duration, max_bytes: u64) -> StockCache {
        let details = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, detail: &Detail| weight(detail))
                .time_to_live(ttl)
                .build()
        });
        StockCache {
            ttl,
            details,
            list: Slot::new(),
            detailed_list: Slot::new(),
        }
    }

    /// The stock `id` (`None`: no such stock) from the cache, else from `load`, shared by the
    /// concurrent callers for that id. Errors are not cached.
    pub async fn detail<F>(&self, id: Uuid, load: F) -> Result<Detail, ApiError>
    where
        F: Future<Output = Result<Option<StockDetail>, ApiError>>,
    {
        let Some(details) = &self.details else {
            return load.await.map(Arc::new);
        };
        details
            .try_get_with(id, async move { load.await.map(Arc::new) })
            .await
            .map_err(ApiError::shared)
    }

    pub fn list(&self) -> Option<Arc<Vec<StockRow>>> {
        self.list.get(self.ttl)
    }

    pub fn put_list(&self, value: Vec<StockRow>) -> Arc<Vec<StockRow>> {
        self.list.put(self.ttl, value)
    }

    pub fn detailed_list(&self) -> Option<Arc<Vec<StockDetail>>> {
        self.detailed_list.get(self.ttl)
    }

    pub fn put_detailed_list(&self, value: Vec<StockDetail>) -> Arc<Vec<StockDetail>> {
        self.detailed_list.put(self.ttl, value)
    }

    /// Forgets a stock after a local write, so its writer reads its own write at once.
    pub async fn invalidate(&self, id: Uuid) {
        if let Some(details) = &self.details {
            details.invalidate(&id).await;
        }
        self.list.clear();
        self.detailed_list.clear();
    }
}

/// Approximate bytes of a cached stock: the entry, its name and its analysis.
fn weight(detail: &Detail) -> u32 {
    let name = detail.as_ref().as_ref().map_or(0, |d| d.stock.name.len());
    (std::mem::size_of::<Uuid>() + std::mem::size_of::<Option<StockDetail>>() + name) as u32
}
