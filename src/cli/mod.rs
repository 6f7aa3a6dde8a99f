//! The `gambiarra` command: one file per subcommand. `main.rs` parses the command line with
//! [`Cli`] and calls [`run`].

#[cfg(feature = "tools")]
pub(crate) mod bench;
#[cfg(feature = "client")]
pub(crate) mod create;
#[cfg(feature = "client")]
pub(crate) mod delete;
#[cfg(feature = "client")]
pub(crate) mod discover;
#[cfg(feature = "client")]
pub(crate) mod join;
#[cfg(feature = "client")]
pub(crate) mod list;
#[cfg(feature = "tools")]
pub(crate) mod mock_llm;
#[cfg(feature = "client")]
pub(crate) mod monitor;
pub(crate) mod serve;

use std::process::ExitCode;

use argh::FromArgs;

/// Gambiarra: pool the local LLMs on your network behind one OpenAI-compatible URL.
#[derive(FromArgs, Debug)]
#[argh(
    example = "Run a hub:\n  $ gambiarra serve --port 3000",
    note = "Every command takes --help."
)]
pub struct Cli {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    #[cfg(feature = "tools")]
    MockLlm(mock_llm::MockLlmArgs),
    #[cfg(feature = "tools")]
    Bench(bench::BenchArgs),
    #[cfg(feature = "client")]
    Create(create::CreateArgs),
    #[cfg(feature = "client")]
    Delete(delete::DeleteArgs),
    #[cfg(feature = "client")]
    Discover(discover::DiscoverArgs),
    #[cfg(feature = "client")]
    List(list::ListArgs),
    #[cfg(feature = "client")]
    Join(join::JoinArgs),
    #[cfg(feature = "client")]
    Monitor(monitor::MonitorArgs),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    if cli.version {
        println!("gambiarra {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        #[cfg(feature = "tools")]
        Some(Command::MockLlm(args)) => mock_llm::run(args),
        #[cfg(feature = "tools")]
        Some(Command::Bench(args)) => bench::run(args),
        #[cfg(feature = "client")]
        Some(Command::Create(args)) => create::run(args),
        #[cfg(feature = "client")]
        Some(Command::Delete(args)) => delete::run(args),
        #[cfg(feature = "client")]
        Some(Command::Discover(args)) => discover::run(args),
        #[cfg(feature = "client")]
        Some(Command::List(args)) => list::run(args),
        #[cfg(feature = "client")]
        Some(Command::Join(args)) => join::run(args),
        #[cfg(feature = "client")]
        Some(Command::Monitor(args)) => monitor::run(args),
        None => {
            eprintln!("gambiarra: no command given; try `gambiarra --help`");
            ExitCode::from(2)
        }
    }
}

/// Log to stderr at `level` (overridden by `RUST_LOG=error|warn|info|debug|trace`).
pub fn init_logging(level: tracing::Level) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing::Level>().ok())
        .unwrap_or(level);
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The hub URL: `--hub`, else `GAMBIARRA_HUB`, else `http://localhost:3000`.
pub fn hub_url(flag: Option<String>) -> String {
    given_hub(flag).unwrap_or_else(|| DEFAULT_HUB.to_string())
}

#[cfg(feature = "client")]
/// A secret from its flag, else from the environment variable `env` (which keeps it out of
/// `ps` and shell history).
pub fn secret_or_env(flag: Option<String>, env: &str) -> Option<String> {
    flag.or_else(|| std::env::var(env).ok())
        .filter(|s| !s.is_empty())
}

/// Where a hub is when nothing says and none is discovered.
pub const DEFAULT_HUB: &str = "http://localhost:3000";

/// `--hub`, else `GAMBIARRA_HUB`, trimmed; `None` when neither is set.
fn given_hub(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("GAMBIARRA_HUB").ok())
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
}

#[cfg(feature = "client")]
/// The hub when none was given: the one hub mDNS finds on the LAN (said on stderr), an error
/// when there are several, else localhost.
fn discovered_hub(command: &str, rt: &tokio::runtime::Runtime) -> Result<String, ExitCode> {
    let found = rt
        .block_on(crate::mdns::browse(crate::mdns::BROWSE_WAIT))
        .unwrap_or_default();
    match found.as_slice() {
        [] => Ok(DEFAULT_HUB.to_string()),
        [one] => {
            eprintln!(
                "Using the hub found on this network: {} ({})",
                one.url(),
                one.instance
            );
            Ok(one.url())
        }
        several => {
            eprintln!("gambiarra {command}: several hubs on this network; choose one with --hub:");
            for h in several {
                eprintln!("  --hub {}    ({})", h.url(), h.instance);
            }
            Err(ExitCode::from(2))
        }
    }
}

#[cfg(feature = "client")]
/// What every command that talks to a hub starts with: a client for `--hub` (else
/// `GAMBIARRA_HUB`, else the one hub discovered on the LAN, else localhost) and a small
/// runtime. `Err` is the exit code, after the reason was printed as `gambiarra <command>: …`.
pub fn hub_session(
    command: &str,
    hub: Option<String>,
    ca: &[String],
) -> Result<(crate::client::HubClient, tokio::runtime::Runtime), ExitCode> {
    let fail = |e: String| {
        eprintln!("gambiarra {command}: {e}");
        ExitCode::from(2)
    };
    let roots = load_certs(ca, "--ca").map_err(fail)?;
    let rt = runtime_with(Some(1))?;
    let url = match given_hub(hub) {
        Some(url) => url,
        None => discovered_hub(command, &rt)?,
    };
    let client =
        crate::client::HubClient::with_roots(&url, &roots).map_err(|e| fail(e.to_string()))?;
    Ok((client, rt))
}

/// PEM certificates from files (for `--ca`, `--upstream-ca`, `--tls-cert`).
pub fn load_certs(
    files: &[String],
    flag: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut all = Vec::new();
    for file in files {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("{flag} {file}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{flag} {file}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{flag} {file}: no certificate in the file"));
        }
        all.extend(certs);
    }
    Ok(all)
}

/// A multi-threaded tokio runtime, or an explanation of why there is none.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime_with(None)
}

/// A runtime with `threads` workers (default: one per core).
pub fn runtime_with(threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("gambiarra: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// SIGINT (Ctrl+C) or, on Unix, SIGTERM: what every long-running command stops on.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
