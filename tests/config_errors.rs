//! The daemon's command line and config checking, run as a user would: a bad config exits 2
//! naming the file and the key, `--check` on a good one exits 0 with a one-line summary, and
//! the example config from the issue (and the repository's sample) loads.

mod common;

use common::proxy::{run_bounded, temp_dir, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const GOOD: &str = r#"
[daemon]
shards = 1
io_driver = "epoll"
control_socket = "/tmp/shardgate-config-test-never-created.sock"

[[http]]
name = "www"
listen = ["127.0.0.1:1"]
default_pool = "app"
keepalive_timeout = "75s"

  [[http.route]]
  pool = "api"
  path_prefix = "/api/"
  url_regex = "^/api/v[0-9]+/"

[pool.app]
balance = "round_robin"
connect_timeout = "500ms"
servers = [ { name = "a", addr = "127.0.0.1:2", weight = 1 } ]

[pool.api]
servers = [ { name = "b", addr = "127.0.0.1:3" } ]
"#;

/// The example from issue 2, verbatim: it must keep loading.
const ISSUE_EXAMPLE: &str = r#"
[daemon]
shards = 0                      # one per CPU
io_driver = "auto"
control_socket = "/run/shardgate/shardgate.sock"

[[http]]
name = "www"
listen = ["0.0.0.0:80"]
default_pool = "app"            # where requests that match no route go
keepalive_timeout = "75s"
client_header_timeout = "60s"
client_body_timeout = "60s"     # between two reads of the body
send_timeout = "60s"            # between two writes to the client

  [[http.route]]                # first match wins; every key given must match
  pool = "static"
  host = ["static.example.com", "*.images.example.com"]

  [[http.route]]
  pool = "docs"
  file_type = ["pdf", "jpg", "png"]

  [[http.route]]
  pool = "api"
  path_prefix = "/api/"
  url_regex = "^/api/v[0-9]+/"
  header = { "X-Tier" = "gold*" }
  cookie = { "VIP" = "*" }

[pool.app]
balance = "least_requests"      # or "round_robin" (weighted)
connect_timeout = "20s"
response_timeout = "60s"        # no response head by then: 504
down_time = "10s"               # a server that refused a connect is skipped this long, on every shard
servers = [
  { name = "app1", addr = "10.0.0.11:8080", weight = 1 },
  { name = "app2", addr = "10.0.0.12:8080", weight = 2 },
]

[pool.static]
servers = [ { name = "s1", addr = "10.0.0.21:8080" } ]

[pool.docs]
servers = [ { name = "d1", addr = "10.0.0.31:8080" } ]

[pool.api]
servers = [ { name = "api1", addr = "10.0.0.41:8080" } ]
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&std::ffi::OsStr]) -> Run {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardgate");
    let out: Output = run_bounded(child, Duration::from_secs(10), "shardgate");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_config(text: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir("config");
    let path = dir.join("broken.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn check(path: &Path) -> Run {
    run(&["--config".as_ref(), path.as_os_str(), "--check".as_ref()])
}

/// `GOOD` with `from` replaced by `to` must be refused with exit 2 and a message naming the
/// file and every word of `names`; both with `--check` and when starting for real.
fn assert_refused(from: &str, to: &str, names: &[&str]) {
    assert!(GOOD.contains(from), "test bug: {from:?} not in GOOD");
    let (dir, path) = write_config(&GOOD.replacen(from, to, 1));
    for start_for_real in [false, true] {
        let r = if start_for_real {
            run(&["--config".as_ref(), path.as_os_str()])
        } else {
            check(&path)
        };
        let mode = if start_for_real { "start" } else { "--check" };
        assert_eq!(
            r.code,
            Some(2),
            "{mode} with {to:?}: exit code (stdout {:?}, stderr {:?})",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains(path.to_str().unwrap()) || r.stderr.contains("broken.toml"),
            "{mode} with {to:?}: stderr does not name the file: {:?}",
            r.stderr
        );
        for n in names {
            assert!(
                r.stderr.contains(n),
                "{mode} with {to:?}: stderr does not name {n:?}: {:?}",
                r.stderr
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    assert_refused(
        "keepalive_timeout = \"75s\"",
        "keepalive_timeout = \"75s\"\nkeep_alive_timeout = \"75s\"",
        &["keep_alive_timeout"],
    );
    assert_refused(
        "balance = \"round_robin\"",
        "balance = \"round_robin\"\nbogus = 1",
        &["bogus"],
    );
}

#[test]
fn bad_duration_is_refused_with_its_key() {
    assert_refused(
        "keepalive_timeout = \"75s\"",
        "keepalive_timeout = \"75 parsecs\"",
        &["keepalive_timeout"],
    );
    assert_refused(
        "connect_timeout = \"500ms\"",
        "connect_timeout = \"soon\"",
        &["connect_timeout"],
    );
}

#[test]
fn unknown_pool_reference_is_refused() {
    assert_refused(
        "default_pool = \"app\"",
        "default_pool = \"nope\"",
        &["default_pool", "nope"],
    );
    assert_refused("pool = \"api\"", "pool = \"missing\"", &["missing"]);
}

#[test]
fn bad_regex_is_refused_with_its_key() {
    assert_refused(
        "url_regex = \"^/api/v[0-9]+/\"",
        "url_regex = \"^/api/v[0-9+/\"",
        &["url_regex"],
    );
}

#[test]
fn bad_values_are_refused() {
    assert_refused(
        "balance = \"round_robin\"",
        "balance = \"random_guess\"",
        &["balance"],
    );
    assert_refused(
        "addr = \"127.0.0.1:2\"",
        "addr = \"not an address\"",
        &["addr"],
    );
    assert_refused(
        "io_driver = \"epoll\"",
        "io_driver = \"kqueue\"",
        &["io_driver"],
    );
}

#[test]
fn sites_claiming_one_user_or_host_are_refused() {
    assert_refused(
        "[pool.api]",
        "[[site]]\nname = \"a\"\nmysql_users = [\"shop\"]\n\n\
         [[site]]\nname = \"b\"\nhosts = [\"b.example\"]\nmysql_users = [\"shop\"]\n\n[pool.api]",
        &[
            "site[1].mysql_users[0]",
            "\"shop\" is already a MySQL user of site[0]",
        ],
    );
    assert_refused(
        "[pool.api]",
        "[[site]]\nname = \"a\"\nhosts = [\"*.example.com\"]\n\n\
         [[site]]\nname = \"b\"\nhosts = [\"*.Example.com\"]\n\n[pool.api]",
        &["site[1].hosts[0]", "is already a host of site[0]"],
    );
    assert_refused(
        "[pool.api]",
        "[[site]]\nname = \"a\"\nhosts = [\"a.example:8080\"]\n\n[pool.api]",
        &["site[0].hosts[0]", "has a port"],
    );
}

#[test]
fn missing_file_is_refused_and_named() {
    let dir = temp_dir("config");
    let path = dir.join("does-not-exist.toml");
    for args in [vec!["--check"], vec![]] {
        let mut all: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), path.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let r = run(&all);
        assert_eq!(
            r.code,
            Some(2),
            "missing file {args:?}: stderr {:?}",
            r.stderr
        );
        assert!(
            r.stderr.contains("does-not-exist.toml"),
            "stderr does not name the file: {:?}",
            r.stderr
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn invalid_toml_is_refused() {
    let (dir, path) = write_config("[daemon\nshards = 1\n");
    let r = check(&path);
    assert_eq!(r.code, Some(2), "stderr {:?}", r.stderr);
    assert!(
        r.stderr.contains("broken.toml"),
        "stderr does not name the file: {:?}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_on_a_good_config_prints_one_line_and_exits_0() {
    let (dir, path) = write_config(GOOD);
    let r = check(&path);
    assert_eq!(
        r.code,
        Some(0),
        "--check on a good config: stdout {:?} stderr {:?}",
        r.stdout,
        r.stderr
    );
    let summary = r.stdout.trim_end();
    assert!(
        !summary.is_empty() && !summary.contains('\n'),
        "one-line summary expected, got {:?}",
        r.stdout
    );
    assert!(
        !Path::new("/tmp/shardgate-config-test-never-created.sock").exists(),
        "--check created the control socket"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_issue_example_config_checks() {
    let (dir, path) = write_config(ISSUE_EXAMPLE);
    let r = check(&path);
    assert_eq!(
        r.code,
        Some(0),
        "issue 2's example: stdout {:?} stderr {:?}",
        r.stdout,
        r.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_sample_config_in_the_repository_checks() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shardgate.toml");
    assert!(
        sample.exists(),
        "{} is missing (issue 2 asks for a complete commented example)",
        sample.display()
    );
    let r = check(&sample);
    assert_eq!(
        r.code,
        Some(0),
        "{}: stdout {:?} stderr {:?}",
        sample.display(),
        r.stdout,
        r.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let r = run(&["--no-such-flag".as_ref()]);
    assert_eq!(r.code, Some(2), "stderr {:?}", r.stderr);
    let r = run(&["--version".as_ref()]);
    assert_eq!(r.code, Some(0), "--version: {:?}", r.stderr);
    assert!(
        r.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version prints the version: {:?}",
        r.stdout
    );
}

#[test]
fn bad_mysql_cache_rules_are_refused_with_their_key() {
    let mysql = |cache: &str| {
        format!(
            "[[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:2\"]\npool = \"api\"\n{cache}\n\n[pool.api]"
        )
    };
    assert_refused(
        "[pool.api]",
        &mysql("[[mysql.cache]]\nmatch_digest = \"^SELECT (\"\nttl = \"10s\""),
        &["mysql[0].cache[0].match_digest"],
    );
    assert_refused(
        "[pool.api]",
        &mysql("[[mysql.cache]]\nmatch_digest = \"^SELECT\"\nttl = \"0s\""),
        &["mysql[0].cache[0].ttl", "greater than zero"],
    );
    assert_refused(
        "[pool.api]",
        &mysql(
            "cache_size = \"1MB\"\ncache_max_result = \"2MB\"\n\
             [[mysql.cache]]\nmatch_digest = \"^SELECT\"\nttl = \"1s\"",
        ),
        &["mysql[0].cache_max_result", "more than cache_size"],
    );
    assert_refused(
        "[pool.api]",
        &mysql("[[mysql.cache]]\nmatch_digest = \"^SELECT\""),
        &["ttl"],
    );
}

/// Multiplexing and read/write split (docs/mysql-pooling.md): each bad key is named.
#[test]
fn bad_mysql_pooling_keys_are_refused_with_their_key() {
    // A frontend on its own pool "db", appended after GOOD's [pool.api].
    let with = |front: &str, servers: &str, pool_extra: &str| {
        format!(
            "[[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:3\"]\npool = \"db\"\n{front}\n\n\
             [pool.db]\n{pool_extra}\nservers = [{servers}]\n\n[pool.api]"
        )
    };
    let primary = "{ name = \"p\", addr = \"127.0.0.1:4\" }";
    let split = "{ name = \"p\", addr = \"127.0.0.1:4\", role = \"primary\" }, \
                 { name = \"r\", addr = \"127.0.0.1:5\", role = \"replica\" }";
    let user = "[[mysql.user]]\nname = \"shop\"\npassword = \"pw\"";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            with("multiplex = true", primary, ""),
            vec!["mysql[0].user", "[[mysql.user]]"],
        ),
        (
            with(
                &format!("multiplex = true\n{user}\n[[mysql.user]]\nname = \"shop\"\npassword = \"x\""),
                primary,
                "",
            ),
            vec!["mysql[0].user[1].name", "twice"],
        ),
        (
            with(
                "multiplex = true\n[[mysql.user]]\nname = \"shop\"\npassword_hash = \"*12\"",
                primary,
                "",
            ),
            vec!["mysql[0].user[0].password_hash", "40 hex"],
        ),
        (
            with(
                "multiplex = true\n[[mysql.user]]\nname = \"shop\"",
                primary,
                "",
            ),
            vec!["mysql[0].user[0].password", "missing"],
        ),
        (
            with(
                "multiplex = true\n[[mysql.user]]\nname = \"shop\"\npassword = \"a\"\npassword_hash = \"*14E65567ABDB5135D0CFD9A70B3032C179A49EE7\"",
                primary,
                "",
            ),
            vec!["mysql[0].user[0].password_hash", "not both"],
        ),
        (
            with(&format!("multiplex = true\n{user}\nmax_connections = 0"), primary, ""),
            vec!["mysql[0].user[0].max_connections"],
        ),
        (
            with(user, primary, ""),
            vec!["mysql[0].user", "only used with multiplex"],
        ),
        (
            with(
                &format!("read_your_writes = \"sometimes\"\nmonitor_user = \"m\"\n{user}"),
                split,
                "",
            ),
            vec!["mysql[0].read_your_writes", "sometimes"],
        ),
        (
            with(user, split, ""),
            vec!["mysql[0].monitor_user", "replicas"],
        ),
        (
            with(
                &format!("monitor_user = \"m\"\n{user}"),
                "{ name = \"r\", addr = \"127.0.0.1:5\", role = \"replica\" }",
                "",
            ),
            vec!["pool.db.servers", "primary"],
        ),
        (
            with(
                &format!("monitor_user = \"m\"\n{user}"),
                "{ name = \"r\", addr = \"127.0.0.1:5\", role = \"leader\" }",
                "",
            ),
            vec!["pool.db.servers[0].role", "leader"],
        ),
        (
            with(
                &format!("multiplex = true\n{user}\n[[mysql.route]]\nmatch_digest = \"^SELECT\"\nto = \"replica\""),
                primary,
                "",
            ),
            vec!["mysql[0].route[0].to", "no role"],
        ),
        (
            with(
                &format!("monitor_user = \"m\"\n{user}\n[[mysql.route]]\nmatch_digest = \"^SELECT (\"\nto = \"replica\""),
                split,
                "",
            ),
            vec!["mysql[0].route[0].match_digest"],
        ),
        (
            with(
                &format!("multiplex = true\n{user}\n[[mysql.cache]]\nmatch_digest = \"^SELECT\"\nttl = \"1s\""),
                primary,
                "",
            ),
            vec!["mysql[0].cache", "pass-through"],
        ),
        (
            with("", primary, "max_replication_lag = \"5s\""),
            vec!["pool.db.max_replication_lag", "no role"],
        ),
        (
            with(
                &format!("multiplex = true\n{user}"),
                "{ name = \"p\", addr = \"127.0.0.1:4\", send_proxy = \"v2\" }",
                "",
            ),
            vec!["pool.db.servers[0].send_proxy", "shared"],
        ),
    ];
    for (to, names) in cases {
        assert_refused("[pool.api]", &to, &names);
    }
    // A role on a pool of an [[http]] frontend.
    assert_refused(
        "servers = [ { name = \"a\", addr = \"127.0.0.1:2\", weight = 1 } ]",
        "servers = [ { name = \"a\", addr = \"127.0.0.1:2\", weight = 1, role = \"replica\" } ]",
        &["pool.app.servers[0].role", "[[mysql]]"],
    );
}
