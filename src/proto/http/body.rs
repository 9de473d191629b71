//! Following a chunked body (RFC 9112 §7.1): the proxy needs to know where the body ends and
//! whether it is well formed, so the next message on the connection starts at the right byte
//! and a malformed body cannot smuggle a second request past us. Chunk extensions are checked
//! against the grammar of §7.1.1 (a lenient server reading past a bad one would frame the body
//! differently), and [`ChunkedDecoder::feed_canonical`] writes the body out again with plain
//! size lines (`1a\r\n`, no extensions), the framing a request is forwarded with.
//!
//! [`ChunkedDecoder`] is a byte-level state machine over size lines, CRLFs and trailer fields;
//! chunk data itself is skipped by count, so a large chunk costs O(1) per `feed` call.
//!
//! ```text
//!   ┌─> Size ──(SP/HTAB)─> SizeBws ─(";")─┐
//!   │    │ ";" ─────────────────────────> extension: BWS name [BWS "=" BWS (token | "quoted")]
//!   │    │ CR <───────────────────────────┘ CR      (";" starts the next one)
//!   │   SizeLf ── size>0 ─> Data ─> DataCr ─> DataLf ─┐
//!   │     │ size=0                                    │
//!   └─────┼───────────────────────────────────────────┘
//!         v
//!   TrailerStart ─ tchar ─> TrailerName ─":"─> TrailerValue ─CR─> TrailerLf ─┐
//!         │  ^────────────────────────────────────────────────────────────────┘
//!         │ CR
//!       EndLf ─LF─> Done
//! ```

use super::ParseError;

/// Longest chunk-size line (size, extensions, CRLF). Extensions carry nothing we use; the
/// bound keeps a client from streaming an endless line at us.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section (all trailer field lines and the final CRLF).
pub const MAX_TRAILER_BYTES: usize = 32 * 1024;
/// A u64 has 16 hex digits; a longer size (even with leading zeros) is refused.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    SizeBws,
    /// After ";": optional BWS, then the extension name.
    ExtPreName,
    ExtName,
    /// BWS after the name: "=" or ";" must follow.
    ExtPostName,
    /// After "=": optional BWS, then a token or a quoted string.
    ExtPreValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// Just after a closing quote.
    ExtQuoteEnd,
    /// BWS after a value: ";" must follow.
    ExtPostValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Incremental validator for one chunked body. Feed it the bytes that follow the head, in
/// whatever pieces they arrive.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being read in `Size`, bytes of data left in `Data`.
    size: u64,
    digits: u8,
    line_len: usize,
    trailer_len: usize,
    data_bytes: u64,
    /// Most data bytes accepted (`max_body`): a size line going past it is refused.
    limit: Option<u64>,
    failed: Option<ParseError>,
    /// `feed_data`: append the data alone, no framing.
    data_only: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(why: &'static str) -> ParseError {
    ParseError::BadRequest(why)
}

#[inline]
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters other than HTAB may not appear in trailer values.
#[inline]
fn is_bad_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// qdtext (RFC 9110 §5.6.4): HTAB, SP, and visible characters other than `"` and `\`.
#[inline]
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

/// What a quoted-pair may escape: HTAB, SP, VCHAR, obs-text.
#[inline]
fn is_escapable(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn push_hex(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[((n >> (i * 4)) & 0xf) as usize]);
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
            data_bytes: 0,
            limit: None,
            failed: None,
            data_only: false,
        }
    }

    /// A decoder that refuses ([`ParseError::BodyTooLarge`]) a chunk whose size line takes the
    /// data past `limit` bytes, before any of that chunk is relayed.
    pub fn with_limit(limit: Option<u64>) -> Self {
        ChunkedDecoder {
            limit,
            ..Self::new()
        }
    }

    /// Sum of the declared sizes of the chunks begun so far. A chunk counts as soon as its
    /// size line is complete, so a caller enforcing `max_body` can refuse before relaying it.
    #[cfg(test)]
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Consume the part of `input` that belongs to this body. Returns how many bytes that is
    /// and whether the body is complete; when it is, the rest of `input` is the next message.
    /// After an error every later call returns the same error.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), ParseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.fed(input, None)
    }

    /// [`feed`](Self::feed), and append to `out` the consumed part re-framed canonically: each
    /// size line as lower-case hex without extensions, data and trailers as received.
    pub fn feed_canonical(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), ParseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.fed(input, Some(out))
    }

    /// [`feed`](Self::feed), and append to `out` the chunk data of the consumed part: the body
    /// decoded (the cache stores it so).
    pub fn feed_data(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), ParseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.data_only = true;
        self.fed(input, Some(out))
    }

    fn fed(
        &mut self,
        input: &[u8],
        out: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), ParseError> {
        match self.run(input, out) {
            Ok(n) => Ok((n, self.state == State::Done)),
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    fn run(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<usize, ParseError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let left = input.len() - i;
                // Fits in usize because it is at most `left`.
                let take = self.size.min(left as u64) as usize;
                if let Some(o) = out.as_deref_mut() {
                    o.extend_from_slice(&input[i..i + take]);
                }
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            if self.state == State::Done {
                break;
            }
            let Some(&b) = input.get(i) else { break };
            i += 1;
            let before = self.state;
            self.step(b)?;
            if let Some(o) = out.as_deref_mut().filter(|_| !self.data_only) {
                self.emit(before, b, o);
            }
        }
        Ok(i)
    }

    /// The canonical bytes for one framing byte `b` that moved the state on from `before`.
    fn emit(&self, before: State, b: u8, out: &mut Vec<u8>) {
        match (before, self.state) {
            // A size line ended: write the size alone.
            (State::SizeLf, State::Data) => {
                push_hex(out, self.size);
                out.extend_from_slice(b"\r\n");
            }
            (State::SizeLf, State::TrailerStart) => out.extend_from_slice(b"0\r\n"),
            (State::DataLf, State::Size) => out.extend_from_slice(b"\r\n"),
            // Trailer fields and the final CRLF pass as received (they were validated).
            (
                State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf,
                _,
            ) => out.push(b),
            _ => {}
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ParseError> {
        match self.state {
            State::Size
            | State::SizeBws
            | State::ExtPreName
            | State::ExtName
            | State::ExtPostName
            | State::ExtPreValue
            | State::ExtToken
            | State::ExtQuoted
            | State::ExtQuotedPair
            | State::ExtQuoteEnd
            | State::ExtPostValue => {
                self.line_len += 1;
                // The CRLF is part of the line; the LF is counted in SizeLf.
                if self.line_len >= MAX_CHUNK_LINE {
                    return Err(bad("chunk size line too long"));
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER_BYTES {
                    return Err(ParseError::HeadersTooLarge);
                }
            }
            _ => {}
        }
        let ws = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            (State::Size, b) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(bad("chunk size too large"));
                }
                let d = match b {
                    b'0'..=b'9' => b - b'0',
                    _ => (b | 0x20) - b'a' + 10,
                };
                // Cannot overflow: at most 16 hex digits.
                self.size = (self.size << 4) | u64::from(d);
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(bad("invalid chunk size")),
            (State::Size | State::ExtName | State::ExtToken | State::ExtQuoteEnd, b'\r') => {
                State::SizeLf
            }
            // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ); BWS only
            // where the grammar puts it, never at the end of the line.
            (State::Size | State::SizeBws, _) if ws => State::SizeBws,
            (
                State::Size
                | State::SizeBws
                | State::ExtName
                | State::ExtPostName
                | State::ExtToken
                | State::ExtQuoteEnd
                | State::ExtPostValue,
                b';',
            ) => State::ExtPreName,
            (State::ExtPreName, _) if ws => State::ExtPreName,
            (State::ExtPreName | State::ExtName, b) if is_tchar(b) => State::ExtName,
            (State::ExtName | State::ExtPostName, _) if ws => State::ExtPostName,
            (State::ExtName | State::ExtPostName, b'=') => State::ExtPreValue,
            (State::ExtPreValue, _) if ws => State::ExtPreValue,
            (State::ExtPreValue | State::ExtToken, b) if is_tchar(b) => State::ExtToken,
            (State::ExtPreValue, b'"') => State::ExtQuoted,
            (State::ExtQuoted, b'"') => State::ExtQuoteEnd,
            (State::ExtQuoted, b'\\') => State::ExtQuotedPair,
            (State::ExtQuoted, b) if is_qdtext(b) => State::ExtQuoted,
            (State::ExtQuoted | State::ExtQuotedPair, _) if b == b'\r' || b == b'\n' => {
                return Err(bad("unclosed quoted string in chunk extension"))
            }
            (State::ExtQuotedPair, b) if is_escapable(b) => State::ExtQuoted,
            (State::ExtToken | State::ExtQuoteEnd | State::ExtPostValue, _) if ws => {
                State::ExtPostValue
            }
            (State::SizeBws, _) => return Err(bad("whitespace in chunk size line")),
            (_, b'\n')
                if matches!(
                    self.state,
                    State::Size
                        | State::ExtPreName
                        | State::ExtName
                        | State::ExtPostName
                        | State::ExtPreValue
                        | State::ExtToken
                        | State::ExtQuoteEnd
                        | State::ExtPostValue
                ) =>
            {
                return Err(bad("bare LF in chunk size line"))
            }
            (State::Size, _) => return Err(bad("invalid chunk size")),
            (
                State::ExtPreName
                | State::ExtName
                | State::ExtPostName
                | State::ExtPreValue
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtQuoteEnd
                | State::ExtPostValue,
                _,
            ) => return Err(bad("malformed chunk extension")),
            (State::SizeLf, b'\n') => {
                let size = self.size;
                self.digits = 0;
                self.line_len = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    self.data_bytes = self.data_bytes.saturating_add(size);
                    if self.limit.is_some_and(|max| self.data_bytes > max) {
                        return Err(ParseError::BodyTooLarge);
                    }
                    State::Data
                }
            }
            (State::SizeLf, _) => return Err(bad("CR not followed by LF in chunk size line")),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return Err(bad("chunk data not followed by CRLF")),
            (State::DataLf, b'\n') => {
                self.size = 0;
                State::Size
            }
            (State::DataLf, _) => return Err(bad("chunk data not followed by CRLF")),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, b' ' | b'\t') => return Err(bad("obs-fold in trailer")),
            (State::TrailerStart, b) if is_tchar(b) => State::TrailerName,
            (State::TrailerStart, b'\n') => return Err(bad("bare LF in trailer")),
            (State::TrailerStart, _) => return Err(bad("invalid trailer field name")),
            (State::TrailerName, b) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerName, b' ' | b'\t') => {
                return Err(bad("whitespace before colon in trailer"))
            }
            (State::TrailerName, _) => return Err(bad("invalid trailer field name")),
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, b'\n') => return Err(bad("bare LF in trailer")),
            (State::TrailerValue, b) if is_bad_ctl(b) => {
                return Err(bad("control character in trailer value"))
            }
            (State::TrailerValue, _) => State::TrailerValue,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::TrailerLf, _) => return Err(bad("CR not followed by LF in trailer")),
            (State::EndLf, b'\n') => State::Done,
            (State::EndLf, _) => return Err(bad("CR not followed by LF after trailers")),
            // Handled in `run` before a byte is taken.
            (State::Data | State::Done, _) => self.state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes until done; returns (consumed, done, data bytes)
    /// or the error.
    fn run(input: &[u8], step: usize) -> Result<(usize, bool, u64), ParseError> {
        let mut d = ChunkedDecoder::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + step).min(input.len());
            let (n, done) = d.feed(&input[at..end])?;
            if done {
                assert!(n <= end - at);
                assert_eq!(d.feed(b"more"), Ok((0, true)));
                return Ok((at + n, true, d.data_bytes()));
            }
            // Until the body ends, every byte offered belongs to it.
            assert_eq!(n, end - at);
            at += n;
        }
        Ok((at, false, d.data_bytes()))
    }

    #[test]
    fn valid_bodies_end_exactly() {
        // (body, data bytes); every body is followed by "NEXT", which must not be consumed.
        let cases: &[(&[u8], u64)] = &[
            (b"0\r\n\r\n", 0),
            (b"5\r\nhello\r\n0\r\n\r\n", 5),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 11),
            (b"A\r\n0123456789\r\n0\r\n\r\n", 10),
            (
                b"a;name=value;q=\"x y\"\r\n0123456789\r\n0;last\r\n\r\n",
                10,
            ),
            (b"3 ;ext\r\nabc\r\n0\t;x\r\n\r\n", 3),
            (b"0000000000000003\r\nabc\r\n0\r\n\r\n", 3),
            (b"3\r\n\r\n\r\r\n0\r\n\r\n", 3),
            (
                b"2\r\nok\r\n0\r\nExpires: never\r\nX-Sum: caf\xc3\xa9\t1\r\nX-Empty:\r\n\r\n",
                2,
            ),
        ];
        for (body, data) in cases {
            let mut input = body.to_vec();
            input.extend_from_slice(b"NEXT");
            let name = String::from_utf8_lossy(body);
            for step in [input.len(), 1, 2, 3, 7] {
                assert_eq!(
                    run(&input, step),
                    Ok((body.len(), true, *data)),
                    "{name} step {step}"
                );
            }
        }
    }

    #[test]
    fn malformed_bodies_are_400() {
        let cases: &[&[u8]] = &[
            b"\r\n",
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\rhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a\x00\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\rX0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"10000000000000000\r\n",
            b"00000000000000001\r\n",
            b"0\r\n\n",
            b"0\r\n\rX",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\r\n \r\n\r\n",
            b"0\r\n X: y\r\n\r\n",
            b"0\r\nX : y\r\n\r\n",
            b"0\r\n: y\r\n\r\n",
            b"0\r\nX(y): z\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ];
        for body in cases {
            let name = String::from_utf8_lossy(body);
            for step in [body.len(), 1] {
                let r = run(body, step);
                assert!(
                    matches!(r, Err(ParseError::BadRequest(_))),
                    "{name} step {step}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn errors_stick() {
        let mut d = ChunkedDecoder::new();
        let e = d.feed(b"z");
        assert!(e.is_err());
        assert_eq!(d.feed(b"0\r\n\r\n"), e);
    }

    #[test]
    fn size_line_and_trailer_bounds() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE - 2, b'x');
        line.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert!(matches!(run(&line, 64), Ok((_, true, 1))));
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE - 1, b'x');
        long.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert!(matches!(run(&long, 64), Err(ParseError::BadRequest(_))));

        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(3 + MAX_TRAILER_BYTES - 4, b'v');
        trailer.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(run(&trailer, 100), Ok((_, true, 0))));
        let mut big = b"0\r\nX: ".to_vec();
        big.resize(3 + MAX_TRAILER_BYTES - 3, b'v');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&big, 100), Err(ParseError::HeadersTooLarge));
    }

    #[test]
    fn large_chunks_pass_in_one_slice() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"ffffffffffffffff\r\n"), Ok((18, false)));
        assert_eq!(d.data_bytes(), u64::MAX);
        let data = vec![0u8; 1 << 20];
        for _ in 0..64 {
            assert_eq!(d.feed(&data), Ok((data.len(), false)));
        }
        let mut d = ChunkedDecoder::new();
        let mut body = b"100000\r\n".to_vec();
        body.resize(body.len() + 0x10_0000, b'\n');
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(d.feed(&body), Ok((body.len(), true)));
        assert_eq!(d.data_bytes(), 0x10_0000);
    }

    /// Random bytes and random splits: never a panic, and the same verdict however the input
    /// is split.
    #[test]
    fn random_input_same_verdict_any_split() {
        let seeds: &[&[u8]] = &[
            b"5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n",
            b"1\r\nx\r\n0\r\n\r\n",
        ];
        let alphabet = b"0123456789abcdefABCDEF\r\n ;:\t=xz";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let mut m = seeds[(rnd() % 2) as usize].to_vec();
            for _ in 0..1 + rnd() % 3 {
                let at = (rnd() as usize) % (m.len() + 1);
                let b = alphabet[(rnd() as usize) % alphabet.len()];
                match rnd() % 3 {
                    0 if at < m.len() => m[at] = b,
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    _ => m.insert(at, b),
                }
            }
            let whole = run(&m, m.len().max(1));
            let step = 1 + (rnd() as usize) % 5;
            assert_eq!(run(&m, step), whole, "{:?}", String::from_utf8_lossy(&m));
        }
    }
}
