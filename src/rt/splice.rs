//! Zero-copy relays through kernel pipes: exactly N bytes (long bodies) or until EOF (tunnels),
//! by non-blocking `splice(2)` and readiness waits, so no io-wq thread is pinned per transfer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use super::{timeout, Pace, Read, TcpStream};

/// Bodies at least this long (still to relay, past what is already buffered) are spliced
/// through a pipe instead of copied through user space.
pub const SPLICE_MIN: u64 = 64 * 1024;
/// Pipe capacity asked for (the kernel may grant less; we only rely on what it reports).
const PIPE_SIZE: libc::c_int = 256 * 1024;
/// Pipes kept per shard for reuse.
pub const PIPE_POOL: usize = 64;

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

/// One non-blocking `recv(2)` into `buf`'s spare capacity (which must not be empty): the
/// bytes taken (0 at EOF), appended to `buf`.
pub fn recv_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv(2) writes at most `spare.len()` bytes into memory we own and do not read
    // until the kernel says how many it wrote.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr() as *mut libc::c_void,
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised exactly `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
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
    Dest,
    /// The destination became readable while the source was awaited: it answered (or closed)
    /// before the transfer ended. Nothing is in flight (every byte taken from the source was
    /// delivered), so the transfer may resume where it stopped.
    Woken,
    /// The destination became readable while it was not taking bytes: some are stranded in
    /// the pipe, so the transfer cannot go on.
    WokenMidway,
    /// No pipe could be made (out of descriptors): nothing was moved; copy instead.
    NoPipe(io::Error),
}

/// Move exactly `len` bytes from `src` to `dst` through a pipe, waiting for readiness (bounded by
/// the timeouts) whenever a non-blocking splice would block. Both sockets are non-blocking.
/// With `watch_dst`, a wait for the source also ends when `dst` turns readable
/// ([`SpliceError::Woken`]): a server answering before the request body is all there.
/// `moved` counts the bytes delivered to `dst`, whatever the outcome. Waits on a side with a
/// [`Pace`] are metered by it (`paces`: source, destination).
#[allow(clippy::too_many_arguments)]
pub async fn splice_exact(
    pipes: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    read_timeout: Duration,
    write_timeout: Duration,
    watch_dst: bool,
    paces: (Option<&Pace>, Option<&Pace>),
    moved: &mut u64,
) -> Result<(), SpliceError> {
    let pipe = pipes.take().map_err(SpliceError::NoPipe)?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pr, pw) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut to_read = len;
    let mut in_pipe = 0usize;
    let start = *moved;
    while *moved - start < len {
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
                        let m = Pace::meter(paces.0, read_timeout, *moved);
                        match wait_source(src, dst, watch_dst, m.limit).await {
                            Ok(()) => continue,
                            Err(e) => return Err(e),
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
                    *moved += n as u64;
                }
                Err(e) if would_block(&e) => {
                    let m = Pace::meter(paces.1, write_timeout, *moved);
                    wait_dest(dst, watch_dst, m.limit).await?
                }
                Err(_) => return Err(SpliceError::Dest),
            }
        }
    }
    pipes.give_back(pipe);
    Ok(())
}

/// Send all of `data` to `dst` by non-blocking `send(2)` and readiness waits (each bounded by
/// `limit`); with `watch`, `dst` turning readable while it is not taking bytes ends the send
/// with [`SpliceError::WokenMidway`]: a server answering instead of reading the request body.
/// `sent` counts the bytes that left.
pub async fn send_watching(
    dst: &TcpStream,
    mut data: &[u8],
    limit: Duration,
    watch: bool,
    sent: &mut u64,
) -> Result<(), SpliceError> {
    let fd = dst.as_raw_fd();
    while !data.is_empty() {
        let e = match super::send_now(fd, data) {
            Ok(n) => {
                data = &data[n..];
                *sent += n as u64;
                continue;
            }
            Err(e) => e,
        };
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if !would_block(&e) {
            return Err(SpliceError::Dest);
        }
        wait_dest(dst, watch, limit).await?;
    }
    Ok(())
}

/// Read what `src` has into the spare capacity of `buf` (a non-blocking `recv(2)` after a
/// readiness wait, at most `limit`); when `watch` turns readable first, [`Read::Woken`] and no
/// byte was taken from `src`: unlike an abandoned owned-buffer read, nothing is lost and
/// reading may go on later.
pub async fn recv_watching(
    src: &TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
    watch: &TcpStream,
) -> Read {
    if buf.capacity() == buf.len() {
        buf.reserve(16 * 1024);
    }
    let fd = src.as_raw_fd();
    loop {
        let e = match recv_spare(fd, buf) {
            Ok(0) => return Read::Eof,
            Ok(_) => return Read::Data,
            Err(e) => e,
        };
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if !would_block(&e) {
            return Read::Err(e);
        }
        match wait_source(src, watch, true, limit).await {
            Ok(()) => {}
            Err(SpliceError::Woken) => return Read::Woken,
            Err(SpliceError::Source(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Read::TimedOut
            }
            Err(SpliceError::Source(e)) => return Read::Err(e),
            Err(_) => return Read::Eof,
        }
    }
}

/// Send `len` bytes of the file `file` from `offset` to `dst` with non-blocking `sendfile(2)`
/// (file pages go to the socket without passing through user space), waiting for `dst` to take
/// more (metered by `pace` within `write_timeout`) whenever it would block. `moved` counts the
/// bytes sent. A file shorter than asked (truncated meanwhile) is an error: the client was
/// promised `len` bytes and only closing tells it otherwise.
pub async fn sendfile_exact(
    file: RawFd,
    mut offset: u64,
    len: u64,
    dst: &TcpStream,
    write_timeout: Duration,
    pace: Option<&Pace>,
    moved: &mut u64,
) -> io::Result<()> {
    let d = dst.as_raw_fd();
    let end = offset + len;
    while offset < end {
        let want = (end - offset).min(1 << 30) as usize;
        let mut off = offset as libc::off_t;
        // SAFETY: both fds are open for the duration of the call; the kernel checks the rest.
        let n = unsafe { libc::sendfile(d, file, &mut off, want) };
        if n > 0 {
            offset += n as u64;
            *moved += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let e = io::Error::last_os_error();
        if !would_block(&e) {
            return Err(e);
        }
        let m = Pace::meter(pace, write_timeout, *moved);
        wait_dest(dst, false, m.limit)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
    }
    Ok(())
}

/// Wait for `dst` to take more bytes, within `limit`; with `watch`, `dst` turning readable
/// first (a server answering instead of reading) ends the wait with
/// [`SpliceError::WokenMidway`].
async fn wait_dest(dst: &TcpStream, watch: bool, limit: Duration) -> Result<(), SpliceError> {
    let mut w = std::pin::pin!(dst.writable(false));
    let mut r = std::pin::pin!(async {
        if watch {
            let _ = dst.readable(false).await;
        } else {
            std::future::pending::<()>().await;
        }
    });
    let either = std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(res) = w.as_mut().poll(cx) {
            return std::task::Poll::Ready(res.map_err(|_| SpliceError::Dest));
        }
        if r.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(SpliceError::WokenMidway));
        }
        std::task::Poll::Pending
    });
    timeout(limit, either)
        .await
        .unwrap_or(Err(SpliceError::Dest))
}

/// Wait for `src` to be readable, within `limit`; with `watch`, `dst` turning readable first
/// ends the wait with [`SpliceError::Woken`].
async fn wait_source(
    src: &TcpStream,
    dst: &TcpStream,
    watch: bool,
    limit: Duration,
) -> Result<(), SpliceError> {
    let timed_out = || SpliceError::Source(io::ErrorKind::TimedOut.into());
    if !watch {
        return match timeout(limit, src.readable(false)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(SpliceError::Source(e)),
            None => Err(timed_out()),
        };
    }
    let mut s = std::pin::pin!(src.readable(false));
    let mut d = std::pin::pin!(dst.readable(false));
    let either = std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = s.as_mut().poll(cx) {
            return std::task::Poll::Ready(r.map_err(SpliceError::Source));
        }
        if d.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(SpliceError::Woken));
        }
        std::task::Poll::Pending
    });
    timeout(limit, either)
        .await
        .unwrap_or_else(|| Err(timed_out()))
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
                        .map_err(|_| SpliceError::Dest)?;
                }
                Err(_) => return Err(SpliceError::Dest),
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
