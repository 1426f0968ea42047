//! Reading calls back. Calls are written by the writer.

use sqlx::FromRow;

use super::Db;

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
}

pub async fn find(db: &Db, public_id: &str) -> Result<Option<CallRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.public_id, c.agent_id, g.public_id AS agent_public_id, c.caller, c.called,
                c.started_at, c.waited_ms, c.source, c.variables, c.trace, c.status,
                c.outcome, c.turns, c.late_fields, c.late_at
           FROM calls c JOIN agents g ON g.id = c.agent_id
          WHERE c.public_id = ?",
    )
    .bind(public_id)
    .fetch_optional(&db.read)
    .await
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
    let done = sqlx::query(
        "UPDATE calls SET variables = ?, trace = ?, status = ?, outcome = ?, turns = turns + 1
          WHERE public_id = ? AND turns = ? AND status = 'active'",
    )
    .bind(variables)
    .bind(trace)
    .bind(status)
    .bind(outcome)
    .bind(public_id)
    .bind(turns)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done == 1)
}
