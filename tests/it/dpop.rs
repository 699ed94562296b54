//! DPoP (RFC 9449) against the real binary: a proof at the token endpoint binds the access
//! token to the proof's key (`cnf.jkt`, `token_type: DPoP`), introspection says so, and
//! `/auth/verify` lets a bound token through only with a fresh proof of that key for the
//! request the gateway forwards. Proofs are made here with real P-256 keys (aws-lc-rs) and
//! signed with jsonwebtoken, as a client library would.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::daemon::{client, Daemon};
use crate::support::keyturn_ok;

const ISSUER: &str = "https://keyturn.dpop.test";
const API: &str = "https://api.dpop.test/orders?page=2";

/// A holder of a P-256 key, making proofs with it.
pub struct Holder {
    key: EncodingKey,
    jwk: Value,
    made: std::cell::Cell<u32>,
}

impl Holder {
    pub fn new() -> Holder {
        let (key, jwk) = crate::support::p256_key();
        Holder { key, jwk, made: std::cell::Cell::new(0) }
    }

    pub fn thumbprint(&self) -> String {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk.clone()).expect("jwk");
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).expect("thumbprint")
    }

    /// A fresh proof for `method` `url`, for `token` when one is presented with it.
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>) -> String {
        self.proof_with_nonce(method, url, token, None)
    }

    /// [`Holder::proof`] carrying a server nonce.
    fn proof_with_nonce(&self, method: &str, url: &str, token: Option<&str>, nonce: Option<&str>) -> String {
        self.made.set(self.made.get() + 1);
        let now = keyturn::clock::to_unix(keyturn::clock::Clock::system().now());
        let mut claims =
            json!({"jti": format!("proof-{}-{now}", self.made.get()), "htm": method, "htu": url, "iat": now});
        if let Some(t) = token {
            claims["ath"] = Value::from(keyturn::dpop::access_token_hash(t));
        }
        if let Some(n) = nonce {
            claims["nonce"] = Value::from(n);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(self.jwk.clone()).expect("jwk"));
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

/// `client_credentials` at `d`'s token endpoint as client `id`, with `proof` as its `DPoP`
/// header if given: the status and the JSON answer.
pub fn client_credentials(d: &Daemon, id: &str, secret: &str, proof: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/oauth/token", d.url))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")]);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let res = req.send().expect("token");
    (res.status().as_u16(), res.json::<Value>().expect("json"))
}

fn fields(stdout: &str) -> std::collections::HashMap<String, String> {
    stdout.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect()
}

#[test]
fn a_proof_binds_the_token_to_its_key_and_verifiers_enforce_the_binding() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER)];
    let d = Daemon::start(&data, &env, "dpop");
    let created =
        keyturn_ok(&data, &["client", "create", "--name", "svc", "--audience", "api", "--scope", "read"], &env);
    let created = fields(&created);
    let (id, secret) = (created["client_id"].clone(), created["client_secret"].clone());
    let verifier = keyturn_ok(&data, &["apikey", "create", "--role", "verifier", "--name", "gw"], &env);
    let verifier = verifier.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned();
    let token_url = format!("{ISSUER}/oauth/token");
    let holder = Holder::new();
    let ask = |proof: Option<String>| client_credentials(&d, &id, &secret, proof.as_deref());

    // Bound: cnf.jkt is the proof key's thumbprint, token_type DPoP.
    let proof = holder.proof("POST", &token_url, None);
    let (status, body) = ask(Some(proof.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).expect("payload")).expect("base64"))
            .expect("claims");
    assert_eq!(claims["cnf"]["jkt"], holder.thumbprint().as_str());
    // The same proof again, a proof for another URL, or none at all but the plain grant.
    let (status, body) = ask(Some(proof));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "a replayed proof: {body}");
    let (status, body) = ask(Some(holder.proof("POST", &format!("{ISSUER}/oauth/revoke"), None)));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "another URL: {body}");
    let (status, plain) = ask(None);
    assert_eq!((status, plain["token_type"].as_str()), (200, Some("Bearer")));

    // Introspection tells a resource server the binding.
    let seen: Value = client()
        .post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(&verifier)
        .form(&[("token", token.as_str())])
        .send()
        .expect("introspect")
        .json()
        .expect("json");
    assert_eq!((seen["active"].as_bool(), seen["token_type"].as_str()), (Some(true), Some("DPoP")));
    assert_eq!(seen["cnf"]["jkt"], holder.thumbprint().as_str());

    // Forward auth: the gateway forwards the original method and URL.
    let verify = |scheme: &str, proof: Option<String>| {
        let mut req = client()
            .get(format!("{}/auth/verify", d.url))
            .header("Authorization", format!("{scheme} {token}"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Original-URL", API);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        let res = req.send().expect("verify");
        let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or_default().to_owned());
        (res.status().as_u16(), challenge)
    };
    let good = holder.proof("GET", API, Some(&token));
    assert_eq!(verify("DPoP", Some(good.clone())).0, 200, "a fresh proof of the key");
    let refusals = [
        ("the same proof again", verify("DPoP", Some(good))),
        ("as a bearer token", verify("Bearer", None)),
        ("as a bearer token with a proof", verify("Bearer", Some(holder.proof("GET", API, Some(&token))))),
        ("without a proof", verify("DPoP", None)),
        ("a proof of another key", verify("DPoP", Some(Holder::new().proof("GET", API, Some(&token))))),
        ("a proof for another method", verify("DPoP", Some(holder.proof("POST", API, Some(&token))))),
        (
            "a proof for another URL",
            verify("DPoP", Some(holder.proof("GET", "https://api.dpop.test/admin", Some(&token)))),
        ),
        ("a proof for another token", verify("DPoP", Some(holder.proof("GET", API, Some("another"))))),
    ];
    for (what, (status, challenge)) in refusals {
        assert_eq!(status, 401, "{what}");
        assert!(challenge.as_deref().is_some_and(|c| c.starts_with("DPoP error=")), "{what}: {challenge:?}");
    }
    // The metadata says which algorithms a proof may use.
    let meta: Value = client()
        .get(format!("{}/.well-known/oauth-authorization-server", d.url))
        .send()
        .expect("meta")
        .json()
        .expect("json");
    let algs = meta["dpop_signing_alg_values_supported"].as_array().expect("dpop algs");
    assert!(algs.contains(&Value::from("ES256")) && !algs.contains(&Value::from("HS256")), "{algs:?}");
    // An unbound token still works as a bearer token.
    let plain = plain["access_token"].as_str().expect("token");
    let res = client().get(format!("{}/auth/verify", d.url)).bearer_auth(plain).send().expect("verify");
    assert_eq!(res.status().as_u16(), 200);
}

/// One replay cache for the cluster: a proof one node accepted is refused by the other.
#[test]
fn a_proof_accepted_by_one_node_is_refused_by_another() {
    let server = crate::pg::PgServer::start();
    let cluster = crate::cluster::Cluster::new(&server, "dpop");
    cluster.cli(&["init"]);
    let created = fields(&cluster.cli(&["client", "create", "--name", "svc", "--audience", "api"]));
    let (id, secret) = (created["client_id"].clone(), created["client_secret"].clone());
    let (a, b) = (cluster.node("a", &[]), cluster.node("b", &[]));
    let holder = Holder::new();
    let proof = holder.proof("POST", "https://keyturn.cluster.test/oauth/token", None);
    let ask = |node: &Daemon| client_credentials(node, &id, &secret, Some(&proof));
    let (status, body) = ask(&a);
    assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")), "{body}");
    let (status, body) = ask(&b);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "replayed on node b: {body}");
}

/// A public holder's refresh (no client authentication, as a web app's session) that comes
/// with a proof binds the next refresh token to the proof's key: only that key refreshes on.
#[test]
fn a_public_holder_s_refresh_token_is_bound_to_its_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER)];
    let d = Daemon::start(&data, &env, "dpop-refresh");
    let issuer = keyturn_ok(&data, &["apikey", "create", "--role", "issuer", "--name", "app"], &env);
    let issuer = issuer.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned();
    let minted: Value = client()
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(&issuer)
        .json(&json!({"sub": "alice", "aud": "api", "refresh": true}))
        .send()
        .expect("mint")
        .json()
        .expect("json");
    let token_url = format!("{ISSUER}/oauth/token");
    let refresh = |token: &str, proof: Option<String>| {
        let mut req = client()
            .post(format!("{}/oauth/token", d.url))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        let res = req.send().expect("refresh");
        (res.status().as_u16(), res.json::<Value>().expect("json"))
    };
    let holder = Holder::new();
    let (status, first) =
        refresh(minted["refresh_token"].as_str().expect("refresh"), Some(holder.proof("POST", &token_url, None)));
    assert_eq!((status, first["token_type"].as_str()), (200, Some("DPoP")), "{first}");
    let next = first["refresh_token"].as_str().expect("successor").to_owned();
    for (what, proof) in
        [("no proof", None), ("another key's proof", Some(Holder::new().proof("POST", &token_url, None)))]
    {
        let (status, body) = refresh(&next, proof);
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "{what}: {body}");
    }
    let (status, again) = refresh(&next, Some(holder.proof("POST", &token_url, None)));
    assert_eq!((status, again["token_type"].as_str()), (200, Some("DPoP")), "the key's own proof: {again}");

    // A web app binds a session to its user's browser key from the start (`dpop_jkt`): the
    // first access token is bound, and the very first refresh needs that key's proof.
    let browser = Holder::new();
    let mint = |body: Value| {
        let res =
            client().post(format!("{}/api/v1/tokens", d.url)).bearer_auth(&issuer).json(&body).send().expect("mint");
        (res.status().as_u16(), res.json::<Value>().expect("json"))
    };
    let (status, bad) = mint(json!({"sub": "bob", "aud": "api", "dpop_jkt": "not-a-thumbprint"}));
    assert_eq!(status, 400, "{bad}");
    let (status, minted) = mint(json!({"sub": "bob", "aud": "api", "refresh": true, "dpop_jkt": browser.thumbprint()}));
    assert_eq!((status, minted["token_type"].as_str()), (200, Some("DPoP")), "{minted}");
    let access = minted["access_token"].as_str().expect("token");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(access.split('.').nth(1).expect("payload")).expect("base64"))
            .expect("claims");
    assert_eq!(claims["cnf"]["jkt"], browser.thumbprint().as_str());
    let first_refresh = minted["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, body) = refresh(&first_refresh, Some(holder.proof("POST", &token_url, None)));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "another key: {body}");
    let (status, body) = refresh(&first_refresh, None);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "no proof: {body}");
    let (status, body) = refresh(&first_refresh, Some(browser.proof("POST", &token_url, None)));
    assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")), "the browser's key: {body}");
}

/// nginx with the shipped forward-auth config forwards what a proof must name (the original
/// method and URL) and the proof itself: a bound token passes with a proof for the URL the
/// client called through nginx, and not without one.
#[test]
fn nginx_with_the_shipped_config_passes_a_bound_token_only_with_its_proof() {
    use crate::gateways::{forward_auth_nginx, register_client, tool};
    let nginx = tool(&["/usr/sbin/nginx", "/usr/bin/nginx"], "Debian's nginx");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER)];
    let d = Daemon::start(&data, &env, "dpop-nginx");
    let admin = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env);
    let admin = admin.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned();
    let (id, secret) = register_client(&d, &admin, &["orders:read"], &["orders-api"]);
    let (_nginx, url) = forward_auth_nginx(&nginx, &d, root.path());
    crate::support::eventually("nginx to answer", std::time::Duration::from_secs(10), || {
        client().get(&url).send().ok()
    });

    let holder = Holder::new();
    let proof = holder.proof("POST", &format!("{ISSUER}/oauth/token"), None);
    let (_, body) = client_credentials(&d, &id, &secret, Some(&proof));
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let call = |proof: Option<String>| {
        let mut req = client().get(&url).header("Authorization", format!("DPoP {token}"));
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        req.send().expect("through nginx").status().as_u16()
    };
    assert_eq!(call(Some(holder.proof("GET", &url, Some(&token)))), 200, "with a proof for this URL");
    assert_eq!(call(None), 401, "without a proof");
    assert_eq!(call(Some(holder.proof("GET", &format!("{url}/other"), Some(&token)))), 401, "a proof for another URL");
}

/// A client registered with `--require-dpop` gets no token without a proof.
#[test]
fn a_client_that_must_use_dpop_gets_no_token_without_a_proof() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER)];
    let d = Daemon::start(&data, &env, "dpop-required");
    let created =
        keyturn_ok(&data, &["client", "create", "--name", "strict", "--audience", "api", "--require-dpop"], &env);
    let created = fields(&created);
    let (id, secret) = (created["client_id"].clone(), created["client_secret"].clone());
    let ask = |proof: Option<String>| client_credentials(&d, &id, &secret, proof.as_deref());
    let (status, body) = ask(None);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_dpop_proof")), "{body}");
    let (status, body) = ask(Some(Holder::new().proof("POST", &format!("{ISSUER}/oauth/token"), None)));
    assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")), "{body}");
    let admin = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env);
    let admin = admin.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned();
    let listed = d.get("/api/v1/clients", Some(&admin));
    let strict = listed["clients"].as_array().expect("clients").iter().find(|c| c["client_id"] == id.as_str()).cloned();
    assert_eq!(strict.expect("listed")["dpop_required"], true, "{listed}");
}

/// With `use_dpop_nonce`, a proof without the server's nonce is turned away with the nonce to
/// use (RFC 9449 §8), at the token endpoint and at `/auth/verify`; one with it passes.
#[test]
fn with_server_nonces_a_proof_must_carry_the_one_it_was_handed() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER), ("KEYTURN_USE_DPOP_NONCE", "true")];
    let d = Daemon::start(&data, &env, "dpop-nonce");
    let created = fields(&keyturn_ok(&data, &["client", "create", "--name", "svc", "--audience", "api"], &env));
    let (id, secret) = (created["client_id"].clone(), created["client_secret"].clone());
    let token_url = format!("{ISSUER}/oauth/token");
    let holder = Holder::new();
    let ask = |proof: &str| {
        let res = client()
            .post(format!("{}/oauth/token", d.url))
            .basic_auth(&id, Some(&secret))
            .header("DPoP", proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .expect("token");
        let nonce = res.headers().get("dpop-nonce").map(|v| v.to_str().expect("ascii").to_owned());
        (res.status().as_u16(), nonce, res.json::<Value>().expect("json"))
    };
    let (status, nonce, body) = ask(&holder.proof("POST", &token_url, None));
    assert_eq!((status, body["error"].as_str()), (400, Some("use_dpop_nonce")), "{body}");
    let nonce = nonce.expect("the nonce to use");
    for wrong in ["made-up", ""] {
        let (status, _, body) = ask(&holder.proof_with_nonce("POST", &token_url, None, Some(wrong)));
        assert_eq!((status, body["error"].as_str()), (400, Some("use_dpop_nonce")), "{wrong:?}: {body}");
    }
    let (status, next, body) = ask(&holder.proof_with_nonce("POST", &token_url, None, Some(&nonce)));
    assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")), "{body}");
    assert!(next.is_some(), "a token response hands out the next nonce");
    let token = body["access_token"].as_str().expect("token").to_owned();

    let verify = |proof: String| {
        let res = client()
            .get(format!("{}/auth/verify", d.url))
            .header("Authorization", format!("DPoP {token}"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Original-URL", API)
            .header("DPoP", proof)
            .send()
            .expect("verify");
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned());
        (res.status().as_u16(), header("www-authenticate"), header("dpop-nonce"))
    };
    let (status, challenge, handed) = verify(holder.proof("GET", API, Some(&token)));
    assert_eq!(status, 401);
    assert!(challenge.is_some_and(|c| c.starts_with("DPoP error=\"use_dpop_nonce\"")));
    let handed = handed.expect("the nonce to use");
    assert_eq!(verify(holder.proof_with_nonce("GET", API, Some(&token), Some(&handed))).0, 200);
}
