//! Editing an agent's draft: the one way the console, the management API and the command
//! line change what an agent does. Each edit reads the draft, changes it, checks that the
//! result still holds together, and saves it only if nobody saved in between (or, when the
//! editor says which revision it saw, only if that is still the current one).

use crate::domain::document::AgentDocument;
use crate::domain::payload::Problem;
use crate::store::documents::{self, Saved};
use crate::store::{Db, StoreError};

/// Why an edit was not saved.
#[derive(Debug)]
pub enum EditError {
    /// The draft changed since the editor read it: by whom and when.
    Stale {
        current: i64,
        by: String,
        at: i64,
    },
    /// The edit itself cannot be made (a block that does not exist, a name taken…).
    Refused(String),
    /// The edited document would not hold together.
    Invalid(Vec<Problem>),
    NotFound(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for EditError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stale { by, at, .. } => write!(
                f,
                "{by} changed the draft at {} after you read it: your change was not saved",
                crate::store::rfc3339(*at)
            ),
            Self::Refused(m) | Self::NotFound(m) => f.write_str(m),
            Self::Invalid(problems) => f.write_str(
                &problems
                    .iter()
                    .map(|p| match &p.pointer {
                        Some(at) => format!("{at}: {}", p.detail),
                        None => p.detail.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Self::Database(e) => write!(f, "{e}"),
        }
    }
}

impl From<EditError> for StoreError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Stale { current, .. } => Self::Stale { current },
            EditError::NotFound(m) => Self::NotFound(m),
            EditError::Database(e) => Self::Database(e),
            other => Self::Conflict(other.to_string()),
        }
    }
}

impl From<EditError> for crate::error::AppError {
    fn from(e: EditError) -> Self {
        use crate::error::{ApiProblem, ProblemKind};
        match e {
            EditError::Invalid(problems) => {
                ApiProblem::with_errors(ProblemKind::ValidationFailed, problems).into()
            }
            EditError::Refused(m) => Self::problem(ProblemKind::ValidationFailed, m),
            EditError::NotFound(m) => Self::problem(ProblemKind::NotFound, m),
            e @ EditError::Stale { .. } => {
                Self::problem(ProblemKind::PreconditionFailed, e.to_string())
            }
            EditError::Database(e) => Self::Database(e),
        }
    }
}

/// The draft of `agent_id`, or a not-found error.
pub async fn current(db: &Db, agent_id: i64) -> Result<documents::Draft, EditError> {
    documents::draft(db, agent_id)
        .await?
        .ok_or_else(|| EditError::NotFound("this agent has no draft".into()))
}

/// Applies `change` to the draft (at `expected`, when the editor says which revision it saw)
/// and saves it as `by`. Nothing is saved when the change refuses, when the result does not
/// hold together, or when someone saved meanwhile.
pub async fn edit<T>(
    db: &Db,
    agent_id: i64,
    expected: Option<i64>,
    by: &str,
    change: impl FnOnce(&mut AgentDocument) -> Result<T, String>,
) -> Result<(T, Saved), EditError> {
    let draft = current(db, agent_id).await?;
    if let Some(expected) = expected
        && expected != draft.revision
    {
        return Err(EditError::Stale {
            current: draft.revision,
            by: draft.updated_by,
            at: draft.updated_at,
        });
    }
    let mut doc = draft.document;
    let out = change(&mut doc).map_err(EditError::Refused)?;
    let doc = AgentDocument::from_json(&doc.to_json()).map_err(EditError::Invalid)?;
    let saved = replace(db, agent_id, &doc, Some(draft.revision), by).await?;
    Ok((out, saved))
}

/// Saves `doc` as the whole draft (at `expected`, when given).
pub async fn replace(
    db: &Db,
    agent_id: i64,
    doc: &AgentDocument,
    expected: Option<i64>,
    by: &str,
) -> Result<Saved, EditError> {
    match documents::save_draft(db, agent_id, doc, expected, by).await {
        Ok(saved) => Ok(saved),
        Err(StoreError::Stale { current }) => {
            let draft = current_or(db, agent_id, current).await?;
            Err(EditError::Stale {
                current,
                by: draft.0,
                at: draft.1,
            })
        }
        Err(StoreError::NotFound(m)) => Err(EditError::NotFound(m)),
        Err(StoreError::Conflict(m)) => Err(EditError::Refused(m)),
        Err(StoreError::Database(e)) => Err(EditError::Database(e)),
    }
}

async fn current_or(db: &Db, agent_id: i64, revision: i64) -> Result<(String, i64), EditError> {
    Ok(documents::draft(db, agent_id)
        .await?
        .map(|d| (d.updated_by, d.updated_at))
        .unwrap_or_else(|| (format!("revision {revision}"), 0)))
}
