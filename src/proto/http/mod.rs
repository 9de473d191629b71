//! HTTP/1.1 message framing (RFC 9112) as a proxy needs it: parse a head into spans of the
//! read buffer without copying ([`parse`]), follow a body's framing without transforming it
//! ([`body`]), write the rewritten head for the other side ([`write`](mod@write)), and the canned error
//! responses rendered once ([`answers`]).
//!
//! Every parser is incremental: given the bytes read so far it answers `Partial` (read more),
//! `Complete` or an error that maps to exactly one status in [`ParseError::status`].

pub mod answers;
pub mod body;
pub mod cache_control;
pub mod cookie;
pub mod date;
pub mod parse;
pub mod range;
pub mod scan;
pub mod write;

/// A byte range of the read buffer a head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header field: name as sent (any case) and value with surrounding whitespace trimmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// Incremental parse result.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (GET without length, HEAD/204/304/1xx responses, ...).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding with `chunked` as the final coding.
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    /// Any other valid token; the name is in `RequestHead::method_span`.
    Other,
}

/// A parsed request head. All spans index the buffer given to [`parse::parse_request`].
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: Method,
    pub method_span: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The request-target exactly as sent.
    pub target: Span,
    /// The origin-form part of the target: path and query. For absolute-form targets this is
    /// the part after the authority; an empty one reads "/" (the span is the last '/' of
    /// "://"). Only "http://h?q" gives an origin starting with '?': writers put "/" before it.
    /// For asterisk-form, "*".
    pub origin: Span,
    /// The path alone (origin without `?query`); never empty ("/" as for `origin`).
    pub path: Span,
    /// The authority of an absolute-form target, if the target was absolute-form.
    pub absolute_authority: Option<Span>,
    /// The (single) Host header value, if present.
    pub host: Option<Span>,
    pub headers: Vec<HeaderSpan>,
    pub framing: Framing,
    /// The client asked to close after this exchange (`Connection: close`, or HTTP/1.0
    /// without `Connection: keep-alive`).
    pub close: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// `Connection: upgrade` + `Upgrade: websocket` were both sent.
    pub upgrade_websocket: bool,
    /// Length of the head in bytes, including the final CRLF CRLF; the body starts here.
    pub head_len: usize,
}

#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub headers: Vec<HeaderSpan>,
    /// Framing given the request method (HEAD → None) and status (1xx/204/304 → None).
    pub framing: Framing,
    /// The server will close, or the message is framed by close.
    pub close: bool,
    pub head_len: usize,
}

/// Why a head or body could not be parsed. Each maps to one status in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed syntax or framing: 400. The text says which rule, for the debug log.
    BadRequest(&'static str),
    /// Request line longer than the limit: 414.
    UriTooLong,
    /// Header block too large or too many fields: 431.
    HeadersTooLarge,
    /// Declared body longer than `max_body`: 413.
    BodyTooLarge,
    /// A transfer coding we do not implement: 501.
    NotImplemented(&'static str),
    /// Not HTTP/1.0 or 1.1: 505.
    VersionNotSupported,
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadRequest(_) => 400,
            ParseError::UriTooLong => 414,
            ParseError::HeadersTooLarge => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::NotImplemented(_) => 501,
            ParseError::VersionNotSupported => 505,
        }
    }
}
