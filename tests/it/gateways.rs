//! Real gateways in front of a real daemon, each configured from deploy/ as its own docs say:
//! Debian's nginx with `auth_request` and Caddy with `forward_auth` asking `/auth/verify`,
//! and Apache httpd with Debian's mod_oauth2 verifying by JWKS and by introspection.
//! `./scripts/test` installs all three. Each is sent a client's forged identity headers, in
//! both spellings: the API behind must see only keyturn's.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::daemon::{client, free_port, keyturn_once, Daemon};
use crate::support::eventually;

pub fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

pub fn tool(candidates: &[&str], install: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{} is not installed: run ./scripts/test, which installs {install}", candidates[0]))
}

/// A child process stopped when the test ends: asked to (SIGTERM), so that a server with
/// workers of its own (Apache) stops them too, and killed if it has not within 5 s.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks `conf` with `nginx -t`, then runs nginx on it in the foreground until dropped.
pub fn run_nginx(nginx: &Path, conf: &Path) -> Killed {
    let check = Command::new(nginx).arg("-t").arg("-c").arg(conf).output().expect("nginx -t");
    assert!(check.status.success(), "nginx -t: {}", String::from_utf8_lossy(&check.stderr));
    Killed(
        Command::new(nginx)
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    )
}

/// The API behind the gateway: answers every request 200 with the identity headers the
/// gateway forwarded (in either spelling), as JSON.
pub fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut seen = serde_json::Map::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    let name = name.to_ascii_lowercase();
                    if name.starts_with("x-auth-") || name.starts_with("x_auth_") || name == "authorization" {
                        seen.insert(name, Value::from(value.trim()));
                    }
                }
                line.clear();
            }
            let body = Value::Object(seen).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Mints an access token through the Admin API.
pub fn mint(d: &Daemon, key: &str, body: Value) -> Value {
    let res = client().post(format!("{}/api/v1/tokens", d.url)).bearer_auth(key).json(&body).send().expect("mint");
    assert!(res.status().is_success(), "mint: {}", res.status());
    res.json().expect("json")
}

/// The same token with its payload changed and the signature kept.
pub fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("claims");
    claims["sub"] = json!("mallory");
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

/// A client's own identity headers, in both spellings: what a gateway must never pass on.
pub const FORGED: [(&str, &str); 12] = [
    ("X-Auth-Subject", "forged-by-client"),
    ("X-Auth-Client-Id", "forged-by-client"),
    ("X-Auth-Scope", "forged-scope"),
    ("X-Auth-Audience", "forged-audience"),
    ("X-Auth-Token-Id", "forged-by-client"),
    ("X-Auth-Expires", "99999999999"),
    ("X_Auth_Subject", "forged-by-client"),
    ("X_Auth_Client_Id", "forged-by-client"),
    ("X_Auth_Scope", "forged-scope"),
    ("X_Auth_Audience", "forged-audience"),
    ("X_Auth_Token_Id", "forged-by-client"),
    ("X_Auth_Expires", "99999999999"),
];

/// A GET of `url` through a gateway, carrying every [`FORGED`] header and `token` as the
/// bearer token, if any.
pub fn forged_get(url: &str, token: Option<&str>) -> reqwest::blocking::RequestBuilder {
    let mut req = client().get(url);
    for (name, value) in FORGED {
        req = req.header(name, value);
    }
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Fails unless the backend saw none of [`FORGED`]: no underscore spelling at all, and each
/// of the six either keyturn's value (`expected`) or, where the gateway does not say, absent
/// or empty.
pub fn assert_no_forged_identity(seen: &Value, expected: &[(&str, &str)]) {
    for (name, forged) in FORGED {
        let got = &seen[name.to_ascii_lowercase()];
        assert!(!name.contains('_') || got.is_null(), "{name} reached the API: {seen}");
        assert_ne!(got.as_str(), Some(forged), "the client's {name} reached the API: {seen}");
    }
    for (name, value) in expected {
        assert_eq!(seen[name.to_ascii_lowercase()], *value, "{name}: {seen}");
    }
}

/// The same claims under `alg: none`, unsigned.
pub fn unsigned(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("header");
    header["alg"] = json!("none");
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), parts[1])
}

/// nginx with the shipped forward-auth config in front of `d` and a backend: nginx (running
/// until dropped) and the URL of an API path through it.
pub fn forward_auth_nginx(nginx: &Path, d: &Daemon, root: &Path) -> (Killed, String) {
    let (gateway, api) = (free_port(), backend());
    let conf =
        nginx_config(&deploy("forward-auth/nginx.conf"), d.url.trim_start_matches("http://"), gateway, api, root);
    (run_nginx(nginx, &conf), format!("http://127.0.0.1:{gateway}/orders/42"))
}

pub fn nginx_config(template: &Path, keyturn: &str, gateway: u16, backend: u16, root: &Path) -> PathBuf {
    let conf = std::fs::read_to_string(template)
        .expect("conf")
        .replace("127.0.0.1:8080", keyturn)
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{gateway}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{backend}"))
        .replace("/tmp/keyturn-gateway", &root.join("nginx").display().to_string());
    let path = root.join("nginx-gateway.conf");
    std::fs::write(&path, conf).expect("write");
    path
}

#[test]
fn nginx_auth_request_lets_only_active_tokens_through() {
    let nginx = tool(&["/usr/sbin/nginx", "/usr/bin/nginx"], "Debian's nginx");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "gateway"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "behind-gateway");
    let (_nginx, url) = forward_auth_nginx(&nginx, &d, root.path());
    let get = |token: Option<&str>| {
        let res = forged_get(&url, token).send().expect("through nginx");
        let status = res.status().as_u16();
        let challenges: Vec<String> =
            res.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap_or("").to_owned()).collect();
        assert!(challenges.len() <= 1, "one challenge, not {challenges:?}");
        (status, challenges.into_iter().next(), res.text().unwrap_or_default())
    };
    eventually("nginx to answer", Duration::from_secs(10), || client().get(&url).send().ok());

    let good = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "scope": "orders:read", "ttl": "10m"}));
    let token = good["access_token"].as_str().expect("token").to_owned();
    let (status, _, body) = get(Some(&token));
    assert_eq!(status, 200, "a valid token passes: {body}");
    let seen: Value = serde_json::from_str(&body).expect("backend's JSON");
    let (jti, exp) = (good["jti"].as_str().expect("jti").to_owned(), claim(&token, "exp").to_string());
    assert_no_forged_identity(
        &seen,
        &[
            ("X-Auth-Subject", "alice"),
            ("X-Auth-Client-Id", "apikey:gateway"),
            ("X-Auth-Scope", "orders:read"),
            ("X-Auth-Audience", "orders-api"),
            ("X-Auth-Token-Id", &jti),
            ("X-Auth-Expires", &exp),
        ],
    );

    let (status, challenge, _) = get(None);
    assert_eq!(status, 401, "no token");
    assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""), "keyturn's challenge reaches the client");
    for (what, bad) in [("tampered", tampered(&token)), ("alg none", unsigned(&token)), ("garbage", "abc.def".into())] {
        assert_eq!(get(Some(&bad)).0, 401, "{what}");
    }
    let other_aud = mint(&d, &key, json!({"sub": "alice", "aud": "billing", "scope": "orders:read"}));
    let (status, challenge, _) = get(other_aud["access_token"].as_str());
    assert_eq!(status, 403, "a token for another audience");
    assert!(
        challenge.as_deref().is_some_and(|c| c.starts_with("Bearer error=\"insufficient_scope\"")),
        "keyturn's challenge reaches the client on a 403 too: {challenge:?}"
    );
    let no_scope = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "scope": "orders:write"}));
    assert_eq!(get(no_scope["access_token"].as_str()).0, 403, "a token without the required scope");

    // Revoked: refused on the very next request.
    let res = client()
        .post(format!("{}/api/v1/revocations", d.url))
        .bearer_auth(&key)
        .json(&json!({"jti": good["jti"], "reason": "gateway test"}))
        .send()
        .expect("revoke");
    assert!(res.status().is_success(), "revoke: {}", res.status());
    assert_eq!(get(Some(&token)).0, 401, "revoked: refused at once");

    // Expired: refused once its second has passed (waited for as a condition, not slept).
    let short = mint(&d, &key, json!({"sub": "bob", "aud": "orders-api", "scope": "orders:read", "ttl": "1s"}));
    let short = short["access_token"].as_str().expect("token").to_owned();
    eventually("the 1 s token to be refused as expired", Duration::from_secs(10), || {
        (get(Some(&short)).0 == 401).then_some(())
    });
}

/// A claim of a token's payload (not verified: the gateway did that).
pub fn claim(token: &str, name: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims");
    claims[name].clone()
}

/// Caddy with the shipped Caddyfile, its addresses pointed at this test's daemon and API:
/// `forward_auth` lets only active tokens through, passes keyturn's 401 and 403 with their
/// challenge, and the API sees keyturn's identity headers, never the client's.
#[test]
fn caddy_forward_auth_passes_keyturns_identity_and_never_the_clients() {
    let caddy = tool(&["/usr/bin/caddy"], "Debian's caddy");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "caddy"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "behind-caddy");
    let (gateway, api) = (free_port(), backend());
    let shipped = std::fs::read_to_string(deploy("forward-auth/Caddyfile")).expect("Caddyfile");
    // The site and upstream addresses are this test's; the admin endpoint is off so tests
    // running together do not share its port.
    let conf = format!("{{\n\tadmin off\n}}\n\n{shipped}")
        .replace("api.example.com", &format!("http://127.0.0.1:{gateway}"))
        .replace("keyturn:8080", d.url.trim_start_matches("http://"))
        .replace("orders:9000", &format!("127.0.0.1:{api}"));
    let file = root.path().join("Caddyfile");
    std::fs::write(&file, conf).expect("write");
    let home = root.path().join("caddy-home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let env = [("HOME", &home), ("XDG_DATA_HOME", &home), ("XDG_CONFIG_HOME", &home)];
    let check = Command::new(&caddy)
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .envs(env)
        .output()
        .expect("caddy validate");
    assert!(check.status.success(), "caddy validate: {}", String::from_utf8_lossy(&check.stderr));
    let log = root.path().join("caddy.log");
    let _caddy = Killed(
        Command::new(&caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("caddy"),
    );
    let url = format!("http://127.0.0.1:{gateway}/orders/42");
    eventually("caddy to answer", Duration::from_secs(20), || client().get(&url).send().ok());
    let get = |token: Option<&str>| {
        let res = forged_get(&url, token).send().expect("through caddy");
        let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_owned());
        (res.status().as_u16(), challenge, res.text().unwrap_or_default())
    };
    // Caddy's copy_headers sets only the headers keyturn's answer has a value for, so the
    // shipped file deletes the client's own first, in both spellings.
    let bare = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "scope": "orders:read", "ttl": "10m"}));
    let token = bare["access_token"].as_str().expect("token").to_owned();
    let (status, _, body) = get(Some(&token));
    assert_eq!(status, 200, "a valid token passes: {body} {}", std::fs::read_to_string(&log).unwrap_or_default());
    let seen: Value = serde_json::from_str(&body).expect("backend's JSON");
    let jti = bare["jti"].as_str().expect("jti").to_owned();
    assert_no_forged_identity(
        &seen,
        &[("X-Auth-Subject", "alice"), ("X-Auth-Scope", "orders:read"), ("X-Auth-Token-Id", &jti)],
    );
    let (status, challenge, _) = get(None);
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer error=\"invalid_token\"")), "no token");
    assert_eq!(get(Some(&tampered(&token))).0, 401, "tampered");
    let no_scope = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "scope": "orders:write"}));
    let (status, challenge, _) = get(no_scope["access_token"].as_str());
    assert_eq!(status, 403, "a token without the required scope");
    assert!(challenge.is_some_and(|c| c.contains("insufficient_scope")), "keyturn's challenge on a 403");

    // A DPoP-bound token: Caddy forwards the method and the URL the client called
    // (X-Forwarded-Method, -Proto, -Host, -Uri) and the proof; it passes with a proof of its
    // key for that request only.
    let holder = crate::dpop::Holder::new();
    let bound = mint(
        &d,
        &key,
        json!({"sub": "alice", "aud": "orders-api", "scope": "orders:read", "dpop_jkt": holder.thumbprint()}),
    );
    let bound = bound["access_token"].as_str().expect("token").to_owned();
    let with_proof = |proof: Option<String>| {
        let mut req = client().get(&url).header("Authorization", format!("DPoP {bound}"));
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        let res = req.send().expect("through caddy");
        let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_owned());
        (res.status().as_u16(), challenge)
    };
    let (status, challenge) = with_proof(None);
    assert_eq!(status, 401, "a bound token without its proof");
    assert!(challenge.is_some_and(|c| c.starts_with("DPoP error=")), "RFC 9449's challenge through Caddy");
    let elsewhere = format!("http://127.0.0.1:{gateway}/orders/43");
    assert_eq!(with_proof(Some(holder.proof("GET", &elsewhere, Some(&bound)))).0, 401, "a proof for another URL");
    let (status, _) = with_proof(Some(holder.proof("GET", &url, Some(&bound))));
    assert_eq!(status, 200, "with its proof for this request: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// Registers an OAuth client through the Admin API: (client_id, secret).
pub fn register_client(d: &Daemon, key: &str, scopes: &[&str], audiences: &[&str]) -> (String, String) {
    let res = client()
        .post(format!("{}/api/v1/clients", d.url))
        .bearer_auth(key)
        .json(&json!({"name": "gateway", "scopes": scopes, "audiences": audiences}))
        .send()
        .expect("create client");
    assert_eq!(res.status(), 201);
    let body: Value = res.json().expect("json");
    (body["client_id"].as_str().expect("id").to_owned(), body["client_secret"].as_str().expect("secret").to_owned())
}

#[test]
fn apache_mod_oauth2_verifies_by_jwks_and_by_introspection() {
    let apache = tool(&["/usr/sbin/apache2"], "Debian's apache2 and libapache2-mod-oauth2");
    assert!(
        Path::new("/usr/lib/apache2/modules/mod_oauth2.so").exists(),
        "mod_oauth2 is not installed: run ./scripts/test, which installs libapache2-mod-oauth2"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "apache"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "behind-apache");
    let (client_id, secret) = register_client(&d, &key, &[], &["payments-api"]);
    let api = backend();
    // Apache's workers run as www-data: its directory must be theirs to enter.
    let dir = root.path().join("apache");
    std::fs::create_dir_all(&dir).expect("mkdir");
    use std::os::unix::fs::PermissionsExt as _;
    for p in [root.path(), &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let port = free_port();
    let env = [
        ("KEYTURN_URL", d.url.clone()),
        ("API_URL", format!("http://127.0.0.1:{api}")),
        ("KEYTURN_CLIENT_ID", client_id),
        ("KEYTURN_CLIENT_SECRET", secret),
        ("GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        ("GATEWAY_DIR", dir.display().to_string()),
    ];
    let conf = deploy("forward-auth/apache-mod_oauth2.conf");
    let check = Command::new(&apache).arg("-t").arg("-f").arg(&conf).envs(env.clone()).output().expect("apache2 -t");
    assert!(check.status.success(), "apache2 -t: {}", String::from_utf8_lossy(&check.stderr));
    let log = root.path().join("apache.log");
    let _apache = Killed(
        Command::new(&apache)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("apache2"),
    );
    let seen_by_api = std::cell::RefCell::new(Value::Null);
    let get = |path: &str, token: Option<&str>| {
        let res = forged_get(&format!("http://127.0.0.1:{port}{path}"), token).send().expect("through apache");
        let subject = res.headers().get("x-subject").map(|v| v.to_str().unwrap_or("").to_owned());
        let status = res.status().as_u16();
        *seen_by_api.borrow_mut() = serde_json::from_str(&res.text().unwrap_or_default()).unwrap_or(Value::Null);
        (status, subject)
    };
    eventually("apache to answer", Duration::from_secs(20), || {
        client().get(format!("http://127.0.0.1:{port}/orders/")).send().ok()
    });
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let good = mint(&d, &key, json!({"sub": "alice", "aud": "payments-api", "ttl": "10m"}));
    let token = good["access_token"].as_str().expect("token").to_owned();
    for path in ["/orders/", "/payments/"] {
        assert_eq!(get(path, Some(&token)), (200, Some("alice".to_owned())), "{path}: {}", log_text());
        let jti = good["jti"].as_str().expect("jti");
        assert_no_forged_identity(
            &seen_by_api.borrow(),
            &[("X-Auth-Subject", "alice"), ("X-Auth-Audience", "payments-api"), ("X-Auth-Token-Id", jti)],
        );
        assert_eq!(get(path, None).0, 401, "{path}: no token");
        assert_eq!(get(path, Some(&tampered(&token))).0, 401, "{path}: tampered");
        assert_eq!(get(path, Some(&unsigned(&token))).0, 401, "{path}: alg none");
    }
    // Introspection knows about revocation (after mod_oauth2's cache entry of 1 s ends); the
    // JWKS verifier cannot, by design.
    let res = client()
        .post(format!("{}/api/v1/revocations", d.url))
        .bearer_auth(&key)
        .json(&json!({"jti": good["jti"], "reason": "apache test"}))
        .send()
        .expect("revoke");
    assert!(res.status().is_success());
    eventually("introspection through mod_oauth2 to refuse the revoked token", Duration::from_secs(10), || {
        (get("/payments/", Some(&token)).0 == 401).then_some(())
    });
    assert_eq!(get("/orders/", Some(&token)).0, 200, "a signature check alone still accepts it");
    // A token for another audience is not this client's to introspect: inactive.
    let other = mint(&d, &key, json!({"sub": "alice", "aud": "billing"}));
    assert_eq!(get("/payments/", other["access_token"].as_str()).0, 401, "not addressed to payments-api");
}

/// The Traefik, Caddy and Envoy snippets in deploy/forward-auth parse, point at
/// `/auth/verify` and forward exactly the identity headers keyturn sends.
#[test]
fn the_other_gateways_snippets_name_keyturns_endpoint_and_headers() {
    let names: Vec<String> =
        keyturn::web::forward::IDENTITY_HEADERS.iter().map(|(h, _)| h.to_ascii_lowercase()).collect();
    let yaml = |file: &str| -> Value {
        let out = Command::new("python3")
            .args(["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
            .arg(deploy(file))
            .output()
            .expect("python3");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let traefik = yaml("forward-auth/traefik.yml");
    let fa = &traefik["http"]["middlewares"]["keyturn-auth"]["forwardAuth"];
    assert!(fa["address"].as_str().expect("address").contains("/auth/verify?"), "{fa}");
    let copied: Vec<String> = fa["authResponseHeaders"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h.as_str().expect("name").to_ascii_lowercase())
        .collect();
    assert_eq!(copied, names, "traefik copies every identity header");
    // Traefik passes header names with underscores: the strip middleware removes each (an
    // empty value removes a header), and runs on the router before the forward auth.
    let underscored: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
    let strip = &traefik["http"]["middlewares"]["keyturn-strip"]["headers"]["customRequestHeaders"];
    let stripped: std::collections::BTreeSet<String> = strip
        .as_object()
        .expect("customRequestHeaders")
        .iter()
        .filter(|(_, v)| v.as_str() == Some(""))
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert_eq!(stripped, underscored.iter().cloned().collect(), "traefik strips every underscore spelling");
    assert_eq!(traefik["http"]["routers"]["orders"]["middlewares"], json!(["keyturn-strip", "keyturn-auth"]));
    let envoy = yaml("forward-auth/envoy.yaml");
    let text = envoy.to_string();
    assert!(text.contains("\"path_prefix\":\"/auth/verify\"") && text.contains("\"prefix\":\"x-auth-\""), "{text}");
    // Envoy drops names with underscores, and removes the client's six on arrival, before
    // ext_authz sets keyturn's.
    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["common_http_protocol_options"]["headers_with_underscores_action"], "DROP_HEADER", "{hcm}");
    let removed: Vec<String> = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
        .as_array()
        .expect("mutations")
        .iter()
        .filter_map(|m| m["remove"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(removed, names, "envoy removes every identity header a client sent");
    let caddy = std::fs::read_to_string(deploy("forward-auth/Caddyfile")).expect("Caddyfile");
    let line = caddy.lines().find(|l| l.trim().starts_with("copy_headers")).expect("copy_headers");
    let copied: Vec<String> = line.split_whitespace().skip(1).map(str::to_ascii_lowercase).collect();
    assert_eq!(copied, names, "caddy copies every identity header");
    assert!(caddy.contains("uri /auth/verify?"));
    let deleted: Vec<String> =
        caddy.lines().filter_map(|l| l.trim().strip_prefix("request_header -")).map(str::to_ascii_lowercase).collect();
    let both: Vec<String> = names.iter().chain(&underscored).cloned().collect();
    assert_eq!(deleted, both, "caddy deletes the client's identity headers in both spellings");
}
