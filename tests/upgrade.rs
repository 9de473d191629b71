//! Binary upgrade (`shardgate ctl upgrade`), black-box: the real binary replaces itself on
//! the same sockets while clients keep talking to it. Under open-loop load nothing is lost
//! or refused and the counters carry over exactly; a request in flight completes and its
//! keep-alive connection moves to the new process; a bad config or a missing binary is
//! refused and the daemon serves on.
//!
//! After an upgrade the daemon is no longer the child the [`Proxy`] guard spawned, so every
//! test keeps a [`Daemons`] guard that kills each process of its own (by PID) when it drops.

mod common;

use common::loadgen::{json_num, spawn_loadgen};
use common::proxy::{single_pool, BIN};
use common::{req, Backend, BackendOpts, Conn, Proxy};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound on a `ctl` run made while the guard drops (it must not panic there).
const DROP_CTL: Duration = Duration::from_secs(3);

/// Every daemon process a test started, directly or by upgrades; each one still running is
/// killed (SIGKILL, by PID) when the guard drops, also on panic. A PID counts as ours only
/// while its command line names this test's config file (a PID reused by an unrelated
/// process is left alone).
struct Daemons {
    socket: PathBuf,
    config: PathBuf,
    pids: Vec<u32>,
}

impl Daemons {
    fn new(p: &Proxy) -> Daemons {
        Daemons {
            socket: p.socket.clone(),
            config: p.config_path.clone(),
            pids: vec![p.pid()],
        }
    }

    fn remember(&mut self, pid: u32) {
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    /// Whether `pid` runs (not a zombie) with our config on its command line.
    fn is_ours(&self, pid: u32) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let want = self.config.to_string_lossy();
        cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // The process serving the command socket now, in case an upgrade's answer was lost.
        if let Some((0, out, _)) = try_ctl(&self.socket, "show info", DROP_CTL) {
            if let Some(pid) = field(&out, "pid").and_then(|v| v.parse().ok()) {
                self.remember(pid);
            }
        }
        for &pid in &self.pids {
            if self.is_ours(pid) {
                // SAFETY: kill(2) on a PID whose command line names this test's config file:
                // a daemon this test started (or one of its upgrades started).
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// `shardgate ctl` with a time bound that never panics (for `Drop`): None on a timeout.
fn try_ctl(socket: &Path, cmd: &str, timeout: Duration) -> Option<(i32, String, String)> {
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return Some((st.code().unwrap_or(-1), out, String::new()));
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The value of `key: value` in a `show info` / `show stats` answer.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn show_info(p: &Proxy) -> String {
    let (code, out) = p.ctl("show info");
    assert_eq!(code, 0, "show info: {out}");
    out
}

fn stat(p: &Proxy, key: &str) -> u64 {
    let (code, out) = p.ctl("show stats");
    assert_eq!(code, 0, "show stats: {out}");
    field(&out, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}: N` in show stats:\n{out}"))
}

/// Runs `upgrade` (with `args`), expects `ok upgraded: pid N serves; pid M hands over ...`
/// with M the process that served before; remembers N and returns it.
#[track_caller]
fn upgrade(p: &Proxy, d: &mut Daemons, args: &str, old: u32) -> u32 {
    let cmd = format!("upgrade {args}");
    let (code, out, err) = p.ctl_full(cmd.trim());
    let new = parse_upgraded(&out);
    if let Some(pid) = new {
        d.remember(pid);
    }
    assert_eq!(code, 0, "{cmd}: exit {code}\n{out}{err}");
    let new = new.unwrap_or_else(|| panic!("{cmd}: unexpected answer {out:?}"));
    assert!(
        out.contains(&format!("; pid {old} hands over")),
        "{cmd}: expected pid {old} to hand over: {out:?}"
    );
    assert_ne!(new, old, "{cmd}: the new process has the old pid: {out:?}");
    new
}

/// The new pid of an `ok upgraded: pid N serves; ...` answer.
fn parse_upgraded(out: &str) -> Option<u32> {
    out.strip_prefix("ok upgraded: pid ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Polls `show info` until the command socket is served by `pid` (the new process serves it
/// as soon as the old one answered the upgrade, but the poll costs nothing).
#[track_caller]
fn wait_serving_pid(p: &Proxy, pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = show_info(p);
        if field(&out, "pid") == Some(&pid.to_string()) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "show info still from another process 10s after the upgrade to pid {pid}:\n{out}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[track_caller]
fn wait_gone(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still running {within:?} after it was replaced"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
#[track_caller]
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn proxy_for(backend: &Backend) -> Proxy {
    single_pool(backend.addr_string(), 2, "", "", "")
}

fn get(path: &str) -> Vec<u8> {
    req("GET", path, "upgrade.test", &[], b"")
}

/// A one-shot request on a new connection, answered by the backend.
#[track_caller]
fn assert_serves(p: &Proxy, backend: &Backend) {
    let mut c = Conn::connect(p.addr("web"));
    c.send(&get("/"));
    let r = c.try_read_response().unwrap_or_else(|e| {
        let (_, stats) = p.ctl("show stats");
        let (_, info) = p.ctl("show info");
        // A connection left in a listener's backlog shows as Recv-Q > 0 on a LISTEN line.
        let port = format!(":{} ", p.port("web"));
        let ss = Command::new("ss")
            .arg("-tanp")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ss: Vec<&str> = ss.lines().filter(|l| l.contains(&port)).collect();
        panic!(
            "a request on a new connection: {e}\n--- show info ---\n{info}--- show stats ---\n\
             {stats}--- ss ---\n{}",
            ss.join("\n")
        )
    });
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.backend(), backend.name, "{}", r.summary());
}

/// A new connection after an upgrade is answered at once. (These tests found connections left
/// in a shared listener's backlog with no accept woken for them under io_uring: the wakeup
/// went to the old process's accept, cancelled just then. Each shard now also takes what waits
/// in its backlogs on its 20 ms tick; a stall here is that bug back.)
#[track_caller]
fn assert_serves_after_upgrade(p: &Proxy, backend: &Backend) {
    for _ in 0..20 {
        let mut c = Conn::connect(p.addr("web"));
        c.set_read_timeout(Duration::from_secs(2));
        c.send(&get("/"));
        match c.try_read_response() {
            Ok(r) => {
                assert_eq!(r.status, 200, "{}", r.summary());
                assert_eq!(r.backend(), backend.name, "{}", r.summary());
            }
            Err(e) => panic!("a new connection after the upgrade got no answer within 2 s: {e}"),
        }
    }
}

#[test]
fn five_upgrades_under_load_lose_nothing() {
    let backend = Backend::start("app");
    let p = proxy_for(&backend);
    let mut d = Daemons::new(&p);
    let url = format!("http://{}/", p.addr("web"));
    let kept_json = p.dir.join("keepalive.json");
    let close_json = p.dir.join("close.json");

    let kept = spawn_loadgen(
        &["http", "-c", "100", "-R", "1500", "-d", "12s"],
        kept_json,
        url.clone(),
    );
    let closing = spawn_loadgen(
        &["http", "--close", "-c", "4", "-R", "100", "-d", "12s"],
        close_json,
        url,
    );

    let mut pid = p.pid();
    let mut requests = 0u64;
    let mut took = Vec::new();
    for i in 1..=5u64 {
        // Pacing, not synchronisation: the load runs between upgrades.
        thread::sleep(Duration::from_millis(1500));
        let t = Instant::now();
        let new = upgrade(&p, &mut d, "", pid);
        took.push(t.elapsed());
        let info = wait_serving_pid(&p, new);
        assert_eq!(field(&info, "upgrades"), Some(&*i.to_string()), "{info}");
        assert_eq!(
            field(&info, "previous_pid"),
            Some(&*pid.to_string()),
            "{info}"
        );
        let now = stat(&p, "requests");
        assert!(
            now >= requests,
            "requests went down from {requests} to {now} across upgrade {i}"
        );
        println!(
            "upgrade {i}: pid {pid} -> {new} in {:?}; requests {now}",
            took[i as usize - 1]
        );
        requests = now;
        pid = new;
    }

    let kept = kept.join().expect("keep-alive loadgen");
    let closing = closing.join().expect("--close loadgen");
    for (name, json) in [("keep-alive", &kept), ("--close", &closing)] {
        println!(
            "loadgen {name}: responses {} error_total {} failed_requests {} non_success {} \
             unsent {} unfinished {} connections_opened {} connect_attempts {}",
            json_num(json, "responses"),
            json_num(json, "error_total"),
            json_num(json, "failed_requests"),
            json_num(json, "non_success"),
            json_num(json, "unsent"),
            json_num(json, "unfinished"),
            json_num(json, "connections_opened"),
            json_num(json, "connect_attempts"),
        );
    }
    for (name, json) in [("keep-alive", &kept), ("--close", &closing)] {
        for key in ["error_total", "failed_requests", "non_success", "unsent"] {
            assert_eq!(json_num(json, key), 0, "{name} run: {key}\n{json}");
        }
    }
    assert_eq!(json_num(&kept, "connections_opened"), 100, "{kept}");
    assert_eq!(json_num(&kept, "connect_attempts"), 100, "{kept}");

    // Every request either run sent was counted once, across five processes.
    let sent = json_num(&kept, "responses") + json_num(&closing, "responses");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted = stat(&p, "requests");
        if counted == sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "show stats requests {counted}, loadgen got {sent} responses (10 s after the load)"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let adopted = stat(&p, "connections.adopted");
    assert!(adopted > 0, "no connection was handed over");
    println!(
        "requests counted {sent} = responses {sent}; connections.adopted {adopted}; backend requests {}",
        backend.requests()
    );
    // The replaced processes end once their connections are handed over.
    for &old in &d.pids[..d.pids.len() - 1] {
        wait_gone(old, Duration::from_secs(10));
    }
}

#[test]
fn a_request_in_flight_during_an_upgrade_completes_and_its_connection_moves() {
    const DELAY: Duration = Duration::from_millis(1000);
    let backend = Backend::start_with(
        "slow",
        BackendOpts {
            delay: DELAY,
            ..Default::default()
        },
    );
    let mut p = proxy_for(&backend);
    let mut d = Daemons::new(&p);
    let old = p.pid();

    let mut c = Conn::connect(p.addr("web"));
    let sent = Instant::now();
    c.send(&get("/first"));
    wait_for(
        "the request reaches the backend",
        Duration::from_secs(5),
        || backend.requests() == 1,
    );
    let new = upgrade(&p, &mut d, "", old);
    assert!(
        sent.elapsed() < DELAY,
        "the upgrade took longer than the backend's delay: the request was not in flight"
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("x-target"), Some("/first"), "{}", r.summary());
    assert_eq!(r.body_str(), "slow");

    // The same socket, now the new process's.
    c.send(&get("/second"));
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("x-target"), Some("/second"), "{}", r.summary());
    wait_serving_pid(&p, new);
    assert!(stat(&p, "connections.adopted") >= 1);
    assert_eq!(backend.requests(), 2);

    // The old process ends cleanly once its connection moved.
    let st = p.wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "old daemon (pid {old}) exit: {st:?}"
    );
    assert_serves_after_upgrade(&p, &backend);
}

#[test]
fn a_pipelined_request_already_read_is_served_before_the_handover() {
    const DELAY: Duration = Duration::from_millis(1000);
    let backend = Backend::start_with(
        "slow",
        BackendOpts {
            delay: DELAY,
            ..Default::default()
        },
    );
    let p = proxy_for(&backend);
    let mut d = Daemons::new(&p);
    let old = p.pid();

    let mut c = Conn::connect(p.addr("web"));
    let mut both = get("/one");
    both.extend(get("/two"));
    let sent = Instant::now();
    c.send(&both);
    wait_for(
        "the first request reaches the backend",
        Duration::from_secs(5),
        || backend.requests() == 1,
    );
    let new = upgrade(&p, &mut d, "", old);
    assert!(
        sent.elapsed() < DELAY,
        "the upgrade took longer than the backend's delay: the request was not in flight"
    );
    for path in ["/one", "/two"] {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.header("x-target"), Some(path), "{}", r.summary());
    }
    // Then the connection moves: a third request on it is the new process's.
    c.send(&get("/three"));
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("x-target"), Some("/three"), "{}", r.summary());
    wait_serving_pid(&p, new);
    assert!(stat(&p, "connections.adopted") >= 1);
    assert_eq!(stat(&p, "requests"), 3);
    wait_gone(old, Duration::from_secs(10));
}

#[test]
fn an_upgrade_with_a_bad_config_is_refused_and_the_daemon_serves_on() {
    let backend = Backend::start("app");
    let p = proxy_for(&backend);
    let mut d = Daemons::new(&p);
    let pid = p.pid();
    let good = std::fs::read_to_string(&p.config_path).unwrap();
    let bad = good.replacen("[daemon]\n", "[daemon]\nno_such_key = 1\n", 1);
    assert_ne!(bad, good);
    std::fs::write(&p.config_path, &bad).unwrap();

    let (code, out, err) = p.ctl_full("upgrade");
    assert_eq!(code, 1, "upgrade with a bad config: {out}{err}");
    assert!(
        out.starts_with("error: upgrade: the new process refused to start:")
            && out.contains("no_such_key"),
        "the error names the key: {out:?}"
    );
    let info = show_info(&p);
    assert_eq!(field(&info, "pid"), Some(&*pid.to_string()), "{info}");
    assert_eq!(field(&info, "upgrades"), Some("0"), "{info}");
    assert_serves(&p, &backend);
    let mut c = Conn::connect(p.addr("web"));
    for _ in 0..3 {
        let r = c.get("/", "upgrade.test");
        assert_eq!(r.status, 200, "{}", r.summary());
    }

    std::fs::write(&p.config_path, &good).unwrap();
    // An operator's weight carries over to the new process.
    let (code, out) = p.ctl("set server app/app weight 7");
    assert_eq!(code, 0, "{out}");
    let new = upgrade(&p, &mut d, "", pid);
    let info = wait_serving_pid(&p, new);
    assert_eq!(field(&info, "upgrades"), Some("1"), "{info}");
    let (_, servers) = p.ctl("show servers");
    let weight = servers
        .lines()
        .find(|l| l.starts_with("app app "))
        .and_then(|l| l.split(' ').nth(8));
    assert_eq!(weight, Some("7"), "{servers}");
    assert_serves_after_upgrade(&p, &backend);
    // The keep-alive connection opened before goes on with the new process.
    let r = c.get("/", "upgrade.test");
    assert_eq!(r.status, 200, "{}", r.summary());
    wait_for(
        "the keep-alive connection is adopted",
        Duration::from_secs(5),
        || stat(&p, "connections.adopted") >= 1,
    );
}

#[test]
fn an_upgrade_to_a_missing_binary_is_refused() {
    let backend = Backend::start("app");
    let p = proxy_for(&backend);
    let mut d = Daemons::new(&p);
    let pid = p.pid();

    let (code, out, err) = p.ctl_full("upgrade --binary /nonexistent/shardgate");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("error: upgrade: cannot start /nonexistent/shardgate"),
        "{out:?}"
    );
    let info = show_info(&p);
    assert_eq!(field(&info, "pid"), Some(&*pid.to_string()), "{info}");
    assert_eq!(field(&info, "upgrades"), Some("0"), "{info}");
    assert_serves(&p, &backend);

    // A second upgrade while one runs is refused. The first one's "binary" is a script that
    // waits before it becomes the real one, so the first stays running long enough.
    let slow = p.dir.join("slow-shardgate.sh");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nsleep 1\nexec '{}' \"$@\"\n",
            Path::new(BIN).display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&slow).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&slow, perms).unwrap();

    let socket = Arc::new(p.socket.clone());
    let first = {
        let slow = slow.display().to_string();
        let socket = socket.clone();
        thread::spawn(move || common::proxy::ctl_at(&socket, &format!("upgrade --binary {slow}")))
    };
    wait_for("the first upgrade starts", Duration::from_secs(5), || {
        p.log().contains("upgrade: new process started")
    });
    let (code, out) = p.ctl("upgrade");
    assert_eq!(code, 1, "a second concurrent upgrade: {out}");
    assert!(out.contains("an upgrade is already running"), "{out:?}");

    let (code, out, err) = first.join().expect("first upgrade");
    if let Some(new) = parse_upgraded(&out) {
        d.remember(new);
    }
    assert_eq!(code, 0, "the first upgrade: {out}{err}");
    let new = parse_upgraded(&out).unwrap();
    let info = wait_serving_pid(&p, new);
    assert_eq!(field(&info, "upgrades"), Some("1"), "{info}");
    assert_serves_after_upgrade(&p, &backend);
}
