//! Keys that never leave a PKCS#11 token: SoftHSM2 (Debian's package, which the test
//! command installs), a token initialised in a temp dir per test, the real `keyturn` binary,
//! OpenSC's `pkcs11-tool` to look at what the token holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{client, Daemon, FAST_LIFECYCLE};
use crate::support::{database, eventually, keyturn_ok, run_keyturn, scalar};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "2718-user";

/// A SoftHSM2 token directory of its own, with one token initialised.
pub(crate) struct Hsm {
    dir: tempfile::TempDir,
    label: &'static str,
}

impl Hsm {
    pub(crate) fn new(label: &'static str) -> Hsm {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("token dir");
        let conf =
            format!("directories.tokendir = {}\nobjectstore.backend = file\n", dir.path().join("tokens").display());
        std::fs::write(dir.path().join("softhsm2.conf"), conf).expect("conf");
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).expect("pin");
        let hsm = Hsm { dir, label };
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "3141-so"])
            .env("SOFTHSM2_CONF", hsm.conf())
            .output()
            .expect("softhsm2-util (Debian's softhsm2)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        hsm
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// The settings that put keys in this token.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf().display().to_string()),
            ("KEYTURN_KEY_CUSTODY", "pkcs11".into()),
            ("KEYTURN_PKCS11_MODULE", MODULE.into()),
            ("KEYTURN_PKCS11_TOKEN_LABEL", self.label.into()),
            ("KEYTURN_PKCS11_PIN_FILE", self.pin_file().display().to_string()),
        ]
    }

    /// What `pkcs11-tool` lists of the token's private keys.
    pub(crate) fn private_keys(&self) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", self.label, "--login", "--pin", PIN])
            .args(["--list-objects", "--type", "privkey"])
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .expect("pkcs11-tool (Debian's opensc)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    }
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A daemon signing ES256 with keys in `hsm`'s token, and an issuer API key for it.
struct Signing {
    daemon: Daemon,
    issuer: String,
    data: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Signing {
    fn start(hsm: &Hsm, root: &Path, name: &str) -> Signing {
        let data = root.join("data");
        let mut env = hsm.env();
        env.push(("KEYTURN_ALGORITHMS", "ES256".into()));
        let daemon = Daemon::start(&data, &borrowed(&env), name);
        let issuer = keyturn_ok(&data, &["apikey", "create", "--role", "issuer", "--name", "app"], &borrowed(&env));
        let issuer = issuer.lines().find(|l| l.starts_with("kt_")).expect("the key").trim().to_owned();
        Signing { daemon, issuer, data, env }
    }

    fn env(&self) -> Vec<(&'static str, &str)> {
        borrowed(&self.env)
    }

    fn issue(&self) -> reqwest::blocking::Response {
        client()
            .post(format!("{}/api/v1/tokens", self.daemon.url))
            .bearer_auth(&self.issuer)
            .json(&json!({"sub": "bob", "aud": "api"}))
            .send()
            .expect("issue")
    }
}

#[test]
fn keys_are_born_in_the_token_and_its_tokens_verify_against_the_jwks() {
    let hsm = Hsm::new("keyturn-keys");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut env = hsm.env();
    env.push(("KEYTURN_ALGORITHMS", "ES256,EdDSA,PS256".into()));
    let env = borrowed(&env);
    let daemon = Daemon::start(&data, &env, "custody");
    let admin = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env);
    let admin = admin.lines().find(|l| l.starts_with("kt_")).expect("the key").trim().to_owned();

    let keys = daemon.get("/api/v1/keys", Some(&admin));
    let keys = keys["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 6, "an active and a pending key per algorithm: {keys:?}");
    assert!(keys.iter().all(|k| k["custody"] == "pkcs11"), "every key lives in the token: {keys:?}");
    // The token holds each private key under its kid, sensitive and never extractable.
    let listed = hsm.private_keys();
    for k in keys {
        let kid = k["kid"].as_str().expect("kid");
        let entry =
            listed.split("Private Key Object").find(|o| o.contains(kid)).unwrap_or_else(|| panic!("{kid} in {listed}"));
        assert!(entry.contains("sensitive") && entry.contains("never extractable"), "{entry}");
    }
    // The database keeps no private half of any of them.
    let db = database(&data, &env);
    assert_eq!(scalar(&db, "SELECT count(*) FROM signing_keys WHERE length(sealed_private) > 0", &[]), 0);
    drop(db);

    // Tokens signed by the token verify against the published JWKS, x5c and all.
    let jwks: jsonwebtoken::jwk::JwkSet =
        client().get(format!("{}/.well-known/jwks.json", daemon.url)).send().expect("jwks").json().expect("json");
    for alg in ["ES256", "EdDSA", "PS256"] {
        let res = client()
            .post(format!("{}/api/v1/tokens", daemon.url))
            .bearer_auth(&admin)
            .json(&json!({"sub": "alice", "aud": "api", "alg": alg}))
            .send()
            .expect("issue");
        assert!(res.status().is_success(), "{alg}: {}", res.status());
        let issued: Value = res.json().expect("json");
        let token = issued["access_token"].as_str().expect("token");
        let header = jsonwebtoken::decode_header(token).expect("header");
        let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("the signing key is published");
        assert!(jwk.common.x509_chain.as_ref().is_some_and(|c| !c.is_empty()), "{alg}: its certificate is published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["api"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).map(|d| d.claims);
        assert_eq!(claims.expect("verifies")["sub"], "alice", "{alg}");
    }
    // A revoked key is destroyed in the token, and the audit log says so; another key signs.
    let active = keys.iter().find(|k| k["alg"] == "ES256" && k["state"] == "active").expect("active ES256");
    let kid = active["kid"].as_str().expect("kid");
    let res = client()
        .post(format!("{}/api/v1/keys/{kid}/revoke", daemon.url))
        .bearer_auth(&admin)
        .json(&json!({"reason": "the HSM's audit found a leak"}))
        .send()
        .expect("revoke");
    assert!(res.status().is_success(), "revoke: {}", res.status());
    assert!(!hsm.private_keys().contains(kid), "the revoked key is gone from the token");
    let audit = daemon.audit(&admin);
    assert!(audit.iter().any(|e| e["action"] == "key.destroy" && e["target"] == kid), "audited: {audit:?}");
    let res = client()
        .post(format!("{}/api/v1/tokens", daemon.url))
        .bearer_auth(&admin)
        .json(&json!({"sub": "alice", "aud": "api", "alg": "ES256"}))
        .send()
        .expect("issue");
    let issued: Value = res.json().expect("json");
    assert_ne!(issued["kid"], kid, "the replacement signs");
    assert!(hsm.private_keys().contains(issued["kid"].as_str().expect("kid")), "and lives in the token");
    assert!(!daemon.log_text().contains(PIN), "the PIN is never logged");
}

#[test]
fn a_wrong_pin_a_missing_module_an_absent_token_or_a_missing_mechanism_refuses_to_start() {
    let hsm = Hsm::new("keyturn-refusals");
    let root = tempfile::tempdir().expect("tempdir");
    let wrong_pin = root.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000").expect("pin");
    let data = root.path().join("data");
    let data_dir = data.display().to_string();
    let cases: [(&str, &str, &str); 3] = [
        ("KEYTURN_PKCS11_PIN_FILE", wrong_pin.to_str().expect("path"), "refused the PIN"),
        ("KEYTURN_PKCS11_MODULE", "/etc/hostname", "cannot be loaded"),
        ("KEYTURN_PKCS11_TOKEN_LABEL", "no-such-token", "no PKCS#11 token labelled 'no-such-token'"),
    ];
    for (name, value, says) in cases {
        let mut env = hsm.env();
        env.retain(|(k, _)| *k != name);
        env.push((name, value.to_owned()));
        env.push(("KEYTURN_DATA_DIR", data_dir.clone()));
        let out = run_keyturn(&["serve"], &borrowed(&env), root.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value}: refused");
        assert!(stderr.contains(says), "{name}={value}: the refusal names the problem: {stderr}");
        assert!(!stderr.contains(PIN) && !stderr.contains("0000"), "no PIN in: {stderr}");
        assert!(!Path::new(&data).exists(), "{name}={value}: nothing was created");
    }
    // `config check` shows the settings (never the PIN) and opens the token.
    let mut env = hsm.env();
    env.push(("KEYTURN_DATA_DIR", data_dir.clone()));
    let out = run_keyturn(&["config", "check"], &borrowed(&env), root.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("key_custody = \"pkcs11\""), "{stdout}");
    assert!(stdout.contains("PKCS#11 token 'keyturn-refusals' opens"), "{stdout}");
    assert!(!stdout.contains(PIN), "{stdout}");
    env.retain(|(k, _)| *k != "KEYTURN_PKCS11_PIN_FILE");
    env.push(("KEYTURN_PKCS11_PIN_FILE", wrong_pin.display().to_string()));
    let out = run_keyturn(&["config", "check"], &borrowed(&env), root.path());
    assert_eq!(out.status.code(), Some(2), "a wrong PIN fails the check");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the PIN"));
    // Each part missing from the settings is named too.
    let env = vec![("KEYTURN_KEY_CUSTODY", "pkcs11"), ("KEYTURN_DATA_DIR", data_dir.as_str())];
    let out = run_keyturn(&["serve"], &env, root.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pkcs11_module, pkcs11_token_label, pkcs11_pin_file"), "{stderr}");
    // A token that cannot do an algorithm the settings name is refused by the mechanism's
    // name, before anything is written: SoftHSM2 told by its own setting to offer ECDSA and
    // Ed25519 key generation but not Ed25519 signing.
    let conf = std::fs::read_to_string(hsm.conf()).expect("conf");
    let offered = "CKM_EC_KEY_PAIR_GEN,CKM_ECDSA,CKM_EC_EDWARDS_KEY_PAIR_GEN";
    std::fs::write(hsm.conf(), format!("{conf}slots.mechanisms = {offered}\n")).expect("conf");
    let mut env = hsm.env();
    env.push(("KEYTURN_DATA_DIR", data_dir.clone()));
    env.push(("KEYTURN_ALGORITHMS", "ES256,EdDSA".into()));
    for args in [&["serve"][..], &["config", "check"]] {
        let out = run_keyturn(args, &borrowed(&env), root.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: refused");
        assert!(stderr.contains("cannot do EdDSA: it lacks CKM_EDDSA"), "{args:?}: {stderr}");
        assert!(!Path::new(&data).exists(), "{args:?}: nothing was created");
    }
}

#[test]
fn a_key_gone_from_the_token_makes_readyz_503_and_issuance_answer_retry_later() {
    let hsm = Hsm::new("keyturn-gone");
    let root = tempfile::tempdir().expect("tempdir");
    let signing = Signing::start(&hsm, root.path(), "gone");
    let daemon = &signing.daemon;
    let issue = || signing.issue();
    let issued: Value = issue().json().expect("json");
    let kid = issued["kid"].as_str().expect("kid").to_owned();
    // Someone deletes the signing key from the token behind keyturn's back.
    let out = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", hsm.label, "--login", "--pin", PIN])
        .args(["--delete-object", "--type", "privkey", "--label", &kid])
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .expect("pkcs11-tool");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ready = client().get(format!("{}/readyz", daemon.url)).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let why = ready.text().expect("body");
    assert!(why.contains(&kid), "readiness names the key: {why}");
    let refused = issue();
    assert_eq!(refused.status().as_u16(), 503, "no token without its key");
    assert!(refused.headers().contains_key("retry-after"));
    let jwks = client().get(format!("{}/.well-known/jwks.json", daemon.url)).send().expect("jwks");
    assert!(jwks.status().is_success(), "the JWKS is still served");
    assert!(!daemon.log_text().contains(PIN));
}

/// The token's device goes away while keyturn serves (its SoftHSM2 token directory moved
/// aside) and comes back: meanwhile issuance answers 503 with `Retry-After`, `/readyz` 503,
/// the JWKS is served and nothing is recorded; afterwards the same key signs again without
/// a restart.
#[test]
fn a_token_that_fails_while_serving_comes_back_by_itself() {
    let hsm = Hsm::new("keyturn-away");
    let root = tempfile::tempdir().expect("tempdir");
    let signing = Signing::start(&hsm, root.path(), "away");
    let (daemon, data, env) = (&signing.daemon, &signing.data, signing.env());
    let issue = || signing.issue();
    let issued: Value = issue().json().expect("json");
    let kid = issued["kid"].as_str().expect("kid").to_owned();
    let db = database(data, &env);
    let recorded = || scalar(&db, "SELECT count(*) FROM issued_tokens", &[]);
    let before = recorded();

    let tokens = hsm.dir.path().join("tokens");
    let aside = hsm.dir.path().join("tokens-aside");
    std::fs::rename(&tokens, &aside).expect("the device goes");
    std::fs::create_dir(&tokens).expect("an empty token directory");
    for _ in 0..3 {
        let refused = issue();
        assert_eq!(refused.status().as_u16(), 503, "no token while the token is away");
        assert!(refused.headers().contains_key("retry-after"));
    }
    let ready = client().get(format!("{}/readyz", daemon.url)).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let jwks = client().get(format!("{}/.well-known/jwks.json", daemon.url)).send().expect("jwks");
    assert!(jwks.status().is_success(), "the JWKS is still served");
    assert_eq!(recorded(), before, "nothing recorded that was not answered");

    std::fs::remove_dir(&tokens).expect("the empty directory goes");
    std::fs::rename(&aside, &tokens).expect("the device comes back");
    let again: Value = eventually("issuance with the token back", Duration::from_secs(30), || {
        let answer = issue();
        answer.status().is_success().then(|| answer.json().expect("json"))
    });
    assert_eq!(again["kid"], kid.as_str(), "the same key signs: no rotation, no software key");
    let ready = client().get(format!("{}/readyz", daemon.url)).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 200, "{}", ready.text().unwrap_or_default());
    assert_eq!(recorded(), before + 1);
    assert!(!daemon.log_text().contains(PIN));
}

/// Keys end on their schedule and are destroyed in the token, audited; a key that ends while
/// the token is away is destroyed once it is back.
#[test]
fn keys_that_end_are_destroyed_in_the_token_even_when_it_was_away_then() {
    let hsm = Hsm::new("keyturn-ends");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut env: Vec<(&str, String)> = FAST_LIFECYCLE.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    env.extend(hsm.env());
    env.push(("KEYTURN_ALGORITHMS", "ES256".into()));
    let env = borrowed(&env);
    let daemon = Daemon::start(&data, &env, "ends");
    let admin = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env);
    let admin = admin.lines().find(|l| l.starts_with("kt_")).expect("the key").trim().to_owned();
    let targets = |action: &str| -> Vec<String> {
        let audit = daemon.audit(&admin);
        audit.iter().filter(|e| e["action"] == action).filter_map(|e| e["target"].as_str().map(str::to_owned)).collect()
    };
    let expired = eventually("a key to expire and be destroyed", Duration::from_secs(30), || {
        let destroyed = targets("key.destroy");
        targets("key.expire").into_iter().find(|kid| destroyed.contains(kid))
    });
    assert!(!hsm.private_keys().contains(&expired), "{expired} is gone from the token");

    // A token signed by the active key keeps that key until the token expires after the
    // key retires (4 s, plus 1 s of leeway). The token goes away as soon as it has retired,
    // so the key expires while the token is away; then the token comes back.
    let issued: Value = client()
        .post(format!("{}/api/v1/tokens", daemon.url))
        .bearer_auth(&admin)
        .json(&json!({"sub": "bob", "aud": "api", "ttl": "4s"}))
        .send()
        .expect("issue")
        .json()
        .expect("json");
    let signer = issued["kid"].as_str().expect("kid").to_owned();
    eventually("the signer to retire", Duration::from_secs(30), || {
        let keys = daemon.get("/api/v1/keys", Some(&admin));
        let keys = keys["keys"].as_array().expect("keys").clone();
        keys.iter().any(|k| k["kid"] == signer.as_str() && k["state"] == "retired").then_some(())
    });
    let tokens = hsm.dir.path().join("tokens");
    let aside = hsm.dir.path().join("tokens-aside");
    std::fs::rename(&tokens, &aside).expect("the device goes");
    std::fs::create_dir(&tokens).expect("an empty token directory");
    eventually("the signer to expire while the token is away", Duration::from_secs(30), || {
        targets("key.expire").contains(&signer).then_some(())
    });
    assert!(!targets("key.destroy").contains(&signer), "not destroyed: the token is away");
    let stranded = signer;
    std::fs::remove_dir(&tokens).expect("the empty directory goes");
    std::fs::rename(&aside, &tokens).expect("the device comes back");
    eventually("the stranded key destroyed", Duration::from_secs(30), || {
        targets("key.destroy").contains(&stranded).then_some(())
    });
    assert!(!hsm.private_keys().contains(&stranded), "{stranded} is gone from the token");
    assert!(!daemon.log_text().contains(PIN));
}

/// Two nodes on one database and one token (in a cluster, every node names the same token):
/// a key one node makes in the token signs on the other.
#[test]
fn a_key_one_node_makes_in_the_token_signs_on_another() {
    let hsm = Hsm::new("keyturn-shared");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut env = hsm.env();
    env.push(("KEYTURN_ALGORITHMS", "ES256".into()));
    let env = borrowed(&env);
    let a = Daemon::start(&data, &env, "node-a");
    let b = Daemon::start(&data, &env, "node-b");
    let admin = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env);
    let admin = admin.lines().find(|l| l.starts_with("kt_")).expect("the key").trim().to_owned();
    let post = |node: &Daemon, path: &str, body: Value| -> Value {
        let res = client().post(format!("{}{path}", node.url)).bearer_auth(&admin).json(&body).send().expect("post");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().expect("json")
    };
    let rotated = post(&a, "/api/v1/keys/rotate", json!({"mode": "emergency"}));
    // On a new installation no pending key is seasoned yet: a fresh key, made by node a in
    // the token, signs at once.
    assert_eq!(rotated["fresh_key"], true, "{rotated}");
    let fresh = rotated["activate"].as_str().expect("the key that signs now").to_owned();
    assert!(hsm.private_keys().contains(&fresh), "node a made it in the token");
    // Node b follows the key set within a second and signs with it, through the same token.
    eventually("node b to sign with the key node a made", Duration::from_secs(10), || {
        let issued = post(&b, "/api/v1/tokens", json!({"sub": "carol", "aud": "api"}));
        (issued["kid"] == fresh.as_str()).then_some(())
    });
    drop(a);
}

/// An installation with software keys moves to a token: the software keys serve on, every
/// key made from then on is made in the token, and revoking the software keys makes a token
/// key sign.
#[test]
fn an_installation_moves_from_software_keys_to_the_token() {
    let hsm = Hsm::new("keyturn-move");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let software = [("KEYTURN_ALGORITHMS", "ES256")];
    let admin = {
        let _d = Daemon::start(&data, &software, "software");
        let out = keyturn_ok(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &software);
        out.lines().find(|l| l.starts_with("kt_")).expect("the key").trim().to_owned()
    };
    let mut env = hsm.env();
    env.push(("KEYTURN_ALGORITHMS", "ES256".into()));
    let env = borrowed(&env);
    let d = Daemon::start(&data, &env, "moved");
    let post = |path: &str, body: Value| -> Value {
        let res = client().post(format!("{}{path}", d.url)).bearer_auth(&admin).json(&body).send().expect("post");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().expect("json")
    };
    let custody_of = |kid: &str| -> Value {
        let keys = d.get("/api/v1/keys", Some(&admin));
        keys["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).expect("the key")["custody"].clone()
    };
    let token = json!({"sub": "erin", "aud": "api"});
    let software_kid = post("/api/v1/tokens", token.clone())["kid"].as_str().expect("kid").to_owned();
    assert_eq!(custody_of(&software_kid), "software", "the software keys serve on");
    // Revoking the active software key: the software pending key signs, and the new pending
    // key is made in the token.
    post(&format!("/api/v1/keys/{software_kid}/revoke"), json!({"reason": "moving to the HSM"}));
    let next = post("/api/v1/tokens", token.clone())["kid"].as_str().expect("kid").to_owned();
    assert_eq!(custody_of(&next), "software");
    let keys = d.get("/api/v1/keys", Some(&admin));
    let pending =
        keys["keys"].as_array().expect("keys").iter().find(|k| k["state"] == "pending").expect("pending").clone();
    assert_eq!(pending["custody"], "pkcs11", "a key made after the move is made in the token");
    // Revoking that one too: the token's key signs.
    post(&format!("/api/v1/keys/{next}/revoke"), json!({"reason": "moving to the HSM"}));
    let in_token = post("/api/v1/tokens", token)["kid"].as_str().expect("kid").to_owned();
    assert_eq!(in_token, pending["kid"].as_str().expect("kid"));
    assert_eq!(custody_of(&in_token), "pkcs11");
    assert!(hsm.private_keys().contains(&in_token));
}
