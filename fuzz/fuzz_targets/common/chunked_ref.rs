//! An independent reference for chunked bodies (RFC 9112 §7.1): recursive descent over the
//! whole slice, written without looking at the decoder's state machine. It shares only the
//! limits (`MAX_CHUNK_LINE`, `MAX_TRAILER_BYTES`, 16 hex digits).

use shardgate::proto::http::body::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
use shardgate::proto::http::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Body complete after this many bytes.
    Done(usize),
    /// Every byte so far belongs to a body that has not ended.
    More,
    Err(ParseError),
}

/// Class of an error for comparing with the reference: the reference does not name the rule.
pub fn class(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Err(e) => Some(e.status()),
        _ => None,
    }
}

/// The reference: recursive descent over the whole slice; `None` = ran out of input.
struct Ref<'a> {
    b: &'a [u8],
    i: usize,
    limit: Option<u64>,
    total: u64,
    payload: Vec<u8>,
    sizes: Vec<u64>,
    trailers: std::ops::Range<usize>,
}

type R<T> = Result<T, Verdict>;

fn bad() -> Verdict {
    Verdict::Err(ParseError::BadRequest("reference"))
}

impl Ref<'_> {
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Verdict::More)
    }

    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    fn bad_ctl(b: u8) -> bool {
        (b < 0x20 && b != b'\t') || b == 0x7f
    }

    fn is_qdtext(b: u8) -> bool {
        matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
    }

    fn is_escapable(b: u8) -> bool {
        matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
    }

    /// The next byte of the size line starting at `start`, not consumed; the line, CR included,
    /// must stay under MAX_CHUNK_LINE bytes.
    fn line_byte(&self, start: usize) -> R<u8> {
        let b = self.peek()?;
        if self.i - start + 1 >= MAX_CHUNK_LINE {
            return Err(bad());
        }
        Ok(b)
    }

    fn skip_bws(&mut self, start: usize) -> R<bool> {
        let mut any = false;
        while matches!(self.line_byte(start)?, b' ' | b'\t') {
            self.i += 1;
            any = true;
        }
        Ok(any)
    }

    /// RFC 9112 §7.1.1:
    ///   chunk-size [ chunk-ext ] CRLF
    ///   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    ///   chunk-ext-val = token / quoted-string
    /// at most 16 hex digits; nothing (not even BWS) between the last element and CRLF.
    fn size_line(&mut self) -> R<u64> {
        let start = self.i;
        let mut size: u64 = 0;
        let mut digits = 0;
        loop {
            let b = self.line_byte(start)?;
            if !b.is_ascii_hexdigit() {
                break;
            }
            digits += 1;
            if digits > 16 {
                return Err(bad());
            }
            size = size * 16 + u64::from((b as char).to_digit(16).unwrap());
            self.i += 1;
        }
        if digits == 0 {
            return Err(bad());
        }
        loop {
            // Before ";" (or CR, only when no BWS came first).
            let bws = self.skip_bws(start)?;
            match self.line_byte(start)? {
                b'\r' if !bws => break,
                b';' => self.i += 1,
                _ => return Err(bad()),
            }
            self.skip_bws(start)?;
            // chunk-ext-name = token
            if !Self::is_tchar(self.line_byte(start)?) {
                return Err(bad());
            }
            while Self::is_tchar(self.line_byte(start)?) {
                self.i += 1;
            }
            // [ BWS "=" BWS chunk-ext-val ]: after BWS an "=" or the next ";" must come.
            let save = self.i;
            self.skip_bws(start)?;
            if self.line_byte(start)? != b'=' {
                self.i = save;
                continue;
            }
            self.i += 1;
            self.skip_bws(start)?;
            match self.line_byte(start)? {
                b'"' => {
                    self.i += 1;
                    loop {
                        match self.line_byte(start)? {
                            b'"' => {
                                self.i += 1;
                                break;
                            }
                            b'\\' => {
                                self.i += 1;
                                if !Self::is_escapable(self.line_byte(start)?) {
                                    return Err(bad());
                                }
                                self.i += 1;
                            }
                            b if Self::is_qdtext(b) => self.i += 1,
                            _ => return Err(bad()),
                        }
                    }
                }
                b if Self::is_tchar(b) => {
                    while Self::is_tchar(self.line_byte(start)?) {
                        self.i += 1;
                    }
                }
                _ => return Err(bad()),
            }
        }
        self.i += 1; // CR
        if self.peek()? != b'\n' {
            return Err(bad());
        }
        self.i += 1;
        Ok(size)
    }

    /// Trailer fields and the final CRLF, at most MAX_TRAILER_BYTES bytes in all.
    fn trailers(&mut self) -> R<()> {
        let start = self.i;
        let take = |r: &mut Self| -> R<u8> {
            let b = r.peek()?;
            if r.i - start + 1 > MAX_TRAILER_BYTES {
                return Err(Verdict::Err(ParseError::HeadersTooLarge));
            }
            r.i += 1;
            Ok(b)
        };
        loop {
            match take(self)? {
                b'\r' => {
                    return match take(self)? {
                        b'\n' => Ok(()),
                        _ => Err(bad()),
                    }
                }
                b if Self::is_tchar(b) => {}
                _ => return Err(bad()),
            }
            loop {
                match take(self)? {
                    b':' => break,
                    b if Self::is_tchar(b) => {}
                    _ => return Err(bad()),
                }
            }
            loop {
                match take(self)? {
                    b'\r' => break,
                    b if Self::bad_ctl(b) => return Err(bad()),
                    _ => {}
                }
            }
            if take(self)? != b'\n' {
                return Err(bad());
            }
        }
    }

    fn body(&mut self) -> R<usize> {
        loop {
            let size = self.size_line()?;
            if size == 0 {
                let t = self.i;
                self.trailers()?;
                self.trailers = t..self.i;
                return Ok(self.i);
            }
            self.sizes.push(size);
            // `with_limit`: a size line taking the declared data past the limit is refused.
            self.total = self.total.saturating_add(size);
            if self.limit.is_some_and(|max| self.total > max) {
                return Err(Verdict::Err(ParseError::BodyTooLarge));
            }
            let left = (self.b.len() - self.i) as u64;
            if size > left {
                self.payload.extend_from_slice(&self.b[self.i..]);
                return Err(Verdict::More);
            }
            self.payload
                .extend_from_slice(&self.b[self.i..self.i + size as usize]);
            self.i += size as usize;
            if self.peek()? != b'\r' {
                return Err(bad());
            }
            self.i += 1;
            if self.peek()? != b'\n' {
                return Err(bad());
            }
            self.i += 1;
        }
    }
}

/// What the reference made of a buffer.
pub struct Parsed {
    pub verdict: Verdict,
    /// The chunk data, concatenated (as far as the input went).
    pub payload: Vec<u8>,
    /// The declared size of each non-last chunk whose size line was complete.
    pub sizes: Vec<u64>,
    /// The trailer section including the final CRLF, for a complete body.
    pub trailers: Vec<u8>,
}

/// Parse `b` as a chunked body; `limit` as `ChunkedDecoder::with_limit`.
pub fn reference(b: &[u8], limit: Option<u64>) -> Parsed {
    let mut r = Ref {
        b,
        i: 0,
        limit,
        total: 0,
        payload: Vec::new(),
        sizes: Vec::new(),
        trailers: 0..0,
    };
    let verdict = match r.body() {
        Ok(n) => Verdict::Done(n),
        Err(v) => v,
    };
    Parsed {
        verdict,
        trailers: b[r.trailers.clone()].to_vec(),
        payload: r.payload,
        sizes: r.sizes,
    }
}
