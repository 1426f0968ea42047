//! Secrets and people: API keys and runtime tokens, webhook signatures, admin passwords,
//! sessions, throttling.

pub mod keys;
pub mod password;
pub mod session;
pub mod signing;
pub mod throttle;

/// The credentials of an `Authorization` value in the Bearer scheme, whose name is
/// case-insensitive (RFC 9110, section 11.1): `Bearer x`, `bearer x`, `BEARER x`.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", "BeArEr\tabc"] {
            assert_eq!(super::bearer(v), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer   ", "abc", "Bearerabc"] {
            assert_eq!(super::bearer(v), None, "{v:?}");
        }
    }
}
