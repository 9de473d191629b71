//! What the data path runs over. Plain TCP today; a TLS stream implements the same trait later
//! and answers `None` to [`Stream::splice_fd`], which turns the zero-copy relays into copies.

use std::os::fd::{AsRawFd, RawFd};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::TcpStream;

/// A byte stream the proxy reads and writes with owned buffers.
pub trait Stream: AsyncReadRent + AsyncWriteRent {
    /// The socket bytes may be spliced to or from, when they pass through it untouched (a
    /// plain TCP socket); `None` when every byte must go through user space (TLS).
    fn splice_fd(&self) -> Option<RawFd>;
    /// The descriptor to shut down when another task must stop this stream's I/O.
    fn raw_fd(&self) -> RawFd;
}

impl Stream for TcpStream {
    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}
