//! The generator: from one seed, a [`Plan`] of pipelined requests for one client connection,
//! each with the instruction ([`Behave`]) the recording backend follows to answer it, and the
//! exact bytes the client writes ([`Wire`]).
//!
//! Everything is a pure function of the seed (plus the connection id, which only appears in
//! header values and response bytes), so `DIFF_SEED=<seed>` rebuilds the same requests.

use super::rng::{mix, Rng};
use crate::common::pattern;
use std::fmt::Write as _;

/// Bodies at or above this size with a Content-Length are spliced by the proxy; below, copied.
pub const SPLICE_MIN: usize = 64 * 1024;
/// Largest request or response body generated.
pub const MAX_BODY: usize = 200 * 1024;
/// Most requests on one connection.
const MAX_REQUESTS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// RFC 9110 §9.2.2: a proxy may replay these after a failed connection; POST never.
    pub fn idempotent(self) -> bool {
        self != Method::Post
    }
}

/// One chunk of a chunked request body: its size and the raw text between the size and CRLF
/// (valid extensions, or a malformed one for an invalid request).
#[derive(Clone, Debug)]
pub struct Chunk {
    pub size: usize,
    pub ext: String,
}

#[derive(Clone, Debug)]
pub enum Framing {
    /// No body header at all.
    None,
    /// `Content-Length`, sent twice with the same value when `dup`.
    Length { dup: bool },
    Chunked {
        chunks: Vec<Chunk>,
        /// Size-line formatting: upper-case hex, leading zeros.
        upper: bool,
        zeros: usize,
        last_ext: String,
        trailers: Vec<(String, String)>,
    },
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespFraming {
    Length,
    Chunked,
    /// No length: the body ends when the backend closes the connection.
    Close,
}

/// The instruction carried in `X-Behave`: how the backend answers this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behave {
    pub status: u16,
    pub len: usize,
    pub framing: RespFraming,
    /// `Connection: close` on the response, then close.
    pub close: bool,
    /// Interim responses sent before the final one (102, 103).
    pub interim: Vec<u16>,
    /// Read the request body in small pieces with pauses.
    pub slow: bool,
    /// Answer 403 right after the head, without reading the body, then close.
    pub early: bool,
    /// The first time this request arrives, read it whole and close without answering.
    pub drop: bool,
}

impl Default for Behave {
    fn default() -> Self {
        Behave {
            status: 200,
            len: 0,
            framing: RespFraming::Length,
            close: false,
            interim: Vec::new(),
            slow: false,
            early: false,
            drop: false,
        }
    }
}

impl Behave {
    pub fn encode(&self) -> String {
        let mut s = format!("s={};n={};f=", self.status, self.len);
        s.push_str(match self.framing {
            RespFraming::Length => "cl",
            RespFraming::Chunked => "chunked",
            RespFraming::Close => "close",
        });
        if self.close {
            s.push_str(";close");
        }
        if !self.interim.is_empty() {
            let codes: Vec<String> = self.interim.iter().map(|c| c.to_string()).collect();
            let _ = write!(s, ";i={}", codes.join("."));
        }
        for (flag, name) in [
            (self.slow, "slow"),
            (self.early, "early"),
            (self.drop, "drop"),
        ] {
            if flag {
                let _ = write!(s, ";{name}");
            }
        }
        s
    }

    pub fn decode(text: &str) -> Option<Behave> {
        let mut b = Behave::default();
        for part in text.split(';') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k {
                "s" => b.status = v.parse().ok()?,
                "n" => b.len = v.parse().ok()?,
                "f" => {
                    b.framing = match v {
                        "cl" => RespFraming::Length,
                        "chunked" => RespFraming::Chunked,
                        "close" => RespFraming::Close,
                        _ => return None,
                    }
                }
                "close" => b.close = true,
                "i" => {
                    b.interim = v
                        .split('.')
                        .map(|c| c.parse().ok())
                        .collect::<Option<_>>()?
                }
                "slow" => b.slow = true,
                "early" => b.early = true,
                "drop" => b.drop = true,
                _ => return None,
            }
        }
        Some(b)
    }
}

/// A request the proxy must refuse with 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The chunk at this index carries a malformed extension (in its `ext`).
    BadExtension(usize),
    /// Both Content-Length and Transfer-Encoding: chunked.
    LengthAndChunked,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub seq: usize,
    pub method: Method,
    pub target: String,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub behave: Behave,
    /// Length of the `X-Pad` header value (0: no header).
    pub pad: usize,
    /// Carries hop-by-hop fields (`Connection: X-Hop`, `X-Hop`, `Keep-Alive`) the proxy drops.
    pub hop: bool,
    /// `Connection: close`: the last request the proxy may forward on this connection.
    pub conn_close: bool,
    pub invalid: Option<Invalid>,
    /// Early answer: the client writes this many bytes of the encoded body, then waits for
    /// the 403 before writing the rest.
    pub hold: Option<usize>,
    /// The body is text that looks like a chunk end and a request (`GET /smuggled`).
    pub decoy: bool,
}

impl Request {
    pub fn trailers(&self) -> &[(String, String)] {
        match &self.framing {
            Framing::Chunked { trailers, .. } => trailers,
            _ => &[],
        }
    }

    /// The proxy must close the client connection after answering this one.
    pub fn ends_connection(&self) -> bool {
        self.conn_close || self.invalid.is_some() || self.hold.is_some()
    }

    /// One line for diagnostics.
    pub fn summary(&self) -> String {
        let framing = match &self.framing {
            Framing::None => "no body".to_string(),
            Framing::Length { dup } => {
                format!(
                    "CL {}{}",
                    self.body.len(),
                    if *dup { " (dup CL)" } else { "" }
                )
            }
            Framing::Chunked {
                chunks, trailers, ..
            } => format!(
                "chunked {} B in {} chunks{}{}",
                self.body.len(),
                chunks.len(),
                if chunks.iter().any(|c| !c.ext.is_empty()) {
                    " +ext"
                } else {
                    ""
                },
                if trailers.is_empty() {
                    String::new()
                } else {
                    format!(" +{} trailers", trailers.len())
                }
            ),
        };
        let mut s = format!(
            "#{} {} {} {framing} behave[{}]",
            self.seq,
            self.method.as_str(),
            self.target,
            self.behave.encode()
        );
        if let Some(inv) = &self.invalid {
            let _ = write!(s, " INVALID {inv:?}");
            if let (Invalid::BadExtension(i), Framing::Chunked { chunks, .. }) =
                (inv, &self.framing)
            {
                let _ = write!(s, " ({:?})", chunks[*i].ext);
            }
        }
        if let Some(h) = self.hold {
            let _ = write!(s, " hold@{h}");
        }
        if self.conn_close {
            s.push_str(" Connection:close");
        }
        if self.hop {
            s.push_str(" +hop-by-hop");
        }
        if self.decoy {
            s.push_str(" (decoy body)");
        }
        s
    }
}

/// All requests of one client connection.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub conn: u64,
    pub requests: Vec<Request>,
}

/// The bytes of a plan and where the writer must pause for an early answer.
pub struct Wire {
    pub bytes: Vec<u8>,
    /// (offset in `bytes`, request index): stop before this offset until request `index`
    /// has been answered.
    pub holds: Vec<(usize, usize)>,
}

/// The deterministic response body for request `seq` of connection `conn`.
pub fn response_body(conn: u64, seq: usize, len: usize) -> Vec<u8> {
    pattern(response_offset(conn, seq), len)
}

fn response_offset(conn: u64, seq: usize) -> u64 {
    // Below 2^40 so that offset + len never overflows in `pattern`.
    mix(conn << 20 | seq as u64) >> 24
}

impl Plan {
    pub fn generate(seed: u64, conn: u64) -> Plan {
        let mut rng = Rng::new(seed);
        let n = rng.usize(1, MAX_REQUESTS);
        let invalid_at = rng.chance(5).then(|| rng.usize(0, n - 1));
        let requests = (0..n)
            .map(|seq| gen_request(&mut rng, conn, seq, n, invalid_at == Some(seq)))
            .collect();
        Plan {
            seed,
            conn,
            requests,
        }
    }

    pub fn wire(&self) -> Wire {
        let mut bytes = Vec::new();
        let mut holds = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            bytes.extend_from_slice(&encode_head(r, self.conn));
            let body = encode_body(r);
            if let Some(h) = r.hold {
                holds.push((bytes.len() + h, i));
            }
            bytes.extend_from_slice(&body);
        }
        Wire { bytes, holds }
    }
}

fn gen_request(rng: &mut Rng, conn: u64, seq: usize, n: usize, invalid: bool) -> Request {
    let method = *rng.pick(&[
        Method::Get,
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Post,
        Method::Post,
        Method::Put,
        Method::Put,
        Method::Delete,
    ]);
    let wants_body = match method {
        Method::Post | Method::Put => rng.chance(85),
        _ => rng.chance(12),
    } || invalid;
    let len = if wants_body {
        gen_size(rng).max(usize::from(invalid))
    } else {
        0
    };
    let decoy = rng.chance(20);
    let body = gen_body(rng, seq, len, decoy);
    let framed = wants_body || rng.chance(15);
    let mut framing = gen_framing(rng, len, framed);
    let invalid = invalid.then(|| make_invalid(rng, &mut framing, len));
    let behave = if invalid.is_some() {
        Behave {
            len: rng.usize(0, 300),
            ..Behave::default()
        }
    } else {
        gen_behave(rng, method, len)
    };
    let mut r = Request {
        seq,
        method,
        target: gen_target(rng, conn, seq),
        body,
        framing,
        behave,
        pad: if rng.chance(10) {
            rng.usize(1, 4000)
        } else {
            rng.usize(0, 40)
        },
        hop: rng.chance(10),
        conn_close: rng.chance(2) || (seq + 1 == n && rng.chance(30)),
        invalid,
        hold: None,
        decoy,
    };
    if r.behave.early {
        let body_len = encode_body(&r).len();
        r.hold = Some(rng.usize(0, body_len - 1));
    }
    r
}

/// 0..200 KiB, biased so that tiny, small (copied) and large (spliced) bodies all come often.
fn gen_size(rng: &mut Rng) -> usize {
    match rng.range(0, 9) {
        0..=2 => rng.usize(0, 300),
        3..=5 => rng.usize(301, SPLICE_MIN - 1),
        6 => SPLICE_MIN + rng.usize(0, 2),
        _ => rng.usize(SPLICE_MIN, MAX_BODY),
    }
}

/// Pattern bytes, or a decoy: text that looks like chunk ends and requests, so that a proxy
/// that loses its place in a body forwards something the backend would take for a request.
fn gen_body(rng: &mut Rng, seq: usize, len: usize, decoy: bool) -> Vec<u8> {
    if !decoy {
        return pattern(rng.range(0, 1 << 40) ^ seq as u64, len);
    }
    let decoy: &[u8] = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: decoy\r\nX-Seq: 999\r\n\r\n";
    decoy.iter().copied().cycle().take(len).collect()
}

fn gen_framing(rng: &mut Rng, len: usize, framed: bool) -> Framing {
    if !framed {
        return Framing::None;
    }
    if (len > 0 && rng.chance(50)) || (len == 0 && rng.chance(60)) {
        return Framing::Length { dup: rng.chance(5) };
    }
    let ext_percent = if rng.chance(40) { 30 } else { 0 };
    Framing::Chunked {
        chunks: gen_chunks(rng, len, ext_percent),
        upper: rng.chance(20),
        zeros: if rng.chance(10) { rng.usize(1, 3) } else { 0 },
        last_ext: if rng.chance(ext_percent) {
            gen_extension(rng)
        } else {
            String::new()
        },
        trailers: gen_trailers(rng),
    }
}

fn gen_chunks(rng: &mut Rng, len: usize, ext_percent: u64) -> Vec<Chunk> {
    let max_chunk = match rng.range(0, 3) {
        0 => len.max(1),
        1 => 16 * 1024,
        2 => 1024,
        _ => 100 * 1024,
    };
    let mut chunks = Vec::new();
    let mut left = len;
    while left > 0 {
        let size = rng.log_range(1, max_chunk).min(left);
        let ext = if rng.chance(ext_percent) {
            gen_extension(rng)
        } else {
            String::new()
        };
        chunks.push(Chunk { size, ext });
        left -= size;
    }
    chunks
}

/// A valid chunk extension (RFC 9112 §7.1.1), BWS included now and then.
fn gen_extension(rng: &mut Rng) -> String {
    let one = |rng: &mut Rng| -> String {
        rng.pick(&[
            ";a=b",
            ";name=\"quoted\"",
            ";flag",
            ";Ext-1=tok.en~",
            ";q=\"with \\\"escaped\\\" quote\"",
            ";q=\"\"",
            " ;bws = \"x y\"",
            "\t;t\t=\tv",
        ])
        .to_string()
    };
    let mut s = one(rng);
    while rng.chance(25) {
        s.push_str(&one(rng));
    }
    s
}

/// A chunk extension RFC 9112 §7.1.1 does not allow.
fn bad_extension(rng: &mut Rng) -> String {
    rng.pick(&[
        ";",
        ";a=\"unclosed",
        ";a=",
        ";=b",
        ";a b",
        ";a@b",
        ";a=\"x\"y",
        ";a=b c",
        ";a;",
        "; ",
    ])
    .to_string()
}

fn gen_trailers(rng: &mut Rng) -> Vec<(String, String)> {
    if !rng.chance(20) {
        return Vec::new();
    }
    (0..rng.usize(1, 3))
        .map(|i| {
            (
                format!("X-Trailer-{i}"),
                format!("v{:x}", rng.next_u64() >> 20),
            )
        })
        .collect()
}

fn make_invalid(rng: &mut Rng, framing: &mut Framing, len: usize) -> Invalid {
    if rng.chance(25) {
        if !matches!(framing, Framing::Chunked { .. }) {
            *framing = gen_framing_chunked(rng, len);
        }
        return Invalid::LengthAndChunked;
    }
    if !matches!(framing, Framing::Chunked { .. }) {
        *framing = gen_framing_chunked(rng, len);
    }
    let Framing::Chunked { chunks, .. } = framing else {
        unreachable!()
    };
    let at = rng.usize(0, chunks.len() - 1);
    chunks[at].ext = bad_extension(rng);
    Invalid::BadExtension(at)
}

fn gen_framing_chunked(rng: &mut Rng, len: usize) -> Framing {
    Framing::Chunked {
        chunks: gen_chunks(rng, len, 0),
        upper: false,
        zeros: 0,
        last_ext: String::new(),
        trailers: Vec::new(),
    }
}

fn gen_behave(rng: &mut Rng, method: Method, body_len: usize) -> Behave {
    let status = match rng.range(0, 19) {
        0 => 201,
        1 => 204,
        2 => 404,
        3 => 500,
        _ => 200,
    };
    let len = if status == 204 { 0 } else { gen_size(rng) };
    let framing = match rng.range(0, 99) {
        0..=59 => RespFraming::Length,
        60..=95 => RespFraming::Chunked,
        _ if method == Method::Head || status == 204 => RespFraming::Length,
        _ => RespFraming::Close,
    };
    let early = body_len > 0 && rng.chance(5);
    Behave {
        status,
        len,
        framing,
        close: rng.chance(8),
        interim: if !early && rng.chance(15) {
            rng.pick(&[vec![103], vec![102], vec![103, 103], vec![102, 103]])
                .clone()
        } else {
            Vec::new()
        },
        slow: body_len > 0 && rng.chance(8),
        early,
        drop: !early && rng.chance(2),
    }
}

fn gen_target(rng: &mut Rng, conn: u64, seq: usize) -> String {
    let mut t = format!("/r/{conn}/{seq}");
    if rng.chance(30) {
        let _ = write!(t, "/{}", "seg".repeat(rng.usize(1, 30)));
    }
    if rng.chance(50) {
        let _ = write!(t, "?k={:x}&x=%20y", rng.next_u64());
    }
    t
}

pub fn encode_head(r: &Request, conn: u64) -> Vec<u8> {
    let mut h = format!(
        "{} {} HTTP/1.1\r\nHost: diff.test\r\nX-Conn: {conn}\r\nX-Seq: {}\r\nX-Behave: {}\r\n",
        r.method.as_str(),
        r.target,
        r.seq,
        r.behave.encode()
    );
    if r.pad > 0 {
        let _ = write!(h, "X-Pad: {}\r\n", "p".repeat(r.pad));
    }
    let mut connection = Vec::new();
    if r.conn_close {
        connection.push("close");
    }
    if r.hop {
        connection.push("X-Hop");
        h.push_str("X-Hop: 1\r\nKeep-Alive: timeout=5\r\n");
    }
    if !connection.is_empty() {
        let _ = write!(h, "Connection: {}\r\n", connection.join(", "));
    }
    let len = r.body.len();
    match &r.framing {
        Framing::None => {}
        Framing::Length { dup } => {
            let _ = write!(h, "Content-Length: {len}\r\n");
            if *dup {
                let _ = write!(h, "Content-Length: {len}\r\n");
            }
        }
        Framing::Chunked { trailers, .. } => {
            if r.invalid == Some(Invalid::LengthAndChunked) {
                let _ = write!(h, "Content-Length: {len}\r\n");
            }
            h.push_str("Transfer-Encoding: chunked\r\n");
            if !trailers.is_empty() {
                let names: Vec<&str> = trailers.iter().map(|(n, _)| n.as_str()).collect();
                let _ = write!(h, "Trailer: {}\r\n", names.join(", "));
            }
        }
    }
    h.push_str("\r\n");
    h.into_bytes()
}

pub fn encode_body(r: &Request) -> Vec<u8> {
    match &r.framing {
        Framing::None => Vec::new(),
        Framing::Length { .. } => r.body.clone(),
        Framing::Chunked {
            chunks,
            upper,
            zeros,
            last_ext,
            trailers,
        } => {
            let size_line = |n: usize| {
                let hex = if *upper {
                    format!("{n:X}")
                } else {
                    format!("{n:x}")
                };
                format!("{}{hex}", "0".repeat(*zeros))
            };
            let mut out = Vec::with_capacity(r.body.len() + chunks.len() * 12 + 64);
            let mut off = 0;
            for c in chunks {
                out.extend_from_slice(format!("{}{}\r\n", size_line(c.size), c.ext).as_bytes());
                out.extend_from_slice(&r.body[off..off + c.size]);
                out.extend_from_slice(b"\r\n");
                off += c.size;
            }
            out.extend_from_slice(format!("{}{last_ext}\r\n", size_line(0)).as_bytes());
            for (n, v) in trailers {
                out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}
