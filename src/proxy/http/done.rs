//! The end of an exchange, in one place: what happened to the request ([`Done`]), counted
//! once into the site's traffic, the frontend's and the server's metrics (and whatever else
//! reads a finished request, such as the access log). Every exchange that [`Conn::run`] starts
//! ends here exactly once, so the histograms' counts equal the `requests` counter.
//!
//! [`Conn::run`]: super::conn

use std::time::{Duration, Instant};

use super::conn::Conn;

/// Why an exchange that got a response ended as it did, besides a [`Failure`] name.
///
/// [`Failure`]: super::error::Failure
pub mod reason {
    /// The response went to the client whole.
    pub const OK: &str = "ok";
    /// `101 Switching Protocols`: the connection became a tunnel.
    pub const UPGRADED: &str = "upgraded";
    /// The response head went out but its body did not end (a side went away or stalled).
    pub const INCOMPLETE: &str = "response_incomplete";
}

/// One finished exchange.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// When the request head was complete.
    pub started: Instant,
    /// From `started` to the server's response head, if one came.
    pub first_byte: Option<Duration>,
    /// The status the client got (ours or the server's); 0 when nothing was answered.
    pub status: u16,
    /// Request bytes sent to the server (for an exchange that never got one: the head read).
    pub bytes_in: u64,
    /// Response bytes written to the client.
    pub bytes_out: u64,
    /// The pool (index in the exchange's view), once routed.
    pub pool: Option<usize>,
    /// The server of the last attempt.
    pub server: Option<usize>,
    pub retries: u8,
    /// The server the request's sticky route or table entry named.
    pub sticky: Option<usize>,
    /// `ok`, `upgraded`, `response_incomplete` or a failure's name.
    pub reason: &'static str,
}

impl Done {
    /// An exchange that ended on `started` with a status of ours (or none), before or without
    /// a server's answer.
    pub fn failed(
        started: Instant,
        f: super::error::Failure,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Done {
        Done {
            started,
            first_byte: None,
            status: f.status().unwrap_or(0),
            bytes_in,
            bytes_out,
            pool: None,
            server: None,
            retries: 0,
            sticky: None,
            reason: f.name(),
        }
    }
}

impl Done {
    /// An answer the proxy made itself (a static file, the cache, PURGE): no server asked.
    pub fn ours(started: Instant, status: u16, bytes_in: u64, bytes_out: u64, whole: bool) -> Done {
        Done {
            started,
            first_byte: Some(started.elapsed()),
            status,
            bytes_in,
            bytes_out,
            pool: None,
            server: None,
            retries: 0,
            sticky: None,
            reason: if whole {
                reason::OK
            } else {
                reason::INCOMPLETE
            },
        }
    }
}

impl Conn<'_> {
    /// Count an answer of ours and say what the connection does next: another request if the
    /// answer went out whole and the connection is kept, a lingering close if it went out
    /// whole, an abrupt one if not (only closing tells the client it is truncated).
    pub fn finish_ours(&mut self, d: &Done, keep: bool) -> super::conn::Outcome {
        use super::conn::Outcome;
        self.finish(d);
        match (d.reason == reason::OK, keep) {
            (true, true) => Outcome::KeepAlive,
            (true, false) => Outcome::Close { linger: true },
            (false, _) => Outcome::Close { linger: false },
        }
    }

    /// Count one finished exchange: its site's traffic, the frontend's metrics, the server's.
    pub fn finish(&mut self, d: &Done) {
        let total_us = d.started.elapsed().as_micros() as u64;
        let first_us = d.first_byte.map(|t| t.as_micros() as u64);
        self.record_site(d.bytes_in, d.bytes_out, total_us);
        if let (Some(c), Some(a)) = (self.logged.take(), &self.fe.conf.access_log) {
            let (ctx, fe) = (&self.http.ctx, &self.fe.conf.name);
            crate::log::exchange(ctx, a, fe, self.peer, &self.site, &self.view, &c, d);
        }
        self.fe
            .metrics
            .record(d.status, d.bytes_in, d.bytes_out, total_us, first_us);
        if let (Some(pool), Some(server)) = (d.pool, d.server) {
            if let Some(s) = self
                .view
                .conns
                .get(pool)
                .and_then(|c| c.shared.servers.get(server))
            {
                s.metrics(self.http.ctx.id()).record(
                    d.status,
                    d.bytes_in,
                    d.bytes_out,
                    total_us,
                    first_us,
                );
            }
        }
    }
}
