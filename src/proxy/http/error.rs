//! The one error type of the HTTP data path: which side failed, whether the request may be
//! tried again, and what the client is told. Status numbers for failures live only here.

use crate::proto::http::ParseError;

/// Who broke the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client: a bad request, a timeout, or it went away.
    Client,
    /// The server: refused, timed out, closed early, or answered garbage.
    Upstream,
    /// Us: no route, no server left, no slot free.
    Local,
}

/// Why an exchange could not complete normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request (head or body) broke a framing rule or a limit.
    BadRequest(ParseError),
    /// An absolute-form target names a host this frontend does not serve.
    ForeignHost,
    /// No route matched and the frontend has no default pool.
    NoRoute,
    /// The client stopped sending within its timeout.
    ClientTimeout,
    /// The client closed or reset the connection mid-request, or stopped reading.
    ClientGone,
    /// Every server of the pool is down, disabled, or stayed busy for the whole wait.
    NoServer,
    /// No socket could be made for the server: out of descriptors or memory here.
    NoResources,
    /// Near the memory ceiling: new requests are refused until it eases.
    Overloaded,
    /// Writing the request failed: the connection was dead before the server could read it.
    UpstreamWrite,
    /// The server closed before a complete response head; `any_byte` if it had sent some.
    UpstreamClosed { any_byte: bool },
    /// No response head within `response_timeout`.
    UpstreamTimeout,
    /// The response head or body broke a framing rule, or 101 came without an upgrade.
    BadResponse,
}

impl Failure {
    pub fn side(self) -> Side {
        match self {
            Failure::BadRequest(_)
            | Failure::ForeignHost
            | Failure::ClientTimeout
            | Failure::ClientGone => Side::Client,
            Failure::NoRoute | Failure::NoServer | Failure::NoResources | Failure::Overloaded => {
                Side::Local
            }
            Failure::UpstreamWrite
            | Failure::UpstreamClosed { .. }
            | Failure::UpstreamTimeout
            | Failure::BadResponse => Side::Upstream,
        }
    }

    /// The status the client is answered with (then the connection closes); `None` when there
    /// is nobody left to answer.
    pub fn status(self) -> Option<u16> {
        Some(match self {
            Failure::BadRequest(e) => e.status(),
            Failure::ForeignHost => 400,
            Failure::NoRoute => 404,
            Failure::ClientTimeout => 408,
            Failure::ClientGone => return None,
            Failure::NoServer | Failure::NoResources | Failure::Overloaded => 503,
            Failure::UpstreamWrite | Failure::UpstreamClosed { .. } | Failure::BadResponse => 502,
            Failure::UpstreamTimeout => 504,
        })
    }

    /// A stable name for logs and metrics (the access log's termination reason).
    pub fn name(self) -> &'static str {
        match self {
            Failure::BadRequest(_) => "bad_request",
            Failure::ForeignHost => "foreign_host",
            Failure::NoRoute => "no_route",
            Failure::ClientTimeout => "client_timeout",
            Failure::ClientGone => "client_gone",
            Failure::NoServer => "no_server",
            Failure::NoResources => "no_resources",
            Failure::Overloaded => "overloaded",
            Failure::UpstreamWrite => "upstream_write",
            Failure::UpstreamClosed { .. } => "upstream_closed",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::BadResponse => "bad_response",
        }
    }

    /// May the same request be sent again on a fresh connection, given that the failed
    /// connection was reused from the idle set and the whole request is still in hand?
    /// RFC 9110 §9.2.2: a request that may have reached the server is replayed only when its
    /// method is idempotent; one whose write failed never reached a live server at all.
    pub fn replayable(self, idempotent: bool) -> bool {
        match self {
            Failure::UpstreamWrite => true,
            Failure::UpstreamClosed { any_byte: false } => idempotent,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_says_its_side_and_status() {
        let table = [
            (
                Failure::BadRequest(ParseError::BodyTooLarge),
                Side::Client,
                Some(413),
            ),
            (
                Failure::BadRequest(ParseError::UriTooLong),
                Side::Client,
                Some(414),
            ),
            (Failure::ForeignHost, Side::Client, Some(400)),
            (Failure::NoRoute, Side::Local, Some(404)),
            (Failure::ClientTimeout, Side::Client, Some(408)),
            (Failure::ClientGone, Side::Client, None),
            (Failure::NoServer, Side::Local, Some(503)),
            (Failure::NoResources, Side::Local, Some(503)),
            (Failure::UpstreamWrite, Side::Upstream, Some(502)),
            (
                Failure::UpstreamClosed { any_byte: true },
                Side::Upstream,
                Some(502),
            ),
            (Failure::UpstreamTimeout, Side::Upstream, Some(504)),
            (Failure::BadResponse, Side::Upstream, Some(502)),
        ];
        for (f, side, status) in table {
            assert_eq!((f.side(), f.status()), (side, status), "{f:?}");
        }
    }

    #[test]
    fn only_unsent_or_idempotent_requests_are_replayed() {
        assert!(Failure::UpstreamWrite.replayable(false));
        assert!(Failure::UpstreamClosed { any_byte: false }.replayable(true));
        assert!(!Failure::UpstreamClosed { any_byte: false }.replayable(false));
        assert!(!Failure::UpstreamClosed { any_byte: true }.replayable(true));
        assert!(!Failure::UpstreamTimeout.replayable(true));
        assert!(!Failure::BadResponse.replayable(true));
    }
}
