//! A small authoritative DNS server for the black-box tests: names a test sets ([`DnsServer::
//! set_a`], [`DnsServer::set_srv`]...) answered over UDP and, on the same port, over TCP (for
//! answers that do not fit a 512-byte datagram, sent truncated with TC over UDP), every other
//! name NXDOMAIN, every TTL 1 s. One thread per transport, polling a stop flag every 50 ms, so
//! dropping the server stops it promptly.
//!
//! Written from RFC 1035 independently of `src/dns`: a test oracle must not share code with
//! what it tests.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(50);
const TTL: u32 = 1;
const T_A: u16 = 1;
const T_AAAA: u16 = 28;
const T_SRV: u16 = 33;

#[derive(Default, Clone)]
struct Entry {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    /// (priority, weight, port, target)
    srv: Vec<(u16, u16, u16, String)>,
}

#[derive(Default)]
struct State {
    stop: AtomicBool,
    queries: AtomicUsize,
    /// Answer every UDP query with TC set and no records (the client must use TCP).
    truncate: AtomicBool,
    /// Count queries but answer none (a server that times out).
    silent: AtomicBool,
    zone: Mutex<HashMap<String, Entry>>,
}

/// The test DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    threads: Vec<thread::JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[allow(dead_code)]
impl DnsServer {
    /// Binds UDP and TCP on one free 127.0.0.1 port.
    pub fn start() -> DnsServer {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP 127.0.0.1:0");
            let addr = udp.local_addr().unwrap();
            // The TCP port may be taken by someone else: try another.
            if let Ok(tcp) = TcpListener::bind(addr) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let state = Arc::new(State::default());
        let s = state.clone();
        let u = thread::Builder::new()
            .name("test-dns-udp".into())
            .spawn(move || serve_udp(udp, s))
            .unwrap();
        let s = state.clone();
        let t = thread::Builder::new()
            .name("test-dns-tcp".into())
            .spawn(move || serve_tcp(tcp, s))
            .unwrap();
        DnsServer {
            addr,
            state,
            threads: vec![u, t],
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Entry)) {
        let mut zone = self.state.zone.lock().unwrap();
        f(zone.entry(key(name)).or_default());
    }

    /// The A records of `name` (an empty list: the name exists without addresses).
    pub fn set_a(&self, name: &str, addrs: Vec<Ipv4Addr>) {
        self.edit(name, |e| e.a = addrs);
    }

    pub fn set_aaaa(&self, name: &str, addrs: Vec<Ipv6Addr>) {
        self.edit(name, |e| e.aaaa = addrs);
    }

    /// The SRV records of `name`: (priority, weight, port, target). Answers carry the
    /// targets' A and AAAA records, when set, in the additional section.
    pub fn set_srv(&self, name: &str, records: Vec<(u16, u16, u16, &str)>) {
        let records = records
            .into_iter()
            .map(|(p, w, port, t)| (p, w, port, t.to_string()))
            .collect();
        self.edit(name, |e| e.srv = records);
    }

    /// Forgets `name`: queries for it get NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.state.zone.lock().unwrap().remove(&key(name));
    }

    /// Queries received so far, over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.state.queries.load(Ordering::SeqCst)
    }

    /// Truncate every UDP answer (TC, no records), so that clients must ask over TCP.
    pub fn set_truncate(&self, on: bool) {
        self.state.truncate.store(on, Ordering::SeqCst);
    }

    /// Stop answering (queries are still counted), or answer again.
    pub fn set_silent(&self, on: bool) {
        self.state.silent.store(on, Ordering::SeqCst);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(sock: UdpSocket, state: Arc<State>) {
    let mut buf = [0u8; 1500];
    while !state.stop.load(Ordering::SeqCst) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let Some(reply) = answer(&state, &buf[..n], true) else {
            continue;
        };
        let _ = sock.send_to(&reply, from);
    }
}

fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => serve_conn(conn, &state),
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Length-prefixed queries on one connection until EOF, an error or the stop flag.
fn serve_conn(mut conn: TcpStream, state: &State) {
    if conn.set_nonblocking(false).is_err() || conn.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !state.stop.load(Ordering::SeqCst) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
            if pending.len() < 2 + len {
                break;
            }
            let query: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            if let Some(reply) = answer(state, &query, false) {
                let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if conn.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }
}

/// The question of a query: ID, RD flag, the name (as sent), its wire bytes, type, class.
struct Question {
    id: u16,
    rd: bool,
    name: String,
    wire: Vec<u8>,
    qtype: u16,
    qclass: u16,
}

fn read_question(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let n = *q.get(i)? as usize;
        if n == 0 {
            break;
        }
        if n > 63 {
            return None; // no compression in a question we accept
        }
        labels.push(String::from_utf8(q.get(i + 1..i + 1 + n)?.to_vec()).ok()?);
        i += 1 + n;
    }
    let fixed = q.get(i + 1..i + 5)?;
    Some(Question {
        id: u16::from_be_bytes([q[0], q[1]]),
        rd: q[2] & 0x01 != 0,
        name: labels.join("."),
        wire: q[12..i + 1].to_vec(),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    })
}

fn name_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// One resource record: owner (wire bytes), type, class IN, TTL 1, RDATA.
fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&TTL.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

fn addr_records(owner: &[u8], e: &Entry, want_a: bool, want_aaaa: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if want_a {
        out.extend(e.a.iter().map(|ip| record(owner, T_A, &ip.octets())));
    }
    if want_aaaa {
        out.extend(e.aaaa.iter().map(|ip| record(owner, T_AAAA, &ip.octets())));
    }
    out
}

/// The response to one query, or None for a packet we do not answer.
fn answer(state: &State, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = read_question(query)?;
    state.queries.fetch_add(1, Ordering::SeqCst);
    if state.silent.load(Ordering::SeqCst) {
        return None;
    }
    // Answers name their owner by a pointer to the question's name at offset 12.
    let owner = [0xC0, 12];
    let (rcode, answers, additional) = {
        let zone = state.zone.lock().unwrap();
        match zone.get(&key(&q.name)) {
            _ if q.qclass != 1 => (4u16, Vec::new(), Vec::new()), // NOTIMP
            None => (3, Vec::new(), Vec::new()),
            Some(e) => match q.qtype {
                T_A | T_AAAA => (
                    0,
                    addr_records(&owner, e, q.qtype == T_A, q.qtype == T_AAAA),
                    Vec::new(),
                ),
                T_SRV => {
                    let answers = e
                        .srv
                        .iter()
                        .map(|(prio, weight, port, target)| {
                            let mut rd = Vec::new();
                            for x in [prio, weight, port] {
                                rd.extend_from_slice(&x.to_be_bytes());
                            }
                            rd.extend_from_slice(&name_wire(target));
                            record(&owner, T_SRV, &rd)
                        })
                        .collect();
                    let mut additional = Vec::new();
                    let mut done: Vec<String> = Vec::new();
                    for (_, _, _, target) in &e.srv {
                        let k = key(target);
                        if done.contains(&k) {
                            continue;
                        }
                        if let Some(t) = zone.get(&k) {
                            additional.extend(addr_records(&name_wire(target), t, true, true));
                        }
                        done.push(k);
                    }
                    (0, answers, additional)
                }
                _ => (0, Vec::new(), Vec::new()),
            },
        }
    };
    let build = |tc: bool, answers: &[Vec<u8>], additional: &[Vec<u8>]| {
        // QR, AA, RD copied, RA; TC when truncated.
        let flags: u16 =
            0x8480 | if q.rd { 0x0100 } else { 0 } | if tc { 0x0200 } else { 0 } | rcode;
        let mut out = q.id.to_be_bytes().to_vec();
        out.extend_from_slice(&flags.to_be_bytes());
        for count in [1, answers.len(), 0, additional.len()] {
            out.extend_from_slice(&(count as u16).to_be_bytes());
        }
        out.extend_from_slice(&q.wire);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        for r in answers.iter().chain(additional) {
            out.extend_from_slice(r);
        }
        out
    };
    let full = build(false, &answers, &additional);
    if udp && (full.len() > 512 || state.truncate.load(Ordering::SeqCst)) {
        return Some(build(true, &[], &[]));
    }
    Some(full)
}
