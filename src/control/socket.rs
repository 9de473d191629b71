//! The command socket's file: what may be at the configured path before start, how the socket
//! is created so that no other user can ever connect to it, and how it is removed at stop.
//!
//! - Nothing at the path: create the socket.
//! - A socket: probe it with a non-blocking connect. Connection refused means a stale file
//!   left by a dead daemon: remove it (if it is still the file probed) and create ours. Anything
//!   that answers (or whose backlog is full) is a live daemon: refuse to start. Any other error
//!   (e.g. another user's socket we may not connect to): refuse to start.
//! - Anything else (regular file, directory, symbolic link even to a socket, FIFO, device):
//!   refuse to start and leave it untouched.
//!
//! The socket is created with the umask set to 0177 around bind(2), so the file has mode 0600
//! the moment it appears: there is no window in which it has the umask's mode. It is bound and
//! listening under a staging name before it is linked at the path, so whoever sees the file can
//! connect. Neither bind(2) nor link(2) replaces an existing file, so a file that appears at the
//! path after the checks above makes start fail instead of being replaced. At stop the path is removed only if it still holds the
//! socket we created (same device and inode).

use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The socket file this daemon created: its path and identity, to remove it at stop only if
/// it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Remove the socket file if the path still holds the one we created; anything else that
    /// now sits at the path (another daemon's socket, a file someone put there) is left alone.
    pub fn remove(self) {
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(
                        event = "control_socket_remove_failed",
                        "cannot remove control socket {path}: {e}"
                    );
                }
            }
            Ok(_) => tracing::warn!(
                event = "control_socket_replaced",
                "control socket {path} was replaced by another file since start; leaving it"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    event = "control_socket_gone",
                    "control socket {path} was already removed"
                )
            }
            Err(e) => tracing::warn!(
                event = "control_socket_inspect_failed",
                "cannot inspect control socket {path}: {e}; leaving it"
            ),
        }
    }
}

/// Create the command socket at `path` (mode 0600), after checking what is there (see the
/// module documentation). The error message names the path and the reason.
///
/// Call it before starting any thread that creates files: it changes the process-wide umask
/// for the duration of one bind(2). `daemon::run` calls it before the shards, the control and
/// the signal threads exist; the only threads that may run then are `shardgate demo`'s
/// in-process backends, which create no files.
pub fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    clear_path(path)?;
    let listener = bind_0600(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "{} appeared while starting (another daemon starting at once?)",
                    path.display()
                ),
            )
        } else {
            e
        }
    })?;
    let meta = fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_socket() || mode & 0o077 != 0 {
        // Not expected with the umask above; refuse rather than serve on an open socket.
        file.remove();
        return Err(io::Error::other(format!(
            "{} was created with mode {mode:o}, not 0600; refusing to serve on it",
            path.display()
        )));
    }
    Ok((listener, file))
}

/// The socket file of a command socket inherited from the process this one replaced (binary
/// upgrade): ours to remove at stop from now on.
pub fn adopt(path: &Path) -> io::Result<SocketFile> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "{} is not the inherited socket any more",
            path.display()
        )));
    }
    Ok(SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The socket at `path`, mode 0600, listening before the path exists: it is bound and set
/// listening under a staging name in the same directory, then hard-linked to `path`. A client
/// (or a start script) that sees the file can connect at once; binding at `path` directly would
/// show the file a moment before listen(2), and a connect in that moment is refused. link(2)
/// never replaces an existing file, as bind(2) does not.
fn bind_0600(path: &Path) -> io::Result<UnixListener> {
    let staging = staging_path(path);
    // sun_path holds 107 bytes: a staging name that does not fit is bound at the path itself.
    if staging.as_os_str().len() > 107 {
        return bind_umask(path);
    }
    match fs::symlink_metadata(&staging) {
        // Left by a daemon that died between bind and link and had our PID.
        Ok(m) if m.file_type().is_socket() => fs::remove_file(&staging)?,
        Ok(m) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} (the staging name for the socket) exists and is {}",
                    staging.display(),
                    kind(m.file_type())
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = bind_umask(&staging)?;
    let linked = fs::hard_link(&staging, path);
    if let Err(e) = fs::remove_file(&staging) {
        tracing::warn!(
            event = "control_socket_staging_remove_failed",
            "cannot remove {}: {e}",
            staging.display()
        );
    }
    match linked {
        Ok(()) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(io::ErrorKind::AddrInUse, e))
        }
        Err(e) => Err(e),
    }
}

/// `.NAME.PID.bind` next to `path`.
fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.bind", std::process::id()))
}

/// bind(2) and listen(2) with the umask at 0177: the socket file is created with mode 0600.
fn bind_umask(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask(2) cannot fail; see `bind` for why changing it here is safe.
    let old = unsafe { libc::umask(0o177) };
    let result = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    result
}

/// Leave `path` free for bind(2): nothing there, or a stale socket removed. Refuse (with a
/// message naming the path and what is there) in every other case.
fn clear_path(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot inspect {}: {e}", path.display()),
            ))
        }
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is {}, not a socket; refusing to replace it (remove it or set \
                 another daemon.control_socket)",
                path.display(),
                kind(meta.file_type())
            ),
        ));
    }
    match probe(path) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another shardgate is running on {}", path.display()),
        )),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another shardgate is running on {} (its backlog is full)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Stale: nobody listens. Remove it only if it is still the file we probed.
            match fs::symlink_metadata(path) {
                Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => {
                    fs::remove_file(path).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot remove stale socket {}: {e}", path.display()),
                        )
                    })?;
                    tracing::info!(event = "control_socket_stale_removed", path = %path.display(), "removed a stale control socket");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} changed while probing it (another daemon starting at once?)",
                        path.display()
                    ),
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} is a socket that cannot be probed ({e}); refusing to replace it",
                path.display()
            ),
        )),
    }
}

/// A non-blocking connect: `Ok` if something listens, `ConnectionRefused` if nobody does,
/// `EAGAIN` if a listener's backlog is full (it is alive).
fn probe(path: &Path) -> io::Result<()> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.connect(&SockAddr::unix(path)?)
}

fn kind(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a file of unknown kind"
    }
}
