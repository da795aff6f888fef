//! A micro-cache for the hottest reads (`GET /stocks`, `GET /stocks/{id}`).
//!
//! Entries live for a few tens of milliseconds. That bounds staleness well under the promise that "any
//! replica shows a committed price within 100 ms" (ticks may be committed by another replica, so
//! local invalidation alone could not promise that) while turning thousands of identical reads
//! per second into a handful of queries.

use bourse_store::feed::{StockDetail, StockRow};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

type Entry<T> = (Instant, Arc<T>);

pub struct StockCache {
    ttl: Duration,
    details: RwLock<HashMap<Uuid, Entry<Option<StockDetail>>>>,
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

/// Bound on cached ids, so that requests for random ids cannot grow memory without limit.
const MAX_ENTRIES: usize = 100_000;

impl StockCache {
    pub fn new(ttl: Duration) -> StockCache {
        StockCache {
            ttl,
            details: RwLock::new(HashMap::new()),
            list: Slot::new(),
            detailed_list: Slot::new(),
        }
    }

    fn fresh<T>(&self, entry: &Entry<T>) -> Option<Arc<T>> {
        (entry.0.elapsed() < self.ttl).then(|| entry.1.clone())
    }

    pub fn detail(&self, id: Uuid) -> Option<Arc<Option<StockDetail>>> {
        let map = self.details.read().ok()?;
        map.get(&id).and_then(|e| self.fresh(e))
    }

    pub fn put_detail(&self, id: Uuid, value: Option<StockDetail>) -> Arc<Option<StockDetail>> {
        let value = Arc::new(value);
        if self.ttl.is_zero() {
            return value;
        }
        if let Ok(mut map) = self.details.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(id, (Instant::now(), value.clone()));
        }
        value
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
    pub fn invalidate(&self, id: Uuid) {
        if let Ok(mut map) = self.details.write() {
            map.remove(&id);
        }
        self.list.clear();
        self.detailed_list.clear();
    }
}
