//! Each voice platform's own request signature, checked over the raw request.
//!
//! | platform | header | what is signed | with |
//! |---|---|---|---|
//! | Retell | `x-retell-signature: v={ms},d={hex}` | body followed by the timestamp | HMAC-SHA256, the Retell API key |
//! | Synthflow | `HTTP_SYNTHFLOW_SIGNATURE` (or `Synthflow-Signature`): base64 | the call's `call_id` | HMAC-SHA256, the workspace's webhook secret |
//! | Vapi (secret) | `X-Vapi-Secret` or `Authorization: Bearer` | nothing: the secret itself | compared with its hash |
//! | Vapi (HMAC) | `x-signature: {hex}`, `x-timestamp` | `{timestamp}.{body}` | HMAC-SHA256, the credential's secret |
//! | Telnyx | `telnyx-signature-ed25519: {base64}`, `telnyx-timestamp` | `{timestamp}\|{body}` | Ed25519, Telnyx's public key |
//! | Twilio | `X-Twilio-Signature: {base64}` | the URL, then each form field's name and value, sorted | HMAC-SHA1, the auth token |
//!
//! Where a timestamp is signed, more than [`TOLERANCE_SECS`] away from now is refused as a
//! replay. A verified request also gives what its signature vouches for, as a [`Vouched`]
//! digest (the body and timestamp; Synthflow's call id; Twilio's URL and sorted fields):
//! the same signed content seen twice is refused as a replay, however its headers are
//! spelled, ordered or padded with other headers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::keys::SecretHash;

/// How far a signed timestamp may be from now, either way (Retell's SDK, Telnyx's SDK and
/// Standard Webhooks all allow five minutes).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a platform's request was refused (401); each names what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing: this URL takes only requests signed by {1}")]
    Missing(&'static str, &'static str),
    #[error("the {0} header is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error(
        "the signed timestamp is {0} seconds away from now; more than 300 seconds is refused as a replay"
    )]
    Stale(i64),
    #[error("the {0} header does not match: {1}")]
    Mismatch(&'static str, &'static str),
    #[error("this exact request was already received: refused as a replay")]
    Replayed,
    #[error("{0}")]
    Unusable(&'static str),
}

/// What a connection checks its requests with. Its `Debug` never shows a secret.
#[derive(Clone)]
pub enum Verifier {
    /// Retell: the API key that has the webhook badge.
    Retell { api_key: String },
    /// Synthflow: the workspace's webhook secret.
    Synthflow { secret: String },
    /// Vapi's server secret (`X-Vapi-Secret`, or a Bearer credential): only its hash.
    VapiSecret { hash: SecretHash },
    /// Vapi's HMAC credential, with Vapi's defaults.
    VapiHmac { secret: String },
    /// Telnyx's Ed25519 public key.
    Telnyx { key: ed25519_dalek::VerifyingKey },
    /// Twilio: the account's auth token.
    Twilio { auth_token: String },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Retell { .. } => "Verifier::Retell(…)",
            Self::Synthflow { .. } => "Verifier::Synthflow(…)",
            Self::VapiSecret { .. } => "Verifier::VapiSecret(…)",
            Self::VapiHmac { .. } => "Verifier::VapiHmac(…)",
            Self::Telnyx { .. } => "Verifier::Telnyx(…)",
            Self::Twilio { .. } => "Verifier::Twilio(…)",
        })
    }
}

/// A request as the verifiers see it: a header by its lower-case name, the raw body, the
/// URL the platform requested (Twilio signs it) and, for a form, its fields.
pub struct Signed<'a> {
    pub header: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
    pub body: &'a [u8],
    pub url: &'a str,
    pub form: &'a [(String, String)],
    /// The call id Synthflow signs, read from the body.
    pub call_id: Option<&'a str>,
}

type HmacSha256 = Hmac<Sha256>;

/// What a verified request's signature vouches for, as a SHA-256 digest: two requests with
/// the same one are one request sent twice.
pub type Vouched = [u8; 32];

fn vouched(scheme: &str, parts: &[&[u8]]) -> Vouched {
    use sha2::Digest;
    let mut d = Sha256::new();
    d.update(scheme.as_bytes());
    for p in parts {
        // Each part's length first, so that no two lists of parts digest alike.
        d.update((p.len() as u64).to_le_bytes());
        d.update(p);
    }
    d.finalize().into()
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// [`same`] for lowercase hex `expected` against hex `got` in either case (an ASCII letter
/// is made lowercase by setting its 0x20 bit, which digits already have).
fn same_hex(expected: &[u8], got: &[u8]) -> bool {
    expected.len() == got.len()
        && bool::from(
            expected
                .iter()
                .zip(got)
                .fold(subtle::Choice::from(1), |ok, (e, g)| {
                    ok & e.ct_eq(&(g | 0x20))
                }),
        )
}

fn fresh(ts_secs: i64, now_secs: i64) -> Result<(), VerifyError> {
    let off = (now_secs - ts_secs).abs();
    if off > TOLERANCE_SECS {
        return Err(VerifyError::Stale(off));
    }
    Ok(())
}

/// Seconds from a timestamp sent in seconds or in milliseconds (a number past 10^11 is
/// read as milliseconds: that many seconds is more than 3 000 years away).
fn seconds_of(ts: i64) -> i64 {
    if ts.abs() >= 100_000_000_000 {
        ts.div_euclid(1000)
    } else {
        ts
    }
}

fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl Verifier {
    /// Checks a request; `now_ms` is the time it arrived. Gives what its signature vouches
    /// for (see [`Vouched`]).
    pub fn verify(&self, r: &Signed<'_>, now_ms: i64) -> Result<Vouched, VerifyError> {
        let now_secs = now_ms.div_euclid(1000);
        match self {
            Self::Retell { api_key } => {
                const H: &str = "x-retell-signature";
                let sig = (r.header)(H).ok_or(VerifyError::Missing(H, "Retell"))?;
                let (ts, digest) = sig
                    .strip_prefix("v=")
                    .and_then(|rest| rest.split_once(",d="))
                    .and_then(|(ts, d)| Some((digits(ts)?, d)))
                    .filter(|(_, d)| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or(VerifyError::Malformed(
                        H,
                        "expected v=<milliseconds>,d=<hex HMAC-SHA256>",
                    ))?;
                if ts < 100_000_000_000 {
                    // Seconds, not milliseconds: no Retell SDK signs so.
                    return Err(VerifyError::Malformed(
                        H,
                        "v= is the time in milliseconds since the Unix epoch, not seconds",
                    ));
                }
                if (now_ms - ts).abs() > TOLERANCE_SECS * 1000 {
                    return Err(VerifyError::Stale((now_ms - ts).abs() / 1000));
                }
                let expected = hex(&hmac256(
                    api_key.as_bytes(),
                    &[r.body, ts.to_string().as_bytes()],
                ));
                if same_hex(expected.as_bytes(), digest.as_bytes()) {
                    Ok(vouched("retell", &[r.body, ts.to_string().as_bytes()]))
                } else {
                    Err(VerifyError::Mismatch(
                        H,
                        "sign the body followed by the timestamp with the Retell API key that has the webhook badge",
                    ))
                }
            }
            Self::Synthflow { secret } => {
                const H: &str = "http_synthflow_signature";
                let sig = (r.header)(H)
                    .or_else(|| (r.header)("synthflow-signature"))
                    .ok_or(VerifyError::Missing(
                        "HTTP_SYNTHFLOW_SIGNATURE",
                        "Synthflow",
                    ))?;
                let call_id = r
                    .call_id
                    .filter(|c| !c.is_empty())
                    .ok_or(VerifyError::Unusable(
                        "the body carries no call_id: Synthflow signs the call's call_id",
                    ))?;
                let got = STANDARD.decode(sig.trim()).map_err(|_| {
                    VerifyError::Malformed(
                        "HTTP_SYNTHFLOW_SIGNATURE",
                        "expected a base64 HMAC-SHA256",
                    )
                })?;
                if same(&hmac256(secret.as_bytes(), &[call_id.as_bytes()]), &got) {
                    // Only the call id is signed: a call id seen once is a replay, whatever
                    // body comes with it.
                    Ok(vouched("synthflow", &[call_id.as_bytes()]))
                } else {
                    Err(VerifyError::Mismatch(
                        "HTTP_SYNTHFLOW_SIGNATURE",
                        "sign the call_id with the workspace's webhook secret",
                    ))
                }
            }
            Self::VapiSecret { hash } => {
                // Either header may carry it (Vapi's Bearer credential uses Authorization);
                // a request is taken when one of those it sends matches.
                let header = (r.header)("x-vapi-secret");
                let bearer = (r.header)("authorization").and_then(crate::auth::bearer);
                if header.is_none() && bearer.is_none() {
                    return Err(VerifyError::Missing("X-Vapi-Secret", "Vapi"));
                }
                if [header, bearer]
                    .into_iter()
                    .flatten()
                    .any(|s| hash.matches(&SecretHash::of(s.trim())))
                {
                    Ok(vouched("vapi", &[r.body]))
                } else {
                    Err(VerifyError::Mismatch(
                        if header.is_some() {
                            "X-Vapi-Secret"
                        } else {
                            "Authorization"
                        },
                        "send the server secret given to this connection",
                    ))
                }
            }
            Self::VapiHmac { secret } => {
                let sig =
                    (r.header)("x-signature").ok_or(VerifyError::Missing("x-signature", "Vapi"))?;
                let ts_text =
                    (r.header)("x-timestamp").ok_or(VerifyError::Missing("x-timestamp", "Vapi"))?;
                let ts = digits(ts_text).ok_or(VerifyError::Malformed(
                    "x-timestamp",
                    "expected seconds or milliseconds since the Unix epoch",
                ))?;
                fresh(seconds_of(ts), now_secs)?;
                let expected = hex(&hmac256(
                    secret.as_bytes(),
                    &[ts_text.as_bytes(), b".", r.body],
                ));
                let sig = sig.trim();
                let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
                if same(expected.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
                    Ok(vouched("vapi-hmac", &[ts_text.as_bytes(), r.body]))
                } else {
                    Err(VerifyError::Mismatch(
                        "x-signature",
                        "use an HMAC credential with SHA256, hex, and the payload {timestamp}.{body}",
                    ))
                }
            }
            Self::Telnyx { key } => {
                const S: &str = "telnyx-signature-ed25519";
                const T: &str = "telnyx-timestamp";
                let sig = (r.header)(S).ok_or(VerifyError::Missing(S, "Telnyx"))?;
                let ts_text = (r.header)(T).ok_or(VerifyError::Missing(T, "Telnyx"))?;
                let ts = digits(ts_text).filter(|&t| t < 100_000_000_000).ok_or(
                    VerifyError::Malformed(
                        T,
                        "expected seconds since the Unix epoch (not milliseconds)",
                    ),
                )?;
                fresh(ts, now_secs)?;
                let bytes: [u8; 64] = STANDARD
                    .decode(sig.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(VerifyError::Malformed(
                        S,
                        "expected a base64 Ed25519 signature",
                    ))?;
                let signature = ed25519_dalek::Signature::from_bytes(&bytes);
                let mut message = Vec::with_capacity(ts_text.len() + 1 + r.body.len());
                message.extend_from_slice(ts_text.as_bytes());
                message.push(b'|');
                message.extend_from_slice(r.body);
                key.verify_strict(&message, &signature)
                    .map(|()| vouched("telnyx", &[&message]))
                    .map_err(|_| {
                        VerifyError::Mismatch(
                            S,
                            "Telnyx signs \"{timestamp}|{body}\"; check the public key given to this connection",
                        )
                    })
            }
            Self::Twilio { auth_token } => {
                const H: &str = "x-twilio-signature";
                let sig =
                    (r.header)(H).ok_or(VerifyError::Missing("X-Twilio-Signature", "Twilio"))?;
                let got = STANDARD.decode(sig.trim()).map_err(|_| {
                    VerifyError::Malformed("X-Twilio-Signature", "expected a base64 HMAC-SHA1")
                })?;
                // Twilio's own validator checks the URL with and without its scheme's default
                // port, "since sig generation on back end is inconsistent"
                // (twilio-python, twilio/request_validator.py).
                let matches = |url: &str| same(&twilio_signature(auth_token, url, r.form), &got);
                if matches(r.url) || other_port_form(r.url).is_some_and(|u| matches(&u)) {
                    let mut fields: Vec<&(String, String)> = r.form.iter().collect();
                    fields.sort();
                    let mut parts: Vec<&[u8]> = vec![r.url.as_bytes()];
                    for (k, v) in fields {
                        parts.push(k.as_bytes());
                        parts.push(v.as_bytes());
                    }
                    Ok(vouched("twilio", &parts))
                } else {
                    Err(VerifyError::Mismatch(
                        "X-Twilio-Signature",
                        "Twilio signs the URL it requested and the form's fields with the auth token; check the server's --public-url and the token",
                    ))
                }
            }
        }
    }
}

/// `url` with its scheme's default port written out if it has none, or without it if it
/// has (`https://h/p` and `https://h:443/p`); `None` for another port or scheme.
fn other_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // A host with a port: `host:port`, or `[v6]:port`.
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (port == default).then(|| format!("{scheme}://{host}{tail}"))
        }
        _ => Some(format!("{scheme}://{authority}:{default}{tail}")),
    }
}

/// Twilio's signature of a form request: the URL, then each field's name and value, fields
/// sorted by name (and values of one name sorted), HMAC-SHA1 with the auth token.
pub fn twilio_signature(auth_token: &str, url: &str, form: &[(String, String)]) -> [u8; 20] {
    let mut fields: Vec<&(String, String)> = form.iter().collect();
    fields.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (k, v) in fields {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Retell's `x-retell-signature` for `body` at `ts_ms` (what Retell's SDK `sign` makes).
pub fn retell_signature(api_key: &str, body: &[u8], ts_ms: i64) -> String {
    format!(
        "v={ts_ms},d={}",
        hex(&hmac256(
            api_key.as_bytes(),
            &[body, ts_ms.to_string().as_bytes()]
        ))
    )
}

/// Synthflow's signature of a call id.
pub fn synthflow_signature(secret: &str, call_id: &str) -> String {
    STANDARD.encode(hmac256(secret.as_bytes(), &[call_id.as_bytes()]))
}

/// Vapi's HMAC signature (SHA256, hex, `{timestamp}.{body}`).
pub fn vapi_signature(secret: &str, ts: &str, body: &[u8]) -> String {
    hex(&hmac256(secret.as_bytes(), &[ts.as_bytes(), b".", body]))
}

/// Reads a Telnyx public key as the portal shows it: base64 of 32 bytes.
pub fn telnyx_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a Telnyx public key is the base64 of 32 bytes, as the portal shows it")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "this is not an Ed25519 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn check(
        v: &Verifier,
        headers: &[(&str, &str)],
        body: &[u8],
        call_id: Option<&str>,
    ) -> Result<(), VerifyError> {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        let get = |name: &str| -> Option<&str> {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        v.verify(
            &Signed {
                header: &get,
                body,
                url: "https://example.com/connect/x",
                form: &[],
                call_id,
            },
            NOW,
        )
        .map(|_| ())
    }

    #[test]
    fn retell_signatures_match_the_sdk_format_and_refuse_old_or_changed_bodies() {
        let v = Verifier::Retell {
            api_key: "key_abc".into(),
        };
        let body = br#"{"event":"call_inbound"}"#;
        let sig = retell_signature("key_abc", body, NOW - 1000);
        assert_eq!(
            check(&v, &[("x-retell-signature", &sig)], body, None),
            Ok(())
        );
        assert!(matches!(
            check(&v, &[("x-retell-signature", &sig)], b"{}", None),
            Err(VerifyError::Mismatch(..))
        ));
        let old = retell_signature("key_abc", body, NOW - 301_000);
        assert_eq!(
            check(&v, &[("x-retell-signature", &old)], body, None),
            Err(VerifyError::Stale(301))
        );
        assert!(matches!(
            check(&v, &[], body, None),
            Err(VerifyError::Missing(..))
        ));
        assert!(matches!(
            check(&v, &[("x-retell-signature", "v=1,d=zz")], body, None),
            Err(VerifyError::Malformed(..))
        ));
    }

    #[test]
    fn retell_signs_as_retell_sdks_own_test_vector() {
        // retell-python-sdk tests/test_webhook_auth.py: this body, key and timestamp.
        let sig = retell_signature(
            "test-api-key",
            br#"{"event":"call_ended"}"#,
            1_700_000_000_000,
        );
        assert_eq!(
            sig,
            "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"
        );
    }

    #[test]
    fn synthflow_signs_the_call_id() {
        let v = Verifier::Synthflow {
            secret: "s3cret".into(),
        };
        let sig = synthflow_signature("s3cret", "call-1");
        assert_eq!(
            check(
                &v,
                &[("http_synthflow_signature", &sig)],
                b"{}",
                Some("call-1")
            ),
            Ok(())
        );
        assert_eq!(
            check(&v, &[("synthflow-signature", &sig)], b"{}", Some("call-1")),
            Ok(())
        );
        assert!(
            check(
                &v,
                &[("http_synthflow_signature", &sig)],
                b"{}",
                Some("call-2")
            )
            .is_err()
        );
        assert!(check(&v, &[("http_synthflow_signature", &sig)], b"{}", None).is_err());
    }

    #[test]
    fn vapi_takes_its_secret_or_an_hmac() {
        let v = Verifier::VapiSecret {
            hash: SecretHash::of("vapi-secret"),
        };
        assert_eq!(
            check(&v, &[("x-vapi-secret", "vapi-secret")], b"{}", None),
            Ok(())
        );
        assert_eq!(
            check(&v, &[("authorization", "Bearer vapi-secret")], b"{}", None),
            Ok(())
        );
        assert!(check(&v, &[("x-vapi-secret", "other")], b"{}", None).is_err());
        let v = Verifier::VapiHmac {
            secret: "hm".into(),
        };
        for ts in [(NOW / 1000).to_string(), NOW.to_string()] {
            let sig = vapi_signature("hm", &ts, b"{}");
            assert_eq!(
                check(
                    &v,
                    &[("x-signature", &sig), ("x-timestamp", &ts)],
                    b"{}",
                    None
                ),
                Ok(())
            );
        }
        let old = (NOW / 1000 - 400).to_string();
        let sig = vapi_signature("hm", &old, b"{}");
        assert!(matches!(
            check(
                &v,
                &[("x-signature", &sig), ("x-timestamp", &old)],
                b"{}",
                None
            ),
            Err(VerifyError::Stale(_))
        ));
    }

    #[test]
    fn telnyx_checks_ed25519_over_timestamp_and_body() {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let public = STANDARD.encode(signing.verifying_key().to_bytes());
        let v = Verifier::Telnyx {
            key: telnyx_key(&public).unwrap(),
        };
        let ts = (NOW / 1000).to_string();
        let body = br#"{"data":{}}"#;
        let sig = STANDARD.encode(
            signing
                .sign(format!("{ts}|{{\"data\":{{}}}}").as_bytes())
                .to_bytes(),
        );
        let headers = [
            ("telnyx-signature-ed25519", sig.as_str()),
            ("telnyx-timestamp", ts.as_str()),
        ];
        assert_eq!(check(&v, &headers, body, None), Ok(()));
        assert!(check(&v, &headers, b"{}", None).is_err());
        assert!(telnyx_key("not a key").is_err());
    }

    #[test]
    fn a_timestamp_in_the_wrong_unit_is_named_as_such() {
        let body = b"{}";
        let retell = Verifier::Retell {
            api_key: "key_abc".into(),
        };
        let secs = retell_signature("key_abc", body, NOW / 1000);
        let e = check(&retell, &[("x-retell-signature", &secs)], body, None).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let telnyx = Verifier::Telnyx {
            key: key.verifying_key(),
        };
        let e = check(
            &telnyx,
            &[
                ("telnyx-signature-ed25519", "AAAA"),
                ("telnyx-timestamp", &NOW.to_string()),
            ],
            body,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not milliseconds"), "{e}");
    }

    #[test]
    fn twilio_urls_are_also_tried_with_or_without_their_default_port() {
        assert_eq!(
            other_port_form("https://h.example/connect/x?call=1").as_deref(),
            Some("https://h.example:443/connect/x?call=1")
        );
        assert_eq!(
            other_port_form("https://h.example:443/connect/x").as_deref(),
            Some("https://h.example/connect/x")
        );
        assert_eq!(
            other_port_form("http://[::1]/c").as_deref(),
            Some("http://[::1]:80/c")
        );
        assert_eq!(other_port_form("http://h:8080/c"), None);
        let token = "12345";
        let v = Verifier::Twilio {
            auth_token: token.into(),
        };
        let form = vec![("From".to_owned(), "+14155550100".to_owned())];
        let sig = STANDARD.encode(twilio_signature(token, "https://h.example:443/c", &form));
        let get = |name: &str| (name == "x-twilio-signature").then_some(sig.as_str());
        let signed = |url| Signed {
            header: &get,
            body: b"",
            url,
            form: &form,
            call_id: None,
        };
        let a = v.verify(&signed("https://h.example/c"), NOW).unwrap();
        let b = v.verify(&signed("https://h.example/c"), NOW).unwrap();
        assert_eq!(a, b, "one request, one digest");
        assert!(v.verify(&signed("https://h.example:8443/c"), NOW).is_err());
    }

    #[test]
    fn twilio_matches_its_documented_example() {
        // The example of twilio-php's documentation (docs/usage/validation.rst, "Validate
        // Incoming Requests"): auth token 12345, this URL and these fields.
        let form: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let sig = twilio_signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &form,
        );
        assert_eq!(STANDARD.encode(sig), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    }
}
