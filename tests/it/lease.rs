//! One rotator: two daemons on one data dir both serve, only the lease holder rotates, and
//! the other takes over when the holder dies.

use std::time::Duration;

use crate::support::eventually;

use crate::daemon::{keyturn_once, rotators, Daemon, FAST_LIFECYCLE};

const ENV: &[(&str, &str)] = FAST_LIFECYCLE;

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    eventually(what, limit, || f().then_some(()));
}

#[test]
fn two_daemons_never_both_rotate_and_the_standby_takes_over() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], ENV);
    let admin = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "lease"], ENV).trim().to_owned();
    // The command above bootstrapped the data dir (as its own, short-lived rotator).
    let before: usize = {
        let db = crate::support::database(&data, ENV);
        crate::support::scalar(
            &db,
            "SELECT count(*) FROM audit_log WHERE source LIKE 'rotator %'",
            keyturn::store::args![],
        ) as usize
    };
    let a = Daemon::start(&data, ENV, "a");
    let b = Daemon::start(&data, ENV, "b");

    // Both serve; rotations happen; all of them by one process.
    wait_until(Duration::from_secs(30), "three scheduled rotations", || {
        a.audit(&admin).iter().filter(|e| e["action"] == "key.activate").count() >= 3
    });
    let first = rotators(&a.audit(&admin)).split_off(before);
    let holder = first.last().expect("a rotator").clone();
    assert!(first.iter().all(|r| *r == holder), "one rotator while both run: {first:?}");
    // The stand-by serves the rotator's key set (it notices the database changed).
    wait_until(Duration::from_secs(5), "the stand-by's JWKS to follow", || {
        a.get("/.well-known/jwks.json", None) == b.get("/.well-known/jwks.json", None)
    });

    // Kill whichever holds the lease; the other takes over once the lease lapses.
    let a_holds = a.log_text().contains(&holder.replace("rotator ", "holder="));
    let (dead, survivor) = if a_holds { (a, b) } else { (b, a) };
    dead.kill9();
    wait_until(Duration::from_secs(20), "the stand-by to rotate", || {
        rotators(&survivor.audit(&admin)).split_off(before).iter().any(|r| *r != holder)
    });
    let all = rotators(&survivor.audit(&admin)).split_off(before);
    let switch = all.iter().position(|r| *r != holder).expect("new rotator");
    assert!(all[..switch].iter().all(|r| *r == holder), "{all:?}");
    assert!(all[switch..].iter().all(|r| *r == all[switch]), "after the takeover only the new rotator acts: {all:?}");
}
