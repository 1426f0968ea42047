//! Admin passwords: argon2id, hashed and verified on blocking threads.

use std::fmt;
use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// A password as typed. Its `Debug` never shows it.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

impl Password {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// Long enough to resist guessing, short enough not to be a denial of service.
    pub fn check_strength(&self) -> Result<(), String> {
        let n = self.0.chars().count();
        if n < MIN_LEN {
            return Err(format!(
                "the password must be at least {MIN_LEN} characters"
            ));
        }
        if n > MAX_LEN {
            return Err(format!("the password must be at most {MAX_LEN} characters"));
        }
        Ok(())
    }

    pub fn matches(&self, other: &Password) -> bool {
        self.0 == other.0
    }
}

/// argon2id with the crate's recommended parameters (19 MiB, 2 passes).
pub async fn hash(password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.0.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await?
}

/// A hash to verify against when the account does not exist, so that timing does not
/// tell which emails have accounts.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"precall-dummy-password", &salt)
        .expect("hashing a constant")
        .to_string()
});

/// Whether `password` matches `stored` (or, when there is no account, spends the same time
/// finding that it does not).
pub async fn verify(password: Password, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.0.as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = hash(Password::new("correct horse battery".into()))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify(
                Password::new("correct horse battery".into()),
                Some(h.clone())
            )
            .await
        );
        assert!(!verify(Password::new("wrong horse battery".into()), Some(h)).await);
        assert!(!verify(Password::new("anything at all".into()), None).await);
    }

    #[test]
    fn short_passwords_are_refused_and_debug_hides_them() {
        assert!(Password::new("short".into()).check_strength().is_err());
        assert!(
            Password::new("long enough pass".into())
                .check_strength()
                .is_ok()
        );
        assert_eq!(
            format!("{:?}", Password::new("secret123456".into())),
            "Password(…)"
        );
    }
}
