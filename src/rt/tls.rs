//! TLS over a TCP socket with rustls in user space.
//!
//! Every socket operation here is a non-blocking `recv`/`send` after a readiness wait, never an
//! owned-buffer read handed to the kernel: dropping any of these futures mid-way (a timeout, a
//! server answering early) loses no byte, because undecrypted bytes and decrypted plaintext
//! stay in the rustls session. That is what lets the proxy race a TLS client's read against a
//! timer or against the server turning readable, as it does with plain sockets.
//!
//! Bytes through TLS are never spliced: [`super::Stream::splice_fd`] says `None`, and the
//! relays copy instead.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;
use rustls::{Connection, ServerConfig, ServerConnection};

use super::TcpStream;

/// The socket as rustls sees it: non-blocking `recv`/`writev` on the descriptor.
struct Fd(RawFd);

impl io::Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: recv(2) into a live, writable slice on a descriptor we own.
            let n = unsafe {
                libc::recv(
                    self.0,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl io::Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        loop {
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call;
            // MSG_NOSIGNAL turns a closed peer into EPIPE instead of a signal.
            let n = unsafe { libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// How long a closing session waits for the peer to take its `close_notify`.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a handshake failed, as the counters name it.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client closed (or reset) before the handshake ended.
    Closed,
    /// A socket error.
    Io(io::Error),
    /// rustls refused the peer's messages (the alert has been sent).
    Tls(rustls::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("closed by the peer"),
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl HandshakeError {
    /// A short, fixed name for counters: never a per-connection detail.
    pub fn reason(&self) -> &'static str {
        use rustls::Error as E;
        match self {
            HandshakeError::Closed | HandshakeError::Io(_) => "closed",
            HandshakeError::Tls(e) => match e {
                E::AlertReceived(_) => "peer_alert",
                E::PeerIncompatible(_) | E::NoApplicationProtocol => "incompatible",
                E::General(_) | E::NoCertificatesPresented => "no_certificate",
                E::InvalidCertificate(_) => "bad_certificate",
                _ => "bad_message",
            },
        }
    }
}

/// A TLS session over a TCP socket.
pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// The peer closed its side (TCP EOF, or `close_notify`).
    eof: bool,
    /// Our `close_notify` was queued.
    closed_ours: bool,
}

impl TlsStream {
    /// Perform a server handshake on `tcp`, starting with `prefix` (bytes already read from the
    /// socket: what followed a PROXY header, the first read that told TLS from plain HTTP).
    /// Unbounded: the caller races it against the handshake timeout (dropping it is safe).
    pub async fn accept(
        tcp: TcpStream,
        prefix: &[u8],
        config: Arc<ServerConfig>,
    ) -> Result<TlsStream, HandshakeError> {
        let conn = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
        let mut s = TlsStream {
            tcp,
            conn: Connection::Server(conn),
            eof: false,
            closed_ours: false,
        };
        let mut rest = prefix;
        while !rest.is_empty() {
            s.conn.read_tls(&mut rest).map_err(HandshakeError::Io)?;
            s.process().await?;
        }
        s.handshake().await?;
        Ok(s)
    }

    /// Exchange handshake messages until the handshake is over (our last flight sent).
    async fn handshake(&mut self) -> Result<(), HandshakeError> {
        loop {
            self.flush_tls().await.map_err(HandshakeError::Io)?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            if !self.fill_once().await? {
                return Err(HandshakeError::Closed);
            }
        }
    }

    /// Perform a client handshake on `tcp` for `name` (a backend server). Unbounded, like
    /// [`TlsStream::accept`].
    pub async fn connect(
        tcp: TcpStream,
        name: rustls::pki_types::ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<TlsStream, HandshakeError> {
        let conn = rustls::ClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
        let mut s = TlsStream {
            tcp,
            conn: Connection::Client(conn),
            eof: false,
            closed_ours: false,
        };
        s.handshake().await?;
        Ok(s)
    }

    /// Process what rustls has buffered; on a protocol error send the alert it queued.
    async fn process(&mut self) -> Result<(), HandshakeError> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.flush_tls().await;
            return Err(HandshakeError::Tls(e));
        }
        Ok(())
    }

    /// Read what the socket has (waiting until it has something) into the session and
    /// process it. False at EOF.
    async fn fill_once(&mut self) -> Result<bool, HandshakeError> {
        loop {
            match self.conn.read_tls(&mut Fd(self.tcp.as_raw_fd())) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(_) => {
                    self.process().await?;
                    // What processing queued (a KeyUpdate of ours, the refusal of a
                    // renegotiation) goes out now, not with our next data.
                    if self.conn.wants_write() {
                        self.flush_tls().await.map_err(HandshakeError::Io)?;
                    }
                    return Ok(true);
                }
                Err(e) if would_block(&e) => {
                    self.tcp.readable(false).await.map_err(HandshakeError::Io)?
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
    }

    /// Send everything rustls has queued (records, alerts, tickets).
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Fd(self.tcp.as_raw_fd())) {
                Ok(_) => {}
                Err(e) if would_block(&e) => self.tcp.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Decrypted bytes into `dst`, waiting for the peer when none are buffered. 0 at EOF
    /// (`close_notify`, or the TCP connection closing without it: the HTTP framing tells a
    /// truncated message from a whole one, as it does for plain TCP).
    pub async fn read_plain(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(dst) {
                Ok(0) => {
                    self.answer_close_notify();
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if would_block(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.fill_once().await {
                Ok(_) => {}
                Err(HandshakeError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.reason())),
            }
        }
    }

    /// Encrypt and send all of `data`; returns once the records are in the socket.
    pub async fn write_plain(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            data = &data[n..];
            self.flush_tls().await?;
        }
        Ok(total)
    }

    /// Send `close_notify`, then half-close the socket. Bounded: a peer that does not read
    /// for [`CLOSE_WAIT`] gets the socket shut down without it.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        if !self.closed_ours {
            self.closed_ours = true;
            self.conn.send_close_notify();
        }
        let r = super::timeout(CLOSE_WAIT, self.flush_tls())
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()));
        // SAFETY: shutdown(2) of our own socket's sending side.
        unsafe {
            libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR);
        }
        r
    }

    /// The peer sent `close_notify`: answer with ours (RFC 8446 §6.1), without waiting.
    fn answer_close_notify(&mut self) {
        if !self.closed_ours {
            self.closed_ours = true;
            self.conn.send_close_notify();
            let _ = self.try_flush();
        }
    }

    /// Non-blocking: decrypted bytes into `dst`; `Ok(0)` at EOF; `WouldBlock` when none are
    /// there now (what the socket had was taken into the session first).
    pub fn try_read_plain(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if would_block(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            self.pull()?;
        }
    }

    /// Take what the socket holds into the session and process it (non-blocking);
    /// `WouldBlock` when the socket had nothing.
    fn pull(&mut self) -> io::Result<()> {
        match self.conn.read_tls(&mut Fd(self.tcp.as_raw_fd())) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(_) => {
                self.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if self.conn.wants_write() {
                    self.try_flush()?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Has the peer said something a read would return (data, EOF, an error), counting only
    /// application data? Takes records the socket holds into the session (a session ticket,
    /// a key update) without returning any data: cancel-safe, non-blocking.
    pub fn data_ready(&mut self) -> bool {
        loop {
            match self.conn.process_new_packets() {
                Ok(st) if st.plaintext_bytes_to_read() > 0 => return true,
                Ok(_) => {}
                Err(_) => return true,
            }
            if self.eof {
                return true;
            }
            match self.pull() {
                Ok(()) => {}
                Err(e) if would_block(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Non-blocking: send queued records; true when none are left.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Fd(self.tcp.as_raw_fd())) {
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Non-blocking: encrypt what the session takes of `data` (only once earlier records
    /// have left, so at most one buffer's worth waits) and send what the socket takes.
    /// `WouldBlock` when earlier records still wait for the socket.
    pub fn try_write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.try_flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(data)?;
        self.try_flush()?;
        Ok(n)
    }

    /// Records queued and not yet in the socket.
    pub fn has_pending_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queue `close_notify` (sent by the next flush).
    pub fn queue_close_notify(&mut self) {
        if !self.closed_ours {
            self.closed_ours = true;
            self.conn.send_close_notify();
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Was the session resumed (no full handshake)?
    pub fn resumed(&self) -> bool {
        match &self.conn {
            Connection::Server(c) => {
                matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed))
            }
            Connection::Client(c) => {
                matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed))
            }
        }
    }
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the runtime's buffer contract: `bytes_total` writable bytes at `write_ptr`.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        match self.read_plain(dst).await {
            Ok(n) => {
                // SAFETY: read_plain initialised exactly `n` bytes.
                unsafe { buf.set_init(n) };
                (Ok(n), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the first iovec of the caller's vector, valid while we own it.
        let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(mut raw) => {
                // SAFETY: as in `read`.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(raw.write_ptr(), raw.bytes_total()) };
                match self.read_plain(dst).await {
                    Ok(n) => n,
                    Err(e) => return (Err(e), buf),
                }
            }
            None => 0,
        };
        // SAFETY: `n` bytes of the first iovec were written.
        unsafe { buf.set_init(n) };
        (Ok(n), buf)
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `bytes_init` initialised bytes at `read_ptr`, live while we own `buf`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let r = self.write_plain(src).await;
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let (ptr, len) = (buf.read_iovec_ptr(), buf.read_iovec_len());
        let mut total = 0;
        for i in 0..len {
            // SAFETY: `len` iovecs at `ptr`, each describing live memory while we own `buf`.
            let iov = unsafe { &*ptr.add(i) };
            let src = unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) };
            // Plaintext is queued in the session first, so the records go out together.
            let mut rest = src;
            while !rest.is_empty() {
                let n = match self.conn.writer().write(rest) {
                    Ok(n) => n,
                    Err(e) => return (Err(e), buf),
                };
                rest = &rest[n..];
                total += n;
                if !rest.is_empty() {
                    if let Err(e) = self.flush_tls().await {
                        return (Err(e), buf);
                    }
                }
            }
        }
        match self.flush_tls().await {
            Ok(()) => (Ok(total), buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.close_notify().await
    }
}
