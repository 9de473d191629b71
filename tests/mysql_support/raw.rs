//! The MySQL wire protocol by hand, for tests that must misbehave on purpose: a client that
//! logs in with `mysql_native_password` over a plain socket (then pipelines, stops reading or
//! sends garbage), and a fake server that greets, accepts any login and then answers the way a
//! test asks (a result cut in the middle, pings held back until released).
//!
//! Independent of the daemon's own protocol code (a test that used the code under test to read
//! its output would prove nothing), and only as much of the protocol as the tests need:
//! protocol 4.1, no TLS, no compression, single-chunk packets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha1::{Digest, Sha1};

pub const CLIENT_LONG_PASSWORD: u32 = 1;
pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
/// What the test client asks for: classic EOF packets, no MariaDB extensions.
pub const CLIENT_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH;

pub const COM_QUIT: u8 = 0x01;
pub const COM_QUERY: u8 = 0x03;
pub const COM_PING: u8 = 0x0e;

/// Bound on every read a raw client or the fake server does.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One packet: 3-byte length, sequence id, payload.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 0xFF_FFFF, "single-chunk packets only");
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// Read one packet: (sequence id, payload). A payload of 0xFFFFFF bytes (a chunk of a bigger
/// packet) is returned as it is; callers here never need the joined packet.
pub fn read_packet(s: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[3], p))
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn native_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The 20-byte scramble of a protocol v10 greeting.
pub fn greeting_scramble(g: &[u8]) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad greeting {g:02x?}"));
    if g.first() != Some(&10) {
        return Err(bad());
    }
    let vend = 1 + g[1..].iter().position(|&b| b == 0).ok_or_else(bad)?;
    let part1 = g.get(vend + 5..vend + 13).ok_or_else(bad)?;
    // filler(1) caps_lo(2) charset(1) status(2) caps_hi(2) auth_len(1) reserved(10)
    let part2_at = vend + 13 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
    let part2 = g.get(part2_at..part2_at + 12).ok_or_else(bad)?;
    Ok([part1, part2].concat())
}

/// A HandshakeResponse41 payload.
pub fn handshake_response(user: &str, auth: &[u8], db: Option<&str>) -> Vec<u8> {
    let caps = CLIENT_CAPS
        | if db.is_some() {
            CLIENT_CONNECT_WITH_DB
        } else {
            0
        };
    let mut p = Vec::new();
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45); // utf8mb4_general_ci
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8);
    p.extend_from_slice(auth);
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

/// How a login ended.
#[derive(Debug)]
pub enum Login {
    Ok(TcpStream),
    /// The server's ERR: (code, message).
    Refused(u16, String),
}

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Log in as `user` with `mysql_native_password` (answering an AuthSwitchRequest to it too).
pub fn login(addr: SocketAddr, user: &str, password: &str, db: Option<&str>) -> io::Result<Login> {
    let mut s = connect(addr)?;
    let (_, g) = read_packet(&mut s)?;
    if g.first() == Some(&0xFF) {
        return Ok(refused(&g));
    }
    let scramble = greeting_scramble(&g)?;
    let auth = native_password(password, &scramble);
    s.write_all(&packet(1, &handshake_response(user, &auth, db)))?;
    loop {
        let (seq, p) = read_packet(&mut s)?;
        match p.first() {
            Some(0x00) => return Ok(Login::Ok(s)),
            Some(0xFF) => return Ok(refused(&p)),
            Some(0xFE) => {
                // AuthSwitchRequest: plugin name NUL, new scramble (NUL-terminated).
                let name_end = p[1..].iter().position(|&b| b == 0).unwrap_or(p.len() - 1) + 1;
                let data = &p[(name_end + 1).min(p.len())..];
                let data = data.strip_suffix(&[0]).unwrap_or(data);
                let answer = native_password(password, data);
                s.write_all(&packet(seq.wrapping_add(1), &answer))?;
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected login packet starting {other:?}"),
                ))
            }
        }
    }
}

fn refused(p: &[u8]) -> Login {
    let code = u16::from_le_bytes([
        p.get(1).copied().unwrap_or(0),
        p.get(2).copied().unwrap_or(0),
    ]);
    let msg = p.get(3..).map(String::from_utf8_lossy).unwrap_or_default();
    Login::Refused(code, msg.into_owned())
}

/// Log in or fail the test.
pub fn login_ok(addr: SocketAddr, user: &str, password: &str, db: Option<&str>) -> TcpStream {
    match login(addr, user, password, db) {
        Ok(Login::Ok(s)) => s,
        other => panic!("login as {user} through {addr}: {other:?}"),
    }
}

/// Send one COM_QUERY and read its whole reply (classic EOF framing); returns the packets.
pub fn query(s: &mut TcpStream, sql: &str) -> io::Result<Vec<Vec<u8>>> {
    let mut p = vec![COM_QUERY];
    p.extend_from_slice(sql.as_bytes());
    s.write_all(&packet(0, &p))?;
    let mut out = Vec::new();
    let mut eofs = 0;
    loop {
        let (_, p) = read_packet(s)?;
        let first = p.first().copied();
        let done = match first {
            Some(0xFF) => true,
            Some(0x00) if out.is_empty() => true,
            Some(0xFE) if p.len() < 9 => {
                eofs += 1;
                eofs == 2
            }
            _ => false,
        };
        out.push(p);
        if done {
            return Ok(out);
        }
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

/// What the fake server does after a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeMode {
    /// Answer a COM_QUERY with a result set header, one column definition, its EOF and a few
    /// rows, then close the connection: a server dying in the middle of a result.
    DieMidResult,
    /// Read commands but answer none until [`FakeServer::release`]; then one OK per COM_PING,
    /// in order (held ones first).
    HoldPings,
}

/// A fake MySQL server on 127.0.0.1 (a thread per connection), stopped when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    released: Arc<AtomicBool>,
    /// Commands read after a login, all connections together.
    pub commands: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(mode: FakeMode) -> FakeServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let commands = Arc::new(AtomicUsize::new(0));
        let (st, rel, cmds) = (stop.clone(), released.clone(), commands.clone());
        let accept = std::thread::spawn(move || {
            let mut id = 0u32;
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        id += 1;
                        let (st, rel, cmds) = (st.clone(), rel.clone(), cmds.clone());
                        std::thread::spawn(move || {
                            let _ = fake_conn(s, id, mode, &st, &rel, &cmds);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeServer {
            addr,
            stop,
            released,
            commands,
            accept: Some(accept),
        }
    }

    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.released.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn fake_greeting(id: u32) -> Vec<u8> {
    greeting(id, "mysql_native_password")
}

/// A protocol-10 greeting payload (MariaDB-style version, connection `id`, a fixed scramble)
/// naming `plugin` as the default authentication plugin.
pub fn greeting(id: u32, plugin: &str) -> Vec<u8> {
    let caps: u32 = CLIENT_CAPS | CLIENT_CONNECT_WITH_DB;
    let mut g = vec![10];
    g.extend_from_slice(b"5.5.5-10.11.0-fake\0");
    g.extend_from_slice(&id.to_le_bytes());
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.push(45);
    g.extend_from_slice(&2u16.to_le_bytes()); // autocommit
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(b"ijklmnopqrst\0");
    g.extend_from_slice(plugin.as_bytes());
    g.push(0);
    g
}

const FAKE_OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

fn fake_conn(
    mut s: TcpStream,
    id: u32,
    mode: FakeMode,
    stop: &AtomicBool,
    released: &AtomicBool,
    commands: &AtomicUsize,
) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.write_all(&packet(0, &fake_greeting(id)))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    // Health checks close here without a response.
    let (seq, _) = read_packet(&mut s)?;
    s.write_all(&packet(seq.wrapping_add(1), FAKE_OK))?;
    match mode {
        FakeMode::DieMidResult => {
            let (_, p) = read_packet(&mut s)?;
            commands.fetch_add(1, Ordering::SeqCst);
            assert_eq!(p.first(), Some(&COM_QUERY));
            let coldef =
                b"\x03def\x00\x00\x00\x01x\x00\x0c\x21\x00\x00\x01\x00\x00\xfd\x00\x00\x1f\x00\x00";
            let mut out = packet(1, &[1]);
            out.extend(packet(2, coldef));
            out.extend(packet(3, &[0xFE, 0, 0, 2, 0]));
            let row = [&[250u8][..], &[b'r'; 250]].concat();
            for i in 0..8 {
                out.extend(packet(4 + i, &row));
            }
            s.write_all(&out)?;
            std::thread::sleep(Duration::from_millis(100));
            // Dies: no terminator, the connection just ends.
            let _ = s.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        FakeMode::HoldPings => {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut owed = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            let mut have = Vec::new();
            let ok = packet(1, FAKE_OK);
            loop {
                if stop.load(Ordering::Relaxed) && !released.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if released.load(Ordering::Relaxed) && owed > 0 {
                    let out: Vec<u8> = ok.iter().copied().cycle().take(ok.len() * owed).collect();
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    s.write_all(&out)?;
                    owed = 0;
                }
                match s.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => have.extend_from_slice(&buf[..n]),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let mut at = 0;
                while have.len() - at >= 4 {
                    let len =
                        u32::from_le_bytes([have[at], have[at + 1], have[at + 2], 0]) as usize;
                    if have.len() - at < 4 + len {
                        break;
                    }
                    if have.get(at + 4) == Some(&COM_PING) {
                        owed += 1;
                    }
                    commands.fetch_add(1, Ordering::Relaxed);
                    at += 4 + len;
                }
                have.drain(..at);
            }
        }
    }
}
