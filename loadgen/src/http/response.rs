//! Incremental HTTP/1.1 response parser for the client side (RFC 9112). It is fed whatever
//! each `read` returned and says when one response is complete, with its status and whether
//! the connection may be reused. Bodies are counted, never stored: a 16 KiB body through
//! 10,000 connections must not cost 10,000 buffers. Only a head split across reads is copied
//! (into a per-connection `Vec` that stays empty on the fast path).
//!
//! Malformed input is an `Err`, never a panic: the engine counts it as a bad response.

/// Largest response head we accept; beyond it the peer is not speaking sane HTTP.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per response; more is a bad response (the backends under test send few).
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The status line or a header is not valid HTTP/1.x.
    Head(String),
    HeadTooLarge,
    BadContentLength,
    BadChunk(&'static str),
    /// The peer closed before the response was complete.
    Truncated,
    /// A 101 or other interim answer this client never asked for.
    UnexpectedStatus(u16),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Head(e) => write!(f, "malformed response head: {e}"),
            ParseError::HeadTooLarge => write!(f, "response head larger than {MAX_HEAD} bytes"),
            ParseError::BadContentLength => write!(f, "invalid Content-Length"),
            ParseError::BadChunk(why) => write!(f, "invalid chunked body: {why}"),
            ParseError::Truncated => write!(f, "connection closed mid-response"),
            ParseError::UnexpectedStatus(s) => write!(f, "unexpected status {s}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Need more bytes.
    Partial,
    /// One response is complete. `extra` bytes of the input were left after it.
    Complete {
        status: u16,
        keep_alive: bool,
        extra: usize,
    },
}

/// Body framing, decided from the head (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    /// Read until the server closes.
    Close,
}

/// A standalone chunked-body decoder (used by `serve` for request bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkedDecoder(Chunk);

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder(Chunk::Size { size: 0, digits: 0 })
    }

    /// Consumes body bytes; `Some(n)`: the body ended after `n` bytes of `data`.
    pub(crate) fn advance(&mut self, data: &[u8]) -> Result<Option<usize>, ParseError> {
        advance_chunked(&mut self.0, data)
    }
}

/// Chunked decoding state (RFC 9112 §7.1), one byte of lookahead at most, so a chunk-size
/// line split anywhere across reads needs no buffer.
///
/// ```text
///  Size --';'--> Ext --CR--> SizeLf --LF--> Data(n) --n bytes--> DataCr -> DataLf -> Size
///    \--CR--> SizeLf   (size 0) --LF--> TrailerStart --CR--> EndLf --LF--> done
///                                        \--other--> Trailer --LF--> TrailerStart
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { size: u64, digits: u8 },
    Ext { size: u64 },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body {
        status: u16,
        keep_alive: bool,
        body: Body,
    },
}

#[derive(Debug)]
pub(crate) struct ResponseParser {
    state: State,
    /// Bytes of a head that did not arrive in one read; empty on the fast path.
    head: Vec<u8>,
    /// The request was HEAD: the response has no body whatever its headers say.
    head_request: bool,
}

impl ResponseParser {
    pub(crate) fn new(head_request: bool) -> Self {
        ResponseParser {
            state: State::Head,
            head: Vec::new(),
            head_request,
        }
    }

    /// Prepares for the next response on the same connection.
    pub(crate) fn reset(&mut self) {
        self.state = State::Head;
        self.head.clear();
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Progress, ParseError> {
        let mut used = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    let buffered = !self.head.is_empty();
                    if buffered {
                        self.head.extend_from_slice(&data[used..]);
                        used = data.len();
                    }
                    let input: &[u8] = if buffered { &self.head } else { &data[used..] };
                    match parse_head(input, self.head_request)? {
                        None => {
                            if !buffered {
                                self.head.extend_from_slice(&data[used..]);
                            }
                            if self.head.len() > MAX_HEAD {
                                return Err(ParseError::HeadTooLarge);
                            }
                            return Ok(Progress::Partial);
                        }
                        Some((n, head)) => {
                            if buffered {
                                // The bytes after the head sit in `self.head`: they are the
                                // tail of `data`, so `extra` computed on them is the same.
                                let rest = self.head.split_off(n);
                                self.head.clear();
                                self.state = head;
                                return self.feed(&rest);
                            }
                            used += n;
                            self.state = head;
                            if let State::Head = self.state {
                                continue; // an interim 1xx was skipped
                            }
                        }
                    }
                }
                State::Body {
                    status,
                    keep_alive,
                    body,
                } => {
                    let (status, keep_alive) = (*status, *keep_alive);
                    let rest = &data[used..];
                    match advance_body(body, rest)? {
                        Some(n) => {
                            self.state = State::Head;
                            return Ok(Progress::Complete {
                                status,
                                keep_alive,
                                extra: rest.len() - n,
                            });
                        }
                        None => return Ok(Progress::Partial),
                    }
                }
            }
        }
    }

    /// The peer closed the connection. Completes a close-delimited body; anything else that
    /// was started is truncated. `Ok(None)`: nothing was in progress.
    pub(crate) fn eof(&mut self) -> Result<Option<Progress>, ParseError> {
        match &self.state {
            State::Body {
                status,
                body: Body::Close,
                ..
            } => {
                let status = *status;
                self.state = State::Head;
                Ok(Some(Progress::Complete {
                    status,
                    keep_alive: false,
                    extra: 0,
                }))
            }
            State::Head if self.head.is_empty() => Ok(None),
            _ => Err(ParseError::Truncated),
        }
    }
}

/// Parses a complete head, or returns None if more bytes are needed. Interim 1xx responses
/// (other than 101) are consumed and yield `State::Head` so the caller keeps parsing.
fn parse_head(input: &[u8], head_request: bool) -> Result<Option<(usize, State)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ParseError::Head(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(ParseError::UnexpectedStatus(status));
    }
    if (100..200).contains(&status) {
        return Ok(Some((n, State::Head)));
    }
    let http11 = resp.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = parse_length(h.value)?;
            if length.is_some_and(|l| l != v) {
                return Err(ParseError::BadContentLength);
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides the framing (RFC 9112 §6.3 rule 4).
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            let last = trim(last);
            chunked = last.eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = trim(tok);
                if tok.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if head_request || status == 204 || status == 304 {
        Body::Length(0)
    } else if chunked {
        Body::Chunked(Chunk::Size { size: 0, digits: 0 })
    } else if other_coding {
        Body::Close
    } else if let Some(l) = length {
        Body::Length(l)
    } else {
        Body::Close
    };
    if body == Body::Close {
        keep_alive = false;
    }
    Ok(Some((
        n,
        State::Body {
            status,
            keep_alive,
            body,
        },
    )))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_length(v: &[u8]) -> Result<u64, ParseError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadContentLength);
    }
    Ok(v.iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

/// Consumes body bytes; returns how many were used once the body is complete.
fn advance_body(body: &mut Body, data: &[u8]) -> Result<Option<usize>, ParseError> {
    match body {
        Body::Length(rem) => {
            let take = (*rem).min(data.len() as u64);
            *rem -= take;
            Ok(if *rem == 0 { Some(take as usize) } else { None })
        }
        Body::Close => Ok(None),
        Body::Chunked(state) => advance_chunked(state, data),
    }
}

fn advance_chunked(state: &mut Chunk, data: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        *state = match *state {
            Chunk::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(ParseError::BadChunk("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Chunk::Size {
                        size: size * 16 + d,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(ParseError::BadChunk("missing chunk size")),
                b';' | b' ' | b'\t' => Chunk::Ext { size },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err(ParseError::BadChunk("bad character in chunk size")),
            },
            Chunk::Ext { size } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Err(ParseError::BadChunk("bare LF after chunk size")),
                _ => Chunk::Ext { size },
            },
            Chunk::SizeLf { size } => match b {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(size),
                _ => return Err(ParseError::BadChunk("expected LF after chunk size")),
            },
            Chunk::Data(rem) => {
                let take = rem.min((data.len() - i) as u64);
                i += take as usize;
                *state = if rem == take {
                    Chunk::DataCr
                } else {
                    Chunk::Data(rem - take)
                };
                continue;
            }
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(ParseError::BadChunk("expected CRLF after chunk data")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size { size: 0, digits: 0 },
                _ => return Err(ParseError::BadChunk("expected CRLF after chunk data")),
            },
            Chunk::TrailerStart => match b {
                b'\r' => Chunk::EndLf,
                _ => Chunk::Trailer,
            },
            Chunk::Trailer => match b {
                b'\n' => Chunk::TrailerStart,
                _ => Chunk::Trailer,
            },
            Chunk::EndLf => match b {
                b'\n' => return Ok(Some(i + 1)),
                _ => return Err(ParseError::BadChunk("expected CRLF at end of trailers")),
            },
        };
        i += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the completions and the final error.
    fn run(
        input: &[u8],
        step: usize,
        head_req: bool,
    ) -> (Vec<(u16, bool, usize)>, Option<ParseError>) {
        let mut p = ResponseParser::new(head_req);
        let mut done = Vec::new();
        for piece in input.chunks(step) {
            match p.feed(piece) {
                Ok(Progress::Complete {
                    status,
                    keep_alive,
                    extra,
                }) => {
                    done.push((status, keep_alive, extra));
                    p.reset();
                }
                Ok(Progress::Partial) => {}
                Err(e) => return (done, Some(e)),
            }
        }
        match p.eof() {
            Ok(Some(Progress::Complete {
                status,
                keep_alive,
                extra,
            })) => done.push((status, keep_alive, extra)),
            Ok(_) => {}
            Err(e) => return (done, Some(e)),
        }
        (done, None)
    }

    const LEN: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: a\r\n\r\nhello";
    const CHUNKED: &[u8] = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the end";
    const HTTP10: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    const CONN_CLOSE: &[u8] =
        b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn good_responses_at_every_split() {
        let cases: [(&[u8], bool, (u16, bool)); 6] = [
            (LEN, false, (200, true)),
            (CHUNKED, false, (201, true)),
            (CLOSE, false, (200, false)),
            (HTTP10, false, (200, false)),
            (CONN_CLOSE, false, (503, false)),
            (CONTINUE, false, (204, true)),
        ];
        for (input, head_req, (status, ka)) in cases {
            for step in [1, 2, 3, 7, input.len()] {
                let (done, err) = run(input, step, head_req);
                assert_eq!(err, None, "{} step {step}", String::from_utf8_lossy(input));
                assert_eq!(
                    done,
                    vec![(status, ka, 0)],
                    "{} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn head_request_has_no_body() {
        let (done, err) = run(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 4, true);
        assert_eq!((done, err), (vec![(200, true, 0)], None));
    }

    #[test]
    fn extra_bytes_after_response_are_reported() {
        let mut input = LEN.to_vec();
        input.extend_from_slice(b"junk");
        let mut p = ResponseParser::new(false);
        assert_eq!(
            p.feed(&input),
            Ok(Progress::Complete {
                status: 200,
                keep_alive: true,
                extra: 4
            })
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        type Check = fn(&ParseError) -> bool;
        let cases: [(&[u8], Check); 9] = [
            (b"HTTP/1.1 2x0 OK\r\n\r\n", |e| {
                matches!(e, ParseError::Head(_))
            }),
            (b"garbage\r\n\r\n", |e| matches!(e, ParseError::Head(_))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", |e| {
                *e == ParseError::BadContentLength
            }),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                |e| *e == ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                |e| matches!(e, ParseError::BadChunk(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX",
                |e| matches!(e, ParseError::BadChunk(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
                |e| matches!(e, ParseError::BadChunk(_)),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", |e| {
                *e == ParseError::Truncated
            }),
            (b"HTTP/1.1 101 Switching\r\n\r\n", |e| {
                *e == ParseError::UnexpectedStatus(101)
            }),
        ];
        for (input, is) in cases {
            for step in [1, input.len()] {
                let (_, err) = run(input, step, false);
                let err = err
                    .unwrap_or_else(|| panic!("no error for {}", String::from_utf8_lossy(input)));
                assert!(is(&err), "{}: {err:?}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn oversized_head_is_an_error() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        while input.len() <= MAX_HEAD {
            input.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (_, err) = run(&input, 1000, false);
        assert!(
            matches!(
                err,
                Some(ParseError::HeadTooLarge) | Some(ParseError::Head(_))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes mixed with fragments of valid responses.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let frag: &[u8] = match x % 5 {
                    0 => CHUNKED,
                    1 => b"\r\n",
                    2 => b"0\r\n",
                    3 => LEN,
                    _ => &[(x >> 8) as u8],
                };
                let cut = (x >> 16) as usize % (frag.len() + 1);
                input.extend_from_slice(&frag[..cut]);
            }
            let _ = run(&input, 1 + (x as usize % 9), false);
        }
    }
}
