//! The data behind the `show` commands, in one place for the text answers, their JSON form
//! (`ctl --json`) and the admin page's `/api/state`, so that the three can never disagree.
//!
//! - `show servers` is built as [`ServerRow`]s; the text is rendered from the rows and the JSON
//!   is the rows serialised.
//! - `show stats`, `show traffic http` and `show traffic mysql` are rendered as text by the
//!   modules that own their counters (`stats`, `proxy::mysql`); their JSON is read back from
//!   that very text ([`lines_json`], [`table_json`]), so every number in the JSON is the number
//!   the text shows, by construction, and a counter added there shows up here without a second
//!   list to keep in step.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::shared::Shared;

/// One line of `show servers`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRow {
    pub pool: String,
    pub server: String,
    pub addr: String,
    /// `up`, `down`, `drain`, `maint` or `removed`.
    pub state: &'static str,
    pub inflight: u32,
    pub queue: u32,
    pub admin: &'static str,
    /// `up`, `down`, `unchecked`; `-` for a removed server.
    pub health: &'static str,
    pub weight: u32,
    pub eff_weight: u32,
    pub requests: u64,
    pub backup: bool,
    /// source_ip stickiness: live table entries pointing at the server.
    pub sticky: Option<usize>,
    pub check_age_ms: Option<u64>,
    /// `ok` or `fail`.
    pub check: Option<&'static str>,
    pub reason: Option<String>,
}

/// Every server of every pool, then those the last change removed.
pub fn servers(s: &Shared) -> Vec<ServerRow> {
    let now = crate::rt::now_ms();
    let gen = s.current();
    let mut rows = Vec::new();
    for p in &gen.pools {
        // source_ip stickiness: the table's live entries per server (one scan per pool).
        let stuck: Option<Vec<usize>> =
            p.sticky.as_ref().and_then(|st| st.table.as_ref()).map(|t| {
                let mut per = vec![0; p.servers.len()];
                t.entries(
                    crate::balance::sticky_table::IpTable::now_s(now),
                    usize::MAX,
                    &mut |e| {
                        if let Some(n) = per.get_mut(e.server) {
                            *n += 1;
                        }
                    },
                );
                per
            });
        for (i, sv) in p.servers.iter().enumerate() {
            let state = sv.state_name(now);
            let check = sv.check_info();
            rows.push(ServerRow {
                pool: p.name.clone(),
                server: sv.name.clone(),
                addr: sv.addr.to_string(),
                state,
                inflight: sv.inflight(),
                queue: sv.queue(),
                admin: sv.admin().as_str(),
                health: sv.active().as_str(),
                weight: sv.weight(),
                eff_weight: p.weight(i, now),
                requests: sv.requests(),
                backup: sv.backup,
                sticky: stuck.as_ref().and_then(|per| per.get(i).copied()),
                check_age_ms: check.as_ref().and_then(|c| c.age_ms(now)),
                check: check.as_ref().map(|c| c.result()),
                // Free text; one line whatever the server sent.
                reason: check
                    .as_ref()
                    .map(|c| {
                        c.reason
                            .chars()
                            .map(|ch| if ch.is_control() { ' ' } else { ch })
                            .collect::<String>()
                    })
                    .filter(|r| !r.is_empty()),
            });
        }
    }
    // Servers the last change removed: their totals stay readable until the next change.
    for (pool, sv) in &gen.removed {
        rows.push(ServerRow {
            pool: pool.clone(),
            server: sv.name.clone(),
            addr: sv.addr.to_string(),
            state: "removed",
            inflight: sv.inflight(),
            queue: sv.queue(),
            admin: sv.admin().as_str(),
            health: "-",
            weight: sv.weight(),
            eff_weight: 0,
            requests: sv.requests(),
            backup: sv.backup,
            sticky: None,
            check_age_ms: None,
            check: None,
            reason: None,
        });
    }
    rows
}

/// `show servers` as text: a header, then one line per row, columns separated by one space,
/// `-` for what is absent; `reason` is last and runs to the end of the line.
pub fn render_servers(rows: &[ServerRow]) -> String {
    let mut out = String::from(
        "pool server addr state inflight queue admin health weight eff_weight requests backup sticky check_age_ms check reason\n",
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for r in rows {
        let _ = writeln!(
            out,
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            r.pool,
            r.server,
            r.addr,
            r.state,
            r.inflight,
            r.queue,
            r.admin,
            r.health,
            r.weight,
            r.eff_weight,
            r.requests,
            if r.backup { "yes" } else { "no" },
            dash(r.sticky.map(|n| n.to_string())),
            dash(r.check_age_ms.map(|n| n.to_string())),
            r.check.unwrap_or("-"),
            r.reason.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// `name: value` lines as one JSON object in line order; values that read as numbers are
/// numbers.
pub fn lines_json(text: &str) -> Value {
    let mut obj = Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(": ") {
            obj.insert(k.trim().to_owned(), scalar(v.trim()));
        }
    }
    Value::Object(obj)
}

/// A table (a header line of column names, then rows of space-separated values; the last
/// column takes the rest of the line) as a list of objects keyed by column. Lines after the
/// table that start with a word and continue with `key=value` pairs (the per-frontend lines of
/// `show traffic mysql`) go to `extra` under that word, as objects.
pub fn table_json(text: &str) -> Value {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Value::Object(Map::new());
    };
    let cols: Vec<&str> = header.split(' ').collect();
    let mut rows = Vec::new();
    let mut extra: Map<String, Value> = Map::new();
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        if words.len() > 2 && words[2..].iter().all(|w| w.contains('=')) {
            // `frontend NAME k=v k=v ...`
            let mut o = Map::new();
            o.insert("name".into(), Value::String(words[1].to_owned()));
            for w in &words[2..] {
                if let Some((k, v)) = w.split_once('=') {
                    o.insert(k.to_owned(), scalar(v));
                }
            }
            let list = extra
                .entry(words[0].to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.push(Value::Object(o));
            }
            continue;
        }
        let mut o = Map::new();
        let mut rest = line;
        for (i, c) in cols.iter().enumerate() {
            let v = if i + 1 == cols.len() {
                std::mem::take(&mut rest)
            } else {
                let (v, r) = rest.split_once(' ').unwrap_or((rest, ""));
                rest = r;
                v
            };
            o.insert((*c).to_owned(), scalar(v));
        }
        rows.push(Value::Object(o));
    }
    let mut out = Map::new();
    out.insert("rows".into(), Value::Array(rows));
    for (k, v) in extra {
        out.insert(format!("{k}s"), v);
    }
    Value::Object(out)
}

/// A number when the text is one (integers stay integers), else the string.
fn scalar(v: &str) -> Value {
    if let Ok(n) = v.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = v.parse::<i64>() {
        return Value::from(n);
    }
    if v.contains('.') && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if let Ok(f) = v.parse::<f64>() {
            return Value::from(f);
        }
    }
    Value::String(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_back_as_json() {
        let v = lines_json("shards: 2\nmemory.level: normal\nrequests: 5\n");
        assert_eq!(v["shards"], 2);
        assert_eq!(v["memory.level"], "normal");
        let t = table_json(
            "frontend site requests time_mean_ms\nwww a.example 3 1.500\nwww - 0 0.000\n",
        );
        assert_eq!(t["rows"][0]["site"], "a.example");
        assert_eq!(t["rows"][0]["requests"], 3);
        assert_eq!(t["rows"][0]["time_mean_ms"], 1.5);
        assert_eq!(t["rows"][1]["site"], "-");
        let m = table_json(
            "user connections requests commands\nsg 1 2 QUERY=2\nfrontend db active=1 accepted=4\n",
        );
        assert_eq!(m["rows"][0]["commands"], "QUERY=2");
        assert_eq!(m["frontends"][0]["name"], "db");
        assert_eq!(m["frontends"][0]["accepted"], 4);
    }
}
