//! Reading calls back. Calls are written by the writer.

use sqlx::{FromRow, Postgres, QueryBuilder, Sqlite};

use super::Db;
use super::sql::sql;

#[derive(Debug, Clone, FromRow)]
pub struct CallRow {
    pub public_id: String,
    pub agent_id: i64,
    pub agent_public_id: String,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    pub waited_ms: i64,
    pub source: String,
    pub variables: String,
    pub trace: String,
    pub status: String,
    pub outcome: Option<String>,
    pub turns: i64,
    pub late_fields: Option<String>,
    pub late_at: Option<i64>,
    /// The version of the agent's configuration it ran (none before versions).
    pub version: Option<i64>,
}

pub async fn find(db: &Db, public_id: &str) -> Result<Option<CallRow>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT c.public_id, c.agent_id, g.public_id AS agent_public_id, c.caller, c.called,
                c.started_at, c.waited_ms, c.source, c.variables, c.trace, c.status,
                c.outcome, c.turns, c.late_fields, c.late_at, c.version
           FROM calls c JOIN agents g ON g.id = c.agent_id
          WHERE c.public_id = ?",
        )
        .bind(public_id)
        .fetch_optional
    )
}

/// Stores a call's next turn, if no other answer moved it on since `turns` was read.
pub async fn continue_call(
    db: &Db,
    public_id: &str,
    turns: i64,
    variables: &str,
    trace: &str,
    status: &str,
    outcome: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = super::begin_write(db).await?;
    let done =
        sql!(tx.exec(), query(
        "UPDATE calls SET variables = ?, trace = ?, status = ?, outcome = ?, turns = turns + 1
          WHERE public_id = ? AND turns = ? AND status = 'active'",
    ).bind(variables).bind(trace).bind(status).bind(outcome).bind(public_id).bind(turns).execute)?;
    tx.commit().await?;
    Ok(done == 1)
}

/// One line of an agent's call history.
#[derive(Debug, Clone, FromRow)]
pub struct CallSummary {
    pub public_id: String,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    pub waited_ms: i64,
    pub source: String,
    pub status: String,
    pub outcome: Option<String>,
}

/// Which outcome the history shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutcomeFilter {
    #[default]
    Any,
    /// Calls still waiting at a question (they have no outcome yet).
    Active,
    /// Calls that ended with this outcome tag.
    Is(String),
}

/// What the history lists: filters, and where the previous page ended.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub outcome: OutcomeFilter,
    /// `webhook` or `fallback`.
    pub source: Option<String>,
    /// Only calls older than this one (the public id of the last call of the previous page).
    pub before: Option<String>,
}

/// An agent's calls, newest first, at most `limit`. Ordered by start time, then by row, so
/// that a page ends at a precise call and the next one starts right after it; an unknown
/// `before` gives no calls.
pub async fn list(
    db: &Db,
    agent_id: i64,
    filter: &CallFilter,
    limit: i64,
) -> Result<Vec<CallSummary>, sqlx::Error> {
    match db {
        Db::Sqlite(db) => {
            history::<Sqlite>(agent_id, filter, limit)
                .build_query_as()
                .fetch_all(&db.read)
                .await
        }
        Db::Postgres(db) => {
            history::<Postgres>(agent_id, filter, limit)
                .build_query_as()
                .fetch_all(&db.pool)
                .await
        }
    }
}

/// The history's query on either engine (the builder numbers PostgreSQL's placeholders).
fn history<'a, E: sqlx::Database>(
    agent_id: i64,
    filter: &CallFilter,
    limit: i64,
) -> QueryBuilder<'a, E>
where
    i64: sqlx::Encode<'a, E> + sqlx::Type<E>,
    String: sqlx::Encode<'a, E> + sqlx::Type<E>,
{
    let mut q: QueryBuilder<E> = QueryBuilder::new(
        "SELECT c.public_id, c.caller, c.called, c.started_at, c.waited_ms, c.source, c.status,
                c.outcome
           FROM calls c
          WHERE c.agent_id = ",
    );
    q.push_bind(agent_id);
    match &filter.outcome {
        OutcomeFilter::Any => {}
        OutcomeFilter::Active => {
            q.push(" AND c.outcome IS NULL");
        }
        OutcomeFilter::Is(outcome) => {
            q.push(" AND c.outcome = ").push_bind(outcome.clone());
        }
    }
    if let Some(source) = &filter.source {
        q.push(" AND c.source = ").push_bind(source.clone());
    }
    if let Some(before) = &filter.before {
        q.push(" AND (c.started_at, c.id) < (SELECT b.started_at, b.id FROM calls b WHERE b.public_id = ")
            .push_bind(before.clone())
            .push(" AND b.agent_id = ")
            .push_bind(agent_id)
            .push(")");
    }
    q.push(" ORDER BY c.started_at DESC, c.id DESC LIMIT ")
        .push_bind(limit);
    q
}

/// The outcomes an agent's calls ended with, for the history's filter.
pub async fn outcomes(db: &Db, agent_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sql!(
        db.read(),
        query_scalar(
            "SELECT DISTINCT outcome FROM calls
          WHERE agent_id = ? AND outcome IS NOT NULL ORDER BY outcome",
        )
        .bind(agent_id)
        .fetch_all
    )
}

/// Records `fields` as data that arrived for the call after it fell back (a simulated late
/// payload; real ones are recorded by the writer as they land).
pub async fn record_late(
    db: &Db,
    public_id: &str,
    fields: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = super::begin_write(db).await?;
    sql!(
        tx.exec(),
        query(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?), late_at = ?
          WHERE public_id = ?",
        )
        .bind(fields)
        .bind(at)
        .bind(public_id)
        .execute
    )?;
    tx.commit().await?;
    Ok(())
}

/// Whether unused data for `phone` waits at the webhook endpoint `action_id`: its fields'
/// names and when it was received.
pub async fn cached_for(
    db: &Db,
    action_id: i64,
    phone: &str,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sql!(
        db.read(),
        query_as(
            "SELECT fields, received_at FROM contexts
          WHERE action_id = ? AND phone = ? AND call_id IS NULL AND expires_at > ?",
        )
        .bind(action_id)
        .bind(phone)
        .bind(super::now_ms())
        .fetch_optional
    )
}
