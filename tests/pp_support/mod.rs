//! Helpers for the PROXY protocol tests, written from HAProxy's `proxy-protocol.txt` and not
//! from shardgate's own `src/proto/proxy_protocol.rs` (so the tests do not trust the code they
//! test): a byte-by-byte header encoder, a header parser for recording backends, an HTTP
//! backend that records the header each upstream connection started with, an L4 forwarder that
//! prepends a v2 header (what HAProxy `mode tcp` + `send-proxy-v2` or an NLB does), and client
//! sockets bound to a chosen loopback source address.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::wire::BufStream;

/// The v2 signature, spec section 2.2: `\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A`.
pub const SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// A v1 line `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` (both addresses of one family).
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// `PROXY UNKNOWN\r\n`: the receiver keeps the connection's own addresses.
pub fn v1_unknown() -> Vec<u8> {
    b"PROXY UNKNOWN\r\n".to_vec()
}

/// A v2 header from its raw fields: version/command byte, family/transport byte, and the bytes
/// after the length (address block plus TLVs); the length is the body's.
pub fn v2_raw(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = SIG.to_vec();
    out.push(ver_cmd);
    out.push(fam);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A v2 PROXY header (version 2 = 0x2_, command PROXY = 0x_1) for TCP over IPv4 (0x11) or IPv6
/// (0x21), followed by `tlvs` (type, value): each TLV is type, 2-byte length, value.
pub fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let fam = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("v2: mixed families"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (t, v) in tlvs {
        body.push(*t);
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
    }
    v2_raw(0x21, fam, &body)
}

/// A v2 LOCAL header (command 0x0, family AF_UNSPEC, no addresses): health checks of an L4 tier.
pub fn v2_local() -> Vec<u8> {
    v2_raw(0x20, 0x00, &[])
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// What a recording server found at the start of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    /// No PROXY header: the connection started with the protocol.
    None,
    /// v1 with (source, destination), or `None` for UNKNOWN.
    V1(Option<(SocketAddr, SocketAddr)>),
    /// v2 PROXY with (source, destination), or `None` for AF_UNSPEC.
    V2(Option<(SocketAddr, SocketAddr)>),
    /// v2 LOCAL.
    V2Local,
}

impl Header {
    pub fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self {
            Header::V1(a) | Header::V2(a) => *a,
            _ => None,
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads a PROXY header off `s` (exactly its bytes, nothing after it), or `Header::None` when
/// the first bytes cannot start one (they stay unread). Strict: anything malformed is an error.
pub fn read_header(s: &mut TcpStream) -> io::Result<Header> {
    let mut peek = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let n = s.peek(&mut peek)?;
        if n == 0 {
            return Err(bad("closed before any byte"));
        }
        // Enough to tell: "PROXY " or the 12-byte signature, or a mismatch already.
        let want = if peek[0] == b'P' { 6 } else { 12 };
        let prefix_ok = if peek[0] == b'P' {
            b"PROXY "[..n.min(6)] == peek[..n.min(6)]
        } else {
            SIG[..n.min(12)] == peek[..n.min(12)]
        };
        if n >= want || !prefix_ok || Instant::now() > deadline {
            break n;
        }
        thread::sleep(Duration::from_millis(2));
    };
    if n >= 6 && &peek[..6] == b"PROXY " {
        // v1: up to 107 bytes ending in CRLF.
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err(bad("v1 line longer than 107 bytes"));
            }
            s.read_exact(&mut b)?;
            line.push(b[0]);
        }
        let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| bad("v1 not ASCII"))?;
        let f: Vec<&str> = text.split(' ').collect();
        if f.get(1) == Some(&"UNKNOWN") {
            return Ok(Header::V1(None));
        }
        if f.len() != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
            return Err(bad(format!("v1 fields: {text:?}")));
        }
        let ip = |t: &str| -> io::Result<IpAddr> {
            let ip: IpAddr = t.parse().map_err(|_| bad(format!("v1 address {t:?}")))?;
            if ip.is_ipv4() != (f[1] == "TCP4") {
                return Err(bad(format!("v1 address {t:?} is not {}", f[1])));
            }
            Ok(ip)
        };
        let port = |t: &str| -> io::Result<u16> {
            if t.len() > 1 && t.starts_with('0') {
                return Err(bad(format!("v1 port {t:?} has a leading zero")));
            }
            t.parse().map_err(|_| bad(format!("v1 port {t:?}")))
        };
        let src = SocketAddr::new(ip(f[2])?, port(f[4])?);
        let dst = SocketAddr::new(ip(f[3])?, port(f[5])?);
        return Ok(Header::V1(Some((src, dst))));
    }
    if n >= 12 && peek[..12] == SIG {
        let mut fixed = [0u8; 16];
        s.read_exact(&mut fixed)?;
        if fixed[12] >> 4 != 2 {
            return Err(bad(format!("v2 version {}", fixed[12] >> 4)));
        }
        let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        return match (fixed[12] & 0x0F, fixed[13]) {
            (0, _) => Ok(Header::V2Local),
            (1, 0x00) => Ok(Header::V2(None)),
            (1, 0x11) if len >= 12 => {
                let ip = |i: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        body[i],
                        body[i + 1],
                        body[i + 2],
                        body[i + 3],
                    ))
                };
                let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
                Ok(Header::V2(Some((
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                ))))
            }
            (1, 0x21) if len >= 36 => {
                let ip = |i: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&body[i..i + 16]);
                    IpAddr::V6(Ipv6Addr::from(o))
                };
                let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
                Ok(Header::V2(Some((
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                ))))
            }
            (c, f) => Err(bad(format!("v2 command {c} family {f:#x} length {len}"))),
        };
    }
    Ok(Header::None)
}

/// One upstream connection as a [`PpBackend`] saw it.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    pub id: usize,
    /// The TCP peer (shardgate's outgoing address).
    pub peer: SocketAddr,
    pub header: Result<Header, String>,
    /// `(path, X-Forwarded-For)` of every request on it.
    pub requests: Vec<(String, String)>,
}

struct PpState {
    conns: Mutex<Vec<ConnRecord>>,
    stop: AtomicBool,
}

/// An HTTP/1.1 backend that reads a PROXY header (if any) at the start of each connection,
/// records it, then answers every request with `conn=ID hdr=SRC>DST xff=XFF` (header `X-Conn:
/// ID`) and keeps the connection alive. A connection whose header is malformed is closed.
pub struct PpBackend {
    pub addr: SocketAddr,
    state: Arc<PpState>,
}

impl PpBackend {
    pub fn start() -> PpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(PpState {
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || pp_serve(&st, conn));
            }
        });
        PpBackend { addr, state }
    }

    pub fn conns(&self) -> Vec<ConnRecord> {
        self.state.conns.lock().unwrap().clone()
    }

    /// Connections that carried at least one request (probes and health checks excluded).
    pub fn used_conns(&self) -> Vec<ConnRecord> {
        self.conns()
            .into_iter()
            .filter(|c| !c.requests.is_empty())
            .collect()
    }
}

impl Drop for PpBackend {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn pp_serve(st: &PpState, mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let peer = s.peer_addr().unwrap();
    let header = read_header(&mut s).map_err(|e| e.to_string());
    let id = {
        let mut conns = st.conns.lock().unwrap();
        let id = conns.len();
        conns.push(ConnRecord {
            id,
            peer,
            header: header.clone(),
            requests: Vec::new(),
        });
        id
    };
    let Ok(header) = header else {
        let _ = s.shutdown(Shutdown::Both);
        return;
    };
    let hdr = match header.addrs() {
        Some((a, b)) => format!("{a}>{b}"),
        None => format!("{header:?}"),
    };
    let mut io = BufStream::new(s);
    io.set_read_timeout(Duration::from_secs(30));
    loop {
        let head = match io.read_head() {
            Ok(Some(h)) => h,
            _ => return,
        };
        if let Ok(Some(n)) = head.content_length() {
            if io.read_len(n, &mut |_| {}).is_err() {
                return;
            }
        }
        let path = head.start_line.split(' ').nth(1).unwrap_or("").to_string();
        let xff = head.header("x-forwarded-for").unwrap_or("").to_string();
        st.conns.lock().unwrap()[id]
            .requests
            .push((path, xff.clone()));
        let body = format!("conn={id} hdr={hdr} xff={xff}");
        let out = format!(
            "HTTP/1.1 200 OK\r\nX-Conn: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if io.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// A TCP connection to `dst` from `src_ip` (any port): a client on another loopback address.
pub fn connect_from(src_ip: &str, dst: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let src: IpAddr = src_ip.parse().unwrap();
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    Ok(s)
}

/// Reads until EOF, reset or `timeout`; returns the bytes and whether the peer closed.
pub fn read_to_close(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

/// An L4 forwarder (an HAProxy `mode tcp` with `send-proxy-v2`, an NLB with proxy protocol v2):
/// accepts on `listen`, picks a target round-robin among those not drained (a target whose
/// connect fails is skipped, as a health-checked tier would), writes a PROXY v2 header naming
/// the client's real address and the forwarder's own, then relays bytes both ways.
pub struct Forwarder {
    pub addr: SocketAddr,
    state: Arc<FwdState>,
}

struct FwdState {
    targets: Vec<SocketAddr>,
    drained: Vec<AtomicBool>,
    /// Connections handed to each target.
    sent: Vec<AtomicUsize>,
    next: AtomicUsize,
    stop: AtomicBool,
    opts: FwdOpts,
}

/// How a [`Forwarder`] talks to its targets.
#[derive(Clone, Debug, Default)]
pub struct FwdOpts {
    /// A v1 header instead of v2.
    pub v1: bool,
    /// No header at all (a plain TCP relay).
    pub no_header: bool,
    /// The source the header claims instead of the client's real one.
    pub claim: Option<SocketAddr>,
    /// The local address the forwarder connects from (any port).
    pub bind: Option<&'static str>,
}

impl Forwarder {
    pub fn start(listen: SocketAddr, targets: Vec<SocketAddr>) -> Forwarder {
        Forwarder::start_opts(listen, targets, FwdOpts::default())
    }

    pub fn start_opts(listen: SocketAddr, targets: Vec<SocketAddr>, opts: FwdOpts) -> Forwarder {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("forwarder bind {listen}: {e}"));
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FwdState {
            drained: targets.iter().map(|_| AtomicBool::new(false)).collect(),
            sent: targets.iter().map(|_| AtomicUsize::new(0)).collect(),
            targets,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            opts,
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || forward(&st, conn));
            }
        });
        Forwarder { addr, state }
    }

    /// Takes target `i` out of the rotation (the operator's first step before stopping it).
    pub fn drain(&self, i: usize) {
        self.state.drained[i].store(true, Ordering::SeqCst);
    }

    /// Puts target `i` back in the rotation (a tier whose health check has not noticed yet that
    /// it is gone: its connects fail and the next target is tried).
    pub fn undrain(&self, i: usize) {
        self.state.drained[i].store(false, Ordering::SeqCst);
    }

    /// Connections handed to target `i` so far.
    pub fn sent(&self, i: usize) -> usize {
        self.state.sent[i].load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn forward(st: &FwdState, client: TcpStream) {
    let Ok(peer) = client.peer_addr() else { return };
    let Ok(local) = client.local_addr() else {
        return;
    };
    let n = st.targets.len();
    let start = st.next.fetch_add(1, Ordering::SeqCst);
    let mut upstream = None;
    for k in 0..n {
        let i = (start + k) % n;
        if st.drained[i].load(Ordering::SeqCst) {
            continue;
        }
        let conn = match st.opts.bind {
            Some(ip) => connect_from(ip, st.targets[i]),
            None => TcpStream::connect_timeout(&st.targets[i], Duration::from_secs(2)),
        };
        if let Ok(s) = conn {
            let _ = s.set_read_timeout(None);
            let _ = s.set_write_timeout(None);
            st.sent[i].fetch_add(1, Ordering::SeqCst);
            upstream = Some(s);
            break;
        }
    }
    let Some(mut up) = upstream else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let src = st.opts.claim.unwrap_or(peer);
    let header = if st.opts.no_header {
        Vec::new()
    } else if st.opts.v1 {
        v1(src, local)
    } else {
        v2(src, local, &[])
    };
    if up.write_all(&header).is_err() {
        return;
    }
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    let t = thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let mut client = client;
    let _ = io::copy(&mut up, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = t.join();
}
