//! Regression tests for request-path defects, each against a server that misbehaves in one
//! precise way: answers early, sends bytes after its response, sends 103 Early Hints, closes
//! without answering, or simply records the exact bytes it received.
//!
//! The servers here are scripted raw backends ([`Script`]): a listener on 127.0.0.1:0 whose
//! every accepted connection runs a small closure over a [`RawConn`], which records every byte
//! it reads and logs every complete request it parses (in one global order across
//! connections). Every read has a timeout and every wait is bounded; no test asserts speed.

mod common;

use common::client::End;
use common::*;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a scripted server waits for one request (head and body) before giving up.
const SCRIPT_READ: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// Scripted raw backends
// ------------------------------------------------------------------------------------------

/// One request as a scripted server received it.
#[derive(Clone, Debug)]
struct Req {
    /// Index of the backend connection it came on (0 = first accepted).
    conn: usize,
    /// The head without its final CRLF CRLF.
    head: String,
    /// The body bytes exactly as received (chunk size lines included).
    raw_body: Vec<u8>,
    /// The body with chunked framing removed.
    body: Vec<u8>,
    /// Only the head was read (the script never read a body for it).
    head_only: bool,
}

impl Req {
    fn start_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }
    fn method(&self) -> &str {
        self.start_line().split(' ').next().unwrap_or("")
    }
    fn target(&self) -> &str {
        self.start_line().split(' ').nth(1).unwrap_or("")
    }
    fn headers(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect()
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
    /// `METHOD TARGET "body"` for messages.
    fn brief(&self) -> String {
        format!(
            "{} {} {:?} (backend conn {}{})",
            self.method(),
            self.target(),
            String::from_utf8_lossy(&self.body),
            self.conn,
            if self.head_only { ", head only" } else { "" }
        )
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one complete request from the start of `bytes`, leniently (this is the test's view
/// of what the server got, not a validator): the head up to CRLF CRLF, then a body by
/// `Transfer-Encoding: chunked` (chunk size = the hex digits before any `;`) or
/// `Content-Length`. `None` while incomplete. Returns the request and the bytes it used.
fn parse_one(bytes: &[u8], conn: usize) -> Option<(Req, usize)> {
    let head_end = find(bytes, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut req = Req {
        conn,
        head,
        raw_body: Vec::new(),
        body: Vec::new(),
        head_only: false,
    };
    let start = head_end + 4;
    let chunked = req
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut pos = start;
        loop {
            let line_end = pos + find(&bytes[pos..], b"\r\n")?;
            let line = String::from_utf8_lossy(&bytes[pos..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim().to_string();
            let size = usize::from_str_radix(&size_text, 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                loop {
                    let t_end = pos + find(&bytes[pos..], b"\r\n")?;
                    let empty = t_end == pos;
                    pos = t_end + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            if bytes.len() < pos + size + 2 {
                return None;
            }
            req.body.extend_from_slice(&bytes[pos..pos + size]);
            pos += size + 2;
        }
        req.raw_body = bytes[start..pos].to_vec();
        Some((req, pos))
    } else {
        let n: usize = req
            .header("content-length")
            .map(|v| {
                v.split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .parse()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if bytes.len() < start + n {
            return None;
        }
        req.body = bytes[start..start + n].to_vec();
        req.raw_body = req.body.clone();
        Some((req, start + n))
    }
}

/// Chunk data bytes present in `bytes` (a chunked body, possibly cut anywhere), counting a
/// partly received chunk by what did arrive.
fn chunked_data_received(bytes: &[u8]) -> usize {
    let mut pos = 0;
    let mut total = 0;
    while pos < bytes.len() {
        let Some(i) = find(&bytes[pos..], b"\r\n") else {
            break;
        };
        let line = String::from_utf8_lossy(&bytes[pos..pos + i]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        pos += i + 2;
        if size == 0 {
            break;
        }
        let have = size.min(bytes.len() - pos);
        total += have;
        pos += have + 2;
    }
    total
}

struct ScriptState {
    accepted: AtomicUsize,
    stop: AtomicBool,
    /// Every request parsed (or head read) by any connection, in the order they were read.
    log: Mutex<Vec<Req>>,
    /// Every byte received, per connection.
    recs: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
}

/// A scripted backend: every accepted connection runs the closure over a [`RawConn`].
struct Script {
    addr: SocketAddr,
    state: Arc<ScriptState>,
}

impl Script {
    fn start<F>(f: F) -> Script
    where
        F: Fn(&mut RawConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("script bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ScriptState {
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            recs: Mutex::new(Vec::new()),
        });
        let f = Arc::new(f);
        let st = state.clone();
        thread::Builder::new()
            .name("script-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let idx = st.accepted.fetch_add(1, Ordering::SeqCst);
                    let rec = Arc::new(Mutex::new(Vec::new()));
                    st.recs.lock().unwrap().push(rec.clone());
                    let (st, f) = (st.clone(), f.clone());
                    let _ = thread::Builder::new()
                        .name(format!("script-conn-{idx}"))
                        .spawn(move || {
                            let _ = stream.set_nodelay(true);
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                            let mut c = RawConn {
                                stream,
                                idx,
                                buf: Vec::new(),
                                rec,
                                st,
                            };
                            f(&mut c);
                        });
                }
            })
            .expect("spawn script thread");
        Script { addr, state }
    }

    fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Requests received so far, in order, across all connections.
    fn requests(&self) -> Vec<Req> {
        self.state.log.lock().unwrap().clone()
    }

    fn briefs(&self) -> Vec<String> {
        self.requests().iter().map(Req::brief).collect()
    }

    /// Every byte received on connection `i`.
    fn received(&self, i: usize) -> Vec<u8> {
        let recs = self.state.recs.lock().unwrap();
        recs.get(i)
            .map(|r| r.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// One accepted backend connection, as the script sees it.
struct RawConn {
    stream: TcpStream,
    idx: usize,
    /// Received, not consumed yet.
    buf: Vec<u8>,
    rec: Arc<Mutex<Vec<u8>>>,
    st: Arc<ScriptState>,
}

impl RawConn {
    /// One read with a timeout; Ok(0) at EOF.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut b = [0u8; 64 * 1024];
        let n = self.stream.read(&mut b)?;
        self.buf.extend_from_slice(&b[..n]);
        self.rec.lock().unwrap().extend_from_slice(&b[..n]);
        Ok(n)
    }

    /// The next complete request (head and body), logged; `None` on EOF, error or
    /// [`SCRIPT_READ`] without one.
    fn read_request(&mut self) -> Option<Req> {
        let deadline = Instant::now() + SCRIPT_READ;
        loop {
            if let Some((req, used)) = parse_one(&self.buf, self.idx) {
                self.buf.drain(..used);
                self.st.log.lock().unwrap().push(req.clone());
                return Some(req);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.st.stop.load(Ordering::SeqCst) {
                return None;
            }
            match self.fill(left.min(Duration::from_millis(200))) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// Only the next request head (logged as a request), leaving any body unread.
    fn read_head(&mut self) -> Option<Req> {
        let deadline = Instant::now() + SCRIPT_READ;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let req = Req {
                    conn: self.idx,
                    head: String::from_utf8_lossy(&self.buf[..end]).into_owned(),
                    raw_body: Vec::new(),
                    body: Vec::new(),
                    head_only: true,
                };
                self.buf.drain(..end + 4);
                self.st.log.lock().unwrap().push(req.clone());
                return Some(req);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.fill(left) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Keeps the connection open without reading, until the script is dropped or `max`.
    fn hold(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline && !self.st.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `200 OK` with `X-Target` and a short body.
fn ok_for(target: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nX-Target: {target}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A well-behaved script: answers every request `200` with its target, body `ok`.
fn serve_ok(c: &mut RawConn) {
    while let Some(r) = c.read_request() {
        if !c.write(&ok_for(r.target(), "ok")) {
            return;
        }
    }
}

/// Answers every request `200` with body `body`.
fn serve_body(c: &mut RawConn, body: &str) {
    while let Some(r) = c.read_request() {
        if !c.write(&ok_for(r.target(), body)) {
            return;
        }
    }
}

/// The proxy (one shard) with frontend `web` in front of the script as pool `app`.
fn proxy_for(s: &Script, frontend_extra: &str, pool_extra: &str) -> Proxy {
    proxy::single_pool(s.addr_string(), 1, "", frontend_extra, pool_extra)
}

fn connect(p: &Proxy, read_timeout: Duration) -> Conn {
    let c = Conn::connect(p.addr("web"));
    c.set_read_timeout(read_timeout);
    c
}

fn fail_if_any(what: &str, failures: Vec<String>) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

// ------------------------------------------------------------------------------------------
// 1. Pipelined requests after a streamed body
// ------------------------------------------------------------------------------------------

/// A request whose body arrives after its head (so it is streamed, not forwarded with the
/// head) and whose last body bytes share one segment with two pipelined requests: all three
/// must reach the server, in order, and be answered in order.
#[test]
fn pipelined_requests_after_a_streamed_body_all_reach_the_server_in_order() {
    let s = Script::start(serve_ok);
    let p = proxy_for(&s, "", "");
    let mut failures = Vec::new();
    for (name, framing, body) in [
        (
            "chunked",
            "Transfer-Encoding: chunked",
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
        ),
        ("Content-Length", "Content-Length: 5", &b"hello"[..]),
    ] {
        let before = s.requests().len();
        let mut c = connect(&p, Duration::from_secs(3));
        c.send(format!("POST /a HTTP/1.1\r\nHost: h\r\n{framing}\r\n\r\n").as_bytes());
        thread::sleep(Duration::from_millis(50));
        let mut rest = body.to_vec();
        rest.extend_from_slice(b"GET /visible HTTP/1.1\r\nHost: h\r\n\r\n");
        rest.extend_from_slice(b"GET /hidden HTTP/1.1\r\nHost: h\r\n\r\n");
        c.send(&rest);

        let mut answers = Vec::new();
        for _ in 0..3 {
            match c.try_read_response() {
                Ok(r) => answers.push(format!(
                    "{} {}",
                    r.status,
                    r.header("x-target").unwrap_or("(no X-Target)")
                )),
                Err(e) => {
                    answers.push(format!("<{e}>"));
                    break;
                }
            }
        }
        let want_answers = ["200 /a", "200 /visible", "200 /hidden"];
        if answers != want_answers {
            failures.push(format!(
                "{name} body: client got {answers:?}, expected {want_answers:?}"
            ));
        }
        let seen: Vec<String> = s.requests()[before..]
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?}",
                    r.method(),
                    r.target(),
                    String::from_utf8_lossy(&r.body)
                )
            })
            .collect();
        let want_seen = ["POST /a \"hello\"", "GET /visible \"\"", "GET /hidden \"\""];
        if seen != want_seen {
            failures.push(format!(
                "{name} body: server received {seen:?}, expected {want_seen:?}"
            ));
        }
    }
    fail_if_any(
        "pipelined requests after a streamed request body were lost or reordered",
        failures,
    );
}

// ------------------------------------------------------------------------------------------
// 2. Early answer
// ------------------------------------------------------------------------------------------

/// Connection 0 reads only the head, answers `403` (framed, no `Connection: close`) and
/// closes; later connections behave.
fn early_403_then_close(c: &mut RawConn) {
    if c.idx == 0 {
        if c.read_head().is_some() {
            c.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden");
        }
    } else {
        serve_ok(c);
    }
}

/// `GET /smuggled` padded to exactly `len` bytes.
fn smuggle_head(target: &str, len: usize) -> Vec<u8> {
    let bare = format!("GET {target} HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n");
    assert!(bare.len() < len, "smuggled head too long for {len}");
    let pad = "p".repeat(len - bare.len());
    let out = format!("GET {target} HTTP/1.1\r\nHost: h\r\nX-Pad: {pad}\r\n\r\n").into_bytes();
    assert_eq!(out.len(), len);
    out
}

/// The server answers `403` after the head of a `Content-Length: 100` upload and closes while
/// the body is still coming (slowly). The rest of the body is bytes that parse as a request
/// head, and a pipelined request with a head-like body follows. The client must get the 403
/// and then a closed connection: the unread body must never be taken for a new request, and
/// the dead upstream connection must not go back to the pool.
#[test]
fn early_answer_closes_the_client_connection_and_nothing_more_reaches_the_server() {
    let s = Script::start(early_403_then_close);
    let p = proxy_for(&s, "", "");
    let mut c = connect(&p, Duration::from_secs(5));
    c.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n");
    // Let the server answer and close before the body starts.
    thread::sleep(Duration::from_millis(100));
    // 100 body bytes: 10 empty lines (which a request parser skips before a request line),
    // dribbled, then 80 bytes that are a complete GET head.
    for _ in 0..10 {
        let _ = c.try_send(b"\r\n");
        thread::sleep(Duration::from_millis(20));
    }
    // The 403 is due now (the server answered before the body began). The rest is sent only
    // after it, so the proxy can never have relayed the whole body before answering, and
    // keeping the client connection can never be right here, however the reads fall.
    let first = c.try_read_response();
    let mut rest = smuggle_head("/smuggled-from-body", 80);
    rest.extend(req(
        "POST",
        "/second",
        "h",
        &[],
        b"GET /smuggled-from-second HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    let _ = c.try_send(&rest);
    // A proxy that only notices the early answer when a body write fails answers now.
    let first = match first {
        Err(_) => c.try_read_response(),
        ok => ok,
    };

    let mut failures = Vec::new();
    match first {
        Ok(r) if r.status == 403 => {
            let (more, end) = c.read_until_end(Duration::from_secs(3));
            if !more.is_empty() {
                failures.push(format!(
                    "after the 403 the client got {} more bytes: {:?}",
                    more.len(),
                    String::from_utf8_lossy(&more[..more.len().min(300)])
                ));
            }
            if end == End::Timeout {
                failures.push(
                    "the client connection stayed open after the early 403 (its unread body \
                     would be read as requests)"
                        .into(),
                );
            }
        }
        Ok(r) => failures.push(format!("expected the server's 403, got {}", r.summary())),
        Err(e) => failures.push(format!("expected the server's 403, got {e}")),
    }
    // Give anything the proxy forwarded time to be read by the script.
    thread::sleep(Duration::from_millis(300));
    let seen = s.briefs();
    if seen.len() != 1 {
        failures.push(format!(
            "the server should have received only POST /upload, got {seen:?}"
        ));
    }

    // A new client connection goes over a new backend connection and succeeds.
    let accepted = s.accepted();
    let mut c2 = connect(&p, Duration::from_secs(5));
    match c2.try_read_response_after(&req("GET", "/after", "h", &[], b"")) {
        Ok(r) if r.status == 200 && r.header("x-target") == Some("/after") => {}
        Ok(r) => failures.push(format!(
            "GET /after on a new client connection: {}",
            r.summary()
        )),
        Err(e) => failures.push(format!("GET /after on a new client connection: {e}")),
    }
    if s.accepted() != accepted + 1 {
        failures.push(format!(
            "GET /after should have opened exactly one new backend connection \
             (accepted {accepted} before, {} after): the dead one was reused or kept",
            s.accepted()
        ));
    }
    if let Some(last) = s.requests().last() {
        if last.target() == "/after" && last.conn < accepted {
            failures.push(format!(
                "GET /after went over backend connection {} opened before it",
                last.conn
            ));
        }
    }
    fail_if_any("early answer to an upload", failures);
}

/// The same with a body long enough to be spliced (Content-Length, >= 64 KiB): the server
/// answers `403` after the head and stops reading (keeping its socket open), so the body
/// cannot go anywhere. The client must still get the 403 (well before the pool's
/// response_timeout), then a closed connection, and no further request may reach the server.
#[test]
fn early_answer_during_a_spliced_body_reaches_the_client() {
    let s = Script::start(|c| {
        if c.idx == 0 {
            if c.read_head().is_some() {
                c.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden");
                c.hold(Duration::from_secs(40));
            }
        } else {
            serve_ok(c);
        }
    });
    let p = proxy_for(&s, "", "response_timeout = \"30s\"");
    let mut c = connect(&p, Duration::from_secs(10));
    // Far more than the socket buffers on the way can hold, so the upload stalls.
    const LEN: usize = 32 << 20;
    let mut w = c.stream().try_clone().expect("clone client socket");
    let writer = thread::spawn(move || {
        let head = format!("POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {LEN}\r\n\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..LEN / piece.len() {
            if w.write_all(&piece).is_err() {
                return;
            }
        }
    });

    let mut failures = Vec::new();
    match c.try_read_response() {
        Ok(r) if r.status == 403 => {
            let (more, end) = c.read_until_end(Duration::from_secs(10));
            if !more.is_empty() {
                failures.push(format!(
                    "after the 403 the client got {} more bytes: {:?}",
                    more.len(),
                    String::from_utf8_lossy(&more[..more.len().min(300)])
                ));
            }
            if end == End::Timeout {
                failures.push("the client connection stayed open after the early 403".into());
            }
        }
        Ok(r) => failures.push(format!("expected the server's 403, got {}", r.summary())),
        Err(e) => failures.push(format!(
            "expected the server's 403 while the spliced upload was stalled, got {e}"
        )),
    }
    let seen = s.briefs();
    if seen.len() != 1 {
        failures.push(format!(
            "the server should have received only POST /big, got {seen:?}"
        ));
    }
    let _ = c.stream().shutdown(Shutdown::Both);
    drop(writer); // ends when its socket fails (shut down here, or the proxy is killed)
    fail_if_any("early answer during a spliced upload", failures);
}

// ------------------------------------------------------------------------------------------
// 3. max_body on streamed chunked bodies
// ------------------------------------------------------------------------------------------

/// `max_body = 1024` and a chunked body whose 2 KiB chunk arrives after the head: the client
/// gets 413 and the server never receives more than 1024 bytes of body data.
#[test]
fn max_body_stops_a_streamed_chunked_body_at_the_limit() {
    let s = Script::start(serve_ok);
    let p = proxy_for(&s, "max_body = 1024", "");
    let mut c = connect(&p, Duration::from_secs(5));
    let head = b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    c.send(head);
    thread::sleep(Duration::from_millis(100));
    let mut chunk = b"800\r\n".to_vec();
    chunk.extend(vec![b'z'; 2048]);
    chunk.extend_from_slice(b"\r\n0\r\n\r\n");
    let _ = c.try_send(&chunk);

    let mut failures = Vec::new();
    match c.try_read_response() {
        Ok(r) if r.status == 413 => {}
        Ok(r) => failures.push(format!("expected 413, got {}", r.summary())),
        Err(e) => failures.push(format!("expected 413, got {e}")),
    }
    thread::sleep(Duration::from_millis(300));
    let mut data = 0;
    for i in 0..s.accepted() {
        let got = s.received(i);
        if let Some(end) = find(&got, b"\r\n\r\n") {
            data += chunked_data_received(&got[end + 4..]);
        }
    }
    if data > 1024 {
        failures.push(format!(
            "the server received {data} bytes of chunk data, over max_body = 1024"
        ));
    }
    fail_if_any("max_body on a streamed chunked body", failures);
}

// ------------------------------------------------------------------------------------------
// 4. Extra bytes after a response
// ------------------------------------------------------------------------------------------

/// Connection 0 answers `hello` and, a moment later, sends a second unsolicited response
/// (`evil`); any request it gets after that is answered `stale`. Later connections answer
/// `fresh`.
fn answer_then_extra_bytes(c: &mut RawConn) {
    if c.idx == 0 {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
            thread::sleep(Duration::from_millis(30));
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil");
            serve_body(c, "stale");
        }
    } else {
        serve_body(c, "fresh");
    }
}

/// Bytes a server sends after its response's framing ended are not the answer to the next
/// request: the proxy closes that upstream connection and sends the next request over a new
/// one.
#[test]
fn bytes_after_a_response_never_answer_the_next_request() {
    let s = Script::start(answer_then_extra_bytes);
    let p = proxy_for(&s, "", "");
    let mut c = connect(&p, Duration::from_secs(5));
    let mut failures = Vec::new();
    match c.try_read_response_after(&req("GET", "/first", "h", &[], b"")) {
        Ok(r) if r.status == 200 && r.body == b"hello" => {}
        Ok(r) => failures.push(format!(
            "GET /first: expected 200 hello, got {}",
            r.summary()
        )),
        Err(e) => failures.push(format!("GET /first: {e}")),
    }
    // Let the extra bytes (sent 30 ms after the response) arrive while the upstream
    // connection sits idle.
    thread::sleep(Duration::from_millis(500));
    match c.try_read_response_after(&req("GET", "/second", "h", &[], b"")) {
        Ok(r) if r.body == b"evil" => failures.push(format!(
            "GET /second got the server's stray bytes as its answer: {}",
            r.summary()
        )),
        Ok(r) if r.status == 200 && r.body == b"fresh" => {}
        Ok(r) => failures.push(format!(
            "GET /second: expected 200 fresh (from a new backend connection), got {}",
            r.summary()
        )),
        Err(e) => failures.push(format!("GET /second: {e}")),
    }
    if s.accepted() != 2 {
        failures.push(format!(
            "expected 2 backend connections (the one that sent stray bytes closed), got {}",
            s.accepted()
        ));
    }
    let second: Vec<Req> = s
        .requests()
        .into_iter()
        .filter(|r| r.target() == "/second")
        .collect();
    if second.len() != 1 || second[0].conn == 0 {
        failures.push(format!(
            "GET /second should have reached the server once, on a new connection; got {:?}",
            second.iter().map(Req::brief).collect::<Vec<_>>()
        ));
    }
    fail_if_any("stray bytes after a response", failures);
}

// ------------------------------------------------------------------------------------------
// 5. 103 Early Hints
// ------------------------------------------------------------------------------------------

fn early_hints_then_ok(c: &mut RawConn) {
    while c.read_request().is_some() {
        if !c.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n") {
            return;
        }
        thread::sleep(Duration::from_millis(20));
        if !c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") {
            return;
        }
    }
}

/// A `103 Early Hints` from the server reaches an HTTP/1.1 client (with its Link field)
/// before the final `200`; an HTTP/1.0 client gets only the `200`.
#[test]
fn early_hints_are_forwarded_to_http11_clients_only() {
    let s = Script::start(early_hints_then_ok);
    let p = proxy_for(&s, "", "");
    let mut failures = Vec::new();

    let mut c = connect(&p, Duration::from_secs(5));
    c.send(&req("GET", "/hints", "h", &[], b""));
    match c.try_read_message(false) {
        Ok(r) if r.status == 103 => {
            if r.header("link") != Some("</s.css>; rel=preload") {
                failures.push(format!(
                    "HTTP/1.1: the 103 lost its Link field: {}",
                    r.summary()
                ));
            }
            match c.try_read_message(false) {
                Ok(r) if r.status == 200 && r.body == b"ok" => {}
                Ok(r) => failures.push(format!("HTTP/1.1: after the 103: {}", r.summary())),
                Err(e) => failures.push(format!("HTTP/1.1: after the 103: {e}")),
            }
        }
        Ok(r) => failures.push(format!(
            "HTTP/1.1: expected 103 Early Hints first, got {}",
            r.summary()
        )),
        Err(e) => failures.push(format!("HTTP/1.1: expected 103 Early Hints, got {e}")),
    }

    let mut c = connect(&p, Duration::from_secs(5));
    c.send(b"GET /hints HTTP/1.0\r\nHost: h\r\n\r\n");
    match c.try_read_message(false) {
        Ok(r) if r.status == 200 && r.body == b"ok" => {}
        Ok(r) => failures.push(format!(
            "HTTP/1.0: expected only the final 200, got {} first",
            r.summary()
        )),
        Err(e) => failures.push(format!("HTTP/1.0: {e}")),
    }
    fail_if_any("103 Early Hints", failures);
}

// ------------------------------------------------------------------------------------------
// 6. No replay of non-idempotent requests
// ------------------------------------------------------------------------------------------

/// Connection 0 answers its first request, then reads the next one whole and closes without
/// answering. Later connections answer `fresh`.
fn close_instead_of_second_answer(c: &mut RawConn) {
    if c.idx == 0 {
        if let Some(r) = c.read_request() {
            c.write(&ok_for(r.target(), "first"));
            let _ = c.read_request();
        }
    } else {
        serve_body(c, "fresh");
    }
}

/// On a reused upstream connection that the server closes after reading a request: a `POST`
/// is not sent again (502 to the client; the server saw it once); a `GET` may be retried once
/// on a fresh connection and then succeeds.
#[test]
fn a_post_is_not_replayed_when_a_reused_connection_closes_without_answer() {
    let mut failures = Vec::new();
    for (method, body) in [("GET", &b""[..]), ("POST", &b"hello"[..])] {
        let s = Script::start(close_instead_of_second_answer);
        let p = proxy_for(&s, "", "");
        let mut c = connect(&p, Duration::from_secs(5));
        match c.try_read_response_after(&req("GET", "/first", "h", &[], b"")) {
            Ok(r) if r.status == 200 && r.body == b"first" => {}
            Ok(r) => {
                failures.push(format!("{method} case: GET /first: {}", r.summary()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{method} case: GET /first: {e}"));
                continue;
            }
        }
        let got = c.try_read_response_after(&req(method, "/second", "h", &[], body));
        thread::sleep(Duration::from_millis(200));
        let times = s
            .requests()
            .iter()
            .filter(|r| r.method() == method && r.target() == "/second")
            .count();
        match method {
            "POST" => {
                match &got {
                    Ok(r) if r.status == 502 => {}
                    Ok(r) => failures.push(format!("POST: expected 502, got {}", r.summary())),
                    Err(e) => failures.push(format!("POST: expected 502, got {e}")),
                }
                if times != 1 {
                    failures.push(format!(
                        "POST /second reached the server {times} times (a POST must not be \
                         replayed): {:?}",
                        s.briefs()
                    ));
                }
            }
            _ => {
                match &got {
                    Ok(r) if r.status == 200 && r.body == b"fresh" => {}
                    Ok(r) => failures.push(format!(
                        "GET: expected 200 fresh after one retry, got {}",
                        r.summary()
                    )),
                    Err(e) => failures.push(format!("GET: expected 200 after one retry, got {e}")),
                }
                if times > 2 {
                    failures.push(format!(
                        "GET /second reached the server {times} times (at most one retry): {:?}",
                        s.briefs()
                    ));
                }
            }
        }
    }
    fail_if_any("retry after a reused connection closed", failures);
}

// ------------------------------------------------------------------------------------------
// 8. Framing normalised
// ------------------------------------------------------------------------------------------

/// Repeated `Content-Length` (as fields or as a list) reaches the server as one
/// `Content-Length: 5`; chunk extensions are removed from size lines; malformed extensions
/// get 400 and no complete request reaches the server.
#[test]
fn framing_reaches_the_server_normalised() {
    let s = Script::start(serve_ok);
    let p = proxy_for(&s, "", "");
    let mut failures = Vec::new();

    for (name, fields) in [
        (
            "two identical fields",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("list 5,5", "Content-Length: 5,5\r\n"),
        ("list 5, 5", "Content-Length: 5, 5\r\n"),
    ] {
        let mut c = connect(&p, Duration::from_secs(5));
        let before = s.requests().len();
        let raw = format!("POST /cl HTTP/1.1\r\nHost: h\r\n{fields}\r\nhello");
        match c.try_read_response_after(raw.as_bytes()) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("{name}: expected 200, got {}", r.summary())),
            Err(e) => failures.push(format!("{name}: expected 200, got {e}")),
        }
        match s.requests().get(before) {
            Some(r) => {
                let cl = r.header_all("content-length");
                if cl != ["5"] {
                    failures.push(format!(
                        "{name}: the server got Content-Length fields {cl:?}, expected exactly [\"5\"]"
                    ));
                }
            }
            None => failures.push(format!("{name}: the request never reached the server")),
        }
    }

    for (name, body) in [
        ("ext=val", &b"5;ext=val\r\nhello\r\n0\r\n\r\n"[..]),
        (
            "two extensions, quoted value",
            &b"5;a=1;b=\"x y\"\r\nhello\r\n0\r\n\r\n"[..],
        ),
    ] {
        let mut c = connect(&p, Duration::from_secs(5));
        let before = s.requests().len();
        let mut raw =
            b"POST /ext HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        match c.try_read_response_after(&raw) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("chunk {name}: expected 200, got {}", r.summary())),
            Err(e) => failures.push(format!("chunk {name}: expected 200, got {e}")),
        }
        match s.requests().get(before) {
            Some(r) if r.raw_body == b"5\r\nhello\r\n0\r\n\r\n" => {}
            Some(r) => failures.push(format!(
                "chunk {name}: the server got the body {:?}, expected \"5\\r\\nhello\\r\\n0\\r\\n\\r\\n\"",
                String::from_utf8_lossy(&r.raw_body)
            )),
            None => failures.push(format!("chunk {name}: the request never reached the server")),
        }
    }

    for (name, body) in [
        ("empty extension `5;`", &b"5;\r\nhello\r\n0\r\n\r\n"[..]),
        (
            "unclosed quote",
            &b"5;a=\"unclosed\r\nhello\r\n0\r\n\r\n"[..],
        ),
        (
            "space in token value",
            &b"5;a=b c\r\nhello\r\n0\r\n\r\n"[..],
        ),
    ] {
        let mut c = connect(&p, Duration::from_secs(5));
        let before = s.requests().len();
        let mut raw =
            b"POST /bad-ext HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        match c.try_read_response_after(&raw) {
            Ok(r) if r.status == 400 => {}
            Ok(r) => failures.push(format!("{name}: expected 400, got {}", r.summary())),
            Err(e) => failures.push(format!("{name}: expected 400, got {e}")),
        }
        thread::sleep(Duration::from_millis(200));
        let after: Vec<String> = s.requests()[before..].iter().map(Req::brief).collect();
        if !after.is_empty() {
            failures.push(format!(
                "{name}: the server received a complete request: {after:?}"
            ));
        }
    }
    fail_if_any("framing not normalised", failures);
}

// ------------------------------------------------------------------------------------------
// 9. Header names with underscores
// ------------------------------------------------------------------------------------------

const UNDERSCORE_REQUEST: &[u8] = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\
Transfer_Encoding: chunked\r\nContent_Length: 7\r\nX_Custom: 1\r\nX-Normal: yes\r\n\r\nhello";

/// By default, header fields whose names contain `_` (look-alikes of `Transfer-Encoding` and
/// `Content-Length` among them) are not forwarded; with `underscores_in_headers = true` they
/// are forwarded unchanged.
#[test]
fn header_names_with_underscores_are_dropped_unless_allowed() {
    let mut failures = Vec::new();
    {
        let s = Script::start(serve_ok);
        let p = proxy_for(&s, "", "");
        let mut c = connect(&p, Duration::from_secs(5));
        match c.try_read_response_after(UNDERSCORE_REQUEST) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("default: expected 200, got {}", r.summary())),
            Err(e) => failures.push(format!("default: expected 200, got {e}")),
        }
        match s.requests().first() {
            Some(r) => {
                let with_underscore: Vec<(String, String)> = r
                    .headers()
                    .into_iter()
                    .filter(|(n, _)| n.contains('_'))
                    .collect();
                if !with_underscore.is_empty() {
                    failures.push(format!(
                        "default: fields with '_' in the name reached the server: {with_underscore:?}"
                    ));
                }
                if r.header("x-normal").as_deref() != Some("yes") || r.body != b"hello" {
                    failures.push(format!("default: the request was mangled: {:?}", r.head));
                }
            }
            None => failures.push("default: the request never reached the server".into()),
        }
    }
    if !failures.is_empty() {
        fail_if_any("underscores in header names", failures);
        return;
    }
    {
        let s = Script::start(serve_ok);
        let p = proxy_for(&s, "underscores_in_headers = true", "");
        let mut c = connect(&p, Duration::from_secs(5));
        match c.try_read_response_after(UNDERSCORE_REQUEST) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("allowed: expected 200, got {}", r.summary())),
            Err(e) => failures.push(format!("allowed: expected 200, got {e}")),
        }
        match s.requests().first() {
            Some(r) => {
                let raw = format!("{}\r\n", r.head);
                for line in [
                    "Transfer_Encoding: chunked\r\n",
                    "Content_Length: 7\r\n",
                    "X_Custom: 1\r\n",
                ] {
                    if !raw.contains(line) {
                        failures.push(format!(
                            "allowed: {:?} not forwarded unchanged; the server got {:?}",
                            line.trim_end(),
                            r.head
                        ));
                    }
                }
                if r.body != b"hello" {
                    failures.push(format!(
                        "allowed: body {:?}",
                        String::from_utf8_lossy(&r.body)
                    ));
                }
            }
            None => failures.push("allowed: the request never reached the server".into()),
        }
    }
    fail_if_any("underscores_in_headers = true", failures);
}

// ------------------------------------------------------------------------------------------
// Small client helper
// ------------------------------------------------------------------------------------------

trait SendRead {
    fn try_read_response_after(&mut self, bytes: &[u8]) -> Result<Response, String>;
}

impl SendRead for Conn {
    /// Sends `bytes` (a send error is reported, not panicked on) and reads the next final
    /// response.
    fn try_read_response_after(&mut self, bytes: &[u8]) -> Result<Response, String> {
        self.try_send(bytes)
            .map_err(|e| format!("send failed: {e}"))?;
        self.try_read_response()
    }
}

// ------------------------------------------------------------------------------------------
// Review finding: an interim response while the request body streams is not an early answer
// ------------------------------------------------------------------------------------------

/// The server sends `103 Early Hints` as soon as it has the head, then reads the body and
/// answers. The proxy must forward the 103 and keep streaming the body (copied and spliced),
/// not treat the 103 as an early final answer and cut the request.
#[test]
fn interim_response_during_a_streamed_body_does_not_cut_it() {
    for len in [10usize, 100 * 1024] {
        let s = Script::start(move |c| {
            let Some(head) = c.read_head() else { return };
            let want: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            c.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.buf.len() < want && Instant::now() < deadline {
                if !matches!(c.fill(Duration::from_millis(200)), Ok(n) if n > 0)
                    && Instant::now() >= deadline
                {
                    break;
                }
            }
            let got = c.buf.len().min(want);
            c.write(&ok_for("/upload", &format!("got {got}")));
        });
        let p = proxy_for(&s, "", "response_timeout = \"5s\"");
        let mut c = connect(&p, Duration::from_secs(10));
        let body = pattern(3, len);
        c.send(
            format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
        );
        thread::sleep(Duration::from_millis(300));
        c.send(&body);
        let mut failures = Vec::new();
        match c.try_read_message(false) {
            Ok(r) if r.status == 103 => match c.try_read_message(false) {
                Ok(r) if r.status == 200 && r.body_str() == format!("got {len}") => {}
                Ok(r) => failures.push(format!("after the 103: {}", r.summary())),
                Err(e) => failures.push(format!("after the 103: {e}")),
            },
            Ok(r) => failures.push(format!("expected the 103 first, got {}", r.summary())),
            Err(e) => failures.push(format!("expected the 103: {e}")),
        }
        fail_if_any(&format!("103 during a {len}-byte upload"), failures);
    }
}
