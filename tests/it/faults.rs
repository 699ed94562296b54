//! Faults of the machine under a running daemon: a full disk makes `/readyz` say so (503)
//! and issuance refuse (never a token that was not recorded); freeing space brings both back
//! without a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{self, eventually_async, fake_clock, http};

/// A small filesystem of its own (a 16 MiB tmpfs; the test command runs as root, as CI
/// does), unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed: the test command runs as root to simulate a full disk");
        SmallDisk { path, _dir: dir }
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn ready(url: &str) -> u16 {
    http().get(format!("{url}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn issue(url: &str, key: &str) -> u16 {
    let res = http()
        .post(format!("{url}/api/v1/tokens"))
        .bearer_auth(key)
        .json(&json!({"sub": "alice", "aud": "api"}))
        .send()
        .await
        .expect("issue");
    res.status().as_u16()
}

fn recorded(data: &Path) -> i64 {
    let db = support::database(data, &[support::SQLITE]);
    support::scalar(&db, "SELECT count(*) FROM issued_tokens", keyturn::store::args![])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_reported_and_refused_then_recovered_without_a_restart() {
    let disk = SmallDisk::mount();
    let data = disk.path.join("data");
    // A full disk under the SQLite file; PostgreSQL's faults are in tests/it/cluster.rs.
    let server = support::start(&data, &[support::SQLITE], fake_clock()).await;
    let svc = server.service.clone();
    let key = tokio::spawn(async move {
        svc.clients()
            .create_api_key(keyturn::service::apikeys::Role::Issuer, "i", &keyturn::service::Actor::cli())
            .await
            .expect("key")
            .1
            .to_string()
    })
    .await
    .expect("join");
    let url = server.url();
    assert_eq!(ready(&url).await, 200);
    assert_eq!(issue(&url, &key).await, 200);

    let filler = disk.fill();
    eventually_async("/readyz to report the full disk", Duration::from_secs(15), || async {
        (ready(&url).await == 503).then_some(())
    })
    .await;
    let body = http().get(format!("{url}/readyz")).send().await.expect("readyz").text().await.expect("body");
    assert!(body.contains("cannot take writes"), "{body}");
    // Issuance either records its token in space SQLite already holds, or refuses: it never
    // answers a token it could not record.
    for _ in 0..50 {
        let before = recorded(&data);
        let status = issue(&url, &key).await;
        let after = recorded(&data);
        match status {
            200 => assert_eq!(after, before + 1, "an answered token is recorded"),
            s if s >= 500 => assert_eq!(after, before, "a refused token is not recorded"),
            s => panic!("unexpected status {s}"),
        }
    }

    std::fs::remove_file(filler).expect("free the space");
    eventually_async("/readyz to recover", Duration::from_secs(15), || async {
        (ready(&url).await == 200).then_some(())
    })
    .await;
    assert_eq!(issue(&url, &key).await, 200, "issuance is back without a restart");
    server.stop().await.expect("stop");
}
