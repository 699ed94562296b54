//! The command line. Exit codes: 0 success; 1 start-up refused or a runtime failure;
//! 2 bad usage or invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::clock::Clock;
use crate::config::{self, Config, Inputs, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "keyturn",
    version,
    about = "Custodian of JWT signing keys: generates, rotates and publishes them as a JWKS."
)]
pub struct Cli {
    /// Configuration file (TOML). Default: keyturn.toml in the working directory, if present.
    #[arg(long, global = true, env = "KEYTURN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the JWKS and discovery documents and keep the keys.
    Serve,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage API keys for /api/v1.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage dashboard administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage OAuth clients (client_credentials at /oauth/token).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a one-time link (valid 15 minutes) that creates an administrator.
    Add,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its client_id and secret once (only a hash is stored).
    Create {
        /// A name for the client, shown in lists and the audit log.
        #[arg(long)]
        name: String,
        /// An audience the client may request tokens for (repeat for several).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// A scope the client may request (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Longest lifetime of its tokens, like 10m (default: the maximum token lifetime).
        #[arg(long)]
        max_ttl: Option<String>,
    },
    /// List clients.
    List,
    /// Disable a client: it can no longer authenticate and its tokens are revoked.
    Disable {
        /// The client_id.
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key and print it once on stdout (only its hash is stored).
    Create {
        /// admin (everything), issuer (mint tokens) or verifier (introspect, revocation feed).
        #[arg(long, value_parser = ["admin", "issuer", "verifier"])]
        role: String,
        /// A name for the key, shown in the audit log (letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and exit non-zero if it is invalid.
    Check,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let inputs = Inputs::from_process(cli.config.clone());
    match cli.command {
        Command::Config { command: ConfigCommand::Check } => config_check(&inputs),
        Command::Serve => serve(&inputs),
        Command::Apikey { command: ApikeyCommand::Create { role, name } } => apikey_create(&inputs, &role, &name),
        Command::Client { command } => client(&inputs, command),
        Command::Admin { command: AdminCommand::Add } => admin_add(&inputs),
    }
}

/// Opens the service on the data dir for a one-off command. Works beside a running daemon:
/// SQLite serializes the writers, and the daemon picks the change up within a second.
fn open_service(inputs: &Inputs) -> Result<crate::service::Keyturn, ExitCode> {
    let config = load_or_exit(inputs)?;
    crate::service::Keyturn::open(config, Clock::system()).map_err(|e| {
        eprintln!("keyturn: {e}");
        ExitCode::from(1)
    })
}

fn apikey_create(inputs: &Inputs, role: &str, name: &str) -> ExitCode {
    let service = match open_service(inputs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Ok(role) = role.parse() else {
        return ExitCode::from(2);
    };
    match service.create_api_key(role, name, &crate::service::Actor::cli()) {
        Ok((identity, secret)) => {
            eprintln!("created {} API key '{}' (id {}); it is shown once:", identity.role, identity.name, identity.id);
            println!("{}", secret.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_or_exit(inputs: &Inputs) -> Result<Config, ExitCode> {
    match config::load(inputs) {
        Ok(c) => Ok(c),
        Err(e) => {
            for w in &e.warnings {
                eprintln!("keyturn: warning: {w}");
            }
            eprintln!("keyturn: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn config_check(inputs: &Inputs) -> ExitCode {
    let config = match load_or_exit(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        eprintln!("keyturn: warning: {w}");
    }
    print!("{}", config.render());
    println!("# configuration is valid");
    ExitCode::SUCCESS
}

fn serve(inputs: &Inputs) -> ExitCode {
    let config = match load_or_exit(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _guard = init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let config_format = config.log_format;
    let result = rocket::execute(async move {
        let server = crate::start(config, Clock::system()).await?;
        server.wait().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if config_format == LogFormat::Json {
                tracing::error!("refusing to start: {e}");
            }
            eprintln!("keyturn: refusing to start: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sets up `tracing` with a non-blocking writer, so a slow terminal never slows serving.
/// The guard flushes pending lines when dropped at exit.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},rocket=error,_=error,hyper=warn,tokio_cron_scheduler=warn",
        level = config.log_level.as_str()
    ));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false).with_ansi(ansi);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

fn client(inputs: &Inputs, command: ClientCommand) -> ExitCode {
    let service = match open_service(inputs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let actor = crate::service::Actor::cli();
    let result = match command {
        ClientCommand::Create { name, audiences, scopes, max_ttl } => {
            let max_ttl = match max_ttl.as_deref().map(config::parse_duration).transpose() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("keyturn: --max-ttl: {e}");
                    return ExitCode::from(2);
                }
            };
            let new = crate::service::clients::NewClient { name, scopes, audiences, max_ttl };
            service.create_client(&new, &actor).map(|(view, secret)| {
                eprintln!("created client '{}'; its secret is shown once:", view.name);
                println!("client_id={}", view.client_id);
                println!("client_secret={}", secret.as_str());
            })
        }
        ClientCommand::List => service.list_clients().map(|clients| {
            for c in clients {
                let state = c.disabled_at.map(|d| format!("disabled {d}")).unwrap_or_else(|| "enabled".into());
                println!(
                    "{}\t{}\t{}\taudiences={}\tscopes={}\tmax_ttl={}",
                    c.client_id,
                    c.name,
                    state,
                    c.audiences.join(","),
                    c.scopes.join(","),
                    c.max_ttl
                );
            }
        }),
        ClientCommand::Disable { client_id } => service.disable_client(&client_id, &actor).map(|c| {
            println!("disabled {}; its tokens are revoked", c.client_id);
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (crate::error::Error::Invalid(_) | crate::error::Error::NotFound(_) | crate::error::Error::Conflict(_)),
        ) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

fn admin_add(inputs: &Inputs) -> ExitCode {
    let service = match open_service(inputs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match service.create_setup_link(&crate::service::Actor::cli()) {
        Ok(token) => {
            eprintln!("open this one-time link within 15 minutes to create an administrator:");
            println!("{}", service.setup_url(&token));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}
