//! End-to-end tests: the real `loadgen` binary against `loadgen serve` (and a real MariaDB)
//! on loopback. Counts are checked against the server's own counters, not loadgen's word.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use util::*;

const LIMIT: Duration = Duration::from_secs(60);

fn n(v: &serde_json::Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

#[test]
fn exact_request_count_matches_the_server() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let r = run_json(
        &["http", "-c", "16", "-t", "2", "-n", "5000", &s.url("/")],
        LIMIT,
    );
    assert_eq!(n(&r, "responses"), 5000.0);
    assert_eq!(n(&r, "status.200"), 5000.0);
    assert_eq!(n(&r, "error_total"), 0.0);
    let st = s.stats();
    assert_eq!(st["requests"], 5000, "{st}");
    // 16 load connections + loadgen's probe connection + this stats connection.
    assert_eq!(st["connections"], 18, "{st}");
}

#[test]
fn close_mode_opens_one_connection_per_request() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let r = run_json(
        &["http", "-c", "4", "-n", "300", "--close", &s.url("/")],
        LIMIT,
    );
    assert_eq!(n(&r, "responses"), 300.0);
    assert_eq!(n(&r, "error_total"), 0.0);
    let st = s.stats();
    assert_eq!(st["requests"], 300, "{st}");
    // One per request + loadgen's probe + this stats connection: none opened unused.
    assert_eq!(st["connections"], 302, "{st}");
}

#[test]
fn several_urls_are_used_in_turn() {
    let s = Serve::start(&[]);
    let (a, b) = (s.url("/a?status=201"), s.url("/b?status=202&size=100"));
    let r = run_json(&["http", "-c", "2", "-t", "1", "-n", "1000", &a, &b], LIMIT);
    // Two connections, each alternating from a different start: exactly half each.
    assert_eq!(n(&r, "status.201"), 500.0, "{r:#}");
    assert_eq!(n(&r, "status.202"), 500.0, "{r:#}");
    assert_eq!(s.stats()["requests"], 1000);
}

#[test]
fn rate_mode_holds_the_rate() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let r = run_json(
        &["http", "-c", "20", "-R", "2000", "-d", "3s", &s.url("/")],
        LIMIT,
    );
    let rate = n(&r, "req_per_s");
    assert!(
        (rate - 2000.0).abs() / 2000.0 < 0.03,
        "achieved {rate} req/s for 2000 asked"
    );
    let served = s.stats()["requests"].as_f64().unwrap();
    assert!(
        (served - 6000.0).abs() / 6000.0 < 0.03,
        "server saw {served} requests, expected ~6000"
    );
    assert_eq!(n(&r, "error_total"), 0.0);
    assert!(r["uncorrected_latency_ms"].is_object());
    assert!(r["latency_measured_from"]
        .as_str()
        .unwrap()
        .contains("scheduled"));
}

/// The classic coordinated-omission demonstration: freeze the server for 1 s in the middle of
/// a constant-rate run. Requests due during the freeze wait for it, and only the corrected
/// histogram (measured from each request's scheduled time) admits it.
#[test]
fn a_one_second_stall_shows_in_corrected_p99_only() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let dir = tempdir();
    let json = format!("{dir}/r.json");
    let child = std::process::Command::new(BIN)
        .args([
            "http",
            "-c",
            "10",
            "-t",
            "1",
            "-R",
            "1000",
            "-d",
            "4s",
            "--json",
            &json,
            &s.url("/"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(s.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(1));
    signal(s.pid(), libc::SIGCONT);
    let out = wait_bounded(child, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let corrected = n(&r, "latency_ms.p99");
    let uncorrected = n(&r, "uncorrected_latency_ms.p99");
    assert!(
        corrected > 700.0,
        "corrected p99 {corrected} ms should show the 1 s stall"
    );
    assert!(
        uncorrected < 100.0,
        "uncorrected p99 {uncorrected} ms hides it (only ~10 requests saw it)"
    );
    assert!(
        n(&r, "uncorrected_latency_ms.max") > 900.0,
        "the stalled requests themselves waited ~1 s"
    );
    assert_eq!(n(&r, "error_total"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ten_thousand_connections_are_held() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let dir = tempdir();
    let json = format!("{dir}/r.json");
    let child = std::process::Command::new(BIN)
        .args([
            "http",
            "-c",
            "10000",
            "--ramp",
            "2s",
            "-R",
            "2000",
            "-d",
            "3s",
            "--json",
            &json,
            &s.url("/"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The server must see all 10,000 open at once (plus the stats connection itself).
    let start = Instant::now();
    let (mut max_open, mut polls) = (0, 0);
    while start.elapsed() < Duration::from_secs(5) {
        polls += 1;
        max_open = max_open.max(s.stats()["open"].as_u64().unwrap());
        if max_open >= 10_001 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = wait_bounded(child, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        max_open >= 10_001,
        "server saw at most {max_open} open connections"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(n(&r, "open_at_load_start"), 10000.0);
    assert_eq!(n(&r, "open_at_end"), 10000.0);
    assert_eq!(n(&r, "connections_opened"), 10000.0);
    assert_eq!(n(&r, "error_total"), 0.0);
    // 10,000 load connections + loadgen's probe + one per stats request (polls, and this one).
    let st = s.stats();
    assert_eq!(
        st["connections"].as_u64().unwrap(),
        10_000 + 1 + polls + 1,
        "{st}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_urls_are_clear_errors() {
    for (url, why) in [
        ("ftp://127.0.0.1/", "scheme 'ftp' is not supported"),
        ("http://127.0.0.1:99999/", "bad port"),
        ("127.0.0.1:80/", "expected http://"),
        ("http://no-such-host.invalid/", "cannot resolve host"),
    ] {
        let out = run(&["http", "-n", "1", url], LIMIT);
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = text(&out.stderr);
        assert!(err.contains(why) && err.contains(url), "{url}: {err}");
    }
}

#[test]
fn refused_connection_is_a_clear_error() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/");
    let out = run(&["http", "-n", "10", &url], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to {url}")) && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn too_many_connections_are_refused_before_starting() {
    let s = Serve::start(&[]);
    let out = run(&["http", "-c", "30000", "-n", "1", &s.url("/")], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("open files") && err.contains("limit is"),
        "{err}"
    );
    // Nothing was sent.
    assert_eq!(s.stats()["requests"], 0);
}

#[test]
fn source_addresses_are_used() {
    let s = Serve::start(&[]);
    let r = run_json(
        &[
            "http",
            "-c",
            "8",
            "-n",
            "400",
            "--source",
            "127.0.0.2-127.0.0.5",
            &s.url("/"),
        ],
        LIMIT,
    );
    assert_eq!(n(&r, "responses"), 400.0);
    assert_eq!(n(&r, "error_total"), 0.0);
}

/// A server that answers every request with garbage, or with a truncated body.
fn bad_server(reply: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    port
}

#[test]
fn malformed_and_truncated_responses_are_counted_not_fatal() {
    for (reply, class) in [
        (&b"HTTP/1.1 2OO OK\r\n\r\n"[..], "bad_response"),
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            "bad_response",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"[..],
            "closed",
        ),
    ] {
        let port = bad_server(reply);
        let r = run_json(
            &[
                "http",
                "-c",
                "1",
                "-n",
                "5",
                &format!("http://127.0.0.1:{port}/"),
            ],
            LIMIT,
        );
        assert_eq!(n(&r, &format!("errors.{class}")), 5.0, "{r:#}");
        assert_eq!(n(&r, "failed_requests"), 5.0);
        assert_eq!(n(&r, "responses"), 0.0);
    }
}

#[test]
fn report_files_are_written() {
    let s = Serve::start(&[]);
    let dir = tempdir();
    let (hgrm, svg) = (format!("{dir}/l.hgrm"), format!("{dir}/l.svg"));
    let out = run(
        &[
            "http",
            "-c",
            "4",
            "-n",
            "500",
            "--hgrm",
            &hgrm,
            "--plot",
            &svg,
            &s.url("/"),
        ],
        LIMIT,
    );
    assert!(out.status.success());
    let report = text(&out.stdout);
    assert!(
        report.contains("500 replies") && report.contains("200: 500"),
        "{report}"
    );
    assert!(
        !report.contains('\r'),
        "no progress line when stdout is not a terminal"
    );
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        h.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"),
        "{h}"
    );
    assert!(h.contains("Total count    =          500]"), "{h}");
    let p = std::fs::read_to_string(&svg).unwrap();
    assert!(p.starts_with("<svg") && p.contains("<polyline"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_answers_size_delay_status_and_counts() {
    let s = Serve::start(&["--name", "app7"]);
    let r = http_get(s.port, "/x?size=10&status=503");
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        r.contains("X-Backend: app7\r\n") && r.contains("Content-Length: 10\r\n"),
        "{r}"
    );
    assert!(r.ends_with("\r\n\r\napp7\nxxxxx"), "{r:?}");
    let default = http_get(s.port, "/");
    assert!(default.ends_with("\r\n\r\napp7\n"), "{default:?}");
    let t = Instant::now();
    let slow = http_get(s.port, "/?delay=300");
    assert!(t.elapsed() >= Duration::from_millis(300) && slow.starts_with("HTTP/1.1 200"));
    assert!(http_get(s.port, "/?status=abc").starts_with("HTTP/1.1 400"));

    // Pipelined keep-alive requests, the first delayed: replies come back in order.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /?delay=100&size=1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /?size=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /?size=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let bodies: Vec<&str> = all
        .split("\r\n\r\n")
        .skip(1)
        .map(|b| b.split("HTTP/1.1").next().unwrap())
        .collect();
    assert_eq!(bodies, ["a", "ap", "app"], "{all:?}");

    let st = s.stats();
    assert_eq!(st["name"], "app7");
    assert_eq!(st["requests"], 7, "{st}");
    let printed = s.stop();
    assert!(
        printed.contains("serve app7: 6 connections accepted, 7 requests served"),
        "{printed}"
    );
}

/// MySQL mode against a real MariaDB started by the project's provisioning script.
#[test]
fn mysql_mode_against_mariadb() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/mariadb.sh");
    assert!(std::path::Path::new(script).exists(), "{script} is missing");
    let _g = heavy();
    let out = std::process::Command::new("bash")
        .args([script, "start", "1"])
        .output()
        .expect("run mariadb.sh");
    assert!(
        out.status.success(),
        "mariadb.sh start failed: {}",
        text(&out.stderr)
    );
    let env_path = text(&out.stdout).trim().lines().last().unwrap().to_string();
    struct Stop(String, &'static str);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash")
                .args([self.1, "stop", &self.0])
                .output();
        }
    }
    let _stop = Stop(env_path.clone(), script);
    let env = std::fs::read_to_string(&env_path).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let (port, cnf) = (get("MARIADB_PORT_0"), get("MARIADB_CNF_0"));
    let com_select = || -> u64 {
        let o = std::process::Command::new("mariadb")
            .args([
                &format!("--defaults-file={cnf}"),
                "-N",
                "-B",
                "-e",
                "SHOW GLOBAL STATUS LIKE 'Com_select'",
            ])
            .output()
            .unwrap();
        text(&o.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = com_select();
    let common = [
        "mysql",
        "--port",
        &port,
        "--user",
        "sg_a",
        "--password",
        "pw_a",
        "--db",
        "app",
    ];
    let mut args = common.to_vec();
    args.extend(["--query", "SELECT 1", "-c", "8", "-n", "3000"]);
    let r = run_json(&args, LIMIT);
    assert_eq!(n(&r, "responses"), 3000.0);
    assert_eq!(n(&r, "status.OK"), 3000.0);
    assert_eq!(n(&r, "error_total"), 0.0);
    // The server counted them too (the login preflight sends no SELECT).
    assert_eq!(com_select() - before, 3000, "server-side Com_select");

    // A result set with rows bigger than the streaming threshold, at a constant rate.
    let mut args = common.to_vec();
    args.extend([
        "--query",
        "SELECT REPEAT('a', 100000) UNION ALL SELECT 'b'",
        "-c",
        "2",
        "-n",
        "200",
        "-R",
        "400",
    ]);
    let r = run_json(&args, LIMIT);
    assert_eq!(n(&r, "status.OK"), 200.0);
    assert!(n(&r, "bytes_read") > 200.0 * 100_000.0);

    // A failing statement is a complete reply counted by error number.
    let mut args = common.to_vec();
    args.extend(["--query", "SELEC 1", "-c", "1", "-n", "5"]);
    let r = run_json(&args, LIMIT);
    assert_eq!(n(&r, "status.ERR 1064"), 5.0, "{r:#}");
    assert_eq!(n(&r, "non_success"), 5.0);

    // Bad credentials: one clear error before the run.
    let out = run(
        &[
            "mysql",
            "--port",
            &port,
            "--user",
            "sg_a",
            "--password",
            "nope",
            "-n",
            "5",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("login as 'sg_a' failed: 1045"), "{err}");
}

/// The verify verdict, against `loadgen serve` directly (the run through shardgate is
/// bench/verify.sh): a small run passes; an unreachable throughput target fails with exit 1.
#[test]
fn verify_verdict_and_exit_status() {
    let _g = heavy();
    let s = Serve::start(&[]);
    let url = s.url("/");
    let small = [
        "verify",
        &url,
        "-c",
        "300",
        "-R",
        "600",
        "-d",
        "1s",
        "--ramp",
        "400ms",
        "--min-rate",
        "500",
    ];
    let out = run(&small, LIMIT);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert!(
        report.contains("[PASS] connections: 300 open when load started"),
        "{report}"
    );
    assert!(report.contains("verify: PASS"), "{report}");

    let mut strict = small.to_vec();
    strict.truncate(small.len() - 2);
    strict.extend(["--min-rate", "100000"]);
    let out = run(&strict, LIMIT);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("[FAIL] throughput") && report.contains("verify: FAIL"),
        "{report}"
    );
}
