//! Stage-one failures in our format: a TOML or serde error becomes a [`ConfigError`] with line,
//! column and the key path with array indices; and how a key is spelled back in TOML (bare or
//! quoted), which key paths and names share.

use super::ConfigError;

/// Turn a TOML/serde error into our format: line and column from its span, and the key path
/// it carries, completed with array indices found by locating the span in the document.
pub(super) fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    // The key list is private to toml's error; its Display shows it only without the input.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let keys: Option<Vec<&str>> = shown
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        .map(|k| k.split('.').collect());
    ConfigError {
        file: origin.to_owned(),
        position: offset.map(|o| line_col(text, o)),
        key: keys.map(|k| indexed_key_path(text, &k, offset)),
        problem: e.message().trim_end().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// `["http", "route", "pool"]` + the error's offset → `http[1].route[0].pool`: for each array on
/// the way, the element that starts last before the offset is the one that holds the error
/// (array-of-tables elements are spanned by their `[[header]]`, inline ones by their braces).
fn indexed_key_path(text: &str, keys: &[&str], offset: Option<usize>) -> String {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok();
    let mut table: Option<&DeTable> = doc.as_ref().map(|d| d.get_ref());
    let mut out = String::new();
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&toml_key(key));
        let value = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v));
        table = None;
        let Some(value) = value else { continue };
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(items) => {
                let Some(off) = offset else { continue };
                let hit = items
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, v)| v.span().start <= off);
                if let Some((idx, item)) = hit {
                    out.push_str(&format!("[{idx}]"));
                    if let DeValue::Table(t) = item.get_ref() {
                        table = Some(t);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A key as TOML would need it written: bare when it can be, quoted otherwise.
pub(super) fn toml_key(key: &str) -> String {
    if is_bare_key(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

pub(super) fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
