//! The admin page in a real browser: headless Chromium driven through chromedriver's WebDriver
//! HTTP API (a small client over `TcpStream` below; no WebDriver crate). It logs in (Basic
//! auth, credentials in the URL of the top-level navigation), sees the servers, disables one
//! with the page's own button, and then no request through the proxy reaches that server. A
//! `fetch` POST from the page without the CSRF token is refused. A screenshot is kept under the
//! test's temp dir (its path is printed).
//!
//! Needs Debian's `chromium` and `chromium-driver` (tests/run.sh installs them). chromedriver
//! runs on a free loopback port and is killed by PID; every wait is bounded.

mod common;

use common::proxy::{run_bounded, temp_dir, BIN};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// chromedriver, killed by PID when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(log: &std::path::Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chromedriver (apt-get install chromium chromium-driver)");
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = d.try_call("GET", "/status", None) {
                if v["value"]["ready"] == true {
                    return d;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body.clone())
            .unwrap_or_else(|e| panic!("webdriver {method} {path} {body:?}: {e}"))
    }

    /// One WebDriver command; the answer's JSON, or an error naming the WebDriver error.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(raw.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open whatever we ask: read by the framing.
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        let head_end = loop {
            if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the answer's head".into());
            }
            out.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding:") && head.contains("chunked");
        loop {
            let have = out.len() - head_end;
            let done = match length {
                Some(n) => have >= n,
                None if chunked => out.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&out[head_end..]).into_owned();
        let body = if chunked { dechunk(&text) } else { text };
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["value"]["error"].is_string() {
            return Err(format!(
                "{}: {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A browser session, deleted when dropped.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .try_call("DELETE", &format!("/session/{}", self.id), None);
    }
}

impl<'a> Session<'a> {
    fn new(driver: &'a Driver, profile: &std::path::Path) -> Session<'a> {
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = driver.call("POST", "/session", Some(caps));
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_owned();
        let s = Session { driver, id };
        s.cmd(
            "POST",
            "/timeouts",
            json!({ "script": 20000, "pageLoad": 20000, "implicit": 0 }),
        );
        s
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then_some(body);
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)["value"]
            .clone()
    }

    fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let body = (method == "POST").then_some(body);
        self.driver
            .try_call(method, &format!("/session/{}{path}", self.id), body)
            .map(|v| v["value"].clone())
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": js, "args": [] }))
    }

    fn script_async(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({ "script": js, "args": [] }),
        )
    }

    /// Evaluate `js` until it returns something truthy (not null, false, 0 or ""), at most
    /// `limit`.
    fn wait_for(&self, js: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.script(js);
            let truthy = !(v.is_null()
                || v == false
                || v == 0
                || v == ""
                || v.as_array().is_some_and(|a| a.is_empty()));
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {js}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Click the element `css` finds; retried when the page re-rendered it in between.
    fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.try_cmd(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            );
            let clicked = found.and_then(|el| {
                let id = el
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|v| v.as_str())
                    .ok_or("no element id")?
                    .to_owned();
                self.try_cmd("POST", &format!("/element/{id}/click"), json!({}))
            });
            match clicked {
                Ok(_) => return,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot click {css}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The `chromium` executable on `PATH`.
fn chromium() -> String {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .expect("chromium is not on PATH (apt-get install chromium chromium-driver)")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let s: Vec<u8> = s.bytes().filter(|b| *b != b'=' && *b != b'\n').collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn hash_password(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = run_bounded(child, Duration::from_secs(30), "hash-password");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_page_lists_servers_and_its_button_disables_one() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let hash = hash_password("opspw");
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
users = [ {{ name = "ops", password_hash = "{hash}", role = "admin" }} ]
"#,
            a.addr_string(),
            b.addr_string()
        );
    let p = Proxy::start(&cfg);
    let admin = p.addr("admin");
    // Some traffic first, so the page has sites and counts to show.
    for i in 0..4 {
        let r = Conn::connect(p.addr("web")).get(&format!("/w{i}"), "shop.example");
        assert_eq!(r.status, 200);
    }

    let artefacts = temp_dir("admin-browser");
    let driver = Driver::start(&artefacts.join("chromedriver.log"));
    let session = Session::new(&driver, &artefacts.join("profile"));
    session.cmd(
        "POST",
        "/url",
        json!({ "url": format!("http://ops:opspw@{admin}/") }),
    );
    session.wait_for(
        "return document.body && document.body.dataset.loaded === '1'",
        Duration::from_secs(20),
    );
    let listed = session.wait_for(
        "return Array.from(document.querySelectorAll('#servers tbody tr')).map(tr => tr.dataset.server)",
        Duration::from_secs(10),
    );
    assert_eq!(listed, json!(["app/a", "app/b"]));
    let sites = session.script(
        "return Array.from(document.querySelectorAll('#sites tbody td:nth-child(2)')).map(td => td.textContent)",
    );
    assert_eq!(sites, json!(["shop.example"]));

    // The page's own button, its own fetch with its token.
    session.click(r#"tr[data-server="app/b"] button[data-action="disable"]"#);
    let msg = session.wait_for(
        "const m = document.getElementById('msg').textContent; return m.length ? m : null",
        Duration::from_secs(10),
    );
    assert_eq!(msg, "disabled app/b");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, out) = p.ctl("show servers");
        if out
            .lines()
            .any(|l| l.starts_with("app b ") && l.contains(" maint "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "b not in maint:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    session.wait_for(
        "const c = document.querySelector('tr[data-server=\"app/b\"] td[data-field=\"state\"]'); return c && c.textContent === 'maint'",
        Duration::from_secs(10),
    );
    let before = b.requests();
    for i in 0..10 {
        let r = Conn::connect(p.addr("web")).get(&format!("/after{i}"), "shop.example");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "a", "{}", r.summary());
    }
    assert_eq!(b.requests(), before, "a disabled server got requests");

    let shot = session.cmd("GET", "/screenshot", json!(null));
    let png = base64_decode(shot.as_str().expect("screenshot is base64"));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = artefacts.join("admin-page.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    // From the page's own context (same origin, logged in): without the token, refused.
    let status = session.script_async(
        "const done = arguments[arguments.length - 1];
         fetch(location.origin + '/api/server', { method: 'POST', credentials: 'same-origin',
           headers: { 'Content-Type': 'application/json' },
           body: JSON.stringify({ pool: 'app', server: 'a', action: 'disable' }) })
         .then(r => done(r.status), e => done('error ' + e));",
    );
    assert_eq!(status, 403);
    // With the page's token it would have worked: the refusal was the token's.
    let status = session.script_async(
        "const done = arguments[arguments.length - 1];
         const t = document.querySelector('meta[name=\"csrf-token\"]').content;
         fetch(location.origin + '/api/server', { method: 'POST', credentials: 'same-origin',
           headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': t },
           body: JSON.stringify({ pool: 'app', server: 'b', action: 'enable' }) })
         .then(r => done(r.status), e => done('error ' + e));",
    );
    assert_eq!(status, 200);
    let (_, out) = p.ctl("show servers");
    assert!(
        out.lines()
            .any(|l| l.starts_with("app a ") && l.contains(" ready ")),
        "{out}"
    );
    // Keep the screenshot and chromedriver's log; the browser profile goes. (Chromium may
    // still write to it for a moment after the session ends: remove it until it stays gone.)
    drop(session);
    drop(driver);
    let profile = artefacts.join("profile");
    for _ in 0..20 {
        let _ = std::fs::remove_dir_all(&profile);
        std::thread::sleep(Duration::from_millis(250));
        if !profile.exists() {
            break;
        }
    }
}
