//! A shard's side of the access log: per file, a buffer the shard formats lines into; full
//! buffers go to the writer thread over the bounded channel with `try_send`, never a blocking
//! send, so a request never waits for the disk. When the channel is full (the writer is behind:
//! a slow disk, a pipe nobody reads) the buffer's lines are counted in the shard's
//! `access_log_dropped` and thrown away.
//!
//! The state is thread-local: a shard is one thread, and the request path then needs neither
//! a field in the protocol's shard state nor a lock. It is made on the first line a shard
//! logs, which also starts the shard's flush task (a quiet site's lines are sent within
//! [`FLUSH_EVERY`]); the last buffers are sent when the shard's thread ends (at stop), waiting
//! a little for room then, since nothing else is waiting.
//!
//! Sampling (`sample = 0.1`) is deterministic and per shard and frontend: an accumulator
//! gains `sample` per request and a request is logged when it reaches 1 (then loses 1), so
//! exactly every 10th request of a shard is logged, and 0.3 logs 3 of every 10. No random
//! numbers, no shared state.

use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::access::{format_line, Captured, Clock, Finished};
use super::Batch;
use crate::balance::Padded;
use crate::config::AccessLog;
use crate::proxy::ShardCtx;
use crate::stats::ShardStats;

/// A buffer is sent when it holds this much.
pub const BUF_BYTES: usize = 32 * 1024;
/// A buffer holding lines is sent at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How long a stopping shard waits for room in the channel for its last buffers.
const LAST_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    static LOCAL: RefCell<Option<ShardLog>> = const { RefCell::new(None) };
}

struct FileBuf {
    path: Arc<Path>,
    bytes: Vec<u8>,
    lines: u64,
}

struct ShardLog {
    tx: SyncSender<Batch>,
    stats: Arc<Padded<ShardStats>>,
    files: Vec<FileBuf>,
    /// Per frontend name: the sampling accumulator.
    samples: Vec<(Box<str>, f64)>,
    clock: Clock,
}

impl ShardLog {
    fn buf(&mut self, path: &Arc<Path>) -> &mut FileBuf {
        let i = match self
            .files
            .iter()
            .position(|f| Arc::ptr_eq(&f.path, path) || f.path == *path)
        {
            Some(i) => i,
            None => {
                self.files.push(FileBuf {
                    path: path.clone(),
                    bytes: Vec::with_capacity(BUF_BYTES + 1024),
                    lines: 0,
                });
                self.files.len() - 1
            }
        };
        &mut self.files[i]
    }

    /// Send buffer `i` to the writer (or count its lines as dropped).
    fn send(&mut self, i: usize, wait: Option<Instant>) {
        let f = &mut self.files[i];
        if f.lines == 0 {
            return;
        }
        let mut batch = Batch {
            path: f.path.clone(),
            bytes: std::mem::replace(&mut f.bytes, Vec::with_capacity(BUF_BYTES + 1024)),
            lines: std::mem::take(&mut f.lines),
        };
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return,
                Err(TrySendError::Full(b)) if wait.is_some_and(|d| Instant::now() < d) => {
                    batch = b;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                    self.stats.0.access_log_dropped.add(b.lines);
                    return;
                }
            }
        }
    }

    fn flush_all(&mut self, wait: Option<Instant>) {
        for i in 0..self.files.len() {
            self.send(i, wait);
        }
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.flush_all(Some(Instant::now() + LAST_WAIT));
    }
}

fn with<R>(ctx: &ShardCtx, f: impl FnOnce(&mut ShardLog) -> R) -> R {
    LOCAL.with(|cell| {
        let mut local = cell.borrow_mut();
        let log = local.get_or_insert_with(|| {
            crate::rt::spawn(flusher());
            ShardLog {
                tx: ctx.shared.logs.sender(),
                stats: ctx.shared.stats[ctx.id()].clone(),
                files: Vec::new(),
                samples: Vec::new(),
                clock: Clock::default(),
            }
        });
        f(log)
    })
}

/// Every [`FLUSH_EVERY`], send what the shard's buffers hold.
async fn flusher() {
    loop {
        crate::rt::sleep(FLUSH_EVERY).await;
        LOCAL.with(|cell| {
            if let Some(log) = cell.borrow_mut().as_mut() {
                log.flush_all(None);
            }
        });
    }
}

/// Is this request of `frontend` one to log? (See the module head for how sampling works.)
pub fn sampled(ctx: &ShardCtx, conf: &AccessLog, frontend: &str) -> bool {
    if conf.sample >= 1.0 {
        return true;
    }
    with(ctx, |log| {
        let i = match log.samples.iter().position(|(n, _)| &**n == frontend) {
            Some(i) => i,
            None => {
                log.samples.push((frontend.into(), 0.0));
                log.samples.len() - 1
            }
        };
        let acc = &mut log.samples[i].1;
        *acc += conf.sample;
        if *acc >= 1.0 - 1e-9 {
            *acc -= 1.0;
            true
        } else {
            false
        }
    })
}

/// Format one line into the shard's buffer for `conf.path`, sending the buffer when full.
pub fn write(ctx: &ShardCtx, conf: &AccessLog, f: &Finished, c: &Captured) {
    with(ctx, |log| {
        let now = SystemTime::now();
        let mut clock = std::mem::take(&mut log.clock);
        let buf = log.buf(&conf.path);
        format_line(&conf.format, f, c, &mut clock, now, &mut buf.bytes);
        buf.lines += 1;
        let full = buf.bytes.len() >= BUF_BYTES;
        log.clock = clock;
        if full {
            if let Some(i) = log.files.iter().position(|b| b.bytes.len() >= BUF_BYTES) {
                log.send(i, None);
            }
        }
    })
}
