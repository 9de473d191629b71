//! Hostile conditions around the real binary: each case states what must happen and checks
//! that nothing else was harmed. (The start of the fault-injection suite.)

mod common;

use common::*;
use std::time::Duration;

/// The open-file limit (soft, hard) of a running process.
fn nofile(pid: u32) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading a process's limit into a valid struct.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut lim,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    (lim.rlim_cur, lim.rlim_max)
}

/// Set the open-file limit of a running process.
fn set_nofile(pid: u32, (soft, hard): (u64, u64)) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setting a process's limit from a valid struct, old limit not wanted.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The descriptor number the process's next `socket()` would get: the lowest free one. A
/// limit equal to it makes that call fail with EMFILE (the limit bounds descriptor numbers).
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Out of descriptors, the proxy cannot open a server connection: that request gets 503, and
/// the server is not blamed (not marked down for `down_time`): once descriptors are back, the
/// next request goes straight through.
#[test]
fn descriptor_exhaustion_is_a_local_503_not_a_server_down() {
    let app = Backend::start("app");
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
down_time = "60s"
max_idle_per_server = 0
servers = [ { name = "app", addr = "{app}" } ]
"#;
    let p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    let mut warm = Conn::connect(p.addr("web"));
    assert_eq!(warm.get("/", "h").status, 200);
    drop(warm);

    // The client's connection is accepted first; then not one descriptor more.
    let mut c = Conn::connect(p.addr("web"));
    c.set_read_timeout(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let before = nofile(p.pid());
    set_nofile(p.pid(), (lowest_free_fd(p.pid()), before.1));
    let r = c.get("/", "h");
    assert_eq!(r.status, 503, "out of descriptors: {}", r.summary());
    drop(c);

    set_nofile(p.pid(), before);
    assert_eq!(nofile(p.pid()), before);
    let mut after = Conn::connect(p.addr("web"));
    after.set_read_timeout(Duration::from_secs(10));
    let r = after.get("/", "h");
    assert_eq!(
        (r.status, r.backend()),
        (200, "app"),
        "the server was blamed for our shortage: {}\n{}",
        r.summary(),
        p.log()
    );
}
