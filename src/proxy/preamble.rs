//! What happens on a new connection before its protocol starts: the PROXY header of an
//! `accept_proxy` frontend (from `trusted_proxies` only), then the TLS handshake of a `tls`
//! frontend. Both are bounded by the handshake timeout; what they read past their end is
//! handed on (bytes after a PROXY header go to TLS or to the protocol, never lost).
//!
//! ```text
//!   accepted ──accept_proxy?──► peer trusted? ─no─► close (proxy_untrusted)
//!      │                          │ read until a whole header ─ bad/none/slow ─► close (proxy_bad)
//!      ▼                          ▼ client addresses := the header's
//!   tls? ──► first byte 0x16? ─no, looks like HTTP─► plain 400 "sent to HTTPS port", close
//!      │          │ handshake ─ fails/slow ─► alert, close (tls.failed.REASON)
//!      ▼          ▼
//!   the protocol, over plain TCP or TLS
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::AcceptProxy;
use crate::proto::proxy_protocol::{self, Parsed};
use crate::proxy::ClientAddrs;
use crate::rt::{self, Read, Socket, TcpStream, TlsStream};
use crate::stats::ShardStats;
use crate::tls::ServerTls;

/// What a frontend asks of a new connection.
pub struct Edge<'a> {
    pub accept_proxy: Option<&'a AcceptProxy>,
    pub tls: Option<&'a ServerTls>,
    /// The PROXY header's bound when there is no TLS (the frontend's first-read timeout).
    pub timeout: Duration,
    /// Said to a plain HTTP request on a TLS port (HTTP frontends); closed silently if None.
    pub plain_answer: Option<&'static [u8]>,
}

/// A connection ready for its protocol.
pub struct Ready {
    pub socket: Socket,
    pub addrs: ClientAddrs,
    /// Bytes of the protocol already read (plain TCP only; TLS keeps them in its session).
    pub buf: Vec<u8>,
}

/// nginx's answer to the same mistake, so operators recognise it.
pub const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 50\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to the HTTPS port\n";

/// Run the edge's steps on `stream` (accepted from `peer` on `local`). `None`: the connection
/// was refused and is closed (counted in `st`).
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    edge: &Edge<'_>,
    mut buf: Vec<u8>,
    st: &ShardStats,
) -> Option<Ready> {
    let timeout = edge
        .tls
        .map(|t| t.handshake_timeout)
        .unwrap_or(edge.timeout);
    let deadline = Instant::now() + timeout;
    let mut stream = Socket::Tcp(stream);
    let mut addrs = (peer, local);
    if let Some(ap) = edge.accept_proxy {
        if !ap.trusts(peer.ip()) {
            st.proxy_untrusted.add(1);
            return None;
        }
        match read_proxy_header(&mut stream, &mut buf, deadline).await {
            Ok(found) => {
                st.proxy_accepted.add(1);
                if let Some(a) = found {
                    addrs = a;
                }
            }
            Err(why) => {
                st.proxy_bad.add(1);
                tracing::debug!(%peer, why, "PROXY header refused");
                return None;
            }
        }
    }
    let Some(tls) = edge.tls else {
        return Some(Ready {
            socket: stream,
            addrs,
            buf,
        });
    };
    // The first byte tells a TLS ClientHello (a handshake record, 0x16) from plain text.
    while buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (r, b) = rt::read_into(&mut stream, buf, 0, left).await;
        buf = b;
        match r {
            Read::Data => {}
            Read::TimedOut => {
                st.tls_failure("timeout");
                return None;
            }
            _ => {
                st.tls_failure("closed");
                return None;
            }
        }
    }
    if buf[0] != 0x16 {
        st.tls_failure("plain_http");
        if let Some(answer) = edge.plain_answer.filter(|_| buf[0].is_ascii_alphabetic()) {
            let (_, _) = rt::write_all(&mut stream, answer, Duration::from_secs(5)).await;
            rt::linger_close(stream, buf, Duration::from_millis(500)).await;
        }
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let socket = tls_accept(stream, &buf, tls, left, st).await?;
    buf.clear();
    Some(Ready { socket, addrs, buf })
}

/// The server side of a TLS handshake on `stream` (plain TCP), starting with `prefix` (bytes
/// already read), within `limit`; counted as full, resumed, or failed by reason.
pub async fn tls_accept(
    stream: Socket,
    prefix: &[u8],
    tls: &ServerTls,
    limit: Duration,
    st: &ShardStats,
) -> Option<Socket> {
    let Socket::Tcp(tcp) = stream else {
        return None;
    };
    match rt::timeout(limit, TlsStream::accept(tcp, prefix, tls.config.clone())).await {
        None => {
            st.tls_failure("timeout");
            None
        }
        Some(Err(e)) => {
            st.tls_failure(e.reason());
            tracing::debug!(error = ?e, "TLS handshake failed");
            None
        }
        Some(Ok(session)) => {
            if session.resumed() {
                st.tls_resumed.add(1);
            } else {
                st.tls_full.add(1);
            }
            Some(Socket::Tls(Box::new(session)))
        }
    }
}

/// Read until `buf` starts with a whole PROXY header, then remove it from `buf` (what follows
/// stays). The addresses it names, or `None` for LOCAL/UNKNOWN headers.
async fn read_proxy_header(
    stream: &mut Socket,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Option<ClientAddrs>, &'static str> {
    loop {
        match proxy_protocol::parse(buf) {
            Ok(Parsed::Header { len, addrs }) => {
                buf.drain(..len);
                return Ok(addrs);
            }
            Ok(Parsed::Incomplete) => {}
            Err(proxy_protocol::Error::NotProxy) => return Err("no PROXY header"),
            Err(_) => return Err("malformed PROXY header"),
        }
        if buf.len() >= proxy_protocol::MAX_HEADER {
            return Err("PROXY header too long");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let b = std::mem::take(buf);
        let (r, b) = rt::read_into(stream, b, 512, left).await;
        *buf = b;
        match r {
            Read::Data => {}
            Read::TimedOut => return Err("PROXY header not sent in time"),
            _ => return Err("closed before a whole PROXY header"),
        }
    }
}
