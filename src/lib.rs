//! keyturn: a custodian of JWT signing keys.
//!
//! It generates signing keys, keeps them sealed in SQLite, rotates them without breaking a
//! verifier, and publishes them as a JWKS. `main.rs` only parses the command line
//! ([`cli`]); this crate holds everything else. See ARCHITECTURE.md for the map.

pub mod assertion;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod datadir;
pub mod dpop;
pub mod duration;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod records;
pub mod remote_keys;
pub mod revocation;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use rocket::figment::Figment;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::service::Keyturn;

/// A running keyturn server.
pub struct Server {
    /// The address it actually listens on (port 0 resolved).
    pub address: SocketAddr,
    pub service: Arc<Keyturn>,
    shutdown: rocket::Shutdown,
    scheduler: Option<scheduler::Scheduler>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// `http://host:port` (or `https://` under TLS), for clients.
    pub fn url(&self) -> String {
        let scheme = if self.service.config().tls().is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.clone().notify();
        self.wait().await
    }

    /// Waits until the server stops (on SIGTERM or SIGINT, or a shutdown request), then
    /// stops the scheduler and hands the rotator lease over.
    pub async fn wait(mut self) -> Result<()> {
        let served = (&mut self.task).await;
        if let Some(s) = self.scheduler.take() {
            s.shutdown().await;
        }
        let lease = match self.service.keys().release_lease().await {
            Ok(()) => "handed over".to_owned(),
            Err(e) => format!("not handed over ({e}): it lapses by itself"),
        };
        // One line that says what the shutdown did (the database is closed, and SQLite's WAL
        // checkpointed, when the service is dropped after this).
        tracing::info!(
            lease = %lease,
            "keyturn stopped: no longer listening, requests in flight answered, scheduler stopped, rotator lease {lease}"
        );
        served.map_err(|e| Error::Listen { address: self.address.to_string(), reason: e.to_string() })
    }
}

/// Binds the configured address before anything in the data dir is touched, so a taken
/// port or an unreadable certificate refuses start-up without changing anything.
async fn bind(config: &Config) -> Result<web::serve::Bound> {
    web::serve::Bound::bind(config).await.map_err(|e| Error::Listen {
        address: config.socket_text(),
        reason: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the port is already in use by another process".into()
        } else {
            e.to_string()
        },
    })
}

/// With no administrator yet, logs a one-time link (15 minutes) that creates the first.
async fn announce_setup_link(service: &Arc<Keyturn>) {
    let link = async {
        if service.admins().admin_count().await? > 0 {
            return Ok::<_, Error>(None);
        }
        let token = service.admins().create_setup_link(&service::Actor::system()).await?;
        Ok(Some(service.admins().setup_url(&token)))
    };
    match link.await {
        Ok(Some(url)) => tracing::warn!(
            "no administrator yet: open this one-time link within 15 minutes to create the first one: {url}"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!("could not make a setup link: {e}"),
    }
}

/// The Rocket application: routes, fairings, catchers, limits and the cookie secret. The
/// daemon dispatches requests its own server has read (`web::serve`) to it; it is public so
/// that a test can serve the very same application on Rocket's own server and compare.
pub fn application(service: Arc<Keyturn>, secret: &str) -> rocket::Rocket<rocket::Build> {
    let config = service.config();
    let figment = Figment::from(rocket::Config {
        address: config.address,
        port: config.port,
        log_level: rocket::config::LogLevel::Off,
        cli_colors: false,
        ident: rocket::config::Ident::none(),
        // Rocket would take the client's address from `X-Real-IP`, which anyone can send;
        // `web::source` decides instead, trusting only the configured proxies.
        ip_header: None,
        ..rocket::Config::default()
    })
    .merge(("secret_key", secret))
    .merge((
        "limits",
        rocket::data::Limits::default().limit("json", web::body_limit()).limit("form", web::body_limit()),
    ));
    // Rocket's own TLS is never served (`web::serve` terminates TLS), but knowing it is on
    // makes Rocket mark the cookies it sets `Secure`.
    let figment = match config.tls() {
        Some((cert, key)) => figment.merge(("tls.certs", cert)).merge(("tls.key", key)),
        None => figment,
    };
    web::build(service, figment)
}

/// Opens the service and starts serving it. Returns once the server listens.
pub async fn start(config: Config, clock: Clock) -> Result<Server> {
    let bound = bind(&config).await?;
    // A cookie secret file that exists must be valid before anything is written.
    let kept_secret = match config.secret_key {
        Some(_) => None,
        None => datadir::existing_cookie_secret(&datadir::DataDir::new(&config.data_dir).secret_key)?,
    };
    let service = Keyturn::open(config, clock).await?;
    let service = Arc::new(service);
    let config = service.config();
    let secret: Zeroizing<String> = match &config.secret_key {
        Some(s) => Zeroizing::new(s.expose().to_owned()),
        None => match kept_secret {
            Some(kept) => kept,
            None => datadir::cookie_secret(&service.data_dir().secret_key)?,
        },
    };
    let socket_text = config.socket_text();
    let scheme = if config.tls().is_some() { "https" } else { "http" };
    let rocket = application(service.clone(), &secret)
        .ignite()
        .await
        .map_err(|e| Error::Listen { address: socket_text.clone(), reason: e.to_string() })?;
    // The application answers requests the server (`web::serve`) has read.
    let app = rocket::local::asynchronous::Client::untracked(rocket)
        .await
        .map_err(|e| Error::Listen { address: socket_text.clone(), reason: e.to_string() })?;
    let shutdown = app.rocket().shutdown();
    let address = bound.local_addr().unwrap_or_else(|| SocketAddr::new(config.address, config.port));
    let scheduler = scheduler::Scheduler::start(service.clone()).await.map_err(|e| Error::Listen {
        address: socket_text.clone(),
        reason: format!("the scheduler did not start: {e}"),
    })?;
    let task = tokio::spawn(web::serve::serve(bound, app, service.clone()));
    tracing::info!(url = %format!("{scheme}://{address}"), "keyturn is listening");
    announce_setup_link(&service).await;
    Ok(Server { address, service, shutdown, scheduler: Some(scheduler), task })
}
