//! The layering ARCHITECTURE.md promises, checked on the source text (like rust-analyzer's
//! tidy tests): only `store/` speaks SQL and names a database driver, and only `store/`
//! and `service/` name the store. A rule broken anywhere fails here with the file and line.

use std::path::{Path, PathBuf};

/// The database drivers (and their pool): named only inside `store/`.
const DRIVERS: &[&str] = &["rusqlite", "tokio_postgres", "deadpool", "postgres::"];

/// Words that only SQL uses, as keyturn writes it (upper case).
const SQL_WORDS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
    "CREATE TABLE",
    "CREATE INDEX",
    "CREATE UNIQUE",
    "ALTER TABLE",
    "PRAGMA ",
    "BEGIN IMMEDIATE",
    "SAVEPOINT ",
    "ROLLBACK",
];

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src").to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).expect("read source")));
        }
    }
}

/// The code lines of a file (comments are prose and may name anything), numbered from 1.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Whether a line names the store module: a `crate::store` path, or `store` inside a
/// `use crate::{…}` group.
fn names_store(line: &str) -> bool {
    if line.contains("crate::store") || line.contains("keyturn::store") {
        return true;
    }
    line.find("crate::{").is_some_and(|at| {
        let group = &line[at..];
        let group = &group[..group.find('}').unwrap_or(group.len())];
        group.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "store")
    })
}

/// What breaks the layering in one file: `(line, what)` for each offence.
fn offences(rel: &str, text: &str) -> Vec<(usize, String)> {
    let in_store = rel.starts_with("store/");
    let may_name_store = in_store || rel.starts_with("service/");
    let mut out = Vec::new();
    for (n, line) in code_lines(text) {
        if !in_store {
            if let Some(word) = SQL_WORDS.iter().find(|w| line.contains(*w)) {
                out.push((n, format!("SQL ({}) outside store/", word.trim())));
            }
            if let Some(driver) = DRIVERS.iter().find(|d| line.contains(*d)) {
                out.push((n, format!("the database driver ({driver}) named outside store/")));
            }
        }
        if !may_name_store && names_store(line) {
            out.push((n, "names the store outside store/ and service/".into()));
        }
    }
    out
}

#[test]
fn only_the_store_speaks_sql_and_only_the_service_talks_to_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 30, "found the sources ({} files)", files.len());
    let mut broken = Vec::new();
    for (rel, text) in &files {
        for (line, what) in offences(rel, text) {
            broken.push(format!("src/{rel}:{line}: {what}"));
        }
    }
    assert!(broken.is_empty(), "the layering is broken:\n{}", broken.join("\n"));
    // SQL files (migrations) live in the store too.
    let walk = walkdir(&root);
    let stray: Vec<_> = walk.iter().filter(|p| p.ends_with(".sql") && !p.starts_with("store/")).collect();
    assert!(stray.is_empty(), "SQL files outside store/: {stray:?}");
}

/// A file a newcomer can hold in their head: none under `src/` is longer than 650 lines,
/// but the settings table (`config.rs`), which is one declaration per setting.
#[test]
fn no_source_file_is_longer_than_650_lines() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|(rel, _)| rel != "config.rs")
        .map(|(rel, text)| (rel, text.lines().count()))
        .filter(|(_, n)| *n > 650)
        .map(|(rel, n)| format!("src/{rel}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "split these by what they do:\n{}", long.join("\n"));
}

/// The routes that span capabilities and so take the daemon itself: the dashboard's
/// overview, readiness and the metrics. Every other handler takes the capability it uses.
const SPANNING_ROUTES: &[(&str, &str)] = &[
    ("web/admin/overview.rs", "async fn overview("),
    ("web/wellknown.rs", "async fn readyz("),
    ("web/wellknown.rs", "async fn metrics("),
];

#[test]
fn handlers_take_the_capability_they_use() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let mut found = Vec::new();
    let mut wrong = Vec::new();
    for (rel, text) in files.iter().filter(|(rel, _)| rel.starts_with("web/")) {
        // A handler's parameters run from its `fn` line to the line that opens its body.
        let mut current: Option<(usize, String)> = None;
        for (n, line) in code_lines(text) {
            if let Some(at) = line.find("fn ") {
                current = Some((n, line[at..].split('(').next().unwrap_or_default().to_owned()));
            }
            let takes_daemon = line.contains("State<Arc<Keyturn>>") || line.contains("state::<Arc<Keyturn>>");
            if takes_daemon {
                let (start, name) = current.clone().unwrap_or((n, "?".into()));
                let fn_line = format!("async {name}(");
                if SPANNING_ROUTES.contains(&(rel.as_str(), fn_line.as_str())) {
                    found.push(fn_line);
                } else {
                    wrong.push(format!("src/{rel}:{start}: {name} takes the whole daemon"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "take the capability (Keys, Tokens, Revocations, Clients, Admins, Audit):\n{}",
        wrong.join("\n")
    );
    assert_eq!(found.len(), SPANNING_ROUTES.len(), "the spanning routes were found: {found:?}");
}

/// Every file under `root`, relative to it.
fn walkdir(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// The checker itself catches what it is for, so a silent pass means something.
#[test]
fn the_layering_check_catches_offences() {
    let web = "use crate::store::tokens::TokenFilter;\nfn f() { c.query_row(\"PRAGMA data_version\", [], g) }\n";
    let found = offences("web/api.rs", web);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(offences("cli.rs", "use crate::{config, store};").len() == 1);
    assert!(offences("web/x.rs", "let c: rusqlite::Connection;").len() == 1);
    assert!(offences("service/x.rs", "let c: deadpool_postgres::Object;").len() == 1);
    assert!(offences("lib.rs", "use tokio_postgres::NoTls;").len() == 1);
    assert!(offences("store/postgres.rs", "use tokio_postgres::NoTls;").is_empty(), "the store may");
    assert!(offences("service/mod.rs", "use crate::store::{self, meta};").is_empty(), "the service may");
    assert!(!offences("service/mod.rs", "let v = \"SELECT 1\";").is_empty(), "but writes no SQL");
    assert!(offences("store/keys.rs", "conn.execute(\"UPDATE signing_keys SET state = ?1\")").is_empty());
    assert!(offences("web/api.rs", "// the store (`crate::store`) answers SELECT queries").is_empty(), "prose");
}

/// The repository stands on its own: every relative link in the README, ARCHITECTURE.md and
/// docs/ names a file or directory in the repository, and none reaches outside it.
#[test]
fn the_documents_name_only_files_in_the_repository() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for doc in ["README.md", "ARCHITECTURE.md", "docs/DESIGN.md", "docs/BENCHMARKS.md"] {
        let path = root.join(doc);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
        if text.contains("../shared") {
            problems.push(format!("{doc} names ../shared, outside the repository"));
        }
        for link in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            let target = link.split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = path.parent().expect("dir").join(target);
            let inside = resolved.canonicalize().is_ok_and(|p| p.starts_with(root.canonicalize().expect("root")));
            if !inside {
                problems.push(format!("{doc} links to {target}, which is not a file in the repository"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
