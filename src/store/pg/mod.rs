//! The store on PostgreSQL: a database shared by every server of a cluster.
//!
//! Most store functions run the same statements on both engines (see [`super::sql`]); what
//! is PostgreSQL's own lives here. Reads and configuration writes share one pool;
//! configuration writes take one advisory lock for their transaction (see
//! [`super::begin_write`]).

pub mod batch;
pub mod listener;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// A PostgreSQL database: one pool.
#[derive(Clone)]
pub struct PgDb {
    pub pool: PgPool,
}

/// The advisory lock every configuration write holds for its transaction (see
/// [`super::begin_write`]): "precall" in ASCII.
pub const CONFIG_WRITE_LOCK: i64 = 0x0070_7265_6361_6c6c;

/// How long a connection may wait for a lock before its statement fails.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl PgDb {
    /// Connects to the database at `url` and applies `migrations/postgres`.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)?
            .options([("lock_timeout", format!("{}ms", LOCK_TIMEOUT.as_millis()))])
            .disable_statement_logging();
        let connections = std::thread::available_parallelism().map_or(4, |n| n.get() * 4) as u32;
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(8))
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// `SELECT 1`: is the database reachable?
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
