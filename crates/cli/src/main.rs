//! The `adpa` command: the gateway, a config check and a simulated provider.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod default_config;
mod logging;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adpa_gateway::{Gateway, GatewayConfig};
use adpa_llm::Engine;
use adpa_testkit::sim::{FaultScript, SimHandle};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use logging::LogFormat;

/// A resilience gateway for applications that call LLM providers.
#[derive(Debug, Parser)]
#[command(name = "adpa", version, about)]
struct Cli {
    /// Log format on standard error. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the OpenAI-compatible gateway.
    Serve {
        /// Config file (TOML). Without one, providers come from API keys in the
        /// environment, or two simulated providers start on loopback ports.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file without serving it.
    Check {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Describe in which order the route ROUTE tries its targets.
        #[arg(long, value_name = "ROUTE")]
        explain: Option<String>,
    },
    /// Manage client keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Run a simulated OpenAI-compatible provider with scripted faults.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Fault script (TOML). Without one, every request succeeds.
        #[arg(long)]
        faults: Option<PathBuf>,
        /// Name the provider uses in its replies.
        #[arg(long, default_value = "sim")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print a new secret once, and the [[keys]] entry with its hash for the config.
    New {
        /// Name of the key, shown in logs.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve { config, listen } => serve(config.as_deref(), listen).await,
        Command::Check { config, explain } => check(&config, explain.as_deref()),
        Command::Sim {
            listen,
            faults,
            name,
        } => sim(listen, faults.as_deref(), &name).await,
        Command::Key {
            command: KeyCommand::New { name },
        } => new_key(&name),
    }
}

async fn serve(path: Option<&Path>, listen: Option<SocketAddr>) -> Result<ExitCode> {
    // Keeps the simulated providers of the embedded default running while serving.
    let mut _sims = Vec::new();
    let mut config = match path {
        Some(path) => GatewayConfig::from_file(path)?,
        None => {
            let (config, sims) = default_config::build().await?;
            _sims = sims;
            config
        }
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }

    let signal = shutdown_signal()?;
    let gateway = Gateway::start(&config).await?;
    let addr = gateway.addr();
    let routes = gateway.engine().routes();
    tracing::info!(%addr, routes = routes.len(), "gateway started");

    // A closed standard output (the reader went away) must not stop the gateway.
    if let Err(err) = print_banner(addr, &routes) {
        tracing::debug!(error = %err, "cannot print the start banner");
    }

    gateway.serve_until(signal).await?;
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_banner(addr: SocketAddr, routes: &[adpa_llm::RouteInfo]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let example = routes.first().map_or("chat", |route| route.name.as_str());
    writeln!(out, "adpa gateway listening on http://{addr}")?;
    for route in routes {
        writeln!(
            out,
            "  route {:<16} -> {}",
            route.name,
            route.targets.join(", ")
        )?;
    }
    writeln!(out, "try:")?;
    writeln!(
        out,
        "  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{example}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}' -D -"
    )?;
    out.flush()
}

fn new_key(name: &str) -> Result<ExitCode> {
    let (secret, hash) = adpa_gateway::keys::new_secret();
    let name = toml::Value::String(name.to_owned());
    println!("secret (shown only now; give it to the client as its API key):\n  {secret}\n");
    println!("add to the gateway config:\n[[keys]]\nname = {name}\nhash = \"{hash}\"");
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, explain: Option<&str>) -> Result<ExitCode> {
    let config = match GatewayConfig::from_file(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let engine = match Engine::new(&config.engine()) {
        Ok(engine) => engine,
        Err(errors) => {
            eprintln!("{}: {errors}", path.display());
            return Ok(ExitCode::from(2));
        }
    };

    if let Some(route) = explain {
        let Some(text) = engine.explain(route) else {
            let names: Vec<_> = engine.routes().into_iter().map(|r| r.name).collect();
            eprintln!(
                "{}: no route named `{route}`; routes: {}",
                path.display(),
                names.join(", ")
            );
            return Ok(ExitCode::from(2));
        };
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }

    println!(
        "{}: config is valid; listens on {}",
        path.display(),
        config.server.listen
    );
    for route in engine.routes() {
        let kind = if route.implicit { " (implicit)" } else { "" };
        println!(
            "  route {}{kind}: {}",
            route.name,
            route.targets.join(" -> ")
        );
    }
    for warning in engine.warnings() {
        println!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn sim(listen: SocketAddr, faults: Option<&Path>, name: &str) -> Result<ExitCode> {
    let script = match faults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read fault script {}", path.display()))?;
            toml::from_str::<FaultScript>(&text)
                .with_context(|| format!("invalid fault script {}", path.display()))?
        }
        None => FaultScript::default(),
    };
    let signal = shutdown_signal()?;
    let handle = SimHandle::start(name, script, listen)
        .await
        .with_context(|| format!("cannot start the simulated provider on {listen}"))?;
    println!(
        "simulated provider {name} listening; base_url = \"{}\"",
        handle.base_url()
    );
    println!("stats: curl -s http://{}/_sim/stats", handle.addr());

    signal.await;
    handle.stop();
    Ok(ExitCode::SUCCESS)
}

/// Registers for SIGINT (Ctrl-C) and SIGTERM at once, so that a signal that arrives
/// before the returned future is first polled is not lost, and returns a future that
/// completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT; shutting down"),
            _ = terminate.recv() => tracing::info!("received SIGTERM; shutting down"),
        }
    })
}

/// Returns a future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("received Ctrl-C; shutting down");
        }
    })
}
