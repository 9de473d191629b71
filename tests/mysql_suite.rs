//! MariaDB's own regression suite (`/usr/share/mysql/mysql-test/main/*.test`, Debian's
//! `mariadb-test` package) run with the `mariadb-test` client against a real MariaDB directly
//! and through the real `shardgate` binary, in four client modes: plain, `--ps-protocol`,
//! `--cursor-protocol` and `--compress`.
//!
//! A test counts in a mode only if its direct run completes (exit 0) and is deterministic: the
//! proxy's output is compared with one direct run, and when they differ a second direct run
//! decides (differs from the first: excluded as nondeterministic); if the direct runs agree the
//! test runs through the proxy again, and only a difference shown twice is a proxy bug (once:
//! excluded as nondeterministic). Tests that need mtr-only features, plugins, debug builds, the server's UNIX socket or
//! a server restart fail directly and are excluded by that rule, never by a hand list.
//!
//! Asserted: every counted test's proxied output equals its direct output, and no session was
//! left unparsed by the observer (`unparsed` of `show traffic mysql`, read after every run so
//! a failure names the test and the mode; the daemon logs at debug level for the reasons).
//!
//! Knobs: `MYSQL_SUITE=all` runs every test, `MYSQL_SUITE=N` N tests spread evenly over the
//! sorted list, `MYSQL_SUITE_TESTS=a,b,c` exactly those; `MYSQL_SUITE_JOBS=1` one worker
//! instead of two (each has its own MariaDB and shardgate); `MYSQL_SUITE_FINDINGS=FILE`
//! appends every unparsed session and difference to FILE as it is found. The default slice is
//! every 40th test of the sorted list from index 33 (0-based), plus the regression tests in
//! [`REGRESSIONS`].

mod common;
mod mysql_support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Proxy;
use mysql_support::*;

/// Where Debian's `mariadb-test` package puts the suite.
const SUITE_DIR: &str = "/usr/share/mysql/mysql-test";
/// The default slice: every STEP-th test of the sorted list from index OFFSET (32 of MariaDB
/// 10.11's 1,295), picked for quick tests: about 30 s with two workers on two cores, so the
/// two CI passes (one per io driver) stay well inside 3 minutes.
const STEP: usize = 40;
const OFFSET: usize = 33;
/// Also in the default slice: tests whose sessions the observer once gave up on (a `SELECT`
/// in a compound statement or procedure after it opened a cursor, so the column EOF carries
/// `SERVER_STATUS_CURSOR_EXISTS`; `COM_CHANGE_USER`), kept as regression tests.
const REGRESSIONS: [&str; 5] = [
    "ctype_utf8_uca",
    "keywords",
    "func_analyse",
    "sp-row",
    "change_user",
];
/// Bound on one `mariadb-test` run; a direct run that takes longer is excluded.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const MODES: [&str; 4] = ["plain", "ps-protocol", "cursor-protocol", "compress"];

/// Server-side set-up, run once per server as `sg_root`: `root` without a password from
/// loopback (the suite's `connect` lines log in as root from "localhost"), mtr's
/// `add_suppression`, a snapshot of the global variables, and `mtr.sg_reset()` which brings
/// the server back to that state between runs: kills leftover sessions, drops every database
/// and account a test made, gives root back its empty password and its grants, restores changed
/// global variables and recreates `test`.
const SETUP_SQL: &str = r#"
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE DATABASE IF NOT EXISTS mtr;
CREATE TABLE IF NOT EXISTS mtr.test_suppressions (pattern VARCHAR(255));
CREATE TABLE IF NOT EXISTS mtr.sg_globals AS
  SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES;
DROP PROCEDURE IF EXISTS mtr.add_suppression;
DROP PROCEDURE IF EXISTS mtr.sg_reset;
DELIMITER //
CREATE PROCEDURE mtr.add_suppression(pattern VARCHAR(255))
BEGIN
  INSERT INTO mtr.test_suppressions VALUES (pattern);
END//
CREATE PROCEDURE mtr.sg_reset()
BEGIN
  DECLARE done INT DEFAULT 0;
  DECLARE q TEXT;
  DECLARE c CURSOR FOR
    SELECT CONCAT('KILL ', ID) FROM information_schema.PROCESSLIST
      WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler', 'sg_root')
    UNION ALL
    SELECT CONCAT('DROP DATABASE `', SCHEMA_NAME, '`') FROM information_schema.SCHEMATA
      WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys',
                                'mtr', 'sbtest', 'app')
    UNION ALL
    SELECT IF(is_role = 'Y', CONCAT('DROP ROLE `', User, '`'),
              CONCAT('DROP USER `', User, '`@`', Host, '`'))
      FROM mysql.user
      WHERE CONCAT(User, '@', Host) NOT IN
        ('root@localhost', 'mariadb.sys@localhost', 'sg_a@%', 'sg_b@%', 'sg_root@%')
    UNION ALL
    SELECT CONCAT('SET GLOBAL ', g.VARIABLE_NAME, ' = ',
                  IF(s.VARIABLE_VALUE REGEXP '^-?[0-9]+(\\.[0-9]+)?$', s.VARIABLE_VALUE,
                     QUOTE(s.VARIABLE_VALUE)))
      FROM information_schema.GLOBAL_VARIABLES g JOIN mtr.sg_globals s USING (VARIABLE_NAME)
      WHERE NOT (g.VARIABLE_VALUE <=> s.VARIABLE_VALUE);
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
  DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END;
  OPEN c;
  l: LOOP
    FETCH c INTO q;
    IF done THEN LEAVE l; END IF;
    SET @sg_q = q;
    PREPARE s FROM @sg_q;
    EXECUTE s;
    DEALLOCATE PREPARE s;
  END LOOP;
  CLOSE c;
  ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
  GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
  TRUNCATE TABLE mtr.test_suppressions;
  CREATE DATABASE test;
END//
DELIMITER ;
FLUSH PRIVILEGES;
"#;

/// Settings of the server that widen what the suite can do over TCP: host names for loopback
/// (accounts the tests create `@localhost`) and file operations under the instance's folder;
/// and no background statistics recalculation (EXPLAIN's row estimates otherwise change
/// between runs of the same test).
fn server_cnf(dir: &Path) -> String {
    format!(
        "skip-name-resolve=0\nsecure-file-priv={}\nlocal-infile=ON\ninnodb-stats-auto-recalc=OFF\n",
        dir.display()
    )
}

/// What one `mariadb-test` run produced.
#[derive(Clone, PartialEq)]
struct RunOut {
    /// Exit code; None when killed after RUN_TIMEOUT.
    code: Option<i32>,
    /// The result file `--record` wrote (the test's output) then the client's own stdout+stderr.
    text: String,
}

#[derive(Default)]
struct Tally {
    tried: usize,
    counted: BTreeMap<&'static str, usize>,
    identical: usize,
    excluded: BTreeMap<String, usize>,
    unparsed_sessions: u64,
    /// "test mode: reason" lines.
    unparsed: Vec<String>,
    /// "test mode: first differing lines".
    differences: Vec<String>,
}

/// One MariaDB and one shardgate in front of it; runs the suite's tests one at a time.
struct Worker {
    db: MariaDb,
    proxy: Proxy,
    /// The instance's folder: MYSQLTEST_VARDIR (file operations are allowed under it).
    vardir: PathBuf,
    /// Where each run's result and log go.
    scratch: PathBuf,
    log_offset: u64,
    unparsed_seen: u64,
    /// Whether a test ran since the last reset.
    dirty: bool,
}

fn say(line: &str) {
    // Straight to stderr (not the harness's capture): progress of a minutes-long test.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn findings(line: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    if let Ok(path) = std::env::var("MYSQL_SUITE_FINDINGS") {
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Sum of `unparsed` over every user of `show traffic mysql`.
fn unparsed_total(p: &Proxy) -> u64 {
    traffic(p).users.values().map(|u| u.unparsed).sum()
}

fn env_value(env: &Path, key: &str) -> String {
    let text = fs::read_to_string(env).unwrap_or_else(|e| panic!("{}: {e}", env.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("no {key} in {}", env.display()))
        .to_string()
}

/// Run SQL as `sg_root` directly; Err with stderr on failure.
fn admin_sql(port: u16, sql: &str) -> Result<String, String> {
    let out = cli(port, "sg_root", "pw_root", None, &["-N", "-B"], Some(sql));
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(stderr(&out))
    }
}

impl Worker {
    fn start(test: &str) -> Option<Worker> {
        let db = MariaDb::start(test, 1)?;
        let vardir = PathBuf::from(env_value(db.env_path(), "MARIADB_DIR"));
        let cnf = env_value(db.env_path(), "MARIADB_CNF_0");
        let mut f = fs::OpenOptions::new().append(true).open(&cnf).unwrap();
        f.write_all(server_cnf(&vardir).as_bytes()).unwrap();
        drop(f);
        db.stop_one(0);
        db.start_one(0);
        admin_sql(db.ports[0], SETUP_SQL).unwrap_or_else(|e| panic!("suite set-up: {e}"));
        let proxy = Proxy::start_env(
            &config(2, &db.ports, "", ""),
            &[],
            &[("SHARDGATE_LOG", "info,shardgate::proxy::mysql=debug")],
        );
        let scratch = proxy.dir.join("runs");
        fs::create_dir_all(&scratch).unwrap();
        for d in ["tmp", "log"] {
            fs::create_dir_all(vardir.join(d)).unwrap();
        }
        let mut w = Worker {
            db,
            proxy,
            vardir,
            scratch,
            log_offset: 0,
            unparsed_seen: 0,
            dirty: true,
        };
        w.settle();
        w.unparsed_seen = unparsed_total(&w.proxy);
        Some(w)
    }

    fn direct_port(&self) -> u16 {
        self.db.ports[0]
    }

    fn proxy_port(&self) -> u16 {
        self.proxy.port("db")
    }

    /// Wait until the proxy has no session open (the observer folds `unparsed` at close).
    fn settle(&self) {
        assert!(
            wait_until(Duration::from_secs(30), || traffic(&self.proxy)
                .front("active")
                == 0),
            "proxied sessions still open 30 s after a test ended:\n{}",
            traffic(&self.proxy).text
        );
    }

    /// The server back to its set-up state; Err if the server is gone (a test stopped it).
    fn reset(&mut self) -> Result<(), String> {
        self.dirty = false;
        let tmp = self.vardir.join("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        admin_sql(self.direct_port(), "CALL mtr.sg_reset();").map(|_| ())
    }

    /// After a test stopped the server: start it again and wait until the proxy reaches it.
    fn revive(&self) {
        // A server still running that the reset cannot log in to is restarted too (a second
        // instance on the same port and datadir would not start, the first would be orphaned).
        if process_alive(&env_value(self.db.env_path(), "MARIADB_PID_0")) {
            self.db.stop_one(0);
        }
        self.db.start_one(0);
        let port = self.proxy_port();
        assert!(
            wait_until(Duration::from_secs(60), || cli(
                port,
                "sg_root",
                "pw_root",
                None,
                &["-e", "select 1"],
                None
            )
            .status
            .success()),
            "the proxy does not reach the restarted server"
        );
        self.settle();
    }

    /// Run `name` in `mode` against `port` with `mariadb-test`.
    fn run(&self, name: &str, mode: &str, port: u16, tag: &str) -> RunOut {
        let result = self.scratch.join(format!("{name}.{mode}.{tag}.result"));
        let log = self.scratch.join(format!("{name}.{mode}.{tag}.log"));
        let _ = fs::remove_file(&result);
        let logf = File::create(&log).unwrap();
        let tmp = self.vardir.join("tmp");
        let client = |prog: &str| {
            format!("{prog} --no-defaults --host=127.0.0.1 --port={port} --user=root --protocol=tcp --skip-ssl")
        };
        let mut cmd = Command::new("mariadb-test");
        cmd.current_dir(SUITE_DIR)
            .arg("--no-defaults")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--user=root")
            .arg("--protocol=tcp")
            .arg("--skip-ssl")
            .arg("--max-connect-retries=3")
            .arg(format!("--basedir={SUITE_DIR}/"))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--logdir={}", self.vardir.join("log").display()))
            .arg(format!("--test-file=main/{name}.test"))
            .arg(format!("--result-file={}", result.display()))
            .arg("--record");
        if mode != "plain" {
            cmd.arg(format!("--{mode}"));
        }
        cmd.arg("test")
            .env("MYSQL_TEST_DIR", SUITE_DIR)
            .env("MYSQLTEST_VARDIR", &self.vardir)
            .env("MYSQL_TMP_DIR", &tmp)
            .env("MASTER_MYPORT", port.to_string())
            // The server's socket would bypass the proxy: tests that need it fail both ways.
            .env("MASTER_MYSOCK", self.vardir.join("no-such.sock"))
            .env("MYSQL_CHARSETSDIR", "/usr/share/mysql/charsets")
            .env("MYSQL_SHAREDIR", "/usr/share/mysql")
            .env("BIG_TEST", "0")
            .env("MYSQL", client("mariadb"))
            .env("MYSQL_DUMP", client("mariadb-dump"))
            .env("MYSQLADMIN", client("mariadb-admin"))
            .env("MYSQL_SHOW", client("mariadb-show"))
            .env("MYSQL_CHECK", client("mariadb-check"))
            .env("MYSQL_IMPORT", client("mariadb-import"))
            .env("MYSQL_SLAP", client("mariadb-slap"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn mariadb-test: {e}"));
        let deadline = Instant::now() + RUN_TIMEOUT;
        let server = env_value(self.db.env_path(), "MARIADB_PID_0");
        let mut polls = 0u32;
        let code = loop {
            polls += 1;
            // A test that stops the server (mtr would restart it) waits for it in vain: stop
            // the run as soon as the server is gone.
            let server_gone = polls.is_multiple_of(20) && !process_alive(&server);
            match child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() < deadline && !server_gone => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    // Our own child, killed by its PID.
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let mut text = fs::read_to_string(&result).unwrap_or_default();
        text.push_str("\n--- mariadb-test output ---\n");
        text.push_str(&fs::read_to_string(&log).unwrap_or_default());
        RunOut { code, text }
    }

    /// The "mysql session no longer followed" lines the daemon logged since the last call.
    fn new_reasons(&mut self) -> Vec<String> {
        let mut f = File::open(self.proxy.dir.join("daemon.log")).unwrap();
        f.seek(SeekFrom::Start(self.log_offset)).unwrap();
        let mut buf = String::new();
        f.read_to_string(&mut buf).unwrap();
        self.log_offset += buf.len() as u64;
        buf.lines()
            .filter(|l| l.contains("no longer followed"))
            .map(|l| match l.find("reason=") {
                Some(i) => l[i..].to_string(),
                None => l.to_string(),
            })
            .collect()
    }

    /// Run one test in every mode; fold what happened into `t`.
    fn test(&mut self, name: &str, t: &Mutex<Tally>) {
        let mut notes = Vec::new();
        let started = Instant::now();
        t.lock().unwrap().tried += 1;
        for mode in MODES {
            let verdict = self.test_mode(name, mode, t);
            notes.push(format!("{mode}={verdict}"));
            if verdict == "stops-server" {
                break;
            }
        }
        say(&format!(
            "mysql_suite: {name}: {} ({:.1} s)",
            notes.join(" "),
            started.elapsed().as_secs_f64()
        ));
    }

    /// Wait for the proxied sessions to end; note any new unparsed ones with their reasons.
    fn account_unparsed(&mut self, name: &str, mode: &str, t: &Mutex<Tally>) {
        self.settle();
        let now = unparsed_total(&self.proxy);
        let reasons = self.new_reasons();
        if now > self.unparsed_seen {
            let n = now - self.unparsed_seen;
            let line = format!(
                "UNPARSED {name} [{mode}]: {n} session(s): {}",
                if reasons.is_empty() {
                    "(no reason logged)".to_string()
                } else {
                    reasons.join(" | ")
                }
            );
            say(&line);
            findings(&line);
            let mut g = t.lock().unwrap();
            g.unparsed_sessions += n;
            g.unparsed.push(line);
        }
        self.unparsed_seen = now;
    }

    fn test_mode(&mut self, name: &str, mode: &'static str, t: &Mutex<Tally>) -> String {
        let exclude = |why: &str| {
            *t.lock()
                .unwrap()
                .excluded
                .entry(why.to_string())
                .or_default() += 1;
            why.to_string()
        };
        if self.dirty && self.reset().is_err() {
            self.revive();
            self.reset().expect("reset after restart");
        }
        self.dirty = true;
        let direct = self.run(name, mode, self.direct_port(), "direct");
        if self.reset().is_err() {
            // The test stopped (or restarted) the server: no run through the proxy.
            self.revive();
            return exclude("stops-server");
        }
        if direct.code.is_none() {
            return exclude("timeout");
        }
        let proxied = self.run(name, mode, self.proxy_port(), "proxy");
        self.dirty = true;
        self.account_unparsed(name, mode, t);
        if self.reset().is_err() {
            self.revive();
            return exclude("stops-server");
        }
        match direct.code {
            Some(0) => {}
            Some(62) => return exclude("skipped-by-test"),
            _ => return exclude("fails-directly"),
        }
        if proxied == direct {
            let mut g = t.lock().unwrap();
            *g.counted.entry(mode).or_default() += 1;
            g.identical += 1;
            return "identical".into();
        }
        let again = self.run(name, mode, self.direct_port(), "direct2");
        self.dirty = true;
        if again != direct {
            return exclude("nondeterministic");
        }
        // Direct runs agree: the difference counts if the proxy shows it again (rare
        // nondeterminism, such as InnoDB's row estimates, passes two direct runs by chance).
        if self.reset().is_err() {
            self.revive();
            return exclude("stops-server");
        }
        let proxied2 = self.run(name, mode, self.proxy_port(), "proxy2");
        self.dirty = true;
        self.account_unparsed(name, mode, t);
        if proxied2 == direct {
            return exclude("nondeterministic");
        }
        if only_estimates(&direct.text, &proxied.text)
            && only_estimates(&direct.text, &proxied2.text)
        {
            return exclude("optimizer-estimates");
        }
        let line = format!(
            "DIFFERENCE {name} [{mode}]: exit direct {:?} proxy {:?}\n{}",
            direct.code,
            proxied.code,
            first_difference(&direct.text, &proxied.text)
        );
        say(&line);
        findings(&line);
        let mut g = t.lock().unwrap();
        *g.counted.entry(mode).or_default() += 1;
        g.differences.push(line);
        "DIFFERENT".into()
    }
}

/// Whether process `pid` exists and is not a zombie.
fn process_alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Do two outputs differ only in the optimizer's estimates of an `EXPLAIN FORMAT=JSON` /
/// `ANALYZE` (the numbers of `"rows"`, `"filtered"`, `"cost"`, ... lines), which InnoDB's
/// sampled statistics change from run to run? Every other byte must be the same.
fn only_estimates(a: &str, b: &str) -> bool {
    const KEYS: [&str; 6] = [
        "\"rows\":",
        "\"filtered\":",
        "\"r_rows\":",
        "\"r_filtered\":",
        "\"cost\":",
        "\"r_total_filtered\":",
    ];
    // Every run of digits and dots becomes one '#': 999 and 1000 are alike.
    let mask = |l: &str| -> String {
        let mut out = String::with_capacity(l.len());
        for c in l.chars() {
            if c.is_ascii_digit() || c == '.' {
                if !out.ends_with('#') {
                    out.push('#');
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    // A row of tabular EXPLAIN: id, select_type, table, type, possible_keys, key, key_len,
    // ref, rows, (filtered,) Extra.
    let explain_row = |l: &str| {
        let f: Vec<&str> = l.split('\t').collect();
        f.len() >= 10
            && f[0].bytes().all(|c| c.is_ascii_digit())
            && [
                "SIMPLE",
                "PRIMARY",
                "DERIVED",
                "SUBQUERY",
                "UNION",
                "LATERAL DERIVED",
                "DEPENDENT SUBQUERY",
                "MATERIALIZED",
                "UNION RESULT",
                "DEPENDENT UNION",
                "UNCACHEABLE SUBQUERY",
            ]
            .contains(&f[1])
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x == y
                || ((KEYS.iter().any(|k| x.contains(k) && y.contains(k))
                    || (explain_row(x) && explain_row(y)))
                    && mask(x) == mask(y))
        })
}

/// The first differing line of two outputs, with two lines of context before it.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = i.saturating_sub(2);
    let show = |v: &[&str]| {
        v[from.min(v.len())..(i + 3).min(v.len())]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "  line {}: direct:\n{}\n  proxy:\n{}",
        i + 1,
        show(&a),
        show(&b)
    )
}

/// The tests to run, sorted, and how they were picked.
fn selection() -> (Vec<String>, String) {
    let mut all: Vec<String> = fs::read_dir(Path::new(SUITE_DIR).join("main"))
        .unwrap_or_else(|e| panic!("{SUITE_DIR}/main: {e}"))
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".test").map(str::to_string)
        })
        .collect();
    all.sort();
    let total = all.len();
    if let Ok(list) = std::env::var("MYSQL_SUITE_TESTS") {
        let picked: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for p in &picked {
            assert!(all.contains(p), "no test {p} in {SUITE_DIR}/main");
        }
        return (picked, "MYSQL_SUITE_TESTS".into());
    }
    let (step, offset) = match std::env::var("MYSQL_SUITE").as_deref() {
        Ok("all") => (1, 0),
        Ok(n) if !n.is_empty() => {
            let n: usize = n
                .parse()
                .expect("MYSQL_SUITE is `all` or a number of tests");
            (total.div_ceil(n.clamp(1, total)), 0)
        }
        _ => (STEP, OFFSET),
    };
    let default = std::env::var("MYSQL_SUITE").is_err();
    let mut picked: Vec<String> = all.iter().skip(offset).step_by(step).cloned().collect();
    let mut how = format!("every {step}th of {total} sorted tests from index {offset}");
    if default {
        for r in REGRESSIONS {
            assert!(
                all.iter().any(|t| t == r),
                "no test {r} in {SUITE_DIR}/main"
            );
            if !picked.iter().any(|t| t == r) {
                picked.push(r.to_string());
            }
        }
        how.push_str(&format!(", and {}", REGRESSIONS.join(", ")));
    }
    (picked, how)
}

#[test]
fn optimizer_estimates_are_the_only_tolerated_difference() {
    let a = "{\n  \"rows\": 1000,\n  \"filtered\": 1.855344296,\n  \"x\": 1\n}";
    let b = "{\n  \"rows\": 999,\n  \"filtered\": 1.808695674,\n  \"x\": 1\n}";
    assert!(only_estimates(a, b));
    assert!(
        !only_estimates(a, &b.replace("\"x\": 1", "\"x\": 2")),
        "data differs"
    );
    assert!(!only_estimates(
        a,
        &b.replace("\"rows\": 999", "\"rows\": \"999\"")
    ));
    assert!(!only_estimates(a, &format!("{b}\nextra")));
    let t = "1\tPRIMARY\t<derived2>\tref\tkey0\tkey0\t5\tfunc\t5\tUsing where";
    assert!(only_estimates(t, &t.replace("func\t5", "func\t7")));
    assert!(
        !only_estimates(t, &t.replace("ref", "ALL")),
        "a plan change is not an estimate"
    );
}

#[test]
fn mariadb_regression_suite_through_the_proxy() {
    const NAME: &str = "mariadb_regression_suite_through_the_proxy";
    let started = Instant::now();
    let jobs: usize = std::env::var("MYSQL_SUITE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .clamp(1, 2);
    let Some(first) = Worker::start(NAME) else {
        return;
    };
    let mut workers = vec![first];
    while workers.len() < jobs {
        workers.push(Worker::start(NAME).expect("MariaDB was installed a moment ago"));
    }
    let (tests, how) = selection();
    say(&format!(
        "mysql_suite: {} tests ({how}), {} modes, {jobs} worker(s)",
        tests.len(),
        MODES.len()
    ));
    let tally = Mutex::new(Tally::default());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for w in workers.iter_mut() {
            let (tally, next, tests) = (&tally, &next, &tests);
            s.spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(name) = tests.get(i) else { break };
                w.test(name, tally);
            });
        }
    });
    let total_unparsed: u64 = workers.iter().map(|w| unparsed_total(&w.proxy)).sum();
    let t = tally.into_inner().unwrap();
    let counted: usize = t.counted.values().sum();
    let summary = format!(
        "mysql_suite: {} tests tried ({how}), {} test-modes counted ({}), {} identical, excluded: {}; unparsed sessions: {total_unparsed}; {:.0} s",
        t.tried,
        counted,
        MODES
            .iter()
            .map(|m| format!("{m} {}", t.counted.get(m).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
        t.identical,
        if t.excluded.is_empty() {
            "none".to_string()
        } else {
            t.excluded
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        started.elapsed().as_secs_f64()
    );
    say(&summary);
    findings(&summary);
    // A handful of picked tests may all be excluded; a slice of the suite never is.
    for mode in MODES.iter().filter(|_| t.tried >= 10) {
        assert!(
            t.counted.get(mode).copied().unwrap_or(0) > 0,
            "no test counted in mode {mode}: the harness is broken, not the proxy\n{summary}"
        );
    }
    assert!(
        t.differences.is_empty(),
        "proxied output differs from direct output:\n{}\n{summary}",
        t.differences.join("\n")
    );
    assert_eq!(t.unparsed_sessions, total_unparsed);
    assert!(
        t.unparsed.is_empty(),
        "sessions the observer could not follow:\n{}\n{summary}",
        t.unparsed.join("\n")
    );
}
