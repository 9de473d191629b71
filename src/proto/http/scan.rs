//! Finding where a request head may end without parsing it again on every read. The strict
//! parser ([`super::parse`]) is stateless and reads the whole buffer; run on every read, a head
//! dribbled one byte at a time would cost O(n²). [`HeadScan`] looks only at the bytes that
//! arrived since its last look, and says when a full parse is worth running: when a line ended
//! with an empty line (the head's end, or a bare-LF head the parser will refuse), or when the
//! input has outgrown a limit (so the parser can answer 414/431 on partial input). A head is
//! thus parsed about once, however it arrives.

use memchr::memchr_iter;

use super::parse::Limits;

/// Resumable scan state for the head at the start of a buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadScan {
    /// Bytes of the buffer already looked at.
    scanned: usize,
    /// Position just past the first LF, once seen (the request line's end).
    first_lf: Option<usize>,
}

impl HeadScan {
    /// Forget everything: the buffer now starts with a new head.
    pub fn reset(&mut self) {
        *self = HeadScan::default();
    }

    /// Should the parser run on `buf` (which only grew since the last call)?
    pub fn worth_parsing(&mut self, buf: &[u8], limits: &Limits) -> bool {
        let from = self.scanned.min(buf.len());
        self.scanned = buf.len();
        let mut ended = false;
        for i in memchr_iter(b'\n', &buf[from..]).map(|i| from + i) {
            if self.first_lf.is_none() {
                self.first_lf = Some(i + 1);
            }
            // An LF ending an empty line: "\n\n" or "\n\r\n" (leading empty lines included,
            // which the parser skips and answers Partial for).
            if (i >= 1 && buf[i - 1] == b'\n')
                || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n')
            {
                ended = true;
                break;
            }
        }
        ended
            || buf.len() > limits.max_header_bytes
            || (self.first_lf.is_none() && buf.len() > limits.max_request_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse::parse_request;
    use crate::proto::http::{ParseError, Status};

    /// Feed `input` `step` bytes at a time; parse when the scan says so. Returns the verdict
    /// and how many times the parser ran.
    fn drive(
        input: &[u8],
        step: usize,
        limits: &Limits,
    ) -> (Result<Option<usize>, ParseError>, usize) {
        let mut scan = HeadScan::default();
        let mut parses = 0;
        let mut at = 0;
        while at < input.len() {
            at = (at + step).min(input.len());
            let buf = &input[..at];
            if scan.worth_parsing(buf, limits) {
                parses += 1;
                match parse_request(buf, limits, Vec::new()) {
                    Ok(Status::Complete(h)) => return (Ok(Some(h.head_len)), parses),
                    Ok(Status::Partial) => {}
                    Err(e) => return (Err(e), parses),
                }
            }
        }
        (Ok(None), parses)
    }

    fn big_head(bytes: usize) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        let mut i = 0;
        while h.len() + 40 < bytes {
            h.extend_from_slice(format!("X-F{i}: {}\r\n", "v".repeat(20)).as_bytes());
            i += 1;
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn a_dribbled_head_is_parsed_once() {
        let limits = Limits {
            max_headers: 10_000,
            ..Limits::default()
        };
        let head = big_head(30 * 1024);
        for step in [1, 2, 7, 100] {
            let (verdict, parses) = drive(&head, step, &limits);
            assert_eq!(verdict, Ok(Some(head.len())), "step {step}");
            assert_eq!(parses, 1, "step {step}");
        }
    }

    #[test]
    fn same_verdict_as_parsing_every_read() {
        let limits = Limits::default();
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        ];
        for input in cases {
            let whole = match parse_request(input, &limits, Vec::new()) {
                Ok(Status::Complete(h)) => Ok(Some(h.head_len)),
                Ok(Status::Partial) => Ok(None),
                Err(e) => Err(e),
            };
            for step in [1, 3, input.len()] {
                assert_eq!(
                    drive(input, step, &limits).0,
                    whole,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn limits_still_apply_to_partial_heads() {
        let limits = Limits::default();
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(limits.max_request_line));
        let (v, parses) = drive(long_line.as_bytes(), 1, &limits);
        assert_eq!(v, Err(ParseError::UriTooLong));
        assert_eq!(parses, 1);
        let mut fields = b"GET / HTTP/1.1\r\n".to_vec();
        while fields.len() <= limits.max_header_bytes + 10 {
            fields.extend_from_slice(b"X: y\r\n");
        }
        let (v, _) = drive(&fields, 1, &limits);
        assert_eq!(v, Err(ParseError::HeadersTooLarge));
    }
}
