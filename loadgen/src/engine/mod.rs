//! The load engine: one worker thread per core, each with its own epoll loop, its share of the
//! connections, of the request budget and of the rate, and its own histograms. Nothing is
//! shared on the request path; the threads' stats are merged once, at the end.
//!
//! The engine knows nothing about HTTP or MySQL: a `Protocol` renders requests and parses
//! replies (and drives a login handshake if it has one). Two timing modes:
//! - closed loop (no `-R`): each connection sends its next request as soon as the previous
//!   reply is complete; latency is measured from the actual send;
//! - open loop (`-R`): requests are due on a fixed schedule whether or not earlier ones have
//!   returned; a due request waits for an idle connection, and its latency is measured from its
//!   *scheduled* time, which corrects for coordinated omission (as wrk2 does).

pub(crate) mod stats;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) use stats::{ErrorClass, Live, ThreadStats};

/// What a protocol tells the engine after being fed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Need more bytes (anything in `out` is sent first).
    More,
    /// The login handshake is complete: requests may be sent.
    Ready,
    /// One reply is complete.
    Done {
        code: u16,
        ok: bool,
        keep_alive: bool,
    },
    /// The connection is unusable.
    Fail(ErrorClass, String),
}

/// A wire protocol driven by the engine. One `Conn` state per connection, owned by its thread.
pub(crate) trait Protocol: Sync {
    type Conn: Send;
    /// State for connection number `index` (global across threads), aimed at target `group`.
    fn new_conn(&self, group: usize, index: usize) -> Self::Conn;
    /// Called once TCP is connected: true if requests may be sent at once (HTTP), false if the
    /// server speaks first (MySQL greeting).
    fn on_connect(&self, c: &mut Self::Conn) -> bool;
    /// The bytes of the next request on this connection.
    fn request<'a>(&'a self, c: &mut Self::Conn) -> &'a [u8];
    /// Bytes arrived. Handshake replies go to `out`.
    fn on_data(&self, c: &mut Self::Conn, data: &[u8], out: &mut Vec<u8>) -> Step;
    /// The peer closed its side while a handshake or reply was in progress.
    fn on_eof(&self, c: &mut Self::Conn) -> Step;
    /// How the report names a reply code.
    fn code_label(&self, code: u16) -> String {
        code.to_string()
    }
}

/// How the run is shaped; shared read-only by all workers.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) duration: Option<Duration>,
    pub(crate) requests: Option<u64>,
    /// Requests per second for the whole run (open loop); None = closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) ramp: Duration,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// One request per connection.
    pub(crate) close: bool,
    /// Local addresses to bind, in turn per connection; empty = let the kernel choose.
    pub(crate) sources: Vec<IpAddr>,
    /// Destination per target group; connection i goes to group i % len.
    pub(crate) targets: Vec<SocketAddr>,
}

/// One thread's share of the plan.
#[derive(Clone, Debug)]
pub(crate) struct Share {
    /// Global index of this thread's first connection (for group/source rotation).
    pub(crate) first_conn: usize,
    pub(crate) connections: usize,
    pub(crate) requests: Option<u64>,
    pub(crate) rate: Option<f64>,
}

/// Splits connections, request budget and rate as evenly as possible across threads.
pub(crate) fn shares(plan: &Plan) -> Vec<Share> {
    let t = plan.threads.clamp(1, plan.connections.max(1));
    let split = |total: u64, i: usize| total / t as u64 + u64::from((i as u64) < total % t as u64);
    let mut first = 0;
    (0..t)
        .map(|i| {
            let conns = split(plan.connections as u64, i) as usize;
            let s = Share {
                first_conn: first,
                connections: conns,
                requests: plan.requests.map(|n| split(n, i)),
                rate: plan.rate.map(|r| r / t as f64),
            };
            first += conns;
            s
        })
        .collect()
}

/// The merged result of a run.
pub(crate) struct Outcome {
    pub(crate) stats: ThreadStats,
    /// From the start of the load phase (after the ramp) to the last reply.
    pub(crate) elapsed: Duration,
    pub(crate) threads: usize,
}

/// Runs the plan to completion. `progress` is called about once a second with
/// (seconds since start, responses, errors, open connections) while workers run.
pub(crate) fn run<P: Protocol>(
    proto: &P,
    plan: &Plan,
    mut progress: impl FnMut(f64, u64, u64, u64),
) -> Result<Outcome, String> {
    let shares = shares(plan);
    let lives: Vec<Live> = shares.iter().map(|_| Live::default()).collect();
    let t0 = Instant::now();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .zip(&lives)
            .enumerate()
            .map(|(i, (share, live))| {
                std::thread::Builder::new()
                    .name(format!("loadgen-{i}"))
                    .spawn_scoped(s, move || {
                        let r = worker::run(proto, plan, share, live, t0);
                        live.done.store(true, Ordering::Release);
                        r
                    })
                    .map_err(|e| format!("cannot start worker thread: {e}"))
            })
            .collect();
        let mut next_tick = Duration::from_secs(1);
        while !lives.iter().all(|l| l.done.load(Ordering::Acquire)) {
            std::thread::sleep(Duration::from_millis(50));
            let el = t0.elapsed();
            if el >= next_tick {
                next_tick += Duration::from_secs(1);
                let sum = |f: fn(&Live) -> u64| lives.iter().map(f).sum::<u64>();
                progress(
                    el.as_secs_f64(),
                    sum(|l| l.responses.load(Ordering::Relaxed)),
                    sum(|l| l.errors.load(Ordering::Relaxed)),
                    sum(|l| l.open.load(Ordering::Relaxed)),
                );
            }
        }
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("worker thread panicked".into())),
                Err(e) => Err(e),
            })
            .collect::<Vec<_>>()
    });
    let mut merged = ThreadStats::new(plan.rate.is_some());
    let mut elapsed = Duration::ZERO;
    for r in results {
        let (st, el) = r?;
        merged.merge(st);
        elapsed = elapsed.max(el);
    }
    Ok(Outcome {
        stats: merged,
        elapsed,
        threads: shares.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(c: usize, t: usize, n: Option<u64>) -> Plan {
        Plan {
            connections: c,
            threads: t,
            duration: None,
            requests: n,
            rate: Some(1000.0),
            ramp: Duration::ZERO,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            close: false,
            sources: vec![],
            targets: vec![],
        }
    }

    #[test]
    fn shares_split_evenly_and_add_up() {
        let s = shares(&plan(10, 3, Some(1001)));
        assert_eq!(
            s.iter().map(|s| s.connections).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(
            s.iter().map(|s| s.first_conn).collect::<Vec<_>>(),
            [0, 4, 7]
        );
        assert_eq!(s.iter().map(|s| s.requests.unwrap()).sum::<u64>(), 1001);
        assert!((s.iter().map(|s| s.rate.unwrap()).sum::<f64>() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn never_more_threads_than_connections() {
        assert_eq!(shares(&plan(2, 8, None)).len(), 2);
    }
}
