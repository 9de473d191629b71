//! The admin listener (`[admin]`), black-box: the real binary, real loopback sockets.
//! `/metrics` content types; Basic auth (none, wrong, read, admin); every check a
//! state-changing request must pass (role, Origin, CSRF token, Host) and the change it makes
//! seen through `shardgate ctl`; config refusals naming their key; `hash-password`; `ctl --json`
//! numbers equal to the text's; malformed and oversized requests answered 4xx while the daemon
//! goes on.

mod common;

use common::proxy::{run_bounded, BIN};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A status, the header lines (names lower-cased) and the body of one admin answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send `raw` and read until the listener closes (it answers one request per connection).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_answer(&out)
}

fn parse_answer(out: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A request to the admin listener at `addr`: Host is `addr` unless `headers` name one.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str(&format!("Host: {addr}\r\n"));
    }
    if let Some((u, p)) = user {
        raw.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(format!("{u}:{p}").as_bytes())
        ));
    }
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    exchange(addr, raw.as_bytes())
}

/// `shardgate hash-password` with `password` on stdin.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hash-password");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = run_bounded(child, Duration::from_secs(30), "shardgate hash-password");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A daemon with two servers `a` and `b` in pool `app` and an admin listener with an `admin`
/// user `ops` (password `opspw`) and a `read` user `viewer` (password `viewpw`).
fn start(a: &Backend, b: &Backend) -> Proxy {
    let ops = hash_password("opspw");
    let viewer = hash_password("viewpw");
    let cfg = common::daemon(2)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
balance = "round_robin"
servers = [
  {{ name = "a", addr = "{}" }},
  {{ name = "b", addr = "{}" }},
]

[admin]
listen = "127.0.0.1:{{port:admin}}"
users = [
  {{ name = "ops", password_hash = "{ops}", role = "admin" }},
  {{ name = "viewer", password_hash = "{viewer}", role = "read" }},
]
"#,
            a.addr_string(),
            b.addr_string()
        );
    Proxy::start(&cfg)
}

const OPS: Option<(&str, &str)> = Some(("ops", "opspw"));
const VIEWER: Option<(&str, &str)> = Some(("viewer", "viewpw"));

/// The CSRF token the page embeds for `user`.
fn csrf(addr: SocketAddr, user: Option<(&str, &str)>) -> String {
    let page = request(addr, "GET", "/", user, &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page
        .body
        .find("name=\"csrf-token\" content=\"")
        .expect("token in the page")
        + "name=\"csrf-token\" content=\"".len();
    page.body[at..at + 64].to_owned()
}

/// `show servers` as (server → admin state, weight).
fn servers(p: &Proxy) -> Vec<(String, String, String)> {
    let (code, out) = p.ctl("show servers");
    assert_eq!(code, 0, "{out}");
    out.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(' ').collect();
            (c[1].to_owned(), c[6].to_owned(), c[8].to_owned())
        })
        .collect()
}

fn admin_of(p: &Proxy, server: &str) -> (String, String) {
    let s = servers(p);
    let row = s
        .iter()
        .find(|(n, _, _)| n == server)
        .unwrap_or_else(|| panic!("no server {server}: {s:?}"));
    (row.1.clone(), row.2.clone())
}

#[test]
fn metrics_are_served_in_both_formats() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    let addr = p.addr("admin");
    let plain = request(addr, "GET", "/metrics", VIEWER, &[], "");
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let om = request(
        addr,
        "GET",
        "/metrics",
        VIEWER,
        &[(
            "Accept",
            "application/openmetrics-text; version=1.0.0, text/plain;q=0.5",
        )],
        "",
    );
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    // Scrapes need credentials like everything else.
    assert_eq!(request(addr, "GET", "/metrics", None, &[], "").status, 401);
}

#[test]
fn logins_and_roles() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    let addr = p.addr("admin");
    for path in ["/", "/api/state"] {
        let none = request(addr, "GET", path, None, &[], "");
        assert_eq!(none.status, 401, "{path}");
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic realm=")),
            "{:?}",
            none.headers
        );
        let wrong = request(addr, "GET", path, Some(("ops", "nope")), &[], "");
        assert_eq!(wrong.status, 401, "{path}");
        let unknown = request(addr, "GET", path, Some(("eve", "opspw")), &[], "");
        assert_eq!(unknown.status, 401, "{path}");
    }
    // The read user sees the page and the state...
    let page = request(addr, "GET", "/", VIEWER, &[], "");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'nonce-") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let state = request(addr, "GET", "/api/state", VIEWER, &[], "");
    assert_eq!(state.status, 200, "{}", state.body);
    let v: serde_json::Value = serde_json::from_str(&state.body).unwrap();
    assert_eq!(v["role"], "read");
    let names: Vec<&str> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["server"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // ...and is refused every action, with a valid token and origin.
    let token = csrf(addr, VIEWER);
    let refused = request(
        addr,
        "POST",
        "/api/server",
        VIEWER,
        &[
            ("Content-Type", "application/json"),
            ("Origin", &format!("http://{addr}")),
            ("X-CSRF-Token", &token),
        ],
        r#"{"pool":"app","server":"b","action":"disable"}"#,
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(admin_of(&p, "b").0, "ready");
}

#[test]
fn actions_need_token_origin_host_and_then_act_like_ctl() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    let addr = p.addr("admin");
    let token = csrf(addr, OPS);
    let origin = format!("http://{addr}");
    let disable_b = r#"{"pool":"app","server":"b","action":"disable"}"#;
    let post = |headers: &[(&str, &str)], body: &str| {
        request(addr, "POST", "/api/server", OPS, headers, body)
    };

    let no_token = post(
        &[("Content-Type", "application/json"), ("Origin", &origin)],
        disable_b,
    );
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let bad_token = post(
        &[
            ("Content-Type", "application/json"),
            ("Origin", &origin),
            ("X-CSRF-Token", &"0".repeat(64)),
        ],
        disable_b,
    );
    assert_eq!(bad_token.status, 403, "{}", bad_token.body);
    let foreign_origin = post(
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
            ("X-CSRF-Token", &token),
        ],
        disable_b,
    );
    assert_eq!(foreign_origin.status, 403, "{}", foreign_origin.body);
    let no_origin = post(
        &[
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", &token),
        ],
        disable_b,
    );
    assert_eq!(no_origin.status, 403, "{}", no_origin.body);
    // DNS rebinding: a name that resolves to us is still not our Host.
    let port = addr.port();
    let rebound_host = format!("evil.example:{port}");
    let rebound_origin = format!("http://evil.example:{port}");
    let rebound = post(
        &[
            ("Host", &rebound_host),
            ("Content-Type", "application/json"),
            ("Origin", &rebound_origin),
            ("X-CSRF-Token", &token),
        ],
        disable_b,
    );
    assert!(
        rebound.status == 421 || rebound.status == 403,
        "{} {}",
        rebound.status,
        rebound.body
    );
    // A form-encoded body (what a cross-site form could send) is refused.
    let form = post(
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
            ("X-CSRF-Token", &token),
        ],
        "pool=app&server=b&action=disable",
    );
    assert_eq!(form.status, 415, "{}", form.body);
    // GET never changes anything; OPTIONS (a preflight) grants nothing.
    assert_eq!(
        request(addr, "GET", "/api/server", OPS, &[], "").status,
        405
    );
    let pre = request(
        addr,
        "OPTIONS",
        "/api/server",
        None,
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_ne!(pre.status, 200);
    assert!(pre.header("access-control-allow-origin").is_none());
    assert_eq!(admin_of(&p, "b").0, "ready", "nothing refused changed b");

    let good = [
        ("Content-Type", "application/json"),
        ("Origin", origin.as_str()),
        ("X-CSRF-Token", token.as_str()),
    ];
    let ok = post(&good, disable_b);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(
        v["answer"], "disabled app/b",
        "the control command's own answer"
    );
    assert_eq!(admin_of(&p, "b").0, "maint");
    // Requests now all go to a.
    for i in 0..6 {
        let r = Conn::connect(p.addr("web")).get(&format!("/x{i}"), "h");
        assert_eq!(r.backend(), "a", "{}", r.summary());
    }
    // A Referer of ours stands in for a missing Origin.
    let referer = format!("http://{addr}/");
    let ok = post(
        &[
            ("Content-Type", "application/json"),
            ("Referer", &referer),
            ("X-CSRF-Token", &token),
        ],
        r#"{"pool":"app","server":"b","action":"weight","weight":7}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(admin_of(&p, "b").1, "7");
    for (action, want) in [("drain", "drain"), ("enable", "ready")] {
        let r = post(
            &good,
            &format!(r#"{{"pool":"app","server":"b","action":"{action}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(admin_of(&p, "b").0, want);
    }
    // Errors are the control command's.
    let r = post(
        &good,
        r#"{"pool":"app","server":"b","action":"weight","weight":5000}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("expected an integer 0-1000"), "{}", r.body);
    let r = post(&good, r#"{"pool":"app","server":"zz","action":"disable"}"#);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no server named 'zz'"), "{}", r.body);
    let r = post(&good, r#"{"pool":"app","server":"b c","action":"disable"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn bad_admin_configs_are_refused_naming_the_key() {
    let hash = hash_password("x");
    let base = |admin: &str| {
        format!(
            "[daemon]\ncontrol_socket = \"ctl.sock\"\n[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n[pool.p]\nservers = [{{ name = \"a\", addr = \"127.0.0.1:2\" }}]\n[admin]\n{admin}\n"
        )
    };
    let cases = [
        (
            "listen = \"0.0.0.0:9900\"".to_owned(),
            "admin.listen: 0.0.0.0:9900 is not a loopback address",
        ),
        (
            "listen = \"127.0.0.1:9900\"\nusers = [{ name = \"o\", password_hash = \"secret\", role = \"admin\" }]".to_owned(),
            "admin.users[0].password_hash: not a valid argon2 PHC string",
        ),
        (
            format!("listen = \"127.0.0.1:9900\"\nusers = [{{ name = \"o\", password_hash = \"{hash}\", role = \"root\" }}]"),
            "admin.users[0].role: \"root\" is not a role",
        ),
        (
            "listen = \"localhost\"".to_owned(),
            "admin.listen: \"localhost\" is not IP:PORT",
        ),
        (
            "listen = \"127.0.0.1:1\"".to_owned(),
            "admin.listen: \"127.0.0.1:1\" overlaps",
        ),
    ];
    let dir = common::proxy::temp_dir("admin-config");
    for (i, (admin, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(&path, base(admin)).unwrap();
        // The daemon itself refuses to start (exit 2), naming file and key.
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = run_bounded(
            child,
            Duration::from_secs(20),
            "shardgate with a bad [admin]",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{admin}: {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(want), "{admin}: want {want:?} in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_loopback_listener_without_users_needs_no_login_but_keeps_every_other_check() {
    let a = Backend::start("a");
    let cfg = common::daemon(1)
        + &format!(
            "[[http]]\nname = \"web\"\nlisten = [\"127.0.0.1:{{port:web}}\"]\ndefault_pool = \"app\"\n\
             [pool.app]\nservers = [{{ name = \"a\", addr = \"{}\" }}]\n\
             [admin]\nlisten = \"127.0.0.1:{{port:admin}}\"\n",
            a.addr_string()
        );
    let p = Proxy::start(&cfg);
    let addr = p.addr("admin");
    assert_eq!(
        request(addr, "GET", "/api/state", None, &[], "").status,
        200
    );
    let host = format!("localhost:{}", addr.port());
    assert_eq!(
        request(addr, "GET", "/api/state", None, &[("Host", &host)], "").status,
        200,
        "localhost names a loopback listener"
    );
    let body = r#"{"pool":"app","server":"a","action":"drain"}"#;
    let origin = format!("http://{addr}");
    let no_token = request(
        addr,
        "POST",
        "/api/server",
        None,
        &[("Content-Type", "application/json"), ("Origin", &origin)],
        body,
    );
    assert_eq!(no_token.status, 403);
    let token = csrf(addr, None);
    let ok = request(
        addr,
        "POST",
        "/api/server",
        None,
        &[
            ("Content-Type", "application/json"),
            ("Origin", &origin),
            ("X-CSRF-Token", &token),
        ],
        body,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(admin_of(&p, "a").0, "drain");
}

#[test]
fn hash_password_output_verifies_and_reloaded_users_apply() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut p = start(&a, &b);
    let addr = p.addr("admin");
    assert_eq!(request(addr, "GET", "/api/state", OPS, &[], "").status, 200);
    // A reload that replaces ops's password: the old one stops working at once (even though
    // it was cached), the new one works; moving the listener is a restart-only warning.
    let fresh = hash_password("n3w pass:word");
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let start = text.find("users = [").unwrap();
    let cfg = format!(
        "{}users = [ {{ name = \"ops\", password_hash = \"{fresh}\", role = \"admin\" }} ]\n",
        &text[..start]
    );
    let cfg = cfg.replace(
        &format!("listen = \"127.0.0.1:{}\"", addr.port()),
        "listen = \"127.0.0.1:{port:admin2}\"",
    );
    p.rewrite(&cfg, &[]);
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: admin.listen changed"),
        "restart-only: {out}"
    );
    assert_eq!(request(addr, "GET", "/api/state", OPS, &[], "").status, 401);
    assert_eq!(
        request(addr, "GET", "/api/state", VIEWER, &[], "").status,
        401,
        "viewer was removed"
    );
    let new = Some(("ops", "n3w pass:word"));
    assert_eq!(request(addr, "GET", "/api/state", new, &[], "").status, 200);
}

#[test]
fn failed_logins_are_throttled() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    let addr = p.addr("admin");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(request(addr, "GET", "/api/state", Some(("ops", "guess")), &[], "").status);
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], [429; 2], "{statuses:?}");
}

/// `ctl --json` of each command parses, and its numbers are the text answer's.
#[test]
fn json_outputs_parse_and_match_the_text() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    for i in 0..10 {
        let host = if i % 2 == 0 {
            "one.example"
        } else {
            "two.example"
        };
        let r = Conn::connect(p.addr("web")).get(&format!("/j{i}"), host);
        assert_eq!(r.status, 200);
    }
    let json = |cmd: &str| -> serde_json::Value {
        let child = Command::new(BIN)
            .args(["ctl", "--socket"])
            .arg(&p.socket)
            .arg("--json")
            .arg(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = run_bounded(child, Duration::from_secs(10), "shardgate ctl --json");
        assert!(out.status.success(), "{cmd}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "one document on one line: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{cmd}: {e}: {text}"))
    };

    // show stats: every counter but the memory gauges (which move on their own).
    let v = json("show stats");
    let (_, text) = p.ctl("show stats");
    let mut compared = 0;
    for line in text.lines() {
        let (k, val) = line.split_once(": ").unwrap();
        if k.starts_with("memory.") {
            continue;
        }
        match val.parse::<u64>() {
            Ok(n) => assert_eq!(v[k].as_u64(), Some(n), "{k}"),
            Err(_) => assert_eq!(v[k], val, "{k}"),
        }
        compared += 1;
    }
    assert!(compared > 10, "{text}");
    assert_eq!(v["requests"].as_u64(), Some(10));

    let v = json("show traffic http");
    let (_, text) = p.ctl("show traffic http");
    let rows = v["rows"].as_array().unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), lines.len(), "{text}");
    assert_eq!(lines.len(), 2, "{text}");
    for (row, line) in rows.iter().zip(lines) {
        let c: Vec<&str> = line.split(' ').collect();
        assert_eq!(row["frontend"], c[0]);
        assert_eq!(row["site"], c[1]);
        assert_eq!(row["requests"].as_u64().unwrap().to_string(), c[2]);
        assert_eq!(row["bytes_in"].as_u64().unwrap().to_string(), c[3]);
        assert_eq!(row["bytes_out"].as_u64().unwrap().to_string(), c[4]);
        assert_eq!(
            format!("{:.3}", row["time_total_ms"].as_f64().unwrap()),
            c[5]
        );
    }
    assert_eq!(rows[0]["requests"], 5);

    let v = json("show servers");
    let (_, text) = p.ctl("show servers");
    let rows = v.as_array().unwrap();
    for (row, line) in rows.iter().zip(text.lines().skip(1)) {
        let c: Vec<&str> = line.split(' ').collect();
        assert_eq!(row["pool"], c[0]);
        assert_eq!(row["server"], c[1]);
        assert_eq!(row["addr"], c[2]);
        assert_eq!(row["state"], c[3]);
        assert_eq!(row["admin"], c[6]);
        assert_eq!(row["weight"].as_u64().unwrap().to_string(), c[8]);
        assert_eq!(row["requests"].as_u64().unwrap().to_string(), c[10]);
    }
    assert_eq!(rows.len(), 2);
    let total: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 10);

    let v = json("show traffic mysql");
    assert!(v["rows"].as_array().unwrap().is_empty(), "{v}");

    // A command without a JSON form is an error line (exit 1); the text forms are unchanged.
    let (code, out) = p.ctl("json show info");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: show info: no JSON form"), "{out}");
    let (code, out) = p.ctl("help");
    assert_eq!(code, 0);
    assert!(out.contains("json COMMAND"), "{out}");
}

#[test]
fn malformed_and_huge_requests_get_4xx_and_the_daemon_goes_on() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = start(&a, &b);
    let addr = p.addr("admin");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\nHost: x\n\n".to_vec(), 400),
        (
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000))
                .into_bytes(),
            431,
        ),
        (
            format!("POST /api/server HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n")
                .into_bytes(),
            413,
        ),
        (
            format!(
                "POST /api/server HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
            411,
        ),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (raw, want) in &cases {
        let r = exchange(addr, raw);
        assert_eq!(
            r.status,
            *want,
            "{:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        );
    }
    // A client that sends half a head and stops is answered 408 within the read timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(parse_answer(&out).status, 408);
    // An unknown path is 404 (after login), and the daemon still serves.
    assert_eq!(request(addr, "GET", "/nope", OPS, &[], "").status, 404);
    assert_eq!(request(addr, "GET", "/api/state", OPS, &[], "").status, 200);
    let r = Conn::connect(p.addr("web")).get("/", "h");
    assert_eq!(r.status, 200);
}

/// After `ctl upgrade` the new process serves the admin listener (it binds the same address
/// while the old one still listens) and the old one stops answering on it.
#[test]
fn the_admin_listener_moves_to_the_new_process_on_upgrade() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut p = start(&a, &b);
    let addr = p.addr("admin");
    let pid_of = |v: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(v).unwrap();
        v["pid"].as_u64().unwrap()
    };
    let old = request(addr, "GET", "/api/state", OPS, &[], "");
    assert_eq!(pid_of(&old.body), u64::from(p.pid()));
    let (code, out) = p.ctl("upgrade");
    assert_eq!(code, 0, "{out}");
    // The new process, found by the command socket it now serves; killed by PID at the end
    // (it is not this test's child), after checking its command line names our config.
    struct Kill(u32, String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let ours = std::fs::read(format!("/proc/{}/cmdline", self.0))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == self.1.as_bytes()));
            if ours {
                // SAFETY: kill(2) on the daemon this test's upgrade started (checked above).
                unsafe {
                    libc::kill(self.0 as i32, libc::SIGKILL);
                }
            }
        }
    }
    let (_, info) = p.ctl("show info");
    let new: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("pid: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{info}"));
    let _kill = Kill(new, p.config_path.display().to_string());
    assert_ne!(new, p.pid(), "{info}");
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "old daemon exit: {st:?}");
    for _ in 0..10 {
        let r = request(addr, "GET", "/api/state", OPS, &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(pid_of(&r.body), u64::from(new));
    }
}
