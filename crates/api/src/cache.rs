//! A micro-cache for the hottest reads (`GET /stocks`, `GET /stocks/{id}`).
//!
//! Entries live for a few tens of milliseconds. That bounds staleness well under the promise that "any
//! replica shows a committed price within 100 ms" (ticks may be committed by another replica, so
//! local invalidation alone could not promise that) while turning thousands of identical reads
//! per second into a handful of queries.
//!
//! The two lists are [`moka`] caches of one entry each. Stocks by id are kept in a [`moka`] cache
//! bounded by bytes (`BOURSE_STOCK_CACHE_BYTES`): requests for random ids evict the least useful
//! entries, never the whole cache, and concurrent misses of one id share one query.

use crate::ApiError;
use bourse_store::feed::{StockDetail, StockRow};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

type Detail = Arc<Option<StockDetail>>;

/// A whole list, the one entry under `()`.
type ListCache<T> = moka::sync::Cache<(), Arc<T>>;

/// `None` when the TTL is zero (no cache).
fn list_cache<T: Send + Sync + 'static>(ttl: Duration) -> Option<ListCache<T>> {
    (!ttl.is_zero()).then(|| moka::sync::Cache::builder().time_to_live(ttl).build())
}

/// The list as loaded, remembered in `cache` when there is one.
fn put<T: Send + Sync + 'static>(cache: &Option<ListCache<T>>, value: T) -> Arc<T> {
    let value = Arc::new(value);
    if let Some(cache) = cache {
        cache.insert((), Arc::clone(&value));
    }
    value
}

pub struct StockCache {
    /// `None` when the TTL is zero (no cache), like the lists.
    details: Option<moka::future::Cache<Uuid, Detail>>,
    list: Option<ListCache<Vec<StockRow>>>,
    /// The list with each stock's analysis (`GET /stocks?include=technical_analysis`).
    detailed_list: Option<ListCache<Vec<StockDetail>>>,
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
            details,
            list: list_cache(ttl),
            detailed_list: list_cache(ttl),
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
        self.list.as_ref()?.get(&())
    }

    pub fn put_list(&self, value: Vec<StockRow>) -> Arc<Vec<StockRow>> {
        put(&self.list, value)
    }

    pub fn detailed_list(&self) -> Option<Arc<Vec<StockDetail>>> {
        self.detailed_list.as_ref()?.get(&())
    }

    pub fn put_detailed_list(&self, value: Vec<StockDetail>) -> Arc<Vec<StockDetail>> {
        put(&self.detailed_list, value)
    }

    /// Forgets a stock after a local write, so its writer reads its own write at once.
    pub async fn invalidate(&self, id: Uuid) {
        if let Some(details) = &self.details {
            details.invalidate(&id).await;
        }
        if let Some(list) = &self.list {
            list.invalidate(&());
        }
        if let Some(list) = &self.detailed_list {
            list.invalidate(&());
        }
    }
}

/// Approximate bytes of a cached stock: the entry, its name and its analysis.
fn weight(detail: &Detail) -> u32 {
    let name = detail.as_ref().as_ref().map_or(0, |d| d.stock.name.len());
    (std::mem::size_of::<Uuid>() + std::mem::size_of::<Option<StockDetail>>() + name) as u32
}
