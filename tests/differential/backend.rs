//! The recording backend: a strict HTTP/1.1 server (std threads, one per connection) that
//! writes down every request it receives, as it understood it, then answers the way the
//! request's `X-Behave` header says.
//!
//! It parses with its own code, stricter than the proxy has to be: a malformed head, a bare LF,
//! a chunk size line whose extensions RFC 9112 §7.1.1 does not allow, or both Content-Length and
//! Transfer-Encoding make the request [`Status::Malformed`] (answered 400, connection closed).
//! A connection that ends inside a request leaves it [`Status::Incomplete`]. Records are kept
//! per client connection (the `X-Conn` header); a request that arrives without one (bytes the
//! proxy mistook for a request) is filed under [`UNATTRIBUTED`].

use super::plan::{response_body, Behave, RespFraming, MAX_BODY};
use super::rng::{mix, Rng};
use crate::common::hex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Records of requests no client connection can be named for.
pub const UNATTRIBUTED: u64 = u64::MAX;
/// A backend connection with no byte for this long is closed; also bounds body reads. Longer
/// than the proxy's pool `idle_timeout` (30 s), so that the proxy never reuses a connection the
/// backend closed (which would make a retry legitimate).
const READ_IDLE: Duration = Duration::from_secs(120);
/// After answering with `Connection: close`, how long the backend drains unread input before
/// closing (so its answer is not destroyed by a reset).
const LINGER: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 64 * 1024;
const MAX_LINE: usize = 8 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The head arrived; the body is still being read.
    InProgress,
    Complete,
    /// Early answer: head read, body deliberately left unread.
    HeadOnly,
    /// The connection ended (or stalled) inside the request.
    Incomplete(String),
    /// The backend's strict parser refused the request.
    Malformed(String),
}

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Record {
    pub backend: String,
    /// Which backend connection (unique over the run).
    pub bconn: u64,
    /// Order of arrival of the head over all backends.
    pub arrival: u64,
    pub method: String,
    pub target: String,
    pub seq: Option<usize>,
    pub status: Status,
    pub body_len: u64,
    pub body_sha: String,
    pub trailers: Fields,
    /// Some chunk size line carried an extension.
    pub ext_seen: bool,
    pub xff: bool,
    /// Hop-by-hop fields that should not have been forwarded.
    pub hop_fields: Vec<String>,
    pub pad_len: usize,
    /// Read whole and dropped without an answer (`drop` behaviour).
    pub dropped: bool,
}

impl Record {
    pub fn summary(&self) -> String {
        let seq = self.seq.map_or("?".to_string(), |s| s.to_string());
        format!(
            "#{seq} {} {} {:?} body {} B sha {}{}{} [{} conn {}]",
            self.method,
            self.target,
            self.status,
            self.body_len,
            short(&self.body_sha),
            if self.trailers.is_empty() {
                String::new()
            } else {
                format!(" trailers {:?}", self.trailers)
            },
            if self.dropped { " DROPPED" } else { "" },
            self.backend,
            self.bconn,
        )
    }
}

pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Where a record is, to update it; `arrival` tells it from a later one at the same place
/// (after a check took the connection's records).
struct Handle {
    key: u64,
    index: usize,
    arrival: u64,
}

/// Every backend's records, by client connection id.
#[derive(Default)]
pub struct Recorder {
    arrivals: AtomicU64,
    bconns: AtomicU64,
    by_conn: Mutex<HashMap<u64, Vec<Record>>>,
    dropped_once: Mutex<HashSet<(u64, usize)>>,
}

impl Recorder {
    fn open(&self, key: u64, rec: Record) -> Handle {
        let mut map = self.by_conn.lock().unwrap();
        let list = map.entry(key).or_default();
        let arrival = rec.arrival;
        list.push(rec);
        Handle {
            key,
            index: list.len() - 1,
            arrival,
        }
    }

    /// Updates a record unless a check has taken it already.
    fn update(&self, h: &Handle, f: impl FnOnce(&mut Record)) {
        let mut map = self.by_conn.lock().unwrap();
        let found = map.get_mut(&h.key).and_then(|l| l.get_mut(h.index));
        if let Some(r) = found.filter(|r| r.arrival == h.arrival) {
            f(r);
        }
    }

    /// Whether this is the first time `drop` applies to (conn, seq).
    fn first_drop(&self, conn: u64, seq: usize) -> bool {
        self.dropped_once.lock().unwrap().insert((conn, seq))
    }

    /// Removes and returns the records of client connection `conn`, in arrival order, once
    /// none is still being received (or `wait` has passed).
    pub fn take(&self, conn: u64, wait: Duration) -> Vec<Record> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let mut map = self.by_conn.lock().unwrap();
                let busy = map
                    .get(&conn)
                    .is_some_and(|l| l.iter().any(|r| r.status == Status::InProgress));
                if !busy || Instant::now() >= deadline {
                    let mut list = map.remove(&conn).unwrap_or_default();
                    list.sort_by_key(|r| r.arrival);
                    return list;
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Records no check took: unattributed ones and any that arrived after their connection
    /// was checked.
    pub fn leftovers(&self) -> Vec<(u64, Record)> {
        let map = self.by_conn.lock().unwrap();
        let mut out: Vec<(u64, Record)> = map
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |r| (*k, r.clone())))
            .collect();
        out.sort_by_key(|(_, r)| r.arrival);
        out
    }
}

/// A running recording backend; stops accepting when dropped.
pub struct RecordingBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl RecordingBackend {
    pub fn start(name: &str, recorder: Arc<Recorder>) -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (name, stop2) = (name.to_string(), stop.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (name, rec) = (name.clone(), recorder.clone());
                let bconn = rec.bconns.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || serve_conn(s, name, bconn, rec));
            }
        });
        RecordingBackend { addr, stop }
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Why reading a request stopped.
enum Fail {
    /// EOF; `clean` when no byte of a new request had arrived.
    Closed {
        clean: bool,
    },
    Timeout,
    Malformed(String),
}

impl Fail {
    fn io(e: io::Error) -> Fail {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Fail::Timeout,
            _ => Fail::Closed { clean: false },
        }
    }

    fn describe(&self, what: &str) -> Status {
        match self {
            Fail::Closed { .. } => Status::Incomplete(format!("connection closed in the {what}")),
            Fail::Timeout => {
                Status::Incomplete(format!("no bytes for {READ_IDLE:?} in the {what}"))
            }
            Fail::Malformed(m) => Status::Malformed(m.clone()),
        }
    }
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Malformed(msg.into()))
}

/// A buffered reader that can also read slowly (small reads with pauses).
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    slow: Option<Rng>,
}

impl Reader {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn fill(&mut self) -> Result<(), Fail> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let want = match self.slow.as_mut() {
            Some(rng) => {
                thread::sleep(Duration::from_micros(rng.range(200, 2000)));
                rng.usize(1, 4096)
            }
            None => 64 * 1024,
        };
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk[..want]) {
            Ok(0) => Err(Fail::Closed { clean: false }),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(Fail::io(e)),
        }
    }

    /// A head up to CRLF CRLF (without it); `Closed { clean: true }` if EOF came first.
    fn read_head(&mut self) -> Result<Vec<u8>, Fail> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n\r\n") {
                let head = self.buffered()[..i].to_vec();
                self.pos += i + 4;
                return Ok(head);
            }
            if self.buffered().len() > MAX_HEAD {
                return malformed("head larger than 64 KiB");
            }
            let was_empty = self.buffered().is_empty();
            match self.fill() {
                Err(Fail::Closed { .. }) => return Err(Fail::Closed { clean: was_empty }),
                Err(Fail::Timeout) if was_empty => return Err(Fail::Closed { clean: true }),
                other => other?,
            }
        }
    }

    /// One line ending in CRLF (returned without it); a bare CR or LF is malformed.
    fn read_line(&mut self) -> Result<Vec<u8>, Fail> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let line = &self.buffered()[..i];
                let Some(line) = line.strip_suffix(b"\r") else {
                    return malformed(format!("bare LF after {:?}", lossy(line)));
                };
                if line.contains(&b'\r') {
                    return malformed(format!("bare CR in line {:?}", lossy(line)));
                }
                let line = line.to_vec();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.buffered().len() > MAX_LINE {
                return malformed("line longer than 8 KiB");
            }
            self.fill()?;
        }
    }

    fn read_exact(&mut self, mut n: u64, body: &mut Body) -> Result<(), Fail> {
        while n > 0 {
            if self.buffered().is_empty() {
                self.fill()?;
            }
            let take = (self.buffered().len() as u64).min(n) as usize;
            body.feed(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }
}

/// Header or trailer fields, in order.
pub type Fields = Vec<(String, String)>;

/// A request body as received: its digest, trailers, and whether any chunk carried an
/// extension.
struct Decoded {
    body: Body,
    trailers: Fields,
    ext_seen: bool,
}

/// A decoded body: hashed as it arrives.
struct Body {
    sha: Sha256,
    len: u64,
}

impl Body {
    fn feed(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Fields,
}

impl Head {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }
}

enum BodyKind {
    Length(u64),
    Chunked,
}

/// Per backend connection.
struct Conn {
    reader: Reader,
    name: String,
    bconn: u64,
    rec: Arc<Recorder>,
}

fn serve_conn(stream: TcpStream, name: String, bconn: u64, rec: Arc<Recorder>) {
    let _ = stream.set_read_timeout(Some(READ_IDLE));
    let _ = stream.set_write_timeout(Some(READ_IDLE));
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        reader: Reader {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            slow: None,
        },
        name,
        bconn,
        rec,
    };
    while c.serve_one() {}
}

impl Conn {
    /// Reads and answers one request; false when the connection is to be closed.
    fn serve_one(&mut self) -> bool {
        let raw = match self.reader.read_head() {
            Ok(raw) => raw,
            Err(Fail::Closed { clean: true }) => return false,
            Err(f) => {
                self.record_failure(None, f.describe("head"));
                return self.refuse(&f);
            }
        };
        let head = match parse_head(&raw) {
            Ok(h) => h,
            Err(f) => {
                self.record_failure(Some(&raw), f.describe("head"));
                return self.refuse(&f);
            }
        };
        let conn = head.get("x-conn").and_then(|v| v.parse::<u64>().ok());
        let seq = head.get("x-seq").and_then(|v| v.parse::<usize>().ok());
        let behave = head
            .get("x-behave")
            .and_then(Behave::decode)
            .unwrap_or_default();
        let handle = self.open_record(&head, conn, seq);
        let kind = match body_kind(&head) {
            Ok(k) => k,
            Err(f) => return self.fail(&handle, &f, "head"),
        };
        if behave.early {
            self.rec.update(&handle, |r| r.status = Status::HeadOnly);
            let _ = self.write(&early_answer(seq));
            self.linger();
            return false;
        }
        let Decoded {
            body,
            trailers,
            ext_seen,
        } = match self.read_body(kind, behave.slow) {
            Ok(v) => v,
            Err(f) => return self.fail(&handle, &f, "body"),
        };
        let (body_len, body_sha) = (body.len, hex(&body.sha.finalize()));
        let key = conn.unwrap_or(UNATTRIBUTED);
        let drop_it = behave.drop && seq.is_some_and(|s| self.rec.first_drop(key, s));
        self.rec.update(&handle, |r| {
            r.status = Status::Complete;
            r.body_len = body_len;
            r.body_sha = body_sha.clone();
            r.trailers = trailers;
            r.ext_seen = ext_seen;
            r.dropped = drop_it;
        });
        if drop_it {
            self.linger();
            return false;
        }
        let answer = Answer {
            conn: key,
            seq: seq.unwrap_or(0),
            head_request: head.method == "HEAD",
            body_len,
            body_sha,
            name: &self.name,
        };
        let (bytes, bodiless) = (answer.render(&behave), answer.bodiless(&behave));
        if self.write(&bytes).is_err() {
            return false;
        }
        if behave.close || (behave.framing == RespFraming::Close && !bodiless) {
            self.linger();
            return false;
        }
        true
    }

    fn open_record(&mut self, head: &Head, conn: Option<u64>, seq: Option<usize>) -> Handle {
        let key = conn.unwrap_or(UNATTRIBUTED);
        let hop_fields = ["x-hop", "keep-alive", "proxy-connection"]
            .iter()
            .filter(|n| head.get(n).is_some())
            .map(|n| n.to_string())
            .collect();
        let rec = Record {
            backend: self.name.clone(),
            bconn: self.bconn,
            arrival: self.rec.arrivals.fetch_add(1, Ordering::SeqCst),
            method: head.method.clone(),
            target: head.target.clone(),
            seq,
            status: Status::InProgress,
            body_len: 0,
            body_sha: String::new(),
            trailers: Vec::new(),
            ext_seen: false,
            xff: head.get("x-forwarded-for").is_some(),
            hop_fields,
            pad_len: head.get("x-pad").map_or(0, str::len),
            dropped: false,
        };
        self.rec.open(key, rec)
    }

    /// A request whose head could not be read or parsed: recorded with what is known.
    fn record_failure(&mut self, raw: Option<&[u8]>, status: Status) {
        let line = raw.map(|r| lossy(r.split(|&b| b == b'\r').next().unwrap_or(r)));
        let fake = Head {
            method: "?".into(),
            target: line.unwrap_or_else(|| lossy(self.reader.buffered())),
            headers: Vec::new(),
        };
        let h = self.open_record(&fake, None, None);
        self.rec.update(&h, |r| r.status = status);
    }

    fn fail(&mut self, h: &Handle, f: &Fail, what: &str) -> bool {
        let status = f.describe(what);
        self.rec.update(h, |r| r.status = status);
        self.refuse(f)
    }

    /// After a failed read: answer 400 to a malformed request; close in every case.
    fn refuse(&mut self, f: &Fail) -> bool {
        if let Fail::Malformed(why) = f {
            let msg = format!(
                "HTTP/1.1 400 Bad Request\r\nX-Backend: {}\r\nX-Backend-Error: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.name,
                why.replace(['\r', '\n'], " ")
            );
            let _ = self.write(msg.as_bytes());
            self.linger();
        }
        false
    }

    fn read_body(&mut self, kind: BodyKind, slow: bool) -> Result<Decoded, Fail> {
        let mut body = Body {
            sha: Sha256::new(),
            len: 0,
        };
        self.reader.slow = slow.then(|| Rng::new(self.bconn));
        let res = match kind {
            BodyKind::Length(n) => self
                .reader
                .read_exact(n, &mut body)
                .map(|_| (vec![], false)),
            BodyKind::Chunked => read_chunked(&mut self.reader, &mut body),
        };
        self.reader.slow = None;
        let (trailers, ext_seen) = res?;
        Ok(Decoded {
            body,
            trailers,
            ext_seen,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.stream.write_all(bytes)
    }

    /// Close our side, then drain what the peer still sends for a while before closing.
    fn linger(&mut self) {
        let s = &mut self.reader.stream;
        let _ = s.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; 16 * 1024];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            if !matches!(s.read(&mut scratch), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

fn early_answer(seq: Option<usize>) -> Vec<u8> {
    let body = "refused early\n";
    format!(
        "HTTP/1.1 403 Forbidden\r\nX-Seq: {}\r\nX-Backend: early\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        seq.map_or("?".to_string(), |s| s.to_string()),
        body.len()
    )
    .into_bytes()
}

/// The answer to a complete request.
struct Answer<'a> {
    conn: u64,
    seq: usize,
    head_request: bool,
    body_len: u64,
    body_sha: String,
    name: &'a str,
}

impl Answer<'_> {
    fn bodiless(&self, b: &Behave) -> bool {
        self.head_request || b.status == 204 || b.status == 304
    }

    /// Interim responses, the final head, and the body, as one byte string.
    fn render(&self, b: &Behave) -> Vec<u8> {
        let mut out = Vec::new();
        for code in &b.interim {
            out.extend_from_slice(interim(*code, self.seq).as_bytes());
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nX-Seq: {}\r\nX-Conn: {}\r\nX-Backend: {}\r\nX-Body-Sha256: {}\r\nX-Body-Len: {}\r\n",
            b.status,
            reason(b.status),
            self.seq,
            self.conn,
            self.name,
            self.body_sha,
            self.body_len
        );
        if b.close {
            head.push_str("Connection: close\r\n");
        }
        let len = b.len.min(MAX_BODY);
        if b.status != 204 && b.status != 304 {
            match b.framing {
                RespFraming::Length => head.push_str(&format!("Content-Length: {len}\r\n")),
                RespFraming::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
                RespFraming::Close => {}
            }
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if !self.bodiless(b) {
            let body = response_body(self.conn, self.seq, len);
            if b.framing == RespFraming::Chunked {
                out.extend(chunk_response(&body, self.seq));
            } else {
                out.extend(body);
            }
        }
        out
    }
}

fn interim(code: u16, seq: usize) -> String {
    match code {
        103 => format!("HTTP/1.1 103 Early Hints\r\nLink: </s/{seq}.css>; rel=preload\r\n\r\n"),
        c => format!("HTTP/1.1 {c} {}\r\n\r\n", reason(c)),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// A response body in chunks of varying size, now and then with an extension or a trailer.
fn chunk_response(body: &[u8], seq: usize) -> Vec<u8> {
    let mut rng = Rng::new(mix(seq as u64 ^ 0x5eed));
    let mut out = Vec::with_capacity(body.len() + 1024);
    for c in body.chunks(rng.log_range(1, 32 * 1024)) {
        let ext = if rng.chance(10) { ";r=1" } else { "" };
        out.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(20) {
        out.extend_from_slice(b"X-Resp-Trailer: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_head(raw: &[u8]) -> Result<Head, Fail> {
    let lines = head_lines(raw)?;
    let start_text = String::from_utf8_lossy(&lines[0]);
    let parts: Vec<&str> = start_text.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return malformed(format!("bad request line {start_text:?}"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
        return malformed(format!("bad request line {start_text:?}"));
    }
    if version != "HTTP/1.1" {
        return malformed(format!("version {version:?}"));
    }
    let headers = lines[1..]
        .iter()
        .map(|l| parse_field(l))
        .collect::<Result<_, _>>()?;
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        headers,
    })
}

/// The lines of a head (given without its final CRLF CRLF); a bare CR or LF is malformed.
fn head_lines(raw: &[u8]) -> Result<Vec<Vec<u8>>, Fail> {
    let mut text = raw.to_vec();
    text.extend_from_slice(b"\r\n");
    let mut lines = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = find(rest, b"\r\n") {
        let line = &rest[..i];
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return malformed(format!("bare CR or LF in head line {:?}", lossy(line)));
        }
        lines.push(line.to_vec());
        rest = &rest[i + 2..];
    }
    Ok(lines)
}

/// `name: value` with a token name, no whitespace before the colon, no control characters.
fn parse_field(line: &[u8]) -> Result<(String, String), Fail> {
    let bad = || malformed(format!("bad field line {:?}", lossy(line)));
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return bad();
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return bad();
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return bad();
    }
    let value = String::from_utf8_lossy(value);
    Ok((lossy(name), value.trim_matches([' ', '\t']).to_string()))
}

/// RFC 9112 §6.3 for a request, strictly: chunked alone, or identical Content-Length values.
fn body_kind(head: &Head) -> Result<BodyKind, Fail> {
    let te: Vec<&str> = head.all("transfer-encoding").collect();
    let mut length: Option<u64> = None;
    for v in head.all("content-length") {
        for part in v.split(',') {
            let p = part.trim_matches([' ', '\t']);
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 15 {
                return malformed(format!("bad Content-Length {v:?}"));
            }
            let n: u64 = p.parse().unwrap();
            if length.is_some_and(|l| l != n) {
                return malformed("differing Content-Length values");
            }
            length = Some(n);
        }
    }
    if te.is_empty() {
        return Ok(BodyKind::Length(length.unwrap_or(0)));
    }
    if length.is_some() {
        return malformed("both Content-Length and Transfer-Encoding");
    }
    let codings: Vec<String> = te
        .iter()
        .flat_map(|v| v.split(','))
        .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
        .collect();
    if codings != ["chunked"] {
        return malformed(format!("Transfer-Encoding {te:?}"));
    }
    Ok(BodyKind::Chunked)
}

/// A chunked body, decoded into `body`; returns the trailer fields and whether any chunk
/// line carried an extension.
fn read_chunked(r: &mut Reader, body: &mut Body) -> Result<(Fields, bool), Fail> {
    let mut ext_seen = false;
    loop {
        let line = r.read_line()?;
        let (size, ext) = parse_size_line(&line).map_err(Fail::Malformed)?;
        ext_seen |= ext;
        if size == 0 {
            return Ok((read_trailers(r)?, ext_seen));
        }
        r.read_exact(size, body)?;
        if !r.read_line()?.is_empty() {
            return malformed("chunk data not followed by CRLF");
        }
    }
}

fn read_trailers(r: &mut Reader) -> Result<Fields, Fail> {
    let mut out = Vec::new();
    loop {
        let line = r.read_line()?;
        if line.is_empty() {
            return Ok(out);
        }
        if out.len() >= 100 {
            return malformed("more than 100 trailer fields");
        }
        out.push(parse_field(&line)?);
    }
}

/// `1*HEXDIG chunk-ext`: the size and whether any extension was present.
fn parse_size_line(line: &[u8]) -> Result<(u64, bool), String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(format!("bad chunk size line {:?}", lossy(line)));
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16).unwrap();
    let ext = check_extensions(&line[digits..])
        .map_err(|why| format!("{why} in chunk size line {:?}", lossy(line)))?;
    Ok((size, ext))
}

/// RFC 9112 §7.1.1: `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`, ext-val a token or a
/// quoted-string. Returns whether there was any extension.
fn check_extensions(mut s: &[u8]) -> Result<bool, &'static str> {
    let mut any = false;
    loop {
        let t = skip_ws(s);
        if t.is_empty() {
            return if t.len() == s.len() {
                Ok(any)
            } else {
                Err("trailing whitespace")
            };
        }
        if t[0] != b';' {
            return Err("junk after chunk size");
        }
        any = true;
        let (name, rest) = take_token(skip_ws(&t[1..]));
        if name == 0 {
            return Err("empty extension name");
        }
        s = rest;
        let t = skip_ws(s);
        if let Some(v) = t.strip_prefix(b"=") {
            let v = skip_ws(v);
            s = if v.first() == Some(&b'"') {
                take_quoted(v)?
            } else {
                let (n, rest) = take_token(v);
                if n == 0 {
                    return Err("empty extension value");
                }
                rest
            };
        }
    }
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn take_token(s: &[u8]) -> (usize, &[u8]) {
    let n = s.iter().take_while(|&&b| is_tchar(b)).count();
    (n, &s[n..])
}

/// A quoted-string at the start of `s` (which begins with DQUOTE); returns what follows it.
fn take_quoted(s: &[u8]) -> Result<&[u8], &'static str> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(&s[i + 1..]),
            b'\\' => {
                let Some(&q) = s.get(i + 1) else {
                    return Err("unterminated quoted-pair");
                };
                if q != b'\t' && !(0x20..=0x7e).contains(&q) && q < 0x80 {
                    return Err("bad quoted-pair");
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return Err("bad character in quoted-string"),
        }
    }
    Err("unterminated quoted-string")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned();
    if b.len() > 120 {
        s.push('…');
    }
    s
}
