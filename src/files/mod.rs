//! Static files: what a `static = { root = ... }` route serves. [`path`] makes the request
//! path safe; [`FileCache`] (one per shard) opens files and keeps their descriptor and
//! metadata for `file_cache_valid` (nginx's `open_file_cache`), so a hot file costs no
//! `open`/`stat` at all and a miss costs one `openat2` + `fstat` on the shard thread. Files of
//! at most [`SMALL_FILE`] bytes are read into memory once and served from there; larger ones go
//! from the page cache to the socket with `sendfile(2)` (see `proxy::http::files`).
//!
//! Every open is `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel
//! refuses any resolution, `..` or symlink, that would leave the root, so a symlink inside the
//! root may point anywhere inside it and nowhere else. `O_NONBLOCK` keeps a FIFO planted in the
//! root from blocking the shard; anything but a regular file or a directory is refused.

pub mod mime;
pub mod path;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::StaticConf;

/// Files up to this size are kept in memory by the file cache.
pub const SMALL_FILE: u64 = 32 * 1024;
/// Entries (files, directories, misses) one shard's file cache holds.
const MAX_ENTRIES: usize = 4096;

/// An open regular file and what its responses say about it.
#[derive(Debug)]
pub struct OpenFile {
    /// Kept only for a file too large for memory (a small one's bytes are read at once and
    /// its descriptor closed, so the file cache does not hold thousands of descriptors).
    pub fd: Option<OwnedFd>,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// `"inode-mtime.nanos-size"` in hex, quoted (strong).
    pub etag: String,
    /// The whole file, when it is small.
    pub bytes: Option<Bytes>,
}

/// What a path names.
#[derive(Clone, Debug)]
pub enum Found {
    File(Rc<OpenFile>),
    Dir,
    /// An answer instead: 404 (missing), 403 (forbidden, out of the root, not a regular file).
    Status(u16),
}

struct Entry {
    found: Found,
    checked: Instant,
}

/// One route's files. Holding its config keeps the config's address (the route's key) from
/// being reused by another root while the entries exist.
struct RouteFiles {
    _conf: std::sync::Arc<StaticConf>,
    files: HashMap<Vec<u8>, Entry>,
}

/// One shard's open files, per route, by relative path.
#[derive(Default)]
pub struct FileCache {
    routes: HashMap<usize, RouteFiles>,
    /// Entries over every route.
    entries: usize,
}

impl FileCache {
    /// What `rel` (a [`path::clean`]ed path, or one with a variant suffix) names under the
    /// route's root, from the cache while its entry is younger than `file_cache_valid`. A hit
    /// allocates nothing.
    pub fn lookup(&mut self, conf: &std::sync::Arc<StaticConf>, rel: &[u8]) -> Found {
        let id = std::sync::Arc::as_ptr(conf) as usize;
        let now = Instant::now();
        let valid = conf.file_cache_valid;
        if let Some(e) = self.routes.get(&id).and_then(|r| r.files.get(rel)) {
            if now.duration_since(e.checked) < valid {
                return e.found.clone();
            }
        }
        let found = open(&conf.root, rel);
        if valid > Duration::ZERO {
            if self.entries >= MAX_ENTRIES {
                let mut left = 0;
                for r in self.routes.values_mut() {
                    r.files.retain(|_, e| now.duration_since(e.checked) < valid);
                    left += r.files.len();
                }
                self.entries = left;
                if left >= MAX_ENTRIES {
                    self.routes.clear();
                    self.entries = 0;
                }
            }
            let route = self.routes.entry(id).or_insert_with(|| RouteFiles {
                _conf: conf.clone(),
                files: HashMap::new(),
            });
            let entry = Entry {
                found: found.clone(),
                checked: now,
            };
            if route.files.insert(rel.to_vec(), entry).is_none() {
                self.entries += 1;
            }
        }
        found
    }
}

fn errno_status(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => 404,
        // EXDEV: the path (a symlink or `..`) led out of the root; ELOOP: too many links.
        _ => 403,
    }
}

fn openat2(dir: RawFd, rel: &CString, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid NUL-terminated path and a valid open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Open `rel` under `root` and read what a response needs.
fn open(root: &std::path::Path, rel: &[u8]) -> Found {
    match try_open(root, rel) {
        Ok(f) => f,
        Err(e) => Found::Status(errno_status(&e)),
    }
}

fn try_open(root: &std::path::Path, rel: &[u8]) -> io::Result<Found> {
    use std::os::unix::ffi::OsStrExt;
    let root_c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let rel_c = CString::new(if rel.is_empty() { &b"."[..] } else { rel })
        .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    // SAFETY: a valid path; the descriptor is owned below.
    let rfd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if rfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    let rootfd = unsafe { OwnedFd::from_raw_fd(rfd) };
    let fd = openat2(
        rootfd.as_raw_fd(),
        &rel_c,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we own and a stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => return Ok(Found::Dir),
        libc::S_IFREG => {}
        _ => return Ok(Found::Status(403)),
    }
    let size = st.st_size as u64;
    let mtime = st.st_mtime.max(0) as u64;
    let bytes = if size <= SMALL_FILE {
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reading into our own buffer within its length.
            let n = unsafe {
                libc::pread(
                    fd.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                    got as libc::off_t,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        buf.truncate(got);
        Some(Bytes::from(buf))
    } else {
        None
    };
    let size = bytes.as_ref().map_or(size, |b| b.len() as u64);
    // Strong validator (RFC 9110 §8.8.1): it must change whenever the bytes may have, so it
    // carries the inode (a file replaced by rename, or a `.br` sibling, is another file) and
    // the modification time to the nanosecond (two writes within one second), not just
    // seconds and size as nginx's does.
    let nanos = st.st_mtime_nsec.max(0) as u64;
    let etag = format!("\"{:x}-{mtime:x}.{nanos:x}-{size:x}\"", st.st_ino);
    Ok(Found::File(Rc::new(OpenFile {
        fd: if bytes.is_some() { None } else { Some(fd) },
        size,
        mtime,
        etag,
        bytes,
    })))
}

/// The q-value a client's `Accept-Encoding` values give `coding` (0 = not acceptable). A coding
/// not named is acceptable only through `*`.
pub fn accepts<'a>(values: impl Iterator<Item = &'a [u8]>, coding: &[u8]) -> bool {
    let mut star = None;
    let mut named = None;
    for v in values {
        for item in crate::proto::http::cache_control::split_list(v) {
            let mut parts = item.split(|&b| b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            let mut q = 1000u32;
            for p in parts {
                let p = p.trim_ascii();
                if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                    q = qvalue(&p[2..]);
                }
            }
            if name.eq_ignore_ascii_case(coding) {
                named = Some(q);
            } else if name == b"*" {
                star = Some(q);
            }
        }
    }
    named.or(star).is_some_and(|q| q > 0)
}

/// A qvalue in thousandths; anything malformed is 0.
fn qvalue(v: &[u8]) -> u32 {
    let v = v.trim_ascii();
    match v {
        [b'1'] | [b'1', b'.'] => 1000,
        [b'1', b'.', rest @ ..] if rest.iter().all(|&b| b == b'0') && rest.len() <= 3 => 1000,
        [b'0'] | [b'0', b'.'] => 0,
        [b'0', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit) => {
            let mut n = 0;
            for i in 0..3 {
                n = n * 10 + rest.get(i).map_or(0, |d| (d - b'0') as u32);
            }
            n
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        let a = |v: &str, c: &str| accepts([v.as_bytes()].into_iter(), c.as_bytes());
        assert!(a("gzip, br", "br"));
        assert!(a("GZIP;q=0.5", "gzip"));
        assert!(!a("gzip;q=0", "gzip"));
        assert!(!a("gzip;q=0.000", "gzip"));
        assert!(a("*", "br"));
        assert!(!a("*, br;q=0", "br"));
        assert!(!a("identity", "gzip"));
        assert!(!a("gzip;q=2", "gzip"));
        assert!(!a("", "gzip"));
    }

    #[test]
    fn opens_beneath_the_root_only() {
        let dir = std::env::temp_dir().join(format!("sg-files-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.join("secret"), b"secret").unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        let _ = std::os::unix::fs::symlink(dir.join("secret"), root.join("out"));
        let _ = std::os::unix::fs::symlink("a.txt", root.join("in"));
        let _ = std::os::unix::fs::symlink("/", root.join("slash"));
        match open(&root, b"a.txt") {
            Found::File(f) => {
                assert_eq!(f.size, 5);
                assert_eq!(f.bytes.as_deref(), Some(&b"hello"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(open(&root, b"in"), Found::File(_)));
        assert!(matches!(open(&root, b"sub"), Found::Dir));
        assert!(matches!(open(&root, b""), Found::Dir));
        assert!(matches!(open(&root, b"out"), Found::Status(403)));
        assert!(matches!(
            open(&root, b"slash/etc/passwd"),
            Found::Status(403)
        ));
        assert!(matches!(open(&root, b"../secret"), Found::Status(403)));
        assert!(matches!(open(&root, b"missing"), Found::Status(404)));
        assert!(matches!(open(&root, b"a.txt/x"), Found::Status(404)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
