//! The one replay cache (`seen_jtis`): a proof's `jti` is accepted once across every node of
//! the installation, on either backend (the PostgreSQL round of the test command runs it on
//! PostgreSQL), and forgotten once it could no longer be accepted.

use keyturn::store::args;
use time::macros::datetime;

use crate::support::{database, scalar};

#[test]
fn a_jti_is_accepted_once_across_nodes_and_pruned_when_it_can_no_longer_be_replayed() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    crate::support::keyturn_ok(&data, &["init"], &[]);
    // Two handles on one database: two nodes.
    let (a, b) = (database(&data, &[]), database(&data, &[]));
    let until = datetime!(2026-12-07 12:01:00 UTC);
    let first_use = |db: &crate::support::Db, key: &'static str, jti: &'static str| {
        db.run(move |store| {
            Box::pin(async move {
                store
                    .write(move |tx| {
                        Box::pin(async move { keyturn::store::replay::first_use(tx, key, jti, until).await })
                    })
                    .await
            })
        })
        .expect("first_use")
    };
    assert!(first_use(&a, "jkt-1", "p-1"), "first seen on node a");
    assert!(!first_use(&b, "jkt-1", "p-1"), "a replay on node b is refused");
    assert!(!first_use(&a, "jkt-1", "p-1"), "and on node a");
    assert!(first_use(&b, "jkt-2", "p-1"), "the same jti from another key is another proof");
    let prune = |now| {
        a.run(move |store| {
            Box::pin(async move {
                store.write(move |tx| Box::pin(async move { keyturn::store::replay::prune(tx, now).await })).await
            })
        })
        .expect("prune")
    };
    assert_eq!(prune(datetime!(2026-12-07 12:00:59 UTC)), 0, "kept while it could be replayed");
    assert_eq!(prune(datetime!(2026-12-07 12:01:01 UTC)), 2, "then forgotten");
    assert_eq!(scalar(&b, "SELECT count(*) FROM seen_jtis", args![]), 0);
}
