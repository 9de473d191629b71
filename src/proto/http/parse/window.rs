//! How a parse stops: [`Stop`] (read more, or an error), the [`Window`] of the buffer a parser
//! may look at (running off its end means `Partial`, or the limit that cut it), and the
//! `u32` [`Span`]s every field is recorded as.

use crate::proto::http::{ParseError, Span};

/// Spans are `u32`: no head may be longer than this, whatever the limits say.
const MAX_SPAN: usize = u32::MAX as usize;

/// Why parsing stopped before a head was complete.
pub(super) enum Stop {
    Partial,
    Err(ParseError),
}

impl From<ParseError> for Stop {
    fn from(e: ParseError) -> Self {
        Stop::Err(e)
    }
}

pub(super) fn bad(why: &'static str) -> Stop {
    Stop::Err(ParseError::BadRequest(why))
}

/// The part of the buffer a parser may look at, and what running off its end means: read more
/// (`Partial`) when the window is the whole buffer, else the limit that cut it.
#[derive(Clone, Copy)]
pub(super) struct Window<'a> {
    pub(super) w: &'a [u8],
    cut: bool,
    limit: ParseError,
}

impl<'a> Window<'a> {
    pub(super) fn new(buf: &'a [u8], cap: usize, limit: ParseError) -> Self {
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
    pub(super) fn at(&self, i: usize) -> Result<u8, Stop> {
        match self.w.get(i) {
            Some(&b) => Ok(b),
            None => Err(self.ran_out()),
        }
    }
}

#[inline]
pub(super) fn span(start: usize, end: usize) -> Span {
    // Both lie inside a window of at most MAX_SPAN bytes.
    Span {
        start: start as u32,
        end: end as u32,
    }
}
