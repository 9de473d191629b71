//! Routes that serve a directory themselves (`static = { root, index, precompressed }`), seen
//! from the client: methods, content types, validators and conditional requests, byte ranges
//! (single, multipart, unsatisfiable, If-Range), precompressed siblings, index files and
//! directory redirects, and above all that no request, however encoded, reads anything outside
//! the root (`..` in every spelling, encoded slashes and backslashes, NUL, overlong UTF-8,
//! absolute-form targets, symlinks leading out).
//!
//! nginx `root` semantics: the whole request path is looked up under `root`, so the fixture
//! keeps its files in `ROOT/assets/` for the `/assets/` route. Secrets with a unique marker sit
//! outside the root (`BASE/secret.txt`, `BASE/outside/secret2.txt`) and in the root but outside
//! the route's directory (`ROOT/secret`); no answer may ever carry a marker.

mod common;

use common::observe::{poll_until, stats};
use common::proxy::{run_bounded, temp_dir, BIN};
use common::*;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The mtime every fixture file gets: Thu, 04 Mar 2021 05:06:07 GMT.
const MTIME: i64 = 1_614_834_367;
const MTIME_IMF: &str = "Thu, 04 Mar 2021 05:06:07 GMT";

const A_CSS: &[u8] = b"body { color: red }\n";
const TEN: &[u8] = b"0123456789";
const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const INDEX: &[u8] = b"<h1>assets index</h1>\n";
const SUB_INDEX: &[u8] = b"<h1>sub index</h1>\n";
const APP_JS: &[u8] = b"console.log('identity');\n";
const APP_JS_BR: &[u8] = b"\x8b\x0b\x80BROTLI-BYTES\x03";
const APP_JS_GZ: &[u8] = b"\x1f\x8b\x08\x00GZIP-BYTES, A FEW MORE\x00\x00";
const PLAIN_JS: &[u8] = b"console.log('no siblings');\n";
const LITERAL: &[u8] = b"LITERAL-FILE-NAMED-PERCENT-2E-PERCENT-2E\n";
const RANGE_LEN: usize = 2000;

fn range_bytes() -> Vec<u8> {
    (0..RANGE_LEN).map(|i| b'A' + (i * 7 % 26) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Fixture

struct Site {
    proxy: Proxy,
    _app: Backend,
    base: PathBuf,
    root: PathBuf,
    /// Unique markers in the secret files; none may ever appear in an answer.
    markers: Vec<String>,
}

impl Drop for Site {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // chmod 000 files and symlinks are removed fine by root.
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let f = fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs as u64))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mtime(path, MTIME);
}

const STATIC_CFG: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"
server_names = ["www.example.com"]

  [[http.route]]
  path_prefix = "/assets/"
  static = { root = "{root}", index = ["index.html"] }

  [[http.route]]
  path_prefix = "/nopre/"
  static = { root = "{root}", index = ["index.html"], precompressed = false }

# Static only, no default pool: a path that leaves /assets/ after normalisation finds nothing.
[[http]]
name = "only"
listen = ["127.0.0.1:{port:only}"]
server_names = ["www.example.com"]

  [[http.route]]
  path_prefix = "/assets/"
  static = { root = "{root}", index = ["index.html"] }

# The whole site static (prefix "/"), and two sites by host with different roots.
[[http]]
name = "whole"
listen = ["127.0.0.1:{port:whole}"]

  [[http.route]]
  path_prefix = "/"
  static = { root = "{root}", index = ["index.html"] }

[[http]]
name = "hosts"
listen = ["127.0.0.1:{port:hosts}"]

  [[http.route]]
  host = ["a.example"]
  path_prefix = "/"
  static = { root = "{root}/site-a" }

  [[http.route]]
  host = ["b.example"]
  path_prefix = "/"
  static = { root = "{root}/site-b" }

# No open-file cache: every request opens the file (for races).
[[http]]
name = "nocache"
listen = ["127.0.0.1:{port:nocache}"]

  [[http.route]]
  path_prefix = "/assets/"
  static = { root = "{root}", file_cache_valid = "0s" }

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]
"#;

fn site() -> Site {
    site_with(2)
}

fn site_with(shards: u32) -> Site {
    let base = temp_dir("static");
    let root = base.join("www");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}-{nanos}", std::process::id());
    let outside = format!("SECRET-OUTSIDE-ROOT-{id}");
    let in_root = format!("SECRET-ROOT-LEVEL-{id}");
    let in_dir = format!("SECRET-OUTSIDE-DIR-{id}");
    put(&base.join("secret.txt"), outside.as_bytes());
    put(&base.join("secret"), outside.as_bytes());
    put(&base.join("outside/secret2.txt"), in_dir.as_bytes());
    put(&root.join("secret"), in_root.as_bytes());
    put(&root.join("secret.txt"), in_root.as_bytes());

    let a = root.join("assets");
    put(&a.join("a.css"), A_CSS);
    put(&a.join("ten.txt"), TEN);
    put(&a.join("alpha.txt"), ALPHA);
    put(&a.join("range.txt"), &range_bytes());
    put(&a.join("index.html"), INDEX);
    put(&a.join("sub/index.html"), SUB_INDEX);
    put(&a.join("empty/listed-name-7f3a.txt"), b"x");
    put(&a.join("app.js"), APP_JS);
    put(&a.join("app.js.br"), APP_JS_BR);
    put(&a.join("app.js.gz"), APP_JS_GZ);
    put(&a.join("plain.js"), PLAIN_JS);
    put(&a.join("%2e%2e"), LITERAL);
    put(&root.join("nopre/app.js"), APP_JS);
    put(&root.join("nopre/app.js.br"), APP_JS_BR);
    put(&root.join("nopre/app.js.gz"), APP_JS_GZ);
    for (name, _) in TYPES {
        put(&a.join(name), format!("content of {name}").as_bytes());
    }
    std::os::unix::fs::symlink("ten.txt", a.join("link-in.txt")).unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), a.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", a.join("link-out-rel.txt")).unwrap();
    std::os::unix::fs::symlink(base.join("outside"), a.join("dirlink-out")).unwrap();
    std::os::unix::fs::symlink("../../outside", a.join("dirlink-out-rel")).unwrap();
    // A symlink named like an index file, leading out: `/assets/trap/` must not serve it.
    fs::create_dir_all(a.join("trap")).unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), a.join("trap/index.html")).unwrap();

    let app = Backend::start("app");
    put(&root.join("site-a/f.txt"), b"site A");
    put(&root.join("site-b/f.txt"), b"site B");
    let cfg = daemon(shards) + STATIC_CFG;
    let proxy = Proxy::start_with(
        &cfg,
        &[
            ("root", root.display().to_string()),
            ("app", app.addr_string()),
        ],
    );
    Site {
        proxy,
        _app: app,
        base,
        root,
        markers: vec![outside, in_root, in_dir],
    }
}

impl Site {
    fn web(&self) -> SocketAddr {
        self.proxy.addr("web")
    }

    fn at(&self, name: &str, method: &str, path: &str, host: &str) -> Response {
        let raw = req(method, path, host, &[], b"");
        match exchange(self.proxy.addr(name), &raw, method == "HEAD") {
            Ok(r) => r,
            Err(e) => panic!("{name}: {method} {path}: {e}"),
        }
    }

    fn only(&self) -> SocketAddr {
        self.proxy.addr("only")
    }

    /// A fresh connection, one request, its response (HEAD read without a body).
    fn ask(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let raw = req(method, path, "www.example.com", headers, b"");
        match exchange(self.web(), &raw, method == "HEAD") {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} {headers:?}: {e}"),
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.ask("GET", path, headers)
    }

    /// The marker, if any, that `bytes` contain.
    fn leaked(&self, bytes: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(bytes);
        self.markers
            .iter()
            .find(|m| text.contains(m.as_str()))
            .cloned()
            .or_else(|| {
                text.contains("root:x:0:0")
                    .then(|| "/etc/passwd".to_string())
            })
    }
}

/// Sends `raw` on a fresh connection and reads one response.
fn exchange(addr: SocketAddr, raw: &[u8], head: bool) -> Result<Response, String> {
    let mut c = Conn::try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.try_send(raw).map_err(|e| format!("send: {e}"))?;
    read_one(&mut c, head)
}

fn read_one(c: &mut Conn, head: bool) -> Result<Response, String> {
    loop {
        let r = c.try_read_message(head)?;
        if r.status >= 200 {
            return Ok(r);
        }
    }
}

/// Collects every failed expectation of a test, to report them all at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} failure(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// The media type of a Content-Type value, lowercased, without parameters.
fn media_type(v: Option<&str>) -> Option<String> {
    v.map(|v| v.split(';').next().unwrap().trim().to_ascii_lowercase())
}

/// IMF-fixdate (RFC 9110 §5.6.7) of a Unix time.
fn imf(secs: i64) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MON[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The file names of [`site`]'s typed files and the media types they must be served with;
/// `.js` may be either registered type.
const TYPES: &[(&str, &str)] = &[
    ("t.html", "text/html"),
    ("t.htm", "text/html"),
    ("t.css", "text/css"),
    ("t.js", "text/javascript|application/javascript"),
    ("t.mjs", "text/javascript|application/javascript"),
    ("t.json", "application/json"),
    ("t.png", "image/png"),
    ("t.jpg", "image/jpeg"),
    ("t.jpeg", "image/jpeg"),
    ("t.gif", "image/gif"),
    ("t.svg", "image/svg+xml"),
    ("t.ico", "image/x-icon|image/vnd.microsoft.icon"),
    ("t.webp", "image/webp"),
    ("t.txt", "text/plain"),
    ("t.woff", "font/woff"),
    ("t.woff2", "font/woff2"),
    ("t.wasm", "application/wasm"),
    ("t.pdf", "application/pdf"),
    ("t.xml", "application/xml|text/xml"),
    ("t.qqzz", "application/octet-stream"),
    ("noextension", "application/octet-stream"),
];

/// A strong entity tag: `"..."` with no `W/` and no `"` inside.
fn is_strong_etag(v: &str) -> bool {
    v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && !v[1..v.len() - 1].contains('"')
        && v[1..v.len() - 1]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
}

/// Checks the head of a 200 for `body` with `mtype` (one of `|`-separated types).
fn check_entity(f: &mut Failures, what: &str, r: &Response, body: &[u8], mtype: &str) {
    f.eq(&format!("{what}: status"), r.status, 200);
    f.eq(
        &format!("{what}: body"),
        r.body_str(),
        String::from_utf8_lossy(body).into(),
    );
    let ct = media_type(r.header("content-type"));
    f.check(
        ct.as_deref()
            .is_some_and(|t| mtype.split('|').any(|m| m == t)),
        || {
            format!(
                "{what}: Content-Type {:?}, want {mtype}",
                r.header("content-type")
            )
        },
    );
    f.eq(
        &format!("{what}: Content-Length"),
        r.header("content-length"),
        Some(body.len().to_string().as_str()),
    );
    f.eq(
        &format!("{what}: Last-Modified"),
        r.header("last-modified"),
        Some(MTIME_IMF),
    );
    f.check(r.header("etag").is_some_and(is_strong_etag), || {
        format!(
            "{what}: ETag {:?} is not a strong quoted tag",
            r.header("etag")
        )
    });
    f.eq(
        &format!("{what}: Accept-Ranges"),
        r.header("accept-ranges"),
        Some("bytes"),
    );
    f.check(r.header("x-backend").is_none(), || {
        format!("{what}: answered by backend {:?}", r.header("x-backend"))
    });
}

// ---------------------------------------------------------------------------------------------
// Basics

#[test]
fn imf_dates_are_formatted_right() {
    assert_eq!(imf(MTIME), MTIME_IMF);
    assert_eq!(imf(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(imf(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[test]
fn serves_files_with_type_length_validators_and_ranges_header() {
    let s = site();
    let mut f = Failures::default();
    let r = s.get("/assets/a.css", &[]);
    check_entity(&mut f, "GET /assets/a.css", &r, A_CSS, "text/css");
    for (name, want) in TYPES {
        let path = format!("/assets/{name}");
        let r = s.get(&path, &[]);
        check_entity(
            &mut f,
            &format!("GET {path}"),
            &r,
            format!("content of {name}").as_bytes(),
            want,
        );
    }
    // The same file twice: the same validator.
    let again = s.get("/assets/a.css", &[]);
    f.eq(
        "ETag stable across requests",
        again.header("etag"),
        r_etag(&r),
    );
    // Different files (same mtime): different validators.
    let ten = s.get("/assets/ten.txt", &[]);
    f.check(ten.header("etag") != again.header("etag"), || {
        format!(
            "a.css and ten.txt share ETag {:?}",
            ten.header("etag").unwrap_or("-")
        )
    });
    f.assert_none();
}

fn r_etag(r: &Response) -> Option<&str> {
    r.header("etag")
}

#[test]
fn query_string_is_ignored_for_the_lookup() {
    let s = site();
    let mut f = Failures::default();
    for path in [
        "/assets/a.css?v=3",
        "/assets/a.css?",
        "/assets/a.css?x=../../secret.txt",
        "/assets/a.css?%00",
    ] {
        let r = s.get(path, &[]);
        check_entity(&mut f, &format!("GET {path}"), &r, A_CSS, "text/css");
    }
    f.assert_none();
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let s = site();
    let mut f = Failures::default();
    for path in ["/assets/a.css", "/assets/app.js", "/assets/range.txt"] {
        let get = s.get(path, &[]);
        // Read HEAD's answer without a body, then check on the same connection that nothing
        // followed it: the next response must parse and be the next file.
        let mut c = Conn::connect(s.web());
        c.send(&req("HEAD", path, "www.example.com", &[], b""));
        c.send(&req("GET", "/assets/ten.txt", "www.example.com", &[], b""));
        let head = c.read_head_response();
        f.eq(&format!("HEAD {path}: status"), head.status, 200);
        for h in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            f.eq(
                &format!("HEAD {path}: {h} as for GET"),
                head.header(h),
                get.header(h),
            );
        }
        match c.try_read_response() {
            Ok(next) => f.eq(
                &format!("GET after HEAD {path}"),
                next.body_str(),
                "0123456789".into(),
            ),
            Err(e) => f.0.push(format!(
                "after HEAD {path}, the next response on the connection: {e}"
            )),
        }
    }
    f.assert_none();
}

#[test]
fn other_methods_get_405_with_allow() {
    let s = site();
    let mut f = Failures::default();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/assets/a.css", "/assets/", "/assets/sub/index.html"] {
            let r = s.ask(method, path, &[]);
            f.eq(&format!("{method} {path}: status"), r.status, 405);
            f.eq(
                &format!("{method} {path}: Allow"),
                r.header("allow"),
                Some("GET, HEAD"),
            );
            f.check(r.body.windows(A_CSS.len()).all(|w| w != A_CSS), || {
                format!("{method} {path}: 405 carries the file")
            });
        }
    }
    // A POST with a body: either its body is consumed and the connection goes on, or the
    // connection is closed; never is the body read as the next request.
    let mut c = Conn::connect(s.web());
    c.send(&req(
        "POST",
        "/assets/a.css",
        "www.example.com",
        &[],
        b"GET /x",
    ));
    c.send(&req("GET", "/assets/ten.txt", "www.example.com", &[], b""));
    let r = c.read_response();
    f.eq("POST with body: status", r.status, 405);
    f.eq(
        "POST with body: Allow",
        r.header("allow"),
        Some("GET, HEAD"),
    );
    match c.try_read_response() {
        Ok(next) => f.check(next.status == 200 && next.body == TEN, || {
            format!("GET after a POST with a body: {}", next.summary())
        }),
        Err(e) => f.check(e.contains("closed before any response byte"), || {
            format!("GET after a POST with a body: {e}")
        }),
    }
    f.assert_none();
}

#[test]
fn missing_file_is_404() {
    let s = site();
    let mut f = Failures::default();
    for path in [
        "/assets/nope.css",
        "/assets/sub/nope.html",
        "/assets/nodir/x.css",
        "/assets/ten.txt/x",
    ] {
        let r = s.get(path, &[]);
        f.eq(&format!("GET {path}: status"), r.status, 404);
        f.check(r.header("x-backend").is_none(), || {
            format!("GET {path}: proxied to {:?}", r.header("x-backend"))
        });
    }
    let r = s.ask("HEAD", "/assets/nope.css", &[]);
    f.eq("HEAD /assets/nope.css: status", r.status, 404);
    f.assert_none();
}

#[test]
fn unreadable_file_is_403_unless_root_bypasses_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let s = site();
    let p = s.root.join("assets/locked.txt");
    put(&p, b"locked content");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&p).is_ok() {
        eprintln!(
            "SKIPPED: this process (uid {}) can read a mode-000 file (root bypasses permissions), \
             so the daemon can too; an unreadable file cannot be made here",
            // SAFETY: geteuid(2) has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        );
        return;
    }
    let r = s.get("/assets/locked.txt", &[]);
    assert_eq!(r.status, 403, "{}", r.summary());
    assert!(
        !r.body.windows(6).any(|w| w == b"locked"),
        "{}",
        r.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional requests

#[test]
fn if_none_match_and_if_modified_since() {
    let s = site();
    let mut f = Failures::default();
    let first = s.get("/assets/a.css", &[]);
    let etag = first.header("etag").expect("an ETag").to_string();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}, \"other\"");
    let weak_list = format!("\"nope\",{weak}");
    let after = imf(MTIME + 3600);
    let before = imf(MTIME - 1);

    let not_modified: &[(&str, &str)] = &[
        ("If-None-Match", &etag),
        ("If-None-Match", "*"),
        ("If-None-Match", &list),
        ("If-None-Match", &weak),
        ("If-None-Match", &weak_list),
        ("If-Modified-Since", MTIME_IMF),
        ("If-Modified-Since", &after),
        // RFC 9110 §5.6.7: the obsolete RFC 850 and asctime forms must be accepted too.
        ("If-Modified-Since", "Thursday, 04-Mar-21 05:06:07 GMT"),
        ("If-Modified-Since", "Thu Mar  4 05:06:07 2021"),
    ];
    for method in ["GET", "HEAD"] {
        for h in not_modified {
            let r = s.ask(method, "/assets/a.css", &[*h]);
            let what = format!("{method} with {}: {}", h.0, h.1);
            f.eq(&format!("{what}: status"), r.status, 304);
            f.eq(
                &format!("{what}: ETag"),
                r.header("etag"),
                Some(etag.as_str()),
            );
            f.check(r.body.is_empty(), || format!("{what}: 304 with a body"));
        }
    }
    let modified: &[&[(&str, &str)]] = &[
        &[("If-None-Match", "\"nope\"")],
        &[("If-None-Match", "W/\"nope\"")],
        &[("If-Modified-Since", &before)],
        &[("If-Modified-Since", "not a date")],
        // If-Modified-Since is ignored when If-None-Match is present.
        &[("If-None-Match", "\"nope\""), ("If-Modified-Since", &after)],
    ];
    for hs in modified {
        let r = s.get("/assets/a.css", hs);
        f.check(r.status == 200 && r.body == A_CSS, || {
            format!(
                "GET with {hs:?}: want 200 with the file, got {}",
                r.summary()
            )
        });
    }

    // A 304 leaves the connection usable (it carried no body).
    let mut c = Conn::connect(s.web());
    c.send(&req(
        "GET",
        "/assets/a.css",
        "www.example.com",
        &[("If-None-Match", &etag)],
        b"",
    ));
    c.send(&req("GET", "/assets/ten.txt", "www.example.com", &[], b""));
    let r = c.read_response();
    f.eq("pipelined 304: status", r.status, 304);
    match c.try_read_response() {
        Ok(r) => f.check(r.status == 200 && r.body == TEN, || {
            format!("after a 304: {}", r.summary())
        }),
        Err(e) => f.0.push(format!("after a 304: {e}")),
    }
    f.assert_none();
}

#[test]
fn if_match_and_if_unmodified_since() {
    let s = site();
    let mut f = Failures::default();
    let etag = s
        .get("/assets/a.css", &[])
        .header("etag")
        .expect("an ETag")
        .to_string();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    let before = imf(MTIME - 1);
    let after = imf(MTIME + 3600);
    let failed: &[(&str, &str)] = &[
        ("If-Match", "\"nope\""),
        // If-Match compares strongly: a weak tag never matches.
        ("If-Match", &weak),
        ("If-Unmodified-Since", &before),
    ];
    for h in failed {
        let r = s.get("/assets/a.css", &[*h]);
        f.eq(&format!("GET with {}: {}: status", h.0, h.1), r.status, 412);
        f.check(r.body.windows(A_CSS.len()).all(|w| w != A_CSS), || {
            format!("GET with {}: {}: 412 carries the file", h.0, h.1)
        });
    }
    let passed: &[(&str, &str)] = &[
        ("If-Match", &etag),
        ("If-Match", "*"),
        ("If-Match", &list),
        ("If-Unmodified-Since", MTIME_IMF),
        ("If-Unmodified-Since", &after),
    ];
    for h in passed {
        let r = s.get("/assets/a.css", &[*h]);
        f.check(r.status == 200 && r.body == A_CSS, || {
            format!("GET with {}: {}: want 200, got {}", h.0, h.1, r.summary())
        });
    }
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Ranges

#[test]
fn single_ranges() {
    let s = site();
    let mut f = Failures::default();
    // (Range, Content-Range, bytes) on the 26-byte alphabet
    let cases: &[(&str, &str, &[u8])] = &[
        ("bytes=0-9", "bytes 0-9/26", b"abcdefghij"),
        ("bytes=-5", "bytes 21-25/26", b"vwxyz"),
        ("bytes=5-", "bytes 5-25/26", b"fghijklmnopqrstuvwxyz"),
        ("bytes=25-25", "bytes 25-25/26", b"z"),
        ("bytes=20-1000", "bytes 20-25/26", b"uvwxyz"),
        ("bytes=-100", "bytes 0-25/26", ALPHA),
        ("bytes=0-0", "bytes 0-0/26", b"a"),
    ];
    for (range, cr, want) in cases {
        let r = s.get("/assets/alpha.txt", &[("Range", range)]);
        let what = format!("Range: {range}");
        f.eq(&format!("{what}: status"), r.status, 206);
        f.eq(
            &format!("{what}: Content-Range"),
            r.header("content-range"),
            Some(*cr),
        );
        f.eq(
            &format!("{what}: Content-Length"),
            r.header("content-length"),
            Some(want.len().to_string().as_str()),
        );
        f.eq(
            &format!("{what}: body"),
            r.body_str(),
            String::from_utf8_lossy(want).into(),
        );
        f.eq(
            &format!("{what}: Content-Type"),
            media_type(r.header("content-type")).as_deref(),
            Some("text/plain"),
        );
    }

    // Unsatisfiable: 416 naming the length.
    for range in ["bytes=1000-", "bytes=10-", "bytes=10-20"] {
        let r = s.get("/assets/ten.txt", &[("Range", range)]);
        f.eq(&format!("ten.txt Range: {range}: status"), r.status, 416);
        f.eq(
            &format!("ten.txt Range: {range}: Content-Range"),
            r.header("content-range"),
            Some("bytes */10"),
        );
    }

    // Invalid or foreign-unit ranges are ignored: the whole file.
    for range in [
        "bytes=abc",
        "bytes=",
        "bytes=--5",
        "bytes=1-2-3",
        "bytes 0-5",
        "items=0-5",
        "bytes=0x1-5",
    ] {
        let r = s.get("/assets/alpha.txt", &[("Range", range)]);
        f.check(r.status == 200 && r.body == ALPHA, || {
            format!(
                "Range: {range}: want 200 with the whole file, got {}",
                r.summary()
            )
        });
        f.check(r.header("content-range").is_none(), || {
            format!("Range: {range}: 200 with Content-Range")
        });
    }

    // If-Range: a matching strong tag honours the range, anything else gives the whole file.
    let etag = s
        .get("/assets/alpha.txt", &[])
        .header("etag")
        .expect("an ETag")
        .to_string();
    let r = s.get(
        "/assets/alpha.txt",
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    );
    f.check(r.status == 206 && r.body == b"abcdefghij", || {
        format!(
            "If-Range with the current ETag: want 206, got {}",
            r.summary()
        )
    });
    let weak = format!("W/{etag}");
    for stale in ["\"stale\"", weak.as_str(), "Thu, 01 Jan 2015 00:00:00 GMT"] {
        let r = s.get(
            "/assets/alpha.txt",
            &[("Range", "bytes=0-9"), ("If-Range", stale)],
        );
        f.check(r.status == 200 && r.body == ALPHA, || {
            format!(
                "If-Range: {stale}: want 200 with the whole file, got {}",
                r.summary()
            )
        });
    }
    // (HEAD with a Range is not checked: RFC 9110 §14.2 defines ranges for GET only, so a
    // 200 and a 206 head are both defensible.)
    f.assert_none();
}

/// One part of a multipart/byteranges body: its headers and its bytes.
struct Part {
    headers: Vec<(String, String)>,
    data: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Parses a multipart body (RFC 2046 §5.1.1) strictly: a delimiter is CRLF `--boundary`
/// (the first may start the body), parts end at the next delimiter, `--boundary--` closes.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    let mut pos = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        find(body, delim.as_bytes(), 0).ok_or("no first boundary")? + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            let rest = &body[pos + 2..];
            if !(rest.is_empty() || rest == b"\r\n") {
                return Err(format!(
                    "{} bytes after the close delimiter: {:?}",
                    rest.len(),
                    String::from_utf8_lossy(&rest[..rest.len().min(100)])
                ));
            }
            return Ok(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(format!("no CRLF after a boundary at byte {pos}"));
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("part head not terminated")?;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let mut headers = Vec::new();
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| format!("part header without colon: {line:?}"))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let data_start = head_end + 4;
        let next = find(body, delim.as_bytes(), data_start).ok_or("part not terminated")?;
        parts.push(Part {
            headers,
            data: body[data_start..next].to_vec(),
        });
        pos = next + delim.len();
    }
}

#[test]
fn multiple_ranges_are_multipart_byteranges() {
    let s = site();
    let file = range_bytes();
    // Far apart, so that coalescing them would not pay.
    let r = s.get("/assets/range.txt", &[("Range", "bytes=0-9,1000-1019,-7")]);
    assert_eq!(r.status, 206, "{}", r.summary());
    assert!(
        r.header("content-range").is_none(),
        "a multipart 206 has no top-level Content-Range: {}",
        r.summary()
    );
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert_eq!(
        media_type(Some(&ct)).as_deref(),
        Some("multipart/byteranges"),
        "{}",
        r.summary()
    );
    let boundary = ct
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no boundary in {ct:?}"));
    assert!(
        !boundary.is_empty() && boundary.len() <= 70,
        "boundary {boundary:?}"
    );
    let parts = parse_multipart(&r.body, &boundary).unwrap_or_else(|e| {
        panic!(
            "multipart body does not parse: {e}\n{:?}",
            String::from_utf8_lossy(&r.body)
        )
    });
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for p in &parts {
        assert_eq!(
            media_type(p.header("content-type")).as_deref(),
            Some("text/plain"),
            "part headers {:?}",
            p.headers
        );
        let cr = p
            .header("content-range")
            .unwrap_or_else(|| panic!("part without Content-Range: {:?}", p.headers))
            .to_string();
        let spec = cr
            .strip_prefix("bytes ")
            .and_then(|x| x.strip_suffix(&format!("/{RANGE_LEN}")))
            .unwrap_or_else(|| panic!("part Content-Range {cr:?}"));
        let (a, b) = spec.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(p.data, &file[a..=b], "part {cr} data");
        got.push((cr, p.data.clone()));
    }
    let crs: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        crs,
        [
            "bytes 0-9/2000",
            "bytes 1000-1019/2000",
            "bytes 1993-1999/2000"
        ],
        "the parts, in the order asked"
    );
}

// ---------------------------------------------------------------------------------------------
// Precompressed siblings

#[test]
fn precompressed_siblings_by_accept_encoding() {
    let s = site();
    let mut f = Failures::default();
    let js = "text/javascript|application/javascript";
    // (Accept-Encoding, expected body, expected Content-Encoding)
    let cases: &[(Option<&str>, &[u8], Option<&str>)] = &[
        (Some("br"), APP_JS_BR, Some("br")),
        (Some("gzip"), APP_JS_GZ, Some("gzip")),
        (Some("GZIP"), APP_JS_GZ, Some("gzip")),
        (Some("gzip;q=0"), APP_JS, None),
        (Some("gzip; q=0.0"), APP_JS, None),
        (Some("br;q=0, gzip"), APP_JS_GZ, Some("gzip")),
        (Some("br;q=0, gzip;q=0"), APP_JS, None),
        (Some("identity"), APP_JS, None),
        (Some("deflate"), APP_JS, None),
        (Some("xbr, xgzip"), APP_JS, None),
        (None, APP_JS, None),
    ];
    for (ae, body, ce) in cases {
        let headers: Vec<(&str, &str)> = ae.iter().map(|v| ("Accept-Encoding", *v)).collect();
        let r = s.get("/assets/app.js", &headers);
        let what = format!("app.js with Accept-Encoding {ae:?}");
        f.eq(&format!("{what}: status"), r.status, 200);
        f.eq(&format!("{what}: body"), r.body.as_slice(), *body);
        f.eq(
            &format!("{what}: Content-Encoding"),
            r.header("content-encoding"),
            *ce,
        );
        f.eq(
            &format!("{what}: Content-Length"),
            r.header("content-length"),
            Some(body.len().to_string().as_str()),
        );
        let ct = media_type(r.header("content-type"));
        f.check(
            ct.as_deref().is_some_and(|t| js.split('|').any(|m| m == t)),
            || format!("{what}: Content-Type {:?}", r.header("content-type")),
        );
        if ce.is_some() {
            f.check(r.head.has_token("vary", "accept-encoding"), || {
                format!("{what}: no Vary: Accept-Encoding ({:?})", r.header("vary"))
            });
        }
    }
    // Both accepted: either sibling, consistently labelled.
    let r = s.get(
        "/assets/app.js",
        &[("Accept-Encoding", "gzip, deflate, br")],
    );
    let ok = match r.header("content-encoding") {
        Some("br") => r.body == APP_JS_BR,
        Some("gzip") => r.body == APP_JS_GZ,
        _ => false,
    };
    f.check(ok && r.head.has_token("vary", "accept-encoding"), || {
        format!("app.js with gzip, deflate, br: {}", r.summary())
    });
    // No sibling: identity.
    let r = s.get("/assets/plain.js", &[("Accept-Encoding", "gzip, br")]);
    f.check(
        r.status == 200 && r.body == PLAIN_JS && r.header("content-encoding").is_none(),
        || format!("plain.js (no siblings) with gzip, br: {}", r.summary()),
    );
    // precompressed = false: identity whatever is accepted.
    let r = s.get("/nopre/app.js", &[("Accept-Encoding", "gzip, br")]);
    f.check(
        r.status == 200 && r.body == APP_JS && r.header("content-encoding").is_none(),
        || {
            format!(
                "/nopre/app.js (precompressed = false) with gzip, br: {}",
                r.summary()
            )
        },
    );
    // HEAD agrees with GET.
    let get = s.get("/assets/app.js", &[("Accept-Encoding", "br")]);
    let head = s.ask("HEAD", "/assets/app.js", &[("Accept-Encoding", "br")]);
    for h in ["content-encoding", "content-length", "content-type", "etag"] {
        f.eq(&format!("HEAD br: {h}"), head.header(h), get.header(h));
    }
    // The siblings themselves are ordinary files.
    let r = s.get("/assets/app.js.gz", &[]);
    f.check(r.status == 200 && r.body == APP_JS_GZ, || {
        format!("GET /assets/app.js.gz: {}", r.summary())
    });
    f.assert_none();
}

/// A strong ETag names one representation's bytes (RFC 9110 §8.8.3): the identity file and
/// its compressed siblings must not share one, or a cache could answer If-None-Match or
/// If-Range for one with the other.
#[test]
fn precompressed_variants_have_their_own_etag() {
    let s = site();
    let id = s.get("/assets/app.js", &[]);
    let br = s.get("/assets/app.js", &[("Accept-Encoding", "br")]);
    let gz = s.get("/assets/app.js", &[("Accept-Encoding", "gzip")]);
    let tags = [id.header("etag"), br.header("etag"), gz.header("etag")];
    assert!(tags.iter().all(|t| t.is_some()), "{tags:?}");
    assert!(
        tags[0] != tags[1] && tags[0] != tags[2] && tags[1] != tags[2],
        "identity, br and gzip ETags: {tags:?}"
    );
    // And a range of the br variant is a range of the br bytes.
    let r = s.get(
        "/assets/app.js",
        &[("Accept-Encoding", "br"), ("Range", "bytes=0-3")],
    );
    if r.status == 206 {
        assert_eq!(r.body, &APP_JS_BR[..4], "{}", r.summary());
        assert_eq!(r.header("content-encoding"), Some("br"), "{}", r.summary());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 0-3/{}", APP_JS_BR.len()).as_str())
        );
    }
}

/// The same with siblings of equal size and mtime (a build writes them in the same second;
/// equal sizes are rare but possible): br and gzip bytes differ, so their strong ETags must.
#[test]
fn same_size_siblings_have_distinct_etags() {
    let s = site();
    let a = s.root.join("assets");
    put(&a.join("same.js"), b"console.log('same size');");
    put(&a.join("same.js.br"), b"BR-0123456789");
    put(&a.join("same.js.gz"), b"GZ-0123456789");
    let br = s.get("/assets/same.js", &[("Accept-Encoding", "br")]);
    let gz = s.get("/assets/same.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!(br.body, b"BR-0123456789", "{}", br.summary());
    assert_eq!(gz.body, b"GZ-0123456789", "{}", gz.summary());
    assert_ne!(
        br.header("etag"),
        gz.header("etag"),
        "br and gzip bytes of /assets/same.js under one strong ETag"
    );
}

// ---------------------------------------------------------------------------------------------
// Directories

#[test]
fn index_files_redirects_and_no_listing() {
    let s = site();
    let mut f = Failures::default();
    let r = s.get("/assets/", &[]);
    f.check(r.status == 200 && r.body == INDEX, || {
        format!("GET /assets/: want the index, got {}", r.summary())
    });
    f.eq(
        "/assets/ Content-Type",
        media_type(r.header("content-type")).as_deref(),
        Some("text/html"),
    );
    let r = s.get("/assets/sub/", &[]);
    f.check(r.status == 200 && r.body == SUB_INDEX, || {
        format!("GET /assets/sub/: want its index, got {}", r.summary())
    });
    let r = s.get("/assets/sub/?a=1", &[]);
    f.check(r.status == 200 && r.body == SUB_INDEX, || {
        format!("GET /assets/sub/?a=1: want its index, got {}", r.summary())
    });
    for path in ["/assets/empty/", "/assets/empty/?x=1"] {
        let r = s.get(path, &[]);
        f.eq(&format!("GET {path}: status"), r.status, 403);
        f.check(!r.body_str().contains("listed-name-7f3a"), || {
            format!("GET {path}: the body lists the directory: {}", r.summary())
        });
    }
    for (path, loc) in [
        ("/assets/sub", "/assets/sub/"),
        ("/assets/sub?x=1&y=2", "/assets/sub/?x=1&y=2"),
        ("/assets/empty", "/assets/empty/"),
    ] {
        let r = s.get(path, &[]);
        f.eq(&format!("GET {path}: status"), r.status, 301);
        f.eq(
            &format!("GET {path}: Location"),
            r.header("location"),
            Some(loc),
        );
    }
    let r = s.ask("HEAD", "/assets/sub", &[]);
    f.eq("HEAD /assets/sub: status", r.status, 301);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Security

/// Request targets that try to read outside the root (or outside the route's directory).
const ATTACKS: &[&str] = &[
    "/assets/../secret",
    "/assets/../secret.txt",
    "/assets/../../secret.txt",
    "/assets/../../secret",
    "/assets/a/../../secret",
    "/assets/a/../../../secret.txt",
    "/assets/sub/../../../secret.txt",
    "/assets/../../../../../../../../../../etc/passwd",
    "/assets/..",
    "/assets/../",
    "/assets/../..",
    "/assets/..//..//secret.txt",
    "/assets//../../secret.txt",
    "/assets/./../../secret.txt",
    "/assets/%2e%2e/secret",
    "/assets/%2e%2e/%2e%2e/secret.txt",
    "/assets/%2E%2E/%2E%2E/secret.txt",
    "/assets/%2e%2E/%2E%2e/secret.txt",
    "/assets/.%2e/.%2e/secret.txt",
    "/assets/%2e./%2e./secret.txt",
    "/assets/%2e%2e",
    "/assets/%2e%2e/",
    "/assets/..%2f..%2fsecret.txt",
    "/assets/..%2F..%2Fsecret.txt",
    "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/assets/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/assets/sub%2f..%2f..%2f..%2fsecret.txt",
    "/assets/%2f..%2f..%2fsecret.txt",
    "/assets/..%5c..%5csecret.txt",
    "/assets/..%5C..%5Csecret.txt",
    "/assets/%2e%2e%5c%2e%2e%5csecret.txt",
    "/assets/..\\..\\secret.txt",
    "/assets/sub\\..\\..\\..\\secret.txt",
    "/assets/ten.txt%00",
    "/assets/ten.txt%00.html",
    "/assets/%00/../../secret.txt",
    "/assets/..%00/..%00/secret.txt",
    "/assets/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt",
    "/assets/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afsecret.txt",
    "/assets/%e0%80%ae%e0%80%ae/%e0%80%ae%e0%80%ae/secret.txt",
    "/assets/%c1%9c..%c1%9csecret.txt",
    "/assets/%252e%252e/%252e%252e/secret.txt",
    "/assets/%25%32%65%25%32%65/secret.txt",
    "/assets/%%32%65%%32%65/%%32%65%%32%65/secret.txt",
    "/assets/%u002e%u002e/%u002e%u002e/secret.txt",
    "/assets/..;/..;/secret.txt",
    "/assets/link-out.txt",
    "/assets/link-out-rel.txt",
    "/assets/dirlink-out/secret2.txt",
    "/assets/dirlink-out-rel/secret2.txt",
    "/assets/dirlink-out/",
    "/assets/dirlink-out",
    "/assets/dirlink-out/../secret.txt",
    "/assets/trap/",
    "/assets/trap/index.html",
];

/// Sends every attack on `addr` (origin-form and absolute-form) and collects failures: a
/// marker in the answer always, and a status outside 400/403/404 when `strict`.
fn run_attacks(s: &Site, addr: SocketAddr, strict: bool, f: &mut Failures) {
    let mut targets: Vec<String> = ATTACKS.iter().map(|a| a.to_string()).collect();
    for a in [
        "/assets/../../secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/link-out.txt",
    ] {
        targets.push(format!("http://www.example.com{a}"));
    }
    for t in &targets {
        for method in ["GET", "HEAD"] {
            let raw = req(method, t, "www.example.com", &[], b"");
            let what = format!("{method} {t}");
            match exchange(addr, &raw, method == "HEAD") {
                Ok(r) => {
                    eprintln!("{addr} {what}: {}", r.status);
                    if let Some(m) = s.leaked(&r.head.raw).or_else(|| s.leaked(&r.body)) {
                        f.0.push(format!("{what}: LEAKED {m}: {}", r.summary()));
                    } else if strict && ![400, 403, 404].contains(&r.status) {
                        f.0.push(format!("{what}: want 400/403/404, got {}", r.summary()));
                    } else if !strict && r.status < 400 && r.backend() != "app" {
                        f.0.push(format!(
                            "{what}: a non-error answer not from the proxied pool: {}",
                            r.summary()
                        ));
                    }
                }
                Err(e) if strict => f.0.push(format!("{what}: no answer: {e}")),
                Err(_) => {}
            }
        }
    }
}

#[test]
fn traversal_attacks_never_leave_the_root() {
    let s = site();
    let mut f = Failures::default();
    // Sanity: the files the attacks aim at exist and the markers are there.
    for m in &s.markers {
        assert!(!m.is_empty());
    }
    for p in ["secret.txt", "outside/secret2.txt", "www/secret"] {
        let bytes = fs::read(s.base.join(p)).unwrap();
        assert!(s.leaked(&bytes).is_some(), "test bug: {p} has no marker");
    }
    run_attacks(&s, s.only(), true, &mut f);
    run_attacks(&s, s.web(), false, &mut f);
    // The daemon survived all of it.
    let r = s.get("/assets/ten.txt", &[]);
    f.check(r.status == 200 && r.body == TEN, || {
        format!("after the attacks: {}", r.summary())
    });
    f.assert_none();
}

#[test]
fn traversal_attacks_with_curl_path_as_is() {
    let s = site();
    let mut f = Failures::default();
    for path in [
        "/assets/../../secret.txt",
        "/assets/../secret",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/.%2e/.%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/..%5c..%5csecret.txt",
        "/assets/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt",
        "/assets/link-out.txt",
        "/assets/dirlink-out/secret2.txt",
    ] {
        let url = format!("http://{}{path}", s.only());
        let (code, out, err) = curl(&[
            "--path-as-is",
            "-H",
            "Host: www.example.com",
            "-D",
            "-",
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.rsplit('\n').next().unwrap_or_default().to_string();
        if let Some(m) = s.leaked(&out) {
            f.0.push(format!("curl --path-as-is {path}: LEAKED {m}: {text:?}"));
        } else if code != 0 || !["400", "403", "404"].contains(&status.as_str()) {
            f.0.push(format!(
                "curl --path-as-is {path}: exit {code} {err:?}, status {status:?}, want 400/403/404"
            ));
        }
    }
    f.assert_none();
}

#[test]
fn double_encoding_is_literal_and_symlinks_inside_the_root_work() {
    let s = site();
    let mut f = Failures::default();
    // `%252e%252e` decodes once, to the literal name `%2e%2e`: a file in assets/.
    let r = s.get("/assets/%252e%252e", &[]);
    f.check(r.status == 200 && r.body == LITERAL, || {
        format!(
            "GET /assets/%252e%252e: want the file named %2e%2e, got {}",
            r.summary()
        )
    });
    // A symlink to a file inside the root.
    let r = s.get("/assets/link-in.txt", &[]);
    f.check(r.status == 200 && r.body == TEN, || {
        format!("GET /assets/link-in.txt (-> ten.txt): {}", r.summary())
    });
    // Percent-encoded ordinary characters are the characters.
    let r = s.get("/assets/%61.css", &[]);
    f.check(r.status == 200 && r.body == A_CSS, || {
        format!("GET /assets/%61.css: want a.css, got {}", r.summary())
    });
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Transfer

#[test]
fn large_file_and_pipelining_and_keep_alive() {
    let s = site();
    const BIG: usize = 5 << 20;
    let big = pattern(0, BIG);
    put(&s.root.join("assets/big.bin"), &big);
    let want = sha256_hex(&big);

    let r = s.get("/assets/big.bin", &[]);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256_hex(&r.body), want, "5 MiB body differs");

    // Pipelined: big then small, in one write; both intact and in order; then more.
    let mut c = Conn::connect(s.web());
    let mut two = req("GET", "/assets/big.bin", "www.example.com", &[], b"");
    two.extend(req("GET", "/assets/ten.txt", "www.example.com", &[], b""));
    c.send(&two);
    let r1 = c.read_response();
    assert_eq!(r1.status, 200, "{}", r1.summary());
    assert_eq!(r1.body.len(), BIG);
    assert_eq!(sha256_hex(&r1.body), want, "pipelined 5 MiB body differs");
    let r2 = c.read_response();
    assert_eq!(
        (r2.status, r2.body.as_slice()),
        (200, TEN),
        "{}",
        r2.summary()
    );
    // Keep-alive: the same connection serves a range, a proxied request and a static one.
    let r = c.get("/assets/range.txt", "www.example.com");
    assert_eq!(r.body, range_bytes(), "{}", r.summary());
    c.send(&req(
        "GET",
        "/assets/big.bin",
        "www.example.com",
        &[("Range", "bytes=4194304-4194403")],
        b"",
    ));
    let r = c.read_response();
    assert_eq!(r.status, 206, "{}", r.summary());
    assert_eq!(r.body, &big[4_194_304..4_194_404]);
    let r = c.get("/proxied", "www.example.com");
    assert_eq!((r.status, r.backend()), (200, "app"), "{}", r.summary());
    let r = c.get("/assets/a.css", "www.example.com");
    assert_eq!(r.body, A_CSS, "{}", r.summary());
}

#[test]
fn error_answers_keep_the_connection_usable() {
    let s = site();
    let etag = s
        .get("/assets/a.css", &[])
        .header("etag")
        .unwrap()
        .to_string();
    let steps: Vec<(Vec<u8>, u16)> = vec![
        (
            req(
                "GET",
                "/assets/a.css",
                "www.example.com",
                &[("If-None-Match", &etag)],
                b"",
            ),
            304,
        ),
        (req("GET", "/assets/nope", "www.example.com", &[], b""), 404),
        (
            req(
                "GET",
                "/assets/alpha.txt",
                "www.example.com",
                &[("Range", "bytes=0-1")],
                b"",
            ),
            206,
        ),
        (
            req(
                "GET",
                "/assets/ten.txt",
                "www.example.com",
                &[("Range", "bytes=100-")],
                b"",
            ),
            416,
        ),
        (
            req(
                "GET",
                "/assets/a.css",
                "www.example.com",
                &[("If-Match", "\"no\"")],
                b"",
            ),
            412,
        ),
        (
            req("DELETE", "/assets/a.css", "www.example.com", &[], b""),
            405,
        ),
        (req("GET", "/assets/sub", "www.example.com", &[], b""), 301),
        (
            req("GET", "/assets/empty/", "www.example.com", &[], b""),
            403,
        ),
        (
            req("GET", "/assets/ten.txt", "www.example.com", &[], b""),
            200,
        ),
    ];
    // One at a time, then all pipelined.
    let mut c = Conn::connect(s.web());
    for (raw, want) in &steps {
        let r = c.read_after(raw);
        assert_eq!(
            r.status,
            *want,
            "{:?}: {}",
            String::from_utf8_lossy(raw),
            r.summary()
        );
    }
    let mut c = Conn::connect(s.web());
    c.send(
        &steps
            .iter()
            .flat_map(|(r, _)| r.clone())
            .collect::<Vec<u8>>(),
    );
    for (raw, want) in &steps {
        let r = c.read_response();
        assert_eq!(
            r.status,
            *want,
            "pipelined {:?}: {}",
            String::from_utf8_lossy(raw),
            r.summary()
        );
    }
    let r = c.get("/assets/ten.txt", "www.example.com");
    assert_eq!(r.body, TEN);
}

trait ReadAfter {
    fn read_after(&mut self, raw: &[u8]) -> Response;
}

impl ReadAfter for Conn {
    fn read_after(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }
}

/// Within `WINDOW` of a change on disk every answer is the new state: a few requests on fresh
/// connections (so on every shard) all agree.
const WINDOW: Duration = Duration::from_secs(2);

#[track_caller]
fn settled(s: &Site, changed: Instant, what: &str, ok: impl Fn(&Response) -> bool) {
    std::thread::sleep(WINDOW.saturating_sub(changed.elapsed()));
    for i in 0..8 {
        let r = s.get("/assets/changing.txt", &[]);
        assert!(
            ok(&r),
            "{what}, request {i} {:?} after the change: {}",
            changed.elapsed(),
            r.summary()
        );
    }
}

#[test]
fn file_changes_on_disk_are_seen_within_two_seconds() {
    let s = site();
    let path = s.root.join("assets/changing.txt");
    let v1 = b"version one".to_vec();
    put(&path, &v1);
    let r = s.get("/assets/changing.txt", &[]);
    assert_eq!(r.body, v1, "{}", r.summary());
    let etag1 = r.header("etag").unwrap_or_default().to_string();

    // Replaced by rename (a deploy): every answer is one version whole, then the new one.
    let v2 = b"version two, which is longer than the first".to_vec();
    let tmp = s.root.join("assets/.changing.tmp");
    fs::write(&tmp, &v2).unwrap();
    let changed = Instant::now();
    fs::rename(&tmp, &path).unwrap();
    let (r, ok) = poll_until(
        WINDOW,
        || s.get("/assets/changing.txt", &[]),
        |r| {
            assert!(
                r.status == 200 && (r.body == v1 || r.body == v2),
                "while replacing: {}",
                r.summary()
            );
            r.body == v2
        },
    );
    assert!(
        ok,
        "still the old content 2 s after a rename: {}",
        r.summary()
    );
    settled(&s, changed, "after the rename", |r| {
        r.status == 200 && r.body == v2
    });
    let etag2 = r.header("etag").unwrap_or_default().to_string();
    assert_ne!(etag1, etag2, "the ETag did not change with the content");
    let r = s.get("/assets/changing.txt", &[("If-None-Match", &etag1)]);
    assert!(
        r.status == 200 && r.body == v2,
        "old ETag after the rename: {}",
        r.summary()
    );

    // Rewritten in place, longer again.
    let v3 = b"version three, rewritten in place and longer than both before it".to_vec();
    let changed = Instant::now();
    fs::write(&path, &v3).unwrap();
    settled(&s, changed, "after the in-place rewrite", |r| {
        r.status == 200 && r.body == v3
    });
    // The old validator no longer matches.
    let r = s.get("/assets/changing.txt", &[("If-None-Match", &etag2)]);
    assert!(
        r.status == 200 && r.body == v3,
        "old ETag after the rewrite: {}",
        r.summary()
    );

    // Deleted: 404.
    let changed = Instant::now();
    fs::remove_file(&path).unwrap();
    settled(&s, changed, "after the deletion", |r| r.status == 404);
}

// ---------------------------------------------------------------------------------------------
// Routing, config, counters

#[test]
fn static_and_proxied_routes_share_a_frontend() {
    let s = site();
    let mut c = Conn::connect(s.web());
    for (path, want_backend, body) in [
        ("/assets/a.css", None, Some(A_CSS)),
        ("/api/x", Some("app"), None),
        ("/assets", Some("app"), None),
        ("/assetsx/a.css", Some("app"), None),
        ("/", Some("app"), None),
        ("/assets/ten.txt", None, Some(TEN)),
        ("/nopre/app.js", None, Some(APP_JS)),
    ] {
        let r = c.get(path, "www.example.com");
        assert_eq!(r.status, 200, "GET {path}: {}", r.summary());
        assert_eq!(
            r.header("x-backend"),
            want_backend,
            "GET {path}: {}",
            r.summary()
        );
        if let Some(b) = body {
            assert_eq!(r.body, b, "GET {path}");
        }
    }
}

#[test]
fn a_route_with_both_pool_and_static_is_refused() {
    let dir = temp_dir("static-config");
    let root = dir.join("www");
    fs::create_dir_all(&root).unwrap();
    let cfg = format!(
        r#"
[daemon]
shards = 1
io_driver = "epoll"

[[http]]
name = "web"
listen = ["127.0.0.1:1"]
default_pool = "app"

  [[http.route]]
  pool = "app"
  path_prefix = "/assets/"
  static = {{ root = "{}", index = ["index.html"] }}

[pool.app]
servers = [ {{ name = "a", addr = "127.0.0.1:2" }} ]
"#,
        root.display()
    );
    let path = dir.join("both.toml");
    fs::write(&path, &cfg).unwrap();
    for real in [false, true] {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path);
        if !real {
            cmd.arg("--check");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = run_bounded(child, Duration::from_secs(10), "shardgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check={}: stderr {err}", !real);
        assert!(
            err.contains("static") && err.contains("route[0]"),
            "the message names the route and the key: {err}"
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

fn scrape(p: &Proxy) -> common::prom::Exposition {
    let (code, text) = p.ctl("show metrics");
    assert_eq!(code, 0, "show metrics: {text}");
    common::prom::Exposition::parse(&text, false)
}

#[test]
fn static_requests_are_counted() {
    let s = site();
    let before = stats(&s.proxy);
    let m0 = scrape(&s.proxy);
    let etag = {
        let mut c = Conn::connect(s.web());
        let r = c.get("/assets/ten.txt", "www.example.com");
        r.header("etag").unwrap().to_string()
    };
    let mut c = Conn::connect(s.web());
    for _ in 0..4 {
        let r = c.get("/assets/ten.txt", "www.example.com");
        assert_eq!(r.status, 200);
    }
    type Ask<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let asks: [Ask; 5] = [
        ("GET", "/assets/nope", &[], 404),
        ("GET", "/assets/alpha.txt", &[("Range", "bytes=0-1")], 206),
        ("GET", "/assets/ten.txt", &[("If-None-Match", &etag)], 304),
        ("GET", "/assets/sub", &[], 301),
        ("DELETE", "/assets/ten.txt", &[], 405),
    ];
    for (m, path, h, want) in asks {
        c.send(&req(m, path, "www.example.com", h, b""));
        let r = c.read_response();
        assert_eq!(r.status, want, "{m} {path}: {}", r.summary());
    }
    drop(c);
    // 10 requests: 2xx 6 (five 200, one 206), 3xx 2 (304, 301), 4xx 2 (404, 405).
    let grew = |after: &std::collections::HashMap<String, i64>, k: &str| {
        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
    };
    let (after, ok) = poll_until(
        Duration::from_secs(3),
        || stats(&s.proxy),
        |after| grew(after, "requests") >= 10,
    );
    assert!(
        ok,
        "show stats `requests` did not count the static requests:\nbefore {before:?}\nafter {after:?}"
    );
    assert_eq!(
        grew(&after, "requests"),
        10,
        "requests: {before:?} -> {after:?}"
    );
    assert_eq!(
        grew(&after, "upstream.connects"),
        0,
        "static requests opened upstream connections"
    );
    let web = [("frontend", "web")];
    let (m1, ok) = poll_until(
        Duration::from_secs(3),
        || scrape(&s.proxy),
        |m| {
            m.one("shardgate_http_requests_total", &web)
                - m0.one("shardgate_http_requests_total", &web)
                >= 10.0
        },
    );
    assert!(
        ok,
        "shardgate_http_requests_total{{frontend=web}} did not grow by 10"
    );
    let mut f = Failures::default();
    let d = |name: &str, labels: &[(&str, &str)]| m1.sum(name, labels) - m0.sum(name, labels);
    f.eq(
        "http_requests_total delta",
        d("shardgate_http_requests_total", &web),
        10.0,
    );
    for (class, n) in [("2xx", 6.0), ("3xx", 2.0), ("4xx", 2.0), ("5xx", 0.0)] {
        f.eq(
            &format!("http_responses_total code={class} delta"),
            d(
                "shardgate_http_responses_total",
                &[("frontend", "web"), ("code", class)],
            ),
            n,
        );
    }
    f.eq(
        "upstream connects (metrics)",
        d("shardgate_upstream_connects_total", &[]),
        0.0,
    );
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// More edges

/// RFC 9110 §8.8.1: a strong validator changes whenever the representation data changes. Two
/// versions of the same size written within the same second (a build writing a file twice, a
/// deploy right after a build) differ only below the second in their mtime.
#[test]
fn etag_changes_with_the_content_within_the_same_second() {
    let s = site();
    let path = s.root.join("assets/resaved.txt");
    let at = |ms: u64| UNIX_EPOCH + Duration::from_secs(MTIME as u64) + Duration::from_millis(ms);
    fs::write(&path, b"first  version").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(at(100))
        .unwrap();
    let r1 = s.get("/assets/resaved.txt", &[]);
    assert_eq!(r1.body, b"first  version", "{}", r1.summary());
    let etag1 = r1.header("etag").unwrap().to_string();
    fs::write(&path, b"second version").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(at(600))
        .unwrap();
    let changed = Instant::now();
    std::thread::sleep(WINDOW.saturating_sub(changed.elapsed()));
    let r2 = s.get("/assets/resaved.txt", &[]);
    assert_eq!(r2.body, b"second version", "{}", r2.summary());
    let r = s.get("/assets/resaved.txt", &[("If-None-Match", &etag1)]);
    assert!(
        r.status == 200 && r.body == b"second version",
        "If-None-Match with the first version's ETag {etag1} after the content changed \
         (same size, same second, mtime .100 -> .600): {}",
        r.summary()
    );
}

#[test]
fn special_files_are_refused_without_blocking() {
    let s = site_with(1);
    let a = s.root.join("assets");
    let fifo = std::ffi::CString::new(a.join("fifo").display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(a.join("sock")).unwrap();
    std::os::unix::fs::symlink("loop", a.join("loop")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", a.join("zero")).unwrap();
    let dev = std::ffi::CString::new(a.join("devnull").display().to_string()).unwrap();
    // SAFETY: a valid path; makedev(1, 3) is /dev/null's number. May fail without privilege.
    let have_dev =
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) } == 0;
    let mut f = Failures::default();
    let mut paths = vec![
        "/assets/fifo",
        "/assets/sock",
        "/assets/loop",
        "/assets/zero",
    ];
    if have_dev {
        paths.push("/assets/devnull");
    }
    for path in paths {
        let t = Instant::now();
        let raw = req("GET", path, "www.example.com", &[], b"");
        let mut c = Conn::connect(s.web());
        c.set_read_timeout(Duration::from_secs(3));
        c.send(&raw);
        match read_one(&mut c, false) {
            Ok(r) => f.check([403, 404].contains(&r.status), || {
                format!("GET {path}: want 403/404, got {}", r.summary())
            }),
            Err(e) => f.0.push(format!("GET {path}: no answer within 3 s ({e})")),
        }
        f.check(t.elapsed() < Duration::from_secs(2), || {
            format!("GET {path} took {:?}", t.elapsed())
        });
    }
    // The (only) shard still answers.
    let r = s.get("/assets/ten.txt", &[]);
    f.check(r.body == TEN, || {
        format!("after the special files: {}", r.summary())
    });
    f.assert_none();
}

#[test]
fn a_client_that_stops_reading_a_big_file_blocks_no_one() {
    let s = site_with(1);
    const BIG: usize = 16 << 20;
    let big = pattern(7, BIG);
    put(&s.root.join("assets/huge.bin"), &big);
    // One client asks for 16 MiB and reads nothing for a while.
    let mut slow = Conn::connect(s.web());
    slow.send(&req("GET", "/assets/huge.bin", "www.example.com", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    // Others, on the same (only) shard, are served meanwhile.
    for i in 0..5 {
        let t = Instant::now();
        let raw = req("GET", "/assets/ten.txt", "www.example.com", &[], b"");
        let mut c = Conn::connect(s.web());
        c.set_read_timeout(Duration::from_secs(5));
        c.send(&raw);
        let r = read_one(&mut c, false)
            .unwrap_or_else(|e| panic!("request {i} while a big download is stalled: {e}"));
        assert_eq!(r.body, TEN);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    // The stalled client then gets every byte.
    let r = slow.read_response();
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&big), "16 MiB body differs");
    // One that hangs up mid-transfer harms nothing either.
    let mut quitter = Conn::connect(s.web());
    quitter.send(&req("GET", "/assets/huge.bin", "www.example.com", &[], b""));
    let mut buf = [0u8; 65536];
    let _ = std::io::Read::read(&mut quitter.stream(), &mut buf);
    drop(quitter);
    let r = s.get("/assets/huge.bin", &[("Range", "bytes=1000000-1000099")]);
    assert_eq!(r.body, &big[1_000_000..1_000_100], "{}", r.summary());
}

#[test]
fn multipart_ranges_of_a_large_file() {
    let s = site();
    const BIG: usize = 3 << 20;
    let big = pattern(3, BIG);
    put(&s.root.join("assets/large.bin"), &big);
    let r = s.get(
        "/assets/large.bin",
        &[("Range", "bytes=0-99,1048576-1049599,-100")],
    );
    assert_eq!(r.status, 206, "{}", r.summary());
    let ct = r.header("content-type").unwrap_or_default().to_string();
    let boundary = ct
        .split_once("boundary=")
        .map(|(_, b)| b.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("Content-Type {ct:?}"));
    let parts = parse_multipart(&r.body, &boundary).unwrap_or_else(|e| panic!("{e}"));
    let want = [
        (format!("bytes 0-99/{BIG}"), &big[..100]),
        (
            format!("bytes 1048576-1049599/{BIG}"),
            &big[1_048_576..1_049_600],
        ),
        (
            format!("bytes {}-{}/{BIG}", BIG - 100, BIG - 1),
            &big[BIG - 100..],
        ),
    ];
    assert_eq!(parts.len(), 3);
    for (p, (cr, data)) in parts.iter().zip(&want) {
        assert_eq!(p.header("content-range"), Some(cr.as_str()));
        assert!(p.data == *data, "part {cr}: data differs");
        assert_eq!(
            media_type(p.header("content-type")).as_deref(),
            Some("application/octet-stream")
        );
    }
}

#[test]
fn empty_file_and_http10() {
    let s = site();
    put(&s.root.join("assets/empty.txt"), b"");
    let mut f = Failures::default();
    let r = s.get("/assets/empty.txt", &[]);
    f.check(
        r.status == 200 && r.body.is_empty() && r.header("content-length") == Some("0"),
        || format!("empty file: {}", r.summary()),
    );
    let r = s.get("/assets/empty.txt", &[("Range", "bytes=0-")]);
    f.check(
        r.status == 416 && r.header("content-range") == Some("bytes */0"),
        || format!("empty file, bytes=0-: {}", r.summary()),
    );

    // HTTP/1.0 without keep-alive: the answer, then the connection closes.
    let mut c = Conn::connect(s.web());
    c.send(b"GET /assets/ten.txt HTTP/1.0\r\nHost: www.example.com\r\n\r\n");
    let r = c.read_response();
    f.check(r.status == 200 && r.body == TEN, || {
        format!("HTTP/1.0: {}", r.summary())
    });
    f.check(r.head.start_line.starts_with("HTTP/1."), || {
        r.head.start_line.clone()
    });
    if let Err(e) = c.check_closed(Duration::from_secs(3)) {
        f.0.push(format!("HTTP/1.0 without keep-alive: {e}"));
    }
    // HTTP/1.0 with keep-alive: says so and serves a second request.
    let mut c = Conn::connect(s.web());
    let ka =
        b"GET /assets/ten.txt HTTP/1.0\r\nHost: www.example.com\r\nConnection: keep-alive\r\n\r\n";
    c.send(ka);
    let r = c.read_response();
    f.check(r.status == 200 && r.body == TEN, || {
        format!("HTTP/1.0 keep-alive: {}", r.summary())
    });
    if r.head.has_token("connection", "keep-alive") {
        c.send(ka);
        let r2 = c.try_read_response();
        f.check(r2.as_ref().is_ok_and(|r| r.body == TEN), || {
            format!("second HTTP/1.0 keep-alive request: {r2:?}")
        });
    } else if let Err(e) = c.check_closed(Duration::from_secs(3)) {
        f.0.push(format!("HTTP/1.0 keep-alive refused but not closed: {e}"));
    }
    f.assert_none();
}

/// A static route for the whole site (prefix "/"): a directory asked for with extra leading
/// slashes must not be redirected to `//name/`, which a browser reads as another host.
#[test]
fn directory_redirect_is_never_protocol_relative() {
    let s = site();
    let mut f = Failures::default();
    let r = s.at("whole", "GET", "/assets", "www.example.com");
    f.eq("whole: /assets status", r.status, 301);
    f.eq(
        "whole: /assets Location",
        r.header("location"),
        Some("/assets/"),
    );
    let r = s.at("whole", "GET", "/assets/ten.txt", "www.example.com");
    f.check(r.status == 200 && r.body == TEN, || {
        format!("whole: {}", r.summary())
    });
    for path in ["//assets", "///assets", "//assets?x=1", "/.//assets"] {
        let r = s.at("whole", "GET", path, "www.example.com");
        let loc = r.header("location").unwrap_or_default();
        f.check(!(loc.starts_with("//") || loc.starts_with("/\\")), || {
            format!(
                "GET {path}: {} redirects to {loc:?}, another host for a browser",
                r.status
            )
        });
    }
    f.assert_none();
}

#[test]
fn two_roots_do_not_share_cached_files() {
    let s = site();
    for _ in 0..3 {
        for (host, want) in [("a.example", "site A"), ("b.example", "site B")] {
            let r = s.at("hosts", "GET", "/f.txt", host);
            assert_eq!(r.body_str(), want, "Host {host}: {}", r.summary());
        }
    }
}

#[test]
fn reload_to_another_root_serves_the_new_files() {
    let base = temp_dir("static-reload");
    put(&base.join("one/assets/f.txt"), b"root one");
    put(&base.join("two/assets/f.txt"), b"root two");
    let cfg = |root: &str| {
        daemon(2)
            + &format!(
                r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]

  [[http.route]]
  path_prefix = "/assets/"
  static = {{ root = "{root}" }}
"#
            )
    };
    let one = base.join("one").display().to_string();
    let two = base.join("two").display().to_string();
    let mut p = Proxy::start(&cfg(&one));
    let mut kept = Conn::connect(p.addr("web"));
    assert_eq!(kept.get("/assets/f.txt", "x").body, b"root one");
    p.rewrite(&cfg(&two), &[]);
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "reload: {out}");
    let changed = Instant::now();
    std::thread::sleep(WINDOW.saturating_sub(changed.elapsed()));
    for i in 0..6 {
        let r = exchange(
            p.addr("web"),
            &req("GET", "/assets/f.txt", "x", &[], b""),
            false,
        )
        .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            r.body_str(),
            "root two",
            "request {i} after the reload: {}",
            r.summary()
        );
    }
    if let Ok(r) = {
        kept.send(&req("GET", "/assets/f.txt", "x", &[], b""));
        kept.try_read_response()
    } {
        assert_eq!(r.body_str(), "root two", "kept connection after the reload");
    }
    drop(p);
    let _ = fs::remove_dir_all(&base);
}

/// A file swapped, as fast as the test can, between a regular file and a symlink to a secret
/// outside the root while clients ask for it: never a byte of the secret (the open itself
/// must refuse the way out, not a check before it).
#[test]
fn symlink_swap_race_never_leaks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = site();
    let a = s.root.join("assets");
    let target = a.join("race.txt");
    put(&a.join("race-plain"), b"plain content");
    std::os::unix::fs::symlink(s.base.join("secret.txt"), a.join("race-link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, a, target) = (stop.clone(), a.clone(), target.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // rename(2) over the name is atomic: the name is always one or the other.
                let tmp = a.join(format!("race-tmp-{}", n % 2));
                let _ = fs::remove_file(&tmp);
                if n.is_multiple_of(2) {
                    fs::hard_link(a.join("race-plain"), &tmp).unwrap();
                } else {
                    std::os::unix::fs::symlink(s_secret(&a), &tmp).unwrap();
                }
                fs::rename(&tmp, &target).unwrap();
                n += 1;
            }
            n
        })
    };
    let mut statuses = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_millis(1500);
    // The frontend without an open-file cache: every request opens the name afresh.
    let addr = s.proxy.addr("nocache");
    let mut c = Conn::connect(addr);
    while Instant::now() < deadline {
        c.send(&req("GET", "/assets/race.txt", "www.example.com", &[], b""));
        let r = match c.try_read_response() {
            Ok(r) => r,
            Err(_) => {
                c = Conn::connect(addr);
                continue;
            }
        };
        if let Some(m) = s.leaked(&r.body) {
            stop.store(true, Ordering::Relaxed);
            panic!("LEAKED {m} during the symlink swap race: {}", r.summary());
        }
        *statuses.entry(r.status).or_insert(0u32) += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{swaps} swaps, answers by status {statuses:?}");
    assert!(
        statuses.keys().all(|s| [200, 403, 404].contains(s)),
        "{statuses:?}"
    );
}

/// The secret outside the root, from the assets directory (`BASE/www/assets`).
fn s_secret(assets: &Path) -> PathBuf {
    assets
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("secret.txt")
}

#[test]
fn hostile_paths_and_ranges_are_answered_sanely() {
    let s = site();
    let mut f = Failures::default();
    let long_seg = format!("/assets/{}", "a".repeat(300));
    let deep = format!("/assets/{}ten.txt", "./".repeat(2000));
    let many = format!("/assets/{}x", "a/".repeat(2000));
    let cases: Vec<(String, &[u16])> = vec![
        (long_seg, &[400, 404, 414]),
        (deep, &[200, 400, 404, 414]),
        (many, &[400, 404, 414]),
        ("/assets/sub%0d%0aSet-Cookie:%20x=1".into(), &[400, 404]),
        ("/assets/sub%0aX:y".into(), &[400, 404]),
        ("/assets/%".into(), &[400]),
        ("/assets/%2".into(), &[400]),
        ("/assets/%zz".into(), &[400]),
        ("/assets/%ff%fe".into(), &[400, 404]),
        ("/assets/TEN.TXT".into(), &[404]),
        ("/assets/ten.txt.".into(), &[404]),
    ];
    for (path, allowed) in &cases {
        let raw = req("GET", path, "www.example.com", &[], b"");
        let shown = &path[..path.len().min(60)];
        match exchange(s.web(), &raw, false) {
            Ok(r) => {
                f.check(allowed.contains(&r.status), || {
                    format!("GET {shown}…: want one of {allowed:?}, got {}", r.summary())
                });
                f.check(
                    r.head
                        .headers
                        .iter()
                        .all(|(n, _)| !n.eq_ignore_ascii_case("set-cookie")),
                    || format!("GET {shown}: header injected: {:?}", r.head.headers),
                );
            }
            Err(e) => f.0.push(format!("GET {shown}…: {e}")),
        }
    }
    // Ranges that would multiply the answer are answered whole, once.
    let file = range_bytes();
    for range in [
        "bytes=0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-".to_string(),
        format!(
            "bytes={}",
            (0..40)
                .map(|i| format!("{}-{}", i * 10, i * 10 + 5))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "bytes=0-1999,0-1999,0-1999".to_string(),
        "bytes=18446744073709551615-".to_string(),
        "bytes=0-18446744073709551616".to_string(),
    ] {
        let r = s.get("/assets/range.txt", &[("Range", &range)]);
        f.check(r.body.len() <= file.len() + 1024, || {
            format!(
                "Range {}…: {} bytes for a {}-byte file",
                &range[..30.min(range.len())],
                r.body.len(),
                file.len()
            )
        });
        f.check([200, 206, 416].contains(&r.status), || {
            format!("Range {}…: {}", &range[..30.min(range.len())], r.summary())
        });
    }
    // A satisfied precondition and a Range: 304 wins.
    let etag = s
        .get("/assets/alpha.txt", &[])
        .header("etag")
        .unwrap()
        .to_string();
    let r = s.get(
        "/assets/alpha.txt",
        &[("If-None-Match", &etag), ("Range", "bytes=0-1")],
    );
    f.eq("If-None-Match match + Range", r.status, 304);
    // The daemon is fine afterwards.
    let r = s.get("/assets/ten.txt", &[]);
    f.check(r.body == TEN, || format!("afterwards: {}", r.summary()));
    f.assert_none();
}
