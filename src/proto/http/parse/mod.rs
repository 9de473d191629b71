//! Request and response heads (RFC 9112 §2–§6, RFC 9110 §5): one pass over the read buffer that
//! tokenises, enforces the strict syntax rules a proxy needs to stop request smuggling (no bare
//! LF, no obs-fold, no whitespace before the colon, no control characters), and decides the
//! message framing. Fields are recorded as spans of the buffer; nothing is copied and the only
//! allocation is the recycled field vector growing on its first use.
//!
//! The parsers are stateless: give them everything read so far, they answer `Partial` until the
//! head is complete. Limits are checked against partial input too, so a client that never sends
//! the end of its head is refused once it has sent more than the limit allows.
//!
//! By stage: `window` (how running off the input or past a limit stops a parse), `line`
//! (request line and status line, and assembling the head), `target` (method and
//! request-target forms), `fields` (field lines tokenised and checked), `framing` (what
//! Host, Connection, Upgrade, Expect, Content-Length and Transfer-Encoding said, and the
//! RFC 9112 §6.3 framing decision) and `bytes` (byte classes and the SWAR scanners). This file
//! holds the public surface: [`Limits`], [`parse_request`] and [`parse_response`].

mod bytes;
mod fields;
mod framing;
mod line;
mod target;
#[cfg(test)]
mod tests;
mod window;

use super::{HeaderSpan, Method, ParseError, RequestHead, ResponseHead, Status};
use line::{request, response};
use window::Stop;

/// Default longest request line, CRLF included (nginx and HAProxy use 8 KiB too).
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Default largest head (request line, fields and the final empty line).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default most header fields in one head.
pub const DEFAULT_MAX_HEADERS: usize = 100;

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
