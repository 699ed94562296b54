//! The command line on a data dir: API keys and OAuth clients.

use std::collections::HashMap;

use keyturn::clock::Clock;
use keyturn::service::Keyturn;

use crate::support::{config, run_keyturn};

fn fields(stdout: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[tokio::test]
async fn client_create_list_disable_and_apikey_create() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_text = data.display().to_string();
    let env = [("KEYTURN_DATA_DIR", data_text.as_str())];
    let out = run_keyturn(&["init"], &env, root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run_keyturn(
        &["client", "create", "--name", "orders", "--audience", "orders-api", "--scope", "read", "--max-ttl", "5m"],
        &env,
        root.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created = fields(&out.stdout);
    let (id, secret) = (created["client_id"].clone(), created["client_secret"].clone());
    assert!(id.starts_with("kc_") && secret.len() >= 43);

    let out = run_keyturn(&["client", "list"], &env, root.path());
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.contains(&id) && listing.contains("enabled") && listing.contains("max_ttl=5m"), "{listing}");
    assert!(!listing.contains(&secret), "the secret is shown once");

    let out = run_keyturn(&["apikey", "create", "--role", "verifier", "--name", "rs"], &env, root.path());
    assert!(out.status.success());
    let api_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(api_key.starts_with("kt_"));

    {
        let service = Keyturn::open(config(&data, &[]), Clock::system()).await.expect("open");
        assert!(service.clients().authenticate_client(&id, &secret).await.expect("auth").is_some());
        assert!(service.clients().authenticate_client(&id, "wrong").await.expect("auth").is_none());
        let who = service.clients().authenticate_api_key(&api_key).await.expect("auth").expect("known");
        assert_eq!((who.name.as_str(), who.role.as_str()), ("rs", "verifier"));
    }

    let out = run_keyturn(&["client", "disable", &id], &env, root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_keyturn(&["client", "disable", &id], &env, root.path());
    assert_eq!(out.status.code(), Some(2), "already disabled");
    let out = run_keyturn(&["client", "create", "--name", "bad", "--audience", "has space"], &env, root.path());
    assert_eq!(out.status.code(), Some(2), "invalid input is exit 2");
    let service = Keyturn::open(config(&data, &[]), Clock::system()).await.expect("open");
    assert!(
        service.clients().authenticate_client(&id, &secret).await.expect("auth").is_none(),
        "a disabled client cannot authenticate"
    );
}

#[test]
fn first_start_logs_a_one_time_setup_link_that_works() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = crate::daemon::Daemon::start(&data, &[], "setup");
    let log = d.wait_for_log("/admin/setup?token=", std::time::Duration::from_secs(10));
    let link = log
        .split_whitespace()
        .find(|w| w.contains("/admin/setup?token="))
        .unwrap_or_else(|| panic!("no setup link in the log:\n{log}"))
        .to_owned();
    let page = crate::daemon::client().get(&link).send().expect("open link");
    assert_eq!(page.status(), 200);
    assert!(page.text().expect("html").contains("Create an administrator"));
    let (_, token) = link.split_once("token=").expect("token");
    let form = [
        ("token", token),
        ("name", "root"),
        ("password", "a long enough password"),
        ("confirm", "a long enough password"),
    ];
    let page = format!("/admin/setup?token={token}");
    let res =
        crate::support::post_form_as_browser_blocking(&crate::daemon::client(), &d.url, &page, "/admin/setup", &form);
    assert!(res.status().is_success(), "{}", res.status());
    let again = crate::daemon::client().get(&link).send().expect("open link").text().expect("html");
    assert!(again.contains("cannot be used"), "single use");
}

/// `config check` shows the timing settings in force and where each comes from: pinned by
/// the configuration, stored through the dashboard or the API, or the default — and creates
/// nothing when there is no database yet.
#[tokio::test]
async fn config_check_shows_the_values_in_force_and_their_source() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_text = data.display().to_string();
    let check = |env: &[(&str, &str)]| {
        let mut all = vec![("KEYTURN_DATA_DIR", data_text.as_str())];
        all.extend_from_slice(env);
        let out = run_keyturn(&["config", "check"], &all, root.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    let line = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name}: {text}"))
            .to_owned()
    };
    if crate::support::postgres_server().is_none() {
        let fresh = check(&[]);
        assert_eq!(
            line(&fresh, "rotation_schedule"),
            "rotation_schedule = \"0 0 * * MON\"  # default (no database yet)"
        );
        assert!(!data.join("keyturn.db").exists(), "config check creates no database");
    }
    {
        let service = Keyturn::open(config(&data, &[]), crate::support::fake_clock()).await.expect("open");
        let change =
            keyturn::service::policy::PolicyChange::from([("rotation_schedule", "0 3 * * *"), ("leeway", "2m")]);
        service.keys().update_policy(&change, &keyturn::service::Actor::cli()).await.expect("store a schedule");
    }
    let text = check(&[("KEYTURN_LEEWAY", "5m")]);
    assert_eq!(
        line(&text, "rotation_schedule"),
        "rotation_schedule = \"0 3 * * *\"  # stored setting (dashboard or PUT /api/v1/schedule)",
        "the stored schedule, not the default"
    );
    assert_eq!(line(&text, "leeway"), "leeway = \"5m\"  # env KEYTURN_LEEWAY", "a pin wins over the stored value");
    assert_eq!(line(&text, "publish_lead"), "publish_lead = \"15m\"  # default");
}

/// The reported case: `keyturn keys list` in a directory without a data dir made
/// `keyturn-data/` with two new keys, and `token issue` signed with a key no server
/// publishes. Now every command but `serve` and `init` needs an installation: without one it
/// says where it looked and creates nothing. `init` creates one, and says so once.
#[test]
fn commands_other_than_serve_and_init_never_create_an_installation() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("keyturn-data");
    let data_text = data.display().to_string();
    let env = [("KEYTURN_DATA_DIR", data_text.as_str())];
    let commands: [&[&str]; 6] = [
        &["keys", "list"],
        &["token", "issue", "--sub", "alice", "--aud", "api"],
        &["apikey", "create", "--role", "admin", "--name", "ops"],
        &["client", "list"],
        &["admin", "add"],
        &["backup", "somewhere.db"],
    ];
    for args in commands {
        let out = run_keyturn(args, &env, root.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("Nothing was created"), "{args:?}: {stderr}");
        if crate::support::postgres_server().is_none() {
            assert!(stderr.contains(&format!("no keyturn database at {data_text}/keyturn.db")), "{args:?}: {stderr}");
            assert!(!data.exists(), "{args:?} created {}", data.display());
        } else {
            assert!(stderr.contains("holds no keyturn schema"), "{args:?}: {stderr}");
        }
    }
    let out = run_keyturn(&["init"], &env, root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("initialized: database"), "{out:?}");
    let out = run_keyturn(&["init"], &env, root.path());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("already initialized"), "{out:?}");
    let out = run_keyturn(&["keys", "list"], &env, root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "the two keys init made");
}

/// `config check` refuses what start-up would refuse, in the operator's words, and opens
/// the database to try the key-encryption key against it: the reported cases were a
/// misspelt setting accepted with a warning, a missing key file accepted, a 31-byte key
/// described as "found 0", and the cron library's own words for `MONDAY`.
#[test]
fn config_check_fails_on_what_start_up_would_refuse_and_names_each_problem() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_text = data.display().to_string();
    let kek = data.join("kek");
    let check = |extra: &[(&str, &str)], file: Option<&str>| {
        let mut env = vec![("KEYTURN_DATA_DIR", data_text.as_str())];
        env.extend_from_slice(extra);
        let conf = root.path().join("keyturn.toml");
        match file {
            Some(text) => std::fs::write(&conf, text).expect("write"),
            None => drop(std::fs::remove_file(&conf)),
        }
        let out = run_keyturn(&["config", "check"], &env, root.path());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, err, _) = check(&[], Some("rotation_scheduel = \"0 3 * * 1\"\n"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown setting 'rotation_scheduel'") && err.contains("did you mean 'rotation_schedule'?"),
        "{err}"
    );
    let (code, err, _) = check(&[("KEYTURN_ROTATION_SCHEDULE", "0 3 * * MONDAY")], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the day-of-week field 'MONDAY' is not valid") && !err.contains("CronPattern"), "{err}");

    // Before the first start: nothing to open yet, and nothing is created.
    let (code, err, out) = check(&[], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("no keyturn database yet") || out.contains("holds no sealed key"), "{out}");
    let out = run_keyturn(&["init"], &[("KEYTURN_DATA_DIR", data_text.as_str())], root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, err, out) = check(&[], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("the key-encryption key") && out.contains("opens its keys"), "{out}");

    let original = std::fs::read(&kek).expect("kek");
    std::fs::remove_file(&kek).expect("remove the kek");
    let (code, err, _) = check(&[], None);
    assert_eq!(code, Some(2), "a missing key file: {err}");
    assert!(err.contains(&kek.display().to_string()) && err.contains("is missing"), "{err}");
    std::fs::write(&kek, &original[..31]).expect("a 31-byte kek");
    let (code, err, _) = check(&[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exactly 32 random bytes") && err.contains("it holds 31 bytes"), "{err}");
    std::fs::write(&kek, [7u8; 32]).expect("another kek");
    let (code, err, _) = check(&[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not decrypt the database's check value"), "{err}");
    std::fs::write(&kek, &original).expect("the kek back");
    assert_eq!(check(&[], None).0, Some(0));
}
