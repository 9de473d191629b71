//! A scriptable HTTP/1.1 origin for the cache tests: each test says, per path, how to answer
//! (status, headers, body, delay, chunked or not) with a closure that sees the request, and
//! afterwards reads back every request the origin got (method, target, head, body), so it can
//! count them ("the cache answered, the origin saw nothing") and check what the cache sent
//! (`If-None-Match`, `If-Modified-Since`, ...).
//!
//! Every answer gets a `Date` of now (an origin with a clock MUST send one, RFC 9110 §6.6.1)
//! unless the script sets its own. Unscripted paths get `404` with `Cache-Control: no-store`.
//! Built on [`Scripted`], so [`Origin::kill`] makes the origin go down (connects refused).

use super::scripted::{ConnCtx, Scripted};
use super::wire::{BufStream, Head};
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The path without the query.
    pub path: String,
    pub head: Head,
    pub body: Vec<u8>,
    /// 1 for the first request to this path, 2 for the second, ...
    pub n: usize,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// How the origin answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Slept before the answer is written.
    pub delay: Duration,
    /// Send the body with `Transfer-Encoding: chunked` instead of a Content-Length.
    pub chunked: bool,
    /// Close the connection after this many bytes of the encoded answer (a truncated answer).
    pub truncate: Option<usize>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
            truncate: None,
        }
    }

    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, body)
    }

    pub fn not_modified() -> Reply {
        Reply::new(304, Vec::new())
    }

    /// Adds a header field (repeatable: two calls with one name send two fields).
    pub fn h(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }

    /// Writes only the first `bytes` bytes of the encoded answer (head included), then closes.
    pub fn truncate(mut self, bytes: usize) -> Reply {
        self.truncate = Some(bytes);
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

type Script = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

#[derive(Default)]
struct OriginState {
    scripts: Mutex<HashMap<String, Script>>,
    log: Mutex<Vec<Req>>,
}

pub struct Origin {
    inner: Scripted,
    st: Arc<OriginState>,
}

impl Origin {
    pub fn start() -> Origin {
        let st = Arc::new(OriginState::default());
        let s = st.clone();
        let inner = Scripted::start("origin", move |ctx, stream| serve(&ctx, stream, &s));
        Origin { inner, st }
    }

    pub fn addr_string(&self) -> String {
        self.inner.addr_string()
    }

    /// Answers every request whose path (query excluded) is `path` with `script(request)`;
    /// replaces an earlier script for that path.
    pub fn on(&self, path: &str, script: impl Fn(&Req) -> Reply + Send + Sync + 'static) {
        self.st
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(script));
    }

    /// Every request received for `path` (query excluded), in arrival order.
    pub fn reqs(&self, path: &str) -> Vec<Req> {
        self.st
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests `path` got.
    pub fn count(&self, path: &str) -> usize {
        self.st
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// How many requests the origin got in all.
    pub fn total(&self) -> usize {
        self.st.log.lock().unwrap().len()
    }

    /// Waits up to `timeout` for `path` to have had at least `n` requests; returns the count.
    pub fn wait_count(&self, path: &str, n: usize, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let c = self.count(path);
            if c >= n || std::time::Instant::now() > deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The origin goes down: listener closed (connects refused), live connections shut.
    pub fn kill(&self) {
        self.inner.kill();
    }
}

fn serve(_ctx: &ConnCtx, stream: TcpStream, st: &OriginState) {
    let mut io = BufStream::new(stream);
    loop {
        let head = match io.read_head() {
            Ok(Some(h)) => h,
            _ => return,
        };
        let mut body = Vec::new();
        let ok = if head.is_chunked() {
            io.read_chunked(&mut |b| body.extend_from_slice(b)).is_ok()
        } else {
            match head.content_length() {
                Ok(Some(n)) => io.read_len(n, &mut |b| body.extend_from_slice(b)).is_ok(),
                Ok(None) => true,
                Err(_) => false,
            }
        };
        if !ok {
            return;
        }
        let mut parts = head.start_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let path = target.split('?').next().unwrap_or_default().to_string();
        let req = {
            let mut log = st.log.lock().unwrap();
            let n = log.iter().filter(|r| r.path == path).count() + 1;
            let req = Req {
                method,
                target,
                path,
                head,
                body,
                n,
            };
            log.push(req.clone());
            req
        };
        let script = st.scripts.lock().unwrap().get(&req.path).cloned();
        let reply = match script {
            Some(s) => s(&req),
            None => Reply::new(404, "no script for this path").h("Cache-Control", "no-store"),
        };
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        let close = req.head.has_token("connection", "close");
        let mut out = encode(&reply, req.method == "HEAD", close);
        if let Some(n) = reply.truncate {
            out.truncate(n);
            let _ = io.write_all(&out);
            return;
        }
        if io.write_all(&out).is_err() || close {
            return;
        }
    }
}

fn encode(r: &Reply, head_request: bool, close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    if !r.has("date") {
        out.push_str(&format!("Date: {}\r\n", http_date(0)));
    }
    for (n, v) in &r.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let bodiless = r.status == 204 || r.status == 304 || (100..200).contains(&r.status);
    if !bodiless {
        if r.chunked {
            out.push_str("Transfer-Encoding: chunked\r\n");
        } else if !r.has("content-length") {
            out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
        }
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if bodiless || head_request {
        return bytes;
    }
    if r.chunked {
        for c in r.body.chunks(4096) {
            bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            bytes.extend_from_slice(c);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&r.body);
    }
    bytes
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        414 => "URI Too Long",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7) `offset` seconds from now (negative: in the past).
pub fn http_date(offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format_http_date(now + offset)
}

/// An IMF-fixdate for `secs` since the Unix epoch.
pub fn format_http_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}
