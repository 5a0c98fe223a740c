//! The `scriptbox` binary: parses arguments, loads the config, starts telemetry and hands
//! over to the library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use scriptbox::config::Config;
use scriptbox::server::Server;

#[derive(Parser)]
#[command(
    name = "scriptbox",
    version,
    about = "Run untrusted Python tools in a WebAssembly sandbox behind a REST API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: scriptbox::client::Remote,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (default 127.0.0.1:8000).
    Serve(ServeArgs),
    /// Measure warm call latency in-process, over HTTP and with native CPython; print a table.
    Bench(scriptbox::bench::BenchArgs),
    /// Print the SHA-256 to put in a tenant's `api_key_sha256`, for a key read from stdin
    /// (never from the command line, where other users could see it), or for a new random key.
    HashKey {
        /// Make a new random key and print it with its hash.
        #[arg(long)]
        generate: bool,
    },
    /// Client verbs: talk to a running server (--url, --key; see docs/cli.md).
    #[command(flatten)]
    Client(scriptbox::client::Verb),
}

fn hash_key(generate: bool) -> anyhow::Result<()> {
    let key = if generate {
        let key = format!(
            "sbx_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        println!("key:    {key}");
        key
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the key from stdin")?;
        let key = line.trim_end_matches(['\r', '\n']).to_owned();
        anyhow::ensure!(!key.is_empty(), "no key on stdin");
        key
    };
    println!("sha256: {}", scriptbox::tenants::hash_key(&key));
    Ok(())
}

/// Flags override environment variables, which override the config file.
#[derive(Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SCRIPTBOX_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "SCRIPTBOX_BIND")]
    bind: Option<IpAddr>,
    #[arg(long, env = "SCRIPTBOX_PORT")]
    port: Option<u16>,
    #[arg(long, env = "SCRIPTBOX_SCRIPTS_DIR")]
    scripts_dir: Option<PathBuf>,
    #[arg(long, env = "SCRIPTBOX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "SCRIPTBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[arg(long, env = "SCRIPTBOX_ARTIFACTS_DIR")]
    artifacts_dir: Option<PathBuf>,
    /// The store: a `postgres://` URL shared by the nodes of a cluster (default: SQLite in
    /// the data dir). Prefer the environment variable: a URL with a password on the command
    /// line is visible to other users.
    #[arg(long, env = "SCRIPTBOX_STORE", hide_env_values = true)]
    store: Option<String>,
    /// This node's id (default: made once, kept in the data dir).
    #[arg(long, env = "SCRIPTBOX_NODE_ID")]
    node_id: Option<String>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let Some(port) = self.port {
            config.port = port;
        }
        if let Some(dir) = self.scripts_dir {
            config.scripts_dir = dir;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(dir) = self.cache_dir {
            config.cache_dir = dir;
        }
        if let Some(dir) = self.artifacts_dir {
            config.artifacts_dir = dir;
        }
        if let Some(url) = self.store {
            config.store.url = Some(url);
        }
        if let Some(id) = self.node_id {
            config.cluster.node_id = Some(id);
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_telemetry() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SCRIPTBOX_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,cranelift=warn,wasmtime=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight calls");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let server = Server::build(&config).await?;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let tenants = if config.tenants.is_empty() {
        "one keyless local tenant".to_owned()
    } else {
        format!("{} tenants, keys required", config.tenants.len())
    };
    tracing::info!(addr = %listener.local_addr()?, %tenants, "scriptbox listening");
    // Graceful shutdown waits for in-flight requests; a connection that never finishes (a
    // slow client) must not hold the process forever, so the wait is bounded.
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = std::sync::Arc::clone(&stopping);
        async move {
            shutdown_signal().await;
            stopping.notify_one();
        }
    };
    let grace = std::time::Duration::from_millis(config.limits.deadline_ms)
        + std::time::Duration::from_secs(5);
    tokio::select! {
        served = server.run(listener, signal) => served,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_s = grace.as_secs(), "requests still open after the grace period; exiting");
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_telemetry();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Client(verb) => {
            return match scriptbox::client::run(cli.remote, verb).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(failure) => failure.exit(),
            };
        }
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => scriptbox::bench::run(args).await,
        Command::HashKey { generate } => hash_key(generate),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scriptbox: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
