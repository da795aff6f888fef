//! Configuration: built-in defaults, then `bourse.toml` (or `--config FILE`), then `BOURSE_*`
//! environment variables, then command-line flags; each layer overrides the one before.
//!
//! The settings are grouped in sections (`sections.rs`); each role's flags are the sections it
//! uses, declared with `role_config!`. clap reads the flags and the environment (and writes
//! `--help` from the same definitions); figment slips `bourse.toml` in under them.

mod sections;

pub use sections::*;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// A role's configuration: the sections it uses, always with logging.
pub trait RoleConfig: Serialize + DeserializeOwned {
    fn log(&self) -> &Log;
}

/// Declares a role's configuration: a clap `Args` struct of the given sections plus `log`, each
/// flattened (flags and `bourse.toml` keys stay flat: `--database-url`, `database_url`).
#[macro_export]
macro_rules! role_config {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident: $section:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Clone)]
        $vis struct $name {
            $(
                #[command(flatten)]
                #[serde(flatten)]
                pub $field: $section,
            )*
            #[command(flatten)]
            #[serde(flatten)]
            pub log: $crate::config::Log,
        }

        impl $crate::config::RoleConfig for $name {
            fn log(&self) -> &$crate::config::Log {
                &self.log
            }
        }
    };
}

role_config! {
    /// Every section: `bourse serve` runs every part in one process.
    pub struct Config {
        http: Http,
        database: Database,
        feed: Feed,
        quotes: Quotes,
        amqp: Amqp,
        orders: Orders,
        quotas: Quotas,
        api: Api,
        auth: Auth,
    }
}

/// Layers `bourse.toml` (or `file`) under what clap read: values that clap took from a flag or
/// a variable (`matches` tells which) win over the file, the file wins over clap's defaults.
pub fn load<T: RoleConfig>(
    parsed: T,
    matches: &ArgMatches,
    file: Option<&Path>,
) -> anyhow::Result<T> {
    let all = serde_json::to_value(&parsed).context("configuration as JSON")?;
    let mut given = all.clone();
    if let Some(fields) = given.as_object_mut() {
        fields.retain(|id, _| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        });
    }
    let mut figment = Figment::from(Serialized::defaults(all));
    match file {
        Some(path) => {
            anyhow::ensure!(path.exists(), "config file {} not found", path.display());
            figment = figment.merge(Toml::file(path));
        }
        None => figment = figment.merge(Toml::file("bourse.toml")),
    }
    figment
        .merge(Serialized::defaults(given))
        .extract()
        .context("invalid configuration")
}

/// clap's parser for secrets: the value goes straight into a `SecretString`.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(value.into())
}

/// clap's parser for a type that serde reads from a string (an enum of another crate).
fn from_str_serde<T: DeserializeOwned>(value: &str) -> Result<T, String> {
    use serde::de::value::{Error, StrDeserializer};
    T::deserialize(StrDeserializer::<Error>::new(value)).map_err(|e| e.to_string())
}

/// An empty value means unset, as shells and compose files often pass them.
fn non_empty<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|v| !v.trim().is_empty())
        .map(T::from))
}

/// figment layers the values through serde: secrets are written out for it only.
fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_option<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, s),
        None => s.serialize_none(),
    }
}

/// The configuration reference in docs/operations.md is generated from these definitions and
/// checked.
#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::{load, Config, RelayMode};
    use clap::{Args, FromArgMatches};

    /// Precedence: a flag beats `bourse.toml`, which beats the default; an empty value is unset.
    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("bourse.toml");
        let toml = "database_max_connections = 3\nquota_user_per_day = 7\nmqtt_url = \"\"\n\
                    relay = \"off\"\njwt_secret = \"from-the-file-0123456789\"\n";
        std::fs::write(&file, toml).expect("write bourse.toml");
        // Without the variables, whatever the test's own environment holds.
        let cmd = Config::augment_args(clap::Command::new("serve")).mut_args(|a| a.env(None));
        let matches = cmd.get_matches_from(["serve", "--quota-user-per-day", "9", "--log", "warn"]);
        let parsed = Config::from_arg_matches(&matches).expect("parsed");
        let config = load(parsed, &matches, Some(&file)).expect("loaded");
        assert_eq!(config.database.database_max_connections, 3);
        assert_eq!(config.quotas.quota_user_per_day, 9);
        assert_eq!(config.log.log, "warn");
        assert_eq!(config.orders.relay, RelayMode::Off);
        assert_eq!(config.http.http_max_connections, 4096);
        assert_eq!(config.feed.mqtt_url, None);
        let secret = config.auth.jwt_secret.expect("jwt secret");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&secret),
            "from-the-file-0123456789"
        );
    }
}
