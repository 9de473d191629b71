//! TLS towards MySQL clients (`[[mysql]] tls = {...}`), the server side staying as it is.
//!
//! The greeting offers CLIENT_SSL. A client that answers with an SSLRequest (the 32-byte
//! prefix of a HandshakeResponse with CLIENT_SSL) does its TLS handshake with shardgate, then
//! sends its real HandshakeResponse over TLS with sequence number 2. The server never saw the
//! SSLRequest, so until the login ends every packet's sequence number is shifted by one (down
//! towards the server, up towards the client), and CLIENT_SSL is cleared in the response the
//! server gets. The observer sees the conversation as the server does, so per-user accounting
//! is the same with or without TLS. After the login, commands number their packets from 0 on
//! both sides and bytes pass unchanged.
//!
//! ```text
//!  client            shardgate              server
//!    ◄── greeting(0) + CLIENT_SSL ◄── greeting(0)
//!    ── SSLRequest(1) ──► (kept)
//!    ══ TLS handshake ══
//!    ══ Response(2) ══► ── Response(1), no CLIENT_SSL ──►
//!    ◄═ AuthSwitch(3) ═ ◄── AuthSwitch(2) ──            (any number of rounds)
//!    ◄═ OK(n+1) ═══════ ◄── OK(n) ──                    login over: no more shifting
//! ```

use std::time::{Duration, Instant};

use super::{Dir, Session};
use crate::proto::mysql::{caps, handshake, packet::complete_packet_len};
use crate::rt::{self, Read, Socket, TlsStream};
use crate::tls::ServerTls;

/// How the client started, once the greeting has been sent to it.
pub enum Start {
    /// Plain: these bytes (its first packet, maybe more) go to the server as they are.
    Plain(Socket, Vec<u8>),
    /// TLS, and the login went through (the relay goes on over this session).
    Tls(Socket),
    /// Closed: a failed handshake, a failed login (relayed), or a silent client.
    Closed,
}

/// Read the client's first packet; on an SSLRequest run the handshake and the login (see the
/// module head). `buf` holds what was already read from the client.
pub async fn start(
    session: &Session<'_>,
    mut client: Socket,
    server: &mut Socket,
    tls: &ServerTls,
    mut buf: Vec<u8>,
) -> Start {
    let deadline = Instant::now() + tls.handshake_timeout;
    let st = session.shard.stats();
    // The first packet, whole.
    let first_len = loop {
        if let Some(n) = complete_packet_len(&buf) {
            break n;
        }
        if buf.len() > 64 * 1024 {
            return Start::Plain(client, buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (r, b) = rt::read_into(&mut client, buf, 256, left).await;
        buf = b;
        if !matches!(r, Read::Data) {
            return Start::Closed;
        }
    };
    let ssl = handshake::parse_response(&buf[4..first_len], (first_len - 4) as u64)
        .map(|r| r.ssl_request)
        .unwrap_or(false);
    if !ssl {
        return Start::Plain(client, buf);
    }
    let Socket::Tcp(tcp) = client else {
        return Start::Closed;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let shake = TlsStream::accept(tcp, &buf[first_len..], tls.config.clone());
    let session_tls = match rt::timeout(left, shake).await {
        None => {
            st.tls_failure("timeout");
            return Start::Closed;
        }
        Some(Err(e)) => {
            st.tls_failure(e.reason());
            return Start::Closed;
        }
        Some(Ok(s)) => s,
    };
    if session_tls.resumed() {
        st.tls_resumed.add(1);
    } else {
        st.tls_full.add(1);
    }
    let mut client = Socket::Tls(Box::new(session_tls));
    let left = deadline.saturating_duration_since(Instant::now());
    if login_shifted(
        session,
        &mut client,
        server,
        left.max(Duration::from_secs(1)),
    )
    .await
    {
        Start::Tls(client)
    } else {
        Start::Closed
    }
}

/// Relay the login over TLS with sequence numbers shifted, until the server's OK or ERR.
/// True when the login succeeded.
async fn login_shifted(
    session: &Session<'_>,
    client: &mut Socket,
    server: &mut Socket,
    limit: Duration,
) -> bool {
    let (mut cbuf, mut sbuf) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let deadline = Instant::now() + limit;
    let mut first = true;
    loop {
        // Whole packets from the client go down, shifted.
        while let Some(n) = complete_packet_len(&cbuf) {
            let mut p: Vec<u8> = cbuf.drain(..n).collect();
            p[3] = p[3].wrapping_sub(1);
            if first {
                // The HandshakeResponse: the server must not expect TLS.
                first = false;
                if p.len() >= 8 {
                    let c = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) & !(caps::SSL as u32);
                    p[4..8].copy_from_slice(&c.to_le_bytes());
                }
            }
            session.observe(&p, Dir::ClientToServer);
            if rt::write_all(server, p, limit).await.0.is_err() {
                return false;
            }
        }
        // Whole packets from the server go up, shifted; OK or ERR ends the login.
        while let Some(n) = complete_packet_len(&sbuf) {
            let mut p: Vec<u8> = sbuf.drain(..n).collect();
            p[3] = p[3].wrapping_add(1);
            let kind = p.get(4).copied();
            session.observe(&p, Dir::ServerToClient);
            if rt::write_all(client, p, limit).await.0.is_err() {
                return false;
            }
            match kind {
                Some(0x00) => return sbuf.is_empty(),
                Some(0xFF) => return false,
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let either = rt::recv_either(client, &mut cbuf, true, server, &mut sbuf, true);
        let got = rt::timeout(left, either).await.map(|(_, r)| r);
        if !matches!(got, Some(Read::Data)) {
            return false;
        }
    }
}

impl Session<'_> {
    /// After a TLS login: relay both ways in one task (a TLS session cannot be split), both
    /// reads cancel-safe so the side that loses a race keeps its bytes. Ends like the two
    /// pumps of a plain session: either side closing or failing, or the sweeper shutting the
    /// sockets down.
    pub async fn relay_tls(&self, client: &mut Socket, server: &mut Socket) {
        let (mut cbuf, mut sbuf) = (
            Vec::with_capacity(super::RELAY_BUF),
            Vec::with_capacity(super::RELAY_BUF),
        );
        let ended = loop {
            cbuf.clear();
            sbuf.clear();
            let read_client = !self.client_must_wait();
            let got =
                rt::recv_either(client, &mut cbuf, read_client, server, &mut sbuf, true).await;
            let got = (
                if got.0 {
                    Dir::ClientToServer
                } else {
                    Dir::ServerToClient
                },
                got.1,
            );
            let (dir, r) = got;
            if !matches!(r, Read::Data) {
                break dir;
            }
            let data = match dir {
                Dir::ClientToServer => &cbuf,
                Dir::ServerToClient => &sbuf,
            };
            self.observe(data, dir);
            let ok = match dir {
                Dir::ClientToServer => {
                    let (w, _) =
                        rt::write_all(server, data.clone(), Duration::from_secs(3600)).await;
                    w.is_ok()
                }
                Dir::ServerToClient => {
                    self.ctl.client_write_since_ms.set(rt::now_ms());
                    let (w, _) =
                        rt::write_all(client, data.clone(), Duration::from_secs(3600)).await;
                    self.ctl.client_write_since_ms.set(0);
                    w.is_ok()
                }
            };
            if !ok {
                break dir;
            }
        };
        self.ended(ended);
    }
}
