//! The systemd readiness protocol, black-box: the real daemon runs with `NOTIFY_SOCKET`
//! pointing at a datagram socket this test owns (as systemd's would be), with SO_PASSCRED on,
//! so every message comes with the PID that sent it. `READY=1` must come only once the
//! listeners serve; a reload is framed by `RELOADING=1`/`READY=1`; a binary upgrade makes the
//! new process say `MAINPID=<its pid>` (and the old one say nothing more: a `STOPPING=1` from
//! it would make systemd stop the service); a stop says `STOPPING=1`. The unit file
//! (`config/shardgate.service`) is checked with `systemd-analyze verify` when it can run.

mod common;

use common::proxy::BIN;
use common::{free_port, Backend, Conn, Proxy};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// A message to the notify socket: who sent it and its `KEY=VALUE` lines.
#[derive(Debug, Clone)]
struct Msg {
    pid: u32,
    text: String,
}

impl Msg {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The test's end of `$NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    /// What to put in `NOTIFY_SOCKET`.
    env: String,
    dir: Option<PathBuf>,
}

impl Notify {
    /// Bound at a path in a fresh temp dir.
    fn at_path() -> Notify {
        let dir = common::proxy::temp_dir("notify");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Notify::finish(sock, path.display().to_string(), Some(dir))
    }

    /// Bound at an abstract name (`@...` in `NOTIFY_SOCKET`, as systemd uses in containers).
    fn abstract_name() -> Notify {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "shardgate-test-notify-{}-{}",
            std::process::id(),
            free_port()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        Notify::finish(sock, format!("@{name}"), None)
    }

    fn finish(sock: UnixDatagram, env: String, dir: Option<PathBuf>) -> Notify {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a properly sized int.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        Notify { sock, env, dir }
    }

    /// The next message within `timeout`, with its sender's PID (SCM_CREDENTIALS).
    fn recv(&self, timeout: Duration) -> Option<Msg> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut cmsg = [0u64; 16];
        // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        // SAFETY: recvmsg on our socket with buffers described by `hdr`.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut hdr, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "recvmsg: {e}"
            );
            return None;
        }
        let mut pid = 0;
        // SAFETY: walking the control messages the kernel wrote into `hdr`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
                    pid = cred.pid as u32;
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        Some(Msg {
            pid,
            text: String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
        })
    }

    /// Messages until one satisfies `want` (returned with those before it), or panic.
    #[track_caller]
    fn until(&self, what: &str, timeout: Duration, want: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no {what} within {timeout:?}; got {seen:?}");
            }
            if let Some(m) = self.recv(left) {
                let done = want(&m);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
    }

    /// Everything that arrives within `wait`.
    fn drain(&self, wait: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            if let Some(m) = self.recv(left) {
                out.push(m);
            }
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

const CONFIG: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]
"#;

fn config() -> String {
    common::daemon(2) + CONFIG
}

/// One GET through the proxy: the backend's name, or why it failed.
fn get(port: u16) -> Result<String, String> {
    let mut c = Conn::try_connect(([127, 0, 0, 1], port).into()).map_err(|e| e.to_string())?;
    c.set_read_timeout(Duration::from_secs(5));
    c.try_send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let r = c.try_read_response()?;
    if r.status == 200 {
        Ok(r.backend().to_string())
    } else {
        Err(r.summary())
    }
}

/// Whether `pid` runs and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Kills (SIGKILL) a daemon an upgrade started, if it still runs with our config.
struct Upgraded {
    pid: u32,
    config: PathBuf,
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return;
        };
        let want = self.config.to_string_lossy();
        if cmdline.split(|b| *b == 0).any(|a| a == want.as_bytes()) {
            // SAFETY: kill(2) on a process whose command line names this test's config: the
            // daemon this test's upgrade started.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// What the waiter thread saw: the first message, and a request sent the moment it came.
type FirstSeen = thread::JoinHandle<(Msg, Result<String, String>)>;

/// Starts the daemon with `NOTIFY_SOCKET`: the proxy, its port, and the waiter.
fn start(notify: &Notify, backend: &Backend) -> (Proxy, u16, FirstSeen) {
    let port = free_port();
    // Waits for the first message and, the moment it comes, sends a request: READY=1 must
    // mean the listeners serve.
    let probe = notify.sock.try_clone().unwrap();
    let waiter = {
        let n = Notify {
            sock: probe,
            env: String::new(),
            dir: None,
        };
        thread::spawn(move || {
            let first = n
                .recv(Duration::from_secs(15))
                .expect("no notify message within 15 s of the start");
            let served = get(port);
            (first, served)
        })
    };
    let p = Proxy::start_env(
        &config(),
        &[("web", port.to_string()), ("app", backend.addr_string())],
        &[("NOTIFY_SOCKET", notify.env.as_str())],
    );
    (p, port, waiter)
}

#[test]
fn ready_reload_upgrade_and_stop_are_announced() {
    let backend = Backend::start("app");
    let notify = Notify::at_path();
    let (mut p, port, waiter) = start(&notify, &backend);
    let old = p.pid();

    // READY=1 first, from the daemon, and by then a request goes through.
    let (first, served) = waiter.join().unwrap();
    assert!(
        first.has("READY=1"),
        "first message is not READY=1: {first:?}"
    );
    assert_eq!(first.pid, old, "READY=1 from another process: {first:?}");
    assert_eq!(
        served.as_deref(),
        Ok("app"),
        "a request right after READY=1"
    );

    // ctl reload: RELOADING=1 (with MONOTONIC_USEC, for systemd 253+) then READY=1.
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "reload: {out}");
    let msgs = notify.until("READY=1 after a reload", Duration::from_secs(5), |m| {
        m.has("READY=1")
    });
    assert!(msgs[0].has("RELOADING=1"), "reload: {msgs:?}");
    assert!(
        msgs[0]
            .value("MONOTONIC_USEC")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "RELOADING=1 without MONOTONIC_USEC: {msgs:?}"
    );
    assert!(msgs.iter().all(|m| m.pid == old), "{msgs:?}");

    // A refused reload still ends in READY=1 (the running config serves on).
    let good = std::fs::read_to_string(&p.config_path).unwrap();
    std::fs::write(&p.config_path, "[daemon]\nshards = \"many\"\n").unwrap();
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 1, "a bad config must be refused: {out}");
    let msgs = notify.until(
        "READY=1 after a refused reload",
        Duration::from_secs(5),
        |m| m.has("READY=1"),
    );
    assert!(msgs[0].has("RELOADING=1"), "refused reload: {msgs:?}");
    std::fs::write(&p.config_path, good).unwrap();

    // SIGHUP reloads too, and says so.
    p.signal(libc::SIGHUP);
    let msgs = notify.until("READY=1 after SIGHUP", Duration::from_secs(5), |m| {
        m.has("READY=1")
    });
    assert!(msgs[0].has("RELOADING=1"), "SIGHUP: {msgs:?}");

    // ctl upgrade: the new process names itself the main PID, ready.
    let (code, out) = p.ctl("upgrade");
    let new: u32 = out
        .strip_prefix("ok upgraded: pid ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("upgrade: exit {code}: {out}"));
    let _guard = Upgraded {
        pid: new,
        config: p.config_path.clone(),
    };
    let msgs = notify.until("MAINPID after the upgrade", Duration::from_secs(10), |m| {
        m.value("MAINPID").is_some()
    });
    let main = msgs.last().unwrap();
    assert_eq!(
        main.value("MAINPID"),
        Some(new.to_string().as_str()),
        "{msgs:?}"
    );
    assert_eq!(main.pid, new, "MAINPID sent by another process: {main:?}");
    assert!(main.has("READY=1"), "{main:?}");
    assert!(alive(new), "the new main PID {new} does not run");
    assert_eq!(get(port).as_deref(), Ok("app"));
    let (code, info) = p.ctl("show info");
    assert_eq!(code, 0, "show info: {info}");
    assert!(
        info.lines().any(|l| l == format!("pid: {new}")),
        "the command socket is not served by {new}: {info}"
    );

    // The old process drains and exits without a word (no STOPPING=1, no READY=1).
    assert!(
        p.wait_exit(Duration::from_secs(40)).is_some(),
        "the old process {old} did not exit after the upgrade"
    );
    let after = notify.drain(Duration::from_millis(300));
    let from_old: Vec<&Msg> = msgs.iter().chain(&after).filter(|m| m.pid == old).collect();
    assert!(
        from_old.is_empty(),
        "the old process spoke during the handover: {from_old:?}"
    );
    assert!(alive(new), "the new process {new} died with the old one");
    assert_eq!(get(port).as_deref(), Ok("app"));

    // A real stop of the new main process: STOPPING=1.
    // SAFETY: kill(2) on the daemon this test's upgrade started (checked alive above).
    unsafe {
        libc::kill(new as i32, libc::SIGTERM);
    }
    let msgs = notify.until("STOPPING=1", Duration::from_secs(10), |m| {
        m.has("STOPPING=1")
    });
    assert_eq!(msgs.last().unwrap().pid, new, "{msgs:?}");
    let deadline = Instant::now() + Duration::from_secs(40);
    while alive(new) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(new), "the new process did not exit on SIGTERM");
}

#[test]
fn abstract_socket_and_a_refused_upgrade_stays_silent() {
    let backend = Backend::start("app");
    let notify = Notify::abstract_name();
    let (mut p, port, waiter) = start(&notify, &backend);
    let (first, served) = waiter.join().unwrap();
    assert!(first.has("READY=1") && first.pid == p.pid(), "{first:?}");
    assert_eq!(served.as_deref(), Ok("app"));

    // An upgrade whose new process refuses its config: nothing for systemd (a STOPPING=1
    // or a MAINPID from it would stop the service or lose track of it).
    let good = std::fs::read_to_string(&p.config_path).unwrap();
    std::fs::write(&p.config_path, "[daemon]\nshards = \"many\"\n").unwrap();
    let (code, out) = p.ctl("upgrade");
    assert_eq!(code, 1, "upgrade with a bad config: {out}");
    std::fs::write(&p.config_path, good).unwrap();
    // And one whose binary does not exist.
    let (code, out) = p.ctl("upgrade --binary /nonexistent/shardgate");
    assert_eq!(code, 1, "upgrade with a missing binary: {out}");
    let quiet = notify.drain(Duration::from_millis(500));
    assert!(quiet.is_empty(), "refused upgrades notified: {quiet:?}");
    assert_eq!(get(port).as_deref(), Ok("app"));

    // `stop daemon` is a real stop.
    let (code, out) = p.ctl("stop daemon");
    assert_eq!(code, 0, "stop daemon: {out}");
    let msgs = notify.until("STOPPING=1", Duration::from_secs(10), |m| {
        m.has("STOPPING=1")
    });
    assert_eq!(msgs.last().unwrap().pid, p.pid());
    assert!(p.wait_exit(Duration::from_secs(40)).is_some());
}

#[test]
fn without_notify_socket_nothing_changes() {
    // The harness starts the daemon without NOTIFY_SOCKET: it serves and stops as ever.
    let backend = Backend::start("app");
    let port = free_port();
    let mut p = Proxy::start_with(
        &config(),
        &[("web", port.to_string()), ("app", backend.addr_string())],
    );
    assert_eq!(get(port).as_deref(), Ok("app"));
    p.signal(libc::SIGTERM);
    let st = p
        .wait_exit(Duration::from_secs(40))
        .expect("exit on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(!p.log().contains("notify_failed"), "{}", p.log());
}

/// The unit file, with its binary path pointed at the binary under test.
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/shardgate.service"
    ))
    .unwrap();
    let path = dir.join("shardgate.service");
    std::fs::write(&path, text.replace("/usr/bin/shardgate", BIN)).unwrap();
    path
}

#[test]
fn unit_file_declares_the_protocol() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/shardgate.service"
    ))
    .unwrap();
    let keys: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("Type"), Some("notify"));
    // MAINPID comes from the upgrade's new process, not the main PID yet.
    assert_eq!(get("NotifyAccess"), Some("all"));
    assert_eq!(
        get("ExecStart"),
        Some("/usr/bin/shardgate --config /etc/shardgate/shardgate.toml")
    );
    assert!(get("ExecReload").is_some_and(|v| v.ends_with(" ctl reload")));
    assert!(get("LimitNOFILE").is_some());
    assert_eq!(get("AmbientCapabilities"), Some("CAP_NET_BIND_SERVICE"));
    assert_eq!(get("CapabilityBoundingSet"), Some("CAP_NET_BIND_SERVICE"));
}

#[test]
fn unit_file_verifies_and_allows_io_uring() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: systemd-analyze is not installed or cannot run here; config/shardgate.service not verified");
        return;
    }
    let dir = common::proxy::temp_dir("unit");
    let unit = unit_for_test(&dir);
    // --man=no: the man page is installed by the package, not on this machine.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A bad value is only a warning (exit 0): any output fails the test.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{stderr}",
        unit.display(),
        out.status
    );

    // SystemCallFilter must leave io_uring to the daemon.
    let text = std::fs::read_to_string(&unit).unwrap();
    let filters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    let mut allowed = Vec::new();
    for f in filters.iter().flat_map(|f| f.split_whitespace()) {
        assert!(!f.starts_with('~'), "a deny list is not checked here: {f}");
        allowed.extend(expand(f));
    }
    if !filters.is_empty() {
        for call in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "splice",
        ] {
            assert!(
                allowed.iter().any(|c| c == call),
                "SystemCallFilter={filters:?} blocks {call}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The system calls a `SystemCallFilter=` entry allows (groups expanded).
fn expand(entry: &str) -> Vec<String> {
    if !entry.starts_with('@') {
        return vec![entry.to_string()];
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", entry])
        .output()
        .unwrap();
    assert!(out.status.success(), "syscall-filter {entry}");
    let mut calls = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        calls.extend(expand(item));
    }
    calls
}
