//! The command line. Exit codes: 0 success (for `token verify`: the token is active);
//! 1 start-up refused, a runtime failure, or (`token verify`) an inactive token;
//! 2 bad usage, invalid configuration or invalid input.

use std::process::ExitCode;

use clap::Parser;

use crate::clock::Clock;
use crate::config::{self, Config, DatabaseUrl, Inputs, LogFormat};

mod args;
mod issuers;

pub use args::{
    AdminCommand, ApikeyCommand, Cli, ClientCommand, Command, ConfigCommand, DbCommand, IssuerCommand, KekCommand,
    KeysCommand, TokenCommand,
};

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut inputs = Inputs::from_process(cli.config.clone());
    if let Some(format) = &cli.log_format {
        // The command line is the last layer: it wins over file and environment.
        inputs.env.retain(|(k, _)| k != "KEYTURN_LOG_FORMAT");
        inputs.env.push(("KEYTURN_LOG_FORMAT".into(), format.clone()));
    }
    if let Command::Serve { tls_self_signed } = cli.command {
        return serve(&inputs, tls_self_signed);
    }
    // Every other command is one short conversation with the database, on a runtime of
    // one thread (the store's own threads do the SQLite work).
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(command(cli.command, &inputs)),
        Err(e) => {
            eprintln!("keyturn: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs one command other than `serve`.
async fn command(command: Command, inputs: &Inputs) -> ExitCode {
    match command {
        Command::Config { command: ConfigCommand::Check } => config_check(inputs).await,
        Command::Serve { .. } => ExitCode::from(2),
        Command::Init => init(inputs).await,
        Command::Db { command: DbCommand::Reuse } => {
            let config = match load_or_exit(inputs) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::service::reuse_copied_database(&config, &Clock::system()).await {
                Ok(Some(to)) => {
                    println!("this database is served again; the copy made to {to} is abandoned: do not serve it");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!("this database was not marked as copied away: nothing to do");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keyturn: {e}");
                    ExitCode::from(1)
                }
            }
        }
        other => {
            let service = match open_service(inputs).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let code = on_service(other, &service).await;
            service.close().await;
            code
        }
    }
}

/// Runs a command on the installation, opened for it (and closed by the caller).
async fn on_service(command: Command, service: &crate::service::Keyturn) -> ExitCode {
    match command {
        Command::Apikey { command: ApikeyCommand::Create { role, name } } => apikey_create(service, &role, &name).await,
        Command::Apikey { command } => {
            with_service(service, async |s, actor| match command {
                ApikeyCommand::List => s.clients().list_api_keys().await.map(|keys| {
                    for k in keys {
                        let state = k.revoked_at.map(|r| format!("revoked {r}")).unwrap_or_else(|| "active".into());
                        println!("{}\t{}\t{}\t{}\t{state}", k.id, k.name, k.role, k.created_at);
                    }
                }),
                ApikeyCommand::Revoke { id } => {
                    s.clients().revoke_api_key(&id, &actor).await.map(|()| println!("revoked API key {id}"))
                }
                ApikeyCommand::Create { .. } => Ok(()),
            })
            .await
        }
        Command::Keys { command } => with_service(service, async |s, actor| keys(s, &actor, command).await).await,
        Command::Token { command } => token(service, command).await,
        Command::Backup { path } => {
            with_service(service, async |s, _| {
                s.backup_to(&path).await?;
                println!("backed up to {}", path.display());
                eprintln!(
                    "the key-encryption key ({}) is not in the backup: keep a copy of it apart",
                    s.config().kek_file.display()
                );
                Ok(())
            })
            .await
        }
        Command::Db { command: DbCommand::Copy { to } } => {
            with_service(service, async |s, actor| {
                let url = DatabaseUrl::parse(to.trim()).map_err(|e| crate::error::Error::Invalid(vec![e]))?;
                let counts = s.copy_database_to(&url, &actor).await?;
                for (table, n) in counts {
                    println!("{table}\t{n}");
                }
                eprintln!(
                    "copied into {}; start every node with database_url set to it and kek_file set to {}",
                    url.shown,
                    s.config().kek_file.display()
                );
                Ok(())
            })
            .await
        }
        Command::Kek { command: KekCommand::Rotate } => {
            with_service(service, async |s, actor| {
                s.keys().rotate_kek(&actor).await?;
                println!(
                    "re-sealed every private key under a new key-encryption key in {}",
                    s.config().kek_file.display()
                );
                Ok(())
            })
            .await
        }
        Command::Admin { command: AdminCommand::Passwd { name } } => {
            with_service(service, async |s, actor| {
                let mut password = String::new();
                std::io::stdin()
                    .read_line(&mut password)
                    .map_err(|e| crate::error::Error::Invalid(vec![format!("reading the password: {e}")]))?;
                let password = zeroize::Zeroizing::new(password.trim_end_matches(['\r', '\n']).to_owned());
                s.admins().set_password(&name, &password, &actor).await?;
                println!("password of {name} set; their sessions are ended");
                Ok(())
            })
            .await
        }
        Command::Admin { command: AdminCommand::Remove { name } } => {
            with_service(service, async |s, actor| {
                s.admins().remove_admin(&name, &actor).await?;
                println!("administrator {name} removed; their sessions are ended");
                Ok(())
            })
            .await
        }
        Command::Client { command } => client(service, command).await,
        Command::Issuer { command } => exit_code(issuers::run(service, command).await),
        Command::Admin { command: AdminCommand::Add } => admin_add(service).await,
        Command::Config { .. } | Command::Serve { .. } | Command::Init | Command::Db { command: DbCommand::Reuse } => {
            ExitCode::from(2)
        }
    }
}

/// Opens the installation for a one-off command (never creating one). Works beside a
/// running daemon: SQLite serializes the writers, and the daemon picks the change up within
/// a second.
async fn open_service(inputs: &Inputs) -> Result<crate::service::Keyturn, ExitCode> {
    let config = load_or_exit(inputs)?;
    crate::service::Keyturn::open_existing(config, Clock::system()).await.map_err(|e| {
        eprintln!("keyturn: {e}");
        ExitCode::from(1)
    })
}

/// `keyturn init`: creates the installation (or finds it there) and says where it is.
async fn init(inputs: &Inputs) -> ExitCode {
    let config = match load_or_exit(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let existed = crate::service::installed(&config).await;
    match crate::service::Keyturn::open(config, Clock::system()).await {
        Ok(service) => {
            let what = if existed { "already initialized" } else { "initialized" };
            println!(
                "{what}: database {}, key-encryption key {}",
                service.database_shown(),
                service.config().kek_file.display()
            );
            service.close().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

async fn apikey_create(service: &crate::service::Keyturn, role: &str, name: &str) -> ExitCode {
    let Ok(role) = role.parse() else {
        return ExitCode::from(2);
    };
    match service.clients().create_api_key(role, name, &crate::service::Actor::cli()).await {
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

async fn config_check(inputs: &Inputs) -> ExitCode {
    let config = match load_or_exit(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        eprintln!("keyturn: warning: {w}");
    }
    // The timing settings as they are in force: a value stored through the dashboard or the
    // API applies where the configuration pins none.
    let stored = match crate::service::policy::stored_settings(&config).await {
        Ok(stored) => stored,
        Err(e) => {
            eprintln!("keyturn: warning: the stored settings could not be read ({e}): shown as if none were stored");
            None
        }
    };
    let in_force = crate::service::policy::in_force(&config, stored.as_ref());
    print!(
        "{}",
        config.render_with(|name| {
            use crate::service::policy::InForce;
            let (_, value, from) = in_force.iter().find(|(n, _, _)| *n == name)?;
            let source = match from {
                InForce::Configuration => return None,
                InForce::Stored => "stored setting (dashboard or PUT /api/v1/schedule)",
                InForce::Default if stored.is_none() => "default (no database yet)",
                InForce::Default => "default",
            };
            Some((format!("\"{value}\""), source.to_owned()))
        })
    );
    match crate::service::kek::check_installation(&config).await {
        Ok(line) => println!("# {line}"),
        Err(e) => {
            eprintln!("keyturn: {e}");
            eprintln!("keyturn: the configuration is not usable as it stands");
            return ExitCode::from(2);
        }
    }
    match crate::service::check_key_custody(&config).await {
        Ok(Some(line)) => println!("# {line}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("keyturn: {e}");
            eprintln!("keyturn: the configuration is not usable as it stands");
            return ExitCode::from(2);
        }
    }
    println!("# configuration is valid");
    ExitCode::SUCCESS
}

fn serve(inputs: &Inputs, tls_self_signed: bool) -> ExitCode {
    let mut config = match load_or_exit(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if tls_self_signed && config.tls().is_none() {
        match crate::datadir::self_signed_tls(&config) {
            Ok(paths) => {
                if config.sources.get("issuer") == Some(&config::Source::Default) {
                    config.issuer = format!("https://{}", config.socket_text());
                }
                (config.tls_cert_file, config.tls_key_file) = (Some(paths.0), Some(paths.1));
            }
            Err(e) => {
                eprintln!("keyturn: {e}");
                return ExitCode::from(1);
            }
        }
    }
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
        "{level},rocket=off,_=off,hyper=warn,tokio_cron_scheduler=warn,cryptoki=off",
        level = config.log_level.as_str()
    ));
    // cryptoki logs, as errors, every mechanism of a token's list it has no name for: noise
    // on every start with a PKCS#11 token; what fails reaches keyturn as an error and is
    // logged by it.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Rocket's generated route code logs every guard refusal (a signed-out visitor, a wrong
    // API key) as a warning, under the route module's path plus `::_`: those are ordinary
    // answers, each already in the request log line, so they are not logged again.
    let not_rocket_codegen = tracing_subscriber::filter::filter_fn(|m| !m.target().ends_with("::_"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let registry = tracing_subscriber::registry().with(filter).with(not_rocket_codegen);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false).with_ansi(ansi);
    let _ = match config.log_format {
        LogFormat::Json => registry.with(layer.json()).try_init(),
        LogFormat::Text => registry.with(layer).try_init(),
    };
    guard
}

async fn client(service: &crate::service::Keyturn, command: ClientCommand) -> ExitCode {
    let actor = crate::service::Actor::cli();
    let result = match command {
        ClientCommand::Create { name, audiences, scopes, max_ttl, require_dpop, jwks_file, jwks_uri, federated } => {
            let max_ttl = match max_ttl.as_deref().map(crate::duration::parse_duration).transpose() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("keyturn: --max-ttl: {e}");
                    return ExitCode::from(2);
                }
            };
            use crate::service::clients::NewCredential;
            let credential = match (jwks_file, jwks_uri) {
                (Some(path), _) => match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}")))
                {
                    Ok(set) => NewCredential::Jwks(set),
                    Err(e) => {
                        eprintln!("keyturn: --jwks-file {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
                (None, Some(url)) => NewCredential::JwksUri(url),
                (None, None) if federated => NewCredential::Federated,
                (None, None) => NewCredential::Secret,
            };
            let new = crate::service::clients::NewClient {
                name,
                scopes,
                audiences,
                max_ttl,
                dpop_required: require_dpop,
                credential,
            };
            service.clients().create_client(&new, &actor).await.map(|(view, secret)| {
                println!("client_id={}", view.client_id);
                match secret {
                    Some(secret) => {
                        eprintln!("created client '{}'; its secret is shown once:", view.name);
                        println!("client_secret={}", secret.as_str());
                    }
                    None if federated => eprintln!(
                        "created client '{}' with no credential; map a workload to it with `keyturn issuer map`",
                        view.name
                    ),
                    None => eprintln!("created client '{}'; it authenticates with private_key_jwt", view.name),
                }
            })
        }
        ClientCommand::List => service.clients().list_clients().await.map(|clients| {
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
        ClientCommand::Disable { client_id } => service.clients().disable_client(&client_id, &actor).await.map(|c| {
            println!("disabled {}; its tokens are revoked", c.client_id);
        }),
    };
    exit_code(result)
}

async fn admin_add(service: &crate::service::Keyturn) -> ExitCode {
    match service.admins().create_setup_link(&crate::service::Actor::cli()).await {
        Ok(token) => {
            eprintln!("open this one-time link within 15 minutes to create an administrator:");
            println!("{}", service.admins().setup_url(&token));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `f` on the opened service and maps its result to an exit code.
async fn with_service(
    service: &crate::service::Keyturn,
    f: impl AsyncFnOnce(&crate::service::Keyturn, crate::service::Actor) -> crate::error::Result<()>,
) -> ExitCode {
    exit_code(f(service, crate::service::Actor::cli()).await)
}

fn exit_code(result: crate::error::Result<()>) -> ExitCode {
    use crate::error::Error as E;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (E::Invalid(_) | E::NotFound(_) | E::Conflict(_) | E::AlgorithmNotConfigured(_))) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_alg(alg: Option<&str>) -> crate::error::Result<Option<crate::keys::Algorithm>> {
    alg.map(|a| a.parse().map_err(|e: crate::keys::UnknownAlgorithm| crate::error::Error::Invalid(vec![e.to_string()])))
        .transpose()
}

async fn keys(
    s: &crate::service::Keyturn,
    actor: &crate::service::Actor,
    command: KeysCommand,
) -> crate::error::Result<()> {
    use crate::service::rotation::RotateMode;
    match command {
        KeysCommand::List => {
            for k in s.keys().list_keys().await? {
                let next = k
                    .next
                    .map(|n| format!("{} {}", n.event, n.at.map(crate::clock::rfc3339).unwrap_or_else(|| "-".into())))
                    .unwrap_or_else(|| "-".into());
                let published = crate::clock::rfc3339(k.published_at);
                println!("{}\t{}\t{}\tpublished {published}\tnext {next}", k.kid, k.alg, k.state.as_str());
            }
            Ok(())
        }
        KeysCommand::Rotate { alg, emergency } => {
            let mode = if emergency { RotateMode::Emergency } else { RotateMode::Graceful };
            let out = s.keys().rotate(parse_alg(alg.as_deref())?, mode, actor).await?;
            if out.done {
                println!("{} now signs with {}", out.alg, out.activate.unwrap_or_default());
            } else {
                println!(
                    "{} will switch to {} at {} (after its publish lead)",
                    out.alg,
                    out.activate.unwrap_or_default(),
                    out.at
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { kid, reason } => {
            let out = s.keys().revoke_key(&crate::keys::KeyId::new(kid), &reason, actor).await?;
            println!(
                "revoked {} ({}); {} unexpired tokens invalidated; replacement: {}",
                out.kid,
                out.previous_state.as_str(),
                out.live_tokens_invalidated,
                out.replacement.unwrap_or_else(|| "-".into())
            );
            Ok(())
        }
    }
}

async fn token(service: &crate::service::Keyturn, command: TokenCommand) -> ExitCode {
    let actor = crate::service::Actor::cli();
    let result = match command {
        TokenCommand::Issue { sub, aud, ttl, alg, scope, claims } => {
            async {
                let ttl = ttl
                    .as_deref()
                    .map(crate::duration::parse_duration)
                    .transpose()
                    .map_err(|e| crate::error::Error::Invalid(vec![format!("ttl: {e}")]))?;
                let claims = match claims.as_deref().map(serde_json::from_str::<serde_json::Value>) {
                    None => serde_json::Map::new(),
                    Some(Ok(serde_json::Value::Object(m))) => m,
                    Some(_) => return Err(crate::error::Error::Invalid(vec!["--claims must be a JSON object".into()])),
                };
                let req = crate::service::tokens::IssueRequest {
                    sub,
                    aud,
                    ttl,
                    alg: parse_alg(alg.as_deref())?,
                    scope,
                    client_id: None,
                    claims,
                    ..Default::default()
                };
                let issued = service.tokens().issue_token(&req, &actor).await?;
                println!("{}", issued.access_token);
                Ok(())
            }
            .await
        }
        TokenCommand::Verify { token } => {
            let answer = service.tokens().introspect(token.trim());
            println!("{}", answer.to_json());
            return if answer.active { ExitCode::SUCCESS } else { ExitCode::from(1) };
        }
        TokenCommand::Revoke { jti, sub, client_id, reason } => {
            use crate::service::revocations::RevokeTarget;
            let target = match (jti, sub, client_id) {
                (Some(j), _, _) => Some(RevokeTarget::Jti(j)),
                (_, Some(s), _) => Some(RevokeTarget::Sub(s)),
                (_, _, Some(c)) => Some(RevokeTarget::Client(c)),
                _ => None,
            };
            match target {
                Some(t) => service
                    .revocations()
                    .revoke(&t, &reason, &actor)
                    .await
                    .map(|r| println!("revoked {} {} (feed id {})", r.kind, r.value, r.id)),
                None => Err(crate::error::Error::Invalid(vec!["give one of --jti, --sub or --client".into()])),
            }
        }
    };
    exit_code(result)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn ids_may_start_with_a_hyphen() {
        // Key ids, client ids and API-key ids are base64url: one in 64 starts with '-', and
        // the command line must still take them (the operate test met one by chance).
        for args in [
            &["keyturn", "apikey", "revoke", "-k3yId"][..],
            &["keyturn", "keys", "revoke", "-Uy1uvJ6Rfq", "--reason", "leaked"][..],
            &["keyturn", "client", "disable", "-kc_x"][..],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
