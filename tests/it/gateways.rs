//! Real gateways in front of a real daemon, each configured from deploy/ as its own docs say:
//! Debian's nginx with `auth_request` asking `/auth/verify`, and Apache httpd with Debian's
//! mod_oauth2 verifying by JWKS and by introspection. `./scripts/test` installs both.

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

/// A child process killed when the test ends.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
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
/// gateway forwarded, as JSON.
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
                    if name.starts_with("x-auth-") || name == "authorization" {
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

/// The same claims under `alg: none`, unsigned.
pub fn unsigned(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("header");
    header["alg"] = json!("none");
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), parts[1])
}

fn nginx_config(template: &Path, keyturn: &str, gateway: u16, backend: u16, root: &Path) -> PathBuf {
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
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "gateway"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "behind-gateway");
    let (gateway, api) = (free_port(), backend());
    let conf = nginx_config(
        &deploy("forward-auth/nginx.conf"),
        d.url.trim_start_matches("http://"),
        gateway,
        api,
        root.path(),
    );
    let _nginx = run_nginx(&nginx, &conf);
    let url = format!("http://127.0.0.1:{gateway}/orders/42");
    let get = |token: Option<&str>| {
        let mut req = client().get(&url).header("X-Auth-Subject", "forged-by-client");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().expect("through nginx");
        let status = res.status().as_u16();
        let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_owned());
        (status, challenge, res.text().unwrap_or_default())
    };
    eventually("nginx to answer", Duration::from_secs(10), || client().get(&url).send().ok());

    let good = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "scope": "orders:read", "ttl": "10m"}));
    let token = good["access_token"].as_str().expect("token").to_owned();
    let (status, _, body) = get(Some(&token));
    assert_eq!(status, 200, "a valid token passes: {body}");
    let seen: Value = serde_json::from_str(&body).expect("backend's JSON");
    assert_eq!(seen["x-auth-subject"], "alice", "the API gets keyturn's subject, not the client's: {seen}");
    assert_eq!(seen["x-auth-scope"], "orders:read");
    assert_eq!(seen["x-auth-token-id"], good["jti"]);

    let (status, challenge, _) = get(None);
    assert_eq!(status, 401, "no token");
    assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""), "keyturn's challenge reaches the client");
    for (what, bad) in [("tampered", tampered(&token)), ("alg none", unsigned(&token)), ("garbage", "abc.def".into())] {
        assert_eq!(get(Some(&bad)).0, 401, "{what}");
    }
    let other_aud = mint(&d, &key, json!({"sub": "alice", "aud": "billing", "scope": "orders:read"}));
    assert_eq!(get(other_aud["access_token"].as_str()).0, 403, "a token for another audience");
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
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "apache"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "behind-apache");
    let (client_id, secret) = register_client(&d, &key, &[], &["payments-api"]);
    // Apache's workers run as www-data: its directory must be theirs to enter.
    let dir = root.path().join("apache");
    std::fs::create_dir_all(dir.join("www/orders")).expect("mkdir");
    std::fs::create_dir_all(dir.join("www/payments")).expect("mkdir");
    std::fs::write(dir.join("www/orders/index.html"), "orders\n").expect("write");
    std::fs::write(dir.join("www/payments/index.html"), "payments\n").expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    for p in [root.path(), &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let port = free_port();
    let env = [
        ("KEYTURN_URL", d.url.clone()),
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
    let get = |path: &str, token: Option<&str>| {
        let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().expect("through apache");
        let subject = res.headers().get("x-subject").map(|v| v.to_str().unwrap_or("").to_owned());
        (res.status().as_u16(), subject)
    };
    eventually("apache to answer", Duration::from_secs(20), || {
        client().get(format!("http://127.0.0.1:{port}/orders/")).send().ok()
    });
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let good = mint(&d, &key, json!({"sub": "alice", "aud": "payments-api", "ttl": "10m"}));
    let token = good["access_token"].as_str().expect("token").to_owned();
    for path in ["/orders/", "/payments/"] {
        assert_eq!(get(path, Some(&token)), (200, Some("alice".to_owned())), "{path}: {}", log_text());
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
    let envoy = yaml("forward-auth/envoy.yaml");
    let text = envoy.to_string();
    assert!(text.contains("\"path_prefix\":\"/auth/verify\"") && text.contains("\"prefix\":\"x-auth-\""), "{text}");
    let caddy = std::fs::read_to_string(deploy("forward-auth/Caddyfile")).expect("Caddyfile");
    let line = caddy.lines().find(|l| l.trim().starts_with("copy_headers")).expect("copy_headers");
    let copied: Vec<String> = line.split_whitespace().skip(1).map(str::to_ascii_lowercase).collect();
    assert_eq!(copied, names, "caddy copies every identity header");
    assert!(caddy.contains("uri /auth/verify?"));
}
