//! API keys: issued by `POST /register` and `bourse user token`, sent as
//! `Authorization: Token <key>`.
//!
//! A key is 256 bits from the operating system's CSPRNG, shown once as 64 lowercase hex
//! characters. Only its SHA-256 is stored. A slow password hash (argon2) protects *guessable*
//! secrets against offline brute force; a uniformly random 256-bit key cannot be guessed, so a
//! fast hash loses nothing, and because the same key always gives the same hash, the key is found
//! with one indexed lookup instead of a scan that verifies every stored hash. A stolen database
//! still yields no usable key.

use bourse_store::users::NewApiKey;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Characters of a key as shown (hex).
pub const KEY_LEN: usize = KEY_BYTES * 2;
/// Characters kept in clear to recognise a key in a list.
const PREFIX_LEN: usize = 8;

/// A freshly issued key: the secret to show once, and what the store keeps.
pub struct IssuedKey {
    pub key: String,
    pub stored: NewApiKey,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("prefix", &self.stored.prefix)
            .finish_non_exhaustive()
    }
}

/// Draws a new key.
pub fn generate() -> IssuedKey {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    IssuedKey {
        stored: NewApiKey {
            hash: hash(&key),
            prefix: key[..PREFIX_LEN].to_owned(),
        },
        key,
    }
}

/// The stored form of a key: hex SHA-256.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// True when `text` has the shape of a key we issue, so that anything else is refused without a
/// database round trip.
pub fn well_formed(text: &str) -> bool {
    text.len() == KEY_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_hex_and_stored_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a.key, b.key);
        assert!(well_formed(&a.key), "{}", a.key);
        assert_eq!(a.stored.hash, hash(&a.key));
        assert_ne!(a.stored.hash, a.key);
        assert_eq!(a.stored.hash.len(), 64);
        assert!(a.key.starts_with(&a.stored.prefix));
        assert!(
            !format!("{a:?}").contains(&a.key),
            "Debug never shows the key"
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_our_shape_is_well_formed() {
        assert!(well_formed(&"0a".repeat(32)));
        for bad in [
            String::new(),
            "0a".repeat(31),
            "0A".repeat(32),
            "0g".repeat(32),
            format!("{} ", "0a".repeat(32)),
        ] {
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }
}
