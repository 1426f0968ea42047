//! What `GET /metrics` exposes, in Prometheus' text format.
//!
//! Every series is created when the server starts, and the hot paths hold plain handles on
//! them: counting a webhook or a call is one atomic add on a counter picked by an enum, with
//! no lock, no allocation and no label built per request. Histograms are this module's own
//! ([`Histogram`]: an atomic per bucket), because `prometheus-client`'s takes a lock on
//! every observation; the crate still writes the exposition format.
//!
//! Nothing here names an engine: the writer's queue and groups, the calls' waits and
//! wake-ups, and the database's round trips are measured where they happen, whatever store
//! is behind them. No label ever holds a slug, a phone number or an id.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What became of a request to `POST /webhooks/{slug}`, by its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// 202: cached.
    Accepted,
    /// 202 again for an `Idempotency-Key` seen before: nothing changed.
    Replayed,
    /// 400: not JSON, or an unusable Idempotency-Key.
    BadRequest,
    /// 401: no key, a wrong key, or a bad signature.
    Unauthorized,
    /// 404: no webhook at this URL.
    NotFound,
    /// 408: the request took too long to arrive.
    Timeout,
    /// 409: the webhook is disabled.
    Disabled,
    /// 413: the body is over the limit.
    TooLarge,
    /// 415: not JSON by its content type.
    UnsupportedMediaType,
    /// 422: JSON, but not the contract (or an Idempotency-Key reused with another body).
    Validation,
    /// 429: over a rate.
    RateLimited,
    /// 503: not stored now (a full disk).
    Unavailable,
    /// Any other answer (a 500).
    Error,
}

impl WebhookOutcome {
    const ALL: [Self; 13] = [
        Self::Accepted,
        Self::Replayed,
        Self::BadRequest,
        Self::Unauthorized,
        Self::NotFound,
        Self::Timeout,
        Self::Disabled,
        Self::TooLarge,
        Self::UnsupportedMediaType,
        Self::Validation,
        Self::RateLimited,
        Self::Unavailable,
        Self::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Replayed => "replayed",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Timeout => "timeout",
            Self::Disabled => "disabled",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation => "validation",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }

    /// The outcome an answer's status says (`replayed` tells the two 202s apart).
    pub fn of_status(status: u16, replayed: bool) -> Self {
        match status {
            202 if replayed => Self::Replayed,
            200..=299 => Self::Accepted,
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            404 => Self::NotFound,
            408 => Self::Timeout,
            409 => Self::Disabled,
            413 => Self::TooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::Validation,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            _ => Self::Error,
        }
    }
}

/// Who started a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSource {
    /// `POST /api/v1/calls`.
    Api,
    Retell,
    Synthflow,
    Vapi,
    Telnyx,
    Twilio,
    /// The console's Simulate a call.
    Console,
}

impl CallSource {
    const ALL: [Self; 7] = [
        Self::Api,
        Self::Retell,
        Self::Synthflow,
        Self::Vapi,
        Self::Telnyx,
        Self::Twilio,
        Self::Console,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Retell => "retell",
            Self::Synthflow => "synthflow",
            Self::Vapi => "vapi",
            Self::Telnyx => "telnyx",
            Self::Twilio => "twilio",
            Self::Console => "console",
        }
    }
}

impl From<crate::connect::Platform> for CallSource {
    fn from(p: crate::connect::Platform) -> Self {
        use crate::connect::Platform;
        match p {
            Platform::Retell => Self::Retell,
            Platform::Synthflow => Self::Synthflow,
            Platform::Vapi => Self::Vapi,
            Platform::Telnyx => Self::Telnyx,
            Platform::Twilio => Self::Twilio,
        }
    }
}

/// What a call start came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Started with data from a pre-call webhook (cached, or arrived while it waited).
    Webhook,
    /// Started without webhook data: its wait ran out, or it had nothing to wait for.
    Fallback,
    /// A pre-call End Call ended it before its greeting.
    EndedBeforeGreeting,
    /// Refused (4xx): no valid token or signature, not a call, an unknown agent, a caller
    /// number that is not one.
    Refused,
    /// Not started for the server's own reasons (5xx: a full disk, an internal error).
    Error,
}

impl CallOutcome {
    const ALL: [Self; 5] = [
        Self::Webhook,
        Self::Fallback,
        Self::EndedBeforeGreeting,
        Self::Refused,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Fallback => "fallback",
            Self::EndedBeforeGreeting => "ended_before_greeting",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }

    /// A call start that failed with `status`.
    pub fn of_failure(status: u16) -> Self {
        if status < 500 {
            Self::Refused
        } else {
            Self::Error
        }
    }
}

/// A database round trip, by what it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbOp {
    /// One group of the writer: its statements, then its commit or its journal append.
    WriteGroup,
    /// A commit of the writer's transaction (with a group, or of webhooks it held).
    Commit,
    /// Configuration the hot paths read on a cache miss (a webhook, an agent, a token, a
    /// connection).
    ReadConfig,
    /// A call read back (`GET /api/v1/calls/{id}`, an answer, a Twilio turn).
    ReadCall,
}

impl DbOp {
    const ALL: [Self; 4] = [
        Self::WriteGroup,
        Self::Commit,
        Self::ReadConfig,
        Self::ReadCall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WriteGroup => "write_group",
            Self::Commit => "commit",
            Self::ReadConfig => "read_config",
            Self::ReadCall => "read_call",
        }
    }
}

/// Bucket bounds of the calls' waits, in nanoseconds: from half a millisecond (data that was
/// cached) to 15 s (past the longest wait, a Twilio call's 13 s).
const WAIT_BOUNDS: &[u64] = &[
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    15_000_000_000,
];

/// Bucket bounds of wake-ups, in nanoseconds: from 50 µs to a second.
const WAKEUP_BOUNDS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Bucket bounds of database round trips, in nanoseconds: from 100 µs to a second.
const DB_BOUNDS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Bucket bounds of the writer's group sizes: powers of two up to its largest group, 256.
const GROUP_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Nanoseconds in a second.
const NANOS: f64 = 1e9;

/// A histogram of fixed buckets, each an atomic count: observing is a search among a few
/// bounds and two atomic adds. Values are whole numbers in a base unit (nanoseconds, or
/// items), exported divided by `unit` (nanoseconds in a second, or 1).
#[derive(Clone)]
pub struct Histogram(Arc<HistogramInner>);

struct HistogramInner {
    /// Upper bounds (inclusive), ascending, in the base unit.
    bounds: &'static [u64],
    /// Base units in an exported unit (divided rather than multiplied by its inverse, so
    /// that 15 s is written 15, not 15.000000000000002).
    unit: f64,
    /// One count per bound, and one past the last (+Inf); not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("bounds", &self.0.bounds)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    fn new(bounds: &'static [u64], unit: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self(Arc::new(HistogramInner {
            bounds,
            unit,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }))
    }

    /// Counts one value, in the base unit.
    pub fn observe(&self, value: u64) {
        let i = self.0.bounds.partition_point(|&b| b < value);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts one duration (for histograms in seconds).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let mut buckets = Vec::with_capacity(inner.counts.len());
        let mut count = 0;
        for (i, c) in inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = inner
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / inner.unit);
            buckets.push((bound, n));
        }
        let sum = inner.sum.load(Ordering::Relaxed) as f64 / inner.unit;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every series the server exposes, and the handles the code counts with.
pub struct Metrics {
    registry: Registry,
    webhooks: [Counter; WebhookOutcome::ALL.len()],
    calls: [[Counter; CallOutcome::ALL.len()]; CallSource::ALL.len()],
    call_wait: Histogram,
    wakeup: Histogram,
    db: [Histogram; DbOp::ALL.len()],
    /// The writer's group sizes.
    pub groups: Histogram,
    /// Requests queued for the writer; set when scraped.
    writer_queue: Gauge,
    /// Connections open on the server's listener.
    pub open_connections: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every series (at zero) and registers it.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let start_time: Gauge<f64, AtomicU64> = Gauge::default();
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            start_time,
        );
        let registry = root.sub_registry_with_prefix("precall");

        let webhooks_family = Family::<Labels, Counter>::default();
        let webhooks = WebhookOutcome::ALL.map(|o| {
            webhooks_family
                .get_or_create(&[("outcome", o.as_str())])
                .clone()
        });
        registry.register(
            "webhooks",
            "Requests to the ingest URLs (POST /webhooks/{slug}), by what became of them",
            webhooks_family,
        );

        let calls_family = Family::<Labels2, Counter>::default();
        let calls = CallSource::ALL.map(|s| {
            CallOutcome::ALL.map(|o| {
                calls_family
                    .get_or_create(&[("source", s.as_str()), ("outcome", o.as_str())])
                    .clone()
            })
        });
        registry.register(
            "calls",
            "Call starts, by who started the call and what it came to",
            calls_family,
        );

        let call_wait = Histogram::new(WAIT_BOUNDS, NANOS);
        registry.register(
            "call_wait_seconds",
            "How long started calls waited for their data: from the call's start until its \
             variables were ready",
            call_wait.clone(),
        );
        let wakeup = Histogram::new(WAKEUP_BOUNDS, NANOS);
        registry.register(
            "wakeup_seconds",
            "From a webhook's data being committed (its waiting calls notified) to each \
             waiting call resuming",
            wakeup.clone(),
        );

        let db_family = Family::<Labels, Histogram, _>::new_with_constructor(|| {
            Histogram::new(DB_BOUNDS, NANOS)
        });
        let db = DbOp::ALL.map(|op| db_family.get_or_create(&[("op", op.as_str())]).clone());
        registry.register(
            "db_round_trip_seconds",
            "Round trips to the database, by what they were for",
            db_family,
        );

        let groups = Histogram::new(GROUP_BOUNDS, 1.0);
        registry.register(
            "writer_group_size",
            "Requests in each group the writer ran in one transaction",
            groups.clone(),
        );
        let writer_queue = Gauge::default();
        registry.register(
            "writer_queue_depth",
            "Requests waiting in the writer's queue",
            writer_queue.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Connections open on the server's listener",
            open_connections.clone(),
        );

        Self {
            registry: root,
            webhooks,
            calls,
            call_wait,
            wakeup,
            db,
            groups,
            writer_queue,
            open_connections,
        }
    }

    /// Counts a request to an ingest URL.
    pub fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks[outcome as usize].inc();
    }

    /// Counts a call start.
    pub fn call(&self, source: CallSource, outcome: CallOutcome) {
        self.calls[source as usize][outcome as usize].inc();
    }

    /// How long a started call waited for its data.
    pub fn call_waited(&self, waited: Duration) {
        self.call_wait.observe_duration(waited);
    }

    /// A waiting call resumed this long after it was notified.
    pub fn woken(&self, after: Duration) {
        self.wakeup.observe_duration(after);
    }

    /// A database round trip took `took`.
    pub fn db(&self, op: DbOp, took: Duration) {
        self.db[op as usize].observe_duration(took);
    }

    /// The series as text (Prometheus' format, version 0.0.4), with the writer's queue
    /// depth as it is now.
    pub fn render(&self, writer_queue: usize) -> String {
        self.writer_queue
            .set(i64::try_from(writer_queue).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Counts a connection as open until it is dropped.
pub struct OpenConnection(Gauge<i64, AtomicI64>);

impl OpenConnection {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_above_the_last_in_inf() {
        let h = Histogram::new(&[1, 2, 4], 1.0);
        for v in [0, 1, 2, 3, 4, 5, 100] {
            h.observe(v);
        }
        let counts: Vec<u64> =
            h.0.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts, [2, 1, 2, 2]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.0.sum.load(Ordering::Relaxed), 115);
    }

    #[test]
    fn the_text_names_every_series_with_help_and_type() {
        let m = Metrics::new();
        m.webhook(WebhookOutcome::Accepted);
        m.call(CallSource::Twilio, CallOutcome::Fallback);
        m.call_waited(Duration::from_millis(3));
        m.db(DbOp::Commit, Duration::from_micros(300));
        let text = m.render(5);
        for expected in [
            "# TYPE precall_webhooks_total counter",
            "precall_webhooks_total{outcome=\"accepted\"} 1",
            "precall_webhooks_total{outcome=\"unauthorized\"} 0",
            "precall_calls_total{source=\"twilio\",outcome=\"fallback\"} 1",
            "# TYPE precall_call_wait_seconds histogram",
            "precall_call_wait_seconds_bucket{le=\"0.0025\"} 0",
            "precall_call_wait_seconds_bucket{le=\"0.005\"} 1",
            "precall_call_wait_seconds_bucket{le=\"+Inf\"} 1",
            "precall_call_wait_seconds_count 1",
            "precall_db_round_trip_seconds_bucket{op=\"commit\",le=\"0.0005\"} 1",
            "precall_call_wait_seconds_bucket{le=\"15\"} 1",
            "precall_writer_queue_depth 5",
            "# HELP process_start_time_seconds",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }
}
