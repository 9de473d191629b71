//! The command socket through `shardgate ctl`: `help`, errors and exit codes, `show stats` and
//! `show traffic http` after known traffic, and graceful stop (`stop daemon`, SIGTERM) with a
//! slow request in flight.

mod common;

use common::observe::{stat, stats, stats_until};
use common::proxy::ctl_at;
use common::*;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

fn proxy_for(app: &Backend, daemon_extra: &str) -> Proxy {
    proxy::single_pool(app.addr_string(), 1, daemon_extra, "", "")
}

#[test]
fn help_lists_the_commands_and_bad_commands_fail() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "");
    let (code, out) = p.ctl("help");
    assert_eq!(code, 0, "help: {out}");
    for cmd in ["show stats", "show traffic http", "stop daemon", "help"] {
        assert!(out.contains(cmd), "help does not list {cmd:?}:\n{out}");
    }
    for bad in ["frobnicate", "show", "show nothing", ""] {
        let (code, out, err) = p.ctl_full(bad);
        assert_eq!(
            code, 1,
            "ctl {bad:?} should exit 1 (stdout {out:?}, stderr {err:?})"
        );
        assert!(
            out.trim_start().starts_with("error:") || err.trim_start().starts_with("error:"),
            "ctl {bad:?}: no error line (stdout {out:?}, stderr {err:?})"
        );
    }
    // The daemon still answers after bad commands.
    assert_eq!(p.ctl("show stats").0, 0);
}

#[test]
fn ctl_without_a_daemon_exits_2() {
    let dir = proxy::temp_dir("noctl");
    let (code, out, err) = ctl_at(&dir.join("nobody.sock"), "show stats");
    assert_eq!(code, 2, "ctl with no daemon: stdout {out:?} stderr {err:?}");
    assert!(!err.is_empty(), "ctl should say why it failed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn show_stats_follows_known_traffic() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "");
    // The harness's start-up probe (one connection per listen address) must be counted and
    // gone before the baseline is taken.
    let base = stats_until(
        &p,
        Duration::from_secs(5),
        "the start-up probe accepted and closed",
        |s| stat(s, "connections.active") == 0 && stat(s, "connections.accepted") >= 1,
    );
    for k in [
        "connections.reading",
        "connections.writing",
        "connections.waiting",
    ] {
        assert_eq!(stat(&base, k), 0, "{k} with no client connected: {base:?}");
    }

    // One idle keep-alive connection, one with half a head, one waiting for a slow answer.
    let mut idle = Conn::connect(p.addr("web"));
    assert_eq!(idle.get("/idle", "h").status, 200);
    let mut half = Conn::connect(p.addr("web"));
    half.send(b"GET /half HTTP/1.1\r\nHo");
    let mut slow = Conn::connect(p.addr("web"));
    slow.send(&req("GET", "/delay/1500", "h", &[], b""));

    let s = stats_until(&p, Duration::from_secs(5), "3 active connections", |s| {
        stat(s, "connections.active") == 3
    });
    let line = |s: &HashMap<String, i64>| {
        (
            stat(s, "connections.reading"),
            stat(s, "connections.writing"),
            stat(s, "connections.waiting"),
        )
    };
    let s = if line(&s) == (1, 1, 1) {
        s
    } else {
        // The half head may take a moment to be read.
        thread::sleep(Duration::from_millis(300));
        stats(&p)
    };
    assert_eq!(
        line(&s),
        (1, 1, 1),
        "(reading, writing, waiting) with one of each: {s:?}"
    );
    assert_eq!(
        stat(&s, "connections.accepted") - stat(&base, "connections.accepted"),
        3,
        "{s:?}"
    );
    let done = stat(&s, "requests") - stat(&base, "requests");
    assert!(
        (1..=2).contains(&done),
        "requests after 1 finished and 1 in flight: {done} ({s:?})"
    );

    half.send(b"st: h\r\n\r\n");
    assert_eq!(half.read_response().status, 200);
    assert_eq!(slow.read_response().status, 200);
    for c in [&mut idle, &mut half, &mut slow] {
        assert_eq!(c.get("/again", "h").status, 200);
    }
    let s = stats_until(&p, Duration::from_secs(5), "3 waiting", |s| {
        stat(s, "connections.waiting") == 3
    });
    assert_eq!(stat(&s, "requests") - stat(&base, "requests"), 6, "{s:?}");
    assert_eq!(line(&s), (0, 0, 3), "{s:?}");

    drop((idle, half, slow));
    let s = stats_until(&p, Duration::from_secs(5), "0 active", |s| {
        stat(s, "connections.active") == 0
    });
    assert_eq!(
        stat(&s, "connections.accepted") - stat(&base, "connections.accepted"),
        3,
        "{s:?}"
    );
    assert_eq!(
        stat(&s, "connections.handled") - stat(&base, "connections.handled"),
        3,
        "{s:?}"
    );
    assert_eq!(line(&s), (0, 0, 0), "{s:?}");
    assert_eq!(stat(&s, "requests") - stat(&base, "requests"), 6, "{s:?}");
}

#[test]
fn show_traffic_http_counts_per_site() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "");
    let port = p.port("web");
    let mut c = Conn::connect(p.addr("web"));
    // a.example: 3 uploads of 1000 bytes, with varying Host spellings.
    for host in ["a.example", "A.Example", &format!("a.example:{port}")] {
        c.send(&req("POST", "/echo", host, &[], &pattern(0, 1000)));
        assert_eq!(c.read_response().status, 200);
    }
    // b.example: 2 downloads of 5000 bytes.
    for _ in 0..2 {
        let resp = c.get("/download/5000", "b.example");
        assert_eq!(resp.body.len(), 5000);
    }
    // c.example: one slow request.
    assert_eq!(c.get("/delay/300", "c.example").status, 200);

    let (code, out) = p.ctl("show traffic http");
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "frontend",
            "site",
            "requests",
            "bytes_in",
            "bytes_out",
            "time_total_ms",
            "time_mean_ms"
        ],
        "header line of:\n{out}"
    );
    let mut rows: HashMap<String, Vec<u64>> = HashMap::new();
    for l in lines {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "row {l:?} of:\n{out}");
        let nums: Vec<u64> = cols[2..]
            .iter()
            .map(|n| {
                n.parse::<f64>()
                    .unwrap_or_else(|_| panic!("non-numeric {n:?} in {l:?}")) as u64
            })
            .collect();
        assert_eq!(cols[0], "web", "frontend column: {l:?}");
        assert!(
            rows.insert(cols[1].to_string(), nums).is_none(),
            "site {} listed twice:\n{out}",
            cols[1]
        );
    }
    let row = |site: &str| {
        rows.get(site)
            .unwrap_or_else(|| panic!("no row for {site}:\n{out}"))
            .clone()
    };
    let (a, b, cc) = (row("a.example"), row("b.example"), row("c.example"));
    assert_eq!(rows.len(), 3, "exactly the three sites:\n{out}");
    assert_eq!((a[0], b[0], cc[0]), (3, 2, 1), "requests per site:\n{out}");
    assert!(
        a[1] >= 3000,
        "a.example bytes_in covers 3 bodies of 1000:\n{out}"
    );
    assert!(
        b[2] >= 10_000,
        "b.example bytes_out covers 2 bodies of 5000:\n{out}"
    );
    assert!(
        b[1] < 3000 && a[2] < 10_000,
        "bytes attributed to the wrong site:\n{out}"
    );
    assert!(
        cc[3] >= 250,
        "c.example time_total_ms includes a 300 ms answer:\n{out}"
    );
    assert!(
        cc[4] >= 250 && cc[4] <= cc[3],
        "c.example time_mean_ms:\n{out}"
    );
}

/// Starts a slow request, asks the daemon to stop by `how`, and checks the request completes,
/// the daemon exits 0 and the control socket is gone.
fn graceful_stop(how: &str) {
    let app = Backend::start("app");
    let mut p = proxy_for(&app, "stop_timeout = \"10s\"\n");
    let addr = p.addr("web");
    let inflight = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.send(&req("GET", "/delay/2000", "h", &[], b""));
        c.try_read_response()
    });
    // Wait until the request has reached the backend.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(app.requests(), 1, "slow request never reached the backend");
    match how {
        "ctl" => {
            let (code, out) = p.ctl("stop daemon");
            assert_eq!(code, 0, "stop daemon: {out}");
        }
        _ => p.signal(libc::SIGTERM),
    }
    let resp = inflight.join().unwrap();
    match resp {
        Ok(r) => assert_eq!(
            (r.status, r.backend()),
            (200, "app"),
            "in-flight request during stop: {}",
            r.summary()
        ),
        Err(e) => panic!("in-flight request during stop ({how}) failed: {e}"),
    }
    let st = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("daemon still running 10 s after stop ({how})"));
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after stop ({how}): {st}\n{}",
        p.log()
    );
    assert!(
        !p.socket.exists(),
        "control socket {} left behind",
        p.socket.display()
    );
}

#[test]
fn stop_daemon_lets_the_in_flight_request_finish() {
    graceful_stop("ctl");
}

#[test]
fn sigterm_lets_the_in_flight_request_finish() {
    graceful_stop("sigterm");
}

#[test]
fn stop_gives_up_on_requests_after_stop_timeout() {
    let app = Backend::start("app");
    let mut p = proxy_for(&app, "stop_timeout = \"1s\"\n");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/delay/8000", "h", &[], b""));
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    p.signal(libc::SIGTERM);
    let st = p.wait_exit(Duration::from_secs(6));
    assert!(
        st.is_some(),
        "daemon ignored stop_timeout = 1s: still running after {:?}",
        start.elapsed()
    );
    assert!(!p.socket.exists(), "control socket left behind");
}

/// The suite runs once per driver: make sure the daemon really ran the one asked for.
#[test]
fn the_requested_io_driver_is_used() {
    let driver = proxy::io_driver();
    let app = Backend::start("app");
    let p = proxy_for(&app, "");
    let mut c = Conn::connect(p.addr("web"));
    assert_eq!(c.get("/", "h").status, 200);
    if driver != "auto" {
        let log = p.log().to_ascii_lowercase();
        assert!(
            log.contains(&format!("driver={driver}")),
            "io_driver = {driver:?} but the log says:\n{log}"
        );
    }
}
