//! Signed webhooks, as the Standard Webhooks specification (standardwebhooks.com) has them.
//!
//! A sender signs `"{webhook-id}.{webhook-timestamp}.{raw body}"` with HMAC-SHA256 keyed by
//! the base64-decoded part of a `whsec_` secret, and sends `webhook-signature: v1,<base64>`
//! (a space-separated list: key rotation on the sender's side may send several; any one
//! that matches suffices). Unlike API keys, the secret must be kept as it is: HMAC needs it.
//!
//! Svix sends the same scheme as `svix-id`, `svix-timestamp` and `svix-signature`, and both
//! the Standard Webhooks and the Svix libraries accept either set of names; so does Precall,
//! reading a request's three headers as one set (see [`SignedHeaders::read`]).

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

/// The names a sender gives the three headers: the specification's, or those of Svix (the
/// most common sending service, whose scheme the specification took up) with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderNames {
    #[default]
    Standard,
    Svix,
}

impl HeaderNames {
    /// In order of preference: of a request that carries both sets whole, the first is read.
    pub const ALL: [HeaderNames; 2] = [HeaderNames::Standard, HeaderNames::Svix];

    pub const fn id(self) -> &'static str {
        match self {
            HeaderNames::Standard => "webhook-id",
            HeaderNames::Svix => "svix-id",
        }
    }

    pub const fn timestamp(self) -> &'static str {
        match self {
            HeaderNames::Standard => "webhook-timestamp",
            HeaderNames::Svix => "svix-timestamp",
        }
    }

    pub const fn signature(self) -> &'static str {
        match self {
            HeaderNames::Standard => "webhook-signature",
            HeaderNames::Svix => "svix-signature",
        }
    }
}

/// The three headers of a signed request, as received, all three under one set of names: a
/// signature is never checked over an id and a timestamp taken from different sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    names: HeaderNames,
    id: Option<&'a str>,
    timestamp: Option<&'a str>,
    signature: Option<&'a str>,
    /// Headers of both sets were sent and neither set is whole: which was meant is unclear.
    mixed: bool,
}

impl<'a> SignedHeaders<'a> {
    /// Reads the headers with `get` (a header's value by its lower-case name). The first set
    /// of [`HeaderNames::ALL`] sent whole is read and the other set's headers are ignored;
    /// when neither is whole, the one set some header of which was sent, so that a refusal
    /// names what it lacks; parts of both sets and neither whole are refused as mixed.
    pub fn read(get: impl Fn(&'static str) -> Option<&'a str>) -> Self {
        let sets = HeaderNames::ALL.map(|names| Self {
            names,
            id: get(names.id()),
            timestamp: get(names.timestamp()),
            signature: get(names.signature()),
            mixed: false,
        });
        if let Some(whole) = sets.iter().find(|s| s.is_whole()) {
            return *whole;
        }
        let mut sent = sets.iter().filter(|s| s.any_sent());
        match (sent.next(), sent.next()) {
            (None, _) => sets[0],
            (Some(one), None) => *one,
            (Some(_), Some(_)) => Self {
                mixed: true,
                ..sets[0]
            },
        }
    }

    /// The names the request's headers were read under, to name them back to the sender.
    pub fn names(&self) -> HeaderNames {
        self.names
    }

    fn is_whole(&self) -> bool {
        self.id.is_some() && self.timestamp.is_some() && self.signature.is_some()
    }

    fn any_sent(&self) -> bool {
        self.id.is_some() || self.timestamp.is_some() || self.signature.is_some()
    }
}

/// Why a signed request was refused; each message names the header at fault, under the name
/// the sender used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "this webhook requires signed requests: the webhook-id header is missing (send webhook-id, webhook-timestamp and webhook-signature, or Svix's svix-id, svix-timestamp and svix-signature)"
    )]
    Unsigned,
    #[error("this webhook requires signed requests: the {0} header is missing")]
    Missing(&'static str),
    #[error(
        "the signature headers mix webhook-* and svix-* names and neither set is complete: send webhook-id, webhook-timestamp and webhook-signature, or svix-id, svix-timestamp and svix-signature"
    )]
    Mixed,
    #[error("the {0} header is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error(
        "{0} is {1} seconds old; requests signed more than 300 seconds ago are refused as replays"
    )]
    Stale(&'static str, i64),
    #[error(
        "{0} is {1} seconds in the future; more than 300 seconds ahead is refused (check the sender's clock)"
    )]
    Future(&'static str, i64),
    #[error(
        "the {} header does not match: sign \"{{{}}}.{{{}}}.{{body}}\" with this webhook's signing secret",
        .0.signature(), .0.id(), .0.timestamp()
    )]
    Mismatch(HeaderNames),
}

/// Checks what can be checked without the body: presence, form and the timestamp's age.
/// Returns the event's id (`webhook-id` or `svix-id`), which is also the request's
/// idempotency key.
pub fn check_headers<'a>(h: &SignedHeaders<'a>, now_secs: i64) -> Result<&'a str, SignatureError> {
    let n = h.names;
    if h.mixed {
        return Err(SignatureError::Mixed);
    }
    if !h.any_sent() {
        return Err(SignatureError::Unsigned);
    }
    let id = h.id.ok_or(SignatureError::Missing(n.id()))?;
    let timestamp = h.timestamp.ok_or(SignatureError::Missing(n.timestamp()))?;
    let signature = h.signature.ok_or(SignatureError::Missing(n.signature()))?;
    if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignatureError::Malformed(
            n.id(),
            "expected 1 to 255 visible ASCII characters",
        ));
    }
    let ts: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SignatureError::Malformed(
            n.timestamp(),
            "expected whole seconds since the Unix epoch",
        ))?;
    if now_secs - ts > TOLERANCE_SECS {
        return Err(SignatureError::Stale(n.timestamp(), now_secs - ts));
    }
    if ts - now_secs > TOLERANCE_SECS {
        return Err(SignatureError::Future(n.timestamp(), ts - now_secs));
    }
    if candidates(signature).next().is_none() {
        return Err(SignatureError::Malformed(
            n.signature(),
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
        Err(SignatureError::Mismatch(h.names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn signed<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        sent(&[
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ])
    }

    /// The headers of a request that sent these, as `SignedHeaders::read` reads them.
    fn sent<'a>(headers: &[(&'static str, &'a str)]) -> SignedHeaders<'a> {
        SignedHeaders::read(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
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
        let mismatch = Err(SignatureError::Mismatch(HeaderNames::Standard));
        assert_eq!(verify(&secret, &h, b"{\"a\":2}", NOW), mismatch);
        let other_id = signed("evt_2", &ts, &sig);
        assert_eq!(verify(&secret, &other_id, b"{\"a\":1}", NOW), mismatch);
        let other_secret = SigningSecret::generate();
        assert_eq!(verify(&other_secret, &h, b"{\"a\":1}", NOW), mismatch);
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
        let h = sent(&[("webhook-id", "e"), ("webhook-signature", "v1,x")]);
        assert_eq!(
            check_headers(&h, NOW),
            Err(SignatureError::Missing("webhook-timestamp"))
        );
        let h = sent(&[("svix-id", "e"), ("svix-timestamp", "1")]);
        assert_eq!(
            check_headers(&h, NOW),
            Err(SignatureError::Missing("svix-signature"))
        );
        assert_eq!(
            check_headers(&sent(&[]), NOW),
            Err(SignatureError::Unsigned)
        );
        assert!(SignatureError::Unsigned.to_string().contains("svix-id"));
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
    fn svix_names_carry_the_same_scheme_and_errors_use_them() {
        // Svix's documented example: the specification's, under its own header names.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let h = sent(&[
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            (
                "svix-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(h.names(), HeaderNames::Svix);
        assert_eq!(
            verify(&secret, &h, body, 1614265330),
            Ok("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        let err = verify(&secret, &h, b"{}", 1614265330).unwrap_err();
        assert_eq!(err, SignatureError::Mismatch(HeaderNames::Svix));
        assert!(
            err.to_string()
                .starts_with("the svix-signature header does not match: sign \"{svix-id}.{svix-timestamp}.{body}\""),
            "{err}"
        );
        let err = verify(&secret, &h, body, 1614265330 + 301).unwrap_err();
        assert_eq!(err, SignatureError::Stale("svix-timestamp", 301));
        assert!(
            err.to_string()
                .starts_with("svix-timestamp is 301 seconds old")
        );
        let h = sent(&[
            ("svix-id", "e x"),
            ("svix-timestamp", "1"),
            ("svix-signature", "v1,x"),
        ]);
        assert!(matches!(
            check_headers(&h, 1),
            Err(SignatureError::Malformed("svix-id", _))
        ));
    }

    #[test]
    fn both_sets_whole_read_the_webhook_names_and_a_mix_is_refused() {
        let secret = SigningSecret::generate();
        let ts = NOW.to_string();
        let good = secret.sign("evt_std", NOW, b"");
        let other = secret.sign("evt_svix", NOW, b"");
        // Both whole: the webhook-* set, whatever the svix-* one says.
        let both = sent(&[
            ("svix-id", "evt_svix"),
            ("svix-timestamp", &ts),
            ("svix-signature", &other),
            ("webhook-id", "evt_std"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &good),
        ]);
        assert_eq!(both.names(), HeaderNames::Standard);
        assert_eq!(verify(&secret, &both, b"", NOW), Ok("evt_std"));
        let wrong_standard = sent(&[
            ("svix-id", "evt_svix"),
            ("svix-timestamp", &ts),
            ("svix-signature", &other),
            ("webhook-id", "evt_std"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &other),
        ]);
        assert_eq!(
            verify(&secret, &wrong_standard, b"", NOW),
            Err(SignatureError::Mismatch(HeaderNames::Standard))
        );
        // One set whole: it is read, a stray header of the other is ignored.
        let svix_whole = sent(&[
            ("webhook-id", "evt_std"),
            ("svix-id", "evt_svix"),
            ("svix-timestamp", &ts),
            ("svix-signature", &other),
        ]);
        assert_eq!(verify(&secret, &svix_whole, b"", NOW), Ok("evt_svix"));
        // Neither whole, parts of both: never an id of one set with a signature of the other.
        let mixed = sent(&[
            ("webhook-id", "evt_svix"),
            ("svix-timestamp", &ts),
            ("svix-signature", &other),
        ]);
        let err = check_headers(&mixed, NOW).unwrap_err();
        assert_eq!(err, SignatureError::Mixed);
        assert!(err.to_string().contains("mix"), "{err}");
        assert_eq!(
            verify(&secret, &mixed, b"", NOW),
            Err(SignatureError::Mixed)
        );
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
