//! Active health checks and agent checks of HTTP pools, through the real binary: rise/fall
//! against a backend whose health answers a test scripts, the request line of each method,
//! `expect_body_regex`, an active down that a working TCP connect does not undo, the agent's
//! weight and drain, and one checker per process whatever the shard count.
//!
//! Transitions are observed three ways: the daemon's log (each logged once, with its reason),
//! where requests go, and, when `show servers` has a `health` column, that column.

mod common;

use common::scripted::Scripted;
use common::wire::{BufStream, Head};
use common::*;
use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a [`Flappy`] backend's health endpoint answers, set by the test.
struct HealthScript {
    /// Statuses for the next probes, in order; when empty, `status`.
    queue: VecDeque<u16>,
    status: u16,
    body: String,
    /// Every probe's head, with the status it got.
    probes: Vec<(Head, u16)>,
}

/// A backend that answers `/health*` as scripted (then closes) and any other request with its
/// name (keep-alive), counting both.
struct Flappy {
    server: Scripted,
    script: Arc<Mutex<HealthScript>>,
    served: Arc<AtomicUsize>,
}

impl Flappy {
    fn start(name: &str) -> Flappy {
        let script = Arc::new(Mutex::new(HealthScript {
            queue: VecDeque::new(),
            status: 200,
            body: "OK".into(),
            probes: Vec::new(),
        }));
        let served = Arc::new(AtomicUsize::new(0));
        let (sc, sv, me) = (script.clone(), served.clone(), name.to_owned());
        let server = Scripted::start(name, move |_ctx, stream| {
            let mut io = BufStream::new(stream);
            while let Ok(Some(head)) = io.read_head() {
                let target = head.start_line.split(' ').nth(1).unwrap_or("").to_owned();
                if target.starts_with("/health") || target.starts_with("/hc") {
                    let (status, body) = {
                        let mut s = sc.lock().unwrap();
                        let status = s.queue.pop_front().unwrap_or(s.status);
                        s.probes.push((head.clone(), status));
                        (status, s.body.clone())
                    };
                    let out = format!(
                        "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = io.write_all(out.as_bytes());
                    return;
                }
                sv.fetch_add(1, Ordering::SeqCst);
                let out = format!(
                    "HTTP/1.1 200 OK\r\nX-Backend: {me}\r\nContent-Length: {}\r\n\r\n{me}",
                    me.len()
                );
                if io.write_all(out.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Flappy {
            server,
            script,
            served,
        }
    }

    fn addr(&self) -> String {
        self.server.addr_string()
    }

    fn probes(&self) -> usize {
        self.script.lock().unwrap().probes.len()
    }

    fn probe_heads(&self) -> Vec<Head> {
        let s = self.script.lock().unwrap();
        s.probes.iter().map(|(h, _)| h.clone()).collect()
    }

    /// The next probes get these statuses, then `then` for good.
    fn script(&self, next: &[u16], then: u16) {
        let mut s = self.script.lock().unwrap();
        s.queue = next.iter().copied().collect();
        s.status = then;
    }

    fn set_body(&self, body: &str) {
        self.script.lock().unwrap().body = body.into();
    }

    /// Probes answered since the scripted queue was set, and whether it is used up.
    fn queue_left(&self) -> usize {
        self.script.lock().unwrap().queue.len()
    }
}

/// One request through a fresh client connection: the name of the backend that answered, or
/// the status when it was not a 200.
fn who(p: &Proxy) -> String {
    let mut c = Conn::connect(p.addr("web"));
    let r = c.get("/", "test");
    if r.status == 200 {
        r.backend().to_owned()
    } else {
        format!("status {}", r.status)
    }
}

fn spread(p: &Proxy, n: usize) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for _ in 0..n {
        *m.entry(who(p)).or_default() += 1;
    }
    m
}

/// Lines of the daemon log holding every one of `words`.
fn log_lines(p: &Proxy, words: &[&str]) -> Vec<String> {
    p.log()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// Waits (polling every 5 ms) until the log has `n` lines with all of `words`; returns the
/// value of `probe` seen right then.
#[track_caller]
fn wait_log<T>(p: &Proxy, words: &[&str], n: usize, limit: Duration, probe: impl Fn() -> T) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let v = probe();
        if log_lines(p, words).len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} log line(s) with {words:?} within {limit:?}\n--- log ---\n{}",
            p.log()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Column `column` of `show servers` for `server`; `reason`, the last column, is free text
/// and runs to the end of the line.
fn servers_column(p: &Proxy, server: &str, column: &str) -> Option<String> {
    let (_, out) = p.ctl("show servers");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next()?.split(' ').collect();
    let col = header.iter().position(|h| *h == column)?;
    let name = header.iter().position(|h| *h == "server")?;
    let words = lines
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|w| w.get(name) == Some(&server))?;
    if col + 1 == header.len() {
        return Some(words.get(col..)?.join(" "));
    }
    words.get(col).map(|s| s.to_string())
}

#[track_caller]
fn assert_health(p: &Proxy, server: &str, want: &str) {
    let h = servers_column(p, server, "health").expect("show servers has a health column");
    assert_eq!(h, want, "show servers health of {server}");
}

/// Two servers `a` (scripted) and `b` behind `web`, round robin, with `health` as the pool's
/// `[pool.app.health]` body.
fn two_servers(a: &str, b: &str, shards: u32, health: &str) -> Proxy {
    let cfg = daemon(shards)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
balance = "round_robin"
servers = [ {{ name = "a", addr = "{{a}}" }}, {{ name = "b", addr = "{{b}}" }} ]

[pool.app.health]
{health}
"#
        );
    Proxy::start_with(&cfg, &[("a", a.to_owned()), ("b", b.to_owned())])
}

/// A server goes down after exactly `fall` failed checks in a row (two failures and a pass do
/// not take it out), requests then all go to the other server, and it comes back after
/// exactly `rise` passes in a row; each transition is logged once with its reason.
#[test]
fn http_get_rise_and_fall_follow_a_flapping_backend() {
    let a = Flappy::start("a");
    let b = Backend::start("b");
    let p = two_servers(
        &a.addr(),
        &b.addr_string(),
        1,
        "method = \"http_get\"\nuri = \"/health\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 3\n",
    );
    let s = spread(&p, 10);
    assert_eq!((s.get("a"), s.get("b")), (Some(&5), Some(&5)), "{s:?}");

    // Two failures, then passes: no transition.
    a.script(&[500, 500], 200);
    let start = a.probes();
    let (_, ok) = observe::poll_until(Duration::from_secs(3), || a.probes(), |n| *n >= start + 4);
    assert!(ok, "probes go on");
    assert!(log_lines(&p, &["server down"]).is_empty(), "{}", p.log());

    // Three failures: down exactly when the third has been answered.
    a.script(&[500, 500, 500], 200);
    let left = wait_log(
        &p,
        &["health check: server down", "server=a"],
        1,
        Duration::from_secs(3),
        || a.queue_left(),
    );
    assert_eq!(left, 0, "down before the third failure");
    // Then 200s: with rise = 2 it is up again after two of them. Meanwhile only b serves.
    a.script(&[500, 500, 500, 200, 500, 200, 200], 200);
    let s = spread(&p, 6);
    assert_eq!(s.get("b"), Some(&6), "{s:?}");
    assert_health(&p, "a", "down");
    let left = wait_log(
        &p,
        &["health check: server up", "server=a"],
        1,
        Duration::from_secs(5),
        || a.queue_left(),
    );
    assert_eq!(left, 0, "up before two passes in a row");
    let down = log_lines(&p, &["health check: server down", "server=a"]);
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains("status 500 not in 2xx,3xx"), "{down:?}");
    assert!(log_lines(&p, &["health check: server up", "server=a"])[0].contains("status 200"));
    assert_health(&p, "a", "up");
    let s = spread(&p, 10);
    assert_eq!((s.get("a"), s.get("b")), (Some(&5), Some(&5)), "{s:?}");
    assert!(log_lines(&p, &["server=b", "health check"]).is_empty());
}

/// `expect_body_regex` must match in the response (head or body): a 200 whose body no longer
/// says ALIVE fails, with the regex in the reason.
#[test]
fn expect_body_regex_match_and_mismatch() {
    let a = Flappy::start("a");
    let b = Flappy::start("b");
    a.set_body("state: ALIVE");
    b.set_body("state: ALIVE");
    let p = two_servers(
        &a.addr(),
        &b.addr(),
        1,
        "method = \"http_get\"\nuri = \"/health\"\nexpect_body_regex = \"ALIVE\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
    );
    let n = b.probes();
    let (_, ok) = observe::poll_until(Duration::from_secs(3), || b.probes(), |v| *v >= n + 2);
    assert!(ok);
    assert!(log_lines(&p, &["server down"]).is_empty(), "{}", p.log());
    a.set_body("state: DEAD");
    wait_log(
        &p,
        &["health check: server down", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    let line = &log_lines(&p, &["server down", "server=a"])[0];
    assert!(line.contains("body did not match /ALIVE/"), "{line}");
    assert_health(&p, "a", "down");
    assert_eq!(servers_column(&p, "a", "check").as_deref(), Some("fail"));
    let reason = servers_column(&p, "a", "reason").unwrap();
    assert_eq!(reason, "status 200, body did not match /ALIVE/");
    assert_eq!(servers_column(&p, "b", "check").as_deref(), Some("ok"));
    assert_eq!(spread(&p, 4).get("b"), Some(&4));
    a.set_body("ALIVE again");
    wait_log(
        &p,
        &["health check: server up", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    assert!(spread(&p, 4).contains_key("a"));
}

/// A relative `uri` is sent as HTTP/1.0 with no Host; an absolute one as HTTP/1.1 with its
/// Host and `Connection: close`; http_head sends HEAD; the User-Agent defaults to
/// `shardgate-health-check`.
#[test]
fn request_lines_of_http_head_and_http_get() {
    let a = Flappy::start("a");
    let b = Flappy::start("b");
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "one"

[[http]]
name = "web2"
listen = ["127.0.0.1:{port:web2}"]
default_pool = "two"

[pool.one]
servers = [ { name = "a", addr = "{a}" } ]
[pool.one.health]
method = "http_head"
uri = "/health/head"
interval = "100ms"

[pool.two]
servers = [ { name = "b", addr = "{b}" } ]
[pool.two.health]
method = "http_get"
uri = "http://check.example:8080/hc?x=1"
user_agent = "probe/1.0"
interval = "100ms"
"#;
    let _p = Proxy::start_with(&cfg, &[("a", a.addr()), ("b", b.addr())]);
    let (_, ok) = observe::poll_until(
        Duration::from_secs(3),
        || (a.probes(), b.probes()),
        |(x, y)| *x >= 2 && *y >= 2,
    );
    assert!(ok, "both pools probed");
    let h = &a.probe_heads()[0];
    assert_eq!(h.start_line, "HEAD /health/head HTTP/1.0");
    assert_eq!(h.header("user-agent"), Some("shardgate-health-check"));
    assert_eq!(h.header("host"), None);
    let h = &b.probe_heads()[0];
    assert_eq!(h.start_line, "GET /hc?x=1 HTTP/1.1");
    assert_eq!(h.header("host"), Some("check.example:8080"));
    assert_eq!(h.header("connection"), Some("close"));
    assert_eq!(h.header("user-agent"), Some("probe/1.0"));
}

/// `tcp`: a refused connect counts as a failure, an accepted one as a pass.
#[test]
fn tcp_check_follows_a_server_that_dies_and_comes_back() {
    let b = Backend::start("b");
    let port = free_port();
    let a = Backend::start_on("a", port, BackendOpts::default());
    let p = two_servers(
        &format!("127.0.0.1:{port}"),
        &b.addr_string(),
        1,
        "method = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n",
    );
    assert!(spread(&p, 4).contains_key("a"));
    drop(a);
    // The accept loop drops its listener on the connection that wakes it: wait for refusals.
    let (_, ok) = observe::poll_until(
        Duration::from_secs(3),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        |refused| *refused,
    );
    assert!(ok, "a still accepts");
    wait_log(
        &p,
        &["health check: server down", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    let line = &log_lines(&p, &["server down", "server=a"])[0];
    assert!(line.contains("connect refused"), "{line}");
    let _a = Backend::start_on("a", port, BackendOpts::default());
    wait_log(
        &p,
        &["health check: server up", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    assert!(spread(&p, 4).contains_key("a"));
}

/// A server the checker found down stays out even though TCP connects to it succeed (the
/// passive side would call it alive): a pool whose only server fails its check answers 503,
/// and the server sees no request.
#[test]
fn active_down_is_not_undone_by_a_working_connect() {
    let a = Flappy::start("a");
    a.script(&[], 503);
    let cfg = daemon(2)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
down_time = "100ms"
servers = [ { name = "a", addr = "{a}" } ]

[pool.app.health]
method = "http_get"
uri = "/health"
interval = "100ms"
rise = 1
fall = 1
"#;
    let p = Proxy::start_with(&cfg, &[("a", a.addr())]);
    wait_log(
        &p,
        &["health check: server down", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    for _ in 0..6 {
        assert_eq!(who(&p), "status 503");
        thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(
        a.served.load(Ordering::SeqCst),
        0,
        "requests reached a down server"
    );
    a.script(&[], 200);
    wait_log(
        &p,
        &["health check: server up", "server=a"],
        1,
        Duration::from_secs(3),
        || (),
    );
    assert_eq!(who(&p), "a");
}

/// A tiny agent: answers every connection with the current line, then closes.
struct Agent {
    port: u16,
    line: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Agent {
    fn start(line: &str) -> Agent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let line = Arc::new(Mutex::new(line.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ln, st) = (line.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let text = format!("{}\n", ln.lock().unwrap());
                        let _ = s.write_all(text.as_bytes());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Agent { port, line, stop }
    }

    fn say(&self, line: &str) {
        *self.line.lock().unwrap() = line.into();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The agent's `50%` halves a server's weight, `drain` takes it out of balancing, `ready 100%`
/// brings it back; a line with an unknown word changes nothing.
#[test]
fn agent_sets_weight_and_drain() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let agent = Agent::start("50%");
    let cfg = daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
balance = "round_robin"
servers = [
  {{ name = "a", addr = "{{a}}", weight = 10, agent_port = {} }},
  {{ name = "b", addr = "{{b}}", weight = 10 }},
]

[pool.app.health]
method = "tcp"
interval = "100ms"
agent_interval = "50ms"
"#,
            agent.port
        );
    let p = Proxy::start_with(&cfg, &[("a", a.addr_string()), ("b", b.addr_string())]);
    wait_log(
        &p,
        &["agent: weight percentage", "pct=50"],
        1,
        Duration::from_secs(3),
        || (),
    );
    let s = spread(&p, 30);
    assert_eq!((s.get("a"), s.get("b")), (Some(&10), Some(&20)), "{s:?}");
    agent.say("drain");
    wait_log(
        &p,
        &["agent: admin state", "state=drain"],
        1,
        Duration::from_secs(3),
        || (),
    );
    assert_eq!(spread(&p, 6).get("b"), Some(&6));
    agent.say("sideways");
    wait_log(
        &p,
        &["agent line ignored"],
        1,
        Duration::from_secs(3),
        || (),
    );
    assert_eq!(spread(&p, 4).get("b"), Some(&4));
    agent.say("ready 100%");
    wait_log(
        &p,
        &["agent: admin state", "state=ready"],
        1,
        Duration::from_secs(3),
        || (),
    );
    wait_log(
        &p,
        &["agent: weight percentage", "pct=100"],
        1,
        Duration::from_secs(3),
        || (),
    );
    let s = spread(&p, 10);
    assert_eq!((s.get("a"), s.get("b")), (Some(&5), Some(&5)), "{s:?}");
}

/// With 2 shards the backend still sees one probe per interval: one checker for the process.
#[test]
fn one_checker_for_the_process_whatever_the_shards() {
    let a = Flappy::start("a");
    let b = Flappy::start("b");
    let p = two_servers(
        &a.addr(),
        &b.addr(),
        2,
        "method = \"http_get\"\nuri = \"/health\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
    );
    // Let the first probes happen, then count over a known window.
    let (_, ok) = observe::poll_until(Duration::from_secs(3), || a.probes(), |n| *n >= 1);
    assert!(ok);
    let (a0, b0) = (a.probes(), b.probes());
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    let (da, db) = (a.probes() - a0, b.probes() - b0);
    let expected = t0.elapsed().as_millis() as usize / 200;
    for (name, d) in [("a", da), ("b", db)] {
        assert!(
            // Two checkers would give twice as many; a loaded machine may give fewer.
            d * 2 >= expected && d <= expected + 1,
            "{name}: {d} probes in {:?}, expected about {expected} (one checker)",
            t0.elapsed()
        );
    }
    assert!(
        log_lines(&p, &["health checker started"]).len() == 1,
        "{}",
        p.log()
    );
    drop(p);
}

/// The checker stops with the daemon: SIGTERM during checks (one of them hanging on a server
/// that never answers) still exits 0 promptly.
#[test]
fn checker_stops_with_the_daemon() {
    let a = Flappy::start("a");
    // A server that accepts and never answers: its checks run into their timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = two_servers(
        &a.addr(),
        &silent.local_addr().unwrap().to_string(),
        2,
        "method = \"http_get\"\nuri = \"/health\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
    );
    let (_, ok) = observe::poll_until(Duration::from_secs(3), || a.probes(), |n| *n >= 1);
    assert!(ok);
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let st = p.wait_exit(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", p.log());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}
