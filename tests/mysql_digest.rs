//! `show digest mysql` end to end: the real `shardgate` binary in front of a real MariaDB
//! (tests/support/mariadb.sh), queries through `mysql_async` (text and prepared, literals
//! varying, one error, multi-row results), then the JSON answer checked digest by digest.
//! The relay feeds the table from `src/proxy/mysql/track.rs`.

mod common;
mod mysql_support;

use std::time::Duration;

use common::Proxy;
use mysql_async::prelude::*;
use mysql_async::Conn;
use mysql_support::*;

/// The row of `text` for user `sg_a` in schema `app`.
fn row<'a>(json: &'a serde_json::Value, text: &str) -> &'a serde_json::Value {
    json["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["text"] == text && r["user"] == "sg_a" && r["schema"] == "app")
        })
        .unwrap_or_else(|| panic!("no digest row for {text:?} (sg_a, app) in {json:#}"))
}

fn num(r: &serde_json::Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} not a number in {r}"))
}

#[test]
fn digests_count_text_and_prepared_statements() {
    let Some(db) = MariaDb::start("digests_count_text_and_prepared_statements", 1) else {
        return;
    };
    db.sql(
        0,
        "CREATE TABLE app.dg (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO app.dg VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d'),(5,'e')",
    );
    let p = Proxy::start(&config(2, &db.ports, "", ""));
    let port = p.port("db");

    block_on(Duration::from_secs(60), async move {
        let mut c = Conn::new(opts(port, "sg_a", "pw_a", Some("app")))
            .await
            .expect("connect");
        // Text protocol, literals varying: one digest, one row each.
        for id in 1..=3 {
            let r: Vec<(i32, String)> = c
                .query(format!("SELECT id, v FROM dg WHERE id = {id}"))
                .await
                .unwrap();
            assert_eq!(r.len(), 1);
        }
        // Multi-row results, lists of different lengths: one digest, 4 + 1 rows.
        let r: Vec<i32> = c
            .query("SELECT id FROM dg WHERE id IN (1, 2, 3, 4)")
            .await
            .unwrap();
        assert_eq!(r.len(), 4);
        let r: Vec<i32> = c.query("SELECT id FROM dg WHERE id IN (5)").await.unwrap();
        assert_eq!(r.len(), 1);
        // Prepared: one PREPARE (cached by mysql_async), two EXECUTEs with 5 and 2 rows.
        for min in [0, 3] {
            let r: Vec<String> = c
                .exec("SELECT v FROM dg WHERE id > ?", (min,))
                .await
                .unwrap();
            assert_eq!(r.len(), if min == 0 { 5 } else { 2 });
        }
        // One error.
        assert!(c
            .query_drop("SELECT * FROM no_such_table WHERE id = 7")
            .await
            .is_err());
        c.disconnect().await.unwrap();
    });

    let wanted = [
        // (text, count, errors, rows)
        ("SELECT id,v FROM dg WHERE id = ?", 3, 0, 3),
        ("SELECT id FROM dg WHERE id IN (...)", 2, 0, 5),
        ("SELECT v FROM dg WHERE id > ?", 2, 0, 7),
        ("SELECT * FROM no_such_table WHERE id = ?", 1, 1, 0),
    ];
    let mut json = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(10), || {
        let (code, out) = p.ctl("json show digest mysql");
        assert_eq!(code, 0, "{out}");
        json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        wanted.iter().all(|(text, count, _, _)| {
            json["rows"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["text"] == *text && r["count"] == *count)
            })
        })
    });
    assert!(settled, "digests never complete: {json:#}");
    for (text, count, errors, rows) in wanted {
        let r = row(&json, text);
        assert_eq!(num(r, "count"), count, "{r}");
        assert_eq!(num(r, "errors"), errors, "{r}");
        assert_eq!(num(r, "rows"), rows, "{r}");
        assert!(num(r, "bytes_in") > 0, "{r}");
        assert!(num(r, "bytes_out") > 0, "{r}");
        assert!(r["time_total_ms"].as_f64().is_some_and(|t| t > 0.0), "{r}");
        assert_eq!(r["digest"].as_str().map(str::len), Some(16), "{r}");
        assert!(
            r["first_seen"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{r}"
        );
    }
    assert_eq!(json["evicted"], 0, "{json:#}");
    assert_eq!(json["max_per_shard"], 4096, "{json:#}");

    // The text form: the same rows, the statement text last, the size line at the end.
    let (code, text) = p.ctl("show digest mysql");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("digest user schema count errors rows "),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.ends_with(" SELECT id,v FROM dg WHERE id = ?"))
        .unwrap_or_else(|| panic!("{text}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(&f[1..6], &["sg_a", "app", "3", "0", "3"], "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("digests entries=")),
        "{text}"
    );
    // `--json` after the command is the same answer as the `json` prefix.
    let (code, out) = p.ctl("show digest mysql --json");
    assert_eq!(code, 0, "{out}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        again["rows"].as_array().map(Vec::len),
        json["rows"].as_array().map(Vec::len)
    );
}

#[test]
fn digests_off_counts_no_digest_but_every_command() {
    let Some(db) = MariaDb::start("digests_off_counts_no_digest_but_every_command", 1) else {
        return;
    };
    let p = Proxy::start(&config(1, &db.ports, "digests = false", ""));
    let port = p.port("db");
    for i in 0..3 {
        let out = cli(
            port,
            "sg_a",
            "pw_a",
            Some("app"),
            &["-N", "-e", &format!("SELECT {i}")],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (code, out) = p.ctl("json show digest mysql");
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(0), "{json:#}");
    // The per-user accounting is unchanged: 3 logins, each with its queries and quit.
    let a = traffic(&p).user("sg_a");
    assert_eq!(a.connections, 3);
    assert!(a.requests >= 6, "{a:?}");
}
