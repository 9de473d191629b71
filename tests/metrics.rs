//! Metrics against what clients did, black-box: the Prometheus exposition (`show metrics`, the
//! text the admin listener's `/metrics` serves) parsed strictly, its counts checked exactly
//! against what loadgen sent and the backends received, histogram counts against request
//! counts, errors by status class, and `show latency` against the same counts.

mod common;

use common::loadgen::{json_num, spawn_loadgen};
use common::prom::Exposition;
use common::{req, Backend, Conn, Proxy};
use std::time::Duration;

fn scrape(p: &Proxy, open_metrics: bool) -> Exposition {
    let cmd = if open_metrics {
        "show metrics --openmetrics"
    } else {
        "show metrics"
    };
    let (code, text) = p.ctl(cmd);
    assert_eq!(code, 0, "{cmd}: {text}");
    Exposition::parse(&text, open_metrics)
}

fn two_servers(a: &Backend, b: &Backend) -> Proxy {
    let cfg = common::daemon(2)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "a", addr = "{a}" }, { name = "b", addr = "{b}" } ]
"#;
    Proxy::start_with(&cfg, &[("a", a.addr_string()), ("b", b.addr_string())])
}

/// Counters that only grow, by series.
const GROWING: &[&str] = &[
    "shardgate_http_requests_total",
    "shardgate_server_requests_total",
    "shardgate_http_request_duration_seconds_count",
    "shardgate_connections_accepted_total",
];

#[test]
fn counts_and_histograms_equal_what_loadgen_sent() {
    const N: u64 = 4000;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = two_servers(&a, &b);
    let url = format!("http://{}/x", p.addr("web"));
    let load = spawn_loadgen(
        &["http", "-c", "16", "-n", &N.to_string()],
        p.dir.join("load.json"),
        url,
    );
    // Scrapes while the load runs: each parses, and no counter goes back.
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    let mut scrapes = 0;
    while !load.is_finished() || scrapes < 3 {
        let e = scrape(&p, scrapes % 2 == 1);
        for s in e
            .samples
            .iter()
            .filter(|s| GROWING.contains(&s.name.as_str()))
        {
            let key = format!("{}{:?}", s.name, s.labels);
            let before = last.insert(key.clone(), s.value).unwrap_or(0.0);
            assert!(s.value >= before, "{key} went from {before} to {}", s.value);
        }
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    let json = load.join().unwrap();
    assert_eq!(json_num(&json, "responses"), N, "{json}");
    assert_eq!(json_num(&json, "non_success"), 0, "{json}");

    let e = scrape(&p, false);
    let web = [("frontend", "web")];
    let n = N as f64;
    assert_eq!(e.one("shardgate_http_requests_total", &web), n);
    assert_eq!(
        e.one("shardgate_http_request_duration_seconds_count", &web),
        n
    );
    assert_eq!(e.one("shardgate_http_first_byte_seconds_count", &web), n);
    assert_eq!(
        e.one(
            "shardgate_http_responses_total",
            &[("frontend", "web"), ("code", "2xx")]
        ),
        n
    );
    assert_eq!(e.sum("shardgate_http_responses_total", &web), n);
    assert_eq!(e.sum("shardgate_requests_total", &[]), n);
    assert_eq!(e.sum("shardgate_site_requests_total", &web), n);
    // Each server: what its backend received, by every measure.
    for (name, backend) in [("a", &a), ("b", &b)] {
        let s = [("pool", "app"), ("server", name)];
        let got = backend.requests() as f64;
        assert!(got > 0.0, "server {name} got nothing");
        assert_eq!(e.one("shardgate_server_requests_total", &s), got, "{name}");
        assert_eq!(
            e.one("shardgate_server_request_duration_seconds_count", &s),
            got
        );
        assert_eq!(e.one("shardgate_server_first_byte_seconds_count", &s), got);
        assert_eq!(
            e.one(
                "shardgate_server_responses_total",
                &[("pool", "app"), ("server", name), ("code", "2xx")]
            ),
            got
        );
        assert_eq!(e.one("shardgate_server_up", &s), 1.0);
        assert_eq!(
            e.one(
                "shardgate_server_state",
                &[("pool", "app"), ("server", name), ("state", "up")]
            ),
            1.0
        );
        assert_eq!(e.one("shardgate_server_in_flight", &s), 0.0);
    }
    assert_eq!(
        e.one("shardgate_pool_requests_total", &[("pool", "app")]),
        n
    );
    assert_eq!(
        e.one(
            "shardgate_pool_request_duration_seconds_count",
            &[("pool", "app")]
        ),
        n
    );
    assert_eq!(e.one("shardgate_pool_servers_up", &[("pool", "app")]), 2.0);
    // The histogram's sum is the time spent: positive, and below what N requests on 16
    // connections could have taken in loadgen's run (a loose sanity bound, not a speed test).
    let sum = e.one("shardgate_http_request_duration_seconds_sum", &web);
    assert!(sum > 0.0, "sum {sum}");
    // Bytes out equal the site table's, and the backend's answers are all in them.
    assert_eq!(
        e.one("shardgate_http_bytes_out_total", &web),
        e.sum("shardgate_site_bytes_out_total", &web)
    );
    // The same counts as percentiles over ctl.
    let (code, lat) = p.ctl("show latency");
    assert_eq!(code, 0, "{lat}");
    let row = |scope: &str, name: &str| -> Vec<String> {
        lat.lines()
            .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .find(|w| w[0] == scope && w[1] == name)
            .unwrap_or_else(|| panic!("no {scope} {name} in:\n{lat}"))
    };
    assert_eq!(row("frontend", "web")[2], N.to_string(), "{lat}");
    assert_eq!(row("pool", "app")[2], N.to_string(), "{lat}");
    assert_eq!(row("server", "app/a")[2], a.requests().to_string(), "{lat}");
    let ms: Vec<f64> = row("frontend", "web")[3..7]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        ms[0] > 0.0 && ms.windows(2).all(|w| w[0] <= w[1]),
        "percentiles {ms:?}"
    );
}

#[test]
fn errors_are_counted_by_class_and_servers_that_refuse_count_connect_failures() {
    // A port nobody listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = Backend::start("good");
    let cfg = common::daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]

  [[http.route]]
  pool = "dead"
  host = ["dead.test"]

  [[http.route]]
  pool = "good"
  host = ["good.test"]

[pool.dead]
servers = [ { name = "d", addr = "{dead}" } ]

[pool.good]
servers = [ { name = "g", addr = "{good}" } ]
"#;
    let p = Proxy::start_with(
        &cfg,
        &[("dead", dead.to_string()), ("good", good.addr_string())],
    );
    let ask = |host: &str| {
        let mut c = Conn::connect(p.addr("web"));
        c.send(&req("GET", "/", host, &[], b""));
        c.read_response().status
    };
    for _ in 0..3 {
        assert_eq!(ask("good.test"), 200);
    }
    for _ in 0..2 {
        assert_eq!(ask("nowhere.test"), 404);
    }
    assert_eq!(ask("dead.test"), 503);
    let e = scrape(&p, true);
    let code = |c: &str| {
        e.one(
            "shardgate_http_responses_total",
            &[("frontend", "web"), ("code", c)],
        )
    };
    assert_eq!((code("2xx"), code("4xx"), code("5xx")), (3.0, 2.0, 1.0));
    assert_eq!(
        e.one("shardgate_http_requests_total", &[("frontend", "web")]),
        6.0
    );
    assert_eq!(
        e.one(
            "shardgate_http_request_duration_seconds_count",
            &[("frontend", "web")]
        ),
        6.0
    );
    // Only the 3 proxied requests reached a server's response head.
    assert_eq!(
        e.one(
            "shardgate_http_first_byte_seconds_count",
            &[("frontend", "web")]
        ),
        3.0
    );
    let d = [("pool", "dead"), ("server", "d")];
    assert_eq!(e.one("shardgate_server_connect_failures_total", &d), 1.0);
    assert_eq!(e.one("shardgate_server_up", &d), 0.0);
    assert_eq!(
        e.one(
            "shardgate_server_state",
            &[("pool", "dead"), ("server", "d"), ("state", "down")]
        ),
        1.0
    );
    // The 503 is charged to the frontend only: the dead server never took a request.
    assert_eq!(e.sum("shardgate_server_responses_total", &d), 0.0);
    assert_eq!(e.one("shardgate_server_requests_total", &d), 0.0);
    assert_eq!(
        e.one(
            "shardgate_server_responses_total",
            &[("pool", "good"), ("server", "g"), ("code", "2xx")]
        ),
        3.0
    );
    assert_eq!(e.sum("shardgate_proxy_errors_total", &[]), 3.0);
}
