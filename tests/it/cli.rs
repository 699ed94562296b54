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

#[test]
fn client_create_list_disable_and_apikey_create() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_text = data.display().to_string();
    let env = [("KEYTURN_DATA_DIR", data_text.as_str())];

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
        let service = Keyturn::open(config(&data, &[]), Clock::system()).expect("open");
        assert!(service.authenticate_client(&id, &secret).expect("auth").is_some());
        assert!(service.authenticate_client(&id, "wrong").expect("auth").is_none());
        let who = service.authenticate_api_key(&api_key).expect("auth").expect("known");
        assert_eq!((who.name.as_str(), who.role.as_str()), ("rs", "verifier"));
    }

    let out = run_keyturn(&["client", "disable", &id], &env, root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_keyturn(&["client", "disable", &id], &env, root.path());
    assert_eq!(out.status.code(), Some(2), "already disabled");
    let out = run_keyturn(&["client", "create", "--name", "bad", "--audience", "has space"], &env, root.path());
    assert_eq!(out.status.code(), Some(2), "invalid input is exit 2");
    let service = Keyturn::open(config(&data, &[]), Clock::system()).expect("open");
    assert!(
        service.authenticate_client(&id, &secret).expect("auth").is_none(),
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
    let res = crate::daemon::client().post(format!("{}/admin/setup", d.url)).form(&form).send().expect("setup");
    assert!(res.status().is_success(), "{}", res.status());
    let again = crate::daemon::client().get(&link).send().expect("open link").text().expect("html");
    assert!(again.contains("cannot be used"), "single use");
}

/// `config check` shows the timing settings in force and where each comes from: pinned by
/// the configuration, stored through the dashboard or the API, or the default — and creates
/// nothing when there is no database yet.
#[test]
fn config_check_shows_the_values_in_force_and_their_source() {
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
        let service = Keyturn::open(config(&data, &[]), crate::support::fake_clock()).expect("open");
        let change = keyturn::service::policy::PolicyChange {
            cron: Some("0 3 * * *".into()),
            leeway: Some("2m".into()),
            ..Default::default()
        };
        service.update_policy(&change, &keyturn::service::Actor::cli()).expect("store a schedule");
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
