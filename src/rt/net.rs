//! Sockets: non-blocking connect with a deadline (never a dropped connect future, which leaks
//! its fd in monoio 0.2.4), SO_REUSEPORT listeners, cancelable accepts.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use super::{TcpListener, TcpStream};

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

/// A value `getsockopt(2)` may fill: a plain C integer or struct, valid when all zero.
pub trait SockOptValue: Copy {
    fn zeroed() -> Self;
}

impl SockOptValue for libc::c_int {
    fn zeroed() -> Self {
        0
    }
}

impl SockOptValue for libc::ucred {
    fn zeroed() -> Self {
        libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        }
    }
}

/// A `SOL_SOCKET` option (`SO_ERROR`: a `c_int`; `SO_PEERCRED`: a `ucred`).
pub fn socket_option<T: SockOptValue>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    let mut value = T::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes, the size of `value`, into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Why a connect failed: the peer's side (refused, reset, timed out: the server may be
/// down), or ours (out of descriptors or memory, [`is_local_exhaustion`]: says nothing about
/// the server and must not count against it).
#[derive(Debug)]
pub enum ConnectError {
    Peer(io::Error),
    Local(io::Error),
}

/// Connect to `addr`, giving up after `timeout`. A refused connect fails fast with
/// `ConnectionRefused`; an expired one with `TimedOut`; each classified by [`ConnectError`].
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    connect_io(addr, timeout).await.map_err(|e| {
        if is_local_exhaustion(&e) {
            ConnectError::Local(e)
        } else {
            ConnectError::Peer(e)
        }
    })
}

async fn connect_io(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
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
    let outcome = super::timeout(timeout, stream.writable(false)).await;
    match outcome {
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        Some(Err(e)) => Err(e),
        Some(Ok(())) => {
            // The socket is writable: the connect finished, in success or failure.
            let err: libc::c_int = socket_option(stream.as_raw_fd(), libc::SO_ERROR)?;
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

/// A non-blocking accept on a listening descriptor: the connection if one is waiting.
pub fn accept_now(fd: std::os::fd::RawFd) -> Option<(TcpStream, SocketAddr)> {
    use std::os::fd::FromRawFd;
    // SAFETY: accept4(2) with null address pointers on a listening socket this shard owns.
    let n = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if n < 0 {
        return None;
    }
    // SAFETY: `n` is a fresh connected socket nothing else owns.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(n) };
    let peer = std_stream.peer_addr().ok()?;
    TcpStream::from_std(std_stream).ok().map(|s| (s, peer))
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

/// Is an idle keep-alive connection still quiet? A server that closed it (EOF), reset it, or
/// sent bytes nobody asked for (more than its last response framed) makes it unusable: the next
/// response read on it would be garbage or nothing. One non-blocking peek, no data consumed.
pub fn idle_is_quiet(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv into a one-byte buffer we own, on a descriptor we own; MSG_PEEK leaves the
    // data in the socket.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            &mut byte as *mut u8 as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Did an operation fail for want of our own resources (descriptors, socket buffers, memory)?
/// That is this process's problem, never the peer's: it must not count against a server.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
