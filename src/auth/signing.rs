//! Signed webhooks, as the Standard Webhooks specification (standardwebhooks.com) has them.
//!
//! A sender signs `"{webhook-id}.{webhook-timestamp}.{raw body}"` with HMAC-SHA256 keyed by
//! the base64-decoded part of a `whsec_` secret, and sends `webhook-signature: v1,<base64>`
//! (a space-separated list: key rotation on the sender's side may send several; any one
//! that matches suffices). Unlike API keys, the secret must be kept as it is: HMAC needs it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from now, either way, before it is refused as a replay.
pub const TOLERANCE_SECS: i64 = 5 * 60;

const PREFIX: &str = "whsec_";
/// How many trailing characters pages may show to identify a secret.
const SHOWN_CHARS: usize = 4;

/// A webhook signing secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl SigningSecret {
    /// `whsec_` and the base64 of 32 random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            text: format!("{PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// A secret as stored (or as a sender holds it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("a signing secret starts with {PREFIX}"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "a signing secret is whsec_ followed by base64".to_owned())?;
        if key.len() < 24 {
            return Err("a signing secret holds at least 24 bytes".into());
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The whole secret, for its one showing and for storage.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The last characters, safe to show later to tell secrets apart.
    pub fn last_chars(&self) -> &str {
        &self.text[self.text.len() - SHOWN_CHARS..]
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `webhook-signature` value a sender would send.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(id, &timestamp.to_string(), body))
        )
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(…{})", self.last_chars())
    }
}

/// The three headers of a signed request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Why a signed request was refused; each message names the header at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("this webhook requires signed requests: the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} header is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error(
        "webhook-timestamp is {0} seconds old; requests signed more than 300 seconds ago are refused as replays"
    )]
    Stale(i64),
    #[error(
        "webhook-timestamp is {0} seconds in the future; more than 300 seconds ahead is refused (check the sender's clock)"
    )]
    Future(i64),
    #[error(
        "the webhook-signature header does not match: sign \"{{webhook-id}}.{{webhook-timestamp}}.{{body}}\" with this webhook's signing secret"
    )]
    Mismatch,
}

/// Checks what can be checked without the body: presence, form and the timestamp's age.
/// Returns the `webhook-id`, which is also the request's idempotency key.
pub fn check_headers<'a>(h: &SignedHeaders<'a>, now_secs: i64) -> Result<&'a str, SignatureError> {
    let id = h.id.ok_or(SignatureError::Missing("webhook-id"))?;
    let timestamp = h
        .timestamp
        .ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let signature = h
        .signature
        .ok_or(SignatureError::Missing("webhook-signature"))?;
    if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignatureError::Malformed(
            "webhook-id",
            "expected 1 to 255 visible ASCII characters",
        ));
    }
    let ts: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SignatureError::Malformed(
            "webhook-timestamp",
            "expected whole seconds since the Unix epoch",
        ))?;
    if now_secs - ts > TOLERANCE_SECS {
        return Err(SignatureError::Stale(now_secs - ts));
    }
    if ts - now_secs > TOLERANCE_SECS {
        return Err(SignatureError::Future(ts - now_secs));
    }
    if candidates(signature).next().is_none() {
        return Err(SignatureError::Malformed(
            "webhook-signature",
            "expected a space-separated list of v1,<base64 HMAC-SHA256>",
        ));
    }
    Ok(id)
}

/// The `v1` signatures of the header that decode to 32 bytes; other versions are ignored.
fn candidates(header: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| STANDARD.decode(b).ok())
        .filter(|b| b.len() == 32)
}

/// Verifies a signed request over its raw body, in constant time, trying every signature
/// it carries without stopping at the first match.
pub fn verify<'a>(
    secret: &SigningSecret,
    h: &SignedHeaders<'a>,
    body: &[u8],
    now_secs: i64,
) -> Result<&'a str, SignatureError> {
    let id = check_headers(h, now_secs)?;
    let expected = secret.mac(id, h.timestamp.unwrap_or_default(), body);
    let matched = candidates(h.signature.unwrap_or_default())
        .fold(0u8, |acc, c| acc | c.ct_eq(&expected).unwrap_u8());
    if matched == 1 {
        Ok(id)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn signed<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn matches_the_standard_webhooks_reference_signature() {
        // The example of the specification and of its reference libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_valid_signature_among_others_is_accepted() {
        let secret = SigningSecret::generate();
        let other = SigningSecret::generate();
        let body = b"{}";
        let sig = format!(
            "v1a,xyz {} {}",
            other.sign("evt_1", NOW, body),
            secret.sign("evt_1", NOW, body)
        );
        let ts = NOW.to_string();
        assert_eq!(
            verify(&secret, &signed("evt_1", &ts, &sig), body, NOW),
            Ok("evt_1")
        );
    }

    #[test]
    fn anything_changed_breaks_the_signature() {
        let secret = SigningSecret::generate();
        let sig = secret.sign("evt_1", NOW, b"{\"a\":1}");
        let ts = NOW.to_string();
        let h = signed("evt_1", &ts, &sig);
        assert_eq!(
            verify(&secret, &h, b"{\"a\":2}", NOW),
            Err(SignatureError::Mismatch)
        );
        let other_id = signed("evt_2", &ts, &sig);
        assert_eq!(
            verify(&secret, &other_id, b"{\"a\":1}", NOW),
            Err(SignatureError::Mismatch)
        );
        let other_secret = SigningSecret::generate();
        assert_eq!(
            verify(&other_secret, &h, b"{\"a\":1}", NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn old_and_future_timestamps_are_refused_at_the_edge() {
        let secret = SigningSecret::generate();
        for (offset, ok) in [(-300, true), (-301, false), (300, true), (301, false)] {
            let ts = NOW + offset;
            let sig = secret.sign("e", ts, b"");
            let ts_text = ts.to_string();
            let result = verify(&secret, &signed("e", &ts_text, &sig), b"", NOW);
            assert_eq!(result.is_ok(), ok, "{offset}: {result:?}");
        }
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let h = SignedHeaders {
            id: Some("e"),
            timestamp: None,
            signature: Some("v1,x"),
        };
        assert_eq!(
            check_headers(&h, NOW),
            Err(SignatureError::Missing("webhook-timestamp"))
        );
        let now = NOW.to_string();
        for (h, header) in [
            (signed("e", "12.5", "v1,AAAA"), "webhook-timestamp"),
            (signed("e", "-5", "v1,AAAA"), "webhook-timestamp"),
            (signed("e", &now, "v1,not base64!"), "webhook-signature"),
            (signed("e", &now, "v1,AAAA"), "webhook-signature"),
            (signed("e", &now, "sha256=abc"), "webhook-signature"),
            (signed("", &now, "v1,AAAA"), "webhook-id"),
        ] {
            let err = check_headers(&h, NOW).unwrap_err();
            assert!(
                matches!(err, SignatureError::Malformed(name, _) if name == header),
                "{err:?}"
            );
            assert!(err.to_string().contains(header));
        }
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes_and_never_in_debug() {
        let s = SigningSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&s.expose()[6..]).unwrap().len(), 32);
        assert_eq!(
            SigningSecret::parse(s.expose()).unwrap().expose(),
            s.expose()
        );
        assert_ne!(s.expose(), SigningSecret::generate().expose());
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.expose()[6..20]), "{shown}");
        assert!(SigningSecret::parse("pcwk_abc").is_err());
    }
}
