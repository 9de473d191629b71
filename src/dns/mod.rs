//! DNS for server addresses given as names: a small blocking stub resolver (UDP, TCP when the
//! answer is truncated) for A, AAAA and SRV, run from a background thread, never from a shard.
//!
//! Hand-written rather than a crate because the proxy needs little (re-resolve a few names
//! every `resolve_interval`, read SRV records for `discover`) and every byte of an answer is
//! untrusted input: [`wire`] is pure and fuzzed (`fuzz/fuzz_targets/dns_response.rs`). No
//! cache, no search domains, no `/etc/hosts`: names are queried as written, absolute.
pub(crate) mod refresh;
pub mod wire;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wire::{Answer, QType};

/// The resolver's defaults, glibc's: 5 s per try, each server tried twice.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// glibc's caps on `options timeout:` and `attempts:`.
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
/// SRV targets without additional-section addresses looked up one by one, at most: a
/// hostile or broken server listing thousands of targets must not hold the resolver thread
/// for thousands of lookups. Targets past this keep no addresses.
const MAX_SRV_LOOKUPS: usize = 32;
/// The largest datagram we read; without EDNS a server sends at most 512 bytes, and sets TC.
const UDP_BUF: usize = 4096;

/// A blocking stub resolver: each query goes to `servers` in order, `attempts` rounds, each
/// try waiting up to `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolver {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: u32,
}

/// One SRV target with its addresses: from the response's additional section when it had
/// them, else from an A/AAAA lookup of the target (empty when that lookup failed, or past the
/// first 32 targets needing one: the caller skips the target and keeps the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub addrs: Vec<IpAddr>,
}

/// What went wrong, without the name and server (those are in [`Error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The name could not be queried, or an answer was refused or said no
    /// ([`wire::Error::NxDomain`] for a name that does not exist).
    Wire(wire::Error),
    /// The name exists but has none of the records asked for (NODATA), or only SRV records
    /// whose target is `.`.
    NoRecords(&'static str),
    /// No server answered within the timeout, over `tries` tries.
    Timeout { tries: u32 },
    /// A socket error (connection refused by a server, no route...).
    Io(io::ErrorKind, String),
    /// The resolver has no server to ask.
    NoServers,
}

/// A failed lookup: what, for which name, and from which server when one answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub name: String,
    pub kind: ErrorKind,
    pub server: Option<SocketAddr>,
}

impl Error {
    fn new(name: &str, kind: ErrorKind, server: Option<SocketAddr>) -> Error {
        Error {
            name: name.to_string(),
            kind,
            server,
        }
    }

    /// The name does not exist (NXDOMAIN from a server).
    pub fn is_nxdomain(&self) -> bool {
        self.kind == ErrorKind::Wire(wire::Error::NxDomain)
    }

    /// How much a failure says, to report the most telling of several: a server's answer,
    /// then a socket error, then a timeout.
    fn rank(&self) -> u8 {
        match self.kind {
            ErrorKind::Wire(_) | ErrorKind::NoRecords(_) => 3,
            ErrorKind::Io(..) => 2,
            ErrorKind::Timeout { .. } => 1,
            ErrorKind::NoServers => 0,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns: {}: ", self.name)?;
        match &self.kind {
            ErrorKind::Wire(e) => write!(f, "{e}")?,
            ErrorKind::NoRecords(what) => write!(f, "no {what}")?,
            ErrorKind::Timeout { tries } => write!(f, "no answer after {tries} tries")?,
            ErrorKind::Io(_, msg) => f.write_str(msg)?,
            ErrorKind::NoServers => f.write_str("no name server configured")?,
        }
        if let Some(server) = self.server {
            write!(f, " from {server}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// A query ID nobody can guess from the previous one without watching: the clock's
/// nanoseconds mixed with a counter.
fn next_id() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 48) as u16
}

/// The result of one try at one server.
enum Try {
    Answer(Answer),
    /// A definite answer from the server: NXDOMAIN. Asking another server would not help.
    Final(wire::Error),
    /// Ask the next server (or the same again later).
    Next(ErrorKind),
}

impl Resolver {
    /// A resolver asking `servers` with the default timeout and attempts.
    pub fn new(servers: Vec<SocketAddr>) -> Resolver {
        Resolver {
            servers,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// Reads a resolv.conf: `nameserver` lines (IPv4, or IPv6 with an optional `%scope`), port
    /// 53; `options timeout:N attempts:N` (capped at 30 s and 5 like glibc). No nameserver, or
    /// no file at all, means 127.0.0.1:53. Everything else is ignored.
    pub fn from_resolv_conf(path: impl AsRef<Path>) -> io::Result<Resolver> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Resolver::parse_resolv_conf(&text))
    }

    fn parse_resolv_conf(text: &str) -> Resolver {
        let mut r = Resolver::new(Vec::new());
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(addr) = words.next().and_then(nameserver_addr) {
                        r.servers.push(addr);
                    }
                }
                Some("options") => {
                    for opt in words {
                        if let Some(n) = opt.strip_prefix("timeout:").and_then(|n| n.parse().ok()) {
                            r.timeout = Duration::from_secs(u64::min(n, MAX_TIMEOUT_SECS).max(1));
                        } else if let Some(n) =
                            opt.strip_prefix("attempts:").and_then(|n| n.parse().ok())
                        {
                            r.attempts = u32::min(n, MAX_ATTEMPTS).max(1);
                        }
                    }
                }
                _ => {}
            }
        }
        if r.servers.is_empty() {
            r.servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        r
    }

    /// The addresses of `host`: its A records, then its AAAA records. An IP literal (IPv6
    /// optionally in brackets) is returned as is without a query. An error when the name does
    /// not exist, or when neither query gives an address (naming the first query's failure if
    /// it failed).
    pub fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Error> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let v4 = self.query(host, QType::A);
        if let Err(e) = &v4 {
            if e.is_nxdomain() {
                return Err(e.clone());
            }
        }
        let v6 = self.query(host, QType::Aaaa);
        let mut addrs = Vec::new();
        let mut first_err = None;
        for r in [v4, v6] {
            match r {
                Ok(a) => addrs.extend(a.addrs),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !addrs.is_empty() {
            let mut seen = Vec::with_capacity(addrs.len());
            addrs.retain(|a| {
                let new = !seen.contains(a);
                seen.push(*a);
                new
            });
            return Ok(addrs);
        }
        Err(first_err.unwrap_or_else(|| {
            Error::new(host, ErrorKind::NoRecords("addresses (A or AAAA)"), None)
        }))
    }

    /// The SRV records of `name` (e.g. `_http._tcp.example.com`), ordered by priority (the
    /// answer's order within one priority), each with its target's addresses. Targets `.`
    /// ("no such service here") are left out; an error when nothing else is left.
    pub fn lookup_srv(&self, name: &str) -> Result<Vec<SrvTarget>, Error> {
        let answer = self.query(name, QType::Srv)?;
        let mut out: Vec<SrvTarget> = Vec::with_capacity(answer.srv.len());
        let mut lookups = 0;
        for s in &answer.srv {
            if s.target == "." {
                continue;
            }
            let mut addrs = answer.additional_for(&s.target);
            if addrs.is_empty() {
                // Several records may share a target: look it up once.
                match out
                    .iter()
                    .find(|t| t.target.eq_ignore_ascii_case(&s.target))
                {
                    Some(t) => addrs = t.addrs.clone(),
                    None if lookups < MAX_SRV_LOOKUPS => {
                        lookups += 1;
                        addrs = self.lookup_ip(&s.target).unwrap_or_default();
                    }
                    None => {}
                }
            }
            out.push(SrvTarget {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.clone(),
                addrs,
            });
        }
        if out.is_empty() {
            return Err(Error::new(name, ErrorKind::NoRecords("SRV records"), None));
        }
        out.sort_by_key(|t| t.priority);
        Ok(out)
    }

    /// One question, asked of each server in turn for `attempts` rounds until one answers.
    pub fn query(&self, name: &str, qtype: QType) -> Result<Answer, Error> {
        let id = next_id();
        let packet =
            wire::query(id, name, qtype).map_err(|e| Error::new(name, ErrorKind::Wire(e), None))?;
        let mut worst: Option<Error> = None;
        let mut tries = 0;
        for _ in 0..self.attempts.max(1) {
            for &server in &self.servers {
                tries += 1;
                let err = match self.try_udp(server, &packet, id, name, qtype) {
                    Try::Answer(a) => return Ok(a),
                    Try::Final(e) => {
                        return Err(Error::new(name, ErrorKind::Wire(e), Some(server)))
                    }
                    Try::Next(ErrorKind::Timeout { .. }) => {
                        Error::new(name, ErrorKind::Timeout { tries }, None)
                    }
                    Try::Next(kind) => Error::new(name, kind, Some(server)),
                };
                if worst.as_ref().is_none_or(|w| err.rank() >= w.rank()) {
                    worst = Some(err);
                }
            }
        }
        Err(worst.unwrap_or_else(|| Error::new(name, ErrorKind::NoServers, None)))
    }

    fn try_udp(&self, server: SocketAddr, packet: &[u8], id: u16, name: &str, qtype: QType) -> Try {
        match self.exchange_udp(server, packet, id, name, qtype) {
            Ok(Ok(answer)) => Try::Answer(answer),
            Ok(Err(wire::Error::Truncated)) => {
                match self.exchange_tcp(server, packet, id, name, qtype) {
                    Ok(Ok(answer)) => Try::Answer(answer),
                    Ok(Err(e)) => judge(e),
                    Err(e) => Try::Next(io_kind(e, "TCP")),
                }
            }
            Ok(Err(e)) => judge(e),
            Err(e) => Try::Next(io_kind(e, "UDP")),
        }
    }

    /// Sends the query over UDP from an ephemeral port and waits for its answer, ignoring
    /// datagrams from other addresses and answers to other queries (another ID, another
    /// question) until the timeout.
    fn exchange_udp(
        &self,
        server: SocketAddr,
        packet: &[u8],
        id: u16,
        name: &str,
        qtype: QType,
    ) -> io::Result<Result<Answer, wire::Error>> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local)?;
        // Connected: the kernel drops datagrams from elsewhere, and a port nobody listens on
        // fails the try at once (ICMP port unreachable) instead of after the timeout.
        sock.connect(server)?;
        sock.send(packet)?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; UDP_BUF];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            sock.set_read_timeout(Some(left))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::ErrorKind::TimedOut.into())
                }
                Err(e) => return Err(e),
            };
            if from != server {
                continue;
            }
            match wire::parse_response(buf.get(..n).unwrap_or_default(), id, name, qtype) {
                Err(e) if e.is_foreign() => continue,
                r => return Ok(r),
            }
        }
    }

    /// The same query over TCP (RFC 1035 §4.2.2: a 2-byte length before each message).
    fn exchange_tcp(
        &self,
        server: SocketAddr,
        packet: &[u8],
        id: u16,
        name: &str,
        qtype: QType,
    ) -> io::Result<Result<Answer, wire::Error>> {
        let deadline = Instant::now() + self.timeout;
        let left = || {
            let d = deadline.saturating_duration_since(Instant::now());
            if d.is_zero() {
                Err(io::Error::from(io::ErrorKind::TimedOut))
            } else {
                Ok(d)
            }
        };
        let mut stream = TcpStream::connect_timeout(&server, left()?)?;
        stream.set_write_timeout(Some(left()?))?;
        let len = u16::try_from(packet.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut msg = Vec::with_capacity(packet.len() + 2);
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(packet);
        stream.write_all(&msg)?;
        // One read timeout for the whole answer would let a trickling server hold us: check
        // the deadline before every read.
        let mut read_exact = |buf: &mut [u8]| -> io::Result<()> {
            let mut got = 0;
            while got < buf.len() {
                stream.set_read_timeout(Some(left()?))?;
                match stream.read(buf.get_mut(got..).unwrap_or_default()) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(io::ErrorKind::TimedOut.into())
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        let mut len = [0u8; 2];
        read_exact(&mut len)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        read_exact(&mut buf)?;
        Ok(wire::parse_response(&buf, id, name, qtype))
    }
}

/// NXDOMAIN ends the query; any other refusal (SERVFAIL, a malformed or foreign answer over
/// TCP, TC over TCP) tries the next server.
fn judge(e: wire::Error) -> Try {
    match e {
        wire::Error::NxDomain | wire::Error::BadName(_) => Try::Final(e),
        e => Try::Next(ErrorKind::Wire(e)),
    }
}

fn io_kind(e: io::Error, over: &str) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout { tries: 0 },
        k => ErrorKind::Io(k, format!("{over}: {e}")),
    }
}

/// A `nameserver` address: IPv4, or IPv6 with an optional `%scope` (an interface name or
/// index), port 53.
fn nameserver_addr(s: &str) -> Option<SocketAddr> {
    let (ip, scope) = match s.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (s, None),
    };
    match (ip.parse::<IpAddr>().ok()?, scope) {
        (ip, None) => Some(SocketAddr::new(ip, 53)),
        (IpAddr::V6(ip), Some(scope)) => {
            let id = match scope.parse::<u32>() {
                Ok(n) => n,
                Err(_) => if_index(scope)?,
            };
            Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, id)))
        }
        (IpAddr::V4(_), Some(_)) => None,
    }
}

fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let n = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (n != 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    use std::thread;

    /// A question as the test server reads it.
    struct Q {
        id: u16,
        name: String,
        qtype: u16,
        tcp: bool,
    }

    enum Reply {
        Send(Vec<u8>),
        /// Sent from another socket (another source port).
        FromElsewhere(Vec<u8>),
    }

    /// A record for [`resp`]: owner, type, RDATA.
    type Rec = (&'static str, u16, Vec<u8>);

    type Handler = dyn Fn(&Q) -> Vec<Reply> + Send + Sync;

    /// A UDP (and TCP, same port) server on 127.0.0.1 answering with `handler`.
    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        queries: Arc<AtomicUsize>,
        threads: Vec<thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    fn read_q(buf: &[u8], tcp: bool) -> Q {
        let mut pos = 12;
        let mut labels = Vec::new();
        while buf[pos] != 0 {
            let n = buf[pos] as usize;
            labels.push(String::from_utf8(buf[pos + 1..pos + 1 + n].to_vec()).unwrap());
            pos += 1 + n;
        }
        Q {
            id: u16::from_be_bytes([buf[0], buf[1]]),
            name: labels.join("."),
            qtype: u16::from_be_bytes([buf[pos + 1], buf[pos + 2]]),
            tcp,
        }
    }

    fn enc_name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.').filter(|l| !l.is_empty()) {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    /// A response to `q`: flags low bits (RCODE, TC), answer and additional records as
    /// (owner, type, rdata).
    fn resp(
        q: &Q,
        id: u16,
        extra_flags: u16,
        an: &[(&str, u16, Vec<u8>)],
        ar: &[(&str, u16, Vec<u8>)],
    ) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        v.extend_from_slice(&(0x8180u16 | extra_flags).to_be_bytes());
        for c in [1, an.len() as u16, 0, ar.len() as u16] {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v.extend_from_slice(&enc_name(&q.name));
        v.extend_from_slice(&q.qtype.to_be_bytes());
        v.extend_from_slice(&[0, 1]);
        for (owner, t, rdata) in an.iter().chain(ar) {
            v.extend_from_slice(&enc_name(owner));
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
            v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            v.extend_from_slice(rdata);
        }
        v
    }

    fn srv_rd(prio: u16, weight: u16, port: u16, target: &str) -> Vec<u8> {
        let mut v = [prio, weight, port]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect::<Vec<_>>();
        v.extend_from_slice(&enc_name(target));
        v
    }

    fn serve(handler: impl Fn(&Q) -> Vec<Reply> + Send + Sync + 'static) -> Server {
        let handler: Arc<Handler> = Arc::new(handler);
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let (h, st, n) = (handler.clone(), stop.clone(), queries.clone());
        let u = thread::spawn(move || {
            let other = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((len, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                n.fetch_add(1, Ordering::Relaxed);
                for r in h(&read_q(&buf[..len], false)) {
                    let _ = match r {
                        Reply::Send(b) => udp.send_to(&b, from),
                        Reply::FromElsewhere(b) => other.send_to(&b, from),
                    };
                }
            }
        });
        let (h, st, n) = (handler, stop.clone(), queries.clone());
        let t = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = tcp.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                let mut len = [0u8; 2];
                c.read_exact(&mut len).unwrap();
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                c.read_exact(&mut buf).unwrap();
                n.fetch_add(1, Ordering::Relaxed);
                for r in h(&read_q(&buf, true)) {
                    if let Reply::Send(b) = r {
                        c.write_all(&(b.len() as u16).to_be_bytes()).unwrap();
                        c.write_all(&b).unwrap();
                    }
                }
            }
        });
        Server {
            addr,
            stop,
            queries,
            threads: vec![u, t],
        }
    }

    fn resolver(servers: &[SocketAddr]) -> Resolver {
        Resolver {
            servers: servers.to_vec(),
            timeout: Duration::from_millis(500),
            attempts: 2,
        }
    }

    /// Names: web.test (A 10.0.0.1, 10.0.0.2, AAAA fd00::1), v6.test (AAAA only), alias.test
    /// (CNAME web.test), _http._tcp.test (SRV to web.test with its A records as additionals,
    /// to v6.test without, and to `.`); anything else NXDOMAIN.
    fn zone(q: &Q) -> Vec<Reply> {
        let a = |ip: [u8; 4]| ip.to_vec();
        let aaaa = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets().to_vec();
        let (rcode, an, ar): (u16, Vec<Rec>, Vec<Rec>) =
            match (q.name.to_ascii_lowercase().as_str(), q.qtype) {
                ("web.test", 1) => (
                    0,
                    vec![
                        ("web.test", 1, a([10, 0, 0, 1])),
                        ("web.test", 1, a([10, 0, 0, 2])),
                    ],
                    vec![],
                ),
                ("web.test", 28) => (0, vec![("web.test", 28, aaaa("fd00::1"))], vec![]),
                ("v6.test", 1) => (0, vec![], vec![]),
                ("v6.test", 28) => (0, vec![("v6.test", 28, aaaa("fd00::6"))], vec![]),
                ("alias.test", 1) => (
                    0,
                    vec![
                        ("alias.test", 5, enc_name("web.test")),
                        ("web.test", 1, a([10, 0, 0, 1])),
                    ],
                    vec![],
                ),
                ("alias.test", 28) => (0, vec![("alias.test", 5, enc_name("web.test"))], vec![]),
                ("_http._tcp.test", 33) => (
                    0,
                    vec![
                        ("_http._tcp.test", 33, srv_rd(20, 1, 9000, "v6.test")),
                        ("_http._tcp.test", 33, srv_rd(10, 5, 8080, "web.test")),
                        ("_http._tcp.test", 33, srv_rd(30, 0, 0, ".")),
                    ],
                    vec![("web.test", 1, a([10, 0, 0, 1]))],
                ),
                ("empty._tcp.test", 33) => (
                    0,
                    vec![("empty._tcp.test", 33, srv_rd(0, 0, 0, "."))],
                    vec![],
                ),
                _ => (3, vec![], vec![]),
            };
        vec![Reply::Send(resp(q, q.id, rcode, &an, &ar))]
    }

    #[test]
    fn lookup_ip_a_then_aaaa() {
        let s = serve(zone);
        let r = resolver(&[s.addr]);
        let want: Vec<IpAddr> = vec![
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            "fd00::1".parse().unwrap(),
        ];
        assert_eq!(r.lookup_ip("web.test").unwrap(), want);
        assert_eq!(r.lookup_ip("WEB.test.").unwrap(), want);
        assert_eq!(
            r.lookup_ip("v6.test").unwrap(),
            vec!["fd00::6".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup_ip("alias.test").unwrap(),
            vec![IpAddr::from([10, 0, 0, 1])]
        );
        assert_eq!(s.queries.load(Ordering::Relaxed), 8);
        // Literals: no query.
        assert_eq!(
            r.lookup_ip("192.0.2.7").unwrap(),
            vec![IpAddr::from([192, 0, 2, 7])]
        );
        assert_eq!(
            r.lookup_ip("[::1]").unwrap(),
            vec![IpAddr::from(Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(s.queries.load(Ordering::Relaxed), 8);
        let e = r.lookup_ip("bad..name").unwrap_err();
        assert_eq!(e.to_string(), "dns: bad..name: invalid name (empty label)");
    }

    #[test]
    fn nxdomain_and_nodata() {
        let s = serve(zone);
        let r = resolver(&[s.addr]);
        let e = r.lookup_ip("api.internal").unwrap_err();
        assert!(e.is_nxdomain());
        assert_eq!(
            e.to_string(),
            format!("dns: api.internal: no such name (NXDOMAIN) from {}", s.addr)
        );
        // NXDOMAIN on A: no AAAA query.
        assert_eq!(s.queries.load(Ordering::Relaxed), 1);
        let e = r.lookup_srv("empty._tcp.test").unwrap_err();
        assert_eq!(e.to_string(), "dns: empty._tcp.test: no SRV records");
        let e = r.lookup_srv("_none._tcp.test").unwrap_err();
        assert!(e.is_nxdomain(), "{e}");
    }

    #[test]
    fn lookup_srv_with_and_without_additionals() {
        let s = serve(zone);
        let r = resolver(&[s.addr]);
        let got = r.lookup_srv("_http._tcp.test").unwrap();
        assert_eq!(
            got,
            vec![
                SrvTarget {
                    priority: 10,
                    weight: 5,
                    port: 8080,
                    target: "web.test".into(),
                    addrs: vec![[10, 0, 0, 1].into()]
                },
                SrvTarget {
                    priority: 20,
                    weight: 1,
                    port: 9000,
                    target: "v6.test".into(),
                    addrs: vec!["fd00::6".parse().unwrap()]
                },
            ]
        );
        // One SRV query, then A and AAAA for v6.test only.
        assert_eq!(s.queries.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn timeout_on_a_silent_server() {
        let s = serve(|_| vec![]);
        let mut r = resolver(&[s.addr]);
        r.timeout = Duration::from_millis(150);
        let t0 = Instant::now();
        let e = r.query("web.test", QType::A).unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind, ErrorKind::Timeout { tries: 2 });
        assert_eq!(e.to_string(), "dns: web.test: no answer after 2 tries");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(s.queries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn foreign_answers_are_ignored() {
        // Before the real answer: one with another ID, one to another question, one from
        // another port, one that is a query. None of them may end the wait.
        let s = serve(|q| {
            let bad = vec![("web.test", 1, vec![6, 6, 6, 6])];
            let mut other_q = Q {
                id: q.id,
                name: "evil.test".into(),
                qtype: q.qtype,
                tcp: false,
            };
            let wrong_q = resp(&other_q, q.id, 0, &bad, &[]);
            other_q.name = q.name.clone();
            let mut query = resp(q, q.id, 0, &bad, &[]);
            query[2] &= 0x7F;
            let mut out = vec![
                Reply::Send(resp(q, q.id ^ 0x5555, 0, &bad, &[])),
                Reply::Send(wrong_q),
                Reply::FromElsewhere(resp(q, q.id, 0, &bad, &[])),
                Reply::Send(query),
            ];
            out.extend(zone(q));
            out
        });
        let r = resolver(&[s.addr]);
        assert_eq!(
            r.lookup_ip("v6.test").unwrap(),
            vec!["fd00::6".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.query("web.test", QType::A).unwrap().addrs,
            vec![IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])]
        );
    }

    #[test]
    fn truncated_answer_is_asked_again_over_tcp() {
        let s = serve(|q| {
            if q.tcp {
                zone(q)
            } else {
                vec![Reply::Send(resp(q, q.id, 0x0200, &[], &[]))]
            }
        });
        let r = resolver(&[s.addr]);
        assert_eq!(
            r.lookup_srv("_http._tcp.test").unwrap()[0].addrs,
            vec![IpAddr::from([10, 0, 0, 1])]
        );
        assert_eq!(
            r.lookup_ip("v6.test").unwrap(),
            vec!["fd00::6".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn next_server_after_a_refusal_or_a_closed_port() {
        let servfail = serve(|q| vec![Reply::Send(resp(q, q.id, 2, &[], &[]))]);
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let good = serve(zone);
        let r = resolver(&[servfail.addr, closed, good.addr]);
        let t0 = Instant::now();
        assert_eq!(
            r.lookup_ip("v6.test").unwrap(),
            vec!["fd00::6".parse::<IpAddr>().unwrap()]
        );
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        // All failing: the most telling error is reported (a server's answer over a refusal).
        let r = resolver(&[closed, servfail.addr]);
        let e = r.query("web.test", QType::A).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "dns: web.test: server failure (SERVFAIL) from {}",
                servfail.addr
            )
        );
        let e = resolver(&[closed]).query("web.test", QType::A).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Io(io::ErrorKind::ConnectionRefused, _)),
            "{e}"
        );
        assert!(e.to_string().ends_with(&format!("from {closed}")), "{e}");
    }

    #[test]
    fn resolv_conf() {
        let r = Resolver::parse_resolv_conf(
            "# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver  fd00::53 # v6\n\
             nameserver fe80::1%7\nnameserver bogus\noptions ndots:2 timeout:1 attempts:9\n",
        );
        assert_eq!(
            r.servers,
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 7)),
            ]
        );
        assert_eq!((r.timeout, r.attempts), (Duration::from_secs(1), 5));
        let r = Resolver::parse_resolv_conf("options timeout:0 attempts:0\n");
        assert_eq!(r.servers, vec![SocketAddr::from(([127, 0, 0, 1], 53))]);
        assert_eq!((r.timeout, r.attempts), (Duration::from_secs(1), 1));
        let r = Resolver::from_resolv_conf("/nonexistent/resolv.conf").unwrap();
        assert_eq!(
            r,
            Resolver::new(vec![SocketAddr::from(([127, 0, 0, 1], 53))])
        );
        let dir = std::env::temp_dir().join(format!("shardgate-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\noptions attempts:3\n").unwrap();
        let r = Resolver::from_resolv_conf(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.servers, vec![SocketAddr::from(([192, 0, 2, 1], 53))]);
        assert_eq!((r.timeout, r.attempts), (DEFAULT_TIMEOUT, 3));
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..1000).map(|_| next_id()).collect();
        assert!(ids.len() > 900, "{}", ids.len());
    }
}
