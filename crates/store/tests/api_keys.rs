//! API key repository tests, on SQLite and on the local PostgreSQL.

use bourse_store::testing::on_both;
use bourse_store::users::{NewApiKey, NewUser, Role};
use bourse_store::StoreError;

fn registration(email: &str) -> NewUser {
    NewUser {
        username: email.into(),
        email: Some(email.into()),
        first_name: Some("Dave".into()),
        last_name: Some("Mustaine".into()),
        password_hash: None,
        role: Role::User,
    }
}

fn key(n: u8) -> NewApiKey {
    NewApiKey {
        hash: format!("{n:02x}").repeat(32),
        prefix: format!("{n:02x}{n:02x}"),
    }
}

#[tokio::test]
async fn a_registered_user_is_found_by_the_hash_of_their_key() {
    on_both(|store| async move {
        let user = store
            .register_user(&registration("dave@example.com"), &key(1))
            .await
            .unwrap();
        assert_eq!(user.username, "dave@example.com");
        assert_eq!(user.role, Role::User);
        let found = store.user_by_api_key(&key(1).hash).await.unwrap();
        assert_eq!(found, Some(user.clone()));
        assert_eq!(store.user_by_api_key(&key(2).hash).await.unwrap(), None);

        // A second key for the same user; both work.
        store.add_api_key(user.id, &key(2)).await.unwrap();
        assert_eq!(
            store.user_by_api_key(&key(2).hash).await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(
            store.user_by_api_key(&key(1).hash).await.unwrap(),
            Some(user.clone())
        );
        // The same hash twice is a conflict, never a silent reassignment.
        let err = store.add_api_key(user.id, &key(1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        // No password: such a user cannot log in with one.
        let creds = store
            .credentials_by_username("dave@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(creds.password_hash, None);
    })
    .await;
}

#[tokio::test]
async fn a_refused_registration_leaves_neither_user_nor_key() {
    on_both(|store| async move {
        store
            .register_user(&registration("dave@example.com"), &key(1))
            .await
            .unwrap();
        let err = store
            .register_user(&registration("DAVE@Example.COM"), &key(3))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(store.user_by_api_key(&key(3).hash).await.unwrap(), None);
        assert_eq!(store.count_users().await.unwrap(), 1);

        // A duplicated key rolls the new user back too.
        let err = store
            .register_user(&registration("other@example.com"), &key(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(store
            .credentials_by_username("other@example.com")
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.count_users().await.unwrap(), 1);
    })
    .await;
}
