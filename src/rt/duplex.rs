//! Relay both ways between two sockets in one task, full duplex: what each side sends is read
//! while the other direction is blocked on a slow reader, so neither direction waits for the
//! other (a TLS session cannot be split into two tasks the way a plain socket can).
//!
//! Every socket operation is non-blocking; the task sleeps on readiness of whatever it is
//! waiting for (a side to read from, a side to write to), which drops nothing when it wakes
//! for another reason. A side whose peer has finished sending (EOF or `close_notify`) gets its
//! own sending side half-closed once everything for it has left.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use super::{sleep, Socket};

/// What the relay tells its owner, and asks of it.
pub trait Hooks {
    /// May side `a` (true) or `b` be read now? (Backpressure: MySQL's unanswered commands.)
    fn may_read(&self, _from_a: bool) -> bool {
        true
    }
    /// Bytes read from side `a` (true) or `b`, before they are passed on.
    fn data(&mut self, _from_a: bool, _bytes: &[u8]) {}
    /// Whether bytes wait for side `a` (true) or `b` to take them (MySQL's stalled-client
    /// timer).
    fn waiting_on(&mut self, _to_a: bool, _waiting: bool) {}
}

/// Nothing to report, nothing to hold back.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides finished sending and everything was delivered; `a_first`: side `a` was
    /// the first to finish.
    Done { a_first: bool },
    /// Nothing moved either way for `idle`.
    Idle,
    /// A socket failed (reset, shut down by another task, a TLS error): the side at fault,
    /// `true` for `a`.
    Failed(bool),
}

/// Consecutive steps with progress before the task yields to the rest of the shard.
const FAIR_STEPS: u32 = 32;
const BUF: usize = 16 * 1024;

/// One direction's state: bytes read from its source not yet taken by its destination.
struct Dir {
    buf: Vec<u8>,
    off: usize,
    /// The source still sends.
    open: bool,
    /// The destination's sending side: 0 open, 1 close queued (TLS), 2 shut.
    shut: u8,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            buf: Vec::with_capacity(BUF),
            off: 0,
            open: true,
            shut: 0,
        }
    }
    fn pending(&self) -> bool {
        self.off < self.buf.len()
    }
}

/// Relay between `a` and `b` until both have finished sending, one fails, or nothing moves
/// for `idle`.
pub async fn duplex(a: &mut Socket, b: &mut Socket, idle: Duration, hooks: &mut impl Hooks) -> End {
    let (mut ab, mut ba) = (Dir::new(), Dir::new());
    let mut steps = 0u32;
    let mut a_first = None;
    loop {
        let mut moved = false;
        for from_a in [true, false] {
            let (src, dst, d, other_open) = if from_a {
                (&mut *a, &mut *b, &mut ab, ba.open)
            } else {
                (&mut *b, &mut *a, &mut ba, ab.open)
            };
            match step(src, dst, d, !other_open, from_a, hooks) {
                Ok(m) => moved |= m,
                Err(side) => return End::Failed(side),
            }
        }
        if a_first.is_none() && (!ab.open || !ba.open) {
            a_first = Some(!ab.open);
        }
        let done = End::Done {
            a_first: a_first.unwrap_or(true),
        };
        if !ab.open && !ba.open && ab.shut == 2 && ba.shut == 2 {
            return done;
        }
        if moved {
            steps += 1;
            if steps < FAIR_STEPS {
                continue;
            }
            steps = 0;
            // Let the shard's other tasks run; readiness says at once that more is there.
        }
        // A side held back (may_read) is read anyway once the other has finished: what it
        // waits for will not come.
        let want = Want {
            read_a: ab.open && !ab.pending() && (hooks.may_read(true) || !ba.open),
            read_b: ba.open && !ba.pending() && (hooks.may_read(false) || !ab.open),
            write_a: ba.pending() || a.has_pending_output(),
            write_b: ab.pending() || b.has_pending_output(),
        };
        hooks.waiting_on(true, want.write_a);
        hooks.waiting_on(false, want.write_b);
        if moved {
            yield_once().await;
            continue;
        }
        if !want.any() {
            // Nothing to read, nothing in flight: nothing can happen any more.
            return done;
        }
        if !wait(a, b, &want, idle).await {
            return End::Idle;
        }
    }
}

/// One direction's non-blocking work: read if there is room, write what is pending, flush,
/// half-close once the source is done. Ok(progress), or Err(side at fault).
fn step(
    src: &mut Socket,
    dst: &mut Socket,
    d: &mut Dir,
    other_closed: bool,
    from_a: bool,
    hooks: &mut impl Hooks,
) -> Result<bool, bool> {
    let mut moved = false;
    if d.open && !d.pending() && (hooks.may_read(from_a) || other_closed) {
        d.buf.clear();
        d.off = 0;
        match src.try_recv(&mut d.buf) {
            Ok(0) => {
                d.open = false;
                moved = true;
            }
            Ok(_) => {
                hooks.data(from_a, &d.buf);
                moved = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
            Err(_) => return Err(from_a),
        }
    }
    if d.pending() {
        match dst.try_send(&d.buf[d.off..]) {
            Ok(n) => {
                d.off += n;
                moved |= n > 0;
                if n > 0 {
                    // The destination takes bytes: its stall timer starts over.
                    hooks.waiting_on(!from_a, false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(!from_a),
        }
    }
    if !d.open && !d.pending() && d.shut == 0 {
        dst.start_shutdown();
        d.shut = 1;
        moved = true;
    }
    match dst.try_flush() {
        Ok(true) if d.shut == 1 => {
            dst.finish_shutdown();
            d.shut = 2;
        }
        Ok(_) => {}
        Err(_) => return Err(!from_a),
    }
    Ok(moved)
}

struct Want {
    read_a: bool,
    read_b: bool,
    write_a: bool,
    write_b: bool,
}

impl Want {
    fn any(&self) -> bool {
        self.read_a || self.read_b || self.write_a || self.write_b
    }
}

/// Sleep until a wanted readiness, or `idle` passes (false).
async fn wait(a: &Socket, b: &Socket, want: &Want, idle: Duration) -> bool {
    async fn maybe<F: Future<Output = io::Result<()>>>(on: bool, f: F) {
        if on {
            let _ = f.await;
        } else {
            std::future::pending::<()>().await;
        }
    }
    let (ta, tb) = (a.tcp(), b.tcp());
    let mut ra = pin!(maybe(want.read_a, ta.readable(false)));
    let mut rb = pin!(maybe(want.read_b, tb.readable(false)));
    let mut wa = pin!(maybe(want.write_a, ta.writable(false)));
    let mut wb = pin!(maybe(want.write_b, tb.writable(false)));
    let mut timer = pin!(sleep(idle));
    poll_fn(|cx| {
        let ready = ra.as_mut().poll(cx).is_ready()
            | rb.as_mut().poll(cx).is_ready()
            | wa.as_mut().poll(cx).is_ready()
            | wb.as_mut().poll(cx).is_ready();
        if ready {
            return Poll::Ready(true);
        }
        timer.as_mut().poll(cx).map(|_| false)
    })
    .await
}

/// Give the other tasks of the shard a turn.
async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
