//! The MySQL query cache (`[[mysql.cache]]` rules): results of read-only text queries, kept
//! byte for byte as the server sent them and served to later identical queries until their
//! rule's TTL runs out.
//!
//! What may be served from the cache (checked by the relay, see `Session::cache_lookup`):
//! - the client's read holds exactly one whole `COM_QUERY` packet and the session is idle
//!   (nothing outstanding, no packet half-way, no reply still being written to the client);
//! - the session is outside any transaction: the last status the server sent has
//!   `AUTOCOMMIT` set and `IN_TRANS` clear;
//! - the statement reads: its digest starts with `SELECT` and has no `FOR UPDATE`,
//!   `LOCK IN SHARE MODE`, `INTO` or `SQL_NO_CACHE`;
//! - a rule matches: `match_digest` over the digest text, and `user` / `schema` if given.
//!
//! The key is the frontend, user, schema, the client's capability flags (they shape the
//! result's bytes) and the query's exact bytes: two queries that differ in a literal, in case
//! or in a space are two entries. A result is stored when its reply ended with OK or EOF
//! (not ERR), outside a transaction, and is at most `cache_max_result` bytes.
//!
//! Each shard has its own store (no lock shared between shards on the data path; the mutex is
//! taken by its shard and by the occasional `show cache mysql`), bounded by `cache_size`
//! bytes (results plus keys); at the bound the least recently used entries go first, a
//! sixteenth of the store at a time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::MysqlCacheConf;
use crate::proto::mysql::digest::{fnv1a, FNV_START};

/// Per-entry bookkeeping counted against `cache_size` besides the key and the result.
const ENTRY_OVERHEAD: usize = 64;

/// Words that make a result depend on the session or the moment rather than on the data:
/// user variables, session functions, time, randomness, locks, sleeping.
const VOLATILE: &[&str] = &[
    "@",
    "NOW(",
    "SYSDATE(",
    "CURDATE(",
    "CURTIME(",
    "CURRENT_",
    "UNIX_TIMESTAMP(",
    "UTC_",
    "RAND(",
    "UUID",
    "CONNECTION_ID(",
    "LAST_INSERT_ID(",
    "FOUND_ROWS(",
    "ROW_COUNT(",
    "DATABASE(",
    "SCHEMA(",
    "USER(",
    "SLEEP(",
    "GET_LOCK(",
    "RELEASE_LOCK(",
    "IS_FREE_LOCK(",
    "IS_USED_LOCK(",
    "BENCHMARK(",
    "NEXTVAL(",
    "LASTVAL(",
    "NEXT VALUE",
    "MASTER_GTID_WAIT(",
    "MASTER_POS_WAIT(",
];

/// `text` begins with `prefix` (ASCII, any case).
fn starts_ci(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// `text` contains `word` (ASCII, any case), without an upper-cased copy.
fn contains_ci(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// Is this digest text a statement the cache may keep? One read-only `SELECT` (no second
/// statement, no locking read, no `INTO`, no explicit `SQL_NO_CACHE`) whose result depends
/// only on the data: nothing from [`VOLATILE`].
pub fn read_only(text: &str) -> bool {
    if !starts_ci(text, "SELECT ") || text.contains(';') {
        return false;
    }
    ![
        "FOR UPDATE",
        "LOCK IN SHARE MODE",
        "FOR SHARE",
        " INTO ",
        "SQL_NO_CACHE",
    ]
    .iter()
    .chain(VOLATILE)
    .any(|w| contains_ci(text, w))
}

/// Does this statement change the session in a way a cached result from another session
/// would not reflect (character sets and variables, temporary tables shadowing real ones,
/// table locks, procedures that may do any of these)? After one, the session neither uses
/// nor fills the cache until `COM_RESET_CONNECTION` or `COM_CHANGE_USER`.
pub fn changes_session(text: &str) -> bool {
    let text = text.trim_start();
    !sets_names(text)
        && [
            "SET ",
            "CREATE TEMPORARY",
            "LOCK ",
            "HANDLER ",
            "CALL ",
            "PREPARE ",
            "EXECUTE ",
        ]
        .iter()
        .any(|w| starts_ci(text, w))
}

/// `SET NAMES ...` or `SET CHARACTER SET ...` alone: it changes how results are encoded, so
/// it becomes part of the session's cache key instead of keeping the session out of the cache.
pub fn sets_names(text: &str) -> bool {
    let text = text.trim_start();
    ["SET NAMES ", "SET CHARACTER SET ", "SET CHARSET "]
        .iter()
        .any(|w| starts_ci(text, w))
        && !text.contains([',', ';'])
}

/// Which rule (index) caches this statement, if any.
pub fn rule_for(
    conf: &MysqlCacheConf,
    digest: &str,
    user: &[u8],
    schema: Option<&[u8]>,
) -> Option<usize> {
    if !read_only(digest) {
        return None;
    }
    conf.rules.iter().position(|r| {
        r.regex.is_match(digest)
            && r.user.as_deref().is_none_or(|u| u.as_bytes() == user)
            && r.schema
                .as_deref()
                .is_none_or(|s| Some(s.as_bytes()) == schema)
    })
}

/// What besides the query's bytes decides its result's bytes: who asks, in which database,
/// with which capabilities and character sets.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub frontend: &'a str,
    pub user: &'a [u8],
    pub schema: Option<&'a [u8]>,
    /// Client capability flags of the handshake (result framing depends on them).
    pub caps: u64,
    /// The handshake's character set and the last successful `SET NAMES` (as normalised).
    pub charset: u8,
    pub names: Option<&'a str>,
}

/// The cache key of one query.
pub fn key(p: &KeyParts<'_>, query: &[u8]) -> Box<[u8]> {
    let KeyParts {
        frontend,
        user,
        schema,
        caps,
        charset,
        names,
    } = *p;
    let mut k = Vec::with_capacity(frontend.len() + user.len() + query.len() + 80);
    let names = names.map(str::as_bytes);
    for part in [
        frontend.as_bytes(),
        user,
        schema.unwrap_or(b"\xff"),
        names.unwrap_or(b"\xff"),
    ] {
        k.extend_from_slice(&(part.len() as u32).to_le_bytes());
        k.extend_from_slice(part);
    }
    k.extend_from_slice(&caps.to_le_bytes());
    k.push(charset);
    k.extend_from_slice(query);
    k.into()
}

struct Entry {
    key: Box<[u8]>,
    reply: Box<[u8]>,
    expires_ms: u64,
    tick: u64,
}

impl Entry {
    fn cost(&self) -> usize {
        self.key.len() + self.reply.len() + ENTRY_OVERHEAD
    }
}

/// Counters of one rule on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    /// Results not stored: an error reply, inside a transaction, over `cache_max_result`, or
    /// while the daemon sheds load near `memory_limit`.
    pub not_stored: u64,
    pub bytes_served: u64,
}

/// Rule counters per frontend name, per rule index.
type PerFrontend = Vec<(String, Vec<RuleStats>)>;

#[derive(Default)]
struct Store {
    /// Key hash → entries with that hash.
    map: HashMap<u64, Vec<Entry>>,
    bytes: usize,
    entries: usize,
    tick: u64,
    evicted: u64,
    expired: u64,
    /// Per frontend name (a few: searched in order), per rule index.
    rules: PerFrontend,
}

impl Store {
    fn rule(&mut self, frontend: &str, rule: usize) -> &mut RuleStats {
        let i = match self.rules.iter().position(|(f, _)| f == frontend) {
            Some(i) => i,
            None => {
                self.rules.push((frontend.to_string(), Vec::new()));
                self.rules.len() - 1
            }
        };
        let v = &mut self.rules[i].1;
        if v.len() <= rule {
            v.resize(rule + 1, RuleStats::default());
        }
        &mut v[rule]
    }

    /// Drop least recently used entries until `need` more bytes fit under `size`: down to
    /// 15/16 of it, so the pass (a sort of the entries) runs once per many insertions.
    fn make_room(&mut self, need: usize, size: usize) {
        if self.bytes + need <= size {
            return;
        }
        let target = (size - size / 16).saturating_sub(need);
        let mut by_age: Vec<(u64, usize)> = self
            .map
            .values()
            .flatten()
            .map(|e| (e.tick, e.cost()))
            .collect();
        by_age.sort_unstable();
        let mut left = self.bytes;
        let mut cut = 0;
        for (tick, cost) in by_age {
            if left <= target {
                break;
            }
            left -= cost;
            cut = tick;
        }
        let (mut removed_bytes, mut removed) = (0, 0);
        self.map.retain(|_, v| {
            v.retain(|e| {
                let keep = e.tick > cut;
                if !keep {
                    removed_bytes += e.cost();
                    removed += 1;
                }
                keep
            });
            !v.is_empty()
        });
        self.bytes -= removed_bytes;
        self.entries -= removed;
        self.evicted += removed as u64;
    }
}

/// One shard's query cache (every MySQL frontend's entries, keys include the frontend).
#[derive(Default)]
pub struct QcacheShard {
    store: Mutex<Store>,
}

impl QcacheShard {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh result for `key`, counted as a hit or a miss of `rule`.
    pub fn lookup(
        &self,
        frontend: &str,
        rule: usize,
        key: &[u8],
        now_ms: u64,
    ) -> Option<Box<[u8]>> {
        let h = fnv1a(FNV_START, key);
        let mut st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        st.tick += 1;
        let tick = st.tick;
        let mut expired = None;
        let found = st.map.get_mut(&h).and_then(|v| {
            let i = v.iter().position(|e| &*e.key == key)?;
            if v[i].expires_ms <= now_ms {
                let e = v.swap_remove(i);
                expired = Some(e.cost());
                return None;
            }
            v[i].tick = tick;
            Some(v[i].reply.clone())
        });
        if let Some(cost) = expired {
            st.bytes -= cost;
            st.entries -= 1;
            st.expired += 1;
            if st.map.get(&h).is_some_and(Vec::is_empty) {
                st.map.remove(&h);
            }
        }
        let r = st.rule(frontend, rule);
        match &found {
            Some(reply) => {
                r.hits += 1;
                r.bytes_served += reply.len() as u64;
            }
            None => r.misses += 1,
        }
        found
    }

    /// Keep a result (`None`: it could not be kept, counted as `not_stored`).
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        conf: &MysqlCacheConf,
        frontend: &str,
        rule: usize,
        key: Box<[u8]>,
        reply: Option<Box<[u8]>>,
        ttl: Duration,
        now_ms: u64,
    ) {
        let mut st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        // Near the memory ceiling (`daemon.memory_limit`) the cache stops growing.
        let shedding = crate::mem::level() >= crate::mem::Level::AcceptPaused;
        let Some(reply) = reply.filter(|r| r.len() <= conf.max_result && !shedding) else {
            st.rule(frontend, rule).not_stored += 1;
            return;
        };
        st.tick += 1;
        let e = Entry {
            key,
            reply,
            expires_ms: now_ms.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64),
            tick: st.tick,
        };
        let cost = e.cost();
        let h = fnv1a(FNV_START, &e.key);
        // Replace an older result for the same key.
        if let Some(v) = st.map.get_mut(&h) {
            if let Some(i) = v.iter().position(|o| o.key == e.key) {
                let old = v.swap_remove(i).cost();
                st.bytes -= old;
                st.entries -= 1;
            }
        }
        st.make_room(cost, conf.size);
        st.bytes += cost;
        st.entries += 1;
        st.map.entry(h).or_default().push(e);
        st.rule(frontend, rule).stored += 1;
    }

    fn snapshot(&self) -> (usize, usize, u64, u64, PerFrontend) {
        let st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        (
            st.entries,
            st.bytes,
            st.evicted,
            st.expired,
            st.rules.clone(),
        )
    }
}

/// `show cache mysql`: per frontend and rule, summed over shards; then the stores' sizes.
pub fn render(
    shards: &[&QcacheShard],
    frontends: &[(String, Option<std::sync::Arc<MysqlCacheConf>>)],
) -> String {
    let mut out = String::from(
        "frontend rule ttl_ms hits misses hit_ratio stored not_stored bytes_served match_digest\n",
    );
    let snaps: Vec<_> = shards.iter().map(|s| s.snapshot()).collect();
    for (name, conf) in frontends {
        let Some(conf) = conf else { continue };
        for (i, r) in conf.rules.iter().enumerate() {
            let mut sum = RuleStats::default();
            for (_, _, _, _, rules) in &snaps {
                let mine = rules.iter().find(|(f, _)| f == name);
                if let Some(s) = mine.and_then(|(_, v)| v.get(i)) {
                    sum.hits += s.hits;
                    sum.misses += s.misses;
                    sum.stored += s.stored;
                    sum.not_stored += s.not_stored;
                    sum.bytes_served += s.bytes_served;
                }
            }
            let looked = sum.hits + sum.misses;
            let ratio = if looked == 0 {
                0.0
            } else {
                sum.hits as f64 / looked as f64
            };
            let _ = writeln!(
                out,
                "{name} {i} {} {} {} {ratio:.3} {} {} {} {}",
                r.ttl.as_millis(),
                sum.hits,
                sum.misses,
                sum.stored,
                sum.not_stored,
                sum.bytes_served,
                r.match_digest
            );
        }
    }
    let (mut entries, mut bytes, mut evicted, mut expired) = (0, 0, 0, 0);
    for (e, b, ev, ex, _) in &snaps {
        entries += e;
        bytes += b;
        evicted += ev;
        expired += ex;
    }
    let _ = writeln!(
        out,
        "store entries={entries} bytes={bytes} evicted={evicted} expired={expired}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MysqlCacheRule;

    fn conf(size: usize, max: usize) -> MysqlCacheConf {
        MysqlCacheConf {
            rules: vec![MysqlCacheRule {
                match_digest: "^select .* from catalog".into(),
                regex: regex::Regex::new("^select .* from catalog").unwrap(),
                user: Some("shop".into()),
                schema: None,
                ttl: Duration::from_secs(10),
            }],
            size,
            max_result: max,
        }
    }

    #[test]
    fn rules_and_read_only_statements() {
        let c = conf(1 << 20, 1024);
        assert_eq!(
            rule_for(&c, "select * from catalog where id = ?", b"shop", None),
            Some(0)
        );
        assert_eq!(
            rule_for(&c, "select * from catalog where id = ?", b"other", None),
            None
        );
        assert_eq!(
            rule_for(
                &c,
                "select * from catalog where id = ? for update",
                b"shop",
                None
            ),
            None
        );
        assert_eq!(
            rule_for(&c, "select * from catalog into @x", b"shop", None),
            None
        );
        assert!(!read_only("update catalog set a = ?"));
        assert!(!read_only("SELECT SQL_NO_CACHE * from t"));
        assert!(!read_only("SELECT * from t;delete from t"));
        assert!(!read_only("SELECT * from t where a = @x"));
        assert!(!read_only("select now(),a from t"));
        assert!(!read_only("SELECT a from t where d > current_date"));
        assert!(!read_only("SELECT last_insert_id()"));
        assert!(read_only("SELECT * from t"));
        assert!(changes_session("set @x = ?"));
        assert!(changes_session("create temporary table catalog (a int)"));
        assert!(changes_session("LOCK TABLES t READ"));
        assert!(!changes_session("SELECT * from t"));
        assert!(!changes_session("UPDATE t set a = ?"));
        assert!(!changes_session("SET NAMES latin1"), "a key part instead");
        assert!(changes_session("SET NAMES latin1,@x = ?"));
        assert!(sets_names("set names utf8mb4 collate utf8mb4_bin"));
    }

    #[test]
    fn hit_miss_expiry_and_lru_bound() {
        let c = conf(64 << 10, 8 << 10);
        let s = QcacheShard::new();
        let parts = KeyParts {
            frontend: "db",
            user: b"shop",
            schema: Some(b"app"),
            caps: 7,
            charset: 33,
            names: None,
        };
        let k = |q: &str| key(&parts, q.as_bytes());
        assert_eq!(s.lookup("db", 0, &k("q1"), 0), None);
        s.store(
            &c,
            "db",
            0,
            k("q1"),
            Some(b"reply1".to_vec().into()),
            c.rules[0].ttl,
            0,
        );
        assert_eq!(
            s.lookup("db", 0, &k("q1"), 9_999).as_deref(),
            Some(&b"reply1"[..])
        );
        // Another user, schema, caps or character set is another key.
        for other in [
            KeyParts {
                user: b"x",
                ..parts
            },
            KeyParts {
                schema: None,
                ..parts
            },
            KeyParts { caps: 8, ..parts },
            KeyParts {
                charset: 8,
                ..parts
            },
            KeyParts {
                names: Some("SET NAMES latin1"),
                ..parts
            },
        ] {
            assert_eq!(s.lookup("db", 0, &key(&other, b"q1"), 1), None, "{other:?}");
        }
        // Expired at the TTL.
        assert_eq!(s.lookup("db", 0, &k("q1"), 10_000), None);
        // Too big, or not given: not stored.
        s.store(
            &c,
            "db",
            0,
            k("big"),
            Some(vec![0; 9 << 10].into()),
            c.rules[0].ttl,
            0,
        );
        s.store(&c, "db", 0, k("err"), None, c.rules[0].ttl, 0);
        assert_eq!(s.lookup("db", 0, &k("big"), 1), None);
        // Fill past the size: the least recently used go, the store stays under its bound.
        for i in 0..100 {
            s.store(
                &c,
                "db",
                0,
                k(&format!("q{i}")),
                Some(vec![1; 4000].into()),
                c.rules[0].ttl,
                100,
            );
            // Keep q0 in use.
            let _ = s.lookup("db", 0, &k("q0"), 100);
        }
        let (entries, bytes, evicted, expired, rules) = s.snapshot();
        assert!(bytes <= c.size, "{bytes} > {}", c.size);
        assert!(
            evicted > 0 && entries < 100,
            "{entries} entries, {evicted} evicted"
        );
        assert_eq!(expired, 1);
        assert!(
            s.lookup("db", 0, &k("q0"), 101).is_some(),
            "recently used survives"
        );
        assert!(
            s.lookup("db", 0, &k("q1"), 101).is_none(),
            "least recently used went"
        );
        let r = rules[0].1[0];
        assert_eq!(r.not_stored, 2);
        assert!(r.hits >= 100);
        let text = render(&[&s], &[("db".into(), Some(std::sync::Arc::new(c)))]);
        assert!(text.starts_with("frontend rule ttl_ms hits"), "{text}");
        assert!(text.contains("db 0 10000 "), "{text}");
    }
}
