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

/// One row of `deliveries`, as the group knows it (the context and lateness are found by SQL).
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
        }
    }
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

    /// Appends `COMMIT` to a script that ends the group.
    fn commit_in(&mut self, sql: &mut String) {
        self.committed = true;
        sql.push_str(";\nCOMMIT");
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

/// The 202 answer for the context row `t`: its caller, the field names now cached (sorted,
/// nulls left out) and its expiry. Built by SQLite, so the same text can be stored for
/// idempotent replays in the same round trip.
fn receipt_sql(t: &str) -> String {
    format!(
        "json_object('status', 'accepted', 'phoneNumber', {t}phone,
                     'fields', json((SELECT json_group_array(key) FROM
                         (SELECT key FROM json_each({t}fields) WHERE type != 'null' ORDER BY key))),
                     'expiresAt', strftime('%Y-%m-%dT%H:%M:%fZ', {t}expires_at / 1000.0, 'unixepoch'))"
    )
}

/// A value to bind, so that statements can be written first and bound afterwards.
enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
}

/// Several statements sent to SQLite in one round trip, with their parameters in order.
#[derive(Default)]
struct Script<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Script<'a> {
    fn statement(&mut self, sql: &str) {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(sql);
    }

    fn arg(&mut self, a: Arg<'a>) -> &mut Self {
        self.args.push(a);
        self
    }

    fn nulls(&mut self, n: usize) {
        for _ in 0..n {
            self.args.push(Arg::OptInt(None));
        }
    }

    /// The rows `RETURNING` gives back (the script's only statement that returns any).
    async fn rows<T>(self, conn: &mut SqliteConnection) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.sql);
        for a in self.args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::OptInt(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
                Arg::Blob(v) => q.bind(v),
            };
        }
        q.fetch_all(&mut *conn).await
    }
}

/// Caches a group of webhook requests and records every delivery of the group (`refused`
/// ones too), usually in one round trip: the upsert, late data, the deliveries and the
/// idempotency keys are one script, and `COMMIT` rides along when `last`. Requests about the
/// same caller, or with the same idempotency key, go in successive rounds so that each sees
/// the one before.
pub async fn ingest<'a>(
    conn: &mut SqliteConnection,
    tx: &mut Tx,
    items: &[&'a IngestWrite],
    refused: Vec<DeliveryRow<'a>>,
    last: bool,
) -> Result<Vec<IngestDone>, sqlx::Error> {
    let now = now_ms();
    let mut results: Vec<Option<IngestDone>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut refused = Some(refused);
    loop {
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
        let deliveries = refused.take().unwrap_or_default();
        let commit = last && later.is_empty();
        ingest_round(conn, tx, &round, now, &mut results, deliveries, commit).await?;
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
    mut deliveries: Vec<DeliveryRow<'a>>,
    commit: bool,
) -> Result<(), sqlx::Error> {
    // Idempotency keys seen before: replay the first answer, or refuse a different body.
    let has_keys = round.iter().any(|(_, w)| w.idempotency.is_some());
    let mut seen = if has_keys {
        seen_keys(conn, tx, round, now).await?
    } else {
        HashMap::new()
    };
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
            _ => {
                deliveries.push(DeliveryRow {
                    fields: Some(&w.fields),
                    ..DeliveryRow::for_webhook(w, 202, "cached")
                });
                fresh.push((i, w));
            }
        }
    }

    let mut script = Script::default();
    // 1. Cache: a new context, or later values merged into the caller's unused one; the
    //    answer comes back for each.
    for chunk in chunks(fresh.len()) {
        script.statement(&tx.sql(format!(
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
             RETURNING action_id, phone, {}",
            values(chunk.slots, 4),
            receipt_sql("")
        )));
        script.arg(Arg::Int(now)).arg(Arg::Int(now));
        for (_, w) in &fresh[chunk.rows.clone()] {
            script
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&w.phone))
                .arg(Arg::Text(&w.fields))
                .arg(Arg::Int(now + w.ttl_ms));
        }
        script.nulls(chunk.padding(4));

        // 2. Data for a caller whose call fell back on this action just before is late for
        //    that call: recorded against it (and still cached for the caller's next call).
        script.statement(&format!(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{{}}'), landed.fields),
                              late_at = ?
               FROM (SELECT v.column3 AS fields,
                            (SELECT f.call_id FROM call_fallbacks f
                              WHERE f.action_id = v.column1 AND f.phone = v.column2 AND f.at >= ?
                              ORDER BY f.at DESC LIMIT 1) AS call_row
                       FROM (VALUES {}) v WHERE v.column1 IS NOT NULL) AS landed
              WHERE calls.id = landed.call_row",
            values(chunk.slots, 3)
        ));
        script
            .arg(Arg::Int(now))
            .arg(Arg::Int(now - LATE_WINDOW_MS));
        for (_, w) in &fresh[chunk.rows.clone()] {
            script
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&w.phone))
                .arg(Arg::Text(&w.fields));
        }
        script.nulls(chunk.padding(3));
    }

    // 3. Every delivery: cached ones name their context, and say `late` when a call fell
    //    back on the action for this caller just before.
    for chunk in chunks(deliveries.len()) {
        script.statement(&tx.sql(format!(
            "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields,
                                     problems, body_excerpt, idempotency_key, latency_us,
                                     context_id, call_id)
             SELECT column1, column2, column3,
                    CASE WHEN late_call IS NOT NULL THEN 'late' ELSE column4 END,
                    column5, column6, column7, column8, column9, column10,
                    CASE WHEN column4 = 'cached' THEN
                        (SELECT c.id FROM contexts c
                          WHERE c.action_id = d.column1 AND c.phone = d.column5 AND c.call_id IS NULL)
                    END,
                    late_call
               FROM (SELECT v.*,
                            CASE WHEN v.column4 = 'cached' THEN
                                (SELECT k.public_id FROM call_fallbacks f JOIN calls k ON k.id = f.call_id
                                  WHERE f.action_id = v.column1 AND f.phone = v.column5 AND f.at >= ?
                                  ORDER BY f.at DESC LIMIT 1)
                            END AS late_call
                       FROM (VALUES {}) v WHERE v.column1 IS NOT NULL) AS d",
            values(chunk.slots, 10)
        )));
        script.arg(Arg::Int(now - LATE_WINDOW_MS));
        for d in &deliveries[chunk.rows.clone()] {
            script
                .arg(Arg::Int(d.action_id))
                .arg(Arg::Int(d.received_at))
                .arg(Arg::Int(d.status))
                .arg(Arg::Text(d.outcome))
                .arg(Arg::OptText(d.phone))
                .arg(Arg::OptText(d.fields))
                .arg(Arg::OptText(d.problems.as_deref()))
                .arg(Arg::OptText(d.body_excerpt))
                .arg(Arg::OptText(d.idempotency_key))
                .arg(Arg::Int(d.latency_us));
        }
        script.nulls(chunk.padding(10));
    }

    // 4. Idempotency keys remember the answer, as built by the upsert.
    let keyed: Vec<&IngestWrite> = fresh
        .iter()
        .map(|(_, w)| *w)
        .filter(|w| w.idempotency.is_some())
        .collect();
    for chunk in chunks(keyed.len()) {
        script.statement(&format!(
            "INSERT OR REPLACE INTO idempotency_keys (action_id, key, body_hash, response, created_at)
             SELECT v.column1, v.column2, v.column3,
                    (SELECT {} FROM contexts c
                      WHERE c.action_id = v.column1 AND c.phone = v.column4 AND c.call_id IS NULL),
                    ?
               FROM (VALUES {}) v WHERE v.column1 IS NOT NULL",
            receipt_sql("c."),
            values(chunk.slots, 4)
        ));
        script.arg(Arg::Int(now));
        for w in &keyed[chunk.rows.clone()] {
            let k = w.idempotency.as_ref().expect("keyed");
            script
                .arg(Arg::Int(w.action_id))
                .arg(Arg::Text(&k.key))
                .arg(Arg::Blob(&k.body_hash))
                .arg(Arg::Text(&w.phone));
        }
        script.nulls(chunk.padding(4));
    }

    if script.sql.is_empty() {
        return Ok(());
    }
    if commit {
        tx.commit_in(&mut script.sql);
    }
    let answers: Vec<(i64, String, String)> = script.rows(conn).await?;
    let answers: HashMap<(i64, String), String> = answers
        .into_iter()
        .map(|(action, phone, receipt)| ((action, phone), receipt))
        .collect();
    for (i, w) in fresh {
        let receipt = answers
            .get(&(w.action_id, w.phone.clone()))
            .cloned()
            .expect("every upserted row is returned");
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

/// Tries to start a group of calls, in two round trips. First every wanted step's data is
/// claimed atomically. Then, in one script: a call missing any data gives its claims back
/// (it is told which step to wait for); the others are recorded with the steps they fell
/// back on, and data that landed for those steps since the call started is late for it.
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
    let mut given_back: Vec<(i64, &str)> = Vec::new();
    let mut started: Vec<(&CallAttempt, CallRecord)> = Vec::new();
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
            given_back.extend(
                c.steps
                    .iter()
                    .filter_map(|s| mine(s.action_id))
                    .map(|(_, id, _)| (*id, c.public_id.as_str())),
            );
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
        started.push((c, record));
    }
    let fell_back: Vec<(&CallAttempt, i64)> = started
        .iter()
        .flat_map(|(c, _)| {
            c.steps
                .iter()
                .filter(|s| s.state == StepState::GaveUp)
                .map(move |s| (*c, s.action_id))
        })
        .collect();

    let mut script = Script::default();
    for chunk in chunks(given_back.len()) {
        script.statement(&format!(
            "UPDATE contexts SET call_id = NULL FROM (VALUES {}) AS back
              WHERE contexts.id = back.column1 AND contexts.call_id = back.column2",
            values(chunk.slots, 2)
        ));
        for (id, call) in &given_back[chunk.rows.clone()] {
            script.arg(Arg::Int(*id)).arg(Arg::Text(call));
        }
        script.nulls(chunk.padding(2));
    }
    for chunk in chunks(started.len()) {
        script.statement(&tx.sql(format!(
            "INSERT INTO calls (public_id, agent_id, caller, called, started_at, waited_ms, source,
                                variables, trace, status, outcome)
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
            values(chunk.slots, 11)
        )));
        for (c, r) in &started[chunk.rows.clone()] {
            script
                .arg(Arg::Text(&c.public_id))
                .arg(Arg::Int(c.agent_id))
                .arg(Arg::Text(&c.caller))
                .arg(Arg::OptText(c.called.as_deref()))
                .arg(Arg::Int(c.started_at))
                .arg(Arg::Int(r.waited_ms))
                .arg(Arg::Text(r.source))
                .arg(Arg::Text(&r.variables))
                .arg(Arg::Text(&r.trace))
                .arg(Arg::Text(r.status))
                .arg(Arg::OptText(r.outcome.as_deref()));
        }
        script.nulls(chunk.padding(11));
    }
    for chunk in chunks(fell_back.len()) {
        let rows = values(chunk.slots, 4);
        // The steps each call fell back on, so that data landing soon after is late for it.
        script.statement(&format!(
            "INSERT INTO call_fallbacks (call_id, action_id, phone, at)
             SELECT (SELECT id FROM calls WHERE public_id = v.column1), v.column2, v.column3, ?
               FROM (VALUES {rows}) v WHERE v.column1 IS NOT NULL"
        ));
        script.arg(Arg::Int(now));
        push_fallbacks(
            &mut script,
            &fell_back[chunk.rows.clone()],
            chunk.padding(4),
        );
        // Data that landed while (or since) the call gave up on it arrived late for it.
        script.statement(&format!(
            "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{{}}'), c.fields),
                              late_at = ?
               FROM (VALUES {rows}) v
               JOIN contexts c ON c.action_id = v.column2 AND c.phone = v.column3
                              AND c.call_id IS NULL AND c.updated_at >= v.column4
              WHERE calls.public_id = v.column1"
        ));
        script.arg(Arg::Int(now));
        push_fallbacks(
            &mut script,
            &fell_back[chunk.rows.clone()],
            chunk.padding(4),
        );
        script.statement(&format!(
            "UPDATE deliveries SET outcome = 'late', call_id = v.column1
               FROM (VALUES {rows}) v
               JOIN contexts c ON c.action_id = v.column2 AND c.phone = v.column3
                              AND c.call_id IS NULL AND c.updated_at >= v.column4
              WHERE deliveries.context_id = c.id AND deliveries.outcome = 'cached'"
        ));
        push_fallbacks(
            &mut script,
            &fell_back[chunk.rows.clone()],
            chunk.padding(4),
        );
    }
    if !script.sql.is_empty() {
        if last {
            tx.commit_in(&mut script.sql);
        }
        script.rows::<(i64,)>(conn).await?;
    }
    Ok(outcomes)
}

/// (call, action, caller, call start) rows of `fell_back`, then `padding` NULLs.
fn push_fallbacks<'a>(script: &mut Script<'a>, rows: &[(&'a CallAttempt, i64)], padding: usize) {
    for (c, action) in rows {
        script
            .arg(Arg::Text(&c.public_id))
            .arg(Arg::Int(*action))
            .arg(Arg::Text(&c.caller))
            .arg(Arg::Int(c.started_at));
    }
    script.nulls(padding);
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
