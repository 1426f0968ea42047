//! `GET /metrics`: Prometheus' text format, to an admin API token only, with counters and
//! histograms that move by exactly what the traffic through the public interface did.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::admin::Console;
use crate::connect::{connect, connected_agent, crm};
use crate::helpers::{TestApp, assert_problem, example_payload, spawn_app};

/// A scrape: every sample by its series as written (`name{labels}`).
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.0.keys()))
    }
}

/// The server with its first admin, and a read-only admin API token to scrape with.
async fn server_and_scraper() -> (TestApp, String) {
    let app = spawn_app().await;
    Console::set_up(&app).await;
    let token =
        app.cli_json(&["api-token", "create", "--name", "prometheus", "--read-only"])["token"]
            .as_str()
            .unwrap()
            .to_owned();
    (app, token)
}

async fn scrape(app: &TestApp, token: &str) -> Scrape {
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape(parse(&res.text().await.unwrap()))
}

/// Parses the text exposition format (version 0.0.4) strictly: every line is `# HELP`,
/// `# TYPE` or a sample `name{label="value",…} value`; every sample belongs to a family
/// with a TYPE and a HELP, a histogram's samples are `_bucket`, `_sum` and `_count`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            helps.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a value: {line}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(is_name(k), "{line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "{line}");
        let family = types
            .iter()
            .find(|(f, ty)| {
                name == f.as_str()
                    || (ty.as_str() == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(f.as_str())))
            })
            .unwrap_or_else(|| panic!("no TYPE before {line}"))
            .0;
        assert!(helps.contains(family), "no HELP for {family}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

fn moved(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

#[tokio::test]
async fn metrics_are_refused_without_an_admin_api_token() {
    let (app, _) = server_and_scraper().await;
    let setup = app.setup(0);
    let url = format!("{}/metrics", app.address);

    let res = app.client.get(&url).send().await.unwrap();
    let body = assert_problem(res, 401, "unauthorized").await;
    assert!(!body.to_string().contains("precall_"), "{body}");
    // A made-up token, a runtime token, a webhook's key: none is an admin API token.
    for token in ["pcat_nope", setup.token.as_str(), setup.key.as_str()] {
        let res = app
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_problem(res, 401, "unauthorized").await;
    }
    // A revoked token no longer scrapes.
    let made = app.cli_json(&["api-token", "create", "--name", "old", "--read-only"]);
    let token = made["token"].as_str().unwrap();
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let id = app
        .cli_json(&["api-token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "old")
        .unwrap()["id"]
        .to_string();
    app.cli(&["api-token", "revoke", &id]);
    let res = app
        .client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized").await;
}

#[tokio::test]
async fn metrics_count_webhooks_and_calls_by_outcome_and_time_waits_and_wakeups() {
    let (app, token) = server_and_scraper().await;
    let cached = app.setup(5000);
    let fallback = app.setup(300);
    let before = scrape(&app, &token).await;

    // A webhook accepted, and one refused with a wrong key.
    let res = app
        .ingest(&cached, &example_payload(&cached.agent_id))
        .await;
    assert_eq!(res.status(), 202);
    let res = app
        .client
        .post(&cached.url)
        .header("X-Authorization", "pcwk_wrong")
        .json(&example_payload(&cached.agent_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A call that finds that data cached.
    let call = app.start_call_json(&cached, "+1234567890").await;
    assert_eq!(call["precall"][0]["outcome"], "cached");
    // A call that waits, and is woken by its webhook (a second accepted one).
    let woken = async { app.start_call_json(&cached, "+12125550123").await };
    let webhook = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut body = example_payload(&cached.agent_id);
        body["phoneNumber"] = json!("+12125550123");
        assert_eq!(app.ingest(&cached, &body).await.status(), 202);
    };
    let (call, ()) = tokio::join!(woken, webhook);
    assert_eq!(call["precall"][0]["outcome"], "arrived");
    // A call that falls back after its 300 ms.
    let call = app.start_call_json(&fallback, "+12125550124").await;
    assert_eq!(call["source"], "fallback");
    // A call refused: its token is for another agent.
    let res = app
        .start_call_as(&fallback.token, &cached.agent_id, "+12125550125")
        .await;
    assert_eq!(res.status(), 403);

    let after = scrape(&app, &token).await;
    let webhooks = |outcome: &str| {
        moved(
            &before,
            &after,
            &format!("precall_webhooks_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(webhooks("accepted"), 2.0);
    assert_eq!(webhooks("unauthorized"), 1.0);
    for other in [
        "replayed",
        "validation",
        "rate_limited",
        "too_large",
        "not_found",
    ] {
        assert_eq!(webhooks(other), 0.0, "{other}");
    }
    let calls = |outcome: &str| {
        moved(
            &before,
            &after,
            &format!("precall_calls_total{{source=\"api\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(calls("webhook"), 2.0);
    assert_eq!(calls("fallback"), 1.0);
    assert_eq!(calls("refused"), 1.0);
    assert_eq!(calls("ended_before_greeting"), 0.0);
    assert_eq!(calls("error"), 0.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "precall_calls_total{source=\"twilio\",outcome=\"webhook\"}"
        ),
        0.0
    );

    // Three calls started, so three waits: the woken one (about 200 ms) and the fallback
    // (300 ms) over 100 ms.
    let wait = |s: &str| moved(&before, &after, &format!("precall_call_wait_seconds{s}"));
    assert_eq!(wait("_count"), 3.0);
    assert_eq!(wait("_bucket{le=\"+Inf\"}"), 3.0);
    assert!(
        wait("_bucket{le=\"0.1\"}") <= 1.0,
        "at most the cached call waited under 100 ms"
    );
    assert!(wait("_sum") > 0.45, "{}", wait("_sum"));
    // One waiting call woken.
    assert_eq!(moved(&before, &after, "precall_wakeup_seconds_count"), 1.0);

    // The writer ran groups, and the database answered reads and commits.
    assert!(moved(&before, &after, "precall_writer_group_size_count") >= 1.0);
    assert!(moved(&before, &after, "precall_writer_group_size_sum") >= 5.0);
    for op in ["write_group", "commit", "read_config"] {
        assert!(
            moved(
                &before,
                &after,
                &format!("precall_db_round_trip_seconds_count{{op=\"{op}\"}}")
            ) >= 1.0,
            "{op}"
        );
    }
    assert!(after.get("precall_writer_queue_depth") >= 0.0);
    // This scrape's own connection, at least.
    assert!(after.get("precall_open_connections") >= 1.0);
    assert!(after.get("process_start_time_seconds") > 1.7e9);
}

#[tokio::test]
async fn metrics_count_a_voice_platforms_calls_under_its_name() {
    let (app, token) = server_and_scraper().await;
    let (agent, hook, key) = connected_agent(&app, 0);
    let vapi = connect(&app, &agent, "vapi", "vapi-server-secret", &[]);
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550133",
        json!({"blocked": true}),
    )
    .await;
    let before = scrape(&app, &token).await;

    let post = |from: &'static str, secret: &'static str| {
        app.client
            .post(&vapi)
            .header("x-vapi-secret", secret)
            .json(&json!({"message": {"type": "assistant-request", "call": {"id": format!("call-{from}"), "customer": {"number": from}}, "phoneNumber": {"number": "+12125550199"}}}))
            .send()
    };
    // No data: the call falls back at once. Blocked by the CRM: a pre-call End Call ends
    // it. A wrong secret: refused before any call starts.
    assert_eq!(
        post("+12125550132", "vapi-server-secret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("+12125550133", "vapi-server-secret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(post("+12125550134", "guess").await.unwrap().status(), 401);

    let after = scrape(&app, &token).await;
    let calls = |outcome: &str| {
        moved(
            &before,
            &after,
            &format!("precall_calls_total{{source=\"vapi\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(calls("fallback"), 1.0);
    assert_eq!(calls("ended_before_greeting"), 1.0);
    assert_eq!(calls("refused"), 1.0);
    assert_eq!(calls("webhook"), 0.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "precall_calls_total{source=\"api\",outcome=\"fallback\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn metrics_count_each_kind_of_webhook_refusal_once() {
    let (app, token) = server_and_scraper().await;
    let setup = app.setup(0);
    let before = scrape(&app, &token).await;

    let post = |url: String, content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(url)
            .header("X-Authorization", &setup.key)
            .header("content-type", content_type)
            .header("Idempotency-Key", "metrics-1")
            .body(body)
            .send()
    };
    let payload = example_payload(&setup.agent_id).to_string().into_bytes();
    let json = "application/json";
    for (url, content_type, body, status) in [
        (setup.url.clone(), json, payload.clone(), 202),
        // The same Idempotency-Key and body: the first answer again.
        (setup.url.clone(), json, payload.clone(), 202),
        (
            format!("{}/webhooks/nosuchwebhookslug0000000", app.address),
            json,
            payload.clone(),
            404,
        ),
        (setup.url.clone(), "text/plain", payload.clone(), 415),
        (setup.url.clone(), json, b"{not json".to_vec(), 400),
        (setup.url.clone(), json, vec![b' '; 70_000], 413),
    ] {
        let res = post(url, content_type, body).await.unwrap();
        assert_eq!(res.status(), status);
    }
    let res = app
        .ingest(&setup, &json!({"agentId": setup.agent_id}))
        .await;
    assert_eq!(res.status(), 422);

    let after = scrape(&app, &token).await;
    for (outcome, n) in [
        ("accepted", 1.0),
        ("replayed", 1.0),
        ("not_found", 1.0),
        ("unsupported_media_type", 1.0),
        ("bad_request", 1.0),
        ("too_large", 1.0),
        ("validation", 1.0),
        ("unauthorized", 0.0),
        ("rate_limited", 0.0),
        ("error", 0.0),
    ] {
        let series = format!("precall_webhooks_total{{outcome=\"{outcome}\"}}");
        assert_eq!(moved(&before, &after, &series), n, "{outcome}");
    }
}

#[tokio::test]
async fn metrics_count_connections_while_they_are_open() {
    let (app, token) = server_and_scraper().await;
    let open = || async { scrape(&app, &token).await.get("precall_open_connections") };
    let before = open().await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Generous: on a loaded machine (the whole suite on two cores) a scrape can take
    // seconds; the loops end as soon as the count is seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while open().await < before + 3.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted the three"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(idle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while open().await > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still counted once closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
