//! In-process HTTP/1.1 backends for the black-box tests: one accept thread plus one thread per
//! connection on a real 127.0.0.1 socket. Each answers with its own name (`X-Backend: NAME`,
//! body `NAME`) so balancing and routing are visible from the client, and counts accepted
//! connections and requests so upstream reuse is visible too.
//!
//! Behaviour by request path (query ignored):
//! - `/delay/MS`: sleep MS ms, then answer as usual.
//! - `/echo`: body `SHA256HEX LEN` of the request body (every answer to a request with a body
//!   also carries `X-Body-Sha256` and `X-Body-Length`).
//! - `/download/N`: N bytes of [`crate::common::pattern`], by Content-Length.
//! - `/chunked/N`: the same N bytes, chunked, in chunks of varying size.
//! - `/close` or `/close/N`: no length, body (name or N pattern bytes), then close.
//! - `/status/CODE`: that status; 204 and 304 carry no body (304 still sends Content-Length).
//! - any GET with `Upgrade: websocket`: 101 with a correct `Sec-WebSocket-Accept`, then echo
//!   raw bytes until EOF.
//!
//! Per-backend behaviour ([`BackendOpts`]): a delay added to every answer, closing every
//! keep-alive connection shortly after answering (a backend that makes pooled connections stale),
//! and a bigger default answer. Each backend also records the most requests it answered at once.

use super::wire::{BufStream, Head};
use super::{hex, pattern, websocket_accept};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a backend connection may sit without a byte before the backend gives up on it.
const CONN_IDLE: Duration = Duration::from_secs(60);
/// How many request heads a backend remembers for assertions.
const KEEP_HEADS: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct BackendOpts {
    /// Added before every answer (a "slow" server).
    pub delay: Duration,
    /// When set, a keep-alive connection on which no new request starts within this long
    /// after an answer is closed by the backend.
    pub close_idle_after: Option<Duration>,
    /// When set, the default answer (any path without a special meaning) is the name padded
    /// with `.` to this many bytes (a server whose answers are bigger than its peers').
    pub body_size: Option<usize>,
}

struct State {
    name: String,
    opts: BackendOpts,
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Requests being answered now, and the most at once.
    busy: AtomicUsize,
    peak_busy: AtomicUsize,
    stop: AtomicBool,
    heads: Mutex<Vec<Head>>,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Backend::start_with(name, BackendOpts::default())
    }

    pub fn start_with(name: &str, opts: BackendOpts) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend bind 127.0.0.1:0");
        Backend::serve(name, listener, opts)
    }

    /// Binds a specific port (a server that "comes back" on an address that refused before).
    pub fn start_on(name: &str, port: u16, opts: BackendOpts) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("backend {name}: bind 127.0.0.1:{port}: {e}"));
        Backend::serve(name, listener, opts)
    }

    /// Binds a given address (e.g. 127.0.0.2 and the port of another backend on 127.0.0.1:
    /// one name, two addresses).
    pub fn start_at(name: &str, addr: SocketAddr, opts: BackendOpts) -> Backend {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("backend {name}: bind {addr}: {e}"));
        Backend::serve(name, listener, opts)
    }

    fn serve(name: &str, listener: TcpListener, opts: BackendOpts) -> Backend {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name: name.to_string(),
            opts,
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            peak_busy: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            heads: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    st.accepted.fetch_add(1, Ordering::SeqCst);
                    let st = st.clone();
                    let _ = thread::Builder::new()
                        .name(format!("backend-{}-conn", st.name))
                        .spawn(move || serve_conn(&st, conn));
                }
            })
            .expect("spawn backend thread");
        Backend {
            name: name.to_string(),
            addr,
            state,
        }
    }

    /// `127.0.0.1:PORT`, for configs.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most requests this backend was answering at once.
    pub fn peak_busy(&self) -> usize {
        self.state.peak_busy.load(Ordering::SeqCst)
    }

    /// The request heads received so far (the last [`KEEP_HEADS`]).
    pub fn heads(&self) -> Vec<Head> {
        self.state.heads.lock().unwrap().clone()
    }

    pub fn last_head(&self) -> Option<Head> {
        self.state.heads.lock().unwrap().last().cloned()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_conn(st: &State, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut io = BufStream::new(stream);
    io.set_read_timeout(CONN_IDLE);
    let mut answered = false;
    loop {
        if let (Some(idle), true) = (st.opts.close_idle_after, answered) {
            if io.buffered().is_empty() {
                io.set_read_timeout(idle);
                match io.fill() {
                    Ok(n) if n > 0 => {}
                    _ => {
                        let _ = io.stream.shutdown(Shutdown::Both);
                        return;
                    }
                }
                io.set_read_timeout(CONN_IDLE);
            }
        }
        let head = match io.read_head() {
            Ok(Some(h)) => h,
            _ => return,
        };
        st.requests.fetch_add(1, Ordering::SeqCst);
        {
            let mut heads = st.heads.lock().unwrap();
            if heads.len() >= KEEP_HEADS {
                heads.remove(0);
            }
            heads.push(head.clone());
        }
        let now = st.busy.fetch_add(1, Ordering::SeqCst) + 1;
        st.peak_busy.fetch_max(now, Ordering::SeqCst);
        let handled = handle(st, &mut io, &head);
        st.busy.fetch_sub(1, Ordering::SeqCst);
        match handled {
            Ok(true) => answered = true,
            _ => {
                let _ = io.stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Serves one request; `Ok(true)` keeps the connection for another.
fn handle(st: &State, io: &mut BufStream, head: &Head) -> std::io::Result<bool> {
    let mut parts = head.start_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = origin_path(&target);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let arg = |i: usize| segs.get(i).and_then(|s| s.parse::<u64>().ok());

    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    let mut had_body = false;
    {
        let mut sink = |b: &[u8]| {
            hasher.update(b);
            body_len += b.len() as u64;
        };
        if head.is_chunked() {
            had_body = true;
            io.read_chunked(&mut sink)?;
        } else if let Some(n) = head.content_length()? {
            had_body = true;
            io.read_len(n, &mut sink)?;
        }
    }
    let body_sha = hex(&hasher.finalize());

    if method == "GET" && head.has_token("upgrade", "websocket") {
        return websocket(st, io, head).map(|_| false);
    }

    let mut delay = st.opts.delay;
    if segs[0] == "delay" {
        delay += Duration::from_millis(arg(1).unwrap_or(0));
    }
    if !delay.is_zero() {
        thread::sleep(delay);
    }

    let client_close =
        head.has_token("connection", "close") || head.start_line.ends_with("HTTP/1.0");
    let mut status = 200u16;
    let mut body: Vec<u8> = st.name.as_bytes().to_vec();
    let mut mode = Mode::Length;
    match segs[0] {
        "echo" => body = format!("{body_sha} {body_len}").into_bytes(),
        "download" => body = pattern(0, arg(1).unwrap_or(0) as usize),
        "chunked" => {
            body = pattern(0, arg(1).unwrap_or(0) as usize);
            mode = Mode::Chunked;
        }
        "close" => {
            if let Some(n) = arg(1) {
                body = pattern(0, n as usize);
            }
            mode = Mode::Close;
        }
        "status" => status = arg(1).unwrap_or(200) as u16,
        _ => {
            if let Some(n) = st.opts.body_size {
                body.resize(n.max(body.len()), b'.');
            }
        }
    }
    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;

    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nX-Backend: {}\r\nX-Target: {target}\r\n",
        reason(status),
        st.name
    );
    if had_body {
        out.push_str(&format!(
            "X-Body-Sha256: {body_sha}\r\nX-Body-Length: {body_len}\r\n"
        ));
    }
    match mode {
        Mode::Length if status != 204 && status >= 200 => {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()))
        }
        Mode::Chunked if !no_body => out.push_str("Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if client_close && mode != Mode::Close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    io.write_all(out.as_bytes())?;
    if !no_body {
        match mode {
            Mode::Length | Mode::Close => {
                for piece in body.chunks(64 * 1024) {
                    io.write_all(piece)?;
                }
            }
            Mode::Chunked => io.write_all(&super::wire::encode_chunked(
                &body,
                &[1, 10, 1000, 4096, 65536, 7],
            ))?,
        }
    }
    Ok(mode != Mode::Close && !client_close)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Length,
    Chunked,
    Close,
}

fn websocket(st: &State, io: &mut BufStream, head: &Head) -> std::io::Result<()> {
    let key = head.header("sec-websocket-key").unwrap_or("");
    let out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nX-Backend: {}\r\n\r\n",
        websocket_accept(key),
        st.name
    );
    io.write_all(out.as_bytes())?;
    let early = io.take_buffered();
    if !early.is_empty() {
        io.write_all(&early)?;
    }
    let mut stream = io.stream.try_clone()?;
    io.read_to_eof(&mut |b| {
        let _ = stream.write_all(b);
    })?;
    let _ = io.stream.shutdown(Shutdown::Write);
    Ok(())
}

/// The path of a request target, whatever its form (origin or absolute), without the query.
fn origin_path(target: &str) -> String {
    let rest = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("/")
        }
        None => target,
    };
    rest.split('?').next().unwrap_or("/").to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
