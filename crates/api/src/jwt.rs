//! JSON Web Tokens for `POST /login` and `Authorization: Bearer`: HS256, 60-minute expiry.
//! The token names the user by id and carries their token version; the user is still looked up
//! on use and must be active with the same version, so disabling a user or changing their
//! password ends the tokens issued before without waiting for them to expire.

use chrono::Utc;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const TOKEN_LIFETIME_SECS: i64 = 60 * 60;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub username: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token version at issue (absent in tokens from before versions: 0).
    #[serde(default)]
    pub ver: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, user: Uuid, username: &str, version: i64) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            username: username.to_string(),
            iat: now,
            exp: now + TOKEN_LIFETIME_SECS,
            ver: version,
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid, unexpired token signed with our secret; `None` otherwise.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies() {
        let keys = JwtKeys::new(b"secret");
        let id = Uuid::new_v4();
        let token = keys.issue(id, "alice", 3).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.ver, 3);
        assert_eq!(claims.exp - claims.iat, TOKEN_LIFETIME_SECS);
        assert!(
            JwtKeys::new(b"other").verify(&token).is_none(),
            "wrong secret"
        );
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 5, 'x');
        assert!(keys.verify(&tampered).is_none(), "tampered payload");
    }

    #[test]
    fn tokens_from_before_versions_read_as_version_zero() {
        let keys = JwtKeys::new(b"secret");
        let claims = serde_json::json!({
            "sub": Uuid::new_v4(),
            "username": "a",
            "iat": 0,
            "exp": Utc::now().timestamp() + 100,
        });
        let token = encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&token).unwrap().ver, 0);
    }

    #[test]
    fn refuses_expired_tokens() {
        let keys = JwtKeys::new(b"secret");
        let claims = Claims {
            sub: Uuid::new_v4(),
            username: "a".into(),
            iat: 0,
            exp: Utc::now().timestamp() - 1,
            ver: 0,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&token).is_none());
    }

    #[test]
    fn refuses_other_algorithms() {
        let keys = JwtKeys::new(b"secret");
        let claims = Claims {
            sub: Uuid::new_v4(),
            username: "a".into(),
            iat: 0,
            exp: Utc::now().timestamp() + 100,
            ver: 0,
        };
        let token = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(keys.verify(&token).is_none());
    }
}
