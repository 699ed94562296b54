//! Administrators through the service with a fake clock: setup links, sessions and their
//! time-outs, sign-in limits, passwords.

use std::time::Duration;

use keyturn::service::admins::SignIn;
use keyturn::service::{Actor, Keyturn};

use crate::support::{config, fake_clock};

async fn open() -> (Keyturn, keyturn::clock::Clock, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = fake_clock();
    let service = Keyturn::open(config(dir.path(), &[]), clock.clone()).await.expect("open");
    (service, clock, dir)
}

const PW: &str = "a long enough password";

async fn sign_in(s: &Keyturn, name: &str, pw: &str, ip: &str) -> SignIn {
    s.admins().sign_in(name, pw, ip).await.expect("sign in")
}

#[tokio::test]
async fn setup_links_are_single_use_and_expire() {
    let (s, clock, _dir) = open().await;
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    assert!(s.admins().setup_url(&link).contains("/admin/setup?token="));
    assert!(
        matches!(
            s.admins().complete_setup(&link, "alice", "short", None).await,
            Err(keyturn::error::Error::Invalid(_))
        ),
        "short passwords refused"
    );
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("first use");
    assert!(s.admins().complete_setup(&link, "bob", PW, None).await.is_err(), "single use");
    let late = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    clock.advance(Duration::from_secs(15 * 60));
    assert!(!s.admins().setup_link_usable(&late).await.expect("check"));
    assert!(s.admins().complete_setup(&late, "carol", PW, None).await.is_err(), "expired after 15 minutes");
    assert_eq!(s.admins().admin_count().await.expect("count"), 1);
}

/// The link keyturn logs at first start is for the first administrator: void as soon as any
/// exists, however it was created. A link made with `keyturn admin add` stays usable.
#[tokio::test]
async fn the_first_start_link_is_void_once_an_administrator_exists() {
    let (s, _clock, _dir) = open().await;
    let first = s.admins().create_setup_link(&Actor::system()).await.expect("first-start link");
    let added = s.admins().create_setup_link(&Actor::cli()).await.expect("admin add link");
    assert!(s.admins().setup_link_usable(&first).await.expect("check"), "usable while there is no administrator");
    s.admins().complete_setup(&added, "alice", PW, None).await.expect("the CLI's link creates alice");
    assert!(!s.admins().setup_link_usable(&first).await.expect("check"), "void once alice exists");
    assert!(
        s.admins().complete_setup(&first, "mallory", PW, None).await.is_err(),
        "the logged link creates no one now"
    );
    let another = s.admins().create_setup_link(&Actor::cli()).await.expect("admin add link");
    s.admins().complete_setup(&another, "bob", PW, None).await.expect("a link from admin add still works");
    assert_eq!(s.admins().admin_count().await.expect("count"), 2);
}

/// Removing an administrator ends their sessions at once and is audited; the last one
/// cannot be removed, from the CLI (`keyturn admin remove`) or anywhere else.
#[tokio::test]
async fn an_administrator_is_removed_with_their_sessions_but_never_the_last() {
    let (s, _clock, dir) = open().await;
    for name in ["alice", "bob"] {
        let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
        s.admins().complete_setup(&link, name, PW, None).await.expect("setup");
    }
    let SignIn::Ok(bobs, _) = sign_in(&s, "bob", PW, "10.0.0.2").await else { panic!("bob signs in") };
    assert!(s.admins().session(&bobs).await.expect("session").is_some());
    s.admins().remove_admin("bob", &Actor::admin("alice", Some("10.0.0.1".into()))).await.expect("remove bob");
    assert!(s.admins().session(&bobs).await.expect("session").is_none(), "bob's session ended at once");
    assert!(matches!(sign_in(&s, "bob", PW, "10.0.0.2").await, SignIn::Refused), "bob can no longer sign in");
    let audit = s.audit().page(None, 20).await.expect("audit");
    let entry = audit.iter().find(|e| e.action == "admin.remove").expect("audited");
    assert_eq!((entry.actor.as_str(), entry.target.as_deref()), ("admin:alice", Some("bob")));
    assert!(matches!(s.admins().remove_admin("bob", &Actor::cli()).await, Err(keyturn::error::Error::NotFound(_))));
    assert!(
        matches!(s.admins().remove_admin("alice", &Actor::cli()).await, Err(keyturn::error::Error::Conflict(_))),
        "never the last administrator"
    );
    drop(s);
    // The same through the command line.
    let out = crate::support::run_keyturn(
        &["admin", "remove", "alice"],
        &[("KEYTURN_DATA_DIR", &dir.path().display().to_string())],
        dir.path(),
    );
    assert!(!out.status.success(), "the CLI refuses to remove the last administrator");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last administrator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sessions_time_out_and_sign_out_everywhere_ends_them() {
    let (s, clock, _dir) = open().await;
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    let SignIn::Ok(first, _) = sign_in(&s, "alice", PW, "10.0.0.1").await else { panic!("sign in") };
    let SignIn::Ok(second, _) = sign_in(&s, "alice", PW, "10.0.0.2").await else { panic!("sign in") };
    assert_ne!(*first, *second, "a new session id at every sign-in");

    // Idle: 29 minutes keeps it, 30 minutes without a request ends it.
    clock.advance(Duration::from_secs(29 * 60));
    assert!(s.admins().session(&first).await.expect("lookup").is_some());
    clock.advance(Duration::from_secs(30 * 60));
    assert!(s.admins().session(&first).await.expect("lookup").is_none(), "idle time-out");
    assert!(s.admins().session(&first).await.expect("lookup").is_none(), "and it stays ended");

    // Absolute: activity every 20 minutes still ends at 12 hours.
    let SignIn::Ok(busy, _) = sign_in(&s, "alice", PW, "10.0.0.1").await else { panic!("sign in") };
    for _ in 0..35 {
        clock.advance(Duration::from_secs(20 * 60));
        assert!(s.admins().session(&busy).await.expect("lookup").is_some());
    }
    clock.advance(Duration::from_secs(20 * 60));
    assert!(s.admins().session(&busy).await.expect("lookup").is_none(), "absolute time-out at 12 h");

    let SignIn::Ok(a, _) = sign_in(&s, "alice", PW, "10.0.0.1").await else { panic!("sign in") };
    let SignIn::Ok(b, _) = sign_in(&s, "alice", PW, "10.0.0.3").await else { panic!("sign in") };
    assert_eq!(
        s.admins().sign_out_everywhere("alice", &Actor::cli()).await.expect("everywhere"),
        3,
        "a, b and the second session"
    );
    assert!(
        s.admins().session(&a).await.expect("lookup").is_none()
            && s.admins().session(&b).await.expect("lookup").is_none()
    );
}

#[tokio::test]
async fn sign_in_failures_are_limited_per_address_and_per_account() {
    let (s, clock, _dir) = open().await;
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    assert_eq!(sign_in(&s, "nobody", PW, "10.0.0.9").await, SignIn::Refused, "unknown name: the same answer");

    // Per account: failures spread over many addresses still lock the account.
    for i in 0..5 {
        assert_eq!(sign_in(&s, "alice", "wrong wrong wrong", &format!("10.1.0.{i}")).await, SignIn::Refused);
    }
    assert!(matches!(sign_in(&s, "alice", PW, "10.2.0.1").await, SignIn::Limited(_)));
    clock.advance(Duration::from_secs(15 * 60));
    assert!(matches!(sign_in(&s, "alice", PW, "10.2.0.1").await, SignIn::Ok(..)), "the window passes");

    // Per address: one address guessing many accounts is stopped too.
    for i in 0..5 {
        assert_eq!(sign_in(&s, &format!("user{i}"), "x", "10.3.0.1").await, SignIn::Refused);
    }
    assert!(matches!(sign_in(&s, "alice", PW, "10.3.0.1").await, SignIn::Limited(_)));
}

#[tokio::test]
async fn password_change_needs_the_current_one() {
    let (s, _clock, _dir) = open().await;
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    assert!(s
        .admins()
        .change_password("alice", "not it at all", "another long password", None, &Actor::cli())
        .await
        .is_err());
    s.admins().change_password("alice", PW, "another long password", None, &Actor::cli()).await.expect("change");
    assert_eq!(sign_in(&s, "alice", PW, "10.0.0.1").await, SignIn::Refused);
    assert!(matches!(sign_in(&s, "alice", "another long password", "10.0.0.1").await, SignIn::Ok(..)));
    s.admins().add_admin("bob", "bob's long password", &Actor::cli()).await.expect("add");
    assert!(s.admins().add_admin("bob", "bob's long password", &Actor::cli()).await.is_err(), "names are unique");
    let names: Vec<String> = s.admins().list().await.expect("list").into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, vec!["alice", "bob"]);
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_of_the_account() {
    let (s, _clock, _dir) = open().await;
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    s.admins().add_admin("bob", "bob's long password", &Actor::cli()).await.expect("add");
    let session = async |name: &str, pw: &str, ip: &str| match sign_in(&s, name, pw, ip).await {
        SignIn::Ok(id, _) => id.to_string(),
        other => panic!("sign-in refused: {other:?}"),
    };
    let (here, laptop, stolen) = (
        session("alice", PW, "10.0.0.1").await,
        session("alice", PW, "10.0.0.2").await,
        session("alice", PW, "10.9.9.9").await,
    );
    let bob = session("bob", "bob's long password", "10.0.0.3").await;

    // On the dashboard: the session that changed it stays, the others end.
    s.admins().change_password("alice", PW, "another long password", Some(&here), &Actor::cli()).await.expect("change");
    assert!(s.admins().session(&here).await.expect("lookup").is_some(), "the session that changed the password stays");
    assert!(s.admins().session(&laptop).await.expect("lookup").is_none(), "another session of the account ends");
    assert!(s.admins().session(&stolen).await.expect("lookup").is_none(), "a stolen session ends");
    assert!(s.admins().session(&bob).await.expect("lookup").is_some(), "other accounts are not touched");

    // From the host: every session of the account ends.
    s.admins().set_password("alice", "a third long password", &Actor::cli()).await.expect("set");
    assert!(s.admins().session(&here).await.expect("lookup").is_none());
    assert!(s.admins().session(&bob).await.expect("lookup").is_some());
}

/// How many argon2 computations the service has done, from its metrics.
async fn password_hashing(s: &Keyturn) -> u64 {
    let text = s.metrics_text().await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("keyturn_password_hashing_total "))
        .unwrap_or_else(|| panic!("no keyturn_password_hashing_total in:\n{text}"))
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn bogus_setup_links_cost_no_password_hashing() {
    let (s, _clock, _dir) = open().await;
    let before = password_hashing(&s).await;
    for i in 0..20 {
        assert!(s.admins().complete_setup(&format!("bogus-link-{i}"), "mallory", PW, None).await.is_err());
    }
    assert_eq!(password_hashing(&s).await, before, "refused before any argon2 work");
    let link = s.admins().create_setup_link(&Actor::cli()).await.expect("link");
    s.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    assert_eq!(password_hashing(&s).await, before + 1, "a real setup hashes once");
    assert!(matches!(sign_in(&s, "alice", PW, "10.0.0.1").await, SignIn::Ok(..)));
    assert_eq!(password_hashing(&s).await, before + 2, "a sign-in verifies once");
}
