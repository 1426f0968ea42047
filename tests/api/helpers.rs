//! A real server on port 0 over a fresh database, and the setup a test needs, made through
//! the public interfaces: the `precall` binary's commands and HTTP.

use std::process::Command;
use std::time::Duration;

use precall::config::Settings;
use precall::startup::Application;
use precall::store::writer::Writer;
use reqwest::Response;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_precall");

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The one-time link that creates the first admin.
    pub setup_link: Option<String>,
    pub database_url: String,
    pub client: reqwest::Client,
    writer: Writer,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An agent with one Webhook action and a runtime token.
#[derive(Clone, Debug)]
pub struct Setup {
    pub agent_id: String,
    pub url: String,
    pub key: String,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on its own runtime, in a thread of its own, as a server process would
/// run: a test that blocks (running the CLI, say) does not stop the server meanwhile.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = TestDatabase::create(&dir).await;
    let database_url = database.url.clone();
    let mut settings = Settings::for_tests(&database_url);
    configure(&mut settings);
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, built) = oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let app = Application::build(settings).await.expect("server builds");
            let address = format!("http://{}", app.local_addr());
            let setup_link = app.first_run_link().await.expect("setup link");
            let _ = ready.send((address, setup_link, app.writer()));
            app.run_until_stopped(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
            database.drop().await;
        });
    });
    let (address, setup_link, writer) = built.await.expect("the server started");
    TestApp {
        address,
        setup_link,
        database_url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        writer,
        stop: Some(stop),
        _dir: dir,
    }
}

/// The environment variable that runs the suite on PostgreSQL: a URL of a PostgreSQL
/// server (`postgres://user@127.0.0.1:5432/postgres`) on which the user may create
/// databases. Unset (or an SQLite URL), every test server gets an SQLite file.
pub const TEST_DATABASE_ENV: &str = "PRECALL_TEST_DATABASE_URL";

/// The PostgreSQL server the suite runs on, if it runs on one.
pub fn postgres_base() -> Option<String> {
    std::env::var(TEST_DATABASE_ENV)
        .ok()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
}

/// Whether the suite runs on PostgreSQL: a test of what only SQLite has (the ingest journal,
/// a full disk under the database file) says why it is skipped there and returns early.
pub fn skip_on_postgres(why: &str) -> bool {
    if postgres_base().is_some() {
        eprintln!("skipped on PostgreSQL: {why}");
        return true;
    }
    false
}

/// The database a test server runs on: a fresh SQLite file in the test's directory, or a
/// fresh database of its own on the PostgreSQL server of [`TEST_DATABASE_ENV`], dropped
/// once the server stops.
pub struct TestDatabase {
    pub url: String,
    /// The server's URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(dir: &TempDir) -> Self {
        let Some(base) = postgres_base() else {
            return Self {
                url: format!("sqlite://{}", dir.path().join("precall.db").display()),
                postgres: None,
            };
        };
        use sqlx::Connection;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "precall_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("the test PostgreSQL server answers");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("a test database is created");
        let _ = conn.close().await;
        Self {
            url: with_database(&base, &name),
            postgres: Some((base, name)),
        }
    }

    /// Drops a PostgreSQL database (with the connections still open on it).
    pub async fn drop(self) {
        use sqlx::Connection;
        let Some((base, name)) = self.postgres else {
            return;
        };
        if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = base
        .split_once('?')
        .map_or((base, None), |(h, q)| (h, Some(q)));
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let host_end = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    let mut url = format!("{}/{name}", &head[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Runs the binary against `database_url`; panics with its output if it fails.
pub fn run_cli(database_url: &str, public_url: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("PRECALL_DATABASE_URL", database_url)
        .env("PRECALL_PUBLIC_URL", public_url)
        .env_remove("RUST_LOG")
        .output()
        .expect("the precall binary runs");
    assert!(
        out.status.success(),
        "precall {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl TestApp {
    pub fn cli(&self, args: &[&str]) -> String {
        run_cli(&self.database_url, &self.address, args)
    }

    /// GETs `url` (absolute) with a bearer `token`: the answer's JSON, whatever its status.
    pub async fn get_json(&self, url: &str, token: &str) -> Value {
        self.client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs the binary, which must fail: its error output.
    pub fn cli_refused(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("PRECALL_DATABASE_URL", &self.database_url)
            .env("PRECALL_PUBLIC_URL", &self.address)
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("the precall binary runs");
        assert!(
            !out.status.success(),
            "precall {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli(&args)).expect("JSON output")
    }

    pub fn create_agent(&self, region: &str) -> String {
        self.cli_json(&[
            "agent",
            "create",
            "--name",
            "Support line",
            "--region",
            region,
        ])["agentId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Adds a Webhook action and publishes the draft: calls wait for it from then on.
    pub fn create_webhook(&self, agent_id: &str, wait_ms: u64, ttl_secs: u64) -> (String, String) {
        let out = self.cli_json(&[
            "action",
            "create-webhook",
            "--agent",
            agent_id,
            "--wait-ms",
            &wait_ms.to_string(),
            "--ttl-secs",
            &ttl_secs.to_string(),
            "--publish",
        ]);
        (
            out["url"].as_str().unwrap().to_owned(),
            out["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    pub fn create_token(&self, agent_id: &str) -> String {
        self.cli_json(&["token", "create", "--agent", agent_id])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn declare(&self, agent_id: &str, name: &str, ty: &str, default: Option<&str>) {
        let mut args = vec![
            "variable",
            "set",
            "--agent",
            agent_id,
            "--name",
            name,
            "--type",
            ty,
            "--publish",
        ];
        if let Some(d) = default {
            args.extend(["--default", d]);
        }
        self.cli(&args);
    }

    /// An agent (region US) with one Webhook action waiting `wait_ms` and a runtime token.
    pub fn setup(&self, wait_ms: u64) -> Setup {
        let agent_id = self.create_agent("US");
        let (url, key) = self.create_webhook(&agent_id, wait_ms, 600);
        let token = self.create_token(&agent_id);
        Setup {
            agent_id,
            url,
            key,
            token,
        }
    }

    pub fn deliveries(&self, agent_id: &str) -> Vec<Value> {
        // The CLI is another process: it reads what is committed, and the last webhooks may
        // still wait in the ingest journal for their commit.
        futures::executor::block_on(self.writer.settle()).expect("writer settles");
        self.cli_json(&["deliveries", "--agent", agent_id])
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn ingest(&self, setup: &Setup, body: &Value) -> Response {
        self.client
            .post(&setup.url)
            .header("X-Authorization", &setup.key)
            .json(body)
            .send()
            .await
            .expect("ingest request")
    }

    pub async fn start_call(&self, setup: &Setup, from: &str) -> Response {
        self.client
            .post(format!("{}/api/v1/calls", self.address))
            .bearer_auth(&setup.token)
            .json(&json!({ "agentId": setup.agent_id, "from": from, "to": "+12125550199" }))
            .send()
            .await
            .expect("call request")
    }

    /// Starts a call for `agent_id` with a runtime `token`, without a called number.
    pub async fn start_call_as(&self, token: &str, agent_id: &str, from: &str) -> Response {
        self.client
            .post(format!("{}/api/v1/calls", self.address))
            .bearer_auth(token)
            .json(&json!({ "agentId": agent_id, "from": from }))
            .send()
            .await
            .expect("call request")
    }

    pub async fn start_call_json(&self, setup: &Setup, from: &str) -> Value {
        let res = self.start_call(setup, from).await;
        assert_eq!(res.status(), 201, "call start failed");
        res.json().await.unwrap()
    }
}

/// The documentation's example payload for `agent_id`.
pub fn example_payload(agent_id: &str) -> Value {
    json!({
        "agentId": agent_id,
        "phoneNumber": "+1234567890",
        "customer_name": "Jane Doe",
        "priority": "high",
        "issue_type": "billing"
    })
}

/// Asserts a problem+json answer with `status` and problem `type` slug; returns its body.
pub async fn assert_problem(res: Response, status: u16, slug: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = res.json().await.expect("problem body is JSON");
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
