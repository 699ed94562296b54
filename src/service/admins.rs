//! Dashboard administrators: argon2id passwords, one-time setup links, server-side sessions
//! with idle and absolute time-outs, and sign-in rate limiting per address and per account.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use zeroize::Zeroizing;

use super::{audited, random_id, secret_digest, secret_matches, Actor};
use crate::clock::{Clock, Instant};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// How long a setup link stays usable.
pub const SETUP_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// A session ends after this long without a request...
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// ...and in any case this long after sign-in.
pub const SESSION_ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per address and per account within the window.
pub const SIGN_IN_FAILURES: usize = 5;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// A signed-in administrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub admin: String,
    /// The form token every state-changing form of this session must carry.
    pub csrf: String,
}

/// Why a sign-in did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// Signed in: the new session id (for the cookie) and the session.
    Ok(Zeroizing<String>, Session),
    /// Wrong name or password: one answer for both.
    Refused,
    /// Too many failures from this address or for this account; try again after this.
    Limited(Duration),
}

/// Argon2 runs one at a time: each takes tens of milliseconds of a core on purpose, and
/// unauthenticated requests can ask for it (sign-in, setup), so it must never take both cores
/// from serving.
static ARGON2: Mutex<()> = Mutex::new(());

/// The dashboard's administrators: their passwords, setup links, sessions and sign-in limits.
/// It holds what that needs and nothing else: the dashboard's handlers take it alone.
pub struct Admins {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Setup links are URLs under it.
    issuer: String,
}

impl Admins {
    pub(super) fn new(store: Store, clock: Clock, metrics: Arc<Metrics>, issuer: String) -> Admins {
        Admins { store, clock, metrics, issuer }
    }
}

impl Admins {
    /// An argon2id hash of `password` (counted, one at a time).
    async fn password_hash(&self, password: &str) -> Result<String> {
        self.metrics.password_hashed();
        let password = Zeroizing::new(password.to_owned());
        argon2_turn(move || hash_password(&password)).await?
    }

    /// Whether `password` matches the argon2 hash `phc` (counted, one at a time).
    async fn password_matches(&self, phc: &str, password: &str) -> bool {
        self.metrics.password_hashed();
        let (phc, password) = (phc.to_owned(), Zeroizing::new(password.to_owned()));
        argon2_turn(move || {
            PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false)
    }
}

/// Runs argon2 `work` on the blocking pool, never on the async threads, and one at a time.
async fn argon2_turn<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let _turn = ARGON2.lock().unwrap_or_else(PoisonError::into_inner);
        work()
    })
    .await
    .map_err(|e| Error::Store(store::StoreError::Task(format!("password check failed: {e}"))))
}

fn setup_link_refused() -> Error {
    Error::Unauthorized("this setup link is unknown, used or expired".into())
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| Error::Sign("the random number generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Sign(e.to_string()))?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| Error::Sign(e.to_string()))?.to_string())
}

fn check_name(name: &str) -> Result<()> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(vec!["name: use 1 to 64 letters, digits, '.', '_', '-' or '@'".into()]))
    }
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=1024).contains(&n) {
        Ok(())
    } else {
        Err(Error::Invalid(vec![format!("password: use at least {MIN_PASSWORD} characters")]))
    }
}

impl Admins {
    pub async fn admin_count(&self) -> Result<u64> {
        Ok(self.store.read(|c| Box::pin(store::admins::count(c))).await?)
    }

    /// Administrators with when they were created and last changed their password.
    pub async fn list(&self) -> Result<Vec<(String, Instant, Instant)>> {
        Ok(self.store.read(|c| Box::pin(store::admins::names(c))).await?)
    }

    /// Makes a one-time link token that creates an administrator; valid for 15 minutes.
    pub async fn create_setup_link(&self, actor: &Actor) -> Result<Zeroizing<String>> {
        let token = Zeroizing::new(random_id(32));
        let now = self.clock.now();
        let hash = secret_digest(&token);
        let by = actor.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    store::admins::insert_setup_link(tx, &hash, now, now + SETUP_LINK_TTL, &by.name).await?;
                    audited(tx, now, &by, "admin.setup_link", None, Some("one-time setup link created (15 minutes)"))
                        .await
                })
            })
            .await?;
        Ok(token)
    }

    /// The URL of a setup link.
    pub fn setup_url(&self, token: &str) -> String {
        format!("{}/admin/setup?token={token}", self.issuer)
    }

    pub async fn setup_link_usable(&self, token: &str) -> Result<bool> {
        let (now, digest) = (self.clock.now(), secret_digest(token));
        Ok(self
            .store
            .read(move |c| Box::pin(async move { store::admins::setup_link_usable(c, &digest, now).await }))
            .await?)
    }

    /// Spends a setup link and creates the administrator, in one transaction.
    pub async fn complete_setup(&self, token: &str, name: &str, password: &str, source: Option<&str>) -> Result<()> {
        check_name(name)?;
        check_password(password)?;
        // The cheap check first: an unknown link costs a digest and an indexed read, never
        // argon2. The transaction below spends the link, so a race cannot use it twice.
        if !self.setup_link_usable(token).await? {
            return Err(setup_link_refused());
        }
        let hash = self.password_hash(password).await?;
        let now = self.clock.now();
        let token_hash = secret_digest(token);
        let (name, source) = (name.to_owned(), source.map(str::to_owned));
        let done = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    if !store::admins::spend_setup_link(tx, &token_hash, now).await? {
                        return Ok(false);
                    }
                    if store::admins::password_hash(tx, &name).await?.is_some() {
                        return Err(store::StoreError::Conflict(format!("an administrator named {name} exists")));
                    }
                    store::admins::insert(tx, &name, &hash, now, "setup link").await?;
                    audited(
                        tx,
                        now,
                        &Actor::admin(&name, source),
                        "admin.create",
                        Some(&name),
                        Some("created with a setup link"),
                    )
                    .await?;
                    Ok(true)
                })
            })
            .await;
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(setup_link_refused()),
            Err(store::StoreError::Conflict(m)) => Err(Error::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }

    /// Signs in: reserves one failure under the address and the account (or answers
    /// [`SignIn::Limited`] when either has none left), checks the password (argon2id; the
    /// same work is done for unknown names), and on success takes the reservation back and
    /// starts a fresh session. Reserving before argon2 runs is what bounds concurrent
    /// guesses: with `n` failures left, at most `n` checks are ever in flight per address
    /// and per account, however many requests arrive at once.
    pub async fn sign_in(&self, name: &str, password: &str, source: &str) -> Result<SignIn> {
        let now = self.clock.now();
        // Counted in the database, so every node of a cluster sees every failure.
        let account: String = name.chars().take(64).collect();
        let keys = [format!("ip:{source}"), format!("account:{account}")];
        let window_start = now - SIGN_IN_WINDOW;
        let attempt = random_id(12);
        let (reserved, reserving) = (keys.clone(), attempt.clone());
        let over = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    store::signins::reserve(
                        tx,
                        &[reserved[0].as_str(), reserved[1].as_str()],
                        &reserving,
                        now,
                        window_start,
                        SIGN_IN_FAILURES as u64,
                    )
                    .await
                })
            })
            .await?;
        if let Some(wait) =
            over.iter().map(|oldest| (*oldest + SIGN_IN_WINDOW - now).try_into().unwrap_or_default()).max()
        {
            return Ok(SignIn::Limited(wait));
        }
        let stored = if name.len() <= 64 {
            let name = name.to_owned();
            self.store.read(move |c| Box::pin(async move { store::admins::password_hash(c, &name).await })).await?
        } else {
            None
        };
        // A fixed hash of a random password, so unknown names cost as much as known ones.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| hash_password(&random_id(16)).unwrap_or_default());
        let phc = stored.as_deref().unwrap_or(dummy);
        let ok = password.len() <= 1024 && self.password_matches(phc, password).await && stored.is_some();
        let (audit_name, source_owned) = (name.chars().take(64).collect::<String>(), source.to_owned());
        if !ok {
            // The reservation stays: it is the failure.
            self.store
                .write(move |tx| {
                    Box::pin(async move {
                        audited(
                            tx,
                            now,
                            &Actor::admin(&audit_name, Some(source_owned.clone())),
                            "admin.sign_in.failed",
                            None,
                            None,
                        )
                        .await
                    })
                })
                .await?;
            return Ok(SignIn::Refused);
        }
        let id = Zeroizing::new(random_id(32));
        let session = Session { admin: name.to_owned(), csrf: random_id(24) };
        let (id_hash, s) = (secret_digest(&id), session.clone());
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    store::signins::release(tx, &attempt).await?;
                    store::signins::clear(tx, &keys[1]).await?;
                    store::admins::insert_session(tx, &id_hash, &s.admin, &s.csrf, now, Some(&source_owned)).await?;
                    audited(tx, now, &Actor::admin(&s.admin, Some(source_owned.clone())), "admin.sign_in", None, None)
                        .await
                })
            })
            .await?;
        Ok(SignIn::Ok(id, session))
    }

    /// The session behind a cookie value, if it is still within its time-outs. Ends it
    /// when it is not.
    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        let now = self.clock.now();
        let id_hash = secret_digest(id);
        let looked_up = id_hash.clone();
        let Some((admin, csrf, created, last_seen)) =
            self.store.read(move |c| Box::pin(async move { store::admins::session(c, &looked_up).await })).await?
        else {
            return Ok(None);
        };
        if now - last_seen >= SESSION_IDLE || now - created >= SESSION_ABSOLUTE {
            self.store
                .write(move |tx| Box::pin(async move { store::admins::delete_session(tx, &id_hash).await.map(drop) }))
                .await?;
            return Ok(None);
        }
        // Refreshing last_seen at most once a minute keeps reads from becoming writes.
        if now - last_seen >= time::Duration::MINUTE {
            self.store
                .write(move |tx| Box::pin(async move { store::admins::touch_session(tx, &id_hash, now).await }))
                .await?;
        }
        Ok(Some(Session { admin, csrf }))
    }

    /// Whether `presented` is this session's form token.
    pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| secret_matches(&secret_digest(&session.csrf), p))
    }

    /// Ends one session (sign out).
    pub async fn sign_out(&self, id: &str, actor: &Actor) -> Result<()> {
        let now = self.clock.now();
        let (id_hash, by) = (secret_digest(id), actor.clone());
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    if store::admins::delete_session(tx, &id_hash).await? > 0 {
                        audited(tx, now, &by, "admin.sign_out", None, None).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// Ends every session of an administrator ("sign out everywhere").
    pub async fn sign_out_everywhere(&self, admin: &str, actor: &Actor) -> Result<usize> {
        let now = self.clock.now();
        let (admin, by) = (admin.to_owned(), actor.clone());
        Ok(self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let n = store::admins::delete_sessions_of(tx, &admin, None).await?;
                    audited(
                        tx,
                        now,
                        &by,
                        "admin.sign_out_everywhere",
                        Some(&admin),
                        Some(&format!("{n} sessions ended")),
                    )
                    .await?;
                    Ok(n)
                })
            })
            .await?)
    }

    /// Adds an administrator with a password (from the dashboard).
    pub async fn add_admin(&self, name: &str, password: &str, actor: &Actor) -> Result<()> {
        check_name(name)?;
        check_password(password)?;
        let hash = self.password_hash(password).await?;
        let now = self.clock.now();
        let (name, by) = (name.to_owned(), actor.clone());
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    if store::admins::password_hash(tx, &name).await?.is_some() {
                        return Err(store::StoreError::Conflict(format!("an administrator named {name} exists")));
                    }
                    store::admins::insert(tx, &name, &hash, now, &by.name).await?;
                    audited(tx, now, &by, "admin.create", Some(&name), None).await
                })
            })
            .await
            .map_err(|e| match e {
                store::StoreError::Conflict(m) => Error::Conflict(m),
                e => e.into(),
            })
    }

    /// Removes an administrator (`keyturn admin remove`, the dashboard): their sessions end
    /// in the same transaction, so their next request is signed out. Never the last one:
    /// that would leave the dashboard with no way in but a setup link from the host.
    pub async fn remove_admin(&self, name: &str, actor: &Actor) -> Result<()> {
        let now = self.clock.now();
        let (name, by) = (name.to_owned(), actor.clone());
        let looked_up = name.clone();
        if self
            .store
            .read(move |c| Box::pin(async move { store::admins::password_hash(c, &looked_up).await }))
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("no administrator named {name}")));
        }
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    if store::admins::password_hash(tx, &name).await?.is_none() {
                        return Err(store::StoreError::Conflict(format!("{name} was removed meanwhile")));
                    }
                    if store::admins::count(tx).await? <= 1 {
                        return Err(store::StoreError::Conflict(format!(
                            "{name} is the last administrator: add another before removing this one"
                        )));
                    }
                    let sessions = store::admins::delete_sessions_of(tx, &name, None).await?;
                    store::admins::delete(tx, &name).await?;
                    audited(tx, now, &by, "admin.remove", Some(&name), Some(&format!("{sessions} sessions ended")))
                        .await
                })
            })
            .await
            .map_err(|e| match e {
                store::StoreError::Conflict(m) => Error::Conflict(m),
                e => e.into(),
            })
    }

    /// Sets a password from the host (`keyturn admin passwd`): whoever runs the command on
    /// the data dir already holds every secret, so no current password is asked. Ends the
    /// administrator's sessions.
    pub async fn set_password(&self, admin: &str, new: &str, actor: &Actor) -> Result<()> {
        check_password(new)?;
        let hash = self.password_hash(new).await?;
        let now = self.clock.now();
        let (named, by) = (admin.to_owned(), actor.clone());
        let found = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let admin = named;
                    let found = replace_password(tx, &admin, &hash, now, None).await?;
                    if found {
                        audited(
                            tx,
                            now,
                            &by,
                            "admin.password",
                            Some(&admin),
                            Some("set from the host; sessions ended"),
                        )
                        .await?;
                    }
                    Ok(found)
                })
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no administrator named {admin}")))
        }
    }

    /// Changes a password after checking the current one, and ends every other session of the
    /// account (`keep_session`, the dashboard session that asked, stays signed in).
    pub async fn change_password(
        &self,
        admin: &str,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
        actor: &Actor,
    ) -> Result<()> {
        check_password(new)?;
        let stored = self
            .store
            .read({
                let admin = admin.to_owned();
                move |c| Box::pin(async move { store::admins::password_hash(c, &admin).await })
            })
            .await?
            .ok_or_else(|| Error::NotFound(admin.to_owned()))?;
        let ok = self.password_matches(&stored, current).await;
        if !ok {
            return Err(Error::Unauthorized("the current password is wrong".into()));
        }
        let hash = self.password_hash(new).await?;
        let now = self.clock.now();
        let (admin, by) = (admin.to_owned(), actor.clone());
        let keep = keep_session.map(secret_digest);
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    replace_password(tx, &admin, &hash, now, keep.as_deref()).await?;
                    audited(tx, now, &by, "admin.password", Some(&admin), Some("the account's other sessions ended"))
                        .await
                })
            })
            .await?;
        Ok(())
    }
}

/// Stores `admin`'s new password hash and ends every session of the account but `keep` (the
/// dashboard session that changed it), in the caller's transaction: a password never changes
/// without the sessions opened with the old one ending. False when there is no such admin.
async fn replace_password(
    tx: &store::Tx<'_>,
    admin: &str,
    hash: &str,
    now: Instant,
    keep: Option<&[u8]>,
) -> store::Result<bool> {
    let found = store::admins::set_password(tx, admin, hash, now).await?;
    if found {
        store::admins::delete_sessions_of(tx, admin, keep).await?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Administrators over a SQLite database of their own and a fake clock: no daemon.
    async fn admins() -> (Admins, Clock, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.migrate().await.expect("migrate");
        let clock = Clock::fake(crate::clock::from_unix(1_800_000_000));
        let admins = Admins::new(store, clock.clone(), Arc::new(Metrics::default()), "https://kt.example".into());
        (admins, clock, dir)
    }

    #[test]
    fn names_and_passwords_follow_the_rules() {
        assert!(check_name("alice.b-c_d@x").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err() && check_name(&"a".repeat(65)).is_err());
        assert!(check_password(&"x".repeat(MIN_PASSWORD)).is_ok());
        assert!(check_password(&"x".repeat(MIN_PASSWORD - 1)).is_err());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[tokio::test]
    async fn a_setup_link_is_single_use_and_expires() {
        let (a, clock, _dir) = admins().await;
        let link = a.create_setup_link(&Actor::cli()).await.expect("link");
        assert_eq!(a.setup_url(&link), format!("https://kt.example/admin/setup?token={}", link.as_str()));
        a.complete_setup(&link, "alice", "a long enough password", None).await.expect("first use");
        assert!(a.complete_setup(&link, "bob", "a long enough password", None).await.is_err(), "used");
        let late = a.create_setup_link(&Actor::cli()).await.expect("link");
        clock.advance(SETUP_LINK_TTL);
        assert!(!a.setup_link_usable(&late).await.expect("check"), "expired");
        assert_eq!(a.list().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn failures_are_limited_per_account_and_sessions_time_out() {
        let (a, clock, _dir) = admins().await;
        let link = a.create_setup_link(&Actor::cli()).await.expect("link");
        a.complete_setup(&link, "alice", "a long enough password", None).await.expect("setup");
        for i in 0..SIGN_IN_FAILURES {
            let from = format!("10.0.0.{i}");
            assert_eq!(a.sign_in("alice", "wrong password!", &from).await.expect("sign in"), SignIn::Refused);
        }
        let limited = a.sign_in("alice", "a long enough password", "10.0.1.1").await.expect("sign in");
        assert!(matches!(limited, SignIn::Limited(_)), "the account is limited from any address: {limited:?}");
        clock.advance(SIGN_IN_WINDOW);
        let SignIn::Ok(id, _) = a.sign_in("alice", "a long enough password", "10.0.1.1").await.expect("sign in") else {
            panic!("the window passed");
        };
        assert!(a.session(&id).await.expect("session").is_some());
        clock.advance(SESSION_IDLE);
        assert!(a.session(&id).await.expect("session").is_none(), "idle for the time-out");
    }
}
