//! Access log lines: the three formats (`combined`, `json`, a custom `$field` string) and what
//! a finished request gives them.
//!
//! A line is formatted on the shard that served the request, straight into that shard's
//! buffer (see `log::shard`): no intermediate `String`, no lock. The wall-clock parts are
//! rendered once per second per shard ([`Clock`]), since calendar arithmetic per line would
//! cost more than the rest of the line.
//!
//! Text taken from the client (request line, Referer, User-Agent) is escaped the way nginx
//! escapes it in its log: `"`, `\` and bytes outside printable ASCII become `\xHH`, so a line
//! is always one line of ASCII and a `"`-quoted field cannot be broken out of. JSON strings are
//! escaped per RFC 8259 (invalid UTF-8 becomes U+FFFD).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::http::RequestHead;

/// Longest request line, Referer or User-Agent kept for the log (longer ones are cut).
pub const MAX_CAPTURED: usize = 2048;

/// An access log format, parsed once at config time.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// nginx/Apache `combined`.
    Combined,
    /// One JSON object per line with the field names of [`FIELDS`].
    Json,
    /// Literal text and `$field`s.
    Custom(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Field(Field),
}

/// Every field a custom format (and the JSON object) can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Client,
    TimeLocal,
    TimeIso8601,
    Msec,
    Frontend,
    Site,
    Request,
    Status,
    BytesIn,
    BytesOut,
    RequestTime,
    UpstreamFirstByteTime,
    Pool,
    Server,
    ServerAddr,
    Sticky,
    Retries,
    Termination,
    Referer,
    UserAgent,
}

/// Field names as written after `$` (and as JSON keys), with the field.
pub const FIELDS: &[(&str, Field)] = &[
    ("client", Field::Client),
    ("time_local", Field::TimeLocal),
    ("time_iso8601", Field::TimeIso8601),
    ("msec", Field::Msec),
    ("frontend", Field::Frontend),
    ("site", Field::Site),
    ("request", Field::Request),
    ("status", Field::Status),
    ("bytes_in", Field::BytesIn),
    ("bytes_out", Field::BytesOut),
    ("request_time", Field::RequestTime),
    ("upstream_first_byte_time", Field::UpstreamFirstByteTime),
    ("pool", Field::Pool),
    ("server", Field::Server),
    ("server_addr", Field::ServerAddr),
    ("sticky", Field::Sticky),
    ("retries", Field::Retries),
    ("termination", Field::Termination),
    ("referer", Field::Referer),
    ("user_agent", Field::UserAgent),
];

impl Format {
    /// `combined`, `json`, or a string with at least one `$field` (`$$` is a literal `$`).
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "combined" => return Ok(Format::Combined),
            "json" => return Ok(Format::Json),
            _ => {}
        }
        if !s.contains('$') {
            return Err(format!(
                "{s:?} is not a format: use \"combined\", \"json\" or a string of $fields such as \"$client $status $request_time\""
            ));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                text.push('$');
                rest = r;
                continue;
            }
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            let name = &after[..n];
            let Some((_, f)) = FIELDS.iter().find(|(k, _)| *k == name) else {
                let known: Vec<&str> = FIELDS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown field \"${name}\" (known: {})",
                    known.join(", ")
                ));
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Field(*f));
            rest = &after[n..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format::Custom(pieces))
    }
}

/// What the request head gives the log, copied before the exchange takes the head's bytes
/// out of the client buffer: the request line, Referer and User-Agent (each cut at
/// [`MAX_CAPTURED`]).
#[derive(Debug, Default, Clone)]
pub struct Captured {
    bytes: Vec<u8>,
    /// Ends of the request line and the Referer in `bytes`; the User-Agent is the rest.
    line_end: usize,
    referer_end: usize,
    has_referer: bool,
    has_agent: bool,
}

impl Captured {
    /// From a parsed head at the start of `buf`.
    pub fn of_head(buf: &[u8], head: &RequestHead) -> Captured {
        let mut c = Captured::default();
        let line = request_line(&buf[(head.method_span.start as usize).min(buf.len())..]);
        c.bytes.extend_from_slice(line);
        c.line_end = c.bytes.len();
        let field = |name: &[u8]| {
            head.headers
                .iter()
                .find(|h| h.name.of(buf).eq_ignore_ascii_case(name))
                .map(|h| h.value.of(buf))
        };
        if let Some(v) = field(b"referer") {
            c.has_referer = true;
            c.bytes.extend_from_slice(&v[..v.len().min(MAX_CAPTURED)]);
        }
        c.referer_end = c.bytes.len();
        if let Some(v) = field(b"user-agent") {
            c.has_agent = true;
            c.bytes.extend_from_slice(&v[..v.len().min(MAX_CAPTURED)]);
        }
        c
    }

    /// From the bytes of a head that did not parse: its first line, as far as it goes.
    pub fn of_unparsed(buf: &[u8]) -> Captured {
        let mut c = Captured::default();
        c.bytes
            .extend_from_slice(request_line(buf.trim_ascii_start()));
        c.line_end = c.bytes.len();
        c.referer_end = c.line_end;
        c
    }

    fn line(&self) -> &[u8] {
        &self.bytes[..self.line_end]
    }
    fn referer(&self) -> Option<&[u8]> {
        self.has_referer
            .then(|| &self.bytes[self.line_end..self.referer_end])
    }
    fn agent(&self) -> Option<&[u8]> {
        self.has_agent.then(|| &self.bytes[self.referer_end..])
    }
}

/// The first line of `buf` without its line end, cut at [`MAX_CAPTURED`].
fn request_line(buf: &[u8]) -> &[u8] {
    let end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    &line[..line.len().min(MAX_CAPTURED)]
}

/// What a finished request gives the log (from the exchange's `Done`).
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub client: IpAddr,
    pub frontend: &'a str,
    /// Host without port, lower-cased (the traffic counters' key).
    pub site: &'a [u8],
    /// From the first byte of the request head to the end of the exchange.
    pub request_time: Duration,
    /// From the request's start to the response head from the server, if one came.
    pub first_byte: Option<Duration>,
    /// The status answered, 0 if nothing was.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pool: Option<&'a str>,
    pub server: Option<&'a str>,
    pub server_addr: Option<SocketAddr>,
    /// The server the request's sticky route named, if any.
    pub sticky: Option<&'a str>,
    pub retries: u32,
    /// "ok", or what ended the exchange ("upstream_timeout", "bad_request", ...).
    pub termination: &'static str,
}

/// The wall-clock parts of lines, rendered once per second.
#[derive(Debug, Default)]
pub struct Clock {
    sec: u64,
    /// `29/Nov/2026:07:36:29 +0000`
    local: String,
    /// `2026-11-29T07:36:29`
    iso: String,
}

impl Clock {
    fn at(&mut self, now: SystemTime) -> (u64, u32) {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (sec, ms) = (d.as_secs(), d.subsec_millis());
        if sec != self.sec || self.local.is_empty() {
            self.sec = sec;
            let (y, m, day, hh, mm, ss) = civil(sec);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            self.local.clear();
            let _ = write!(
                self.local,
                "{day:02}/{}/{y:04}:{hh:02}:{mm:02}:{ss:02} +0000",
                MONTHS[(m - 1) as usize]
            );
            self.iso.clear();
            let _ = write!(self.iso, "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}");
        }
        (sec, ms)
    }
}

/// Unix seconds to (year, month 1-12, day, hour, minute, second), UTC (H. Hinnant's algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Append one line (with its `\n`) for `f` in `format` to `out`.
pub fn format_line(
    format: &Format,
    f: &Finished,
    c: &Captured,
    clock: &mut Clock,
    now: SystemTime,
    out: &mut Vec<u8>,
) {
    let (sec, ms) = clock.at(now);
    let mut w = Line {
        f,
        c,
        clock,
        sec,
        ms,
        out,
    };
    match format {
        Format::Combined => w.combined(),
        Format::Json => w.json(),
        Format::Custom(pieces) => {
            for p in pieces {
                match p {
                    Piece::Text(t) => w.out.extend_from_slice(t.as_bytes()),
                    Piece::Field(field) => w.field(*field),
                }
            }
        }
    }
    w.out.push(b'\n');
}

struct Line<'a, 'b> {
    f: &'a Finished<'b>,
    c: &'a Captured,
    clock: &'a Clock,
    sec: u64,
    ms: u32,
    out: &'a mut Vec<u8>,
}

impl Line<'_, '_> {
    fn num(&mut self, n: u64) {
        let mut b = [0u8; 20];
        let mut i = b.len();
        let mut n = n;
        loop {
            i -= 1;
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&b[i..]);
    }

    /// Seconds with millisecond resolution, as nginx writes `$request_time`.
    fn secs(&mut self, d: Duration) {
        let ms = d.as_millis() as u64;
        self.num(ms / 1000);
        let frac = ms % 1000;
        self.out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    fn status(&mut self) {
        let s = self.f.status;
        if s == 0 {
            self.out.extend_from_slice(b"000");
        } else {
            self.num(u64::from(s));
        }
    }

    /// nginx's log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`; empty as `-`.
    fn escaped(&mut self, v: Option<&[u8]>) {
        match v {
            None | Some([]) => self.out.push(b'-'),
            Some(v) => escape_nginx(v, self.out),
        }
    }

    fn text(&mut self, v: Option<&str>) {
        match v {
            Some(s) if !s.is_empty() => escape_nginx(s.as_bytes(), self.out),
            _ => self.out.push(b'-'),
        }
    }

    fn combined(&mut self) {
        // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
        // "$http_referer" "$http_user_agent"
        let _ = write!(Io(self.out), "{}", self.f.client);
        self.out.extend_from_slice(b" - - [");
        self.out.extend_from_slice(self.clock.local.as_bytes());
        self.out.extend_from_slice(b"] \"");
        let line = self.c.line();
        self.escaped(Some(line));
        self.out.extend_from_slice(b"\" ");
        self.status();
        self.out.push(b' ');
        self.num(self.f.bytes_out);
        self.out.extend_from_slice(b" \"");
        self.escaped(self.c.referer());
        self.out.extend_from_slice(b"\" \"");
        self.escaped(self.c.agent());
        self.out.push(b'"');
    }

    fn field(&mut self, field: Field) {
        let f = self.f;
        match field {
            Field::Client => {
                let _ = write!(Io(self.out), "{}", f.client);
            }
            Field::TimeLocal => self.out.extend_from_slice(self.clock.local.as_bytes()),
            Field::TimeIso8601 => {
                self.out.extend_from_slice(self.clock.iso.as_bytes());
                self.out.extend_from_slice(b"+00:00");
            }
            Field::Msec => {
                self.num(self.sec);
                let ms = self.ms;
                self.out.extend_from_slice(&[
                    b'.',
                    b'0' + (ms / 100) as u8,
                    b'0' + (ms / 10 % 10) as u8,
                    b'0' + (ms % 10) as u8,
                ]);
            }
            Field::Frontend => self.text(Some(f.frontend)),
            Field::Site => self.escaped(Some(f.site)),
            Field::Request => {
                let line = self.c.line();
                self.escaped(Some(line));
            }
            Field::Status => self.status(),
            Field::BytesIn => self.num(f.bytes_in),
            Field::BytesOut => self.num(f.bytes_out),
            Field::RequestTime => self.secs(f.request_time),
            Field::UpstreamFirstByteTime => match f.first_byte {
                Some(d) => self.secs(d),
                None => self.out.push(b'-'),
            },
            Field::Pool => self.text(f.pool),
            Field::Server => self.text(f.server),
            Field::ServerAddr => match f.server_addr {
                Some(a) => {
                    let _ = write!(Io(self.out), "{a}");
                }
                None => self.out.push(b'-'),
            },
            Field::Sticky => self.text(f.sticky),
            Field::Retries => self.num(u64::from(f.retries)),
            Field::Termination => self.text(Some(f.termination)),
            Field::Referer => self.escaped(self.c.referer()),
            Field::UserAgent => self.escaped(self.c.agent()),
        }
    }

    fn json(&mut self) {
        let f = self.f;
        self.out.extend_from_slice(b"{\"time\":\"");
        self.out.extend_from_slice(self.clock.iso.as_bytes());
        let ms = self.ms;
        let _ = write!(Io(self.out), ".{ms:03}Z\",\"msec\":");
        self.field(Field::Msec);
        let _ = write!(Io(self.out), ",\"client\":\"{}\"", f.client);
        self.out.extend_from_slice(b",\"frontend\":");
        json_str(Some(f.frontend.as_bytes()), self.out);
        self.out.extend_from_slice(b",\"site\":");
        json_str(Some(f.site), self.out);
        self.out.extend_from_slice(b",\"request\":");
        json_str(Some(self.c.line()), self.out);
        let _ = write!(
            Io(self.out),
            ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"request_time\":",
            f.status,
            f.bytes_in,
            f.bytes_out
        );
        self.secs(f.request_time);
        self.out
            .extend_from_slice(b",\"upstream_first_byte_time\":");
        match f.first_byte {
            Some(d) => self.secs(d),
            None => self.out.extend_from_slice(b"null"),
        }
        self.out.extend_from_slice(b",\"pool\":");
        json_str(f.pool.map(str::as_bytes), self.out);
        self.out.extend_from_slice(b",\"server\":");
        json_str(f.server.map(str::as_bytes), self.out);
        self.out.extend_from_slice(b",\"server_addr\":");
        match f.server_addr {
            Some(a) => {
                let _ = write!(Io(self.out), "\"{a}\"");
            }
            None => self.out.extend_from_slice(b"null"),
        }
        self.out.extend_from_slice(b",\"sticky\":");
        json_str(f.sticky.map(str::as_bytes), self.out);
        let _ = write!(Io(self.out), ",\"retries\":{}", f.retries);
        self.out.extend_from_slice(b",\"termination\":");
        json_str(Some(f.termination.as_bytes()), self.out);
        self.out.extend_from_slice(b",\"referer\":");
        json_str(self.c.referer(), self.out);
        self.out.extend_from_slice(b",\"user_agent\":");
        json_str(self.c.agent(), self.out);
        self.out.push(b'}');
    }
}

/// `fmt::Write` into a byte vector.
struct Io<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Io<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn escape_nginx(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

/// A JSON string (or `null`).
fn json_str(v: Option<&[u8]>, out: &mut Vec<u8>) {
    let Some(v) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for ch in String::from_utf8_lossy(v).chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(Io(out), "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Finished<'static> {
        Finished {
            client: "192.0.2.7".parse().unwrap(),
            frontend: "web",
            site: b"www.example.com",
            request_time: Duration::from_micros(12_345),
            first_byte: Some(Duration::from_millis(4)),
            status: 200,
            bytes_in: 78,
            bytes_out: 1234,
            pool: Some("app"),
            server: Some("a1"),
            server_addr: Some("10.0.0.1:8080".parse().unwrap()),
            sticky: None,
            retries: 1,
            termination: "ok",
        }
    }

    fn captured(head: &[u8]) -> Captured {
        let limits = crate::proto::http::parse::Limits {
            max_request_line: 8192,
            max_header_bytes: 32768,
            max_headers: 100,
            max_body: None,
        };
        match crate::proto::http::parse::parse_request(head, &limits, Vec::new()) {
            Ok(crate::proto::http::Status::Complete(h)) => Captured::of_head(head, &h),
            other => panic!("{other:?}"),
        }
    }

    fn line(format: &Format, f: &Finished, c: &Captured) -> String {
        let mut out = Vec::new();
        let now = UNIX_EPOCH + Duration::from_millis(1_764_401_789_042);
        format_line(format, f, c, &mut Clock::default(), now, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_is_nginx_combined() {
        let c = captured(
            b"GET /a?b=\"1\" HTTP/1.1\r\nHost: www.example.com\r\nReferer: http://r/\r\nUser-Agent: curl/8 \\x\r\n\r\n",
        );
        assert_eq!(
            line(&Format::Combined, &finished(), &c),
            "192.0.2.7 - - [29/Nov/2025:07:36:29 +0000] \"GET /a?b=\\x221\\x22 HTTP/1.1\" 200 1234 \"http://r/\" \"curl/8 \\x5Cx\"\n"
        );
        let c = captured(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut f = finished();
        f.status = 0;
        assert!(
            line(&Format::Combined, &f, &c).ends_with("\"GET / HTTP/1.1\" 000 1234 \"-\" \"-\"\n")
        );
    }

    #[test]
    fn custom_fields_and_errors() {
        let fmt = Format::parse(
            "$client $site $pool $server $server_addr $status $bytes_in $bytes_out $request_time $upstream_first_byte_time $sticky $retries $termination $$ $msec $time_iso8601",
        )
        .unwrap();
        assert_eq!(
            line(&fmt, &finished(), &captured(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")),
            "192.0.2.7 www.example.com app a1 10.0.0.1:8080 200 78 1234 0.012 0.004 - 1 ok $ 1764401789.042 2025-11-29T07:36:29+00:00\n"
        );
        let e = Format::parse("$client $nope").unwrap_err();
        assert!(e.contains("unknown field \"$nope\""), "{e}");
        assert!(Format::parse("plain").is_err());
        // Every field name parses.
        for (name, f) in FIELDS {
            assert_eq!(
                Format::parse(&format!("[${name}]")).unwrap(),
                Format::Custom(vec![
                    Piece::Text("[".into()),
                    Piece::Field(*f),
                    Piece::Text("]".into())
                ])
            );
        }
    }

    #[test]
    fn json_has_every_field() {
        let c = captured(b"POST /x HTTP/1.1\r\nHost: h\r\nUser-Agent: a\"b\t\xc3\xa9\r\n\r\n");
        let mut f = finished();
        f.first_byte = None;
        f.pool = None;
        let l = line(&Format::Json, &f, &c);
        assert_eq!(
            l,
            "{\"time\":\"2025-11-29T07:36:29.042Z\",\"msec\":1764401789.042,\"client\":\"192.0.2.7\",\"frontend\":\"web\",\"site\":\"www.example.com\",\"request\":\"POST /x HTTP/1.1\",\"status\":200,\"bytes_in\":78,\"bytes_out\":1234,\"request_time\":0.012,\"upstream_first_byte_time\":null,\"pool\":null,\"server\":\"a1\",\"server_addr\":\"10.0.0.1:8080\",\"sticky\":null,\"retries\":1,\"termination\":\"ok\",\"referer\":null,\"user_agent\":\"a\\\"b\\u0009é\"}\n"
        );
    }

    #[test]
    fn unparsed_heads_give_their_first_line() {
        let c = Captured::of_unparsed(b"\r\nGET /x HTTP/9.9\r\nHost: h\r\n\r\n");
        assert_eq!(c.line(), b"GET /x HTTP/9.9");
        assert_eq!((c.referer(), c.agent()), (None, None));
        let long = vec![b'a'; MAX_CAPTURED * 2];
        assert_eq!(Captured::of_unparsed(&long).line().len(), MAX_CAPTURED);
    }
}
