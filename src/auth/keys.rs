//! High-entropy secrets get a fast hash: SHA-256 at rest, constant-time comparison.
//!
//! Keys are 43 base62 characters (~256 bits) behind a readable prefix, shown once when
//! they are made. Only the hash and the last few characters are kept.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::ids::random_base62;

/// What kind of secret a value is; the prefix tells a reader at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// Authenticates a sender on one webhook URL.
    WebhookKey,
    /// Authenticates the call runtime for one agent.
    RuntimeToken,
    /// An admin's browser session (in a cookie).
    Session,
    /// The one-time link that creates the first admin.
    Setup,
    /// Authenticates automation on the management API, for one admin.
    ApiToken,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::WebhookKey => "pcwk_",
            Self::RuntimeToken => "pcrt_",
            Self::Session => "pcs_",
            Self::Setup => "pcsetup_",
            Self::ApiToken => "pcat_",
        }
    }
}

/// A freshly made secret. Its `Debug` never shows it.
pub struct Secret(String);

const SECRET_CHARS: usize = 43;
/// How many trailing characters pages may show to identify a key.
pub const SHOWN_CHARS: usize = 4;

impl Secret {
    pub fn generate(kind: SecretKind) -> Self {
        Self(format!("{}{}", kind.prefix(), random_base62(SECRET_CHARS)))
    }

    /// The whole secret, for its one showing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }

    /// The last characters, safe to show later to tell keys apart.
    pub fn last_chars(&self) -> String {
        self.0[self.0.len() - SHOWN_CHARS..].to_owned()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(…{})", self.last_chars())
    }
}

/// SHA-256 of a secret, as stored.
#[derive(Clone, Copy)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }

    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality, so timing says nothing about how much of a guess matched.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_their_prefix_and_enough_randomness() {
        let key = Secret::generate(SecretKind::WebhookKey);
        assert!(key.expose().starts_with("pcwk_"));
        assert_eq!(key.expose().len(), 5 + 43);
        assert_ne!(
            key.expose(),
            Secret::generate(SecretKind::WebhookKey).expose()
        );
    }

    #[test]
    fn hash_matches_only_the_same_secret() {
        let key = Secret::generate(SecretKind::RuntimeToken);
        assert!(key.hash().matches(&SecretHash::of(key.expose())));
        assert!(!key.hash().matches(&SecretHash::of("pcrt_wrong")));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = Secret::generate(SecretKind::WebhookKey);
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(&key.expose()[5..20]), "{shown}");
        assert!(shown.contains(&key.last_chars()));
    }
}
