//! `bourse user ...`: user administration from the command line.

use super::connect;
use crate::config::Config;
use anyhow::Context;
use bourse_store::users::{NewUser, Role};

pub async fn create(
    config: &Config,
    username: &str,
    password: &str,
    email: Option<String>,
    admin: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!username.trim().is_empty(), "--username must not be empty");
    anyhow::ensure!(
        password.len() >= 4,
        "--password must have at least 4 characters"
    );
    let store = connect(config).await?;
    store.migrate().await?;
    let role = if admin { Role::Admin } else { Role::User };
    let user = store
        .create_user(&NewUser {
            username: username.trim().to_string(),
            email,
            first_name: None,
            last_name: None,
            password_hash: Some(bourse_api::password::hash(password)?),
            role,
        })
        .await?;
    println!("created {} {} ({})", role.as_str(), user.username, user.id);
    store.close().await;
    Ok(())
}

/// Issues a new API key for `username` and prints it on stdout (nothing else goes there, so
/// `KEY=$(bourse user token --username alice)` works). Earlier keys stay valid.
pub async fn token(config: &Config, username: &str) -> anyhow::Result<()> {
    let store = connect(config).await?;
    store.migrate().await?;
    let user = store
        .credentials_by_username(username.trim())
        .await?
        .map(|c| c.user)
        .with_context(|| format!("no user named {:?}", username.trim()))?;
    anyhow::ensure!(user.active, "user {} is not active", user.username);
    let issued = bourse_api::api_key::generate();
    store.add_api_key(user.id, &issued.stored).await?;
    store.close().await;
    eprintln!(
        "new API key for {} (shown once; send it as `Authorization: Token <key>`):",
        user.username
    );
    println!("{}", issued.key);
    Ok(())
}
