//! Recently verified credentials, for a minute, under a SHA-256 of the credentials (never the
//! password itself): clients send Basic credentials on every request and their check is slow by
//! design. A change to a user's credentials, on any replica, makes every replica forget that
//! user's entries (see [`crate::revocation`]).

use bourse_store::users::User;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers recently verified credentials (see the module doc).
pub struct CredentialCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Instant, User)>>,
    /// Counts the times users were forgotten. A lookup that started before one may have read the
    /// user as they were before the change: [`CredentialCache::put`] then drops its result.
    generation: AtomicU64,
}

const MAX_CREDENTIALS: usize = 10_000;

impl CredentialCache {
    pub fn new(ttl: Duration) -> CredentialCache {
        CredentialCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// To read before a lookup whose result will be `put`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every entry of these users (their credentials changed).
    pub fn forget_users(&self, users: &[uuid::Uuid]) {
        if let Ok(mut map) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            map.retain(|_, (_, user)| !users.contains(&user.id));
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<User> {
        let map = self.entries.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, u)| u.clone())
    }

    /// Remembers `user`, unless users were forgotten since `seen` (a [`generation`]).
    ///
    /// [`generation`]: CredentialCache::generation
    pub fn put(&self, key: [u8; 32], user: User, seen: u64) {
        if let Ok(mut map) = self.entries.lock() {
            if self.generation() != seen {
                return;
            }
            if map.len() >= MAX_CREDENTIALS {
                map.retain(|_, (at, _)| at.elapsed() < self.ttl);
                if map.len() >= MAX_CREDENTIALS {
                    map.clear();
                }
            }
            map.insert(key, (Instant::now(), user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_store::users::Role;

    fn user(name: &str) -> User {
        User {
            id: uuid::Uuid::new_v4(),
            username: name.into(),
            email: None,
            role: Role::User,
            active: true,
            token_version: 0,
        }
    }

    #[test]
    fn forgetting_a_user_drops_all_their_entries_and_only_theirs() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let (alice, bob) = (user("alice"), user("bob"));
        let seen = cache.generation();
        cache.put([1; 32], alice.clone(), seen);
        cache.put([2; 32], alice.clone(), seen);
        cache.put([3; 32], bob.clone(), seen);
        cache.forget_users(&[alice.id]);
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).is_none());
        assert_eq!(cache.get(&[3; 32]).map(|u| u.id), Some(bob.id));
    }

    #[test]
    fn a_lookup_that_overlapped_a_change_is_not_remembered() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let alice = user("alice");
        // The lookup starts, the change is applied meanwhile, then the lookup's answer arrives.
        let seen = cache.generation();
        cache.forget_users(&[alice.id]);
        cache.put([1; 32], alice.clone(), seen);
        assert!(cache.get(&[1; 32]).is_none());
        cache.put([1; 32], alice.clone(), cache.generation());
        assert!(cache.get(&[1; 32]).is_some());
    }
}
