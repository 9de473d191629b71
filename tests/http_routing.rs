//! Routing and balancing, seen from the client: which backend answered (`X-Backend`) for each
//! match key, first-match-wins, default pool, 404 without one, absolute-form targets, weighted
//! round robin, least_requests across shards, failover on refused connects and all-down 503.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One backend per pool, named after its pool, and a config routing to them by every key.
struct Routed {
    proxy: Proxy,
    _backends: Vec<Backend>,
}

fn routed() -> Routed {
    let names = [
        "static", "docs", "api", "gold", "vip", "combo", "app", "other",
    ];
    let backends: Vec<Backend> = names.iter().map(|n| Backend::start(n)).collect();
    let mut cfg = daemon(1);
    cfg.push_str(
        r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"
server_names = ["www.example.com"]

  [[http.route]]
  pool = "static"
  host = ["static.example.com", "*.images.example.com"]

  [[http.route]]
  pool = "docs"
  file_type = ["pdf", "png"]

  [[http.route]]
  pool = "api"
  path_prefix = "/api/"
  url_regex = "^/api/v[0-9]+/"

  [[http.route]]
  pool = "combo"
  path_prefix = "/both/"
  header = { "X-Tier" = "silver" }

  [[http.route]]
  pool = "gold"
  header = { "X-Tier" = "gold*" }

  [[http.route]]
  pool = "vip"
  cookie = { "VIP" = "*" }

[[http]]
name = "nodefault"
listen = ["127.0.0.1:{port:nodef}"]

  [[http.route]]
  pool = "other"
  host = ["other.example.com"]
"#,
    );
    for n in names {
        cfg.push_str(&format!(
            "\n[pool.{n}]\nservers = [ {{ name = \"{n}\", addr = \"{{{n}}}\" }} ]\n"
        ));
    }
    let vars: Vec<(&str, String)> = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| (*n, b.addr_string()))
        .collect();
    Routed {
        proxy: Proxy::start_with(&cfg, &vars),
        _backends: backends,
    }
}

/// (request bytes, expected backend) for every routing case; all are checked, then every
/// mismatch is reported at once.
fn check_routes(r: &Routed, cases: &[(Vec<u8>, &str)]) {
    let mut failures = Vec::new();
    let mut conn = Conn::connect(r.proxy.addr("web"));
    for (raw, want) in cases {
        conn.send(raw);
        match conn.try_read_response() {
            Ok(resp) if resp.status == 200 && resp.backend() == *want => {}
            Ok(resp) => {
                failures.push(format!(
                    "{:?}\n    expected 200 from {want}, got {}",
                    String::from_utf8_lossy(raw),
                    resp.summary()
                ));
            }
            Err(e) => {
                failures.push(format!(
                    "{:?}\n    expected {want}, got error {e}",
                    String::from_utf8_lossy(raw)
                ));
                conn = Conn::connect(r.proxy.addr("web"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} routing case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn get(path: &str, host: &str) -> Vec<u8> {
    req("GET", path, host, &[], b"")
}

fn get_h(path: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    req("GET", path, host, headers, b"")
}

#[test]
fn routes_by_host_exact_and_wildcard_ignoring_case_and_port() {
    let r = routed();
    check_routes(
        &r,
        &[
            (get("/", "static.example.com"), "static"),
            (get("/", "STATIC.Example.COM:8080"), "static"),
            (get("/", "a.images.example.com"), "static"),
            (get("/x", "x.y.images.example.com:81"), "static"),
            // the wildcard needs at least one label before the suffix
            (get("/", "images.example.com"), "app"),
            (get("/", "notstatic.example.com"), "app"),
            (get("/", "static.example.com.evil.org"), "app"),
        ],
    );
}

#[test]
fn routes_by_file_type_of_the_path() {
    let r = routed();
    check_routes(
        &r,
        &[
            (get("/doc.pdf", "h"), "docs"),
            (get("/img/a.b.png?size=2", "h"), "docs"),
            (get("/doc.PDF", "h"), "docs"),
            (get("/pdf", "h"), "app"),
            (get("/x.pdf/y", "h"), "app"),
            (get("/x.pdfx", "h"), "app"),
            (get("/x?file=a.pdf", "h"), "app"),
        ],
    );
}

#[test]
fn routes_by_path_prefix_and_url_regex_all_keys_must_match() {
    let r = routed();
    check_routes(
        &r,
        &[
            (get("/api/v1/users", "h"), "api"),
            (get("/api/v22/", "h"), "api"),
            // prefix matches, regex does not
            (get("/api/users", "h"), "app"),
            // regex-like path without the prefix
            (get("/apix/v1/", "h"), "app"),
            (get("/API/v1/", "h"), "app"),
        ],
    );
}

#[test]
fn routes_by_header_glob_and_cookie_glob() {
    let r = routed();
    check_routes(
        &r,
        &[
            (get_h("/", "h", &[("X-Tier", "gold")]), "gold"),
            (get_h("/", "h", &[("x-tier", "goldfish")]), "gold"),
            (get_h("/", "h", &[("X-Tier", "silver")]), "app"),
            (get_h("/", "h", &[("X-Tier", "GOLD")]), "app"),
            (get_h("/both/x", "h", &[("X-Tier", "silver")]), "combo"),
            (get_h("/both/x", "h", &[]), "app"),
            (get_h("/", "h", &[("Cookie", "a=1; VIP=yes")]), "vip"),
            (get_h("/", "h", &[("Cookie", "VIP=")]), "vip"),
            (get_h("/", "h", &[("Cookie", "VIPX=1; a=VIP")]), "app"),
            (get_h("/", "h", &[("Cookie", "vip=1")]), "app"),
        ],
    );
}

#[test]
fn first_matching_route_wins() {
    let r = routed();
    check_routes(
        &r,
        &[
            // host route (first) beats file type and header routes
            (
                get_h("/doc.pdf", "static.example.com", &[("X-Tier", "gold")]),
                "static",
            ),
            // file type (second) beats api and header routes
            (get_h("/api/v1/a.png", "h", &[("X-Tier", "gold")]), "docs"),
            (
                get_h("/api/v1/a", "h", &[("X-Tier", "gold"), ("Cookie", "VIP=1")]),
                "api",
            ),
            (
                get_h("/a", "h", &[("X-Tier", "gold"), ("Cookie", "VIP=1")]),
                "gold",
            ),
        ],
    );
}

#[test]
fn no_route_and_no_default_pool_is_404() {
    let r = routed();
    let mut c = Conn::connect(r.proxy.addr("nodef"));
    let resp = c.get("/", "other.example.com");
    assert_eq!(
        (resp.status, resp.backend()),
        (200, "other"),
        "{}",
        resp.summary()
    );
    let resp = c.get("/", "unknown.example.com");
    assert_eq!(
        resp.status,
        404,
        "no route, no default_pool: {}",
        resp.summary()
    );
    assert_eq!(
        resp.header("x-backend"),
        None,
        "a 404 the proxy generated: {}",
        resp.summary()
    );
}

#[test]
fn absolute_form_is_proxied_only_for_served_hosts() {
    let r = routed();
    let mut c = Conn::connect(r.proxy.addr("web"));
    // a route host
    c.send(b"GET http://static.example.com/abs?q=1 HTTP/1.1\r\nHost: static.example.com\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(
        (resp.status, resp.backend()),
        (200, "static"),
        "{}",
        resp.summary()
    );
    // a server_names host, no route: default pool
    c.send(b"GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(
        (resp.status, resp.backend()),
        (200, "app"),
        "{}",
        resp.summary()
    );

    // never an open proxy: a host this frontend does not serve
    let mut c = Conn::connect(r.proxy.addr("web"));
    c.send(b"GET http://evil.example.org/ HTTP/1.1\r\nHost: evil.example.org\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(
        resp.status,
        400,
        "absolute-form for an unserved host: {}",
        resp.summary()
    );
    c.expect_closed(Duration::from_secs(5));
}

#[test]
fn round_robin_weights_1_to_2_split_exactly() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
balance = "round_robin"
servers = [
  { name = "a", addr = "{a}", weight = 1 },
  { name = "b", addr = "{b}", weight = 2 },
]
"#;
    let p = Proxy::start_with(&cfg, &[("a", a.addr_string()), ("b", b.addr_string())]);
    let mut c = Conn::connect(p.addr("web"));
    let mut seq = String::new();
    for _ in 0..30 {
        let resp = c.get("/", "h");
        assert_eq!(resp.status, 200, "{}", resp.summary());
        seq.push_str(resp.backend());
    }
    let na = seq.matches('a').count();
    let nb = seq.matches('b').count();
    assert_eq!(
        (na, nb),
        (10, 20),
        "weights 1:2 over 30 requests; sequence {seq}"
    );
    assert!(
        !seq.contains("aa"),
        "smooth weighted round robin never sends a twice in a row: {seq}"
    );
}

#[test]
fn least_requests_prefers_the_fast_server_across_shards() {
    let slow = Backend::start_with(
        "slow",
        BackendOpts {
            delay: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let fast = Backend::start("fast");
    let cfg = daemon(2)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
balance = "least_requests"
servers = [
  { name = "slow", addr = "{slow}" },
  { name = "fast", addr = "{fast}" },
]
"#;
    let p = Proxy::start_with(
        &cfg,
        &[("slow", slow.addr_string()), ("fast", fast.addr_string())],
    );
    let addr = p.addr("web");
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, each on its own connections (so both shards get some), for 2.5 s.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut errors = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let mut c = Conn::connect(addr);
                    let resp = c.get(&format!("/w{i}"), "h");
                    if resp.status != 200 {
                        errors.push(resp.summary());
                    }
                    // Bounded request rate: the point is the choice, not the load.
                    thread::sleep(Duration::from_millis(20));
                }
                errors
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let errors = w.join().expect("worker panicked");
        assert!(errors.is_empty(), "non-200 answers: {errors:?}");
    }
    let (ns, nf) = (slow.requests(), fast.requests());
    assert!(nf >= 20, "fast server got only {nf} requests (slow {ns})");
    assert!(
        nf >= 4 * ns,
        "least_requests should mostly avoid the server with requests in flight: slow {ns}, fast {nf}"
    );
}

#[test]
fn failover_to_next_server_when_a_port_refuses_then_skip_it_for_down_time() {
    let b = Backend::start("b");
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
balance = "round_robin"
down_time = "2s"
connect_timeout = "2s"
servers = [
  { name = "dead", addr = "127.0.0.1:{port:dead}" },
  { name = "b", addr = "{b}" },
]
"#;
    let p = Proxy::start_with(&cfg, &[("b", b.addr_string())]);
    let mut c = Conn::connect(p.addr("web"));
    for i in 0..4 {
        let resp = c.get("/", "h");
        assert_eq!(
            (resp.status, resp.backend()),
            (200, "b"),
            "request {i}: {}",
            resp.summary()
        );
    }
    // The dead port comes alive, but the proxy marked it down: it must not be tried yet.
    let revived = Backend::start_on("revived", p.port("dead"), BackendOpts::default());
    let marked = Instant::now();
    for i in 0..6 {
        let resp = c.get("/", "h");
        assert_eq!(
            (resp.status, resp.backend()),
            (200, "b"),
            "request {i} within down_time: {}",
            resp.summary()
        );
    }
    assert!(
        marked.elapsed() < Duration::from_millis(1500),
        "test too slow to judge down_time"
    );
    assert_eq!(
        revived.accepted(),
        0,
        "a server marked down was connected to within down_time"
    );
    // After down_time it gets traffic again.
    thread::sleep(Duration::from_millis(2500));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let resp = c.get("/", "h");
        assert_eq!(resp.status, 200, "{}", resp.summary());
        seen.push(resp.backend().to_string());
    }
    assert!(
        seen.iter().any(|s| s == "revived"),
        "server not used again after down_time: {seen:?}"
    );
}

#[test]
fn all_servers_down_is_503_then_close() {
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
connect_timeout = "2s"
servers = [
  { name = "d1", addr = "127.0.0.1:{port:dead1}" },
  { name = "d2", addr = "127.0.0.1:{port:dead2}" },
]
"#;
    let p = Proxy::start(&cfg);
    for round in 0..2 {
        let mut c = Conn::connect(p.addr("web"));
        c.send(&req("GET", "/", "h", &[], b""));
        let resp = c.read_response();
        assert_eq!(resp.status, 503, "round {round}: {}", resp.summary());
        c.expect_closed(Duration::from_secs(5));
    }
}
