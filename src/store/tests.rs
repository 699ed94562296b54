//! The store's own rules: migrations, transactions, the group commit.

use super::*;

#[tokio::test]
async fn migrates_once_and_refuses_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = Store::open(&path).expect("open");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrating again is a no-op");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    let journal: String = store
        .read(|c| Box::pin(async move { c.query_one("PRAGMA journal_mode", args![]).await?.get(0) }))
        .await
        .expect("pragma");
    assert_eq!(journal, "wal");
    let bump = format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1);
    store.write(move |tx| Box::pin(async move { tx.batch(&bump).await })).await.expect("bump");
    assert!(matches!(store.migrate().await, Err(StoreError::TooNew { .. })));
}

#[tokio::test]
async fn failed_write_rolls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("t.db")).expect("open");
    store.migrate().await.expect("migrate");
    let r: Result<()> = store
        .write(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO meta (name, value) VALUES ('a', x'01')", args![]).await?;
                Err(StoreError::Conflict("test".into()))
            })
        })
        .await;
    assert!(r.is_err());
    let n: i64 = store
        .read(|c| Box::pin(async move { c.query_one("SELECT count(*) FROM meta", args![]).await?.get(0) }))
        .await
        .expect("count");
    assert_eq!(n, 0);
}

/// A batch's recordings stand or fall one by one: a job whose key stopped signing, or
/// whose refresh token an earlier job of the same batch spent, writes nothing; the
/// others are recorded.
#[tokio::test]
async fn a_batch_refuses_only_its_bad_recordings() {
    use crate::clock::from_unix;
    use crate::keys::KeyId;
    use crate::records::TokenRecord;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("t.db")).expect("open");
    store.migrate().await.expect("migrate");
    store
        .write(|tx| {
            Box::pin(async move {
                tx.batch(
                "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, created_at, published_at, not_after)
                 VALUES ('signs', 'ES256', 'active', '{}', x'00', 0, 0, 9999999999),
                        ('stopped', 'ES256', 'retired', '{}', x'00', 0, 0, 9999999999);
                 INSERT INTO refresh_tokens (token_hash, family, sub, aud, issued_at, expires_at)
                 VALUES (x'0102', 'f', 's', '[]', 0, 9999999999)",
            ).await
            })
        })
        .await
        .expect("keys");
    let recording = |jti: &str, kid: &str, spends: Option<Vec<u8>>| tokens::Recording {
        spends,
        token: TokenRecord {
            jti: jti.into(),
            sub: "s".into(),
            kid: KeyId::new(kid),
            aud: vec!["api".into()],
            client_id: None,
            scope: None,
            iat: from_unix(10),
            exp: from_unix(100),
            issued_by: "test".into(),
            family: None,
        },
        refresh: None,
        session: None,
    };
    let batch = [
        recording("a", "signs", None),
        recording("b", "stopped", None),
        recording("c", "signs", Some(vec![1, 2])),
        recording("d", "signs", Some(vec![1, 2])),
    ];
    let outcomes = store
        .write(move |tx| Box::pin(async move { tokens::record_batch(tx, &batch.iter().collect::<Vec<_>>()).await }))
        .await
        .expect("batch");
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(matches!(outcomes[1], Err(StoreError::KeyStoppedSigning(_))), "{outcomes:?}");
    assert!(matches!(outcomes[3], Err(StoreError::RefreshSpent)), "{outcomes:?}");
    let recorded: Vec<String> = store
        .read(|c| {
            Box::pin(async move {
                c.query("SELECT jti FROM issued_tokens ORDER BY jti", args![]).await?.iter().map(|r| r.get(0)).collect()
            })
        })
        .await
        .expect("records");
    assert_eq!(recorded, ["a", "c"]);
}

/// Replay-cache entries go through the group committer: many at once share commits, each
/// hears whether it was first, and of the same entry sent together exactly one was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_entries_are_group_committed_and_each_is_first_once() {
    use crate::clock::from_unix;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("t.db")).expect("open");
    store.migrate().await.expect("migrate");
    let until = from_unix(4_000_000_000);
    let mut tasks = Vec::new();
    for n in 0..200 {
        let store = store.clone();
        // Every tenth is the same proof sent again and again; the rest are distinct.
        let jti = if n % 10 == 0 { "again".to_owned() } else { format!("jti-{n}") };
        tasks.push(tokio::spawn(async move { (jti.clone(), store.first_use("key", &jti, until).await) }));
    }
    let mut firsts = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (jti, first) = t.await.expect("join");
        if first.expect("committed") {
            *firsts.entry(jti).or_default() += 1;
        }
    }
    assert_eq!(firsts.get("again"), Some(&1), "the repeated entry is first exactly once");
    assert_eq!(firsts.len(), 181, "every distinct entry is first");
    assert!(firsts.values().all(|n| *n == 1));
    assert!(!store.first_use("key", "jti-1", until).await.expect("committed"), "a replay later");
    assert!(store.first_use("another key", "jti-1", until).await.expect("committed"), "keyed by key and jti");
}
