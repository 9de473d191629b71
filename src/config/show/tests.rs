//! `to_toml` reads back to the same file and builds; the layout is the documented one; strings
//! that need escapes survive.

use super::*;
use crate::config::file::{Scalar, StrList};

const EXAMPLE: &str = include_str!("../../../config/shardgate.toml");

/// tests/sticky.rs: three servers with routes and an `app_cookie` table (plus every
/// `insert_cookie` attribute, which the builder accepts whatever the mode).
const STICKY: &str = r#"
[daemon]
shards = 2
io_driver = "epoll"
control_socket = "run/sg.sock"

[[http]]
name = "web"
listen = ["127.0.0.1:18080"]
default_pool = "app"

[pool.app]
servers = [
  { name = "a", addr = "127.0.0.1:19001", route = "n1" },
  { name = "b", addr = "127.0.0.1:19002", route = "n2" },
  { name = "c", addr = "127.0.0.1:19003", route = "n3" },
]

[pool.app.sticky]
mode = "insert_cookie"
cookie = "SGROUTE"
cookie_path = "/app"
cookie_secure = true
cookie_httponly = false
cookie_samesite = "Strict"
cookie_max_age = "1h"
"#;

/// tests/health.rs: two frontends, two pools with HTTP checks.
const HEALTH: &str = r#"
[daemon]
shards = 1
io_driver = "auto"
control_socket = "run/sg.sock"

[[http]]
name = "web"
listen = ["127.0.0.1:18081"]
default_pool = "one"

[[http]]
name = "web2"
listen = ["127.0.0.1:18082"]
default_pool = "two"

[pool.one]
servers = [ { name = "a", addr = "127.0.0.1:19011" } ]
[pool.one.health]
method = "http_head"
uri = "/health/head"
interval = "100ms"

[pool.two]
servers = [ { name = "b", addr = "127.0.0.1:19012" } ]
[pool.two.health]
method = "http_get"
uri = "http://check.example:8080/hc?x=1"
user_agent = "probe/1.0"
interval = "100ms"
"#;

/// tests/health.rs: an agent port, weights, a tcp check with its agent interval.
const AGENT: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:18083"]
default_pool = "app"

[pool.app]
balance = "round_robin"
servers = [
  { name = "a", addr = "127.0.0.1:19021", weight = 10, agent_port = 19029 },
  { name = "b", addr = "127.0.0.1:19022", weight = 10 },
]

[pool.app.health]
method = "tcp"
interval = "100ms"
agent_interval = "50ms"
"#;

/// tests/balancing.rs and tests/mysql_health.rs: a MySQL frontend on a hash pool with a
/// mysql check whose query holds quotes.
const MYSQL: &str = r#"
[daemon]
shards = 2

[[mysql]]
name = "db"
listen = ["127.0.0.1:13307"]
pool = "db"
client_idle_timeout = "8h"
max_connections = 100

[pool.db]
balance = "hash"
servers = [
  { name = "m1", addr = "127.0.0.1:13316" },
  { name = "m2", addr = "127.0.0.1:13326" },
  { name = "m3", addr = "127.0.0.1:13336", backup = true, max_connections = 20 },
]
[pool.db.health]
method = "mysql"
mysql_user = "sg_check"
mysql_password = "pw_check"
mysql_query = "SELECT 1, 'two' UNION SELECT 3, 'four'"
interval = "150ms"
timeout = "150ms"
rise = 2
fall = 2
"#;

/// tests/server_admin.rs with keys of more kinds: a route, a source_ip table, a hash pool,
/// sizes and rates written as numbers.
const ADMIN: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:18084"]
default_pool = "app"
keepalive_timeout = "75s"
client_body_min_rate = 1024
max_body = 1048576
server_names = ["www.example.com", "*.example.com"]

  [[http.route]]
  pool = "other"
  host = "one.example"

[pool.app]
balance = "least_time"
queue_timeout = "2s"
slow_start = "30s"
max_connections_per_server = 64
max_idle_per_server = 8
servers = [
  { name = "a", addr = "127.0.0.1:19031" },
  { name = "b", addr = "127.0.0.1:19032" },
  { name = "c", addr = "127.0.0.1:19033" },
]

[pool.app.sticky]
mode = "source_ip"
ttl = "10m"
table_size = 1000

[pool.other]
balance = "hash"
hash_key = "header:X-User"
servers = [{ name = "o", addr = "127.0.0.1:19034" }]
"#;

fn parse(text: &str) -> FileConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The written text parses to the same `FileConfig` and builds.
fn round_trip(text: &str) -> String {
    let f = parse(text);
    let out = to_toml(&f);
    let back: FileConfig = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(back, f, "\n{out}");
    crate::config::from_str(&out, "<x>").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(to_toml(&back), out, "writing is stable");
    out
}

#[test]
fn the_example_file_round_trips() {
    crate::config::from_str(EXAMPLE, "<example>").unwrap();
    round_trip(EXAMPLE);
}

#[test]
fn test_suite_configs_round_trip() {
    for text in [STICKY, HEALTH, AGENT, MYSQL, ADMIN] {
        round_trip(text);
    }
}

#[test]
fn layout_is_sectioned_with_one_server_per_line() {
    let out = round_trip(ADMIN);
    let expected = r#"[daemon]

[[http]]
name = "web"
listen = ["127.0.0.1:18084"]
default_pool = "app"
keepalive_timeout = "75s"
client_body_min_rate = 1024
max_body = 1048576
server_names = ["www.example.com", "*.example.com"]

  [[http.route]]
  pool = "other"
  host = ["one.example"]

[pool.app]
balance = "least_time"
max_connections_per_server = 64
max_idle_per_server = 8
queue_timeout = "2s"
slow_start = "30s"
servers = [
  { name = "a", addr = "127.0.0.1:19031" },
  { name = "b", addr = "127.0.0.1:19032" },
  { name = "c", addr = "127.0.0.1:19033" },
]

[pool.app.sticky]
mode = "source_ip"
ttl = "10m"
table_size = 1000

[pool.other]
balance = "hash"
hash_key = "header:X-User"
servers = [
  { name = "o", addr = "127.0.0.1:19034" },
]
"#;
    assert_eq!(out, expected);
}

#[test]
fn example_sections_come_in_order() {
    let out = round_trip(EXAMPLE);
    let headers: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    assert_eq!(
        headers,
        [
            "[daemon]",
            "[[http]]",
            "[[http.route]]",
            "[[http.route]]",
            "[[http.route]]",
            "[[http.route]]",
            "[[mysql]]",
            "[pool.api]",
            "[pool.api.health]",
            "[pool.app]",
            "[pool.app.sticky]",
            "[pool.app.health]",
            "[pool.db]",
            "[pool.static]",
        ]
    );
    assert!(out.contains(
        "  { name = \"app2\", addr = \"127.0.0.1:9002\", weight = 2, route = \"node2\", max_connections = 200 },\n"
    ));
}

#[test]
fn strings_needing_escapes_survive() {
    let text = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:18085"]
default_pool = "app"

  [[http.route]]
  pool = "app"
  url_regex = '^/api/v\d+/(?:"quoted"|\\back)/ünï€ode/😀$'
  header = { "X-Tier" = "gold \"*\" \\ tab	here", "X.Odd!#" = "*" }
  cookie = { "sess" = "caf\u00e9*\u0001" }

[pool.app]
servers = [{ name = "a", addr = "127.0.0.1:19041" }]

[pool.app.health]
method = "http_get"
uri = "/h?q=\"x\""
expect_body_regex = "^OK\\s+\\d{3}\n"
"#;
    let f = parse(text);
    let route = &f.http[0].route[0];
    assert_eq!(
        route.url_regex.as_deref(),
        Some(r#"^/api/v\d+/(?:"quoted"|\\back)/ünï€ode/😀$"#)
    );
    let out = round_trip(text);
    let back = parse(&out);
    assert_eq!(back.http[0].route[0].url_regex, route.url_regex);
    assert_eq!(back.http[0].route[0].header, route.header);
    assert_eq!(back.http[0].route[0].cookie, route.cookie);

    // Names the builder refuses still have to be written so that they read back (the
    // operator then sees the builder's message, not a TOML syntax error).
    let odd = parse(
        "[pool.\"odd \\\"pool\\\"\"]\nservers = [{ name = \"a b\", addr = \"x\" }]\n\
         [pool.\"odd \\\"pool\\\"\".health]\nmethod = \"tcp\"\n\
         [[http]]\nname = \"h\"\nlisten = []\n\
         [[http.route]]\npool = \"p\"\nheader = { \"Na\\\"me\" = \"\\\\\" }\n",
    );
    let out = to_toml(&odd);
    assert!(out.contains("[pool.'odd \"pool\"']\n"), "{out}");
    assert!(out.contains("[pool.'odd \"pool\"'.health]\n"), "{out}");
    assert_eq!(parse(&out), odd, "{out}");
}

#[test]
fn new_keys_are_written() {
    let mut f = parse(STICKY);
    f.daemon.resolvers = Some(vec!["10.0.0.1:53".into(), "[fd00::1]:53".into()]);
    if let Some(p) = f.pool.get_mut("app") {
        p.resolve_interval = Some(Scalar::Str("5s".into()));
    }
    let found =
        parse("[pool.found]\ndiscover = \"srv:_http._tcp.example.com\"\nresolve_interval = 30\n");
    f.pool.extend(found.pool);
    let out = to_toml(&f);
    assert!(
        out.contains("resolvers = [\"10.0.0.1:53\", \"[fd00::1]:53\"]\n"),
        "{out}"
    );
    assert!(out.contains("resolve_interval = \"5s\"\n"), "{out}");
    assert!(
        out.contains(
            "[pool.found]\nresolve_interval = 30\ndiscover = \"srv:_http._tcp.example.com\"\n"
        ),
        "{out}"
    );
    assert_eq!(parse(&out), f);
}

#[test]
fn an_empty_config_is_just_the_daemon_header() {
    let f = FileConfig::default();
    assert_eq!(to_toml(&f), "[daemon]\n");
    assert_eq!(parse(&to_toml(&f)), f);
    let lists = parse(
        "[[http]]\nname = \"h\"\nlisten = []\n[[http.route]]\npool = \"p\"\nfile_type = \"css\"\n",
    );
    assert_eq!(
        lists.http[0].route[0].file_type,
        Some(StrList(vec!["css".into()]))
    );
    assert_eq!(parse(&to_toml(&lists)), lists);
}

#[test]
fn the_admin_section_round_trips() {
    use argon2::password_hash::PasswordHasher;
    let hash = argon2::Argon2::default()
        .hash_password(b"pw")
        .unwrap()
        .to_string();
    let text = format!(
        "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n\
         [pool.p]\nservers = [{{ name = \"a\", addr = \"127.0.0.1:2\" }}]\n\
         [admin]\nlisten = \"127.0.0.1:9900\"\nusers = [\n  {{ name = \"ops\", password_hash = \"{hash}\", role = \"admin\" }},\n  {{ name = \"ro\", password_hash = \"{hash}\" }},\n]\n"
    );
    let out = round_trip(&text);
    assert!(
        out.ends_with(&format!(
            "[admin]\nlisten = \"127.0.0.1:9900\"\nusers = [\n  {{ name = \"ops\", password_hash = \"{hash}\", role = \"admin\" }},\n  {{ name = \"ro\", password_hash = \"{hash}\" }},\n]\n"
        )),
        "{out}"
    );
}
