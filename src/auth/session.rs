//! Admin sessions: a random token in an HttpOnly, SameSite cookie, its SHA-256 in the
//! database, and a CSRF token checked on every request that changes something.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::keys::{Secret, SecretHash, SecretKind};
use super::signing::SigningSecret;
use crate::domain::ids::random_base62;
use crate::http::AppState;
use crate::store::admins;

pub const COOKIE: &str = "precall_session";
/// Field (forms) or header (scripts) carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in admin of a request.
#[derive(Clone)]
pub struct Admin {
    pub id: i64,
    pub email: String,
    pub session_id: i64,
    pub csrf: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// How long a session lasts (`--session-ttl-secs`), in milliseconds.
fn lifetime_ms(app: &AppState) -> i64 {
    i64::try_from(app.session_ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Starts a session for `admin_id`; returns the cookie to set.
pub async fn start(app: &AppState, admin_id: i64) -> anyhow::Result<Cookie<'static>> {
    let token = Secret::generate(SecretKind::Session);
    let csrf = random_base62(32);
    admins::create_session(&app.db, admin_id, &token.hash(), &csrf, lifetime_ms(app)).await?;
    Ok(session_cookie(app, token.expose().to_owned()))
}

fn session_cookie(app: &AppState, value: String) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(app.public_url.starts_with("https://"))
        .path("/")
        .max_age(time::Duration::milliseconds(lifetime_ms(app)))
        .build()
}

/// A cookie that removes the session cookie.
pub fn removal() -> Cookie<'static> {
    Cookie::build((COOKIE, "")).path("/").removal().build()
}

/// Why a request has no admin.
pub enum NotSignedIn {
    /// A page: go and sign in, then come back.
    Page(String),
    /// Anything else: refused.
    Refused,
    Internal,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            Self::Page(back) => {
                let to = format!("/login?next={}", urlencode(&back));
                Redirect::to(&to).into_response()
            }
            Self::Refused => (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
        }
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, NotSignedIn> {
        let refuse = || {
            if parts.method == Method::GET {
                let back = parts
                    .uri
                    .path_and_query()
                    .map_or("/admin", |p| p.as_str())
                    .to_owned();
                NotSignedIn::Page(back)
            } else if parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
            {
                // A form sent after the session ended: sign in again, then start over.
                NotSignedIn::Page("/admin".into())
            } else {
                NotSignedIn::Refused
            }
        };
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(COOKIE).map(|c| c.value().to_owned()) else {
            return Err(refuse());
        };
        let hash = SecretHash::of(&token);
        match admins::find_session(&app.db, &hash).await {
            Ok(Some(s)) => Ok(Admin {
                id: s.admin_id,
                email: s.email,
                session_id: s.session_id,
                csrf: s.csrf_token,
            }),
            Ok(None) => Err(refuse()),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Err(NotSignedIn::Internal)
            }
        }
    }
}

impl Admin {
    /// Constant-time check of a presented CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        presented.len() == self.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// A form posted by a signed-in admin, with a valid CSRF token. A form without one is
/// refused with 403 and changes nothing.
pub struct AdminForm<T> {
    pub admin: Admin,
    pub form: T,
}

/// Why a form was refused.
pub enum FormRejection {
    NotSignedIn(NotSignedIn),
    Csrf,
    Malformed(String),
}

impl IntoResponse for FormRejection {
    fn into_response(self) -> Response {
        match self {
            Self::NotSignedIn(n) => n.into_response(),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "This form has expired or did not come from this console; nothing was changed. \
                 Go back, reload the page and try again.",
            )
                .into_response(),
            Self::Malformed(m) => (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("The form could not be read: {m}"),
            )
                .into_response(),
        }
    }
}

/// Largest admin form.
const FORM_LIMIT: usize = 256 * 1024;

impl<T: DeserializeOwned> FromRequest<AppState> for AdminForm<T> {
    type Rejection = FormRejection;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, FormRejection> {
        let (mut parts, body) = req.into_parts();
        let admin = Admin::from_request_parts(&mut parts, app)
            .await
            .map_err(FormRejection::NotSignedIn)?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|e| FormRejection::Malformed(e.to_string()))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| FormRejection::Malformed(e.to_string()))?;
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                pairs
                    .iter()
                    .find(|(k, _)| k == CSRF_FIELD)
                    .map(|(_, v)| v.clone())
            });
        if !presented.is_some_and(|p| admin.csrf_matches(&p)) {
            return Err(FormRejection::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| FormRejection::Malformed(e.to_string()))?;
        Ok(Self { admin, form })
    }
}

/// Things to show an admin once, on their next page: secrets right after they are made,
/// and notices. Kept in memory, by session, for a few minutes at most.
#[derive(Default)]
pub struct Flash {
    by_session: Mutex<HashMap<i64, (Instant, FlashData)>>,
}

/// How long something waits to be shown before it is dropped.
const FLASH_KEEP: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct FlashData {
    pub notice: Option<String>,
    pub error: Option<String>,
    /// Secrets made for `(kind, id)`, each shown once.
    pub secrets: Vec<(String, i64, String)>,
}

impl std::fmt::Debug for FlashData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlashData")
            .field("notice", &self.notice)
            .field("error", &self.error)
            .field(
                "secrets",
                &self
                    .secrets
                    .iter()
                    .map(|(k, id, _)| (k, id, "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Flash {
    fn with(&self, session: i64, f: impl FnOnce(&mut FlashData)) {
        let mut map = self.by_session.lock().expect("flash lock");
        let now = Instant::now();
        map.retain(|_, (at, _)| now.duration_since(*at) < FLASH_KEEP);
        let entry = map
            .entry(session)
            .or_insert_with(|| (now, FlashData::default()));
        entry.0 = now;
        f(&mut entry.1);
    }

    pub fn notice(&self, session: i64, text: impl Into<String>) {
        self.with(session, |d| d.notice = Some(text.into()));
    }

    pub fn error(&self, session: i64, text: impl Into<String>) {
        self.with(session, |d| d.error = Some(text.into()));
    }

    pub fn secret(&self, session: i64, kind: &str, id: i64, secret: &Secret) {
        self.with(session, |d| {
            d.secrets
                .push((kind.to_owned(), id, secret.expose().to_owned()));
        });
    }

    /// A Webhook action's signing secret, shown once like a key.
    pub fn signing_secret(&self, session: i64, action_id: i64, secret: &SigningSecret) {
        self.with(session, |d| {
            d.secrets
                .push(("signing".to_owned(), action_id, secret.expose().to_owned()));
        });
    }

    /// Takes what is waiting for this session.
    pub fn take(&self, session: i64) -> FlashData {
        self.by_session
            .lock()
            .expect("flash lock")
            .remove(&session)
            .filter(|(at, _)| at.elapsed() < FLASH_KEEP)
            .map(|(_, d)| d)
            .unwrap_or_default()
    }
}

impl FlashData {
    /// The secret made for `(kind, id)`, if it is waiting.
    pub fn secret_for(&self, kind: &str, id: i64) -> Option<String> {
        self.secrets
            .iter()
            .find(|(k, i, _)| k == kind && *i == id)
            .map(|(_, _, s)| s.clone())
    }
}
