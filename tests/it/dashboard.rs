//! Dashboard forms over plain HTTP (the browser tests drive the same pages in Chromium): bad
//! input gets the form again with the reason, and changes nothing.

use keyturn::service::Actor;

use crate::api::Api;

const PW: &str = "a long enough password";

/// A signed-in dashboard session: its cookie and the CSRF token its forms carry.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(api: &Api) -> Session {
    let svc = api.server.service.clone();
    tokio::task::spawn_blocking(move || {
        let link = svc.create_setup_link(&Actor::cli()).expect("link");
        svc.complete_setup(&link, "alice", PW, None).expect("setup");
    })
    .await
    .expect("join");
    // The session id travels in a private (encrypted) cookie only the server can make: sign
    // in through the form to get one.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let res =
        client.post(api.url("/admin/login")).form(&[("name", "alice"), ("password", PW)]).send().await.expect("login");
    assert_eq!(res.status(), 303, "signed in");
    let cookie = res.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let page = client.get(api.url("/admin/clients")).header("Cookie", &cookie).send().await.expect("page");
    let html = page.text().await.expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in:\n{html}"))
        .to_owned();
    Session { cookie, csrf }
}

/// POSTs a dashboard form; returns the status and the page.
async fn post(api: &Api, s: &Session, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let mut form: Vec<(&str, &str)> = vec![("csrf", &s.csrf)];
    form.extend_from_slice(fields);
    let res =
        reqwest::Client::new().post(api.url(path)).header("Cookie", &s.cookie).form(&form).send().await.expect("post");
    (res.status().as_u16(), res.text().await.expect("html"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_form_input_is_refused_with_the_form_and_changes_nothing() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let svc = api.server.service.clone();
    let clients = move || svc.list_clients().expect("clients").len();

    let (status, html) = post(
        &api,
        &s,
        "/admin/clients",
        &[("name", "orders"), ("audiences", "api"), ("scopes", ""), ("max_ttl", "10 minutes")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("10 minutes"), "the page names the bad value: {html}");
    assert_eq!(clients(), 0, "no client was registered with another lifetime");

    let svc = api.server.service.clone();
    let tokens = move || {
        svc.list_tokens(&keyturn::records::TokenQuery { limit: 100, ..Default::default() }).expect("tokens").len()
    };
    let (status, html) = post(
        &api,
        &s,
        "/admin/tokens",
        &[("sub", "alice"), ("aud", "api"), ("scope", ""), ("ttl", ""), ("alg", "HS256"), ("claims", "")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("HS256"), "the page names the bad algorithm: {html}");
    assert_eq!(tokens(), 0, "no token was issued with another algorithm");
    api.stop().await;
}
