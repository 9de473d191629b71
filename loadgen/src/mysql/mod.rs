//! MySQL mode: a minimal client as an engine `Protocol`. Per connection it reads the v10
//! greeting, logs in with mysql_native_password (following an AuthSwitch to the same plugin),
//! then sends one COM_QUERY per request and reads the reply to its end: OK, ERR, or a result
//! set (column count, column definitions, EOF, rows, EOF), including multi-result replies.
//! Rows are skipped without being buffered; only packets that must be looked at (first reply
//! packet, EOF/OK/ERR) are held whole. An ERR reply is a complete reply that did not succeed:
//! it is counted under its error number ("ERR 1064"), not as a connection error.

pub(crate) mod packet;

use crate::cli::MysqlArgs;
use crate::engine::{ErrorClass, Protocol, Step};
use crate::load;
use packet::{Greeting, HEADER, MAX_PAYLOAD};
use std::io::{Read, Write};
use std::net::TcpStream;

/// Packets larger than this are skipped as they stream by instead of being buffered, when
/// their first byte says they are a row or a column definition.
const STREAM_ABOVE: usize = 16 * 1024;

/// Where a connection is in the protocol.
///
/// ```text
///  Greeting --send login--> Auth --OK--> Ready --COM_QUERY--> First
///  First --OK/ERR--> Ready;  First --n columns--> Columns(n) --> ColumnsEof --> Rows
///  Rows --EOF/OK (more results)--> First;  Rows --EOF/OK/ERR--> Ready
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Auth,
    Ready,
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
}

pub(crate) struct MysqlConn {
    phase: Phase,
    buf: Vec<u8>,
    /// Payload bytes of the current packet still to skip.
    skip: usize,
    /// The previous packet had the maximum length: the next one continues it.
    continuation: bool,
    greeting: Option<Greeting>,
}

pub(crate) struct Mysql {
    user: String,
    password: String,
    db: Option<String>,
    /// The COM_QUERY packet, rendered once.
    query: Vec<u8>,
}

impl Mysql {
    pub(crate) fn new(
        user: &str,
        password: &str,
        db: Option<&str>,
        query: &str,
    ) -> Result<Self, String> {
        if query.len() + 1 >= MAX_PAYLOAD {
            return Err("--query longer than 16 MiB is not supported".into());
        }
        let mut payload = vec![0x03];
        payload.extend_from_slice(query.as_bytes());
        let mut q = Vec::new();
        packet::write_packet(&mut q, 0, &payload);
        Ok(Mysql {
            user: user.into(),
            password: password.into(),
            db: db.map(String::from),
            query: q,
        })
    }

    /// Handles one complete packet (or, for a streamed row, its first bytes).
    fn on_packet(&self, c: &mut MysqlConn, seq: u8, p: &[u8], out: &mut Vec<u8>) -> Option<Step> {
        let first = p.first().copied().unwrap_or(0);
        match c.phase {
            Phase::Greeting => {
                if first == 0xFF {
                    let (code, msg) = packet::parse_err(p);
                    return Some(login_fail(format!(
                        "server refused the connection: {code} {msg}"
                    )));
                }
                let g = match packet::parse_greeting(p) {
                    Ok(g) => g,
                    Err(e) => {
                        return Some(Step::Fail(
                            ErrorClass::BadResponse,
                            format!("bad greeting: {e}"),
                        ))
                    }
                };
                let resp =
                    packet::handshake_response(&g, &self.user, &self.password, self.db.as_deref());
                packet::write_packet(out, seq.wrapping_add(1), &resp);
                c.greeting = Some(g);
                c.phase = Phase::Auth;
                None
            }
            Phase::Auth => match first {
                0x00 => {
                    c.phase = Phase::Ready;
                    Some(Step::Ready)
                }
                0xFF => {
                    let (code, msg) = packet::parse_err(p);
                    Some(login_fail(format!(
                        "login as '{}' failed: {code} {msg}",
                        self.user
                    )))
                }
                0xFE => {
                    // AuthSwitchRequest: plugin name NUL, then new auth data.
                    let body = &p[1..];
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    let plugin = String::from_utf8_lossy(&body[..end]);
                    if plugin != packet::NATIVE_PASSWORD {
                        return Some(login_fail(format!(
                            "server wants auth plugin '{plugin}' for '{}'; only {} is supported",
                            self.user,
                            packet::NATIVE_PASSWORD
                        )));
                    }
                    let data = body.get(end + 1..).unwrap_or(&[]);
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    packet::write_packet(
                        out,
                        seq.wrapping_add(1),
                        &packet::native_token(&self.password, data),
                    );
                    None
                }
                0x01 if p.get(1) == Some(&0x03) => None, // caching_sha2 fast auth: OK follows
                _ => Some(login_fail(format!(
                    "unsupported authentication step 0x{first:02x}"
                ))),
            },
            Phase::Ready => Some(Step::Fail(
                ErrorClass::BadResponse,
                "packet received with no query pending".into(),
            )),
            Phase::First => match first {
                0x00 => self.result_end(c, packet::ok_status(p)),
                0xFF => {
                    let (code, _) = packet::parse_err(p);
                    c.phase = Phase::Ready;
                    Some(Step::Done {
                        code: code.max(1),
                        ok: false,
                        keep_alive: true,
                    })
                }
                0xFB => Some(Step::Fail(
                    ErrorClass::BadResponse,
                    "server asked for LOCAL INFILE".into(),
                )),
                _ => match packet::lenenc(p) {
                    Some((n, _)) if n > 0 => {
                        c.phase = Phase::Columns(n);
                        None
                    }
                    _ => Some(Step::Fail(
                        ErrorClass::BadResponse,
                        "bad column count".into(),
                    )),
                },
            },
            Phase::Columns(n) => {
                c.phase = if n > 1 {
                    Phase::Columns(n - 1)
                } else {
                    Phase::ColumnsEof
                };
                None
            }
            Phase::ColumnsEof => {
                if first == 0xFE && p.len() < 9 {
                    c.phase = Phase::Rows;
                    None
                } else {
                    Some(Step::Fail(
                        ErrorClass::BadResponse,
                        "expected EOF after column definitions".into(),
                    ))
                }
            }
            Phase::Rows => match first {
                0xFE if p.len() < 9 => self.result_end(c, packet::eof_status(p)),
                0xFF => {
                    let (code, _) = packet::parse_err(p);
                    c.phase = Phase::Ready;
                    Some(Step::Done {
                        code: code.max(1),
                        ok: false,
                        keep_alive: true,
                    })
                }
                _ => None,
            },
        }
    }

    /// A result ended with these status flags: more results follow, or the reply is done.
    fn result_end(&self, c: &mut MysqlConn, status: u16) -> Option<Step> {
        if status & packet::SERVER_MORE_RESULTS_EXISTS != 0 {
            c.phase = Phase::First;
            None
        } else {
            c.phase = Phase::Ready;
            Some(Step::Done {
                code: 0,
                ok: true,
                keep_alive: true,
            })
        }
    }
}

fn login_fail(msg: String) -> Step {
    Step::Fail(ErrorClass::ConnectOther, msg)
}

impl Protocol for Mysql {
    type Conn = MysqlConn;

    fn new_conn(&self, _group: usize, _index: usize) -> MysqlConn {
        MysqlConn {
            phase: Phase::Greeting,
            buf: Vec::new(),
            skip: 0,
            continuation: false,
            greeting: None,
        }
    }

    fn on_connect(&self, c: &mut MysqlConn) -> bool {
        *c = self.new_conn(0, 0);
        false
    }

    fn request<'a>(&'a self, c: &mut MysqlConn) -> &'a [u8] {
        c.phase = Phase::First;
        &self.query
    }

    fn on_data(&self, c: &mut MysqlConn, data: &[u8], out: &mut Vec<u8>) -> Step {
        let mut data = data;
        if c.skip > 0 {
            let take = c.skip.min(data.len());
            c.skip -= take;
            data = &data[take..];
        }
        c.buf.extend_from_slice(data);
        let mut pos = 0;
        let mut result = Step::More;
        while c.skip == 0 {
            let Some((len, seq)) = packet::header(&c.buf[pos..]) else {
                break;
            };
            let avail = c.buf.len() - pos - HEADER;
            let continuation = std::mem::replace(&mut c.continuation, len == MAX_PAYLOAD);
            let streamable = continuation
                || (len > STREAM_ABOVE
                    && avail > 0
                    && matches!(c.phase, Phase::Columns(_) | Phase::Rows)
                    && c.buf[pos + HEADER] != 0xFF);
            if avail < len {
                if streamable {
                    // Skip the rest of this row as it arrives, without buffering it.
                    if !continuation {
                        let p = c.buf[pos + HEADER..].to_vec();
                        if let Some(step) = self.on_packet(c, seq, &p, out) {
                            result = step;
                        }
                    }
                    c.skip = len - avail;
                    pos = c.buf.len();
                    break;
                }
                c.continuation = continuation;
                break;
            }
            let start = pos + HEADER;
            pos = start + len;
            if continuation {
                continue;
            }
            let p = c.buf[start..pos].to_vec();
            if let Some(step) = self.on_packet(c, seq, &p, out) {
                result = step;
                break;
            }
        }
        c.buf.drain(..pos);
        match result {
            Step::Done { .. } | Step::Ready if !c.buf.is_empty() || c.skip > 0 => Step::Fail(
                ErrorClass::BadResponse,
                "unexpected bytes after a complete reply".into(),
            ),
            r => r,
        }
    }

    fn on_eof(&self, c: &mut MysqlConn) -> Step {
        let msg = match c.phase {
            Phase::Greeting | Phase::Auth => "server closed the connection during login",
            _ => "server closed the connection mid-reply",
        };
        Step::Fail(ErrorClass::Closed, msg.into())
    }

    fn code_label(&self, code: u16) -> String {
        if code == 0 {
            "OK".into()
        } else {
            format!("ERR {code}")
        }
    }
}

/// Logs in once over a blocking socket, so bad credentials are one clear error before the run.
fn preflight_login(
    proto: &Mysql,
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to MySQL at {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let mut c = proto.new_conn(0, 0);
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("MySQL at {addr}: reading during login: {e}"))?;
        if n == 0 {
            return Err(format!(
                "MySQL at {addr} closed the connection during login"
            ));
        }
        out.clear();
        let step = proto.on_data(&mut c, &buf[..n], &mut out);
        if !out.is_empty() {
            s.write_all(&out)
                .map_err(|e| format!("MySQL at {addr}: writing during login: {e}"))?;
        }
        match step {
            Step::Ready => return Ok(c.greeting.map(|g| g.version).unwrap_or_default()),
            Step::Fail(_, msg) => return Err(format!("MySQL at {addr}: {msg}")),
            _ => {}
        }
    }
}

pub(crate) fn run(a: MysqlArgs) -> Result<i32, String> {
    let addr = crate::url::resolve(&a.host, a.port)?;
    let proto = Mysql::new(&a.user, &a.password, a.db.as_deref(), &a.query)?;
    let plan = load::plan(&a.load, vec![addr])?;
    let version = preflight_login(&proto, addr, plan.connect_timeout)?;
    let target = format!("mysql://{}@{addr}", a.user);
    println!(
        "{} (server {version}), query: {}",
        load::banner(&target, &plan),
        a.query
    );
    crate::sys::catch_interrupts();
    let outcome = load::execute(&proto, &plan)?;
    let (_, code) = load::finish("mysql", vec![target], &plan, &proto, &outcome, &a.load)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        packet::write_packet(&mut v, seq, payload);
        v
    }

    /// A reply to SELECT with two columns and `rows` rows of `row_len` bytes.
    fn result_set(rows: usize, row_len: usize, more: bool) -> Vec<u8> {
        let mut v = pkt(1, &[2]);
        v.extend(pkt(2, b"\x03defcolumn-a"));
        v.extend(pkt(3, b"\x03defcolumn-b"));
        v.extend(pkt(4, &[0xFE, 0, 0, 2, 0]));
        for i in 0..rows {
            let mut row = vec![0xFC, row_len as u8, (row_len >> 8) as u8];
            row.resize(3 + row_len, b'r');
            v.extend(pkt(5 + i as u8, &row));
        }
        let status = if more { 0x0A } else { 2 };
        v.extend(pkt(9, &[0xFE, 0, 0, status, 0]));
        v
    }

    fn feed_all(m: &Mysql, c: &mut MysqlConn, input: &[u8], step: usize) -> Vec<Step> {
        let mut out = Vec::new();
        let mut steps = Vec::new();
        for piece in input.chunks(step) {
            match m.on_data(c, piece, &mut out) {
                Step::More => {}
                s => steps.push(s),
            }
        }
        steps
    }

    fn ready_conn(m: &Mysql) -> MysqlConn {
        let mut c = m.new_conn(0, 0);
        c.phase = Phase::Ready;
        let _ = m.request(&mut c);
        c
    }

    #[test]
    fn replies_at_every_split() {
        let m = Mysql::new("u", "p", None, "SELECT 1").unwrap();
        let mut multi = result_set(2, 10, true);
        multi.extend(pkt(10, &[0, 0, 0, 2, 0, 0, 0]));
        let cases: Vec<(Vec<u8>, Step)> = vec![
            (
                pkt(1, &[0, 0, 0, 2, 0, 0, 0]),
                Step::Done {
                    code: 0,
                    ok: true,
                    keep_alive: true,
                },
            ),
            (
                pkt(1, b"\xff\x28\x04#42000syntax"),
                Step::Done {
                    code: 1064,
                    ok: false,
                    keep_alive: true,
                },
            ),
            (
                result_set(3, 5, false),
                Step::Done {
                    code: 0,
                    ok: true,
                    keep_alive: true,
                },
            ),
            (
                result_set(2, 40_000, false),
                Step::Done {
                    code: 0,
                    ok: true,
                    keep_alive: true,
                },
            ),
            (
                multi,
                Step::Done {
                    code: 0,
                    ok: true,
                    keep_alive: true,
                },
            ),
        ];
        for (input, want) in cases {
            for step in [1, 3, 1000, input.len()] {
                let mut c = ready_conn(&m);
                let steps = feed_all(&m, &mut c, &input, step);
                assert_eq!(steps, vec![want.clone()], "step {step}");
                assert_eq!(c.phase, Phase::Ready);
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let m = Mysql::new("u", "p", None, "SELECT 1").unwrap();
        let mut c = ready_conn(&m);
        let mut bad = pkt(1, &[2]);
        bad.extend(pkt(2, b"col"));
        bad.extend(pkt(3, b"col"));
        bad.extend(pkt(4, b"not an eof packet"));
        let steps = feed_all(&m, &mut c, &bad, 7);
        assert!(
            matches!(steps.as_slice(), [Step::Fail(ErrorClass::BadResponse, _)]),
            "{steps:?}"
        );
        let mut x: u32 = 12345;
        for _ in 0..500 {
            let mut c = ready_conn(&m);
            let input: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = feed_all(&m, &mut c, &input, 5);
        }
    }

    #[test]
    fn login_failure_names_the_user() {
        let m = Mysql::new("sg_a", "wrong", None, "SELECT 1").unwrap();
        let mut c = m.new_conn(0, 0);
        c.phase = Phase::Auth;
        let steps = feed_all(&m, &mut c, &pkt(2, b"\xff\x15\x04#28000Access denied"), 100);
        match steps.as_slice() {
            [Step::Fail(ErrorClass::ConnectOther, msg)] => {
                assert!(
                    msg.contains("sg_a") && msg.contains("1045") && msg.contains("Access denied"),
                    "{msg}"
                )
            }
            s => panic!("{s:?}"),
        }
    }
}
