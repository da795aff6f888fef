//! Credential changes (disable, enable, password, revoke keys) and the watch that tells replicas
//! about them, on SQLite and on the local PostgreSQL.

use bourse_store::credentials::CredentialChange;
use bourse_store::testing::on_both;
use bourse_store::users::{NewApiKey, NewUser, Role};
use bourse_store::{Engine, Store};
use std::time::Duration;

fn person(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: None,
        first_name: None,
        last_name: None,
        password_hash: Some("old-hash".into()),
        role: Role::User,
    }
}

fn key(n: u8) -> NewApiKey {
    NewApiKey {
        hash: format!("{n:02x}").repeat(32),
        prefix: format!("{n:02x}"),
    }
}

async fn credentials(store: &Store, name: &str) -> (bool, i64, Option<String>) {
    let c = store.credentials_by_username(name).await.unwrap().unwrap();
    (c.user.active, c.user.token_version, c.password_hash)
}

#[tokio::test]
async fn changes_apply_and_bump_the_token_version_where_they_end_tokens() {
    on_both(|store| async move {
        let alice = store.create_user(&person("alice")).await.unwrap();
        let bob = store.create_user(&person("bob")).await.unwrap();
        assert_eq!(alice.token_version, 0);
        store.add_api_key(alice.id, &key(1)).await.unwrap();
        store.add_api_key(alice.id, &key(2)).await.unwrap();
        store.add_api_key(bob.id, &key(3)).await.unwrap();
        let old = Some("old-hash".to_string());

        let disable = CredentialChange::Disable;
        assert_eq!(
            store.change_credentials(alice.id, &disable).await.unwrap(),
            1
        );
        assert_eq!(credentials(&store, "alice").await, (false, 1, old.clone()));
        let enable = CredentialChange::Enable;
        store.change_credentials(alice.id, &enable).await.unwrap();
        assert_eq!(credentials(&store, "alice").await, (true, 1, old.clone()));
        let password = CredentialChange::Password("new-hash".into());
        store.change_credentials(alice.id, &password).await.unwrap();
        let new = Some("new-hash".to_string());
        assert_eq!(credentials(&store, "alice").await, (true, 2, new.clone()));

        // Revoking counts the keys it ended, leaves the version and other users' keys alone.
        let revoke = CredentialChange::RevokeKeys;
        assert_eq!(
            store.change_credentials(alice.id, &revoke).await.unwrap(),
            2
        );
        assert_eq!(
            store.change_credentials(alice.id, &revoke).await.unwrap(),
            0
        );
        assert_eq!(credentials(&store, "alice").await, (true, 2, new));
        assert!(store.user_by_api_key(&key(1).hash).await.unwrap().is_none());
        assert!(store.user_by_api_key(&key(2).hash).await.unwrap().is_none());
        assert_eq!(
            store
                .user_by_api_key(&key(3).hash)
                .await
                .unwrap()
                .map(|u| u.id),
            Some(bob.id)
        );
        assert_eq!(credentials(&store, "bob").await, (true, 0, old));

        // Every change is recorded, in order.
        let changes = store.credential_changes_since(0).await.unwrap();
        assert_eq!(changes.len(), 5);
        assert!(changes.iter().all(|(_, user)| *user == alice.id));
        assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(
            store.latest_credential_change().await.unwrap(),
            changes[4].0
        );
        assert!(store
            .credential_changes_since(changes[4].0)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_watch_reports_changes_made_after_it_started() {
    on_both(|store| async move {
        let alice = store.create_user(&person("alice")).await.unwrap();
        let bob = store.create_user(&person("bob")).await.unwrap();
        store
            .change_credentials(bob.id, &CredentialChange::Disable)
            .await
            .unwrap();
        // On PostgreSQL the notification must wake the watch long before its 30 s timer; SQLite
        // has only the timer.
        let every = match store.engine() {
            Engine::Postgres => Duration::from_secs(30),
            Engine::Sqlite => Duration::from_millis(100),
        };
        let mut watch = store.watch_credentials(every).await.unwrap();
        let writer = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer
                .change_credentials(alice.id, &CredentialChange::RevokeKeys)
                .await
                .unwrap();
        });
        // The first tick of the timer is at once: it finds nothing (bob's change came before).
        let users = tokio::time::timeout(Duration::from_secs(3), watch.next())
            .await
            .expect("reported within 3 s")
            .unwrap();
        assert_eq!(users, vec![alice.id]);
    })
    .await;
}
