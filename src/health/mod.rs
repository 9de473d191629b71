//! Active health checks (`[pool.NAME.health]`) and agent checks (a server's `agent_port`).
//!
//! One checker for the whole process, not one per shard: a thread named `health` runs its own
//! runtime with one task per checked server (and one per agent). A task probes its server every
//! `interval` with the pool's method ([`tcp`], [`http`], [`mysql`]), applies rise/fall
//! ([`RiseFall`]) and publishes the verdict with [`ServerShared::set_active`]: an atomic that
//! every shard reads when it picks a server, which is the whole broadcast. The agent task
//! ([`agent`]) publishes the weight percentage, the drain/maint state and an agent "down" the
//! same way. Nothing here is on the request path; the per-server record of the last check
//! ([`CheckInfo`]) sits behind a mutex only this thread and the control plane take.
//!
//! ```text
//!   servers start Up (HAProxy's choice): a fresh daemon serves at once
//!
//!        fall consecutive failures            rise consecutive successes
//!   Up ─────────────────────────────▶ Down ─────────────────────────────▶ Up
//! ```
//!
//! Every Up→Down and Down→Up transition is logged once, with the reason of the check that
//! decided it. A check that could not even start for want of our own descriptors or memory
//! says nothing about the server and is not counted.

mod agent;
mod http;
mod mysql;
mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::balance::{Active, ServerShared};
use crate::config::{Health, HealthMethod};
use crate::rt;
use crate::shared::{Generation, Shared};

/// io_uring entries for the checker's runtime: a few sockets per server at most.
const RING_ENTRIES: u32 = 256;
/// How often the checker's main task looks at the stop switch.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What the checker last found about one server, for `show servers`
/// ([`ServerShared::check_info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInfo {
    /// Process clock ([`rt::now_ms`]) when the last check ended; 0 = no check yet.
    pub last_check_ms: u64,
    /// Whether the last check passed.
    pub last_ok: bool,
    /// What the last check saw: `"status 200"`, `"connect refused"`, `"timeout after 1s"`,
    /// `"status 500 not in 2xx,3xx"`, `"body did not match /OK/"`, `"mysql: Access denied
    /// ..."`.
    pub reason: String,
    /// How many checks in a row ended like the last one (successes if it passed, else
    /// failures): with `rise`/`fall` it says how close the server is to a transition.
    pub consecutive: u32,
    /// How long the last check took, connect to verdict, in microseconds.
    pub duration_us: u64,
    /// Checks run since start.
    pub checks: u64,
    /// The agent's last line as applied (`"50% drain"`), or why it could not be read; `None`
    /// without an agent.
    pub agent: Option<String>,
}

impl CheckInfo {
    /// Milliseconds since the last check ended (`None`: never checked).
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        (self.last_check_ms != 0).then(|| now_ms.saturating_sub(self.last_check_ms))
    }

    /// `"ok"` or `"fail"` for the last check.
    pub fn result(&self) -> &'static str {
        if self.last_ok {
            "ok"
        } else {
            "fail"
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The server passed; what it said (`"status 200"`, `"connected"`).
    Pass(String),
    /// The server failed; why.
    Fail(String),
    /// We could not check (our own shortage of descriptors or memory): not counted.
    Skip(String),
}

/// Consecutive results against `rise` and `fall`, for one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results like the last one (successes when `last_ok`).
    run: u32,
    last_ok: bool,
}

/// A verdict change [`RiseFall::observe`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    WentDown,
    WentUp,
}

impl RiseFall {
    /// Starts up, as HAProxy does: a server is used until `fall` checks in a row fail.
    pub(crate) fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            run: 0,
            last_ok: true,
        }
    }

    /// For a server whose verdict is already known (a config change restarted its checks):
    /// one that is down needs `rise` passes to come back.
    pub(crate) fn starting(rise: u32, fall: u32, now: Active) -> RiseFall {
        let mut rf = RiseFall::new(rise, fall);
        if now == Active::Down {
            rf.up = false;
            rf.last_ok = false;
        }
        rf
    }

    pub(crate) fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.last_ok {
            self.run = self.run.saturating_add(1);
        } else {
            self.last_ok = ok;
            self.run = 1;
        }
        match (self.up, ok) {
            (true, false) if self.run >= self.fall => {
                self.up = false;
                Some(Transition::WentDown)
            }
            (false, true) if self.run >= self.rise => {
                self.up = true;
                Some(Transition::WentUp)
            }
            _ => None,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    pub(crate) fn run(&self) -> u32 {
        self.run
    }
}

/// The check a server gets, built once from the pool's `[health]`.
enum Probe {
    Tcp,
    Http(http::Probe),
    Mysql(mysql::Probe),
}

impl Probe {
    fn new(h: &Health, tls: Option<&crate::tls::ClientTls>) -> Probe {
        match h.method {
            HealthMethod::Tcp => Probe::Tcp,
            HealthMethod::HttpHead | HealthMethod::HttpGet => {
                Probe::Http(http::Probe::new(h).with_tls(tls))
            }
            HealthMethod::Mysql => Probe::Mysql(mysql::Probe::new(h)),
        }
    }

    async fn run(&self, addr: SocketAddr, timeout: Duration) -> Outcome {
        match self {
            Probe::Tcp => tcp::check(addr, timeout).await,
            Probe::Http(p) => p.check(addr, timeout).await,
            Probe::Mysql(p) => p.check(addr, timeout).await,
        }
    }
}

/// Start the checker thread; it ends soon after `shared.life.stopping` is set. It runs even
/// when no pool has `[health]` yet (a reload may add one); idle, it wakes every 100 ms.
pub fn start(shared: &Arc<Shared>) -> std::io::Result<Option<JoinHandle<()>>> {
    let shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let driver = shared.current().config.daemon.io_driver;
            let run = rt::run_shard(driver, RING_ENTRIES, |_| checker(shared));
            if let Err(e) = run {
                tracing::error!(event = "health_start_failed", error = %e, "health checker: cannot build its runtime; no active checks");
            }
        })?;
    Ok(Some(handle))
}

/// The checker's main task: one task per checked server and per agent of the running
/// generation; when the config changes those end and the next generation's start. A server
/// that did not change keeps its record, so its verdict goes on (its rise/fall count starts
/// from that verdict).
async fn checker(shared: Arc<Shared>) {
    while !shared.life.stopping.load(Ordering::Relaxed) {
        let gen = shared.current();
        let mut checked = 0;
        for (pi, pool) in gen.config.pools.iter().enumerate() {
            let Some(h) = &pool.health else { continue };
            let n = pool.servers.len();
            for (si, server) in pool.servers.iter().enumerate() {
                // Spread the first checks over the interval so a pool's servers are not all
                // probed in the same millisecond, but check the first at once.
                let stagger = h.interval.mul_f64(si as f64 / n as f64);
                rt::spawn(check_loop(shared.clone(), gen.clone(), pi, si, stagger));
                checked += 1;
                if let Some(port) = server.agent_port {
                    let addr = SocketAddr::new(server.addr.ip(), port);
                    rt::spawn(agent::run(shared.clone(), gen.clone(), pi, si, addr));
                }
            }
        }
        if checked > 0 {
            tracing::info!(
                event = "health_started",
                servers = checked,
                generation = gen.number,
                "health checker started"
            );
        }
        while shared.generation() == gen.number && !shared.life.stopping.load(Ordering::Relaxed) {
            rt::sleep(STOP_POLL).await;
        }
    }
}

/// Does this check loop belong to the running generation (and the process go on)?
pub(crate) fn current(shared: &Shared, gen: &Generation) -> bool {
    !shared.life.stopping.load(Ordering::Relaxed) && shared.generation() == gen.number
}

async fn check_loop(
    shared: Arc<Shared>,
    gen: Arc<Generation>,
    pool: usize,
    server: usize,
    stagger: Duration,
) {
    let conf = &gen.config.pools[pool];
    let Some(h) = &conf.health else { return };
    let p = &gen.pools[pool];
    let ss = &p.servers[server];
    let probe = Probe::new(h, conf.tls.as_deref());
    let mut rf = RiseFall::starting(h.rise, h.fall, ss.active());
    rt::sleep(stagger).await;
    loop {
        if !current(&shared, &gen) {
            return;
        }
        let started = Instant::now();
        let outcome = probe.run(ss.addr, h.timeout).await;
        let took = started.elapsed();
        record(&p.name, ss, h, &mut rf, outcome, took);
        // Interval from the start of one check to the start of the next.
        rt::sleep(h.interval.saturating_sub(took)).await;
    }
}

/// Apply one check's outcome: rise/fall, the shared verdict, the log line on a transition, and
/// the record for `show servers`.
fn record(
    pool: &str,
    ss: &ServerShared,
    h: &Health,
    rf: &mut RiseFall,
    outcome: Outcome,
    took: Duration,
) {
    let (ok, reason) = match outcome {
        Outcome::Pass(r) => (true, r),
        Outcome::Fail(r) => (false, r),
        Outcome::Skip(r) => {
            static LOG: rt::LogLimit = rt::LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                tracing::warn!(event = "health_check_skipped", pool, server = %ss.name, error = %r, suppressed, "health check not run: out of local resources");
            }
            return;
        }
    };
    match rf.observe(ok) {
        Some(Transition::WentDown) => {
            ss.set_active(Active::Down);
            tracing::warn!(event = "health_server_down", pool, server = %ss.name, %reason, fall = h.fall, "health check: server down");
        }
        Some(Transition::WentUp) => {
            ss.set_active(Active::Up);
            tracing::info!(event = "health_server_up", pool, server = %ss.name, %reason, rise = h.rise, "health check: server up");
        }
        // The first pass confirms the starting verdict without a log line.
        None if ok && rf.is_up() && ss.active() == Active::Unchecked => {
            ss.set_active(Active::Up);
        }
        None => {}
    }
    let run = rf.run();
    ss.update_check_info(|c| {
        c.last_check_ms = rt::now_ms();
        c.last_ok = ok;
        c.reason = reason;
        c.consecutive = run;
        c.duration_us = took.as_micros() as u64;
        c.checks += 1;
    });
}

/// A failed connect in words: `"connect refused"`, `"connect timeout after 1s"`.
fn connect_failure(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".into(),
        std::io::ErrorKind::TimedOut => format!("connect timeout after {timeout:?}"),
        _ => format!("connect: {e}"),
    }
}

/// Connect for a check: the stream, or the outcome that ends the check.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<rt::TcpStream, Outcome> {
    match rt::connect(addr, timeout).await {
        Ok(s) => Ok(s),
        Err(rt::ConnectError::Local(e)) => Err(Outcome::Skip(e.to_string())),
        Err(rt::ConnectError::Peer(e)) => Err(Outcome::Fail(connect_failure(&e, timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_count_consecutive_results() {
        let mut rf = RiseFall::new(2, 3);
        assert!(rf.is_up(), "servers start up");
        // Two failures then a pass: not down, the failure run restarts.
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), Some(Transition::WentDown));
        assert_eq!(rf.observe(false), None, "logged once");
        assert!(!rf.is_up());
        assert_eq!(rf.run(), 4);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(true), Some(Transition::WentUp));
        assert_eq!(rf.observe(true), None);
        assert!(rf.is_up());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut rf = RiseFall::new(1, 1);
        assert_eq!(rf.observe(false), Some(Transition::WentDown));
        assert_eq!(rf.observe(true), Some(Transition::WentUp));
    }

    #[test]
    fn record_publishes_the_verdict_and_the_reason() {
        let pool = crate::balance::test_pool(&[1], crate::config::Balance::RoundRobin, 2);
        let ss = &pool.servers[0];
        let h = test_health(HealthMethod::Tcp);
        let mut rf = RiseFall::new(h.rise, h.fall);
        let t = Duration::from_millis(3);
        record("p", ss, &h, &mut rf, Outcome::Pass("connected".into()), t);
        assert_eq!(ss.active(), Active::Up);
        record(
            "p",
            ss,
            &h,
            &mut rf,
            Outcome::Fail("connect refused".into()),
            t,
        );
        assert_eq!(ss.active(), Active::Up, "one failure of fall = 2");
        record("p", ss, &h, &mut rf, Outcome::Skip("EMFILE".into()), t);
        record(
            "p",
            ss,
            &h,
            &mut rf,
            Outcome::Fail("connect refused".into()),
            t,
        );
        assert_eq!(ss.active(), Active::Down);
        assert!(!ss.is_usable(rt::now_ms()));
        // A passive success (a connect that worked) clears only the passive mark: the active
        // verdict still keeps the server out.
        ss.mark_down(rt::now_ms(), 10);
        ss.mark_up();
        assert!(!ss.is_usable(rt::now_ms()));
        assert!(!ss.is_sticky_usable(rt::now_ms()));
        let info = ss.check_info().unwrap();
        assert_eq!(
            (
                info.last_ok,
                info.consecutive,
                info.checks,
                info.reason.as_str()
            ),
            (false, 2, 3, "connect refused")
        );
        assert_eq!(info.duration_us, 3000);
        record("p", ss, &h, &mut rf, Outcome::Pass("connected".into()), t);
        assert_eq!(ss.active(), Active::Down, "rise = 2");
        record("p", ss, &h, &mut rf, Outcome::Pass("connected".into()), t);
        assert_eq!(ss.active(), Active::Up);
        assert!(ss.is_usable(rt::now_ms()));
    }

    pub(super) fn test_health(method: HealthMethod) -> Health {
        Health {
            method,
            uri: "/health".into(),
            user_agent: "shardgate-health-check".into(),
            expect_status: vec![(200, 299), (300, 399)],
            expect_body_regex: None,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            rise: 2,
            fall: 2,
            mysql_user: "check".into(),
            mysql_password: String::new(),
            mysql_query: "SELECT 1".into(),
            agent_interval: Duration::from_millis(100),
        }
    }
}
