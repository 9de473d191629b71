//! Looking at a running daemon from outside, to check that a fault harmed nothing it should
//! not have: its `show stats` counters, its open descriptors sorted by what they are (client
//! sockets, upstream sockets, pipes, the rest), and its resident memory.
//!
//! Descriptors are classified from `/proc/PID/fd` (each socket's inode) joined with
//! `/proc/net/tcp{,6}` (each inode's ports and state): an upstream socket is one whose remote
//! port is a backend's, a client socket one whose local port is a frontend's and that is not
//! listening. That lets a test demand that everything except the pooled upstream connections
//! and the splice pipe pool comes back exactly, and bound those two by their configured sizes.

use super::proxy::Proxy;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every `key: value` line of `show stats`, values as text (`memory.level: normal`).
pub fn stats_text(p: &Proxy) -> HashMap<String, String> {
    let (code, out) = p.ctl("show stats");
    assert_eq!(code, 0, "show stats failed: {out}");
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `key: N` lines of `show stats`.
pub fn stats(p: &Proxy) -> HashMap<String, i64> {
    stats_text(p)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// Polls `show stats` until `pred` holds, at most `limit`; returns the last snapshot.
#[track_caller]
pub fn stats_until(
    p: &Proxy,
    limit: Duration,
    what: &str,
    pred: impl Fn(&HashMap<String, i64>) -> bool,
) -> HashMap<String, i64> {
    let (s, ok) = poll_until(limit, || stats(p), pred);
    assert!(
        ok,
        "show stats never reached {what} within {limit:?}: {s:?}"
    );
    s
}

/// One counter of a `show stats` snapshot (panics naming the key when it is missing).
pub fn stat(s: &HashMap<String, i64>, key: &str) -> i64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("`show stats` has no line `{key}: N`: {s:?}"))
}

/// A process's open descriptors, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdCensus {
    pub total: usize,
    /// Pipe ends (the splice pipe pool).
    pub pipes: usize,
    /// TCP sockets whose remote port is one of the backend ports given, by that port.
    pub upstream: HashMap<u16, usize>,
    /// TCP sockets whose local port is one of the frontend ports given and that do not listen.
    pub client: usize,
}

impl FdCensus {
    pub fn upstream_total(&self) -> usize {
        self.upstream.values().sum()
    }

    /// Upstream sockets to one backend port.
    pub fn upstream_to(&self, port: u16) -> usize {
        self.upstream.get(&port).copied().unwrap_or(0)
    }

    /// Everything but pooled upstream connections and pipes: listeners, client connections,
    /// the ring, the control socket. After a fault this must come back exactly.
    pub fn fixed(&self) -> usize {
        self.total - self.pipes - self.upstream_total()
    }
}

/// Socket inode → (local port, remote port, TCP state as in /proc/net/tcp: 0A is LISTEN).
fn tcp_table() -> HashMap<u64, (u16, u16, u8)> {
    let mut out = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            let (Some(local), Some(remote), Ok(state), Ok(inode)) = (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16),
                f[9].parse::<u64>(),
            ) else {
                continue;
            };
            out.insert(inode, (local, remote, state));
        }
    }
    out
}

/// Counts `pid`'s descriptors by kind (see [`FdCensus`]).
pub fn fd_census(pid: u32, frontend_ports: &[u16], backend_ports: &[u16]) -> FdCensus {
    let mut c = FdCensus::default();
    let mut sockets = Vec::new();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"));
    for e in dir.flatten() {
        // A descriptor closed between the listing and the readlink is simply not counted.
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        c.total += 1;
        let t = target.to_string_lossy();
        if t.starts_with("pipe:") {
            c.pipes += 1;
        } else if let Some(inode) = t
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            sockets.push(inode);
        }
    }
    let table = tcp_table();
    for inode in sockets {
        let Some(&(local, remote, state)) = table.get(&inode) else {
            continue;
        };
        if backend_ports.contains(&remote) {
            *c.upstream.entry(remote).or_insert(0) += 1;
        } else if frontend_ports.contains(&local) && state != 0x0A {
            c.client += 1;
        }
    }
    c
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Polls `probe` every 50 ms until `done` holds or `limit` passes; returns the last value and
/// whether `done` held.
pub fn poll_until<T>(
    limit: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> (T, bool) {
    let deadline = Instant::now() + limit;
    loop {
        let v = probe();
        if done(&v) {
            return (v, true);
        }
        if Instant::now() > deadline {
            return (v, false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
