//! Request and response heads (RFC 9112 §2–§6, RFC 9110 §5): one pass over the read buffer that
//! tokenises, enforces the strict syntax rules a proxy needs to stop request smuggling (no bare
//! LF, no obs-fold, no whitespace before the colon, no control characters), and decides the
//! message framing. Fields are recorded as spans of the buffer; nothing is copied and the only
//! allocation is the recycled field vector growing on its first use.
//!
//! The parsers are stateless: give them everything read so far, they answer `Partial` until the
//! head is complete. Limits are checked against partial input too, so a client that never sends
//! the end of its head is refused once it has sent more than the limit allows.

use memchr::memchr;

use super::{Framing, HeaderSpan, Method, ParseError, RequestHead, ResponseHead, Span, Status};

/// Default longest request line, CRLF included (nginx and HAProxy use 8 KiB too).
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Default largest head (request line, fields and the final empty line).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default most header fields in one head.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Spans are `u32`: no head may be longer than this, whatever the limits say.
const MAX_SPAN: usize = u32::MAX as usize;

/// What a client may send before we answer 414, 431 or 413.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line including its CRLF (leading empty lines not counted): 414 beyond.
    pub max_request_line: usize,
    /// Longest head, leading empty lines and the final CRLF included: 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields: 431 beyond.
    pub max_headers: usize,
    /// Largest declared Content-Length: 413 beyond. Chunked bodies are checked as they stream,
    /// by [`super::body::ChunkedDecoder::with_limit`].
    pub max_body: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: None,
        }
    }
}

/// Why parsing stopped before a head was complete.
enum Stop {
    Partial,
    Err(ParseError),
}

impl From<ParseError> for Stop {
    fn from(e: ParseError) -> Self {
        Stop::Err(e)
    }
}

fn bad(why: &'static str) -> Stop {
    Stop::Err(ParseError::BadRequest(why))
}

/// The part of the buffer a parser may look at, and what running off its end means: read more
/// (`Partial`) when the window is the whole buffer, else the limit that cut it.
#[derive(Clone, Copy)]
struct Window<'a> {
    w: &'a [u8],
    cut: bool,
    limit: ParseError,
}

impl<'a> Window<'a> {
    fn new(buf: &'a [u8], cap: usize, limit: ParseError) -> Self {
        let cap = cap.min(MAX_SPAN);
        match buf.get(..cap) {
            Some(w) if cap < buf.len() => Window {
                w,
                cut: true,
                limit,
            },
            _ => Window {
                w: buf,
                cut: false,
                limit,
            },
        }
    }

    fn ran_out(&self) -> Stop {
        if self.cut {
            Stop::Err(self.limit)
        } else {
            Stop::Partial
        }
    }

    #[inline]
    fn at(&self, i: usize) -> Result<u8, Stop> {
        match self.w.get(i) {
            Some(&b) => Ok(b),
            None => Err(self.ran_out()),
        }
    }
}

#[inline]
fn span(start: usize, end: usize) -> Span {
    // Both lie inside a window of at most MAX_SPAN bytes.
    Span {
        start: start as u32,
        end: end as u32,
    }
}

/// Parse a request head from the start of `buf` (RFC 9112 §3, §5, §6).
///
/// `headers` is recycled: it is cleared and returned inside the head, so a keep-alive
/// connection does not allocate per request.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    headers: Vec<HeaderSpan>,
) -> Result<Status<RequestHead>, ParseError> {
    match request(buf, limits, headers) {
        Ok(h) => Ok(Status::Complete(h)),
        Err(Stop::Partial) => Ok(Status::Partial),
        Err(Stop::Err(e)) => Err(e),
    }
}

/// Parse a response head from the start of `buf`, for a request made with `request_method`.
/// Every error is `BadRequest` or `HeadersTooLarge`; the proxy answers its client 502.
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
    max_header_bytes: usize,
    max_headers: usize,
    headers: Vec<HeaderSpan>,
) -> Result<Status<ResponseHead>, ParseError> {
    match response(buf, request_method, max_header_bytes, max_headers, headers) {
        Ok(h) => Ok(Status::Complete(h)),
        Err(Stop::Partial) => Ok(Status::Partial),
        Err(Stop::Err(e)) => Err(e),
    }
}

fn request(buf: &[u8], limits: &Limits, mut headers: Vec<HeaderSpan>) -> Result<RequestHead, Stop> {
    let win = Window::new(buf, limits.max_header_bytes, ParseError::HeadersTooLarge);

    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    let mut pos = 0;
    loop {
        match win.at(pos)? {
            b'\r' => match win.at(pos + 1)? {
                b'\n' => pos += 2,
                _ => return Err(bad("CR not followed by LF")),
            },
            b'\n' => return Err(bad("bare LF")),
            _ => break,
        }
    }

    // The request line gets its own, usually smaller, window: 414 when it is cut by
    // max_request_line, 431 when the head limit cuts first.
    let line_cap = pos.saturating_add(limits.max_request_line);
    let line = if line_cap <= win.w.len() && line_cap < buf.len() {
        Window::new(buf, line_cap, ParseError::UriTooLong)
    } else {
        win
    };

    // RFC 9112 §3: request-line = method SP request-target SP HTTP-version CRLF
    let m_start = pos;
    let m_end = scan_token(line.w, m_start);
    match line.at(m_end)? {
        b' ' if m_end > m_start => {}
        _ => return Err(bad("invalid method")),
    }
    let t_start = m_end + 1;
    let rest = line.w.get(t_start..).unwrap_or_default();
    let t_end = match memchr(b' ', rest) {
        Some(off) if rest.get(..off).is_some_and(all_vchar) => t_start + off,
        _ => scan_vchar(line.w, t_start),
    };
    match line.at(t_end)? {
        b' ' if t_end > t_start => {}
        b' ' => return Err(bad("empty request-target")),
        _ => return Err(bad("invalid request-target")),
    }
    let v = t_end + 1;
    let (major, minor) = version(&line, v)?;
    match line.at(v + 8)? {
        b'\r' => {}
        b'\n' => return Err(bad("bare LF")),
        _ => return Err(bad("invalid request line")),
    }
    match line.at(v + 9)? {
        b'\n' => {}
        _ => return Err(bad("CR not followed by LF")),
    }
    let minor_version = match (major, minor) {
        (1, 0) => 0,
        (1, 1) => 1,
        _ => return Err(Stop::Err(ParseError::VersionNotSupported)),
    };

    let method_bytes = buf.get(m_start..m_end).unwrap_or_default();
    let method = method_of(method_bytes);
    if method == Method::Connect {
        return Err(Stop::Err(ParseError::NotImplemented("CONNECT")));
    }
    let target = buf.get(t_start..t_end).unwrap_or_default();
    let form = target_form(target, t_start, method)?;

    // Fields.
    headers.clear();
    if headers.capacity() == 0 {
        headers.reserve(limits.max_headers.min(32));
    }
    let mut f = FieldFacts::new(true, minor_version);
    let head_len = fields(&win, v + 10, limits.max_headers, &mut headers, &mut f)?;

    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one anywhere.
    if minor_version == 1 && f.host_count == 0 {
        return Err(bad("missing Host"));
    }
    let framing = f.request_framing()?;
    if let (Framing::Length(n), Some(max)) = (framing, limits.max_body) {
        if n > max {
            return Err(Stop::Err(ParseError::BodyTooLarge));
        }
    }

    Ok(RequestHead {
        method,
        method_span: span(m_start, m_end),
        minor_version,
        target: span(t_start, t_end),
        origin: form.origin,
        path: form.path,
        absolute_authority: form.authority,
        host: f.host,
        headers,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive),
        // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
        expect_continue: f.expect_continue && minor_version == 1,
        // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
        upgrade_websocket: method == Method::Get
            && minor_version == 1
            && f.conn_upgrade
            && f.upgrade_websocket,
        head_len,
    })
}

fn response(
    buf: &[u8],
    request_method: Method,
    max_header_bytes: usize,
    max_headers: usize,
    mut headers: Vec<HeaderSpan>,
) -> Result<ResponseHead, Stop> {
    let win = Window::new(buf, max_header_bytes, ParseError::HeadersTooLarge);

    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF
    let minor_version = match version(&win, 0)? {
        (1, 0) => 0,
        (1, 1) => 1,
        _ => return Err(bad("unsupported response version")),
    };
    if win.at(8)? != b' ' {
        return Err(bad("invalid status line"));
    }
    let mut status: u16 = 0;
    for i in 9..12 {
        let d = win.at(i)?.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad("invalid status code"));
        }
        status = status * 10 + u16::from(d);
    }
    if !(100..=599).contains(&status) {
        return Err(bad("invalid status code"));
    }
    // The SP before an empty reason is tolerated missing: servers omit it and it cannot
    // change the framing.
    let line_end = match win.at(12)? {
        b'\r' => 12,
        b' ' => line_rest(&win, 13)?,
        b'\n' => return Err(bad("bare LF")),
        _ => return Err(bad("invalid status line")),
    };
    if win.at(line_end + 1)? != b'\n' {
        return Err(bad("CR not followed by LF"));
    }

    headers.clear();
    if headers.capacity() == 0 {
        headers.reserve(max_headers.min(32));
    }
    let mut f = FieldFacts::new(false, minor_version);
    let head_len = fields(&win, line_end + 2, max_headers, &mut headers, &mut f)?;

    // RFC 9112 §6.3: the order of these rules is the order of the RFC's list.
    let declared = f.response_framing()?;
    let framing = if request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::None
    } else {
        declared
    };

    Ok(ResponseHead {
        status,
        minor_version,
        headers,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive) || framing == Framing::UntilClose,
        head_len,
    })
}

/// `HTTP/d.d` at `p`, as (major, minor) digits. Other text is 400; checked byte by byte so a
/// wrong prefix is refused without waiting for the rest of the line.
fn version(win: &Window, p: usize) -> Result<(u8, u8), Stop> {
    for (i, &c) in b"HTTP/".iter().enumerate() {
        if win.at(p + i)? != c {
            return Err(bad("invalid HTTP version"));
        }
    }
    let major = win.at(p + 5)?.wrapping_sub(b'0');
    if major > 9 || win.at(p + 6)? != b'.' {
        return Err(bad("invalid HTTP version"));
    }
    let minor = win.at(p + 7)?.wrapping_sub(b'0');
    if minor > 9 {
        return Err(bad("invalid HTTP version"));
    }
    Ok((major, minor))
}

/// Scan field-value / reason-phrase bytes from `i` up to the line's CR and return the CR's
/// index (the LF after it is not checked here). HTAB and obs-text are allowed; other control
/// characters, bare LF and a CR not followed by LF are 400.
#[inline]
fn line_rest(win: &Window, i: usize) -> Result<usize, Stop> {
    // Fast path: memchr finds the CR, a branch-free pass checks what lies before it. Any
    // doubt goes to the exact scan below, which also names the error.
    let rest = win.w.get(i..).unwrap_or_default();
    if let Some(off) = memchr(b'\r', rest) {
        if rest.get(..off).is_some_and(no_ctl) {
            return Ok(i + off);
        }
    }
    line_rest_slow(win, i)
}

fn line_rest_slow(win: &Window, mut i: usize) -> Result<usize, Stop> {
    loop {
        i = find_ctl(win.w, i);
        match win.at(i)? {
            b'\t' => i += 1,
            b'\r' => return Ok(i),
            b'\n' => return Err(bad("bare LF")),
            _ => return Err(bad("control character in field value")),
        }
    }
}

/// Parse field lines from `pos` to the empty line; returns the head length.
fn fields(
    win: &Window,
    mut pos: usize,
    max_headers: usize,
    headers: &mut Vec<HeaderSpan>,
    f: &mut FieldFacts,
) -> Result<usize, Stop> {
    loop {
        match win.at(pos)? {
            b'\r' => {
                return match win.at(pos + 1)? {
                    b'\n' => Ok(pos + 2),
                    _ => Err(bad("CR not followed by LF")),
                }
            }
            b'\n' => return Err(bad("bare LF")),
            // RFC 9112 §5.2: obs-fold is refused in requests and, as a proxy, in responses.
            b' ' | b'\t' => return Err(bad("obs-fold or whitespace before field name")),
            _ => {}
        }
        let rest = win.w.get(pos..).unwrap_or_default();
        let n_end = match memchr(b':', rest) {
            Some(off) if rest.get(..off).is_some_and(all_tchar) => pos + off,
            _ => scan_token(win.w, pos),
        };
        match win.at(n_end)? {
            b':' if n_end > pos => {}
            // RFC 9112 §5.1: MUST reject whitespace between field name and colon.
            b' ' | b'\t' if n_end > pos => return Err(bad("whitespace before colon")),
            _ => return Err(bad("invalid field name")),
        }
        let mut v_start = n_end + 1;
        while let Some(b' ' | b'\t') = win.w.get(v_start) {
            v_start += 1;
        }
        let cr = line_rest(win, v_start)?;
        if win.at(cr + 1)? != b'\n' {
            return Err(bad("CR not followed by LF"));
        }
        let mut v_end = cr;
        while v_end > v_start && matches!(win.w.get(v_end - 1), Some(b' ' | b'\t')) {
            v_end -= 1;
        }
        if headers.len() >= max_headers {
            return Err(Stop::Err(ParseError::HeadersTooLarge));
        }
        let name = win.w.get(pos..n_end).unwrap_or_default();
        let value = win.w.get(v_start..v_end).unwrap_or_default();
        f.field(name, value, span(v_start, v_end))?;
        headers.push(HeaderSpan {
            name: span(pos, n_end),
            value: span(v_start, v_end),
        });
        pos = cr + 2;
    }
}

/// What the framing-relevant fields said, gathered while scanning.
struct FieldFacts {
    request: bool,
    minor: u8,
    host_count: u32,
    host: Option<Span>,
    content_length: Option<u64>,
    te: bool,
    te_any: bool,
    te_chunked: bool,
    te_last_chunked: bool,
    te_unknown: bool,
    close: bool,
    keep_alive: bool,
    conn_upgrade: bool,
    upgrade_websocket: bool,
    expect_continue: bool,
}

impl FieldFacts {
    fn new(request: bool, minor: u8) -> Self {
        FieldFacts {
            request,
            minor,
            host_count: 0,
            host: None,
            content_length: None,
            te: false,
            te_any: false,
            te_chunked: false,
            te_last_chunked: false,
            te_unknown: false,
            close: false,
            keep_alive: false,
            conn_upgrade: false,
            upgrade_websocket: false,
            expect_continue: false,
        }
    }

    #[inline]
    fn field(&mut self, name: &[u8], value: &[u8], vspan: Span) -> Result<(), Stop> {
        // Dispatch on length first: most fields are none of these and cost one compare.
        match name.len() {
            4 if self.request && name.eq_ignore_ascii_case(b"host") => {
                self.host_count += 1;
                if self.host_count > 1 {
                    return Err(bad("more than one Host"));
                }
                if !value.iter().all(|&b| AUTHORITY[usize::from(b)]) {
                    return Err(bad("invalid Host"));
                }
                self.host = Some(vspan);
            }
            6 if self.request && name.eq_ignore_ascii_case(b"expect") => {
                self.expect_continue |=
                    members(value).any(|m| m.eq_ignore_ascii_case(b"100-continue"));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                // protocol = protocol-name ["/" protocol-version]
                self.upgrade_websocket |= members(value).any(|m| {
                    let name = m.split(|&b| b == b'/').next().unwrap_or_default();
                    name.eq_ignore_ascii_case(b"websocket")
                });
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for m in members(value) {
                    if m.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if m.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if m.eq_ignore_ascii_case(b"upgrade") {
                        self.conn_upgrade = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // RFC 9110 §8.6: a list of identical values may be taken as one value.
                for m in value.split(|&b| b == b',') {
                    let n = parse_decimal(trim_ows(m)).ok_or(bad("invalid Content-Length"))?;
                    match self.content_length {
                        Some(c) if c != n => return Err(bad("differing Content-Length values")),
                        _ => self.content_length = Some(n),
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
                if self.minor == 0 {
                    return Err(bad("Transfer-Encoding in HTTP/1.0"));
                }
                self.te = true;
                for m in members(value) {
                    self.te_any = true;
                    let mut parts = m.splitn(2, |&b| b == b';');
                    let coding = trim_ows(parts.next().unwrap_or_default());
                    let has_params = parts.next().is_some();
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        // RFC 9112 §6.1: chunked MUST NOT be applied more than once.
                        if self.te_chunked {
                            return Err(bad("chunked applied twice"));
                        }
                        if has_params {
                            return Err(bad("chunked with parameters"));
                        }
                        self.te_chunked = true;
                        self.te_last_chunked = true;
                    } else {
                        self.te_last_chunked = false;
                        if !KNOWN_CODINGS.iter().any(|k| coding.eq_ignore_ascii_case(k)) {
                            self.te_unknown = true;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// RFC 9112 §6.3 for requests: never "until close".
    fn request_framing(&self) -> Result<Framing, Stop> {
        if self.te {
            if self.content_length.is_some() {
                return Err(bad("Transfer-Encoding with Content-Length"));
            }
            if !self.te_any {
                return Err(bad("empty Transfer-Encoding"));
            }
            // §6.3 rule 4: a request whose final coding is not chunked cannot be framed.
            if !self.te_last_chunked {
                return Err(bad("final transfer coding is not chunked"));
            }
            if self.te_unknown {
                return Err(Stop::Err(ParseError::NotImplemented(
                    "unknown transfer coding",
                )));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        })
    }

    /// RFC 9112 §6.3 for responses, before the method/status rules are applied.
    fn response_framing(&self) -> Result<Framing, Stop> {
        if self.te {
            // The RFC lets TE override CL but says it "ought to be handled as an error";
            // as a proxy we refuse to guess.
            if self.content_length.is_some() {
                return Err(bad("Transfer-Encoding with Content-Length"));
            }
            return Ok(if self.te_last_chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        Ok(match self.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

/// Transfer codings a backend may be asked to decode before chunked; anything else is 501.
const KNOWN_CODINGS: [&[u8]; 6] = [
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"identity",
];

/// The non-empty members of a comma-separated list (RFC 9110 §5.6.1), trimmed of OWS.
fn members(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// 1*DIGIT as u64; no sign, no whitespace, overflow refused.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

fn method_of(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        b"CONNECT" => Method::Connect,
        b"TRACE" => Method::Trace,
        _ => Method::Other,
    }
}

struct Form {
    origin: Span,
    path: Span,
    authority: Option<Span>,
}

/// RFC 9112 §3.2: origin-form, absolute-form or asterisk-form (authority-form is CONNECT's,
/// refused earlier). `t` is the target, starting at `base` in the buffer.
fn target_form(t: &[u8], base: usize, method: Method) -> Result<Form, Stop> {
    let path_of = |start: usize, end: usize| -> Span {
        let rel = t.get(start - base..end - base).unwrap_or_default();
        span(start, memchr(b'?', rel).map_or(end, |q| start + q))
    };
    let end = base + t.len();
    match t.first() {
        Some(b'/') => Ok(Form {
            origin: span(base, end),
            path: path_of(base, end),
            authority: None,
        }),
        Some(b'*') => {
            if t.len() == 1 && method == Method::Options {
                Ok(Form {
                    origin: span(base, end),
                    path: span(base, end),
                    authority: None,
                })
            } else {
                Err(bad("asterisk-form only with OPTIONS"))
            }
        }
        _ => {
            let scheme_len = if starts_with_ci(t, b"http://") {
                7
            } else if starts_with_ci(t, b"https://") {
                8
            } else {
                return Err(bad("invalid request-target"));
            };
            let rest = t.get(scheme_len..).unwrap_or_default();
            let a_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let auth = rest.get(..a_len).unwrap_or_default();
            if auth.is_empty() {
                return Err(bad("empty authority"));
            }
            if auth.contains(&b'@') {
                return Err(bad("userinfo in request-target"));
            }
            if !auth.iter().all(|&b| AUTHORITY[usize::from(b)]) {
                return Err(bad("invalid authority"));
            }
            let a_start = base + scheme_len;
            let a_end = a_start + a_len;
            // An empty path must read as "/": the last '/' of "://" is such a span.
            let slash = span(a_start - 1, a_start);
            let (origin, path) = match rest.get(a_len) {
                Some(b'/') => (span(a_end, end), path_of(a_end, end)),
                // "http://h?q": the origin is "?q" and writers put "/" before it.
                Some(_) => (span(a_end, end), slash),
                None => (slash, slash),
            };
            Ok(Form {
                origin,
                path,
                authority: Some(span(a_start, a_end)),
            })
        }
    }
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

// --- byte classes ------------------------------------------------------------------------

const fn class(chars: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    if alnum {
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            if b.is_ascii_alphanumeric() {
                t[c] = true;
            }
            c += 1;
        }
    }
    t
}

/// tchar (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = class(b"!#$%&'*+-.^_`|~", true);
/// What a host[:port] may contain: unreserved, sub-delims, ':', '%' and IPv6 brackets
/// (RFC 3986 §3.2.2); no '/', '@', whitespace or control characters.
static AUTHORITY: [bool; 256] = class(b"-._~!$&'()*+,;=:%[]", true);

// Whole-slice checks without early exit: no mispredicted branch per byte, and the compiler
// vectorises the last two.
#[inline]
fn all_tchar(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & TCHAR[usize::from(b)])
}

#[inline]
fn no_ctl(s: &[u8]) -> bool {
    s.iter()
        .fold(true, |ok, &b| ok & (b >= 0x20 || b == b'\t') & (b != 0x7f))
}

#[inline]
fn all_vchar(s: &[u8]) -> bool {
    s.iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e))
}

#[inline]
fn scan_token(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !TCHAR[usize::from(b)] {
            break;
        }
        i += 1;
    }
    i
}

// Eight bytes at a time (SWAR): "does this word hold a byte below n" without branches per
// byte. Exact as a yes/no answer for n <= 0x80 (Bit Twiddling Hacks, "hasless").
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline]
fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI != 0
}

#[inline]
fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (LO * u64::from(b)), 1)
}

#[inline]
fn word(s: &[u8], i: usize) -> Option<u64> {
    s.get(i..)
        .and_then(|r| r.first_chunk::<8>())
        .map(|w| u64::from_le_bytes(*w))
}

/// Index of the first control character (< 0x20 or DEL) at or after `i`, or `s.len()`.
#[inline]
fn find_ctl(s: &[u8], mut i: usize) -> usize {
    while let Some(x) = word(s, i) {
        if has_less(x, 0x20) || has_byte(x, 0x7f) {
            break;
        }
        i += 8;
    }
    while let Some(&b) = s.get(i) {
        if b < 0x20 || b == 0x7f {
            break;
        }
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not visible ASCII (0x21..=0x7e).
#[inline]
fn scan_vchar(s: &[u8], mut i: usize) -> usize {
    while let Some(x) = word(s, i) {
        if has_less(x, 0x21) || has_byte(x, 0x7f) || x & HI != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&b) = s.get(i) {
        if !(0x21..=0x7e).contains(&b) {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            max_request_line: 256,
            max_header_bytes: 1024,
            max_headers: 8,
            max_body: Some(1000),
        }
    }

    fn req(b: &[u8]) -> Result<Status<RequestHead>, ParseError> {
        parse_request(b, &lim(), Vec::new())
    }

    fn ok(b: &[u8]) -> RequestHead {
        match req(b) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    fn resp(b: &[u8], m: Method) -> Result<Status<ResponseHead>, ParseError> {
        parse_response(b, m, 1024, 8, Vec::new())
    }

    fn resp_ok(b: &[u8], m: Method) -> ResponseHead {
        match resp(b, m) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    const BAD: u16 = 400;
    const PARTIAL: Result<&str, ParseError> = Ok("partial");
    const COMPLETE: Result<&str, ParseError> = Ok("complete");

    /// Heads have no PartialEq; compare what kind of answer came back.
    fn outcome<T>(r: Result<Status<T>, ParseError>) -> Result<&'static str, ParseError> {
        r.map(|s| match s {
            Status::Complete(_) => "complete",
            Status::Partial => "partial",
        })
    }

    #[test]
    fn malformed_requests_get_their_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", BAD),
            (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"\rXGET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\rX\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\rX", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\tX: folded\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad(name): x\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x01\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", BAD),
            // Request line.
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET /\r\n\r\n", BAD),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", BAD),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTX/1.1\r\n\r\n", BAD),
            (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET /0123456789abcdef\xff HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/0.9\r\n\r\n", 505),
            // Targets.
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET http://u@a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"GET http://a\"b/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
            // Host.
            (b"GET / HTTP/1.1\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", BAD),
            (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", BAD),
            (b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", BAD),
            // Framing.
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , \r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3,\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 4\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", BAD),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", 413),
        ];
        for (input, status) in cases {
            match req(input) {
                Err(e) => assert_eq!(
                    e.status(),
                    *status,
                    "{:?}: {e:?}",
                    String::from_utf8_lossy(input)
                ),
                other => panic!(
                    "{:?}: expected {status}, got {other:?}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
    }

    #[test]
    fn request_fields_and_flags() {
        let b = b"\r\n\r\nPOST /a/b?c=d HTTP/1.1\r\nHost:  example.com:8080 \t\r\nX-Empty:\r\n\
                  X-Obs: caf\xc3\xa9\tok\r\nContent-Length: 12, 12\r\ncontent-length:12\r\n\
                  Connection: foo, Close\r\nExpect: 100-Continue\r\n\r\nBODY";
        let h = ok(b);
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.method_span.of(b), b"POST");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.target.of(b), b"/a/b?c=d");
        assert_eq!(h.origin.of(b), b"/a/b?c=d");
        assert_eq!(h.path.of(b), b"/a/b");
        assert_eq!(h.absolute_authority, None);
        assert_eq!(h.host.map(|s| s.of(b)), Some(&b"example.com:8080"[..]));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.close);
        assert!(h.expect_continue);
        assert!(!h.upgrade_websocket);
        assert_eq!(h.head_len, b.len() - 4);
        let fields: Vec<(&[u8], &[u8])> = h
            .headers
            .iter()
            .map(|f| (f.name.of(b), f.value.of(b)))
            .collect();
        assert_eq!(fields.len(), 7);
        assert_eq!(fields[1], (&b"X-Empty"[..], &b""[..]));
        assert_eq!(fields[2], (&b"X-Obs"[..], &b"caf\xc3\xa9\tok"[..]));
        assert_eq!(fields[4], (&b"content-length"[..], &b"12"[..]));
    }

    #[test]
    fn framing_and_connection_rules() {
        let cases: &[(&[u8], Framing, bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::None, false),
            (b"GET / HTTP/1.0\r\n\r\n", Framing::None, true),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Framing::None, false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", Framing::None, true),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: CLOSE\r\n\r\n", Framing::None, true),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", Framing::None, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Framing::Length(0), false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\n\r\n", Framing::Length(7), false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", Framing::Length(1000), false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Framing::Chunked, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", Framing::Chunked, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Framing::Chunked, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Framing::Chunked, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-gzip,deflate , chunked\r\n\r\n", Framing::Chunked, false),
        ];
        for (input, framing, close) in cases {
            let h = ok(input);
            assert_eq!(
                (h.framing, h.close),
                (*framing, *close),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // No max_body: any valid length passes.
        let l = Limits {
            max_body: None,
            ..lim()
        };
        let b = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
        match parse_request(b, &l, Vec::new()) {
            Ok(Status::Complete(h)) => assert_eq!(h.framing, Framing::Length(u64::MAX)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn websocket_upgrade_needs_get_1_1_and_both_fields() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n", true),
            (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo, websocket/13\r\n\r\n", true),
            (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false),
            (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", false),
            (b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false),
            (b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false),
        ];
        for (input, ws) in cases {
            assert_eq!(
                ok(input).upgrade_websocket,
                *ws,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn expect_continue_only_in_http_1_1() {
        let cases: &[(&[u8], bool)] = &[
            (
                b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                true,
            ),
            (
                b"PUT / HTTP/1.1\r\nHost: a\r\nexpect:  100-CONTINUE \r\n\r\n",
                true,
            ),
            (
                b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
                false,
            ),
            (
                b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                false,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                ok(input).expect_continue,
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn target_forms() {
        // (input, origin, path, authority)
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], Option<&'a [u8]>);
        let cases: &[Case] = &[
            (
                b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/x?y",
                b"/x",
                None,
            ),
            (b"GET /? HTTP/1.1\r\nHost: a\r\n\r\n", b"/?", b"/", None),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", b"*", b"*", None),
            (
                b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/x?y",
                b"/x",
                Some(b"b.example"),
            ),
            (
                b"GET HTTPS://b:8443/ HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/",
                b"/",
                Some(b"b:8443"),
            ),
            (
                b"GET http://b HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/",
                b"/",
                Some(b"b"),
            ),
            (
                b"GET http://[::1]:80?q HTTP/1.1\r\nHost: a\r\n\r\n",
                b"?q",
                b"/",
                Some(b"[::1]:80"),
            ),
            (b"GET http://b/ HTTP/1.0\r\n\r\n", b"/", b"/", Some(b"b")),
        ];
        for (input, origin, path, auth) in cases {
            let h = ok(input);
            let name = String::from_utf8_lossy(input);
            assert_eq!(h.origin.of(input), *origin, "{name}");
            assert_eq!(h.path.of(input), *path, "{name}");
            assert_eq!(h.absolute_authority.map(|a| a.of(input)), *auth, "{name}");
        }
        assert_eq!(
            ok(b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n").method,
            Method::Other
        );
    }

    #[test]
    fn limits_apply_to_partial_input() {
        let l = Limits {
            max_request_line: 32,
            max_header_bytes: 64,
            max_headers: 2,
            max_body: None,
        };
        let p = |b: &[u8]| outcome(parse_request(b, &l, Vec::new()));
        // Request line of exactly 32 bytes with CRLF fits; 33 does not.
        let line32 = b"GET /0123456789abcdefgh HTTP/1.1\r\n";
        assert_eq!(line32.len(), 34);
        assert_eq!(p(b"GET /0123456789abcdef HTTP/1.1\r\n"), PARTIAL);
        assert_eq!(p(line32), Err(ParseError::UriTooLong));
        // No line end yet: partial up to the limit, 414 beyond it, even mid-target.
        assert_eq!(p(&[b"GET /".as_slice(), &[b'a'; 27]].concat()), PARTIAL);
        assert_eq!(
            p(&[b"GET /".as_slice(), &[b'a'; 28]].concat()),
            Err(ParseError::UriTooLong)
        );
        // Leading empty lines do not count into the request line but do into the head.
        let mut lead = b"\r\n\r\n".to_vec();
        lead.extend_from_slice(b"GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(p(&lead), COMPLETE);
        // Head: complete within 64 bytes is fine, anything longer is 431 complete or not.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 01234567890123456789012345678901\r\n\r\n";
        assert_eq!(head.len(), 64);
        assert_eq!(p(head), COMPLETE);
        assert_eq!(ok(head).head_len, 64);
        let head65 = b"GET / HTTP/1.1\r\nHost: a\r\nX: 012345678901234567890123456789012\r\n\r\n";
        assert_eq!(head65.len(), 65);
        assert_eq!(p(head65), Err(ParseError::HeadersTooLarge));
        assert_eq!(p(&head65[..64]), PARTIAL);
        assert_eq!(p(&head65[..65]), Err(ParseError::HeadersTooLarge));
        assert_eq!(
            p(&[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 60]].concat()),
            Err(ParseError::HeadersTooLarge)
        );
        // A complete head followed by more data than the limit is fine (pipelining, bodies).
        let mut more = head.to_vec();
        more.extend_from_slice(&[b'x'; 500]);
        assert!(
            matches!(parse_request(&more, &l, Vec::new()), Ok(Status::Complete(h)) if h.head_len == 64)
        );
        // Field count.
        assert_eq!(p(b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\n\r\n"), COMPLETE);
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n"),
            Err(ParseError::HeadersTooLarge)
        );
        // The head limit cuts the request line before its own limit: 431.
        let l2 = Limits {
            max_request_line: 100,
            max_header_bytes: 20,
            max_headers: 2,
            max_body: None,
        };
        assert_eq!(
            outcome(parse_request(b"GET /0123456789012345678", &l2, Vec::new())),
            Err(ParseError::HeadersTooLarge)
        );
    }

    /// Every strict prefix of a valid head is Partial, and the whole gives the same head as
    /// when parsed at once.
    #[test]
    fn byte_at_a_time_requests_and_responses() {
        let reqs: &[&[u8]] = &[
            b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-Long-Header-Value: 0123456789abcdefghijklmnop\r\n\r\n",
            b"POST http://h/p?q HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for r in reqs {
            for n in 0..r.len() {
                assert_eq!(
                    outcome(req(&r[..n])),
                    PARTIAL,
                    "{n} of {:?}",
                    String::from_utf8_lossy(r)
                );
            }
            let h = ok(r);
            assert_eq!(h.head_len, r.len());
        }
        let resps: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\n",
            b"HTTP/1.0 404\r\n\r\n",
            b"HTTP/1.1 204 \r\n\r\n",
        ];
        for r in resps {
            for n in 0..r.len() {
                assert_eq!(outcome(resp(&r[..n], Method::Get)), PARTIAL, "{n}");
            }
            assert_eq!(resp_ok(r, Method::Get).head_len, r.len());
        }
    }

    #[test]
    fn pipelined_requests_split_by_head_len() {
        let b = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        let mut v = Vec::new();
        while at < b.len() {
            let h = match parse_request(&b[at..], &lim(), v) {
                Ok(Status::Complete(h)) => h,
                other => panic!("{other:?}"),
            };
            seen.push(h.path.of(&b[at..]).to_vec());
            at += h.head_len;
            if let Framing::Length(n) = h.framing {
                at += n as usize;
            }
            v = h.headers;
        }
        assert_eq!(at, b.len());
        assert_eq!(seen, [b"/1".to_vec(), b"/2".to_vec(), b"/3".to_vec()]);
    }

    #[test]
    fn recycled_vector_is_cleared_and_reused() {
        let b = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        let h = ok(b);
        let cap = h.headers.capacity();
        let ptr = h.headers.as_ptr();
        let h2 = match parse_request(b, &lim(), h.headers) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h2.headers.len(), 2);
        assert_eq!((h2.headers.capacity(), h2.headers.as_ptr()), (cap, ptr));
    }

    #[test]
    fn responses() {
        use Framing::*;
        let cases: &[(&[u8], Method, u16, Framing, bool)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Get, 200, Length(5), false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Head, 200, None, false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Head, 200, None, false),
            (b"HTTP/1.1 100 Continue\r\n\r\n", Method::Post, 100, None, false),
            (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", Method::Get, 101, None, false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Method::Get, 204, None, false),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Method::Get, 304, None, false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::Get, 200, Chunked, false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n", Method::Get, 200, UntilClose, true),
            (b"HTTP/1.1 200 OK\r\n\r\n", Method::Get, 200, UntilClose, true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Method::Post, 200, Length(3), false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", Method::Get, 200, Length(0), true),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get, 200, Length(0), true),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", Method::Get, 200, Length(0), false),
            (b"HTTP/1.1 599 \xe2\x9c\x93 obs\ttext\r\nContent-Length: 0\r\n\r\n", Method::Get, 599, Length(0), false),
            (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", Method::Get, 200, Length(0), false),
        ];
        for (input, m, status, framing, close) in cases {
            let h = resp_ok(input, *m);
            assert_eq!(
                (h.status, h.framing, h.close, h.head_len),
                (*status, *framing, *close, input.len()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bad: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
            b"HTTP/1.1 200 OK\r\n X: fold\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 99 OK\r\n\r\n",
            b"HTTP/1.1 600 OK\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
        ];
        for input in bad {
            let r = resp(input, Method::Get);
            assert!(
                matches!(r, Err(ParseError::BadRequest(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            outcome(parse_response(
                b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n",
                Method::Get,
                1024,
                1,
                Vec::new()
            )),
            Err(ParseError::HeadersTooLarge)
        );
        assert_eq!(
            outcome(parse_response(
                b"HTTP/1.1 200 OK\r\nA: 1\r\n",
                Method::Get,
                20,
                8,
                Vec::new()
            )),
            Err(ParseError::HeadersTooLarge)
        );
    }

    #[test]
    fn swar_matches_bytewise_scan() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 4 {
                    0 => rng.next() as u8,
                    _ => b'!' + (rng.next() % 94) as u8,
                })
                .collect();
            let ctl = s
                .iter()
                .position(|&b| b < 0x20 || b == 0x7f)
                .unwrap_or(s.len());
            let vis = s
                .iter()
                .position(|&b| !(0x21..=0x7e).contains(&b))
                .unwrap_or(s.len());
            assert_eq!(find_ctl(&s, 0), ctl, "{s:?}");
            assert_eq!(scan_vchar(&s, 0), vis, "{s:?}");
        }
    }

    pub(crate) struct XorShift(pub u64);
    impl XorShift {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Mutate valid messages at random: whatever comes out, the parsers answer without
    /// panicking, and a complete head's spans lie inside the buffer.
    #[test]
    fn random_mutations_never_panic() {
        let seeds: &[&[u8]] = &[
            b"GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST http://h/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
            b"\r\nPUT / HTTP/1.0\r\nContent-Length: 10, 10\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        ];
        let alphabet = b"\r\n :,;\t/?*@\x00\x7f\x80chunkedHTTP/1.0";
        let limits = Limits {
            max_request_line: 40,
            max_header_bytes: 120,
            max_headers: 4,
            max_body: Some(50),
        };
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut v = Vec::new();
        let mut rv = Vec::new();
        for _ in 0..100_000 {
            let mut m = seeds[(rng.next() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % (m.len() + 1);
                match rng.next() % 4 {
                    0 if at < m.len() => m[at] = alphabet[(rng.next() as usize) % alphabet.len()],
                    1 if at < m.len() => m[at] = rng.next() as u8,
                    2 if at < m.len() => {
                        m.remove(at);
                    }
                    _ => m.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
                }
            }
            let cut = (rng.next() as usize) % (m.len() + 1);
            let input = if rng.next() & 1 == 0 {
                &m[..]
            } else {
                &m[..cut]
            };
            if let Ok(Status::Complete(h)) = parse_request(input, &limits, std::mem::take(&mut v)) {
                assert!(h.head_len <= input.len() && h.head_len <= limits.max_header_bytes);
                for s in [h.method_span, h.target, h.origin, h.path]
                    .into_iter()
                    .chain(h.host)
                    .chain(h.absolute_authority)
                {
                    assert!(s.start <= s.end && s.end as usize <= h.head_len);
                }
                for f in &h.headers {
                    assert!(
                        f.name.end as usize <= h.head_len && f.value.end as usize <= h.head_len
                    );
                }
                v = h.headers;
            }
            for method in [Method::Get, Method::Head] {
                if let Ok(Status::Complete(h)) =
                    parse_response(input, method, 120, 4, std::mem::take(&mut rv))
                {
                    assert!(h.head_len <= input.len());
                    rv = h.headers;
                }
            }
        }
    }
}
