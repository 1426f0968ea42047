//! The writer's statements, one per group rather than one per request.
//!
//! Rows go in as one multi-row `VALUES` list per statement. To keep the number of distinct
//! statements (and so of prepared statements cached per connection) small, the list has a
//! power-of-two number of rows: a group of 100 fills 100 of 128 rows and the rest are NULL,
//! which every statement ignores. Each size is prepared once.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use sqlx::SqliteConnection;

use super::now_ms;
use super::writer::{
    Attempted, CallAttempt, CallRecord, Claimed, IDEMPOTENCY_WINDOW_MS, IngestCommitted,
    IngestWrite, LATE_WINDOW_MS, NewDelivery, Receipt, StepState,
};
use crate::wakeups::WakeKey;

/// Most rows per statement: 256 rows of the widest statement (12 columns) stay far below
/// SQLite's limit on bound parameters, and a group never has more.
const MAX_CHUNK: usize = 256;

/// Rows `rows` of a list, in a statement with `slots` rows (a power of two).
#[derive(Debug, PartialEq)]
struct Chunk {
    rows: Range<usize>,
    slots: usize,
}

impl Chunk {
    /// NULL parameters to bind after the real rows.
    fn padding(&self, cols: usize) -> usize {
        (self.slots - self.rows.len()) * cols
    }
}

/// `0..n` in statements of at most [`MAX_CHUNK`] rows.
fn chunks(n: usize) -> Vec<Chunk> {
    (0..n)
        .step_by(MAX_CHUNK)
        .map(|start| {
            let end = (start + MAX_CHUNK).min(n);
            Chunk {
                rows: start..end,
                slots: (end - start).next_power_of_two(),
            }
        })
        .collect()
}

/// Binds `n` NULLs: the padding rows of a chunk.
macro_rules! pad {
    ($q:expr, $n:expr) => {{
        let mut q = $q;
        for _ in 0..$n {
            q = q.bind(None::<i64>);
        }
        q
    }};
}

/// `(?, ?), (?, ?)` for `rows` rows of `cols` parameters.
fn values(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

/// One row of `deliveries`.
pub struct DeliveryRow<'a> {
    action_id: i64,
    received_at: i64,
    status: i64,
    outcome: &'static str,
    phone: Option<&'a str>,
    fields: Option<&'a str>,
    problems: Option<String>,
    body_excerpt: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    latency_us: i64,
    context_id: Option<i64>,
    call_id: Option<String>,
}

fn micros_since(started: std::time::Instant) -> i64 {
    started.elapsed().as_micros().min(i64::MAX as u128) as i64
}

impl<'a> DeliveryRow<'a> {
    fn for_webhook(w: &'a IngestWrite, status: i64, outcome: &'static str) -> Self {
        Self {
            action_id: w.action_id,
            received_at: w.received_at,
            status,
            outcome,
            phone: Some(&w.phone),
            fields: None,
            problems: None,
            body_excerpt: None,
            idempotency_key: w.idempotency.as_ref().map(|i| i.key.as_str()),
            latency_us: micros_since(w.started),
            context_id: None,
            call_id: None,
        }
    }

    /// A refused request.
    pub fn refused(d: &'a NewDelivery) -> Self {
        Self {
            action_id: d.action_id,
            received_at: d.received_at,
            status: i64::from(d.status),
            outcome: "refused",
            phone: d.phone.as_deref(),
            fields: None,
            problems: Some(d.problems.clone()),
            body_excerpt: d.body_excerpt.as_deref(),
            idempotency_key: d.idempotency_key.as_deref(),
            latency_us: micros_since(d.started),
            context_id: None,
            call_id: None,
        }
    }
}

/// A context as the upsert left it.
struct Cached {
    context_id: i64,
    /// A JSON list of the field names now cached.
    names: String,
    expires_at: i64,
}

/// The group's transaction: begun by its first statement, which saves a round trip.
#[derive(Default)]
pub struct Tx {
    begun: bool,
    committed: bool,
}

impl Tx {
    /// `sql`, preceded by `BEGIN IMMEDIATE` if it is the group's first statement.
    pub fn sql(&mut self, sql: String) -> String {
        if std::mem::replace(&mut self.begun, true) {
            sql
        } else {
            format!("BEGIN IMMEDIATE; {sql}")
        }
    }

    /// `sql` as the group's last statement, followed by `COMMIT` in the same round trip.
    pub fn last(&mut self, sql: String) -> String {
        self.committed = true;
        format!("{}; COMMIT", self.sql(sql))
    }

    /// Whether statements ran and still wait for their `COMMIT`.
    pub fn needs_commit(&self) -> bool {
        self.begun && !self.committed
    }
}

/// What became of one webhook request in a group.
pub struct IngestDone {
    pub committed: IngestCommitted,
    pub wake: Option<WakeKey>,
}

/// Caches a group of webhook requests. Requests about the same caller, or with the same
/// idempotency key, go in successive rounds so that each sees the one before.
pub async fn ingest<'a>(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    items: &[&'a IngestWrite],
    deliveries: &mut Vec<DeliveryRow<'a>>,
) -> Result<Vec<IngestDone>, sqlx::Error> {
    let now = now_ms();
    let mut results: Vec<Option<IngestDone>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let mut callers = HashSet::new();
        let mut keys = HashSet::new();
        let (mut round, mut later) = (Vec::new(), Vec::new());
        for i in pending {
            let w = items[i];
            let caller = (w.action_id, w.phone.as_str());
            let key = w
                .idempotency
                .as_ref()
                .map(|k| (w.action_id, k.key.as_str()));
            if !callers.contains(&caller) && key.is_none_or(|k| !keys.contains(&k)) {
                callers.insert(caller);
                keys.extend(key);
                round.push(i);
            } else {
                later.push(i);
            }
        }
        let round: Vec<(usize, &IngestWrite)> = round.into_iter().map(|i| (i, items[i])).collect();
        ingest_round(conn, tx, &round, now, &mut results, deliveries).await?;
        pending = later;
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every request has an outcome"))
        .collect())
}

/// Earlier answers to idempotency keys of this round, by position in the group.
async fn seen_keys(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    round: &[(usize, &IngestWrite)],
    now: i64,
) -> Result<HashMap<usize, (Vec<u8>, String)>, sqlx::Error> {
    let keyed: Vec<(usize, i64, &str)> = round
        .iter()
        .filter_map(|(i, w)| {
            w.idempotency
                .as_ref()
                .map(|k| (*i, w.action_id, k.key.as_str()))
        })
        .collect();
    let mut seen = HashMap::new();
    for chunk in chunks(keyed.len()) {
        let sql = tx.sql(format!(
            "WITH asked (i, action_id, key) AS (VALUES {})
             SELECT asked.i, k.body_hash, k.response
               FROM asked JOIN idempotency_keys k
                 ON k.action_id = asked.action_id AND k.key = asked.key
              WHERE k.created_at > ?",
            values(chunk.slots, 3)
        ));
        let mut q = sqlx::query_as::<_, (i64, Vec<u8>, String)>(&sql);
        for (i, a, k) in &keyed[chunk.rows.clone()] {
            q = q.bind(*i as i64).bind(*a).bind(*k);
        }
        q = pad!(q, chunk.padding(3));
        for (i, hash, response) in q
            .bind(now - IDEMPOTENCY_WINDOW_MS)
            .fetch_all(&mut *conn)
            .await?
        {
            seen.insert(i as usize, (hash, response));
        }
    }
    Ok(seen)
}

async fn ingest_round<'a>(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    round: &[(usize, &'a IngestWrite)],
    now: i64,
    results: &mut [Option<IngestDone>],
    deliveries: &mut Vec<DeliveryRow<'a>>,
) -> Result<(), sqlx::Error> {
    // Idempotency keys seen before: replay the first answer, or refuse a different body.
    let mut seen = seen_keys(conn, tx, round, now).await?;
    let mut fresh: Vec<(usize, &IngestWrite)> = Vec::with_capacity(round.len());
    for &(i, w) in round {
        match (seen.remove(&i), &w.idempotency) {
            (Some((hash, response)), Some(k)) if hash == k.body_hash => {
                deliveries.push(DeliveryRow::for_webhook(w, 202, "replayed"));
                results[i] = Some(IngestDone {
                    committed: IngestCommitted::Replayed(response),
                    wake: None,
                });
            }
            (Some(_), Some(k)) => {
                let problems = serde_json::json!([{
                    "detail": format!("Idempotency-Key {:?} was already used with a different body", k.key)
                }]);
                deliveries.push(DeliveryRow {
                    problems: Some(problems.to_string()),
                    ..DeliveryRow::for_webhook(w, 422, "refused")
                });
                results[i] = Some(IngestDone {
                    committed: IngestCommitted::KeyReused,
                    wake: None,
                });
            }
            _ => fresh.push((i, w)),
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }

    // Cache: a new context, or later values merged into the caller's unused one. Each row
    // returned says which fields are now cached.
    let mut cached: HashMap<(i64, &str), Cached> = HashMap::new();
    let mut late: Vec<(usize, i64)> = Vec::new();
    for chunk in chunks(fresh.len()) {
        let sql = tx.sql(format!(
            "INSERT INTO contexts (action_id, phone, fields, expires_at, received_at, updated_at)
             SELECT column1, column2, column3, column4, ?, ? FROM (VALUES {})
              WHERE column1 IS NOT NULL
             ON CONFLICT (action_id, phone) WHERE call_id IS NULL DO UPDATE SET
                 fields = CASE WHEN contexts.expires_at <= excluded.updated_at
                               THEN excluded.fields ELSE json_patch(contexts.fields, excluded.fields) END,
                 received_at = CASE WHEN contexts.expires_at <= excluded.updated_at
                               THEN excluded.received_at ELSE contexts.received_at END,
                 updated_at = excluded.updated_at,
                 expires_at = excluded.expires_at
             RETURNING id, action_id, phone,
                       (SELECT json_group_array(key) FROM
                          (SELECT key FROM json_each(fields) WHERE type != 'null' ORDER BY key)),
                       expires_at",
            values(chunk.slots, 4)
        ));
        let mut q = sqlx::query_as::<_, (i64, i64, String, String, i64)>(&sql)
            .bind(now)
            .bind(now);
        // (action, caller) -> position in `fresh`
        let mut position: HashMap<(i64, String), usize> = HashMap::new();
        for (k, (_, w)) in fresh
            .iter()
            .enumerate()
            .skip(chunk.rows.start)
            .take(chunk.rows.len())
        {
            position.insert((w.action_id, w.phone.clone()), k);
            q = q
                .bind(w.action_id)
                .bind(&w.phone)
                .bind(&w.fields)
                .bind(now + w.ttl_ms);
        }
        q = pad!(q, chunk.padding(4));
        for (id, action_id, phone, names, expires_at) in q.fetch_all(&mut *conn).await? {
            // Map back by caller: a round holds each caller once.
            let (_, w) = fresh[position[&(action_id, phone)]];
            cached.insert(
                (w.action_id, w.phone.as_str()),
                Cached {
                    context_id: id,
                    names,
                    expires_at,
                },
            );
        }
    }

    // Data for a caller whose call fell back on this action just before is late for it.
    // (A separate statement: inside the upsert's RETURNING, SQLite would not use the index.)
    for chunk in chunks(fresh.len()) {
        let sql = format!(
            "WITH landed (i, action_id, phone) AS (VALUES {})
             SELECT i, call_id FROM (
                 SELECT landed.i AS i,
                        (SELECT f.call_id FROM call_fallbacks f
                          WHERE f.action_id = landed.action_id AND f.phone = landed.phone
                            AND f.at >= ?
                          ORDER BY f.at DESC LIMIT 1) AS call_id
                   FROM landed)
              WHERE call_id IS NOT NULL",
            values(chunk.slots, 3)
        );
        let mut q = sqlx::query_as::<_, (i64, i64)>(&sql);
        for (i, w) in &fresh[chunk.rows.clone()] {
            q = q.bind(*i as i64).bind(w.action_id).bind(&w.phone);
        }
        q = pad!(q, chunk.padding(3));
        for (i, call_row) in q.bind(now - LATE_WINDOW_MS).fetch_all(&mut *conn).await? {
            late.push((i as usize, call_row));
        }
    }
    let mut late_calls: HashMap<usize, String> = HashMap::new();
    for (i, call_row) in late {
        let w = fresh
            .iter()
            .find(|(j, _)| *j == i)
            .expect("in this round")
            .1;
        let public_id: String = sqlx::query_scalar(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?), late_at = ?
              WHERE id = ? RETURNING public_id",
        )
        .bind(&w.fields)
        .bind(now)
        .bind(call_row)
        .fetch_one(&mut *conn)
        .await?;
        late_calls.insert(i, public_id);
    }

    let mut remembered: Vec<(i64, &str, &[u8], String)> = Vec::new();
    for &(i, w) in &fresh {
        let c = &cached[&(w.action_id, w.phone.as_str())];
        let response = Receipt::json(&w.phone, &c.names, c.expires_at);
        let late_call = late_calls.remove(&i);
        deliveries.push(DeliveryRow {
            fields: Some(&w.fields),
            context_id: Some(c.context_id),
            ..DeliveryRow::for_webhook(
                w,
                202,
                if late_call.is_some() {
                    "late"
                } else {
                    "cached"
                },
            )
        });
        deliveries.last_mut().expect("just pushed").call_id = late_call;
        if let Some(k) = &w.idempotency {
            remembered.push((
                w.action_id,
                k.key.as_str(),
                &k.body_hash[..],
                response.clone(),
            ));
        }
        results[i] = Some(IngestDone {
            committed: IngestCommitted::Accepted(response),
            wake: Some(WakeKey {
                action_id: w.action_id,
                phone: w.phone.clone(),
            }),
        });
    }
    for chunk in chunks(remembered.len()) {
        let sql = format!(
            "INSERT OR REPLACE INTO idempotency_keys (action_id, key, body_hash, response, created_at)
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
            values(chunk.slots, 5)
        );
        let mut q = sqlx::query(&sql);
        for (a, k, h, r) in &remembered[chunk.rows.clone()] {
            q = q.bind(*a).bind(*k).bind(*h).bind(r).bind(now);
        }
        q = pad!(q, chunk.padding(5));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records every request of the group that reached an ingest URL.
pub async fn insert_deliveries(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    rows: &[DeliveryRow<'_>],
    last: bool,
) -> Result<(), sqlx::Error> {
    let chunks = chunks(rows.len());
    let n = chunks.len();
    for (c, chunk) in chunks.into_iter().enumerate() {
        let finish = |tx: &mut Tx, sql| {
            if last && c + 1 == n {
                tx.last(sql)
            } else {
                tx.sql(sql)
            }
        };
        let sql = finish(
            tx,
            format!(
                "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields,
                                     problems, body_excerpt, idempotency_key, latency_us,
                                     context_id, call_id)
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
                values(chunk.slots, 12)
            ),
        );
        let mut q = sqlx::query(&sql);
        for d in &rows[chunk.rows.clone()] {
            q = q
                .bind(d.action_id)
                .bind(d.received_at)
                .bind(d.status)
                .bind(d.outcome)
                .bind(d.phone)
                .bind(d.fields)
                .bind(d.problems.as_deref())
                .bind(d.body_excerpt)
                .bind(d.idempotency_key)
                .bind(d.latency_us)
                .bind(d.context_id)
                .bind(d.call_id.as_deref());
        }
        q = pad!(q, chunk.padding(12));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Tries to start a group of calls. For each call, every wanted step's data is claimed
/// atomically; a call missing any gives its claims back and is told which step to wait for.
/// A call with everything it wants is recorded in the same transaction.
pub async fn start_calls(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    calls: &[&CallAttempt],
    last: bool,
) -> Result<Vec<Attempted>, sqlx::Error> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let wanted: Vec<(i64, &str, &str)> = calls
        .iter()
        .flat_map(|c| {
            c.steps
                .iter()
                .filter(|s| s.state == StepState::Wanted)
                .map(|s| (s.action_id, c.caller.as_str(), c.public_id.as_str()))
        })
        .collect();
    // (action, caller) -> (claiming call, context id, fields)
    let mut claimed: HashMap<(i64, String), (String, i64, String)> = HashMap::new();
    for chunk in chunks(wanted.len()) {
        let sql = tx.sql(format!(
            "UPDATE contexts SET call_id = wanted.column3
               FROM (VALUES {}) AS wanted
              WHERE contexts.action_id = wanted.column1 AND contexts.phone = wanted.column2
                AND contexts.call_id IS NULL AND contexts.expires_at > ?
             RETURNING contexts.action_id, contexts.phone, contexts.call_id, contexts.id,
                       contexts.fields",
            values(chunk.slots, 3)
        ));
        let mut q = sqlx::query_as::<_, (i64, String, String, i64, String)>(&sql);
        for (action, caller, call) in &wanted[chunk.rows.clone()] {
            q = q.bind(*action).bind(*caller).bind(*call);
        }
        q = pad!(q, chunk.padding(3));
        for (action, phone, call, id, fields) in q.bind(now).fetch_all(&mut *conn).await? {
            claimed.insert((action, phone), (call, id, fields));
        }
    }

    let mut outcomes = Vec::with_capacity(calls.len());
    let mut started: Vec<(&CallAttempt, Vec<Option<Claimed>>, CallRecord)> = Vec::new();
    for c in calls {
        let mine = |action: i64| {
            claimed
                .get(&(action, c.caller.clone()))
                .filter(|(call, _, _)| *call == c.public_id)
        };
        let missing = c
            .steps
            .iter()
            .position(|s| s.state == StepState::Wanted && mine(s.action_id).is_none());
        if let Some(step) = missing {
            for s in &c.steps {
                if let Some((_, id, _)) = mine(s.action_id) {
                    sqlx::query("UPDATE contexts SET call_id = NULL WHERE id = ? AND call_id = ?")
                        .bind(id)
                        .bind(&c.public_id)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            outcomes.push(Attempted::Missing(step));
            continue;
        }
        let data: Vec<Option<Claimed>> = c
            .steps
            .iter()
            .map(|s| {
                mine(s.action_id).map(|(_, id, fields)| Claimed {
                    context_id: *id,
                    fields: fields.clone(),
                })
            })
            .collect();
        let record = (c.finish)(&data);
        outcomes.push(Attempted::Started(record.response.clone()));
        started.push((c, data, record));
    }

    let mut row_ids: HashMap<String, i64> = HashMap::new();
    // Nothing follows the insert unless a call fell back: then COMMIT can ride with it.
    let last = last
        && !started
            .iter()
            .any(|(c, _, _)| c.steps.iter().any(|s| s.state == StepState::GaveUp));
    let chunks_of_calls = chunks(started.len());
    let n = chunks_of_calls.len();
    for (c, chunk) in chunks_of_calls.into_iter().enumerate() {
        let finish = |tx: &mut Tx, sql| {
            if last && c + 1 == n {
                tx.last(sql)
            } else {
                tx.sql(sql)
            }
        };
        let sql = finish(
            tx,
            format!(
            "INSERT INTO calls (public_id, agent_id, caller, called, started_at, waited_ms, source,
                                variables, trace)
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL
             RETURNING id, public_id",
            values(chunk.slots, 9)
        ),
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for (c, _, r) in &started[chunk.rows.clone()] {
            q = q
                .bind(&c.public_id)
                .bind(c.agent_id)
                .bind(&c.caller)
                .bind(c.called.as_deref())
                .bind(c.started_at)
                .bind(r.waited_ms)
                .bind(r.source)
                .bind(&r.variables)
                .bind(&r.trace);
        }
        q = pad!(q, chunk.padding(9));
        row_ids.extend(
            q.fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(id, p)| (p, id)),
        );
    }

    for (c, _, _) in &started {
        for s in c.steps.iter().filter(|s| s.state == StepState::GaveUp) {
            record_fallback(conn, c, row_ids[&c.public_id], s.action_id, now).await?;
        }
    }
    Ok(outcomes)
}

/// Notes that `c` fell back on `action_id`; data that landed since its last look is late.
async fn record_fallback(
    conn: &mut SqliteConnection,
    c: &CallAttempt,
    row_id: i64,
    action_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO call_fallbacks (call_id, action_id, phone, at) VALUES (?, ?, ?, ?)")
        .bind(row_id)
        .bind(action_id)
        .bind(&c.caller)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    // Data that landed between the call's giving up and now arrived after it fell back.
    let late: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, fields FROM contexts
          WHERE action_id = ? AND phone = ? AND call_id IS NULL AND expires_at > ?
            AND updated_at >= ?",
    )
    .bind(action_id)
    .bind(&c.caller)
    .bind(now)
    .bind(c.started_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((context_id, fields)) = late {
        sqlx::query(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?), late_at = ?
              WHERE id = ?",
        )
        .bind(&fields)
        .bind(now)
        .bind(row_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET outcome = 'late', call_id = ?
              WHERE context_id = ? AND outcome = 'cached'",
        )
        .bind(&c.public_id)
        .bind(context_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_in_power_of_two_statements() {
        assert_eq!(chunks(0), vec![]);
        assert_eq!(
            chunks(1),
            vec![Chunk {
                rows: 0..1,
                slots: 1
            }]
        );
        assert_eq!(
            chunks(100),
            vec![Chunk {
                rows: 0..100,
                slots: 128
            }]
        );
        assert_eq!(
            chunks(300),
            vec![
                Chunk {
                    rows: 0..256,
                    slots: 256
                },
                Chunk {
                    rows: 256..300,
                    slots: 64
                }
            ]
        );
        assert_eq!(chunks(100)[0].padding(3), 28 * 3);
    }

    #[test]
    fn values_lists_rows_of_placeholders() {
        assert_eq!(values(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
