//! The command socket against hostile peers and hard limits, black-box (the real binary):
//! the socket's mode and who may run commands (SO_PEERCRED), what start-up does with whatever
//! is already at the path (regular file, directory, symbolic link, stale socket, a live
//! daemon's socket) and what stop removes, several clients at once with slow ones among them,
//! the cap on clients, and huge or malformed command lines.
//!
//! Every daemon is killed by PID when its guard drops, every socket read and write has a
//! timeout, and every process run to completion is bounded by `run_bounded`.

mod common;

use common::proxy::{run_bounded, temp_dir, BIN};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// The daemon's bounds (src/control/server.rs; the crate does not export them).
const MAX_LINE: usize = 4096;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CLIENTS: usize = 16;

/// Bound on a daemon's start or exit, and on any socket read in these tests.
const BOUND: Duration = Duration::from_secs(10);
/// The uid/gid of `nobody`.
const NOBODY: u32 = 65534;

/// A daemon with its control socket at a path the test chooses; killed by PID on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

/// A config with one HTTP frontend on a fresh port and the control socket at `socket`.
fn config(dir: &Path, socket: &Path) -> PathBuf {
    let text = format!(
        "[daemon]\nshards = 1\nio_driver = \"{}\"\ncontrol_socket = \"{}\"\nstop_timeout = \"2s\"\n\n\
         [[http]]\nname = \"web\"\nlisten = [\"127.0.0.1:{}\"]\ndefault_pool = \"app\"\n\n\
         [pool.app]\nservers = [ {{ name = \"app\", addr = \"127.0.0.1:9\" }} ]\n",
        common::proxy::io_driver(),
        socket.display(),
        common::free_port()
    );
    let path = dir.join(format!("shardgate-{}.toml", common::free_port()));
    fs::write(&path, text).unwrap();
    path
}

impl Daemon {
    /// Starts a daemon and waits (bounded) until it has started: the log says so once the
    /// control socket is created and served. (Connecting to find out would count as a client
    /// that sent no command, and a stale socket exists before the daemon's own.)
    fn start(dir: &Path, socket: &Path) -> Daemon {
        let mut d = Daemon::spawn(dir, socket);
        let deadline = Instant::now() + BOUND;
        loop {
            if d.log().contains("shardgate started") {
                assert!(is_socket(socket), "started without a socket:\n{}", d.log());
                return d;
            }
            if let Some(st) = d.try_exit() {
                panic!(
                    "shardgate exited ({st}) before creating {}:\n{}",
                    socket.display(),
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no control socket after {BOUND:?}:\n{}",
                d.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn spawn(dir: &Path, socket: &Path) -> Daemon {
        let cfg = config(dir, socket);
        let log = dir.join(format!("daemon-{}.log", common::free_port()));
        let out = File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        Daemon {
            child,
            socket: socket.to_path_buf(),
            log,
            exit: None,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on the PID of our child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(st) = self.try_exit() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running {BOUND:?} after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `shardgate ctl` as root: (exit code, stdout + stderr).
    fn ctl(&self, cmd: &str) -> (i32, String) {
        ctl_as(&self.socket, cmd, None)
    }

    /// The value of `key: N` in `show stats`.
    fn stat(&self, key: &str) -> u64 {
        let (code, out) = self.ctl("show stats");
        assert_eq!(code, 0, "show stats: {out}");
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{key}: N` in show stats:\n{out}"))
    }

    /// The daemon answers `show stats` (used after every hostile client).
    fn assert_serving(&self, after: &str) {
        let (code, out) = self.ctl("show stats");
        assert!(
            code == 0 && out.contains("connections.active:"),
            "show stats after {after}: exit {code}, {out}\n--- log ---\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- shardgate log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// `shardgate ctl --socket SOCKET CMD`, as `uid` (uid and gid, no supplementary groups) if
/// given: (exit code, stdout + stderr).
fn ctl_as(socket: &Path, cmd: &str, uid: Option<u32>) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.arg("ctl").arg("--socket").arg(socket).arg(cmd);
    if let Some(uid) = uid {
        // std drops the supplementary groups when root sets a uid.
        c.uid(uid).gid(uid);
    }
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN} ctl: {e}"));
    let out = run_bounded(child, BOUND, &format!("shardgate ctl {cmd:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Runs a daemon that is expected to refuse to start: (exit code, its output).
fn run_to_exit(dir: &Path, socket: &Path) -> (i32, String) {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config(dir, socket))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let out = run_bounded(child, BOUND, "a daemon that should refuse to start");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A raw client with read and write timeouts.
fn connect(socket: &Path) -> UnixStream {
    let s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// Everything the daemon sends until it closes. A reset after some data counts as the end
/// (it means the daemon closed with input of ours unread).
fn read_answer(s: &mut UnixStream) -> String {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => {}
        Err(e) => panic!(
            "reading the answer: {e} (after {:?})",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes` (then half-closes if `close_write`) and reads the whole answer. Sending may
/// fail when the daemon refuses the connection without reading (it has already answered).
fn ask_raw(socket: &Path, bytes: &[u8], close_write: bool) -> String {
    let mut s = connect(socket);
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_answer(&mut s)
}

fn assert_error(answer: &str, want: &str, what: &str) {
    assert!(
        answer.starts_with("error:") && answer.contains(want) && answer.lines().count() == 1,
        "{what}: want one `error: …{want}…` line, got {answer:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Mode and credentials.

/// The socket is created with the umask at 0177 around bind(2), so the file has mode 0600 in
/// the same system call that makes it appear: no window with the umask's mode exists by
/// design. A watcher that lstat()s the path as fast as it can while the daemon starts checks
/// this from the outside as well as polling can (it would catch a bind-then-chmod that loses
/// the race), and the final mode is checked after start.
#[test]
fn the_socket_is_0600_from_the_moment_it_exists() {
    let dir = temp_dir("ctlmode");
    let socket = dir.join("ctl.sock");
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (socket, done) = (socket.clone(), done.clone());
        thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + BOUND;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(m) = fs::symlink_metadata(&socket) {
                    let mode = m.mode() & 0o7777;
                    if seen.last() != Some(&mode) {
                        seen.push(mode);
                    }
                }
            }
            seen
        })
    };
    let d = Daemon::start(&dir, &socket);
    d.assert_serving("start");
    done.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    let m = fs::symlink_metadata(&socket).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(
        m.mode() & 0o7777,
        0o600,
        "final mode {:o}",
        m.mode() & 0o7777
    );
    assert!(!seen.is_empty(), "the watcher never saw the socket");
    assert!(
        seen.iter().all(|&m| m == 0o600),
        "modes the socket had while the daemon started: {:?}",
        seen.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
    );
    assert_eq!(m.uid(), unsafe { libc::geteuid() }, "socket owner");
    drop(d);
    let _ = fs::remove_dir_all(dir);
}

/// The socket listens before its file appears (it is bound under a staging name and linked
/// at the path), so whoever sees the file can connect: a start script that waits for the file,
/// or `shardgate ctl` run right after it, is never refused. A watcher connects the moment
/// it sees the file, over several starts; no staging name is left in the directory.
#[test]
fn the_socket_accepts_from_the_moment_it_exists() {
    for round in 0..8 {
        let dir = temp_dir("ctlready");
        let socket = dir.join("ctl.sock");
        let watcher = {
            let socket = socket.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + BOUND;
                while Instant::now() < deadline {
                    if fs::symlink_metadata(&socket).is_ok() {
                        return Some(UnixStream::connect(&socket).map(drop));
                    }
                    std::hint::spin_loop();
                }
                None
            })
        };
        let d = Daemon::start(&dir, &socket);
        let first = watcher.join().unwrap();
        match first {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("round {round}: the first connect was refused: {e}"),
            None => panic!("round {round}: the watcher never saw the socket"),
        }
        d.assert_serving("start");
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".bind")),
            "round {round}: a staging name was left: {names:?}"
        );
        drop(d);
        let _ = fs::remove_dir_all(dir);
    }
}

/// Root, or the daemon's own uid, may run commands; `nobody` cannot connect to the 0600
/// socket, and once the socket is opened up (chmod 0666) SO_PEERCRED still refuses it with one
/// line. Refusals are counted in `show stats` and logged at most once per interval.
#[test]
fn other_uids_are_refused() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as uid {NOBODY}");
        return;
    }
    let dir = temp_dir("ctlcred");
    // `nobody` must be able to reach the socket's directory (but not the socket).
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("ctl.sock");
    let d = Daemon::start(&dir, &socket);

    let (code, out) = ctl_as(&socket, "show stats", Some(NOBODY));
    assert_eq!(
        code, 2,
        "uid {NOBODY} on the 0600 socket: exit {code}, {out}"
    );
    assert!(
        out.contains("ermission denied"),
        "uid {NOBODY} on the 0600 socket: {out}"
    );
    assert_eq!(
        d.stat("control.denied"),
        0,
        "the mode stopped it before the daemon saw it"
    );

    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    for _ in 0..3 {
        let (code, out) = ctl_as(&socket, "show stats", Some(NOBODY));
        assert_eq!(code, 1, "uid {NOBODY} on a 0666 socket: exit {code}, {out}");
        assert_eq!(out, format!("error: permission denied (uid {NOBODY})\n"));
    }
    assert_eq!(d.stat("control.denied"), 3);
    // Root is still served; the three refusals are logged once (rate-limited).
    let (code, out) = d.ctl("help");
    assert_eq!(code, 0, "{out}");
    let warnings = d.log().matches("permission denied").count();
    assert_eq!(warnings, 1, "refusal warnings in the log:\n{}", d.log());
    drop(d);
    let _ = fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// The path at start and stop.

#[test]
fn a_regular_file_directory_or_symlink_at_the_path_is_refused_and_left_alone() {
    let dir = temp_dir("ctlpath");
    let socket = dir.join("ctl.sock");

    fs::write(&socket, "precious data\n").unwrap();
    let (code, out) = run_to_exit(&dir, &socket);
    assert_eq!(code, 1, "regular file at the path: exit {code}\n{out}");
    assert!(
        out.contains(&socket.display().to_string()) && out.contains("regular file"),
        "the message should name the path and what is there:\n{out}"
    );
    assert_eq!(fs::read_to_string(&socket).unwrap(), "precious data\n");
    fs::remove_file(&socket).unwrap();

    fs::create_dir(&socket).unwrap();
    fs::write(socket.join("inside"), "x").unwrap();
    let (code, out) = run_to_exit(&dir, &socket);
    assert_eq!(code, 1, "directory at the path: exit {code}\n{out}");
    assert!(out.contains("directory"), "{out}");
    assert_eq!(fs::read_to_string(socket.join("inside")).unwrap(), "x");
    fs::remove_dir_all(&socket).unwrap();

    // A symbolic link is refused even when it points to a live socket.
    let target = dir.join("target.sock");
    let _live = UnixListener::bind(&target).unwrap();
    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let (code, out) = run_to_exit(&dir, &socket);
    assert_eq!(code, 1, "symlink at the path: exit {code}\n{out}");
    assert!(out.contains("symbolic link"), "{out}");
    assert_eq!(fs::read_link(&socket).unwrap(), target);
    assert!(is_socket(&target));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = temp_dir("ctlstale");
    let socket = dir.join("ctl.sock");
    drop(UnixListener::bind(&socket).unwrap()); // a dead daemon's socket: nobody listens
    assert!(
        UnixStream::connect(&socket).is_err(),
        "the stale socket answers"
    );
    let d = Daemon::start(&dir, &socket);
    // Something answers now: the stale file was replaced (its inode number may be reused, so
    // that proves nothing).
    d.assert_serving("replacing a stale socket");
    let m = fs::symlink_metadata(&socket).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert!(
        d.log().contains("stale"),
        "replacing a stale socket is logged:\n{}",
        d.log()
    );
    drop(d);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let dir = temp_dir("ctltwo");
    let socket = dir.join("ctl.sock");
    let mut first = Daemon::start(&dir, &socket);
    let ino = fs::symlink_metadata(&socket).unwrap().ino();
    let (code, out) = run_to_exit(&dir, &socket);
    assert_eq!(code, 1, "second daemon: exit {code}\n{out}");
    assert!(
        out.contains(&format!(
            "another shardgate is running on {}",
            socket.display()
        )),
        "second daemon's message:\n{out}"
    );
    assert_eq!(
        fs::symlink_metadata(&socket).unwrap().ino(),
        ino,
        "socket replaced"
    );
    first.assert_serving("a second daemon tried to start");
    let st = first.stop();
    assert_eq!(st.code(), Some(0), "{st}");
    assert!(!socket.exists(), "socket left behind at stop");
    let _ = fs::remove_dir_all(dir);
}

/// At stop the path is removed only if it still holds the socket this daemon created.
#[test]
fn stop_leaves_a_file_that_replaced_the_socket() {
    let dir = temp_dir("ctlstop");
    let socket = dir.join("ctl.sock");
    let mut d = Daemon::start(&dir, &socket);
    fs::remove_file(&socket).unwrap();
    fs::write(&socket, "not yours\n").unwrap();
    let st = d.stop();
    assert_eq!(st.code(), Some(0), "{st}");
    assert_eq!(fs::read_to_string(&socket).unwrap(), "not yours\n");
    let _ = fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Several clients, slow ones, and the cap.

/// A client that sends nothing and one that sends a byte a second do not delay another
/// client's `show stats`: its answer arrives while both are still within their READ_TIMEOUT
/// (a single-threaded server would answer only after the silent client's timeout). Both slow
/// clients then get an `error:` line once READ_TIMEOUT has passed: the timeout is a deadline
/// for the whole line, not per read.
#[test]
fn slow_clients_do_not_block_others() {
    let dir = temp_dir("ctlslow");
    let socket = dir.join("ctl.sock");
    let d = Daemon::start(&dir, &socket);

    let mut silent = connect(&socket);
    let slow_since = Instant::now();
    let dribbler = {
        let socket = socket.clone();
        thread::spawn(move || {
            let mut s = connect(&socket);
            let start = Instant::now();
            // "show stats\n" at one byte a second takes 11 s: longer than READ_TIMEOUT.
            for b in b"show stats\n" {
                if s.write_all(&[*b]).is_err() {
                    break; // the daemon gave up on us
                }
                thread::sleep(Duration::from_secs(1));
                if start.elapsed() > READ_TIMEOUT + Duration::from_secs(2) {
                    break;
                }
            }
            (read_answer(&mut s), start.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(200)); // both slow clients are connected and accepted

    let (code, out) = d.ctl("show stats");
    let answered_after = slow_since.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(
        answered_after < READ_TIMEOUT,
        "show stats answered {answered_after:?} after the slow clients connected: it waited \
         for them (READ_TIMEOUT {READ_TIMEOUT:?})"
    );
    // The silent client has not been answered yet.
    silent.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = silent.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the silent client got something before its timeout: {early:?}"
    );
    silent.set_nonblocking(false).unwrap();

    let answer = read_answer(&mut silent);
    let waited = slow_since.elapsed();
    assert_error(&answer, "no complete command line", "silent client");
    assert!(
        waited >= READ_TIMEOUT - Duration::from_millis(500) && waited < READ_TIMEOUT * 2,
        "silent client answered after {waited:?} (READ_TIMEOUT {READ_TIMEOUT:?})"
    );
    let (answer, took) = dribbler.join().unwrap();
    assert_error(
        &answer,
        "no complete command line",
        "client sending a byte a second",
    );
    assert!(
        took < READ_TIMEOUT * 2,
        "the dribbling client was kept {took:?}"
    );
    d.assert_serving("slow clients");
    drop(d);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn clients_beyond_the_cap_are_refused_then_served_again() {
    let dir = temp_dir("ctlcap");
    let socket = dir.join("ctl.sock");
    let d = Daemon::start(&dir, &socket);
    let idle: Vec<UnixStream> = (0..MAX_CLIENTS).map(|_| connect(&socket)).collect();
    // Connections are accepted in order: this one comes after the 16 idle ones.
    let answer = ask_raw(&socket, b"show stats\n", true);
    assert_error(&answer, "too many control clients", "client over the cap");
    let (code, out) = d.ctl("show stats");
    assert_eq!(code, 1, "ctl over the cap: {out}");
    assert!(out.starts_with("error: too many control clients"), "{out}");

    drop(idle); // their threads see EOF and end at once
    let deadline = Instant::now() + BOUND;
    loop {
        let (code, out) = d.ctl("show stats");
        if code == 0 {
            assert!(out.contains("control.busy: 2"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again after the idle clients left: {out}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let _ = fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Huge and malformed command lines.

#[test]
fn huge_and_malformed_commands_get_an_error_and_the_daemon_goes_on() {
    let dir = temp_dir("ctlbad");
    let socket = dir.join("ctl.sock");
    let d = Daemon::start(&dir, &socket);

    // Exactly MAX_LINE bytes is a command; one more is not.
    let mut at_limit = b"show stats".to_vec();
    at_limit.resize(MAX_LINE, b' ');
    at_limit.push(b'\n');
    let answer = ask_raw(&socket, &at_limit, true);
    assert!(
        answer.contains("connections.active:"),
        "a {MAX_LINE}-byte line: {answer:?}"
    );

    let mut too_long = vec![b'x'; MAX_LINE + 1];
    too_long.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "a line over MAX_LINE",
            too_long.clone(),
            true,
            "longer than 4096 bytes",
        ),
        (
            "the same, write side left open",
            too_long,
            false,
            "longer than 4096 bytes",
        ),
        ("a NUL byte", b"show\0stats\n".to_vec(), true, "NUL"),
        (
            "invalid UTF-8",
            b"show \xff\xfe stats\n".to_vec(),
            true,
            "UTF-8",
        ),
        ("an empty line", b"\n".to_vec(), true, "empty command"),
        ("a blank line", b" \t \r\n".to_vec(), true, "empty command"),
        ("nothing, then EOF", b"".to_vec(), true, "no command"),
        (
            "half a line, then EOF",
            b"show st".to_vec(),
            true,
            "incomplete command",
        ),
    ];
    let mut bad = 0;
    for (what, bytes, close_write, want) in cases {
        let answer = ask_raw(&socket, &bytes, close_write);
        assert_error(&answer, want, what);
        if !want.contains("empty") {
            bad += 1;
        }
        d.assert_serving(what);
    }

    // A client that closes mid-line gets nothing (it is gone) and changes nothing.
    {
        let mut s = connect(&socket);
        s.write_all(b"disable server app/ap").unwrap();
    }
    bad += 1;
    d.assert_serving("a client that closed mid-line");

    // 1 MiB of garbage without a newline, written while the answer is read.
    let mut s = connect(&socket);
    let writer = {
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || {
            let garbage: Vec<u8> = (0..1u32 << 20).map(|i| b'A' + (i % 26) as u8).collect();
            // The daemon stops reading early and closes: a broken pipe is fine.
            let _ = w.write_all(&garbage);
        })
    };
    let answer = read_answer(&mut s);
    assert_error(&answer, "longer than 4096 bytes", "1 MiB without a newline");
    let deadline = Instant::now() + BOUND;
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the garbage writer is stuck");
        thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    bad += 1;
    d.assert_serving("1 MiB of garbage");

    // The closed-mid-line client may still be counted a moment later.
    let deadline = Instant::now() + BOUND;
    while d.stat("control.bad_input") < bad {
        assert!(
            Instant::now() < deadline,
            "control.bad_input never reached {bad}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.stat("control.bad_input"), bad);
    drop(d);
    let _ = fs::remove_dir_all(dir);
}
