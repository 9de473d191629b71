//! Byte-level HTTP/1.1 reading shared by the test client and the test backends: a buffered
//! stream that can read a head, a body by length, a chunked body or everything until EOF.
//!
//! It is deliberately independent of the daemon's parser (a test that used the code under test
//! to read its own output would prove nothing) and deliberately simple: heads are split on
//! CRLF, header names compared case-insensitively, nothing else is normalised. Bodies are
//! streamed to a sink so 50 MiB transfers can be hashed without holding them twice.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest head either side accepts before calling the peer broken.
const MAX_HEAD: usize = 1 << 20;

/// A parsed message head: the start line and the header fields in order.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    /// The head exactly as received, for diagnostics and byte-level assertions.
    pub raw: Vec<u8>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = String::from_utf8_lossy(raw);
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or_else(|| bad(format!("head does not end with CRLF CRLF: {text:?}")))?;
        let mut lines = body.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("header line without colon: {line:?}")))?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(Head {
            start_line,
            headers,
            raw: raw.to_vec(),
        })
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated header (Connection, Transfer-Encoding) lists `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    pub fn content_length(&self) -> io::Result<Option<u64>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("bad Content-Length {v:?}"))),
        }
    }
}

pub fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A TCP stream with a read buffer, so that a head and what follows it in the same segment
/// (a body, a pipelined request) are both kept.
pub struct BufStream {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl BufStream {
    pub fn new(stream: TcpStream) -> BufStream {
        BufStream {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream
            .set_read_timeout(Some(d))
            .expect("set_read_timeout");
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Takes whatever was read but not consumed yet.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let out = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        out
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads once more from the socket; Ok(0) is EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads a head up to and including CRLF CRLF. `Ok(None)` means the peer closed before
    /// sending any byte of it (a clean end of a keep-alive connection).
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = find(&avail[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                let end = scanned.saturating_sub(3) + i + 4;
                let raw = avail[..end].to_vec();
                self.consume(end);
                return Head::parse(&raw).map(Some);
            }
            scanned = avail.len();
            if scanned > MAX_HEAD {
                return Err(bad("head larger than 1 MiB"));
            }
            if self.fill()? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF inside a head: {:?}",
                        String::from_utf8_lossy(self.buffered())
                    ),
                ));
            }
        }
    }

    /// Reads exactly `n` bytes, handing them to `sink` as they come.
    pub fn read_len(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {n} body bytes still expected"),
                ));
            }
            let take = (self.buffered().len() as u64).min(n) as usize;
            sink(&self.buf[self.pos..self.pos + take]);
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(bad("line longer than 64 KiB"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a line",
                ));
            }
        }
    }

    /// Reads a chunked body (RFC 9112 §7.1) including the trailer section; chunk extensions
    /// are ignored. Returns the trailer lines.
    pub fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<Vec<String>> {
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let t = self.read_line()?;
                    if t.is_empty() {
                        return Ok(trailers);
                    }
                    trailers.push(String::from_utf8_lossy(&t).into_owned());
                }
            }
            self.read_len(size, sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(bad("chunk data not followed by CRLF"));
            }
        }
    }

    /// Reads until the peer closes, handing bytes to `sink`.
    pub fn read_to_eof(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buffered().is_empty() {
                sink(&self.buf[self.pos..]);
                self.buf.clear();
                self.pos = 0;
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Encodes `data` as one chunked body, cut into chunks of the sizes in `sizes` (cycled), with a
/// chunk extension on the first chunk to check that recipients skip extensions.
pub fn encode_chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let mut off = 0;
    let mut i = 0;
    while off < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - off).max(1);
        if i == 0 {
            out.extend_from_slice(format!("{n:x};note=first\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{n:X}\r\n").as_bytes());
        }
        out.extend_from_slice(&data[off..off + n]);
        out.extend_from_slice(b"\r\n");
        off += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
