//! A raw-TCP backend whose every byte a test scripts: one accept thread (polling a non-blocking
//! listener, so it can be closed at once) and one thread per connection running the test's
//! handler. It counts accepted connections, remembers every live connection so that
//! [`Scripted::kill`] can close the listener and all of them at once (a backend that dies),
//! and lets a handler end its connection with a reset ([`ConnCtx::reset`]).
//!
//! [`serve_http`] is a minimal well-behaved HTTP/1.1 handler (GET answers with the backend's
//! name, a request with a Content-Length body gets `SHA256HEX LEN` of it) for the healthy
//! parts of a scripted backend, with an optional delay and a count of requests in progress.

use super::hex;
use super::wire::BufStream;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What a scripted backend's threads share.
pub struct ScriptState {
    pub name: String,
    accepted: AtomicUsize,
    /// Connections whose handler saw the peer (the proxy) close or reset it.
    pub peer_closed: AtomicUsize,
    /// Requests being answered now by [`serve_http`], and the most seen at once.
    pub in_progress: AtomicUsize,
    pub max_in_progress: AtomicUsize,
    pub requests: AtomicUsize,
    stop: AtomicBool,
    listener_closed: AtomicBool,
    /// A second descriptor for every live connection, for `kill`.
    live: Mutex<HashMap<usize, TcpStream>>,
}

/// Handed to a handler with its connection.
pub struct ConnCtx {
    /// 1 for the first connection accepted, 2 for the second, …
    pub id: usize,
    pub st: Arc<ScriptState>,
}

impl ConnCtx {
    /// Ends the connection with a reset (SO_LINGER 0, then close) instead of a FIN.
    pub fn reset(&self, stream: TcpStream) {
        // The copy kept for `kill` would keep the socket open: drop it first.
        self.st.live.lock().unwrap().remove(&self.id);
        let lin = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a descriptor we own, with a valid linger struct.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lin as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(stream);
    }

    /// Notes that the proxy closed this connection.
    pub fn saw_close(&self) {
        self.st.peer_closed.fetch_add(1, Ordering::SeqCst);
    }
}

pub type Handler = dyn Fn(ConnCtx, TcpStream) + Send + Sync + 'static;

pub struct Scripted {
    pub addr: SocketAddr,
    pub st: Arc<ScriptState>,
}

impl Scripted {
    pub fn start(name: &str, handler: impl Fn(ConnCtx, TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("scripted backend bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let st = Arc::new(ScriptState {
            name: name.to_string(),
            accepted: AtomicUsize::new(0),
            peer_closed: AtomicUsize::new(0),
            in_progress: AtomicUsize::new(0),
            max_in_progress: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            listener_closed: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
        });
        let handler: Arc<Handler> = Arc::new(handler);
        let s = st.clone();
        thread::Builder::new()
            .name(format!("scripted-{name}"))
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_nodelay(true);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
                            let id = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                            {
                                let mut live = s.live.lock().unwrap();
                                if s.stop.load(Ordering::SeqCst) {
                                    let _ = conn.shutdown(Shutdown::Both);
                                    continue;
                                }
                                if let Ok(copy) = conn.try_clone() {
                                    live.insert(id, copy);
                                }
                            }
                            let (s, h) = (s.clone(), handler.clone());
                            let _ = thread::Builder::new()
                                .name(format!("scripted-{}-{id}", s.name))
                                .spawn(move || {
                                    let ctx = ConnCtx { id, st: s.clone() };
                                    h(ctx, conn);
                                    s.live.lock().unwrap().remove(&id);
                                });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
                drop(listener);
                s.listener_closed.store(true, Ordering::SeqCst);
            })
            .expect("spawn scripted backend");
        Scripted { addr, st }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn accepted(&self) -> usize {
        self.st.accepted.load(Ordering::SeqCst)
    }

    pub fn peer_closed(&self) -> usize {
        self.st.peer_closed.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.st.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_progress(&self) -> usize {
        self.st.max_in_progress.load(Ordering::SeqCst)
    }

    /// The backend dies: its listener is closed (new connects are refused once this returns)
    /// and every live connection is shut down both ways.
    pub fn kill(&self) {
        {
            let _live = self.st.live.lock().unwrap();
            self.st.stop.store(true, Ordering::SeqCst);
        }
        for _ in 0..1000 {
            if self.st.listener_closed.load(Ordering::SeqCst) {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let live: Vec<TcpStream> = self
            .st
            .live
            .lock()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in live {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves well-formed HTTP/1.1 on `stream` until the peer closes: a request without a body
/// gets `200` with body `NAME`, one with a Content-Length body gets `SHA256HEX LEN`; every
/// answer carries `X-Backend: NAME` and `X-Conn: ID`. `delay` is slept before each answer.
pub fn serve_http(ctx: &ConnCtx, stream: TcpStream, delay: Duration) {
    let st = &ctx.st;
    let mut io = BufStream::new(stream);
    loop {
        let head = match io.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => {
                ctx.saw_close();
                return;
            }
            Err(_) => return,
        };
        st.requests.fetch_add(1, Ordering::SeqCst);
        let now = st.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_progress.fetch_max(now, Ordering::SeqCst);
        let mut h = Sha256::new();
        let mut len = 0u64;
        let body_ok = match head.content_length() {
            Ok(Some(n)) => io
                .read_len(n, &mut |b| {
                    h.update(b);
                    len += b.len() as u64;
                })
                .is_ok(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !body_ok {
            st.in_progress.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let body = if head.content_length().ok().flatten().is_some() {
            format!("{} {len}", hex(&h.finalize()))
        } else {
            st.name.clone()
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let close = head.has_token("connection", "close");
        let out = format!(
            "HTTP/1.1 200 OK\r\nX-Backend: {}\r\nX-Conn: {}\r\nContent-Length: {}\r\n{}\r\n{body}",
            st.name,
            ctx.id,
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        st.in_progress.fetch_sub(1, Ordering::SeqCst);
        if io.write_all(out.as_bytes()).is_err() || close {
            return;
        }
    }
}
