//! Balancing methods through the real binary with 2 shards, against backends that answer with
//! their own name: each method's split within stated bounds over a few thousand requests on
//! many connections (so both shards serve), `by_traffic` against a server with 10x bigger
//! answers, consistent hashing (same key, same server, on every shard; only the share of a
//! removed or added server moves; MySQL pools by client address), backups used only when every
//! primary is out, and `max_connections` across shards with its queue and `queue_timeout` 503.

mod common;
mod mysql_support;

use common::*;
use std::collections::HashMap;
use std::thread;
use std::time::Duration;

/// A 2-shard daemon with frontend `web` and pool `app` given by `pool` (the `[pool.app]` body,
/// with `{NAME}` for each backend's address).
fn start(pool: &str, backends: &[&Backend]) -> Proxy {
    let cfg = daemon(2)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
"# + pool;
    let vars: Vec<(&str, String)> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr_string()))
        .collect();
    Proxy::start_with(&cfg, &vars)
}

/// `threads` clients, each sending `per_thread` GETs for `path`, a new connection every 10
/// requests; the count of answers per backend name. Any status but 200 fails the test.
fn spread(p: &Proxy, threads: usize, per_thread: usize, path: &str) -> HashMap<String, usize> {
    let addr = p.addr("web");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.to_string();
            thread::spawn(move || {
                let mut got: HashMap<String, usize> = HashMap::new();
                let mut c = Conn::connect(addr);
                for n in 0..per_thread {
                    if n % 10 == 9 {
                        c = Conn::connect(addr);
                    }
                    let r = c.get(&path, "h");
                    assert_eq!(r.status, 200, "{}", r.summary());
                    *got.entry(r.backend().to_string()).or_default() += 1;
                }
                got
            })
        })
        .collect();
    let mut total = HashMap::new();
    for w in workers {
        for (k, v) in w.join().expect("client thread") {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

fn share(got: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = got.values().sum();
    *got.get(name).unwrap_or(&0) as f64 / total as f64
}

/// Weights 1:2:3 with `method`: each server's share of 3000 requests within `tolerance` of
/// 1/6, 2/6, 3/6.
fn weighted_split(method: &str, tolerance: f64) {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let p = start(
        &format!(
            r#"balance = "{method}"
servers = [
  {{ name = "a", addr = "{{a}}", weight = 1 }},
  {{ name = "b", addr = "{{b}}", weight = 2 }},
  {{ name = "c", addr = "{{c}}", weight = 3 }},
]
"#
        ),
        &[&a, &b, &c],
    );
    let got = spread(&p, 6, 500, "/");
    for (name, want) in [("a", 1.0 / 6.0), ("b", 2.0 / 6.0), ("c", 3.0 / 6.0)] {
        let s = share(&got, name);
        assert!(
            (s - want).abs() <= tolerance,
            "{method}: {name} got {s:.3}, want {want:.3} ± {tolerance}: {got:?}"
        );
    }
}

#[test]
fn round_robin_splits_by_weight_on_two_shards() {
    weighted_split("round_robin", 0.02);
}

#[test]
fn by_requests_splits_by_weight_on_two_shards() {
    weighted_split("by_requests", 0.02);
}

#[test]
fn p2c_splits_by_weight_on_two_shards() {
    // Mostly idle servers: the first drawn wins, drawn by weight. On a loaded machine the
    // servers are not idle and p2c evens out their in-flight counts, which flattens the split
    // (a CI run beside a benchmark measured c at 0.443): the tolerance allows for that.
    weighted_split("p2c", 0.1);
}

#[test]
fn by_traffic_sends_fewer_requests_to_the_server_with_bigger_answers() {
    let big = Backend::start_with(
        "big",
        BackendOpts {
            body_size: Some(20_000),
            ..Default::default()
        },
    );
    let small = Backend::start_with(
        "small",
        BackendOpts {
            body_size: Some(2_000),
            ..Default::default()
        },
    );
    let p = start(
        r#"balance = "by_traffic"
servers = [ { name = "big", addr = "{big}" }, { name = "small", addr = "{small}" } ]
"#,
        &[&big, &small],
    );
    let got = spread(&p, 6, 400, "/");
    let ratio = got["small"] as f64 / got["big"] as f64;
    // Bytes per exchange, heads included, are about 20.3k against 2.3k: about 8.8 to 1.
    assert!((7.0..=11.0).contains(&ratio), "{got:?}: ratio {ratio:.2}");
}

#[test]
fn least_time_avoids_the_slow_server() {
    let slow = Backend::start_with(
        "slow",
        BackendOpts {
            delay: Duration::from_millis(40),
            ..Default::default()
        },
    );
    let fast = Backend::start("fast");
    let p = start(
        r#"balance = "least_time"
servers = [ { name = "slow", addr = "{slow}" }, { name = "fast", addr = "{fast}" } ]
"#,
        &[&slow, &fast],
    );
    let got = spread(&p, 4, 200, "/");
    // The slow server is measured, then tried again only as its average decays.
    assert!(share(&got, "fast") > 0.9, "{got:?}");
}

/// The server for each of `keys` users (header `X-User`), each asked on a new connection.
fn owners(p: &Proxy, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let mut c = Conn::connect(p.addr("web"));
            c.send(&req(
                "GET",
                "/",
                "h",
                &[("X-User", &format!("user-{k}"))],
                b"",
            ));
            let r = c.read_response();
            assert_eq!(r.status, 200, "{}", r.summary());
            r.backend().to_string()
        })
        .collect()
}

const HASH_POOL: &str = r#"balance = "hash"
hash_key = "header:x-user"
servers = [
  { name = "s1", addr = "{s1}" },
  { name = "s2", addr = "{s2}" },
  { name = "s3", addr = "{s3}" },
"#;

#[test]
fn hash_keeps_a_key_on_one_server_and_a_disabled_server_moves_only_its_keys() {
    let bs: Vec<Backend> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    let p = start(&format!("{HASH_POOL}]\n"), &refs);
    const KEYS: usize = 600;
    let first = owners(&p, KEYS);
    // Each key asked again on new connections (landing on either shard): the same server.
    assert_eq!(
        owners(&p, KEYS),
        first,
        "a key changed server between requests"
    );
    for n in ["s1", "s2", "s3"] {
        let s = first.iter().filter(|o| *o == n).count() as f64 / KEYS as f64;
        assert!((0.2..=0.47).contains(&s), "{n} has {s:.3} of the keys");
    }

    let (code, out) = p.ctl("disable server app/s2");
    assert_eq!(code, 0, "{out}");
    let without = owners(&p, KEYS);
    for k in 0..KEYS {
        if first[k] == "s2" {
            assert_ne!(without[k], "s2", "key {k} still on the disabled server");
        } else {
            assert_eq!(without[k], first[k], "key {k} of {} moved", first[k]);
        }
    }
    let (code, out) = p.ctl("enable server app/s2");
    assert_eq!(code, 0, "{out}");
    assert_eq!(owners(&p, KEYS), first, "keys did not come back");
}

#[test]
fn hash_adding_a_server_moves_about_its_share_and_only_to_it() {
    let bs: Vec<Backend> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    const KEYS: usize = 800;
    let before = {
        let p = start(&format!("{HASH_POOL}]\n"), &refs[..3]);
        owners(&p, KEYS)
    };
    let after = {
        let p = start(
            &format!("{HASH_POOL}  {{ name = \"s4\", addr = \"{{s4}}\" }},\n]\n"),
            &refs,
        );
        owners(&p, KEYS)
    };
    let moved: Vec<usize> = (0..KEYS).filter(|&k| before[k] != after[k]).collect();
    let s = moved.len() as f64 / KEYS as f64;
    assert!(
        (0.15..=0.35).contains(&s),
        "moved {s:.3}, about 1/4 expected"
    );
    for k in moved {
        assert_eq!(
            after[k], "s4",
            "key {k} moved from {} to an old server",
            before[k]
        );
    }
}

#[test]
fn backup_serves_only_while_every_primary_is_out() {
    let (p1, p2, spare) = (
        Backend::start("p1"),
        Backend::start("p2"),
        Backend::start("spare"),
    );
    let p = start(
        r#"balance = "round_robin"
servers = [
  { name = "p1", addr = "{p1}" },
  { name = "p2", addr = "{p2}" },
  { name = "spare", addr = "{spare}", backup = true },
]
"#,
        &[&p1, &p2, &spare],
    );
    let got = spread(&p, 2, 50, "/");
    assert!(!got.contains_key("spare"), "{got:?}");
    assert_eq!(p.ctl("disable server app/p1").0, 0);
    let got = spread(&p, 2, 50, "/");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        vec!["p2"],
        "one primary left"
    );
    assert_eq!(p.ctl("disable server app/p2").0, 0);
    let got = spread(&p, 2, 50, "/");
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["spare"]);
    assert_eq!(p.ctl("enable server app/p1").0, 0);
    let got = spread(&p, 2, 50, "/");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        vec!["p1"],
        "primary retaken"
    );
}

#[test]
fn backup_takes_over_when_the_primary_stops_and_hands_back_when_it_returns() {
    // The primary closes idle keep-alive connections at once, so once stopped nothing of it
    // is left in the proxy's idle set.
    let quick_close = || BackendOpts {
        close_idle_after: Some(Duration::from_millis(10)),
        ..Default::default()
    };
    let primary = Backend::start_with("primary", quick_close());
    let port = primary.addr.port();
    let spare = Backend::start("spare");
    let p = start(
        r#"down_time = "500ms"
servers = [
  { name = "primary", addr = "{primary}" },
  { name = "spare", addr = "{spare}", backup = true },
]
"#,
        &[&primary, &spare],
    );
    assert_eq!(owners(&p, 10), vec!["primary"; 10]);
    drop(primary);
    thread::sleep(Duration::from_millis(100));
    // The request that finds the primary refusing may fail (the backup was not a candidate
    // yet, and each shard learns on its own request); after that every request goes to the
    // backup while the primary is down.
    let answered: Vec<(u16, String)> = (0..10)
        .map(|_| {
            let mut c = Conn::connect(p.addr("web"));
            let r = c.get("/", "h");
            (r.status, r.backend().to_string())
        })
        .collect();
    assert!(
        answered[2..].iter().all(|(s, b)| *s == 200 && b == "spare"),
        "{answered:?}"
    );
    // Back on its port; once its down_time is over it takes every request again.
    let _primary = Backend::start_on("primary", port, quick_close());
    thread::sleep(Duration::from_millis(700));
    let again: Vec<String> = (0..10).map(|_| owners(&p, 1).remove(0)).collect();
    assert!(
        again[2..].iter().all(|b| b == "primary"),
        "primary not retaken: {again:?}"
    );
}

/// `clients` concurrent GETs of `path`, each on its own connection: their statuses.
fn concurrent(p: &Proxy, clients: usize, path: &str) -> Vec<u16> {
    let addr = p.addr("web");
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.set_read_timeout(Duration::from_secs(20));
                c.get(&path, "h").status
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}

#[test]
fn max_connections_bounds_a_server_across_shards_and_queues_the_rest() {
    let slow = Backend::start("slow");
    let p = start(
        r#"queue_timeout = "10s"
servers = [ { name = "slow", addr = "{slow}", max_connections = 2 } ]
"#,
        &[&slow],
    );
    let statuses = concurrent(&p, 10, "/delay/200");
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(slow.requests(), 10);
    assert_eq!(
        slow.peak_busy(),
        2,
        "at most 2 at the backend, and the bound was reached"
    );
}

#[test]
fn queue_timeout_expiry_answers_503() {
    let slow = Backend::start("slow");
    let p = start(
        r#"queue_timeout = "300ms"
servers = [ { name = "slow", addr = "{slow}", max_connections = 1 } ]
"#,
        &[&slow],
    );
    let statuses = concurrent(&p, 6, "/delay/1500");
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!((ok, refused), (1, 5), "{statuses:?}");
    assert_eq!(slow.peak_busy(), 1);
}

#[test]
fn hash_by_uri_and_by_cookie_keep_each_key_on_one_server() {
    let bs: Vec<Backend> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    for (key, header) in [("uri", None), ("cookie:sid", Some("Cookie"))] {
        let p = start(
            &format!("{}]\n", HASH_POOL.replace("header:x-user", key)),
            &refs,
        );
        let ask = |k: usize| {
            let mut c = Conn::connect(p.addr("web"));
            let (path, value) = (format!("/item/{k}"), format!("a=1; sid=u{k}"));
            let headers: Vec<(&str, &str)> =
                header.map(|h| (h, value.as_str())).into_iter().collect();
            // Under the cookie key the path is the same for every key.
            let target = if header.is_some() {
                "/same"
            } else {
                path.as_str()
            };
            c.send(&req("GET", target, "h", &headers, b""));
            let r = c.read_response();
            assert_eq!(r.status, 200, "{}", r.summary());
            r.backend().to_string()
        };
        let first: Vec<String> = (0..300).map(ask).collect();
        let again: Vec<String> = (0..300).map(ask).collect();
        assert_eq!(first, again, "{key}: a key changed server");
        for n in ["s1", "s2", "s3"] {
            let c = first.iter().filter(|o| *o == n).count();
            assert!((50..=160).contains(&c), "{key}: {n} has {c} of 300 keys");
        }
    }
}

/// A fake MySQL server that greets with version `fake-NAME` and then holds the connection until
/// the client closes it (or 10 s pass). Stops accepting when dropped.
struct Greeter {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Greeter {
    fn start(name: &str) -> Greeter {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (st, name) = (stop.clone(), name.to_string());
        thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let name = name.clone();
                thread::spawn(move || {
                    let mut g = vec![10];
                    g.extend_from_slice(format!("fake-{name}\0").as_bytes());
                    g.extend_from_slice(&1u32.to_le_bytes());
                    g.extend_from_slice(b"abcdefgh\0");
                    g.extend_from_slice(&[0xff, 0xf7, 45, 2, 0, 0xff, 0x81, 21]);
                    g.extend_from_slice(&[0; 10]);
                    g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
                    let mut out = (g.len() as u32).to_le_bytes()[..3].to_vec();
                    out.push(0);
                    out.extend_from_slice(&g);
                    let _ = s.write_all(&out);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = s.read(&mut [0; 64]);
                });
            }
        });
        Greeter { addr, stop }
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Connect to `to` from `source` and return the server name in the greeting relayed.
fn greeted_by(source: [u8; 4], to: std::net::SocketAddr) -> String {
    use std::io::Read;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from((source, 0)).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut g = vec![0; len];
    s.read_exact(&mut g).unwrap();
    let end = g.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&g[1..end]).into_owned()
}

#[test]
fn mysql_hash_sends_a_client_address_to_one_server_from_every_shard() {
    let gs: Vec<Greeter> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| Greeter::start(n))
        .collect();
    let cfg = daemon(2)
        + r#"
[[mysql]]
name = "db"
listen = ["127.0.0.1:{port:db}"]
pool = "db"

[pool.db]
balance = "hash"
servers = [
  { name = "m1", addr = "{m1}" },
  { name = "m2", addr = "{m2}" },
  { name = "m3", addr = "{m3}" },
]
"#;
    let vars: Vec<(&str, String)> = ["m1", "m2", "m3"]
        .iter()
        .zip(&gs)
        .map(|(n, g)| (*n, g.addr.to_string()))
        .collect();
    let p = Proxy::start_with(&cfg, &vars);
    let mut seen = HashMap::new();
    for ip in 10..40u8 {
        let first = greeted_by([127, 0, 0, ip], p.addr("db"));
        for _ in 0..4 {
            // New connections from the same address, landing on either shard.
            assert_eq!(
                greeted_by([127, 0, 0, ip], p.addr("db")),
                first,
                "127.0.0.{ip}"
            );
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "30 addresses over 3 servers: {seen:?}");
}

/// A MySQL "server" that greets (protocol 10, mysql_native_password) and then holds the
/// connection until the client closes; returns its address and its connections open now.
fn holding_mysql() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let open = std::sync::Arc::new(AtomicUsize::new(0));
    let o = open.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let o = o.clone();
            thread::spawn(move || {
                o.fetch_add(1, SeqCst);
                let g = mysql_support::raw::greeting(7, "mysql_native_password");
                let _ = s.write_all(&mysql_support::raw::packet(0, &g));
                let mut sink = [0u8; 512];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                o.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, open)
}

/// A raw MySQL client's first packet from the proxy: the payload's first byte (10 greeting,
/// 0xFF error) and, for an error, its code.
fn first_packet(s: &mut std::net::TcpStream) -> (u8, u16) {
    use std::io::Read;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p).unwrap();
    let code = if p[0] == 0xFF {
        u16::from_le_bytes([p[1], p[2]])
    } else {
        0
    };
    (p[0], code)
}

/// MySQL sessions honour a server's `max_connections` across shards: a full server is passed
/// over, and when every server is full a new session waits `queue_timeout`, then gets ERR 1040;
/// a session that ends frees its place.
#[test]
fn mysql_sessions_respect_max_connections_across_shards() {
    let (a, a_open) = holding_mysql();
    let (b, b_open) = holding_mysql();
    let cfg = daemon(2)
        + &format!(
            r#"
[[mysql]]
name = "db"
listen = ["127.0.0.1:{{port:db}}"]
pool = "db"

[pool.db]
queue_timeout = "300ms"
servers = [
  {{ name = "a", addr = "{a}", max_connections = 2 }},
  {{ name = "b", addr = "{b}", max_connections = 1 }},
]
"#
        );
    let p = Proxy::start(&cfg);
    // The harness's start-up probe opens one session and closes it: wait until it is gone.
    let idle = || {
        a_open.load(std::sync::atomic::Ordering::SeqCst)
            + b_open.load(std::sync::atomic::Ordering::SeqCst)
    };
    let (_, ok) = common::observe::poll_until(Duration::from_secs(3), idle, |n| *n == 0);
    assert!(ok, "start-up session still open");
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = std::net::TcpStream::connect(p.addr("db")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(first_packet(&mut s), (10, 0), "session {i} greeted");
        held.push(s);
    }
    let open = |x: &std::sync::Arc<std::sync::atomic::AtomicUsize>| {
        x.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!((open(&a_open), open(&b_open)), (2, 1));
    // Full: the fourth waits queue_timeout, then ERR 1040 naming the bound.
    let t0 = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(p.addr("db")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first_packet(&mut s), (0xFF, 1040));
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        (open(&a_open), open(&b_open)),
        (2, 1),
        "no server got a fourth"
    );
    // One session ends: the next one gets its place.
    drop(held.remove(0));
    let mut s = std::net::TcpStream::connect(p.addr("db")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first_packet(&mut s), (10, 0));
    let (_, ok) = common::observe::poll_until(
        Duration::from_secs(2),
        || (open(&a_open), open(&b_open)),
        |v| v.0 + v.1 == 3,
    );
    assert!(ok);
    assert!(open(&a_open) <= 2 && open(&b_open) <= 1);
}
