//! What binding a token to its holder and authenticating without a secret cost per request,
//! in the same run on the same core: `client_credentials` with a secret (the reference),
//! with a DPoP proof, and with a private_key_jwt assertion instead of the secret; and
//! `/auth/verify` with a bearer token (the reference) and with a DPoP-bound token and its
//! proof. keyturn runs pinned to core 1 with wrk on core 0; every proof and assertion is
//! fresh (made before each measurement, sent once, its jti recorded in the replay cache), so
//! the rates include the replay cache's write. Three rounds alternate the variants; the
//! median round is shown. The CPU column is core 1's time per answered request (/proc).
//!
//! Run through `./scripts/bench holder`, which installs wrk.

use std::path::Path;
use std::process::Command;

mod common;

use common::{basic, cli, each_once_script, free_port, pinned, post_script, rotating_script, wrk_on, Pinned, Wrk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECS: u64 = 4;
const CONNS: u32 = 32;
const ROUNDS: usize = 3;
/// Fresh proofs or assertions made per measurement: more than a variant answers in SECS.
const FRESH: usize = 60_000;

/// A P-256 key: what signs, and its public JWK.
fn p256() -> (EncodingKey, Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "bench",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn now() -> i64 {
    keyturn::clock::to_unix(keyturn::clock::Clock::system().now())
}

/// `FRESH` DPoP proofs of `key` for `method` `url` (and `token`, at a resource).
fn proofs(key: &EncodingKey, jwk: &Value, method: &str, url: &str, token: Option<&str>, round: &str) -> Vec<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    let mut public = jwk.clone();
    public.as_object_mut().expect("jwk").remove("kid");
    header.jwk = Some(serde_json::from_value(public).expect("jwk"));
    let ath = token.map(keyturn::dpop::access_token_hash);
    let iat = now();
    (0..FRESH)
        .map(|n| {
            let mut claims = json!({"jti": format!("{round}-{n}"), "htm": method, "htu": url, "iat": iat});
            if let Some(a) = &ath {
                claims["ath"] = Value::from(a.as_str());
            }
            jsonwebtoken::encode(&header, &claims, key).expect("sign")
        })
        .collect()
}

/// `FRESH` client assertions of `client_id` for `aud`.
fn assertions(key: &EncodingKey, client_id: &str, aud: &str, round: &str) -> Vec<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("bench".into());
    let iat = now();
    (0..FRESH)
        .map(|n| {
            let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": iat, "exp": iat + 60, "jti": format!("{round}-{n}")});
            jsonwebtoken::encode(&header, &claims, key).expect("sign")
        })
        .collect()
}

fn field(out: &str, name: &str) -> String {
    out.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).expect("field").to_owned()
}

/// One measurement: wrk's report and core 1's CPU per answered request.
struct Measured {
    wrk: Wrk,
    cpu_us: f64,
}

fn measure(node: &Pinned, path: &str, script: &Path) -> Measured {
    let before = node.cpu(None);
    let wrk = wrk_on(&format!("{}{path}", node.url), CONNS, SECS, Some(script));
    let used = node.cpu(None) - before;
    let answered = wrk.requests.max(1) as f64;
    let not_ok = wrk.script.iter().find(|(k, _)| k == "not_ok").map_or(0.0, |(_, v)| *v);
    let reused = wrk.script.iter().find(|(k, _)| k == "reused").map_or(0.0, |(_, v)| *v);
    assert!(not_ok == 0.0 && wrk.errors == 0, "{path}: {not_ok} answers not 200, {} errors", wrk.errors);
    assert!(reused == 0.0, "{path}: the run outran its {FRESH} fresh proofs");
    Measured { cpu_us: used.as_secs_f64() * 1e6 / answered, wrk }
}

fn main() {
    keyturn::keys::install_crypto_provider();
    for tool in ["wrk", "taskset"] {
        if Command::new(tool).arg("--version").output().is_err() && Command::new(tool).arg("-V").output().is_err() {
            eprintln!("{tool} is missing: run ./scripts/bench holder, which installs it");
            std::process::exit(1);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    cli(&data, &["init"]);
    let secret_client = cli(&data, &["client", "create", "--name", "secret", "--audience", "api"]);
    let (id, secret) = (field(&secret_client, "client_id"), field(&secret_client, "client_secret"));
    let (client_key, client_jwk) = p256();
    let jwks_file = dir.path().join("client-jwks.json");
    std::fs::write(&jwks_file, json!({"keys": [client_jwk]}).to_string()).expect("jwks");
    let keyed = cli(
        &data,
        &["client", "create", "--name", "keyed", "--audience", "api", "--jwks-file", jwks_file.to_str().expect("path")],
    );
    let keyed_id = field(&keyed, "client_id");

    let port = free_port();
    let mut cmd = pinned(env!("CARGO_BIN_EXE_keyturn"));
    cmd.arg("serve")
        .env("KEYTURN_DATA_DIR", &data)
        .env("KEYTURN_PORT", port.to_string())
        .env("KEYTURN_LOG_LEVEL", "warn")
        .env("KEYTURN_AUTH_FAILURE_LIMIT", "100000");
    let node = Pinned::spawn(cmd, port, "/readyz", &dir.path().join("keyturn.log"));
    let token_url = format!("{}/oauth/token", node.url);
    let resource = format!("{}/orders", node.url);
    let auth = basic(&id, &secret);
    let http = reqwest::blocking::Client::new();
    let token = |dpop: Option<String>| -> String {
        let mut req =
            http.post(&token_url).header("Authorization", &auth).form(&[("grant_type", "client_credentials")]);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        let body: Value = req.send().expect("token").json().expect("json");
        body["access_token"].as_str().expect("access_token").to_owned()
    };
    let (holder_key, holder_jwk) = p256();
    let bearer = token(None);
    let bound = token(Some(proofs(&holder_key, &holder_jwk, "POST", &token_url, None, "setup").remove(0)));

    let names = [
        "client_credentials, client_secret_basic (reference)",
        "client_credentials, client_secret_basic + DPoP proof",
        "client_credentials, private_key_jwt (ES256 assertion)",
        "/auth/verify, bearer token (reference)",
        "/auth/verify, DPoP-bound token + proof",
    ];
    let mut rounds: Vec<Vec<Measured>> = (0..names.len()).map(|_| Vec::new()).collect();
    let form = "application/x-www-form-urlencoded";
    let body = "grant_type=client_credentials";
    for round in 0..ROUNDS {
        let r = format!("r{round}");
        let d = dir.path();
        let secret_script = post_script(d, "secret", "/oauth/token", &auth, form, body);
        rounds[0].push(measure(&node, "/oauth/token", &secret_script));
        let dpop = proofs(&holder_key, &holder_jwk, "POST", &token_url, None, &format!("{r}-token"));
        let headers = [("Authorization", auth.as_str()), ("Content-Type", form)];
        let script = each_once_script(d, "dpop", "POST", "/oauth/token", &headers, Some("DPoP"), body, &dpop);
        rounds[1].push(measure(&node, "/oauth/token", &script));
        let signed = assertions(&client_key, &keyed_id, &token_url, &r);
        let prefix = "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=";
        let script =
            each_once_script(d, "pkjwt", "POST", "/oauth/token", &[("Content-Type", form)], None, prefix, &signed);
        rounds[2].push(measure(&node, "/oauth/token", &script));
        let script = rotating_script(d, "verify", "GET", "/auth/verify", "", std::slice::from_ref(&bearer));
        rounds[3].push(measure(&node, "/auth/verify", &script));
        let at_resource = proofs(&holder_key, &holder_jwk, "GET", &resource, Some(&bound), &format!("{r}-verify"));
        let dpop_auth = format!("DPoP {bound}");
        let headers = [
            ("Authorization", dpop_auth.as_str()),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URL", resource.as_str()),
        ];
        let script =
            each_once_script(d, "verify-dpop", "GET", "/auth/verify", &headers, Some("DPoP"), "", &at_resource);
        rounds[4].push(measure(&node, "/auth/verify", &script));
    }
    let median = |ms: &mut Vec<Measured>| {
        ms.sort_by(|a, b| a.wrk.rps.total_cmp(&b.wrk.rps));
        ms.remove(ms.len() / 2)
    };
    let results: Vec<Measured> = rounds.iter_mut().map(median).collect();
    println!("\nkeyturn on one core (core 1), wrk on core 0, {CONNS} connections, {SECS} s, median of {ROUNDS} rounds");
    println!("| request | rate | vs reference | p50 | p99 | CPU per request |");
    println!("|---|---|---|---|---|---|");
    for (i, (name, m)) in names.iter().zip(&results).enumerate() {
        let reference = if i < 3 { &results[0] } else { &results[3] };
        println!(
            "| {name} | {:.0}/s | {:.2} | {:.2} ms | {:.2} ms | {:.0} µs |",
            m.wrk.rps,
            m.wrk.rps / reference.wrk.rps,
            m.wrk.p50_ms,
            m.wrk.p99_ms,
            m.cpu_us
        );
    }
    let cost = |i: usize, of: usize| results[i].cpu_us - results[of].cpu_us;
    println!(
        "\nthe check's own cost on core 1: DPoP at the token endpoint {:+.0} µs, private_key_jwt {:+.0} µs, DPoP at /auth/verify {:+.0} µs per request",
        cost(1, 0),
        cost(2, 0),
        cost(4, 3)
    );
}
