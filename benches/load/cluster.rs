//! `--engine postgres`: two servers on one PostgreSQL database, measured with the same
//! scenarios as the single server on SQLite and against the same echo baseline.
//!
//! The database is `PRECALL_BENCH_DATABASE_URL` if given (an empty database: the run makes
//! its agents there), else a PostgreSQL of the run's own, started from Debian's binaries
//! (`/usr/lib/postgresql/*/bin`) with their default durability and stopped afterwards.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::server::{Server, cli_on};
use super::{
    Agent, Engine, Ledger, Make, Options, Row, Stored, call_start_row, ingest_row, integrity_row,
    wake_up,
};

/// A database to run the cluster on, given rather than started.
pub const DATABASE_ENV: &str = "PRECALL_BENCH_DATABASE_URL";

/// Calls waiting on the second server while their webhooks go to the first, in parallel.
const WAKE_LANES: u64 = 10;

/// The cluster's rows: ingest and call start over both servers (ratios to the baseline),
/// the wake-up of a call on one server by a webhook on the other, and integrity.
pub async fn rows(
    o: &Options,
    baseline: &Server,
    echo: &Make,
    dir: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    debug_assert!(o.engine == Engine::Postgres);
    let own;
    let url = match std::env::var(DATABASE_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            own = Postgres::start()?;
            println!("PostgreSQL {} started for the cluster's rows", own.version);
            own.url.clone()
        }
    };
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)?;
        nodes.push(Server::precall_on(&sub, Some(&url)).await?);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let agent = make_agent(dir, &url, &a.url(), 5_000);

    let (mut acked, mut calls, mut sent, mut refused) = (HashSet::new(), Vec::new(), 0, 0);
    let mut ledger = Ledger {
        acked: &mut acked,
        calls: &mut calls,
        sent: &mut sent,
        refused: &mut refused,
    };
    let both = [a, b];
    let ingest = ingest_row(
        o,
        baseline,
        echo,
        &both,
        &agent,
        "2 servers on PostgreSQL: ingest",
        0.10,
        &mut ledger,
    )
    .await;
    let ingest_rps = ingest.stats.as_ref().map_or(1_000.0, |s| s.rps());
    rows.push(ingest);
    rows.push(
        call_start_row(
            o,
            baseline,
            echo,
            &both,
            &agent,
            ingest_rps,
            "2 servers on PostgreSQL: call start, cached",
            None,
            &mut ledger,
        )
        .await,
    );

    // A call waits on B; its webhook goes to A.
    let (wake, extra, wake_acked, wake_calls) =
        wake_up(b.addr, a.addr, &agent, o.wake_calls, WAKE_LANES).await?;
    ledger.acked.extend(wake_acked.iter().copied());
    *ledger.sent += wake_acked.len() as u64;
    ledger.calls.extend(wake_calls);
    let (p50, p99) = (wake.ms(0.5), wake.ms(0.99));
    rows.push(Row {
        name: format!("PostgreSQL: A's 202 → B's call answer ({})", o.wake_calls),
        ratio: None,
        figure: format!("p99 {p99:.2} ms, p50 {p50:.2} ms"),
        target: "p99 ≤ 10 ms".into(),
        pass: Some(p99 <= 10.0 && wake.errors == 0 && extra["not_woken"] == 0),
        extra,
        stats: Some(wake),
    });

    rows.push(
        integrity_row(
            &Stored::Postgres(&url),
            "PostgreSQL: acknowledged = found",
            &ledger,
        )
        .await?,
    );
    // The servers stop before their database.
    drop(nodes);
    Ok(())
}

/// The fraud-detection agent (see [`super::make_agent`]) on the cluster's database.
fn make_agent(dir: &Path, database_url: &str, url: &str, wait_ms: u64) -> Agent {
    let demo = cli_on(
        dir,
        Some(database_url),
        url,
        &["demo", "--wait-ms", &wait_ms.to_string()],
    );
    super::agent_of_demo(&demo, url)
}

/// A PostgreSQL server of the run's own, on a free port of 127.0.0.1, stopped and removed
/// when dropped.
struct Postgres {
    url: String,
    version: String,
    bin: PathBuf,
    data: PathBuf,
    /// PostgreSQL refuses to run as root: as root, it runs as the `postgres` user.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| {
                anyhow::anyhow!(
                    "--engine postgres needs Debian's PostgreSQL (apt-get install postgresql) \
                     or {DATABASE_ENV}: {e}"
                )
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .ok_or_else(|| anyhow::anyhow!("no initdb under /usr/lib/postgresql/*/bin"))?;
        let version = bin
            .parent()
            .and_then(|v| v.file_name())
            .map_or_else(String::new, |v| v.to_string_lossy().into_owned());
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        // Under target/, unless the postgres user must reach it: then under the temporary
        // directory (as `.ci/postgres` does), rather than opening the clone's parents.
        let dir = if as_postgres {
            tempfile::Builder::new()
                .prefix("precall-bench-postgres-")
                .tempdir()?
        } else {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
                PathBuf::from,
            );
            std::fs::create_dir_all(&target)?;
            tempfile::Builder::new()
                .prefix("bench-postgres-")
                .tempdir_in(target)?
        };
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            version,
            bin,
            data,
            as_postgres,
            _dir: dir,
        };
        run(pg.command("initdb").arg("-D").arg(&pg.data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]))?;
        let socket = pg.data.parent().expect("data has a parent");
        run(pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(socket.join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                socket.display()
            ))
            .arg("start"))?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
