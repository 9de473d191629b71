//! The access log writer: one thread per process takes full buffers from the shards over the
//! bounded channel and appends them to their files (opened `O_APPEND`, so several processes
//! or a reopen never overwrite each other's lines; each buffer holds whole lines and goes out
//! in one `write_all`).
//!
//! Files are opened on first use and kept open. A reopen (SIGUSR1, `ctl 'reopen logs'`)
//! closes and opens again every file the writer has open, so after logrotate renamed a file
//! the next line goes to a new file at the configured path; lines written before the reopen
//! are in the renamed file, lines after it in the new one, and none is lost in between (they
//! wait in the shards' buffers and the channel).
//!
//! A file that cannot be opened or written makes the writer count the batch's lines in
//! `access_log.dropped` and log the error (at most once per 10 s).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::Batch;
use crate::shared::Shared;

/// How often the writer looks at its switches (reopen, stop) while no buffer comes.
const POLL: Duration = Duration::from_millis(50);

/// Open `path` for appending, creating it (mode 0640) if needed.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

struct Open {
    path: Arc<Path>,
    file: Option<File>,
    /// A write failed part-way (a full disk): the file may end inside a line, so the next
    /// write starts with a line end rather than glue its first line onto that half.
    cut: bool,
}

pub fn run(rx: Receiver<Batch>, shared: Arc<Shared>) {
    let logs = &shared.logs;
    let mut files: Vec<Open> = Vec::new();
    let errors = crate::rt::LogLimit::new();
    loop {
        let asked = logs.reopen_asked.load(Ordering::SeqCst);
        if asked != logs.reopen_done.load(Ordering::SeqCst) {
            for f in &mut files {
                f.file = None;
                match open_append(&f.path) {
                    Ok(file) => f.file = Some(file),
                    Err(e) => {
                        tracing::error!(event = "access_log_open_failed", path = %f.path.display(), error = %e, "access log: cannot reopen")
                    }
                }
            }
            tracing::info!(
                event = "access_logs_reopened",
                files = files.len(),
                "access logs reopened"
            );
            logs.reopen_done.store(asked, Ordering::SeqCst);
        }
        let batch = match rx.recv_timeout(POLL) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => {
                if logs.stop_writer.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let i = match files
            .iter()
            .position(|f| Arc::ptr_eq(&f.path, &batch.path) || f.path == batch.path)
        {
            Some(i) => i,
            None => {
                files.push(Open {
                    path: batch.path.clone(),
                    file: None,
                    cut: false,
                });
                files.len() - 1
            }
        };
        let f = &mut files[i];
        if f.file.is_none() {
            match open_append(&f.path) {
                Ok(file) => f.file = Some(file),
                Err(e) => {
                    if errors.allow().is_some() {
                        tracing::error!(event = "access_log_open_failed", path = %f.path.display(), error = %e, "access log: cannot open; lines dropped");
                    }
                    super::WRITER_DROPPED.fetch_add(batch.lines, Ordering::Relaxed);
                    continue;
                }
            }
        }
        if let Some(file) = f.file.as_mut() {
            let healed = !f.cut || file.write_all(b"\n").is_ok();
            let written = if healed {
                f.cut = false;
                file.write_all(&batch.bytes)
            } else {
                Err(std::io::Error::other(
                    "the line end after a cut write failed",
                ))
            };
            if let Err(e) = written {
                f.cut = true;
                if errors.allow().is_some() {
                    tracing::error!(event = "access_log_write_failed", path = %f.path.display(), error = %e, "access log: write failed; lines dropped");
                }
                super::WRITER_DROPPED.fetch_add(batch.lines, Ordering::Relaxed);
                // Opened again for the next batch (the file may have been removed).
                f.file = None;
            }
        }
    }
    logs.writer_done.store(true, Ordering::SeqCst);
}
