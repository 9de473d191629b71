//! `method = "mysql"` (HAProxy `mysql-check`, done to the end): a real session, so that
//! MariaDB counts no aborted connection per probe.
//!
//! ```text
//!   server                        checker
//!   greeting (v10, scramble) ───▶
//!                           ◀─── HandshakeResponse41: mysql_user, mysql_native_password
//!   [AuthSwitchRequest
//!    mysql_native_password] ───▶
//!                           ◀─── scramble for the new nonce
//!   OK | ERR (Access denied) ───▶  ERR: fail with the server's message
//!                           ◀─── COM_QUERY mysql_query
//!   result set | OK | ERR  ───▶  read to its end (the reply state machine of the proxy)
//!                           ◀─── COM_QUIT, close
//! ```
//!
//! A server that answers the connect with ERR 1040 (too many connections) or 1203 (the user's
//! connection limit) passes: it is alive and answering, only full, and taking every full
//! server out would leave a busy cluster with no server at all. Any other ERR fails.
//! Only `mysql_native_password` is spoken (the check account should use it); a server that
//! asks for another plugin fails the check with a message saying so.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Outcome;
use crate::config::Health;
use crate::proto::mysql::auth::{self, err_text, greeting_auth, native_password, NATIVE};
use crate::proto::mysql::command::{classify, Negotiated, Reply, Step};
use crate::proto::mysql::packet::{complete_packet_len, nul_str, packet, HEADER_LEN};
use crate::proto::mysql::{caps, com};
use crate::rt;

/// Largest packet the check accepts (greetings and result rows of a health query are small).
const MAX_PACKET: usize = 64 * 1024;
/// Most bytes of a query reply read before the check gives up on it.
const MAX_REPLY: usize = 1 << 20;
/// MariaDB's "too many connections" and "user has exceeded max_user_connections".
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

pub(super) struct Probe {
    user: String,
    password: String,
    query: Vec<u8>,
}

impl Probe {
    pub(super) fn new(h: &Health) -> Probe {
        let mut query = vec![com::QUERY];
        query.extend_from_slice(h.mysql_query.as_bytes());
        Probe {
            user: h.mysql_user.clone(),
            password: h.mysql_password.clone(),
            query,
        }
    }

    pub(super) async fn check(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        proxy: Option<crate::config::ProxyVersion>,
    ) -> Outcome {
        let stream = match super::connect(addr, timeout, proxy).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(512),
            deadline: Instant::now() + timeout,
            timeout,
        };
        match self.session(&mut c).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn session(&self, c: &mut Conn) -> Result<Outcome, Outcome> {
        let (seq, greeting) = c.packet().await?;
        if greeting.first() == Some(&0xFF) {
            let (code, msg) = err_text(&greeting);
            return if code == ER_CON_COUNT_ERROR || code == ER_TOO_MANY_USER_CONNECTIONS {
                Ok(Outcome::Pass(format!("mysql: alive but full: {msg}")))
            } else {
                Err(Outcome::Fail(format!("mysql: {msg}")))
            };
        }
        let (server_caps, nonce, _default_plugin) =
            greeting_auth(&greeting).map_err(|e| Outcome::Fail(format!("mysql: {e}")))?;
        if server_caps & caps::PROTOCOL_41 == 0 {
            return Err(Outcome::Fail("mysql: server predates protocol 4.1".into()));
        }
        // Whatever the server's default plugin, answer for mysql_native_password: a server
        // whose account uses another plugin switches us to it (refused below), and one whose
        // default differs but whose account is native switches us to native with a fresh
        // nonce.
        let auth = native_password(self.password.as_bytes(), &nonce);
        let resp = handshake_response(server_caps, &self.user, &auth);
        c.send(packet(seq.wrapping_add(1), &resp)).await?;
        for _ in 0..3 {
            let (seq, p) = c.packet().await?;
            match p.first() {
                Some(0x00) => return self.query(c).await,
                Some(0xFF) => return Err(Outcome::Fail(format!("mysql: {}", err_text(&p).1))),
                Some(0xFE) if p.len() > 1 => {
                    let (name, used) = nul_str(&p[1..]).unwrap_or((&p[1..], p.len() - 1));
                    if name != NATIVE {
                        return Err(Outcome::Fail(format!(
                            "mysql: the account uses auth plugin {}; the check speaks only mysql_native_password",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    let data = &p[1 + used..];
                    let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                    let auth = native_password(self.password.as_bytes(), nonce);
                    c.send(packet(seq.wrapping_add(1), &auth)).await?;
                }
                _ => {
                    return Err(Outcome::Fail(
                        "mysql: unexpected packet during authentication".into(),
                    ))
                }
            }
        }
        Err(Outcome::Fail(
            "mysql: authentication did not end after 3 rounds".into(),
        ))
    }

    /// Run `mysql_query`, read its reply to the end, then COM_QUIT.
    async fn query(&self, c: &mut Conn) -> Result<Outcome, Outcome> {
        c.send(packet(0, &self.query)).await?;
        let mut reply = Reply::start(classify(com::QUERY)).unwrap_or(Reply::First);
        let mut read = 0usize;
        let verdict = loop {
            let (_, p) = c.packet().await?;
            read += p.len() + HEADER_LEN;
            match reply.on_packet(com::QUERY.into(), &p, p.len(), Negotiated::default()) {
                Step::Continue if read > MAX_REPLY => {
                    return Err(Outcome::Fail(format!(
                        "mysql: query reply longer than {MAX_REPLY} bytes"
                    )))
                }
                Step::Continue => {}
                Step::Done { ok: true } => break Outcome::Pass("mysql: query ok".into()),
                Step::Done { ok: false } => {
                    break Outcome::Fail(format!("mysql: query failed: {}", err_text(&p).1))
                }
                Step::InfileRequested => {
                    return Err(Outcome::Fail(
                        "mysql: the query asked for LOCAL INFILE".into(),
                    ))
                }
                Step::Lost(why) => return Err(Outcome::Fail(format!("mysql: {why}"))),
            }
        };
        // A clean end: MariaDB counts a session closed without COM_QUIT as an aborted client.
        c.send(packet(0, &[com::QUIT])).await?;
        Ok(verdict)
    }
}

/// The check's connection: the stream, bytes read but not yet framed, and the deadline.
struct Conn {
    stream: rt::TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
}

impl Conn {
    fn timed_out(&self) -> Outcome {
        Outcome::Fail(format!("timeout after {:?}", self.timeout))
    }

    /// The next packet: (sequence id, payload).
    async fn packet(&mut self) -> Result<(u8, Vec<u8>), Outcome> {
        loop {
            if let Some(n) = complete_packet_len(&self.buf) {
                let seq = self.buf[3];
                let payload = self.buf[HEADER_LEN..n].to_vec();
                self.buf.drain(..n);
                return Ok((seq, payload));
            }
            if self.buf.len() >= HEADER_LEN + MAX_PACKET {
                return Err(Outcome::Fail(format!(
                    "mysql: packet longer than {MAX_PACKET} bytes"
                )));
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            let buf = std::mem::take(&mut self.buf);
            let (r, b) = rt::read_into(&mut self.stream, buf, 512, left).await;
            self.buf = b;
            match r {
                rt::Read::Data => {}
                rt::Read::Eof => {
                    return Err(Outcome::Fail("mysql: server closed the connection".into()))
                }
                rt::Read::TimedOut | rt::Read::Drained | rt::Read::Woken => {
                    return Err(self.timed_out())
                }
                rt::Read::Err(e) => return Err(Outcome::Fail(format!("mysql: read: {e}"))),
            }
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Outcome> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        let (res, _) = rt::write_all(&mut self.stream, bytes, left).await;
        res.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                self.timed_out()
            } else {
                Outcome::Fail(format!("mysql: send: {e}"))
            }
        })
    }
}

/// HandshakeResponse41 without a database, attributes or TLS.
fn handshake_response(server_caps: u64, user: &str, answer: &[u8]) -> Vec<u8> {
    const TRANSACTIONS: u64 = 1 << 13;
    let hello = auth::Hello {
        caps: caps::CLIENT_MYSQL
            | caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | TRANSACTIONS,
        charset: CHARSET,
        user: user.as_bytes(),
        answer,
        schema: None,
    };
    auth::handshake_response(server_caps, &hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mysql::handshake;
    use sha1::{Digest, Sha1};

    /// A MariaDB 10.11 greeting (recorded), payload only.
    fn greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        let caps: u32 = 0xf7fe | (0x81bf << 16);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&0x1du32.to_le_bytes());
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_gives_nonce_and_plugin() {
        let (c, nonce, plugin) = greeting_auth(&greeting()).unwrap();
        assert_eq!(nonce, b"abcdefghijklmnopqrst");
        assert_eq!(plugin, NATIVE);
        assert_ne!(c & caps::PLUGIN_AUTH, 0);
        for cut in 0..40 {
            assert!(greeting_auth(&greeting()[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn native_password_scramble() {
        // MySQL's documented construction, checked against a value computed independently
        // (python: sha1(pw) xor sha1(nonce + sha1(sha1(pw)))).
        let nonce = b"abcdefghijklmnopqrst";
        let got = native_password(b"secret", nonce);
        assert_eq!(got.len(), 20);
        let h1 = Sha1::digest(b"secret");
        let h3 = Sha1::digest([&nonce[..], &Sha1::digest(h1)[..]].concat());
        let back: Vec<u8> = got.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(back, h1.to_vec());
        assert!(native_password(b"", nonce).is_empty());
    }

    #[test]
    fn response_names_user_and_plugin() {
        let (c, nonce, _) = greeting_auth(&greeting()).unwrap();
        let auth = native_password(b"pw", &nonce);
        let r = handshake_response(c, "check", &auth);
        let parsed = handshake::parse_response(&r, r.len() as u64).unwrap();
        assert_eq!(parsed.user, b"check");
        assert!(r.ends_with(b"mysql_native_password\0"));
    }

    #[test]
    fn err_packets_in_words() {
        let mut p = vec![0xFF];
        p.extend_from_slice(&1045u16.to_le_bytes());
        p.extend_from_slice(b"#28000Access denied for user 'x'");
        assert_eq!(
            err_text(&p),
            (1045, "Access denied for user 'x' (1045)".into())
        );
        let mut p = vec![0xFF];
        p.extend_from_slice(&1040u16.to_le_bytes());
        p.extend_from_slice(b"Too many connections");
        assert_eq!(err_text(&p).0, ER_CON_COUNT_ERROR);
        assert_eq!(err_text(&[0xFF]).0, 0);
    }
}
