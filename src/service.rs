//! The one entry point that routes, the CLI and the scheduler call.
//!
//! `Keyturn` owns the store, the key-encryption key, the clock and the published snapshot.
//! It turns domain decisions (`keys::lifecycle::plan`) into transactions with their audit
//! records, and after each change rebuilds the in-memory snapshot the web layer serves from.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use crate::clock::{Clock, Instant};
use crate::config::{self, Config};
use crate::datadir::{self, DataDir};
use crate::error::{Error, Result};
use crate::keys::generate::{self, PrivateKey, PublicJwk};
use crate::keys::jwks::{self, Document};
use crate::keys::lifecycle::{self, Policy, Transition};
use crate::keys::sealed::Kek;
use crate::keys::signer::SigningKey;
use crate::keys::{Algorithm, KeyId, KeyRecord, KeyState};
use crate::schedule::Schedule;
use crate::store::{self, audit, meta, Store};

/// A label sealed under the KEK at first start, so a replaced KEK file is detected even
/// before any key has been opened.
const KEK_CHECK: &str = "keyturn-kek-check";

/// The actor recorded for changes keyturn makes by itself.
pub const SYSTEM: &str = "system";

/// What the web layer serves: made once per key-set change, shared by reference.
#[derive(Debug)]
pub struct Published {
    /// Every key, oldest first (expired and revoked included; they are not in the JWKS).
    pub keys: Vec<KeyRecord>,
    pub jwks: Document,
    pub openid_configuration: Document,
    pub oauth_metadata: Document,
    signers: BTreeMap<Algorithm, Arc<SigningKey>>,
}

impl Published {
    /// The active key of `alg`, if any.
    pub fn signer(&self, alg: Algorithm) -> Option<&Arc<SigningKey>> {
        self.signers.get(&alg)
    }
}

/// The keyturn service.
pub struct Keyturn {
    config: Arc<Config>,
    clock: Clock,
    store: Store,
    kek: Kek,
    data_dir: DataDir,
    published: RwLock<Arc<Published>>,
}

impl std::fmt::Debug for Keyturn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyturn")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Keyturn {
    /// Opens the data dir and database, checks every stored key against the key-encryption
    /// key, and brings each configured algorithm to one active and one pending key.
    ///
    /// Everything that can refuse is checked before anything is written, so a refusal
    /// leaves the data dir as it was. Blocking: call it off the async runtime.
    pub fn open(config: Config, clock: Clock) -> Result<Keyturn> {
        crate::install_crypto_provider();
        let data_dir = DataDir::new(&config.data_dir);
        data_dir.prepare()?;
        let store = Store::open(&data_dir.database)?;

        // The KEK: an existing database must open with the existing key; a missing key file
        // is created only when nothing was ever sealed.
        let stored_check = store.read_blocking(|c| meta::get(c, KEK_CHECK))?;
        let kek = if config.kek_file.exists() {
            datadir::read_kek(&config.kek_file)?
        } else if stored_check.is_some() {
            return Err(Error::Kek {
                path: config.kek_file.clone(),
                reason: "is missing, but the database holds keys sealed under a key-encryption key; restore the file or point KEYTURN_KEK_FILE at it. Nothing was changed".into(),
            });
        } else {
            datadir::create_kek(&config.kek_file)?
        };
        if let Some(check) = &stored_check {
            if kek.open(KEK_CHECK, check).is_err() {
                return Err(Error::KekMismatch {
                    path: config.kek_file.clone(),
                    what: "the database's check value".into(),
                });
            }
        }

        store.migrate()?;
        let rows = store.read_blocking(store::keys::all)?;
        for row in &rows {
            if let Some(sealed) = &row.sealed_private {
                open_private(&kek, &config, &row.record, sealed)?;
            }
        }
        if stored_check.is_none() {
            let check = kek.seal(KEK_CHECK, b"keyturn").map_err(|e| Error::Kek {
                path: config.kek_file.clone(),
                reason: e.to_string(),
            })?;
            store.write_blocking(|tx| meta::set(tx, KEK_CHECK, &check))?;
        }

        let empty = Arc::new(Published {
            keys: Vec::new(),
            jwks: jwks::serialize(&[]),
            openid_configuration: Document::new(b"{}".to_vec()),
            oauth_metadata: Document::new(b"{}".to_vec()),
            signers: BTreeMap::new(),
        });
        let service = Keyturn {
            config: Arc::new(config),
            clock,
            store,
            kek,
            data_dir,
            published: RwLock::new(empty),
        };
        service.apply_plan()?;
        service.reload()?;
        Ok(service)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The current snapshot: keys, JWKS, discovery and signers.
    pub fn published(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The timing policy in force.
    pub fn policy(&self) -> Policy {
        let pins = &self.config.pins;
        Policy {
            schedule: pins
                .rotation_schedule
                .clone()
                .unwrap_or_else(default_schedule),
            publish_lead: pins.publish_lead.unwrap_or(config::DEFAULT_PUBLISH_LEAD),
            clock_skew: pins.clock_skew.unwrap_or(config::DEFAULT_CLOCK_SKEW),
            max_token_ttl: pins.max_token_ttl.unwrap_or(config::DEFAULT_MAX_TOKEN_TTL),
            leeway: pins.leeway.unwrap_or(config::DEFAULT_LEEWAY),
            jwks_max_age: self.config.jwks_max_age,
        }
    }

    /// Applies every transition the lifecycle plans for now. Blocking.
    fn apply_plan(&self) -> Result<()> {
        let now = self.clock.now();
        let keys: Vec<KeyRecord> = self
            .store
            .read_blocking(store::keys::all)?
            .into_iter()
            .map(|r| r.record)
            .collect();
        let policy = self.policy();
        for transition in lifecycle::plan(now, &keys, &policy, &self.config.algorithms) {
            match transition {
                Transition::Generate { alg, activate } => {
                    self.generate_key(alg, activate, now, &policy)?
                }
            }
        }
        Ok(())
    }

    /// Generates, seals and stores a key; with `activate`, it is active from the start.
    fn generate_key(
        &self,
        alg: Algorithm,
        activate: bool,
        now: Instant,
        policy: &Policy,
    ) -> Result<()> {
        let not_after = now + policy.planned_life(now);
        let new = generate::generate(
            alg,
            self.config.rsa_bits,
            &self.config.issuer,
            now,
            policy.clock_skew,
            not_after,
        )?;
        let sealed = self
            .kek
            .seal(new.kid.as_str(), new.private.der())
            .map_err(|e| Error::Kek {
                path: self.config.kek_file.clone(),
                reason: e.to_string(),
            })?;
        let public_jwk =
            serde_json::to_string(&new.public).map_err(|e| Error::Sign(e.to_string()))?;
        let record = KeyRecord {
            kid: new.kid.clone(),
            alg,
            state: if activate {
                KeyState::Active
            } else {
                KeyState::Pending
            },
            public_jwk,
            created_at: now,
            published_at: now,
            activated_at: activate.then_some(now),
            retired_at: None,
            expired_at: None,
            revoked_at: None,
            revoke_reason: None,
            not_after,
        };
        let (action, detail) = if activate {
            (
                "key.bootstrap",
                "no active key for this algorithm: generated and activated at once",
            )
        } else {
            ("key.generate", "generated and published as pending")
        };
        self.store.write_blocking(|tx| {
            store::keys::insert(tx, &record, &sealed)?;
            audit::record(
                tx,
                now,
                SYSTEM,
                action,
                Some(record.kid.as_str()),
                None,
                Some(&format!("{alg}: {detail}")),
            )
        })?;
        tracing::info!(kid = %record.kid, %alg, state = record.state.as_str(), "generated signing key");
        Ok(())
    }

    /// Rebuilds the published snapshot from the database. Blocking.
    pub fn reload(&self) -> Result<()> {
        let rows = self.store.read_blocking(store::keys::all)?;
        let current = self.published();
        let mut signers = BTreeMap::new();
        for row in &rows {
            if row.record.state != KeyState::Active {
                continue;
            }
            // Keep a signer already loaded for the same kid; open the others.
            if let Some(existing) = current
                .signers
                .get(&row.record.alg)
                .filter(|s| *s.kid() == row.record.kid)
            {
                signers.insert(row.record.alg, existing.clone());
                continue;
            }
            let sealed = row
                .sealed_private
                .as_deref()
                .ok_or_else(|| Error::KeyDoesNotLoad {
                    kid: row.record.kid.clone(),
                    reason: "an active key has no private key".into(),
                })?;
            let private = open_private(&self.kek, &self.config, &row.record, sealed)?;
            signers.insert(
                row.record.alg,
                Arc::new(SigningKey::new(
                    row.record.kid.clone(),
                    row.record.alg,
                    &private,
                )),
            );
        }
        let keys: Vec<KeyRecord> = rows.into_iter().map(|r| r.record).collect();
        let published = Published {
            jwks: serialize_jwks(&keys)?,
            openid_configuration: discovery(&self.config, true),
            oauth_metadata: discovery(&self.config, false),
            keys,
            signers,
        };
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(published);
        Ok(())
    }

    /// Signs `claims` with the active key of `alg` (the first configured algorithm when
    /// `None`). This is the raw signing primitive; token issuance wraps it.
    pub fn sign(
        &self,
        alg: Option<Algorithm>,
        typ: &str,
        claims: &impl Serialize,
    ) -> Result<(String, KeyId)> {
        let alg = alg.unwrap_or(self.config.algorithms[0]);
        if !self.config.algorithms.contains(&alg) {
            return Err(Error::AlgorithmNotConfigured(alg));
        }
        let published = self.published();
        let signer = published.signer(alg).ok_or(Error::NoActiveKey(alg))?;
        let token = signer
            .sign(typ, claims)
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok((token, signer.kid().clone()))
    }

    /// Whether the daemon can serve: the database answers and every configured algorithm
    /// has an active key. The error says what is missing.
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        self.store
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))?;
        let published = self.published();
        let missing: Vec<_> = self
            .config
            .algorithms
            .iter()
            .filter(|a| published.signer(**a).is_none())
            .map(|a| a.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!("no active key for {}", missing.join(", ")));
        }
        Ok(())
    }

    /// The current time, for callers that stamp responses.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}

fn default_schedule() -> Schedule {
    // The default is a constant known to parse; a failure here is a programming error that
    // the schedule tests catch.
    Schedule::parse(crate::schedule::DEFAULT_SCHEDULE)
        .unwrap_or_else(|e| panic!("default schedule: {e}"))
}

/// Opens a sealed private key and checks it is the key its record describes.
fn open_private(
    kek: &Kek,
    config: &Config,
    record: &KeyRecord,
    sealed: &[u8],
) -> Result<PrivateKey> {
    // The KEK itself was verified against the check value first, so a key that does not
    // open means its row was altered: a flipped byte, or another key's ciphertext moved in.
    let _ = config;
    let der = kek.open(record.kid.as_str(), sealed).map_err(|e| Error::KeyDoesNotLoad {
        kid: record.kid.clone(),
        reason: format!(
            "its sealed private key does not open under the key-encryption key ({e}); the key-encryption key itself is right, so the database row was altered or holds another key's ciphertext"
        ),
    })?;
    let private = PrivateKey::from_der(record.alg, der);
    let public = PublicJwk::parse(&record.public_jwk).map_err(|reason| Error::KeyDoesNotLoad {
        kid: record.kid.clone(),
        reason: format!("stored public key: {reason}"),
    })?;
    private
        .check_matches(&record.kid, &public)
        .map_err(|e| Error::KeyDoesNotLoad {
            kid: record.kid.clone(),
            reason: e.to_string(),
        })?;
    Ok(private)
}

/// The JWKS of every published key, grouped by algorithm, oldest first within each.
fn serialize_jwks(keys: &[KeyRecord]) -> Result<Document> {
    let mut published: Vec<&KeyRecord> = keys.iter().filter(|k| k.state.is_published()).collect();
    published.sort_by(|a, b| (a.alg, a.published_at, &a.kid).cmp(&(b.alg, b.published_at, &b.kid)));
    let jwks: Vec<PublicJwk> = published
        .iter()
        .map(|k| {
            PublicJwk::parse(&k.public_jwk).map_err(|reason| Error::KeyDoesNotLoad {
                kid: k.kid.clone(),
                reason: format!("stored public key: {reason}"),
            })
        })
        .collect::<Result<_>>()?;
    Ok(jwks::serialize(&jwks.iter().collect::<Vec<_>>()))
}

/// The discovery document: OpenID Connect (`openid`) or RFC 8414 metadata.
fn discovery(config: &Config, openid: bool) -> Document {
    let algs: Vec<&str> = config.algorithms.iter().map(|a| a.as_str()).collect();
    let mut doc = serde_json::json!({
        "issuer": config.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", config.issuer),
        // keyturn has no authorization endpoint, so no response types: tokens come from
        // the token endpoint only.
        "response_types_supported": [],
    });
    if openid {
        doc["subject_types_supported"] = serde_json::json!(["public"]);
        doc["id_token_signing_alg_values_supported"] = serde_json::json!(algs);
    }
    Document::new(serde_json::to_vec(&doc).unwrap_or_default())
}
