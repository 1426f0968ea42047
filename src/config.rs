//! Command line: every setting is a flag with an environment-variable twin.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "precall",
    version,
    about = "Pre-call webhooks and flows for voice agents"
)]
pub struct Cli {
    /// Database URL: `sqlite://…` (the file is created if missing), or `postgres://…`
    /// for a PostgreSQL database shared by the servers of a cluster. Migrated at start.
    #[arg(
        long,
        env = "PRECALL_DATABASE_URL",
        default_value = "sqlite://precall.db",
        global = true
    )]
    pub database_url: DatabaseUrl,

    /// Base of the URLs made for webhooks and voice platforms, as senders and platforms
    /// reach this server (default: http:// and the server's bind address, PRECALL_BIND;
    /// give it to the CLI's commands too, so that the URLs they print are the server's).
    #[arg(long, env = "PRECALL_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings of the server (`precall` or `precall serve`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PRECALL_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Largest ingest or API body, in bytes.
    #[arg(long, env = "PRECALL_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Seconds between sweeps of expired webhook data.
    #[arg(long, env = "PRECALL_SWEEP_INTERVAL_SECS", default_value_t = 30)]
    pub sweep_interval_secs: u64,

    /// Size in MiB the write-ahead log may reach under steady writes before the writer
    /// copies the rest of it into the database itself, so that it starts over. A larger
    /// log holds up ingest less often (each time for a few milliseconds) and uses more disk.
    #[arg(long, env = "PRECALL_WAL_RESTART_MIB", default_value_t = 256)]
    pub wal_restart_mib: u64,

    /// Longest, in milliseconds, that acknowledged webhooks and calls wait in the ingest
    /// journal (a file beside the database, as durable as a commit) before the writer
    /// commits them to the database together. Fewer, larger commits write far less to disk
    /// under steady traffic. 0 commits every group before answering it, with no journal.
    #[arg(long, env = "PRECALL_COMMIT_EVERY_MS", default_value_t = 50)]
    pub commit_every_ms: u64,

    /// Milliseconds without a request after which the writer commits what it holds.
    #[arg(long, env = "PRECALL_COMMIT_IDLE_MS", default_value_t = 2)]
    pub commit_idle_ms: u64,

    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "PRECALL_SHUTDOWN_GRACE_SECS", default_value_t = 15)]
    pub shutdown_grace_secs: u64,

    /// Seconds an admin stays signed in to the console (12 hours).
    #[arg(long, env = "PRECALL_SESSION_TTL_SECS", default_value_t = 12 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=366 * 24 * 3600))]
    pub session_ttl_secs: u64,
    /// Seconds a client has to send a request's headers (408 and close after that).
    #[arg(long, env = "PRECALL_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a client has to send a request's body once its headers are in (408 after that).
    #[arg(long, env = "PRECALL_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// Requests a second one webhook URL takes with a valid key (429 beyond); 0 for no limit.
    #[arg(long, env = "PRECALL_RATE_PER_ACTION", default_value_t = 1000)]
    pub rate_per_action: u32,

    /// Requests a second the webhook URLs take from one IP address (429 beyond); 0 for no limit.
    #[arg(long, env = "PRECALL_RATE_PER_SOURCE", default_value_t = 2000)]
    pub rate_per_source: u32,

    /// Seconds' worth of requests a sender may send at once above its rate.
    #[arg(long, env = "PRECALL_RATE_BURST_SECS", default_value_t = 2)]
    pub rate_burst_secs: u32,

    /// Requests a second one IP address may send with an unknown webhook URL or runtime
    /// token (each costs a lookup; 429 beyond, before looking); 0 for no limit.
    #[arg(long, env = "PRECALL_RATE_FAILED_LOOKUPS", default_value_t = 50)]
    pub rate_failed_lookups: u32,
    /// Days deliveries are kept (and the per-minute counts of requests refused without a
    /// valid key); older ones are swept.
    #[arg(long, env = "PRECALL_DELIVERY_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub delivery_retention_days: u64,

    /// Days calls are kept, with their traces; older ones are swept.
    #[arg(long, env = "PRECALL_CALL_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub call_retention_days: u64,

    /// Connections served at once; more wait in the listen queue, and idle ones are closed
    /// to make room (default: the open-file limit less 256 for the database and the rest).
    #[arg(long, env = "PRECALL_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Largest request line and headers, in bytes (431 beyond).
    #[arg(long, env = "PRECALL_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..=1 << 20))]
    pub max_header_bytes: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage agents and their versioned configuration.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage Webhook actions: add them to the draft, rotate their keys, require signatures.
    #[command(subcommand)]
    Action(ActionCommand),
    /// Manage an agent's variable schema (in its draft).
    #[command(subcommand)]
    Variable(VariableCommand),
    /// Manage runtime tokens for the call runtime.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage admin API tokens for the management API.
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCommand),
    /// Connect voice platforms (Retell, Synthflow, Vapi, Telnyx, Twilio) to an agent.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Create one agent per pre-call example, imported from its document in `examples/`, with
    /// its webhook URL, API key and a runtime token, and print how to try each.
    Demo {
        /// The webhooks' time wait before fallback, in milliseconds (0 to 10000).
        #[arg(long, default_value_t = 2000)]
        wait_ms: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show the latest requests that reached an agent's webhooks with a valid key, newest
    /// first (requests without one are counted on the console's Deliveries page).
    Deliveries {
        #[arg(long)]
        agent: String,
        /// How many to show, newest first (at most 1 000 000: enough to audit a load test).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent; its version 1, published, has a First Flow that greets callers.
    Create {
        #[arg(long)]
        name: String,
        /// Region for numbers sent without a country code (ISO 3166 code, like US or GB).
        #[arg(long, default_value = "US")]
        region: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print an agent's configuration as a JSON document: the published version (or the one
    /// given, or the draft).
    Export {
        /// The agent's public id.
        agent: String,
        /// A published version's number.
        #[arg(long, conflicts_with = "draft")]
        version: Option<i64>,
        /// The draft instead of a published version.
        #[arg(long)]
        draft: bool,
    },
    /// Make a document (a file, or - for standard input) an agent's draft; with --new, a new
    /// agent's. New Webhook actions get their URL and key at once (shown once).
    Import {
        /// The agent's public id, then the document's file (`-` for standard input); with
        /// --new, the file alone.
        #[arg(required = true, num_args = 1..=2, value_names = ["AGENT", "FILE"])]
        args: Vec<String>,
        /// Create a new agent with this name instead.
        #[arg(long, value_name = "NAME")]
        new: Option<String>,
        /// The new agent's phone region.
        #[arg(long, default_value = "US", requires = "new")]
        region: String,
        /// Publish the imported draft.
        #[arg(long)]
        publish: bool,
        /// The published version's message.
        #[arg(long, default_value = "", requires = "publish")]
        message: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish an agent's draft as its next version, once it passes every check.
    Publish {
        agent: String,
        #[arg(long, default_value = "")]
        message: String,
        #[arg(long)]
        json: bool,
    },
    /// List an agent's published versions, newest first.
    Versions {
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a published version's document the agent's draft again.
    Restore { agent: String, version: i64 },
    /// Throw the draft's changes away: the draft becomes the published version again.
    Discard { agent: String },
    /// What the draft changes against the published version, in words, and what would stop
    /// it from being published.
    Diff {
        agent: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Add a Webhook pre-call action to the draft; prints its URL and API key once. Its URL
    /// works at once; calls wait for it once the draft is published (--publish does).
    CreateWebhook {
        /// The agent's public id.
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "Custom Webhook")]
        name: String,
        /// Time wait before fallback, in milliseconds (0 to 10000).
        #[arg(long, default_value_t = 2000)]
        wait_ms: i64,
        /// How long received data stays usable, in seconds.
        #[arg(long, default_value_t = 600)]
        ttl_secs: i64,
        /// Publish the draft afterwards.
        #[arg(long)]
        publish: bool,
        #[arg(long)]
        json: bool,
    },
    /// Change a Webhook action: its settings in the draft, or whether requests must be
    /// signed (at once: signing belongs to its URL, not to a version).
    UpdateWebhook {
        #[arg(long)]
        agent: String,
        /// The action's key, printed when it was created.
        #[arg(long)]
        action: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        wait_ms: Option<i64>,
        #[arg(long)]
        ttl_secs: Option<i64>,
        /// Require Standard Webhooks signatures; turned on for the first time, prints the
        /// signing secret once.
        #[arg(long, value_enum)]
        signing: Option<OnOff>,
        /// Replace the signing secret (printed once); the old one stops working at once.
        #[arg(long)]
        new_signing_secret: bool,
        /// Publish the draft afterwards.
        #[arg(long)]
        publish: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make a new API key for a Webhook action (printed once); the old key keeps working for
    /// the grace period, then stops.
    RotateKey {
        #[arg(long)]
        agent: String,
        /// The action's key, printed when it was created.
        #[arg(long)]
        action: String,
        /// How long the old key keeps working, in seconds (0 to 604800; 0 stops it at once).
        #[arg(long, default_value_t = 0)]
        grace_secs: i64,
        #[arg(long)]
        json: bool,
    },
}

/// A setting turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum VariableCommand {
    /// Declare a variable in the draft (or change its declaration).
    Set {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        name: String,
        /// string, number, boolean or list.
        #[arg(long = "type")]
        ty: String,
        /// Default value, as JSON (`0`, `"normal"`, `false`) or plain text for strings.
        #[arg(long)]
        default: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Publish the draft afterwards.
        #[arg(long)]
        publish: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a runtime token for one agent; prints it once.
    Create {
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "runtime")]
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Make an admin API token for the management API; prints it once. It can do what its
    /// admin can do in the console (read-only: only read).
    Create {
        /// The admin it acts for (needed when there is more than one).
        #[arg(long)]
        admin: Option<String>,
        #[arg(long)]
        name: String,
        /// Read only: GET requests.
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// List admin API tokens (never the tokens themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin API token: it stops working at once.
    Revoke {
        /// The token's id, as `list` shows it.
        id: i64,
    },
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: String,
    pub database_url: DatabaseUrl,
    pub public_url: Option<String>,
    pub body_limit: usize,
    pub sweep_interval: Duration,
    /// Bytes of write-ahead log past which the writer makes it start over.
    pub wal_restart_bytes: u64,
    /// When the writer commits the webhooks it acknowledged from its journal.
    pub pacing: crate::store::writer::Pacing,
    pub shutdown_grace: Duration,
    /// How long an admin's session lasts.
    pub session_ttl: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Ingest rates per webhook and per source address.
    pub rates: crate::http::rate::Rates,
    /// How long deliveries and refusal counts are kept.
    pub delivery_retention: Duration,
    /// How long calls are kept.
    pub call_retention: Duration,
    /// Connections served at once; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// Largest request line and headers, in bytes.
    pub max_header_bytes: u32,
}

/// A database URL. A PostgreSQL URL may carry a password: `Debug` shows `***` instead.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // scheme://user:password@host… → scheme://user:***@host…
        let url = &self.0;
        let shown = url
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| {
                let at = start + url[start..].find('@')?;
                let colon = start + url[start..at].find(':')?;
                Some(format!("{}***{}", &url[..=colon], &url[at..]))
            })
            .unwrap_or_else(|| url.clone());
        f.debug_tuple("DatabaseUrl").field(&shown).finish()
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Settings {
    pub fn from_cli(cli: &Cli) -> Self {
        Self {
            bind: cli.serve.bind.clone(),
            database_url: cli.database_url.clone(),
            public_url: cli.public_url.clone(),
            body_limit: cli.serve.body_limit,
            sweep_interval: Duration::from_secs(cli.serve.sweep_interval_secs.max(1)),
            wal_restart_bytes: cli.serve.wal_restart_mib.clamp(1, 1 << 20) << 20,
            pacing: crate::store::writer::Pacing {
                commit_every: Duration::from_millis(cli.serve.commit_every_ms.min(600_000)),
                commit_idle: Duration::from_millis(cli.serve.commit_idle_ms.clamp(1, 600_000)),
            },
            shutdown_grace: Duration::from_secs(cli.serve.shutdown_grace_secs),
            session_ttl: Duration::from_secs(cli.serve.session_ttl_secs),
            header_timeout: Duration::from_secs(cli.serve.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(cli.serve.body_timeout_secs.max(1)),
            rates: crate::http::rate::Rates {
                per_action: cli.serve.rate_per_action,
                per_source: cli.serve.rate_per_source,
                failed_lookups: cli.serve.rate_failed_lookups,
                burst_secs: cli.serve.rate_burst_secs.max(1),
            },
            delivery_retention: DAY * cli.serve.delivery_retention_days as u32,
            call_retention: DAY * cli.serve.call_retention_days as u32,
            max_connections: cli
                .serve
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_header_bytes: cli.serve.max_header_bytes,
        }
    }

    /// Defaults for a server on `database_url`, listening on an ephemeral local port.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            bind: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            public_url: None,
            body_limit: 64 * 1024,
            sweep_interval: Duration::from_secs(30),
            wal_restart_bytes: 256 << 20,
            pacing: crate::store::writer::Pacing::default(),
            shutdown_grace: Duration::from_secs(5),
            session_ttl: Duration::from_secs(12 * 3600),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            rates: crate::http::rate::Rates {
                per_action: 1000,
                per_source: 2000,
                failed_lookups: 50,
                burst_secs: 2,
            },
            delivery_retention: DAY * 7,
            call_retention: DAY * 90,
            max_connections: None,
            max_header_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Connect a voice platform to an agent: prints the connection's id and the URL to paste
    /// into the platform.
    Create {
        /// The agent's public id.
        #[arg(long)]
        agent: String,
        /// retell, synthflow, vapi, telnyx or twilio.
        #[arg(long)]
        platform: String,
        /// The platform's secret that verifies its requests (Retell API key, Synthflow
        /// webhook secret, Vapi server or HMAC secret, Telnyx public key, Twilio auth token);
        /// read from PRECALL_CONNECTION_SECRET when left out.
        #[arg(long, env = "PRECALL_CONNECTION_SECRET", hide_env_values = true)]
        secret: String,
        /// Vapi only: secret (X-Vapi-Secret, the default) or hmac.
        #[arg(long)]
        scheme: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// The platform agent (Retell agent id, Synthflow model id, Vapi assistant id) that
        /// takes calls no pre-call Filter routed, and those routed to a flow with no agent of
        /// its own (--flow-agent).
        #[arg(long)]
        default_agent: Option<String>,
        /// A flow's platform agent, as FLOW_KEY=AGENT_ID (repeat for each flow).
        #[arg(long = "flow-agent", value_name = "FLOW_KEY=AGENT_ID")]
        flow_agents: Vec<String>,
        /// Telnyx only: the assistant's dynamic-variables webhook timeout in ms (1500 by
        /// default).
        #[arg(long)]
        deadline_ms: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// List connections (an agent's, or all).
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a connection: its URL stops answering at once.
    Delete { id: i64 },
}

#[cfg(test)]
mod tests {
    use super::DatabaseUrl;

    #[test]
    fn a_database_urls_password_stays_out_of_debug_output() {
        let url: DatabaseUrl = "postgres://precall:s3cret@db.example:5432/precall".into();
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://precall:***@db.example:5432/precall"),
            "{shown}"
        );
        assert_eq!(&*url, "postgres://precall:s3cret@db.example:5432/precall");
        let plain: DatabaseUrl = "sqlite://precall.db".into();
        assert!(format!("{plain:?}").contains("sqlite://precall.db"));
    }
}
