//! The runtime seam: every use of monoio goes through here, so protocol and balancing code never
//! see it, and the known pitfalls of monoio 0.2.4 (../shared/RUNTIME.md) are handled once:
//!
//! - Reads with a deadline race the read against a timer; on expiry the read is abandoned (its
//!   buffer stays with the runtime until the kernel is done with it). A byte that raced the timer
//!   may be lost, so every caller closes the connection after a timeout and never reads on.
//!   Accepts, which would leak an fd if abandoned, are cancelled properly instead.
//! - Connects never race a timer inside monoio (a dropped connect future leaks its fd): the
//!   socket is created non-blocking by us, `connect(2)` is issued directly, and only the
//!   writability wait (which owns no fd) is bounded by the deadline.
//! - Listeners are SO_REUSEPORT so that every shard accepts on its own socket.
//!
//! All sockets are non-blocking (O_NONBLOCK). io_uring still completes reads and writes on them
//! by polling internally; the epoll driver requires it; and it is what lets [`splice_exact`] move
//! bytes without blocking the shard.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

pub use monoio::io::Splitable;
pub use monoio::net::{TcpListener, TcpStream};
pub use monoio::spawn;
pub use monoio::time::sleep;

/// Microseconds since the process started (command timing).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Milliseconds since the process started: the clock shared by every shard for down marks and
/// idle stamps. Never 0, so 0 can mean "not set".
pub fn now_ms() -> u64 {
    ms_of(now_us())
}

/// [`now_ms`] for a reading of [`now_us`] already taken.
pub fn ms_of(us: u64) -> u64 {
    us / 1000 + 1
}

/// How a bounded read ended.
#[derive(Debug)]
pub enum Read {
    /// This many bytes were appended to the buffer.
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// The deadline passed with nothing read.
    TimedOut,
    /// The shard began draining while this (idle) read waited.
    Drained,
    Err(io::Error),
}

/// Append what the socket has into `buf`'s spare capacity (at least `min_spare` bytes of room are
/// made first), waiting at most `timeout`, and giving up early if `drain` fires.
///
/// On a timeout or drain the read is abandoned, and a byte that raced the timer may be lost
/// (../shared/RUNTIME.md): every caller closes the connection in that case, so nothing that
/// could be lost is ever used. The plain (non-cancelable) read avoids monoio's per-read
/// canceller allocation on the hot path.
pub async fn read_into(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    min_spare: usize,
    timeout: Duration,
    drain: Option<&Drain>,
) -> (Read, Vec<u8>) {
    use monoio::io::AsyncReadRent;
    if buf.capacity() - buf.len() < min_spare.max(1) {
        buf.reserve(min_spare.max(1024));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let mut fut = pin!(stream.read(buf.slice_mut(len..cap)));
    let mut timer = pin!(sleep(timeout));
    let mut drain_wait = drain.map(|d| d.wait());
    let done = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Read::TimedOut));
        }
        if let Some(w) = drain_wait.as_mut() {
            if w.poll_drained(cx) {
                return Poll::Ready(Err(Read::Drained));
            }
        }
        Poll::Pending
    })
    .await;
    match done {
        Ok((res, slice)) => {
            let buf = slice.into_inner();
            let outcome = match res {
                Ok(0) => Read::Eof,
                Ok(n) => Read::Data(n),
                Err(e) => Read::Err(e),
            };
            (outcome, buf)
        }
        // The buffer stays with the abandoned operation; the caller gets a fresh one.
        Err(why) => (why, Vec::new()),
    }
}

/// Write all of `buf[range]`, each underlying write bounded by `timeout` (a peer that stops
/// reading for that long is given up on; the connection is then closed by the caller, so a
/// cancelled write losing its place does not matter).
pub async fn write_all<B: IoBuf + 'static>(
    stream: &mut TcpStream,
    buf: B,
    timeout: Duration,
) -> (io::Result<()>, B) {
    let fd = stream.as_raw_fd();
    let mut fut = pin!(stream.write_all(buf));
    let mut timer = pin!(sleep(timeout));
    let done = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    match done {
        Some((r, b)) => (r.map(|_| ()), b),
        None => {
            // The write future owns the buffer; wait for it to finish after the socket is shut
            // down so the buffer comes back and the operation cannot touch freed memory.
            shutdown_fd(fd);
            let (_, b) = fut.await;
            (
                Err(io::Error::new(io::ErrorKind::TimedOut, "send timeout")),
                b,
            )
        }
    }
}

/// Half-close our sending side (the peer reads EOF after what was sent).
pub async fn shutdown_write(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
}

/// Shut a socket down in both directions by descriptor: pending and future reads and writes on
/// it end at once (used to stop a connection whose operations another task is awaiting).
pub fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor we own; an invalid fd only yields EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with valid flag arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Prepare an accepted client socket: non-blocking, no Nagle delay.
pub fn prepare_accepted(stream: &TcpStream) {
    let _ = set_nonblocking(stream.as_raw_fd());
    let _ = stream.set_nodelay(true);
}

/// Connect to `addr`, giving up after `timeout`. A refused connect fails fast with
/// `ConnectionRefused`; an expired one with `TimedOut`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the fd comes from `socket`, whose ownership moves into the std stream.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let stream = TcpStream::from_std(std_stream)?;
    let outcome = self::timeout(timeout, stream.writable(false)).await;
    match outcome {
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        Some(Err(e)) => Err(e),
        Some(Ok(())) => {
            // The socket is writable: the connect finished, in success or failure.
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `err`.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            Ok(stream)
        }
    }
}

/// Bind a listening socket with SO_REUSEPORT (each shard binds its own on the same address, and
/// the kernel spreads new connections across them), non-blocking and close-on-exec.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Accept one connection; `Ok(None)` when `canceller` fired (the shard is draining).
pub async fn accept(
    listener: &TcpListener,
    cancel: monoio::io::CancelHandle,
) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    match listener.cancelable_accept(cancel).await {
        Ok(pair) => Ok(Some(pair)),
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Ok(None),
        Err(e) => Err(e),
    }
}

pub use monoio::io::Canceller as AcceptCanceller;

/// A shard-local "stop waiting" signal: idle keep-alive reads wait on it so that a graceful
/// stop closes them at once instead of after their keep-alive timeout.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Rc<DrainInner>,
}

#[derive(Default)]
struct DrainInner {
    fired: Cell<bool>,
    // Slots of waiting futures; freed on drop so the table stays as large as the idle set.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    pub fn fire(&self) {
        self.inner.fired.set(true);
        for w in self.inner.slots.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    pub fn fired(&self) -> bool {
        self.inner.fired.get()
    }

    fn wait(&self) -> DrainWait {
        DrainWait {
            drain: self.clone(),
            slot: None,
        }
    }
}

struct DrainWait {
    drain: Drain,
    slot: Option<usize>,
}

impl DrainWait {
    fn poll_drained(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let inner = &self.drain.inner;
        if inner.fired.get() {
            return true;
        }
        let mut slots = inner.slots.borrow_mut();
        let slot = *self
            .slot
            .get_or_insert_with(|| match inner.free.borrow_mut().pop() {
                Some(i) => i,
                None => {
                    slots.push(None);
                    slots.len() - 1
                }
            });
        match &mut slots[slot] {
            Some(w) if w.will_wake(cx.waker()) => {}
            s => *s = Some(cx.waker().clone()),
        }
        false
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.inner.slots.borrow_mut()[i] = None;
            self.drain.inner.free.borrow_mut().push(i);
        }
    }
}

/// A shard-local counting gate: bounded upstream connections per server. `acquire` takes a
/// free slot or queues (FIFO) for one; `release` hands a slot straight to the first waiter still
/// waiting, so each release costs one wake-up however many requests are queued.
#[derive(Default)]
pub struct Gate {
    waiters: RefCell<std::collections::VecDeque<Rc<Waiter>>>,
    free: Cell<usize>,
}

#[derive(Default)]
struct Waiter {
    waker: RefCell<Option<Waker>>,
    granted: Cell<bool>,
    abandoned: Cell<bool>,
}

/// Leaves the queue cleanly however `acquire` ends: a slot granted to a waiter that is going
/// away is passed on.
struct QueuedGuard<'a> {
    gate: &'a Gate,
    me: Rc<Waiter>,
    done: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.me.abandoned.set(true);
        if self.me.granted.get() {
            self.gate.release();
        }
    }
}

impl Gate {
    pub fn new(slots: usize) -> Self {
        Gate {
            waiters: Default::default(),
            free: Cell::new(slots),
        }
    }

    /// Take a slot, waiting at most `timeout`; false when it expired.
    pub async fn acquire(&self, timeout: Duration) -> bool {
        if self.free.get() > 0 {
            self.free.set(self.free.get() - 1);
            return true;
        }
        let me = Rc::new(Waiter::default());
        self.waiters.borrow_mut().push_back(me.clone());
        let mut guard = QueuedGuard {
            gate: self,
            me,
            done: false,
        };
        let mut timer = pin!(sleep(timeout));
        let got = poll_fn(|cx| {
            if guard.me.granted.get() {
                return Poll::Ready(true);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            let mut w = guard.me.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        guard.done = got;
        got
    }

    /// Requests queued for a slot (an upper bound: waiters that gave up are counted until the
    /// next release skips them).
    pub fn queued(&self) -> usize {
        self.waiters.borrow().len()
    }

    pub fn release(&self) {
        loop {
            let next = self.waiters.borrow_mut().pop_front();
            match next {
                Some(w) if w.abandoned.get() => continue,
                Some(w) => {
                    w.granted.set(true);
                    if let Some(waker) = w.waker.borrow_mut().take() {
                        waker.wake();
                    }
                    return;
                }
                None => {
                    self.free.set(self.free.get() + 1);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    #[test]
    fn slots_are_handed_over_in_order_and_timeouts_pass_them_on() {
        block_on(async {
            let gate = Rc::new(Gate::new(1));
            assert!(gate.acquire(Duration::from_millis(10)).await);
            // No slot: a waiter times out, and its place in the queue is skipped later.
            assert!(!gate.acquire(Duration::from_millis(10)).await);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (g, o) = (gate.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    assert!(g.acquire(Duration::from_secs(5)).await);
                    o.borrow_mut().push(i);
                    sleep(Duration::from_millis(5)).await;
                    g.release();
                }));
            }
            sleep(Duration::from_millis(20)).await;
            gate.release();
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
            // Everything given back: one slot free again.
            assert!(gate.acquire(Duration::from_millis(10)).await);
            assert!(!gate.acquire(Duration::from_millis(10)).await);
        });
    }
}

/// Await `fut`, returning `None` if `timeout` passes first. Only for futures that are safe to
/// drop mid-way (no owned I/O, e.g. readiness waits and our own joins).
pub async fn timeout<F: Future>(timeout: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut timer = pin!(sleep(timeout));
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Which I/O driver a shard ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Epoll,
}

/// Is io_uring usable by this process (not blocked by seccomp, supported by the kernel)?
pub fn uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Build a runtime for the current thread and run `main` on it to completion.
pub fn run_shard<F, Fut>(want: crate::config::IoDriver, entries: u32, main: F) -> io::Result<Driver>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future<Output = ()>,
{
    use crate::config::IoDriver;
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let forced_legacy = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some();
    let try_uring = match want {
        IoDriver::Epoll => false,
        IoDriver::Uring => true,
        IoDriver::Auto if forced_legacy => {
            tracing::info!("MONOIO_FORCE_LEGACY_DRIVER is set; using epoll");
            false
        }
        IoDriver::Auto => {
            let ok = uring_available();
            if !ok {
                tracing::warn!("io_uring is unavailable (blocked by seccomp or not supported); falling back to epoll");
            }
            ok
        }
    };
    if try_uring {
        // A ring used by one thread only can skip the kernel's cross-thread machinery:
        // completions run as deferred task work when this thread waits (DEFER_TASKRUN, which
        // needs SINGLE_ISSUER), never by interrupting it (COOP_TASKRUN). Kernels before 6.1
        // refuse these flags; the plain ring is tried next.
        let mut tuned = io_uring::IoUring::builder();
        tuned
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(tuned)
            .enable_timer()
            .build()
            .or_else(|e| {
                tracing::info!(error = %e, "io_uring setup flags refused; using a plain ring");
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
                    .build()
            });
        match built {
            Ok(mut rt) => {
                rt.block_on(main(Driver::Uring));
                return Ok(Driver::Uring);
            }
            Err(e) if want == IoDriver::Auto => {
                tracing::warn!(error = %e, "io_uring ring could not be built; falling back to epoll");
            }
            Err(e) => return Err(e),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(main(Driver::Epoll));
    Ok(Driver::Epoll)
}

/// Bodies at least this long (still to relay, past what is already buffered) are spliced
/// through a pipe instead of copied through user space.
pub const SPLICE_MIN: u64 = 64 * 1024;
/// Pipe capacity asked for (the kernel may grant less; we only rely on what it reports).
const PIPE_SIZE: libc::c_int = 256 * 1024;
/// Pipes kept per shard for reuse.
const PIPE_POOL: usize = 64;

/// A kernel pipe used as the buffer of a splice relay. Empty whenever it is in the pool.
pub struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        // SAFETY: fcntl on our own pipe fd.
        let got = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let capacity = if got > 0 {
            got as usize
        } else {
            // SAFETY: as above.
            let cur = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
            if cur > 0 {
                cur as usize
            } else {
                64 * 1024
            }
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// A shard's pipes.
#[derive(Default)]
pub struct PipePool {
    free: RefCell<Vec<Pipe>>,
}

impl PipePool {
    pub fn take(&self) -> io::Result<Pipe> {
        match self.free.borrow_mut().pop() {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Only empty pipes come back; one holding bytes is closed instead.
    fn give_back(&self, p: Pipe) {
        let mut free = self.free.borrow_mut();
        if free.len() < PIPE_POOL {
            free.push(p);
        }
    }
}

fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between fds we own, no offsets; the kernel validates everything else.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Why a splice relay stopped early.
#[derive(Debug)]
pub enum SpliceError {
    /// The source closed, failed or stayed silent past its timeout.
    Source(io::Error),
    /// The destination failed or stopped reading past its timeout.
    Dest(io::Error),
}

/// Move exactly `len` bytes from `src` to `dst` through a pipe, waiting for readiness (bounded by
/// the timeouts) whenever a non-blocking splice would block. Both sockets are non-blocking.
pub async fn splice_exact(
    pipes: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    read_timeout: Duration,
    write_timeout: Duration,
) -> Result<u64, SpliceError> {
    let pipe = pipes.take().map_err(SpliceError::Source)?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pr, pw) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut to_read = len;
    let mut in_pipe = 0usize;
    let mut moved = 0u64;
    while moved < len {
        // Fill the pipe from the source.
        if to_read > 0 && in_pipe < pipe.capacity {
            let want = (pipe.capacity - in_pipe).min(to_read as usize);
            match splice_once(s, pw, want) {
                Ok(0) => return Err(SpliceError::Source(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    in_pipe += n;
                    to_read -= n as u64;
                }
                Err(e) if would_block(&e) => {
                    if in_pipe == 0 {
                        match timeout(read_timeout, src.readable(false)).await {
                            Some(Ok(())) => continue,
                            Some(Err(e)) => return Err(SpliceError::Source(e)),
                            None => {
                                return Err(SpliceError::Source(io::ErrorKind::TimedOut.into()))
                            }
                        }
                    }
                }
                Err(e) => return Err(SpliceError::Source(e)),
            }
        }
        // Drain the pipe into the destination.
        if in_pipe > 0 {
            match splice_once(pr, d, in_pipe) {
                Ok(n) => {
                    in_pipe -= n;
                    moved += n as u64;
                }
                Err(e) if would_block(&e) => {
                    match timeout(write_timeout, dst.writable(false)).await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(SpliceError::Dest(e)),
                        None => return Err(SpliceError::Dest(io::ErrorKind::TimedOut.into())),
                    }
                }
                Err(e) => return Err(SpliceError::Dest(e)),
            }
        }
    }
    pipes.give_back(pipe);
    Ok(moved)
}

/// One direction of a tunnel: splice everything `src` sends to `dst` until `src` closes, then
/// half-close `dst` (it reads EOF after the last byte). `activity` is shared by both directions
/// and stamped on every transfer; a wait gives up only when *neither* direction has moved bytes
/// for `idle` (HAProxy's `timeout tunnel`).
pub async fn splice_until_eof(
    pipes: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    idle: Duration,
    activity: &Cell<Instant>,
) -> Result<u64, SpliceError> {
    let pipe = pipes.take().map_err(SpliceError::Source)?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pr, pw) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut in_pipe = 0usize;
    let mut moved = 0u64;
    let mut eof = false;
    // Wait for readiness, but only give up when the whole tunnel has been idle for `idle`.
    async fn wait_idle<F: Future<Output = io::Result<()>>>(
        make: impl Fn() -> F,
        idle: Duration,
        activity: &Cell<Instant>,
    ) -> io::Result<()> {
        loop {
            let left = idle.saturating_sub(activity.get().elapsed());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Some(r) = timeout(left, make()).await {
                return r;
            }
        }
    }
    loop {
        if !eof && in_pipe < pipe.capacity {
            match splice_once(s, pw, pipe.capacity - in_pipe) {
                Ok(0) => eof = true,
                Ok(n) => {
                    in_pipe += n;
                    activity.set(Instant::now());
                }
                Err(e) if would_block(&e) => {
                    if in_pipe == 0 {
                        wait_idle(|| src.readable(false), idle, activity)
                            .await
                            .map_err(SpliceError::Source)?;
                        continue;
                    }
                }
                Err(e) => return Err(SpliceError::Source(e)),
            }
        }
        if in_pipe > 0 {
            match splice_once(pr, d, in_pipe) {
                Ok(n) => {
                    in_pipe -= n;
                    moved += n as u64;
                    activity.set(Instant::now());
                }
                Err(e) if would_block(&e) => {
                    wait_idle(|| dst.writable(false), idle, activity)
                        .await
                        .map_err(SpliceError::Dest)?;
                }
                Err(e) => return Err(SpliceError::Dest(e)),
            }
        } else if eof {
            // SAFETY: shutdown(2) of our own socket's sending side.
            unsafe {
                libc::shutdown(d, libc::SHUT_WR);
            }
            pipes.give_back(pipe);
            return Ok(moved);
        }
    }
}
