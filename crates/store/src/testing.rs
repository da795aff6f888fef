//! Throw-away databases for tests: a fresh PostgreSQL database (on the server named by
//! `BOURSE_TEST_PG_URL`, default the local one) or a fresh SQLite file. Tests fail, never skip,
//! when PostgreSQL does not answer.

use crate::{ConnectOptions, Store};
use sqlx::Connection;

/// The admin URL of the PostgreSQL server used by tests.
pub fn pg_admin_url() -> String {
    std::env::var("BOURSE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists only for one test. Dropping it does not remove the database (async
/// drop is not possible); `.ci/run` removes leftovers named `bourse_test_*` before each run.
pub struct TestDb {
    pub url: String,
    pub name: Option<String>,
    _dir: Option<tempfile_dir::TempDir>,
}

mod tempfile_dir {
    /// Minimal temporary directory, removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    pub async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        let name = format!("bourse_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} does not answer: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            name: Some(name),
            _dir: None,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir =
            std::env::temp_dir().join(format!("bourse-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TestDb {
            url: format!("sqlite://{}", dir.join("test.db").display()),
            name: None,
            _dir: Some(tempfile_dir::TempDir(dir)),
        }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, &ConnectOptions::default())
            .await
            .expect("connect test database");
        store.migrate().await.expect("migrate test database");
        store
    }

    /// Drops the PostgreSQL database (call at the end of a test).
    pub async fn drop_db(self) {
        if let Some(name) = &self.name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// Runs a repository test against a fresh SQLite store, then a fresh PostgreSQL database, which
/// is dropped afterwards; every repository behaviour must hold on both engines.
pub async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sqlite = TestDb::sqlite();
    test(sqlite.store().await).await;
    let pg = TestDb::postgres().await;
    let store = pg.store().await;
    test(store.clone()).await;
    store.close().await;
    pg.drop_db().await;
}
