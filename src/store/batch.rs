//! The writer's statements, one per group rather than one per request.
//!
//! They run on the writer's own thread, straight through SQLite's C API (`rusqlite`): no
//! hand-off to another thread per statement and no copy of each returned row into a
//! message, which is where most of a group's time went when they ran through sqlx.
//!
//! Rows go in as one multi-row `VALUES` list per statement. To keep the number of distinct
//! statements (and so of prepared statements cached per connection) small, the list has a
//! power-of-two number of rows: a group of 100 fills 100 of 128 rows and the rest are NULL,
//! which every statement ignores. Each size is prepared once.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use rusqlite::Connection;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use serde_json::value::RawValue;

use super::refusals::RefusalCount;
use super::writer::{
    Attempted, CallAttempt, CallRecord, Claimed, IDEMPOTENCY_WINDOW_MS, IngestCommitted,
    IngestWrite, LATE_WINDOW_MS, NewDelivery, StepState,
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

/// `(?, ?), (?, ?)` for `rows` rows of `cols` parameters.
fn values(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

/// One row of `deliveries`.
pub struct DeliveryRow<'a> {
    pub(in crate::store) action_id: i64,
    pub(in crate::store) received_at: i64,
    pub(in crate::store) status: i64,
    pub(in crate::store) outcome: &'static str,
    pub(in crate::store) phone: Option<&'a str>,
    pub(in crate::store) fields: Option<&'a str>,
    pub(in crate::store) problems: Option<String>,
    pub(in crate::store) body_excerpt: Option<&'a str>,
    pub(in crate::store) idempotency_key: Option<&'a str>,
    pub(in crate::store) latency_us: i64,
    /// The context a cached webhook went into.
    pub(in crate::store) context_id: Option<i64>,
    /// The call a late webhook's data was for (its public id).
    pub(in crate::store) late_call: Option<String>,
}

fn micros_since(started: std::time::Instant) -> i64 {
    started.elapsed().as_micros().min(i64::MAX as u128) as i64
}

impl<'a> DeliveryRow<'a> {
    pub(in crate::store) fn for_webhook(
        w: &'a IngestWrite,
        status: i64,
        outcome: &'static str,
    ) -> Self {
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
            late_call: None,
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
            late_call: None,
        }
    }
}

/// What became of one webhook request in a group.
pub struct IngestDone {
    pub committed: IngestCommitted,
    pub wake: Option<WakeKey>,
}

/// The 202 answer: the caller, the names of the fields now cached (`field_names`, a JSON
/// array, sorted, nulls left out) and the expiry (`2026-11-27T10:00:00.000Z`). Stored as is
/// for idempotent replays, so a replay returns the first answer byte for byte.
pub(in crate::store) fn receipt(phone: &str, field_names: &str, expires_at: i64) -> String {
    let phone = serde_json::to_string(phone).expect("a string serialises");
    format!(
        r#"{{"status":"accepted","phoneNumber":{phone},"fields":{field_names},"expiresAt":"{}"}}"#,
        timestamp_ms(expires_at)
    )
}

/// Milliseconds since the epoch as UTC with three decimals, always.
fn timestamp_ms(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => String::new(),
    }
}

/// The sorted names of a JSON object's fields that are not null, as a JSON array.
pub fn field_names(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut names: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort_unstable();
    serde_json::to_string(&names).expect("strings serialise")
}

/// A value to bind.
#[derive(Clone, Copy)]
enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
    Null,
}

impl<'a> Arg<'a> {
    fn opt_text(v: Option<&'a str>) -> Self {
        v.map_or(Arg::Null, Arg::Text)
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Int(v) => ValueRef::Integer(v),
            Arg::Text(v) => ValueRef::Text(v.as_bytes()),
            Arg::Blob(v) => ValueRef::Blob(v),
            Arg::Null => ValueRef::Null,
        }))
    }
}

/// One statement and its parameters, in order.
#[derive(Default)]
struct Statement<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    fn new(sql: String) -> Self {
        Self {
            sql,
            args: Vec::new(),
        }
    }

    fn arg(&mut self, a: Arg<'a>) -> &mut Self {
        self.args.push(a);
        self
    }

    /// The NULL parameters of a chunk's padding rows.
    fn nulls(&mut self, n: usize) {
        self.args.extend(std::iter::repeat_n(Arg::Null, n));
    }

    /// Runs it (prepared once per connection and text), giving back what `row` makes of
    /// each row it returns.
    fn rows<T>(
        &self,
        conn: &Connection,
        mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(&self.args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(out)
    }

    /// Runs a statement that returns no rows.
    fn run(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.prepare_cached(&self.sql)?
            .execute(rusqlite::params_from_iter(&self.args))
            .map(drop)
    }
}

/// The next round of a group's pending webhooks (by position in the group), and those
/// left for later: at most one per caller and per idempotency key, so that each sees the
/// one before it.
pub(crate) fn next_round<'a>(
    items: &[&'a IngestWrite],
    pending: Vec<usize>,
) -> (Vec<(usize, &'a IngestWrite)>, Vec<usize>) {
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
            round.push((i, w));
        } else {
            later.push(i);
        }
    }
    (round, later)
}

/// Caches a group of webhook requests and records every delivery of the group (`refused`
/// ones too): the upsert, late data, the deliveries and the idempotency keys, a statement
/// each. Requests about the same caller, or with the same idempotency key, go in successive
/// rounds so that each sees the one before.
pub fn ingest<'a>(
    conn: &Connection,
    items: &[&'a IngestWrite],
    refused: Vec<DeliveryRow<'a>>,
    now: i64,
) -> rusqlite::Result<Vec<IngestDone>> {
    let mut results: Vec<Option<IngestDone>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut refused = Some(refused);
    loop {
        let (round, later) = next_round(items, pending);
        let deliveries = refused.take().unwrap_or_default();
        ingest_round(conn, &round, now, &mut results, deliveries)?;
        if later.is_empty() {
            break;
        }
        pending = later;
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every request has an outcome"))
        .collect())
}

/// Earlier answers to idempotency keys of this round, by position in the group.
fn seen_keys(
    conn: &Connection,
    round: &[(usize, &IngestWrite)],
    now: i64,
) -> rusqlite::Result<HashMap<usize, (Vec<u8>, String)>> {
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
        let mut q = Statement::new(format!(
            "WITH asked (i, action_id, key) AS (VALUES {})
             SELECT asked.i, k.body_hash, k.response
               FROM asked JOIN idempotency_keys k
                 ON k.action_id = asked.action_id AND k.key = asked.key
              WHERE k.created_at > ?",
            values(chunk.slots, 3)
        ));
        for (i, a, k) in &keyed[chunk.rows.clone()] {
            q.arg(Arg::Int(*i as i64))
                .arg(Arg::Int(*a))
                .arg(Arg::Text(k));
        }
        q.nulls(chunk.padding(3));
        q.arg(Arg::Int(now - IDEMPOTENCY_WINDOW_MS));
        for (i, hash, response) in q.rows(conn, |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?))
        })? {
            seen.insert(i as usize, (hash, response));
        }
    }
    Ok(seen)
}

/// Sorts a round's webhooks by what their Idempotency-Key found (`seen`: the stored body
/// hash and answer, by position in the group): a repeat is replayed, a key reused with
/// another body is refused, and the rest are to be cached. Each gets its delivery; the
/// answered ones their result. Gives back those to cache: position in the group, the
/// request and its delivery's position.
pub(crate) fn sort_round<'a>(
    round: &[(usize, &'a IngestWrite)],
    mut seen: HashMap<usize, (Vec<u8>, String)>,
    results: &mut [Option<IngestDone>],
    deliveries: &mut Vec<DeliveryRow<'a>>,
) -> Vec<(usize, &'a IngestWrite, usize)> {
    let mut fresh = Vec::with_capacity(round.len());
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
            _ => {
                fresh.push((i, w, deliveries.len()));
                deliveries.push(DeliveryRow {
                    fields: Some(&w.fields),
                    ..DeliveryRow::for_webhook(w, 202, "cached")
                });
            }
        }
    }
    fresh
}

fn ingest_round<'a>(
    conn: &Connection,
    round: &[(usize, &'a IngestWrite)],
    now: i64,
    results: &mut [Option<IngestDone>],
    mut deliveries: Vec<DeliveryRow<'a>>,
) -> rusqlite::Result<()> {
    // Idempotency keys seen before: replay the first answer, or refuse a different body.
    let has_keys = round.iter().any(|(_, w)| w.idempotency.is_some());
    let seen = if has_keys {
        seen_keys(conn, round, now)?
    } else {
        HashMap::new()
    };
    // Webhooks to cache: position in the group, the request, its delivery's position.
    let fresh = sort_round(round, seen, results, &mut deliveries);

    // 1. Cache: a new context, or later values merged into the caller's unused one. Each
    //    row comes back with its id and fields, from which its answer is built.
    let by_caller: HashMap<(i64, &str), usize> = fresh
        .iter()
        .enumerate()
        .map(|(at, (_, w, _))| ((w.action_id, w.phone.as_str()), at))
        .collect();
    let mut receipts: Vec<Option<String>> = vec![None; fresh.len()];
    for chunk in chunks(fresh.len()) {
        let mut upsert = Statement::new(format!(
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
             RETURNING action_id, phone, id, fields, expires_at",
            values(chunk.slots, 4)
        ));
        upsert.arg(Arg::Int(now)).arg(Arg::Int(now));
        for (_, w, _) in &fresh[chunk.rows.clone()] {
            upsert
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&w.phone))
                .arg(Arg::Text(&w.fields))
                .arg(Arg::Int(now + w.ttl_ms));
        }
        upsert.nulls(chunk.padding(4));
        for (at, context_id, receipt) in upsert.rows(conn, |r| {
            let caller = (r.get::<_, i64>(0)?, r.get_ref(1)?.as_str()?);
            let at = *by_caller
                .get(&caller)
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            let (_, w, _) = fresh[at];
            let stored = r.get_ref(3)?.as_str()?;
            // The request's own fields, unless they were merged into earlier ones.
            let names = if stored == w.fields {
                std::borrow::Cow::Borrowed(w.field_names.as_str())
            } else {
                std::borrow::Cow::Owned(
                    serde_json::from_str(stored)
                        .map(|merged| field_names(&merged))
                        .unwrap_or_else(|_| "[]".into()),
                )
            };
            Ok((
                at,
                r.get::<_, i64>(2)?,
                receipt(&w.phone, &names, r.get(4)?),
            ))
        })? {
            deliveries[fresh[at].2].context_id = Some(context_id);
            receipts[at] = Some(receipt);
        }

        // 2. Data for a caller whose call fell back on this action just before is late for
        //    that call: recorded against it (and still cached for the caller's next call).
        //    Usually no call fell back, and this finds nothing.
        let mut late = Statement::new(format!(
            "SELECT landed.pos, k.id, k.public_id
               FROM (SELECT v.column1 AS pos,
                            (SELECT f.call_id FROM call_fallbacks f
                              WHERE f.action_id = v.column2 AND f.phone = v.column3 AND f.at >= ?
                              ORDER BY f.at DESC LIMIT 1) AS call_row
                       FROM (VALUES {}) v WHERE v.column1 IS NOT NULL) AS landed
               JOIN calls k ON k.id = landed.call_row",
            values(chunk.slots, 3)
        ));
        late.arg(Arg::Int(now - LATE_WINDOW_MS));
        for at in chunk.rows.clone() {
            let (_, w, _) = fresh[at];
            late.arg(Arg::Int(at as i64))
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&w.phone));
        }
        late.nulls(chunk.padding(3));
        for (at, call_row, public_id) in late.rows(conn, |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
        })? {
            let (_, w, delivery) = fresh[at as usize];
            conn.prepare_cached(
                "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), ?),
                                  late_at = ?
                  WHERE id = ?",
            )?
            .execute((&w.fields, now, call_row))?;
            let d = &mut deliveries[delivery];
            d.outcome = "late";
            d.late_call = Some(public_id);
        }
    }

    // 3. Every delivery: cached ones name their context, late ones their call.
    for chunk in chunks(deliveries.len()) {
        let mut insert = Statement::new(format!(
            "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields,
                                     problems, body_excerpt, idempotency_key, latency_us,
                                     context_id, call_id)
             SELECT column1, column2, column3, column4, column5, column6, column7, column8,
                    column9, column10, column11, column12
               FROM (VALUES {}) WHERE column1 IS NOT NULL",
            values(chunk.slots, 12)
        ));
        for d in &deliveries[chunk.rows.clone()] {
            insert
                .arg(Arg::Int(d.action_id))
                .arg(Arg::Int(d.received_at))
                .arg(Arg::Int(d.status))
                .arg(Arg::Text(d.outcome))
                .arg(Arg::opt_text(d.phone))
                .arg(Arg::opt_text(d.fields))
                .arg(Arg::opt_text(d.problems.as_deref()))
                .arg(Arg::opt_text(d.body_excerpt))
                .arg(Arg::opt_text(d.idempotency_key))
                .arg(Arg::Int(d.latency_us))
                .arg(d.context_id.map_or(Arg::Null, Arg::Int))
                .arg(Arg::opt_text(d.late_call.as_deref()));
        }
        insert.nulls(chunk.padding(12));
        insert.run(conn)?;
    }

    // 4. Idempotency keys remember the answer.
    let keyed: Vec<(&IngestWrite, &str)> = fresh
        .iter()
        .zip(&receipts)
        .filter_map(|((_, w, _), receipt)| Some((*w, receipt.as_deref()?)))
        .filter(|(w, _)| w.idempotency.is_some())
        .collect();
    for chunk in chunks(keyed.len()) {
        let mut remember = Statement::new(format!(
            "INSERT OR REPLACE INTO idempotency_keys (action_id, key, body_hash, response, created_at)
             SELECT column1, column2, column3, column4, ? FROM (VALUES {})
              WHERE column1 IS NOT NULL",
            values(chunk.slots, 4)
        ));
        remember.arg(Arg::Int(now));
        for (w, receipt) in &keyed[chunk.rows.clone()] {
            let k = w.idempotency.as_ref().expect("keyed");
            remember
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&k.key))
                .arg(Arg::Blob(&k.body_hash))
                .arg(Arg::Text(receipt));
        }
        remember.nulls(chunk.padding(4));
        remember.run(conn)?;
    }

    for ((i, w, _), receipt) in fresh.into_iter().zip(receipts) {
        let receipt = receipt.expect("every upserted row is returned");
        results[i] = Some(IngestDone {
            committed: IngestCommitted::Accepted(receipt),
            wake: Some(WakeKey {
                action_id: w.action_id,
                phone: w.phone.clone(),
            }),
        });
    }
    Ok(())
}

/// What each call's step claims, as (action, caller, call): every step but the disabled
/// and simulated ones. A step whose wait ran out still takes data that landed while the
/// call waited for another step: the call has not started its flow yet.
pub(crate) fn wanted_claims<'a>(calls: &[&'a CallAttempt]) -> Vec<(i64, &'a str, &'a str)> {
    calls
        .iter()
        .flat_map(|c| {
            c.steps
                .iter()
                .filter(|s| !matches!(s.state, StepState::Disabled | StepState::Simulated))
                .map(|s| (s.action_id, c.caller.as_str(), c.public_id.as_str()))
        })
        .collect()
}

/// What a group's claim returned: (action, caller) -> (claiming call, context id, fields,
/// first received).
pub(crate) type ClaimedContexts = HashMap<(i64, String), (String, i64, String, i64)>;

/// A group of calls sorted by what they claimed.
pub(crate) struct SortedCalls<'a> {
    /// Each call's outcome, in the group's order.
    pub outcomes: Vec<Attempted>,
    /// Contexts claimed by calls that miss other data: (context id, call).
    pub given_back: Vec<(i64, &'a str)>,
    /// The calls to record, with their records.
    pub started: Vec<(&'a CallAttempt, CallRecord)>,
    /// For each of `started`, in its order: the contexts it claimed, and the Webhook
    /// actions it fell back on (no data, even after waiting).
    pub kept: Vec<(Vec<i64>, Vec<i64>)>,
}

/// Sorts a group of calls by what the claim gave each (another call may have claimed the
/// same caller's data first): a call missing any data gives its claims back (it is told
/// which step to wait for); the others are recorded with the steps they fell back on.
pub(crate) fn sort_calls<'a>(
    calls: &[&'a CallAttempt],
    claimed: &mut ClaimedContexts,
) -> SortedCalls<'a> {
    let mut sorted = SortedCalls {
        outcomes: Vec::with_capacity(calls.len()),
        given_back: Vec::new(),
        started: Vec::new(),
        kept: Vec::new(),
    };
    let mut key = (0, String::new());
    for &c in calls {
        let mine: Vec<Option<Claimed>> = c
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.state == StepState::Simulated {
                    return c.preset.get(i).cloned().flatten();
                }
                key.0 = s.action_id;
                key.1.clear();
                key.1.push_str(&c.caller);
                match claimed.get_mut(&key) {
                    Some((call, id, fields, received_at)) if *call == c.public_id => {
                        Some(Claimed {
                            context_id: *id,
                            fields: std::mem::take(fields),
                            received_at: *received_at,
                        })
                    }
                    _ => None,
                }
            })
            .collect();
        let missing = c
            .steps
            .iter()
            .zip(&mine)
            .position(|(s, m)| s.state == StepState::Wanted && m.is_none());
        if let Some(step) = missing {
            sorted.given_back.extend(
                mine.iter()
                    .flatten()
                    .map(|m| (m.context_id, c.public_id.as_str())),
            );
            sorted.outcomes.push(Attempted::Missing(step));
            continue;
        }
        let fell_back: Vec<i64> = c
            .steps
            .iter()
            .zip(&mine)
            .filter(|(s, m)| s.state == StepState::GaveUp && m.is_none())
            .map(|(s, _)| s.action_id)
            .collect();
        // Given contexts (a simulated step's) were not claimed.
        let claimed = c
            .steps
            .iter()
            .zip(&mine)
            .filter(|(s, _)| s.state != StepState::Simulated)
            .filter_map(|(_, m)| m.as_ref().map(|m| m.context_id))
            .collect();
        sorted.kept.push((claimed, fell_back));
        let mut record = (c.finish)(&mine);
        sorted.outcomes.push(Attempted::Started(
            std::mem::take(&mut record.response),
            record.tally,
            record.attachment.take(),
        ));
        sorted.started.push((c, record));
    }
    sorted
}

/// A started call as the writer stores it, and as its [journal](super::journal) keeps it
/// until it is committed: replaying it writes the same rows.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StartedCall {
    pub public_id: String,
    pub agent_id: i64,
    pub version: i64,
    pub caller: String,
    pub called: Option<String>,
    pub started_at: i64,
    pub waited_ms: i64,
    pub source: String,
    /// The call's variables and trace as the stored JSON, kept in the journal as JSON (not
    /// as a string of JSON, which would escape every quote again on the writer).
    #[serde(deserialize_with = "stored_json")]
    pub variables: Box<RawValue>,
    #[serde(deserialize_with = "stored_json")]
    pub trace: Box<RawValue>,
    pub status: String,
    pub outcome: Option<String>,
    /// The contexts (cached webhook data) it claimed.
    pub claimed: Vec<i64>,
    /// The Webhook actions it fell back on.
    pub fell_back: Vec<i64>,
}

/// JSON read back from the journal, which earlier versions wrote as a string of JSON.
fn stored_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = <Box<RawValue> as serde::Deserialize>::deserialize(d)?;
    if !raw.get().starts_with('"') {
        return Ok(raw);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    RawValue::from_string(text).map_err(serde::de::Error::custom)
}

/// Tries to start a group of calls, with the group's clock `now`. First every wanted
/// step's data is claimed atomically; then the calls are sorted by what they got (see
/// [`sort_calls`]), and the started ones are recorded (see [`record_calls`]). Returns each
/// attempt's outcome, and the started calls as stored.
pub fn start_calls(
    conn: &Connection,
    calls: &[&CallAttempt],
    now: i64,
) -> rusqlite::Result<(Vec<Attempted>, Vec<StartedCall>)> {
    if calls.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let wanted = wanted_claims(calls);
    let mut claimed = ClaimedContexts::new();
    for chunk in chunks(wanted.len()) {
        let mut claim = Statement::new(format!(
            "UPDATE contexts SET call_id = wanted.column3
               FROM (VALUES {}) AS wanted
              WHERE contexts.action_id = wanted.column1 AND contexts.phone = wanted.column2
                AND contexts.call_id IS NULL AND contexts.expires_at > ?
             RETURNING contexts.action_id, contexts.phone, contexts.call_id, contexts.id,
                       contexts.fields, contexts.received_at",
            values(chunk.slots, 3)
        ));
        for (action, caller, call) in &wanted[chunk.rows.clone()] {
            claim
                .arg(Arg::Int(*action))
                .arg(Arg::Text(caller))
                .arg(Arg::Text(call));
        }
        claim.nulls(chunk.padding(3));
        claim.arg(Arg::Int(now));
        for (action, phone, call, id, fields, received_at) in claim.rows(conn, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })? {
            claimed.insert((action, phone), (call, id, fields, received_at));
        }
    }

    let SortedCalls {
        outcomes,
        given_back,
        started,
        kept,
    } = sort_calls(calls, &mut claimed);

    for chunk in chunks(given_back.len()) {
        let mut back = Statement::new(format!(
            "UPDATE contexts SET call_id = NULL FROM (VALUES {}) AS back
              WHERE contexts.id = back.column1 AND contexts.call_id = back.column2",
            values(chunk.slots, 2)
        ));
        for (id, call) in &given_back[chunk.rows.clone()] {
            back.arg(Arg::Int(*id)).arg(Arg::Text(call));
        }
        back.nulls(chunk.padding(2));
        back.run(conn)?;
    }
    let started: Vec<StartedCall> = started
        .into_iter()
        .zip(kept)
        .map(|((c, r), (claimed, fell_back))| StartedCall {
            public_id: c.public_id.clone(),
            agent_id: c.agent_id,
            version: c.version,
            caller: c.caller.clone(),
            called: c.called.clone(),
            started_at: c.started_at,
            waited_ms: r.waited_ms,
            source: r.source.to_owned(),
            variables: r.variables,
            trace: r.trace,
            status: r.status.to_owned(),
            outcome: r.outcome,
            claimed,
            fell_back,
        })
        .collect();
    record_calls(conn, &started, now)?;
    Ok((outcomes, started))
}

/// Writes started calls again from the journal, as [`start_calls`] first did with the same
/// clock `now`: all their claims on cached data, then their records. (A Webhook action
/// deleted since takes its data with it, and a fallback on it is not recorded.)
pub fn replay_calls(conn: &Connection, calls: &[StartedCall], now: i64) -> rusqlite::Result<()> {
    claim_again(conn, calls)?;
    record_calls(conn, calls, now)
}

/// The claims of started calls on cached data, by context id, as [`start_calls`] made them.
pub fn claim_again(conn: &Connection, calls: &[StartedCall]) -> rusqlite::Result<()> {
    let claims: Vec<(i64, &str)> = calls
        .iter()
        .flat_map(|c| c.claimed.iter().map(|&id| (id, c.public_id.as_str())))
        .collect();
    for chunk in chunks(claims.len()) {
        let mut claim = Statement::new(format!(
            "UPDATE contexts SET call_id = claim.column2 FROM (VALUES {}) AS claim
              WHERE contexts.id = claim.column1 AND contexts.call_id IS NULL",
            values(chunk.slots, 2)
        ));
        for (id, call) in &claims[chunk.rows.clone()] {
            claim.arg(Arg::Int(*id)).arg(Arg::Text(call));
        }
        claim.nulls(chunk.padding(2));
        claim.run(conn)?;
    }
    Ok(())
}

/// Records started calls (whose claims are made) and the steps they fell back on: data
/// that landed for those steps since the call started is late for it.
pub fn record_calls(conn: &Connection, started: &[StartedCall], now: i64) -> rusqlite::Result<()> {
    for chunk in chunks(started.len()) {
        let mut insert = Statement::new(format!(
            "INSERT INTO calls (public_id, agent_id, caller, called, started_at, waited_ms, source,
                                variables, trace, status, outcome, version)
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
            values(chunk.slots, 12)
        ));
        for c in &started[chunk.rows.clone()] {
            insert
                .arg(Arg::Text(&c.public_id))
                .arg(Arg::Int(c.agent_id))
                .arg(Arg::Text(&c.caller))
                .arg(Arg::opt_text(c.called.as_deref()))
                .arg(Arg::Int(c.started_at))
                .arg(Arg::Int(c.waited_ms))
                .arg(Arg::Text(&c.source))
                .arg(Arg::Text(c.variables.get()))
                .arg(Arg::Text(c.trace.get()))
                .arg(Arg::Text(&c.status))
                .arg(Arg::opt_text(c.outcome.as_deref()))
                .arg(Arg::Int(c.version));
        }
        insert.nulls(chunk.padding(12));
        insert.run(conn)?;
    }
    let fell_back: Vec<(&StartedCall, i64)> = started
        .iter()
        .flat_map(|c| c.fell_back.iter().map(move |&action| (c, action)))
        .collect();
    for chunk in chunks(fell_back.len()) {
        let rows = values(chunk.slots, 4);
        let these = &fell_back[chunk.rows.clone()];
        // The steps each call fell back on, so that data landing soon after is late for it.
        let mut remember = Statement::new(format!(
            "INSERT INTO call_fallbacks (call_id, action_id, phone, at)
             SELECT (SELECT id FROM calls WHERE public_id = v.column1), v.column2, v.column3, ?
               FROM (VALUES {rows}) v
              WHERE v.column1 IS NOT NULL AND v.column2 IN (SELECT id FROM precall_actions)"
        ));
        remember.arg(Arg::Int(now));
        push_fallbacks(&mut remember, these, chunk.padding(4));
        remember.run(conn)?;
        // Data that landed while (or since) the call gave up on it arrived late for it.
        let mut late = Statement::new(format!(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{{}}'), c.fields),
                              late_at = ?
               FROM (VALUES {rows}) v
               JOIN contexts c ON c.action_id = v.column2 AND c.phone = v.column3
                              AND c.call_id IS NULL AND c.updated_at >= v.column4
              WHERE calls.public_id = v.column1"
        ));
        late.arg(Arg::Int(now));
        push_fallbacks(&mut late, these, chunk.padding(4));
        late.run(conn)?;
        let mut delivered = Statement::new(format!(
            "UPDATE deliveries SET outcome = 'late', call_id = v.column1
               FROM (VALUES {rows}) v
               JOIN contexts c ON c.action_id = v.column2 AND c.phone = v.column3
                              AND c.call_id IS NULL AND c.updated_at >= v.column4
              WHERE deliveries.context_id = c.id AND deliveries.outcome = 'cached'"
        ));
        push_fallbacks(&mut delivered, these, chunk.padding(4));
        delivered.run(conn)?;
    }
    Ok(())
}

/// Adds refusal counts to the stored ones, a statement per [`MAX_CHUNK`] of them. A count
/// of a webhook deleted since is dropped rather than failing the others.
pub fn count_refusals(conn: &Connection, counts: &[RefusalCount]) -> rusqlite::Result<()> {
    for chunk in chunks(counts.len()) {
        let mut upsert = Statement::new(format!(
            "INSERT INTO refusal_counts (action_id, minute, reason, count)
             SELECT v.column1, v.column2, v.column3, v.column4 FROM (VALUES {}) v
              WHERE v.column1 IN (SELECT id FROM precall_actions)
             ON CONFLICT (action_id, minute, reason) DO UPDATE SET count = refusal_counts.count + excluded.count",
            values(chunk.slots, 4)
        ));
        for c in &counts[chunk.rows.clone()] {
            upsert
                .arg(Arg::Int(c.action_id))
                .arg(Arg::Int(c.minute))
                .arg(Arg::Text(c.reason.as_str()))
                .arg(Arg::Int(c.count));
        }
        upsert.nulls(chunk.padding(4));
        upsert.run(conn)?;
    }
    Ok(())
}

/// (call, action, caller, call start) rows of `fell_back`, then `padding` NULLs.
fn push_fallbacks<'a>(q: &mut Statement<'a>, rows: &[(&'a StartedCall, i64)], padding: usize) {
    for (c, action) in rows {
        q.arg(Arg::Text(&c.public_id))
            .arg(Arg::Int(*action))
            .arg(Arg::Text(&c.caller))
            .arg(Arg::Int(c.started_at));
    }
    q.nulls(padding);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_read_as_sqlite_writes_them() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000.0, 'unixepoch')")
            .unwrap();
        for ms in [
            0,
            5,
            999,
            1_000,
            59_999,
            86_399_999,
            951_782_400_000, // 2000-02-29
            1_795_780_800_123,
            4_102_444_799_999, // 2099-12-31T23:59:59.999Z
        ] {
            let sqlite: String = stmt.query_row([ms], |r| r.get(0)).unwrap();
            assert_eq!(timestamp_ms(ms), sqlite, "{ms}");
        }
    }

    #[test]
    fn a_receipt_names_the_fields_that_are_not_null_in_order() {
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"zeta": 1, "alpha": "a", "gone": null, "nested": {"x": null}, "Émile": true}"#,
        )
        .unwrap();
        let names = field_names(&fields);
        assert_eq!(names, r#"["alpha","nested","zeta","Émile"]"#);
        let receipt: serde_json::Value =
            serde_json::from_str(&receipt("+12125551234", &names, 1_000)).unwrap();
        assert_eq!(
            receipt,
            serde_json::json!({
                "status": "accepted",
                "phoneNumber": "+12125551234",
                "fields": ["alpha", "nested", "zeta", "Émile"],
                "expiresAt": "1970-01-01T00:00:01.000Z"
            })
        );
    }

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
