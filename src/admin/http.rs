//! One HTTP/1.1 request per connection, over a blocking std socket, bounded in every way: the
//! head (parsed by the proxy's own strict parser) and the body must arrive whole within
//! [`READ_TIMEOUT`], the head is at most [`MAX_HEAD`] bytes, the body at most [`MAX_BODY`] and
//! only `Content-Length` framed; every answer carries `Connection: close`. Anything else gets
//! a 4xx and a close.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::proto::http::parse::{parse_request, Limits};
use crate::proto::http::{Framing, Method, RequestHead, Status};

/// The whole request (head and body) must arrive within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole answer must be taken within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest request body (actions are small JSON objects).
pub const MAX_BODY: u64 = 8 << 10;

/// A request read whole.
pub struct Request {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the single field `name` (lower-case); `None` if absent or repeated.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        let first = found.next()?;
        found.next().is_none().then_some(first.1.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A short plain-text answer (errors).
    pub fn text(status: u16, msg: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{msg}\n"))
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response::new(status, "application/json", format!("{v}\n"))
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Why no request could be read: the status to answer, if any is worth sending.
pub struct BadRequest {
    pub status: Option<u16>,
    pub why: &'static str,
}

fn bad(status: u16, why: &'static str) -> BadRequest {
    BadRequest {
        status: Some(status),
        why,
    }
}

/// Read one request from `conn` within [`READ_TIMEOUT`].
pub fn read_request(conn: &TcpStream) -> Result<Request, BadRequest> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let limits = Limits {
        max_request_line: 8 << 10,
        max_header_bytes: MAX_HEAD,
        max_headers: 64,
        max_body: Some(MAX_BODY),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let head = loop {
        match parse_request(&buf, &limits, Vec::new()) {
            Ok(Status::Complete(h)) => break h,
            Ok(Status::Partial) => {}
            Err(e) => {
                return Err(BadRequest {
                    status: Some(e.status()),
                    why: "malformed request head",
                })
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(bad(431, "request head too large"));
        }
        read_some(conn, &mut buf, MAX_HEAD + 1, deadline)?;
    };
    let body_len = match head.framing {
        Framing::None => 0,
        Framing::Length(n) if n <= MAX_BODY => n as usize,
        Framing::Length(_) => return Err(bad(413, "request body too large")),
        _ => return Err(bad(411, "only Content-Length bodies are accepted")),
    };
    let want = head.head_len + body_len;
    while buf.len() < want {
        read_some(conn, &mut buf, want, deadline)?;
    }
    Ok(request_of(&head, &buf[..want]))
}

/// Read at most up to `cap` bytes in all into `buf`; EOF and the deadline are errors.
fn read_some(
    conn: &TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
) -> Result<(), BadRequest> {
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(bad(408, "request not complete in time"));
        }
        let room = cap.saturating_sub(buf.len()).clamp(1, chunk.len());
        match (&*conn).read(&mut chunk[..room]) {
            Ok(0) if buf.is_empty() => {
                return Err(BadRequest {
                    status: None,
                    why: "closed before a request",
                })
            }
            Ok(0) => return Err(bad(400, "connection closed inside the request")),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(bad(408, "request not complete in time"))
            }
            Err(_) => {
                return Err(BadRequest {
                    status: None,
                    why: "read failed",
                })
            }
        }
    }
}

fn request_of(head: &RequestHead, buf: &[u8]) -> Request {
    Request {
        method: head.method,
        path: String::from_utf8_lossy(head.path.of(buf)).into_owned(),
        headers: head
            .headers
            .iter()
            .map(|h| {
                (
                    String::from_utf8_lossy(h.name.of(buf)).to_ascii_lowercase(),
                    h.value.of(buf).to_vec(),
                )
            })
            .collect(),
        body: buf[head.head_len..].to_vec(),
    }
}

/// Write `r` with the headers every answer carries, within [`WRITE_TIMEOUT`].
pub fn write_response(conn: &TcpStream, r: &Response) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Referrer-Policy: same-origin\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (n, v) in &r.headers {
        // Values are ours; never let one carry a line break.
        let v: String = v.chars().filter(|c| !c.is_control()).collect();
        out.push_str(n);
        out.push_str(": ");
        out.push_str(&v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut data = out.into_bytes();
    data.extend_from_slice(&r.body);
    conn.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut rest = &data[..];
    while !rest.is_empty() {
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match (&*conn).write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}
