//! Password hashing with argon2id (OWASP's first choice). Verification runs on the blocking pool:
//! it is deliberately slow and must not stall the async workers.
//!
//! [`Hashing`] bounds what checks cost: at most `concurrency` hashes run at once (each takes
//! argon2's 19 MiB), the others wait up to `wait` for a turn and are then refused (503), so a
//! storm of wrong passwords cannot take memory or every core. Unknown users and users without a
//! password are checked against a dummy hash of the same parameters, so that the answer's timing
//! does not tell which usernames exist.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Password hashes verified (real or dummy): what the throttle saves shows here.
pub const HASHES: &str = "bourse_password_hashes_total";
/// Password checks refused because every hashing slot stayed busy for the whole wait.
pub const BUSY: &str = "bourse_password_checks_busy_total";

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// False for a wrong password and for a malformed stored hash alike.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password with today's parameters, verified when there is no real one.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    let random: [u8; 16] = rand::random();
    hash(&hex::encode(random)).expect("argon2 hashes a random password")
});

/// Every hashing slot stayed busy for the whole wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Bounded, uniform-cost password checks (see the module doc).
pub struct Hashing {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Hashing {
    /// `concurrency` 0: one hash per core.
    pub fn new(concurrency: usize, wait: Duration) -> Hashing {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        LazyLock::force(&DUMMY);
        Hashing {
            permits: Arc::new(Semaphore::new(concurrency)),
            wait,
        }
    }

    /// True when `password` matches `stored`; with no stored hash, the dummy is verified and the
    /// answer is false. `Busy` when no slot freed up within the wait.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, Busy> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!(BUSY).increment(1);
                Busy
            })?
            .map_err(|_| Busy)?;
        let password = password.to_owned();
        let real = stored.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            metrics::counter!(HASHES).increment(1);
            let matched = verify(&password, real.as_deref().unwrap_or(&DUMMY));
            matched && real.is_some()
        })
        .await
        .map_err(|_| Busy)
    }
}

impl Default for Hashing {
    fn default() -> Hashing {
        Hashing::new(0, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("s3cret", "not a hash"));
    }

    #[test]
    fn the_dummy_has_todays_parameters() {
        let real = PasswordHash::new(&hash("x").unwrap())
            .unwrap()
            .params
            .to_string();
        assert_eq!(PasswordHash::new(&DUMMY).unwrap().params.to_string(), real);
    }

    #[tokio::test]
    async fn no_stored_hash_never_matches() {
        let hashing = Hashing::new(1, Duration::from_secs(5));
        let stored = hash("pw").unwrap();
        assert_eq!(hashing.verify("pw", Some(&stored)).await, Ok(true));
        assert_eq!(hashing.verify("nope", Some(&stored)).await, Ok(false));
        assert_eq!(hashing.verify("pw", None).await, Ok(false));
    }

    #[tokio::test]
    async fn refused_when_every_slot_stays_busy() {
        let hashing = Hashing::new(1, Duration::from_millis(1));
        let held = Arc::clone(&hashing.permits).acquire_owned().await.unwrap();
        assert_eq!(hashing.verify("pw", None).await, Err(Busy));
        drop(held);
        assert_eq!(hashing.verify("pw", None).await, Ok(false));
    }
}
