//! Where a canvas draws the draft: every block's box (its saved position, or where the
//! layered layout puts it), and the map of the agent's flows with the arrows between them.
//! The console's canvas reads it; any other front end may too.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiAdmin, ManageErrors, agent_of, json, with_etag};
use crate::domain::layout::{self, Placed};
use crate::domain::payload::Problem;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/agents/{agentId}/draft/layout", get(draft_layout))
}

/// A box on the canvas: its top-left corner and size, in canvas units (CSS pixels at 100 %).
#[derive(Serialize, ToSchema)]
pub struct LayoutBox {
    /// The block's (or flow's) key.
    key: String,
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    /// Whether the position is the one saved in the draft (an admin placed it) rather than
    /// one the layout chose.
    saved: bool,
}

/// One flow's boxes, in the flow's order.
#[derive(Serialize, ToSchema)]
pub struct FlowLayout {
    key: String,
    blocks: Vec<LayoutBox>,
}

/// A Transfer Flow (or pre-call Filter route) from one flow to another.
#[derive(Serialize, ToSchema)]
pub struct FlowLink {
    from: String,
    to: String,
}

/// The whole draft laid out.
#[derive(Serialize, ToSchema)]
pub struct DraftLayout {
    /// The draft's revision it was made from (its ETag is `"r<revision>"`).
    revision: i64,
    flows: Vec<FlowLayout>,
    /// The map of flows: a box per flow.
    map: Vec<LayoutBox>,
    links: Vec<FlowLink>,
}

fn boxed(p: Placed, saved: bool) -> LayoutBox {
    LayoutBox {
        key: p.key,
        x: p.x,
        y: p.y,
        width: p.width,
        height: p.height,
        saved,
    }
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/draft/layout", tag = "manage", operation_id = "draftLayout",
    summary = "Where a canvas draws the draft's blocks and flows",
    description = "Each block's box: its saved `position`, or, for a flow none of whose blocks has one (or with `tidy=true`), where a layered layout puts it (entry on top, connections pointing down); a block added later without a position goes below what leads to it. Also a map of the flows with the Transfer Flow arrows between them. Nothing is saved: write positions into the draft to keep them.",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("tidy" = Option<bool>, Query, description = "Lay every flow out afresh, ignoring saved positions")),
    responses((status = 200, description = "The boxes", body = DraftLayout,
        headers(("ETag" = String, description = "The draft's ETag"))), ManageErrors),
    security(("adminToken" = [])))]
pub async fn draft_layout(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let mut tidy = false;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).map_err(|_| {
            AppError::problem(ProblemKind::BadRequest, "the query string is not readable")
        })?;
    for (name, value) in &pairs {
        match (name.as_str(), value.as_str()) {
            ("tidy", "true") => tidy = true,
            ("tidy", "false") => tidy = false,
            (name, _) => {
                let detail = if name == "tidy" {
                    "tidy is true or false".to_owned()
                } else {
                    format!("unknown parameter {name:?}: only tidy")
                };
                return Err(ApiProblem::with_errors(
                    ProblemKind::BadRequest,
                    vec![Problem::at(name, detail)],
                )
                .into());
            }
        }
    }
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    let doc = &draft.document;
    let flows = doc
        .flows
        .iter()
        .map(|f| {
            let placed = layout::flow(f, tidy);
            FlowLayout {
                key: f.key.clone(),
                blocks: placed
                    .into_iter()
                    .zip(&f.blocks)
                    .map(|(p, b)| boxed(p, !tidy && b.position.is_some()))
                    .collect(),
            }
        })
        .collect();
    let body = DraftLayout {
        revision: draft.revision,
        flows,
        map: layout::map(doc)
            .into_iter()
            .map(|p| boxed(p, false))
            .collect(),
        links: layout::flow_links(doc)
            .into_iter()
            .map(|(from, to)| FlowLink { from, to })
            .collect(),
    };
    Ok(with_etag(json(StatusCode::OK, &body), draft.revision))
}
