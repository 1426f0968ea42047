//! First-run setup, signing in and out, and the list of admins.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::confirm::Confirmation;
use super::{Page, PageResult, after, not_found, render};
use crate::auth::keys::SecretHash;
use crate::auth::password::{self, Password};
use crate::auth::session::{self, Admin, AdminForm};
use crate::auth::throttle;
use crate::http::AppState;
use crate::store::{StoreError, admins, rfc3339, setup_tokens};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page).post(setup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/admin", get(|| async { Redirect::to("/admin/agents") }))
        .route("/admin/admins", get(admins_page).post(add_admin))
        .route("/admin/sessions/others/delete", post(sign_out_others))
        .route(
            "/admin/admins/{id}/sessions/delete",
            get(confirm_sign_out_admin).post(sign_out_admin),
        )
}

/// Emails are compared without case; this is what is stored and shown.
fn normalise_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let at = email.find('@');
    let ok = email.len() <= 254
        && at.is_some_and(|i| i > 0 && i < email.len() - 1)
        && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err("enter an email address like admin@example.com".into())
    }
}

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    token: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct SetupQuery {
    #[serde(default)]
    token: String,
}

/// Whether `token` is this server's setup token or one another running server offered
/// (see [`setup_tokens`]).
async fn setup_token_matches(app: &AppState, token: &str) -> Result<bool, sqlx::Error> {
    let presented = SecretHash::of(token);
    let expected = *app.setup_token.lock().expect("setup lock");
    if expected.is_some_and(|e| e.matches(&presented)) {
        return Ok(true);
    }
    setup_tokens::offered(&app.db, &presented).await
}

async fn setup_page(State(app): State<AppState>, Query(q): Query<SetupQuery>) -> PageResult {
    if admins::count(&app.db).await? > 0 {
        return Ok(Redirect::to("/login").into_response());
    }
    if !setup_token_matches(&app, &q.token).await? {
        return Ok((
            StatusCode::FORBIDDEN,
            render(SetupPage {
                token: String::new(),
                email: String::new(),
                error: Some(
                    "This setup link is not valid. Use the link the server printed when it \
                     started (it changes at each start)."
                        .into(),
                ),
            }),
        )
            .into_response());
    }
    Ok(render(SetupPage {
        token: q.token,
        email: String::new(),
        error: None,
    }))
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    email: String,
    password: Password,
    confirm: Password,
}

async fn setup(State(app): State<AppState>, Form(f): Form<SetupForm>) -> PageResult {
    if !setup_token_matches(&app, &f.token).await? {
        return Ok((StatusCode::FORBIDDEN, "This setup link is not valid.").into_response());
    }
    let again = |error: String| {
        Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(SetupPage {
                token: f.token.clone(),
                email: f.email.clone(),
                error: Some(error),
            }),
        )
            .into_response())
    };
    let email = match normalise_email(&f.email) {
        Ok(e) => e,
        Err(e) => return again(e),
    };
    if let Err(e) = f.password.check_strength() {
        return again(e);
    }
    if !f.password.matches(&f.confirm) {
        return again("the two passwords differ".into());
    }
    let hash = password::hash(f.password).await?;
    let id = match admins::create(&app.db, &email, &hash, None, true).await {
        Ok(id) => id,
        Err(StoreError::Conflict(m)) => return again(m),
        Err(e) => return Err(e.into()),
    };
    *app.setup_token.lock().expect("setup lock") = None;
    setup_tokens::withdraw_all(&app.db).await?;
    let cookie = session::start(&app, id).await?;
    Ok((CookieJar::new().add(cookie), Redirect::to("/admin/agents")).into_response())
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    email: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only paths of this console: never an absolute URL elsewhere.
fn safe_next(next: &str) -> String {
    if next.starts_with("/admin")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic())
    {
        next.to_owned()
    } else {
        "/admin/agents".into()
    }
}

async fn login_page(State(app): State<AppState>, Query(q): Query<NextQuery>) -> PageResult {
    if admins::count(&app.db).await? == 0 {
        return Ok(render(LoginPage {
            email: String::new(),
            next: safe_next(&q.next),
            error: Some(
                "No admin exists yet: open the setup link the server printed when it started."
                    .into(),
            ),
        }));
    }
    Ok(render(LoginPage {
        email: String::new(),
        next: safe_next(&q.next),
        error: None,
    }))
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: Password,
    #[serde(default)]
    next: String,
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> PageResult {
    // There is no session yet to hold a CSRF token: a sign-in posted from another site's
    // page (which would sign the visitor in as someone else) is told apart by its headers.
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Ok((StatusCode::FORBIDDEN, "sign in from this site's own page").into_response());
    }
    let email = f.email.trim().to_lowercase();
    let keys = [format!("account:{email}"), format!("address:{}", peer.ip())];
    let refuse = |status: StatusCode, error: String, retry: Option<u64>| {
        let mut res = (
            status,
            render(LoginPage {
                email: email.clone(),
                next: safe_next(&f.next),
                error: Some(error),
            }),
        )
            .into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    };
    let mut waits = Vec::with_capacity(keys.len());
    for k in &keys {
        waits.push(throttle::wait(&app.db, k).await?);
    }
    if let Some(wait) = waits.into_iter().flatten().max() {
        let secs = wait.as_secs().max(1);
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed attempts: wait {secs} s before trying again."),
            Some(secs),
        ));
    }
    let account = admins::find_by_email(&app.db, &email).await?;
    let ok = password::verify(
        f.password,
        account.as_ref().map(|a| a.password_hash.clone()),
    )
    .await;
    match account.filter(|_| ok) {
        Some(admin) => {
            for k in &keys {
                throttle::succeeded(&app.db, k).await?;
            }
            let cookie = session::start(&app, admin.id).await?;
            Ok((
                CookieJar::new().add(cookie),
                Redirect::to(&safe_next(&f.next)),
            )
                .into_response())
        }
        None => {
            for k in &keys {
                throttle::failed(&app.db, k).await?;
            }
            Ok(refuse(
                StatusCode::UNAUTHORIZED,
                "That email and password do not match an admin.".into(),
                None,
            ))
        }
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(State(app): State<AppState>, f: AdminForm<Empty>) -> PageResult {
    admins::delete_session(&app.db, f.admin.session_id).await?;
    app.flash.take(f.admin.session_id);
    Ok((
        CookieJar::new().add(session::removal()),
        Redirect::to("/login"),
    )
        .into_response())
}

struct AdminView {
    id: i64,
    email: String,
    created_at: String,
    /// Live sessions (browsers signed in).
    sessions: i64,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "admin/admins.html")]
struct AdminsPage {
    page: Page,
    admins: Vec<AdminView>,
}

async fn admins_page(State(app): State<AppState>, admin: Admin) -> PageResult {
    let flash = app.flash.take(admin.session_id);
    let live: std::collections::HashMap<i64, i64> =
        admins::live_sessions(&app.db).await?.into_iter().collect();
    let admins = admins::list(&app.db)
        .await?
        .into_iter()
        .map(|a| AdminView {
            id: a.id,
            is_me: a.id == admin.id,
            sessions: live.get(&a.id).copied().unwrap_or(0),
            email: a.email,
            created_at: rfc3339(a.created_at),
        })
        .collect();
    Ok(render(AdminsPage {
        page: Page::new(&admin, "Admins", &flash),
        admins,
    }))
}

#[derive(Deserialize)]
struct AddAdmin {
    email: String,
    password: Password,
}

async fn add_admin(State(app): State<AppState>, f: AdminForm<AddAdmin>) -> PageResult {
    let AdminForm { admin, form } = f;
    let result = async {
        let email = normalise_email(&form.email).map_err(StoreError::Conflict)?;
        form.password
            .check_strength()
            .map_err(StoreError::Conflict)?;
        let hash = password::hash(form.password)
            .await
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        admins::create(&app.db, &email, &hash, Some(admin.id), false).await?;
        Ok(format!("{email} can now sign in."))
    }
    .await;
    after(&app, &admin, "/admin/admins", result)
}

/// Signs the admin out of every other browser (a lost laptop, a shared machine).
async fn sign_out_others(State(app): State<AppState>, f: AdminForm<Empty>) -> PageResult {
    let admin = f.admin;
    let result = admins::delete_sessions_of(&app.db, admin.id, Some(admin.session_id))
        .await
        .map(|n| match n {
            1 => "Signed out of 1 other session.".to_owned(),
            n => format!("Signed out of {n} other sessions."),
        });
    after(&app, &admin, "/admin/admins", result)
}

/// The confirmation page of Sign out everywhere: how many browsers it signs out.
async fn confirm_sign_out_admin(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<i64>,
) -> PageResult {
    let Some(who) = admins::list(&app.db)
        .await?
        .into_iter()
        .find(|a| a.id == id)
    else {
        return Err(not_found("This admin"));
    };
    let sessions = admins::live_sessions(&app.db)
        .await?
        .into_iter()
        .find(|(a, _)| *a == id)
        .map_or(0, |(_, n)| n);
    let flash = app.flash.take(admin.session_id);
    let me = id == admin.id;
    let mut page = Confirmation::new(
        Page::new(&admin, "Sign out everywhere", &flash),
        if me {
            ("Sign yourself (", &who.email, ") out everywhere?")
        } else {
            ("Sign ", &who.email, " out everywhere?")
        },
        format!("/admin/admins/{id}/sessions/delete"),
        "/admin/admins",
    )
    .crumb("/admin/admins", "Admins")
    .says(match sessions {
        0 => "No browser is signed in as this admin now: nothing would end.".to_owned(),
        1 => "1 session ends at its next request: that browser must sign in again.".to_owned(),
        n => format!("{n} sessions end at their next request: each browser must sign in again."),
    });
    page = if me {
        page.says("This browser is signed out too: you go to the sign-in page.")
    } else {
        page.says(
            "The account stays, with its password: an open Test viewer of theirs stops, and \
             anyone with the password can sign in again.",
        )
    };
    Ok(render(page.buttons("Cancel", "Sign out everywhere")))
}

/// Signs an admin out everywhere (their sessions end at their next request). Signing
/// oneself out everywhere leads to the sign-in page.
async fn sign_out_admin(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    f: AdminForm<Empty>,
) -> PageResult {
    let admin = f.admin;
    let result = admins::delete_sessions_of(&app.db, id, None).await;
    if id == admin.id && result.is_ok() {
        app.flash.take(admin.session_id);
        return Ok((
            CookieJar::new().add(session::removal()),
            Redirect::to("/login"),
        )
            .into_response());
    }
    let email = admins::list(&app.db)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .map_or_else(|| "The admin".to_owned(), |a| a.email);
    let result = result.map(|n| match n {
        0 => format!("{email} was not signed in."),
        1 => format!("{email} is signed out of 1 session."),
        n => format!("{email} is signed out of {n} sessions."),
    });
    after(&app, &admin, "/admin/admins", result)
}
