//! The black-box test harness: run the real `shardgate` binary ([`proxy::Proxy`]) in front of
//! in-process backends that answer with their own name ([`backend::Backend`]) and talk to it
//! over raw sockets ([`client::Conn`]) or curl, all on 127.0.0.1.
//!
//! Shaped after ripgrep's `tests/util.rs` (one helper that runs the real executable with a
//! config written to a temp dir) and HAProxy's `reg-tests/balance` (backends that say who they
//! are, so balancing is visible from the client). Every socket read has a timeout and every
//! spawned process is killed by PID when its guard drops, so a broken daemon fails a test
//! instead of hanging the suite.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod certs;
pub mod client;
pub mod dns;
pub mod loadgen;
pub mod observe;
pub mod origin;
pub mod prom;
pub mod proxy;
pub mod scripted;
pub mod wire;

pub use backend::{Backend, BackendOpts};
pub use client::{curl, req, Conn, Response};
pub use dns::DnsServer;
pub use proxy::Proxy;

use sha2::{Digest, Sha256};
use std::net::TcpListener;

/// `[daemon]` section used by most tests: `shards` shards, the driver under test, the control
/// socket in the proxy's temp dir.
pub fn daemon(shards: u32) -> String {
    format!(
        "[daemon]\nshards = {shards}\nio_driver = \"{{io_driver}}\"\ncontrol_socket = \"{{socket}}\"\n"
    )
}

/// A loopback port that was free a moment ago (bound to port 0 and released), never one this
/// test process handed out before: two daemons given the same port would both bind it (they
/// use SO_REUSEPORT) and share each other's connections.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The deterministic byte at `offset` of every generated body (downloads, uploads): a
/// multiplicative hash, so reordered or duplicated blocks change the digest.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (offset as u8)
}

pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sha256 of `pattern(0, len)` without materialising it twice.
pub fn pattern_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(1 << 16) as usize;
        h.update(pattern(off, n));
        off += n as u64;
    }
    hex(&h.finalize())
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    use sha1::Sha1;
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&h.finalize())
}

pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
