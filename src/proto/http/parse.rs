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
    /// Largest declared Content-Length: 413 beyond. Chunked bodies are checked by the caller
    /// with [`super::body::ChunkedDecoder::data_bytes`].
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
    let t_end = scan_vchar(line.w, t_start);
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
        expect_continue: f.expect_continue,
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
fn line_rest(win: &Window, mut i: usize) -> Result<usize, Stop> {
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
        let n_end = scan_token(win.w, pos);
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
}
