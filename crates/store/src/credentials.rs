//! Ending a user's access: disabling, enabling, a new password, revoking API keys; and the
//! feed of those changes that lets every API replica forget the user's cached credentials.
//!
//! Each change updates the user (or their keys) and appends a row to `credential_changes` in one
//! transaction. Replicas read the rows after the last one they saw: on PostgreSQL when
//! `NOTIFY bourse_credentials` wakes them (sent by the same transaction, so on commit) and on a
//! timer in any case, because a notification sent while a listener reconnects is lost; on SQLite,
//! which has no notifications between processes, on the timer alone (an index probe a second).

use crate::row::Columns;
use crate::{Store, StoreError};
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

/// A change to a user's credentials.
#[derive(Clone)]
pub enum CredentialChange {
    /// Refuse every credential of the user and end their login tokens.
    Disable,
    /// Accept the user's password and API keys again (login tokens ended by a disable stay ended).
    Enable,
    /// Replace the password (its hash) and end the user's login tokens.
    Password(String),
    /// Revoke every API key of the user. Login tokens stay: they were issued for the password,
    /// and no key can be exchanged for one.
    RevokeKeys,
}

impl std::fmt::Debug for CredentialChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.action())
    }
}

impl CredentialChange {
    /// The name recorded in `credential_changes.action` (never the hash).
    pub fn action(&self) -> &'static str {
        match self {
            CredentialChange::Disable => "disable",
            CredentialChange::Enable => "enable",
            CredentialChange::Password(_) => "password",
            CredentialChange::RevokeKeys => "revoke-keys",
        }
    }
}

/// A row of `seq, user_id` of `credential_changes`.
pub(crate) fn change(r: &impl Columns) -> Result<(i64, Uuid), StoreError> {
    Ok((r.int(0)?, r.uuid(1)?))
}

/// A notification that changes were recorded (on PostgreSQL, `LISTEN`).
#[async_trait]
pub trait ChangeSignal: Send {
    /// Waits for the next notification; cancel-safe. After an error it reconnects by itself.
    async fn recv(&mut self) -> Result<(), StoreError>;
}

impl Store {
    /// Applies `change` to the user `id` and records it, in one transaction; returns the rows
    /// changed (for `RevokeKeys`, the keys revoked).
    pub async fn change_credentials(
        &self,
        id: Uuid,
        change: &CredentialChange,
    ) -> Result<u64, StoreError> {
        self.users.change_credentials(id, change).await
    }

    /// The last recorded change (0 when there is none).
    pub async fn latest_credential_change(&self) -> Result<i64, StoreError> {
        self.users.latest_credential_change().await
    }

    /// The changes after `seq`, oldest first: `(seq, user id)`.
    pub async fn credential_changes_since(&self, seq: i64) -> Result<Vec<(i64, Uuid)>, StoreError> {
        self.users.credential_changes_since(seq).await
    }

    /// Starts following credential changes from now on (see the module doc).
    pub async fn watch_credentials(&self, every: Duration) -> Result<CredentialWatch, StoreError> {
        let signal = self.users.change_signal().await?;
        let mut timer = tokio::time::interval(every.max(Duration::from_millis(10)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(CredentialWatch {
            last: self.latest_credential_change().await?,
            store: self.clone(),
            signal,
            timer,
        })
    }
}

/// Credential changes as they happen, from [`Store::watch_credentials`].
pub struct CredentialWatch {
    store: Store,
    last: i64,
    signal: Option<Box<dyn ChangeSignal>>,
    timer: tokio::time::Interval,
}

impl CredentialWatch {
    /// Waits for the next changes and returns the users they concern.
    pub async fn next(&mut self) -> Result<Vec<Uuid>, StoreError> {
        loop {
            match &mut self.signal {
                // An error is returned once (and then the timer paces the retries).
                Some(signal) => tokio::select! {
                    woken = signal.recv() => {
                        if let Err(e) = woken {
                            tracing::warn!(error = %e, "credential notifications interrupted");
                            self.timer.tick().await;
                        }
                    }
                    _ = self.timer.tick() => {}
                },
                None => {
                    self.timer.tick().await;
                }
            }
            let changes = self.store.credential_changes_since(self.last).await?;
            if let Some((seq, _)) = changes.last() {
                self.last = *seq;
                return Ok(changes.into_iter().map(|(_, user)| user).collect());
            }
        }
    }
}
