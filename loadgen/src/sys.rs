//! The only module with `unsafe`: thin wrappers over the Linux calls the event loops need
//! (epoll, raw fd read/write/close, eventfd, signals, rlimits, a few socket options socket2
//! lacks). Both loops (client engine and `serve`) are hand-written epoll loops because a client
//! that must cost less CPU per request than wrk cannot afford a runtime's bookkeeping: one
//! `read`, one `write` and a share of one `epoll_wait` per request is the whole budget.
//! Everything above this module is safe Rust; every wrapper maps -1/errno to `io::Error`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) const EV_IN: u32 = libc::EPOLLIN as u32;
pub(crate) const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub(crate) const EV_ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
pub(crate) const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub(crate) const EV_ET: u32 = libc::EPOLLET as u32;

pub(crate) type Event = libc::epoll_event;

/// One epoll instance, owned by one thread.
pub(crate) struct Epoll {
    fd: RawFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointer arguments; the returned fd is owned by the struct.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub(crate) fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Waits up to `timeout` (None: forever) with nanosecond precision: a rate of 10k req/s
    /// per thread needs sub-millisecond wakeups, which plain `epoll_wait` cannot express.
    pub(crate) fn wait(
        &self,
        events: &mut [Event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` is a valid writable slice of `len` entries; `tsp` is null or points
        // to `ts`, alive for the call; a null sigmask means "don't change the mask".
        let r = unsafe {
            libc::epoll_pwait2(
                self.fd,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                tsp,
                std::ptr::null(),
            )
        };
        match cvt(r) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

pub(crate) fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable region of `buf.len()` bytes. MSG_NOSIGNAL: a peer that
    // reset must give EPIPE, not kill the process with SIGPIPE.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: callers own `fd` and never use it after this call.
    unsafe { libc::close(fd) };
}

/// Binds `fd` to its source address without choosing a port yet, so the kernel picks the port
/// at connect time per destination: otherwise each bound socket burns one port for all
/// destinations and `--source` ranges would run out early.
pub(crate) fn set_bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call; the size matches its type.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid in-pointer for the call.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) }).is_ok() {
            return Ok(want.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

pub(crate) fn stdout_is_tty() -> bool {
    // SAFETY: no pointers.
    unsafe { libc::isatty(1) == 1 }
}

/// An eventfd used to wake a worker's epoll from another thread (shutdown only).
pub(crate) struct EventFd {
    pub(crate) fd: RawFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the fd is owned by the struct.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(EventFd { fd })
    }

    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which outlives the call.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and in threads it spawns afterwards), so
/// that `wait_for_stop_signal` can take them synchronously instead of in a handler.
pub(crate) fn block_stop_signals() -> io::Result<()> {
    let set = stop_sigset();
    // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM (blocked beforehand by `block_stop_signals`); returns its number.
pub(crate) fn wait_for_stop_signal() -> i32 {
    let set = stop_sigset();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset touches it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Sends `sig` to one process we started.
pub(crate) fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: no pointers; `pid` is a child this process spawned.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) })?;
    Ok(())
}

pub(crate) const SIGTERM: i32 = libc::SIGTERM;

/// The pending error of a socket (SO_ERROR): how a non-blocking connect ended.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid out-pointers sized for SO_ERROR's int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Accepts one connection, non-blocking and close-on-exec.
pub(crate) fn accept(listener: RawFd) -> io::Result<RawFd> {
    // SAFETY: null address pointers are allowed when the peer address is not wanted.
    cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })
}

pub(crate) fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call; the size matches its type. Failure only costs latency.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Borrows a raw fd that the caller owns and keeps open for the borrow's lifetime.
pub(crate) fn borrow_fd<'a>(fd: RawFd) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: callers own `fd` and do not close it while the borrow is used (a single
    // getsockname call).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    // A second Ctrl-C means "now": leave at once (_exit is async-signal-safe).
    if INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: _exit may be called from a signal handler.
        unsafe { libc::_exit(130) };
    }
}

/// Makes SIGINT/SIGTERM set a flag instead of killing the process, so a load run can stop
/// sending, report what it measured, and stop any process it started.
pub(crate) fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}
