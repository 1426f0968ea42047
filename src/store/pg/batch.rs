//! The writer's statements on PostgreSQL, one per group rather than one per request: the
//! same steps as SQLite's (see [`crate::store::batch`]), with each column of a group's rows
//! bound as one array and the rows made by `unnest`, so that a statement's text is the same
//! whatever the group's size.
//!
//! Servers of a cluster write the same tables at once. Rows a group locks (a caller's
//! cached data) are taken in the order of their keys, so that two groups wait for each
//! other rather than deadlock; a caller's data is claimed by an `UPDATE … WHERE call_id IS
//! NULL`, which a second claimant re-checks once the first commits (the data is used once
//! whichever server starts the call); sweeps skip rows another server's sweep has locked.

use std::collections::HashMap;

use sqlx::postgres::PgConnection;

use crate::store::batch::{
    ClaimedContexts, DeliveryRow, IngestDone, SortedCalls, field_names, next_round, receipt,
    sort_calls, sort_round, wanted_claims,
};
use crate::store::now_ms;
use crate::store::refusals::RefusalCount;
use crate::store::writer::{
    Attempted, CALL_SWEEP_LIMIT, CallAttempt, DELIVERY_SWEEP_LIMIT, IDEMPOTENCY_WINDOW_MS,
    IngestCommitted, IngestWrite, LATE_WINDOW_MS, SWEEP_LIMIT, Sweep, SweepReport,
};
use crate::wakeups::WakeKey;

/// The channel on which a committed webhook's caller is announced to every server (see
/// [`super::listener`]); the payload is [`wake_payload`].
pub const WAKE_CHANNEL: &str = "precall_wake";

/// `action_id:phone`, the payload of a wake-up.
pub fn wake_payload(key: &WakeKey) -> String {
    format!("{}:{}", key.action_id, key.phone)
}

/// Caches a group of webhook requests and records every delivery of the group, as
/// [`crate::store::batch::ingest`] does: requests about the same caller, or with the same
/// idempotency key, go in successive rounds so that each sees the one before.
pub async fn ingest<'a>(
    conn: &mut PgConnection,
    items: &[&'a IngestWrite],
    refused: Vec<DeliveryRow<'a>>,
    now: i64,
) -> Result<Vec<IngestDone>, sqlx::Error> {
    let mut results: Vec<Option<IngestDone>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut refused = Some(refused);
    loop {
        let (round, later) = next_round(items, pending);
        let deliveries = refused.take().unwrap_or_default();
        ingest_round(conn, &round, now, &mut results, deliveries).await?;
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
    conn: &mut PgConnection,
    round: &[(usize, &IngestWrite)],
    now: i64,
) -> Result<HashMap<usize, (Vec<u8>, String)>, sqlx::Error> {
    let (mut at, mut actions, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for (i, w) in round {
        if let Some(k) = &w.idempotency {
            at.push(*i as i64);
            actions.push(w.action_id);
            keys.push(k.key.as_str());
        }
    }
    let rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT asked.i, k.body_hash, k.response
           FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS asked (i, action_id, key)
           JOIN idempotency_keys k ON k.action_id = asked.action_id AND k.key = asked.key
          WHERE k.created_at > $4",
    )
    .bind(&at)
    .bind(&actions)
    .bind(&keys)
    .bind(now - IDEMPOTENCY_WINDOW_MS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(i, hash, response)| (i as usize, (hash, response)))
        .collect())
}

async fn ingest_round<'a>(
    conn: &mut PgConnection,
    round: &[(usize, &'a IngestWrite)],
    now: i64,
    results: &mut [Option<IngestDone>],
    mut deliveries: Vec<DeliveryRow<'a>>,
) -> Result<(), sqlx::Error> {
    // Idempotency keys seen before: replay the first answer, or refuse a different body.
    let has_keys = round.iter().any(|(_, w)| w.idempotency.is_some());
    let seen = if has_keys {
        seen_keys(conn, round, now).await?
    } else {
        HashMap::new()
    };
    // Webhooks to cache: position in the group, the request, its delivery's position.
    let fresh = sort_round(round, seen, results, &mut deliveries);

    // 1. Cache: a new context, or later values merged into the caller's unused one, in the
    //    order of the callers (see the module's documentation).
    let by_caller: HashMap<(i64, &str), usize> = fresh
        .iter()
        .enumerate()
        .map(|(at, (_, w, _))| ((w.action_id, w.phone.as_str()), at))
        .collect();
    let mut receipts: Vec<Option<String>> = vec![None; fresh.len()];
    if !fresh.is_empty() {
        let actions: Vec<i64> = fresh.iter().map(|(_, w, _)| w.action_id).collect();
        let phones: Vec<&str> = fresh.iter().map(|(_, w, _)| w.phone.as_str()).collect();
        let fields: Vec<&str> = fresh.iter().map(|(_, w, _)| w.fields.as_str()).collect();
        let expiries: Vec<i64> = fresh.iter().map(|(_, w, _)| now + w.ttl_ms).collect();
        let rows: Vec<(i64, String, i64, String, i64)> = sqlx::query_as(
            "INSERT INTO contexts AS c (action_id, phone, fields, expires_at, received_at, updated_at)
             SELECT v.action_id, v.phone, v.fields, v.expires_at, $5, $5
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
                    AS v (action_id, phone, fields, expires_at)
              ORDER BY v.action_id, v.phone
             ON CONFLICT (action_id, phone) WHERE call_id IS NULL DO UPDATE SET
                 fields = CASE WHEN c.expires_at <= excluded.updated_at
                               THEN excluded.fields ELSE json_patch(c.fields, excluded.fields) END,
                 received_at = CASE WHEN c.expires_at <= excluded.updated_at
                               THEN excluded.received_at ELSE c.received_at END,
                 updated_at = excluded.updated_at,
                 expires_at = excluded.expires_at
             RETURNING action_id, phone, id, fields, expires_at",
        )
        .bind(&actions)
        .bind(&phones)
        .bind(&fields)
        .bind(&expiries)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        for (action, phone, context_id, stored, expires_at) in rows {
            let Some(&at) = by_caller.get(&(action, phone.as_str())) else {
                return Err(sqlx::Error::RowNotFound);
            };
            let (_, w, delivery) = fresh[at];
            // The request's own fields, unless they were merged into earlier ones.
            let names = if stored == w.fields {
                w.field_names.clone()
            } else {
                serde_json::from_str(&stored)
                    .map(|merged| field_names(&merged))
                    .unwrap_or_else(|_| "[]".into())
            };
            deliveries[delivery].context_id = Some(context_id);
            receipts[at] = Some(receipt(&w.phone, &names, expires_at));
        }

        // 2. Data for a caller whose call fell back on this action just before is late for
        //    that call: recorded against it (and still cached for the caller's next call).
        let positions: Vec<i64> = (0..fresh.len() as i64).collect();
        let late: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT v.pos, k.id, k.public_id
               FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS v (pos, action_id, phone)
               JOIN LATERAL (SELECT f.call_id FROM call_fallbacks f
                              WHERE f.action_id = v.action_id AND f.phone = v.phone
                                AND f.at >= $4
                              ORDER BY f.at DESC LIMIT 1) AS landed ON true
               JOIN calls k ON k.id = landed.call_id",
        )
        .bind(&positions)
        .bind(&actions)
        .bind(&phones)
        .bind(now - LATE_WINDOW_MS)
        .fetch_all(&mut *conn)
        .await?;
        for (at, call_row, public_id) in late {
            let (_, w, delivery) = fresh[at as usize];
            sqlx::query(
                "UPDATE calls SET late_fields = json_patch(coalesce(late_fields, '{}'), $1),
                                  late_at = $2
                  WHERE id = $3",
            )
            .bind(&w.fields)
            .bind(now)
            .bind(call_row)
            .execute(&mut *conn)
            .await?;
            let d = &mut deliveries[delivery];
            d.outcome = "late";
            d.late_call = Some(public_id);
        }
    }

    // 3. Every delivery: cached ones name their context, late ones their call.
    if !deliveries.is_empty() {
        let d = &deliveries;
        sqlx::query(
            "INSERT INTO deliveries (action_id, received_at, status, outcome, phone, fields,
                                     problems, body_excerpt, idempotency_key, latency_us,
                                     context_id, call_id)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],
                                  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                                  $10::bigint[], $11::bigint[], $12::text[])",
        )
        .bind(d.iter().map(|d| d.action_id).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.received_at).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.status).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.outcome).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.phone).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.fields).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.problems.as_deref()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.body_excerpt).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.idempotency_key).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.latency_us).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.context_id).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.late_call.as_deref()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    // 4. Idempotency keys remember the answer.
    let keyed: Vec<(&IngestWrite, &str)> = fresh
        .iter()
        .zip(&receipts)
        .filter_map(|((_, w, _), receipt)| Some((*w, receipt.as_deref()?)))
        .filter(|(w, _)| w.idempotency.is_some())
        .collect();
    if !keyed.is_empty() {
        fn key(w: &IngestWrite) -> &crate::store::writer::Idempotency {
            w.idempotency.as_ref().expect("keyed")
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (action_id, key, body_hash, response, created_at)
             SELECT v.action_id, v.key, v.body_hash, v.response, $5
               FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[])
                    AS v (action_id, key, body_hash, response)
             ON CONFLICT (action_id, key) DO UPDATE SET
                 body_hash = excluded.body_hash, response = excluded.response,
                 created_at = excluded.created_at",
        )
        .bind(keyed.iter().map(|(w, _)| w.action_id).collect::<Vec<_>>())
        .bind(
            keyed
                .iter()
                .map(|(w, _)| key(w).key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            keyed
                .iter()
                .map(|(w, _)| key(w).body_hash.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(keyed.iter().map(|(_, r)| *r).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }

    for ((i, w, _), receipt) in fresh.into_iter().zip(receipts) {
        let receipt = receipt.ok_or(sqlx::Error::RowNotFound)?;
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

/// Announces committed webhooks' callers to every server, with the transaction: the
/// notifications go out when it commits, and not at all if it does not.
pub async fn announce(conn: &mut PgConnection, keys: &[&WakeKey]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = keys.iter().map(|k| wake_payload(k)).collect();
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(WAKE_CHANNEL)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Tries to start a group of calls, as [`crate::store::batch::start_calls`] does.
pub async fn start_calls(
    conn: &mut PgConnection,
    calls: &[&CallAttempt],
) -> Result<Vec<Attempted>, sqlx::Error> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut wanted = wanted_claims(calls);
    // In the order of the rows' keys, as ingest locks them.
    wanted.sort_unstable();
    let mut claimed = ClaimedContexts::new();
    if !wanted.is_empty() {
        type Row = (i64, String, String, i64, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "UPDATE contexts SET call_id = w.call
               FROM (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
                                   AS u (action_id, phone, call)
                      ORDER BY action_id, phone) AS w
              WHERE contexts.action_id = w.action_id AND contexts.phone = w.phone
                AND contexts.call_id IS NULL AND contexts.expires_at > $4
             RETURNING contexts.action_id, contexts.phone, contexts.call_id, contexts.id,
                       contexts.fields, contexts.received_at",
        )
        .bind(wanted.iter().map(|w| w.0).collect::<Vec<_>>())
        .bind(wanted.iter().map(|w| w.1).collect::<Vec<_>>())
        .bind(wanted.iter().map(|w| w.2).collect::<Vec<_>>())
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        for (action, phone, call, id, fields, received_at) in rows {
            claimed.insert((action, phone), (call, id, fields, received_at));
        }
    }

    let SortedCalls {
        outcomes,
        given_back,
        started,
        kept,
    } = sort_calls(calls, &mut claimed);
    // The steps the started calls fell back on.
    let fell_back: Vec<(&CallAttempt, i64)> = started
        .iter()
        .zip(&kept)
        .flat_map(|((c, _), (_, actions))| actions.iter().map(move |&a| (*c, a)))
        .collect();

    if !given_back.is_empty() {
        sqlx::query(
            "UPDATE contexts SET call_id = NULL
               FROM unnest($1::bigint[], $2::text[]) AS back (id, call)
              WHERE contexts.id = back.id AND contexts.call_id = back.call",
        )
        .bind(given_back.iter().map(|g| g.0).collect::<Vec<_>>())
        .bind(given_back.iter().map(|g| g.1).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !started.is_empty() {
        let s = &started;
        sqlx::query(
            "INSERT INTO calls (public_id, agent_id, caller, called, started_at, waited_ms, source,
                                variables, trace, status, outcome, version)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                                  $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
                                  $11::text[], $12::bigint[])",
        )
        .bind(
            s.iter()
                .map(|(c, _)| c.public_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(s.iter().map(|(c, _)| c.agent_id).collect::<Vec<_>>())
        .bind(s.iter().map(|(c, _)| c.caller.as_str()).collect::<Vec<_>>())
        .bind(
            s.iter()
                .map(|(c, _)| c.called.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(s.iter().map(|(c, _)| c.started_at).collect::<Vec<_>>())
        .bind(s.iter().map(|(_, r)| r.waited_ms).collect::<Vec<_>>())
        .bind(s.iter().map(|(_, r)| r.source).collect::<Vec<_>>())
        .bind(s.iter().map(|(_, r)| r.variables.get()).collect::<Vec<_>>())
        .bind(s.iter().map(|(_, r)| r.trace.get()).collect::<Vec<_>>())
        .bind(s.iter().map(|(_, r)| r.status).collect::<Vec<_>>())
        .bind(
            s.iter()
                .map(|(_, r)| r.outcome.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(s.iter().map(|(c, _)| c.version).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !fell_back.is_empty() {
        let calls: Vec<&str> = fell_back
            .iter()
            .map(|(c, _)| c.public_id.as_str())
            .collect();
        let actions: Vec<i64> = fell_back.iter().map(|(_, a)| *a).collect();
        let phones: Vec<&str> = fell_back.iter().map(|(c, _)| c.caller.as_str()).collect();
        let starts: Vec<i64> = fell_back.iter().map(|(c, _)| c.started_at).collect();
        // The steps each call fell back on, so that data landing soon after is late for it.
        sqlx::query(
            "INSERT INTO call_fallbacks (call_id, action_id, phone, at)
             SELECT (SELECT id FROM calls WHERE public_id = v.call), v.action_id, v.phone, $5
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
                    AS v (call, action_id, phone, started_at)",
        )
        .bind(&calls)
        .bind(&actions)
        .bind(&phones)
        .bind(&starts)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // Data that landed while (or since) the call gave up on it arrived late for it.
        sqlx::query(
            "UPDATE calls SET late_fields = json_patch(coalesce(calls.late_fields, '{}'), c.fields),
                              late_at = $5
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
                    AS v (call, action_id, phone, started_at)
               JOIN contexts c ON c.action_id = v.action_id AND c.phone = v.phone
                              AND c.call_id IS NULL AND c.updated_at >= v.started_at
              WHERE calls.public_id = v.call",
        )
        .bind(&calls)
        .bind(&actions)
        .bind(&phones)
        .bind(&starts)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET outcome = 'late', call_id = v.call
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
                    AS v (call, action_id, phone, started_at)
               JOIN contexts c ON c.action_id = v.action_id AND c.phone = v.phone
                              AND c.call_id IS NULL AND c.updated_at >= v.started_at
              WHERE deliveries.context_id = c.id AND deliveries.outcome = 'cached'",
        )
        .bind(&calls)
        .bind(&actions)
        .bind(&phones)
        .bind(&starts)
        .execute(&mut *conn)
        .await?;
    }
    Ok(outcomes)
}

/// Adds refusal counts to the stored ones. A count of a webhook deleted since is dropped
/// rather than failing the others.
pub async fn count_refusals(
    conn: &mut PgConnection,
    counts: &[RefusalCount],
) -> Result<(), sqlx::Error> {
    // One row per key: an upsert may not change a row twice.
    let mut summed: HashMap<(i64, i64, &str), i64> = HashMap::new();
    for c in counts {
        *summed
            .entry((c.action_id, c.minute, c.reason.as_str()))
            .or_insert(0) += c.count;
    }
    if summed.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<((i64, i64, &str), i64)> = summed.into_iter().collect();
    rows.sort_unstable();
    sqlx::query(
        "INSERT INTO refusal_counts (action_id, minute, reason, count)
         SELECT v.action_id, v.minute, v.reason, v.count
           FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[])
                AS v (action_id, minute, reason, count)
          WHERE v.action_id IN (SELECT id FROM precall_actions)
         ON CONFLICT (action_id, minute, reason)
         DO UPDATE SET count = refusal_counts.count + excluded.count",
    )
    .bind(rows.iter().map(|r| r.0.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.2).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes one bounded portion of what is expired or past its retention, as SQLite's sweep
/// does; rows that another server's sweep holds are left to it.
pub async fn sweep(conn: &mut PgConnection, at: &Sweep) -> Result<SweepReport, sqlx::Error> {
    let now = at.now;
    // A trigger marks the deliveries of unused contexts as expired.
    let expired = delete(
        conn,
        "DELETE FROM contexts WHERE id IN
                (SELECT id FROM contexts WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        now,
        SWEEP_LIMIT,
    )
    .await?;
    let forgotten = delete(
        conn,
        "DELETE FROM idempotency_keys WHERE (action_id, key) IN
                (SELECT action_id, key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2
                    FOR UPDATE SKIP LOCKED)",
        now - IDEMPOTENCY_WINDOW_MS,
        SWEEP_LIMIT,
    )
    .await?;
    // The first rows are the oldest (see SQLite's sweep).
    let deliveries = delete(
        conn,
        "DELETE FROM deliveries WHERE id IN
                (SELECT id FROM (SELECT id, received_at FROM deliveries ORDER BY id LIMIT $1
                                   FOR UPDATE SKIP LOCKED) AS first
                  WHERE received_at < $2)",
        DELIVERY_SWEEP_LIMIT,
        at.deliveries_before,
    )
    .await?;
    let counts = delete(
        conn,
        "DELETE FROM refusal_counts WHERE (action_id, minute, reason) IN
                (SELECT action_id, minute, reason FROM refusal_counts WHERE minute < $1 LIMIT $2
                    FOR UPDATE SKIP LOCKED)",
        at.deliveries_before,
        DELIVERY_SWEEP_LIMIT,
    )
    .await?;
    let calls = delete(
        conn,
        "DELETE FROM calls WHERE id IN
                (SELECT id FROM (SELECT id, started_at FROM calls ORDER BY id LIMIT $1
                                   FOR UPDATE SKIP LOCKED) AS first
                  WHERE started_at < $2)",
        CALL_SWEEP_LIMIT,
        at.calls_before,
    )
    .await?;
    let full = |n: u64, limit: i64| n as i64 >= limit;
    let half_full = |n: u64, limit: i64| n as i64 * 2 >= limit;
    Ok(SweepReport {
        expired_contexts: expired,
        forgotten_idempotency_keys: forgotten,
        old_deliveries: deliveries,
        old_refusal_counts: counts,
        old_calls: calls,
        more: full(expired, SWEEP_LIMIT)
            || full(forgotten, SWEEP_LIMIT)
            || half_full(deliveries, DELIVERY_SWEEP_LIMIT)
            || full(counts, DELIVERY_SWEEP_LIMIT)
            || half_full(calls, CALL_SWEEP_LIMIT),
    })
}

/// Runs one of the sweep's bounded deletes with its two parameters; how many rows it removed.
async fn delete(
    conn: &mut PgConnection,
    statement: &'static str,
    first: i64,
    second: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(statement)
        .bind(first)
        .bind(second)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
