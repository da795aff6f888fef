//! `bourse user ...`: user administration from the command line.

use super::connect;
use crate::config::Database;
use anyhow::Context;
use bourse_store::credentials::CredentialChange;
use bourse_store::users::{NewUser, Role, User};
use bourse_store::Store;
use std::io::{IsTerminal, Read};

pub async fn create(
    config: &Database,
    username: &str,
    password: &str,
    email: Option<String>,
    admin: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!username.trim().is_empty(), "--username must not be empty");
    acceptable(password)?;
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

fn acceptable(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        password.len() >= 4,
        "the password must have at least 4 characters"
    );
    Ok(())
}

/// The user named `username`, or an error that names it.
async fn find(store: &Store, username: &str) -> anyhow::Result<User> {
    store
        .credentials_by_username(username.trim())
        .await?
        .map(|c| c.user)
        .with_context(|| format!("no user named {:?}", username.trim()))
}

/// Issues a new API key for `username` and prints it on stdout (nothing else goes there, so
/// `KEY=$(bourse user token --username alice)` works). Earlier keys stay valid.
pub async fn token(config: &Database, username: &str) -> anyhow::Result<()> {
    let store = connect(config).await?;
    store.migrate().await?;
    let user = find(&store, username).await?;
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

/// What `bourse user disable|enable|password|revoke-keys` asks for.
pub enum Lifecycle {
    Disable,
    Enable,
    /// The new password, if given with `--password`; else it is read (see [`new_password`]).
    Password(Option<String>),
    RevokeKeys,
}

/// Changes `username`'s credentials. Every running `serve` stops accepting what the change ends
/// within `BOURSE_CREDENTIALS_CHECK_MS` (see `bourse_api::revocation`).
pub async fn change(config: &Database, username: &str, what: Lifecycle) -> anyhow::Result<()> {
    let change = match what {
        Lifecycle::Disable => CredentialChange::Disable,
        Lifecycle::Enable => CredentialChange::Enable,
        Lifecycle::RevokeKeys => CredentialChange::RevokeKeys,
        Lifecycle::Password(given) => {
            let password = match given {
                Some(p) => p,
                None => new_password()?,
            };
            acceptable(&password)?;
            CredentialChange::Password(bourse_api::password::hash(&password)?)
        }
    };
    let store = connect(config).await?;
    store.migrate().await?;
    let user = find(&store, username).await?;
    let changed = store.change_credentials(user.id, &change).await?;
    store.close().await;
    match change {
        CredentialChange::Disable => println!(
            "disabled {}: every credential refused, login tokens ended",
            user.username
        ),
        CredentialChange::Enable => println!("enabled {}", user.username),
        CredentialChange::Password(_) => println!(
            "new password for {}: the old one and login tokens ended",
            user.username
        ),
        CredentialChange::RevokeKeys => {
            println!("revoked {changed} API key(s) of {}", user.username)
        }
    }
    Ok(())
}

/// The new password: asked twice on the terminal (not echoed) when stdin is one, else stdin's
/// first line, so that `printf '%s\n' "$PW" | bourse user password --username U` works.
fn new_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the passwords differ");
        return Ok(first);
    }
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .context("cannot read the password from stdin")?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}
