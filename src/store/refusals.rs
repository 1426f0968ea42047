//! Requests refused before a valid key was seen, counted per webhook, minute and reason.
//!
//! Anyone who knows a webhook's URL can send requests without its key, as fast as their
//! address's rate allows: a delivery row each (and a commit each) would let them fill the
//! disk and hold up the writer. They are counted in memory instead, and the counts are
//! written once a second by [`spawn_flusher`], one upsert per webhook, minute and reason.
//!
//! The counts are not acknowledged data: a crash loses what was counted since the last
//! flush (at most the last second); a graceful stop flushes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Db;
use super::sql::sql;
use super::writer::Writer;

/// Why a request was refused before its key was found valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// No key in `X-Authorization` or `Authorization: Bearer`.
    MissingKey,
    /// A key that is not (or no longer) one of the webhook's.
    WrongKey,
    /// Over the sender address's rate, which is checked before the key.
    RateLimited,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::WrongKey => "wrong_key",
            Self::RateLimited => "rate_limited",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "missing_key" => Some(Self::MissingKey),
            "wrong_key" => Some(Self::WrongKey),
            "rate_limited" => Some(Self::RateLimited),
            _ => None,
        }
    }
}

/// Milliseconds in a minute: counts are kept per minute.
pub const MINUTE_MS: i64 = 60_000;

/// The start of the minute `at` (Unix ms) falls in.
pub fn minute_of(at: i64) -> i64 {
    at - at.rem_euclid(MINUTE_MS)
}

/// Refusals of one webhook in one minute for one reason, to add to the stored count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalCount {
    pub action_id: i64,
    /// Start of the minute, Unix ms.
    pub minute: i64,
    pub reason: RefusalReason,
    pub count: i64,
}

type Key = (i64, i64, RefusalReason);

/// Refusals counted since the last flush. Its size is bounded by the number of webhooks
/// (unknown URLs are answered 404 and not counted), whatever the request rate.
#[derive(Debug, Default)]
pub struct RefusalCounter {
    pending: Mutex<HashMap<Key, i64>>,
}

impl RefusalCounter {
    /// Counts one refusal of webhook `action_id`, received at `at` (Unix ms).
    pub fn count(&self, action_id: i64, at: i64, reason: RefusalReason) {
        let mut pending = self.pending.lock().expect("refusal counter lock");
        *pending
            .entry((action_id, minute_of(at), reason))
            .or_insert(0) += 1;
    }

    /// Takes what was counted since the last flush.
    pub fn take(&self) -> Vec<RefusalCount> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("refusal counter lock"));
        pending
            .into_iter()
            .map(|((action_id, minute, reason), count)| RefusalCount {
                action_id,
                minute,
                reason,
                count,
            })
            .collect()
    }

    /// Puts counts back that could not be written, to try again with the next flush.
    fn restore(&self, counts: Vec<RefusalCount>) {
        let mut pending = self.pending.lock().expect("refusal counter lock");
        for c in counts {
            *pending
                .entry((c.action_id, c.minute, c.reason))
                .or_insert(0) += c.count;
        }
    }

    /// Counted but not yet written for webhook `action_id`, from minute `since` on.
    fn unwritten(&self, action_id: i64, since: i64) -> Vec<RefusalCount> {
        let pending = self.pending.lock().expect("refusal counter lock");
        pending
            .iter()
            .filter(|((a, minute, _), _)| *a == action_id && *minute >= since)
            .map(|(&(action_id, minute, reason), &count)| RefusalCount {
                action_id,
                minute,
                reason,
                count,
            })
            .collect()
    }

    /// Writes what was counted. Counts the writer could not take (a full disk) are kept
    /// for the next try.
    pub async fn flush(&self, writer: &Writer) {
        let counts = self.take();
        if counts.is_empty() {
            return;
        }
        if let Err(e) = writer.count_refusals(counts.clone()).await {
            tracing::warn!(error = %e, "refusal counts not written; kept for the next try");
            self.restore(counts);
        }
    }
}

/// How often counted refusals are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes the counted refusals every [`FLUSH_EVERY`]: one writer turn a second, however
/// many requests were refused.
pub fn spawn_flusher(counter: Arc<RefusalCounter>, writer: Writer) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            counter.flush(&writer).await;
        }
    })
}

/// Refusals without a valid key over a span of time, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalTally {
    pub missing_key: i64,
    pub wrong_key: i64,
    pub rate_limited: i64,
}

impl RefusalTally {
    pub fn total(&self) -> i64 {
        self.missing_key + self.wrong_key + self.rate_limited
    }

    fn add(&mut self, reason: RefusalReason, count: i64) {
        match reason {
            RefusalReason::MissingKey => self.missing_key += count,
            RefusalReason::WrongKey => self.wrong_key += count,
            RefusalReason::RateLimited => self.rate_limited += count,
        }
    }

    /// One sentence for the console: "1 234 refused without a valid key — 1 200 wrong key,
    /// 34 rate limited", or that there were none.
    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "no request refused without a valid key".into();
        }
        let parts: Vec<String> = [
            (self.wrong_key, "wrong key"),
            (self.missing_key, "no key"),
            (self.rate_limited, "rate limited"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{} {what}", thousands(n)))
        .collect();
        format!(
            "{} refused without a valid key — {}",
            thousands(self.total()),
            parts.join(", ")
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total": self.total(),
            "wrongKey": self.wrong_key,
            "missingKey": self.missing_key,
            "rateLimited": self.rate_limited,
            "text": self.describe(),
        })
    }
}

/// `1234567` as `1 234 567`, with narrow no-break spaces so that a number never wraps.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    out
}

/// One minute's refusals of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteTally {
    /// Start of the minute, Unix ms.
    pub minute: i64,
    pub tally: RefusalTally,
}

/// Webhook `action_id`'s refusals without a valid key from minute `since` on (Unix ms,
/// rounded down to its minute), newest minute first, counting those not yet written too.
pub async fn by_minute(
    db: &Db,
    counter: &RefusalCounter,
    action_id: i64,
    since: i64,
) -> Result<Vec<MinuteTally>, sqlx::Error> {
    let since = minute_of(since);
    let rows: Vec<(i64, String, i64)> = sql!(
        db.read(),
        query_as(
            "SELECT minute, reason, count FROM refusal_counts
          WHERE action_id = ? AND minute >= ? ORDER BY minute",
        )
        .bind(action_id)
        .bind(since)
        .fetch_all
    )?;
    let mut minutes: std::collections::BTreeMap<i64, RefusalTally> = Default::default();
    for (minute, reason, count) in rows {
        if let Some(reason) = RefusalReason::parse(&reason) {
            minutes.entry(minute).or_default().add(reason, count);
        }
    }
    for c in counter.unwritten(action_id, since) {
        minutes.entry(c.minute).or_default().add(c.reason, c.count);
    }
    Ok(minutes
        .into_iter()
        .rev()
        .map(|(minute, tally)| MinuteTally { minute, tally })
        .collect())
}

/// The sum of [`by_minute`].
pub fn total(minutes: &[MinuteTally]) -> RefusalTally {
    let mut sum = RefusalTally::default();
    for m in minutes {
        sum.missing_key += m.tally.missing_key;
        sum.wrong_key += m.tally.wrong_key;
        sum.rate_limited += m.tally.rate_limited;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gather_per_webhook_minute_and_reason() {
        let c = RefusalCounter::default();
        c.count(1, 60_000, RefusalReason::WrongKey);
        c.count(1, 119_999, RefusalReason::WrongKey);
        c.count(1, 120_000, RefusalReason::WrongKey);
        c.count(2, 60_001, RefusalReason::RateLimited);
        let mut taken = c.take();
        taken.sort_by_key(|r| (r.action_id, r.minute));
        assert_eq!(
            taken,
            vec![
                RefusalCount {
                    action_id: 1,
                    minute: 60_000,
                    reason: RefusalReason::WrongKey,
                    count: 2
                },
                RefusalCount {
                    action_id: 1,
                    minute: 120_000,
                    reason: RefusalReason::WrongKey,
                    count: 1
                },
                RefusalCount {
                    action_id: 2,
                    minute: 60_000,
                    reason: RefusalReason::RateLimited,
                    count: 1
                },
            ]
        );
        assert!(c.take().is_empty(), "taking empties the counter");
    }

    #[test]
    fn a_tally_reads_as_one_sentence() {
        let t = RefusalTally {
            missing_key: 0,
            wrong_key: 1200,
            rate_limited: 34,
        };
        assert_eq!(
            t.describe(),
            "1\u{202F}234 refused without a valid key — 1\u{202F}200 wrong key, 34 rate limited"
        );
        assert_eq!(
            RefusalTally::default().describe(),
            "no request refused without a valid key"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1\u{202F}000");
        assert_eq!(thousands(1_234_567), "1\u{202F}234\u{202F}567");
    }

    #[test]
    fn minutes_start_on_the_minute() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }
}
