//! Slows down repeated failed sign-ins, per account and per address. The failures are
//! counted in the database ([`crate::store::sign_ins`]), so that every server of a cluster
//! applies the same waits.

use std::time::Duration;

use crate::store::{Db, now_ms, sign_ins};

/// Failures allowed before waits begin.
const FREE_FAILURES: u32 = 5;
/// Longest wait imposed.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(900);

/// How long a subject with `failures`, the last one `since` ago, must still wait.
fn wait_after(failures: u32, since: Duration) -> Option<Duration> {
    if failures < FREE_FAILURES || since > MEMORY {
        return None;
    }
    let exp = (failures - FREE_FAILURES).min(16);
    let wait = Duration::from_secs(1u64 << exp).min(MAX_WAIT);
    wait.checked_sub(since)
}

/// How long `key` (`account:<email>`, `address:<ip>`) must still wait before trying
/// again, if at all.
pub async fn wait(db: &Db, key: &str) -> Result<Option<Duration>, sqlx::Error> {
    let Some((failures, last_at)) = sign_ins::failures(db, key).await? else {
        return Ok(None);
    };
    let since = Duration::from_millis(u64::try_from(now_ms() - last_at).unwrap_or(0));
    Ok(wait_after(
        u32::try_from(failures).unwrap_or(u32::MAX),
        since,
    ))
}

pub async fn failed(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sign_ins::failed(db, key, now, now - MEMORY.as_millis() as i64).await
}

pub async fn succeeded(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    sign_ins::succeeded(db, key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_grow() {
        let now = Duration::ZERO;
        assert!(wait_after(FREE_FAILURES - 1, now).is_none());
        let first = wait_after(FREE_FAILURES, now).expect("now waiting");
        let second = wait_after(FREE_FAILURES + 1, now).expect("still waiting");
        assert!(second > first);
        assert!(wait_after(FREE_FAILURES + 40, now).unwrap() <= MAX_WAIT);
    }

    #[test]
    fn a_wait_counts_from_the_last_failure_and_old_failures_are_forgotten() {
        assert_eq!(
            wait_after(FREE_FAILURES + 1, Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert!(wait_after(FREE_FAILURES + 1, Duration::from_secs(3)).is_none());
        assert!(wait_after(FREE_FAILURES + 10, MEMORY + Duration::from_secs(1)).is_none());
    }
}
