//! Serving the command socket, off the shards: one acceptor thread checks each peer's
//! credentials (SO_PEERCRED: root or the daemon's own uid) and hands the connection to a thread
//! of its own, at most [`MAX_CLIENTS`] at once, so a slow client never delays another.
//!
//! Every client is bounded: one line of at most [`MAX_LINE`] bytes that must arrive whole
//! within [`READ_TIMEOUT`] (a deadline for the line, not per read, so a byte a second does not
//! keep a thread), an answer that must be taken within [`WRITE_TIMEOUT`], then at most
//! [`DRAIN_TIMEOUT`] to swallow what the client sent beyond the line. Refusals (permission,
//! too many clients) are answered by the acceptor itself without waiting on the peer.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Action;
use crate::shared::Shared;

/// Longest command line, newline excluded.
pub const MAX_LINE: usize = 4096;
/// The whole command line must arrive within this time after the connection is accepted.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole answer must be taken by the client within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once; beyond it a new one gets `error: too many control clients`.
pub const MAX_CLIENTS: usize = 16;
/// After the answer, input beyond the command line is read and discarded for at most this
/// long (and [`DRAIN_LIMIT`] bytes, [`DRAIN_IDLE`] without input) before closing: closing a
/// UNIX socket with unread input makes the peer's next read fail with ECONNRESET.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const DRAIN_IDLE: Duration = Duration::from_millis(100);
const DRAIN_LIMIT: usize = 4 << 20;
/// At most one warning per this interval for each kind of refusal.
/// Stack of a client thread: commands render into heap strings.
const CLIENT_STACK: usize = 256 << 10;

/// Connections refused or failed, for `show stats`.
struct Counters {
    denied: AtomicU64,
    busy: AtomicU64,
    bad_input: AtomicU64,
}

static COUNTERS: Counters = Counters {
    denied: AtomicU64::new(0),
    busy: AtomicU64::new(0),
    bad_input: AtomicU64::new(0),
};
static DENIED_LOG: crate::rt::LogLimit = crate::rt::LogLimit::new();
static BUSY_LOG: crate::rt::LogLimit = crate::rt::LogLimit::new();

/// The control socket's lines of `show stats`.
pub fn render_stats() -> String {
    format!(
        "control.denied: {}\ncontrol.busy: {}\ncontrol.bad_input: {}\n",
        COUNTERS.denied.load(Ordering::Relaxed),
        COUNTERS.busy.load(Ordering::Relaxed),
        COUNTERS.bad_input.load(Ordering::Relaxed),
    )
}

/// Decrements the count of clients being served when the client's thread ends (or is never
/// started).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve commands until the process exits; `on_stop` is called after a `stop daemon`.
pub fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    on_stop: impl Fn() + Send + Sync + 'static,
) {
    let on_stop: Arc<dyn Fn() + Send + Sync> = Arc::new(on_stop);
    let active = Arc::new(AtomicUsize::new(0));
    // SAFETY: geteuid(2) cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        // Wake every 100 ms to see whether the socket went to a new process (upgrade).
        if shared.life.control_closed.load(Ordering::SeqCst) {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the listener we own.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0
            || shared.life.control_closed.load(Ordering::SeqCst)
        {
            continue;
        }
        let conn = match listener.accept().map(|(c, _)| c) {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: give closing connections a moment.
                tracing::debug!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match peer_cred(&conn) {
            Ok(c) if c.uid == 0 || c.uid == own_uid => {}
            cred => {
                deny(conn, cred.ok());
                continue;
            }
        }
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            COUNTERS.busy.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = BUSY_LOG.allow() {
                tracing::warn!(
                    event = "control_busy",
                    limit = MAX_CLIENTS,
                    suppressed,
                    "control connection refused: too many control clients"
                );
            }
            refuse(conn, "error: too many control clients\n");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(active.clone());
        let (shared, on_stop) = (shared.clone(), on_stop.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_client(conn, &shared, &*on_stop);
            });
        // On failure the closure is dropped: the connection closes and the slot is freed.
        if let Err(e) = spawned {
            tracing::warn!(
                event = "control_thread_failed",
                "cannot start a control client thread: {e}"
            );
        }
    }
}

/// The peer's credentials when it connected.
fn peer_cred(conn: &UnixStream) -> io::Result<libc::ucred> {
    crate::rt::socket_option(conn.as_raw_fd(), libc::SO_PEERCRED)
}

fn deny(conn: UnixStream, cred: Option<libc::ucred>) {
    COUNTERS.denied.fetch_add(1, Ordering::Relaxed);
    let uid = cred.map_or_else(|| "unknown".to_string(), |c| c.uid.to_string());
    if let Some(suppressed) = DENIED_LOG.allow() {
        tracing::warn!(event = "control_denied",
            uid = %uid,
            pid = cred.map_or(0, |c| c.pid),
            suppressed,
            "control connection refused: permission denied (only root and the daemon's uid may \
             run commands)"
        );
    }
    refuse(conn, &format!("error: permission denied (uid {uid})\n"));
}

/// Answer one line and close, without ever blocking the acceptor on the peer: the line fits in
/// the empty socket buffer, and only input already queued is swallowed.
fn refuse(conn: UnixStream, line: &str) {
    let _ = conn.set_nonblocking(true);
    let _ = (&conn).write_all(line.as_bytes());
    let _ = conn.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    let mut swallowed = 0;
    while swallowed < 64 << 10 {
        match (&conn).read(&mut buf) {
            Ok(n) if n > 0 => swallowed += n,
            _ => break,
        }
    }
}

/// Why a command line could not be read.
#[derive(Debug)]
enum BadInput {
    /// EOF before any byte.
    NoCommand,
    /// EOF before the newline.
    Incomplete,
    TooLong,
    Nul,
    NotUtf8,
    Timeout,
    Io(io::Error),
}

impl BadInput {
    /// The client has finished sending (nothing to drain).
    fn saw_eof(&self) -> bool {
        matches!(self, BadInput::NoCommand | BadInput::Incomplete)
    }
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadInput::NoCommand => write!(f, "no command: connection closed before a command line"),
            BadInput::Incomplete => write!(
                f,
                "incomplete command: connection closed before the end of the line"
            ),
            BadInput::TooLong => write!(f, "command longer than {MAX_LINE} bytes"),
            BadInput::Nul => write!(f, "command contains a NUL byte"),
            BadInput::NotUtf8 => write!(f, "command is not valid UTF-8"),
            BadInput::Timeout => write!(
                f,
                "no complete command line within {} s",
                READ_TIMEOUT.as_secs()
            ),
            BadInput::Io(e) => write!(f, "cannot read command: {e}"),
        }
    }
}

fn serve_client(conn: UnixStream, shared: &Arc<Shared>, on_stop: &dyn Fn()) {
    let (answer, action, saw_eof) = match read_command(&conn) {
        Ok(line) => {
            let (answer, action) = super::execute(shared, &line);
            (answer, action, false)
        }
        Err(bad) => {
            COUNTERS.bad_input.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("control client: {bad}");
            (format!("error: {bad}\n"), Action::None, bad.saw_eof())
        }
    };
    if let Err(e) = write_all_within(&conn, answer.as_bytes(), WRITE_TIMEOUT) {
        tracing::debug!("control client did not take its answer: {e}");
    }
    let _ = conn.shutdown(Shutdown::Write);
    if action == Action::Stop {
        shared.life.stopping.store(true, Ordering::SeqCst);
        on_stop();
    }
    if !saw_eof {
        drain(&conn);
    }
}

/// One command line: bytes up to the first newline, read within [`READ_TIMEOUT`] in all.
fn read_command(conn: &UnixStream) -> Result<String, BadInput> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BadInput::Timeout);
        }
        conn.set_read_timeout(Some(left)).map_err(BadInput::Io)?;
        let n = match (&*conn).read(&mut buf) {
            Ok(0) if line.is_empty() => return Err(BadInput::NoCommand),
            Ok(0) => return Err(BadInput::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BadInput::Timeout)
            }
            Err(e) => return Err(BadInput::Io(e)),
        };
        let end = memchr::memchr(b'\n', &buf[..n]);
        line.extend_from_slice(&buf[..end.unwrap_or(n)]);
        if line.len() > MAX_LINE {
            return Err(BadInput::TooLong);
        }
        if end.is_some() {
            break;
        }
    }
    if line.contains(&0) {
        return Err(BadInput::Nul);
    }
    String::from_utf8(line).map_err(|_| BadInput::NotUtf8)
}

/// `write_all` with one deadline for the whole answer.
fn write_all_within(conn: &UnixStream, mut data: &[u8], limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match (&*conn).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read and discard the client's remaining input until EOF, a pause of [`DRAIN_IDLE`],
/// [`DRAIN_LIMIT`] bytes or [`DRAIN_TIMEOUT`], whichever comes first.
fn drain(conn: &UnixStream) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut buf = [0u8; 8192];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left.min(DRAIN_IDLE))).is_err() {
            return;
        }
        match (&*conn).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
