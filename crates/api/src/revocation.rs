//! Ending access on every replica: when a user is disabled, gets a new password or has their API
//! keys revoked (by `bourse user …`, on any machine), each replica forgets that user's cached
//! credentials, so the next request checks them against the database again. Login tokens also
//! carry a version that those changes bump (see [`crate::jwt`]).

use crate::credential_cache::CredentialCache;
use bourse_store::credentials::CredentialWatch;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Follows the credential changes recorded in the database until `shutdown` (see
/// [`bourse_store::credentials`] for how a change reaches a replica).
pub fn forget_on_changes(
    cache: Arc<CredentialCache>,
    mut watch: CredentialWatch,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let changed = tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = watch.next() => changed,
            };
            match changed {
                Ok(users) => {
                    cache.forget_users(&users);
                    tracing::info!(?users, "credentials changed: cached entries forgotten");
                }
                // The watch keeps its place and paces itself: the next call retries.
                Err(e) => tracing::warn!(error = %e, "credential changes could not be read"),
            }
        }
    })
}
