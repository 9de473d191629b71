//! Plays one [`Plan`] on one client connection: a writer thread sends the whole pipelined byte
//! stream cut at random points with random pauses, while the calling thread reads responses
//! (so a proxy that answers early, or a slow backend, never deadlocks the test). What came
//! back is an [`Observed`], judged later by `check`.
//!
//! For an early-answer request the writer stops inside the body and waits (up to
//! [`HOLD_WAIT`]) for the reader to see that request's final response before writing the rest:
//! a proxy that cannot relay an answer before the request body is complete shows up as a
//! "held" request instead of a hang.

use super::plan::{Method, Plan};
use super::rng::{mix, Rng};
use crate::common::client::Framing;
use crate::common::hex;
use crate::common::wire::{BufStream, Head};
use sha2::{Digest, Sha256};
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Bound on any single read from the proxy.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any single write to the proxy.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer waits, inside an early-answer request's body, for its response.
pub const HOLD_WAIT: Duration = Duration::from_secs(3);
/// After the last expected response: how long to look for unexpected extra bytes.
const EXTRA_WINDOW: Duration = Duration::from_millis(30);

/// An interim (1xx) response as the client received it.
#[derive(Clone, Debug)]
pub struct Interim {
    pub status: u16,
    pub link: Option<String>,
}

/// A final response as the client received it.
#[derive(Clone, Debug)]
pub struct Got {
    pub interim: Vec<Interim>,
    pub status: u16,
    pub head: Head,
    pub body_len: usize,
    pub body_sha: String,
    pub framing: Framing,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// Answered by the proxy itself (the backend always says who it is).
    pub fn by_proxy(&self) -> bool {
        self.header("x-backend").is_none()
    }

    pub fn summary(&self) -> String {
        let interim: Vec<u16> = self.interim.iter().map(|i| i.status).collect();
        format!(
            "{} X-Seq {} from {} body {} B sha {} ({:?}){}{}",
            self.status,
            self.header("x-seq").unwrap_or("-"),
            self.header("x-backend").unwrap_or("proxy"),
            self.body_len,
            &self.body_sha[..12],
            self.framing,
            if interim.is_empty() {
                String::new()
            } else {
                format!(" after 1xx {interim:?}")
            },
            if self.head.has_token("connection", "close") {
                " Connection: close"
            } else {
                ""
            }
        )
    }
}

/// How the read side ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Every request answered and nothing more arrived (the connection is still open).
    Clean,
    /// The proxy closed the connection (FIN).
    Eof,
    Reset,
    /// No byte for [`READ_TIMEOUT`] while a response was expected.
    Timeout(String),
    /// Bytes that are not a well-formed response.
    Garbled(String),
    /// Bytes after the last expected response.
    Extra(String),
}

pub struct Observed {
    pub got: Vec<Got>,
    pub end: End,
    /// Early-answer requests whose answer did not come while their body was held back.
    pub held: Vec<usize>,
    pub written: usize,
    pub total: usize,
    pub write_error: Option<String>,
}

/// Final responses seen so far, and whether reading has ended; the writer waits on it.
#[derive(Default)]
struct Progress {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Progress {
    fn set_answered(&self, n: usize) {
        self.state.lock().unwrap().0 = n;
        self.cv.notify_all();
    }

    fn end(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }

    fn ended(&self) -> bool {
        self.state.lock().unwrap().1
    }

    /// Waits until more than `index` requests are answered or reading ended; false on timeout.
    fn wait_answered(&self, index: usize, timeout: Duration) -> bool {
        let guard = self.state.lock().unwrap();
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |(n, ended)| *n <= index && !*ended)
            .unwrap();
        guard.0 > index || guard.1
    }
}

struct WriteResult {
    held: Vec<usize>,
    written: usize,
    error: Option<String>,
}

pub fn run(addr: SocketAddr, plan: &Plan) -> Observed {
    let wire = plan.wire();
    let total = wire.bytes.len();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the proxy at {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
    let progress = Arc::new(Progress::default());

    let writer = {
        let (s, p) = (stream.try_clone().unwrap(), progress.clone());
        let rng = Rng::new(mix(plan.seed ^ 0x77));
        thread::spawn(move || write_stream(s, &wire.bytes, &wire.holds, &p, rng))
    };
    let (got, end) = read_responses(stream.try_clone().unwrap(), plan, &progress);
    progress.end();
    let _ = stream.shutdown(Shutdown::Both);
    let w = writer.join().expect("writer thread panicked");
    Observed {
        got,
        end,
        held: w.held,
        written: w.written,
        total,
        write_error: w.error,
    }
}

/// Writes `bytes` in random pieces with random pauses, stopping at each hold until its
/// request is answered.
fn write_stream(
    mut s: TcpStream,
    bytes: &[u8],
    holds: &[(usize, usize)],
    progress: &Progress,
    mut rng: Rng,
) -> WriteResult {
    let one_shot = rng.chance(15);
    let mut res = WriteResult {
        held: Vec::new(),
        written: 0,
        error: None,
    };
    let mut holds = holds.iter().peekable();
    while res.written < bytes.len() && !progress.ended() {
        let limit = holds.peek().map_or(bytes.len(), |h| h.0);
        if res.written == limit {
            let (_, index) = holds.next().unwrap();
            // First let the requests before it be answered, then give it HOLD_WAIT.
            if *index > 0 {
                progress.wait_answered(index - 1, READ_TIMEOUT * 2);
            }
            if !progress.wait_answered(*index, HOLD_WAIT) {
                res.held.push(*index);
            }
            continue;
        }
        let piece = if one_shot {
            limit - res.written
        } else {
            rng.log_range(1, 64 * 1024).min(limit - res.written)
        };
        if let Err(e) = s.write_all(&bytes[res.written..res.written + piece]) {
            res.error = Some(e.to_string());
            break;
        }
        res.written += piece;
        if !one_shot && rng.chance(25) {
            thread::sleep(Duration::from_millis(rng.range(0, 15)));
        }
    }
    res
}

/// Reads responses until every request is answered, the connection ends or stalls, or
/// something unreadable arrives.
fn read_responses(s: TcpStream, plan: &Plan, progress: &Progress) -> (Vec<Got>, End) {
    let mut io = BufStream::new(s);
    let mut got: Vec<Got> = Vec::new();
    let mut interim = Vec::new();
    loop {
        let Some(req) = plan.requests.get(got.len()) else {
            let must_close = plan.requests.last().is_some_and(|r| r.ends_connection());
            return (got, read_past_end(&mut io, must_close));
        };
        let head = match io.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => return (got, End::Eof),
            Err(e) => return (got, classify(&e, "waiting for a response head")),
        };
        let Some(status) = parse_status(&head.start_line) else {
            return (
                got,
                End::Garbled(format!("bad status line {:?}", head.start_line)),
            );
        };
        if (100..200).contains(&status) {
            let link = head.header("link").map(str::to_string);
            interim.push(Interim { status, link });
            continue;
        }
        let head_request = req.method == Method::Head;
        let (body_len, body_sha, framing) = match read_body(&mut io, &head, status, head_request) {
            Ok(v) => v,
            Err(e) => {
                let what = format!("reading the body of {:?}", head.start_line);
                return (got, classify(&e, &what));
            }
        };
        got.push(Got {
            interim: std::mem::take(&mut interim),
            status,
            head,
            body_len,
            body_sha,
            framing,
        });
        progress.set_answered(got.len());
        if framing == Framing::Close {
            return (got, End::Eof);
        }
    }
}

fn read_body(
    io: &mut BufStream,
    head: &Head,
    status: u16,
    head_request: bool,
) -> io::Result<(usize, String, Framing)> {
    let mut sha = Sha256::new();
    let mut len = 0usize;
    let mut sink = |b: &[u8]| {
        sha.update(b);
        len += b.len();
    };
    let framing = if head_request || status == 204 || status == 304 {
        Framing::None
    } else if head.is_chunked() {
        io.read_chunked(&mut sink)?;
        Framing::Chunked
    } else if let Some(n) = head.content_length()? {
        io.read_len(n, &mut sink)?;
        Framing::Length
    } else {
        io.read_to_eof(&mut sink)?;
        Framing::Close
    };
    Ok((len, hex(&sha.finalize()), framing))
}

/// After the last expected response: when the connection must close, wait for the close;
/// otherwise look briefly for unexpected extra bytes.
fn read_past_end(io: &mut BufStream, must_close: bool) -> End {
    if !io.buffered().is_empty() {
        return extra(io.take_buffered());
    }
    io.set_read_timeout(if must_close {
        READ_TIMEOUT
    } else {
        EXTRA_WINDOW
    });
    match io.fill() {
        Ok(0) => End::Eof,
        Ok(_) => extra(io.take_buffered()),
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => End::Reset,
        Err(_) if must_close => End::Timeout("waiting for the connection to close".into()),
        Err(_) => End::Clean,
    }
}

fn extra(bytes: Vec<u8>) -> End {
    let n = bytes.len().min(200);
    End::Extra(String::from_utf8_lossy(&bytes[..n]).into_owned())
}

fn classify(e: &io::Error, what: &str) -> End {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => End::Timeout(what.to_string()),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            End::Reset
        }
        _ => End::Garbled(clip(&format!("{e} ({what})"))),
    }
}

/// At most 160 characters of `s`, control characters escaped.
fn clip(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.chars().count() >= 160 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}
