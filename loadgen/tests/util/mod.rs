//! Helpers for loadgen's end-to-end tests: run the real binary with a deadline, start
//! `loadgen serve` on port 0 and read its `/__stats`, stop what we started by PID.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

/// Heavy or timing-sensitive tests take this lock so they do not share the two cores.
static HEAVY: Mutex<()> = Mutex::new(());

pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs loadgen with `args`, killing it (by PID) if it outlives `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    wait_bounded(child, limit)
}

pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "loadgen ran longer than {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs loadgen expecting success and a JSON report; returns the parsed report.
pub fn run_json(args: &[&str], limit: Duration) -> serde_json::Value {
    let dir = tempdir();
    let path = format!("{dir}/report.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", &path]);
    let out = run(&all, limit);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let doc = std::fs::read_to_string(&path).expect("json report written");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&doc).expect("valid json")
}

pub fn tempdir() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("loadgen-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tempdir");
    d.to_string_lossy().into_owned()
}

/// A `loadgen serve` child on a free loopback port; stopped with SIGTERM on drop.
pub struct Serve {
    pub child: Option<Child>,
    pub port: u16,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn loadgen serve");
        let mut line = String::new();
        let stdout = child.stdout.as_mut().expect("stdout");
        // Read byte by byte so nothing past the first line is swallowed by a buffer.
        let mut byte = [0u8; 1];
        while !line.ends_with('\n') {
            match stdout.read(&mut byte) {
                Ok(1) => line.push(byte[0] as char),
                _ => panic!("serve exited before announcing its port: {line:?}"),
            }
        }
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("address in banner");
        let port = addr.rsplit(':').next().unwrap().parse().expect("port");
        Serve {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Reads `/__stats` (its own connection is counted in `connections`, not in `requests`).
    pub fn stats(&self) -> serde_json::Value {
        let body = http_get(self.port, "/__stats");
        serde_json::from_str(body.split("\r\n\r\n").nth(1).expect("body")).expect("stats json")
    }

    /// Stops the server with SIGTERM and returns what it printed after the banner.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        signal(child.id() as i32, libc::SIGTERM);
        let mut rest = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_to_string(&mut rest);
        let status = child.wait().expect("wait");
        assert!(status.success(), "serve exited with {status}");
        rest
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGCONT);
            signal(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe { libc::kill(pid, sig) };
}

/// One raw HTTP/1.1 GET with `Connection: close`; returns the whole response.
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn lines_of(r: impl Read) -> Vec<String> {
    BufReader::new(r).lines().map_while(Result::ok).collect()
}
