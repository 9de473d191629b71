//! Changing the running config without a restart, seen from outside: `ctl reload` and SIGHUP
//! re-reading a rewritten file, refused reloads that change nothing, counters and operator
//! states kept across a change, a removed listener draining, and the runtime server commands
//! (`add server`, `set server ... addr`, `del server`, `show config`), most of them under a
//! steady client load that must see no failed request. Real binary, 2 shards, 127.0.0.1.

mod common;

use common::proxy::BIN;
use common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on any wait-until-condition in these tests.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Client load
// ---------------------------------------------------------------------------------------------

/// The phase of requests that ran while a change was being made.
const CHANGING: usize = usize::MAX;

#[derive(Default)]
struct LoadLog {
    /// (phase when the request was sent, Host, backend that answered) -> answers.
    answers: HashMap<(usize, String, String), usize>,
    /// Every failed request (I/O error or a status other than 200), with what happened.
    failures: Vec<String>,
}

/// A steady load on one listener: one thread per keep-alive client (each on its own `Host`),
/// GETs in a loop on one connection, plus one thread opening a new connection per request,
/// until stopped. Every answer is recorded under the phase that was current both when its
/// request was sent and when its answer came back ([`CHANGING`] otherwise). The test marks
/// [`Load::changing`] before it asks for a change and moves to the next phase once the change
/// was acknowledged (every shard has it then), so what a phase counts ran wholly on one config.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    log: Arc<Mutex<LoadLog>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `keepalive`: the Host of each keep-alive client; `fresh_host`: the Host of the
    /// connection-per-request client.
    fn start(addr: SocketAddr, keepalive: &[&str], fresh_host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let mut threads = Vec::new();
        let clients = keepalive
            .iter()
            .map(|h| (h.to_string(), true))
            .chain([(fresh_host.to_string(), false)]);
        for (t, (host, keep)) in clients.enumerate() {
            let (stop, phase, log) = (stop.clone(), phase.clone(), log.clone());
            threads.push(std::thread::spawn(move || {
                client_loop(t, addr, &host, keep, &stop, &phase, &log)
            }));
        }
        Load {
            stop,
            phase,
            log,
            threads,
        }
    }

    /// Requests sent from now on count in phase `n`.
    fn set_phase(&self, n: usize) {
        self.phase.store(n, Ordering::SeqCst);
    }

    /// A change is about to be asked for: requests from now until the next phase, and those
    /// in flight now, count for no phase.
    fn changing(&self) {
        self.set_phase(CHANGING);
    }

    /// Answers in `phase` by backend (every Host).
    fn by_backend(&self, phase: usize) -> HashMap<String, usize> {
        let log = self.log.lock().unwrap();
        let mut out = HashMap::new();
        for ((p, _, b), n) in &log.answers {
            if *p == phase {
                *out.entry(b.clone()).or_insert(0) += n;
            }
        }
        out
    }

    /// Answers in `phase` for requests with `host`, by backend.
    fn by_backend_for(&self, phase: usize, host: &str) -> HashMap<String, usize> {
        let log = self.log.lock().unwrap();
        let mut out = HashMap::new();
        for ((p, h, b), n) in &log.answers {
            if *p == phase && h == host {
                *out.entry(b.clone()).or_insert(0) += n;
            }
        }
        out
    }

    fn failures(&self) -> Vec<String> {
        self.log.lock().unwrap().failures.clone()
    }

    /// Waits (at most [`WAIT`]) until `done` holds for the answers of `phase` and at least
    /// `min_time` has passed; panics with what was seen if it never does.
    #[track_caller]
    fn wait_for(
        &self,
        phase: usize,
        min_time: Duration,
        what: &str,
        done: impl Fn(&HashMap<String, usize>) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let seen = self.by_backend(phase);
            if done(&seen) && start.elapsed() >= min_time {
                return;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "load, phase {phase}: {what} not seen within {WAIT:?}; answers {seen:?}; failures {:?}",
                    self.failures()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients and asserts that no request failed.
    #[track_caller]
    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("load thread panicked");
        }
        let log = self.log.lock().unwrap();
        let total: usize = log.answers.values().sum();
        assert!(
            log.failures.is_empty(),
            "{} of {} requests failed; first ones: {:#?}",
            log.failures.len(),
            total + log.failures.len(),
            &log.failures[..log.failures.len().min(20)]
        );
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client_loop(
    t: usize,
    addr: SocketAddr,
    host: &str,
    keep: bool,
    stop: &AtomicBool,
    phase: &AtomicUsize,
    log: &Mutex<LoadLog>,
) {
    let kind = if keep { "keep-alive" } else { "new-connection" };
    let mut conn: Option<Conn> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let ph = phase.load(Ordering::SeqCst);
        let fail = |what: String| {
            log.lock().unwrap().failures.push(format!(
                "{kind} client {t} (Host {host}), request {i}, phase {ph}: {what}"
            ));
        };
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::try_connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    fail(format!("connect {addr}: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let target = format!("/load/{t}/{i}");
        let got = c
            .try_send(&req("GET", &target, host, &[], b""))
            .map_err(|e| format!("send: {e}"))
            .and_then(|()| c.try_read_response());
        match got {
            Ok(r) if r.status == 200 => {
                let ph = if phase.load(Ordering::SeqCst) == ph {
                    ph
                } else {
                    CHANGING
                };
                let closing = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                *log.lock()
                    .unwrap()
                    .answers
                    .entry((ph, host.to_string(), r.backend().to_string()))
                    .or_insert(0) += 1;
                if keep && !closing {
                    conn = Some(c);
                }
            }
            Ok(r) => fail(format!("status {}: {}", r.status, r.summary())),
            Err(e) => fail(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Control socket helpers
// ---------------------------------------------------------------------------------------------

/// Runs a command that must succeed; its answer.
#[track_caller]
fn ok(p: &Proxy, cmd: &str) -> String {
    let (code, out, err) = p.ctl_full(cmd);
    assert_eq!(code, 0, "`{cmd}` failed: {out}{err}");
    assert!(!out.starts_with("error:"), "`{cmd}`: {out}");
    out
}

/// Runs a command that must be refused: its `error:` answer.
#[track_caller]
fn refused(p: &Proxy, cmd: &str) -> String {
    let (code, out, err) = p.ctl_full(cmd);
    assert_eq!(code, 1, "`{cmd}` should fail with exit code 1: {out}{err}");
    assert!(out.starts_with("error: "), "`{cmd}`: {out}{err}");
    out
}

/// `show info` as key -> value.
fn info(p: &Proxy) -> HashMap<String, String> {
    ok(p, "show info")
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `show servers` as "POOL/SERVER" -> column -> value (removed servers included).
fn servers(p: &Proxy) -> HashMap<String, HashMap<String, String>> {
    let text = ok(p, "show servers");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
    lines
        .map(|l| {
            let cols: HashMap<String, String> = head
                .iter()
                .zip(l.split(' '))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (format!("{}/{}", cols["pool"], cols["server"]), cols)
        })
        .collect()
}

/// `show servers`' request count for POOL/SERVER.
#[track_caller]
fn requests_of(p: &Proxy, target: &str) -> u64 {
    let s = servers(p);
    let row = s
        .get(target)
        .unwrap_or_else(|| panic!("no {target} in show servers: {s:?}"));
    row["requests"].parse().unwrap()
}

/// `show traffic http`'s request count for a frontend's site.
#[track_caller]
fn site_requests(p: &Proxy, frontend: &str, site: &str) -> u64 {
    let text = ok(p, "show traffic http");
    text.lines()
        .skip(1)
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|c| c[0] == frontend && c[1] == site)
        .unwrap_or_else(|| panic!("no {frontend} {site} in show traffic http:\n{text}"))[2]
        .parse()
        .unwrap()
}

/// One GET on a new connection: the backend that answered (panics unless 200).
#[track_caller]
fn get_once(addr: SocketAddr, host: &str) -> String {
    let mut c = Conn::connect(addr);
    let r = c.get("/once", host);
    assert_eq!(r.status, 200, "GET via {addr} Host {host}: {}", r.summary());
    r.backend().to_string()
}

/// `{NAME}` -> the address of the backend called NAME.
fn vars<'a>(backends: &[&'a Backend]) -> Vec<(&'a str, String)> {
    backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr_string()))
        .collect()
}

/// Polls until connecting to `addr` is refused (at most [`WAIT`]).
#[track_caller]
fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => {
                panic!("{addr} still accepts connections {WAIT:?} after it left the config")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A reload changing every kind of key, under load
// ---------------------------------------------------------------------------------------------

const EVERYTHING_1: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"
keepalive_timeout = "30s"
client_header_timeout = "10s"

[pool.app]
balance = "round_robin"
connect_timeout = "5s"
servers = [
  { name = "a", addr = "{a}" },
  { name = "b", addr = "{b}" },
  { name = "c", addr = "{c}" },
]
"#;

const EVERYTHING_2: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}", "127.0.0.1:{port:web2}"]
default_pool = "app"
keepalive_timeout = "20s"
client_header_timeout = "8s"

  [[http.route]]
  pool = "api"
  host = ["api.example.com"]

[[http]]
name = "admin"
listen = ["127.0.0.1:{port:admin}"]
default_pool = "api"

[pool.app]
balance = "least_requests"
connect_timeout = "4s"
response_timeout = "30s"
servers = [
  { name = "a", addr = "{a}", weight = 3 },
  { name = "b", addr = "{b}" },
  { name = "d", addr = "{d}" },
]

[pool.api]
servers = [ { name = "api", addr = "{api}" } ]
"#;

#[test]
fn reload_changing_every_kind_of_key_under_load_fails_no_request() {
    let bs: Vec<Backend> = ["a", "b", "c", "d", "api"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let v = vars(&bs.iter().collect::<Vec<_>>());
    let mut p = Proxy::start_with(&(daemon(2) + EVERYTHING_1), &v);
    let mut load = Load::start(
        p.addr("web"),
        &["www.example.com", "www.example.com", "api.example.com"],
        "www.example.com",
    );
    load.wait_for(0, Duration::from_millis(300), "a, b and c", |s| {
        ["a", "b", "c"]
            .iter()
            .all(|n| s.get(*n).is_some_and(|&k| k >= 10))
    });

    p.rewrite(&(daemon(2) + EVERYTHING_2), &v);
    load.changing();
    let out = ok(&p, "reload");
    assert_eq!(out, "ok generation 2\n");
    load.set_phase(1);

    // The new route, the new address of `web` and the new frontend serve.
    assert_eq!(get_once(p.addr("web"), "api.example.com"), "api");
    assert_eq!(get_once(p.addr("web2"), "api.example.com"), "api");
    assert_eq!(get_once(p.addr("admin"), "www.example.com"), "api");
    let via_web2 = get_once(p.addr("web2"), "www.example.com");
    assert!(["a", "b", "d"].contains(&via_web2.as_str()), "{via_web2}");

    // The load goes on for a second after the change; the added server takes requests.
    load.wait_for(1, Duration::from_secs(1), "d answering", |s| {
        s.get("d").is_some_and(|&k| k >= 10)
    });
    let after = load.by_backend(1);
    assert_eq!(
        after.get("c"),
        None,
        "the removed server got requests sent after the reload: {after:?}"
    );
    // Keep-alive connections opened before the reload move to the new routes.
    let api_after = load.by_backend_for(1, "api.example.com");
    assert!(
        api_after.keys().all(|b| b == "api") && api_after.contains_key("api"),
        "Host api.example.com after the reload: {api_after:?}"
    );
    let api_before = load.by_backend_for(0, "api.example.com");
    assert!(
        api_before
            .keys()
            .all(|b| ["a", "b", "c"].contains(&b.as_str())),
        "Host api.example.com before the reload: {api_before:?}"
    );
    load.finish();

    let i = info(&p);
    assert_eq!(i["generation"], "2", "{i:?}");
    assert_eq!(i["generation.cause"], "reload", "{i:?}");
    let s = servers(&p);
    assert_eq!(s["app/a"]["weight"], "3", "{s:?}");
    assert_eq!(s["app/c"]["state"], "removed", "{s:?}");
    assert_eq!(s["api/api"]["state"], "up", "{s:?}");
    assert!(p.log().contains("config_applied"), "{}", p.log());
}

// ---------------------------------------------------------------------------------------------
// 2. Refused reloads change nothing
// ---------------------------------------------------------------------------------------------

const TWO_SERVERS: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [
  { name = "a", addr = "{a}" },
  { name = "b", addr = "{b}" },
]
"#;

#[test]
fn bad_reloads_are_refused_and_the_running_config_stays() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut v = vars(&[&a, &b]);
    v.push(("held", held.local_addr().unwrap().to_string()));
    let mut p = Proxy::start_with(&(daemon(2) + TWO_SERVERS), &v);
    let file = p.config_path.display().to_string();
    let mut load = Load::start(p.addr("web"), &["h", "h"], "h");
    load.wait_for(0, Duration::ZERO, "a and b", |s| s.len() == 2);

    let held_addr = held.local_addr().unwrap().to_string();
    let bad = [
        (
            "an unknown key",
            TWO_SERVERS.replace("[pool.app]\n", "[pool.app]\nbogus_key = 1\n"),
            vec!["pool.app".to_string(), "bogus_key".to_string()],
        ),
        (
            "a bad server address",
            TWO_SERVERS.replace("\"{b}\"", "\"not an address\""),
            vec!["pool.app.servers[1].addr".to_string()],
        ),
        (
            "a listen address in use",
            TWO_SERVERS.replace(
                "listen = [\"127.0.0.1:{port:web}\"]",
                "listen = [\"127.0.0.1:{port:web}\", \"{held}\"]",
            ),
            vec![
                "http[0].listen[1]".to_string(),
                format!("cannot listen on {held_addr}"),
            ],
        ),
    ];
    for (what, text, words) in &bad {
        p.rewrite(&(daemon(2) + text), &v);
        let out = refused(&p, "reload");
        let prefix = format!("error: reload: {file}: ");
        assert!(
            out.starts_with(&prefix),
            "{what}: the answer should start with {prefix:?}: {out:?}"
        );
        for w in words {
            assert!(
                out.contains(w.as_str()),
                "{what}: the answer should name {w}: {out:?}"
            );
        }
        let i = info(&p);
        assert_eq!(i["generation"], "1", "{what}: {i:?}");
        assert_eq!(i["generation.cause"], "start", "{what}: {i:?}");
    }
    load.set_phase(1);
    load.wait_for(1, Duration::from_millis(300), "a and b still", |s| {
        s.len() == 2 && s.contains_key("a") && s.contains_key("b")
    });
    assert!(
        TcpStream::connect(held.local_addr().unwrap()).is_ok(),
        "the held socket is still the test's"
    );
    load.finish();
    let refusals = p.log().matches("reload_refused").count();
    assert!(
        refusals >= 3,
        "{refusals} reload_refused in the log:\n{}",
        p.log()
    );

    // A good file after the refusals applies as generation 2.
    p.rewrite(&(daemon(2) + TWO_SERVERS), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 2\n");
}

// ---------------------------------------------------------------------------------------------
// 3. Counters and operator states survive a reload
// ---------------------------------------------------------------------------------------------

const THREE: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"
keepalive_timeout = "{ka}"

[pool.app]
servers = [
  { name = "a", addr = "{a}"{wa} },
  { name = "b", addr = "{b}" },
  {c}
]
"#;

fn three(ka: &str, a_weight: Option<u32>, with_c: bool) -> String {
    daemon(2)
        + &THREE
            .replace("{ka}", ka)
            .replace(
                "{wa}",
                &a_weight.map_or(String::new(), |w| format!(", weight = {w}")),
            )
            .replace(
                "{c}",
                if with_c {
                    "{ name = \"c\", addr = \"{c}\" },"
                } else {
                    ""
                },
            )
}

#[test]
fn counters_admin_state_and_operator_weight_survive_reloads() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let v = vars(&[&a, &b, &c]);
    let mut p = Proxy::start_with(&three("30s", None, true), &v);
    let mut one = Conn::connect(p.addr("web"));
    for i in 0..30 {
        let r = one.get(&format!("/one/{i}"), "one.example");
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    for _ in 0..12 {
        get_once(p.addr("web"), "two.example");
    }
    let before = servers(&p);
    let count = |s: &HashMap<String, HashMap<String, String>>, k: &str| -> u64 {
        s[k]["requests"].parse().unwrap()
    };
    let (ra, rb, rc) = (
        count(&before, "app/a"),
        count(&before, "app/b"),
        count(&before, "app/c"),
    );
    assert_eq!(ra + rb + rc, 42, "{before:?}");
    assert!(ra > 0 && rb > 0 && rc > 0, "{before:?}");
    assert_eq!(site_requests(&p, "web", "one.example"), 30);
    assert_eq!(site_requests(&p, "web", "two.example"), 12);

    ok(&p, "set server app/b state maint");
    ok(&p, "set server app/a weight 5");
    // Generation 2: c removed, a timeout changed; b and a not mentioned differently.
    p.rewrite(&three("20s", None, false), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 2\n");
    let s = servers(&p);
    assert_eq!(
        count(&s, "app/a"),
        ra,
        "a's count changed across the reload: {s:?}"
    );
    assert_eq!(
        count(&s, "app/b"),
        rb,
        "b's count changed across the reload: {s:?}"
    );
    assert_eq!(s["app/c"]["state"], "removed", "{s:?}");
    assert_eq!(count(&s, "app/c"), rc, "{s:?}");
    assert_eq!(s["app/b"]["admin"], "maint", "operator's maint kept: {s:?}");
    assert_eq!(s["app/b"]["state"], "maint", "{s:?}");
    assert_eq!(
        s["app/a"]["weight"], "5",
        "the operator's weight stays when the file's weight did not change: {s:?}"
    );
    assert_eq!(site_requests(&p, "web", "one.example"), 30);
    assert_eq!(site_requests(&p, "web", "two.example"), 12);

    // The keep-alive connection from before goes on, and only a takes requests now.
    for i in 0..20 {
        let r = one.get(&format!("/more/{i}"), "one.example");
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.backend(), "a", "b is in maint, c removed");
    }
    assert_eq!(requests_of(&p, "app/a"), ra + 20);
    assert_eq!(site_requests(&p, "web", "one.example"), 50);
    assert_eq!(site_requests(&p, "web", "two.example"), 12);

    // Generation 3: the file's weight for a changes, so it applies; c's row is gone.
    p.rewrite(&three("20s", Some(3), false), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 3\n");
    let s = servers(&p);
    assert_eq!(s["app/a"]["weight"], "3", "{s:?}");
    assert!(!s.contains_key("app/c"), "{s:?}");
    assert_eq!(s["app/b"]["admin"], "maint", "{s:?}");
    // Generation 4: the same file again; an operator's weight set since then stays.
    ok(&p, "set server app/a weight 7");
    assert_eq!(ok(&p, "reload"), "ok generation 4\n");
    let s = servers(&p);
    assert_eq!(
        s["app/a"]["weight"], "7",
        "a reload that does not change the file's weight keeps the operator's: {s:?}"
    );
    assert_eq!(count(&s, "app/a"), ra + 20);
    assert_eq!(s["app/b"]["admin"], "maint", "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. A removed listener drains
// ---------------------------------------------------------------------------------------------

const WITH_OLD: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[[http]]
name = "old"
listen = ["127.0.0.1:{port:old}"]
default_pool = "slowpool"
keepalive_timeout = "60s"

[pool.app]
servers = [ { name = "a", addr = "{a}" } ]

[pool.slowpool]
servers = [ { name = "s", addr = "{s}" } ]
"#;

const WITHOUT_OLD: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "a", addr = "{a}" } ]
"#;

#[test]
fn a_removed_listener_finishes_its_exchange_then_closes_and_refuses_new_connections() {
    let (a, s) = (Backend::start("a"), Backend::start("s"));
    let v = vars(&[&a, &s]);
    let mut p = Proxy::start_with(&(daemon(2) + WITH_OLD), &v);
    let old = p.addr("old");

    let mut idle = Conn::connect(old);
    assert_eq!(idle.get("/first", "h").backend(), "s");
    let mut busy = Conn::connect(old);
    let sent = Instant::now();
    busy.send(&req("GET", "/delay/2000", "h", &[], b""));
    let deadline = Instant::now() + WAIT;
    while s.requests() < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    p.rewrite(&(daemon(2) + WITHOUT_OLD), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 2\n");
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "the reload took too long for the request to be in flight during it ({:?})",
        sent.elapsed()
    );

    // The request in flight gets its whole answer, saying the connection closes after it.
    let r = busy.read_response();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.backend(), "s");
    assert_eq!(r.body_str(), "s");
    assert!(sent.elapsed() >= Duration::from_millis(2000));
    assert_eq!(
        r.header("connection").map(|v| v.to_ascii_lowercase()),
        Some("close".into()),
        "{}",
        r.summary()
    );
    busy.check_closed(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("busy connection after its last answer: {e}"));
    // The idle one is closed at once, not at its keep-alive timeout (60 s).
    idle.check_closed(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("idle connection to the removed frontend: {e}"));

    // Nobody new gets in.
    wait_refused(old);
    for _ in 0..5 {
        let e = TcpStream::connect_timeout(&old, Duration::from_secs(1));
        assert!(e.is_err(), "a new connection to {old} was accepted");
    }
    // The frontend that stayed serves as before.
    assert_eq!(get_once(p.addr("web"), "h"), "a");
}

// ---------------------------------------------------------------------------------------------
// 5. SIGHUP
// ---------------------------------------------------------------------------------------------

#[test]
fn sighup_reloads_the_file() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let v = vars(&[&a, &b]);
    let one = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "a", addr = "{a}" } ]
"#;
    let mut p = Proxy::start_with(&(daemon(2) + one), &v);
    assert_eq!(get_once(p.addr("web"), "h"), "a");
    assert_eq!(info(&p)["generation"], "1");

    p.rewrite(&(daemon(2) + TWO_SERVERS), &v);
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    let i = loop {
        let i = info(&p);
        if i["generation"] == "2" {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no generation 2 {WAIT:?} after SIGHUP: {i:?}\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(i["generation.cause"], "reload", "{i:?}");
    // `show info` names the published generation; each shard takes it on its next tick.
    let mut seen = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while !seen.contains_key("b") {
        assert!(
            Instant::now() < deadline,
            "b does not serve {WAIT:?} after SIGHUP: {seen:?}"
        );
        *seen.entry(get_once(p.addr("web"), "h")).or_insert(0) += 1;
    }
    assert!(servers(&p).contains_key("app/b"));

    // A bad file on SIGHUP is refused and logged; the daemon goes on.
    p.rewrite(&(daemon(2) + "[nonsense\n"), &v);
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while !p.log().contains("reload_refused") {
        assert!(Instant::now() < deadline, "no reload_refused:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(info(&p)["generation"], "2");
    assert!(["a", "b"].contains(&get_once(p.addr("web"), "h").as_str()));
}

// ---------------------------------------------------------------------------------------------
// 6. Runtime server commands under load
// ---------------------------------------------------------------------------------------------

const RUNTIME: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

  [[http.route]]
  pool = "solo"
  host = ["solo.example"]

[pool.app]
servers = [
  { name = "a", addr = "{a}" },
  { name = "b", addr = "{b}" },
]

[pool.solo]
servers = [ { name = "only", addr = "{solo}" } ]
"#;

#[test]
fn runtime_server_commands_under_load_fail_no_request_and_reload_drops_them() {
    let names = ["a", "b", "x", "y", "solo"];
    let bs: Vec<Backend> = names.iter().map(|n| Backend::start(n)).collect();
    let [a, b, x, y, _solo] = &bs[..] else {
        unreachable!()
    };
    let v = vars(&bs.iter().collect::<Vec<_>>());
    let p = Proxy::start_with(&(daemon(2) + RUNTIME), &v);
    let mut load = Load::start(p.addr("web"), &["h", "h", "h"], "h");
    load.wait_for(0, Duration::from_millis(200), "a and b", |s| {
        s.contains_key("a") && s.contains_key("b")
    });

    // add server
    load.changing();
    let out = ok(&p, &format!("add server app/x {}", x.addr_string()));
    assert_eq!(
        out,
        format!("added app/x {}; generation 2\n", x.addr_string())
    );
    load.set_phase(1);
    load.wait_for(1, Duration::ZERO, "x answering", |s| {
        s.get("x").is_some_and(|&n| n >= 10)
    });

    // set server addr: b's traffic goes to y, b's count goes on.
    let rb = requests_of(&p, "app/b");
    load.changing();
    let out = ok(&p, &format!("set server app/b addr {}", y.addr_string()));
    assert_eq!(
        out,
        format!(
            "app/b addr {} (was {}); generation 3\n",
            y.addr_string(),
            b.addr_string()
        )
    );
    load.set_phase(2);
    load.wait_for(2, Duration::ZERO, "y answering", |s| {
        s.get("y").is_some_and(|&n| n >= 20)
    });
    let on_y = y.requests() as u64;
    let rb2 = requests_of(&p, "app/b");
    assert!(
        rb2 >= rb + on_y,
        "show servers requests for b reset by the address change: {rb} before, {rb2} now, {on_y} answered by y"
    );
    let s = servers(&p);
    assert_eq!(s["app/b"]["addr"], y.addr_string(), "{s:?}");

    // del server
    load.changing();
    let out = ok(&p, "del server app/a");
    assert!(
        out.starts_with("removed app/a after ") && out.ends_with("; generation 4\n"),
        "{out:?}"
    );
    load.set_phase(3);
    load.wait_for(3, Duration::from_millis(300), "x and y", |s| {
        s.contains_key("x") && s.contains_key("y")
    });
    let s = servers(&p);
    assert_eq!(s["app/a"]["state"], "removed", "{s:?}");

    // Refused commands change nothing.
    let bad = [
        (format!("add server nope/z {}", x.addr_string()), "nope"),
        (format!("add server app/x {}", x.addr_string()), "already"),
        ("add server app/z not-an-address".to_string(), "addr"),
        (
            "add server app/z 127.0.0.1:80 weight heavy".to_string(),
            "weight",
        ),
        ("del server solo/only".to_string(), "solo"),
        ("del server app/nobody".to_string(), "nobody"),
        (
            "set server app/nobody addr 127.0.0.1:80".to_string(),
            "nobody",
        ),
        ("set server app/b addr 127.0.0.1".to_string(), "addr"),
    ];
    for (cmd, word) in &bad {
        let out = refused(&p, cmd);
        assert!(out.contains(word), "`{cmd}`: {out:?} should mention {word}");
    }
    assert_eq!(info(&p)["generation"], "4");
    assert_eq!(get_once(p.addr("web"), "solo.example"), "solo");

    // show config: the running config with the runtime changes, a valid file.
    let shown = ok(&p, "show config");
    assert!(
        shown.contains("\"x\"") && shown.contains(&x.addr_string()),
        "{shown}"
    );
    assert!(shown.contains(&y.addr_string()), "{shown}");
    let parsed: toml::Table = toml::from_str(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    let app = &parsed["pool"]["app"]["servers"];
    let listed: Vec<&str> = app
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["b", "x"], "{shown}");
    let saved = p.dir.join("saved.toml");
    std::fs::write(&saved, &shown).unwrap();
    let child = std::process::Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(&saved)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::proxy::run_bounded(child, WAIT, "shardgate --check");
    assert!(
        out.status.success(),
        "--check refused show config's output: {}{}\n{shown}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // reload: back to the file; the runtime changes are gone.
    load.changing();
    assert_eq!(ok(&p, "reload"), "ok generation 5\n");
    load.set_phase(4);
    let shown = ok(&p, "show config");
    assert!(
        !shown.contains("\"x\"") && !shown.contains(&x.addr_string()),
        "{shown}"
    );
    load.wait_for(4, Duration::from_millis(300), "a and b again", |s| {
        s.contains_key("a") && s.contains_key("b")
    });
    load.finish();

    for (phase, gone, why) in [
        (2, "b", "b's address moved to y"),
        (3, "b", "b's address moved to y"),
        (3, "a", "a was deleted"),
        (4, "x", "the reload dropped x"),
        (4, "y", "the reload moved b back to its own address"),
    ] {
        let seen = load.by_backend(phase);
        assert_eq!(
            seen.get(gone),
            None,
            "phase {phase}: {gone} answered requests sent after {why}: {seen:?}"
        );
    }
    assert_eq!(info(&p)["generation.cause"], "reload");
    let _ = (a, b);
}

// ---------------------------------------------------------------------------------------------
// 7. Idle upstream connections to servers that did not change are kept
// ---------------------------------------------------------------------------------------------

#[test]
fn a_reload_keeps_idle_upstream_connections_to_unchanged_servers() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let v = vars(&[&a, &b]);
    let conf = |timeout: &str| {
        format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
keepalive_timeout = "{timeout}"

[pool.app]
servers = [ {{ name = "a", addr = "{{a}}" }} ]
"#
        )
    };
    let mut p = Proxy::start_with(&(daemon(2) + &conf("30s")), &v);
    // One keep-alive client: its requests stay on one shard, which keeps one idle connection.
    let mut c = Conn::connect(p.addr("web"));
    for _ in 0..5 {
        assert_eq!(c.get("/", "h").backend(), "a");
    }
    assert_eq!(a.accepted(), 1, "one upstream connection, reused");
    // An unrelated change: the server is the same record, its idle connection stays.
    p.rewrite(&(daemon(2) + &conf("20s")), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 2\n");
    for _ in 0..5 {
        assert_eq!(c.get("/", "h").backend(), "a");
    }
    assert_eq!(
        a.accepted(),
        1,
        "the idle upstream connection survived the reload"
    );
    // The server's address changes: a new record, its old idle connections are not used.
    let moved = conf("20s").replace("{a}", "{b}");
    p.rewrite(&(daemon(2) + &moved), &v);
    assert_eq!(ok(&p, "reload"), "ok generation 3\n");
    assert_eq!(c.get("/", "h").backend(), "b");
    assert_eq!(b.accepted(), 1);
}
