//! The access log and the traffic log, black-box: the real binary, loopback backends, files in
//! a temp dir. Every wait is bounded.
//!
//! Access log: one line per request (counted exactly, from the harness and from loadgen), each
//! format parses (combined by nginx's pattern, json by serde_json), fields agree with the
//! traffic counters, failovers and our own answers carry their server and reason, sampling logs
//! the configured fraction, a reopen after a rename loses no line, and a writer that cannot
//! keep up (a FIFO nobody reads) makes lines dropped and counted, never requests wait.
//!
//! Traffic log: periods sum exactly to `show traffic` across a graceful stop and a restart
//! (numbering continues), across a reload and across a binary upgrade (carried totals counted
//! once), and an interrupted period left by a crash is cut off and its number used again.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{proxy::temp_dir, req, Backend, Conn, Proxy};

fn config(shards: u32, daemon_extra: &str, frontend_extra: &str) -> String {
    common::daemon(shards)
        + daemon_extra
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
{frontend_extra}

[pool.app]
servers = [ {{ name = "app1", addr = "{{app}}" }} ]
"#
        )
}

fn stop(p: &mut Proxy) {
    let (code, out) = p.ctl("stop daemon");
    assert_eq!(code, 0, "stop daemon: {out}");
    let st = p
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon did not stop within 20s");
    assert!(st.success(), "exit status {st}\n{}", p.log());
}

/// `n` GETs over a few keep-alive connections, hosts `a.example` and `b.example` alternating;
/// returns how many went to each host.
fn traffic(p: &Proxy, n: usize, path: &str) -> BTreeMap<String, u64> {
    let mut per = BTreeMap::new();
    let mut conns: Vec<Conn> = (0..4).map(|_| Conn::connect(p.addr("web"))).collect();
    for i in 0..n {
        let host = if i % 2 == 0 { "a.example" } else { "b.example" };
        let c = &mut conns[i % 4];
        c.send(&req(
            "GET",
            path,
            host,
            &[
                ("User-Agent", "logs-test/1"),
                ("Referer", "http://ref.example/x"),
            ],
            b"",
        ));
        let r = c.read_response();
        assert_eq!(r.status, 200, "{}", r.summary());
        *per.entry(host.to_string()).or_default() += 1;
    }
    per
}

/// `show traffic http` rows of frontend `web` (totals, not the last_period section):
/// site → [requests, bytes_in, bytes_out].
fn shown_totals(p: &Proxy) -> BTreeMap<String, [u64; 3]> {
    let (code, out) = p.ctl("show traffic http");
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| l.starts_with("web "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (f[1].to_string(), [n(2), n(3), n(4)])
        })
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stat(p: &Proxy, name: &str) -> u64 {
    let (_, out) = p.ctl("show stats");
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in show stats:\n{out}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn json_lines_equal_requests_and_agree_with_the_counters() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-json");
    let log = dir.join("access.json");
    let cfg = config(
        2,
        "",
        &format!(
            "access_log = {{ path = \"{}\", format = \"json\" }}",
            log.display()
        ),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    let sent = traffic(&p, 60, "/json?q=1");
    let totals = shown_totals(&p);
    stop(&mut p);
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 60, "one line per request");
    let mut per: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["status"], 200, "{l}");
        assert_eq!(v["pool"], "app", "{l}");
        assert_eq!(v["server"], "app1", "{l}");
        assert_eq!(v["server_addr"], app.addr_string(), "{l}");
        assert_eq!(v["frontend"], "web", "{l}");
        assert_eq!(v["request"], "GET /json?q=1 HTTP/1.1", "{l}");
        assert_eq!(v["user_agent"], "logs-test/1", "{l}");
        assert_eq!(v["referer"], "http://ref.example/x", "{l}");
        assert_eq!(v["termination"], "ok", "{l}");
        assert_eq!(v["retries"], 0, "{l}");
        assert_eq!(v["client"], "127.0.0.1", "{l}");
        assert!(v["request_time"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(v["upstream_first_byte_time"].as_f64().is_some(), "{l}");
        let site = v["site"].as_str().unwrap().to_string();
        let e = per.entry(site).or_default();
        e[0] += 1;
        e[1] += v["bytes_in"].as_u64().unwrap();
        e[2] += v["bytes_out"].as_u64().unwrap();
    }
    assert_eq!(
        per.get("a.example").map(|e| e[0]),
        sent.get("a.example").copied()
    );
    assert_eq!(per, totals, "the log's sums equal show traffic http");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn combined_matches_nginx_and_bad_heads_are_logged() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-combined");
    let log = dir.join("access.log");
    let cfg = config(
        1,
        "",
        &format!("access_log = {{ path = \"{}\" }}", log.display()),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 10, "/c?x=\"q\"");
    // A malformed head: answered 400 before any exchange.
    let mut c = Conn::connect(p.addr("web"));
    c.send(b"GET /bad HTTP/1.1\r\nHost: a.example\r\nBad Header: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    stop(&mut p);
    // nginx: '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    // "$http_referer" "$http_user_agent"'
    let re = regex::Regex::new(
        r#"^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 11, "{lines:#?}");
    for l in &lines[..10] {
        let m = re
            .captures(l)
            .unwrap_or_else(|| panic!("not combined: {l}"));
        assert_eq!(&m[1], "127.0.0.1");
        assert_eq!(&m[4], r#"GET /c?x=\x22q\x22 HTTP/1.1"#);
        assert_eq!(&m[5], "200");
        assert!(m[6].parse::<u64>().unwrap() > 0);
        assert_eq!(&m[7], "http://ref.example/x");
        assert_eq!(&m[8], "logs-test/1");
    }
    let m = re
        .captures(&lines[10])
        .unwrap_or_else(|| panic!("not combined: {}", lines[10]));
    assert_eq!((&m[4], &m[5], &m[7]), ("GET /bad HTTP/1.1", "400", "-"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn custom_format_fields() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-custom");
    let log = dir.join("access.log");
    let fmt = "$client $site $pool $server $status $bytes_out $request_time $upstream_first_byte_time $sticky $retries $termination";
    let cfg = config(
        1,
        "",
        &format!(
            "access_log = {{ path = \"{}\", format = \"{fmt}\" }}",
            log.display()
        ),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 4, "/download/1000");
    let totals = shown_totals(&p);
    stop(&mut p);
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 4);
    let mut out = 0;
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 11, "{l}");
        assert_eq!(&f[..5], &["127.0.0.1", f[1], "app", "app1", "200"], "{l}");
        assert!(f[1] == "a.example" || f[1] == "b.example", "{l}");
        let bytes: u64 = f[5].parse().unwrap();
        assert!(bytes > 1000, "head + 1000 body bytes: {l}");
        out += bytes;
        let t: f64 = f[6].parse().unwrap();
        let fb: f64 = f[7].parse().unwrap();
        assert!(fb <= t + 0.0005, "first byte within the request time: {l}");
        assert_eq!(&f[8..], &["-", "0", "ok"], "{l}");
    }
    assert_eq!(out, totals.values().map(|t| t[2]).sum::<u64>());
    // An unknown field is a config error naming the key.
    let bad = dir.join("bad.toml");
    fs::write(
        &bad,
        "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\naccess_log = { path = \"/dev/null\", format = \"$client $nope\" }\n[pool.p]\nservers = [{ name = \"a\", addr = \"127.0.0.1:2\" }]\n",
    )
    .unwrap();
    let o = std::process::Command::new(common::proxy::BIN)
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("http[0].access_log.format") && err.contains("$nope"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn sampling_logs_the_configured_fraction() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-sample");
    let log = dir.join("access.log");
    let cfg = config(
        1,
        "",
        &format!(
            "access_log = {{ path = \"{}\", sample = 0.25 }}",
            log.display()
        ),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 100, "/s");
    stop(&mut p);
    // One shard: every 4th request exactly.
    assert_eq!(read_lines(&log).len(), 25);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reopen_after_rename_loses_no_line() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-reopen");
    let log = dir.join("access.log");
    let cfg = config(
        2,
        "",
        &format!("access_log = {{ path = \"{}\" }}", log.display()),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 30, "/before");
    // Requests keep going on another thread while the file is rotated twice.
    let addr = p.addr("web");
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop_flag.clone();
    let during = std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let mut n = 0u64;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) || n < 20 {
            c.send(&req("GET", "/during", "a.example", &[], b""));
            assert_eq!(c.read_response().status, 200);
            n += 1;
        }
        n
    });
    std::thread::sleep(Duration::from_millis(300));
    fs::rename(&log, dir.join("access.log.1")).unwrap();
    let (code, out) = p.ctl("reopen logs");
    assert_eq!((code, out.as_str()), (0, "reopened\n"));
    std::thread::sleep(Duration::from_millis(300));
    fs::rename(&log, dir.join("access.log.2")).unwrap();
    p.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = during.join().unwrap();
    traffic(&p, 10, "/after");
    stop(&mut p);
    let one = read_lines(&dir.join("access.log.1"));
    let two = read_lines(&dir.join("access.log.2"));
    let now = read_lines(&log);
    assert!(
        !two.is_empty(),
        "lines between the reopens went to the second file"
    );
    assert!(
        now.iter().any(|l| l.contains("/after")),
        "after SIGUSR1: a new file"
    );
    assert!(!one.iter().any(|l| l.contains("/after")));
    assert_eq!(
        one.len() + two.len() + now.len(),
        30 + n as usize + 10,
        "no line lost or doubled"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_that_cannot_keep_up_drops_lines_and_counts_them() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-fifo");
    let fifo = dir.join("access.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that is there (so the daemon can open the FIFO) but does not read yet.
    let mut reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let cfg = config(
        1,
        "",
        &format!("access_log = {{ path = \"{}\" }}", fifo.display()),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    // Long request lines: ~4 KiB per log line, so a few hundred requests are more than the
    // pipe (64 KiB) and the writer's channel (about 1 MiB) hold.
    let long = format!("/{}", "x".repeat(4000));
    let n = 600;
    let t = Instant::now();
    traffic(&p, n, &long);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "requests waited: {took:?}");
    // Let the last buffers be flushed (and dropped).
    std::thread::sleep(Duration::from_millis(1200));
    let dropped = stat(&p, "access_log.dropped");
    assert!(dropped > 0, "nothing dropped");
    let (_, text) = p.ctl("show metrics");
    let e = common::prom::Exposition::parse(&text, false);
    assert_eq!(
        e.one("shardgate_access_log_dropped_total", &[]) as u64,
        dropped,
        "the metric and show stats"
    );
    // Now read everything; stopping lets the writer write the rest, then the FIFO closes.
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => all.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "FIFO never closed");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        all
    });
    std::thread::sleep(Duration::from_millis(200));
    stop(&mut p);
    let all = drain.join().unwrap();
    let written = all.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(
        written + dropped,
        n as u64,
        "every line written or counted as dropped ({written} written, {dropped} dropped)"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A traffic log's periods: (number, start, end, rows site → [requests, in, out, time]).
type Periods = Vec<(u64, u64, u64, BTreeMap<String, [u64; 4]>)>;

/// Parse a traffic log, checking that every period is complete (its trailer counts its lines)
/// and the numbers run 1, 2, 3, ...
fn periods(path: &Path) -> Periods {
    periods_of(&fs::read_to_string(path).unwrap())
}

/// The text up to the last trailer line (what a reader may take while the daemon writes).
fn complete(text: &str) -> &str {
    let mut end = 0;
    let mut at = 0;
    for l in text.split_inclusive('\n') {
        at += l.len();
        if l.ends_with('\n') && l.split(' ').nth(3) == Some("end") {
            end = at;
        }
    }
    &text[..end]
}

/// The complete periods of the file now.
fn periods_now(path: &Path) -> Periods {
    periods_of(complete(&fs::read_to_string(path).unwrap_or_default()))
}

fn periods_of(text: &str) -> Periods {
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    let mut out: Periods = Vec::new();
    let mut rows = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
        let (num, start, end) = (n(0), n(1), n(2));
        assert_eq!(num, out.len() as u64 + 1, "numbering: {l}\n{text}");
        if f[3] == "end" {
            assert_eq!(f.len(), 5, "{l}");
            assert_eq!(n(4), rows.len() as u64, "trailer counts the lines: {l}");
            out.push((num, start, end, std::mem::take(&mut rows)));
        } else {
            assert_eq!(f.len(), 10, "{l}");
            assert_eq!(&f[3..5], &["http", "web"], "{l}");
            rows.insert(f[5].to_string(), [n(6), n(7), n(8), n(9)]);
        }
    }
    assert!(rows.is_empty(), "a period without its trailer:\n{text}");
    out
}

fn sum_periods(p: &Periods) -> BTreeMap<String, [u64; 3]> {
    let mut sum: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for (_, _, _, rows) in p {
        for (k, v) in rows {
            let e = sum.entry(k.clone()).or_default();
            for i in 0..3 {
                e[i] += v[i];
            }
        }
    }
    sum
}

fn add(a: &mut BTreeMap<String, [u64; 3]>, b: &BTreeMap<String, [u64; 3]>) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_default();
        for i in 0..3 {
            e[i] += v[i];
        }
    }
}

fn traffic_config(log: &Path) -> String {
    config(
        2,
        &format!(
            "log_statistics_period = \"1s\"\ntraffic_log = \"{}\"\n",
            log.display()
        ),
        "",
    )
}

#[test]
fn periods_sum_to_the_totals_across_a_stop_and_a_restart() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-traffic");
    let log = dir.join("traffic.log");
    let cfg = traffic_config(&log);
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 20, "/one");
    // At least one whole period passes with traffic in it, then more traffic.
    wait_for("a period", Duration::from_secs(5), || {
        !periods_now(&log).is_empty()
    });
    traffic(&p, 11, "/two");
    std::thread::sleep(Duration::from_millis(1100));
    let (_, shown) = p.ctl("show traffic http");
    assert!(shown.contains("\nlast_period number="), "{shown}");
    let mut want = shown_totals(&p);
    stop(&mut p);
    let first = periods(&log);
    assert!(first.len() >= 2, "{first:?}");
    assert_eq!(sum_periods(&first), want, "first run");

    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 7, "/three");
    add(&mut want, &shown_totals(&p));
    stop(&mut p);
    let all = periods(&log);
    assert!(all.len() > first.len());
    assert_eq!(
        &all[..first.len()],
        &first[..],
        "the first run's periods untouched"
    );
    assert_eq!(sum_periods(&all), want, "nothing lost or counted twice");
    for w in all.windows(2) {
        assert!(w[0].2 <= w[1].1, "periods in order: {w:?}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_period_is_cut_off_and_numbering_continues() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-crash");
    let log = dir.join("traffic.log");
    let cfg = traffic_config(&log);
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 10, "/x");
    wait_for("a period with traffic", Duration::from_secs(5), || {
        periods_now(&log).iter().any(|x| !x.3.is_empty())
    });
    // A crash: no final period.
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("killed");
    // (Should the kill have cut a write, the daemon cuts that off too.)
    let before = periods_now(&log);
    let next = before.len() as u64 + 1;
    // And a period the crash cut in the middle of its write.
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(
        &mut f,
        format!("{next} 1 2 http web crashed.example 1 2 3 4\n{next} 1 2 http web cut.exa")
            .as_bytes(),
    )
    .unwrap();
    drop(f);
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 3, "/y");
    let second = shown_totals(&p);
    stop(&mut p);
    assert!(
        p.log().contains("interrupted period"),
        "the cut is reported:\n{}",
        p.log()
    );
    let after = periods(&log); // checks numbering and completeness
    assert!(after.len() > before.len());
    assert_eq!(&after[..before.len()], &before[..]);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("crashed.example") && !text.contains("cut.exa"),
        "{text}"
    );
    assert_eq!(sum_periods(&after[before.len()..].to_vec()), second);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_keeps_periods_continuous() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-reload");
    let log = dir.join("traffic.log");
    let cfg = traffic_config(&log);
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 9, "/r1");
    std::thread::sleep(Duration::from_millis(600));
    // The same config with another frontend setting; the counters are kept by name.
    let changed = cfg.replace(
        "default_pool = \"app\"",
        "default_pool = \"app\"\nkeepalive_timeout = \"30s\"",
    );
    p.rewrite(&changed, &[("app", app.addr_string())]);
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok generation 2"), "{out}");
    traffic(&p, 13, "/r2");
    std::thread::sleep(Duration::from_millis(1100));
    traffic(&p, 5, "/r3");
    let want = shown_totals(&p);
    stop(&mut p);
    let all = periods(&log);
    for w in all.windows(2) {
        assert_eq!(
            w[0].2, w[1].1,
            "each period starts where the last ended: {w:?}"
        );
    }
    assert_eq!(sum_periods(&all), want);
    let _ = fs::remove_dir_all(&dir);
}

/// Kills (SIGKILL, by PID) a daemon an upgrade started, if it still runs with this test's
/// config on its command line, when the test ends (also on panic).
struct Upgraded {
    pid: u32,
    config: std::path::PathBuf,
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        let ours = fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|c| {
            let want = self.config.to_string_lossy();
            c.split(|b| *b == 0).any(|a| a == want.as_bytes())
        });
        if ours {
            // SAFETY: kill(2) on a PID whose command line names this test's config file.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn an_upgrade_counts_the_carried_totals_once() {
    let app = Backend::start("app1");
    let dir = temp_dir("logs-upgrade");
    let log = dir.join("traffic.log");
    let cfg = traffic_config(&log);
    let p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    traffic(&p, 12, "/old");
    let (code, out) = p.ctl("upgrade");
    assert_eq!(code, 0, "upgrade: {out}\n{}", p.log());
    let (_, info) = p.ctl("show info");
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("pid: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert_ne!(pid, p.pid(), "{info}");
    let _guard = Upgraded {
        pid,
        config: p.config_path.clone(),
    };
    // The new process takes its base once the old one has exited.
    wait_for(
        "the new process's traffic log",
        Duration::from_secs(15),
        || p.log().matches("traffic log on").count() >= 2,
    );
    traffic(&p, 8, "/new");
    let want = shown_totals(&p);
    assert_eq!(
        want.values().map(|t| t[0]).sum::<u64>(),
        20,
        "totals carried"
    );
    let (code, out) = p.ctl("stop daemon");
    assert_eq!(code, 0, "{out}");
    wait_for("the new process to exit", Duration::from_secs(20), || {
        fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
    });
    let all = periods(&log);
    assert_eq!(
        sum_periods(&all),
        want,
        "carried totals counted once:\n{all:?}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn failovers_and_our_own_answers_carry_their_reason() {
    let app = Backend::start("live");
    let dead = format!("127.0.0.1:{}", common::free_port());
    let dir = temp_dir("logs-reasons");
    let log = dir.join("access.json");
    let cfg = common::daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
access_log = {{ path = "{}", format = "json" }}

  [[http.route]]
  pool = "app"
  host = "a.example"

[pool.app]
balance = "round_robin"
servers = [ {{ name = "dead", addr = "{{dead}}" }}, {{ name = "live", addr = "{{app}}" }} ]
"#,
            log.display()
        );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string()), ("dead", dead.clone())]);
    let mut c = Conn::connect(p.addr("web"));
    for _ in 0..4 {
        let r = c.get("/", "a.example");
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    // No route for this host and no default pool: our 404.
    let r = c.get("/", "nowhere.example");
    assert_eq!(r.status, 404);
    stop(&mut p);
    let lines: Vec<serde_json::Value> = read_lines(&log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for v in &lines[..4] {
        assert_eq!(
            (v["status"].as_u64(), v["server"].as_str()),
            (Some(200), Some("live")),
            "{v}"
        );
        assert_eq!(v["termination"], "ok", "{v}");
    }
    // The one that tried the dead server first went on to the live one.
    let failed_over: Vec<&serde_json::Value> =
        lines[..4].iter().filter(|v| v["retries"] == 1).collect();
    assert_eq!(failed_over.len(), 1, "{lines:#?}");
    let last = &lines[4];
    assert_eq!(last["status"], 404, "{last}");
    assert_eq!(last["termination"], "no_route", "{last}");
    assert_eq!(last["pool"], serde_json::Value::Null, "{last}");
    assert_eq!(last["server"], serde_json::Value::Null, "{last}");
    assert_eq!(last["site"], "nowhere.example", "{last}");
    assert!(
        last["bytes_out"].as_u64().unwrap() > 0,
        "our answer's bytes: {last}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn loadgen_requests_equal_access_log_lines() {
    const N: u64 = 3000;
    let app = Backend::start("app1");
    let dir = temp_dir("logs-loadgen");
    let log = dir.join("access.log");
    let cfg = config(
        2,
        "",
        &format!(
            "access_log = {{ path = \"{}\", format = \"$status $pool $server $bytes_out\" }}",
            log.display()
        ),
    );
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    let json = common::loadgen::spawn_loadgen(
        &["http", "-c", "16", "-n", &N.to_string()],
        p.dir.join("load.json"),
        format!("http://{}/lg", p.addr("web")),
    )
    .join()
    .unwrap();
    assert_eq!(common::loadgen::json_num(&json, "responses"), N, "{json}");
    assert_eq!(common::loadgen::json_num(&json, "non_success"), 0, "{json}");
    assert_eq!(stat(&p, "access_log.dropped"), 0);
    let totals = shown_totals(&p);
    stop(&mut p);
    let lines = read_lines(&log);
    assert_eq!(lines.len() as u64, N, "one line per request loadgen sent");
    let mut out = 0;
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(&f[..3], &["200", "app", "app1"], "{l}");
        out += f[3].parse::<u64>().unwrap();
    }
    assert_eq!(out, totals.values().map(|t| t[2]).sum::<u64>());
    let _ = fs::remove_dir_all(&dir);
}
