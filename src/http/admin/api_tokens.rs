//! Admin API tokens, for the management API: made here for the signed-in admin (shown
//! once), listed with their last use, revoked after a confirmation.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use serde::Deserialize;

use super::{Page, PageResult, after, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::http::AppState;
use crate::store::{api_tokens, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api-tokens", get(page).post(create))
        .route(
            "/admin/api-tokens/{id}/revoke",
            get(confirm_revoke).post(revoke),
        )
}

struct TokenView {
    id: i64,
    name: String,
    admin: String,
    read_only: bool,
    last_chars: String,
    created_at: String,
    last_used_at: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "admin/api_tokens.html")]
struct TokensPage {
    page: Page,
    tokens: Vec<TokenView>,
    /// A token just made, shown once.
    new_token: Option<String>,
}

async fn page(State(app): State<AppState>, admin: Admin) -> PageResult {
    let flash = app.flash.take(admin.session_id);
    let new_token = flash.secret_for("api-token", admin.id);
    let tokens = api_tokens::list(&app.db, None)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            admin: t.admin_email,
            read_only: t.read_only,
            last_chars: t.last_chars,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339).unwrap_or_default(),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    Ok(render(TokensPage {
        page: Page::new(&admin, "API tokens", &flash),
        tokens,
        new_token,
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NewToken {
    name: String,
    read_only: Option<String>,
}

async fn create(State(app): State<AppState>, f: AdminForm<NewToken>) -> PageResult {
    let AdminForm { admin, form } = f;
    match api_tokens::create(&app.db, admin.id, &form.name, form.read_only.is_some()).await {
        Ok((_, token)) => {
            app.flash
                .secret(admin.session_id, "api-token", admin.id, &token);
            Ok(Redirect::to("/admin/api-tokens").into_response())
        }
        Err(e) => after(&app, &admin, "/admin/api-tokens", Err(e)),
    }
}

#[derive(Template)]
#[template(path = "admin/confirm_revoke_api_token.html")]
struct ConfirmPage {
    page: Page,
    id: i64,
    name: String,
    admin: String,
}

async fn confirm_revoke(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<i64>,
) -> PageResult {
    let token = api_tokens::list(&app.db, None)
        .await?
        .into_iter()
        .find(|t| t.id == id && t.revoked_at.is_none())
        .ok_or_else(|| not_found("This API token"))?;
    let flash = app.flash.take(admin.session_id);
    Ok(render(ConfirmPage {
        page: Page::new(&admin, "Revoke an API token", &flash),
        id,
        name: token.name,
        admin: token.admin_email,
    }))
}

#[derive(Deserialize)]
struct Nothing {}

async fn revoke(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let result = api_tokens::revoke(&app.db, id, None)
        .await
        .map(|_| "The API token stopped working.".to_owned());
    after(&app, &f.admin, "/admin/api-tokens", result)
}
