//! HTTPS through keyturn's own configuration, with a certificate made by rcgen here; under
//! TLS the dashboard's session cookie is `__Host-` prefixed and Secure.

use crate::support::{self, fake_clock};

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_and_session_cookies_become_secure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let data = dir.path().join("data");
    let (cert_s, key_s) = (cert_path.display().to_string(), key_path.display().to_string());
    let server =
        support::start(&data, &[("KEYTURN_TLS_CERT_FILE", &cert_s), ("KEYTURN_TLS_KEY_FILE", &key_s)], fake_clock())
            .await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    assert!(server.service.config().issuer.starts_with("https://"), "the default issuer follows TLS");

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("root"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = client.get(format!("{}/.well-known/jwks.json", server.url())).send().await.expect("https request");
    assert_eq!(res.status(), 200);
    let plain = reqwest::get(format!("http://{}/healthz", server.address)).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plain HTTP is not served");

    // First administrator through a setup link: the session cookie it sets.
    let svc = server.service.clone();
    let token = tokio::spawn(async move { svc.admins().create_setup_link(&keyturn::service::Actor::system()).await })
        .await
        .expect("join")
        .expect("link");
    let fields = [
        ("token", token.as_str()),
        ("name", "alice"),
        ("password", "a long enough password"),
        ("confirm", "a long enough password"),
    ];
    let page = format!("/admin/setup?token={}", token.as_str());
    let res = support::post_form_as_browser(&client, &server.url(), &page, "/admin/setup", &fields).await;
    assert_eq!(res.status(), 303, "redirect to the dashboard");
    let cookie = res.headers().get("set-cookie").expect("a session cookie").to_str().expect("ascii").to_owned();
    assert!(cookie.starts_with("__Host-keyturn-session="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "__Host- cookies carry no Domain: {cookie}");
    server.stop().await.expect("stop");
}

#[test]
fn serve_tls_self_signed_makes_and_keeps_a_certificate() {
    use std::process::Stdio;
    use std::time::Duration;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let client = reqwest::blocking::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
    let mut certs = Vec::new();
    for _ in 0..2 {
        let port = crate::daemon::free_port();
        let (data_dir, port_text) = (data.display().to_string(), port.to_string());
        let mut child = support::keyturn(
            &["serve", "--tls-self-signed"],
            &[("KEYTURN_DATA_DIR", &data_dir), ("KEYTURN_PORT", &port_text)],
        )
        .current_dir(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
        let url = format!("https://127.0.0.1:{port}/.well-known/openid-configuration");
        let doc: serde_json::Value =
            support::eventually("an HTTPS answer", Duration::from_secs(30), || client.get(&url).send().ok())
                .json()
                .expect("json");
        assert!(doc["issuer"].as_str().expect("issuer").starts_with("https://"), "{doc}");
        let _ = child.kill();
        let _ = child.wait();
        certs.push(std::fs::read(data.join("tls-self-signed.pem")).expect("certificate kept in the data dir"));
    }
    assert_eq!(certs[0], certs[1], "the same certificate after a restart");
}
