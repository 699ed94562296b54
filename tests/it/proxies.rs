//! Where a request comes from: the peer's address, unless the peer is a configured trusted
//! proxy — then the address that proxy reports. A client cannot choose its own source by
//! sending `X-Real-IP` or `X-Forwarded-For`: not for the audit log, not for the sign-in
//! limiter. Clients bind to other loopback addresses (127.0.0.2, …) to be told apart.

use std::net::IpAddr;

use serde_json::json;

use crate::api::Api;

fn client_from(source: &str) -> reqwest::Client {
    let ip: IpAddr = source.parse().expect("ip");
    reqwest::Client::builder().local_address(ip).build().expect("client")
}

/// Makes an audited admin call (a rotation request) with `headers`, from `source`, and
/// returns the source the audit log recorded for it.
async fn audited_source(api: &Api, source: &str, headers: &[(&str, &str)]) -> String {
    let mut req = client_from(source)
        .post(api.url("/api/v1/keys/rotate"))
        .bearer_auth(&api.admin)
        .json(&json!({"mode": "graceful"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    assert!(req.send().await.expect("rotate").status().is_success());
    let (_, audit) = api.call("GET", "/api/v1/audit?limit=1", Some(&api.admin), None).await;
    assert_eq!(audit["entries"][0]["action"], "key.rotate.requested", "{audit}");
    audit["entries"][0]["source"].as_str().expect("source").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_a_client_are_ignored() {
    let api = Api::start(&[]).await;
    let forged = [("X-Real-IP", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.8")];
    assert_eq!(audited_source(&api, "127.0.0.2", &forged).await, "127.0.0.2", "the peer, not the headers");

    // Failed sign-ins from one address, each claiming another origin: the sixth is limited.
    let client = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let page = client.get(api.url("/admin/login")).send().await.expect("the form");
        let cookie = crate::support::form_cookie(page.headers());
        let token = crate::support::form_token(&page.text().await.expect("html"));
        let res = client
            .post(api.url("/admin/login"))
            .header("Cookie", cookie)
            .header("X-Real-IP", format!("203.0.113.{i}"))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .form(&[("csrf", token), ("name", format!("nobody{i}")), ("password", "wrong".into())])
            .send()
            .await
            .expect("sign in");
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "limited per real address");
    // Another address is not limited by that.
    let base = api.url("");
    let fields = [("name", "nobody"), ("password", "wrong")];
    let res =
        crate::support::post_form_as_browser(&client_from("127.0.0.4"), &base, "/admin/login", "/admin/login", &fields)
            .await;
    assert_eq!(res.status().as_u16(), 401);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_reports_the_client_address() {
    let api = Api::start(&[("KEYTURN_TRUSTED_PROXIES", "127.0.0.5, 127.0.0.6")]).await;
    // Through the proxy: the address it appended, the rightmost one that is not a proxy.
    let chain = [("X-Forwarded-For", "192.0.2.1, 198.51.100.8, 127.0.0.6")];
    assert_eq!(audited_source(&api, "127.0.0.5", &chain).await, "198.51.100.8");
    assert_eq!(audited_source(&api, "127.0.0.5", &[("X-Real-IP", "203.0.113.7")]).await, "203.0.113.7");
    // A proxy that says nothing: the proxy itself.
    assert_eq!(audited_source(&api, "127.0.0.5", &[]).await, "127.0.0.5");
    // A malformed header is not an address: the proxy itself.
    assert_eq!(audited_source(&api, "127.0.0.5", &[("X-Forwarded-For", "not an address")]).await, "127.0.0.5");
    // Not from a proxy: the headers mean nothing.
    assert_eq!(audited_source(&api, "127.0.0.7", &chain).await, "127.0.0.7");
    api.stop().await;
}
