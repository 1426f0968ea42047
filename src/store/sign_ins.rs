//! Failed sign-ins by subject (`account:<email>`, `address:<ip>`), counted in the database
//! so that every server of a cluster counts the same failures: behind a proxy that spreads
//! requests, counts kept by each server would allow as many more guesses as there are
//! servers. The policy (how many, how long) is [`crate::auth::throttle`]'s.

use super::Db;
use super::sql::sql;

/// A subject's failures since they were last forgotten, and when the last one was (Unix ms).
pub async fn failures(db: &Db, subject: &str) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sql!(
        db.read(),
        query_as("SELECT failures, last_at FROM sign_in_failures WHERE subject = ?")
            .bind(subject)
            .fetch_optional
    )
}

/// Counts one failure at `now`: the first one if the last was before `forget_before`.
/// Subjects whose last failure was before `forget_before` are removed meanwhile.
pub async fn failed(
    db: &Db,
    subject: &str,
    now: i64,
    forget_before: i64,
) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query("DELETE FROM sign_in_failures WHERE last_at < ? AND subject <> ?")
            .bind(forget_before)
            .bind(subject)
            .execute
    )?;
    sql!(
        db.write(),
        query(
            "INSERT INTO sign_in_failures (subject, failures, last_at) VALUES (?, 1, ?)
             ON CONFLICT (subject) DO UPDATE
                SET failures = CASE WHEN sign_in_failures.last_at < ? THEN 1
                                    ELSE sign_in_failures.failures + 1 END,
                    last_at = excluded.last_at",
        )
        .bind(subject)
        .bind(now)
        .bind(forget_before)
        .execute
    )?;
    Ok(())
}

/// A successful sign-in forgets the subject's failures.
pub async fn succeeded(db: &Db, subject: &str) -> Result<(), sqlx::Error> {
    sql!(
        db.write(),
        query("DELETE FROM sign_in_failures WHERE subject = ?")
            .bind(subject)
            .execute
    )?;
    Ok(())
}
