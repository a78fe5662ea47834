//! Command-line parsing and dispatch. Configuration is read here, once
//! (flags, with `AEGIS_*` environment variables as fallbacks), and passed down.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use aegis_sdk::{ConfigLoader, Connection, rpc::CallOptions};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{bench, shutdown, up};

/// Aegis: trading services on NATS — run the showcase, services and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "aegis", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the local showcase: NATS, services and the monitor (Ctrl-C stops all).
    Up(up::UpArgs),
    /// Run one service instance (`echo` for now).
    Service(ServiceArgs),
    /// Call a service method through the SDK and print the reply.
    Call(CallArgs),
    /// Benchmarks comparing raw async-nats with the SDK, side by side.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// RPC latency (p50..p99.9) and throughput.
    Rpc(bench::rpc::RpcBenchArgs),
    /// JetStream event publish throughput and latency.
    Events(bench::events::EventsBenchArgs),
}

/// NATS connection flags shared by commands that connect.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "AEGIS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// A TOML configuration file (see the SDK's `config` docs).
    #[arg(long, env = "AEGIS_CONFIG")]
    pub config: Option<PathBuf>,
}

impl NatsArgs {
    /// Connects with file < environment < flags precedence.
    ///
    /// # Errors
    /// Invalid configuration or no reachable server.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let url = self.nats_url.clone();
        let config = ConfigLoader::new()
            .file_opt(self.config.clone())
            .env()
            .set(move |c| c.nats.servers = url.split(',').map(|s| s.trim().to_owned()).collect())
            .load()
            .context("loading the configuration")?;
        Connection::connect(config)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))
    }
}

/// `aegis service`.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Which service to run.
    #[arg(value_parser = ["echo"])]
    pub name: String,
    /// Instance id (unique per process; default: host name + random suffix).
    #[arg(long, env = "AEGIS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Connection flags.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `aegis call`.
#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Service name, e.g. `pricing-service`.
    pub service: String,
    /// Method name, e.g. `get_price`.
    pub method: String,
    /// Request body as JSON.
    #[arg(default_value = "{}")]
    pub body: String,
    /// Call this instance only.
    #[arg(long)]
    pub instance: Option<String>,
    /// Deadline in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Connection flags.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Parses arguments, installs tracing and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AEGIS_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,aegis=info,aegis_sdk=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => {
            up::run(args, shutdown::on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Service(args) => {
            run_service(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => call(args).await,
        Command::Bench { which } => {
            let (report, check) = match which {
                BenchCommand::Rpc(a) => {
                    let check = a.check;
                    (bench::rpc::run(a).await?, check)
                }
                BenchCommand::Events(a) => {
                    let check = a.check;
                    (bench::events::run(a).await?, check)
                }
            };
            Ok(if check && !report.passed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn run_service(args: ServiceArgs) -> anyhow::Result<()> {
    let token = shutdown::on_signals();
    let conn = args.nats.connect().await?;
    let mut builder = conn
        .service("echo-service", env!("CARGO_PKG_VERSION"))
        .description("Echoes its request back; the smallest Aegis service")
        .handler("echo", |body: serde_json::Value| async move { Ok(body) });
    if let Some(id) = &args.instance_id {
        builder = builder.instance_id(id);
    }
    let service = builder.start().await.context("starting echo-service")?;
    println!(
        "echo-service instance {} serving rpc.echo-service.echo (Ctrl-C stops)",
        service.instance_id()
    );
    token.cancelled().await;
    service.shutdown().await.context("stopping echo-service")?;
    conn.drain().await.ok();
    Ok(())
}

async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let body: serde_json::Value = serde_json::from_str(&args.body)
        .with_context(|| format!("the request body is not JSON: {}", args.body))?;
    let conn = args.nats.connect().await?;
    let opts = CallOptions::timeout(Duration::from_millis(args.timeout_ms));
    let rpc = conn.rpc();
    let result = match &args.instance {
        Some(instance) => {
            rpc.call_instance::<_, serde_json::Value>(
                &args.service,
                instance,
                &args.method,
                &body,
                &opts,
            )
            .await
        }
        None => {
            rpc.call_with::<_, serde_json::Value>(&args.service, &args.method, &body, &opts)
                .await
        }
    };
    match result {
        Ok(reply) => {
            println!("{}", serde_json::to_string_pretty(&reply.value)?);
            eprintln!(
                "served by {}",
                reply.instance_id.as_deref().unwrap_or("unknown instance")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            Ok(ExitCode::FAILURE)
        }
    }
}
