//! Binary upgrade (`shardgate ctl upgrade`): the running process starts the new binary and
//! hands it its listening sockets, then its idle keep-alive client connections and its counter
//! totals, so that no connection is refused or reset while the binary changes.
//!
//! - [`wire`]: the transport, a `SOCK_SEQPACKET` UNIX socket pair that carries small text
//!   messages and file descriptors (`SCM_RIGHTS`) between the two processes. It knows nothing
//!   of the proxy.
//! - [`totals`]: the counters carried over.
//!
//! The conversation, old process (O) to new (N), over the pair O made and N inherited:
//!
//! ```text
//!  O: spawn N --config FILE --upgrade-fd K
//!  N: config invalid ────────────────────────► failed reason=…   (O answers the error, serves on)
//!  O: listeners addr=… (fds) · control (fd) · counters · setup_done
//!  N: shards running on the same sockets ─────► ready pid=…
//!  O: stops accepting (N accepts on the same sockets: nothing queued is lost), closes its
//!     command socket, and as each keep-alive client connection goes idle (its read cancelled
//!     with nothing taken) ──────────────────────► conns fe=… peer=… (fds)
//!  N: serves each like a connection it accepted (the client keeps its socket)
//!  O: all connections gone or stop_timeout ───► counters (what O counted after the first
//!     totals) · final; O exits
//! ```
//!
//! MySQL sessions are not handed over: a session's state lives in the server connection and
//! the observer, and moving both between commands is not worth the risk of a session that
//! silently changes. They stay with the old process until they end, and idle ones are closed
//! between commands when three quarters of `stop_timeout` have passed.

pub mod totals;
pub mod wire;

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use totals::Totals;
use wire::Channel;

use crate::shared::{ShardMsg, Shared};

/// How long the new process gets to check its config and start serving.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Connections per `conns` message.
const BATCH: usize = 200;

/// A client connection the old process hands over.
pub struct Handed {
    fd: OwnedFd,
    frontend: String,
    peer: SocketAddr,
}

/// A connection the new process adopts, for a shard's inbox.
pub struct Adopted {
    pub stream: std::net::TcpStream,
    pub frontend: String,
    pub peer: SocketAddr,
}

/// The upgrade state of a process (in [`Shared`]).
#[derive(Default)]
pub struct State {
    /// A duplicate of every listening socket (the shards own the originals), to pass on.
    listen_fds: Mutex<Vec<(SocketAddr, OwnedFd)>>,
    /// A duplicate of the command socket's listener, and the path it is at (a reload that
    /// changes `daemon.control_socket` does not move it).
    control_fd: Mutex<Option<(OwnedFd, PathBuf)>>,
    /// Connections handed over by the shards, waiting for the sender thread.
    handed: Mutex<Vec<Handed>>,
    /// Totals to add to shard 0's counters when it starts (carried from the old process).
    pub seed: Mutex<Option<Totals>>,
    running: AtomicBool,
    /// Still receiving connections from the process this one replaced.
    adopting: AtomicBool,
    /// This process handed its sockets to a new one: it must not remove the command socket.
    pub replaced: AtomicBool,
    /// Upgrades since the process tree started, and the process this one replaced.
    pub upgrades: AtomicU64,
    pub previous_pid: AtomicU32,
    sender: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The binary this process was started from (resolved at start, before any upgrade
    /// replaced the file).
    pub binary: Mutex<Option<PathBuf>>,
}

/// A close-on-exec duplicate of a descriptor this process owns.
fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `fd` is open for the duration of this call (the caller owns it).
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

impl State {
    /// Keep a duplicate of a listening socket the shards got.
    pub fn register_listener(&self, addr: SocketAddr, fd: RawFd) {
        match dup(fd) {
            Ok(d) => self
                .listen_fds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((addr, d)),
            Err(e) => {
                tracing::warn!(event = "upgrade_listener_dup_failed", %addr, error = %e, "cannot keep a listener for upgrades")
            }
        }
    }

    /// Forget the listeners of addresses no longer listened on (their sockets close).
    pub fn forget_listeners(&self, keep: &[SocketAddr]) {
        self.listen_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _)| keep.contains(a));
    }

    pub fn register_control(&self, fd: RawFd, path: &std::path::Path) {
        if let Ok(d) = dup(fd) {
            *self.control_fd.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((d, path.to_path_buf()));
        }
    }
}

/// Called by a shard for an idle client connection while handing over: the socket goes to the
/// sender thread (a duplicate; the shard's own descriptor closes with the stream).
pub fn hand_over(shared: &Shared, client: crate::rt::TcpStream, frontend: &str, peer: SocketAddr) {
    match dup(client.as_raw_fd()) {
        Ok(fd) => shared
            .upgrade
            .handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Handed {
                fd,
                frontend: frontend.to_string(),
                peer,
            }),
        Err(e) => {
            tracing::warn!(event = "handover_failed", %peer, error = %e, "cannot hand a connection over; closing it")
        }
    }
    drop(client);
}

fn msg(kind: &str, fields: &[(String, String)]) -> Vec<u8> {
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    wire::encode(kind, &refs)
}

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("upgrade: {what}: {e}")
}

/// The old side of `upgrade [--binary PATH]`: start the new process, hand it the listeners,
/// and once it serves, hand over and drain. Returns the answer for the control socket.
pub fn start(shared: &Arc<Shared>, binary: Option<PathBuf>) -> Result<String, String> {
    let st = &shared.upgrade;
    if st.adopting.load(Ordering::SeqCst) {
        return Err(
            "the previous upgrade is still handing connections over to this process; try again when it is done"
                .into(),
        );
    }
    if st.running.swap(true, Ordering::SeqCst) {
        return Err("an upgrade is already running".into());
    }
    let result = start_inner(shared, binary);
    if result.is_err() {
        st.running.store(false, Ordering::SeqCst);
    }
    // The control socket names the command in its errors already (`error: upgrade: ...`).
    result.map_err(|e| match e.strip_prefix("upgrade: ") {
        Some(rest) => rest.to_string(),
        None => e,
    })
}

fn start_inner(shared: &Arc<Shared>, binary: Option<PathBuf>) -> Result<String, String> {
    let st = &shared.upgrade;
    // No reload or runtime change while the sockets and totals are handed over: the new
    // process must get every listener this one has.
    let _no_changes = shared.runtime.lock().unwrap_or_else(|e| e.into_inner());
    let gen = shared.current();
    let binary = binary
        .or_else(|| st.binary.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .ok_or("upgrade: the running binary's path is unknown; give --binary PATH")?;
    let (ours, theirs) = Channel::pair().map_err(|e| io_err("socket pair", e))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("--config")
        .arg(&gen.config.source)
        .arg("--upgrade-fd")
        .arg(their_fd.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only calls fcntl(2),
    // which is async-signal-safe: the inherited pair end loses close-on-exec there alone, so
    // no other child of this process can inherit it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("upgrade: cannot start {}: {e}", binary.display()))?;
    drop(theirs);
    let child_pid = child.id();
    tracing::info!(event = "upgrade_started", pid = child_pid, binary = %binary.display(), "upgrade: new process started");

    let setup = || -> std::io::Result<Totals> {
        let fds = st.listen_fds.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in fds.chunks(BATCH) {
            let fields: Vec<(String, String)> = chunk
                .iter()
                .map(|(a, _)| ("addr".into(), a.to_string()))
                .collect();
            let borrowed: Vec<BorrowedFd> = chunk.iter().map(|(_, f)| f.as_fd()).collect();
            ours.send(&msg("listeners", &fields), &borrowed)?;
        }
        drop(fds);
        if let Some((c, path)) = st
            .control_fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let path = path.display().to_string();
            ours.send(&msg("control", &[("path".into(), path)]), &[c.as_fd()])?;
        }
        let first = Totals::collect(shared);
        for piece in first.to_fields() {
            ours.send(&msg("counters", &piece), &[])?;
        }
        let fields = [
            (
                "upgrades".to_string(),
                (st.upgrades.load(Ordering::Relaxed) + 1).to_string(),
            ),
            ("pid".to_string(), std::process::id().to_string()),
        ];
        ours.send(&msg("setup_done", &fields), &[])?;
        Ok(first)
    };
    let first = match setup() {
        Ok(t) => t,
        Err(e) => {
            // A new process that refused its config may have closed the pair before we were
            // done sending: its reason is still in our queue.
            if let Some(why) = refusal(&ours, Duration::from_secs(1)) {
                let _ = child.wait();
                return Err(refused(&why));
            }
            kill(child_pid);
            let _ = child.wait();
            return Err(io_err("handing the listeners over", e));
        }
    };
    // Wait for the new process to serve, or to say why it cannot.
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ours.recv(Some(left)) {
            Ok(Some((m, _))) => match wire::decode(&m) {
                Ok((kind, _)) if kind == "ready" => break,
                Ok((kind, fields)) if kind == "failed" => {
                    let _ = child.wait();
                    return Err(refused(
                        field(&fields, "reason").unwrap_or("no reason given"),
                    ));
                }
                _ => continue,
            },
            // The new process closed its end with our setup messages unread (it refused its
            // config without reading them): the kernel reports that once, before the
            // messages it sent (its `failed`) and the end of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Ok(None) | Err(_) => {
                if Instant::now() >= deadline {
                    kill(child_pid);
                }
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                tracing::error!(event = "upgrade_failed", %status, "upgrade: the new process ended before serving; this one serves on");
                return Err(format!(
                    "upgrade: the new process ended before serving ({status}); see the log"
                ));
            }
        }
    }
    // The new process serves on the same sockets: stop here, hand over, drain.
    let stop_timeout = gen.config.daemon.stop_timeout;
    crate::notify::handed_over();
    st.replaced.store(true, Ordering::SeqCst);
    shared.life.control_closed.store(true, Ordering::SeqCst);
    shared.life.mysql_close_at_ms.store(
        crate::rt::now_ms() + (stop_timeout.as_millis() as u64) * 3 / 4,
        Ordering::SeqCst,
    );
    shared.life.handover.store(true, Ordering::SeqCst);
    shared.life.stopping.store(true, Ordering::SeqCst);
    tracing::info!(
        event = "upgrade_handover",
        pid = child_pid,
        "upgrade: the new process serves; handing over idle connections and draining"
    );
    let sender_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("upgrade-sender".into())
        .spawn(move || send_loop(&sender_shared, ours, first, child))
        .map_err(|e| io_err("cannot start the sender thread", e))?;
    *st.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(format!(
        "ok upgraded: pid {child_pid} serves; pid {} hands over its idle connections and exits within {stop_timeout:?}\n",
        std::process::id()
    ))
}

/// The answer (and log line) for a new process that refused to start.
fn refused(why: &str) -> String {
    tracing::error!(
        event = "upgrade_failed",
        reason = why,
        "upgrade: the new process refused to start; this one serves on"
    );
    format!("upgrade: the new process refused to start: {why}")
}

/// The reason of a `failed` message waiting on the channel, if one comes within `wait`.
fn refusal(ch: &Channel, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ch.recv(Some(left)) {
            Ok(Some((m, _))) => match wire::decode(&m) {
                Ok((kind, fields)) if kind == "failed" => {
                    return Some(field(&fields, "reason").unwrap_or("no reason given").into())
                }
                _ => continue,
            },
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

fn kill(pid: u32) {
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The old process's sender: hand over connections as the shards give them up, until every
/// shard stopped; then send what was counted since the first totals, and end.
fn send_loop(shared: &Shared, ch: Channel, first: Totals, child: std::process::Child) {
    let mut sent = 0usize;
    loop {
        let batch = std::mem::take(
            &mut *shared
                .upgrade
                .handed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let done = shared.life.running.load(Ordering::SeqCst) == 0;
        for chunk in batch.chunks(BATCH) {
            let mut fields = Vec::new();
            for h in chunk {
                fields.push(("fe".to_string(), h.frontend.clone()));
                fields.push(("peer".to_string(), h.peer.to_string()));
            }
            let fds: Vec<BorrowedFd> = chunk.iter().map(|h| h.fd.as_fd()).collect();
            match ch.send(&msg("conns", &fields), &fds) {
                Ok(()) => sent += chunk.len(),
                Err(e) => {
                    tracing::warn!(event = "handover_failed", error = %e, connections = chunk.len(), "upgrade: cannot hand connections over; they close")
                }
            }
        }
        if done
            && shared
                .upgrade
                .handed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let delta = Totals::collect(shared).minus(&first);
    for piece in delta.to_fields() {
        let _ = ch.send(&msg("counters", &piece), &[]);
    }
    let _ = ch.send(&msg("final", &[]), &[]);
    tracing::info!(
        event = "upgrade_done",
        handed_over = sent,
        "upgrade: connections handed over; this process ends"
    );
    // The new process is not our business any more (it outlives us; init reaps it).
    drop(child);
}

/// The old process's main thread, after its shards stopped: wait for the sender to finish.
pub fn finish(shared: &Shared) {
    let handle = shared
        .upgrade
        .sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// What the new process received before it starts its shards.
pub struct Inherited {
    pub channel: Channel,
    /// Listening sockets by address (several per address: one per old shard).
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub control: Option<std::os::unix::net::UnixListener>,
    /// Where that socket is (the old process's `control_socket`; a changed path needs a
    /// restart).
    pub control_path: Option<PathBuf>,
}

/// The new side, first step: take the channel (`--upgrade-fd`), and receive the listeners,
/// the command socket and the counters.
///
/// # Safety
/// `fd` must be the descriptor the old process passed (nothing else in this process owns it).
pub unsafe fn inherit(
    fd: RawFd,
    shared_seed: &mut Option<Totals>,
) -> Result<(Inherited, u64, u32), String> {
    // SAFETY: the caller's promise.
    let channel =
        unsafe { Channel::from_inherited(fd) }.map_err(|e| io_err("the inherited channel", e))?;
    let mut listeners = Vec::new();
    let mut control = None;
    let mut control_path = None;
    let mut totals = Totals::default();
    loop {
        let (m, fds) = match channel.recv(Some(READY_WAIT)) {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err("upgrade: the old process closed the channel during setup".into())
            }
            Err(e) => return Err(io_err("receiving the setup", e)),
        };
        let (kind, fields) =
            wire::decode(&m).map_err(|e| format!("upgrade: bad setup message: {e}"))?;
        match kind.as_str() {
            "listeners" => {
                let addrs = fields.iter().filter(|(k, _)| k == "addr");
                for ((_, a), fd) in addrs.zip(fds) {
                    if let Ok(addr) = a.parse() {
                        listeners.push((addr, std::net::TcpListener::from(fd)));
                    }
                }
            }
            "control" => {
                control_path = field(&fields, "path").map(PathBuf::from);
                control = fds
                    .into_iter()
                    .next()
                    .map(std::os::unix::net::UnixListener::from);
            }
            "counters" => totals.add_fields(&fields),
            "setup_done" => {
                let upgrades = field(&fields, "upgrades")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let pid = field(&fields, "pid")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                *shared_seed = Some(totals);
                return Ok((
                    Inherited {
                        channel,
                        listeners,
                        control,
                        control_path,
                    },
                    upgrades,
                    pid,
                ));
            }
            _ => {}
        }
    }
}

/// Tell the old process this one could not start (a bad config): it keeps serving.
///
/// # Safety
/// As [`inherit`].
pub unsafe fn refuse(fd: RawFd, reason: &str) {
    // SAFETY: the caller's promise.
    if let Ok(ch) = unsafe { Channel::from_inherited(fd) } {
        let _ = ch.send(&wire::encode("failed", &[("reason", reason)]), &[]);
    }
}

/// Tell the old process this one cannot serve after all (a shard did not start).
pub fn refuse_on(channel: &Channel, reason: &str) {
    let _ = channel.send(&wire::encode("failed", &[("reason", reason)]), &[]);
}

/// The new side, once its shards serve: say so, then adopt the connections the old process
/// hands over (spread over the shards) and add the counters it sends last.
pub fn adopt(shared: Arc<Shared>, channel: Channel) {
    shared.upgrade.adopting.store(true, Ordering::SeqCst);
    if let Err(e) = channel.send(
        &wire::encode("ready", &[("pid", &std::process::id().to_string())]),
        &[],
    ) {
        tracing::error!(event = "upgrade_ready_failed", error = %e, "upgrade: cannot tell the old process we serve");
        shared.upgrade.adopting.store(false, Ordering::SeqCst);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("upgrade-adopt".into())
        .spawn(move || {
            let mut next = 0usize;
            let mut late = Totals::default();
            let mut adopted = 0usize;
            loop {
                let (m, fds) = match channel.recv(None) {
                    Ok(Some(v)) => v,
                    Ok(None) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                    Err(e) => {
                        tracing::warn!(event = "upgrade_channel_failed", error = %e, "upgrade: channel to the old process failed");
                        break;
                    }
                };
                let Ok((kind, fields)) = wire::decode(&m) else {
                    continue;
                };
                match kind.as_str() {
                    "conns" => {
                        let fes = fields.iter().filter(|(k, _)| k == "fe").map(|(_, v)| v);
                        let peers = fields.iter().filter(|(k, _)| k == "peer").map(|(_, v)| v);
                        let mut per_shard: Vec<Vec<Adopted>> =
                            (0..shared.shards).map(|_| Vec::new()).collect();
                        for ((fe, peer), fd) in fes.zip(peers).zip(fds) {
                            let Ok(peer) = peer.parse() else { continue };
                            per_shard[next % shared.shards].push(Adopted {
                                stream: std::net::TcpStream::from(fd),
                                frontend: fe.clone(),
                                peer,
                            });
                            next += 1;
                            adopted += 1;
                        }
                        for (id, list) in per_shard.into_iter().enumerate() {
                            if !list.is_empty() {
                                shared.send(id, ShardMsg::Adopt(list));
                            }
                        }
                    }
                    "counters" => late.add_fields(&fields),
                    "final" => break,
                    _ => {}
                }
            }
            if !late.0.is_empty() {
                shared.send(0, ShardMsg::Seed(late));
            }
            shared.upgrade.adopting.store(false, Ordering::SeqCst);
            tracing::info!(
                event = "upgrade_adopted",
                connections = adopted,
                "upgrade: the old process is done"
            );
        });
    if let Err(e) = spawned {
        tracing::error!(event = "upgrade_adopt_thread_failed", error = %e, "upgrade: cannot start the adopting thread");
    }
}
