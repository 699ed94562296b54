//! The documentation says what the code does: the README's settings table is the settings
//! declaration (`config::SETTINGS`), row for row.

use keyturn::config::SETTINGS;

/// The settings table as the README must show it.
fn settings_table() -> Vec<String> {
    let mut rows = vec!["| setting | environment | default | meaning |".to_owned(), "|---|---|---|---|".to_owned()];
    for s in SETTINGS {
        let env = if s.secret { format!("`{0}`, `{0}_FILE`", s.env()) } else { format!("`{}`", s.env()) };
        // Prose ("unset", "generated into the data dir") stays prose; values are code.
        let prose = s.default.chars().all(|c| c.is_ascii_lowercase() || c == ' ')
            && (s.default.contains(' ') || s.default == "unset");
        let default = if prose { s.default.to_owned() } else { format!("`{}`", s.default) };
        rows.push(format!("| `{}` | {env} | {default} | {} |", s.name, s.help));
    }
    rows
}

#[test]
fn the_readme_settings_table_is_the_settings_declaration() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let want = settings_table();
    let found: Vec<String> =
        readme.lines().skip_while(|l| *l != want[0]).take_while(|l| l.starts_with('|')).map(str::to_owned).collect();
    assert!(
        found == want,
        "the README's settings table differs from config::SETTINGS; it should read:\n\n{}\n",
        want.join("\n")
    );
}

/// The README's fenced blocks of `lang`, in order.
fn blocks(readme: &str, lang: &str) -> Vec<String> {
    let (mut out, mut current): (Vec<String>, Option<String>) = (Vec::new(), None);
    for line in readme.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            Some(_) if line.starts_with("```") => out.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Shell blocks that start something long-running or need what a test cannot have: the two
/// commands themselves (a test cannot run the test command; the daemon this test starts is
/// the first command), the benchmark, and the move to a PostgreSQL host of your own.
fn runs_here(block: &str) -> bool {
    !["cargo run", "./scripts/", "createdb", "db.internal"].iter().any(|w| block.contains(w))
}

/// The README works as written: every other shell block runs, in order, in one directory
/// beside a real daemon serving its `./keyturn-data`, with `keyturn` on the PATH as the
/// README says to put it and every `curl` failing on an HTTP error; the Node (jose) and
/// Python (PyJWT) verifier snippets verify a real token with their real libraries. The only
/// change to the text is the daemon's address (a free port instead of 8080) and, in the
/// snippets, the issuer's URL (this daemon instead of auth.example.com).
#[test]
fn the_readme_examples_run_as_written() {
    use std::process::Command;

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("keyturn-data");
    // The README's examples are the embedded default's: SQLite in ./keyturn-data, on both runs.
    let d = crate::daemon::Daemon::start(&data, &[crate::support::SQLITE], "readme");
    let address = d.url.trim_start_matches("http://").to_owned();
    // `export PATH="$PWD/target/release:$PATH"`, as the README says, from a directory where
    // target/release holds this build's binary.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_keyturn"));
    std::fs::create_dir_all(root.path().join("target/release")).expect("mkdir");
    std::os::unix::fs::symlink(bin, root.path().join("target/release/keyturn")).expect("symlink");
    let sh = blocks(&readme, "sh");
    let runnable: Vec<&String> = sh.iter().filter(|b| runs_here(b)).collect();
    assert!(runnable.len() >= 4, "the README's shell examples: {sh:?}");
    let script = format!(
        "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; echo; }}\n{}",
        runnable.iter().map(|b| b.replace("127.0.0.1:8080", &address)).collect::<Vec<_>>().join("\n")
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(root.path());
    // Nothing of the test runner's keyturn settings leaks in: the examples use the defaults.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYTURN_")) {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the README's shell examples failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("\"access_token\""), "the token example mints a token: {stdout}");
    assert!(root.path().join("backups/kek").exists(), "the backup example kept the key-encryption key");

    // The verifier snippets, with a real token for orders-api.
    let key = crate::daemon::keyturn_once(
        &data,
        &["apikey", "create", "--role", "issuer", "--name", "readme"],
        &[crate::support::SQLITE],
    );
    let token: serde_json::Value = crate::daemon::client()
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(key.trim())
        .json(&serde_json::json!({"sub": "alice", "aud": "orders-api"}))
        .send()
        .expect("mint")
        .json()
        .expect("json");
    let token = token["access_token"].as_str().expect("token");
    let issuer = d.url.clone();
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let js = blocks(&readme, "js").into_iter().next().expect("the jose snippet");
    assert!(js.contains("jwtVerify") && !js.contains("DPoP"), "the first js block is the plain verifier");
    let js = format!(
        "const token = process.argv[2];\n{}\nconsole.log(payload.sub);\n",
        js.replace("https://auth.example.com", &issuer)
    );
    let file = interop.join(format!("readme-{}.mjs", std::process::id()));
    std::fs::write(&file, js).expect("write");
    let out = Command::new("node").arg(&file).arg(token).current_dir(&interop).output().expect("node");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "the jose snippet: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice");
    let py = blocks(&readme, "python").into_iter().next().expect("the PyJWT snippet");
    let py = format!(
        "import sys\ntoken = sys.argv[1]\n{}\nprint(claims['sub'])\n",
        py.replace("https://auth.example.com", &issuer)
    );
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    let out = Command::new(python).arg("-c").arg(&py).arg(token).output().expect("python");
    assert!(out.status.success(), "the PyJWT snippet: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice");

    // The feed snippets: each follows the feed, sees a session's token as live, and refuses
    // it once the app that minted it logged the user out (RFC 7009 with its issuer key).
    let verifier = crate::daemon::keyturn_once(
        &data,
        &["apikey", "create", "--role", "verifier", "--name", "feed"],
        &[crate::support::SQLITE],
    );
    let session = |label: &str| -> String {
        let minted: serde_json::Value = crate::daemon::client()
            .post(format!("{}/api/v1/tokens", d.url))
            .bearer_auth(key.trim())
            .json(&serde_json::json!({"sub": "alice", "aud": "orders-api", "refresh": true, "session_label": label}))
            .send()
            .expect("mint")
            .json()
            .expect("json");
        minted["access_token"].as_str().expect("token").to_owned()
    };
    let logout = format!("{issuer}/oauth/revoke");
    let feed_js = blocks(&readme, "js").into_iter().find(|b| b.contains("pollRevocations")).expect("the feed snippet");
    let feed_js = format!(
        "const [token, issuerKey] = process.argv.slice(2);\n{}\n\
         const part = (i) => JSON.parse(Buffer.from(token.split('.')[i], 'base64url'));\n\
         const before = isRevoked(part(1), part(0).kid);\n\
         const res = await fetch('{logout}', {{ method: 'POST', headers: {{ authorization: `Bearer ${{issuerKey}}`, 'content-type': 'application/x-www-form-urlencoded' }}, body: `token=${{token}}` }});\n\
         if (!res.ok) throw new Error(`logout: ${{res.status}}`);\n\
         await pollRevocations();\n\
         console.log(`${{before}} ${{isRevoked(part(1), part(0).kid)}}`);\n\
         process.exit(0);\n",
        feed_js.replace("https://auth.example.com", &issuer)
    );
    let file = interop.join(format!("readme-feed-{}.mjs", std::process::id()));
    std::fs::write(&file, feed_js).expect("write");
    let out = Command::new("node")
        .arg(&file)
        .arg(session("node"))
        .arg(key.trim())
        .env("KEYTURN_VERIFIER_KEY", verifier.trim())
        .current_dir(&interop)
        .output()
        .expect("node");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "the jose feed snippet: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "false true", "live, then refused after the logout");
    let feed_py = blocks(&readme, "python").into_iter().nth(1).expect("the Python feed snippet");
    let feed_py = format!(
        "import sys, base64\ntoken, issuer_key = sys.argv[1], sys.argv[2]\n{}\n\
         part = lambda i: json.loads(base64.urlsafe_b64decode(token.split('.')[i] + '=='))\n\
         before = is_revoked(part(1), part(0)['kid'])\n\
         req = urllib.request.Request('{logout}', data=f'token={{token}}'.encode(), method='POST',\n\
             headers={{'Authorization': f'Bearer {{issuer_key}}', 'Content-Type': 'application/x-www-form-urlencoded'}})\n\
         urllib.request.urlopen(req, timeout=5).close()\n\
         poll_revocations()\n\
         print(before, is_revoked(part(1), part(0)['kid']))\n",
        feed_py.replace("https://auth.example.com", &issuer)
    );
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    let out = Command::new(python)
        .arg("-c")
        .arg(&feed_py)
        .arg(session("python"))
        .arg(key.trim())
        .env("KEYTURN_VERIFIER_KEY", verifier.trim())
        .output()
        .expect("python");
    assert!(out.status.success(), "the Python feed snippet: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "False True", "live, then refused after the logout");
}

/// The README's jose resource server for DPoP-bound tokens accepts a bound token with a fresh
/// proof of its key for the request, and refuses the replayed proof, a proof for another
/// URL, and the token without a proof.
#[test]
fn the_readme_dpop_resource_server_checks_the_binding() {
    use std::process::Command;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let snippet = blocks(&readme, "js").into_iter().find(|b| b.contains("verifyBound")).expect("the DPoP snippet");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = crate::daemon::Daemon::start(&data, &[crate::support::SQLITE], "readme-dpop");
    let env = [crate::support::SQLITE];
    let created =
        crate::support::keyturn_ok(&data, &["client", "create", "--name", "svc", "--audience", "orders-api"], &env);
    let field =
        |name: &str| created.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).expect("field").to_owned();
    let holder = crate::dpop::Holder::new();
    let proof = holder.proof("POST", &format!("{}/oauth/token", d.url), None);
    let (status, body) =
        crate::dpop::client_credentials(&d, &field("client_id"), &field("client_secret"), Some(&proof));
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let api = "https://orders.example/orders";
    // RFC 9449 §4.2: htu without the query (the request itself has one).
    let good = holder.proof("GET", api, Some(token));
    let elsewhere = holder.proof("GET", "https://orders.example/admin", Some(token));
    let script = format!(
        "const [token, good, elsewhere] = process.argv.slice(2);\n{}\n\
         const answers = [];\n\
         for (const [auth, proof] of [[`DPoP ${{token}}`, good], [`DPoP ${{token}}`, good], [`DPoP ${{token}}`, elsewhere], [`Bearer ${{token}}`, undefined]]) {{\n\
           try {{ answers.push((await verifyBound('GET', '{api}?page=2', auth, proof)).sub); }} catch (e) {{ answers.push(e.message); }}\n\
         }}\n\
         console.log(JSON.stringify(answers));\n",
        snippet.replace("https://auth.example.com", &d.url)
    );
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let file = interop.join(format!("readme-dpop-{}.mjs", std::process::id()));
    std::fs::write(&file, script).expect("write");
    let out = Command::new("node").arg(&file).args([token, &good, &elsewhere]).current_dir(&interop).output();
    let _ = std::fs::remove_file(&file);
    let out = out.expect("node");
    assert!(out.status.success(), "the DPoP snippet: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<String> = serde_json::from_slice(&out.stdout).expect("JSON");
    let sub = field("client_id");
    assert_eq!(
        answers,
        [sub.as_str(), "replayed proof", "proof for another request", "a bound token comes with a DPoP proof"],
    );
}
