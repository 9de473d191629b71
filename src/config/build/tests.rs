//! Loading whole files: examples from the issues, defaults, explicit values, and every
//! validation and TOML error naming its file, position and key path.

use std::time::Duration;

use crate::config::{Balance, Glob, HostPattern, IoDriver, Route};

use super::*;

const ORIGIN: &str = "/etc/x.toml";

fn ok(text: &str) -> Config {
    from_str(text, ORIGIN).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match from_str(text, ORIGIN) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The smallest valid file; tests append the piece they exercise.
const BASE: &str = r#"
[[http]]
name = "www"
listen = ["127.0.0.1:8080"]
default_pool = "app"

[pool.app]
servers = [{ name = "a1", addr = "127.0.0.1:9001" }]
"#;

const ISSUE_2: &str = r#"
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
"#;

/// Issue 2's example names pools it never defines; these complete it.
const ISSUE_2_POOLS: &str = r#"
[pool.static]
servers = [{ name = "s1", addr = "10.0.0.31:8080" }]
[pool.docs]
servers = [{ name = "d1", addr = "10.0.0.41:8080" }]
[pool.api]
servers = [{ name = "api1", addr = "10.0.0.51:8080" }]
"#;

const ISSUE_4: &str = r#"
[[mysql]]
name = "db"
listen = ["0.0.0.0:3306"]
pool = "db"
client_idle_timeout = "8h"

[pool.db]
balance = "least_requests"      # fewest commands in flight across all shards
connect_timeout = "5s"
down_time = "10s"
servers = [
  { name = "db1", addr = "10.0.0.21:3306" },
  { name = "db2", addr = "10.0.0.22:3306" },
]
"#;

#[test]
fn issue_examples_load() {
    let c = ok(&format!("{ISSUE_2}{ISSUE_2_POOLS}"));
    assert_eq!(c.source, PathBuf::from(ORIGIN));
    let www = &c.http[0];
    assert_eq!(
        www.listen,
        vec!["0.0.0.0:80".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.pools[www.default_pool.unwrap()].name, "app");
    let pool_of = |r: &Route| c.pools[r.pool().unwrap()].name.as_str();
    assert_eq!(
        www.routes.iter().map(pool_of).collect::<Vec<_>>(),
        ["static", "docs", "api"]
    );
    assert_eq!(
        www.routes[0].host[1],
        HostPattern::Suffix(".images.example.com".into())
    );
    assert_eq!(www.routes[1].file_type, ["pdf", "jpg", "png"]);
    let api = &www.routes[2];
    assert_eq!(
        api.header,
        vec![("x-tier".to_owned(), Glob("gold*".into()))]
    );
    assert_eq!(api.cookie, vec![("VIP".to_owned(), Glob("*".into()))]);
    assert!(api.url_regex.as_ref().unwrap().is_match(b"/api/v2/x"));
    let app = &c.pools[www.default_pool.unwrap()];
    assert_eq!(app.balance, Balance::LeastRequests);
    assert_eq!(app.connect_timeout, Duration::from_secs(20));
    assert_eq!(app.servers[1].weight, 2);
    assert_eq!(app.servers[1].addr, "10.0.0.12:8080".parse().unwrap());

    let c = ok(ISSUE_4);
    let db = &c.mysql[0];
    assert_eq!(
        (db.name.as_str(), c.pools[db.pool].name.as_str()),
        ("db", "db")
    );
    assert_eq!(db.client_idle_timeout, Duration::from_secs(8 * 3600));
    assert_eq!(c.pools[db.pool].servers.len(), 2);

    // Both issues' examples in one file.
    ok(&format!("{ISSUE_2}{ISSUE_2_POOLS}{ISSUE_4}"));
}

#[test]
fn issue_2_example_alone_names_the_missing_pool() {
    let e = err(ISSUE_2);
    assert!(
        e.starts_with("/etc/x.toml: http[0].route[0].pool: no pool named \"static\""),
        "{e}"
    );
}

#[test]
fn defaults() {
    let c = ok(&format!("{BASE}{ISSUE_4}"));
    let d = &c.daemon;
    assert_eq!(
        d.shards,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(d.io_driver, IoDriver::Auto);
    assert_eq!(
        d.control_socket,
        PathBuf::from("/run/shardgate/shardgate.sock")
    );
    assert_eq!(d.max_connections, 16000);
    assert_eq!(d.stop_timeout, Duration::from_secs(30));
    assert!(d.pin_cores);
    assert_eq!(d.memory_limit, None);

    let h = &c.http[0];
    assert_eq!(h.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(h.client_header_timeout, Duration::from_secs(60));
    assert_eq!(h.client_body_timeout, Duration::from_secs(60));
    assert_eq!((h.client_body_min_rate, h.send_min_rate), (512, 512));
    assert_eq!(h.send_timeout, Duration::from_secs(60));
    assert_eq!(h.tunnel_timeout, Duration::from_secs(3600));
    assert_eq!(h.max_body, None);
    assert_eq!(
        (h.max_request_line, h.max_header_bytes, h.max_headers),
        (8192, 32768, 100)
    );
    assert!(h.server_names.is_empty() && h.routes.is_empty());

    let p = &c.pools[h.default_pool.unwrap()];
    assert_eq!(p.balance, Balance::RoundRobin);
    assert_eq!(p.connect_timeout, Duration::from_secs(5));
    assert_eq!(p.response_timeout, Duration::from_secs(60));
    assert_eq!(p.down_time, Duration::from_secs(10));
    assert_eq!(
        (p.max_connections_per_server, p.max_idle_per_server),
        (512, 128)
    );
    assert_eq!(p.idle_timeout, Duration::from_secs(30));
    assert_eq!(p.servers[0].weight, 1);

    let m = &c.mysql[0];
    assert_eq!(m.client_idle_timeout, Duration::from_secs(8 * 3600));
    assert_eq!(m.client_write_timeout, Duration::from_secs(60));
    assert_eq!(m.max_connections, 4096);
}

#[test]
fn explicit_values() {
    let c = ok(r#"
[daemon]
shards = 3
io_driver = "epoll"
control_socket = "/tmp/sg.sock"
max_connections = 10
stop_timeout = "0s"
pin_cores = false

[[http]]
name = "w"
listen = ["0.0.0.0:1", "[::]:1"]
max_body = "10m"
max_request_line = 100
max_header_bytes = 200
max_headers = 5
server_names = ["Example.COM.", "*.example.net"]
keepalive_timeout = "1h30m"

[[mysql]]
name = "m"
listen = ["127.0.0.1:2"]
pool = "p"
max_connections = 7
client_write_timeout = "1500ms"

[pool.p]
balance = "round_robin"
max_connections_per_server = 4
max_idle_per_server = 0
down_time = "0s"
idle_timeout = "500ms"
servers = [{ name = "x", addr = "localhost:3306", weight = 1000 }]
"#);
    assert_eq!(c.daemon.shards, 3);
    assert_eq!(c.daemon.io_driver, IoDriver::Epoll);
    assert_eq!(c.daemon.stop_timeout, Duration::ZERO);
    assert!(!c.daemon.pin_cores);
    let h = &c.http[0];
    assert_eq!(
        h.listen.len(),
        2,
        "IPv4 and IPv6 wildcards may share a frontend"
    );
    assert_eq!(h.max_body, Some(10 << 20));
    assert_eq!(h.keepalive_timeout, Duration::from_secs(5400));
    assert_eq!(h.server_names[0], HostPattern::Exact("example.com".into()));
    assert_eq!(h.default_pool, None);
    let p = &c.pools[0];
    // A host name is resolved by the daemon, not by the config check.
    assert_eq!(p.servers[0].host.as_deref(), Some("localhost"));
    assert!(p.servers[0].addr.ip().is_unspecified());
    assert_eq!(p.servers[0].addr.port(), 3306);
    assert_eq!(p.idle_timeout, Duration::from_millis(500));
    assert_eq!(p.down_time, Duration::ZERO);
    assert_eq!(c.mysql[0].max_connections, 7);
    assert_eq!(c.mysql[0].client_write_timeout, Duration::from_millis(1500));
}

/// (piece appended to BASE or a whole file, expected message prefix after the file name)
#[test]
fn validation_errors_name_file_and_key() {
    let cases: &[(&str, &str)] = &[
        // daemon
        ("[daemon]\nshards = -1\n", "daemon.shards: -1 is out of range"),
        ("[daemon]\nshards = 5000\n", "daemon.shards: 5000 is out of range"),
        ("[daemon]\nmax_connections = 0\n", "daemon.max_connections: 0 is out of range 1..="),
        ("[daemon]\nstop_timeout = 30\n", "daemon.stop_timeout: 30 has no unit"),
        ("[daemon]\ncontrol_socket = \"\"\n", "daemon.control_socket: must not be empty"),
        (
            "[daemon]\ncontrol_socket = \"/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n",
            "daemon.control_socket: 119 bytes long",
        ),
        // http frontends
        ("[[http]]\nname = \"www\"\nlisten = [\"127.0.0.1:1\"]\n", "http[1].name: \"www\" is already the name"),
        ("[[http]]\nname = \"a b\"\nlisten = [\"127.0.0.1:1\"]\n", "http[1].name: \"a b\": a name must"),
        ("[[http]]\nname = \"b\"\nlisten = []\n", "http[1].listen: must list at least one"),
        ("[[http]]\nname = \"b\"\nlisten = [\"localhost:80\"]\n", "http[1].listen[0]: \"localhost:80\" is not IP:PORT"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:8080\"]\n", "http[1].listen[0]: \"127.0.0.1:8080\" overlaps http[0].listen[0]"),
        ("[[http]]\nname = \"b\"\nlisten = [\"0.0.0.0:8080\"]\n", "http[1].listen[0]: \"0.0.0.0:8080\" overlaps"),
        ("[[http]]\nname = \"b\"\nlisten = [\"[::]:8080\"]\n", "http[1].listen[0]: \"[::]:8080\" overlaps"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"nope\"\n", "http[1].default_pool: no pool named \"nope\" (defined pools: app)"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nkeepalive_timeout = \"0s\"\n", "http[1].keepalive_timeout: must be greater than zero"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nclient_header_timeout = \"60\"\n", "http[1].client_header_timeout: \"60\" has no unit"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nclient_body_timeout = \"0ms\"\n", "http[1].client_body_timeout: must be greater than zero"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nsend_timeout = \"1y\"\n", "http[1].send_timeout: \"1y\": unknown unit"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_body = \"1t\"\n", "http[1].max_body: \"1t\" is not a size"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_request_line = 0\n", "http[1].max_request_line: 0 is out of range"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_header_bytes = 100\n", "http[1].max_header_bytes: 100 is smaller than max_request_line"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_headers = 0\n", "http[1].max_headers: 0 is out of range"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nserver_names = [\"*\"]\n", "http[1].server_names[0]: "),
        // routes
        ("[[http.route]]\npool = \"app\"\n[[http.route]]\npool = \"app\"\nhost = \"x\"\n", "http[0].route[0]: route has no match key, so it takes every request and the routes after it"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"app\"\n[[http.route]]\npool = \"app\"\n", "http[1].route[0]: route has no match key, so it takes every request and default_pool is never used"),
        ("[[http.route]]\nhost = \"x\"\n", "http[0].route[0].pool: missing: a route needs pool (proxy) or static"),
        ("[[http.route]]\nhost = \"x\"\npool = \"app\"\nstatic = { root = \"/tmp\" }\n", "http[0].route[0].static: a route has either pool or static"),
        ("[[http.route]]\nhost = \"x\"\nstatic = { root = \"tmp\" }\n", "http[0].route[0].static.root: \"tmp\" must be an absolute path"),
        ("[[http.route]]\nhost = \"x\"\nstatic = { root = \"/etc/hostname\" }\n", "http[0].route[0].static.root: \"/etc/hostname\" is not a directory"),
        ("[[http.route]]\nhost = \"x\"\nstatic = { root = \"/tmp\", index = [\"a/b\"] }\n", "http[0].route[0].static.index[0]: \"a/b\" is not a file name"),
        ("[[http.route]]\nhost = \"x\"\nstatic = { root = \"/tmp\" }\ncache = { size = \"1m\" }\n", "http[0].route[0].cache: a static route is not cached"),
        ("[[http.route]]\nhost = \"x\"\npool = \"app\"\ncache = { size = \"1k\" }\n", "http[0].route[0].cache.size: 1024 bytes is too small"),
        ("[[http.route]]\nhost = \"x\"\npool = \"app\"\ncache = { size = \"1m\", max_object = \"2m\" }\n", "http[0].route[0].cache.max_object: 2097152 must be more than 0 and at most size"),
        ("[[http.route]]\nhost = \"x\"\npool = \"app\"\ncache = { size = \"lots\" }\n", "http[0].route[0].cache.size: \"lots\" is not a size"),
        ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\npurge_from = [\"10.0.0.1/8\"]\n", "http[1].purge_from[0]: \"10.0.0.1/8\" has host bits set"),
        ("[[http.route]]\npool = \"app\"\nhost = \"x\"\n[[http.route]]\npool = \"zz\"\nhost = \"x\"\n", "http[0].route[1].pool: no pool named \"zz\""),
        ("[[http.route]]\npool = \"app\"\nhost = \"*\"\n", "http[0].route[0].host: "),
        ("[[http.route]]\npool = \"app\"\nhost = \"\"\n", "http[0].route[0].host: "),
        ("[[http.route]]\npool = \"app\"\nhost = [\"a.com\", \"b.*.com\"]\n", "http[0].route[0].host[1]: "),
        ("[[http.route]]\npool = \"app\"\nhost = []\n", "http[0].route[0].host: empty list"),
        ("[[http.route]]\npool = \"app\"\npath_prefix = \"api/\"\n", "http[0].route[0].path_prefix: \"api/\" must start with \"/\""),
        ("[[http.route]]\npool = \"app\"\nfile_type = \".\"\n", "http[0].route[0].file_type: \".\" is not a file extension"),
        ("[[http.route]]\npool = \"app\"\nfile_type = [\"pdf\", \"a/b\"]\n", "http[0].route[0].file_type[1]: \"a/b\" is not"),
        ("[[http.route]]\npool = \"app\"\nurl_regex = \"^/(\"\n", "http[0].route[0].url_regex: invalid regex \"^/(\": unclosed group"),
        ("[[http.route]]\npool = \"app\"\nheader = { \"X Tier\" = \"a\" }\n", "http[0].route[0].header: \"X Tier\" is not a valid header field name"),
        ("[[http.route]]\npool = \"app\"\nheader = {}\n", "http[0].route[0].header: empty table"),
        ("[[http.route]]\npool = \"app\"\ncookie = { \"a;b\" = \"1\" }\n", "http[0].route[0].cookie: \"a;b\" is not a valid cookie name"),
        // pools
        ("[pool.b]\nservers = []\n", "pool.b.servers: must list at least one server"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }, { name = \"t\", addr = \"10.0.0.1\" }]\n", "pool.b.servers[1].addr: \"10.0.0.1\" is not IP:PORT"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"no such host:80\" }]\n", "pool.b.servers[0].addr: \"no such host:80\": "),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }, { name = \"s\", addr = \"10.0.0.1:2\" }]\n", "pool.b.servers[1].name: \"s\" is already the name of another server"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", weight = 0 }]\n", "pool.b.servers[0].weight: 0 is out of range 1..=1000"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", weight = 1001 }]\n", "pool.b.servers[0].weight: 1001 is out of range"),
        ("[pool.b]\nservers = [{ name = \"\", addr = \"10.0.0.1:1\" }]\n", "pool.b.servers[0].name: \"\": a name must"),
        ("[pool.\"b c\"]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.\"b c\": \"b c\": a name must"),
        ("[pool.b]\nconnect_timeout = \"0s\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.connect_timeout: must be greater than zero"),
        ("[pool.b]\nresponse_timeout = 60\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.response_timeout: 60 has no unit"),
        ("[pool.b]\nidle_timeout = \"0s\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.idle_timeout: must be greater than zero"),
        ("[pool.b]\ndown_time = \"soon\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.down_time: \"soon\" is not a duration"),
        ("[pool.b]\nmax_connections_per_server = 0\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.max_connections_per_server: 0 is out of range"),
        ("[pool.b]\nmax_connections_per_server = 2\nmax_idle_per_server = 3\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.max_idle_per_server: 3 exceeds max_connections_per_server (2)"),
        // balancing (issue 9)
        ("[pool.b]\nhash_key = \"uri\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.hash_key: applies only to balance = \"hash\""),
        ("[pool.b]\nbalance = \"hash\"\nhash_key = \"path\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.hash_key: \"path\": expected source_ip, uri"),
        ("[pool.b]\nbalance = \"hash\"\nhash_key = \"header:X Y\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.hash_key: \"header:X Y\": \"X Y\" is not a valid name"),
        ("[pool.b]\nbalance = \"hash\"\nhash_key = \"cookie:\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.hash_key: \"cookie:\": \"\" is not a valid name"),
        ("[pool.b]\nqueue_timeout = \"0s\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.queue_timeout: must be greater than zero"),
        ("[pool.b]\nqueue_timeout = 5\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.queue_timeout: 5 has no unit"),
        ("[pool.b]\nslow_start = \"later\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.slow_start: \"later\" is not a duration"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", max_connections = 0 }]\n", "pool.b.servers[0].max_connections: 0 is out of range"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", backup = true }]\n", "pool.b.servers: every server is a backup"),
        ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", backup = \"yes\" }]\n", "line 11, column 56: pool.b.servers[0].backup: invalid type: string \"yes\", expected a boolean"),
        (
            "[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
            "http[1].listen[1]: \"127.0.0.1:1\" is listed twice",
        ),
        // mysql
        ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"none\"\n", "mysql[0].pool: no pool named \"none\""),
        ("[[mysql]]\nname = \"www\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\n", "mysql[0].name: \"www\" is already the name of another frontend"),
        ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:8080\"]\npool = \"app\"\n", "mysql[0].listen[0]: \"127.0.0.1:8080\" overlaps http[0].listen[0]"),
        ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nclient_idle_timeout = \"0s\"\n", "mysql[0].client_idle_timeout: must be greater than zero"),
        ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nclient_write_timeout = \"0s\"\n", "mysql[0].client_write_timeout: must be greater than zero"),
        ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nmax_connections = 0\n", "mysql[0].max_connections: 0 is out of range"),
    ];
    for (piece, want) in cases {
        // Pieces that open an array-of-tables under [[http]] must follow BASE's frontend
        // directly, before [pool.app] closes it.
        let text = if piece.starts_with("[[http.route]]") {
            BASE.replacen("\n[pool.app]", &format!("\n{piece}\n[pool.app]"), 1)
        } else {
            format!("{BASE}\n{piece}")
        };
        let e = err(&text);
        assert!(
            e.starts_with(&format!("{ORIGIN}: {want}")),
            "want {want:?}\n got {e:?}"
        );
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
}

#[test]
fn no_frontend_is_an_error() {
    let e = err("[pool.app]\nservers = [{ name = \"a\", addr = \"10.0.0.1:1\" }]\n");
    assert_eq!(
        e,
        "/etc/x.toml: no frontend: define at least one [[http]] or [[mysql]]"
    );
    assert!(err("").contains("no frontend"));
}

#[test]
fn unused_pool_is_accepted() {
    let c = ok(&format!(
        "{BASE}\n[pool.spare]\nservers = [{{ name = \"s\", addr = \"10.0.0.1:1\" }}]\n"
    ));
    assert_eq!(c.pools.len(), 2);
}

/// TOML syntax and shape errors: file, line, column, key path with indices, serde's text.
#[test]
fn toml_errors_name_position_and_key_path() {
    let cases: &[(&str, &str)] = &[
        ("[daemon]\nfoo = 1\n", "line 2, column 1: daemon: unknown field `foo`, expected one of"),
        ("foo = 1\n", "line 1, column 1: unknown field `foo`, expected one of"),
        ("[[http]]\nname = \"a\"\nlisten = []\n[[http]]\nname = \"b\"\nlisten = []\n  [[http.route]]\n  pool = \"x\"\n  [[http.route]]\n  pool = \"y\"\n  hots = \"h\"\n",
         "line 11, column 3: http[1].route[1]: unknown field `hots`"),
        ("[[http]]\nname = \"a\"\nlisten = []\nmax_headers = \"many\"\n", "line 4, column 15: http[0].max_headers: invalid type: string \"many\""),
        ("[pool.app]\nservers = [ { name = \"a\", addr = \"x:1\" }, { name = \"b\", addr = \"y:1\", wt = 1 } ]\n",
         "line 2, column 71: pool.app.servers[1]: unknown field `wt`"),
        ("[[http]]\nlisten = []\n", "line 1, column 1: http[0]: missing field `name`"),
        ("[daemon]\nio_driver = \"kqueue\"\n", "line 2, column 13: daemon.io_driver: unknown variant `kqueue`, expected one of `auto`, `uring`, `epoll`"),
        ("[pool.app]\nbalance = \"random\"\nservers = []\n", "line 2, column 11: pool.app.balance: unknown variant `random`"),
        ("[[http]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\", 7]\n", "line 3, column 26: http[0].listen[1]: invalid type: integer `7`"),
        ("[daemon]\nshards = \n", "line 2, column 10: "),
        ("[[http]]\nname = \"a\"\nbar", "line 3, column 4: key with no value"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(
            e.starts_with(&format!("{ORIGIN}: {want}")),
            "want {want:?}\n got {e:?}"
        );
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = std::env::temp_dir().join(format!("shardgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(load(&good).unwrap().source, good);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{BASE}\n[daemon]\nshards = -2\n")).unwrap();
    assert_eq!(
        load(&bad).unwrap_err().to_string(),
        format!(
            "{}: daemon.shards: -2 is out of range: 0 (one per CPU) or 1..=1024",
            bad.display()
        )
    );
    let missing = dir.join("missing.toml");
    let e = load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_config_loads() {
    let c = ok(include_str!("../../../config/shardgate.toml"));
    assert!(!c.http.is_empty() && !c.mysql.is_empty());
    assert!(c.daemon.control_socket.starts_with("/run/shardgate"));
    for a in c
        .http
        .iter()
        .flat_map(|h| &h.listen)
        .chain(c.mysql.iter().flat_map(|m| &m.listen))
    {
        assert!(a.ip().is_loopback(), "{a}");
    }
    for s in c.pools.iter().flat_map(|p| &p.servers) {
        let named_loopback = s.host.as_deref() == Some("localhost");
        assert!(s.addr.ip().is_loopback() || named_loopback, "{}", s.addr);
    }
}

#[test]
fn sticky_sections_defaults_and_errors() {
    let c = ok(&format!(
        "{BASE}\n[pool.app.sticky]\nmode = \"insert_cookie\"\n"
    ));
    let st = c.pools[0].sticky.as_ref().unwrap();
    assert_eq!(st.cookie, "SGROUTE");
    assert_eq!(st.cookie_path, "/");
    assert!(st.cookie_httponly && !st.cookie_secure);
    assert_eq!(
        (st.cookie_samesite.as_deref(), st.cookie_max_age),
        (None, None)
    );
    let c = ok(&format!(
        "{BASE}\n[pool.app.sticky]\nmode = \"source_ip\"\n"
    ));
    let st = c.pools[0].sticky.as_ref().unwrap();
    assert_eq!(
        (st.ttl, st.table_size),
        (Duration::from_secs(1800), 100_000)
    );
    let c = ok(&format!(
        "{BASE}\n[pool.app.sticky]\nmode = \"app_cookie\"\n"
    ));
    assert_eq!(c.pools[0].sticky.as_ref().unwrap().cookie, "JSESSIONID");

    let cases: &[(&str, &str)] = &[
        (
            "mode = \"source_ip\"\ncookie = \"X\"",
            "pool.app.sticky.cookie: applies only to mode = \"app_cookie\" or \"insert_cookie\"",
        ),
        (
            "mode = \"insert_cookie\"\nurl_param = \"j\"",
            "pool.app.sticky.url_param: applies only to mode = \"app_cookie\"",
        ),
        (
            "mode = \"app_cookie\"\nttl = \"1m\"",
            "pool.app.sticky.ttl: applies only to mode = \"source_ip\"",
        ),
        (
            "mode = \"app_cookie\"\ncookie_secure = true",
            "pool.app.sticky.cookie_secure: applies only to mode = \"insert_cookie\"",
        ),
        (
            "mode = \"insert_cookie\"\ncookie = \"a b\"",
            "pool.app.sticky.cookie: \"a b\" is not a valid cookie name",
        ),
        (
            "mode = \"app_cookie\"\nurl_param = \"j=\"",
            "pool.app.sticky.url_param: \"j=\" is not a valid parameter name",
        ),
        (
            "mode = \"insert_cookie\"\ncookie_path = \"x\"",
            "pool.app.sticky.cookie_path: \"x\": must start with '/'",
        ),
        (
            "mode = \"insert_cookie\"\ncookie_samesite = \"None\"",
            "pool.app.sticky.cookie_samesite: \"None\" needs cookie_secure = true",
        ),
        (
            "mode = \"insert_cookie\"\ncookie_samesite = \"loose\"",
            "pool.app.sticky.cookie_samesite: \"loose\": expected",
        ),
        (
            "mode = \"source_ip\"\ntable_size = 0",
            "pool.app.sticky.table_size: ",
        ),
    ];
    for (sticky, want) in cases {
        let e = err(&format!("{BASE}\n[pool.app.sticky]\n{sticky}\n"));
        assert!(
            e.starts_with(&format!("{ORIGIN}: {want}")),
            "want {want:?}\n got {e:?}"
        );
    }
}

#[test]
fn log_keys() {
    let c = ok(&format!(
        "[daemon]\nlog_statistics_period = \"5m\"\ntraffic_log = \"/var/log/t.log\"\n{}",
        BASE.replace(
            "default_pool = \"app\"",
            "default_pool = \"app\"\naccess_log = { path = \"/var/log/a.log\", format = \"$client $status\", sample = 0.5 }"
        )
    ));
    // `show config` writes the keys back so that they read the same.
    let text = format!(
        "[daemon]\nlog_statistics_period = \"5m\"\ntraffic_log = \"/t\"\n{}",
        BASE.replace(
            "default_pool = \"app\"",
            "default_pool = \"app\"\naccess_log = { path = \"/a\", format = \"json\", sample = 0.25 }"
        )
    );
    let file = parse(&text, ORIGIN).unwrap();
    let shown = crate::config::show::to_toml(&file);
    assert_eq!(parse(&shown, ORIGIN).unwrap(), file, "{shown}");
    let t = c.daemon.traffic_log.unwrap();
    assert_eq!(t.period, Duration::from_secs(300));
    assert_eq!(t.path, std::path::PathBuf::from("/var/log/t.log"));
    let a = c.http[0].access_log.as_ref().unwrap();
    assert_eq!(&*a.path, std::path::Path::new("/var/log/a.log"));
    assert_eq!(a.sample, 0.5);
    assert!(ok(BASE).http[0].access_log.is_none());
    assert!(ok(BASE).daemon.traffic_log.is_none());
    let with = |fe: &str| {
        err(&BASE.replace(
            "default_pool = \"app\"",
            &format!("default_pool = \"app\"\n{fe}"),
        ))
    };
    let e = with("access_log = { path = \"/x\", format = \"$client $bogus\" }");
    assert!(
        e.contains("http[0].access_log.format: unknown field \"$bogus\""),
        "{e}"
    );
    let e = with("access_log = { path = \"/x\", format = \"nginx\" }");
    assert!(
        e.contains("http[0].access_log.format: \"nginx\" is not a format"),
        "{e}"
    );
    let e = with("access_log = { path = \"/x\", sample = 0 }");
    assert!(
        e.contains("http[0].access_log.sample: 0 is out of range"),
        "{e}"
    );
    let e = with("access_log = { path = \"/x\", sample = 1.5 }");
    assert!(e.contains("http[0].access_log.sample"), "{e}");
    let e = with("access_log = { path = \"\" }");
    assert!(
        e.contains("http[0].access_log.path: must not be empty"),
        "{e}"
    );
    let e = with("access_log = { path = \"/x\", fmt = \"json\" }");
    assert!(e.contains("fmt"), "{e}");
    let e = err(&format!("[daemon]\nlog_statistics_period = \"5m\"\n{BASE}"));
    assert!(e.contains("daemon.traffic_log: missing"), "{e}");
    let e = err(&format!("[daemon]\ntraffic_log = \"/t\"\n{BASE}"));
    assert!(e.contains("daemon.log_statistics_period: missing"), "{e}");
    let e = err(&format!(
        "[daemon]\nlog_statistics_period = \"1500ms\"\ntraffic_log = \"/t\"\n{BASE}"
    ));
    assert!(
        e.contains("daemon.log_statistics_period: ") && e.contains("whole number of seconds"),
        "{e}"
    );
}

#[test]
fn sites_load_and_map_hosts_and_users() {
    let c = ok(&format!(
        "{BASE}\n[[site]]\nname = \"shop.example\"\nhosts = [\"Shop.Example.\", \"www.shop.example\", \"*.cdn.shop.example\"]\nmysql_users = [\"shop\"]\n\
         [[site]]\nname = \"all\"\nhosts = [\"*.example\", \"10.0.0.1\", \"[::1]\"]\n\
         [[site]]\nname = \"db-only\"\nmysql_users = [\"Shop\", \"with space\"]\n\
         [[site]]\nname = \"empty\"\n"
    ));
    let s = &c.sites;
    assert_eq!(s.list.len(), 4);
    assert_eq!(s.list[0].name, "shop.example");
    assert_eq!(
        s.list[0].hosts[0],
        HostPattern::Exact("shop.example".into())
    );
    assert_eq!(s.of_host(b"shop.example"), Some(0));
    assert_eq!(s.of_host(b"a.cdn.shop.example"), Some(0));
    assert_eq!(s.of_host(b"blog.example"), Some(1));
    assert_eq!(s.of_host(b"10.0.0.1"), Some(1));
    assert_eq!(s.of_host(b"[::1]"), Some(1));
    assert_eq!(s.of_user(b"shop"), Some(0));
    assert_eq!(s.of_user(b"Shop"), Some(2));
    assert_eq!(s.of_user(b"with space"), Some(2));
    assert!(ok(BASE).sites.is_empty());
    // Written back by `show config` under the same keys.
    let file = parse(
        &format!("{BASE}[[site]]\nname = \"a\"\nhosts = [\"a.example\"]\n"),
        ORIGIN,
    )
    .unwrap();
    let back = toml::to_string(&file).unwrap();
    assert!(
        back.contains("[[site]]") && back.contains("hosts = [\"a.example\"]"),
        "{back}"
    );
    assert!(!back.contains("mysql_users"), "{back}");
}

#[test]
fn site_errors_name_file_and_key() {
    let site = |body: &str| err(&format!("{BASE}{body}"));
    let cases: &[(&str, &str)] = &[
        (
            "[[site]]\nname = \"\"\n",
            "/etc/x.toml: site[0].name: \"\": a site name must be",
        ),
        (
            "[[site]]\nname = \"a b\"\n",
            "site[0].name: \"a b\": a site name must be",
        ),
        (
            "[[site]]\nname = \"a\"\n[[site]]\nname = \"a\"\n",
            "/etc/x.toml: site[1].name: \"a\" is already the name of site[0]",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"x.example\"]\n[[site]]\nname = \"b\"\nhosts = [\"X.example\"]\n",
            "site[1].hosts[0]: \"X.example\" is already a host of site[0] (\"a\") (site[0].hosts[0]); a host belongs to one site",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"*.x.example\"]\n[[site]]\nname = \"b\"\nhosts = [\"*.X.example\"]\n",
            "site[1].hosts[0]: \"*.X.example\" is already a host of site[0]",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"x.example\", \"x.example\"]\n",
            "site[0].hosts[1]: \"x.example\" is listed twice (also site[0].hosts[0])",
        ),
        (
            "[[site]]\nname = \"a\"\nmysql_users = [\"shop\"]\n[[site]]\nname = \"b\"\nmysql_users = [\"shop\"]\n",
            "/etc/x.toml: site[1].mysql_users[0]: \"shop\" is already a MySQL user of site[0] (\"a\"); a user belongs to one site",
        ),
        (
            "[[site]]\nname = \"a\"\nmysql_users = [\"u\", \"u\"]\n",
            "site[0].mysql_users[1]: \"u\" is listed twice",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"x.example:8080\"]\n",
            "site[0].hosts[0]: \"x.example:8080\" has a port",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"*\"]\n",
            "site[0].hosts[0]: \"*\": a site cannot take every host",
        ),
        ("[[site]]\nname = \"a\"\nhosts = [\"\"]\n", "site[0].hosts[0]: empty host"),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"-\"]\n",
            "site[0].hosts[0]: \"-\" is the key of requests without a Host",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"a.*.example\"]\n",
            "site[0].hosts[0]: \"a.*.example\": '*' is allowed only as a whole first label",
        ),
        (
            "[[site]]\nname = \"a\"\nhosts = [\"bad host\"]\n",
            "site[0].hosts[0]: \"bad host\" is not a host name",
        ),
        (
            "[[site]]\nname = \"a\"\nmysql_users = [\"\"]\n",
            "site[0].mysql_users[0]: empty user name",
        ),
        (
            "[[site]]\nname = \"a\"\nmysql_users = [\"(other)\"]\n",
            "site[0].mysql_users[0]: \"(other)\" counts traffic of no particular user",
        ),
        (
            "[[site]]\nname = \"a\"\nmysql_users = [\"a\\nb\"]\n",
            "site[0].mysql_users[0]: \"a\\nb\" has a control character",
        ),
    ];
    for (body, want) in cases {
        let e = site(body);
        assert!(e.contains(want), "{body}\n got: {e}\nwant: {want}");
    }
    let long = format!(
        "[[site]]\nname = \"a\"\nhosts = [\"{}example\"]\n",
        "a.".repeat(130)
    );
    let e = site(&long);
    assert!(e.contains("site[0].hosts[0]: longer than 255 bytes"), "{e}");
    // Unknown keys and wrong shapes come from the TOML stage, with the key path.
    let e = site("[[site]]\nname = \"a\"\nhost = [\"x\"]\n");
    assert!(
        e.contains("site[0]") && e.contains("unknown field `host`"),
        "{e}"
    );
    let e = site("[[site]]\nhosts = [\"x.example\"]\n");
    assert!(e.contains("missing field `name`"), "{e}");
}
