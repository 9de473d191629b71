//! The upgrade transport: one end of an `AF_UNIX`, `SOCK_SEQPACKET` socket pair that carries
//! messages of up to [`MAX_MSG`] bytes, each with up to [`MAX_FDS`] file descriptors
//! (`SCM_RIGHTS`), between the old and the new process; plus a line-oriented text encoding for
//! the messages ([`encode`], [`decode`]). Nothing here knows about the proxy.
//!
//! Why `SOCK_SEQPACKET`: the kernel keeps message boundaries and attaches the descriptors to
//! exactly one message, so there is no framing to get wrong and no descriptor can arrive with
//! the "wrong" bytes (on a stream socket, ancillary data may be merged with or split from the
//! bytes around it). The channel is blocking; [`Channel::recv`] waits at most its timeout.
//!
//! Hazards handled:
//! - Descriptor leaks into other children: both ends are created `SOCK_CLOEXEC`, received
//!   descriptors get close-on-exec atomically (`MSG_CMSG_CLOEXEC`), and
//!   [`Channel::from_inherited`] sets it again on the inherited end. The daemon clears it only
//!   in the child, between fork and exec (`pre_exec`), so no other child spawned meanwhile by
//!   another thread inherits the channel (and keeps it open: the new process would never see
//!   EOF). The tests use `into_inheritable_fd`, which clears it in the parent.
//! - Truncation: a message larger than [`MAX_MSG`] or with more than [`MAX_FDS`] descriptors
//!   is refused by [`Channel::send`] before any system call. On receive, `MSG_TRUNC` (bytes
//!   cut) and `MSG_CTRUNC` (descriptors cut: too small a control buffer, or the receiver hit
//!   its `RLIMIT_NOFILE`, in which case the kernel installs what fits and drops the rest) are
//!   errors, and the descriptors that did arrive are closed, never leaked.
//! - Send buffer: on a UNIX datagram socket a message larger than the sender's `SO_SNDBUF`
//!   (less 32 bytes) fails with `EMSGSIZE`. [`Channel::pair`] asks for a buffer that holds
//!   [`MAX_MSG`] and checks what the kernel granted (it caps requests at
//!   `net.core.wmem_max`, then doubles them), so a small limit fails at `pair`, not at the
//!   first large message. `send` blocks while the messages in flight fill that buffer: the
//!   peer must be reading.
//! - A closed peer: `send` uses `MSG_NOSIGNAL`, so it returns `EPIPE` instead of raising
//!   SIGPIPE. `recv` returns the messages still queued, then `None` (EOF). Linux quirk: when
//!   the peer closes its end while messages we sent it are still unread, our next `recv`
//!   fails once with `ECONNRESET` (`ErrorKind::ConnectionReset`) even if the peer's own
//!   messages are still queued; those come with the following calls, then EOF.
//! - EOF versus an empty message: on a `SOCK_SEQPACKET` socket both read as 0 bytes, so
//!   `send` refuses empty messages and 0 bytes without descriptors means EOF.
//! - `EINTR` is retried everywhere (with the remaining time for a timed wait).
//!
//! What the caller must know: a passed descriptor refers to the same open file description as
//! the sender's, so file status flags (`O_NONBLOCK`) and socket options are shared with any
//! copy the sender keeps; and descriptors in flight count against the sender's
//! `RLIMIT_NOFILE` (`ETOOMANYREFS` when over) until the peer receives them.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::{Duration, Instant};

/// The largest message [`Channel::send`] accepts and [`Channel::recv`] receives, in bytes.
pub const MAX_MSG: usize = 256 * 1024;
/// The most descriptors one message may carry: the kernel's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Bytes of control buffer for [`MAX_FDS`] descriptors (one `SCM_RIGHTS` header).
const CMSG_BUF: usize = {
    // SAFETY: CMSG_SPACE only computes an aligned size; it touches no memory.
    unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as libc::c_uint) as usize }
};
/// The kernel refuses a datagram longer than the sender's `SO_SNDBUF` less this much.
const SNDBUF_SLACK: usize = 32;

/// One end of the upgrade channel (see the module documentation).
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair of channel ends, both close-on-exec, with send and receive buffers
    /// large enough for a [`MAX_MSG`] message.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: socketpair fills the two-element array on success.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and nobody else owns them.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&a, &b] {
            size_buffers(fd.as_fd())?;
        }
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// This end as a descriptor a child process inherits across exec (close-on-exec cleared).
    /// Pass its number to the child (e.g. in an environment variable), spawn the child, then
    /// drop the returned descriptor in the parent: see the module documentation on leaks.
    #[cfg(test)]
    pub fn into_inheritable_fd(self) -> io::Result<OwnedFd> {
        set_cloexec(self.fd.as_fd(), false)?;
        Ok(self.fd)
    }

    /// Take over a channel end inherited from the parent: checks that `fd` is a UNIX
    /// `SOCK_SEQPACKET` socket and sets close-on-exec on it again. On error `fd` is left open
    /// and not owned by anything.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else in this process owns or will close
    /// (typically a number received from the parent, used exactly once); on success the
    /// returned `Channel` owns it and closes it when dropped.
    pub unsafe fn from_inherited(fd: RawFd) -> io::Result<Channel> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upgrade channel: invalid descriptor {fd}"),
            ));
        }
        // SAFETY: the caller guarantees `fd` is open; it is only borrowed for the checks.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let domain = getsockopt_int(borrowed, libc::SO_DOMAIN).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("upgrade channel: fd {fd} is not a socket: {e}"),
            )
        })?;
        let ty = getsockopt_int(borrowed, libc::SO_TYPE)?;
        if domain != libc::AF_UNIX || ty != libc::SOCK_SEQPACKET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "upgrade channel: fd {fd} is not a UNIX SOCK_SEQPACKET socket \
                     (domain {domain}, type {ty})"
                ),
            ));
        }
        set_cloexec(borrowed, true)?;
        // SAFETY: the caller hands over ownership of `fd` (see # Safety).
        Ok(Channel {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Send one message of 1 to [`MAX_MSG`] bytes with up to [`MAX_FDS`] descriptors; the
    /// descriptors stay open here (the peer gets its own copies). Blocks while the peer's
    /// unread messages fill the send buffer. Errors: `InvalidInput` for an empty or oversized
    /// message or too many descriptors (nothing sent); `BrokenPipe` when the peer is gone.
    pub fn send(&self, msg: &[u8], fds: &[BorrowedFd]) -> io::Result<()> {
        if msg.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "upgrade channel: empty message (it would read as EOF)",
            ));
        }
        if msg.len() > MAX_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "upgrade channel: message of {} bytes is over the {MAX_MSG}-byte limit",
                    msg.len()
                ),
            ));
        }
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "upgrade channel: {} descriptors in one message, at most {MAX_FDS}",
                    fds.len()
                ),
            ));
        }
        // u64 elements keep the buffer aligned for cmsghdr (whose alignment is size_t's).
        let mut control = [0u64; CMSG_BUF.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if !fds.is_empty() {
            let data_len = fds.len() * mem::size_of::<RawFd>();
            // SAFETY: CMSG_SPACE only computes a size.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(data_len as libc::c_uint) } as _;
            hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: msg_control points at `control`, at least msg_controllen (<= CMSG_BUF)
            // bytes, aligned for cmsghdr, so the first header and its data of `data_len`
            // bytes lie inside it; the fds are copied as bytes, so no alignment is assumed.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as libc::c_uint) as _;
                let data = libc::CMSG_DATA(cmsg);
                for (i, fd) in fds.iter().enumerate() {
                    let raw = fd.as_raw_fd();
                    ptr::copy_nonoverlapping(
                        &raw as *const RawFd as *const u8,
                        data.add(i * mem::size_of::<RawFd>()),
                        mem::size_of::<RawFd>(),
                    );
                }
            }
        }
        loop {
            // SAFETY: `hdr` points at `iov` (a live slice) and `control`, both alive for the
            // call; the kernel only reads them.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                // A SOCK_SEQPACKET message is sent whole or not at all.
                return if n as usize == msg.len() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "upgrade channel: sent {n} of {} bytes",
                        msg.len()
                    )))
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receive one message and the descriptors that came with it (close-on-exec, in the order
    /// sent). `Ok(None)` on orderly EOF (the peer closed its end and nothing is queued).
    /// Waits at most `timeout` (`None`: forever); then an error of kind `TimedOut`. A
    /// truncated message or descriptor list is an error (kind `InvalidData`), with any
    /// descriptors that arrived closed.
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_MSG);
        let mut control = [0u64; CMSG_BUF.div_ceil(8)];
        loop {
            wait_readable(self.fd.as_fd(), deadline)?;
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.capacity(),
            };
            // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            hdr.msg_controllen = mem::size_of_val(&control) as _;
            // SAFETY: the kernel writes at most iov_len bytes into `buf`'s spare capacity and
            // at most msg_controllen bytes into `control`, both owned here and alive.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut hdr,
                    libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    // Readable but taken (another reader) or a spurious wake-up: wait again.
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(e),
                }
            }
            // Own every descriptor that arrived before looking at anything else, so that
            // every return path below closes them.
            // SAFETY: `hdr` is as recvmsg left it: msg_control/msg_controllen describe the
            // control messages the kernel wrote into `control`.
            let fds = unsafe { take_fds(&hdr) };
            if hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("upgrade channel: message over {MAX_MSG} bytes was truncated"),
                ));
            }
            if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "upgrade channel: descriptors were cut from a message ({} arrived; \
                         open-file limit reached?)",
                        fds.len()
                    ),
                ));
            }
            let n = n as usize;
            if n == 0 && fds.is_empty() {
                return Ok(None);
            }
            // SAFETY: the kernel initialised exactly `n` (<= capacity) bytes of `buf`.
            unsafe { buf.set_len(n) };
            return Ok(Some((buf, fds)));
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl FromRawFd for Channel {
    /// Wrap a channel end without any check (see [`Channel::from_inherited`] for the checked
    /// way).
    ///
    /// # Safety
    /// `fd` must be an open UNIX `SOCK_SEQPACKET` socket that nothing else owns.
    unsafe fn from_raw_fd(fd: RawFd) -> Channel {
        Channel {
            // SAFETY: the caller hands over ownership of an open descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

impl IntoRawFd for Channel {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

/// Every descriptor in the `SCM_RIGHTS` control messages of `hdr`, owned.
///
/// # Safety
/// `hdr` must be a msghdr just filled by a successful recvmsg(2): its control buffer holds
/// control messages written by the kernel, and the descriptors in them are ours to own.
unsafe fn take_fds(hdr: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: (for the whole walk) CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that lie
    // within msg_control..msg_control+msg_controllen, as the kernel wrote them; the data of
    // an SCM_RIGHTS message is cmsg_len - CMSG_LEN(0) bytes of descriptors, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let raw = ptr::read_unaligned(data.add(i));
                    if raw >= 0 {
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    fds
}

/// Ask for send and receive buffers that hold a [`MAX_MSG`] message (`SO_SNDBUFFORCE` first,
/// which only a privileged process may use, then `SO_SNDBUF`), and check what was granted.
fn size_buffers(fd: BorrowedFd) -> io::Result<()> {
    let want = (MAX_MSG + 64 * 1024) as libc::c_int;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if setsockopt_int(fd, force, want).is_err() {
            setsockopt_int(fd, plain, want)?;
        }
    }
    let got = getsockopt_int(fd, libc::SO_SNDBUF)?;
    if (got.max(0) as usize) < MAX_MSG + SNDBUF_SLACK {
        return Err(io::Error::other(format!(
            "upgrade channel: the kernel grants a {got}-byte send buffer, too small for \
             {MAX_MSG}-byte messages (raise net.core.wmem_max)"
        )));
    }
    Ok(())
}

fn setsockopt_int(fd: BorrowedFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt_int(fd: BorrowedFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local c_int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn set_cloexec(fd: BorrowedFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD on a descriptor borrowed for the call.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: F_SETFD on a descriptor borrowed for the call.
    if new != flags && unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wait until `fd` is readable (or at EOF, or in error: the next read says which), at most
/// until `deadline` (`None`: forever); `TimedOut` after it.
fn wait_readable(fd: BorrowedFd, deadline: Option<Instant>) -> io::Result<()> {
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so a wait never ends before the deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return Ok(());
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upgrade channel: timed out waiting for a message",
            ));
        }
    }
}

/// Encode a message: the `kind` on the first line, then one `key=value` line per field, in
/// order (a key may repeat). Kinds and keys are 1 or more of `[a-z0-9_.]` (a programming
/// error otherwise: checked in debug builds, and [`decode`] refuses the message). Values are
/// any text: `\` is written `\\`, a line feed `\n` and a carriage return `\r`; `=` needs no
/// escape (the key ends at the first one).
pub fn encode(kind: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    debug_assert!(valid_name(kind), "upgrade message kind {kind:?}");
    let mut out = String::with_capacity(
        kind.len()
            + 1
            + fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>(),
    );
    out.push_str(kind);
    out.push('\n');
    for (key, value) in fields {
        debug_assert!(valid_name(key), "upgrade message key {key:?}");
        out.push_str(key);
        out.push('=');
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Decode a message made by [`encode`]: its kind and its fields in order. Any other input
/// (not UTF-8, no final line feed, a bad kind or key, a line without `=`, an unknown or
/// unfinished escape) is an error naming the problem; never a panic.
pub fn decode(buf: &[u8]) -> Result<(String, Vec<(String, String)>), String> {
    let text = std::str::from_utf8(buf).map_err(|e| format!("message is not UTF-8: {e}"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| "message does not end with a line feed (truncated?)".to_string())?;
    let mut lines = body.split('\n');
    let kind = lines.next().unwrap_or_default();
    if !valid_name(kind) {
        return Err(format!("bad message kind {kind:?}"));
    }
    let mut fields = Vec::new();
    for (i, line) in lines.enumerate() {
        let (key, raw) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no '=' in {line:?}", i + 2))?;
        if !valid_name(key) {
            return Err(format!("line {}: bad key {key:?}", i + 2));
        }
        let value = unescape(raw).map_err(|e| format!("line {} (key {key}): {e}", i + 2))?;
        fields.push((key.to_string(), value));
    }
    Ok((kind.to_string(), fields))
}

/// A kind or key: one or more of `[a-z0-9_.]`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\r' {
            return Err("raw carriage return in value".to_string());
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => return Err(format!("unknown escape \\{other}")),
            None => return Err("value ends with a lone '\\'".to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::process::{Command, Stdio};

    /// Every wait in these tests ends after this long.
    const WAIT: Duration = Duration::from_secs(10);

    /// Accept on `listener` within [`WAIT`] (it stays blocking; poll bounds the wait).
    fn accept_within(listener: &TcpListener) -> TcpStream {
        wait_readable(listener.as_fd(), Some(Instant::now() + WAIT)).expect("accept wait");
        let (s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).expect("read");
        buf
    }

    fn is_cloexec(fd: BorrowedFd) -> bool {
        // SAFETY: F_GETFD on a borrowed descriptor.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    fn recv_one(ch: &Channel) -> (Vec<u8>, Vec<OwnedFd>) {
        ch.recv(Some(WAIT))
            .expect("recv")
            .expect("a message, not EOF")
    }

    #[test]
    fn listener_handover_keeps_backlog_and_accepts_new_clients() {
        let (old, new) = Channel::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Queued in the backlog before the handover: nobody has accepted it yet.
        let mut early = connect(addr);
        early.write_all(b"early").unwrap();

        old.send(b"listener", &[listener.as_fd()]).unwrap();
        drop(listener);
        let (msg, mut fds) = recv_one(&new);
        assert_eq!(msg, b"listener");
        assert_eq!(fds.len(), 1);
        let listener = TcpListener::from(fds.remove(0));
        assert_eq!(listener.local_addr().unwrap(), addr);

        let mut s = accept_within(&listener);
        assert_eq!(s.peer_addr().unwrap(), early.local_addr().unwrap());
        assert_eq!(read_n(&mut s, 5), b"early");
        s.write_all(b"ok1").unwrap();
        assert_eq!(read_n(&mut early, 3), b"ok1");

        let mut late = connect(addr);
        let mut s2 = accept_within(&listener);
        assert_eq!(s2.peer_addr().unwrap(), late.local_addr().unwrap());
        s2.write_all(b"ok2").unwrap();
        assert_eq!(read_n(&mut late, 3), b"ok2");

        // Both clients see an orderly close, not a reset.
        drop((s, s2));
        let mut rest = Vec::new();
        assert_eq!(early.read_to_end(&mut rest).unwrap(), 0);
        assert_eq!(late.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn connected_stream_handover_is_seamless() {
        let (old, new) = Channel::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = connect(listener.local_addr().unwrap());
        let client_addr = client.local_addr().unwrap();
        let server = accept_within(&listener);
        client.write_all(b"before|").unwrap();

        old.send(b"conn", &[server.as_fd()]).unwrap();
        drop(server);
        client.write_all(b"after").unwrap();

        let (_, mut fds) = recv_one(&new);
        let mut server = TcpStream::from(fds.remove(0));
        assert_eq!(server.peer_addr().unwrap(), client_addr);
        assert_eq!(read_n(&mut server, 12), b"before|after");
        server.write_all(b"reply").unwrap();
        assert_eq!(read_n(&mut client, 5), b"reply");
        assert_eq!(client.local_addr().unwrap(), client_addr);

        server.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        // An orderly EOF: a reset would be an error here.
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
        client.write_all(b"bye").unwrap();
        assert_eq!(read_n(&mut server, 3), b"bye");
    }

    #[test]
    fn many_fds_arrive_in_order_and_cloexec() {
        let (a, b) = Channel::pair().unwrap();
        let mut pipes = Vec::new();
        for _ in 0..100 {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills the array; the test owns both ends from here.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: just created, owned by nobody else.
            pipes.push(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) });
        }
        let send: Vec<BorrowedFd> = pipes
            .iter()
            .flat_map(|(r, w)| [r.as_fd(), w.as_fd()])
            .collect();
        assert_eq!(send.len(), 200);
        a.send(b"pipes", &send).unwrap();
        let (msg, got) = recv_one(&b);
        assert_eq!(msg, b"pipes");
        assert_eq!(got.len(), 200);
        for (i, (r, _)) in pipes.iter().enumerate() {
            let w = &got[2 * i + 1];
            assert!(is_cloexec(got[2 * i].as_fd()) && is_cloexec(w.as_fd()));
            let byte = [i as u8];
            // SAFETY: write/read one byte through live descriptors and buffers.
            unsafe {
                assert_eq!(libc::write(w.as_raw_fd(), byte.as_ptr().cast(), 1), 1);
                let mut back = [0u8];
                assert_eq!(libc::read(r.as_raw_fd(), back.as_mut_ptr().cast(), 1), 1);
                assert_eq!(back, byte);
            }
        }
    }

    #[test]
    fn limits_are_enforced_before_sending() {
        let (a, b) = Channel::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let many = vec![listener.as_fd(); MAX_FDS + 1];
        let e = a.send(b"x", &many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = a.send(&vec![b'x'; MAX_MSG + 1], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = a.send(b"", &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        // The limits themselves pass: SCM_MAX_FD copies of one descriptor, MAX_MSG bytes.
        a.send(b"max fds", &many[..MAX_FDS]).unwrap();
        let (_, fds) = recv_one(&b);
        assert_eq!(fds.len(), MAX_FDS);
        let big: Vec<u8> = (0..MAX_MSG).map(|i| (i % 251) as u8).collect();
        a.send(&big, &[listener.as_fd()]).unwrap();
        let (msg, fds) = recv_one(&b);
        assert!(msg == big && fds.len() == 1);
        // Nothing is left over.
        let e = b.recv(Some(Duration::from_millis(10))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn timeout_then_eof_after_queued_messages() {
        let (a, b) = Channel::pair().unwrap();
        let start = Instant::now();
        let e = b.recv(Some(Duration::from_millis(100))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(100));

        a.send(b"one", &[]).unwrap();
        a.send(b"two", &[]).unwrap();
        drop(a);
        assert_eq!(recv_one(&b).0, b"one");
        assert_eq!(recv_one(&b).0, b"two");
        assert!(b.recv(Some(WAIT)).unwrap().is_none());
        assert!(b.recv(None).unwrap().is_none());
        let e = b.send(b"anyone?", &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    /// The Linux quirk in the module documentation: the peer closed with our messages unread.
    #[test]
    fn peer_closing_with_unread_messages_resets_once() {
        let (a, b) = Channel::pair().unwrap();
        a.send(b"unread by b", &[]).unwrap();
        b.send(b"from b", &[]).unwrap();
        drop(b);
        let e = a.recv(Some(WAIT)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(recv_one(&a).0, b"from b");
        assert!(a.recv(Some(WAIT)).unwrap().is_none());
    }

    #[test]
    fn pair_ends_are_cloexec_and_inheritable_end_is_not() {
        let (a, b) = Channel::pair().unwrap();
        assert!(is_cloexec(a.as_fd()) && is_cloexec(b.as_fd()));
        let fd = b.into_inheritable_fd().unwrap();
        assert!(!is_cloexec(fd.as_fd()));
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` came from into_raw_fd just above: nothing else owns it.
        let b = unsafe { Channel::from_inherited(raw) }.unwrap();
        assert!(is_cloexec(b.as_fd()));
        a.send(b"still connected", &[]).unwrap();
        assert_eq!(recv_one(&b).0, b"still connected");

        // A TCP socket is refused (and left open: the listener still owns it).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: the check fails, so the Channel never takes ownership.
        let e = unsafe { Channel::from_inherited(listener.as_raw_fd()) }.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(listener.local_addr().is_ok());
    }

    const CHILD_ROLE: &str = "SHARDGATE_FDPASS_CHILD";
    const CHILD_FD: &str = "SHARDGATE_FDPASS_FD";
    const CHILD_TEST: &str = "upgrade::wire::tests::child_process_accepts_on_passed_listener";

    /// In the child role (this test binary re-run by the test itself): take the inherited
    /// channel, receive a listener, answer one client, exit.
    fn child_role(fd: &str) -> ! {
        let fd: RawFd = fd.parse().expect("fd number");
        // SAFETY: the parent passed this descriptor to us alone; nothing here owns it.
        let ch = unsafe { Channel::from_inherited(fd) }.expect("inherited channel");
        let (msg, mut fds) = recv_one(&ch);
        assert_eq!(decode(&msg).unwrap().0, "listener");
        let listener = TcpListener::from(fds.remove(0));
        let mut s = accept_within(&listener);
        s.write_all(b"hello from child").unwrap();
        ch.send(
            &encode("done", &[("pid", &std::process::id().to_string())]),
            &[],
        )
        .unwrap();
        std::process::exit(0);
    }

    #[test]
    fn child_process_accepts_on_passed_listener() {
        if std::env::var_os(CHILD_ROLE).is_some() {
            child_role(&std::env::var(CHILD_FD).expect("fd variable"));
        }
        let (parent, child_end) = Channel::pair().unwrap();
        let child_fd = child_end.into_inheritable_fd().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE, "1")
            .env(CHILD_FD, child_fd.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        drop(child_fd);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        parent
            .send(
                &encode("listener", &[("addr", &addr.to_string())]),
                &[listener.as_fd()],
            )
            .unwrap();
        drop(listener);
        let mut client = connect(addr);
        let mut reply = Vec::new();
        let read = client.read_to_end(&mut reply);
        let done = parent.recv(Some(WAIT));
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        read.unwrap();
        assert_eq!(reply, b"hello from child");
        let (msg, _) = done.unwrap().expect("done message");
        let (kind, fields) = decode(&msg).unwrap();
        assert_eq!(kind, "done");
        assert_eq!(fields[0].1, child.id().to_string());
        assert!(status.expect("child exited in time").success());
        // The child's end is closed in both processes now: EOF.
        assert!(parent.recv(Some(WAIT)).unwrap().is_none());
    }

    #[test]
    fn encode_decode_round_trip() {
        let awkward = [
            "",
            "=",
            "a=b=c",
            "\n",
            "\\",
            "\\n",
            "line1\nline2\r\n",
            "trailing\\",
            "tab\tand\u{0}nul",
            "ünïcødé ✓ 𝄞",
            "   spaces   ",
        ];
        let fields: Vec<(String, &str)> = awkward
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k.{i}_x"), *v))
            .collect();
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let msg = encode("counters.v1", &borrowed);
        let (kind, back) = decode(&msg).unwrap();
        assert_eq!(kind, "counters.v1");
        assert_eq!(back.len(), awkward.len());
        for ((k, v), (k2, v2)) in borrowed.iter().zip(&back) {
            assert_eq!((*k, *v), (k2.as_str(), v2.as_str()));
        }
        assert_eq!(
            decode(&encode("x", &[])).unwrap(),
            ("x".to_string(), vec![])
        );
        // Repeated keys keep their order.
        let (_, rep) = decode(&encode("l", &[("fd", "1"), ("fd", "2")])).unwrap();
        assert_eq!(rep[0].1, "1");
        assert_eq!(rep[1].1, "2");
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\n",
            b"kind",
            b"Kind\n",
            b"kind\nnoequals\n",
            b"kind\n=v\n",
            b"kind\nK=v\n",
            b"kind\nk=\\x\n",
            b"kind\nk=v\\\n",
            b"kind\nk=v\r\n",
            b"kind\nk=v\n\n",
            b"\xff\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // Generated inputs: random bytes from an alphabet rich in the format's own characters,
        // and every prefix and single-byte mutation of a valid message.
        let alphabet = b"ab.=_\\\nnr\r=\xc3\xa9\xff0";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok((kind, fields)) = decode(&buf) {
                // Whatever decodes re-encodes to the same bytes.
                let f: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                assert_eq!(encode(&kind, &f), buf);
            }
        }
        let valid = encode("k", &[("a", "x=\\\ny"), ("b.c", "é")]);
        for cut in 0..valid.len() {
            let _ = decode(&valid[..cut]);
        }
        for i in 0..valid.len() {
            for b in [0u8, b'\n', b'\\', b'=', 0xff, b'A'] {
                let mut m = valid.clone();
                m[i] = b;
                let _ = decode(&m);
            }
        }
    }
}
