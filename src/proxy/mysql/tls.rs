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
use crate::proto::mysql::packet::{complete_packet_len, err_packet};
use crate::proto::mysql::{caps, handshake};
use crate::proxy::preamble::tls_accept;
use crate::rt::{self, Read, Socket, TlsStream};
use crate::tls::ServerTls;

/// Bound on a login relayed with shifted sequence numbers, after the handshakes.
const LOGIN_TIME: Duration = Duration::from_secs(60);

/// How the session goes on, once the greeting has been sent to the client.
pub enum Start {
    /// Plain on both sides: these bytes (the client's first packet, maybe more) go to the
    /// server as they are, then the two pumps relay.
    Pumps(Socket, Socket, Vec<u8>),
    /// TLS on a side and the login went through: one task relays (a TLS session cannot be
    /// split into two pumps).
    Relay(Socket, Socket),
    /// Closed: a failed handshake, a failed login (relayed), or a silent client.
    Closed,
}

/// The pool's TLS towards this server: the shard's config and the name to verify.
pub type Backend = (
    std::sync::Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// Read the client's first packet (numbered 1, or the session is refused) and set up TLS on
/// each side that has it (see the module head). `buf` holds what was already read from the client.
pub async fn start(
    session: &Session<'_>,
    mut client: Socket,
    mut server: Socket,
    front: Option<&ServerTls>,
    back: Option<Backend>,
    mut buf: Vec<u8>,
) -> Start {
    let limit = front.map_or(Duration::from_secs(10), |t| t.handshake_timeout);
    let deadline = Instant::now() + limit;
    // The login after the handshakes: a server's PAM or LDAP check may take its time.
    let login_limit = LOGIN_TIME;
    let st = session.shard.stats();
    // The first packet, whole.
    let first_len = loop {
        if let Some(n) = complete_packet_len(&buf) {
            break n;
        }
        if buf.len() >= 4 && buf[3] != 1 {
            break 0;
        }
        // A HandshakeResponse is a few hundred bytes: a client announcing more is not
        // buffered before it has logged in.
        if buf.len() > 64 * 1024 {
            return Start::Closed;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (r, b) = rt::read_into(&mut client, buf, 256, left).await;
        buf = b;
        if !matches!(r, Read::Data) {
            return Start::Closed;
        }
    };
    // A client's first packet is numbered 1. Anything else is not a MySQL client: among
    // others a PROXY header of its own ("PROX" reads as sequence 'X', the v2 signature as
    // 0x0D), which a server trusting shardgate's headers would take for real.
    if first_len == 0 || buf[3] != 1 {
        tracing::debug!("MySQL client's first packet is not numbered 1: closed");
        return Start::Closed;
    }
    let ssl = handshake::parse_response(&buf[4..first_len], (first_len - 4) as u64)
        .map(|r| r.ssl_request)
        .unwrap_or(false);
    let left = || deadline.saturating_duration_since(Instant::now());
    match (ssl, front, back) {
        // Plain both ways: nothing to do here.
        (false, _, None) => Start::Pumps(client, server, buf),
        // TLS asked for but never offered: a confused client.
        (true, None, _) => Start::Closed,
        // TLS with the client only: its login is relayed shifted down by one.
        (true, Some(tls), None) => {
            let Some(client) = tls_accept(client, &buf[first_len..], tls, left(), st).await else {
                return Start::Closed;
            };
            let mut client = client;
            let ok = login_shifted(
                session,
                &mut client,
                &mut server,
                Vec::new(),
                -1,
                false,
                login_limit,
            )
            .await;
            if ok {
                Start::Relay(client, server)
            } else {
                Start::Closed
            }
        }
        // TLS on both sides: the SSLRequest goes on to the server as it is, both sides
        // handshake, and nothing needs shifting.
        (true, Some(tls), Some(b)) => {
            // Not shown to the observer: it would take the stream for opaque from here on,
            // when it is about to see the login in the clear.
            let sslreq = buf[..first_len].to_vec();
            if rt::write_all(&mut server, sslreq, left()).await.0.is_err() {
                return Start::Closed;
            }
            let Some(server) = connect(server, b, left()).await else {
                return Start::Closed;
            };
            match tls_accept(client, &buf[first_len..], tls, left(), st).await {
                Some(client) => Start::Relay(client, server),
                None => Start::Closed,
            }
        }
        // TLS with the server only: shardgate sends the SSLRequest the client did not
        // (the first 32 bytes of its response, CLIENT_SSL set), and the login is relayed
        // shifted up by one.
        (false, _, Some(b)) => {
            if first_len < 4 + 32 {
                return Start::Closed;
            }
            let mut req = Vec::with_capacity(36);
            req.extend_from_slice(&[32, 0, 0, buf[3]]);
            req.extend_from_slice(&buf[4..36]);
            set_ssl(&mut req, true);
            if rt::write_all(&mut server, req, left()).await.0.is_err() {
                return Start::Closed;
            }
            let Some(mut server) = connect(server, b, left()).await else {
                return Start::Closed;
            };
            let ok =
                login_shifted(session, &mut client, &mut server, buf, 1, true, login_limit).await;
            if ok {
                Start::Relay(client, server)
            } else {
                Start::Closed
            }
        }
    }
}

/// The client side of a handshake with the server.
async fn connect(server: Socket, (config, name): Backend, limit: Duration) -> Option<Socket> {
    let Socket::Tcp(tcp) = server else {
        return None;
    };
    match rt::timeout(limit, TlsStream::connect(tcp, name, config)).await {
        Some(Ok(s)) => Some(Socket::Tls(Box::new(s))),
        Some(Err(e)) => {
            tracing::warn!(event = "mysql_server_tls_failed", error = %e, "TLS handshake with the MySQL server failed");
            None
        }
        None => None,
    }
}

/// Set or clear CLIENT_SSL in a HandshakeResponse (or SSLRequest) packet.
fn set_ssl(p: &mut [u8], on: bool) {
    if p.len() >= 8 {
        let mut c = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        if on {
            c |= caps::SSL as u32;
        } else {
            c &= !(caps::SSL as u32);
        }
        p[4..8].copy_from_slice(&c.to_le_bytes());
    }
}

/// Relay the login with sequence numbers shifted by `shift` towards the server (and back the
/// other way), until the server's OK or ERR; the client's first packet (its response, maybe
/// already in `cbuf`) gets CLIENT_SSL set to `server_tls`. True when the login succeeded;
/// bytes either side sent after it (a client's first command) are passed on before that.
async fn login_shifted(
    session: &Session<'_>,
    client: &mut Socket,
    server: &mut Socket,
    mut cbuf: Vec<u8>,
    shift: i8,
    server_tls: bool,
    limit: Duration,
) -> bool {
    let mut sbuf = Vec::with_capacity(1024);
    let deadline = Instant::now() + limit;
    let mut first = true;
    loop {
        // Whole packets from the client go down, shifted.
        while let Some(n) = complete_packet_len(&cbuf) {
            let mut p: Vec<u8> = cbuf.drain(..n).collect();
            p[3] = p[3].wrapping_add_signed(shift);
            if first {
                // The HandshakeResponse: CLIENT_SSL as the server's side really is.
                first = false;
                set_ssl(&mut p, server_tls);
            }
            session.observe(&p, Dir::ClientToServer);
            if rt::write_all(server, p, limit).await.0.is_err() {
                return false;
            }
        }
        // Whole packets from the server go up, shifted; OK or ERR ends the login.
        while let Some(n) = complete_packet_len(&sbuf) {
            let mut p: Vec<u8> = sbuf.drain(..n).collect();
            p[3] = p[3].wrapping_add_signed(-shift);
            // caching_sha2_password's "perform full authentication", or a switch to a plugin
            // that sends the password itself: the client, on TLS, would send it in the clear
            // over our plain link to the server.
            if !server_tls && sends_password(&p[4..]) {
                let mut err = Vec::new();
                let msg = "shardgate: this account's full authentication needs TLS to the server (set tls on the pool)";
                err_packet(&mut err, p[3], 1251, b"08004", msg);
                let _ = rt::write_all(client, err, limit).await;
                return false;
            }
            let kind = p.get(4).copied();
            session.observe(&p, Dir::ServerToClient);
            if rt::write_all(client, p, limit).await.0.is_err() {
                return false;
            }
            match kind {
                Some(0x00) => return pass_rest(session, client, server, cbuf, sbuf, limit).await,
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

/// Does this login packet from the server make the client send its password as it is?
fn sends_password(payload: &[u8]) -> bool {
    const CLEAR: [&[u8]; 3] = [b"mysql_clear_password", b"sha256_password", b"dialog"];
    match payload.first() {
        Some(0x01) => payload == [0x01, 0x04],
        Some(0xFE) => {
            let name = &payload[1..];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            CLEAR.contains(&name)
        }
        _ => false,
    }
}

/// After the login: what either side already sent goes on, unshifted (commands number their
/// packets from 0 again).
async fn pass_rest(
    session: &Session<'_>,
    client: &mut Socket,
    server: &mut Socket,
    cbuf: Vec<u8>,
    sbuf: Vec<u8>,
    limit: Duration,
) -> bool {
    if !cbuf.is_empty() {
        session.observe(&cbuf, Dir::ClientToServer);
        if rt::write_all(server, cbuf, limit).await.0.is_err() {
            return false;
        }
    }
    if !sbuf.is_empty() {
        session.observe(&sbuf, Dir::ServerToClient);
        if rt::write_all(client, sbuf, limit).await.0.is_err() {
            return false;
        }
    }
    true
}

impl Session<'_> {
    /// With TLS on a side: relay both ways in one task (a TLS session cannot be split into
    /// two pumps), full duplex, observed and held back exactly as the pumps are. Ends like
    /// them: either side closing or failing, or the sweeper shutting the sockets down.
    pub async fn relay_tls(&self, client: &mut Socket, server: &mut Socket) {
        struct Watch<'a, 's>(&'a Session<'s>);
        impl rt::DuplexHooks for Watch<'_, '_> {
            fn may_read(&self, from_client: bool) -> bool {
                !from_client || !self.0.client_must_wait()
            }
            fn data(&mut self, from_client: bool, bytes: &[u8]) {
                let dir = if from_client {
                    Dir::ClientToServer
                } else {
                    Dir::ServerToClient
                };
                self.0.observe(bytes, dir);
            }
            fn waiting_on(&mut self, to_client: bool, waiting: bool) {
                let since = &self.0.ctl.client_write_since_ms;
                if !to_client {
                    return;
                }
                if !waiting {
                    since.set(0);
                } else if since.get() == 0 {
                    since.set(rt::now_ms());
                }
            }
        }
        // Idle sessions are the sweeper's business (client_idle_timeout).
        const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
        let end = rt::duplex(client, server, NEVER, &mut Watch(self)).await;
        self.ctl.client_write_since_ms.set(0);
        self.ended(match end {
            rt::DuplexEnd::Failed(false) | rt::DuplexEnd::Done { a_first: false } => {
                Dir::ServerToClient
            }
            _ => Dir::ClientToServer,
        });
    }
}
