//! Public identifiers: random base62 strings that are safe to show and to put in URLs.

use rand::Rng;
use rand::distr::Alphanumeric;
use std::fmt;

/// `len` random characters from `[A-Za-z0-9]`, drawn from the thread-local CSPRNG.
pub fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

macro_rules! base62_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const LEN: usize = $len;

            pub fn generate() -> Self {
                Self(random_base62(Self::LEN))
            }

            pub fn parse(s: &str) -> Result<Self, String> {
                if s.len() == Self::LEN && is_base62(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(format!(
                        "{} must be {} letters and digits, got {:?}",
                        $what,
                        Self::LEN,
                        crate::domain::ids::excerpt(s)
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

base62_id!(
    /// An agent's public id, the `agentId` senders and the call runtime use.
    AgentId, 20, "an agent id"
);
base62_id!(
    /// A call's public id: 8 characters of time, then 12 random ones (71 bits). Ids made
    /// later sort later, so storing a call touches the end of its index, not a random page.
    CallId, 20, "a call id"
);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl CallId {
    /// A new id for a call starting at `unix_ms`.
    pub fn generate_at(unix_ms: i64) -> Self {
        let mut time = [b'0'; 8];
        let mut t = unix_ms.max(0) as u64;
        for slot in time.iter_mut().rev() {
            *slot = BASE62[(t % 62) as usize];
            t /= 62;
        }
        let mut id = String::from_utf8(time.to_vec()).expect("ASCII");
        id.push_str(&random_base62(Self::LEN - 8));
        Self(id)
    }
}
base62_id!(
    /// The unguessable last segment of a webhook URL (24 base62 characters: ~143 bits).
    WebhookSlug, 24, "a webhook slug"
);

/// A short, printable excerpt of user input for error messages.
pub fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_agent_ids_parse_back() {
        let id = AgentId::generate();
        assert_eq!(id.as_str().len(), 20);
        assert_eq!(AgentId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn call_ids_made_later_sort_later() {
        let earlier = CallId::generate_at(1_795_000_000_000);
        let later = CallId::generate_at(1_795_000_000_001);
        assert!(earlier.as_str() < later.as_str());
        assert_eq!(earlier.as_str().len(), 20);
        assert!(CallId::parse(later.as_str()).is_ok());
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(WebhookSlug::generate(), WebhookSlug::generate());
    }

    #[test]
    fn agent_id_with_wrong_length_or_symbols_is_refused() {
        assert!(AgentId::parse("short").is_err());
        assert!(AgentId::parse("oJvfgs3Eg8DEMOGnQES-").is_err());
        assert!(AgentId::parse("oJvfgs3Eg8DEMOGnQES7").is_ok());
    }

    #[test]
    fn excerpt_shortens_long_input() {
        let long = "x".repeat(100);
        assert_eq!(excerpt(&long).chars().count(), 41);
    }
}
