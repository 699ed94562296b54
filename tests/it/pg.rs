//! A PostgreSQL server of a test's own, in a temp dir, for tests that stop and start it:
//! Debian's server binaries, run as the `postgres` user when the tests run as root (the
//! server refuses to run as root), listening on 127.0.0.1 and a socket in the temp dir.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::daemon::free_port;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed PostgreSQL's binaries (scripts/test installs Debian's `postgresql`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("pg_ctl").exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    found
        .pop()
        .expect("PostgreSQL's server binaries are missing: run ./scripts/test, which installs Debian's postgresql")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PgServer {
    /// A server not started yet, its directory empty and the server's user's.
    fn empty() -> PgServer {
        let dir = tempfile::Builder::new().prefix("keyturn-pg").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        if is_root() {
            let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown");
            assert!(ok.success(), "chown postgres {}", dir.path().display());
        }
        PgServer { bin: bin_dir(), port: free_port(), dir }
    }

    pub fn start() -> PgServer {
        let server = PgServer::empty();
        let data = server.dir.path().join("db");
        let out = server.run("initdb", &["-D", data.to_str().expect("utf8"), "-A", "trust", "-U", "keyturn"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        server.resume();
        server
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let path = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.dir.path().join("db").display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = self.pg_ctl(&["-o", &options, "-l", &log, "-w", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops it at once, as a crash or a lost network would (connections are cut).
    pub fn halt(&self) {
        let out = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A standby of this server, copied with `pg_basebackup` and streaming from it, started;
    /// this server then waits for it to have every commit before it answers one
    /// (`synchronous_standby_names`).
    pub fn synchronous_standby(&self) -> PgServer {
        let standby = PgServer::empty();
        let data = standby.dir.path().join("db").display().to_string();
        let port = self.port.to_string();
        let args = ["-h", "127.0.0.1", "-p", &port, "-U", "keyturn", "-D", &data, "-R", "-X", "stream", "-c", "fast"];
        let out = standby.run("pg_basebackup", &args);
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        standby.resume();
        self.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'");
        self.psql("postgres", "SELECT pg_reload_conf()");
        crate::support::eventually("the standby to be synchronous", std::time::Duration::from_secs(30), || {
            let state = self.psql("postgres", "SELECT sync_state FROM pg_stat_replication");
            (state.trim() == "sync").then_some(())
        });
        standby
    }

    /// Makes this standby the primary.
    pub fn promote(&self) {
        let out = self.pg_ctl(&["-w", "promote"]);
        assert!(out.status.success(), "pg_ctl promote: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `sql` on database `db` with `psql`; returns what it printed (unaligned, no headers).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let args = ["-h", "127.0.0.1", "-p", &port, "-U", "keyturn", "-d", db, "-XAtqc", sql];
        let out = self.run("psql", &args);
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's processes: the postmaster (the first line of `postmaster.pid`) and its
    /// children.
    pub fn processes(&self) -> Vec<u32> {
        let pid_file = self.dir.path().join("db/postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let main: u32 = text.lines().next().and_then(|l| l.trim().parse().ok()).expect("the postmaster's pid");
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").expect("/proc").filter_map(|e| e.ok()) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid …: the command may hold spaces, so read after its ')'.
            let parent =
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if parent == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to every process of the server.
    pub fn signal(&self, signal: &str) {
        let pids: Vec<String> = self.processes().iter().map(u32::to_string).collect();
        let out = Command::new("kill").arg("-s").arg(signal).args(&pids).output().expect("kill");
        assert!(out.status.success(), "kill -s {signal}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The URL of database `name`, created when missing.
    pub fn database(&self, name: &str) -> String {
        let server = format!("postgresql://keyturn@127.0.0.1:{}", self.port);
        crate::support::postgres_database_named(&server, name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
