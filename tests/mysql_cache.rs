//! The MySQL query cache (`[[mysql.cache]]`) end to end: the real `shardgate` binary in front
//! of a real MariaDB (tests/support/mariadb.sh), the real `mariadb` CLI and `mysql_async`.
//! Cached results must be byte-identical to the server's; a result is served until its TTL
//! and not after; nothing is served inside a transaction, to another user, for a statement no
//! rule names, or for prepared statements.

mod common;
mod mysql_support;

use std::time::{Duration, Instant};

use common::Proxy;
use mysql_async::prelude::*;
use mysql_async::Conn;
use mysql_support::*;

const TTL_MS: u64 = 3000;

fn cache_config(db: &MariaDb) -> String {
    // One shard: every connection sees the same store, so hit counts are exact.
    config(
        1,
        &db.ports,
        &format!(
            "cache_size = \"1MB\"\ncache_max_result = \"64k\"\n\
             [[mysql.cache]]\nmatch_digest = \"(?i)^select .* from catalog\"\nttl = \"{TTL_MS}ms\"\n\
             [[mysql.cache]]\nmatch_digest = \"^SELECT v FROM big\"\nuser = \"sg_a\"\nttl = \"60s\"\n"
        ),
        "",
    )
}

/// (hits, misses, stored, not_stored) of rule `i` in `show cache mysql`.
fn rule_counts(p: &Proxy, i: usize) -> (u64, u64, u64, u64) {
    let (code, out) = p.ctl("show cache mysql");
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("db {i} ")))
        .unwrap_or_else(|| panic!("no rule {i} line in {out}"));
    let f: Vec<u64> = line
        .split(' ')
        .skip(3)
        .take(6)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f[0], f[1], f[3], f[4])
}

/// Run statements with the CLI (one connection, one COM_QUERY each), column metadata shown.
fn run(port: u16, user: &str, pass: &str, sql: &str) -> String {
    let out = cli(
        port,
        user,
        pass,
        Some("app"),
        &["--batch", "--column-type-info", "-e", sql],
        None,
    );
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn cached_results_are_the_servers_bytes_until_the_ttl() {
    let Some(db) = MariaDb::start("cached_results_are_the_servers_bytes_until_the_ttl", 1) else {
        return;
    };
    let mut rows = String::from("CREATE TABLE app.catalog (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2), note TEXT); INSERT INTO app.catalog VALUES ");
    for i in 1..=200 {
        if i > 1 {
            rows.push(',');
        }
        rows.push_str(&format!("({i}, 'item {i}', {i}.25, NULL)"));
    }
    db.sql(0, &rows);
    db.sql(
        0,
        "CREATE TABLE app.other (id INT PRIMARY KEY, v INT); INSERT INTO app.other VALUES (1, 1)",
    );
    let p = Proxy::start(&cache_config(&db));
    let port = p.port("db");
    let direct = db.ports[0];

    let queries = "SELECT * FROM catalog WHERE id < 20; \
                   SELECT name, price FROM catalog ORDER BY id DESC; \
                   select count(*), sum(price) from catalog; \
                   SELECT * FROM catalog WHERE id = 999";
    let server = run(direct, "sg_a", "pw_a", queries);
    let first = run(port, "sg_a", "pw_a", queries);
    let second = run(port, "sg_a", "pw_a", queries);
    assert_eq!(
        first, server,
        "through the proxy (miss) differs from direct"
    );
    assert_eq!(second, server, "from the cache differs from direct");
    let (hits, misses, stored, _) = rule_counts(&p, 0);
    assert_eq!(
        (hits, misses, stored),
        (4, 4, 4),
        "4 stored on the first pass, 4 hits on the second"
    );

    // Within the TTL a change on the server is not seen (the cache answers) ...
    let t0 = Instant::now();
    let q = "SELECT name FROM catalog WHERE id = 1";
    assert_eq!(run(port, "sg_a", "pw_a", q), run(direct, "sg_a", "pw_a", q));
    db.sql(0, "UPDATE app.catalog SET name = 'renamed' WHERE id = 1");
    let cached = run(port, "sg_a", "pw_a", q);
    if t0.elapsed() < Duration::from_millis(TTL_MS - 500) {
        assert!(cached.contains("item 1"), "served from the cache: {cached}");
    }
    // ... not for a statement no rule names ...
    db.sql(0, "UPDATE app.other SET v = 2");
    assert!(run(port, "sg_a", "pw_a", "SELECT v FROM other").contains("\n2\n"));
    // ... nor inside a transaction (BEGIN ... COMMIT on one connection) ...
    let in_tx = run(port, "sg_a", "pw_a", &format!("BEGIN; {q}; COMMIT"));
    assert!(in_tx.contains("renamed"), "inside a transaction: {in_tx}");
    // ... nor to another user (the key has the user) ...
    assert!(run(port, "sg_b", "pw_b", q).contains("renamed"));
    // ... nor for a locking read.
    assert!(run(port, "sg_a", "pw_a", &format!("{q} FOR UPDATE")).contains("renamed"));
    // After the TTL the server answers again.
    let deadline = t0 + Duration::from_millis(TTL_MS + 200);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run(port, "sg_a", "pw_a", q).contains("renamed"), "expired");

    // The per-user accounting counts hits like any command (the bill is the client's traffic).
    let a = traffic(&p).user("sg_a");
    assert_eq!(a.unparsed, 0);
    assert!(a.requests >= 20, "{a:?}");
}

#[test]
fn binary_protocol_and_oversized_results_are_not_cached() {
    let Some(db) = MariaDb::start("binary_protocol_and_oversized_results_are_not_cached", 1) else {
        return;
    };
    db.sql(
        0,
        "CREATE TABLE app.catalog (id INT PRIMARY KEY, name VARCHAR(40)); \
         INSERT INTO app.catalog VALUES (1, 'one'), (2, 'two'); \
         CREATE TABLE app.big (id INT PRIMARY KEY, v LONGTEXT); \
         INSERT INTO app.big VALUES (1, REPEAT('x', 100000)), (2, 'small')",
    );
    let p = Proxy::start(&cache_config(&db));
    let port = p.port("db");
    let direct = db.ports[0];
    block_on(Duration::from_secs(60), async move {
        let mut c = Conn::new(opts(port, "sg_a", "pw_a", Some("app")))
            .await
            .expect("connect");
        // Text protocol from mysql_async (CLIENT_DEPRECATE_EOF): miss, then hit, same rows.
        let q = "SELECT id, name FROM catalog ORDER BY id";
        let a: Vec<(i32, String)> = c.query(q).await.unwrap();
        let b: Vec<(i32, String)> = c.query(q).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a, vec![(1, "one".to_string()), (2, "two".to_string())]);
        // Prepared statements go to the server every time.
        let mut d = Conn::new(opts(direct, "sg_root", "pw_root", Some("app")))
            .await
            .expect("connect direct");
        let before: Vec<String> = c
            .exec("SELECT name FROM catalog WHERE id = ?", (2,))
            .await
            .unwrap();
        d.query_drop("UPDATE catalog SET name = 'zwei' WHERE id = 2")
            .await
            .unwrap();
        let after: Vec<String> = c
            .exec("SELECT name FROM catalog WHERE id = ?", (2,))
            .await
            .unwrap();
        assert_eq!((before[0].as_str(), after[0].as_str()), ("two", "zwei"));
        // A result over cache_max_result (64k) is relayed whole and not kept; a small one
        // of the same rule is.
        for _ in 0..2 {
            let v: Vec<String> = c.query("SELECT v FROM big WHERE id = 1").await.unwrap();
            assert_eq!(v[0].len(), 100_000);
            let v: Vec<String> = c.query("SELECT v FROM big WHERE id = 2").await.unwrap();
            assert_eq!(v[0], "small");
        }
        c.disconnect().await.unwrap();
        d.disconnect().await.unwrap();
    });
    let (hits, misses, stored, _) = rule_counts(&p, 0);
    assert_eq!((hits, misses, stored), (1, 1, 1), "rule 0");
    let (hits, misses, stored, not_stored) = rule_counts(&p, 1);
    assert_eq!(
        (hits, misses, stored, not_stored),
        (1, 3, 1, 2),
        "rule 1: the big result missed twice and was never kept"
    );
    let (code, out) = p.ctl("show cache mysql");
    assert_eq!(code, 0);
    let store = out.lines().last().unwrap_or_default();
    assert!(store.starts_with("store entries=2 "), "{out}");
}

#[test]
fn session_state_keeps_the_cache_honest() {
    let Some(db) = MariaDb::start("session_state_keeps_the_cache_honest", 1) else {
        return;
    };
    db.sql(
        0,
        "CREATE TABLE app.catalog (id INT PRIMARY KEY, name VARCHAR(40) CHARACTER SET utf8mb4); \
         INSERT INTO app.catalog VALUES (1, 'caf\u{e9}')",
    );
    let p = Proxy::start(&cache_config(&db));
    let port = p.port("db");
    let q = "SELECT name FROM catalog WHERE id = 1";
    // Fill the cache (utf8mb4, the CLI's default), then change the row on the server.
    let utf8 = run(port, "sg_a", "pw_a", q);
    assert!(utf8.contains("caf\u{e9}"), "{utf8}");
    db.sql(0, "UPDATE app.catalog SET name = 'changed' WHERE id = 1");
    assert_eq!(run(port, "sg_a", "pw_a", q), utf8, "served from the cache");
    // Another character set is another entry: the server's latin1 bytes, not the cached utf8.
    let latin1 = run(port, "sg_a", "pw_a", &format!("SET NAMES latin1; {q}"));
    assert!(latin1.contains("changed"), "{latin1}");
    // A temporary table shadowing the real one: the session's own table, not the cache.
    let temp = run(
        port,
        "sg_a",
        "pw_a",
        &format!(
            "CREATE TEMPORARY TABLE catalog (id INT, name VARCHAR(40)); \
             INSERT INTO catalog VALUES (1, 'temporary'); {q}"
        ),
    );
    assert!(temp.contains("temporary"), "{temp}");
    // A user variable set in the session: no cache for that session.
    let var = run(port, "sg_a", "pw_a", &format!("SET @x = 1; {q}"));
    assert!(var.contains("changed"), "{var}");
    // autocommit off: every statement is in a transaction, nothing from the cache.
    let off = run(port, "sg_a", "pw_a", &format!("SET autocommit = 0; {q}"));
    assert!(off.contains("changed"), "{off}");
    // The plain session still gets the cached row (TTL 3 s not over yet).
    assert_eq!(run(port, "sg_a", "pw_a", q), utf8);
    assert_eq!(traffic(&p).user("sg_a").unparsed, 0);
}

/// A small deterministic generator (xorshift), so a failure replays with its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Generated sessions against a model of what the cache may answer: random reads (cached,
/// uncached and volatile statements), writes on the server behind the proxy's back, BEGIN /
/// COMMIT, SET NAMES, a session variable and reconnects. The model knows what the server
/// holds and what the cache must hold (TTL long enough not to expire during the test); every
/// read through the proxy must be exactly the model's answer: the server's current value, or
/// the value cached when it was last stored for that key.
#[test]
fn generated_sessions_agree_with_the_model() {
    let Some(db) = MariaDb::start("generated_sessions_agree_with_the_model", 1) else {
        return;
    };
    db.sql(
        0,
        "CREATE TABLE app.catalog (id INT PRIMARY KEY, v INT); \
         INSERT INTO app.catalog VALUES (1, 100), (2, 200); \
         CREATE TABLE app.other (id INT PRIMARY KEY, v INT); INSERT INTO app.other VALUES (1, 300); \
         SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
    );
    // READ COMMITTED: inside a transaction a read sees the latest committed value, as the
    // model assumes (REPEATABLE READ would answer from the transaction's first snapshot).
    let cfg = config(
        1,
        &db.ports,
        "[[mysql.cache]]\nmatch_digest = \"^SELECT v FROM catalog\"\nttl = \"600s\"\n",
        "",
    );
    let p = Proxy::start(&cfg);
    let port = p.port("db");
    let direct = db.ports[0];
    let seed = std::env::var("CACHE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let steps: usize = std::env::var("CACHE_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);

    block_on(Duration::from_secs(300), async move {
        // (statement, table, id, cacheable by the rule and the read-only checks)
        let reads: [(&str, &str, i32, bool); 4] = [
            ("SELECT v FROM catalog WHERE id = 1", "catalog", 1, true),
            ("SELECT v FROM catalog WHERE id = 2", "catalog", 2, true),
            ("SELECT v FROM other WHERE id = 1", "other", 1, false),
            (
                "SELECT v FROM catalog WHERE id = 1 AND NOW() > 0",
                "catalog",
                1,
                false,
            ),
        ];
        let mut rng = Rng(seed | 1);
        let mut server: std::collections::HashMap<(&str, i32), i64> = [
            (("catalog", 1), 100),
            (("catalog", 2), 200),
            (("other", 1), 300),
        ]
        .into();
        // Cache model: (statement, last SET NAMES of the session) -> value stored. The key
        // has the SET NAMES text: a session that set utf8mb4 explicitly is not a fresh one.
        let mut cache: std::collections::HashMap<(&str, Option<bool>), i64> = Default::default();
        let mut d = Conn::new(opts(direct, "sg_root", "pw_root", Some("app")))
            .await
            .expect("direct");
        let mut c = Conn::new(opts(port, "sg_a", "pw_a", Some("app")))
            .await
            .expect("proxy");
        let (mut in_tx, mut names, mut tainted) = (false, None::<bool>, false);
        let mut hits_expected = 0u64;
        for step in 0..steps {
            let what = rng.below(100);
            let ctx =
                format!("seed {seed:#x} step {step} (tx {in_tx}, latin1 {names:?}, var {tainted})");
            if what < 55 {
                let (q, table, id, cacheable) = reads[rng.below(4) as usize];
                let got: Option<i64> = c.query_first(q).await.expect(q);
                let now = server[&(table, id)];
                let eligible = cacheable && !in_tx && !tainted;
                let want = match cache.get(&(q, names)) {
                    Some(&v) if eligible => {
                        hits_expected += 1;
                        v
                    }
                    _ => {
                        if eligible {
                            cache.insert((q, names), now);
                        }
                        now
                    }
                };
                assert_eq!(got, Some(want), "{q} at {ctx}");
            } else if what < 75 {
                let (table, id) =
                    [("catalog", 1), ("catalog", 2), ("other", 1)][rng.below(3) as usize];
                d.query_drop(format!("UPDATE {table} SET v = v + 1 WHERE id = {id}"))
                    .await
                    .unwrap();
                *server.get_mut(&(table, id)).unwrap() += 1;
            } else if what < 85 {
                c.query_drop(if in_tx { "COMMIT" } else { "BEGIN" })
                    .await
                    .unwrap();
                in_tx = !in_tx;
            } else if what < 93 {
                let latin1 = names != Some(true);
                c.query_drop(if latin1 {
                    "SET NAMES latin1"
                } else {
                    "SET NAMES utf8mb4"
                })
                .await
                .unwrap();
                names = Some(latin1);
            } else if what < 96 {
                c.query_drop("SET @x = 1").await.unwrap();
                tainted = true;
            } else {
                // A new session: no transaction, default character set, no variable.
                if in_tx {
                    c.query_drop("COMMIT").await.unwrap();
                }
                c.disconnect().await.unwrap();
                c = Conn::new(opts(port, "sg_a", "pw_a", Some("app")))
                    .await
                    .expect("reconnect");
                (in_tx, names, tainted) = (false, None, false);
            }
        }
        c.disconnect().await.unwrap();
        d.disconnect().await.unwrap();
        assert!(
            hits_expected > 20,
            "the sequence exercised the cache ({hits_expected} hits)"
        );
    });
    assert_eq!(traffic(&p).user("sg_a").unparsed, 0);
}
