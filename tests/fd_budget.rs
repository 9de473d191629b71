//! The descriptor budget: under a low open-file limit the daemon caps client connections so
//! that upstream connections keep descriptors, says so in its log, and serves the clients it
//! accepts instead of answering them 503 for want of a socket. (Its own test binary: it
//! lowers this process's limit so the daemon inherits it.)

mod common;

use common::*;
use std::time::Duration;

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

#[test]
fn a_low_open_file_limit_caps_clients_and_keeps_upstream_descriptors() {
    let app = Backend::start("app");
    let saved = get_nofile();
    // The daemon raises its soft limit to the hard one: lower both for it to inherit.
    set_nofile(400, 400).unwrap();
    let p = proxy::single_pool(app.addr_string(), 1, "", "", "");
    // Root may raise its hard limit again; anyone else keeps 400, enough for this test.
    let _ = set_nofile(saved.0, saved.1);

    // 64 + 1 shard × (1 listener + 128 spare pipe descriptors) = 193 fixed; 512 upstream
    // slots would exceed what is left (207), so each client keeps a descriptor for its
    // upstream connection: 207 / 2 = 103 clients.
    let log = p.log();
    assert!(
        log.contains("client_cap=103") && log.contains("open-file limit is too low"),
        "{log}"
    );

    let addr = p.addr("web");
    let mut conns = Vec::new();
    for i in 0..103 {
        let mut c = Conn::connect(addr);
        let r = c.get(&format!("/c{i}"), "h");
        assert_eq!(r.status, 200, "client {i}: {}", r.summary());
        conns.push(c);
    }
    // One more waits in the backlog instead of being accepted.
    let mut extra = Conn::connect(addr);
    extra.send(&req("GET", "/extra", "h", &[], b""));
    extra.set_read_timeout(Duration::from_millis(800));
    assert!(
        extra.try_read_response().is_err(),
        "a 104th connection was served with a client cap of 103"
    );
    // Every accepted client can still reach the server.
    for (i, c) in conns.iter_mut().enumerate().step_by(10) {
        assert_eq!(c.get(&format!("/again{i}"), "h").status, 200);
    }
    drop(conns.pop());
    extra.set_read_timeout(Duration::from_secs(5));
    assert_eq!(extra.read_response().status, 200);
}
