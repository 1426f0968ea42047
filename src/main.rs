use clap::Parser;
use tracing_subscriber::EnvFilter;

use precall::config::{Cli, Command, Settings};
use precall::startup::{Application, shutdown_signal};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("precall=info")),
        )
        .with_writer(std::io::stderr)
        // A log that cannot be written (stderr a file on a full disk) is dropped: reporting
        // that on stderr too would panic, and kill the thread that logged (the writer's).
        .log_internal_errors(false)
        .init();

    match cli.command {
        None | Some(Command::Serve) => {
            ignore_file_size_signal();
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
            let settings = Settings::from_cli(&cli);
            let app = Application::build(settings).await?;
            println!("Precall listening on http://{}", app.local_addr());
            println!("Webhook URLs start with {}/webhooks/", app.public_url());
            if let Some(link) = app.first_run_link().await? {
                println!("No admin yet: create the first one at {link}");
            }
            app.run_until_stopped(shutdown_signal()).await
        }
        Some(command) => {
            let public_url = cli
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", cli.serve.bind));
            precall::cli::run(command, &cli.database_url, &public_url).await
        }
    }
}

/// A write past the file-size limit (RLIMIT_FSIZE) raises SIGXFSZ, whose default action
/// kills the process. Ignored, the write fails with EFBIG instead: SQLite reports it, the
/// group's requests get 503, and the server goes on once writes succeed again.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: SIG_IGN installs no handler code; a signal's disposition is process-wide, so
    // setting it from any thread is sound.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// mimalloc asks for transparent huge pages for its memory (`madvise`), so that the resident
/// set grows and stays in 2 MiB steps: with them a whole benchmark run peaked at 150-162 MiB,
/// without them at 117.6 MiB, for the same CPU per request. Turned off for the process.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
