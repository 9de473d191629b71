//! Bodies: following a message body's framing while moving it from one side to the other, by
//! copying through a buffer or, for long bodies of known length between plain sockets, by
//! splicing through a pipe. A relay never reads past the body into anything it then forgets:
//! bytes that follow the body go to the caller's `overflow` (the client's next pipelined
//! request; for a response, proof that the server sent more than it framed).

use std::time::Duration;

use monoio::buf::IoBuf;

use crate::proto::http::body::ChunkedDecoder;
use crate::proto::http::{Framing, ParseError};
use crate::rt::{self, Pace, PipePool, Read, Socket, Stream};

/// What remains of a body being relayed.
#[derive(Debug)]
pub enum BodyLeft {
    Length(u64),
    Chunked {
        decoder: ChunkedDecoder,
        /// Forward with plain size lines (requests, unless extensions are kept).
        canonical: bool,
    },
    /// Responses only: until the server closes.
    UntilClose,
}

impl BodyLeft {
    /// A request body: `max_body` bounds a chunked one as it streams (a declared length was
    /// checked against it by the parser).
    pub fn request(f: Framing, max_body: Option<u64>, keep_extensions: bool) -> Option<BodyLeft> {
        match f {
            Framing::Chunked => Some(BodyLeft::Chunked {
                decoder: ChunkedDecoder::with_limit(max_body),
                canonical: !keep_extensions,
            }),
            other => Self::response(other),
        }
    }

    /// A response body, forwarded as received.
    pub fn response(f: Framing) -> Option<BodyLeft> {
        match f {
            Framing::None | Framing::Length(0) => None,
            Framing::Length(n) => Some(BodyLeft::Length(n)),
            Framing::Chunked => Some(BodyLeft::Chunked {
                decoder: ChunkedDecoder::new(),
                canonical: false,
            }),
            Framing::UntilClose => Some(BodyLeft::UntilClose),
        }
    }

    /// Does this body go out in another form than it came in?
    pub fn reframes(&self) -> bool {
        matches!(
            self,
            BodyLeft::Chunked {
                canonical: true,
                ..
            }
        )
    }

    /// Take the part of `data` that belongs to this body. Returns how many bytes that is and
    /// whether the body ended there. When [`reframes`](Self::reframes), the forwarded form is
    /// appended to `out`; otherwise the forwarded bytes are `data[..taken]` and `out` is
    /// untouched.
    pub fn take(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ParseError> {
        match self {
            BodyLeft::Length(n) => {
                let k = (*n).min(data.len() as u64);
                *n -= k;
                Ok((k as usize, *n == 0))
            }
            BodyLeft::Chunked {
                decoder,
                canonical: true,
            } => decoder.feed_canonical(data, out),
            BodyLeft::Chunked { decoder, .. } => decoder.feed(data),
            BodyLeft::UntilClose => Ok((data.len(), false)),
        }
    }

    /// [`take`](Self::take), appending the forwarded form to `out` in every case.
    pub fn take_into(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), ParseError> {
        if self.reframes() {
            return self.take(data, out);
        }
        let r = self.take(data, out)?;
        out.extend_from_slice(&data[..r.0]);
        Ok(r)
    }
}

/// Where the bytes read past a body's end go.
pub enum Spill<'a> {
    /// Kept: the client's next pipelined request.
    Keep(&'a mut Vec<u8>),
    /// Only noted: a server sent more than its response framed.
    Note(&'a mut bool),
}

impl Spill<'_> {
    fn spill(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Spill::Keep(v) => v.extend_from_slice(bytes),
            Spill::Note(seen) => **seen = true,
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The body ended (a close-delimited one: the source closed).
    Done,
    /// The source closed or failed before the body ended.
    SourceClosed,
    /// The source sent nothing for its timeout.
    SourceTimeout,
    /// Writing to the destination failed or timed out.
    DestFailed,
    /// The body broke its framing or `max_body`.
    Framing(ParseError),
    /// The destination turned readable: the server sent something (an interim response, an
    /// early answer) or closed before the request body ended. `resumable`: nothing was in
    /// flight (no byte taken from the source and not delivered), so the relay may go on.
    Woken { resumable: bool },
}

/// Which way a relay moves a body; the client is the source of one and the destination of
/// the other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server: ends with [`RelayEnd::Woken`] when the server turns readable (it
    /// answered early), and may re-frame a chunked body.
    Request,
    /// Server → client, forwarded as received.
    Response,
}

/// The fixed parts of one relay direction.
pub struct Relay<'a> {
    pub pipes: &'a PipePool,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub dir: Dir,
    /// The client's minimum rate: it meters the waits on the client's side only.
    pub pace: &'a Pace,
}

impl Relay<'_> {
    /// The pace metering waits on the source and on the destination.
    fn paces(&self) -> (Option<&Pace>, Option<&Pace>) {
        match self.dir {
            Dir::Request => (Some(self.pace), None),
            Dir::Response => (None, Some(self.pace)),
        }
    }

    /// Move the rest of `body` from `src` to `dst`. `rbuf` is the read buffer (returned),
    /// `wbuf` scratch for re-framed output, `overflow` takes the bytes read past the body's end,
    /// `moved` counts the bytes written to `dst`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        src: &mut Socket,
        dst: &mut Socket,
        body: &mut BodyLeft,
        rbuf: Vec<u8>,
        wbuf: &mut Vec<u8>,
        overflow: Spill<'_>,
        moved: &mut u64,
    ) -> (RelayEnd, Vec<u8>) {
        if let BodyLeft::Length(n) = body {
            let plain = src.splice_fd().is_some() && dst.splice_fd().is_some();
            if *n >= rt::SPLICE_MIN && plain {
                let before = *moved;
                let res = rt::splice_exact(
                    self.pipes,
                    src.tcp(),
                    dst.tcp(),
                    *n,
                    self.read_timeout,
                    self.write_timeout,
                    self.dir == Dir::Request,
                    self.paces(),
                    moved,
                )
                .await;
                let end = match res {
                    Ok(()) => {
                        *n = 0;
                        RelayEnd::Done
                    }
                    Err(rt::SpliceError::Source(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        RelayEnd::SourceTimeout
                    }
                    Err(rt::SpliceError::Source(_)) => RelayEnd::SourceClosed,
                    Err(rt::SpliceError::Dest) => RelayEnd::DestFailed,
                    Err(rt::SpliceError::Woken) => {
                        // The pipe was empty: what left the source reached the destination.
                        *n -= *moved - before;
                        RelayEnd::Woken { resumable: true }
                    }
                    Err(rt::SpliceError::WokenMidway) => RelayEnd::Woken { resumable: false },
                    // Out of descriptors for a pipe: copy instead (nothing was moved).
                    Err(rt::SpliceError::NoPipe(e)) => {
                        tracing::debug!(error = %e, "no pipe for a splice; copying instead");
                        return self.copy(src, dst, body, rbuf, wbuf, overflow, moved).await;
                    }
                };
                return (end, rbuf);
            }
        }
        self.copy(src, dst, body, rbuf, wbuf, overflow, moved).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        src: &mut Socket,
        dst: &mut Socket,
        body: &mut BodyLeft,
        mut rbuf: Vec<u8>,
        wbuf: &mut Vec<u8>,
        mut overflow: Spill<'_>,
        moved: &mut u64,
    ) -> (RelayEnd, Vec<u8>) {
        let (src_pace, dst_pace) = self.paces();
        loop {
            rbuf.clear();
            let m = Pace::meter(src_pace, self.read_timeout, *moved);
            let r = match self.dir {
                // Readiness and a non-blocking recv: a wake-up takes nothing from the client.
                Dir::Request => src.recv_watching(&mut rbuf, m.limit, dst).await,
                Dir::Response => {
                    let (r, b) = rt::read_into(src, rbuf, 0, m.limit).await;
                    rbuf = b;
                    r
                }
            };
            drop(m);
            match r {
                Read::Data => {}
                Read::Eof if matches!(body, BodyLeft::UntilClose) => return (RelayEnd::Done, rbuf),
                Read::TimedOut => return (RelayEnd::SourceTimeout, rbuf),
                Read::Woken => return (RelayEnd::Woken { resumable: true }, rbuf),
                Read::Eof | Read::Drained | Read::Err(_) => return (RelayEnd::SourceClosed, rbuf),
            }
            wbuf.clear();
            let (k, done) = match body.take(&rbuf, wbuf) {
                Ok(v) => v,
                Err(e) => return (RelayEnd::Framing(e), rbuf),
            };
            overflow.spill(&rbuf[k..]);
            let m = Pace::meter(dst_pace, self.write_timeout, *moved);
            let end = match self.dir {
                // A server may answer instead of reading: send without an owned-buffer write
                // that could not be abandoned, watching for its answer while blocked.
                Dir::Request => {
                    let data = if body.reframes() {
                        &wbuf[..]
                    } else {
                        &rbuf[..k]
                    };
                    match dst.send_watching(data, m.limit, moved).await {
                        Ok(()) => None,
                        Err(rt::SpliceError::Woken | rt::SpliceError::WokenMidway) => {
                            Some(RelayEnd::Woken { resumable: false })
                        }
                        Err(_) => Some(RelayEnd::DestFailed),
                    }
                }
                // Responses are forwarded as received (never re-framed).
                Dir::Response => {
                    debug_assert!(!body.reframes());
                    let (w, slice) = rt::write_all(dst, rbuf.slice(0..k), m.limit).await;
                    rbuf = slice.into_inner();
                    *moved += k as u64;
                    w.is_err().then_some(RelayEnd::DestFailed)
                }
            };
            drop(m);
            if let Some(end) = end {
                return (end, rbuf);
            }
            if done {
                return (RelayEnd::Done, rbuf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step`; returns (forwarded bytes, consumed, done).
    fn forward(
        body: &mut BodyLeft,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize, bool), ParseError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + step).min(input.len());
            let (k, done) = body.take_into(&input[at..end], &mut out)?;
            at += k;
            if done {
                return Ok((out, at, true));
            }
        }
        Ok((out, at, false))
    }

    #[test]
    fn request_chunks_are_forwarded_without_extensions() {
        let input =
            b"5;ext=val\r\nhello\r\n6 ; a=\"q;x\"\r\n world\r\n0;end\r\nT: v\r\n\r\nGET /next";
        for step in [1, 3, input.len()] {
            let mut b = BodyLeft::request(Framing::Chunked, None, false).unwrap();
            let (out, used, done) = forward(&mut b, input, step).unwrap();
            assert!(done);
            assert_eq!(&input[used..], b"GET /next");
            assert_eq!(
                String::from_utf8_lossy(&out),
                "5\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n",
                "step {step}"
            );
        }
    }

    #[test]
    fn kept_extensions_and_responses_pass_as_received() {
        let input = b"5;ext=val\r\nhello\r\n0\r\n\r\n";
        let mut req = BodyLeft::request(Framing::Chunked, None, true).unwrap();
        assert_eq!(forward(&mut req, input, 2).unwrap().0, input);
        let mut resp = BodyLeft::response(Framing::Chunked).unwrap();
        assert_eq!(forward(&mut resp, input, 4).unwrap().0, input);
    }

    #[test]
    fn a_chunk_past_max_body_is_refused_before_it_is_forwarded() {
        let mut b = BodyLeft::request(Framing::Chunked, Some(1024), false).unwrap();
        let mut out = Vec::new();
        assert_eq!(b.take_into(b"400\r\n", &mut out), Ok((5, false)));
        let big = vec![b'x'; 1024];
        assert_eq!(b.take_into(&big, &mut out), Ok((1024, false)));
        assert_eq!(
            b.take_into(b"\r\n1\r\n", &mut out),
            Err(ParseError::BodyTooLarge)
        );
        assert_eq!(
            out.len(),
            5 + 1024 + 2,
            "nothing of the refused chunk went out"
        );
    }

    #[test]
    fn length_bodies_stop_at_their_end() {
        let mut b = BodyLeft::request(Framing::Length(5), None, false).unwrap();
        let (out, used, done) = forward(&mut b, b"hel", 10).unwrap();
        assert_eq!((out.as_slice(), used, done), (&b"hel"[..], 3, false));
        let (out, used, done) = forward(&mut b, b"loGET", 10).unwrap();
        assert_eq!((out.as_slice(), used, done), (&b"lo"[..], 2, true));
        assert!(BodyLeft::request(Framing::Length(0), None, false).is_none());
        assert!(BodyLeft::request(Framing::None, None, false).is_none());
    }
}
