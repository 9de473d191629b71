//! The systemd readiness protocol (`sd_notify(3)`), written out instead of linking libsystemd:
//! one datagram of `KEY=VALUE` lines to the UNIX socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract name when it starts with `@`). Without that variable every call is a no-op, so
//! the daemon behaves the same under any other supervisor.
//!
//! Why it matters beyond start-up: a binary upgrade (`shardgate ctl upgrade`) starts the new
//! process as a *child* of the running one, and the old process exits once it drained. systemd
//! takes a service whose main PID exits as stopped and kills what is left of it, so the new
//! process announces itself with `MAINPID=<its pid>` (the unit has `NotifyAccess=all`: the
//! sender is not the main PID yet) before the old one hears that it serves, and the old one
//! goes quiet: from the handover on it sends nothing, least of all `STOPPING=1`, which would
//! make systemd stop the whole service.
//!
//! The messages, one call per event:
//!
//! | event | call | sends |
//! |---|---|---|
//! | every shard runs on its listeners (fresh start) | [`ready`] | `READY=1` |
//! | the shards of an upgrade's new process run | [`took_over`] | `MAINPID=<pid>`, `READY=1` |
//! | the old process hands over | [`handed_over`] | nothing, ever again |
//! | a reload starts / ends (SIGHUP or `ctl reload`) | [`reloading`] / [`reloaded`] | `RELOADING=1` + `MONOTONIC_USEC` / `READY=1` |
//! | a real stop (SIGTERM, `stop daemon`) | [`stopping`] | `STOPPING=1` |
//!
//! Only the process systemd knows as the service (the one that sent `READY=1` or `MAINPID`)
//! speaks: a new process that fails to start during an upgrade, or an old one draining after
//! it, says nothing. A failed send is logged once and never stops the daemon.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

/// This process is the one systemd knows as the service's main process.
static MAIN: AtomicBool = AtomicBool::new(false);
/// A send failed already (logged once).
static FAILED: AtomicBool = AtomicBool::new(false);

/// Every shard runs on its listeners: the service is up.
pub fn ready() {
    MAIN.store(true, Ordering::SeqCst);
    send("READY=1\nSTATUS=serving");
}

/// The new process of a binary upgrade serves: it is the service's main process from now on.
pub fn took_over() {
    MAIN.store(true, Ordering::SeqCst);
    send(&format!(
        "MAINPID={}\nREADY=1\nSTATUS=serving (upgraded)",
        std::process::id()
    ));
}

/// The old process of an upgrade handed its sockets over: it is no longer the service.
pub fn handed_over() {
    MAIN.store(false, Ordering::SeqCst);
}

/// A reload starts. `MONOTONIC_USEC` is what systemd 253+ wants with `RELOADING=1`
/// (`Type=notify-reload`); older versions ignore it.
pub fn reloading() {
    if MAIN.load(Ordering::SeqCst) {
        send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }
}

/// A reload ended, applied or refused (the running config serves either way).
pub fn reloaded(ok: bool) {
    if MAIN.load(Ordering::SeqCst) {
        let status = if ok {
            "serving"
        } else {
            "serving (last reload refused, see the log)"
        };
        send(&format!("READY=1\nSTATUS={status}"));
    }
}

/// A real stop begins (not an upgrade's handover: that process is silent already).
pub fn stopping() {
    if MAIN.load(Ordering::SeqCst) {
        send("STOPPING=1\nSTATUS=stopping: draining");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a properly sized timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Send one message to `$NOTIFY_SOCKET`, if set.
fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&target, message.as_bytes()) {
        if !FAILED.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                event = "notify_failed",
                socket = %target.to_string_lossy(),
                error = %e,
                "cannot notify systemd (NOTIFY_SOCKET); the service manager may misjudge the daemon's state"
            );
        }
    }
}

fn send_to(target: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;

    let bytes = target.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(target)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only absolute paths and @abstract names are supported",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    // Never hold the main thread if the manager's queue is full: the message is dropped.
    sock.set_nonblocking(true)?;
    let sent = sock.send_to_addr(message, &addr)?;
    if sent != message.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short datagram",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("shardgate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("shardgate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx2 = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), b"STOPPING=1").unwrap();
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(send_to(std::ffi::OsStr::new("relative"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
