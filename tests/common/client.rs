//! Raw-socket HTTP/1.1 client for the tests: send exact bytes, read one response framed by
//! length, chunks or close, read to EOF, and assert a clean close. Also a small curl wrapper.
//!
//! Malformed-input tests need bytes no ordinary client library would send, and framing tests
//! need to see exactly what came back (an extra byte after a 204 is a bug), so the client is
//! raw on purpose. Every read has a timeout; helpers that return `Result<_, String>` exist so
//! table-driven tests can collect every failure instead of stopping at the first.

use super::wire::{BufStream, Head};
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Default bound on any single read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The `X-Backend` header: which backend answered.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("<none>")
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        let mut body = self.body_str();
        body.truncate(200);
        format!(
            "{} / headers {:?} / body {:?}",
            self.head.start_line, self.head.headers, body
        )
    }
}

/// How a read-to-EOF ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed cleanly (FIN).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing more within the timeout and the connection is still open.
    Timeout,
}

pub struct Conn {
    io: BufStream,
    pub addr: SocketAddr,
}

impl Conn {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Conn {
        match Conn::try_connect(addr) {
            Ok(c) => c,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            io: BufStream::new(s),
            addr,
        })
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.io.set_read_timeout(d);
    }

    pub fn stream(&self) -> &TcpStream {
        &self.io.stream
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.io.write_all(bytes) {
            panic!("send to {}: {e}", self.addr);
        }
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)
    }

    pub fn shutdown_write(&self) {
        let _ = self.io.stream.shutdown(Shutdown::Write);
    }

    /// `GET path` with `Host: host`, keep-alive, and its response.
    #[track_caller]
    pub fn get(&mut self, path: &str, host: &str) -> Response {
        self.send(&req("GET", path, host, &[], b""));
        self.read_response()
    }

    /// The next final response (1xx other than 101 are skipped); panics with what was read on
    /// any error.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(r) => r,
            Err(e) => panic!("reading a response from {}: {e}", self.addr),
        }
    }

    pub fn try_read_response(&mut self) -> Result<Response, String> {
        loop {
            let r = self.try_read_message(false)?;
            if r.status >= 200 || r.status == 101 {
                return Ok(r);
            }
        }
    }

    /// The response to a HEAD request (no body whatever the headers say).
    #[track_caller]
    pub fn read_head_response(&mut self) -> Response {
        loop {
            let r = match self.try_read_message(true) {
                Ok(r) => r,
                Err(e) => panic!("reading a HEAD response from {}: {e}", self.addr),
            };
            if r.status >= 200 {
                return r;
            }
        }
    }

    /// The next message, 1xx included.
    pub fn try_read_message(&mut self, head_request: bool) -> Result<Response, String> {
        let head = match self.io.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => return Err("connection closed before any response byte".into()),
            Err(e) => {
                return Err(format!(
                    "{} (buffered: {:?})",
                    describe(&e),
                    self.buffered_text()
                ))
            }
        };
        let status = parse_status(&head.start_line)
            .ok_or_else(|| format!("bad status line {:?}", head.start_line))?;
        let mut body = Vec::new();
        let framing;
        let mut sink = |b: &[u8]| body.extend_from_slice(b);
        let res = if head_request || status < 200 || status == 204 || status == 304 {
            framing = Framing::None;
            Ok(())
        } else if head.is_chunked() {
            framing = Framing::Chunked;
            self.io.read_chunked(&mut sink).map(|_| ())
        } else if let Some(n) = head.content_length().map_err(|e| e.to_string())? {
            framing = Framing::Length;
            self.io.read_len(n, &mut sink)
        } else {
            framing = Framing::Close;
            self.io.read_to_eof(&mut sink)
        };
        res.map_err(|e| format!("{} reading the body of {:?}", describe(&e), head.start_line))?;
        Ok(Response {
            status,
            head,
            body,
            framing,
        })
    }

    fn buffered_text(&self) -> String {
        String::from_utf8_lossy(self.io.buffered()).into_owned()
    }

    /// Reads until EOF, reset or `timeout` of silence, returning what came and how it ended.
    pub fn read_until_end(&mut self, timeout: Duration) -> (Vec<u8>, End) {
        let deadline = Instant::now() + timeout;
        let mut got = self.io.take_buffered();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, End::Timeout);
            }
            self.io.set_read_timeout(left.max(Duration::from_millis(1)));
            match self.io.fill() {
                Ok(0) => return (got, End::Eof),
                Ok(_) => got.extend(self.io.take_buffered()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return (got, End::Timeout)
                }
                Err(_) => return (got, End::Reset),
            }
        }
    }

    /// Asserts that the peer closes cleanly within `timeout` without sending anything more.
    #[track_caller]
    pub fn expect_closed(&mut self, timeout: Duration) {
        if let Err(e) = self.check_closed(timeout) {
            panic!("{e}");
        }
    }

    pub fn check_closed(&mut self, timeout: Duration) -> Result<(), String> {
        let (rest, end) = self.read_until_end(timeout);
        match end {
            End::Eof if rest.is_empty() => Ok(()),
            End::Eof => Err(format!(
                "connection closed, but only after {} unexpected bytes: {:?}",
                rest.len(),
                String::from_utf8_lossy(&rest[..rest.len().min(300)])
            )),
            End::Reset => Err(format!(
                "connection reset instead of a clean close (after {} more bytes)",
                rest.len()
            )),
            End::Timeout => Err(format!(
                "connection still open {timeout:?} later (and {} more bytes came)",
                rest.len()
            )),
        }
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("read timed out ({e})"),
        _ => e.to_string(),
    }
}

fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A request with `Host`, extra headers, and a Content-Length when `body` is not empty.
pub fn req(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let explicit = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !body.is_empty() && !explicit {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Runs curl with `args` (plus `--silent --show-error --max-time 30`); returns exit code,
/// stdout and stderr.
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl (is it installed?)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `bytes` one at a time with `gap` between them, stopping early when the peer stops
/// accepting writes; returns how many were written.
pub fn dribble(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(&[*b]).is_err() {
            return i;
        }
        std::thread::sleep(gap);
    }
    bytes.len()
}
