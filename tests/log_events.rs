//! Log events are a contract (docs/operations.md, "Logs"): every `tracing::{error,warn,info}!`
//! in `src/` carries a stable `event = "snake_case"` key, and every key is documented in the
//! table there. Reads the sources, so a new log line without a key, or a key missing from the
//! table, fails here instead of in someone's log shipper.

use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Files whose log lines have no `event=` key yet (being edited elsewhere; the operations
/// guide lists their messages). Remove a file from here once its lines are keyed.
const NOT_KEYED_YET: &[&str] = &[];

/// Every `tracing::{error,warn,info}!(...)` call in `text`: (line, the call's text).
fn calls(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for level in ["error", "warn", "info"] {
        let pat = format!("tracing::{level}!(");
        let mut from = 0;
        while let Some(i) = text[from..].find(&pat) {
            let start = from + i;
            let body_start = start + pat.len();
            let bytes = text.as_bytes();
            let (mut depth, mut j, mut in_str) = (1, body_start, false);
            while depth > 0 && j < bytes.len() {
                match bytes[j] {
                    b'\\' if in_str => j += 1,
                    b'"' => in_str = !in_str,
                    b'(' if !in_str => depth += 1,
                    b')' if !in_str => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            let line = text[..start].matches('\n').count() + 1;
            out.push((line, text[start..j].to_string()));
            from = j;
        }
    }
    out
}

fn event_of(call: &str) -> Option<String> {
    let i = call.find("event = \"")?;
    let rest = &call[i + 9..];
    Some(rest[..rest.find('"')?].to_string())
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_log_line_has_a_documented_event_key() {
    let mut files = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut files);
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).unwrap();
    let mut missing = Vec::new();
    let mut events = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(ROOT).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, call) in calls(&text) {
            match event_of(&call) {
                Some(e) => {
                    assert!(
                        !e.is_empty()
                            && e.chars()
                                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                        "{rel}:{line}: event {e:?} is not snake_case"
                    );
                    events.insert(e);
                }
                None if NOT_KEYED_YET.contains(&rel.as_str()) => {}
                None => missing.push(format!("{rel}:{line}: {call}")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "log lines without an `event = \"...\"` key:\n{}",
        missing.join("\n")
    );
    let undocumented: Vec<&String> = events
        .iter()
        .filter(|e| !docs.contains(&format!("`{e}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "events missing from the table in docs/operations.md (\"Logs\"): {undocumented:?}"
    );
    assert!(events.len() > 40, "{events:?}");
}
