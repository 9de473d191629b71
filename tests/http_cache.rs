//! The shared HTTP cache (RFC 9111, and RFC 5861's stale-while-revalidate / stale-if-error),
//! black-box: the real daemon in front of a scriptable origin ([`common::origin::Origin`]) that
//! counts the requests it gets and records their heads. "Served from the cache" is seen from
//! both sides: the client gets the stored body with `X-Cache: HIT` (or `STALE`, ...) and an
//! `Age`, and the origin got no request. Modelled on the cases of the public cache-tests suite
//! (cache-tests.fyi): freshness, validation, 304 header update, Vary, invalidation, request
//! directives, plus shardgate's own: coalescing, PURGE, `ctl purge`, `show cache`, limits.
//!
//! Every proxy runs with `shards = 1` (`daemon(1)`): the cache is per shard, so one shard means
//! one cache serves every connection of a test (the one exception, `evictions_reach_every_shard`,
//! checks that evictions reach both caches of a 2-shard daemon). Lifetimes are 1-2 s (`max-age=1`) or an hour,
//! and the sleeps that make an entry stale are at most 2.5 s; each test has its own origin and
//! daemon, so they run in parallel.

mod common;

use common::origin::{http_date, Origin, Reply, Req};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const HOST: &str = "cache.test";

/// The daemon with frontend `web` whose only route sends everything to pool `app` (the origin)
/// through a cache configured by `cache` (an inline table); `frontend_extra` goes into the
/// `[[http]]` section.
fn proxy_with(origin: &Origin, cache: &str, frontend_extra: &str) -> Proxy {
    let cfg = daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
{frontend_extra}

  [[http.route]]
  pool = "app"
  cache = {cache}

[pool.app]
servers = [ {{ name = "app", addr = "{{app}}" }} ]
"#
        );
    Proxy::start_with(&cfg, &[("app", origin.addr_string())])
}

/// The usual cache: 64 MiB, objects up to 8 MiB, PURGE allowed from 127.0.0.1.
fn proxy(origin: &Origin) -> Proxy {
    proxy_with(
        origin,
        r#"{ size = "64MiB", max_object = "8MiB" }"#,
        r#"purge_from = ["127.0.0.1/32"]"#,
    )
}

/// `method path` with `Host: cache.test` and `headers` on a fresh connection, and its response.
#[track_caller]
fn send(p: &Proxy, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(method, path, HOST, headers, body));
    if method == "HEAD" {
        c.read_head_response()
    } else {
        c.read_response()
    }
}

#[track_caller]
fn get(p: &Proxy, path: &str) -> Response {
    send(p, "GET", path, &[], b"")
}

#[track_caller]
fn get_h(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> Response {
    send(p, "GET", path, headers, b"")
}

fn xcache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("<none>")
}

/// Asserts a 200 (or `status`) with `body` and an `X-Cache` among `cache`.
#[track_caller]
fn expect(r: &Response, status: u16, body: &str, cache: &[&str], what: &str) {
    assert!(
        r.status == status && r.body_str() == body && cache.contains(&xcache(r)),
        "{what}: expected {status} {body:?} with X-Cache in {cache:?}, got {}",
        r.summary()
    );
}

/// The `Age` of a response, which must be there and be a non-negative integer (RFC 9111 §5.1).
#[track_caller]
fn age(r: &Response) -> u64 {
    let v = r
        .header("age")
        .unwrap_or_else(|| panic!("no Age on a cached answer: {}", r.summary()));
    v.parse()
        .unwrap_or_else(|_| panic!("Age {v:?} is not a non-negative integer: {}", r.summary()))
}

/// A script answering `BODY-N` (N: the request's number for this path) with `headers`.
fn numbered(
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |r: &Req| {
        let mut reply = Reply::ok(format!("{body}-{}", r.n));
        for (n, v) in headers {
            reply = reply.h(n, v);
        }
        reply
    }
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------------------------------------
// Freshness (RFC 9111 §4.2) and Age (§4.2.3, §5.1)

/// §4, §4.2, §5.1: a fresh stored response is reused without contacting the origin, with an
/// integer `Age`.
#[test]
fn fresh_response_is_served_from_cache_with_age() {
    let o = Origin::start();
    o.on("/a", numbered("a", &[("Cache-Control", "max-age=3600")]));
    let p = proxy(&o);
    let r1 = get(&p, "/a");
    expect(&r1, 200, "a-1", &["MISS"], "first GET");
    let r2 = get(&p, "/a");
    expect(&r2, 200, "a-1", &["HIT"], "second GET");
    assert!(
        age(&r2) <= 2,
        "Age of a just-stored entry: {}",
        r2.summary()
    );
    assert_eq!(o.count("/a"), 1, "the origin saw the second GET");
}

/// §4.2.3: the Age the cache sends includes the upstream's `Age` and the time in cache.
#[test]
fn age_includes_upstream_age_and_time_in_cache() {
    let o = Origin::start();
    o.on(
        "/aged",
        numbered("aged", &[("Cache-Control", "max-age=3600"), ("Age", "30")]),
    );
    let p = proxy(&o);
    get(&p, "/aged");
    let r = get(&p, "/aged");
    expect(&r, 200, "aged-1", &["HIT"], "GET of a stored response");
    let a = age(&r);
    assert!((30..=32).contains(&a), "Age {a}, expected 30..=32");
    assert_eq!(
        r.head.header_all("age").len(),
        1,
        "the origin's Age and the cache's both sent: {}",
        r.summary()
    );
    sleep_ms(1300);
    let r = get(&p, "/aged");
    expect(&r, 200, "aged-1", &["HIT"], "GET 1.3 s later");
    let a = age(&r);
    assert!(
        (31..=34).contains(&a),
        "Age {a} 1.3 s later, expected 31..=34"
    );
}

/// §4.2.3: the apparent age (response time minus `Date`) counts: an answer dated 100 s ago is
/// served with an Age of at least 100, and one dated 100 s ago with `max-age=60` is stale.
#[test]
fn apparent_age_from_date_counts() {
    let o = Origin::start();
    let date = http_date(-100);
    let d2 = date.clone();
    o.on("/dated", move |r| {
        Reply::ok(format!("dated-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .h("Date", &d2)
    });
    o.on("/dated-stale", move |r| {
        Reply::ok(format!("ds-{}", r.n))
            .h("Cache-Control", "max-age=60")
            .h("Date", &date)
    });
    let p = proxy(&o);
    get(&p, "/dated");
    let r = get(&p, "/dated");
    expect(&r, 200, "dated-1", &["HIT"], "second GET");
    let a = age(&r);
    assert!(
        (100..=103).contains(&a),
        "Age {a} for an answer dated 100 s ago"
    );
    get(&p, "/dated-stale");
    let r = get(&p, "/dated-stale");
    assert_eq!(
        o.count("/dated-stale"),
        2,
        "max-age=60 dated 100 s ago reused: {}",
        r.summary()
    );
}

/// §4.2.3: an upstream `Age` already past the lifetime makes the response stale on arrival.
#[test]
fn upstream_age_beyond_lifetime_is_stale() {
    let o = Origin::start();
    o.on(
        "/old",
        numbered("old", &[("Cache-Control", "max-age=3600"), ("Age", "7200")]),
    );
    let p = proxy(&o);
    get(&p, "/old");
    let r = get(&p, "/old");
    assert_eq!(
        o.count("/old"),
        2,
        "max-age=3600 with Age: 7200 reused: {}",
        r.summary()
    );
}

/// §3.1 with RFC 9110 §7.6.1: the Connection header and the fields it names are hop-by-hop and
/// are neither stored nor forwarded; end-to-end headers are.
#[test]
fn hop_by_hop_headers_are_not_served_from_cache() {
    let o = Origin::start();
    o.on(
        "/hop",
        numbered(
            "hop",
            &[
                ("Cache-Control", "max-age=3600"),
                ("Connection", "X-Hop"),
                ("X-Hop", "secret"),
                ("X-End", "kept"),
            ],
        ),
    );
    let p = proxy(&o);
    get(&p, "/hop");
    let r = get(&p, "/hop");
    expect(&r, 200, "hop-1", &["HIT"], "second GET");
    assert_eq!(r.header("x-end"), Some("kept"), "{}", r.summary());
    assert!(
        r.header("x-hop").is_none(),
        "a field named by Connection came from the cache: {}",
        r.summary()
    );
}

/// §4.2.1: `s-maxage` beats `max-age` in a shared cache, both ways; §5.3: `max-age` beats
/// `Expires`, both ways.
#[test]
fn s_maxage_beats_max_age_beats_expires() {
    let o = Origin::start();
    o.on(
        "/smax-long",
        numbered("sl", &[("Cache-Control", "max-age=1, s-maxage=3600")]),
    );
    o.on(
        "/smax-short",
        numbered("ss", &[("Cache-Control", "max-age=3600, s-maxage=1")]),
    );
    let past = http_date(-3600);
    let future = http_date(3600);
    o.on("/maxage-long", move |r| {
        Reply::ok(format!("ml-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .h("Expires", &past)
    });
    o.on("/maxage-short", move |r| {
        Reply::ok(format!("ms-{}", r.n))
            .h("Cache-Control", "max-age=1")
            .h("Expires", &future)
    });
    let p = proxy(&o);
    for path in ["/smax-long", "/smax-short", "/maxage-long", "/maxage-short"] {
        get(&p, path);
    }
    sleep_ms(1600);
    let mut failures = Vec::new();
    for (path, hit) in [
        ("/smax-long", true),
        ("/smax-short", false),
        ("/maxage-long", true),
        ("/maxage-short", false),
    ] {
        let r = get(&p, path);
        let served = o.count(path) == 1;
        if served != hit {
            failures.push(format!(
                "{path}: expected {} 1.6 s after storing, origin saw {} requests, client got {}",
                if hit { "a HIT" } else { "a refetch" },
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.3: `Expires` in the future makes a response fresh; in the past, equal to `Date`, or
/// invalid (`0`, garbage) means already stale.
#[test]
fn expires_freshness_and_invalid_expires() {
    let o = Origin::start();
    let now = http_date(0);
    let cases: Vec<(&str, String, bool)> = vec![
        ("/exp-future", http_date(3600), true),
        ("/exp-past", http_date(-3600), false),
        ("/exp-date", now.clone(), false),
        ("/exp-zero", "0".into(), false),
        ("/exp-garbage", "not a date".into(), false),
    ];
    for (path, expires, _) in &cases {
        let (e, d) = (expires.clone(), now.clone());
        o.on(path, move |r| {
            Reply::ok(format!("e-{}", r.n))
                .h("Date", &d)
                .h("Expires", &e)
        });
    }
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (path, expires, hit) in &cases {
        get(&p, path);
        let r = get(&p, path);
        let got_hit = o.count(path) == 1;
        if got_hit != *hit {
            failures.push(format!(
                "{path} (Expires: {expires}): expected {}, origin saw {} requests, second answer {}",
                if *hit { "a HIT" } else { "no reuse" },
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §4.2.2: a heuristically cacheable status with `Last-Modified` an hour ago and no explicit
/// freshness is reused; without `Last-Modified` (shardgate's policy: no heuristic then) and for
/// a status that is not heuristically cacheable (302, 307) it is not.
#[test]
fn heuristic_freshness_only_with_last_modified_and_cacheable_status() {
    let o = Origin::start();
    let lm = http_date(-3600);
    let mut cases: Vec<(String, u16, bool, bool)> = Vec::new(); // path, status, LM, reused
    for s in [200u16, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        cases.push((format!("/heur/{s}"), s, true, true));
    }
    cases.push(("/heur/nolm".into(), 200, false, false));
    cases.push(("/heur/302".into(), 302, true, false));
    cases.push(("/heur/307".into(), 307, true, false));
    for (path, status, with_lm, _) in &cases {
        let (status, with_lm, lm) = (*status, *with_lm, lm.clone());
        o.on(path, move |r| {
            let body = if status == 204 {
                String::new()
            } else {
                format!("h{status}-{}", r.n)
            };
            let mut reply = Reply::new(status, body);
            if with_lm {
                reply = reply.h("Last-Modified", &lm);
            }
            if (300..400).contains(&status) {
                reply = reply.h("Location", "/elsewhere");
            }
            reply
        });
    }
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (path, status, with_lm, reused) in &cases {
        let r1 = get(&p, path);
        let r2 = get(&p, path);
        let got = o.count(path) == 1;
        let same_body = r1.body == r2.body;
        if got != *reused || r1.status != *status || r2.status != *status || (*reused && !same_body)
        {
            failures.push(format!(
                "{status} {} Last-Modified: expected {}, origin saw {} requests; 1st {} / 2nd {}",
                if *with_lm { "with" } else { "without" },
                if *reused { "reuse" } else { "no reuse" },
                o.count(path),
                r1.summary(),
                r2.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The status codes of cache-tests' status.mjs.
const STATUSES: [u16; 18] = [
    200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599,
];

/// Scripts `/st/{kind}/{status}` answering `status` with `cc` as Cache-Control (if any) and
/// `expires` as Expires (if any).
fn status_paths(o: &Origin, kind: &str, cc: Option<&'static str>, expires: Option<String>) {
    for status in STATUSES {
        let expires = expires.clone();
        o.on(&format!("/st/{kind}/{status}"), move |r| {
            let body = if status == 204 {
                String::new()
            } else {
                format!("s{status}-{}", r.n)
            };
            let mut reply = Reply::new(status, body);
            if let Some(cc) = cc {
                reply = reply.h("Cache-Control", cc);
            }
            if let Some(e) = &expires {
                reply = reply.h("Expires", e);
            }
            if (300..400).contains(&status) {
                reply = reply.h("Location", "/elsewhere");
            }
            reply
        });
    }
}

/// Stores each status of `statuses` under `/st/fresh/N` (max-age=3600) and `/st/none/N` (no
/// freshness) and checks that the fresh ones are reused and the others not.
fn check_status_reuse(statuses: &[u16]) {
    let o = Origin::start();
    status_paths(&o, "fresh", Some("max-age=3600"), None);
    status_paths(&o, "none", None, None);
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (kind, reused) in [("fresh", true), ("none", false)] {
        for &status in statuses {
            let path = format!("/st/{kind}/{status}");
            get(&p, &path);
            let r = get(&p, &path);
            if (o.count(&path) == 1) != reused || r.status != status {
                failures.push(format!(
                    "{status} {}: expected {}, origin saw {} requests, 2nd {}",
                    if reused {
                        "with max-age=3600"
                    } else {
                        "without freshness"
                    },
                    if reused { "reuse" } else { "no reuse" },
                    o.count(&path),
                    r.summary()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §3: a status the cache knows is storable with explicit freshness (cache-tests
/// status-*-fresh); without explicit freshness or Last-Modified it is not reused.
#[test]
fn known_statuses_stored_only_with_explicit_freshness() {
    check_status_reuse(&[200, 203, 204, 301, 302, 303, 307, 308, 404, 410]);
}

/// §3: any final status is storable with explicit freshness, errors and unknown codes included
/// (the brief: "other statuses only with explicit freshness"; cache-tests status-*-fresh, kind
/// "optimal"). RFC 9111 permits but does not require storing them.
#[test]
fn error_and_unknown_statuses_stored_with_explicit_freshness() {
    check_status_reuse(&[299, 400, 499, 500, 502, 503, 504, 599]);
}

/// §4.2 (cache-tests status-*-stale, required): a stale answer of any status (Expires in the
/// past) is not reused without the origin.
#[test]
fn stale_answers_of_any_status_are_not_reused() {
    let o = Origin::start();
    status_paths(&o, "stale", None, Some(http_date(-5000)));
    let p = proxy(&o);
    let mut failures = Vec::new();
    for status in STATUSES {
        let path = format!("/st/stale/{status}");
        get(&p, &path);
        let r = get(&p, &path);
        if o.count(&path) != 2 {
            failures.push(format!(
                "stale {status} reused: origin saw {}, 2nd {}",
                o.count(&path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.2: directive names are case-insensitive and several Cache-Control fields combine;
/// `max-age=0` is stale at once, and so is an invalid `max-age=-1` (§4.2.1).
#[test]
fn cache_control_parsing() {
    let o = Origin::start();
    o.on(
        "/cc/upper",
        numbered("u", &[("Cache-Control", "MAX-AGE=3600")]),
    );
    o.on(
        "/cc/split",
        numbered(
            "s",
            &[
                ("Cache-Control", "public"),
                ("Cache-Control", "max-age=3600"),
            ],
        ),
    );
    o.on("/cc/zero", numbered("z", &[("Cache-Control", "max-age=0")]));
    o.on("/cc/neg", numbered("n", &[("Cache-Control", "max-age=-1")]));
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (path, reused) in [
        ("/cc/upper", true),
        ("/cc/split", true),
        ("/cc/zero", false),
        ("/cc/neg", false),
    ] {
        get(&p, path);
        let r = get(&p, path);
        if (o.count(path) == 1) != reused {
            failures.push(format!(
                "{path}: expected {}, origin saw {}, 2nd {}",
                if reused { "reuse" } else { "no reuse" },
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.2 (cache-tests cc-parse, the required ones): a `max-age=` inside a quoted extension value
/// is not a directive; a single-quoted value is invalid; leading zeros are a valid number.
#[test]
fn cache_control_quoted_strings_and_odd_values() {
    let o = Origin::start();
    let cases: [(&str, &str, bool); 4] = [
        (
            "/ccq/before",
            "extension=\"max-age=3600\", max-age=1",
            false,
        ),
        ("/ccq/after", "max-age=1, extension=\"max-age=3600\"", false),
        ("/ccq/single", "max-age='3600'", false),
        ("/ccq/zeros", "max-age=003600", true),
    ];
    for (path, cc, _) in cases {
        o.on(path, move |r| {
            Reply::ok(format!("q-{}", r.n)).h("Cache-Control", cc)
        });
    }
    let p = proxy(&o);
    for (path, _, _) in cases {
        get(&p, path);
    }
    sleep_ms(1600);
    let mut failures = Vec::new();
    for (path, cc, reused) in cases {
        let r = get(&p, path);
        if (o.count(path) == 1) != reused {
            failures.push(format!(
                "Cache-Control: {cc} (1.6 s later): expected {}, origin saw {}, got {}",
                if reused { "reuse" } else { "no reuse" },
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §4 (the cache key is the target URI): a different query or Host is a different entry.
#[test]
fn cache_key_is_host_path_and_query() {
    let o = Origin::start();
    o.on("/k", |r| {
        Reply::ok(format!("{} {}", r.target, r.header("host").unwrap_or("")))
            .h("Cache-Control", "max-age=3600")
    });
    let p = proxy(&o);
    let a = get(&p, "/k?x=1");
    let b = get(&p, "/k?x=2");
    assert_ne!(a.body, b.body, "different queries shared an entry");
    expect(
        &b,
        200,
        &a.body_str().replace("x=1", "x=2"),
        &["MISS"],
        "?x=2",
    );
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/k?x=1", "other.test", &[], b""));
    let other = c.read_response();
    assert_eq!(xcache(&other), "MISS", "other Host: {}", other.summary());
    expect(
        &get(&p, "/k?x=1"),
        200,
        &a.body_str(),
        &["HIT"],
        "?x=1 again",
    );
    assert_eq!(o.count("/k"), 3);
}

/// §4.2 / §4.3: a stale entry without validators is refetched (X-Cache: EXPIRED) and the new
/// answer replaces it.
#[test]
fn stale_entry_without_validator_is_refetched() {
    let o = Origin::start();
    o.on("/exp", |r| {
        let cc = if r.n == 1 {
            "max-age=1"
        } else {
            "max-age=3600"
        };
        Reply::ok(format!("exp-{}", r.n)).h("Cache-Control", cc)
    });
    let p = proxy(&o);
    expect(&get(&p, "/exp"), 200, "exp-1", &["MISS"], "first GET");
    sleep_ms(1600);
    let r = get(&p, "/exp");
    expect(&r, 200, "exp-2", &["EXPIRED"], "GET once stale");
    let reqs = o.reqs("/exp");
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1].header("if-none-match").is_none() && reqs[1].header("if-modified-since").is_none(),
        "conditional request without a validator: {:?}",
        reqs[1].head.headers
    );
    expect(
        &get(&p, "/exp"),
        200,
        "exp-2",
        &["HIT"],
        "GET after refetch",
    );
}

// ---------------------------------------------------------------------------------------------
// What is not stored (§3, §3.5, §5.2.1.5, §5.2.2.5, §5.2.2.7, §5.4)

/// §5.2.2.5 `no-store`, §5.2.2.7 `private` (a shared cache MUST NOT store), and `Set-Cookie`
/// (shardgate's policy; RFC 9111 §7.3 leaves it to the cache).
#[test]
fn no_store_private_and_set_cookie_responses_are_not_stored() {
    let o = Origin::start();
    o.on(
        "/ns",
        numbered("ns", &[("Cache-Control", "no-store, max-age=3600")]),
    );
    o.on(
        "/priv",
        numbered("p", &[("Cache-Control", "private, max-age=3600")]),
    );
    o.on(
        "/cookie",
        numbered(
            "c",
            &[("Cache-Control", "max-age=3600"), ("Set-Cookie", "id=1")],
        ),
    );
    let p = proxy(&o);
    let mut failures = Vec::new();
    for path in ["/ns", "/priv", "/cookie"] {
        get(&p, path);
        let r = get(&p, path);
        if o.count(path) != 2 || xcache(&r) == "HIT" {
            failures.push(format!(
                "{path}: reused (origin saw {}), 2nd {}",
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.2.1.5: `Cache-Control: no-store` on the request: the response to it is not stored.
#[test]
fn no_store_request_is_not_stored() {
    let o = Origin::start();
    o.on(
        "/nsr",
        numbered("nsr", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    let r = get_h(&p, "/nsr", &[("Cache-Control", "no-store")]);
    assert_eq!(r.body_str(), "nsr-1", "{}", r.summary());
    let r = get(&p, "/nsr");
    expect(&r, 200, "nsr-2", &["MISS"], "GET after a no-store request");
}

/// §3.5: a request with `Authorization` is not stored, unless the response has `public`,
/// `s-maxage` or `must-revalidate`.
#[test]
fn authorization_requests_stored_only_with_public_s_maxage_or_must_revalidate() {
    let o = Origin::start();
    let cases: [(&str, &str, bool); 4] = [
        ("/auth/plain", "max-age=3600", false),
        ("/auth/public", "public, max-age=3600", true),
        ("/auth/smaxage", "s-maxage=3600", true),
        ("/auth/mustrev", "must-revalidate, max-age=3600", true),
    ];
    for (path, cc, _) in cases {
        o.on(path, move |r| {
            Reply::ok(format!("auth-{}", r.n)).h("Cache-Control", cc)
        });
    }
    let p = proxy(&o);
    let auth = [("Authorization", "Basic dXNlcjpwYXNz")];
    let mut failures = Vec::new();
    for (path, cc, reused) in cases {
        let r1 = get_h(&p, path, &auth);
        let r2 = get_h(&p, path, &auth);
        if (o.count(path) == 1) != reused || r1.status != 200 || r2.status != 200 {
            failures.push(format!(
                "Authorization + response {cc:?}: expected {}, origin saw {}, 2nd {}",
                if reused { "reuse" } else { "no reuse" },
                o.count(path),
                r2.summary()
            ));
        }
        if o.reqs(path)[0].header("authorization") != Some(auth[0].1) {
            failures.push(format!("{path}: Authorization not forwarded to the origin"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RFC 9110 §9.3.3 / RFC 9111 §2: only GET (and HEAD) are cached here; a POST goes to the
/// origin every time with `X-Cache: BYPASS`, and its answer is never given to a GET.
#[test]
fn post_is_bypassed_and_not_stored() {
    let o = Origin::start();
    o.on("/post", |r| {
        Reply::ok(format!("{}-{}", r.method, r.n)).h("Cache-Control", "max-age=3600")
    });
    let p = proxy(&o);
    let r1 = send(&p, "POST", "/post", &[], b"x=1");
    let r2 = send(&p, "POST", "/post", &[], b"x=1");
    let g = get(&p, "/post");
    assert_eq!(
        (r1.body_str().as_str(), r2.body_str().as_str()),
        ("POST-1", "POST-2"),
        "a POST answered from the cache"
    );
    expect(&g, 200, "GET-3", &["MISS"], "GET after POSTs");
    // shardgate's status header: every request that went through the cache logic says so.
    expect(&r1, 200, "POST-1", &["BYPASS"], "first POST");
    expect(&r2, 200, "POST-2", &["BYPASS"], "second POST");
}

/// RFC 7234 §5.4 (kept by shardgate): `Pragma: no-cache` on a request without Cache-Control is
/// treated as `Cache-Control: no-cache`: the stored answer is not used without the origin.
#[test]
fn pragma_no_cache_request_is_not_served_from_cache() {
    let o = Origin::start();
    o.on(
        "/pragma",
        numbered("pr", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    get(&p, "/pragma");
    let r = get_h(&p, "/pragma", &[("Pragma", "no-cache")]);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        o.count("/pragma"),
        2,
        "Pragma: no-cache answered from cache: {}",
        r.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Vary (§4.1)

/// §4.1: a variant is reused only for requests whose Vary-named headers match, including a
/// header absent from both; a different (or newly present) value is a miss.
#[test]
fn vary_separates_variants() {
    let o = Origin::start();
    o.on("/vary", |r| {
        Reply::ok(format!(
            "{}-{}",
            r.header("accept-language").unwrap_or("none"),
            r.n
        ))
        .h("Cache-Control", "max-age=3600")
        .h("Vary", "Accept-Language")
    });
    let p = proxy(&o);
    let en = [("Accept-Language", "en")];
    let fr = [("Accept-Language", "fr")];
    expect(&get_h(&p, "/vary", &en), 200, "en-1", &["MISS"], "en");
    expect(&get_h(&p, "/vary", &en), 200, "en-1", &["HIT"], "en again");
    expect(&get_h(&p, "/vary", &fr), 200, "fr-2", &["MISS"], "fr");
    expect(&get_h(&p, "/vary", &fr), 200, "fr-2", &["HIT"], "fr again");
    expect(&get_h(&p, "/vary", &en), 200, "en-1", &["HIT"], "en third");
    expect(
        &get(&p, "/vary"),
        200,
        "none-3",
        &["MISS"],
        "no Accept-Language",
    );
    expect(
        &get(&p, "/vary"),
        200,
        "none-3",
        &["HIT"],
        "no Accept-Language again",
    );
    assert_eq!(o.count("/vary"), 3);
}

/// §4.1: two Vary headers must both match.
#[test]
fn vary_on_two_headers() {
    let o = Origin::start();
    o.on("/vary2", |r| {
        Reply::ok(format!("v-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .h("Vary", "X-A, X-B")
    });
    let p = proxy(&o);
    let ab = [("X-A", "1"), ("X-B", "1")];
    expect(&get_h(&p, "/vary2", &ab), 200, "v-1", &["MISS"], "a=1 b=1");
    expect(
        &get_h(&p, "/vary2", &ab),
        200,
        "v-1",
        &["HIT"],
        "a=1 b=1 again",
    );
    let r = get_h(&p, "/vary2", &[("X-A", "1"), ("X-B", "2")]);
    expect(&r, 200, "v-2", &["MISS"], "a=1 b=2");
}

/// §4.1: `Vary: *` always fails to match: never served from the cache.
#[test]
fn vary_star_is_never_served_from_cache() {
    let o = Origin::start();
    o.on(
        "/vstar",
        numbered("vs", &[("Cache-Control", "max-age=3600"), ("Vary", "*")]),
    );
    let p = proxy(&o);
    get(&p, "/vstar");
    let r = get(&p, "/vstar");
    assert_eq!(r.body_str(), "vs-2", "Vary: * reused: {}", r.summary());
    assert_ne!(xcache(&r), "HIT");
}

/// §4.1 with Accept-Encoding: identical values share the variant, different values do not.
#[test]
fn vary_accept_encoding() {
    let o = Origin::start();
    o.on("/ae", |r| {
        Reply::ok(format!(
            "{}-{}",
            r.header("accept-encoding").unwrap_or("identity"),
            r.n
        ))
        .h("Cache-Control", "max-age=3600")
        .h("Vary", "Accept-Encoding")
    });
    let p = proxy(&o);
    let gz = [("Accept-Encoding", "gzip")];
    let br = [("Accept-Encoding", "br")];
    let r = get_h(&p, "/ae", &gz);
    assert_eq!(r.status, 200, "{}", r.summary());
    let first = r.body_str();
    expect(&get_h(&p, "/ae", &gz), 200, &first, &["HIT"], "gzip again");
    let r = get_h(&p, "/ae", &br);
    assert_eq!(xcache(&r), "MISS", "br after gzip: {}", r.summary());
    assert!(r.body_str().starts_with("br"), "{}", r.summary());
    assert_eq!(o.count("/ae"), 2);
}

// ---------------------------------------------------------------------------------------------
// Validation (§4.3)

/// Answers `304` when the request's If-None-Match names `etag`, else a 200 numbered body.
fn etag_script(
    name: &'static str,
    etag: &'static str,
    first_cc: &'static str,
    later_cc: &'static str,
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |r: &Req| {
        let cc = if r.n == 1 { first_cc } else { later_cc };
        let test_header = format!("value-{}", r.n);
        if r.header("if-none-match") == Some(etag) {
            Reply::not_modified()
                .h("Cache-Control", cc)
                .h("ETag", etag)
                .h("X-Test", &test_header)
        } else {
            Reply::ok(format!("{name}-{}", r.n))
                .h("Cache-Control", cc)
                .h("ETag", etag)
                .h("X-Test", &test_header)
        }
    }
}

/// §4.3.1, §4.3.3, §4.3.4: a stale entry with an ETag is revalidated with If-None-Match; the
/// 304 gives the client 200 with the stored body and the 304's headers, and updates the stored
/// headers and freshness (the next request is a HIT with them).
#[test]
fn etag_revalidation_304_updates_stored_headers() {
    let o = Origin::start();
    o.on(
        "/etag",
        etag_script("etag", "\"e1\"", "max-age=1", "max-age=3600"),
    );
    let p = proxy(&o);
    let r = get(&p, "/etag");
    expect(&r, 200, "etag-1", &["MISS"], "first GET");
    assert_eq!(r.header("x-test"), Some("value-1"));
    sleep_ms(1600);
    let r = get(&p, "/etag");
    expect(&r, 200, "etag-1", &["REVALIDATED"], "GET once stale");
    assert_eq!(
        r.header("x-test"),
        Some("value-2"),
        "header of the 304 not in the answer: {}",
        r.summary()
    );
    let reqs = o.reqs("/etag");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].header("if-none-match"),
        Some("\"e1\""),
        "revalidation request: {:?}",
        reqs[1].head.headers
    );
    let r = get(&p, "/etag");
    expect(&r, 200, "etag-1", &["HIT"], "GET after the 304");
    assert_eq!(
        r.header("x-test"),
        Some("value-2"),
        "stored header not updated by the 304: {}",
        r.summary()
    );
    assert_eq!(
        r.header("content-length"),
        Some("6"),
        "Content-Length after the 304 update: {}",
        r.summary()
    );
    assert_eq!(o.count("/etag"), 2);
}

/// §3.2: Content-Length is excepted from the header update a 304 makes: a 304 that (wrongly)
/// says `Content-Length: 0` leaves the stored body and its length alone.
#[test]
fn content_length_of_a_304_does_not_replace_the_stored_one() {
    let o = Origin::start();
    o.on("/cl304", |r| {
        if r.header("if-none-match") == Some("\"l1\"") {
            Reply::not_modified()
                .h("Cache-Control", "max-age=3600")
                .h("ETag", "\"l1\"")
                .h("Content-Length", "0")
        } else {
            Reply::ok("twelve bytes")
                .h("Cache-Control", "max-age=1")
                .h("ETag", "\"l1\"")
        }
    });
    let p = proxy(&o);
    get(&p, "/cl304");
    sleep_ms(1600);
    let r = get(&p, "/cl304");
    expect(&r, 200, "twelve bytes", &["REVALIDATED"], "GET once stale");
    let r = get(&p, "/cl304");
    expect(&r, 200, "twelve bytes", &["HIT"], "GET after the 304");
    assert_eq!(r.header("content-length"), Some("12"), "{}", r.summary());
}

/// §4.3.1: a stale entry with only Last-Modified is revalidated with If-Modified-Since (the
/// Last-Modified value); a 304 revalidates it.
#[test]
fn last_modified_revalidation() {
    let o = Origin::start();
    let lm = http_date(-86_400);
    let lm2 = lm.clone();
    o.on("/lm", move |r| {
        if r.header("if-modified-since") == Some(lm2.as_str()) {
            Reply::not_modified()
                .h("Cache-Control", "max-age=3600")
                .h("Last-Modified", &lm2)
        } else {
            Reply::ok(format!("lm-{}", r.n))
                .h("Cache-Control", "max-age=1")
                .h("Last-Modified", &lm2)
        }
    });
    let p = proxy(&o);
    expect(&get(&p, "/lm"), 200, "lm-1", &["MISS"], "first GET");
    sleep_ms(1600);
    let r = get(&p, "/lm");
    let reqs = o.reqs("/lm");
    assert_eq!(reqs.len(), 2, "{}", r.summary());
    assert_eq!(
        reqs[1].header("if-modified-since"),
        Some(lm.as_str()),
        "revalidation request: {:?}",
        reqs[1].head.headers
    );
    expect(&r, 200, "lm-1", &["REVALIDATED"], "GET once stale");
    expect(&get(&p, "/lm"), 200, "lm-1", &["HIT"], "GET after the 304");
}

/// §4.3.3: a revalidation answered with a full 200 replaces the entry (X-Cache: EXPIRED).
#[test]
fn revalidation_answered_with_200_replaces_entry() {
    let o = Origin::start();
    o.on("/chg", |r| {
        let cc = if r.n == 1 {
            "max-age=1"
        } else {
            "max-age=3600"
        };
        Reply::ok(format!("chg-{}", r.n))
            .h("Cache-Control", cc)
            .h("ETag", &format!("\"c{}\"", r.n))
    });
    let p = proxy(&o);
    get(&p, "/chg");
    sleep_ms(1600);
    let r = get(&p, "/chg");
    expect(&r, 200, "chg-2", &["EXPIRED"], "GET once stale");
    assert_eq!(o.reqs("/chg")[1].header("if-none-match"), Some("\"c1\""));
    let r = get(&p, "/chg");
    expect(&r, 200, "chg-2", &["HIT"], "GET after the new 200");
    assert_eq!(r.header("etag"), Some("\"c2\""));
}

/// §5.2.2.4 `no-cache` and §5.2.2.2 `max-age=0, must-revalidate` responses: stored, but every
/// reuse is validated with the origin first.
#[test]
fn no_cache_and_must_revalidate_responses_are_always_revalidated() {
    let o = Origin::start();
    o.on("/nc", etag_script("nc", "\"n1\"", "no-cache", "no-cache"));
    o.on(
        "/mr",
        etag_script(
            "mr",
            "\"m1\"",
            "max-age=0, must-revalidate",
            "max-age=0, must-revalidate",
        ),
    );
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (path, body) in [("/nc", "nc-1"), ("/mr", "mr-1")] {
        get(&p, path);
        for i in 2..=3 {
            let r = get(&p, path);
            let reqs = o.reqs(path);
            let conditional = reqs.last().and_then(|q| q.header("if-none-match"));
            if reqs.len() != i
                || conditional.is_none()
                || r.status != 200
                || r.body_str() != body
                || xcache(&r) != "REVALIDATED"
            {
                failures.push(format!(
                    "{path} request {i}: origin saw {} (last If-None-Match {conditional:?}), client got {}",
                    reqs.len(),
                    r.summary()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §4.3.2: a client's conditional request on a fresh entry is answered by the cache: 304 when
/// If-None-Match matches the stored ETag (weak comparison) or If-Modified-Since is not older
/// than Last-Modified, the full 200 otherwise.
#[test]
fn client_conditional_request_answered_from_cache() {
    let o = Origin::start();
    let lm = http_date(-86_400);
    let older = http_date(-2 * 86_400);
    let lm2 = lm.clone();
    o.on("/cond", move |r| {
        Reply::ok(format!("cond-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .h("ETag", "\"k1\"")
            .h("Last-Modified", &lm2)
    });
    let p = proxy(&o);
    get(&p, "/cond");
    let mut failures = Vec::new();
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("If-None-Match", "\"k1\"")], 304),
        (vec![("If-None-Match", "W/\"k1\"")], 304),
        (vec![("If-None-Match", "\"x\", \"k1\"")], 304),
        (vec![("If-None-Match", "\"other\"")], 200),
        (vec![("If-Modified-Since", lm.as_str())], 304),
        (vec![("If-None-Match", "*")], 304),
        (vec![("If-Modified-Since", older.as_str())], 200),
    ];
    for (headers, want) in &cases {
        let r = get_h(&p, "/cond", headers);
        let ok = r.status == *want
            && match want {
                304 => r.body.is_empty() && r.header("etag") == Some("\"k1\""),
                _ => r.body_str() == "cond-1",
            };
        if !ok {
            failures.push(format!("{headers:?}: expected {want}, got {}", r.summary()));
        }
    }
    assert_eq!(
        o.count("/cond"),
        1,
        "conditional requests on a fresh entry went to the origin"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §4.3.2 with §4.3.1: a client's If-None-Match matching the ETag of a stale entry: the cache
/// revalidates, and the origin's 304 becomes a 304 to the client.
#[test]
fn client_conditional_request_on_stale_entry() {
    let o = Origin::start();
    o.on(
        "/cs",
        etag_script("cs", "\"s1\"", "max-age=1", "max-age=3600"),
    );
    let p = proxy(&o);
    get(&p, "/cs");
    sleep_ms(1600);
    let r = get_h(&p, "/cs", &[("If-None-Match", "\"s1\"")]);
    assert_eq!(
        r.status,
        304,
        "conditional GET on a stale entry: {}",
        r.summary()
    );
    assert!(r.body.is_empty());
    let reqs = o.reqs("/cs");
    assert_eq!(reqs.len(), 2, "the stale entry was not revalidated");
    assert_eq!(reqs[1].header("if-none-match"), Some("\"s1\""));
    expect(
        &get(&p, "/cs"),
        200,
        "cs-1",
        &["HIT"],
        "plain GET afterwards",
    );
}

// ---------------------------------------------------------------------------------------------
// Request directives (§5.2.1)

/// §5.2.1.4: request `no-cache`: the stored answer is not used without the origin validating
/// it (the client still gets the body).
#[test]
fn request_no_cache_goes_to_origin() {
    let o = Origin::start();
    o.on(
        "/rnc",
        etag_script("rnc", "\"r1\"", "max-age=3600", "max-age=3600"),
    );
    let p = proxy(&o);
    get(&p, "/rnc");
    let r = get_h(&p, "/rnc", &[("Cache-Control", "no-cache")]);
    assert_eq!(
        o.count("/rnc"),
        2,
        "no-cache request served from cache: {}",
        r.summary()
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.body_str().starts_with("rnc-"), "{}", r.summary());
}

/// §5.2.1.1: request `max-age=0` refuses an entry older than 0 s; a large max-age accepts it.
#[test]
fn request_max_age() {
    let o = Origin::start();
    o.on(
        "/rma",
        numbered("rma", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    get(&p, "/rma");
    sleep_ms(1300);
    let r = get_h(&p, "/rma", &[("Cache-Control", "max-age=3600")]);
    expect(&r, 200, "rma-1", &["HIT"], "request max-age=3600");
    let r = get_h(&p, "/rma", &[("Cache-Control", "max-age=0")]);
    assert_eq!(
        o.count("/rma"),
        2,
        "entry aged >= 1 s served to a request with max-age=0: {}",
        r.summary()
    );
    assert_eq!(r.body_str(), "rma-2");
}

/// §5.2.1.3: request `min-fresh`: an entry that will not stay fresh that long is not used.
#[test]
fn request_min_fresh() {
    let o = Origin::start();
    o.on(
        "/rmf",
        numbered("rmf", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    get(&p, "/rmf");
    let r = get_h(&p, "/rmf", &[("Cache-Control", "min-fresh=10")]);
    expect(&r, 200, "rmf-1", &["HIT"], "min-fresh=10");
    let r = get_h(&p, "/rmf", &[("Cache-Control", "min-fresh=7200")]);
    assert_eq!(
        o.count("/rmf"),
        2,
        "entry fresh for < 3600 s served to min-fresh=7200: {}",
        r.summary()
    );
}

/// §5.2.1.2: request `max-stale` accepts a stale entry (with or without a limit), but never
/// one whose response said `must-revalidate` (§5.2.2.2).
#[test]
fn request_max_stale() {
    let o = Origin::start();
    o.on("/ms", numbered("ms", &[("Cache-Control", "max-age=1")]));
    o.on(
        "/ms-mr",
        numbered("msmr", &[("Cache-Control", "max-age=1, must-revalidate")]),
    );
    let p = proxy(&o);
    get(&p, "/ms");
    get(&p, "/ms-mr");
    sleep_ms(1600);
    let r = get_h(&p, "/ms", &[("Cache-Control", "max-stale=60")]);
    expect(
        &r,
        200,
        "ms-1",
        &["HIT", "STALE"],
        "max-stale=60 on a stale entry",
    );
    let r = get_h(&p, "/ms", &[("Cache-Control", "max-stale")]);
    expect(
        &r,
        200,
        "ms-1",
        &["HIT", "STALE"],
        "max-stale on a stale entry",
    );
    assert_eq!(o.count("/ms"), 1);
    let r = get_h(&p, "/ms-mr", &[("Cache-Control", "max-stale=60")]);
    assert_eq!(
        o.count("/ms-mr"),
        2,
        "stale must-revalidate entry served for max-stale: {}",
        r.summary()
    );
}

/// §5.2.1.1-3 against an upstream `Age` (cache-tests ccreq-magreaterage, ccreq-min-fresh-age,
/// ccreq-max-stale-age): the current age counts the `Age` the origin sent.
#[test]
fn request_directives_count_upstream_age() {
    let o = Origin::start();
    o.on(
        "/ra/max-age",
        numbered("a", &[("Cache-Control", "max-age=3600"), ("Age", "1800")]),
    );
    o.on(
        "/ra/min-fresh",
        numbered("b", &[("Cache-Control", "max-age=1500"), ("Age", "1000")]),
    );
    o.on(
        "/ra/max-stale",
        numbered("c", &[("Cache-Control", "max-age=1500"), ("Age", "2000")]),
    );
    let p = proxy(&o);
    let mut failures = Vec::new();
    for (path, directive, reused) in [
        ("/ra/max-age", "max-age=600", false),
        ("/ra/min-fresh", "min-fresh=1000", false),
        ("/ra/max-stale", "max-stale=1000", true),
    ] {
        get(&p, path);
        let r = get_h(&p, path, &[("Cache-Control", directive)]);
        if (o.count(path) == 1) != reused || r.status != 200 {
            failures.push(format!(
                "{path} with request {directive}: expected {}, origin saw {}, answer {}",
                if reused { "reuse" } else { "no reuse" },
                o.count(path),
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.2.2.8 `proxy-revalidate` and §5.2.2.10 `s-maxage` (which "incorporates the semantics of
/// proxy-revalidate"): a shared cache does not serve them stale, even to `max-stale`.
#[test]
fn proxy_revalidate_and_s_maxage_forbid_stale_in_a_shared_cache() {
    let o = Origin::start();
    o.on(
        "/prv",
        numbered("prv", &[("Cache-Control", "max-age=1, proxy-revalidate")]),
    );
    o.on("/smx", numbered("smx", &[("Cache-Control", "s-maxage=1")]));
    let p = proxy(&o);
    get(&p, "/prv");
    get(&p, "/smx");
    sleep_ms(1600);
    let mut failures = Vec::new();
    for path in ["/prv", "/smx"] {
        let r = get_h(&p, path, &[("Cache-Control", "max-stale=60")]);
        if o.count(path) != 2 {
            failures.push(format!(
                "{path} served stale for max-stale: {}",
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §5.2.1.7: `only-if-cached` never gets a stale entry it did not allow (504, origin not
/// contacted); with `max-stale` it does.
#[test]
fn only_if_cached_and_stale_entries() {
    let o = Origin::start();
    o.on("/oics", numbered("oics", &[("Cache-Control", "max-age=1")]));
    let p = proxy(&o);
    get(&p, "/oics");
    sleep_ms(1600);
    let r = get_h(&p, "/oics", &[("Cache-Control", "only-if-cached")]);
    assert_eq!(
        r.status,
        504,
        "only-if-cached on a stale entry: {}",
        r.summary()
    );
    let r = get_h(
        &p,
        "/oics",
        &[("Cache-Control", "only-if-cached, max-stale=60")],
    );
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "oics-1"),
        "only-if-cached, max-stale on a stale entry: {}",
        r.summary()
    );
    assert_eq!(o.count("/oics"), 1, "only-if-cached reached the origin");
}

/// §5.2.1.7: `only-if-cached`: a stored answer if there is one, else 504 without contacting
/// the origin.
#[test]
fn only_if_cached() {
    let o = Origin::start();
    o.on(
        "/oic",
        numbered("oic", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    let oic = [("Cache-Control", "only-if-cached")];
    let r = get_h(&p, "/oic", &oic);
    assert_eq!(r.status, 504, "only-if-cached miss: {}", r.summary());
    assert_eq!(o.count("/oic"), 0, "only-if-cached reached the origin");
    get(&p, "/oic");
    let r = get_h(&p, "/oic", &oic);
    expect(
        &r,
        200,
        "oic-1",
        &["HIT"],
        "only-if-cached on a stored entry",
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 5861 and errors (§4.2.4, §5.2.2.2)

/// RFC 5861 §3: within stale-while-revalidate the stale answer is sent at once (X-Cache:
/// STALE) while the cache refreshes it in the background; later requests get the new one.
#[test]
fn stale_while_revalidate_serves_stale_and_refreshes() {
    // The refresh is held at the origin until the client has its stale answer: an answer that
    // waited for the origin never comes (no timing threshold, so a loaded machine cannot fail
    // it).
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let o = Origin::start();
    o.on("/swr", move |r| {
        if r.n == 1 {
            return Reply::ok("swr-1").h("Cache-Control", "max-age=1, stale-while-revalidate=30");
        }
        let until = Instant::now() + Duration::from_secs(8);
        while !g.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        Reply::ok(format!("swr-{}", r.n)).h("Cache-Control", "max-age=3600")
    });
    let p = proxy(&o);
    get(&p, "/swr");
    sleep_ms(1600);
    let mut c = Conn::connect(p.addr("web"));
    c.set_read_timeout(Duration::from_secs(5));
    c.send(&req("GET", "/swr", HOST, &[], b""));
    let r = c.try_read_response();
    gate.store(true, Ordering::SeqCst);
    let r = r.unwrap_or_else(|e| {
        panic!("no stale answer while the refresh was held at the origin (it waited?): {e}")
    });
    expect(
        &r,
        200,
        "swr-1",
        &["STALE"],
        "GET within stale-while-revalidate",
    );
    drop(c);
    let n = o.wait_count("/swr", 2, Duration::from_secs(3));
    assert_eq!(n, 2, "no background revalidation");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut last;
    loop {
        last = get(&p, "/swr");
        if xcache(&last) == "HIT" || Instant::now() > deadline {
            break;
        }
        sleep_ms(100);
    }
    assert!(
        xcache(&last) == "HIT" && last.body_str() != "swr-1" && last.body_str().starts_with("swr-"),
        "GET after the background refresh: expected HIT with the refreshed body, got {}",
        last.summary()
    );
}

/// RFC 5861 §3 with §4.3: the background revalidation is conditional when the entry has an
/// ETag, and its 304 freshens the entry (the next request is a HIT with the stored body); a
/// background fetch that fails leaves the stale entry usable within the window.
#[test]
fn stale_while_revalidate_background_304_and_failure() {
    let o = Origin::start();
    o.on("/swr304", |r| {
        if r.header("if-none-match") == Some("\"w1\"") {
            Reply::not_modified()
                .h("Cache-Control", "max-age=3600")
                .h("ETag", "\"w1\"")
        } else {
            Reply::ok(format!("swr304-{}", r.n))
                .h("Cache-Control", "max-age=1, stale-while-revalidate=30")
                .h("ETag", "\"w1\"")
        }
    });
    o.on("/swrfail", |r| {
        if r.n == 1 {
            Reply::ok("swrfail-1").h("Cache-Control", "max-age=1, stale-while-revalidate=30")
        } else {
            Reply::new(503, "down")
        }
    });
    let p = proxy(&o);
    get(&p, "/swr304");
    get(&p, "/swrfail");
    sleep_ms(1600);
    expect(
        &get(&p, "/swr304"),
        200,
        "swr304-1",
        &["STALE"],
        "/swr304 once stale",
    );
    expect(
        &get(&p, "/swrfail"),
        200,
        "swrfail-1",
        &["STALE"],
        "/swrfail once stale",
    );
    assert_eq!(o.wait_count("/swr304", 2, Duration::from_secs(3)), 2);
    assert_eq!(o.wait_count("/swrfail", 2, Duration::from_secs(3)), 2);
    assert_eq!(
        o.reqs("/swr304")[1].header("if-none-match"),
        Some("\"w1\""),
        "background revalidation not conditional"
    );
    sleep_ms(200);
    expect(
        &get(&p, "/swr304"),
        200,
        "swr304-1",
        &["HIT"],
        "/swr304 after the background 304",
    );
    let r = get(&p, "/swrfail");
    assert!(
        r.status == 200 && r.body_str() == "swrfail-1" && xcache(&r) == "STALE",
        "/swrfail after a failed background fetch: {}",
        r.summary()
    );
}

/// RFC 5861 §4: stale-if-error: a stale entry is served when the origin answers 5xx.
#[test]
fn stale_if_error_on_5xx() {
    let o = Origin::start();
    o.on("/sie", |r| {
        if r.n == 1 {
            Reply::ok("sie-1").h("Cache-Control", "max-age=1, stale-if-error=60")
        } else {
            Reply::new(500, "broken")
        }
    });
    let p = proxy(&o);
    get(&p, "/sie");
    sleep_ms(1600);
    let r = get(&p, "/sie");
    expect(
        &r,
        200,
        "sie-1",
        &["STALE"],
        "GET with the origin answering 500",
    );
    assert_eq!(o.count("/sie"), 2, "the cache did not try the origin first");
}

/// RFC 5861 §4: `stale-if-error` may come with the request too.
#[test]
fn stale_if_error_in_the_request() {
    let o = Origin::start();
    o.on("/siereq", |r| {
        if r.n == 1 {
            Reply::ok("siereq-1").h("Cache-Control", "max-age=1")
        } else {
            Reply::new(500, "broken")
        }
    });
    let p = proxy(&o);
    get(&p, "/siereq");
    sleep_ms(1600);
    let r = get_h(&p, "/siereq", &[("Cache-Control", "stale-if-error=60")]);
    expect(
        &r,
        200,
        "siereq-1",
        &["STALE"],
        "request stale-if-error=60, origin 500",
    );
    let r = get(&p, "/siereq");
    assert_eq!(r.status, 500, "without stale-if-error: {}", r.summary());
}

/// RFC 5861 §4: stale-if-error: a stale entry is served when the origin is down.
#[test]
fn stale_if_error_when_origin_down() {
    let o = Origin::start();
    o.on(
        "/sied",
        numbered("sied", &[("Cache-Control", "max-age=1, stale-if-error=60")]),
    );
    let p = proxy(&o);
    get(&p, "/sied");
    sleep_ms(1600);
    o.kill();
    let r = get(&p, "/sied");
    expect(&r, 200, "sied-1", &["STALE"], "GET with the origin down");
}

/// RFC 5861 §3, §4: past the stale-while-revalidate / stale-if-error window the stale entry is
/// not served: the client waits for the origin's new answer, or gets its error (cache-tests
/// stale-if-error-cc-response-expired).
#[test]
fn stale_windows_expire() {
    let o = Origin::start();
    o.on("/swr-x", |r| {
        Reply::ok(format!("swrx-{}", r.n)).h("Cache-Control", "max-age=0, stale-while-revalidate=1")
    });
    o.on("/sie-x", |r| {
        if r.n == 1 {
            Reply::ok("siex-1").h("Cache-Control", "max-age=0, stale-if-error=1")
        } else {
            Reply::new(500, "origin error")
        }
    });
    let p = proxy(&o);
    get(&p, "/swr-x");
    get(&p, "/sie-x");
    sleep_ms(2500);
    let r = get(&p, "/swr-x");
    assert_eq!(
        r.body_str(),
        "swrx-2",
        "2.5 s stale with stale-while-revalidate=1: {}",
        r.summary()
    );
    let r = get(&p, "/sie-x");
    assert_eq!(
        r.status,
        500,
        "2.5 s stale with stale-if-error=1, origin answering 500: {}",
        r.summary()
    );
}

/// §5.2.2.2 / §4.2.4: a stale `must-revalidate` entry is never served when the origin cannot
/// be reached: 504.
#[test]
fn must_revalidate_with_origin_down_is_504() {
    let o = Origin::start();
    o.on(
        "/mrd",
        numbered("mrd", &[("Cache-Control", "max-age=1, must-revalidate")]),
    );
    o.on("/ncd", |r| {
        Reply::ok(format!("ncd-{}", r.n))
            .h("Cache-Control", "no-cache")
            .h("ETag", "\"d1\"")
    });
    o.on("/mr5", |r| {
        if r.n == 1 {
            Reply::ok("mr5-1").h("Cache-Control", "max-age=1, must-revalidate")
        } else {
            Reply::new(500, "origin error")
        }
    });
    let p = proxy(&o);
    get(&p, "/mrd");
    get(&p, "/ncd");
    get(&p, "/mr5");
    sleep_ms(1600);
    // §4.2.4: no stale answer where must-revalidate forbids it, also when the origin errs.
    let r = get(&p, "/mr5");
    assert!(
        r.status == 500 || r.status == 504,
        "stale must-revalidate, origin answering 500: expected its 500 (or 504), got {}",
        r.summary()
    );
    assert!(
        !r.body_str().contains("mr5-1"),
        "stale body served: {}",
        r.summary()
    );
    o.kill();
    // §5.2.2.4: a no-cache entry that cannot be validated is not served either.
    let r = get(&p, "/ncd");
    assert!(
        r.status >= 500 && !r.body_str().contains("ncd-1"),
        "no-cache entry, origin down: {}",
        r.summary()
    );
    let r = get(&p, "/mrd");
    assert_eq!(
        r.status,
        504,
        "stale must-revalidate, origin down: {}",
        r.summary()
    );
    assert!(
        !r.body_str().contains("mrd-1"),
        "stale body served: {}",
        r.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Invalidation (§4.4)

/// §4.4: a POST, PUT, DELETE or PATCH answered 2xx/3xx evicts the target URI, and the
/// same-host URIs in its Location and Content-Location.
#[test]
fn unsafe_methods_invalidate() {
    let o = Origin::start();
    let paths = [
        "/inv/post",
        "/inv/put",
        "/inv/delete",
        "/inv/patch",
        "/inv/loc",
        "/inv/cloc",
        "/inv/src",
    ];
    for path in paths {
        o.on(path, move |r| {
            if r.method == "GET" {
                Reply::ok(format!("g-{}", r.n)).h("Cache-Control", "max-age=3600")
            } else if r.path == "/inv/src" {
                Reply::new(201, "created")
                    .h("Location", "/inv/loc")
                    .h("Content-Location", &format!("http://{HOST}/inv/cloc"))
            } else {
                Reply::ok("done")
            }
        });
    }
    let p = proxy(&o);
    for path in paths {
        expect(&get(&p, path), 200, "g-1", &["MISS"], path);
        expect(&get(&p, path), 200, "g-1", &["HIT"], path);
    }
    let mut failures = Vec::new();
    for (method, path) in [
        ("POST", "/inv/post"),
        ("PUT", "/inv/put"),
        ("DELETE", "/inv/delete"),
        ("PATCH", "/inv/patch"),
        ("POST", "/inv/src"),
    ] {
        let r = send(&p, method, path, &[], b"data");
        if !(200..400).contains(&r.status) {
            failures.push(format!("{method} {path}: {}", r.summary()));
        }
    }
    for path in paths {
        let r = get(&p, path);
        // A fresh fetch: the origin's numbering moved past the stored "g-1".
        if r.body_str() == "g-1" || !r.body_str().starts_with("g-") || xcache(&r) != "MISS" {
            failures.push(format!(
                "GET {path} after the invalidation: {}",
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// §4.4 (cache-tests invalidate-POST-failed, "optimal"): invalidation is required only for a
/// non-error answer; an optimal cache keeps the entry when the POST failed with a 500.
#[test]
fn failed_unsafe_request_does_not_invalidate() {
    let o = Origin::start();
    o.on("/inv/failed", |r| {
        if r.method == "GET" {
            Reply::ok(format!("g-{}", r.n)).h("Cache-Control", "max-age=3600")
        } else {
            Reply::new(500, "failed")
        }
    });
    let p = proxy(&o);
    get(&p, "/inv/failed");
    let r = send(&p, "POST", "/inv/failed", &[], b"abc");
    assert_eq!(r.status, 500, "{}", r.summary());
    expect(
        &get(&p, "/inv/failed"),
        200,
        "g-1",
        &["HIT"],
        "GET after a failed POST",
    );
}

/// §4.4: "including methods whose safety is unknown": an unknown method answered 2xx
/// invalidates too (cache-tests invalidate-M-SEARCH).
#[test]
fn unknown_method_invalidates() {
    let o = Origin::start();
    o.on("/inv/unknown", |r| {
        if r.method == "GET" {
            Reply::ok(format!("g-{}", r.n)).h("Cache-Control", "max-age=3600")
        } else {
            Reply::ok("done")
        }
    });
    let p = proxy(&o);
    get(&p, "/inv/unknown");
    expect(&get(&p, "/inv/unknown"), 200, "g-1", &["HIT"], "stored");
    let r = send(&p, "M-SEARCH", "/inv/unknown", &[], b"abc");
    assert_eq!(r.status, 200, "M-SEARCH: {}", r.summary());
    let r = get(&p, "/inv/unknown");
    expect(&r, 200, "g-3", &["MISS"], "GET after M-SEARCH");
}

/// §4.3.2 / §3: a client's conditional request on a miss is forwarded and the origin's 304
/// reaches the client, but a 304 is not a complete response to store: the next plain GET gets
/// the full 200.
#[test]
fn conditional_miss_304_is_passed_on_and_not_stored() {
    let o = Origin::start();
    o.on("/cm", |r| {
        if r.header("if-none-match") == Some("\"z1\"") {
            Reply::not_modified()
                .h("Cache-Control", "max-age=3600")
                .h("ETag", "\"z1\"")
        } else {
            Reply::ok(format!("cm-{}", r.n))
                .h("Cache-Control", "max-age=3600")
                .h("ETag", "\"z1\"")
        }
    });
    let p = proxy(&o);
    let r = get_h(&p, "/cm", &[("If-None-Match", "\"z1\"")]);
    assert_eq!(r.status, 304, "conditional miss: {}", r.summary());
    let r = get(&p, "/cm");
    assert_eq!(r.status, 200, "plain GET after a 304: {}", r.summary());
    assert!(
        r.body_str().starts_with("cm-"),
        "plain GET after a 304: {}",
        r.summary()
    );
}

/// §4: the key is the target URI, so an absolute-form request and an origin-form one with the
/// same Host share the entry.
#[test]
fn absolute_form_and_origin_form_share_the_entry() {
    let o = Origin::start();
    o.on(
        "/abs",
        numbered("abs", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy_with(
        &o,
        r#"{ size = "64MiB", max_object = "8MiB" }"#,
        &format!("server_names = [\"{HOST}\"]"),
    );
    get(&p, "/abs");
    let mut c = Conn::connect(p.addr("web"));
    c.send(format!("GET http://{HOST}/abs HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    let r = c.read_response();
    expect(&r, 200, "abs-1", &["HIT"], "absolute-form GET");
}

/// `[pool.NAME.cache]` caches the pool's answers like a route's `cache`.
#[test]
fn pool_cache_section() {
    let o = Origin::start();
    o.on("/pc", numbered("pc", &[("Cache-Control", "max-age=3600")]));
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]

[pool.app.cache]
size = "16MiB"
max_object = "1MiB"
"#;
    let p = Proxy::start_with(&cfg, &[("app", o.addr_string())]);
    expect(&get(&p, "/pc"), 200, "pc-1", &["MISS"], "first GET");
    expect(&get(&p, "/pc"), 200, "pc-1", &["HIT"], "second GET");
}

// ---------------------------------------------------------------------------------------------
// Coalescing, PURGE, ctl

/// Concurrent misses for one URL are collapsed: 20 clients, an origin taking 500 ms, one origin
/// request, the same body for all.
#[test]
fn concurrent_misses_are_coalesced() {
    let o = Origin::start();
    o.on("/slow", |r| {
        Reply::ok(format!("slow-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .delay(Duration::from_millis(500))
    });
    let p = proxy(&o);
    let addr = p.addr("web");
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                b.wait();
                c.send(&req("GET", "/slow", HOST, &[], b""));
                c.read_response()
            })
        })
        .collect();
    let rs: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let bad: Vec<String> = rs
        .iter()
        .filter(|r| r.status != 200 || r.body_str() != "slow-1")
        .map(|r| r.summary())
        .collect();
    assert_eq!(
        o.count("/slow"),
        1,
        "origin requests for 20 concurrent GETs"
    );
    assert!(bad.is_empty(), "answers other than 200 slow-1: {bad:?}");
}

/// Coalescing must not share a response that turns out not storable: 5 concurrent GETs whose
/// answers are `private` each get their own answer (§5.2.2.7: a shared cache MUST NOT store,
/// so MUST NOT reuse, a private response).
#[test]
fn coalescing_never_shares_a_private_response() {
    let o = Origin::start();
    o.on("/mine", |r| {
        Reply::ok(format!("mine-{}", r.n))
            .h("Cache-Control", "private, max-age=3600")
            .delay(Duration::from_millis(300))
    });
    let p = proxy(&o);
    let addr = p.addr("web");
    let barrier = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                b.wait();
                c.send(&req("GET", "/mine", HOST, &[], b""));
                c.read_response()
            })
        })
        .collect();
    let mut bodies: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().body_str())
        .collect();
    bodies.sort();
    let mut distinct = bodies.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        5,
        "one private answer went to several clients: {bodies:?} (origin saw {})",
        o.count("/mine")
    );
}

/// Coalesced waiters get a large chunked body intact (10 clients, 1 MiB, origin 300 ms late).
#[test]
fn coalesced_waiters_get_a_large_body_intact() {
    let o = Origin::start();
    let len = 1 << 20;
    o.on("/bigslow", move |_| {
        Reply::ok(pattern(0, len))
            .h("Cache-Control", "max-age=3600")
            .delay(Duration::from_millis(300))
            .chunked()
    });
    let p = proxy(&o);
    let addr = p.addr("web");
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                b.wait();
                c.send(&req("GET", "/bigslow", HOST, &[], b""));
                c.read_response()
            })
        })
        .collect();
    let want = pattern_sha256(len as u64);
    let bad: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|r| r.status != 200 || sha256_hex(&r.body) != want)
        .map(|r| format!("{} with {} body bytes", r.head.start_line, r.body.len()))
        .collect();
    assert!(bad.is_empty(), "broken answers: {bad:?}");
    assert_eq!(
        o.count("/bigslow"),
        1,
        "origin requests for 10 concurrent GETs"
    );
}

/// A coalesced fetch survives its first client going away: the waiter still gets the answer.
#[test]
fn coalesced_fetch_survives_the_first_client_leaving() {
    let o = Origin::start();
    o.on("/left", |r| {
        Reply::ok(format!("left-{}", r.n))
            .h("Cache-Control", "max-age=3600")
            .delay(Duration::from_millis(500))
    });
    let p = proxy(&o);
    let mut first = Conn::connect(p.addr("web"));
    first.send(&req("GET", "/left", HOST, &[], b""));
    sleep_ms(100);
    let waiter = thread::spawn({
        let addr = p.addr("web");
        move || {
            let mut c = Conn::connect(addr);
            c.send(&req("GET", "/left", HOST, &[], b""));
            c.try_read_response()
        }
    });
    sleep_ms(100);
    drop(first);
    let r = waiter.join().unwrap();
    let r = r.unwrap_or_else(|e| panic!("the waiter got no answer: {e}"));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.body_str().starts_with("left-"), "{}", r.summary());
}

/// Coalesced requests for an answer that is not stored (500 without freshness, `no-store`)
/// all get an answer, none hangs.
#[test]
fn coalesced_requests_for_unstorable_answers_all_complete() {
    let o = Origin::start();
    o.on("/err", |r| {
        Reply::new(500, format!("err-{}", r.n)).delay(Duration::from_millis(300))
    });
    o.on("/nostore", |r| {
        Reply::ok(format!("nostore-{}", r.n))
            .h("Cache-Control", "no-store")
            .delay(Duration::from_millis(300))
    });
    let p = proxy(&o);
    let addr = p.addr("web");
    let mut failures = Vec::new();
    for (path, status) in [("/err", 500), ("/nostore", 200)] {
        let barrier = Arc::new(Barrier::new(5));
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    c.set_read_timeout(Duration::from_secs(5));
                    b.wait();
                    c.send(&req("GET", path, HOST, &[], b""));
                    c.try_read_response()
                })
            })
            .collect();
        for h in handles {
            match h.join().unwrap() {
                Ok(r) if r.status == status => {}
                Ok(r) => failures.push(format!("{path}: {}", r.summary())),
                Err(e) => failures.push(format!("{path}: no answer ({e})")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `PURGE /path` from an allowed address evicts the entry (200), 404 when nothing is stored.
#[test]
fn purge_method_evicts() {
    let o = Origin::start();
    o.on("/pg", numbered("pg", &[("Cache-Control", "max-age=3600")]));
    let p = proxy(&o);
    get(&p, "/pg");
    expect(&get(&p, "/pg"), 200, "pg-1", &["HIT"], "stored");
    let r = send(&p, "PURGE", "/pg", &[], b"");
    assert_eq!(r.status, 200, "PURGE of a stored entry: {}", r.summary());
    expect(&get(&p, "/pg"), 200, "pg-2", &["MISS"], "GET after PURGE");
    let r = send(&p, "PURGE", "/never-stored", &[], b"");
    assert_eq!(r.status, 404, "PURGE of nothing: {}", r.summary());
    assert_eq!(o.count("/never-stored"), 0, "PURGE reached the origin");
}

/// PURGE evicts every Vary variant of the URL.
#[test]
fn purge_evicts_every_variant() {
    let o = Origin::start();
    o.on("/pv", |r| {
        Reply::ok(format!("{}-{}", r.header("x-v").unwrap_or("none"), r.n))
            .h("Cache-Control", "max-age=3600")
            .h("Vary", "X-V")
    });
    let p = proxy(&o);
    for v in ["a", "b"] {
        get_h(&p, "/pv", &[("X-V", v)]);
        let r = get_h(&p, "/pv", &[("X-V", v)]);
        assert_eq!(xcache(&r), "HIT", "variant {v}: {}", r.summary());
    }
    let r = send(&p, "PURGE", "/pv", &[], b"");
    assert_eq!(r.status, 200, "PURGE: {}", r.summary());
    for v in ["a", "b"] {
        let r = get_h(&p, "/pv", &[("X-V", v)]);
        assert_eq!(
            xcache(&r),
            "MISS",
            "variant {v} after PURGE: {}",
            r.summary()
        );
    }
}

/// PURGE from a client outside `purge_from` is refused with 403 and evicts nothing.
#[test]
fn purge_outside_purge_from_is_403() {
    let o = Origin::start();
    o.on("/pg", numbered("pg", &[("Cache-Control", "max-age=3600")]));
    let p = proxy_with(
        &o,
        r#"{ size = "64MiB", max_object = "8MiB" }"#,
        r#"purge_from = ["10.0.0.0/8"]"#,
    );
    get(&p, "/pg");
    let r = send(&p, "PURGE", "/pg", &[], b"");
    assert_eq!(r.status, 403, "PURGE from 127.0.0.1: {}", r.summary());
    expect(
        &get(&p, "/pg"),
        200,
        "pg-1",
        &["HIT"],
        "GET after a refused PURGE",
    );
    assert_eq!(o.count("/pg"), 1);
}

/// `ctl 'purge URL'`, `ctl 'purge prefix URL'` evict; `ctl 'show cache'` lists entries and bytes.
#[test]
fn ctl_purge_and_show_cache() {
    let o = Origin::start();
    for path in ["/one", "/dir/a", "/dir/b", "/other"] {
        o.on(path, move |r| {
            Reply::ok(format!("{path}-{}", r.n)).h("Cache-Control", "max-age=3600")
        });
    }
    let p = proxy(&o);
    for path in ["/one", "/dir/a", "/dir/b", "/other"] {
        get(&p, path);
    }
    let (code, out, err) = p.ctl_full("show cache");
    assert_eq!(code, 0, "show cache: {out} {err}");
    let lower = out.to_lowercase();
    assert!(
        lower.contains("entr") && lower.contains("byte"),
        "show cache does not show entries and bytes:\n{out}"
    );
    let (code, out, err) = p.ctl_full(&format!("purge http://{HOST}/one"));
    assert_eq!(code, 0, "purge URL: {out} {err}");
    let (code, out, err) = p.ctl_full(&format!("purge prefix http://{HOST}/dir/"));
    assert_eq!(code, 0, "purge prefix: {out} {err}");
    let mut failures = Vec::new();
    for (path, cache) in [
        ("/one", "MISS"),
        ("/dir/a", "MISS"),
        ("/dir/b", "MISS"),
        ("/other", "HIT"),
    ] {
        let r = get(&p, path);
        if xcache(&r) != cache {
            failures.push(format!("{path}: expected {cache}, got {}", r.summary()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `ctl purge` names a URL exactly (query included) and a prefix only on its host.
#[test]
fn ctl_purge_is_exact_per_query_and_host() {
    let o = Origin::start();
    o.on("/q", |r| {
        Reply::ok(format!("{}-{}", r.target, r.n)).h("Cache-Control", "max-age=3600")
    });
    o.on("/dir/x", |r| {
        Reply::ok(format!("x-{}", r.n)).h("Cache-Control", "max-age=3600")
    });
    let p = proxy(&o);
    let get_host = |path: &str, host: &str| {
        let mut c = Conn::connect(p.addr("web"));
        c.send(&req("GET", path, host, &[], b""));
        c.read_response()
    };
    for (path, host) in [
        ("/q?a=1", HOST),
        ("/q?a=2", HOST),
        ("/dir/x", HOST),
        ("/dir/x", "other.test"),
    ] {
        get_host(path, host);
    }
    let (code, out, err) = p.ctl_full(&format!("purge http://{HOST}/q?a=1"));
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = p.ctl_full(&format!("purge prefix http://{HOST}/dir/"));
    assert_eq!(code, 0, "{out} {err}");
    let mut failures = Vec::new();
    for (path, host, cache) in [
        ("/q?a=1", HOST, "MISS"),
        ("/q?a=2", HOST, "HIT"),
        ("/dir/x", HOST, "MISS"),
        ("/dir/x", "other.test", "HIT"),
    ] {
        let r = get_host(path, host);
        if xcache(&r) != cache {
            failures.push(format!(
                "{host}{path}: expected {cache}, got {}",
                r.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With 2 shards (each its own cache; the one test that is not single-shard), a PUT, a `ctl
/// purge` and a `PURGE` still evict the URL everywhere: the client sees one cache (§4.4). 16
/// kept-open connections spread over the shards; after each eviction, exactly as many of
/// them miss as there were shards holding a copy.
#[test]
fn evictions_reach_every_shard() {
    let o = Origin::start();
    o.on("/everywhere", |r| {
        if r.method == "GET" {
            Reply::ok(format!("e-{}", r.n)).h("Cache-Control", "max-age=3600")
        } else {
            Reply::ok("done")
        }
    });
    let cfg = daemon(2)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
purge_from = ["127.0.0.1/32"]

  [[http.route]]
  pool = "app"
  cache = { size = "64MiB", max_object = "8MiB" }

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]
"#;
    let p = Proxy::start_with(&cfg, &[("app", o.addr_string())]);
    let mut conns: Vec<Conn> = (0..16).map(|_| Conn::connect(p.addr("web"))).collect();
    let misses = |conns: &mut [Conn]| -> usize {
        conns
            .iter_mut()
            .map(|c| {
                c.send(&req("GET", "/everywhere", HOST, &[], b""));
                c.read_response()
            })
            .filter(|r| xcache(r) != "HIT")
            .count()
    };
    let holders = misses(&mut conns);
    assert_eq!(holders, 2, "16 connections did not reach both shards");
    let mut failures = Vec::new();
    for what in ["PUT", "ctl purge", "PURGE"] {
        match what {
            "PUT" => {
                let r = send(&p, "PUT", "/everywhere", &[], b"new");
                assert_eq!(r.status, 200, "PUT: {}", r.summary());
            }
            "ctl purge" => {
                let (code, out) = p.ctl(&format!("purge http://{HOST}/everywhere"));
                assert_eq!(code, 0, "ctl purge: {out}");
            }
            _ => {
                let r = send(&p, "PURGE", "/everywhere", &[], b"");
                assert!(r.status == 200 || r.status == 404, "PURGE: {}", r.summary());
            }
        }
        let m = misses(&mut conns);
        if m != holders {
            failures.push(format!(
                "after {what}: {m} of 16 connections missed, {holders} shard(s) held a copy"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Bodies, HEAD, Range

/// A chunked origin answer is stored and served from the cache with a Content-Length.
#[test]
fn chunked_origin_response_is_cached_with_content_length() {
    let o = Origin::start();
    let body = pattern(0, 20_000);
    let b = body.clone();
    o.on("/chunked", move |_| {
        Reply::ok(b.clone())
            .h("Cache-Control", "max-age=3600")
            .chunked()
    });
    let p = proxy(&o);
    let r1 = get(&p, "/chunked");
    assert_eq!(r1.body, body, "MISS body: {}", r1.summary());
    let r2 = get(&p, "/chunked");
    assert_eq!(xcache(&r2), "HIT", "{}", r2.summary());
    assert_eq!(r2.body, body, "HIT body differs");
    assert_eq!(
        r2.framing,
        client::Framing::Length,
        "cached answer not framed by Content-Length: {}",
        r2.summary()
    );
    assert_eq!(r2.header("content-length"), Some("20000"));
    assert!(
        r2.header("transfer-encoding").is_none(),
        "Transfer-Encoding kept on a Content-Length answer: {}",
        r2.summary()
    );
}

/// §3.3, §3.4: an answer cut short by the origin (Content-Length not reached, chunked body
/// without its last chunk) is incomplete and is not stored as if complete.
#[test]
fn truncated_origin_answers_are_not_stored() {
    let o = Origin::start();
    o.on("/cut-len", |r| {
        let reply = Reply::ok(pattern(0, 10_000)).h("Cache-Control", "max-age=3600");
        if r.n == 1 {
            reply.truncate(5_000)
        } else {
            reply
        }
    });
    o.on("/cut-chunked", |r| {
        let reply = Reply::ok(pattern(0, 10_000))
            .h("Cache-Control", "max-age=3600")
            .chunked();
        if r.n == 1 {
            reply.truncate(5_000)
        } else {
            reply
        }
    });
    let p = proxy(&o);
    let mut failures = Vec::new();
    for path in ["/cut-len", "/cut-chunked"] {
        let mut c = Conn::connect(p.addr("web"));
        c.set_read_timeout(Duration::from_secs(5));
        c.send(&req("GET", path, HOST, &[], b""));
        if let Ok(r) = c.try_read_response() {
            if r.status == 200 && r.body == pattern(0, 10_000) {
                failures.push(format!(
                    "{path}: a truncated answer reached the client whole?"
                ));
            }
        }
        drop(c);
        sleep_ms(100);
        let mut c = Conn::connect(p.addr("web"));
        c.set_read_timeout(Duration::from_secs(5));
        c.send(&req("GET", path, HOST, &[], b""));
        match c.try_read_response() {
            Ok(r) if r.status == 200 && r.body == pattern(0, 10_000) => {}
            Ok(r) => failures.push(format!(
                "{path} after a truncated answer: {} with {} body bytes, X-Cache {}",
                r.head.start_line,
                r.body.len(),
                xcache(&r)
            )),
            Err(e) => failures.push(format!("{path} after a truncated answer: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cache's `size` bounds what it holds: least recently used entries make room, and `show
/// cache` never reports more bytes than the size.
#[test]
fn cache_size_bounds_memory_with_lru_eviction() {
    let o = Origin::start();
    for i in 0..6 {
        o.on(&format!("/lru{i}"), move |_| {
            Reply::ok(pattern(i, 300 * 1024)).h("Cache-Control", "max-age=3600")
        });
    }
    let p = proxy_with(
        &o,
        r#"{ size = "1MiB", max_object = "512KiB" }"#,
        r#"purge_from = ["127.0.0.1/32"]"#,
    );
    for i in 0..6 {
        let r = get(&p, &format!("/lru{i}"));
        assert_eq!(r.body, pattern(i, 300 * 1024), "/lru{i}");
    }
    let r = get(&p, "/lru5");
    assert_eq!(
        xcache(&r),
        "HIT",
        "most recent entry evicted: {}",
        r.summary()
    );
    assert_eq!(r.body, pattern(5, 300 * 1024));
    let r = get(&p, "/lru0");
    assert_eq!(
        xcache(&r),
        "MISS",
        "1.8 MB stored in a 1 MiB cache: {}",
        r.summary()
    );
    let (code, out) = p.ctl("show cache");
    assert_eq!(code, 0, "{out}");
    // A header line naming the columns, then one line per zone.
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if let Some(col) = header.iter().position(|c| *c == "bytes") {
        for l in lines {
            let bytes: u64 = l
                .split_whitespace()
                .nth(col)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no bytes column in {l:?}:\n{out}"));
            assert!(
                bytes <= 1 << 20,
                "cache holds {bytes} bytes > 1 MiB:\n{out}"
            );
        }
    }
}

/// A 1 MiB object is served intact from the cache (SHA-256 compared).
#[test]
fn one_mib_object_intact_from_cache() {
    let o = Origin::start();
    let len = 1 << 20;
    o.on("/big", move |_| {
        Reply::ok(pattern(0, len)).h("Cache-Control", "max-age=3600")
    });
    let p = proxy(&o);
    let want = pattern_sha256(len as u64);
    let r1 = get(&p, "/big");
    assert_eq!(
        sha256_hex(&r1.body),
        want,
        "MISS body ({} bytes)",
        r1.body.len()
    );
    let r2 = get(&p, "/big");
    assert_eq!(xcache(&r2), "HIT", "{}", r2.summary());
    assert_eq!(
        sha256_hex(&r2.body),
        want,
        "HIT body ({} bytes)",
        r2.body.len()
    );
    assert_eq!(o.count("/big"), 1);
}

/// Objects over `max_object` (with a Content-Length or chunked) reach the client intact and
/// are not stored.
#[test]
fn objects_over_max_object_are_not_stored() {
    let o = Origin::start();
    let len = 300 * 1024;
    o.on("/over", move |_| {
        Reply::ok(pattern(0, len)).h("Cache-Control", "max-age=3600")
    });
    o.on("/over-chunked", move |_| {
        Reply::ok(pattern(0, len))
            .h("Cache-Control", "max-age=3600")
            .chunked()
    });
    o.on("/under", move |_| {
        Reply::ok(pattern(0, 100 * 1024)).h("Cache-Control", "max-age=3600")
    });
    let p = proxy_with(
        &o,
        r#"{ size = "64MiB", max_object = "256KiB" }"#,
        r#"purge_from = ["127.0.0.1/32"]"#,
    );
    let want = pattern_sha256(len as u64);
    let mut failures = Vec::new();
    for path in ["/over", "/over-chunked"] {
        for i in 1..=2 {
            let mut c = Conn::connect(p.addr("web"));
            c.set_read_timeout(Duration::from_secs(5));
            c.send(&req("GET", path, HOST, &[], b""));
            let r = match c.try_read_response() {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!(
                        "{path} #{i}: no answer ({e}); origin saw {} requests",
                        o.count(path)
                    ));
                    continue;
                }
            };
            if r.status != 200 || sha256_hex(&r.body) != want {
                failures.push(format!(
                    "{path} #{i}: {} bytes, status {}, body differs",
                    r.body.len(),
                    r.status
                ));
            }
        }
        if o.count(path) == 1 && failures.is_empty() {
            failures.push(format!("{path} over max_object was stored"));
        }
    }
    get(&p, "/under");
    let r = get(&p, "/under");
    if xcache(&r) != "HIT" {
        failures.push(format!("/under (100 KiB) not stored: {}", r.summary()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Concurrent GETs for an object over `max_object` (Content-Length and chunked; the origin
/// 300 ms late) all get it intact, none hangs.
#[test]
fn concurrent_requests_for_objects_over_max_object() {
    let o = Origin::start();
    let len = 300 * 1024;
    o.on("/cover", move |_| {
        Reply::ok(pattern(0, len))
            .h("Cache-Control", "max-age=3600")
            .delay(Duration::from_millis(300))
    });
    o.on("/cover-chunked", move |_| {
        Reply::ok(pattern(0, len))
            .h("Cache-Control", "max-age=3600")
            .delay(Duration::from_millis(300))
            .chunked()
    });
    let p = proxy_with(
        &o,
        r#"{ size = "64MiB", max_object = "256KiB" }"#,
        r#"purge_from = ["127.0.0.1/32"]"#,
    );
    let addr = p.addr("web");
    let want = pattern_sha256(len as u64);
    let mut failures = Vec::new();
    for path in ["/cover", "/cover-chunked"] {
        let barrier = Arc::new(Barrier::new(5));
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    c.set_read_timeout(Duration::from_secs(5));
                    b.wait();
                    c.send(&req("GET", path, HOST, &[], b""));
                    c.try_read_response()
                })
            })
            .collect();
        for h in handles {
            match h.join().unwrap() {
                Ok(r) if r.status == 200 && sha256_hex(&r.body) == want => {}
                Ok(r) => failures.push(format!(
                    "{path}: {} with {} body bytes",
                    r.head.start_line,
                    r.body.len()
                )),
                Err(e) => failures.push(format!(
                    "{path}: no answer ({e}); origin saw {}",
                    o.count(path)
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A HEAD on a stale entry revalidates it like a GET would, and leaves it whole for GETs.
#[test]
fn head_on_a_stale_entry() {
    let o = Origin::start();
    o.on(
        "/hs",
        etag_script("hs", "\"h1\"", "max-age=1", "max-age=3600"),
    );
    let p = proxy(&o);
    get(&p, "/hs");
    sleep_ms(1600);
    let h = send(&p, "HEAD", "/hs", &[], b"");
    assert_eq!(h.status, 200, "HEAD on a stale entry: {}", h.summary());
    let r = get(&p, "/hs");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.body_str(), "hs-1", "GET after HEAD: {}", r.summary());
}

/// Pipelined GETs (a HIT, a MISS, a HIT) on one connection are answered in order.
#[test]
fn pipelined_hits_and_misses_answer_in_order() {
    let o = Origin::start();
    for path in ["/p1", "/p2"] {
        o.on(path, move |r| {
            Reply::ok(format!("{path}-{}", r.n))
                .h("Cache-Control", "max-age=3600")
                .delay(Duration::from_millis(if path == "/p2" { 200 } else { 0 }))
        });
    }
    let p = proxy(&o);
    get(&p, "/p1");
    let mut c = Conn::connect(p.addr("web"));
    let mut bytes = req("GET", "/p1", HOST, &[], b"");
    bytes.extend(req("GET", "/p2", HOST, &[], b""));
    bytes.extend(req("GET", "/p1", HOST, &[], b""));
    c.send(&bytes);
    let got: Vec<String> = (0..3).map(|_| c.read_response().body_str()).collect();
    assert_eq!(got, ["/p1-1", "/p2-1", "/p1-1"]);
}

/// RFC 9110 §9.3.2 / RFC 9111 §4: a HEAD after a stored GET is a HIT with the GET's headers and
/// no body (the next response on the connection is intact).
#[test]
fn head_after_get_is_hit_without_body() {
    let o = Origin::start();
    o.on(
        "/hd",
        numbered("head-body", &[("Cache-Control", "max-age=3600")]),
    );
    let p = proxy(&o);
    get(&p, "/hd");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("HEAD", "/hd", HOST, &[], b""));
    let h = c.read_head_response();
    assert_eq!(h.status, 200, "{}", h.summary());
    assert_eq!(xcache(&h), "HIT", "{}", h.summary());
    if let Some(cl) = h.header("content-length") {
        assert_eq!(cl, "11", "HEAD Content-Length differs from the GET's");
    }
    c.send(&req("GET", "/hd", HOST, &[], b""));
    let r = c.read_response();
    expect(
        &r,
        200,
        "head-body-1",
        &["HIT"],
        "GET after HEAD on one connection",
    );
    assert_eq!(o.count("/hd"), 1);
}

/// A HEAD that misses must not leave an empty body in the cache for later GETs.
#[test]
fn head_miss_does_not_store_an_empty_body() {
    let o = Origin::start();
    o.on("/hm", numbered("hm", &[("Cache-Control", "max-age=3600")]));
    let p = proxy(&o);
    let h = send(&p, "HEAD", "/hm", &[], b"");
    assert_eq!(h.status, 200, "{}", h.summary());
    let r = get(&p, "/hm");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        r.body_str().starts_with("hm-"),
        "GET after HEAD got {}",
        r.summary()
    );
}

/// §3.3, §3.4: a 206 to a Range request is not served to a later full GET; a Range request on
/// a stored full answer gets the right bytes (206) or the whole answer (200).
#[test]
fn range_requests_and_partial_content() {
    let o = Origin::start();
    let full = "0123456789abcdefghij";
    o.on("/rng", move |r| match r.header("range") {
        Some("bytes=0-4") => Reply::new(206, &full[..5])
            .h("Content-Range", &format!("bytes 0-4/{}", full.len()))
            .h("Cache-Control", "max-age=3600"),
        _ => Reply::ok(full).h("Cache-Control", "max-age=3600"),
    });
    let p = proxy(&o);
    let r = get_h(&p, "/rng", &[("Range", "bytes=0-4")]);
    let partial_ok =
        (r.status == 206 && r.body_str() == "01234") || (r.status == 200 && r.body_str() == full);
    assert!(partial_ok, "Range on a miss: {}", r.summary());
    let r = get(&p, "/rng");
    assert_eq!(
        r.status,
        200,
        "full GET after a Range request: {}",
        r.summary()
    );
    assert_eq!(r.body_str(), full, "full GET after a Range request");
    let r = get(&p, "/rng");
    expect(&r, 200, full, &["HIT"], "full GET again");
    let r = get_h(&p, "/rng", &[("Range", "bytes=10-14")]);
    let ok = (r.status == 206
        && r.body_str() == "abcde"
        && r.header("content-range") == Some("bytes 10-14/20"))
        || (r.status == 200 && r.body_str() == full);
    assert!(ok, "Range on a stored answer: {}", r.summary());
    // RFC 9110 §15.5.17: an unsatisfiable range gets 416 with `Content-Range: bytes */20` (or
    // the Range is ignored: 200).
    let r = get_h(&p, "/rng", &[("Range", "bytes=100-200")]);
    let ok = (r.status == 416 && r.header("content-range") == Some("bytes */20"))
        || (r.status == 200 && r.body_str() == full);
    assert!(
        ok,
        "unsatisfiable Range on a stored answer: {}",
        r.summary()
    );
}

#[test]
fn http_date_formats_known_instants() {
    use common::origin::format_http_date;
    assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(
        format_http_date(784_111_777),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(
        format_http_date(951_782_400),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}
