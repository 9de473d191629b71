//! Bounded I/O on a stream: reads and writes that give up after a timeout or when the shard
//! drains. monoio 0.2.4
//! loses a byte that races a cancelled read, so every caller closes the connection after a read
//! ends that way and never reads on.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::RawFd;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::AsyncWriteRentExt;

use super::{sleep, Drain, Stream};

/// How a bounded read ended.
#[derive(Debug)]
pub enum Read {
    /// Bytes were appended to the buffer.
    Data,
    /// The peer closed its side.
    Eof,
    /// The deadline passed with nothing read.
    TimedOut,
    /// The shard began draining while this (idle) read waited.
    Drained,
    /// The watched socket became readable while this read waited (`recv_watching`).
    Woken,
    Err(io::Error),
}

/// Append what the stream has into `buf`'s spare capacity (at least `min_spare` bytes of room
/// are made first), waiting at most `timeout`.
///
/// When the read ends without data (timeout) it is abandoned, and a byte that raced it may be
/// lost: every caller stops reading that stream then. The plain
/// (non-cancelable) read avoids monoio's per-read canceller allocation on the hot path.
pub async fn read_into<S: Stream>(
    stream: &mut S,
    mut buf: Vec<u8>,
    min_spare: usize,
    timeout: Duration,
) -> (Read, Vec<u8>) {
    if buf.capacity() - buf.len() < min_spare.max(1) {
        buf.reserve(min_spare.max(1024));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let mut fut = pin!(stream.read(buf.slice_mut(len..cap)));
    let mut timer = pin!(sleep(timeout));
    let done = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Read::TimedOut));
        }
        Poll::Pending
    })
    .await;
    match done {
        Ok((res, slice)) => {
            let buf = slice.into_inner();
            let outcome = match res {
                Ok(0) => Read::Eof,
                Ok(_) => Read::Data,
                Err(e) => Read::Err(e),
            };
            (outcome, buf)
        }
        // The buffer stays with the abandoned operation; the caller gets a fresh one.
        Err(why) => (why, Vec::new()),
    }
}

/// The idle wait of a keep-alive client connection: append what `stream` sends into `buf`,
/// waiting at most `timeout`, ending early when the shard drains. Unlike [`read_into`], a
/// drain cancels the read properly and waits for the kernel's verdict, so no byte is lost:
/// either the read was cancelled with nothing taken ([`Read::Drained`]: the connection can be
/// handed to another process, or closed, with every byte the client sent still in its socket),
/// or data won the race ([`Read::Data`]: the request is served as usual). `canceller` is the
/// connection's own (made once per connection, not per read); a drain replaces it.
pub async fn read_idle(
    stream: &mut super::TcpStream,
    mut buf: Vec<u8>,
    min_spare: usize,
    timeout: Duration,
    drain: &Drain,
    canceller: &mut monoio::io::Canceller,
) -> (Read, Vec<u8>) {
    use monoio::io::CancelableAsyncReadRent;
    if buf.capacity() - buf.len() < min_spare.max(1) {
        buf.reserve(min_spare.max(1024));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let mut fut = pin!(stream.cancelable_read(buf.slice_mut(len..cap), canceller.handle()));
    let mut timer = pin!(sleep(timeout));
    let mut drain_wait = drain.wait();
    enum Early<T> {
        Done(T),
        TimedOut,
        Cancelled,
    }
    let early = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Early::Done(r));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Early::TimedOut);
        }
        if drain_wait.poll_drained(cx) {
            // Cancel, then take the read's own outcome below.
            let old = std::mem::replace(canceller, monoio::io::Canceller::new());
            let _ = old.cancel();
            return Poll::Ready(Early::Cancelled);
        }
        Poll::Pending
    })
    .await;
    let (res, slice) = match early {
        Early::Done(r) => r,
        Early::Cancelled => fut.await,
        // The keep-alive timeout: the connection closes, so the abandoned read may keep a byte.
        Early::TimedOut => return (Read::TimedOut, Vec::new()),
    };
    let buf = slice.into_inner();
    let outcome = match res {
        Ok(0) => Read::Eof,
        Ok(_) => Read::Data,
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Read::Drained,
        Err(e) => Read::Err(e),
    };
    (outcome, buf)
}

/// Non-blocking `send(2)` of what the socket takes of `data` now: `WouldBlock` when nothing.
/// The write path tries it before handing a write to the runtime: a socket with room (nearly
/// always, for a request head or a small answer) takes the bytes at once, and the io_uring
/// write, its completion and the task's extra wake-up are saved.
pub fn send_now(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: send(2) from a live slice; MSG_NOSIGNAL: EPIPE instead of a signal.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Write all of `buf`, each underlying write bounded by `timeout` (a peer that stops reading for
/// that long is given up on, and the stream is shut down: a cancelled write has lost its place,
/// so the stream is never used again). A plain socket is first offered the whole buffer with
/// [`send_now`]; only what it does not take goes through the runtime.
pub async fn write_all<S: Stream, B: IoBuf + 'static>(
    stream: &mut S,
    buf: B,
    timeout: Duration,
) -> (io::Result<()>, B) {
    if let Some(fd) = stream.splice_fd() {
        // SAFETY: the buffer's first bytes_init() bytes are initialised and it lives for the call.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let sent = loop {
            match send_now(fd, data) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(e) => return (Err(e), buf),
            }
        };
        if sent == data.len() {
            return (Ok(()), buf);
        }
        if sent > 0 {
            // Partly taken: the rest waits for room, through the runtime.
            let (r, rest) = write_all_slow(stream, buf.slice(sent..), timeout).await;
            return (r, rest.into_inner());
        }
    }
    write_all_slow(stream, buf, timeout).await
}

async fn write_all_slow<S: Stream, B: IoBuf + 'static>(
    stream: &mut S,
    buf: B,
    timeout: Duration,
) -> (io::Result<()>, B) {
    let fd = stream.raw_fd();
    let mut fut = pin!(stream.write_all(buf));
    // Raced by reference: on a timeout the write itself is kept and finished below.
    match self::timeout(timeout, fut.as_mut()).await {
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

/// A response head and a body shared with a cache, written together by `writev` so the body
/// is not copied into the head's buffer.
pub struct HeadBody {
    head: Vec<u8>,
    /// Only held: the second iovec points into it.
    #[allow(dead_code)]
    body: bytes::Bytes,
    /// Boxed so the pointer the runtime reads stays put while it owns the value.
    iov: Box<[libc::iovec; 2]>,
}

impl HeadBody {
    pub fn new(head: Vec<u8>, body: bytes::Bytes) -> HeadBody {
        let iov = Box::new([
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ]);
        HeadBody { head, body, iov }
    }
}

// SAFETY: the iovecs point into `head` and `body`, which are never changed while the value
// lives (the fields are private and nothing mutates them), and into the boxed array, whose
// address does not move when the value does.
unsafe impl monoio::buf::IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        2
    }
}

/// Write `head` then `body` in as few `writev` calls as the socket takes, bounded by `timeout`
/// as [`write_all`] is. Gives the head's buffer back.
pub async fn write_head_body<S: Stream>(
    stream: &mut S,
    head: Vec<u8>,
    body: bytes::Bytes,
    timeout: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let fd = stream.raw_fd();
    let mut fut = pin!(stream.write_vectored_all(HeadBody::new(head, body)));
    match self::timeout(timeout, fut.as_mut()).await {
        Some((r, b)) => (r.map(|_| ()), b.head),
        None => {
            shutdown_fd(fd);
            let (_, b) = fut.await;
            (
                Err(io::Error::new(io::ErrorKind::TimedOut, "send timeout")),
                b.head,
            )
        }
    }
}

/// Close after a last answer: shut our side down, then read and discard what the peer still
/// sends for at most `linger`, so the kernel does not answer unread data with a reset that
/// could destroy the answer on its way. `buf` is a buffer the connection already has (reused:
/// closing allocates nothing, which matters when hundreds close at once).
pub async fn linger_close<S: Stream>(mut stream: S, mut buf: Vec<u8>, linger: Duration) {
    shutdown_write(&mut stream).await;
    let deadline = Instant::now() + linger;
    if buf.capacity() == 0 {
        buf.reserve(2048);
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        buf.clear();
        let (r, b) = read_into(&mut stream, buf, 0, left).await;
        buf = b;
        if !matches!(r, Read::Data) {
            break;
        }
    }
}

/// Half-close our sending side (the peer reads EOF after what was sent).
pub async fn shutdown_write<S: Stream>(stream: &mut S) {
    let _ = stream.shutdown().await;
}

/// Half-close a socket's sending side by descriptor (the peer reads EOF after what was sent).
pub fn shutdown_write_fd(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor we own; an invalid fd only yields EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Shut a socket down in both directions by descriptor: pending and future reads and writes on
/// it end at once (used to stop a connection whose operations another task is awaiting).
pub fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor we own; an invalid fd only yields EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use super::*;
    use crate::config::IoDriver;

    /// A connected pair: the client side (std, blocking) and the server side (the runtime's).
    fn pair() -> (std::net::TcpStream, super::super::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (srv, _) = l.accept().unwrap();
        srv.set_nonblocking(true).unwrap();
        (client, super::super::TcpStream::from_std(srv).unwrap())
    }

    /// Under both drivers: a drain that races bytes arriving on an idle connection either
    /// takes them (`Data`) or leaves every one of them in the socket (`Drained`); across many
    /// timings, every byte sent is read exactly once.
    #[test]
    fn a_drained_idle_read_loses_no_byte() {
        for driver in [IoDriver::Uring, IoDriver::Epoll] {
            crate::rt::run_shard(driver, 64, |_| async {
                let (mut drained, mut data) = (0, 0);
                for i in 0..200u32 {
                    let (mut client, mut srv) = pair();
                    let drain = Drain::default();
                    let mut canceller = monoio::io::Canceller::new();
                    let msg = format!("request {i}\n");
                    let racer = async {
                        // Vary when the bytes and the drain come relative to each other.
                        if i % 3 != 0 {
                            sleep(Duration::from_micros(u64::from(i % 7) * 50)).await;
                        }
                        client.write_all(msg.as_bytes()).unwrap();
                        if i % 2 == 0 {
                            sleep(Duration::from_micros(u64::from(i % 5) * 20)).await;
                        }
                        drain.fire();
                    };
                    let read = read_idle(
                        &mut srv,
                        Vec::with_capacity(64),
                        0,
                        Duration::from_secs(5),
                        &drain,
                        &mut canceller,
                    );
                    let ((r, mut got), ()) = monoio::join!(read, racer);
                    match r {
                        Read::Data => data += 1,
                        Read::Drained => drained += 1,
                        other => panic!("{other:?}"),
                    }
                    while got.len() < msg.len() {
                        let (r, b) = read_into(&mut srv, got, 64, Duration::from_secs(2)).await;
                        got = b;
                        assert!(matches!(r, Read::Data), "{r:?} after {got:?}");
                    }
                    assert_eq!(got, msg.as_bytes(), "iteration {i}");
                }
                // Both outcomes happen, or the race was not exercised.
                assert!(drained > 0, "never drained first ({data} data)");
                assert!(data > 0, "data never won ({drained} drained)");
            })
            .unwrap();
        }
    }
}
