//! The two servers under load, as child processes, and what /proc says about them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const PRECALL: &str = env!("CARGO_BIN_EXE_precall");

/// Niceness of the servers under test (the generator runs at 0).
const SERVER_NICE: libc::c_int = 5;

/// A server process and the address it printed.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The first-run setup link the server printed, if it printed one.
    pub setup_link: tokio::sync::watch::Receiver<Option<String>>,
}

impl Server {
    /// The real server, on a fresh database in `dir`, with its defaults for durability. The
    /// ingest rate limits are off: the generator sends ~20 000 webhooks a second from one
    /// address to one webhook, far above the defaults meant for real senders.
    pub async fn precall(dir: &Path) -> anyhow::Result<Self> {
        Self::precall_on(dir, None).await
    }

    /// The real server as [`Server::precall`] does, on the database at `database_url` if
    /// one is given (a node of a cluster on PostgreSQL), else on `dir`'s SQLite file.
    pub async fn precall_on(dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(PRECALL);
        cmd.env_remove("PRECALL_DATABASE_URL");
        if let Some(url) = database_url {
            cmd.env("PRECALL_DATABASE_URL", url);
        }
        Self::start(
            cmd,
            dir,
            &[
                "--bind",
                "127.0.0.1:0",
                "--rate-per-action",
                "0",
                "--rate-per-source",
                "0",
            ],
            "Precall listening on http://",
        )
        .await
    }

    /// The baseline: this same bench binary, serving one echo route.
    pub async fn baseline(dir: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env_remove("PRECALL_DATABASE_URL");
        Self::start(
            cmd,
            dir,
            &["--baseline-server"],
            "Baseline listening on http://",
        )
        .await
    }

    async fn start(
        mut cmd: Command,
        dir: &Path,
        args: &[&str],
        prefix: &str,
    ) -> anyhow::Result<Self> {
        // Servers run at a lower priority than the load generator, so that on a machine
        // shared by both the generator keeps its schedule and what is measured is the
        // server (both servers alike, so ratios stay fair).
        // SAFETY: setpriority is async-signal-safe and touches no memory of ours.
        let nice = std::env::var("SERVER_NICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SERVER_NICE);
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args(args)
            .current_dir(dir)
            .env_remove("PRECALL_PUBLIC_URL")
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or("warn".into()),
            )
            .env(
                "TOKIO_WORKER_THREADS",
                std::env::var("SERVER_THREADS").unwrap_or("2".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("server exited before printing its address"))?;
        let addr = first
            .strip_prefix(prefix)
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {first:?}"))?
            .parse()?;
        let (link_tx, setup_link) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("http")
                    && line.contains("/setup?token=")
                {
                    let _ = link_tx.send(Some(line[at..].trim().to_owned()));
                }
            }
        });
        Ok(Self {
            child,
            addr,
            setup_link,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resident memory now and at its peak, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        process_cpu(self.pid())
    }
}

/// CPU time (user and system) a process has used so far.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Runs the precall binary's administrative commands against `dir`'s database.
pub fn cli(dir: &Path, public_url: &str, args: &[&str]) -> serde_json::Value {
    cli_on(dir, None, public_url, args)
}

/// Runs an administrative command against the database at `database_url` if one is given,
/// else against `dir`'s.
pub fn cli_on(
    dir: &Path,
    database_url: Option<&str>,
    public_url: &str,
    args: &[&str],
) -> serde_json::Value {
    let mut cmd = std::process::Command::new(PRECALL);
    cmd.env_remove("PRECALL_DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("PRECALL_DATABASE_URL", url);
    }
    let out = cmd
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .env("PRECALL_PUBLIC_URL", public_url)
        .output()
        .expect("precall runs");
    assert!(
        out.status.success(),
        "precall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Runs the baseline server: one route that echoes a small JSON body.
pub fn run_baseline() -> anyhow::Result<()> {
    use axum::routing::post;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/echo",
            post(|body: bytes::Bytes| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("Baseline listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
