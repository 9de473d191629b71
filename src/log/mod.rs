//! The access log and the traffic log (`docs/logs.md` has the formats and the operations).
//!
//! - [`access`]: access log formats (`combined`, `json`, custom `$field` strings) and what a
//!   finished request gives them ([`access::Finished`], [`access::Captured`]).
//! - `shard`: each shard formats its lines into its own buffers (thread-local, no lock) and
//!   hands full ones to the writer with a non-blocking send: when the writer is behind, lines
//!   are counted as dropped (`access_log.dropped` in `show stats`) and requests never wait.
//! - `writer`: one thread per process appends the buffers to their files; reopened on
//!   SIGUSR1 and `ctl 'reopen logs'` (logrotate).
//! - `traffic`: one thread per process appends per-site and per-user traffic each
//!   `log_statistics_period`, as differences of the shards' cumulative counters.
//!
//! Neither thread ever runs on a shard; the request path pays nothing for a frontend without
//! an access log (one `Option` check per exchange).

pub mod access;
mod shard;
pub(crate) mod traffic;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{AccessLog, Config};
use crate::proto::http::RequestHead;
use crate::proxy::http::done::Done;
use crate::proxy::{ShardCtx, ShardView};
use crate::shared::Shared;

pub use access::{Captured, Finished, Format};

/// Full buffers waiting for the writer, at most (with 32 KiB buffers: about 1 MiB).
const CHANNEL_BATCHES: usize = 32;
/// How long `reopen logs` waits for the writer to have reopened.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// How long a stopping daemon waits for the writer to write what it was given.
const WRITER_STOP_WAIT: Duration = Duration::from_secs(3);
/// How long a stopping daemon waits for the traffic log's last period.
const TRAFFIC_STOP_WAIT: Duration = Duration::from_secs(5);

/// Lines the writer thread could not write (file not openable, write errors); written by
/// that thread only. Process-wide like the thread (the shards count theirs in their stats).
static WRITER_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines the writer thread dropped; `show stats` adds the shards' own.
pub fn writer_dropped() -> u64 {
    WRITER_DROPPED.load(Ordering::Relaxed)
}

/// Whole lines for one file, from one shard.
pub(crate) struct Batch {
    path: Arc<Path>,
    bytes: Vec<u8>,
    lines: u64,
}

/// The logs' process-wide state (in `Shared`).
pub struct Logs {
    tx: Mutex<SyncSender<Batch>>,
    rx: Mutex<Option<Receiver<Batch>>>,
    reopen_asked: AtomicU64,
    reopen_done: AtomicU64,
    stop_writer: AtomicBool,
    writer_done: AtomicBool,
    stop_traffic: AtomicBool,
    traffic_done: AtomicBool,
    /// The latest complete traffic period, for `show traffic`.
    last_period: Mutex<Option<Arc<traffic::Period>>>,
}

impl Default for Logs {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_BATCHES);
        Logs {
            tx: Mutex::new(tx),
            rx: Mutex::new(Some(rx)),
            reopen_asked: AtomicU64::new(0),
            reopen_done: AtomicU64::new(0),
            stop_writer: AtomicBool::new(false),
            writer_done: AtomicBool::new(false),
            stop_traffic: AtomicBool::new(false),
            traffic_done: AtomicBool::new(false),
            last_period: Mutex::new(None),
        }
    }
}

impl Logs {
    /// A sender for one shard (taken once per shard, at its first line).
    fn sender(&self) -> SyncSender<Batch> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The latest complete traffic period.
    pub fn last_period(&self) -> Option<Arc<traffic::Period>> {
        self.last_period
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Can every log file of `config` be opened for appending? Called at start, so that a wrong
/// path stops the daemon with a clear message instead of dropping every line.
pub(crate) fn check_paths(config: &Config) -> Result<(), String> {
    let access = config.http.iter().filter_map(|f| {
        f.access_log.as_ref().map(|a| {
            (
                format!("http '{}' access_log", f.name),
                a.path.to_path_buf(),
            )
        })
    });
    let traffic = config
        .daemon
        .traffic_log
        .as_ref()
        .map(|t| ("daemon.traffic_log".to_string(), t.path.clone()));
    for (what, path) in access.chain(traffic) {
        writer::open_append(&path)
            .map_err(|e| format!("cannot open {what} {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Start the writer and traffic threads.
pub(crate) fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
    let logs = shared.clone();
    if let Some(rx) = shared
        .logs
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        let s = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer::run(rx, s))?;
    }
    std::thread::Builder::new()
        .name("traffic-log".into())
        .spawn(move || traffic::run(logs))?;
    Ok(())
}

/// Reopen every log file (SIGUSR1, `reopen logs`): the writer's now; the traffic log is
/// opened for each period anyway. Waits until the writer has.
pub(crate) fn reopen(shared: &Shared) -> Result<String, String> {
    let logs = &shared.logs;
    let asked = logs.reopen_asked.fetch_add(1, Ordering::SeqCst) + 1;
    let deadline = Instant::now() + REOPEN_WAIT;
    while logs.reopen_done.load(Ordering::SeqCst) < asked {
        if Instant::now() > deadline {
            return Err(
                "the access log writer did not reopen within 2s (is it blocked writing?); it will when it can"
                    .into(),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::info!(event = "logs_reopened", "logs reopened");
    Ok("reopened\n".into())
}

/// At stop, after the shards ended (their last buffers are sent): let the writer write what
/// it has, then the traffic log its last, partial period. Both waits are bounded.
pub(crate) fn finish(shared: &Shared) {
    let logs = &shared.logs;
    logs.stop_writer.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + WRITER_STOP_WAIT;
    while !logs.writer_done.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !logs.writer_done.load(Ordering::SeqCst) {
        tracing::warn!(
            event = "access_log_writer_stuck",
            "the access log writer did not finish (blocked writing?); its last lines are lost"
        );
    }
    logs.stop_traffic.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + TRAFFIC_STOP_WAIT;
    while !logs.traffic_done.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// At the start of an exchange on a frontend with an access log: the head's parts the log
/// needs, if this request is one to log (sampling).
pub(crate) fn capture(
    ctx: &ShardCtx,
    conf: &AccessLog,
    frontend: &str,
    buf: &[u8],
    head: &RequestHead,
) -> Option<Captured> {
    shard::sampled(ctx, conf, frontend).then(|| Captured::of_head(buf, head))
}

/// A head that did not parse (answered 4xx/5xx before any exchange): its first line.
pub(crate) fn capture_unparsed(
    ctx: &ShardCtx,
    conf: &AccessLog,
    frontend: &str,
    buf: &[u8],
) -> Option<Captured> {
    shard::sampled(ctx, conf, frontend).then(|| Captured::of_unparsed(buf))
}

/// A request answered `status` before any exchange (a head that did not parse, too large, too
/// slow, or refused near the memory ceiling); `buf` holds what was read of it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn refused(
    ctx: &ShardCtx,
    conf: &AccessLog,
    frontend: &str,
    client: std::net::IpAddr,
    buf: &[u8],
    status: u16,
    head_request: bool,
) {
    let Some(c) = capture_unparsed(ctx, conf, frontend, buf) else {
        return;
    };
    let f = Finished {
        client,
        frontend,
        site: b"-",
        request_time: Duration::ZERO,
        first_byte: None,
        status,
        bytes_in: buf.len() as u64,
        bytes_out: crate::proto::http::answers::canned_for(status, head_request).len() as u64,
        pool: None,
        server: None,
        server_addr: None,
        sticky: None,
        retries: 0,
        termination: match status {
            408 => "client_timeout",
            503 => "overloaded",
            _ => "bad_request",
        },
    };
    shard::write(ctx, conf, &f, &c);
}

/// The line for a finished exchange `d` (from `Conn::finish`, the one place every exchange
/// ends) whose head was captured by [`capture`]; `view` is the view the exchange ran on (its
/// pool and server indexes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn exchange(
    ctx: &ShardCtx,
    conf: &AccessLog,
    frontend: &str,
    client: std::net::IpAddr,
    site: &[u8],
    view: &ShardView,
    c: &Captured,
    d: &Done,
) {
    let pool = d.pool.and_then(|p| view.conns.get(p));
    let server = |i: Option<usize>| pool.zip(i).and_then(|(p, i)| p.shared.servers.get(i));
    let answered = server(d.server);
    let f = Finished {
        client,
        frontend,
        site,
        request_time: d.started.elapsed(),
        first_byte: d.first_byte,
        status: d.status,
        bytes_in: d.bytes_in,
        bytes_out: d.bytes_out,
        pool: pool.map(|p| p.conf.name.as_str()),
        server: answered.map(|s| s.name.as_str()),
        server_addr: answered.map(|s| s.addr),
        sticky: server(d.sticky).map(|s| s.name.as_str()),
        retries: u32::from(d.retries),
        termination: d.reason,
    };
    shard::write(ctx, conf, &f, c);
}

/// `show traffic http|mysql`: the latest complete period, when the traffic log is on.
pub(crate) fn show_period(shared: &Shared, kind: traffic::Kind) -> String {
    if shared.current().config.daemon.traffic_log.is_none() {
        return String::new();
    }
    match shared.logs.last_period() {
        Some(p) => p.show(kind),
        None => "last_period none\n".into(),
    }
}

/// `show traffic site`: the latest complete period's site lines, when the traffic log is on.
pub(crate) fn show_site_period(shared: &Shared) -> String {
    if shared.current().config.daemon.traffic_log.is_none() {
        return String::new();
    }
    match shared.logs.last_period() {
        Some(p) => p.show_sites(),
        None => "last_period none\n".into(),
    }
}
