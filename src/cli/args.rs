//! The command line's grammar: every command and option, with the help clap prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Log format: text (readable) or json (one object per line). Overrides the configuration.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the JWKS and discovery documents and keep the keys.
    Serve {
        /// Serve HTTPS with a self-signed certificate kept in the data dir (made on first use),
        /// for trying TLS locally. Production sets tls_cert_file and tls_key_file instead.
        #[arg(long)]
        tls_self_signed: bool,
    },
    /// Create the installation the settings point at (data dir, key-encryption key,
    /// database, the first keys), as `serve` does on its first start, and exit. Every other
    /// command needs an installation and creates none.
    Init,
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
    /// Inspect, rotate and revoke signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Issue, verify and revoke tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Copy the database with SQLite's online backup API (consistent while the daemon runs).
    /// The key-encryption key is not in it: back that file up separately.
    Backup {
        /// Where to write the copy (must not exist).
        path: PathBuf,
    },
    /// Move the database: `db copy --to postgresql://…` copies it into an empty PostgreSQL
    /// database, for running a cluster.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Manage the key-encryption key.
    Kek {
        #[command(subcommand)]
        command: KekCommand,
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
    /// Trust external issuers whose workloads exchange their own tokens for keyturn's
    /// (workload identity federation: jwt-bearer and token exchange at /oauth/token).
    Issuer {
        #[command(subcommand)]
        command: IssuerCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Trust an issuer (or change its audience or keys' URL).
    Trust {
        /// Its issuer URL, as its tokens' iss says (https; http only on a loopback address).
        #[arg(long)]
        issuer: String,
        /// The audience its tokens must name to be exchanged here.
        #[arg(long)]
        audience: String,
        /// Where its public keys are (default: read from its discovery document now).
        #[arg(long, value_name = "URL")]
        jwks_uri: Option<String>,
    },
    /// Let a subject of a trusted issuer act as a client.
    Map {
        #[arg(long)]
        issuer: String,
        /// The sub its tokens carry (a Kubernetes service account:
        /// system:serviceaccount:<namespace>:<name>).
        #[arg(long, allow_hyphen_values = true)]
        subject: String,
        /// The client_id it acts as.
        #[arg(long = "client", allow_hyphen_values = true)]
        client_id: String,
    },
    /// Forget what a subject acts as.
    Unmap {
        #[arg(long)]
        issuer: String,
        #[arg(long, allow_hyphen_values = true)]
        subject: String,
    },
    /// List trusted issuers and their subjects.
    List,
    /// Stop trusting an issuer (its subjects' mappings go with it).
    Forget {
        #[arg(long)]
        issuer: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a one-time link (valid 15 minutes) that creates an administrator.
    Add,
    /// Set an administrator's password, read from standard input; ends their sessions.
    Passwd {
        /// The administrator's name.
        name: String,
    },
    /// Remove an administrator (never the last one); their sessions end at once.
    Remove {
        /// The administrator's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key with its state, times and next planned transition.
    List,
    /// Rotate now: gracefully (as soon as the publish lead allows) or in an emergency.
    Rotate {
        /// The algorithm (default: the first configured).
        #[arg(long)]
        alg: Option<String>,
        /// Activate a fresh key at once (verifiers with a cached JWKS may fail until they refetch).
        #[arg(long)]
        emergency: bool,
    },
    /// Revoke a key: it leaves the JWKS at once and its tokens count as revoked.
    Revoke {
        /// The kid (base64url, so it may start with '-').
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an access token and print it.
    Issue {
        #[arg(long)]
        sub: String,
        /// An audience (repeat for several).
        #[arg(long = "aud", required = true)]
        aud: Vec<String>,
        /// Lifetime, like 10m.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        /// Custom claims as a JSON object.
        #[arg(long)]
        claims: Option<String>,
    },
    /// Introspect a token: print the answer; exit 0 if active, 1 if not.
    Verify { token: String },
    /// Revoke by jti, subject or client.
    Revoke {
        #[arg(long, group = "target")]
        jti: Option<String>,
        #[arg(long, group = "target")]
        sub: Option<String>,
        #[arg(long = "client", group = "target")]
        client_id: Option<String>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the configured SQLite database into an empty PostgreSQL database (stop the
    /// daemon first, so nothing is written meanwhile). Keys stay sealed under the same
    /// key-encryption key: give the cluster's nodes this kek_file.
    Copy {
        /// The PostgreSQL database to copy into, `postgresql://user:password@host:port/db`.
        #[arg(long)]
        to: String,
    },
    /// Serve this SQLite database again after `db copy` marked it as copied away (abandoning
    /// the copy: never serve both).
    Reuse,
}

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Re-seal every private key under a new key-encryption key and replace the key file.
    /// Stop every keyturn process on the data dir first.
    Rotate,
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
        /// Every token request of the client must come with a DPoP proof (RFC 9449): its
        /// tokens are always bound to its key.
        #[arg(long)]
        require_dpop: bool,
        /// Authenticate with private_key_jwt instead of a secret, with the public keys (a
        /// JWKS) in this file; no secret is made.
        #[arg(long, value_name = "FILE", conflicts_with = "jwks_uri")]
        jwks_file: Option<PathBuf>,
        /// Authenticate with private_key_jwt instead of a secret, with the public keys the
        /// client publishes at this URL (https; http only on a loopback address).
        #[arg(long, value_name = "URL", conflicts_with = "federated")]
        jwks_uri: Option<String>,
        /// Make no credential at all: only workloads of a trusted issuer mapped to the client
        /// (`keyturn issuer map`) get its tokens.
        #[arg(long, conflicts_with = "jwks_file")]
        federated: bool,
    },
    /// List clients.
    List,
    /// Disable a client: it can no longer authenticate and its tokens are revoked.
    Disable {
        /// The client_id.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// List API keys (never their secrets).
    List,
    /// Revoke an API key by id (base64url, so it may start with '-').
    Revoke {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
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
