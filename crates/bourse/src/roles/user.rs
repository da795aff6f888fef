//! `bourse user ...`: user administration from the command line.

use super::connect;
use crate::config::Config;
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
