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
