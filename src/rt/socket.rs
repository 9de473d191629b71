//! A client connection's socket: plain TCP, or TLS over TCP. The data path holds a [`Socket`]
//! and asks it for what differs: whether bytes may be spliced ([`Stream::splice_fd`]), and the
//! few waits that race a read against something else ([`Socket::recv_watching`],
//! [`Socket::read_idle`]), which plain TCP does with readiness and TLS with its own
//! cancel-safe reads.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use super::tls::TlsStream;
use super::{sleep, Drain, Pace, Read, SpliceError, Stream, TcpStream};

pub enum Socket {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl Socket {
    /// The TCP socket underneath (readiness, socket options, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Tcp(t) => t,
            Socket::Tls(t) => t.tcp(),
        }
    }

    /// Append what the peer sends into `buf`'s spare capacity, waiting at most `limit`; when
    /// `watch` turns readable first, [`Read::Woken`] and nothing was taken (plain: no `recv`
    /// was made; TLS: what arrived stays in the session).
    pub async fn recv_watching(
        &mut self,
        buf: &mut Vec<u8>,
        limit: Duration,
        watch: &mut Socket,
    ) -> Read {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let r = match self {
                Socket::Tcp(t) => super::recv_watching(t, buf, left, watch.tcp()).await,
                Socket::Tls(t) => {
                    if buf.capacity() == buf.len() {
                        buf.reserve(16 * 1024);
                    }
                    let other = async {
                        let mut woken = pin!(watch.tcp().readable(false));
                        let mut timer = pin!(sleep(left));
                        poll_fn(|cx| {
                            if woken.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(Read::Woken);
                            }
                            timer.as_mut().poll(cx).map(|_| Read::TimedOut)
                        })
                        .await
                    };
                    read_racing(t, buf, other).await
                }
            };
            // Readable is not always an answer over TLS: a session ticket or a key update
            // wakes the wait too. Those are taken into the session and the wait goes on.
            if matches!(r, Read::Woken) && !watch.data_ready() {
                continue;
            }
            return r;
        }
    }

    /// Non-blocking: append what the peer has sent into `buf`'s spare capacity; `Ok(0)` at
    /// EOF, `WouldBlock` when nothing is there now.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(16 * 1024);
        }
        match self {
            Socket::Tcp(t) => super::splice::recv_spare(t.as_raw_fd(), buf),
            Socket::Tls(t) => {
                let len = buf.len();
                let spare = buf.spare_capacity_mut();
                // SAFETY: try_read_plain only writes into the slice and says how much.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, spare.len())
                };
                let n = t.try_read_plain(dst)?;
                // SAFETY: `n` bytes past the old length were just initialised.
                unsafe { buf.set_len(len + n) };
                Ok(n)
            }
        }
    }

    /// Non-blocking: send what the socket (or the TLS session) takes of `data`.
    pub fn try_send(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(t) => super::io::send_now(t.as_raw_fd(), data),
            Socket::Tls(t) => t.try_write_plain(data),
        }
    }

    /// Non-blocking: send what TLS still holds; true when nothing waits (always, in plain).
    pub fn try_flush(&mut self) -> io::Result<bool> {
        match self {
            Socket::Tcp(_) => Ok(true),
            Socket::Tls(t) => t.try_flush(),
        }
    }

    /// Does TLS hold records for the socket?
    pub fn has_pending_output(&self) -> bool {
        match self {
            Socket::Tcp(_) => false,
            Socket::Tls(t) => t.has_pending_output(),
        }
    }

    /// Has the peer said something a read would return (data, EOF or an error)? Plain: the
    /// socket is readable. TLS: application data or the end, not a session ticket or a key
    /// update (those are taken into the session here). Non-blocking and cancel-safe.
    pub fn data_ready(&mut self) -> bool {
        match self {
            Socket::Tcp(t) => !super::idle_is_quiet(t),
            Socket::Tls(t) => t.data_ready(),
        }
    }

    /// Half-close our sending side now (TLS: `close_notify` queued; the socket is shut down
    /// for writing once it has left, see [`Socket::finish_shutdown`]).
    pub fn start_shutdown(&mut self) {
        match self {
            Socket::Tcp(t) => super::shutdown_write_fd(t.as_raw_fd()),
            Socket::Tls(t) => t.queue_close_notify(),
        }
    }

    /// After [`Socket::start_shutdown`] and a flush: shut the socket's sending side down.
    pub fn finish_shutdown(&mut self) {
        if let Socket::Tls(t) = self {
            super::shutdown_write_fd(t.tcp().as_raw_fd());
        }
    }

    /// Append what the peer sends into `buf`'s spare capacity, waiting as long as it takes.
    /// Cancel-safe: dropped before it ends, nothing was taken (plain: readiness, then a
    /// non-blocking `recv`; TLS: the session keeps what arrived).
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> Read {
        loop {
            match self.try_recv(buf) {
                Ok(0) => return Read::Eof,
                Ok(_) => return Read::Data,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // TLS: what the socket held was taken into the session; nothing is left in
                // it, so its readiness is what to wait for.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.tcp().readable(false).await {
                        return Read::Err(e);
                    }
                }
                Err(e) => return Read::Err(e),
            }
        }
    }

    /// Send all of `data` (see [`super::send_watching`]): over plain TCP, a server turning
    /// readable while it is not taking bytes ends the send ([`SpliceError::WokenMidway`]); over
    /// TLS the records are sent whole, within `limit`.
    pub async fn send_watching(
        &mut self,
        mut data: &[u8],
        limit: Duration,
        sent: &mut u64,
    ) -> Result<(), SpliceError> {
        if let Socket::Tcp(t) = self {
            return super::send_watching(t, data, limit, true, sent).await;
        }
        // TLS: non-blocking writes; while the server does not take more, its answering
        // (application data, not a session ticket) ends the send as it does in plain.
        loop {
            let flushed = self.try_flush().map_err(|_| SpliceError::Dest)?;
            if flushed && data.is_empty() {
                return Ok(());
            }
            if flushed {
                match self.try_send(data) {
                    Ok(n) => {
                        data = &data[n..];
                        *sent += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(SpliceError::Dest),
                }
            }
            if self.data_ready() {
                return Err(SpliceError::WokenMidway);
            }
            let tcp = self.tcp();
            let mut w = pin!(tcp.writable(false));
            let mut r = pin!(tcp.readable(false));
            let mut timer = pin!(sleep(limit));
            let woke = poll_fn(|cx| {
                if w.as_mut().poll(cx).is_ready() || r.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                timer.as_mut().poll(cx).map(|_| false)
            })
            .await;
            if !woke {
                return Err(SpliceError::Dest);
            }
        }
    }

    /// Send `len` bytes of the file `file` from `offset`: by `sendfile(2)` over plain TCP, read
    /// into `scratch` and encrypted over TLS. Each wait is bounded by `limit` (metered by
    /// `pace`); `moved` counts what was sent.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_file(
        &mut self,
        file: RawFd,
        offset: u64,
        len: u64,
        limit: Duration,
        pace: Option<&Pace>,
        scratch: &mut Vec<u8>,
        moved: &mut u64,
    ) -> io::Result<()> {
        let t = match self {
            Socket::Tcp(t) => {
                return super::sendfile_exact(file, offset, len, t, limit, pace, moved).await
            }
            Socket::Tls(t) => t,
        };
        // One TLS record's worth at a time.
        const STEP: usize = 16 * 1024;
        scratch.clear();
        scratch.reserve(STEP);
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let want = STEP.min((end - at) as usize);
            // SAFETY: pread(2) writes at most `want` bytes into the buffer's spare capacity
            // (at least STEP), which we read only up to what it reports.
            let n = unsafe {
                libc::pread(
                    file,
                    scratch.as_mut_ptr() as *mut libc::c_void,
                    want,
                    at as libc::off_t,
                )
            };
            if n <= 0 {
                return Err(if n == 0 {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its length")
                } else {
                    io::Error::last_os_error()
                });
            }
            // SAFETY: `n` bytes were just initialised.
            unsafe { scratch.set_len(n as usize) };
            let m = Pace::meter(pace, limit, *moved);
            match super::timeout(m.limit, t.write_plain(scratch)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(io::ErrorKind::TimedOut.into()),
            }
            drop(m);
            *moved += n as u64;
            at += n as u64;
            scratch.clear();
        }
        Ok(())
    }

    /// The idle wait of a keep-alive connection (see [`super::read_idle`]). Over TLS a drain
    /// ends the wait with nothing lost too (the session keeps what arrived), but such a
    /// connection cannot be handed to another process: the caller closes it.
    pub async fn read_idle(
        &mut self,
        mut buf: Vec<u8>,
        min_spare: usize,
        timeout: Duration,
        drain: &Drain,
        canceller: &mut monoio::io::Canceller,
    ) -> (Read, Vec<u8>) {
        match self {
            Socket::Tcp(t) => super::read_idle(t, buf, min_spare, timeout, drain, canceller).await,
            Socket::Tls(t) => {
                if buf.capacity() - buf.len() < min_spare.max(1) {
                    buf.reserve(min_spare.max(1024));
                }
                let other = async {
                    let mut timer = pin!(sleep(timeout));
                    let mut drained = drain.wait();
                    poll_fn(|cx| {
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Read::TimedOut);
                        }
                        if drained.poll_drained(cx) {
                            return Poll::Ready(Read::Drained);
                        }
                        Poll::Pending
                    })
                    .await
                };
                let r = read_racing(t, &mut buf, other).await;
                (r, buf)
            }
        }
    }
}

/// Wait until `a` or `b` sends, whichever first: its bytes are appended to its buffer and the
/// answer says which side it was (`true`: `a`) and how its read ended. A side marked closed
/// (`a_open`/`b_open` false) is not read. Both reads are cancel-safe, so the side that loses
/// the race keeps everything it had.
pub async fn recv_either(
    a: &mut Socket,
    abuf: &mut Vec<u8>,
    a_open: bool,
    b: &mut Socket,
    bbuf: &mut Vec<u8>,
    b_open: bool,
) -> (bool, Read) {
    let mut ra = pin!(async {
        if a_open {
            a.recv(abuf).await
        } else {
            std::future::pending().await
        }
    });
    let mut rb = pin!(async {
        if b_open {
            b.recv(bbuf).await
        } else {
            std::future::pending().await
        }
    });
    poll_fn(|cx| {
        if let Poll::Ready(r) = ra.as_mut().poll(cx) {
            return Poll::Ready((true, r));
        }
        rb.as_mut().poll(cx).map(|r| (false, r))
    })
    .await
}

/// Read decrypted bytes into `buf`'s spare capacity unless `other` ends first (its answer is
/// returned then, and what arrived stays in the session: TLS reads are cancel-safe).
async fn read_racing(
    t: &mut TlsStream,
    buf: &mut Vec<u8>,
    other: impl Future<Output = Read>,
) -> Read {
    let len = buf.len();
    let got = {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read_plain only writes into the slice (never reads it) and reports how much
        // it wrote; `buf` is not touched while the slice lives (this block).
        let dst =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, spare.len()) };
        let mut read = pin!(t.read_plain(dst));
        let mut other = pin!(other);
        poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(match r {
                    Ok(0) => (Read::Eof, 0),
                    Ok(n) => (Read::Data, n),
                    Err(e) => (Read::Err(e), 0),
                });
            }
            other.as_mut().poll(cx).map(|r| (r, 0))
        })
        .await
    };
    // SAFETY: read_plain initialised `got.1` bytes past the old length.
    unsafe { buf.set_len(len + got.1) };
    got.0
}

impl Stream for Socket {
    fn splice_fd(&self) -> Option<RawFd> {
        match self {
            Socket::Tcp(t) => Some(t.as_raw_fd()),
            Socket::Tls(_) => None,
        }
    }
    fn raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl AsyncReadRent for Socket {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Socket::Tcp(t) => t.read(buf).await,
            Socket::Tls(t) => t.read(buf).await,
        }
    }
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Socket::Tcp(t) => t.readv(buf).await,
            Socket::Tls(t) => t.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Socket {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Socket::Tcp(t) => t.write(buf).await,
            Socket::Tls(t) => t.write(buf).await,
        }
    }
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Socket::Tcp(t) => t.writev(buf).await,
            Socket::Tls(t) => t.writev(buf).await,
        }
    }
    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(t) => t.flush().await,
            Socket::Tls(t) => t.flush().await,
        }
    }
    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(t) => t.shutdown().await,
            Socket::Tls(t) => t.shutdown().await,
        }
    }
}
